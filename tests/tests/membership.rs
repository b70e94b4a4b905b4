//! Gossip membership on real `qkvd` processes: convergence, conviction of
//! a killed node, its return with a higher generation, and the refusal of
//! nodes from another cluster or with the wrong secret.
//!
//! Figures (convergence time, time to conviction) are printed; run with
//! `--nocapture` to see them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use quorumkv_tests::http::Api;
use quorumkv_tests::{Cluster, NodeProc, NodeSpec, eventually};
use serde_json::Value;

/// `/cluster/members` of one node, or `None` if it does not answer.
async fn members(node: &NodeProc) -> Option<Vec<Value>> {
    let r = Api::new(&node.url()).get("/cluster/members").await.ok()?;
    if r.status != 200 {
        return None;
    }
    r.json().as_array().cloned()
}

/// What must be identical across nodes: id → (state, tokens, generation).
type Summary = BTreeMap<String, (String, Value, u64)>;

fn summary(ms: &[Value]) -> Summary {
    ms.iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_string(),
                (
                    m["state"].as_str().unwrap_or_default().to_string(),
                    m["tokens"].clone(),
                    m["generation"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn status_of<'a>(ms: &'a [Value], id: &str) -> Option<&'a Value> {
    ms.iter().find(|m| m["id"] == id)
}

/// Whether every node in `nodes` sees exactly `ids`, all up and normal with
/// tokens, and all see the same tokens and generations.
async fn converged(nodes: &[NodeProc], ids: &[&str]) -> bool {
    let mut first: Option<Summary> = None;
    for n in nodes {
        let Some(ms) = members(n).await else {
            return false;
        };
        let ok = ms.len() == ids.len()
            && ids.iter().all(|id| {
                status_of(&ms, id).is_some_and(|m| {
                    m["status"] == "up"
                        && m["state"] == "normal"
                        && m["tokens"].as_array().is_some_and(|t| !t.is_empty())
                })
            });
        if !ok {
            return false;
        }
        let s = summary(&ms);
        match &first {
            None => first = Some(s),
            Some(f) if *f != s => return false,
            Some(_) => {}
        }
    }
    true
}

#[tokio::test]
async fn five_nodes_converge_convict_a_killed_one_and_see_it_return() -> Result<()> {
    // Default gossip settings: 1 s rounds, phi threshold 8.
    let ids = ["n1", "n2", "n3", "n4", "n5"];
    let began = Instant::now();
    let mut c = Cluster::start(
        ids.iter()
            .map(|id| NodeSpec::new(id).args(["--vnodes", "8"]))
            .collect(),
    )?;
    let started = Instant::now();
    eventually(Duration::from_secs(30), "5 nodes converge", || {
        converged(&c.nodes, &ids)
    })
    .await?;
    println!(
        "5 nodes: identical member lists {:.2} s after the last node started ({:.2} s after the first)",
        started.elapsed().as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    // Every node chose distinct tokens against the ring it learned.
    let ms = members(&c.nodes[0]).await.unwrap_or_default();
    let mut all: Vec<u64> = ms
        .iter()
        .flat_map(|m| m["tokens"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_u64())
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 5 * 8, "40 distinct tokens");
    let ring = Api::new(&c.nodes[4].url())
        .get("/cluster/ring")
        .await?
        .json();
    assert_eq!(ring["tokens"].as_array().map(Vec::len), Some(40), "{ring}");

    // SIGKILL n5: every other node convicts it. Exponential phi convicts
    // after threshold · ln 10 · mean of silence: 18.4 s at the 1 s floor of
    // the mean, 36.8 s at its 2 s ceiling (relayed heartbeats reach an
    // observer every 1–2 s in a 5-node cluster). Silence counts from the
    // last heartbeat the observer received (up to ~2 s before the kill),
    // and liveness is checked once per round. Bound asserted: 45 s.
    let old = status_of(&ms, "n5").cloned().unwrap_or_default();
    c.nodes[4].kill9()?;
    let killed = Instant::now();
    let mut convicted_at: BTreeMap<String, f64> = BTreeMap::new();
    let deadline = killed + Duration::from_secs(45);
    while convicted_at.len() < 4 {
        if Instant::now() > deadline {
            bail!("not every node convicted n5 within 45 s: {convicted_at:?}");
        }
        for n in &c.nodes[..4] {
            if convicted_at.contains_key(&n.spec.id) {
                continue;
            }
            if let Some(ms) = members(n).await {
                if ms.iter().any(|m| m["status"] != "up" && m["id"] != "n5") {
                    bail!("a live node was convicted: {ms:?}");
                }
                if status_of(&ms, "n5").is_some_and(|m| m["status"] == "down") {
                    convicted_at.insert(n.spec.id.clone(), killed.elapsed().as_secs_f64());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("n5 SIGKILLed: marked down after (s) {convicted_at:?}");
    for t in convicted_at.values() {
        assert!(*t >= 10.0, "no conviction before phi can reach 8: {t}");
    }

    // Restart with the same data dir: up again everywhere, same tokens,
    // higher generation.
    c.nodes[4].restart()?;
    let restarted = Instant::now();
    let nodes = &c.nodes;
    eventually(Duration::from_secs(30), "n5 up again everywhere", || {
        converged(nodes, &ids)
    })
    .await?;
    println!(
        "n5 restarted: up again on every node after {:.2} s",
        restarted.elapsed().as_secs_f64()
    );
    for n in nodes {
        let ms = members(n).await.unwrap_or_default();
        let new = status_of(&ms, "n5").cloned().unwrap_or_default();
        assert!(
            new["generation"].as_u64() > old["generation"].as_u64(),
            "{} sees n5 at a higher generation: {old} -> {new}",
            n.spec.id
        );
        assert_eq!(new["tokens"], old["tokens"], "tokens kept across restart");
    }
    Ok(())
}

#[tokio::test]
async fn nodes_of_another_cluster_or_with_a_wrong_secret_never_appear() -> Result<()> {
    let secrets = tempfile::tempdir()?;
    let right = secrets.path().join("right");
    let wrong = secrets.path().join("wrong");
    std::fs::write(&right, "correct horse battery staple\n")?;
    std::fs::write(&wrong, "incorrect horse\n")?;
    let right_s = right.display().to_string();
    let wrong_s = wrong.display().to_string();
    // Fast rounds so that "a while" is many rounds.
    let fast = ["--gossip-interval-ms", "200"];
    let spec = |id: &str, secret: &str| {
        NodeSpec::new(id)
            .args(fast)
            .args(["--cluster-secret-file", secret])
    };
    let mut c = Cluster::start(vec![spec("n1", &right_s), spec("n2", &right_s)])?;
    let ids = ["n1", "n2"];
    eventually(Duration::from_secs(15), "2 nodes converge", || {
        converged(&c.nodes, &ids)
    })
    .await?;

    let seed = vec![c.nodes[0].listen];
    c.add(
        spec("foreign", &right_s).args(["--cluster-name", "elsewhere"]),
        seed.clone(),
    )?;
    c.add(spec("impostor", &wrong_s), seed.clone())?;
    c.add(NodeSpec::new("nosecret").args(fast), seed)?;
    // 25 rounds of 200 ms: every intruder has tried the seed many times.
    let watch_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch_until {
        for n in &c.nodes {
            let ms = members(n).await.unwrap_or_default();
            let ids: Vec<&str> = ms.iter().filter_map(|m| m["id"].as_str()).collect();
            if ids.contains(&"n1") || ids.contains(&"n2") {
                assert!(
                    ids.len() == 2,
                    "{} lists an intruder or misses a member: {ids:?}",
                    n.spec.id
                );
            } else {
                assert_eq!(ids, [n.spec.id.as_str()], "an intruder knows only itself");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Both sides' logs say why.
    let log = |id: &str| {
        c.nodes
            .iter()
            .find(|n| n.spec.id == id)
            .map(NodeProc::log_text)
            .unwrap_or_default()
    };
    let seed_log = log("n1");
    for (who, why) in [
        ("foreign", "cluster name mismatch"),
        ("impostor", "cluster secret mismatch"),
        ("nosecret", "cluster secret mismatch"),
    ] {
        let text = log(who);
        assert!(
            text.contains("internode connection refused") && text.contains(why),
            "{who}'s log says {why:?}:\n{text}"
        );
        assert!(seed_log.contains(why), "n1's log says {why:?}:\n{seed_log}");
    }
    assert!(seed_log.contains("\"elsewhere\""), "{seed_log}");
    Ok(())
}
