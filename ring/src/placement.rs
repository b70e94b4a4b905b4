//! Replica placement: which nodes, walking clockwise from a token, hold a
//! key — with and without racks.
//!
//! # What
//!
//! Without racks the replicas of a token are the first `n` *distinct* nodes
//! met clockwise from it (Dynamo's preference list). With racks the walk is
//! Cassandra's `NetworkTopologyStrategy` within one datacenter: a node whose
//! rack has not been seen yet is taken at once; a node in an already-seen
//! rack is *skipped* (remembered in clockwise order); as soon as every rack
//! has been seen, the skipped nodes are taken in the order they were met
//! and the walk continues taking whatever comes. If the ring is exhausted
//! first, the skipped nodes fill the list.
//!
//! # Why it works
//!
//! * Distinct racks first: with at least `n` racks the `n` replicas sit in
//!   `n` different racks, so losing one rack costs at most one replica of
//!   any key. With fewer racks than `n`, every rack holds at least one
//!   replica and the rest follow ring order.
//! * One rack (or no racks configured: every node is then in the unnamed
//!   default rack) degenerates to the plain walk: the first node fills the
//!   only rack, every later node is taken directly. So the plain walk is a
//!   fast path, not a different rule.
//! * The first replica is always the owner of the range (the first vnode at
//!   or after the token), whatever the racks, so primary ownership does not
//!   depend on racks.
//!
//! # Where
//!
//! [`walk`] is the one implementation of the rule, used by lookups
//! ([`crate::Ring::preference_into`] with racks), by range listings, by the
//! statistics and by the token allocator (which walks hypothetical rings,
//! hence the iterator input). The rack-free hot path in `ring.rs` is a
//! specialisation of it; the proptests check they agree.
//!
//! # Implementation caveats
//!
//! * Positions are reported with each replica (the index in the walked
//!   sequence where the node was first met). The allocator uses them to
//!   attribute replicated ownership to individual vnode tokens.
//! * The skip list is capped at `n` entries: more can never be used.
//! * Nodes without a rack share the default rack, as Cassandra's
//!   `SimpleSnitch` puts every node in `rack1`.

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Items of the sequence read (the last one read decided completion).
    pub consumed: usize,
    /// Whether `n` replicas were found (false: the ring ran out of nodes).
    pub complete: bool,
}

/// Rack information for a walk: the rack index of every node index, and
/// how many distinct racks the ring holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Racks<'a> {
    /// `rack_of[node]` is the node's rack index.
    pub rack_of: &'a [u32],
    /// Number of distinct racks among nodes with tokens.
    pub count: usize,
}

/// Walks `seq` (node indices in clockwise order, starting at the owner of
/// the token) and collects up to `n` replicas into `out` as
/// `(node, position in seq where it was first met)`.
///
/// `racks` of `None`, or with fewer than two racks, gives the plain
/// distinct-node walk.
pub(crate) fn walk(
    seq: impl Iterator<Item = u32>,
    n: usize,
    racks: Option<Racks<'_>>,
    out: &mut Vec<(u32, u32)>,
) -> Walked {
    out.clear();
    if n == 0 {
        return Walked {
            consumed: 0,
            complete: true,
        };
    }
    let racks = racks.filter(|r| r.count > 1);
    let Some(racks) = racks else {
        let mut consumed = 0;
        for (pos, node) in seq.enumerate() {
            consumed = pos + 1;
            if !out.iter().any(|&(m, _)| m == node) {
                out.push((node, pos as u32));
                if out.len() == n {
                    return Walked {
                        consumed,
                        complete: true,
                    };
                }
            }
        }
        return Walked {
            consumed,
            complete: false,
        };
    };
    let mut seen_racks: Vec<u32> = Vec::with_capacity(racks.count.min(n));
    let mut skipped: Vec<(u32, u32)> = Vec::with_capacity(n.min(8));
    let mut consumed = 0;
    for (pos, node) in seq.enumerate() {
        consumed = pos + 1;
        if out.iter().chain(skipped.iter()).any(|&(m, _)| m == node) {
            continue;
        }
        let rack = racks.rack_of[node as usize];
        if seen_racks.len() == racks.count {
            out.push((node, pos as u32));
        } else if seen_racks.contains(&rack) {
            if skipped.len() < n {
                skipped.push((node, pos as u32));
            }
        } else {
            out.push((node, pos as u32));
            seen_racks.push(rack);
            if seen_racks.len() == racks.count {
                let room = n.saturating_sub(out.len());
                out.extend(skipped.drain(..).take(room));
            }
        }
        if out.len() >= n {
            out.truncate(n);
            return Walked {
                consumed,
                complete: true,
            };
        }
    }
    let room = n.saturating_sub(out.len());
    out.extend(skipped.drain(..).take(room));
    Walked {
        consumed,
        complete: out.len() == n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(out: &[(u32, u32)]) -> Vec<u32> {
        out.iter().map(|&(n, _)| n).collect()
    }

    #[test]
    fn plain_walk_takes_first_distinct_nodes_with_positions() {
        let mut out = Vec::new();
        let w = walk([0, 0, 1, 0, 2, 3].into_iter(), 3, None, &mut out);
        assert_eq!(out, vec![(0, 0), (1, 2), (2, 4)]);
        assert_eq!(
            w,
            Walked {
                consumed: 5,
                complete: true
            }
        );
    }

    #[test]
    fn plain_walk_reports_incomplete_when_nodes_run_out() {
        let mut out = Vec::new();
        let w = walk([0, 1, 0].into_iter(), 3, None, &mut out);
        assert_eq!(nodes(&out), vec![0, 1]);
        assert!(!w.complete);
        assert_eq!(w.consumed, 3);
    }

    #[test]
    fn rack_walk_prefers_new_racks_then_fills_with_skipped_in_order() {
        // Nodes 0,1,2 in rack 0; node 3 in rack 1.
        let rack_of = [0, 0, 0, 1];
        let racks = Some(Racks {
            rack_of: &rack_of,
            count: 2,
        });
        let mut out = Vec::new();
        let w = walk([0, 1, 2, 3].into_iter(), 3, racks, &mut out);
        // 0 (rack 0), skip 1 and 2, 3 (rack 1) completes the racks, then 1.
        assert_eq!(out, vec![(0, 0), (3, 3), (1, 1)]);
        assert!(w.complete);
    }

    #[test]
    fn rack_walk_with_exhausted_ring_appends_skipped() {
        let rack_of = [0, 0, 1];
        let racks = Some(Racks {
            rack_of: &rack_of,
            count: 3, // a third rack exists but has no node in this sequence
        });
        let mut out = Vec::new();
        let w = walk([0, 1, 2].into_iter(), 3, racks, &mut out);
        assert_eq!(nodes(&out), vec![0, 2, 1]);
        assert!(w.complete);
    }

    #[test]
    fn single_rack_is_the_plain_walk() {
        let rack_of = [0, 0, 0, 0];
        let seq = [2, 2, 0, 3, 1];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let wa = walk(seq.into_iter(), 3, None, &mut a);
        let wb = walk(
            seq.into_iter(),
            3,
            Some(Racks {
                rack_of: &rack_of,
                count: 1,
            }),
            &mut b,
        );
        assert_eq!((a, wa), (b, wb));
    }

    #[test]
    fn zero_replicas_reads_nothing() {
        let mut out = vec![(9, 9)];
        let w = walk([0, 1].into_iter(), 0, None, &mut out);
        assert!(out.is_empty());
        assert_eq!(w.consumed, 0);
    }
}
