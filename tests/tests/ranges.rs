//! `GET /cluster/ranges` on real `qkvd` processes: the per-range keys and
//! bytes each node reports add up to what it stores (the keys written, and
//! its `qkv_bytes_stored` metric), the ranges are the ring's, and the route
//! needs the admin token when tokens are configured. And what it is for:
//! `qkv ring plan --add` against a live cluster with a standby node
//! estimates the keys to move from these reports, close to the exact count
//! (every key's token, from `/cluster/locate`, against the plan's moving
//! ranges), and stages the join.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use quorumkv_tests::cluster_ops::{concurrently, key_path, metric, start_cluster};
use quorumkv_tests::http::Api;
use quorumkv_tests::{Cluster, NodeSpec, eventually, qkv_bin};
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
    let (client_s, admin_s) = quorumkv_tests::token_files(dir.path())?;
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

/// Keys written in the plan test: enough that prorating a split range's
/// count by token width is within a few percent of the exact count.
const PLAN_KEYS: usize = 3000;

/// `qkv --node URL --json ARGS`, parsed.
fn qkv_json(url: &str, args: &[&str]) -> Result<Value> {
    let out = std::process::Command::new(qkv_bin()?)
        .args(["--node", url, "--json"])
        .args(args)
        .env_remove("QKV_PLAN_FILE")
        .output()
        .context("running qkv")?;
    ensure!(
        out.status.success(),
        "qkv {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Whether `t` lies in the JSON range `{"start","end"}` = `(start, end]`.
fn in_range(r: &Value, t: u64) -> bool {
    let (Some(s), Some(e)) = (r["start"].as_u64(), r["end"].as_u64()) else {
        return false;
    };
    if s < e {
        s < t && t <= e
    } else {
        t > s || t <= e
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_plan_estimates_the_keys_that_move_and_stages_the_join() -> Result<()> {
    let fast = ["--gossip-interval-ms", "200", "--vnodes", "8"];
    let mut c = start_cluster(3, &fast).await?;
    let seed = vec![c.node().listen];
    c.add(
        NodeSpec::new("n4").args(fast.iter().copied().chain(["--join", "manual"])),
        seed,
    )?;
    let api = Api::new(&c.node().url());
    eventually(Duration::from_secs(30), "n1 sees n4 up and standby", || {
        let api = api.clone();
        async move {
            quorumkv_tests::cluster_ops::member(&api, "n4")
                .await
                .is_some_and(|m| m["status"] == "up" && m["state"] == "standby")
        }
    })
    .await?;
    let keys: Vec<String> = (0..PLAN_KEYS).map(|i| format!("plan-{i}")).collect();
    let writer = api.clone();
    let statuses = concurrently(keys.clone(), 16, move |k| {
        let api = writer.clone();
        async move {
            let path = key_path("plan", k.as_bytes(), "w=all");
            api.put(&path, b"some value of a few bytes")
                .await
                .map(|r| r.status)
        }
    })
    .await;
    for s in statuses {
        let s = s?;
        ensure!(s == 204, "a PUT answered {s}");
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("plan.json");
    let file_s = file.display().to_string();
    let url = c.node().url();
    let plan = qkv_json(
        &url,
        &["ring", "plan", "--add", "n4", "--plan-file", &file_s],
    )?;
    let estimated = plan["estimate"]["total"]["keys"]
        .as_u64()
        .context("the plan has a key estimate")?;
    let est_bytes = plan["estimate"]["total"]["bytes"].as_u64().unwrap_or(0);
    // Exact: every key moves once per replica it gains.
    let locator = api.clone();
    let tokens = concurrently(keys, 16, move |k| {
        let api = locator.clone();
        async move {
            let r = api.get(&format!("/cluster/locate/{k}?bucket=plan")).await?;
            r.json()["token"].as_u64().context("locate token")
        }
    })
    .await;
    let moves = plan["moves"].as_array().context("moves")?;
    let mut exact = 0u64;
    for t in tokens {
        let t = t?;
        if let Some(m) = moves.iter().find(|m| in_range(&m["range"], t)) {
            exact += m["transfers"].as_array().map_or(0, |x| x.len() as u64);
        }
    }
    let error = (estimated as f64 - exact as f64) / exact as f64;
    println!(
        "plan --add n4 over {PLAN_KEYS} keys: estimated {estimated} keys ({est_bytes} bytes), exact {exact} keys, error {:+.2}%",
        error * 100.0
    );
    ensure!(exact > 0, "adding a node to 3 moves keys");
    ensure!(error.abs() < 0.10, "estimate {estimated} vs exact {exact}");
    // Staged: a join of n4 with the tokens the plan allocated, against
    // this ring; `qkv ring plan` alone shows it as current.
    assert_eq!(plan["staged"]["kind"], "join", "{}", plan["staged"]);
    let staged: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    let n4 = plan["changes"]
        .as_array()
        .and_then(|c| c.iter().find(|x| x["node"] == "n4"))
        .context("n4 in the plan's changes")?;
    assert_eq!(staged["tokens"], n4["added"]);
    assert_eq!(staged["tokens"].as_array().map(Vec::len), Some(8));
    let shown = qkv_json(&url, &["ring", "plan", "--plan-file", &file_s])?;
    assert_eq!(shown["ring_unchanged"], true, "{shown}");
    Ok(())
}
