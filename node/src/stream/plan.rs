//! Which ranges each node gains when the ring turns from `current` into
//! `future`, and where to stream each from. Pure: a function of the two
//! rings and the replication factors in use.

use std::collections::{BTreeMap, BTreeSet};

use quorumkv_ring::{Ring, TokenRange};

use crate::proto::PullRange;

/// For every node that gains ranges, the ranges with their sources, for
/// each replication factor in `ns` (a range gained at several factors is
/// listed once, its sources merged). Sources are current replicas of the
/// range: the nodes giving it up first (they are about to drop it
/// anyway, so reading from them spares the replicas that stay), then the others in preference order.
pub fn gains(
    current: &Ring,
    future: &Ring,
    ns: &BTreeSet<u32>,
) -> BTreeMap<String, Vec<PullRange>> {
    let mut out: BTreeMap<String, BTreeMap<TokenRange, Vec<String>>> = BTreeMap::new();
    for &n in ns {
        let plan = quorumkv_ring::plan(current, future, n as usize);
        for m in plan.moves {
            if m.gaining.is_empty() {
                continue;
            }
            let mut sources: Vec<String> = m.losing.clone();
            sources.extend(m.before.iter().filter(|b| !m.losing.contains(b)).cloned());
            if sources.is_empty() {
                // The ring was empty: nobody holds data to stream.
                continue;
            }
            for g in &m.gaining {
                let entry = out
                    .entry(g.clone())
                    .or_default()
                    .entry(m.range)
                    .or_default();
                for s in &sources {
                    if !entry.contains(s) && s != g {
                        entry.push(s.clone());
                    }
                }
            }
        }
    }
    out.into_iter()
        .map(|(node, ranges)| {
            let list = ranges
                .into_iter()
                .map(|(range, sources)| PullRange { range, sources })
                .collect();
            (node, list)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(nodes: &[(&str, &[u64])]) -> Ring {
        let mut r = Ring::new();
        for (id, tokens) in nodes {
            r.insert_node(id, tokens);
        }
        r
    }

    fn ns(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_joining_node_gains_ranges_from_the_node_giving_them_up() {
        let current = ring(&[("n1", &[100]), ("n2", &[200]), ("n3", &[300])]);
        let future = ring(&[
            ("n1", &[100]),
            ("n2", &[200]),
            ("n3", &[300]),
            ("n4", &[150]),
        ]);
        let g = gains(&current, &future, &ns(&[2]));
        assert_eq!(g.keys().collect::<Vec<_>>(), ["n4"]);
        let mut covered = 0u128;
        for pr in &g["n4"] {
            assert!(!pr.sources.is_empty());
            assert!(!pr.sources.contains(&"n4".to_string()));
            // Every key of the range is stored on every source now.
            let now = current.preference_list(pr.range.end, 2);
            assert!(pr.sources.iter().all(|s| now.contains(s)), "{pr:?}");
            // The first source gives the range up.
            let later = future.preference_list(pr.range.end, 2);
            assert!(!later.contains(&pr.sources[0]), "{pr:?}");
            covered += pr.range.width();
        }
        // At n=2, n4 replicates its own (100,150] and n1's (300,100].
        let expect = TokenRange {
            start: 100,
            end: 150,
        }
        .width()
            + TokenRange {
                start: 300,
                end: 100,
            }
            .width();
        assert_eq!(covered, expect);
    }

    #[test]
    fn a_leaving_node_hands_every_range_it_held_to_someone() {
        let current = ring(&[
            ("n1", &[100]),
            ("n2", &[200]),
            ("n3", &[300]),
            ("n4", &[150]),
        ]);
        let future = ring(&[("n1", &[100]), ("n2", &[200]), ("n3", &[300])]);
        let g = gains(&current, &future, &ns(&[2, 3]));
        assert!(!g.contains_key("n4"));
        // Every range n4 replicated at n=2 is gained by someone.
        for rr in current.ranges(2) {
            if rr.replicas.contains(&"n4".to_string()) {
                let gained = g
                    .values()
                    .flatten()
                    .any(|pr| pr.range.overlap(&rr.range) > 0);
                assert!(gained, "{:?}", rr.range);
            }
        }
        assert!(gains(&current, &current, &ns(&[3])).is_empty());
        // The first node of a cluster gains everything from nobody.
        assert!(gains(&Ring::new(), &current, &ns(&[3])).is_empty());
    }
}
