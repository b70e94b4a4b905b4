//! `GET /cluster/ranges` on real `qkvd` processes: the per-range keys and
//! bytes each node reports add up to what it stores (the keys written, and
//! its `qkv_bytes_stored` metric), the ranges are the ring's, and the route
//! needs the admin token when tokens are configured.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use quorumkv_tests::cluster_ops::{concurrently, key_path, metric, start_cluster};
use quorumkv_tests::http::Api;
use quorumkv_tests::{Cluster, NodeSpec, eventually};
use serde_json::Value;

/// Keys written in the three-node test.
const K: usize = 600;

/// `(keys, bytes)` summed over a `/cluster/ranges` answer.
fn sums(v: &Value) -> (u64, u64) {
    let ranges = v["ranges"].as_array().cloned().unwrap_or_default();
    ranges.iter().fold((0, 0), |(k, b), r| {
        (
            k + r["keys"].as_u64().unwrap_or(0),
            b + r["bytes"].as_u64().unwrap_or(0),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_nodes_ranges_add_up_to_what_it_stores() -> Result<()> {
    let c = start_cluster(
        3,
        &[
            "--gossip-interval-ms",
            "200",
            "--vnodes",
            "8",
            "--default-n",
            "3",
        ],
    )
    .await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let first = apis[0].clone();
    let statuses = concurrently((0..K).collect(), 16, move |i| {
        let api = first.clone();
        async move {
            let path = key_path("ranges", format!("key-{i}").as_bytes(), "w=all");
            let body = format!("value-{i}-{}", "x".repeat(i % 50));
            api.put(&path, body.as_bytes()).await.map(|r| r.status)
        }
    })
    .await;
    for (i, s) in statuses.into_iter().enumerate() {
        let s = s?;
        ensure!(s == 204, "PUT key-{i} answered {s}");
    }
    let ring = apis[0].get("/cluster/ring").await?.json();
    let tokens: BTreeSet<u64> = ring["tokens"]
        .as_array()
        .context("ring tokens")?
        .iter()
        .filter_map(|t| t["token"].as_u64())
        .collect();
    for (api, node) in apis.iter().zip(&c.nodes) {
        // w=all acknowledged every write on every replica; the metric is
        // updated as writes apply, so both are final now.
        let r = api.get("/cluster/ranges").await?;
        ensure!(r.status == 200, "/cluster/ranges answered {}", r.status);
        let v = r.json();
        assert_eq!(v["node"], node.spec.id.as_str(), "{v}");
        let (keys, bytes) = sums(&v);
        let stored = metric(api, "qkv_bytes_stored", &[]).await? as u64;
        println!(
            "{}: {} ranges, {keys} keys, {bytes} bytes (qkv_bytes_stored {stored})",
            node.spec.id,
            v["ranges"].as_array().map_or(0, Vec::len)
        );
        assert_eq!(keys, K as u64, "{}: keys over its ranges", node.spec.id);
        assert_eq!(bytes, stored, "{}: bytes vs the metric", node.spec.id);
        // n = 3 on 3 nodes: every node replicates every range of the ring,
        // and the ranges are exactly the ring's (ends are its tokens).
        let ends: BTreeSet<u64> = v["ranges"]
            .as_array()
            .context("ranges")?
            .iter()
            .filter_map(|r| r["end"].as_u64())
            .collect();
        assert_eq!(ends, tokens, "{}: range ends vs ring tokens", node.spec.id);
    }
    Ok(())
}

#[tokio::test]
async fn ranges_need_the_admin_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let client = dir.path().join("client");
    let admin = dir.path().join("admin");
    std::fs::write(&client, "c-token\n")?;
    std::fs::write(&admin, "a-token\n")?;
    let (client_s, admin_s) = (client.display().to_string(), admin.display().to_string());
    let c = Cluster::start(vec![NodeSpec::new("n1").args([
        "--client-tokens-file",
        &client_s,
        "--admin-token-file",
        &admin_s,
    ])])?;
    let api = Api::new(&c.node().url());
    let admin_h = [("authorization", "Bearer a-token")];
    // A single node takes its tokens at start; wait until it has a ring.
    eventually(Duration::from_secs(20), "a ring with tokens", || {
        let api = api.clone();
        async move {
            api.get_with("/cluster/ring", &admin_h)
                .await
                .is_ok_and(|r| r.json()["tokens"].as_array().is_some_and(|t| !t.is_empty()))
        }
    })
    .await?;
    let client_h = [("authorization", "Bearer c-token")];
    let r = api.get_with("/cluster/ranges", &client_h).await?;
    assert_eq!(
        r.status,
        401,
        "client token: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["error"], "unauthorized");
    let r = api.get_with("/cluster/ranges", &admin_h).await?;
    assert_eq!(r.status, 200, "admin token");
    let v = r.json();
    println!(
        "single node: {} ranges listed",
        v["ranges"].as_array().map_or(0, Vec::len)
    );
    assert_eq!(v["node"], "n1");
    assert!(
        v["ranges"].as_array().is_some_and(|r| !r.is_empty()),
        "a node replicates its own ranges: {v}"
    );
    Ok(())
}
