//! The supersession graph of one register key, and the two structures that
//! keep the checker near-linear on it.
//!
//! Nodes are the key's writes, numbered in invocation order; a node's
//! parents are the values it directly supersedes. Parents are always
//! numbered below their child, because a write can only carry a context
//! from a read that returned values already being written; an edge that
//! points forward in time cannot be causal and is dropped when the graph is
//! built. So the graph is acyclic, and a search for an ancestor `a` never
//! needs to look below `a`.
//!
//! - [`Reach`] answers "is `a` an ancestor of `d`?", memoised per `a`: the
//!   same few recent writes are asked about over and over.
//! - [`Frontier`] holds the acknowledged writes that no acknowledged write
//!   supersedes yet. A read covers every acknowledged write before it iff it
//!   covers the frontier, and once a write is superseded it never returns
//!   to the frontier, so the search that marks it runs once per node.

use std::collections::{BTreeSet, HashMap};

/// Memoised ancestor queries over a graph whose edges go to lower numbers.
pub struct Reach<'a> {
    parents: &'a [Vec<u32>],
    /// Target -> node -> whether the node has the target as an ancestor.
    memo: HashMap<u32, HashMap<u32, bool>>,
}

impl<'a> Reach<'a> {
    pub fn new(parents: &'a [Vec<u32>]) -> Self {
        Reach {
            parents,
            memo: HashMap::new(),
        }
    }

    /// Whether `target` is `node` or one of its ancestors.
    pub fn reaches(&mut self, node: u32, target: u32) -> bool {
        if node == target {
            return true;
        }
        if node < target {
            return false;
        }
        let memo = self.memo.entry(target).or_default();
        if let Some(&known) = memo.get(&node) {
            return known;
        }
        // Depth-first with an explicit path: on success every node on the
        // path reaches the target; a node whose parents are exhausted does
        // not. Nodes are never on the path twice, the graph being acyclic.
        let mut path: Vec<(u32, usize)> = vec![(node, 0)];
        while let Some(top) = path.last_mut() {
            let Some(&p) = self.parents[top.0 as usize].get(top.1) else {
                memo.insert(top.0, false);
                path.pop();
                continue;
            };
            top.1 += 1;
            let found = p == target || (p > target && memo.get(&p) == Some(&true));
            if found {
                for (n, _) in path {
                    memo.insert(n, true);
                }
                return true;
            }
            if p > target && !memo.contains_key(&p) {
                path.push((p, 0));
            }
        }
        false
    }

    /// Whether `target` is one of `values` or an ancestor of one.
    pub fn covered(&mut self, values: &[u32], target: u32) -> bool {
        values.contains(&target) || values.iter().any(|&v| self.reaches(v, target))
    }
}

/// The acknowledged writes not yet superseded by an acknowledged write,
/// oldest acknowledgement first.
pub struct Frontier<'a> {
    parents: &'a [Vec<u32>],
    superseded: Vec<bool>,
    /// (position of the acknowledgement, node)
    open: BTreeSet<(usize, u32)>,
    acked_at: Vec<Option<usize>>,
}

impl<'a> Frontier<'a> {
    pub fn new(parents: &'a [Vec<u32>]) -> Self {
        Frontier {
            parents,
            superseded: vec![false; parents.len()],
            open: BTreeSet::new(),
            acked_at: vec![None; parents.len()],
        }
    }

    /// `node` was acknowledged at position `pos`: everything it supersedes
    /// leaves the frontier for good, and it joins unless superseded itself.
    pub fn acknowledge(&mut self, node: u32, pos: usize) {
        self.acked_at[node as usize] = Some(pos);
        let mut stack: Vec<u32> = self.parents[node as usize].clone();
        while let Some(p) = stack.pop() {
            if std::mem::replace(&mut self.superseded[p as usize], true) {
                continue;
            }
            if let Some(at) = self.acked_at[p as usize] {
                self.open.remove(&(at, p));
            }
            stack.extend_from_slice(&self.parents[p as usize]);
        }
        if !self.superseded[node as usize] {
            self.open.insert((pos, node));
        }
    }

    /// The frontier, oldest acknowledgement first.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.open.iter().map(|&(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0 <- 1 <- 3, 2 <- 3 (3 merges 1 and 2), 4 alone.
    fn diamond() -> Vec<Vec<u32>> {
        vec![vec![], vec![0], vec![], vec![1, 2], vec![]]
    }

    #[test]
    fn ancestors_are_found_through_merges_and_strangers_are_not() {
        let g = diamond();
        let mut r = Reach::new(&g);
        assert!(r.reaches(3, 0));
        assert!(r.reaches(3, 2));
        assert!(r.reaches(1, 0));
        assert!(!r.reaches(2, 0));
        assert!(!r.reaches(4, 0));
        assert!(!r.reaches(0, 3), "descendants are not ancestors");
        // Memoised answers agree with fresh ones.
        assert!(r.reaches(3, 0) && !r.reaches(2, 0));
        assert!(r.covered(&[4, 3], 2));
        assert!(!r.covered(&[4, 2], 1));
    }

    #[test]
    fn a_superseded_write_leaves_the_frontier_even_when_acknowledged_late() {
        let g = diamond();
        let mut f = Frontier::new(&g);
        f.acknowledge(0, 10);
        f.acknowledge(2, 11);
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![0, 2]);
        f.acknowledge(3, 12);
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![3]);
        // 1 is acknowledged after 3, which supersedes it.
        f.acknowledge(1, 13);
        f.acknowledge(4, 14);
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![3, 4]);
    }
}
