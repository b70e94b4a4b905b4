//! Large values end to end on real `qkvd` processes: 8 MiB values (twice
//! the internode frame of earlier protocol versions) replicate, are read
//! through another node, are hinted to a killed replica and delivered when
//! it returns, and are repaired by anti-entropy onto a replica that missed
//! them; a write that would grow a key past `--max-key-bytes` is 413
//! `key_too_large` and nothing is stored.
//!
//! Figures are printed; run with `--nocapture` to see them.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use quorumkv_tests::cluster_ops::{
    body_text, field, hints_pending, key_path, local, local_is, qkv_repair, random_value,
    start_cluster, wait_converged, wait_status,
};
use quorumkv_tests::eventually;
use quorumkv_tests::http::Api;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The value size under test.
const BIG: usize = 8 << 20;
/// Values up to `BIG`, keys up to `BIG` plus 1 MiB: room for one such
/// value with its metadata, not for two siblings of it.
const LIMITS: [&str; 4] = ["--max-value-bytes", "8388608", "--max-key-bytes", "9437184"];
const FAST_GOSSIP: [&str; 2] = ["--gossip-interval-ms", "200"];
/// A deadline for requests moving 8 MiB on a shared, loaded machine.
const SLOW: &str = "timeout_ms=60000";

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut a = LIMITS.to_vec();
    a.extend(FAST_GOSSIP);
    a.extend_from_slice(extra);
    a
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Whether each node of `apis` alone holds exactly `value` for `key`.
async fn held_by(apis: &[Api], key: &[u8], value: &[u8]) -> Vec<bool> {
    let mut out = Vec::new();
    for api in apis {
        out.push(local_is(api, "default", key, value).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_values_replicate_read_remotely_are_hinted_and_keys_stay_bounded() -> Result<()> {
    let mut c = start_cluster(3, &args(&[])).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let mut rng = StdRng::seed_from_u64(rand::random());

    // (a) A w=all write through n1, a r=all read through n2.
    let value = random_value(&mut rng, BIG);
    let started = Instant::now();
    let w = apis[0]
        .put(
            &key_path("default", b"big", &format!("w=all&{SLOW}")),
            &value,
        )
        .await?;
    println!(
        "(a) {:.0} MiB at w=all: {} in {:.2} s",
        mib(BIG),
        w.status,
        started.elapsed().as_secs_f64()
    );
    ensure!(
        w.status == 204,
        "w=all write: {} {}",
        w.status,
        body_text(&w)
    );
    let started = Instant::now();
    let r = apis[1]
        .get(&key_path("default", b"big", &format!("r=all&{SLOW}")))
        .await?;
    println!(
        "(a) r=all read through n2: {} ({:.0} MiB) in {:.2} s",
        r.status,
        mib(r.body.len()),
        started.elapsed().as_secs_f64()
    );
    ensure!(
        r.status == 200,
        "r=all read: {} {}",
        r.status,
        body_text(&r)
    );
    ensure!(r.body == value, "the read returned other bytes");
    let held = held_by(&apis, b"big", &value).await;
    ensure!(held == [true; 3], "every replica holds the value: {held:?}");

    // (d) A second 8 MiB version without the context would be a sibling:
    // 16 MiB in the key, over --max-key-bytes.
    let other = random_value(&mut rng, BIG);
    let r = apis[1]
        .put(&key_path("default", b"big", SLOW), &other)
        .await?;
    println!(
        "(d) a concurrent 8 MiB sibling: {} {}",
        r.status,
        body_text(&r)
    );
    ensure!(
        r.status == 413 && r.error_code() == "key_too_large",
        "a write past --max-key-bytes: {} {}",
        r.status,
        body_text(&r)
    );
    let held = held_by(&apis, b"big", &value).await;
    ensure!(
        held == [true; 3],
        "the refused write stored nothing, the old value is intact: {held:?}"
    );
    // With the context it replaces the version instead: allowed.
    let ctx = r_context(&apis[1], b"big").await?;
    let r = apis[1]
        .put_with(
            &key_path("default", b"big", &format!("w=all&{SLOW}")),
            &[("X-Causal-Context", ctx.as_str())],
            &other,
        )
        .await?;
    ensure!(
        r.status == 204,
        "a replacing write within the bound: {} {}",
        r.status,
        body_text(&r)
    );
    let held = held_by(&apis, b"big", &other).await;
    ensure!(held == [true; 3], "the replacement everywhere: {held:?}");

    // (b) n3 is down: the write is hinted on n1 and delivered when n3
    // returns, without any read.
    c.nodes[2].kill9()?;
    wait_status(&apis[0], "n3", "down", Duration::from_secs(30)).await?;
    let hinted = random_value(&mut rng, BIG);
    let w = apis[0]
        .put(
            &key_path("default", b"hinted", &format!("w=quorum&{SLOW}")),
            &hinted,
        )
        .await?;
    ensure!(
        w.status == 204,
        "w=quorum write: {} {}",
        w.status,
        body_text(&w)
    );
    let n1 = apis[0].clone();
    eventually(Duration::from_secs(30), "n1 holds a hint for n3", || {
        let n1 = n1.clone();
        async move { hints_pending(&n1, "n3").await.unwrap_or(0) >= 1 }
    })
    .await?;
    c.nodes[2].restart()?;
    wait_converged(&c, Duration::from_secs(60)).await?;
    let started = Instant::now();
    let (n3, want) = (apis[2].clone(), hinted.clone());
    eventually(Duration::from_secs(60), "the hint delivered to n3", || {
        let (n3, want) = (n3.clone(), want.clone());
        async move { local_is(&n3, "default", b"hinted", &want).await }
    })
    .await?;
    println!(
        "(b) the 8 MiB hint reached n3 {:.2} s after it converged; n1 still holds {:?} hints for it",
        started.elapsed().as_secs_f64(),
        hints_pending(&apis[0], "n3").await
    );
    Ok(())
}

/// The causal context of a read of `key` through `api`.
async fn r_context(api: &Api, key: &[u8]) -> Result<String> {
    let r = api
        .get(&key_path("default", key, &format!("r=all&{SLOW}")))
        .await?;
    r.context()
        .ok_or_else(|| anyhow::anyhow!("no context on the read: {}", r.status))
}

/// `count` keys of the `default` bucket whose tokens lie within 2^40 of
/// each other: far inside one leaf of any range's Merkle tree (a leaf of a
/// 16-vnode, 3-node ring spans about 2^48 tokens).
fn neighbours(count: usize) -> Vec<Vec<u8>> {
    let mut by_window: std::collections::HashMap<u64, Vec<Vec<u8>>> = Default::default();
    for i in 0u64.. {
        let key = format!("near-{i}").into_bytes();
        let window = quorumkv_ring::token_of(b"default", &key) >> 40;
        let keys = by_window.entry(window).or_default();
        keys.push(key);
        if keys.len() == count {
            return keys.clone();
        }
    }
    unreachable!("the search ends once a window holds enough keys")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_repairs_big_values_onto_a_replica_that_missed_them() -> Result<()> {
    // No hints: only anti-entropy can bring n3 what it missed.
    let mut c = start_cluster(3, &args(&["--hinted-handoff", "off"])).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let mut rng = StdRng::seed_from_u64(rand::random());
    c.nodes[2].kill9()?;
    wait_status(&apis[0], "n3", "down", Duration::from_secs(30)).await?;
    // One Merkle leaf, so one page of entries holds all three unless the
    // page's byte budget cuts it: 24 MiB, over the 17 MiB frame.
    let items: Vec<(Vec<u8>, Vec<u8>)> = neighbours(3)
        .into_iter()
        .map(|k| (k, random_value(&mut rng, BIG)))
        .collect();
    for (k, v) in &items {
        let w = apis[0]
            .put(&key_path("default", k, &format!("w=quorum&{SLOW}")), v)
            .await?;
        ensure!(
            w.status == 204,
            "w=quorum write: {} {}",
            w.status,
            body_text(&w)
        );
    }
    c.nodes[2].restart()?;
    wait_converged(&c, Duration::from_secs(60)).await?;
    for (k, _) in &items {
        ensure!(
            local(&apis[2], "default", k).await?.is_none(),
            "n3 holds a key it missed before any repair"
        );
    }
    let started = Instant::now();
    let report = qkv_repair(&c.nodes[2].url())?;
    println!(
        "(c) repair on n3: {} keys / {} bytes received, {} errors, in {:.2} s",
        field(&report, "keys_received"),
        field(&report, "bytes_received"),
        field(&report, "errors"),
        started.elapsed().as_secs_f64()
    );
    ensure!(field(&report, "errors") == 0, "{report:#}");
    for (k, v) in &items {
        ensure!(
            local_is(&apis[2], "default", k, v).await,
            "n3 holds {} after repair",
            String::from_utf8_lossy(k)
        );
    }
    Ok(())
}
