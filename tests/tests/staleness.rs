//! `qkv exp staleness` (its library) on real `qkvd` processes with
//! `--fault-injection`: under a huge write delay, R = W = 1 reads through
//! another node than the writer's are reported stale, and R = W = 2 reads
//! (R + W > N) never are.

use std::time::Duration;

use anyhow::Result;
use quorumkv_client::Client;
use quorumkv_client::exp::predict::{Latency, Percentiles, ReadCoordinator, Samples};
use quorumkv_client::exp::staleness::run::{self, Node};
use quorumkv_client::exp::staleness::{Config, summarize};
use quorumkv_faults::{Delays, Legs};
use quorumkv_tests::cluster_ops::start_cluster;

/// Every write leg 300 ms (the writer's own copy too, then each other
/// replica's), every other leg nothing: a read through another node
/// within 300 ms of the acknowledgement finds its own copy old.
fn config(pairs: Vec<(usize, usize)>) -> Config {
    Config {
        n: 3,
        pairs,
        ts: vec![0.0, 50.0],
        writes: 8,
        concurrency: 4,
        read_coordinator: ReadCoordinator::Other,
        delays: Delays {
            legs: Legs {
                w: "const:300".parse().expect("dist"),
                ..Legs::every("const:0".parse().expect("dist"))
            },
            remote_ms: None,
        },
        read_repair: "off".into(),
        speculative_retry: "off".into(),
        seed: 7,
        trials: 1000,
        timeout_ms: 10_000,
        calibrate: true,
        slow: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_quorums_read_stale_versions_under_a_write_delay_and_strict_ones_never_do()
-> Result<()> {
    let cluster = start_cluster(3, &["--fault-injection"]).await?;
    let seed = Client::new(vec![cluster.node().url()])?;
    let nodes: Vec<Node> = run::discover(&seed, |url| {
        Client::builder(vec![url.to_string()])
            .timeout(Duration::from_secs(20))
            .build()
    })
    .await?;
    assert_eq!(nodes.len(), 3);
    let cfg = config(vec![(1, 1), (2, 2)]);
    let (costs, runs) = run::run(&nodes, &cfg, "staleness-test", 1, &|_| {}).await?;
    // Calibrated on loopback: real, and well below the injected delay.
    assert!(
        costs.client_ms > 0.0 && costs.client_ms < 100.0,
        "{costs:?}"
    );
    assert!(costs.hop_ms >= 0.0 && costs.hop_ms < 100.0, "{costs:?}");
    let (weak, strict) = (&runs[0], &runs[1]);
    for (run, want) in [(weak, (1, 1)), (strict, (2, 2))] {
        assert_eq!((run.r, run.w), want);
        assert_eq!(run.failures.first, None, "R={} W={}", run.r, run.w);
        assert_eq!(run.samples.len(), 16, "one read per write and t");
    }
    // No prediction here: the counts are what is checked.
    let empty = Samples::default();
    let none = Percentiles {
        p50: 0.0,
        p99: 0.0,
        p999: 0.0,
    };
    let latency = Latency {
        read: none,
        write: none,
    };
    let w = summarize(weak, 3, &cfg.ts, &empty, &empty, latency, 0.0);
    // Every write reaches the reader's copy 300 ms after the writer's:
    // every read within 50 ms of the acknowledgement misses it.
    assert_eq!(w.stale_reads, 16, "{:?}", w.points);
    assert!(w.behind.keys().all(|&k| k >= 1));
    let s = summarize(strict, 3, &cfg.ts, &empty, &empty, latency, 0.0);
    assert!(s.strict);
    assert_eq!(s.stale_reads, 0, "{:?}", s.points);
    assert_eq!(s.points[0].p_measured, 1.0);
    // The run left no delays behind.
    for n in &nodes {
        assert_eq!(
            n.client.faults().await?,
            quorumkv_faults::Settings::default()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_fault_injection_is_refused_and_left_untouched() -> Result<()> {
    let cluster = start_cluster(2, &[]).await?;
    let seed = Client::new(vec![cluster.node().url()])?;
    let nodes = run::discover(&seed, |url| Client::new(vec![url.to_string()])).await?;
    let cfg = Config {
        n: 2,
        pairs: vec![(1, 1)],
        ..config(vec![])
    };
    let err = run::run(&nodes, &cfg, "staleness-test", 1, &|_| {})
        .await
        .expect_err("no fault injection");
    assert!(err.to_string().contains("--fault-injection"), "{err}");
    Ok(())
}

/// One replica slowed on every leg by the other nodes (`qkv exp matrix
/// --slow`): a level that needs it (W=3) pays its round trip, one that
/// does not (W=1 … R=1) does not, and nothing stays installed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_is_paid_for_only_by_the_levels_that_need_it() -> Result<()> {
    let cluster = start_cluster(3, &["--fault-injection"]).await?;
    let seed = Client::new(vec![cluster.node().url()])?;
    let nodes: Vec<Node> = run::discover(&seed, |url| {
        Client::builder(vec![url.to_string()])
            .timeout(Duration::from_secs(20))
            .build()
    })
    .await?;
    let zero = || "const:0".parse().expect("dist");
    let cfg = Config {
        delays: Delays {
            legs: Legs::every(zero()),
            remote_ms: None,
        },
        ts: vec![0.0],
        calibrate: false,
        slow: Some(("n3".into(), "const:150".parse().expect("dist"))),
        ..config(vec![(1, 1), (1, 3)])
    };
    let (_, runs) = run::run(&nodes, &cfg, "slow-test", 1, &|_| {}).await?;
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let fast = median(&runs[0].write_ms);
    let all = runs[1].write_ms.iter().copied().fold(0.0, f64::max);
    // W=3 waits for n3 on every key: a round trip of 2 × 150 ms for the
    // writes that n1 or n2 coordinate (n3, a third of them, does not
    // delay its own calls), so the slowest takes at least that.
    assert!(all >= 300.0, "W=3 slowest write {all} ms");
    assert!(fast < 150.0, "W=1 median write {fast} ms");
    for n in &nodes {
        assert_eq!(
            n.client.faults().await?,
            quorumkv_faults::Settings::default()
        );
    }
    Ok(())
}
