//! Scenario tests of the gossip state machine over the simulated network.
//! Small clusters (n ≤ 50) so that they stay fast in debug builds; the
//! big figures come from `examples/simulate.rs` in release.

use std::time::Duration;

use quorumkv_gossip::{
    AppState, Config, Event, Message, Node, Status,
    sim::{Sim, SimConfig},
};
use rand::SeedableRng;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn cfg(seed: u64) -> SimConfig {
    let mut c = SimConfig::new(seed);
    c.record_events = true;
    c
}

#[test]
fn a_fresh_cluster_bootstraps_through_its_seeds_and_converges() {
    let mut sim = Sim::new(cfg(1));
    for _ in 0..20 {
        sim.add_node();
    }
    sim.run_for(secs(20));
    assert!(sim.converged_state(), "every node holds every node's state");
    assert!(sim.all_see_all_up());
    assert!(sim.convictions.is_empty(), "{:?}", sim.convictions);
}

#[test]
fn a_new_node_that_knows_only_the_seeds_joins_and_is_known_by_all() {
    let mut sim = Sim::converged(cfg(2), 30, 3);
    let h = sim.add_node_at(Duration::ZERO);
    let w = sim.watch(h);
    let rounds = sim
        .run_watch(w, secs(30))
        .expect("everyone learns the new node");
    assert!(rounds < 8.0, "{rounds} rounds");
    sim.run_for(secs(5));
    assert!(sim.converged_state());
    assert!(sim.all_see_all_up());
}

#[test]
fn a_state_change_reaches_every_node() {
    let mut sim = Sim::converged(cfg(3), 50, 3);
    sim.node_mut(17)
        .expect("alive")
        .set_local(AppState::Status(Status::Leaving))
        .expect("fits");
    let w = sim.watch(17);
    let rounds = sim.run_watch(w, secs(30)).expect("converges");
    assert!(rounds < 8.0, "{rounds} rounds");
    let id = sim.id(17).clone();
    for h in sim.alive() {
        let m = sim.node(h).and_then(|n| n.member(&id).map(|m| m.status()));
        assert_eq!(m, Some(Some(Status::Leaving)), "host {h}");
    }
}

#[test]
fn a_partitioned_cluster_heals_and_converges() {
    let mut sim = Sim::converged(cfg(4), 30, 3);
    let left: Vec<usize> = (0..15).collect();
    let right: Vec<usize> = (15..30).collect();
    sim.partition(&[&left, &right]);
    sim.node_mut(3)
        .expect("alive")
        .set_local(AppState::Load(111))
        .expect("fits");
    sim.node_mut(20)
        .expect("alive")
        .set_local(AppState::Load(222))
        .expect("fits");
    sim.run_for(secs(40));
    // Each side converged internally, convicted the other, and did not
    // learn the other side's change.
    let n20 = sim.id(20).clone();
    let n3 = sim.id(3).clone();
    assert_eq!(
        sim.node(0).and_then(|n| n.member(&n20)).map(|m| m.live),
        Some(false)
    );
    assert_ne!(
        sim.node(0)
            .and_then(|n| n.member(&n20))
            .and_then(|m| m.state.load()),
        Some(222)
    );
    assert_ne!(
        sim.node(29)
            .and_then(|n| n.member(&n3))
            .and_then(|m| m.state.load()),
        Some(111)
    );
    assert_eq!(
        sim.node(14)
            .and_then(|n| n.member(&n3))
            .and_then(|m| m.state.load()),
        Some(111)
    );
    assert!(sim.convictions.iter().all(|c| c.during_partition));
    assert!(!sim.convictions.is_empty());

    sim.heal();
    sim.run_for(secs(30));
    assert!(sim.converged_state(), "both sides hold both changes");
    assert!(sim.all_see_all_up(), "everyone is up again");
    let after: Vec<_> = sim.convictions.iter().filter(|c| c.is_false()).collect();
    assert!(after.is_empty(), "{after:?}");
}

#[test]
fn a_killed_node_is_convicted_by_every_live_node_then_up_after_restart() {
    let mut sim = Sim::converged(cfg(5), 20, 3);
    sim.run_for(secs(30)); // learn the rhythm
    let killed_at = sim.now();
    sim.kill(7);
    sim.run_for(secs(45));
    let observers: Vec<usize> = sim.alive();
    for &o in &observers {
        let c = sim
            .convictions
            .iter()
            .find(|c| c.observer == o && c.subject == 7)
            .unwrap_or_else(|| panic!("host {o} convicted n7"));
        let t = (c.at - killed_at).as_secs_f64();
        // phi 8 at a ~1 s mean: 18.4 s of silence after the last heartbeat
        // this observer saw, which left n7 up to a few rounds before.
        assert!(
            (14.0..=28.0).contains(&t),
            "host {o} convicted after {t:.1} s"
        );
    }
    assert!(
        sim.convictions.iter().all(|c| c.subject == 7),
        "{:?}",
        sim.convictions
    );

    let old_generation = sim
        .node(0)
        .and_then(|n| n.digest_of(sim.id(7)))
        .map(|d| d.0);
    sim.restart(7);
    sim.run_for(secs(8));
    assert!(sim.all_see_all_up());
    let id = sim.id(7).clone();
    for &o in &observers {
        let g = sim.node(o).and_then(|n| n.digest_of(&id)).map(|d| d.0);
        assert!(g > old_generation, "host {o} sees the new generation");
    }
    assert!(
        sim.log
            .iter()
            .any(|(_, _, e)| matches!(e, Event::Restarted { node, .. } if *node == id))
    );
    assert!(
        sim.log
            .iter()
            .any(|(_, _, e)| matches!(e, Event::Up { node } if *node == id))
    );
}

#[test]
fn a_restarted_node_replaces_its_old_state_everywhere() {
    let mut sim = Sim::converged(cfg(6), 15, 3);
    let id = sim.id(4).clone();
    sim.node_mut(4)
        .expect("alive")
        .set_local(AppState::Custom("old".into(), "x".into()))
        .expect("fits");
    sim.run_for(secs(10));
    assert!(sim.converged_state());
    sim.restart(4); // new generation, fresh tokens, no "old" key
    sim.run_for(secs(10));
    assert!(sim.converged_state());
    let fresh = sim.node(4).expect("alive").local().clone();
    for h in sim.alive() {
        let m = sim.node(h).and_then(|n| n.member(&id)).expect("known");
        assert_eq!(m.generation(), fresh.generation());
        assert_eq!(m.tokens(), fresh.tokens());
        assert!(
            m.state
                .get(&quorumkv_gossip::Key::Custom("old".into()))
                .is_none()
        );
    }
}

#[test]
fn a_left_node_is_forgotten_after_the_quarantine_and_stale_gossip_does_not_bring_it_back() {
    let mut c = cfg(7);
    c.gossip.left_quarantine = secs(20);
    let mut sim = Sim::converged(c, 12, 3);
    // Host 11 is cut off before host 5 leaves: it keeps a stale `normal`.
    sim.partition(&[&[11]]);
    sim.node_mut(5)
        .expect("alive")
        .set_local(AppState::Status(Status::Left))
        .expect("fits");
    sim.run_for(secs(5));
    let id = sim.id(5).clone();
    sim.kill(5);
    sim.run_for(secs(20)); // ≥ 20 s after everyone learned `left`: forgotten
    for h in (0..11).filter(|&h| h != 5) {
        assert!(
            sim.node(h).and_then(|n| n.member(&id)).is_none(),
            "host {h} forgot n5"
        );
        let removed = sim
            .log
            .iter()
            .any(|(_, o, e)| *o == h && matches!(e, Event::Removed { node } if *node == id));
        assert!(removed, "host {h} emitted Removed");
    }
    // Host 11 comes back still gossiping n5 as `normal`: ignored during
    // the quarantine.
    sim.heal();
    sim.run_for(secs(15));
    for h in (0..11).filter(|&h| h != 5) {
        assert!(
            sim.node(h).and_then(|n| n.member(&id)).is_none(),
            "host {h} did not resurrect n5"
        );
    }
}

#[test]
fn a_left_node_that_comes_back_with_a_new_generation_is_accepted() {
    let mut c = cfg(8);
    c.gossip.left_quarantine = secs(10);
    let mut sim = Sim::converged(c, 8, 3);
    sim.node_mut(6)
        .expect("alive")
        .set_local(AppState::Status(Status::Left))
        .expect("fits");
    sim.run_for(secs(4));
    sim.kill(6);
    sim.run_for(secs(12));
    let id = sim.id(6).clone();
    assert!(sim.node(0).and_then(|n| n.member(&id)).is_none());
    sim.restart(6); // within the quarantine, but a higher generation
    sim.run_for(secs(6));
    assert!(sim.converged_state());
    assert!(sim.all_see_all_up());
}

#[test]
fn messages_from_another_cluster_are_refused() {
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut a = Node::new("a".into(), "a:1".into(), 1, Config::new("blue"), rng).expect("valid");
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let mut b = Node::new("b".into(), "b:1".into(), 1, Config::new("green"), rng).expect("valid");
    b.set_local(AppState::Status(Status::Normal)).expect("fits");
    let mut config = Config::new("green");
    config.seeds = vec!["a:1".into()];
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut c = Node::new("c".into(), "c:1".into(), 1, config, rng).expect("valid");

    // A SYN from c (cluster green) to a (cluster blue): no answer.
    let syn = c.tick(secs(0)).pop().expect("c gossips to its seed");
    assert_eq!(syn.to, "a:1".into());
    assert!(a.handle(&"c:1".into(), syn.msg, secs(0)).is_empty());
    // An ACK2 full of green state: not applied.
    let ack2 = Message::Ack2 {
        cluster: "green".into(),
        states: vec![quorumkv_gossip::Delta {
            node: "b".into(),
            generation: 1,
            heartbeat: Some(5),
            states: b.local().states().to_vec(),
        }],
    };
    assert!(a.handle(&"b:1".into(), ack2, secs(0)).is_empty());
    assert_eq!(a.members().count(), 1, "a knows only itself");
    let events = a.drain_events();
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Event::Refused { cluster, .. } if cluster == "green"))
    );
}

#[test]
fn no_live_node_is_convicted_at_five_percent_loss() {
    let mut c = cfg(9);
    c.net.loss = 0.05;
    c.record_events = false;
    let mut sim = Sim::converged(c, 20, 3);
    sim.run_for(secs(1000));
    assert!(sim.convictions.is_empty(), "{:?}", sim.convictions);
    assert!(sim.all_see_all_up());
}

#[test]
fn large_deltas_are_split_across_rounds_within_the_byte_cap() {
    let mut c = cfg(10);
    c.tokens_per_node = 256; // ≈ 2.3 KB per state
    c.gossip.max_message_bytes = 8192;
    c.encode = true; // real bytes, through the real codec
    let mut sim = Sim::converged(c, 25, 3);
    let h = sim.add_node_at(Duration::ZERO);
    // The newcomer needs ~60 KB of state: many capped exchanges.
    sim.run_for(secs(30));
    assert!(
        sim.largest_message <= 8192,
        "largest message {} bytes",
        sim.largest_message
    );
    assert!(sim.converged_state());
    let n = sim.node(h).expect("alive");
    assert_eq!(n.members().count(), 26);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut c = cfg(seed);
        c.net.loss = 0.1;
        let mut sim = Sim::converged(c, 12, 2);
        sim.kill(3);
        sim.run_for(secs(30));
        (
            sim.sent,
            sim.dropped,
            sim.convictions.clone(),
            sim.log.len(),
        )
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11).0, run(12).0);
}
