//! Scenarios of the coordinator across nodes, in simulation (see the
//! module docs of [`super`]). Each starts its own cluster with a fixed
//! seed; virtual time makes the gossip rounds and timeouts free.

use std::time::Duration;

use super::Sim;
use crate::buckets::{BucketUpdate, Consistency, ReadRepair, SpeculativeRetry};
use crate::failure::QuorumError;
use crate::metrics::RepairKind;
use crate::replica::INCARNATION_SEPARATOR;
use crate::transport::memory::Link;
use crate::version::Context;

/// No causal context: a write concurrent with whatever is stored.
static NONE: std::sync::LazyLock<Context> = std::sync::LazyLock::new(Context::default);

/// The first key `k0`, `k1`, ... of `bucket` whose replicas (as node 0
/// places them) satisfy `want`.
fn key_where(sim: &Sim, bucket: &str, want: impl Fn(&[usize]) -> bool) -> String {
    (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| want(&sim.replicas(0, bucket, k)))
        .expect("some key has such replicas")
}

fn repairs(sim: &Sim, i: usize, kind: RepairKind) -> u64 {
    sim.api(i)
        .metrics
        .read_repairs
        .get_or_create(&crate::metrics::KindLabels { kind: kind.label() })
        .get()
}

#[tokio::test(start_paused = true)]
async fn quorum_writes_are_read_by_quorum_reads_through_every_node() {
    let sim = Sim::start(3, 1, &[]).await;
    sim.put(
        0,
        "default",
        "greeting",
        "hello",
        Consistency::Quorum,
        &NONE,
    )
    .await
    .expect("written");
    for via in 0..3 {
        let got = sim
            .get(via, "default", "greeting", Consistency::Quorum)
            .await;
        assert_eq!(got.expect("read"), ["hello"], "through n{}", via + 1);
    }
    sim.until("every replica holds the write", |s| {
        (0..3).all(|i| s.local(i, "default", "greeting") == ["hello"])
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_write_through_a_node_that_is_no_replica_is_minted_on_a_replica() {
    let sim = Sim::start(4, 2, &[]).await;
    let key = key_where(&sim, "default", |r| !r.contains(&0));
    let replicas = sim.replicas(0, "default", &key);
    let object = sim
        .put(0, "default", &key, "v", Consistency::Quorum, &NONE)
        .await
        .expect("forwarded and written");
    let (actor, _, _) = object.versions().next().expect("one version");
    let minter = actor.split(INCARNATION_SEPARATOR).next().unwrap_or(actor);
    assert!(
        replicas.iter().any(|&r| sim.nodes[r].id == minter),
        "minted by {minter}, replicas {replicas:?}"
    );
    assert_eq!(sim.api(0).metrics.forwarded_writes.get(), 1);
    assert!(
        sim.local(0, "default", &key).is_empty(),
        "the forwarder keeps no copy"
    );
    assert_eq!(
        sim.get(0, "default", &key, Consistency::All)
            .await
            .expect("read"),
        ["v"]
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_writes_through_two_coordinators_are_kept_as_siblings_and_resolved() {
    let sim = Sim::start(3, 3, &[]).await;
    sim.put(0, "default", "doc", "alice", Consistency::Quorum, &NONE)
        .await
        .expect("alice");
    sim.put(1, "default", "doc", "bob", Consistency::Quorum, &NONE)
        .await
        .expect("bob");
    let both = sim.get(2, "default", "doc", Consistency::Quorum).await;
    assert_eq!(both.expect("read"), ["alice", "bob"]);
    // Resolve with the context of a read that saw both.
    let api = sim.api(2);
    let seen = api
        .replica
        .read("default", b"doc")
        .expect("read")
        .expect("stored");
    sim.put(
        2,
        "default",
        "doc",
        "merged",
        Consistency::Quorum,
        &seen.context(),
    )
    .await
    .expect("merged");
    let got = sim.get(0, "default", "doc", Consistency::Quorum).await;
    assert_eq!(got.expect("read"), ["merged"]);
}

/// Leaves node 2 without the writes of `keys` (one per bucket) that
/// nodes 0 and 1 acknowledged: node 2 is cut off and convicted while
/// they are written, with hinted handoff off, then healed.
async fn stale_third_replica(sim: &Sim, writes: &[(&str, &str)]) {
    sim.partition(&[2], &[0, 1]);
    sim.until_seen(0, 2, false).await;
    for (bucket, key) in writes {
        sim.put(0, bucket, key, "v1", Consistency::Quorum, &NONE)
            .await
            .expect("2 of 3 acknowledge");
    }
    sim.heal();
    sim.until_seen(0, 2, true).await;
    for (bucket, key) in writes {
        assert!(
            sim.local(2, bucket, key).is_empty(),
            "{bucket}: n3 missed it"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn read_repair_fixes_a_stale_replica_before_answering_after_answering_or_never() {
    let sim = Sim::start(3, 4, &["--hinted-handoff", "off"]).await;
    for (bucket, mode) in [
        ("blocking", ReadRepair::Blocking),
        ("async", ReadRepair::Async),
        ("off", ReadRepair::Off),
    ] {
        let update = BucketUpdate {
            read_repair: Some(mode),
            ..BucketUpdate::default()
        };
        sim.bucket(0, bucket, update).await;
    }
    let writes = [("blocking", "k"), ("async", "k"), ("off", "k")];
    stale_third_replica(&sim, &writes).await;

    // Blocking: the stale replica holds the merge when the read answers.
    let got = sim.get(0, "blocking", "k", Consistency::All).await;
    assert_eq!(got.expect("read"), ["v1"]);
    assert_eq!(sim.local(2, "blocking", "k"), ["v1"]);
    assert_eq!(repairs(&sim, 0, RepairKind::Blocking), 1);

    // Async: it follows after the answer.
    let got = sim.get(0, "async", "k", Consistency::All).await;
    assert_eq!(got.expect("read"), ["v1"]);
    sim.until("the async repair lands", |s| {
        s.local(2, "async", "k") == ["v1"]
    })
    .await;
    assert_eq!(repairs(&sim, 0, RepairKind::Async), 1);

    // Off: the read merges, the replica stays stale.
    let got = sim.get(0, "off", "k", Consistency::All).await;
    assert_eq!(got.expect("read"), ["v1"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(sim.local(2, "off", "k").is_empty());
    assert_eq!(repairs(&sim, 0, RepairKind::Async), 1);
}

#[tokio::test(start_paused = true)]
async fn hinted_handoff_delivers_what_a_partitioned_replica_missed() {
    let sim = Sim::start(3, 5, &[]).await;
    // Cut off but not yet convicted: the write is sent to n3 and times
    // out there, which leaves a hint.
    sim.partition(&[2], &[0, 1]);
    sim.put(0, "default", "k", "v", Consistency::Two, &NONE)
        .await
        .expect("n1 and n2 acknowledge");
    sim.until("n1 holds a hint for n3", |s| {
        s.api(0).hints.pending_for("n3") == 1
    })
    .await;
    assert!(sim.local(2, "default", "k").is_empty());
    sim.heal();
    sim.until("the hint is delivered", |s| {
        s.local(2, "default", "k") == ["v"]
    })
    .await;
    sim.until("and dropped", |s| s.api(0).hints.pending_for("n3") == 0)
        .await;
}

#[tokio::test(start_paused = true)]
async fn w_any_is_kept_as_a_hint_while_every_replica_is_down_and_delivered_after() {
    let sim = Sim::start(4, 6, &[]).await;
    let one = BucketUpdate {
        n: Some(1),
        ..BucketUpdate::default()
    };
    sim.bucket(0, "one", one).await;
    let key = key_where(&sim, "one", |r| r[0] != 0);
    let owner = sim.replicas(0, "one", &key)[0];
    let others: Vec<usize> = (0..4).filter(|&i| i != owner).collect();
    sim.partition(&[owner], &others);
    sim.until_seen(0, owner, false).await;
    let refused = sim.put(0, "one", &key, "v", Consistency::One, &NONE).await;
    assert!(
        matches!(refused, Err(QuorumError::Unavailable { .. })),
        "w=one needs the replica: {refused:?}"
    );
    sim.put(0, "one", &key, "v", Consistency::Any, &NONE)
        .await
        .expect("w=any takes it");
    assert!(sim.local(owner, "one", &key).is_empty());
    sim.heal();
    sim.until("the replica gets it on return", |s| {
        s.local(owner, "one", &key) == ["v"]
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_sloppy_quorum_writes_to_a_stand_in_that_hands_the_write_to_its_owner() {
    let sim = Sim::start(4, 7, &[]).await;
    let sloppy = BucketUpdate {
        sloppy_quorum: Some(true),
        ..BucketUpdate::default()
    };
    sim.bucket(0, "sloppy", sloppy).await;
    let key = key_where(&sim, "sloppy", |r| r[0] == 0);
    let replicas = sim.replicas(0, "sloppy", &key);
    let down = replicas[2];
    let stand_in = (0..4).find(|i| !replicas.contains(i)).expect("a 4th node");
    let others: Vec<usize> = (0..4).filter(|&i| i != down).collect();
    sim.partition(&[down], &others);
    for &i in &others {
        sim.until_seen(i, down, false).await;
    }
    sim.put(0, "sloppy", &key, "v", Consistency::All, &NONE)
        .await
        .expect("three healthy nodes take w=all");
    assert_eq!(sim.local(stand_in, "sloppy", &key), ["v"]);
    assert_eq!(
        sim.api(stand_in).hints.pending_for(&sim.nodes[down].id),
        1,
        "the stand-in keeps a hint for the owner"
    );
    sim.heal();
    sim.until("the owner gets the write from its stand-in", |s| {
        s.local(down, "sloppy", &key) == ["v"]
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_minority_is_refused_where_the_majority_can_write() {
    let sim = Sim::start(5, 8, &[]).await;
    let (minority, majority) = ([0, 1], [2, 3, 4]);
    let in_majority = key_where(&sim, "default", |r| r.iter().all(|i| majority.contains(i)));
    let split = key_where(&sim, "default", |r| {
        r.iter().filter(|i| minority.contains(i)).count() == 2
    });
    sim.partition(&minority, &majority);
    for &m in &majority {
        sim.until_seen(0, m, false).await;
        for &n in &minority {
            sim.until_seen(m, n, false).await;
        }
    }
    sim.put(2, "default", &in_majority, "v", Consistency::Quorum, &NONE)
        .await
        .expect("the majority holds every replica");
    let refused = sim
        .put(0, "default", &in_majority, "v", Consistency::Quorum, &NONE)
        .await;
    match refused {
        Err(QuorumError::Unavailable {
            required, alive, ..
        }) => assert_eq!((required, alive), (2, 0)),
        other => panic!("the minority sees no replica: {other:?}"),
    }
    // A key with two replicas in the minority: the other way round.
    sim.put(0, "default", &split, "v", Consistency::Quorum, &NONE)
        .await
        .expect("two of its replicas are on this side");
    let refused = sim
        .put(2, "default", &split, "v", Consistency::Quorum, &NONE)
        .await;
    assert!(
        matches!(refused, Err(QuorumError::Unavailable { .. })),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn replicas_that_do_not_answer_make_a_504_and_the_write_stays_where_it_was_minted() {
    let sim = Sim::start(3, 9, &["--hinted-handoff", "off"]).await;
    sim.partition(&[0], &[1, 2]);
    let t0 = tokio::time::Instant::now();
    let r = sim
        .put(0, "default", "k", "v", Consistency::All, &NONE)
        .await;
    match r {
        Err(QuorumError::Timeout { required, acks, .. }) => assert_eq!((required, acks), (3, 1)),
        other => panic!("expected a 504: {other:?}"),
    }
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(2),
        "the request's deadline"
    );
    assert_eq!(sim.local(0, "default", "k"), ["v"]);
    assert!(sim.local(1, "default", "k").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slow_replica_is_not_waited_for_a_spare_is_asked_instead() {
    let sim = Sim::start(3, 10, &[]).await;
    let key = key_where(&sim, "default", |r| r == [0, 1, 2]);
    sim.put(0, "default", &key, "v", Consistency::All, &NONE)
        .await
        .expect("written everywhere");
    // n1 asks itself, then n2 (preference order): n2 is slow.
    let slow = Link {
        latency: Duration::from_secs(1),
        ..Link::default()
    };
    sim.net.set_link("n1", "n2", slow);
    let t0 = tokio::time::Instant::now();
    let got = sim.get(0, "default", &key, Consistency::Quorum).await;
    assert_eq!(got.expect("read"), ["v"]);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "answered by the spare after the speculation delay, not after n2's second: {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_joining_node_is_written_to_as_a_pending_owner_before_it_has_streamed() {
    let mut sim = Sim::start(3, 11, &[]).await;
    // Enough data that the slow stream below takes a while.
    let blob = "x".repeat(1000);
    for i in 0..60 {
        sim.put(
            0,
            "default",
            &format!("pre{i}"),
            &blob,
            Consistency::Quorum,
            &NONE,
        )
        .await
        .expect("preload");
    }
    let n4 = sim.add_joining(&["--stream-bytes-per-sec", "1024"]).await;
    sim.until("n1 sees n4 as a pending owner", |s| {
        s.api(0).cluster.future_ring().is_some()
    })
    .await;
    // A key n4 will replicate: with one pending owner, w=all needs all
    // four copies, n4's included, before it answers.
    let future = sim.api(0).cluster.future_ring().expect("a future ring");
    let key = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let token = quorumkv_ring::token_of(b"default", k.as_bytes());
            future.preference_list(token, 3).iter().any(|n| n == "n4")
        })
        .expect("n4 gains some key");
    sim.put(0, "default", &key, "during", Consistency::All, &NONE)
        .await
        .expect("four acknowledgements");
    assert_eq!(sim.local(n4, "default", &key), ["during"]);
    assert!(
        sim.api(0).cluster.future_ring().is_some(),
        "the change was still in flight"
    );
    sim.until("the join completes", |s| {
        s.api(0).cluster.future_ring().is_none() && s.api(0).cluster.ring().node_count() == 4
    })
    .await;
    let got = sim.get(n4, "default", &key, Consistency::One).await;
    assert_eq!(got.expect("read"), ["during"]);
    let gained: Vec<String> = (0..60)
        .map(|i| format!("pre{i}"))
        .filter(|k| sim.replicas(0, "default", k).contains(&n4))
        .collect();
    assert!(!gained.is_empty());
    for k in &gained {
        assert_eq!(
            sim.local(n4, "default", k),
            [blob.as_str()],
            "{k} streamed to n4"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_stopped_under_load_ends_every_task_before_its_store_closes() {
    let mut sim = Sim::start(3, 12, &[]).await;
    let sim_ref = &sim;
    // Writes through n1 keep replication tasks, hints and peers' requests
    // in flight on every node.
    let load = async {
        let mut acked = 0;
        for i in 0..200 {
            let via = i % 3;
            if sim_ref
                .put(
                    via,
                    "default",
                    &format!("k{i}"),
                    "v",
                    Consistency::Two,
                    &NONE,
                )
                .await
                .is_ok()
            {
                acked += 1;
            }
        }
        acked
    };
    let acked = load.await;
    assert_eq!(acked, 200);
    // A burst left in flight, then the stop.
    let burst: Vec<_> = (0..20)
        .map(|i| {
            let api = sim.api(0).clone();
            tokio::spawn(async move {
                api.coordinator
                    .write(crate::coordinator::WriteArgs {
                        bucket: "default".into(),
                        key: format!("burst{i}").into_bytes(),
                        props: api.buckets.props_for_keys("default"),
                        ctx: Context::default(),
                        mutation: crate::replica::Mutation::Put {
                            data: b"b".to_vec(),
                            content_type: "text/plain".into(),
                        },
                        w: Consistency::Two,
                        timeout: Duration::from_secs(2),
                        trace: None,
                    })
                    .await
            })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(
        sim.stop(0).await,
        0,
        "every task ended before the store closed"
    );
    for b in burst {
        let _ = b.await;
    }
    // The others still read everything acknowledged.
    for i in 0..200 {
        let got = sim
            .get(1, "default", &format!("k{i}"), Consistency::Quorum)
            .await;
        assert!(
            matches!(got.as_deref(), Ok([v]) if v == "v"),
            "k{i}: {got:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn with_speculative_retry_off_a_read_waits_for_the_replicas_it_asked() {
    let sim = Sim::start(3, 13, &[]).await;
    for (bucket, retry) in [
        ("off", SpeculativeRetry::Off),
        ("fixed", SpeculativeRetry::After(300)),
    ] {
        let update = BucketUpdate {
            speculative_retry: Some(retry),
            ..BucketUpdate::default()
        };
        sim.bucket(0, bucket, update).await;
    }
    // Keys whose preference order is n1, n2, n3 in each bucket: n1 asks
    // itself, then n2, which is slow.
    let key = key_where(&sim, "off", |r| r == [0, 1, 2]);
    let fixed = key_where(&sim, "fixed", |r| r == [0, 1, 2]);
    for (bucket, key) in [("off", &key), ("fixed", &fixed)] {
        sim.put(0, bucket, key, "v", Consistency::All, &NONE)
            .await
            .expect("written everywhere");
    }
    let slow = Link {
        latency: Duration::from_secs(1),
        ..Link::default()
    };
    sim.net.set_link("n1", "n2", slow);
    let t0 = tokio::time::Instant::now();
    let got = sim.get(0, "fixed", &fixed, Consistency::Quorum).await;
    assert_eq!(got.expect("read"), ["v"]);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(400),
        "the spare is asked after the bucket's 300 ms: {took:?}"
    );
    // n1 now knows n2 is slow and asks n3 instead: slow it too, so that
    // whichever it asks, the read has a slow replica to wait for.
    sim.net.set_link("n1", "n3", slow);
    let t0 = tokio::time::Instant::now();
    let got = sim.get(0, "off", &key, Consistency::Quorum).await;
    assert_eq!(got.expect("read"), ["v"]);
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
}
