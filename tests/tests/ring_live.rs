//! `qkv ring show` and `qkv ring plan` against a live 3-node cluster of real
//! `qkvd` processes: what the CLI reports is what the nodes gossiped.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};
use quorumkv_tests::http::Api;
use quorumkv_tests::{Cluster, NodeSpec, eventually, qkv_bin};

fn qkv(node: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(qkv_bin()?)
        .args(["--node", node, "--json"])
        .args(args)
        .output()
        .context("running qkv")?;
    anyhow::ensure!(
        out.status.success(),
        "qkv {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_show_and_plan_read_a_live_cluster() -> Result<()> {
    let fast = ["--gossip-interval-ms", "200", "--vnodes", "8"];
    let c = Cluster::start(vec![
        NodeSpec::new("n1").args(fast),
        NodeSpec::new("n2").args(fast),
        NodeSpec::new("n3").args(fast),
    ])?;
    let api = Api::new(&c.node().url());
    eventually(
        Duration::from_secs(30),
        "3 normal members with tokens",
        || {
            let api = api.clone();
            async move {
                let Ok(r) = api.get("/cluster/ring").await else {
                    return false;
                };
                r.json()["ownership"].as_object().map(|o| o.len()) == Some(3)
            }
        },
    )
    .await?;
    let url = c.node().url();
    let show = qkv(&url, &["ring", "show", "--rf", "3"])?;
    let text = show.to_string();
    for id in ["n1", "n2", "n3"] {
        assert!(text.contains(id), "{id} missing from {text}");
    }
    // With 3 nodes and rf 3 every node holds a replica of everything.
    let nodes = show["nodes"].as_array().context("nodes")?;
    assert_eq!(nodes.len(), 3, "{show}");
    for n in nodes {
        let repl = n["replicated"].as_f64().context("replicated")?;
        assert!((repl - 1.0).abs() < 1e-9, "{n}");
        assert_eq!(n["vnodes"], 8, "{n}");
    }
    let plan = qkv(
        &url,
        &["ring", "plan", "--add", "n4", "--rf", "3", "--dry-run"],
    )?;
    let moved = plan["moved_fraction"].as_f64().context("moved_fraction")?;
    // A fourth node takes about a quarter of all replica data.
    assert!((0.15..0.35).contains(&moved), "moved {moved}: {plan}");
    for m in plan["moves"].as_array().context("moves")? {
        assert_eq!(m["gaining"], serde_json::json!(["n4"]), "{m}");
    }
    Ok(())
}
