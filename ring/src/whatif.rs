//! Failure what-if: which ranges stop serving each consistency level when
//! some nodes are down.
//!
//! # What
//!
//! For a set of down nodes and a replication factor, [`what_if`] lists the
//! token ranges that can no longer serve
//!
//! * `one` — no live replica at all (reads and writes fail; data may be
//!   unavailable until a node returns),
//! * `quorum` — fewer than `rf/2 + 1` live replicas,
//! * `all` — any replica down (or fewer than `rf` replicas exist),
//!
//! with the keyspace fraction each level loses. It answers "can I take
//! these two nodes down for maintenance?" before doing it.
//!
//! # Why it is exact
//!
//! A key's replica set is constant inside one vnode range, so counting the
//! live replicas of every range answers the question for every key. With
//! strict quorums (our default) hints never count towards the required
//! number, so this is exactly the set of requests that would get 503
//! `unavailable`. Sloppy quorums would still accept writes there.
//!
//! # Implementation caveats
//!
//! * Adjacent ranges with the same replicas are merged in the output.
//! * The requirements are counted against `rf`, not against the replicas
//!   that exist: on a ring with fewer nodes than `rf`, `all` fails
//!   everywhere, as the coordinator would answer.

use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::error::Error;
use crate::ring::{Ring, SPACE, TokenRange};

/// A range that lost a consistency level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRange {
    /// The range `(start, end]`.
    pub range: TokenRange,
    /// Its replicas, in preference order.
    pub replicas: Vec<NodeId>,
    /// How many of them are live.
    pub live: usize,
}

/// What one consistency level loses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelLoss {
    /// Live replicas the level needs.
    pub required: usize,
    /// Ranges with fewer live replicas, in token order.
    pub ranges: Vec<LostRange>,
    /// Share of the keyspace in those ranges.
    pub fraction: f64,
}

/// The answer of [`what_if`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIf {
    /// The replication factor assumed.
    pub rf: usize,
    /// The nodes assumed down, sorted.
    pub down: Vec<NodeId>,
    /// Ranges with no live replica.
    pub one: LevelLoss,
    /// Ranges without a live majority.
    pub quorum: LevelLoss,
    /// Ranges with any replica down.
    pub all: LevelLoss,
}

/// The quorum size for `rf` replicas: a strict majority.
pub fn quorum(rf: usize) -> usize {
    rf / 2 + 1
}

/// What `one`, `quorum` and `all` lose with `down` nodes unavailable. An
/// unknown node is an error (a typo would otherwise look reassuring).
pub fn what_if(ring: &Ring, down: &[&str], rf: usize) -> Result<WhatIf, Error> {
    if rf == 0 {
        return Err(Error::InvalidArgument(
            "replication factor must be at least 1".into(),
        ));
    }
    let mut is_down = vec![false; ring.node_count()];
    for d in down {
        let idx = ring
            .index_of(d)
            .ok_or_else(|| Error::UnknownNode((*d).into()))?;
        is_down[idx as usize] = true;
    }
    let mut levels = [
        (1usize, Vec::new(), 0u128),
        (quorum(rf), Vec::new(), 0),
        (rf, Vec::new(), 0),
    ];
    ring.for_each_range(rf, |range, reps| {
        let live = reps.iter().filter(|(n, _)| !is_down[*n as usize]).count();
        for (required, ranges, width) in &mut levels {
            if live >= *required {
                continue;
            }
            *width += range.width();
            let names: Vec<NodeId> = reps
                .iter()
                .map(|(n, _)| ring.nodes()[*n as usize].clone())
                .collect();
            if let Some(last) = ranges
                .last_mut()
                .filter(|l: &&mut LostRange| l.range.end == range.start && l.replicas == names)
            {
                last.range.end = range.end;
            } else {
                ranges.push(LostRange {
                    range,
                    replicas: names,
                    live,
                });
            }
        }
    });
    let [one, quorum, all] = levels.map(|(required, ranges, width)| LevelLoss {
        required,
        ranges,
        fraction: width as f64 / SPACE,
    });
    let mut down: Vec<NodeId> = down.iter().map(|d| d.to_string()).collect();
    down.sort();
    down.dedup();
    Ok(WhatIf {
        rf,
        down,
        one,
        quorum,
        all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Five nodes, one token each at k·2^61 (k = 1..5), so ranges are an
    /// eighth of the ring except the wrapping one (a's), which is 4/8.
    fn five() -> Ring {
        let e = 1u64 << 61;
        let mut r = Ring::new();
        for (k, n) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            r.insert_node(n, &[(k as u64 + 1) * e]);
        }
        r
    }

    #[test]
    fn quorum_table() {
        for (rf, q) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
            assert_eq!(quorum(rf), q, "rf {rf}");
        }
    }

    #[test]
    fn two_adjacent_nodes_down_with_rf3() {
        let w = what_if(&five(), &["c", "b"], 3).unwrap();
        assert_eq!(w.down, names(&["b", "c"]));
        // one: no range has all of b, c and a third node down.
        assert!(w.one.ranges.is_empty());
        assert_eq!(w.one.fraction, 0.0);
        // quorum: ranges whose replicas include both b and c: (a..b] → b c d,
        // (e..a] → a b c. Ranges: a's (wrapping, 4/8) and b's (1/8).
        let q: Vec<_> = w.quorum.ranges.iter().map(|r| r.replicas.clone()).collect();
        assert_eq!(q, vec![names(&["a", "b", "c"]), names(&["b", "c", "d"])]);
        assert!(w.quorum.ranges.iter().all(|r| r.live == 1));
        assert_eq!(w.quorum.fraction, 5.0 / 8.0);
        // all: every range whose replicas include b or c: all but d's
        // (d e a).
        assert_eq!(w.all.fraction, 7.0 / 8.0);
        assert_eq!(w.all.ranges.len(), 4, "{:?}", w.all.ranges);
        assert_eq!(w.all.required, 3);
    }

    #[test]
    fn three_nodes_down_lose_one_somewhere() {
        let w = what_if(&five(), &["b", "c", "d"], 3).unwrap();
        assert_eq!(w.one.ranges.len(), 1);
        assert_eq!(w.one.ranges[0].replicas, names(&["b", "c", "d"]));
        assert_eq!(w.one.ranges[0].live, 0);
        assert_eq!(w.one.fraction, 1.0 / 8.0);
    }

    #[test]
    fn nothing_down_loses_nothing() {
        let w = what_if(&five(), &[], 3).unwrap();
        assert_eq!(
            (w.one.fraction, w.quorum.fraction, w.all.fraction),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn unknown_node_and_zero_rf_are_errors() {
        assert_eq!(
            what_if(&five(), &["z"], 3),
            Err(Error::UnknownNode("z".into()))
        );
        assert!(matches!(
            what_if(&five(), &[], 0),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn adjacent_ranges_with_the_same_replicas_merge() {
        let mut r = Ring::new();
        r.insert_node("a", &[10, 20]);
        r.insert_node("b", &[30]);
        let w = what_if(&r, &["a"], 1).unwrap();
        // (30, 10] and (10, 20] are both [a], adjacent: one range (30, 20].
        assert_eq!(w.one.ranges.len(), 1);
        assert_eq!(w.one.ranges[0].range, TokenRange { start: 30, end: 20 });
    }
}
