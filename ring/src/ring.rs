//! The ring itself: vnode tokens, their owners, racks, and lookups.
//!
//! # What
//!
//! A [`Ring`] maps sorted `u64` tokens to nodes. The vnode with token `t`
//! owns the range `(previous token, t]`; the first vnode's range wraps
//! around from the last token. A key's replicas are the nodes met walking
//! clockwise from its token (see the private `placement` module for the rule).
//!
//! # Why this layout
//!
//! Lookups are the hot path of every request, so the ring is kept as two
//! parallel sorted arrays — `tokens: Vec<u64>` (binary-searched: 8-byte
//! entries, cache friendly) and `owners: Vec<u32>` (node *indices*) — plus
//! the node names once each. A lookup is one binary search (`O(log T)`)
//! and a short walk that compares `u32`s; no string is touched until the
//! caller asks for names. [`Ring::preference_into`] fills a caller-owned
//! buffer and allocates nothing.
//!
//! Node indices are the positions of the names in sorted order, so two
//! rings with the same tokens, owners and racks are equal field by field
//! (derived `PartialEq` is meaningful) whatever order nodes were added in.
//! The price is that adding or removing a node renumbers the others: an
//! index is only valid for the `Ring` value that produced it.
//!
//! # Implementation caveats
//!
//! * A token already present keeps its first owner ([`Ring::insert_node`]);
//!   [`Ring::set_tokens`] refuses instead, for callers that must know.
//! * A node with no tokens is not on the ring (it has no index), but a rack
//!   may be set for it beforehand, so that a joining node's rack is known
//!   to the allocator.
//! * Serialisation uses the ring-file shape (`tokens: [{token, node}]`,
//!   optional `racks`), not the internal arrays.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::file::TokenEntry;
use crate::placement::{self, Racks};
use crate::{NodeId, Token};

/// A node's position in [`Ring::nodes`]; valid only for the ring value
/// that produced it (adding or removing a node renumbers).
pub type NodeIndex = u32;

/// A token range `(start, end]`: the keys whose token is after `start` and
/// at most `end`, wrapping past `u64::MAX`. `start == end` is the whole
/// ring (a ring with one token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenRange {
    /// Exclusive lower bound (the previous vnode's token).
    pub start: Token,
    /// Inclusive upper bound (the owning vnode's token).
    pub end: Token,
}

/// 2^64 as a float: the size of the token space.
pub(crate) const SPACE: f64 = 18_446_744_073_709_551_616.0;

impl TokenRange {
    /// Number of tokens in the range (2^64 for the whole ring), exact.
    pub fn width(&self) -> u128 {
        if self.start == self.end {
            1u128 << 64
        } else {
            u128::from(self.end.wrapping_sub(self.start))
        }
    }

    /// The range's share of the token space, in `(0, 1]`: its share of the
    /// keys when keys hash uniformly.
    pub fn fraction(&self) -> f64 {
        self.width() as f64 / SPACE
    }

    /// Whether a key with token `t` falls in the range.
    pub fn contains(&self, t: Token) -> bool {
        self.start == self.end || t.wrapping_sub(self.start).wrapping_sub(1) < self.width() as u64
    }

    /// Number of tokens shared with `other`, exact. Used to prorate a
    /// range's reported keys and bytes onto the ranges of a plan.
    pub fn overlap(&self, other: &TokenRange) -> u128 {
        // Unroll both ranges into intervals [lo, hi) on 0..2^64 and
        // intersect pairwise.
        fn pieces(r: &TokenRange) -> Vec<(u128, u128)> {
            let lo = u128::from(r.start) + 1;
            let hi = lo + r.width();
            let top = 1u128 << 64;
            if hi <= top {
                vec![(lo, hi)]
            } else {
                vec![(lo, top), (0, hi - top)]
            }
        }
        let mut total = 0;
        for (a0, a1) in pieces(self) {
            for (b0, b1) in pieces(other) {
                let (lo, hi) = (a0.max(b0), a1.min(b1));
                if hi > lo {
                    total += hi - lo;
                }
            }
        }
        total
    }
}

impl std::fmt::Display for TokenRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {}]", self.start, self.end)
    }
}

/// A vnode's range with its replica set, in preference order (the first
/// is the primary owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeReplicas {
    /// The range `(previous token, token]`.
    pub range: TokenRange,
    /// Up to `rf` distinct nodes; fewer only when the ring has fewer.
    pub replicas: Vec<NodeId>,
}

/// A ring of virtual-node tokens, each owned by one node, with optional
/// racks. See the module documentation for the layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RingRepr", into = "RingRepr")]
pub struct Ring {
    /// Names of the nodes with at least one token, sorted.
    nodes: Vec<NodeId>,
    /// Vnode tokens, sorted ascending, distinct.
    tokens: Vec<Token>,
    /// `owners[i]` is the node index owning `tokens[i]`.
    owners: Vec<NodeIndex>,
    /// Rack labels, for nodes on the ring or about to join.
    racks: BTreeMap<NodeId, String>,
    /// Derived: rack index of every node index (unlabelled nodes share the
    /// default rack).
    rack_of: Vec<u32>,
    /// Derived: number of distinct racks among nodes on the ring.
    rack_count: usize,
}

/// The serialised shape of a ring (a subset of [`crate::RingFile`]).
#[derive(Serialize, Deserialize)]
struct RingRepr {
    tokens: Vec<TokenEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    racks: BTreeMap<NodeId, String>,
}

impl From<RingRepr> for Ring {
    fn from(r: RingRepr) -> Ring {
        let mut ring = Ring::from_entries(r.tokens.into_iter().map(|e| (e.token, e.node)));
        for (node, rack) in r.racks {
            ring.set_rack(&node, Some(&rack));
        }
        ring
    }
}

impl From<Ring> for RingRepr {
    fn from(r: Ring) -> RingRepr {
        RingRepr {
            tokens: r
                .tokens()
                .map(|(token, node)| TokenEntry {
                    token,
                    node: node.clone(),
                })
                .collect(),
            racks: r.racks,
        }
    }
}

impl Ring {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// A ring from `(token, node)` pairs in any order; a repeated token
    /// keeps its first owner, as with [`Ring::insert_node`].
    pub fn from_entries(entries: impl IntoIterator<Item = (Token, NodeId)>) -> Ring {
        let mut map: BTreeMap<Token, NodeId> = BTreeMap::new();
        for (t, n) in entries {
            map.entry(t).or_insert(n);
        }
        let mut nodes: Vec<NodeId> = map.values().cloned().collect();
        nodes.sort();
        nodes.dedup();
        let mut ring = Ring {
            tokens: map.keys().copied().collect(),
            owners: map
                .values()
                .map(|n| nodes.binary_search(n).unwrap_or(0) as NodeIndex)
                .collect(),
            nodes,
            ..Ring::default()
        };
        ring.reindex_racks();
        ring
    }

    /// Adds `node`'s tokens; a token already taken keeps its first owner.
    /// Lenient on purpose: gossip may deliver a stale claim, and the first
    /// owner must not flap.
    pub fn insert_node(&mut self, node: &str, tokens: &[Token]) {
        let mut fresh: Vec<Token> = tokens
            .iter()
            .copied()
            .filter(|t| self.tokens.binary_search(t).is_err())
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        if fresh.is_empty() {
            return;
        }
        let idx = match self.nodes.binary_search_by(|n| n.as_str().cmp(node)) {
            Ok(i) => i as NodeIndex,
            Err(i) => {
                self.nodes.insert(i, node.to_string());
                let i = i as NodeIndex;
                for o in &mut self.owners {
                    if *o >= i {
                        *o += 1;
                    }
                }
                i
            }
        };
        let mut merged: Vec<(Token, NodeIndex)> = self
            .tokens
            .iter()
            .copied()
            .zip(self.owners.iter().copied())
            .chain(fresh.into_iter().map(|t| (t, idx)))
            .collect();
        merged.sort_unstable_by_key(|&(t, _)| t);
        (self.tokens, self.owners) = merged.into_iter().unzip();
        self.reindex_racks();
    }

    /// Removes `node` and its rack label, returning its tokens; an unknown
    /// node is an error so that a typo in `--remove` is not a silent no-op.
    pub fn remove_node(&mut self, node: &str) -> Result<Vec<Token>, Error> {
        let idx = self
            .index_of(node)
            .ok_or_else(|| Error::UnknownNode(node.into()))?;
        let mut removed = Vec::new();
        let mut kept: Vec<(Token, NodeIndex)> = Vec::with_capacity(self.tokens.len());
        for (&t, &o) in self.tokens.iter().zip(&self.owners) {
            if o == idx {
                removed.push(t);
            } else {
                kept.push((t, if o > idx { o - 1 } else { o }));
            }
        }
        (self.tokens, self.owners) = kept.into_iter().unzip();
        self.nodes.remove(idx as usize);
        self.racks.remove(node);
        self.reindex_racks();
        Ok(removed)
    }

    /// Replaces `node`'s tokens with `tokens` (adding the node if new, or
    /// removing it if `tokens` is empty). Refuses a token owned by another
    /// node, so a "change a node's tokens" plan cannot steal vnodes.
    pub fn set_tokens(&mut self, node: &str, tokens: &[Token]) -> Result<(), Error> {
        for t in tokens {
            if let Ok(i) = self.tokens.binary_search(t) {
                let owner = &self.nodes[self.owners[i] as usize];
                if owner != node {
                    return Err(Error::TokenTaken {
                        token: *t,
                        owner: owner.clone(),
                    });
                }
            }
        }
        let rack = self.racks.get(node).cloned();
        if self.index_of(node).is_some() {
            self.remove_node(node)?;
        }
        if let Some(rack) = rack {
            self.racks.insert(node.to_string(), rack);
        }
        self.insert_node(node, tokens);
        Ok(())
    }

    /// Sets (or with `None` clears) `node`'s rack. Allowed before the node
    /// has tokens, so that allocation for a joining node can respect it.
    pub fn set_rack(&mut self, node: &str, rack: Option<&str>) {
        match rack {
            Some(r) => {
                self.racks.insert(node.to_string(), r.to_string());
            }
            None => {
                self.racks.remove(node);
            }
        }
        self.reindex_racks();
    }

    /// `node`'s rack label, if one was set.
    pub fn rack(&self, node: &str) -> Option<&str> {
        self.racks.get(node).map(String::as_str)
    }

    /// Every rack label set, by node (including nodes without tokens yet).
    pub fn racks(&self) -> &BTreeMap<NodeId, String> {
        &self.racks
    }

    /// Number of distinct racks among nodes on the ring (unlabelled nodes
    /// count as one default rack); placement is rack-aware when above one.
    pub fn rack_count(&self) -> usize {
        self.rack_count
    }

    /// All `(token, node)` pairs in token order.
    pub fn tokens(&self) -> impl Iterator<Item = (Token, &NodeId)> {
        self.tokens
            .iter()
            .zip(&self.owners)
            .map(|(t, o)| (*t, &self.nodes[*o as usize]))
    }

    /// Number of distinct nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of vnodes (tokens) on the ring.
    pub fn vnode_count(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the ring has no tokens at all (every lookup is then empty).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Node names in index order (sorted), so `nodes()[i]` names index `i`.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The name of a node index from this ring.
    pub fn node(&self, idx: NodeIndex) -> Option<&str> {
        self.nodes.get(idx as usize).map(String::as_str)
    }

    /// The index of a node, if it has tokens.
    pub fn index_of(&self, node: &str) -> Option<NodeIndex> {
        self.nodes
            .binary_search_by(|n| n.as_str().cmp(node))
            .ok()
            .map(|i| i as NodeIndex)
    }

    /// Whether `node` has tokens on the ring.
    pub fn contains_node(&self, node: &str) -> bool {
        self.index_of(node).is_some()
    }

    /// `node`'s tokens, ascending (empty for an unknown node).
    pub fn node_tokens(&self, node: &str) -> Vec<Token> {
        let Some(idx) = self.index_of(node) else {
            return Vec::new();
        };
        self.tokens
            .iter()
            .zip(&self.owners)
            .filter(|(_, o)| **o == idx)
            .map(|(t, _)| *t)
            .collect()
    }

    /// The primary owner of `token`: the node of the first vnode at or
    /// after it, wrapping.
    pub fn owner(&self, token: Token) -> Option<&str> {
        if self.tokens.is_empty() {
            return None;
        }
        let i = self.start_of(token);
        self.node(self.owners[i])
    }

    /// The first `n` distinct nodes clockwise from `token` (rack-aware when
    /// the ring has two or more racks), as owned names. Convenient; the
    /// request path should prefer [`Ring::preference_into`].
    pub fn preference_list(&self, token: Token, n: usize) -> Vec<NodeId> {
        let mut idx = Vec::with_capacity(n.min(self.nodes.len()));
        self.preference_into(token, n, &mut idx);
        idx.iter()
            .map(|&i| self.nodes[i as usize].clone())
            .collect()
    }

    /// As [`Ring::preference_list`], borrowing the names (one allocation
    /// for the vector, none per name).
    pub fn preference_list_refs(&self, token: Token, n: usize) -> Vec<&str> {
        let mut idx = Vec::with_capacity(n.min(self.nodes.len()));
        self.preference_into(token, n, &mut idx);
        idx.iter()
            .map(|&i| self.nodes[i as usize].as_str())
            .collect()
    }

    /// The preference list as node indices, written into `out` (cleared
    /// first). No allocation once `out` has capacity `n`: this is the
    /// lookup the request path and the benchmark use. `O(log T)` for the
    /// binary search plus a walk that is a handful of vnodes on a balanced
    /// ring.
    pub fn preference_into(&self, token: Token, n: usize, out: &mut Vec<NodeIndex>) {
        out.clear();
        if self.tokens.is_empty() || n == 0 {
            return;
        }
        let start = self.start_of(token);
        if self.rack_count <= 1 {
            let want = n.min(self.nodes.len());
            let len = self.owners.len();
            let mut i = start;
            loop {
                let node = self.owners[i];
                if !out.contains(&node) {
                    out.push(node);
                    if out.len() == want {
                        return;
                    }
                }
                i += 1;
                if i == len {
                    i = 0;
                }
            }
        }
        let mut buf = Vec::with_capacity(n.min(self.nodes.len()));
        self.walk_from(start, n, &mut buf);
        out.extend(buf.iter().map(|&(node, _)| node));
    }

    /// Every vnode range with its replica set for replication factor `rf`,
    /// in token order (the first range wraps around from the last token).
    /// What plans, what-if and the node's streaming iterate over.
    pub fn ranges(&self, rf: usize) -> Vec<RangeReplicas> {
        let mut out = Vec::with_capacity(self.tokens.len());
        self.for_each_range(rf, |range, reps| {
            out.push(RangeReplicas {
                range,
                replicas: reps
                    .iter()
                    .map(|&(n, _)| self.nodes[n as usize].clone())
                    .collect(),
            });
        });
        out
    }

    /// Calls `f` with every vnode range and its replicas as
    /// `(node index, walk position)` pairs.
    pub(crate) fn for_each_range(&self, rf: usize, mut f: impl FnMut(TokenRange, &[(u32, u32)])) {
        let mut buf = Vec::with_capacity(rf.min(self.nodes.len()));
        for i in 0..self.tokens.len() {
            self.walk_from(i, rf, &mut buf);
            f(self.range_of(i), &buf);
        }
    }

    /// The range owned by vnode `i`.
    pub(crate) fn range_of(&self, i: usize) -> TokenRange {
        let prev = if i == 0 {
            self.tokens[self.tokens.len() - 1]
        } else {
            self.tokens[i - 1]
        };
        TokenRange {
            start: prev,
            end: self.tokens[i],
        }
    }

    /// Index of the vnode owning `token` (the ring must not be empty).
    fn start_of(&self, token: Token) -> usize {
        let i = self.tokens.partition_point(|t| *t < token);
        if i == self.tokens.len() { 0 } else { i }
    }

    /// The placement walk from vnode `start`.
    pub(crate) fn walk_from(&self, start: usize, n: usize, out: &mut Vec<(u32, u32)>) {
        let seq = self.owners[start..]
            .iter()
            .chain(&self.owners[..start])
            .copied();
        placement::walk(seq, n, self.rack_info(), out);
    }

    /// Rack data for [`placement::walk`], when there are racks to respect.
    pub(crate) fn rack_info(&self) -> Option<Racks<'_>> {
        (self.rack_count > 1).then_some(Racks {
            rack_of: &self.rack_of,
            count: self.rack_count,
        })
    }

    /// Raw arrays for the allocator: sorted tokens and their owner indices.
    pub(crate) fn raw(&self) -> (&[Token], &[NodeIndex]) {
        (&self.tokens, &self.owners)
    }

    /// Recomputes the derived rack fields after any change.
    fn reindex_racks(&mut self) {
        let labels: Vec<&str> = self
            .nodes
            .iter()
            .map(|n| self.racks.get(n).map(String::as_str).unwrap_or(""))
            .collect();
        let mut distinct = labels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        self.rack_of = labels
            .iter()
            .map(|l| distinct.binary_search(l).unwrap_or(0) as u32)
            .collect();
        self.rack_count = distinct.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn abc() -> Ring {
        let mut r = Ring::new();
        r.insert_node("a", &[10, 40]);
        r.insert_node("b", &[20]);
        r.insert_node("c", &[30]);
        r
    }

    #[test]
    fn preference_list_wraps_and_is_distinct() {
        let r = abc();
        assert_eq!(r.preference_list(35, 3), names(&["a", "b", "c"]));
        assert_eq!(r.preference_list(u64::MAX, 2), names(&["a", "b"]));
        assert_eq!(r.preference_list(20, 2), names(&["b", "c"]));
        assert_eq!(r.preference_list(21, 5), names(&["c", "a", "b"]));
    }

    #[test]
    fn insertion_order_does_not_matter_for_equality() {
        let mut r = Ring::new();
        r.insert_node("c", &[30]);
        r.insert_node("b", &[20]);
        r.insert_node("a", &[40, 10]);
        assert_eq!(r, abc());
    }

    #[test]
    fn a_taken_token_keeps_its_first_owner() {
        let mut r = abc();
        r.insert_node("d", &[20, 50]);
        assert_eq!(r.owner(20), Some("b"));
        assert_eq!(r.node_tokens("d"), vec![50]);
        assert!(matches!(
            r.set_tokens("d", &[30]),
            Err(Error::TokenTaken { token: 30, .. })
        ));
    }

    #[test]
    fn removing_a_node_renumbers_and_forgets_its_rack() {
        let mut r = abc();
        r.set_rack("a", Some("r1"));
        assert_eq!(r.remove_node("a"), Ok(vec![10, 40]));
        assert_eq!(r.nodes(), &names(&["b", "c"])[..]);
        assert_eq!(r.preference_list(35, 3), names(&["b", "c"]));
        assert_eq!(r.rack("a"), None);
        assert_eq!(r.remove_node("zz"), Err(Error::UnknownNode("zz".into())));
    }

    #[test]
    fn set_tokens_moves_a_node_and_keeps_its_rack() {
        let mut r = abc();
        r.set_rack("b", Some("r2"));
        r.set_tokens("b", &[5, 25]).unwrap();
        assert_eq!(r.node_tokens("b"), vec![5, 25]);
        assert_eq!(r.rack("b"), Some("r2"));
        assert_eq!(r.owner(20), Some("b"));
    }

    #[test]
    fn racks_change_the_replica_set() {
        let mut r = Ring::new();
        r.insert_node("a", &[10]);
        r.insert_node("b", &[20]);
        r.insert_node("c", &[30]);
        r.insert_node("d", &[40]);
        r.set_rack("a", Some("x"));
        r.set_rack("b", Some("x"));
        r.set_rack("c", Some("y"));
        r.set_rack("d", Some("y"));
        assert_eq!(r.rack_count(), 2);
        // Walk from 10: a(x), b skipped, c(y) completes racks, then b.
        assert_eq!(r.preference_list(5, 3), names(&["a", "c", "b"]));
        assert_eq!(r.preference_list(5, 2), names(&["a", "c"]));
    }

    #[test]
    fn ranges_cover_the_ring_once() {
        let r = abc();
        let ranges = r.ranges(2);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].range, TokenRange { start: 40, end: 10 });
        assert_eq!(ranges[0].replicas, names(&["a", "b"]));
        assert_eq!(ranges[3].replicas, names(&["a", "b"]));
        let total: u128 = ranges.iter().map(|r| r.range.width()).sum();
        assert_eq!(total, 1u128 << 64);
    }

    #[test]
    fn token_range_arithmetic() {
        let wrap = TokenRange {
            start: u64::MAX - 1,
            end: 1,
        };
        assert_eq!(wrap.width(), 3);
        assert!(wrap.contains(u64::MAX) && wrap.contains(0) && wrap.contains(1));
        assert!(!wrap.contains(u64::MAX - 1) && !wrap.contains(2));
        let full = TokenRange { start: 7, end: 7 };
        assert_eq!(full.fraction(), 1.0);
        assert!(full.contains(7) && full.contains(8));
        assert_eq!(wrap.overlap(&TokenRange { start: 0, end: 5 }), 1);
        assert_eq!(wrap.overlap(&full), 3);
        assert_eq!(full.overlap(&full), 1u128 << 64);
    }

    #[test]
    fn indices_and_refs_agree_with_names() {
        let r = abc();
        let mut idx = Vec::new();
        r.preference_into(25, 3, &mut idx);
        let via_idx: Vec<&str> = idx.iter().map(|&i| r.node(i).unwrap()).collect();
        assert_eq!(via_idx, r.preference_list_refs(25, 3));
        assert_eq!(via_idx, vec!["c", "a", "b"]);
    }

    #[test]
    fn empty_ring_answers_empty() {
        let r = Ring::new();
        assert!(r.preference_list(1, 3).is_empty());
        assert!(r.ranges(3).is_empty());
        assert_eq!(r.owner(1), None);
    }
}
