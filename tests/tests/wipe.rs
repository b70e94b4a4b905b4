//! A node whose data directory is wiped and that restarts under the same
//! id, on real `qkvd` processes with hinted handoff off (so that repair,
//! not hints, is what heals it):
//!
//! * it takes back its old tokens (its place on the ring) instead of
//!   choosing new ones;
//! * it replaces its lost data on its own: it announces `replacing` and
//!   repairs every range with every other replica; once it is done, every
//!   key holds the right value on it, and keys deleted before the wipe are
//!   not live anywhere;
//! * a write coordinated by it after the restart is not lost, even to a key
//!   whose older versions it had itself minted before the wipe (its new
//!   dots belong to a new incarnation, so peers cannot mistake them for old
//!   ones they have seen overwritten).
//!
//! Figures are printed; run with `--nocapture` to see them.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use quorumkv_tests::cluster_ops::{
    body_text, field as n, key_path, local, member, put_all, qkv_repair, random_value,
    start_cluster, wait_converged,
};
use quorumkv_tests::http::Api;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

const ARGS: [&str; 4] = ["--hinted-handoff", "off", "--gossip-interval-ms", "200"];

type Items = Vec<(Vec<u8>, Vec<u8>)>;

fn items(prefix: &str, count: usize, rng: &mut StdRng) -> Items {
    (0..count)
        .map(|i| (format!("{prefix}-{i}").into_bytes(), random_value(rng, 64)))
        .collect()
}

/// Reads `key` through `api` (r=all) for its context, then PUTs `value`
/// (or deletes, when `None`) with it, w=all.
async fn replace(api: &Api, key: &[u8], value: Option<&[u8]>) -> Result<()> {
    let r = api.get(&key_path("default", key, "r=all")).await?;
    if r.status != 200 {
        bail!("read before write answered {}: {}", r.status, body_text(&r));
    }
    let ctx = r.context().context("read answered no context")?;
    let headers = [("x-causal-context", ctx.as_str())];
    let path = key_path("default", key, "w=all");
    let r = match value {
        Some(v) => api.put_with(&path, &headers, v).await?,
        None => api.delete_with(&path, &headers).await?,
    };
    if r.status != 204 {
        bail!("write answered {}: {}", r.status, body_text(&r));
    }
    Ok(())
}

async fn tokens_of(api: &Api, id: &str) -> Result<Value> {
    Ok(member(api, id)
        .await
        .with_context(|| format!("{} does not list {id}", api.base))?["tokens"]
        .clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_takes_back_its_place_and_repair_restores_it_without_resurrecting_deletes()
-> Result<()> {
    let mut c = start_cluster(3, &ARGS).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let (n1, n2, n3) = (&apis[0], &apis[1], &apis[2]);
    let mut rng = StdRng::seed_from_u64(rand::random());

    // 300 keys, 30 of them deleted, all while every node is up.
    let first = items("first", 300, &mut rng);
    put_all(n1, &first, "w=all").await?;
    let deleted: Vec<Vec<u8>> = first[..30].iter().map(|(k, _)| k.clone()).collect();
    for k in &deleted {
        replace(n1, k, None).await?;
    }
    // More writes: 100 new keys through n2, and 20 keys rewritten twice
    // through n3, so that n3's old incarnation minted dots 1 and 2 of
    // them and every replica has seen dot 1 overwritten.
    let more = items("more", 100, &mut rng);
    put_all(n2, &more, "w=all").await?;
    let mut mine = items("mine", 20, &mut rng);
    put_all(n3, &mine, "w=all").await?;
    for (k, v) in &mut mine {
        *v = random_value(&mut rng, 64);
        replace(n3, k, Some(v)).await?;
    }
    let tokens_before = tokens_of(n1, "n3").await?;

    // Wipe n3 and restart it under the same id.
    c.nodes[2].kill9()?;
    let dir = c.nodes[2].data_dir.clone();
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    let began = Instant::now();
    c.nodes[2].restart()?;
    wait_converged(&c, Duration::from_secs(60)).await?;
    println!(
        "wiped n3 back up and converged in {} ms",
        began.elapsed().as_millis()
    );
    let tokens_after = tokens_of(n1, "n3").await?;
    assert_eq!(
        tokens_after, tokens_before,
        "n3 must take back its tokens, not choose new ones"
    );
    assert_eq!(tokens_of(n3, "n3").await?, tokens_before);

    // It replaces its data on its own, then counts again.
    let replacing = Instant::now();
    quorumkv_tests::eventually(Duration::from_secs(60), "n3 done replacing", || {
        let n1 = n1.clone();
        async move {
            member(&n1, "n3")
                .await
                .is_some_and(|m| m["replacing"].is_null())
        }
    })
    .await?;
    println!(
        "n3 replaced its data in {} ms after it converged",
        replacing.elapsed().as_millis()
    );

    // Every surviving key holds its value on n3.
    let mut wrong = Vec::new();
    for (k, v) in first[30..].iter().chain(&more).chain(&mine) {
        match local(n3, "default", k).await? {
            Some(l) if l.values == vec![v.clone()] && !l.tombstone => {}
            other => wrong.push((String::from_utf8_lossy(k).into_owned(), other)),
        }
    }
    println!(
        "after replacing: {} of {} surviving keys wrong on n3",
        wrong.len(),
        270 + 100 + 20
    );
    assert!(wrong.is_empty(), "e.g. {:?}", wrong.first());

    // New writes through n3: to keys its old incarnation wrote (without a
    // context: n3 knows nothing of them now) and to new keys.
    let mut after: Items = mine[..10]
        .iter()
        .map(|(k, _)| (k.clone(), random_value(&mut rng, 64)))
        .collect();
    after.extend(items("after", 20, &mut rng));
    put_all(n3, &after, "w=quorum").await?;

    let r = qkv_repair(&c.nodes[2].url())?;
    println!(
        "repair on n3: {} ranges, {} compared, {} differing, {} leaves differing; {} keys received ({} B), \
         {} keys sent ({} B); {} errors; {} ms",
        n(&r, "ranges"),
        n(&r, "ranges_compared"),
        n(&r, "ranges_differing"),
        n(&r, "leaves_differing"),
        n(&r, "keys_received"),
        n(&r, "bytes_received"),
        n(&r, "keys_sent"),
        n(&r, "bytes_sent"),
        n(&r, "errors"),
        n(&r, "duration_ms"),
    );
    assert_eq!(n(&r, "errors"), 0, "{r:#}");
    let rewritten: Vec<&[u8]> = after[..10].iter().map(|(k, _)| k.as_slice()).collect();

    // The deleted keys are live nowhere, and read as 404 through any node.
    let mut resurrected = 0;
    for k in &deleted {
        for api in &apis {
            if local(api, "default", k)
                .await?
                .is_some_and(|l| !l.values.is_empty())
            {
                resurrected += 1;
            }
            let r = api.get(&key_path("default", k, "r=all")).await?;
            if r.status != 404 {
                resurrected += 1;
            }
        }
    }
    println!("deleted before the wipe and live again afterwards: {resurrected}");
    assert_eq!(resurrected, 0);

    // The writes made through the wiped node are on every replica.
    let mut lost = Vec::new();
    for (k, v) in &after {
        for (i, api) in apis.iter().enumerate() {
            let l = local(api, "default", k).await?;
            let ok = l.as_ref().is_some_and(|l| l.values.contains(v));
            if !ok {
                lost.push(format!(
                    "{} on n{}: {l:?}",
                    String::from_utf8_lossy(k),
                    i + 1
                ));
            }
        }
    }
    let siblings = {
        let mut s = 0;
        for k in &rewritten {
            if local(n1, "default", k)
                .await?
                .is_some_and(|l| l.values.len() == 2)
            {
                s += 1;
            }
        }
        s
    };
    println!(
        "writes through n3 after the wipe: {} of {} missing from some replica; \
         {siblings} of 10 rewritten keys hold old and new as siblings (no context was sent)",
        lost.len(),
        after.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(siblings, 10);
    Ok(())
}
