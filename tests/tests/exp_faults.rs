//! `qkv exp faults` end to end, in about a minute: three real nodes, a
//! fixed seed, partitions (both ways and one-way) and kill -9 while
//! clients run the register and set workloads at `r=2,w=2` and `r=1,w=1`.
//! The strict level must show no anomaly at all, and the weak one at least
//! one stale read — the proof that the checker, fed by the runner, can
//! fail. `qkv exp check` must judge the recorded history the same way.

use std::path::Path;

use anyhow::{Context as _, Result};
use quorumkv_tests::{consecutive_ports, qkvd_bin, run_qkv};
use serde_json::Value;

/// Stops the experiment's cluster if the run left it behind.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let dir = self.0.display().to_string();
        let _ = run_qkv(&["local", "down", "--dir", &dir]);
    }
}

fn level<'a>(results: &'a Value, bucket: &str) -> &'a Value {
    results["levels"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["bucket"] == bucket))
        .unwrap_or_else(|| panic!("no level {bucket} in {results:#}"))
}

#[test]
fn the_strict_level_shows_no_anomaly_under_faults_while_r1_w1_reads_stale() -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("qkv-exp-faults-")
        .tempdir()?;
    let out = tmp.path().join("out");
    let cluster = tmp.path().join("cluster");
    let _down = Down(&cluster);
    let http = consecutive_ports(3)?.to_string();
    let listen = consecutive_ports(3)?.to_string();
    let qkvd = qkvd_bin()?.display().to_string();
    let (out_s, cluster_s) = (out.display().to_string(), cluster.display().to_string());
    let run = run_qkv(&[
        "--json",
        "exp",
        "faults",
        "--nodes",
        "3",
        "--dir",
        &cluster_s,
        "--base-http-port",
        &http,
        "--base-listen-port",
        &listen,
        "--qkvd",
        &qkvd,
        "--duration",
        "35s",
        "--clients",
        "6",
        "--workload",
        "register,set",
        "--levels",
        "r=2,w=2 r=1,w=1",
        "--nemesis",
        "partition,one-way,kill",
        "--fault-secs",
        "5..8",
        "--quiet-secs",
        "2..3",
        "--seed",
        "7",
        "--out",
        &out_s,
    ])?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "qkv exp faults failed: {stderr}");
    let results: Value = serde_json::from_slice(&run.stdout)
        .with_context(|| format!("stdout is not JSON: {stderr}"))?;

    let strict = level(&results, "exp-r2w2");
    assert_eq!(strict["strict"], true, "{strict:#}");
    for field in [
        "lost",
        "stale",
        "non_monotonic",
        "unexpected",
        "unchecked_keys",
    ] {
        assert_eq!(strict[field], 0, "r=2,w=2 {field}: {strict:#}");
    }
    assert!(strict["ops"]["ok"].as_u64() > Some(100), "{strict:#}");
    assert!(strict["convergence_secs"].is_number(), "{strict:#}");
    let weak = level(&results, "exp-r1w1");
    assert!(
        weak["stale"].as_u64() >= Some(1),
        "no stale read at r=1,w=1: {weak:#}"
    );
    let kinds: Vec<&str> = results["schedule"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["fault"]["fault"].as_str())
        .collect();
    assert!(
        kinds.contains(&"partition") || kinds.contains(&"one-way"),
        "{kinds:?}"
    );
    assert_eq!(
        results["nemesis_errors"],
        Value::Array(vec![]),
        "{results:#}"
    );

    // The checker, run on its own, judges the same history the same way.
    let history = out.join("history.jsonl").display().to_string();
    let check = run_qkv(&["exp", "check", &history, "--json"])?;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let verdict: Value = serde_json::from_slice(&check.stdout)?;
    assert_eq!(verdict["strict_anomalies"], results["strict_anomalies"]);
    for bucket in ["exp-r2w2", "exp-r1w1"] {
        let b = verdict["buckets"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["bucket"] == bucket))
            .with_context(|| format!("no {bucket} in the verdict"))?;
        assert_eq!(b["stale_reads"]["count"], level(&results, bucket)["stale"]);
        assert_eq!(b["lost"]["count"], level(&results, bucket)["lost"]);
    }
    for file in ["results.json", "timeline.svg", "report.md"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    Ok(())
}
