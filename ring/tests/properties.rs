//! Properties of the ring that must hold for every ring, not just the
//! hand-built ones in the unit tests.

use std::collections::BTreeSet;

use proptest::prelude::*;
use quorumkv_ring::{
    Joining, NodeId, Plan, Ring, Strategy as Alloc, Token, allocate, ownership, plan, what_if,
};

/// A ring of 1–9 nodes with 1–5 random tokens each; about half the rings
/// have racks (0–2 labels, some nodes unlabelled).
fn arb_ring() -> impl Strategy<Value = Ring> {
    (
        prop::collection::vec(
            (
                prop::collection::vec(any::<u64>(), 1..6),
                prop::option::of(0u8..3),
            ),
            1..10,
        ),
        any::<bool>(),
    )
        .prop_map(|(nodes, racks)| {
            let mut ring = Ring::new();
            for (i, (tokens, rack)) in nodes.iter().enumerate() {
                let name = format!("n{i}");
                ring.insert_node(&name, tokens);
                if racks && let Some(r) = rack {
                    ring.set_rack(&name, Some(&format!("r{r}")));
                }
            }
            ring
        })
}

/// The old, obviously correct lookup: walk a sorted map clockwise and take
/// distinct nodes (no racks).
fn naive_preference(ring: &Ring, token: Token, n: usize) -> Vec<NodeId> {
    let all: Vec<(Token, &NodeId)> = ring.tokens().collect();
    let start = all.iter().position(|(t, _)| *t >= token).unwrap_or(0);
    let mut out: Vec<NodeId> = Vec::new();
    for k in 0..all.len() {
        let node = all[(start + k) % all.len()].1;
        if out.len() < n && !out.contains(node) {
            out.push(node.clone());
        }
    }
    out
}

fn rack_of(ring: &Ring, node: &str) -> String {
    ring.rack(node).unwrap_or("").to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn preference_lists_hold_n_distinct_nodes_and_distinct_racks(
        ring in arb_ring(), token in any::<u64>(), n in 1usize..6,
    ) {
        let list = ring.preference_list(token, n);
        prop_assert_eq!(list.len(), n.min(ring.node_count()));
        let distinct: BTreeSet<&NodeId> = list.iter().collect();
        prop_assert_eq!(distinct.len(), list.len());
        prop_assert_eq!(list.first().map(String::as_str), ring.owner(token));
        let racks: BTreeSet<String> = list.iter().map(|m| rack_of(&ring, m)).collect();
        prop_assert_eq!(racks.len(), n.min(ring.rack_count()), "{:?}", list);
        if ring.rack_count() <= 1 {
            prop_assert_eq!(&list, &naive_preference(&ring, token, n));
        }
    }

    #[test]
    fn ranges_agree_with_lookups(ring in arb_ring(), rf in 1usize..5) {
        let ranges = ring.ranges(rf);
        prop_assert_eq!(ranges.len(), ring.vnode_count());
        let total: u128 = ranges.iter().map(|r| r.range.width()).sum();
        prop_assert_eq!(total, 1u128 << 64);
        for r in &ranges {
            prop_assert_eq!(&r.replicas, &ring.preference_list(r.range.end, rf));
            prop_assert_eq!(&r.replicas, &ring.preference_list(r.range.start.wrapping_add(1), rf));
        }
    }

    #[test]
    fn replicated_ownership_sums_to_rf(ring in arb_ring(), rf in 1usize..6) {
        let o = ownership(&ring, rf);
        let replicated: f64 = o.nodes.iter().map(|n| n.replicated).sum();
        let primary: f64 = o.nodes.iter().map(|n| n.primary).sum();
        let expected = rf.min(ring.node_count()) as f64;
        prop_assert!((replicated - expected).abs() < 1e-9, "{} vs {}", replicated, expected);
        prop_assert!((primary - 1.0).abs() < 1e-12, "{}", primary);
    }

    #[test]
    fn applying_a_plan_to_the_old_ring_gives_the_new_ring(
        old in arb_ring(), new in arb_ring(), rf in 1usize..5,
    ) {
        // Any two rings: the plan carries every token and rack change.
        prop_assert_eq!(plan(&old, &new, rf).apply(&old), Ok(new.clone()));
    }

    #[test]
    fn applying_a_planned_operation_gives_the_new_ring(
        old in arb_ring(), rf in 1usize..5, pick in any::<prop::sample::Index>(),
        tokens in prop::collection::vec(any::<u64>(), 0..5), op in 0u8..3, seed in any::<u64>(),
    ) {
        let victim = pick.get(old.nodes()).clone();
        let (p, new) = match op {
            0 => {
                let mut new = old.clone();
                new.remove_node(&victim).unwrap();
                (Plan::remove_nodes(&old, &[victim.as_str()], rf).unwrap(), new)
            }
            1 => {
                let mut new = old.clone();
                let fresh: Vec<Token> = tokens
                    .iter()
                    .copied()
                    .filter(|t| !old.tokens().any(|(u, o)| u == *t && *o != victim))
                    .collect();
                new.set_tokens(&victim, &fresh).unwrap();
                (Plan::change_tokens(&old, &victim, &fresh, rf).unwrap(), new)
            }
            _ => {
                let join = Joining { node: "joiner".into(), vnodes: 4, rack: Some("r9".into()) };
                let p = Plan::add_nodes(&old, &[join], rf, Alloc::Balanced, seed).unwrap();
                let new = p.apply(&old).unwrap();
                prop_assert_eq!(new.node_tokens("joiner").len(), 4);
                (p, new)
            }
        };
        prop_assert_eq!(p.apply(&old), Ok(new));
    }

    #[test]
    fn adding_a_node_moves_data_only_to_that_node(
        old in arb_ring(), rf in 1usize..5, v in 1usize..8, seed in any::<u64>(),
        balanced in any::<bool>(), rack in prop::option::of(0u8..4),
    ) {
        let strategy = if balanced { Alloc::Balanced } else { Alloc::Random };
        let join = Joining { node: "x".into(), vnodes: v, rack: rack.map(|r| format!("r{r}")) };
        let p = Plan::add_nodes(&old, &[join], rf, strategy, seed).unwrap();
        for m in &p.moves {
            prop_assert_eq!(&m.gaining, &vec!["x".to_string()], "{:?}", m);
            prop_assert!(m.losing.len() <= 1, "{:?}", m);
            for t in &m.transfers {
                prop_assert_eq!(t.to.as_str(), "x");
                let source = t.source.as_ref().unwrap();
                prop_assert!(m.before.contains(source), "{:?}", m);
            }
        }
        let x_share = p.after.get("x").map_or(0.0, |n| n.replicated);
        let moved: f64 = p.moves.iter().map(|m| m.range.fraction()).sum();
        prop_assert!((moved - x_share).abs() < 1e-9, "{} vs {}", moved, x_share);
    }

    #[test]
    fn removing_a_node_moves_data_only_away_from_it(
        old in arb_ring(), rf in 1usize..5, pick in any::<prop::sample::Index>(),
    ) {
        let victim = pick.get(old.nodes()).clone();
        let p = Plan::remove_nodes(&old, &[victim.as_str()], rf).unwrap();
        for m in &p.moves {
            prop_assert_eq!(&m.losing, &vec![victim.clone()], "{:?}", m);
            prop_assert!(!m.gaining.contains(&victim));
            for t in &m.transfers {
                prop_assert_eq!(t.source.as_ref(), Some(&victim));
            }
        }
    }

    #[test]
    fn same_seed_same_tokens(
        ring in arb_ring(), v in 1usize..10, rf in 1usize..5, seed in any::<u64>(), balanced in any::<bool>(),
    ) {
        let strategy = if balanced { Alloc::Balanced } else { Alloc::Random };
        let a = allocate(&ring, "x", v, rf, strategy, seed).unwrap();
        let b = allocate(&ring, "x", v, rf, strategy, seed).unwrap();
        prop_assert_eq!(a.len(), v);
        prop_assert!(a.iter().all(|t| ring.owner(*t).is_some() && !ring.tokens().any(|(u, _)| u == *t)));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn what_if_levels_nest(ring in arb_ring(), rf in 1usize..5, pick in any::<prop::sample::Index>()) {
        let down = pick.get(ring.nodes()).clone();
        let w = what_if(&ring, &[down.as_str()], rf).unwrap();
        prop_assert!(w.one.fraction <= w.quorum.fraction + 1e-12);
        prop_assert!(w.quorum.fraction <= w.all.fraction + 1e-12);
        let none = what_if(&ring, &[], rf).unwrap();
        prop_assert_eq!(none.one.fraction, 0.0);
        // Requirements count against rf: a ring smaller than a quorum
        // cannot serve quorum anywhere, even with every node up.
        let expected = if ring.node_count() >= quorumkv_ring::quorum(rf) { 0.0 } else { 1.0 };
        prop_assert_eq!(none.quorum.fraction, expected);
    }
}
