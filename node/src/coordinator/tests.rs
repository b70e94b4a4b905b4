//! Placement, quorum checks and the read and forward orders: table tests
//! and properties.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

fn names(v: &[&str]) -> Vec<NodeId> {
    v.iter().map(|s| NodeId::from(*s)).collect()
}

fn strs(v: &[NodeId]) -> Vec<&str> {
    v.iter().map(|n| &**n).collect()
}

fn nodes(p: &Placement) -> Vec<&str> {
    p.targets.iter().map(|t| &*t.node).collect()
}

/// Standings with no latency known: outstanding calls alone.
fn by_load(load: impl Fn(&str) -> usize) -> impl Fn(&str) -> Standing {
    move |n| Standing {
        latency_us: None,
        outstanding: load(n),
    }
}

#[test]
fn a_read_asks_fast_replicas_before_slow_ones_and_the_less_loaded_of_equally_fast_ones() {
    // b, c, d replicas (a is down), e stands in for a.
    let p = place(names(&["a", "b", "c", "d"]), &names(&["e"]), true, |r| {
        r != "a"
    });
    let s = |us: Option<u64>, outstanding| Standing {
        latency_us: us,
        outstanding,
    };
    for (b, c, d, me, want) in [
        // b slowed to 50 ms: last of the replicas; c and d both under
        // a millisecond, so the less loaded d first.
        (
            s(Some(50_000), 0),
            s(Some(400), 3),
            s(Some(900), 1),
            "x",
            ["d", "c", "b", "e"],
        ),
        // Nothing known of b: it counts as fast.
        (
            s(None, 0),
            s(Some(400), 3),
            s(Some(900), 1),
            "x",
            ["b", "d", "c", "e"],
        ),
        // 2 ms is a band slower than 0.4 ms, whatever the load.
        (
            s(Some(2_000), 0),
            s(Some(400), 9),
            s(Some(900), 9),
            "x",
            ["c", "d", "b", "e"],
        ),
        // Within a band, equal loads keep preference order.
        (
            s(Some(1_500), 2),
            s(Some(2_900), 2),
            s(Some(1_000), 2),
            "x",
            ["b", "c", "d", "e"],
        ),
        // This node first, however slow its figure.
        (
            s(Some(50_000), 5),
            s(Some(400), 0),
            s(Some(900), 0),
            "b",
            ["b", "c", "d", "e"],
        ),
        // A replica that failed its calls (1 s) after one merely slow.
        (
            s(Some(1_000_000), 0),
            s(Some(50_000), 0),
            s(None, 4),
            "x",
            ["d", "c", "b", "e"],
        ),
    ] {
        let standing = |n: &str| match n {
            "b" => b,
            "c" => c,
            "d" => d,
            _ => Standing::default(),
        };
        assert_eq!(
            strs(&read_order(&p, me, standing)),
            want,
            "{b:?} {c:?} {d:?} via {me}"
        );
    }
}

#[test]
fn a_forwarded_write_tries_the_fastest_replica_first_and_stand_ins_last() {
    let p = place(names(&["a", "b", "c"]), &names(&["d"]), true, |r| r != "c");
    let standing = |n: &str| Standing {
        latency_us: (n == "a").then_some(100_000),
        outstanding: 0,
    };
    assert_eq!(strs(&forward_order(&p, standing)), ["b", "a", "d"]);
    // Nothing known: preference order.
    assert_eq!(
        strs(&forward_order(&p, |_| Standing::default())),
        ["a", "b", "d"]
    );
}

#[test]
fn a_read_asks_itself_then_the_least_loaded_replica_then_stand_ins() {
    let p = place(
        names(&["a", "b", "c", "d"]),
        &names(&["e", "f"]),
        true,
        |r| r != "a",
    );
    assert_eq!(nodes(&p), ["b", "c", "d", "e"]);
    let load = |n: &str| match n {
        "b" => 5,
        "c" => 1,
        "e" => 0,
        _ => 3,
    };
    // Not a replica: the replicas by load, the stand-in last even
    // though nothing waits on it.
    assert_eq!(
        strs(&read_order(&p, "x", by_load(load))),
        ["c", "d", "b", "e"]
    );
    // A replica: itself first whatever its load figure.
    assert_eq!(
        strs(&read_order(&p, "b", by_load(load))),
        ["b", "c", "d", "e"]
    );
    // No load anywhere: preference order.
    assert_eq!(
        strs(&read_order(&p, "d", by_load(|_| 0))),
        ["d", "b", "c", "e"]
    );
}

#[test]
fn quorum_counts_live_replicas_in_preference_order() {
    let p = place(names(&["a", "b", "c"]), &[], false, |r| r != "b");
    assert_eq!(nodes(&p), ["a", "c"]);
    assert_eq!(p.down, names(&["b"]));
    Quorum::check("default", 3, &p, 2).expect("2 of 3 alive");
    let err = crate::error::ApiError::from(Quorum::check("default", 3, &p, 3).expect_err("all"));
    let body = err.body();
    assert_eq!(
        (body["required"].as_u64(), body["alive"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(body["failed"][0]["node"], "b");
}

#[test]
fn a_sloppy_quorum_takes_the_next_healthy_node_as_a_stand_in() {
    let p = place(names(&["a", "b", "c"]), &names(&["d", "e"]), true, |r| {
        r != "b" && r != "d"
    });
    assert_eq!(nodes(&p), ["a", "c", "e"]);
    assert_eq!(p.targets[2].hint_for.as_deref(), Some("b"));
    assert!(p.down.is_empty());
    Quorum::check("s", 3, &p, 3).expect("sloppy: three healthy nodes");
}

#[test]
fn a_ring_smaller_than_n_says_how_to_fix_it() {
    let p = place(names(&["a"]), &[], false, |_| true);
    let err = crate::error::ApiError::from(Quorum::check("default", 3, &p, 2).expect_err("1 < 2"));
    let msg = err.to_string();
    assert!(msg.contains("n=3") && msg.contains("\"n\":1"), "{msg}");
    assert_eq!(err.status(), 503);
}

#[test]
fn a_pending_owner_takes_one_more_acknowledgement_and_counts_when_alive() {
    let p =
        place(names(&["a", "b", "c"]), &[], false, |_| true).with_pending(names(&["d"]), |_| true);
    assert_eq!(p.write_required(2), 3);
    Quorum::check("default", 3, &p, p.write_required(2)).expect("4 alive, 3 needed");
    Quorum::check("default", 3, &p, p.write_required(3)).expect("4 of 4");
    // A down pending owner is hinted and still raises the bar.
    let p = place(names(&["a", "b", "c"]), &[], false, |r| r != "c")
        .with_pending(names(&["d"]), |r| r != "d");
    assert_eq!(p.down, names(&["c", "d"]));
    let err = crate::error::ApiError::from(
        Quorum::check("default", 3, &p, p.write_required(2)).expect_err("2 < 3"),
    );
    assert!(err.to_string().contains("pending"), "{err}");
}

#[test]
fn an_empty_ring_is_unavailable() {
    let p = place(Vec::new(), &[], false, |_| true);
    let err =
        crate::error::ApiError::from(Quorum::check("default", 1, &p, 1).expect_err("no nodes"));
    assert_eq!(err.code(), "unavailable");
}

proptest! {
    /// A read's order is the targets, each once: this node first when
    /// it is one, then replicas by latency band and then load (ties in
    /// preference order), then stand-ins in preference order.
    #[test]
    fn read_order_is_a_permutation_sorted_by_speed_then_load(
        loads in proptest::collection::vec(0usize..4, 1..7),
        latencies in proptest::collection::vec(proptest::option::of(0u64..200_000), 7),
        me in 0usize..8,
        stand_ins in 0usize..3,
    ) {
        let all: Vec<NodeId> = (0..loads.len() + stand_ins).map(|i| NodeId::from(format!("n{i}"))).collect();
        let (replicas, extended) = all.split_at(loads.len());
        let down: Vec<NodeId> = replicas.iter().take(stand_ins).cloned().collect();
        let p = place(replicas.to_vec(), extended, true, |r| !down.iter().any(|d| **d == *r));
        let me = format!("n{me}");
        let load = |n: &str| {
            let i: usize = n[1..].parse().unwrap_or(0);
            loads.get(i).copied().unwrap_or(0)
        };
        let latency = |n: &str| {
            let i: usize = n[1..].parse().unwrap_or(0);
            latencies.get(i).copied().flatten()
        };
        let standing = |n: &str| Standing { latency_us: latency(n), outstanding: load(n) };
        let order = read_order(&p, &me, standing);
        let order = strs(&order);
        let mut sorted: Vec<&str> = order.clone();
        sorted.sort_unstable();
        let mut expected = nodes(&p);
        expected.sort_unstable();
        prop_assert_eq!(sorted, expected);
        let is_target = p.targets.iter().any(|t| *t.node == *me);
        prop_assert_eq!(is_target, order.first() == Some(&me.as_str()));
        let rest = if is_target { &order[1..] } else { &order[..] };
        let stand_in = |n: &str| p.targets.iter().any(|t| &*t.node == n && t.hint_for.is_some());
        let cut = rest.iter().position(|n| stand_in(n)).unwrap_or(rest.len());
        prop_assert!(rest[cut..].iter().all(|n| stand_in(n)));
        let pos = |n: &str| p.targets.iter().position(|t| &*t.node == n);
        let key = |n: &str| (latency::band(latency(n)), load(n), pos(n));
        for w in rest[..cut].windows(2) {
            prop_assert!(key(w[0]) < key(w[1]), "{:?}", order);
        }
        for w in rest[cut..].windows(2) {
            prop_assert!(pos(w[0]) < pos(w[1]));
        }
    }

    #[test]
    fn placement_uses_live_distinct_nodes_and_stands_in_only_for_down_replicas(
        total in 1usize..9,
        n in 1usize..6,
        down_mask in any::<u16>(),
        sloppy in any::<bool>(),
    ) {
        let all: Vec<NodeId> = (0..total).map(|i| NodeId::from(format!("n{i}"))).collect();
        let n = n.min(total);
        let replicas = all[..n].to_vec();
        let extended = all[n..].to_vec();
        let alive = |r: &str| {
            let i: usize = r[1..].parse().unwrap_or(0);
            down_mask & (1 << i) == 0
        };
        let p = place(replicas.clone(), &extended, sloppy, alive);
        let distinct: HashSet<&str> = nodes(&p).into_iter().collect();
        prop_assert_eq!(distinct.len(), p.targets.len());
        prop_assert!(p.targets.len() <= n);
        for t in &p.targets {
            prop_assert!(alive(&t.node));
            match &t.hint_for {
                None => prop_assert!(replicas.contains(&t.node)),
                Some(owner) => {
                    prop_assert!(sloppy);
                    prop_assert!(!alive(owner) && replicas.contains(owner));
                    prop_assert!(extended.contains(&t.node));
                }
            }
        }
        // Every down replica is either stood in for or listed as down.
        for r in replicas.iter().filter(|r| !alive(r)) {
            let covered = p.targets.iter().any(|t| t.hint_for.as_ref() == Some(r));
            prop_assert!(covered != p.down.contains(r));
        }
        let live_total = all.iter().filter(|x| alive(x)).count();
        let expect = if sloppy { live_total.min(n) } else { replicas.iter().filter(|r| alive(r)).count() };
        prop_assert_eq!(p.targets.len(), expect);
    }
}
