//! Rebalance plans: what a ring change moves, from whom, to whom.
//!
//! # What
//!
//! [`plan`] compares an old and a new ring for a replication factor and
//! lists every token range whose replica set changes, with the nodes that
//! lose and gain a replica of it, a streaming [`Transfer`] for each gained
//! replica, totals per (source, target) pair, and the fraction of all
//! replica data that moves. The plan also carries the token and rack
//! changes themselves ([`NodeChange`]), so [`Plan::apply`] turns the old
//! ring into the new one exactly — the property the proptests check, and
//! what lets `qkv ring apply` execute a plan that a human has reviewed.
//!
//! Constructors cover the usual operations: [`Plan::add_nodes`] (with an
//! allocation strategy), [`Plan::remove_nodes`], [`Plan::change_tokens`].
//!
//! # Why it is exact
//!
//! The boundaries of both rings together cut the token space into
//! segments; inside one segment no token of either ring intervenes, so
//! every key of the segment has the same replica set in the old ring, and
//! the same in the new ring. Comparing the two sets per segment is
//! therefore the whole answer, with no sampling. Adjacent segments with
//! the same before/after sets are merged so a plan reads as ranges, not
//! slivers.
//!
//! # Reading a plan
//!
//! * `losing`/`gaining`: replica responsibility moves from the former to
//!   the latter. Each gaining node is paired with a losing node (in replica
//!   order); that pair is a [`Transfer`], and its `source` is the node that
//!   streams the data: the losing node itself (it holds the data in the old
//!   ring), or, when nobody loses (the cluster grows towards `rf`), a
//!   replica that keeps the range. If the source is down, any other node
//!   of `before` holds the data too.
//! * `moved_fraction` is the data received by gaining nodes divided by the
//!   replica data of the *larger* of the two rings (`rf` copies of the
//!   keyspace once there are at least `rf` nodes). With this convention
//!   adding the `(n+1)`th node, or removing one of `n+1`, ideally moves
//!   `1/(n+1)`, and a change that re-homes every replica moves 1.0.
//!
//! # Implementation caveats
//!
//! * A losing node with no gaining partner (the cluster shrinks below `rf`)
//!   just drops its copy; no transfer is listed for it.
//! * Byte and key estimates ([`Plan::estimate`]) prorate each reported
//!   range's figures by token overlap: keys hash uniformly, so this is
//!   unbiased, but it is an estimate.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::alloc::{Strategy, allocate};
use crate::error::Error;
use crate::file::lenient_u64;
use crate::ring::{Ring, SPACE, TokenRange};
use crate::stats::{Ownership, ownership};
use crate::{NodeId, Token};

/// A change of one node's tokens or rack between the two rings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChange {
    /// The node.
    pub node: NodeId,
    /// Tokens it gives up (all of them when it leaves).
    #[serde(default)]
    pub removed: Vec<Token>,
    /// Tokens it takes (all of them when it joins).
    #[serde(default)]
    pub added: Vec<Token>,
    /// Its rack in the old ring.
    #[serde(default)]
    pub rack_before: Option<String>,
    /// Its rack in the new ring.
    #[serde(default)]
    pub rack_after: Option<String>,
}

/// One replica of one range changing hands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The replica giving up the range (`None`: a copy is added without
    /// anyone giving one up, as when growing towards `rf` nodes).
    pub from: Option<NodeId>,
    /// The node receiving a replica.
    pub to: NodeId,
    /// The node that streams the data: holds it in the old ring. `None`
    /// only when the old ring was empty (there is no data yet).
    pub source: Option<NodeId>,
}

/// A token range whose replica set changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeMove {
    /// The range `(start, end]`.
    pub range: TokenRange,
    /// Replicas in the old ring, in preference order.
    pub before: Vec<NodeId>,
    /// Replicas in the new ring, in preference order.
    pub after: Vec<NodeId>,
    /// In `before`, not in `after`.
    pub losing: Vec<NodeId>,
    /// In `after`, not in `before`.
    pub gaining: Vec<NodeId>,
    /// One transfer per gaining node.
    pub transfers: Vec<Transfer>,
}

/// How much streams from one node to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairTotal {
    /// The streaming node.
    pub source: NodeId,
    /// The receiving node.
    pub target: NodeId,
    /// Share of the token space streamed (one replica's worth).
    pub fraction: f64,
    /// Number of ranges streamed.
    pub ranges: usize,
}

/// Keys and bytes, for estimates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSize {
    /// Number of keys (one replica's worth).
    pub keys: u64,
    /// Bytes of keys and values (one replica's worth).
    pub bytes: u64,
}

/// Keys and bytes that one replica of a range holds, as a cluster reports
/// them (optional `load` of a ring file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeLoad {
    /// Exclusive start of the range.
    #[serde(deserialize_with = "lenient_u64")]
    pub start: Token,
    /// Inclusive end of the range.
    #[serde(deserialize_with = "lenient_u64")]
    pub end: Token,
    /// Keys in the range.
    pub keys: u64,
    /// Bytes in the range.
    pub bytes: u64,
}

/// Estimated keys and bytes a plan streams, in total and per pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Everything streamed.
    pub total: DataSize,
    /// Per (source, target), in the order of [`Plan::pairs`].
    pub pairs: Vec<(NodeId, NodeId, DataSize)>,
}

/// The difference between two rings for one replication factor; see the
/// module documentation for how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Replication factor the replica sets are computed for.
    pub rf: usize,
    /// Token and rack changes, by node name.
    pub changes: Vec<NodeChange>,
    /// Ranges whose replica set changes, in token order.
    pub moves: Vec<RangeMove>,
    /// Streaming totals per (source, target), sorted by names.
    pub pairs: Vec<PairTotal>,
    /// Fraction of all replica data that moves (see the module docs for
    /// the convention; ideal `1/(n+1)` for one node joining `n`).
    pub moved_fraction: f64,
    /// Ownership in the old ring.
    pub before: Ownership,
    /// Ownership in the new ring.
    pub after: Ownership,
}

/// The plan that turns `old` into `new` with replication factor `rf`.
pub fn plan(old: &Ring, new: &Ring, rf: usize) -> Plan {
    let before = ownership(old, rf);
    let after = ownership(new, rf);
    let moves = range_moves(old, new, rf);
    let mut pairs: BTreeMap<(NodeId, NodeId), (u128, usize)> = BTreeMap::new();
    let mut gained: u128 = 0;
    for m in &moves {
        let w = m.range.width();
        gained += w * m.gaining.len() as u128;
        for t in &m.transfers {
            if let Some(src) = &t.source {
                let e = pairs.entry((src.clone(), t.to.clone())).or_default();
                e.0 += w;
                e.1 += 1;
            }
        }
    }
    let total_before: f64 = before.nodes.iter().map(|n| n.replicated).sum();
    let total_after: f64 = after.nodes.iter().map(|n| n.replicated).sum();
    let denom = total_before.max(total_after);
    Plan {
        rf,
        changes: node_changes(old, new),
        pairs: pairs
            .into_iter()
            .map(|((source, target), (w, ranges))| PairTotal {
                source,
                target,
                fraction: w as f64 / SPACE,
                ranges,
            })
            .collect(),
        moved_fraction: if denom > 0.0 {
            gained as f64 / SPACE / denom
        } else {
            0.0
        },
        moves,
        before,
        after,
    }
}

/// A node joining in [`Plan::add_nodes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joining {
    /// Its id.
    pub node: NodeId,
    /// How many vnode tokens it takes.
    pub vnodes: usize,
    /// Its rack, if racks are in use.
    #[serde(default)]
    pub rack: Option<String>,
}

impl Plan {
    /// The plan from `old` to `new` (same as [`plan`]).
    pub fn new(old: &Ring, new: &Ring, rf: usize) -> Plan {
        plan(old, new, rf)
    }

    /// Adds `nodes` one after the other, each allocated with `strategy`
    /// against the ring including the previous ones (node `k` uses seed
    /// `seed + k`), and plans the result.
    pub fn add_nodes(
        old: &Ring,
        nodes: &[Joining],
        rf: usize,
        strategy: Strategy,
        seed: u64,
    ) -> Result<Plan, Error> {
        let mut new = old.clone();
        for (k, j) in nodes.iter().enumerate() {
            if new.contains_node(&j.node) {
                return Err(Error::NodeExists(j.node.clone()));
            }
            let prior_rack = new.rack(&j.node).map(str::to_string);
            new.set_rack(&j.node, j.rack.as_deref().or(prior_rack.as_deref()));
            let tokens = allocate(
                &new,
                &j.node,
                j.vnodes,
                rf,
                strategy,
                seed.wrapping_add(k as u64),
            )?;
            new.insert_node(&j.node, &tokens);
        }
        Ok(plan(old, &new, rf))
    }

    /// Removes `nodes` (an unknown or repeated one is an error) and plans
    /// the result.
    pub fn remove_nodes(old: &Ring, nodes: &[&str], rf: usize) -> Result<Plan, Error> {
        let mut new = old.clone();
        for n in nodes {
            new.remove_node(n)?;
        }
        Ok(plan(old, &new, rf))
    }

    /// Gives `node` exactly `tokens` (it joins if new, leaves if empty) and
    /// plans the result. A token of another node is an error.
    pub fn change_tokens(
        old: &Ring,
        node: &str,
        tokens: &[Token],
        rf: usize,
    ) -> Result<Plan, Error> {
        let mut new = old.clone();
        new.set_tokens(node, tokens)?;
        Ok(plan(old, &new, rf))
    }

    /// Applies the plan's token and rack changes to `old`. On the ring the
    /// plan was made from this gives the new ring exactly; on another ring
    /// it fails rather than guess.
    pub fn apply(&self, old: &Ring) -> Result<Ring, Error> {
        let mut map: BTreeMap<Token, NodeId> = old.tokens().map(|(t, n)| (t, n.clone())).collect();
        let mut racks = old.racks().clone();
        for c in &self.changes {
            if old.rack(&c.node) != c.rack_before.as_deref() {
                return Err(Error::PlanMismatch(format!(
                    "node {:?} is in rack {:?}, the plan expects {:?}",
                    c.node,
                    old.rack(&c.node),
                    c.rack_before
                )));
            }
            for t in &c.removed {
                match map.remove(t) {
                    Some(owner) if owner == c.node => {}
                    other => {
                        return Err(Error::PlanMismatch(format!(
                            "token {t} should belong to {:?}, found {other:?}",
                            c.node
                        )));
                    }
                }
            }
        }
        for c in &self.changes {
            for t in &c.added {
                if let Some(owner) = map.insert(*t, c.node.clone()) {
                    return Err(Error::TokenTaken { token: *t, owner });
                }
            }
            match &c.rack_after {
                Some(r) => racks.insert(c.node.clone(), r.clone()),
                None => racks.remove(&c.node),
            };
        }
        let mut ring = Ring::from_entries(map);
        for (node, rack) in &racks {
            ring.set_rack(node, Some(rack));
        }
        Ok(ring)
    }

    /// Estimated keys and bytes streamed, given a function that estimates
    /// one replica's data in any token range (for example
    /// [`prorate`] over a cluster's reported [`RangeLoad`]s).
    pub fn estimate(&self, load: impl Fn(&TokenRange) -> DataSize) -> Estimate {
        let mut total = DataSize::default();
        let mut per: BTreeMap<(&str, &str), DataSize> = BTreeMap::new();
        for m in &self.moves {
            let d = load(&m.range);
            for t in &m.transfers {
                total.keys += d.keys;
                total.bytes += d.bytes;
                if let Some(src) = &t.source {
                    let e = per.entry((src.as_str(), t.to.as_str())).or_default();
                    e.keys += d.keys;
                    e.bytes += d.bytes;
                }
            }
        }
        Estimate {
            total,
            pairs: self
                .pairs
                .iter()
                .map(|p| {
                    let d = per
                        .get(&(p.source.as_str(), p.target.as_str()))
                        .copied()
                        .unwrap_or_default();
                    (p.source.clone(), p.target.clone(), d)
                })
                .collect(),
        }
    }
}

/// One replica's keys and bytes in `range`, prorated by token overlap from
/// the ranges a cluster reported.
pub fn prorate(loads: &[RangeLoad], range: &TokenRange) -> DataSize {
    let (mut keys, mut bytes) = (0.0, 0.0);
    for l in loads {
        let r = TokenRange {
            start: l.start,
            end: l.end,
        };
        let share = range.overlap(&r) as f64 / r.width() as f64;
        keys += share * l.keys as f64;
        bytes += share * l.bytes as f64;
    }
    DataSize {
        keys: keys.round() as u64,
        bytes: bytes.round() as u64,
    }
}

/// Per-node token and rack differences, by node name.
fn node_changes(old: &Ring, new: &Ring) -> Vec<NodeChange> {
    let names: BTreeSet<&NodeId> = old
        .nodes()
        .iter()
        .chain(new.nodes())
        .chain(old.racks().keys())
        .chain(new.racks().keys())
        .collect();
    let mut out = Vec::new();
    for name in names {
        let (a, b) = (old.node_tokens(name), new.node_tokens(name));
        let removed: Vec<Token> = a
            .iter()
            .filter(|t| b.binary_search(t).is_err())
            .copied()
            .collect();
        let added: Vec<Token> = b
            .iter()
            .filter(|t| a.binary_search(t).is_err())
            .copied()
            .collect();
        let (ra, rb) = (old.rack(name), new.rack(name));
        if removed.is_empty() && added.is_empty() && ra == rb {
            continue;
        }
        out.push(NodeChange {
            node: name.clone(),
            removed,
            added,
            rack_before: ra.map(str::to_string),
            rack_after: rb.map(str::to_string),
        });
    }
    out
}

/// The changed segments between two rings, merged where adjacent segments
/// change the same way.
fn range_moves(old: &Ring, new: &Ring, rf: usize) -> Vec<RangeMove> {
    let mut bounds: Vec<Token> = old
        .tokens()
        .map(|(t, _)| t)
        .chain(new.tokens().map(|(t, _)| t))
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<RangeMove> = Vec::new();
    let k = bounds.len();
    for i in 0..k {
        let range = TokenRange {
            start: bounds[(i + k - 1) % k],
            end: bounds[i],
        };
        let before = old.preference_list(range.end, rf);
        let after = new.preference_list(range.end, rf);
        let losing: Vec<NodeId> = before
            .iter()
            .filter(|n| !after.contains(n))
            .cloned()
            .collect();
        let gaining: Vec<NodeId> = after
            .iter()
            .filter(|n| !before.contains(n))
            .cloned()
            .collect();
        if losing.is_empty() && gaining.is_empty() {
            continue;
        }
        if let Some(last) = out.last_mut()
            && last.range.end == range.start
            && last.before == before
            && last.after == after
        {
            last.range.end = range.end;
            continue;
        }
        let keeper = before.iter().find(|n| after.contains(n)).or(before.first());
        let transfers = gaining
            .iter()
            .enumerate()
            .map(|(i, to)| {
                let from = losing.get(i).cloned();
                Transfer {
                    source: from.clone().or_else(|| keeper.cloned()),
                    from,
                    to: to.clone(),
                }
            })
            .collect();
        out.push(RangeMove {
            range,
            before,
            after,
            losing,
            gaining,
            transfers,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: u64 = 1 << 61;

    fn names(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// a, b, c, d at 1e, 3e, 5e, 7e: a quarter of the ring each.
    fn four() -> Ring {
        let mut r = Ring::new();
        for (k, n) in ["a", "b", "c", "d"].iter().enumerate() {
            r.insert_node(n, &[(2 * k as u64 + 1) * E]);
        }
        r
    }

    #[test]
    fn adding_a_node_takes_from_the_replicas_it_displaces() {
        let old = four();
        let p = Plan::change_tokens(&old, "x", &[2 * E], 2).unwrap();
        assert_eq!(
            p.changes,
            vec![NodeChange {
                node: "x".into(),
                removed: vec![],
                added: vec![2 * E],
                rack_before: None,
                rack_after: None,
            }]
        );
        assert_eq!(p.moves.len(), 2, "{:#?}", p.moves);
        let m0 = &p.moves[0];
        assert_eq!(
            m0.range,
            TokenRange {
                start: 7 * E,
                end: E
            }
        );
        assert_eq!(
            (m0.before.clone(), m0.after.clone()),
            (names(&["a", "b"]), names(&["a", "x"]))
        );
        assert_eq!(
            (m0.losing.clone(), m0.gaining.clone()),
            (names(&["b"]), names(&["x"]))
        );
        assert_eq!(
            m0.transfers,
            vec![Transfer {
                from: Some("b".into()),
                to: "x".into(),
                source: Some("b".into()),
            }]
        );
        let m1 = &p.moves[1];
        assert_eq!(
            m1.range,
            TokenRange {
                start: E,
                end: 2 * E
            }
        );
        assert_eq!(
            (m1.before.clone(), m1.after.clone()),
            (names(&["b", "c"]), names(&["x", "b"]))
        );
        assert_eq!(m1.losing, names(&["c"]));
        assert_eq!(
            p.pairs,
            vec![
                PairTotal {
                    source: "b".into(),
                    target: "x".into(),
                    fraction: 0.25,
                    ranges: 1,
                },
                PairTotal {
                    source: "c".into(),
                    target: "x".into(),
                    fraction: 0.125,
                    ranges: 1,
                },
            ]
        );
        assert_eq!(p.moved_fraction, 3.0 / 16.0);
        assert_eq!(p.after.get("x").unwrap().replicated, 0.375);
        let mut new = old.clone();
        new.insert_node("x", &[2 * E]);
        assert_eq!(p.apply(&old), Ok(new));
    }

    #[test]
    fn removing_a_node_streams_its_ranges_to_the_next_replicas() {
        let old = four();
        let p = Plan::remove_nodes(&old, &["b"], 2).unwrap();
        assert_eq!(p.moves.len(), 2);
        assert_eq!(
            p.moves[0].range,
            TokenRange {
                start: 7 * E,
                end: E
            }
        );
        assert_eq!(p.moves[0].after, names(&["a", "c"]));
        assert_eq!(
            p.moves[1].range,
            TokenRange {
                start: E,
                end: 3 * E
            }
        );
        assert_eq!(p.moves[1].after, names(&["c", "d"]));
        for m in &p.moves {
            assert_eq!(m.losing, names(&["b"]));
            assert_eq!(m.transfers[0].source.as_deref(), Some("b"));
        }
        assert_eq!(p.moved_fraction, 0.25);
        assert_eq!(p.changes[0].removed, vec![3 * E]);
        let back = p.apply(&old).unwrap();
        assert!(!back.contains_node("b"));
        assert_eq!(back.node_count(), 3);
    }

    #[test]
    fn growing_towards_rf_copies_from_a_keeper() {
        let mut old = Ring::new();
        old.insert_node("a", &[E]);
        let p = Plan::change_tokens(&old, "b", &[5 * E], 3).unwrap();
        assert_eq!(p.moves.len(), 2);
        for m in &p.moves {
            assert!(m.losing.is_empty());
            assert_eq!(m.gaining, names(&["b"]));
            assert_eq!(
                m.transfers,
                vec![Transfer {
                    from: None,
                    to: "b".into(),
                    source: Some("a".into()),
                }]
            );
        }
        // Two copies of the keyspace afterwards, one of which is new.
        assert_eq!(p.moved_fraction, 0.5);
    }

    #[test]
    fn estimate_prorates_reported_loads() {
        let old = four();
        let loads: Vec<RangeLoad> = old
            .ranges(1)
            .iter()
            .map(|r| RangeLoad {
                start: r.range.start,
                end: r.range.end,
                keys: 100,
                bytes: 1000,
            })
            .collect();
        let p = Plan::change_tokens(&old, "x", &[2 * E], 2).unwrap();
        let est = p.estimate(|r| prorate(&loads, r));
        // All of a's quarter from b, half of b's quarter from c.
        assert_eq!(
            est.total,
            DataSize {
                keys: 150,
                bytes: 1500
            }
        );
        assert_eq!(
            est.pairs,
            vec![
                (
                    "b".into(),
                    "x".into(),
                    DataSize {
                        keys: 100,
                        bytes: 1000
                    }
                ),
                (
                    "c".into(),
                    "x".into(),
                    DataSize {
                        keys: 50,
                        bytes: 500
                    }
                ),
            ]
        );
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let old = four();
        assert_eq!(
            Plan::remove_nodes(&old, &["zz"], 3).unwrap_err(),
            Error::UnknownNode("zz".into())
        );
        let join = |n: &str| Joining {
            node: n.into(),
            vnodes: 4,
            rack: None,
        };
        assert_eq!(
            Plan::add_nodes(&old, &[join("a")], 3, Strategy::Balanced, 1).unwrap_err(),
            Error::NodeExists("a".into())
        );
        assert!(matches!(
            Plan::change_tokens(&old, "x", &[E], 3),
            Err(Error::TokenTaken { token: E, .. })
        ));
    }

    #[test]
    fn applying_to_another_ring_is_refused() {
        let old = four();
        let p = Plan::remove_nodes(&old, &["b"], 3).unwrap();
        let mut other = old.clone();
        other.set_tokens("b", &[4 * E]).unwrap();
        assert!(matches!(p.apply(&other), Err(Error::PlanMismatch(_))));
    }

    #[test]
    fn add_nodes_with_racks_records_them_and_round_trips() {
        let mut old = four();
        for (n, r) in [("a", "r1"), ("b", "r2"), ("c", "r1"), ("d", "r2")] {
            old.set_rack(n, Some(r));
        }
        let joins = [
            Joining {
                node: "e".into(),
                vnodes: 3,
                rack: Some("r3".into()),
            },
            Joining {
                node: "f".into(),
                vnodes: 3,
                rack: Some("r3".into()),
            },
        ];
        let p = Plan::add_nodes(&old, &joins, 3, Strategy::Balanced, 5).unwrap();
        let new = p.apply(&old).unwrap();
        assert_eq!(new.rack("e"), Some("r3"));
        assert_eq!(new.node_tokens("f").len(), 3);
        assert_eq!(plan(&old, &new, 3), p);
        for m in &p.moves {
            assert!(m.gaining.iter().all(|g| g == "e" || g == "f"), "{m:?}");
        }
    }

    #[test]
    fn plan_json_round_trips() {
        let old = four();
        let p = Plan::remove_nodes(&old, &["c"], 3).unwrap();
        let text = serde_json::to_string(&p).unwrap();
        let back: Plan = serde_json::from_str(&text).unwrap();
        assert_eq!(back.changes, p.changes);
        assert_eq!(back.moves, p.moves);
        assert_eq!(back.apply(&old), p.apply(&old));
    }
}
