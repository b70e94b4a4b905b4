//! `qkv exp check` end to end: the built binary on the small histories in
//! tests/histories/, its table, its JSON and its exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn history(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "histories", name]
        .iter()
        .collect();
    p.display().to_string()
}

fn qkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .env_remove("QKV_NODE")
        .output()
        .expect("qkv runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_history_with_anomalies_prints_a_table_and_still_exits_0() {
    let out = qkv(&["exp", "check", &history("anomalies.jsonl")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "8 events, 4 operations, 0 nemesis events; 2 anomalies in buckets with strict expectations\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\nBUCKET  "), "{stdout}");
    assert!(stdout.contains("  lost (1): 0\n"), "{stdout}");
    assert!(
        stdout.contains("  stale reads (1): 2 missed 0\n"),
        "{stdout}"
    );
}

#[test]
fn the_json_verdict_counts_anomalies_per_bucket_with_their_indexes() {
    let out = qkv(&["exp", "check", &history("clean.jsonl"), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["events"], 16);
    assert_eq!(v["strict_anomalies"], 0);
    assert_eq!(v["nemesis"][0]["f"], "partition");
    assert_eq!(v["nemesis"][1]["time_ns"], 7000);
    let buckets = v["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 2);
    let (lww, strict) = (&buckets[0], &buckets[1]);
    assert_eq!(lww["bucket"], "exp-lww-r1w1");
    assert_eq!(lww["settings"]["conflicts"], "lww");
    assert_eq!(lww["settings"]["strict"], false);
    assert_eq!(strict["bucket"], "exp-r2w2");
    assert_eq!(strict["settings"]["strict"], true);
    assert_eq!(strict["lost"]["count"], 0);
    assert_eq!(strict["siblings"]["reads"], 1);
    assert_eq!(strict["siblings"]["resolved"], 1);
    assert_eq!(strict["unknown"]["ops"], serde_json::json!([7]));
    assert_eq!(strict["unknown"]["visible"], serde_json::json!([7]));
    assert_eq!(strict["totals"]["write"]["info"], 1);

    let out = qkv(&["exp", "check", &history("anomalies.jsonl"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let b = &v["buckets"][0];
    assert_eq!(b["lost"], serde_json::json!({"count": 1, "ops": [0]}));
    assert_eq!(
        b["stale_reads"],
        serde_json::json!({"count": 1, "ops": [{"read": 2, "missed": 0}]})
    );
}

#[test]
fn fail_on_anomaly_exits_1_only_when_a_strict_bucket_has_one() {
    let out = qkv(&["exp", "check", &history("clean.jsonl"), "--fail-on-anomaly"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = qkv(&[
        "exp",
        "check",
        &history("anomalies.jsonl"),
        "--fail-on-anomaly",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stdout.is_empty(), "the verdict is printed first");
    assert_eq!(
        text(&out.stderr),
        "Error: 2 anomalies in buckets with strict expectations\n"
    );
    // With N = 5, r=2 w=2 promises nothing: the same anomalies are data.
    let out = qkv(&[
        "exp",
        "check",
        &history("anomalies.jsonl"),
        "--fail-on-anomaly",
        "--n",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_bad_history_is_a_one_line_error_naming_the_line() {
    let path = history("truncated.jsonl");
    let out = qkv(&["exp", "check", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr == format!("Error: {path}: line 3, column 57: EOF while parsing an object\n"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = qkv(&["exp", "check", "/nonexistent/history.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("Error: cannot open /nonexistent/history.jsonl: "),
        "{}",
        text(&out.stderr)
    );
}
