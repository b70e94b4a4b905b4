//! Read repair on real `qkvd` processes, with hinted handoff off so that
//! only reads can heal a replica: n3 is paused (SIGSTOP) while keys are
//! overwritten, so it keeps the old values (the writes it missed are
//! neither hinted nor applied late); then an `r=all` read repairs it before
//! answering (`blocking`), soon after (`async`), or not at all (`off`).
//!
//! Figures are printed; run with `--nocapture` to see them.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use quorumkv_tests::cluster_ops::{
    body_text, concurrently, key_path, local, local_is, metric, set_bucket_everywhere,
    start_cluster,
};
use quorumkv_tests::http::Api;
use quorumkv_tests::{Cluster, eventually};
use serde_json::json;

const KEYS: usize = 50;
const IN_FLIGHT: usize = 16;
/// Timeout of the overwrites while n3 is paused: their internode requests
/// to n3 expire this long after they are sent.
const OVERWRITE_TIMEOUT_MS: u64 = 1000;
/// How late past its timeout a node still runs a request it reads
/// (`ALLOWANCE_MS` in `node/src/transport/tcp/lateness.rs`, 200 ms), plus
/// a wide margin: n3 stays paused this long after the last overwrite's
/// deadline.
const PAST_DEADLINE_MS: u64 = 200 + 1800;

struct Key {
    key: Vec<u8>,
    v1: Vec<u8>,
    v2: Vec<u8>,
}

/// A 3-node cluster without hinted handoff, bucket `rr` with `read_repair`
/// = `mode`, `KEYS` keys that all replicas hold as v1 and only n1 and n2
/// hold as v2: n3 was paused through the overwrites and resumed after
/// their deadlines passed.
async fn n3_missed_the_overwrites(mode: &str) -> Result<(Cluster, Vec<Key>)> {
    let c = start_cluster(3, &["--hinted-handoff", "off"]).await?;
    set_bucket_everywhere(&c, "rr", json!({"read_repair": mode})).await?;
    let n1 = Api::new(&c.nodes[0].url());
    let n3 = Api::new(&c.nodes[2].url());
    let keys: Vec<Key> = (0..KEYS)
        .map(|i| Key {
            key: format!("repair-{mode}-{i}").into_bytes(),
            v1: format!("v1 of key {i}").into_bytes(),
            v2: format!("v2 of key {i}, written while n3 was paused").into_bytes(),
        })
        .collect();
    for k in &keys {
        let r = n1.put(&key_path("rr", &k.key, "w=all"), &k.v1).await?;
        assert_eq!(r.status, 204, "v1 w=all: {}", body_text(&r));
    }
    // The contexts the overwrites will carry, from a read of v1.
    let mut contexts = Vec::new();
    for k in &keys {
        let r = n1.get(&key_path("rr", &k.key, "r=all")).await?;
        assert_eq!((r.status, &r.body), (200, &k.v1), "{}", body_text(&r));
        contexts.push(r.context().context("read without context")?);
    }

    c.nodes[2].signal(libc::SIGSTOP)?;
    let paused = Instant::now();
    let query = format!("w=quorum&timeout_ms={OVERWRITE_TIMEOUT_MS}");
    for (k, ctx) in keys.iter().zip(&contexts) {
        let r = n1
            .put_with(
                &key_path("rr", &k.key, &query),
                &[("x-causal-context", ctx)],
                &k.v2,
            )
            .await?;
        assert_eq!(
            r.status,
            204,
            "v2 w=quorum with n3 paused: {}",
            body_text(&r)
        );
    }
    let written = paused.elapsed();
    // Hold n3 paused until every request sent to it is stale: nothing to
    // poll for, this is the point of the test.
    tokio::time::sleep(Duration::from_millis(
        OVERWRITE_TIMEOUT_MS + PAST_DEADLINE_MS,
    ))
    .await;
    c.nodes[2].signal(libc::SIGCONT)?;
    println!(
        "read_repair={mode}: {KEYS} keys overwritten through n1 with w=quorum in {} ms while n3 was paused; n3 resumed after {} ms",
        written.as_millis(),
        paused.elapsed().as_millis()
    );

    // n3 serves internode requests again once a w=all write succeeds; the
    // expired overwrites were queued before it on the same connections.
    eventually(
        Duration::from_secs(15),
        "a w=all write through n1 after SIGCONT",
        || {
            let n1 = n1.clone();
            async move {
                n1.put(&key_path("rr", b"marker", "w=all&timeout_ms=1000"), b"m")
                    .await
                    .is_ok_and(|r| r.status == 204)
            }
        },
    )
    .await?;
    let mut stale = 0;
    for k in &keys {
        let l = local(&n3, "rr", &k.key).await?;
        if l.as_ref().is_some_and(|l| l.values == [k.v1.clone()]) {
            stale += 1;
        } else {
            bail!(
                "n3 should still hold v1 of {:?} (the overwrite was neither hinted nor to be applied after its deadline), holds {:?}",
                String::from_utf8_lossy(&k.key),
                l.map(|l| l
                    .values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect::<Vec<_>>())
            );
        }
    }
    println!("read_repair={mode}: after SIGCONT n3 still holds v1 of {stale}/{KEYS} keys");
    for api in c.nodes[..2].iter().map(|n| Api::new(&n.url())) {
        for k in &keys {
            assert!(
                local_is(&api, "rr", &k.key, &k.v2).await,
                "{} holds v2",
                api.base
            );
        }
    }
    Ok((c, keys))
}

/// `r=all` reads of every key through `api`; asserts each returns v2.
/// Returns, per key, whether n3 held v2 right after the read answered.
async fn read_all_through(api: &Api, n3: &Api, keys: &[Key]) -> Vec<bool> {
    let items: Vec<(Vec<u8>, Vec<u8>)> =
        keys.iter().map(|k| (k.key.clone(), k.v2.clone())).collect();
    let (a, n3) = (api.clone(), n3.clone());
    concurrently(items, IN_FLIGHT, move |(k, v2)| {
        let (api, n3) = (a.clone(), n3.clone());
        async move {
            let r = api
                .get(&key_path("rr", &k, "r=all"))
                .await
                .expect("r=all read");
            assert_eq!(
                (r.status, &r.body),
                (200, &v2),
                "r=all read of {:?}: {}",
                String::from_utf8_lossy(&k),
                body_text(&r)
            );
            local_is(&n3, "rr", &k, &v2).await
        }
    })
    .await
}

async fn repairs(api: &Api, kind: &str) -> Result<f64> {
    metric(api, "qkv_read_repairs_total", &[("kind", kind)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_read_repair_fixes_the_stale_replica_before_answering() -> Result<()> {
    let (c, keys) = n3_missed_the_overwrites("blocking").await?;
    let n2 = Api::new(&c.nodes[1].url());
    let n3 = Api::new(&c.nodes[2].url());
    let before = repairs(&n2, "blocking").await?;
    let repaired_at_answer = read_all_through(&n2, &n3, &keys).await;
    let repaired = repaired_at_answer.iter().filter(|r| **r).count();
    let grew = repairs(&n2, "blocking").await? - before;
    println!(
        "read_repair=blocking: {KEYS} r=all reads through n2; n3 held v2 right after the answer for {repaired}/{KEYS} keys; qkv_read_repairs_total{{kind=\"blocking\"}} on n2 grew by {grew}"
    );
    assert_eq!(
        repaired, KEYS,
        "blocking repair is done before the read answers"
    );
    assert!(
        grew >= KEYS as f64,
        "one blocking repair per stale read: grew by {grew}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_read_repair_fixes_the_stale_replica_soon_after() -> Result<()> {
    let (c, keys) = n3_missed_the_overwrites("async").await?;
    let n2 = Api::new(&c.nodes[1].url());
    let n3 = Api::new(&c.nodes[2].url());
    let before = repairs(&n2, "async").await?;
    let read_done = Instant::now();
    let at_answer = read_all_through(&n2, &n3, &keys).await;
    let repaired_at_answer = at_answer.iter().filter(|r| **r).count();
    let items: Vec<(Vec<u8>, Vec<u8>)> =
        keys.iter().map(|k| (k.key.clone(), k.v2.clone())).collect();
    let n3c = n3.clone();
    eventually(
        Duration::from_secs(5),
        "n3 to hold v2 of every key after async repair",
        || {
            let (n3, items) = (n3c.clone(), items.clone());
            async move {
                concurrently(items, IN_FLIGHT, move |(k, v)| {
                    let n3 = n3.clone();
                    async move { local_is(&n3, "rr", &k, &v).await }
                })
                .await
                .into_iter()
                .all(|ok| ok)
            }
        },
    )
    .await?;
    let took = read_done.elapsed();
    // n2 counts a repair when n3's acknowledgement reaches it, which can be
    // just after n3 shows the value: poll for the count too.
    let n2c = n2.clone();
    let counted = eventually(
        Duration::from_secs(5),
        "n2 to count one async repair per stale read",
        || {
            let n2 = n2c.clone();
            async move {
                repairs(&n2, "async")
                    .await
                    .is_ok_and(|now| now - before >= KEYS as f64)
            }
        },
    )
    .await;
    let grew = repairs(&n2, "async").await? - before;
    println!(
        "read_repair=async: {KEYS} r=all reads through n2; n3 held v2 for {repaired_at_answer} at the answers and for all {KEYS} {} ms after the reads began; qkv_read_repairs_total{{kind=\"async\"}} on n2 grew by {grew}",
        took.as_millis()
    );
    assert!(
        counted.is_ok() && grew >= KEYS as f64,
        "one async repair per stale read: grew by {grew}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_off_leaves_the_stale_replica_alone() -> Result<()> {
    let (c, keys) = n3_missed_the_overwrites("off").await?;
    let n2 = Api::new(&c.nodes[1].url());
    let n3 = Api::new(&c.nodes[2].url());
    let before = (
        repairs(&n2, "blocking").await?,
        repairs(&n2, "async").await?,
    );
    let at_answer = read_all_through(&n2, &n3, &keys).await;
    assert!(
        at_answer.iter().all(|r| !r),
        "read_repair=off repaired n3 at the read"
    );
    // A negative cannot be polled for: look again after a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut still_v1 = 0;
    for k in &keys {
        if local(&n3, "rr", &k.key)
            .await?
            .is_some_and(|l| l.values == [k.v1.clone()])
        {
            still_v1 += 1;
        }
    }
    let after = (
        repairs(&n2, "blocking").await?,
        repairs(&n2, "async").await?,
    );
    println!(
        "read_repair=off: {KEYS} r=all reads through n2 returned v2; 1 s later n3 still holds v1 of {still_v1}/{KEYS}; n2 repairs (blocking, async) {before:?} -> {after:?}"
    );
    assert_eq!(still_v1, KEYS, "read_repair=off must not repair");
    assert_eq!(before, after, "no read repair counted with read_repair=off");
    Ok(())
}
