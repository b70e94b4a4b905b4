//! Hinted handoff on real `qkvd` processes: writes to a killed replica are
//! hinted on the coordinator and replayed, without any read, once it
//! returns; a coordinator killed in a write storm loses nothing it
//! acknowledged; and a sloppy-quorum bucket writes to a fallback node that
//! hands the data back when the replica returns.
//!
//! Figures are printed; run with `--nocapture` to see them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use quorumkv_tests::cluster_ops::{
    body_text, concurrently, hints_pending, key_path, local, local_is, locate, member, metric,
    random_value, set_bucket_everywhere, start_cluster, wait_status,
};
use quorumkv_tests::eventually;
use quorumkv_tests::http::Api;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

const IN_FLIGHT: usize = 24;
const FAST_GOSSIP: [&str; 2] = ["--gossip-interval-ms", "200"];

/// Writes every `(key, value)` through `api` with `query`; returns the
/// keys answered 204 and a count of the other outcomes.
async fn write_all(
    api: &Api,
    bucket: &'static str,
    items: Vec<(Vec<u8>, Vec<u8>)>,
    query: &'static str,
) -> (Vec<(Vec<u8>, Vec<u8>)>, BTreeMap<String, usize>) {
    let a = api.clone();
    let results = concurrently(items.clone(), IN_FLIGHT, move |(k, v)| {
        let api = a.clone();
        async move {
            match api.put(&key_path(bucket, &k, query), &v).await {
                Ok(r) => r.status.to_string(),
                Err(e) => format!("error: {e}"),
            }
        }
    })
    .await;
    let mut acked = Vec::new();
    let mut other = BTreeMap::new();
    for (item, status) in items.into_iter().zip(results) {
        if status == "204" {
            acked.push(item);
        } else {
            *other.entry(status).or_insert(0) += 1;
        }
    }
    (acked, other)
}

/// The keys of `items` that `api`'s node does not hold with exactly
/// their value.
async fn missing_on(api: &Api, bucket: &'static str, items: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    let a = api.clone();
    let present = concurrently(items.to_vec(), IN_FLIGHT, move |(k, v)| {
        let api = a.clone();
        async move { local_is(&api, bucket, &k, &v).await }
    })
    .await;
    items
        .iter()
        .zip(present)
        .filter(|(_, p)| !p)
        .map(|((k, _), _)| k.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_missed_by_a_killed_replica_are_hinted_and_replayed_without_a_read() -> Result<()> {
    let mut c = start_cluster(3, &FAST_GOSSIP).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let n1 = apis[0].clone();
    let mut rng = StdRng::seed_from_u64(rand::random());
    let hints_written_before = metric(&n1, "qkv_hints_written_total", &[]).await?;

    c.nodes[2].kill9()?;
    let killed = Instant::now();

    // Before conviction: a w=all write cannot get n3's ack.
    let r = n1
        .put(
            &key_path("default", b"all-before-conviction", "w=all&timeout_ms=1000"),
            b"v",
        )
        .await?;
    let n3_seen = member(&n1, "n3").await.map(|m| m["status"].clone());
    println!(
        "before conviction: w=all answered {} {} ({:.2} s after SIGKILL; n1 sees n3 {n3_seen:?})",
        r.status,
        body_text(&r),
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(r.status, 504, "{}", body_text(&r));
    let body = r.json();
    assert_eq!(body["error"], "timeout", "{body}");
    assert_eq!(
        (body["required"].as_u64(), body["acks"].as_u64()),
        (Some(3), Some(2)),
        "{body}"
    );
    assert!(
        body["failed"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["node"] == "n3")),
        "504 names n3 among the failed: {body}"
    );

    // Before conviction, w=quorum writes succeed.
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..100)
        .map(|i| {
            (
                format!("before-conviction-{i}").into_bytes(),
                random_value(&mut rng, 100),
            )
        })
        .collect();
    let (mut down_writes, other) = write_all(&n1, "default", items, "w=quorum").await;
    let n3_seen = member(&n1, "n3").await.map(|m| m["status"].clone());
    println!(
        "before conviction: w=quorum acked {} of 100, other {other:?} ({:.2} s after SIGKILL; n1 sees n3 {n3_seen:?})",
        down_writes.len(),
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(
        down_writes.len(),
        100,
        "w=quorum with 2 of 3 replicas up: {other:?}"
    );

    wait_status(&n1, "n3", "down", Duration::from_secs(30)).await?;
    println!(
        "n1 sees n3 down {:.2} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );

    // After conviction: w=quorum succeeds, w=all is refused at once with
    // nothing written.
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..200)
        .map(|i| {
            (
                format!("after-conviction-{i}").into_bytes(),
                random_value(&mut rng, 100),
            )
        })
        .collect();
    let (acked, other) = write_all(&n1, "default", items, "w=quorum").await;
    println!(
        "after conviction: w=quorum acked {} of 200, other {other:?}",
        acked.len()
    );
    assert_eq!(acked.len(), 200, "{other:?}");
    down_writes.extend(acked);
    let r = n1
        .put(&key_path("default", b"all-after-conviction", "w=all"), b"v")
        .await?;
    assert_eq!(r.status, 503, "{}", body_text(&r));
    assert_eq!(r.error_code(), "unavailable");
    for api in &apis[..2] {
        assert_eq!(
            local(api, "default", b"all-after-conviction").await?,
            None,
            "a refused w=all wrote on {}",
            api.base
        );
    }

    // Hints for a replica known to be down are stored beside the write,
    // off its latency path: the last ones may land just after the 204.
    let want = down_writes.len() as u64;
    let (a0, a1) = (apis[0].clone(), apis[1].clone());
    let _ = eventually(Duration::from_secs(10), "every missed write hinted", || {
        let (a0, a1) = (a0.clone(), a1.clone());
        async move {
            let p0 = hints_pending(&a0, "n3").await.unwrap_or(0);
            let p1 = hints_pending(&a1, "n3").await.unwrap_or(0);
            p0 + p1 >= want
        }
    })
    .await;
    let pending: Vec<Option<u64>> = vec![
        hints_pending(&apis[0], "n3").await,
        hints_pending(&apis[1], "n3").await,
    ];
    let gauge = metric(&n1, "qkv_hints_pending", &[("target", "n3")]).await?;
    let written = metric(&n1, "qkv_hints_written_total", &[]).await? - hints_written_before;
    println!(
        "n3 down: {} keys acked; hints_pending for n3 on n1/n2 {pending:?}, n1 gauge qkv_hints_pending{{target=\"n3\"}} {gauge}, n1 hints written {written}",
        down_writes.len()
    );
    let total_pending: u64 = pending.iter().map(|p| p.unwrap_or(0)).sum();
    assert!(
        pending.iter().all(Option::is_some),
        "/cluster/members shows hints_pending: {pending:?}"
    );
    assert!(
        total_pending >= down_writes.len() as u64,
        "every acked write missed by n3 is hinted: {total_pending} pending for {} writes",
        down_writes.len()
    );
    assert!(
        written >= down_writes.len() as f64,
        "qkv_hints_written_total grew by {written}"
    );

    // n3 returns; no read touches the keys.
    let delivered_before = metric(&n1, "qkv_hints_delivered_total", &[]).await?;
    c.nodes[2].restart()?;
    let restarted = Instant::now();
    let n3 = apis[2].clone();
    let remaining = Arc::new(Mutex::new(down_writes.clone()));
    let polled = eventually(
        Duration::from_secs(60),
        "every hinted write on n3 and no hint pending",
        || {
            let (n3, remaining, apis) = (n3.clone(), remaining.clone(), apis.clone());
            async move {
                let todo = remaining.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if !todo.is_empty() {
                    let missing: HashSet<Vec<u8>> = missing_on(&n3, "default", &todo)
                        .await
                        .into_iter()
                        .collect();
                    remaining
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|(k, _)| missing.contains(k));
                    if !missing.is_empty() {
                        return false;
                    }
                }
                for api in &apis[..2] {
                    if hints_pending(api, "n3").await != Some(0) {
                        return false;
                    }
                }
                metric(&apis[0], "qkv_hints_pending", &[("target", "n3")])
                    .await
                    .ok()
                    == Some(0.0)
            }
        },
    )
    .await;
    let drained = restarted.elapsed();
    if let Err(e) = polled {
        let left = remaining.lock().unwrap_or_else(|p| p.into_inner()).len();
        let pending = (
            hints_pending(&apis[0], "n3").await,
            hints_pending(&apis[1], "n3").await,
        );
        bail!(
            "{e}: {left} of {} keys still missing on n3; hints_pending for n3 on n1/n2 {pending:?}",
            down_writes.len()
        );
    }
    let delivered = metric(&n1, "qkv_hints_delivered_total", &[]).await? - delivered_before;
    println!(
        "n3 restarted: all {} keys written while it was down are on n3 and hints drained {:.2} s after restart (n1 delivered {delivered})",
        down_writes.len(),
        drained.as_secs_f64()
    );
    assert!(delivered > 0.0, "qkv_hints_delivered_total grew on n1");
    Ok(())
}

/// Acknowledged writes: key and value.
type Written = Vec<(String, Vec<u8>)>;

fn value_for(writer: usize, seq: u64) -> Vec<u8> {
    let mut v = format!("w{writer}-s{seq}-").into_bytes();
    v.extend((0..(seq % 97) as u8).map(|i| i.wrapping_mul(31).wrapping_add(writer as u8)));
    v
}

async fn read_back(api: &Api, acked: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    let a = api.clone();
    let results = concurrently(acked.to_vec(), IN_FLIGHT, move |(k, v)| {
        let api = a.clone();
        async move {
            match api
                .get(&key_path("default", k.as_bytes(), "r=quorum"))
                .await
            {
                Ok(r) if r.status == 200 && r.body == v => None,
                Ok(r) if r.status == 200 => Some((k, "200 with another value".to_string())),
                Ok(r) => Some((k, format!("{} {}", r.status, body_text(&r)))),
                Err(e) => Some((k, e.to_string())),
            }
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_in_a_write_storm_loses_nothing_it_acknowledged() -> Result<()> {
    let mut c = start_cluster(3, &["--sync", "always"]).await?;
    let n1 = Api::new(&c.nodes[0].url());
    let acked: Arc<Mutex<Written>> = Arc::default();
    let refused: Arc<Mutex<BTreeMap<u16, usize>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (api, acked, refused) = (n1.clone(), acked.clone(), refused.clone());
        writers.push(tokio::spawn(async move {
            for seq in 0u64.. {
                let key = format!("storm-{w}-{seq}");
                let value = value_for(w, seq);
                match api
                    .put(&key_path("default", key.as_bytes(), "w=quorum"), &value)
                    .await
                {
                    Ok(r) if r.status == 204 => acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((key, value)),
                    Ok(r) => {
                        *refused
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(r.status)
                            .or_insert(0) += 1
                    }
                    // n1 died under us.
                    Err(_) => break,
                }
            }
        }));
    }
    // The storm's length, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.nodes[0].kill9()?;
    for t in writers {
        t.await?;
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    let refused = refused.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "write storm: 8 writers through n1 for 2 s: acked {}, other answers {refused:?}",
        acked.len()
    );
    assert!(
        acked.len() >= 100,
        "the storm wrote something: {}",
        acked.len()
    );

    c.nodes[0].restart()?;
    let n2 = Api::new(&c.nodes[1].url());
    let lost_n2 = read_back(&n2, &acked).await;
    println!(
        "after n1 restart, r=quorum through n2: acked {} / lost {}",
        acked.len(),
        lost_n2.len()
    );
    for id in ["n2", "n3"] {
        wait_status(&n1, id, "up", Duration::from_secs(30)).await?;
    }
    let lost_n1 = read_back(&n1, &acked).await;
    println!(
        "after n1 restart, r=quorum through n1: acked {} / lost {}",
        acked.len(),
        lost_n1.len()
    );
    assert!(
        lost_n2.is_empty(),
        "lost through n2, first: {:?}",
        lost_n2.first()
    );
    assert!(
        lost_n1.is_empty(),
        "lost through n1, first: {:?}",
        lost_n1.first()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sloppy_quorum_writes_to_a_fallback_that_hands_off_when_the_replica_returns() -> Result<()>
{
    let mut c = start_cluster(4, &FAST_GOSSIP).await?;
    set_bucket_everywhere(&c, "s", json!({"n": 3, "sloppy_quorum": true})).await?;
    set_bucket_everywhere(&c, "strict", json!({"n": 3, "sloppy_quorum": false})).await?;
    let apis: BTreeMap<String, Api> = c
        .nodes
        .iter()
        .map(|n| (n.spec.id.clone(), Api::new(&n.url())))
        .collect();
    let n1 = apis["n1"].clone();

    // Keys whose replicas include n4, in each bucket.
    let mut sloppy = Vec::new();
    let mut strict = Vec::new();
    for i in 0.. {
        if sloppy.len() >= 20 && strict.len() >= 5 {
            break;
        }
        let key = format!("sloppy-{i}").into_bytes();
        if sloppy.len() < 20 {
            let loc = locate(&n1, "s", &key).await?;
            if loc.replicas.iter().any(|r| r == "n4") {
                assert!(!loc.fallbacks.is_empty(), "locate gives fallbacks: {loc:?}");
                sloppy.push((
                    key.clone(),
                    format!("value of sloppy-{i}").into_bytes(),
                    loc,
                ));
            }
        }
        if strict.len() < 5 {
            let loc = locate(&n1, "strict", &key).await?;
            if loc.replicas.iter().any(|r| r == "n4") {
                strict.push((key, loc));
            }
        }
    }

    c.nodes[3].kill9()?;
    let killed = Instant::now();
    for id in ["n1", "n2", "n3"] {
        wait_status(&apis[id], "n4", "down", Duration::from_secs(30)).await?;
    }
    println!(
        "sloppy: n1, n2 and n3 see n4 down {:.2} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );

    let mut on_fallback = 0;
    for (key, value, loc) in &sloppy {
        let r = n1.put(&key_path("s", key, "w=all"), value).await?;
        assert_eq!(
            r.status,
            204,
            "sloppy w=all with n4 down: {}",
            body_text(&r)
        );
        let fallback = loc
            .fallbacks
            .iter()
            .find(|f| *f != "n4")
            .context("an up fallback")?;
        let stored = local(&apis[fallback.as_str()], "s", key).await?;
        assert!(
            stored.as_ref().is_some_and(|l| l.values == [value.clone()]),
            "fallback {fallback} of {:?} (replicas {:?}) holds {stored:?}",
            String::from_utf8_lossy(key),
            loc.replicas
        );
        on_fallback += 1;
        for r in loc.replicas.iter().filter(|r| *r != "n4") {
            assert!(
                local_is(&apis[r.as_str()], "s", key, value).await,
                "replica {r} holds the write"
            );
        }
    }
    println!(
        "sloppy: {} w=all writes with n4 down answered 204; {on_fallback} found on the first up fallback",
        sloppy.len()
    );

    for (key, loc) in &strict {
        let r = n1
            .put(&key_path("strict", key, "w=all"), b"must not be written")
            .await?;
        assert_eq!(
            r.status,
            503,
            "strict w=all with n4 down: {}",
            body_text(&r)
        );
        assert_eq!(r.error_code(), "unavailable");
        for id in loc
            .replicas
            .iter()
            .chain(&loc.fallbacks)
            .filter(|r| *r != "n4")
        {
            assert_eq!(
                local(&apis[id.as_str()], "strict", key).await?,
                None,
                "{id} holds a refused write"
            );
        }
    }
    println!(
        "strict: {} w=all writes with n4 down answered 503, nothing written",
        strict.len()
    );

    c.nodes[3].restart()?;
    let restarted = Instant::now();
    let items: Vec<(Vec<u8>, Vec<u8>)> = sloppy
        .iter()
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect();
    let n4 = apis["n4"].clone();
    let polled = eventually(
        Duration::from_secs(60),
        "n4 to hold every sloppy write",
        || {
            let (n4, items) = (n4.clone(), items.clone());
            async move { missing_on(&n4, "s", &items).await.is_empty() }
        },
    )
    .await;
    if let Err(e) = polled {
        let missing = missing_on(&n4, "s", &items).await;
        bail!(
            "{e}: {} of {} keys missing on n4",
            missing.len(),
            items.len()
        );
    }
    println!(
        "sloppy: n4 restarted and holds all {} writes {:.2} s later",
        items.len(),
        restarted.elapsed().as_secs_f64()
    );
    Ok(())
}
