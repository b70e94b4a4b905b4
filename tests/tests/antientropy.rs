//! Anti-entropy repair on real `qkvd` processes: a replica that was down
//! while writes and deletes happened, with hinted handoff off and no reads
//! through it (so neither hints nor read repair can heal it), gets every
//! missed write and every tombstone from `qkv repair`, and a second pass
//! finds nothing left to repair.
//!
//! Figures are printed; run with `--nocapture` to see them.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use quorumkv_tests::cluster_ops::{
    body_text, field as n, key_path, local, metric, put_all, qkv_repair, random_value,
    start_cluster, wait_converged, wait_status,
};
use quorumkv_tests::http::Api;
use quorumkv_tests::qkv_bin;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

const ARGS: [&str; 4] = ["--hinted-handoff", "off", "--gossip-interval-ms", "200"];

/// Reads `key` through `api` for its context, then deletes with it.
async fn delete_with_context(api: &Api, key: &[u8]) -> Result<()> {
    let r = api.get(&key_path("default", key, "r=quorum")).await?;
    if r.status != 200 {
        bail!(
            "read before delete answered {}: {}",
            r.status,
            body_text(&r)
        );
    }
    let ctx = r.context().context("read answered no context")?;
    let r = api
        .delete_with(
            &key_path("default", key, "w=quorum"),
            &[("x-causal-context", ctx.as_str())],
        )
        .await?;
    if r.status != 204 {
        bail!("delete answered {}: {}", r.status, body_text(&r));
    }
    Ok(())
}

fn figures(pass: &str, r: &Value) {
    println!(
        "{pass}: {} ranges, {} compared, {} differing, {} leaves differing; {} keys received ({} B), \
         {} keys sent ({} B); {} errors; {} ms",
        n(r, "ranges"),
        n(r, "ranges_compared"),
        n(r, "ranges_differing"),
        n(r, "leaves_differing"),
        n(r, "keys_received"),
        n(r, "bytes_received"),
        n(r, "keys_sent"),
        n(r, "bytes_sent"),
        n(r, "errors"),
        n(r, "duration_ms"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_heals_a_replica_that_missed_writes_and_deletes() -> Result<()> {
    // Run on the stale replica: it pulls what it missed.
    missed_writes_are_healed_by_repair_on(2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_run_on_an_up_to_date_replica_pushes_to_the_stale_one() -> Result<()> {
    // Run on n1: it pushes what n3 lacks.
    missed_writes_are_healed_by_repair_on(0).await
}

/// n3 misses 200 writes and 20 deletes (hints off); `qkv repair` against
/// node `repair_on` must bring n3 up to date, and a second pass finds
/// nothing.
async fn missed_writes_are_healed_by_repair_on(repair_on: usize) -> Result<()> {
    let mut c = start_cluster(3, &ARGS).await?;
    let n1 = Api::new(&c.nodes[0].url());
    let n3_url = c.nodes[2].url();
    let repair_url = c.nodes[repair_on].url();
    let mut rng = StdRng::seed_from_u64(rand::random());

    let first: Vec<(Vec<u8>, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                format!("first-{i}").into_bytes(),
                random_value(&mut rng, 64),
            )
        })
        .collect();
    put_all(&n1, &first, "w=all").await?;

    c.nodes[2].kill9()?;
    // Once n1 holds n3 down, quorum reads and writes do not wait on it.
    wait_status(&n1, "n3", "down", Duration::from_secs(30)).await?;
    let later: Vec<(Vec<u8>, Vec<u8>)> = (0..200)
        .map(|i| {
            (
                format!("later-{i}").into_bytes(),
                random_value(&mut rng, 64),
            )
        })
        .collect();
    put_all(&n1, &later, "w=quorum").await?;
    let deleted: Vec<Vec<u8>> = first[..20].iter().map(|(k, _)| k.clone()).collect();
    for k in &deleted {
        delete_with_context(&n1, k).await?;
    }

    c.nodes[2].restart()?;
    wait_converged(&c, Duration::from_secs(60)).await?;
    let n3 = Api::new(&n3_url);

    // Nothing healed n3 yet: no hints, no reads through it.
    let mut present = 0;
    for (k, _) in &later {
        if local(&n3, "default", k).await?.is_some() {
            present += 1;
        }
    }
    let mut deleted_before = 0;
    for k in &deleted {
        if local(&n3, "default", k).await?.is_some_and(|l| l.tombstone) {
            deleted_before += 1;
        }
    }
    println!(
        "before repair: n3 holds {present} of 200 later keys, {deleted_before} of 20 tombstones"
    );
    assert_eq!(
        present, 0,
        "n3 must not hold the keys written while it was down"
    );
    assert_eq!(deleted_before, 0, "n3 must not know of the deletes yet");

    let r1 = qkv_repair(&repair_url)?;
    figures(&format!("first repair on n{}", repair_on + 1), &r1);
    assert_eq!(n(&r1, "errors"), 0, "{r1:#}");
    assert!(
        n(&r1, "ranges") > 0 && n(&r1, "ranges_compared") > 0,
        "{r1:#}"
    );
    assert!(n(&r1, "leaves_differing") > 0, "{r1:#}");
    // Pulled by n3, or pushed to it by n1.
    let moved = if repair_on == 2 {
        n(&r1, "keys_received")
    } else {
        n(&r1, "keys_sent")
    };
    assert!(
        moved >= 220,
        "the 200 writes and 20 deletes reached n3: {r1:#}"
    );

    let mut missing = Vec::new();
    for (k, v) in &later {
        match local(&n3, "default", k).await? {
            Some(l) if l.values == vec![v.clone()] && !l.tombstone => {}
            other => missing.push((String::from_utf8_lossy(k).into_owned(), other)),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of 200 later keys wrong on n3 after repair, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    for k in &deleted {
        let l = local(&n3, "default", k).await?;
        assert!(
            l.as_ref()
                .is_some_and(|l| l.tombstone && l.values.is_empty()),
            "{} on n3 after repair: {l:?} (a delete must not be undone)",
            String::from_utf8_lossy(k)
        );
    }
    // The survivors of the first batch are untouched.
    for (k, v) in &first[20..] {
        let l = local(&n3, "default", k).await?;
        assert!(
            l.as_ref().is_some_and(|l| l.values == vec![v.clone()]),
            "{} on n3: {l:?}",
            String::from_utf8_lossy(k)
        );
    }

    let r2 = qkv_repair(&repair_url)?;
    figures(&format!("second repair on n{}", repair_on + 1), &r2);
    assert_eq!(n(&r2, "errors"), 0, "{r2:#}");
    assert_eq!(n(&r2, "leaves_differing"), 0, "{r2:#}");
    assert_eq!(n(&r2, "keys_received") + n(&r2, "keys_sent"), 0, "{r2:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_heals_a_stale_replica_without_being_asked() -> Result<()> {
    let mut args = ARGS.to_vec();
    args.extend(["--anti-entropy-interval-secs", "2"]);
    let mut c = start_cluster(3, &args).await?;
    let n1 = Api::new(&c.nodes[0].url());
    let n3 = Api::new(&c.nodes[2].url());
    let mut rng = StdRng::seed_from_u64(rand::random());
    c.nodes[2].kill9()?;
    wait_status(&n1, "n3", "down", Duration::from_secs(30)).await?;
    let missed: Vec<(Vec<u8>, Vec<u8>)> = (0..100)
        .map(|i| {
            (
                format!("sched-{i}").into_bytes(),
                random_value(&mut rng, 64),
            )
        })
        .collect();
    put_all(&n1, &missed, "w=quorum").await?;
    c.nodes[2].restart()?;
    wait_converged(&c, Duration::from_secs(60)).await?;
    let began = std::time::Instant::now();
    let (n3c, items) = (n3.clone(), missed.clone());
    quorumkv_tests::eventually(
        Duration::from_secs(60),
        "a scheduled anti-entropy pass to bring the missed keys to n3",
        || {
            let (n3, items) = (n3c.clone(), items.clone());
            async move {
                for (k, v) in &items {
                    match local(&n3, "default", k).await {
                        Ok(Some(l)) if l.values == vec![v.clone()] => {}
                        _ => return false,
                    }
                }
                true
            }
        },
    )
    .await?;
    let passes = metric(&n3, "qkv_repair_passes_total", &[]).await?
        + metric(&n1, "qkv_repair_passes_total", &[]).await?;
    println!(
        "scheduler: 100 missed keys on n3 {} ms after it rejoined, with no qkv repair and no reads ({passes} passes on n1+n3 so far)",
        began.elapsed().as_millis()
    );
    assert!(passes >= 1.0, "a pass must have run");
    Ok(())
}

fn purged(r: &Value) -> u64 {
    r["purge"]["purged"].as_u64().unwrap_or(u64::MAX)
}

/// How many of `keys` each node stores at all, as (live, tombstone-only,
/// absent) per node.
async fn census(apis: &[Api], keys: &[Vec<u8>]) -> Result<Vec<(u32, u32, u32)>> {
    let mut out = Vec::new();
    for api in apis {
        let (mut live, mut dead, mut absent) = (0, 0, 0);
        for k in keys {
            match local(api, "default", k).await? {
                Some(l) if !l.values.is_empty() => live += 1,
                Some(_) => dead += 1,
                None => absent += 1,
            }
        }
        out.push((live, dead, absent));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_purged_only_past_grace_after_a_full_repair_and_nothing_comes_back()
-> Result<()> {
    const GRACE: Duration = Duration::from_secs(2);
    let mut args = ARGS.to_vec();
    // The grace may not be shorter than the hint window (hints are off).
    args.extend(["--tombstone-grace-secs", "2", "--max-hint-window-secs", "1"]);
    let mut c = start_cluster(3, &args).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let (n1, n2) = (apis[0].clone(), apis[1].clone());
    let mut rng = StdRng::seed_from_u64(rand::random());
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..50)
        .map(|i| (format!("t-{i}").into_bytes(), random_value(&mut rng, 64)))
        .collect();
    put_all(&n1, &items, "w=all").await?;
    let deleted: Vec<Vec<u8>> = items[..20].iter().map(|(k, _)| k.clone()).collect();

    // n3 misses the deletes.
    c.nodes[2].kill9()?;
    wait_status(&n1, "n3", "down", Duration::from_secs(30)).await?;
    for k in &deleted {
        delete_with_context(&n1, k).await?;
    }
    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;

    // Past grace, but n3 is down: no range is fully repaired, nothing goes.
    let r = qkv_repair(&c.nodes[1].url())?;
    figures("repair on n2 with n3 down", &r);
    println!("  purged {}", purged(&r));
    assert_eq!(purged(&r), 0, "{r:#}");
    assert_eq!(n(&r, "ranges_fully_repaired"), 0, "{r:#}");

    c.nodes[2].restart()?;
    wait_converged(&c, Duration::from_secs(60)).await?;
    let before = census(&apis, &deleted).await?;
    println!("before a full repair (live, tombstone, absent) per node: {before:?}");
    assert_eq!(before, vec![(0, 20, 0), (0, 20, 0), (20, 0, 0)]);

    // Deletes within grace stay whatever repairs run.
    let fresh: Vec<Vec<u8>> = items[20..25].iter().map(|(k, _)| k.clone()).collect();
    for k in &fresh {
        delete_with_context(&n2, k).await?;
    }

    // The full repair on n1 first brings the tombstones to n3 (which held
    // the values), then n1 purges its own copies.
    let r = qkv_repair(&c.nodes[0].url())?;
    figures("full repair on n1", &r);
    println!("  purge {}", r["purge"]);
    assert_eq!(n(&r, "errors"), 0, "{r:#}");
    assert!(n(&r, "ranges_fully_repaired") > 0, "{r:#}");
    assert_eq!(purged(&r), 20, "{r:#}");
    assert!(r["purge"]["kept_in_grace"].as_u64() >= Some(5), "{r:#}");
    let after_n1 = census(&apis, &deleted).await?;
    println!("after n1's repair: {after_n1:?}");
    assert_eq!(after_n1, vec![(0, 0, 20), (0, 20, 0), (0, 20, 0)]);

    let r = qkv_repair(&c.nodes[1].url())?;
    figures("full repair on n2", &r);
    println!("  purge {}", r["purge"]);
    // The 5 later deletes may pass their grace period meanwhile.
    assert!((20..=25).contains(&purged(&r)), "{r:#}");
    // n3 stored the 20 tombstones only in n1's repair: on its own clock
    // they are within grace, whatever the deletes' age elsewhere.
    let r = qkv_repair(&c.nodes[2].url())?;
    figures("full repair on n3 right after", &r);
    println!("  purge {}", r["purge"]);
    assert_eq!(purged(&r), 0, "{r:#}");
    assert!(r["purge"]["kept_in_grace"].as_u64() >= Some(20), "{r:#}");
    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
    let r = qkv_repair(&c.nodes[2].url())?;
    figures("full repair on n3 past its grace", &r);
    println!("  purge {}", r["purge"]);
    assert!((20..=25).contains(&purged(&r)), "{r:#}");
    let after_all = census(&apis, &deleted).await?;
    println!("after every node's repair: {after_all:?}");
    assert_eq!(after_all, vec![(0, 0, 20); 3]);
    let fresh_left = census(&apis, &fresh).await?;
    println!("deletes still within grace (live, tombstone, absent): {fresh_left:?}");
    assert!(fresh_left.iter().all(|&(live, _, _)| live == 0));

    // Nothing comes back: reads, another round of repairs, the survivors.
    for round in 0..2 {
        for (i, node) in c.nodes.iter().enumerate() {
            let r = qkv_repair(&node.url())?;
            if round == 1 {
                figures(&format!("later repair on n{}", i + 1), &r);
            }
        }
    }
    assert_eq!(census(&apis, &deleted).await?, vec![(0, 0, 20); 3]);
    for k in &deleted {
        for api in &apis {
            let r = api.get(&key_path("default", k, "r=all")).await?;
            assert_eq!(
                r.status,
                404,
                "{}: {}",
                String::from_utf8_lossy(k),
                body_text(&r)
            );
        }
    }
    for (k, v) in &items[25..] {
        for api in &apis {
            let l = local(api, "default", k).await?;
            assert!(l.is_some_and(|l| l.values == vec![v.clone()]));
        }
    }
    let mut total = 0.0;
    for api in &apis {
        total += metric(api, "qkv_tombstones_purged_total", &[]).await?;
    }
    println!("qkv_tombstones_purged_total over the nodes: {total}");
    assert!(total >= 60.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_with_a_larger_n_is_repaired_over_all_its_replicas_and_divergence_is_dated()
-> Result<()> {
    let mut args = ARGS.to_vec();
    args.extend(["--default-n", "2"]);
    let mut c = start_cluster(3, &args).await?;
    quorumkv_tests::cluster_ops::set_bucket_everywhere(&c, "wide", serde_json::json!({"n": 3}))
        .await?;
    let n1 = Api::new(&c.nodes[0].url());
    let n3 = Api::new(&c.nodes[2].url());
    let mut rng = StdRng::seed_from_u64(rand::random());
    c.nodes[2].kill9()?;
    wait_status(&n1, "n3", "down", Duration::from_secs(30)).await?;
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..60)
        .map(|i| (format!("w-{i}").into_bytes(), random_value(&mut rng, 64)))
        .collect();
    for (k, v) in &items {
        let r = n1.put(&key_path("wide", k, "w=quorum"), v).await?;
        assert_eq!(r.status, 204, "{}", body_text(&r));
    }
    c.nodes[2].restart()?;
    wait_converged(&c, Duration::from_secs(60)).await?;

    let out = Command::new(qkv_bin()?)
        .args([
            "--json",
            "--node",
            &c.nodes[0].url(),
            "repair",
            "--bucket",
            "wide",
        ])
        .output()
        .context("running qkv repair --bucket")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let r = &v[0];
    figures("repair --bucket wide on n1", r);
    println!(
        "  ns {} divergent ranges {}",
        r["ns"],
        r["divergent_ranges"].as_array().map_or(0, Vec::len)
    );
    assert_eq!(r["ns"], serde_json::json!([3]), "{r:#}");
    assert_eq!(r["bucket"], "wide");
    assert!(r["purge"].is_null(), "a bucket pass does not purge");
    assert!(n(r, "keys_sent") >= 60, "{r:#}");
    assert!(
        !r["divergent_ranges"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    );
    let mut on_n3 = 0;
    for (k, v) in &items {
        if local(&n3, "wide", k)
            .await?
            .is_some_and(|l| l.values == vec![v.clone()])
        {
            on_n3 += 1;
        }
    }
    println!("  n3 (third replica at n=3) holds {on_n3} of 60 keys");
    assert_eq!(on_n3, 60);
    let age = metric(&n1, "qkv_repair_divergence_max_age_seconds", &[]).await?;
    println!("  divergence max age after the bucket pass: {age} s");

    // A full pass finds every range equal at both n and clears the dates.
    let r = qkv_repair(&c.nodes[0].url())?;
    figures("full repair on n1", &r);
    println!("  ns {} divergent {}", r["ns"], r["divergent_ranges"]);
    assert_eq!(r["ns"], serde_json::json!([2, 3]), "{r:#}");
    assert_eq!(n(&r, "leaves_differing"), 0, "{r:#}");
    assert_eq!(r["divergent_ranges"], serde_json::json!([]), "{r:#}");
    assert_eq!(
        metric(&n1, "qkv_repair_divergence_max_age_seconds", &[]).await?,
        0.0
    );
    Ok(())
}
