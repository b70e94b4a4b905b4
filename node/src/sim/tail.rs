//! Tail tolerance in simulation (docs/CONSISTENCY.md, "Tail tolerance"):
//! one replica's links slowed by 50 ms each way while the others answer
//! in about a millisecond. Reads learn to avoid it, ask a spare soon after
//! it stalls them, still wait for it at `r=all` or with speculation off,
//! and use it again once it recovers; forwarded writes avoid it too.

use std::time::Duration;

use tokio::time::Instant;

use super::{Sim, values};
use crate::buckets::{BucketUpdate, Consistency, SpeculativeRetry};
use crate::coordinator::ReadArgs;
use crate::coordinator::trace::Trace;
use crate::replica::INCARNATION_SEPARATOR;
use crate::transport::memory::Link;
use crate::version::Context;

/// A healthy link: a read's round trip takes a millisecond or two (the
/// paused clock's timers have a 1 ms resolution).
const HEALTHY: Link = Link {
    latency: Duration::from_micros(500),
    jitter: Duration::ZERO,
    drop: 0.0,
    cut: false,
};

/// The slowed replica's links: 50 ms each way.
const SLOW: Link = Link {
    latency: Duration::from_millis(50),
    ..HEALTHY
};

/// Sets the links between `a` and `b`, both ways.
fn link(sim: &Sim, a: usize, b: usize, l: Link) {
    let (a, b) = (&sim.nodes[a].id, &sim.nodes[b].id);
    sim.net.set_link(a, b, l);
    sim.net.set_link(b, a, l);
}

/// A 3-node cluster on healthy links and a key whose replicas are n1, n2,
/// n3 in preference order, written everywhere.
async fn three(seed: u64, bucket: &str) -> (Sim, String) {
    let sim = Sim::start(3, seed, &[]).await;
    sim.net.set_default_link(HEALTHY);
    let key = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| sim.replicas(0, bucket, k) == [0, 1, 2])
        .expect("some key has replicas n1, n2, n3");
    sim.put(0, bucket, &key, "v", Consistency::All, &Context::default())
        .await
        .expect("written everywhere");
    (sim, key)
}

/// What one traced read did.
struct Traced {
    took: Duration,
    /// The read order it chose.
    order: Vec<String>,
    /// The replicas it asked, in order (the first ones, then spares).
    asked: Vec<String>,
    values: Vec<String>,
}

/// Reads `key` through node `via` at `r` with a trace.
async fn read(sim: &Sim, via: usize, bucket: &str, key: &str, r: Consistency) -> Traced {
    let api = sim.api(via);
    let trace = Trace::new(&sim.nodes[via].id);
    let t0 = Instant::now();
    let found = api
        .coordinator
        .read(ReadArgs {
            bucket: bucket.into(),
            key: key.as_bytes().to_vec(),
            props: api.buckets.props_for_keys(bucket),
            r,
            timeout: Duration::from_secs(2),
            trace: Some(trace.clone()),
        })
        .await
        .expect("read");
    let took = t0.elapsed();
    let events: Vec<String> = trace.events().into_iter().map(|e| e.event).collect();
    let order = events
        .iter()
        .find_map(|e| {
            e.strip_prefix("reading r=")?
                .split_once(" from [")?
                .1
                .strip_suffix(']')
        })
        .map(|l| l.split(", ").map(str::to_string).collect())
        .unwrap_or_default();
    let asked = events
        .iter()
        .filter_map(|e| {
            // Every remote ask, first ones and spares, is noted so.
            let n = e.strip_prefix("asking ")?;
            Some(n.split(' ').next().unwrap_or(n).to_string())
        })
        .collect();
    Traced {
        took,
        order,
        asked,
        values: found.map_or_else(Vec::new, |o| values(&o)),
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn after_a_warm_up_quorum_reads_neither_wait_for_a_slow_replica_nor_ask_it_first() {
    let (sim, key) = three(21, "default").await;
    link(&sim, 0, 1, SLOW);
    for _ in 0..5 {
        read(&sim, 0, "default", &key, Consistency::Quorum).await;
    }
    for i in 0..50 {
        let t = read(&sim, 0, "default", &key, Consistency::Quorum).await;
        assert_eq!(t.values, ["v"]);
        assert_eq!(t.order, ["n1", "n3", "n2"], "read {i}");
        assert!(
            !t.asked.contains(&"n2".to_string()),
            "read {i}: {:?}",
            t.asked
        );
        assert!(t.took < 10 * MS, "read {i} took {:?}", t.took);
    }
    // `all` asks every replica and so still waits for the slow one.
    let t = read(&sim, 0, "default", &key, Consistency::All).await;
    assert!(t.took >= 100 * MS, "r=all took {:?}", t.took);
}

#[tokio::test(start_paused = true)]
async fn a_replica_no_read_asks_is_probed_and_asked_again_once_it_recovers() {
    let (sim, key) = three(22, "default").await;
    link(&sim, 0, 1, SLOW);
    for _ in 0..5 {
        read(&sim, 0, "default", &key, Consistency::Quorum).await;
    }
    let latencies = sim.api(0).coordinator.latencies();
    assert_eq!(latencies.probes(), 0);
    // Reads that avoid n2 probe it now and then: its figure stays fresh.
    for _ in 0..20 {
        let t = read(&sim, 0, "default", &key, Consistency::Quorum).await;
        assert_eq!(t.order.last().map(String::as_str), Some("n2"));
        tokio::time::sleep(100 * MS).await;
    }
    assert!(latencies.probes() >= 2, "{} probes", latencies.probes());
    link(&sim, 0, 1, HEALTHY);
    let healed = Instant::now();
    loop {
        let t = read(&sim, 0, "default", &key, Consistency::Quorum).await;
        if t.order == ["n1", "n2", "n3"] {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(5),
            "n2 still last {:?} after it recovered",
            healed.elapsed()
        );
        tokio::time::sleep(100 * MS).await;
    }
}

/// Warms n1's figures up on healthy links (both n2 and n3 answer in a
/// millisecond, so n2 comes first by preference), then slows n2: the
/// first read after that still asks n2.
async fn stalled_by_a_newly_slow_replica(
    seed: u64,
    bucket: &str,
    retry: SpeculativeRetry,
) -> (Sim, Traced) {
    let sim = Sim::start(3, seed, &[]).await;
    let update = BucketUpdate {
        speculative_retry: Some(retry),
        ..BucketUpdate::default()
    };
    sim.bucket(0, bucket, update).await;
    sim.net.set_default_link(HEALTHY);
    let key = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| sim.replicas(0, bucket, k) == [0, 1, 2])
        .expect("some key has replicas n1, n2, n3");
    sim.put(0, bucket, &key, "v", Consistency::All, &Context::default())
        .await
        .expect("written everywhere");
    for _ in 0..100 {
        let t = read(&sim, 0, bucket, &key, Consistency::Quorum).await;
        assert!(t.took <= 2 * MS, "healthy: {:?}", t.took);
    }
    link(&sim, 0, 1, SLOW);
    let t = read(&sim, 0, bucket, &key, Consistency::Quorum).await;
    assert_eq!(t.values, ["v"]);
    (sim, t)
}

#[tokio::test(start_paused = true)]
async fn with_auto_speculative_retry_a_read_stalled_by_a_slow_replica_asks_a_spare_within_a_few_ms()
{
    let (sim, t) = stalled_by_a_newly_slow_replica(23, "auto", SpeculativeRetry::Auto).await;
    let delay = sim.api(0).coordinator.latencies().speculation_delay();
    // Healthy round trips take 1-2 ms (the timer's resolution is 1 ms).
    assert!(delay <= 3 * MS, "the p99 of healthy reads: {delay:?}");
    assert_eq!(t.asked, ["n2", "n3"]);
    assert!(t.took < 10 * MS, "{:?}", t.took);
    assert_eq!(sim.api(0).metrics.speculative_spares.get(), 1);
    let text = sim.api(0).metrics.render();
    assert!(
        text.contains("qkv_read_speculative_spares_total 1"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn with_speculative_retry_off_a_read_waits_for_the_slow_replica_it_asked() {
    let (sim, t) = stalled_by_a_newly_slow_replica(24, "off", SpeculativeRetry::Off).await;
    assert_eq!(t.asked, ["n2"]);
    assert!(t.took >= 100 * MS, "{:?}", t.took);
    assert_eq!(sim.api(0).metrics.speculative_spares.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn quorum_writes_through_a_replica_do_not_wait_for_a_slow_one_but_all_does() {
    let (sim, key) = three(25, "default").await;
    link(&sim, 0, 2, SLOW);
    let none = Context::default();
    let t0 = Instant::now();
    sim.put(0, "default", &key, "w", Consistency::Quorum, &none)
        .await
        .expect("n1 and n2 acknowledge");
    assert!(t0.elapsed() < 10 * MS, "w=quorum took {:?}", t0.elapsed());
    let t0 = Instant::now();
    sim.put(0, "default", &key, "w2", Consistency::All, &none)
        .await
        .expect("all acknowledge");
    assert!(t0.elapsed() >= 100 * MS, "w=all took {:?}", t0.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_node_that_is_no_replica_forwards_a_write_to_a_fast_replica() {
    let sim = Sim::start(4, 26, &[]).await;
    sim.net.set_default_link(HEALTHY);
    let key = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| !sim.replicas(0, "default", k).contains(&0))
        .expect("a key n1 does not replicate");
    let replicas = sim.replicas(0, "default", &key);
    let none = Context::default();
    let first = sim
        .put(0, "default", &key, "v", Consistency::All, &none)
        .await
        .expect("written everywhere");
    // The first replica in preference order, which forwarding would pick,
    // is slow from n1.
    let slow = replicas[0];
    link(&sim, 0, slow, SLOW);
    for _ in 0..5 {
        read(&sim, 0, "default", &key, Consistency::Quorum).await;
    }
    let t0 = Instant::now();
    let object = sim
        .put(
            0,
            "default",
            &key,
            "w",
            Consistency::Quorum,
            &first.context(),
        )
        .await
        .expect("forwarded and written");
    assert!(t0.elapsed() < 10 * MS, "took {:?}", t0.elapsed());
    let (actor, _, _) = object
        .versions()
        .find(|(_, _, v)| v.data == b"w")
        .expect("the new version");
    let minter = actor.split(INCARNATION_SEPARATOR).next().unwrap_or(actor);
    assert_ne!(minter, sim.nodes[slow].id, "minted on the slow replica");
}
