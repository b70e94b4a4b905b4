//! Ownership statistics: how evenly a ring spreads data.
//!
//! # What
//!
//! For every node, two shares of the token space (equal to shares of the
//! keys, since keys hash uniformly):
//!
//! * **primary** ownership — where the node is the *first* replica (sums to
//!   1 over the nodes). This is what a ring with one copy would store, and
//!   what `/cluster/ring` reports as `ownership`.
//! * **replicated** ownership — where the node is among the `rf` replicas.
//!   This is the data a node actually stores and serves, so it is the
//!   balance that matters. It sums to `rf` when the ring has at least `rf`
//!   nodes (to the node count otherwise: every node then holds everything).
//!
//! Each is summarised by [`Summary`]: max/mean (the hottest node's excess:
//! what capacity planning must provision for), min/mean, the coefficient
//! of variation (stddev/mean: the usual single figure, and the one with a
//! closed form for random tokens, `sqrt((n-1)/(nV+1))` for primary
//! ownership), and Dynamo's imbalance ratio (the fraction of nodes more
//! than 15% away from the mean).
//!
//! # Why it is exact
//!
//! Shares are summed as exact `u128` token counts per node and converted to
//! floats once, so a ring with a million vnodes does not accumulate
//! rounding: primary shares sum to 1 within one ulp per node.
//!
//! # Implementation caveats
//!
//! * The standard deviation is the population one (divide by `n`): the
//!   nodes are the whole population, and the mean is known exactly.
//! * Replicated ownership follows the ring's placement rule, so with racks
//!   it is rack-aware, as the data really is.

use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::ring::{Ring, SPACE};

/// Dynamo's threshold: a node further than this (relative) from the mean
/// counts as out of balance in [`Summary::imbalance`].
pub const IMBALANCE_THRESHOLD: f64 = 0.15;

/// One node's shares of the ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeOwnership {
    /// The node.
    pub node: NodeId,
    /// Its rack label, if any (placement groups replicas by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// How many vnode tokens it has.
    pub vnodes: usize,
    /// Share of the token space where it is the first replica.
    pub primary: f64,
    /// Share of the token space where it is among the first `rf` replicas
    /// (what it stores).
    pub replicated: f64,
}

/// Balance figures over a set of per-node values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean per node.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// `max / mean`: 1.0 is perfect; 1.10 means the busiest node stores
    /// 10% more than its fair share.
    pub max_over_mean: f64,
    /// `min / mean`.
    pub min_over_mean: f64,
    /// Coefficient of variation: population stddev / mean.
    pub cv: f64,
    /// Fraction of nodes more than [`IMBALANCE_THRESHOLD`] off the mean
    /// (Dynamo's "imbalance ratio").
    pub imbalance: f64,
}

impl Summary {
    /// The summary of `values`; all zeros for an empty slice or a zero
    /// mean, so that serialised figures are never NaN.
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        if mean <= 0.0 {
            return Summary::default();
        }
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let off = values
            .iter()
            .filter(|v| ((*v - mean) / mean).abs() > IMBALANCE_THRESHOLD)
            .count();
        Summary {
            mean,
            min,
            max,
            max_over_mean: max / mean,
            min_over_mean: min / mean,
            cv: var.sqrt() / mean,
            imbalance: off as f64 / n,
        }
    }
}

/// Ownership of every node of a ring for one replication factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ownership {
    /// The replication factor the replicated shares are for.
    pub rf: usize,
    /// Per node, in node-name order.
    pub nodes: Vec<NodeOwnership>,
    /// Balance of primary ownership.
    pub primary: Summary,
    /// Balance of replicated ownership (the one that matters for load).
    pub replicated: Summary,
}

impl Ownership {
    /// The entry of `node`, if it is on the ring.
    pub fn get(&self, node: &str) -> Option<&NodeOwnership> {
        self.nodes.iter().find(|n| n.node == node)
    }
}

/// Computes per-node primary and replicated ownership for `rf`, and their
/// summaries. `O(T · walk)`; see the module documentation.
pub fn ownership(ring: &Ring, rf: usize) -> Ownership {
    let (primary, replicated) = shares(ring, rf);
    let mut vnodes = vec![0usize; ring.node_count()];
    for &o in ring.raw().1 {
        vnodes[o as usize] += 1;
    }
    let nodes: Vec<NodeOwnership> = ring
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| NodeOwnership {
            node: node.clone(),
            rack: ring.rack(node).map(str::to_string),
            vnodes: vnodes[i],
            primary: primary[i],
            replicated: replicated[i],
        })
        .collect();
    Ownership {
        rf,
        primary: Summary::of(&primary),
        replicated: Summary::of(&replicated),
        nodes,
    }
}

/// Per node index: (primary share, replicated share), as fractions of the
/// token space, summed exactly.
pub(crate) fn shares(ring: &Ring, rf: usize) -> (Vec<f64>, Vec<f64>) {
    let n = ring.node_count();
    let mut primary = vec![0u128; n];
    let mut replicated = vec![0u128; n];
    ring.for_each_range(rf.max(1), |range, reps| {
        let w = range.width();
        if let Some(&(first, _)) = reps.first() {
            primary[first as usize] += w;
        }
        for &(node, _) in reps.iter().take(rf) {
            replicated[node as usize] += w;
        }
    });
    let to_f = |v: Vec<u128>| v.into_iter().map(|w| w as f64 / SPACE).collect();
    (to_f(primary), to_f(replicated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_table() {
        // (values, max/mean, min/mean, cv, imbalance)
        let cases: &[(&[f64], f64, f64, f64, f64)] = &[
            (&[1.0, 1.0, 1.0], 1.0, 1.0, 0.0, 0.0),
            (&[0.5, 1.5], 1.5, 0.5, 0.5, 1.0),
            (
                &[1.0, 1.0, 1.0, 1.3],
                1.3 / 1.075,
                1.0 / 1.075,
                0.1208,
                0.25,
            ),
            (&[1.0, 1.0, 1.0, 1.2], 1.2 / 1.05, 1.0 / 1.05, 0.0825, 0.0),
        ];
        for (values, max, min, cv, imb) in cases {
            let s = Summary::of(values);
            assert!((s.max_over_mean - max).abs() < 1e-9, "{values:?}: {s:?}");
            assert!((s.min_over_mean - min).abs() < 1e-9, "{values:?}: {s:?}");
            assert!((s.cv - cv).abs() < 1e-3, "{values:?}: {s:?}");
            assert_eq!(s.imbalance, *imb, "{values:?}");
        }
        assert_eq!(Summary::of(&[]), Summary::default());
    }

    #[test]
    fn hand_built_ring_shares() {
        // a owns (3/4·2^64, 1/4·2^64] = 1/2, b and c a quarter each.
        let q = 1u64 << 62;
        let mut r = Ring::new();
        r.insert_node("a", &[q]);
        r.insert_node("b", &[2 * q]);
        r.insert_node("c", &[3 * q]);
        let o = ownership(&r, 2);
        let get = |n: &str| o.get(n).unwrap().clone();
        assert_eq!(get("a").primary, 0.5);
        assert_eq!(get("b").primary, 0.25);
        // rf 2: a is a replica of its own half and of c's quarter (c, a).
        assert_eq!(get("a").replicated, 0.75);
        assert_eq!(get("b").replicated, 0.75);
        assert_eq!(get("c").replicated, 0.5);
        let sum: f64 = o.nodes.iter().map(|n| n.replicated).sum();
        assert_eq!(sum, 2.0);
        assert_eq!(o.replicated.max_over_mean, 0.75 / (2.0 / 3.0));
    }

    #[test]
    fn fewer_nodes_than_rf_means_everyone_holds_everything() {
        let mut r = Ring::new();
        r.insert_node("a", &[1, 100]);
        r.insert_node("b", &[50]);
        let o = ownership(&r, 3);
        assert!(o.nodes.iter().all(|n| n.replicated == 1.0));
    }
}
