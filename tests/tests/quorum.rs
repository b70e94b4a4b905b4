//! Quorum replication on real `qkvd` processes: every node coordinates any
//! key; with R + W > N a read through another node sees the write; writes
//! through two coordinators without context become siblings that a write
//! with context resolves on every replica; `?trace=true` names the replicas
//! asked; and too few live replicas is a 503 with nothing written.
//!
//! Figures are printed; run with `--nocapture` to see them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use quorumkv_tests::cluster_ops::{
    body_text, concurrently, key_path, local, locate, random_keys, random_value, start_cluster,
    trace_names, wait_status,
};
use quorumkv_tests::eventually;
use quorumkv_tests::http::{Api, Resp};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

const IN_FLIGHT: usize = 24;

fn seeded_rng(test: &str) -> StdRng {
    let seed: u64 = std::env::var("QKV_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{test}: random seed {seed} (set QKV_TEST_SEED to repeat)");
    StdRng::seed_from_u64(seed)
}

/// Writes `key` = `value` through `writer` with `w`, then reads it through
/// `reader` with `r`; `Err` describes the first thing that went wrong.
async fn write_then_read(
    writer: &Api,
    reader: &Api,
    key: &[u8],
    value: &[u8],
    w: &str,
    r: &str,
) -> std::result::Result<(), String> {
    let put = writer
        .put(&key_path("default", key, &format!("w={w}")), value)
        .await
        .map_err(|e| format!("PUT w={w}: {e}"))?;
    if put.status != 204 {
        return Err(format!("PUT w={w}: {} {}", put.status, body_text(&put)));
    }
    let get = reader
        .get(&key_path("default", key, &format!("r={r}")))
        .await
        .map_err(|e| format!("GET r={r}: {e}"))?;
    if get.status != 200 {
        return Err(format!("GET r={r}: {} {}", get.status, body_text(&get)));
    }
    if get.body != value {
        return Err(format!(
            "GET r={r}: 200 with {} bytes that are not the value written",
            get.body.len()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_plus_w_over_n_reads_every_write_through_another_coordinator() -> Result<()> {
    let c = start_cluster(3, &[]).await?;
    let mut rng = seeded_rng("r+w>n");
    let mut taken = HashSet::new();
    let mut all_failures = Vec::new();
    for (i, (r, w)) in [("2", "2"), ("1", "3"), ("3", "1")].into_iter().enumerate() {
        let writer = Api::new(&c.nodes[i].url());
        let reader = Api::new(&c.nodes[(i + 1) % 3].url());
        let items: Vec<(Vec<u8>, Vec<u8>)> = random_keys(&mut rng, 1000, &mut taken)
            .into_iter()
            .map(|k| {
                let v = random_value(&mut rng, 100);
                (k, v)
            })
            .collect();
        let began = Instant::now();
        let results = concurrently(items.clone(), IN_FLIGHT, move |(k, v)| {
            let (writer, reader) = (writer.clone(), reader.clone());
            async move { write_then_read(&writer, &reader, &k, &v, w, r).await }
        })
        .await;
        let failures: Vec<(String, String)> = items
            .iter()
            .zip(results)
            .filter_map(|((k, _), res)| res.err().map(|e| (String::from_utf8_lossy(k).into(), e)))
            .collect();
        println!(
            "r={r} w={w}: written through n{} and read through n{}: keys 1000, ok {}, failures {} ({:.1} s)",
            i + 1,
            (i + 1) % 3 + 1,
            1000 - failures.len(),
            failures.len(),
            began.elapsed().as_secs_f64()
        );
        for (k, e) in failures.iter().take(5) {
            println!("  failure: key {k:?}: {e}");
        }
        all_failures.extend(failures.into_iter().map(|f| (r, w, f)));
    }
    assert!(
        all_failures.is_empty(),
        "{} keys failed; first: {:?}",
        all_failures.len(),
        all_failures.first()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_every_coordinator_writes_and_every_other_node_reads() -> Result<()> {
    let c = start_cluster(5, &[]).await?;
    let mut rng = seeded_rng("5 nodes");
    let mut taken = HashSet::new();
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    // 200 keys per coordinator.
    let mut written: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..apis.len() {
        for k in random_keys(&mut rng, 200, &mut taken) {
            let v = random_value(&mut rng, 100);
            written.push((i, k, v));
        }
    }
    let began = Instant::now();
    let a = apis.clone();
    let puts = concurrently(written.clone(), IN_FLIGHT, move |(i, k, v)| {
        let api = a[i].clone();
        async move {
            match api.put(&key_path("default", &k, "w=quorum"), &v).await {
                Ok(r) if r.status == 204 => Ok(()),
                Ok(r) => Err(format!("{} {}", r.status, body_text(&r))),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    let put_failures: Vec<(String, &String)> = written
        .iter()
        .zip(&puts)
        .filter_map(|((_, k, _), r)| {
            r.as_ref()
                .err()
                .map(|e| (String::from_utf8_lossy(k).into_owned(), e))
        })
        .collect();
    println!(
        "5 nodes, n=3, w=quorum: {} writes (200 per coordinator), failures {} ({:.1} s)",
        written.len(),
        put_failures.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        put_failures.is_empty(),
        "failed writes, first: {:?}",
        put_failures.first()
    );

    // Each key read through each of the 4 other nodes.
    let reads: Vec<(usize, Vec<u8>, Vec<u8>)> = written
        .iter()
        .flat_map(|(i, k, v)| {
            (0..apis.len())
                .filter(move |j| j != i)
                .map(move |j| (j, k.clone(), v.clone()))
        })
        .collect();
    let began = Instant::now();
    let a = apis.clone();
    let gets = concurrently(reads.clone(), IN_FLIGHT, move |(j, k, v)| {
        let api = a[j].clone();
        async move {
            match api.get(&key_path("default", &k, "r=quorum")).await {
                Ok(r) if r.status == 200 && r.body == v => Ok(()),
                Ok(r) if r.status == 200 => Err("200 with another value".to_string()),
                Ok(r) => Err(format!("{} {}", r.status, body_text(&r))),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    let mismatches: Vec<(usize, String)> = reads
        .iter()
        .zip(&gets)
        .filter_map(|((j, _, _), r)| r.as_ref().err().map(|e| (*j + 1, e.clone())))
        .collect();
    println!(
        "5 nodes, r=quorum: {} reads (each key through the 4 other nodes), match {}, mismatches {} ({:.1} s)",
        reads.len(),
        reads.len() - mismatches.len(),
        mismatches.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        mismatches.is_empty(),
        "reads that did not return the write, first (through n{:?})",
        mismatches.first()
    );
    Ok(())
}

fn sorted_siblings(body: &Value) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = body["siblings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["value_base64"].as_str())
                .filter_map(|s| B64.decode(s).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_two_coordinators_become_siblings_and_a_context_write_resolves_them_everywhere()
-> Result<()> {
    let c = start_cluster(3, &[]).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let key = "shared-doc".as_bytes();
    let path = key_path("default", key, "");
    let (a, b) = tokio::join!(
        apis[0].put(&path, b"from alice via n1"),
        apis[1].put(&path, b"from bob via n2")
    );
    let (a, b) = (a?, b?);
    assert_eq!(
        (a.status, b.status),
        (204, 204),
        "{} / {}",
        body_text(&a),
        body_text(&b)
    );

    let r = apis[2].get(&path).await?;
    assert_eq!(r.status, 300, "two concurrent writes: {}", body_text(&r));
    let body = r.json();
    assert_eq!(
        sorted_siblings(&body),
        vec![b"from alice via n1".to_vec(), b"from bob via n2".to_vec()],
        "{body}"
    );
    let ctx = body["context"]
        .as_str()
        .context("300 without context")?
        .to_string();
    println!("siblings: GET through n3 answered 300 with 2 siblings");

    let r = apis[2]
        .put_with(
            &key_path("default", key, "w=all"),
            &[("x-causal-context", &ctx)],
            b"merged",
        )
        .await?;
    assert_eq!(r.status, 204, "{}", body_text(&r));
    for api in &apis {
        let r = api.get(&path).await?;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"merged"[..]),
            "GET through {}: {}",
            api.base,
            body_text(&r)
        );
    }
    let replicas = locate(&apis[0], "default", key).await?.replicas;
    assert_eq!(replicas.len(), 3, "n=3 on 3 nodes: {replicas:?}");
    let began = Instant::now();
    for id in &replicas {
        let node = c
            .nodes
            .iter()
            .find(|n| &n.spec.id == id)
            .context("replica not in the cluster")?;
        let api = Api::new(&node.url());
        let result = eventually(
            Duration::from_secs(5),
            &format!("{id} to hold only \"merged\""),
            || {
                let api = api.clone();
                async move {
                    local(&api, "default", key)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|l| l.values == [b"merged".to_vec()] && !l.tombstone)
                }
            },
        )
        .await;
        if let Err(e) = result {
            let stored = local(&api, "default", key).await;
            anyhow::bail!("{e}; {id} stores {stored:?}");
        }
    }
    println!(
        "siblings: resolved by a w=all write with context; all 3 replicas {replicas:?} hold the one value ({} ms after the write)",
        began.elapsed().as_millis()
    );
    Ok(())
}

/// The `X-Trace` header of a `?trace=true` response and the key's
/// replicas it shows answering, printed with what the trace names.
fn replicas_answering(
    resp: &Resp,
    what: &str,
    coordinator: &str,
    ids: &[String],
    replicas: &[String],
) -> Result<(String, Vec<String>)> {
    let header = resp
        .header("x-trace")
        .with_context(|| format!("{what} ?trace=true without X-Trace"))?;
    let t = trace_names(&header, coordinator, ids)?;
    let answered: Vec<String> = replicas
        .iter()
        .filter(|r| t.answered.contains(*r))
        .cloned()
        .collect();
    println!(
        "trace: {what} X-Trace names {:?}, replicas answering {answered:?}\n  {header}",
        t.named
    );
    Ok((header, answered))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_names_the_replicas_asked_through_a_non_replica_coordinator() -> Result<()> {
    let c = start_cluster(4, &[]).await?;
    let ids: Vec<String> = c.nodes.iter().map(|n| n.spec.id.clone()).collect();
    let key = b"traced key";
    let loc = locate(&Api::new(&c.nodes[0].url()), "default", key).await?;
    assert_eq!(loc.replicas.len(), 3, "{loc:?}");
    let outsider = c
        .nodes
        .iter()
        .find(|n| !loc.replicas.contains(&n.spec.id))
        .context("a node that is not a replica")?;
    println!(
        "trace: key replicas {:?}, coordinator {}",
        loc.replicas, outsider.spec.id
    );
    let api = Api::new(&outsider.url());

    let put = api
        .put(
            &key_path("default", key, "w=quorum&trace=true"),
            b"traced value",
        )
        .await?;
    assert_eq!(put.status, 204, "{}", body_text(&put));
    let (header, answered) =
        replicas_answering(&put, "PUT", &outsider.spec.id, &ids, &loc.replicas)?;
    assert!(
        answered.len() >= 2,
        "a w=quorum PUT's trace shows at least 2 replicas answering: {header}"
    );

    let get = api
        .get(&key_path("default", key, "r=quorum&trace=true"))
        .await?;
    assert_eq!(
        (get.status, get.body.as_slice()),
        (200, &b"traced value"[..])
    );
    let (header, answered) =
        replicas_answering(&get, "GET", &outsider.spec.id, &ids, &loc.replicas)?;
    assert!(
        answered.len() >= 2,
        "an r=quorum GET's trace shows at least 2 replicas answering: {header}"
    );

    // Without the parameter there is no trace.
    let plain = api.get(&key_path("default", key, "")).await?;
    assert_eq!(plain.status, 200);
    assert!(
        plain.header("x-trace").is_none(),
        "X-Trace without ?trace=true"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_live_replicas_is_503_with_nothing_written() -> Result<()> {
    let mut c = start_cluster(3, &["--gossip-interval-ms", "200"]).await?;
    let api = Api::new(&c.nodes[0].url());
    c.nodes[1].kill9()?;
    c.nodes[2].kill9()?;
    let killed = Instant::now();
    for id in ["n2", "n3"] {
        wait_status(&api, id, "down", Duration::from_secs(30)).await?;
    }
    println!(
        "503: n1 sees n2 and n3 down {:.1} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    for (i, w) in ["all", "quorum", "2"].into_iter().enumerate() {
        let key = format!("never-written-{i}");
        let began = Instant::now();
        let r = api
            .put(
                &key_path("default", key.as_bytes(), &format!("w={w}")),
                b"v",
            )
            .await?;
        let took = began.elapsed();
        assert_eq!(r.status, 503, "w={w}: {}", body_text(&r));
        let body = r.json();
        println!("503: w={w} answered in {} ms: {body}", took.as_millis());
        assert_eq!(body["error"], "unavailable", "{body}");
        let required = if w == "all" { 3 } else { 2 };
        assert_eq!(body["required"], required, "{body}");
        assert_eq!(body["alive"], 1, "{body}");
        let failed: Vec<&str> = body["failed"]
            .as_array()
            .context("no failed list")?
            .iter()
            .map(|f| {
                assert!(f["reason"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
                f["node"].as_str().unwrap_or_default()
            })
            .collect();
        let mut failed = failed;
        failed.sort_unstable();
        assert_eq!(failed, ["n2", "n3"], "{body}");
        assert!(
            took < Duration::from_secs(1),
            "refused at once, not after a timeout"
        );
        // Nothing written on the one live replica.
        assert_eq!(
            local(&api, "default", key.as_bytes()).await?,
            None,
            "w={w} wrote {key}"
        );
        let g = api
            .get(&key_path("default", key.as_bytes(), "r=one"))
            .await?;
        assert_eq!(g.status, 404, "{}", body_text(&g));
    }
    // Reads that need two replicas are refused the same way.
    let r = api
        .get(&key_path("default", b"never-written-0", "r=quorum"))
        .await?;
    assert_eq!(r.status, 503, "{}", body_text(&r));
    assert_eq!(r.error_code(), "unavailable");
    Ok(())
}
