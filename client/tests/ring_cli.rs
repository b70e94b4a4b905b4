//! `qkv ring show|simulate|plan|what-if` end to end: the built binary
//! against ring-file fixtures (and once against the in-process fake node),
//! with the expected figures computed independently here.
//!
//! Fixtures (`tests/fixtures/`):
//!
//! * `ring_four.json` — 4 nodes × 8 vnodes at `k·2^59` (k = 0..31), owner
//!   `n{k mod 4 + 1}`: every range is 1/32 of the ring and the replica
//!   sets (rf 3) cycle `{n1,n2,n3}`, `{n2,n3,n4}`, `{n3,n4,n1}`,
//!   `{n4,n1,n2}`, each over a quarter of the keyspace.
//! * `ring_four_load.json` — the same ring with `rf: 3` and a reported
//!   load of 1000 keys / 1 MiB per quarter of the ring.
//! * `ring_racks.json` — 4 nodes, one token each at `k·2^62`, racks
//!   `r1 = {n1, n2}`, `r2 = {n3, n4}`, `rf: 2`.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;

use common::{fake, json_err};
use serde_json::Value;

const SPACE: f64 = 18_446_744_073_709_551_616.0;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `qkv` with `args` (no node from the environment).
fn qkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .env_remove("QKV_NODE")
        .env_remove("QKV_TOKEN")
        .output()
        .expect("qkv runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `qkv --json args`, asserts success and parses the JSON.
fn qkv_json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = qkv(&all);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

/// The share of the token space of a JSON range `{"start","end"}`,
/// computed from the bounds (start == end is the whole ring).
fn range_fraction(r: &Value) -> f64 {
    let start = r["start"].as_u64().expect("start is a u64");
    let end = r["end"].as_u64().expect("end is a u64");
    if start == end {
        1.0
    } else {
        end.wrapping_sub(start) as f64 / SPACE
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Asserts a failed run: exit code `code`, nothing on stdout, and for exit
/// 1 exactly one line `Error: ...` containing `needle`.
fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(o.stdout.is_empty(), "{}", stdout(o));
    assert!(err.contains(needle), "{err}");
    if code == 1 {
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("Error: "), "{err}");
    }
}

#[test]
fn plan_add_moves_data_only_to_the_new_node_and_totals_match_the_ranges() {
    let ring = fixture("ring_four.json");
    let p = qkv_json(&["ring", "plan", "--ring", &ring, "--add", "n5"]);
    assert_eq!(p["rf"], 3);
    let moves = p["moves"].as_array().expect("moves");
    assert!(!moves.is_empty());
    let mut gained = 0.0;
    for m in moves {
        assert_eq!(strings(&m["gaining"]), ["n5"], "{m}");
        let losing = strings(&m["losing"]);
        assert_eq!(losing.len(), 1, "{m}");
        assert_ne!(losing[0], "n5");
        for t in m["transfers"].as_array().expect("transfers") {
            assert_eq!(t["to"], "n5");
            assert_eq!(t["source"], t["from"], "the losing replica streams: {t}");
        }
        gained += range_fraction(&m["range"]) * m["gaining"].as_array().map_or(0, Vec::len) as f64;
    }
    // 5 nodes >= rf: all replica data is rf = 3 copies of the keyspace.
    let moved = p["moved_fraction"].as_f64().expect("moved_fraction");
    assert!(close(moved, gained / 3.0), "{moved} vs {}", gained / 3.0);
    // What moves is exactly n5's replicated share after the change.
    let n5 = p["after"]["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["node"] == "n5"))
        .expect("n5 in the new ring");
    assert!(close(n5["replicated"].as_f64().unwrap_or(0.0), gained));
    assert_eq!(n5["vnodes"], 8, "defaults to the ring's usual vnode count");
    // Near the ideal 1/5 and reported against it.
    assert!((moved - 0.2).abs() < 0.2 * 0.15, "{moved}");
    assert!(close(
        p["ideal_moved_fraction"].as_f64().unwrap_or(0.0),
        0.2
    ));
    // Per-pair totals: every stream goes to n5 and they add up.
    let pairs = p["pairs"].as_array().expect("pairs");
    assert!(pairs.iter().all(|x| x["target"] == "n5"));
    let pair_sum: f64 = pairs.iter().filter_map(|x| x["fraction"].as_f64()).sum();
    assert!(close(pair_sum, gained));
    // The only token change is n5 joining with 8 tokens.
    let changes = p["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["node"], "n5");
    assert_eq!(changes[0]["added"].as_array().map(Vec::len), Some(8));
    assert!(p["estimate"].is_null(), "no load in this file");
}

#[test]
fn plan_remove_moves_data_only_away_from_the_removed_node() {
    let ring = fixture("ring_four.json");
    let p = qkv_json(&["ring", "plan", "--ring", &ring, "--remove", "n2"]);
    let mut gained = 0.0;
    for m in p["moves"].as_array().expect("moves") {
        assert_eq!(strings(&m["losing"]), ["n2"], "{m}");
        let gaining = strings(&m["gaining"]);
        assert_eq!(gaining.len(), 1);
        assert_ne!(gaining[0], "n2");
        for t in m["transfers"].as_array().expect("transfers") {
            assert_eq!(t["from"], "n2");
        }
        gained += range_fraction(&m["range"]);
    }
    // n2 stored 3/4 of the keyspace; every copy is re-homed: 0.75 / 3.
    assert!(close(gained, 0.75), "{gained}");
    let moved = p["moved_fraction"].as_f64().expect("moved_fraction");
    assert!(close(moved, 0.25), "{moved}");
    assert!(close(
        p["ideal_moved_fraction"].as_f64().unwrap_or(0.0),
        0.25
    ));
    // Each of the others takes a third of n2's data, streamed by n2.
    let pairs = p["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 3);
    for x in pairs {
        assert_eq!(x["source"], "n2");
        assert!(close(x["fraction"].as_f64().unwrap_or(0.0), 0.25), "{x}");
    }
}

#[test]
fn plan_text_shows_ownership_capped_ranges_pairs_and_totals() {
    let ring = fixture("ring_four.json");
    let o = qkv(&["ring", "plan", "--ring", &ring, "--remove", "n2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("Plan: remove n2; rf 3 (ring file "),
        "{out}"
    );
    let n2 = out.lines().find(|l| l.starts_with("n2 ")).expect("n2 row");
    let cols: Vec<&str> = n2.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "n2", "-", "8->0", "25.000%", "-", "75.000%", "-", "-75.000%"
        ]
    );
    // n2 has 8 vnodes, each its range and the two before it: 24 ranges,
    // 20 shown.
    assert!(
        out.contains("Moving ranges: 24 (first 20; --all-ranges for all)"),
        "{out}"
    );
    let range_rows = out.lines().filter(|l| l.contains("n2->")).count();
    assert_eq!(range_rows, 20, "{out}");
    assert!(out.contains("n2      n1      8       25.000%"), "{out}");
    assert!(
        out.contains("Data moving: 25.000% of all replica data (ideal 25.000%, ratio 1.0000)"),
        "{out}"
    );
    assert!(out.contains("Estimated to stream: unknown"), "{out}");
    let all = stdout(&qkv(&[
        "ring",
        "plan",
        "--ring",
        &ring,
        "--remove",
        "n2",
        "--all-ranges",
    ]));
    assert!(all.contains("Moving ranges: 24\n"), "{all}");
    assert_eq!(all.lines().filter(|l| l.contains("n2->")).count(), 24);
}

#[test]
fn plan_estimates_keys_and_bytes_from_the_reported_load() {
    let ring = fixture("ring_four_load.json");
    let p = qkv_json(&["ring", "plan", "--ring", &ring, "--add", "n5"]);
    assert_eq!(p["rf"], 3, "rf comes from the file");
    // One replica of the whole ring is 4000 keys and 4 MiB, spread evenly,
    // so a range of fraction f holds f·4000 keys (rounded per range).
    let moves = p["moves"].as_array().expect("moves");
    let gained: f64 = moves.iter().map(|m| range_fraction(&m["range"])).sum();
    let keys = p["estimate"]["total"]["keys"].as_u64().expect("keys");
    let bytes = p["estimate"]["total"]["bytes"].as_u64().expect("bytes");
    let slack = moves.len() as f64;
    assert!((keys as f64 - gained * 4000.0).abs() <= slack, "{keys}");
    assert!(
        (bytes as f64 - gained * 4.0 * 1048576.0).abs() <= slack,
        "{bytes}"
    );
    let per_pair: u64 = p["estimate"]["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .filter_map(|x| x[2]["keys"].as_u64())
        .sum();
    assert_eq!(per_pair, keys);
    let text = stdout(&qkv(&["ring", "plan", "--ring", &ring, "--add", "n5"]));
    assert!(
        text.contains(&format!("Estimated to stream: {keys} keys, {bytes} (")),
        "{text}"
    );
    assert!(
        text.contains("SOURCE  TARGET  RANGES  FRACTION  KEYS"),
        "{text}"
    );
}

#[test]
fn plan_add_respects_vnodes_rack_and_strategy() {
    let ring = fixture("ring_racks.json");
    let args = [
        "ring",
        "plan",
        "--ring",
        &ring,
        "--add",
        "n5",
        "--vnodes",
        "4",
        "--rack",
        "r3",
        "--strategy",
        "random",
        "--seed",
        "7",
    ];
    let p = qkv_json(&args);
    assert_eq!(p["rf"], 2);
    let c = &p["changes"][0];
    assert_eq!(c["node"], "n5");
    assert_eq!(c["added"].as_array().map(Vec::len), Some(4));
    assert_eq!(c["rack_after"], "r3");
    // Same seed, same tokens.
    assert_eq!(qkv_json(&args)["changes"], p["changes"]);
}

#[test]
fn what_if_on_the_four_node_ring_gives_the_hand_computed_fractions() {
    let ring = fixture("ring_four.json");
    // Down n2, n3 (rf 3): every replica set holds at least one live node;
    // {n1,n2,n3} and {n2,n3,n4} (half the keyspace) keep one of three;
    // every set holds n2 or n3.
    let w = qkv_json(&["ring", "what-if", "--ring", &ring, "--down", "n3,n2"]);
    assert_eq!(strings(&w["down"]), ["n2", "n3"]);
    let f = |w: &Value, l: &str| w[l]["fraction"].as_f64().expect("fraction");
    assert_eq!(
        (f(&w, "one"), f(&w, "quorum"), f(&w, "all")),
        (0.0, 0.5, 1.0)
    );
    assert_eq!(w["quorum"]["required"], 2);
    let lost: f64 = w["quorum"]["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .map(|r| range_fraction(&r["range"]))
        .sum();
    assert!(close(lost, 0.5));
    // Down n2, n3, n4: {n2,n3,n4} (a quarter) has no live replica left.
    let w = qkv_json(&[
        "ring", "what-if", "--ring", &ring, "--down", "n2", "--down", "n3,n4",
    ]);
    assert_eq!(
        (f(&w, "one"), f(&w, "quorum"), f(&w, "all")),
        (0.25, 1.0, 1.0)
    );
    for r in w["one"]["ranges"].as_array().expect("ranges") {
        assert_eq!(strings(&r["replicas"]), ["n2", "n3", "n4"]);
        assert_eq!(r["live"], 0);
    }
    // --rf overrides: with rf 1 only the down nodes' own ranges are lost.
    let w = qkv_json(&[
        "ring", "what-if", "--ring", &ring, "--down", "n2", "--rf", "1",
    ]);
    assert_eq!(f(&w, "one"), 0.25);
}

#[test]
fn what_if_is_rack_aware_and_prints_a_level_table() {
    let ring = fixture("ring_racks.json");
    // rf 2 over racks {n1,n2} / {n3,n4}: replica sets {n1,n3}, {n2,n3},
    // {n3,n1}, {n4,n1}; n3 down loses quorum (2 of 2) on three quarters.
    // (Without racks the sets would be {n1,n2}, {n2,n3}, {n3,n4},
    // {n4,n1}: half.)
    let o = qkv(&["ring", "what-if", "--ring", &ring, "--down", "n3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let row = |level: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(&format!("{level} ")))
            .unwrap_or_else(|| panic!("{level} row in {out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row("one"), ["one", "1", "0", "0.000%", "100.000%"]);
    assert_eq!(row("quorum"), ["quorum", "2", "3", "75.000%", "25.000%"]);
    assert!(out.contains("Ranges that lose quorum: 3"), "{out}");
    assert!(out.contains("n2,n3     1"), "{out}");
}

#[test]
fn show_reports_rack_aware_ownership_and_balance() {
    let ring = fixture("ring_racks.json");
    let s = qkv_json(&["ring", "show", "--ring", &ring]);
    assert_eq!(s["rf"], 2);
    assert_eq!(s["vnodes"], 4);
    let replicated: Vec<f64> = s["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["replicated"].as_f64())
        .collect();
    assert_eq!(replicated, [0.75, 0.25, 0.75, 0.25]);
    assert_eq!(s["replicated"]["max_over_mean"], 1.5);
    assert_eq!(s["replicated"]["imbalance"], 1.0);
    let text = stdout(&qkv(&["ring", "show", "--ring", &ring]));
    assert!(
        text.starts_with("Ring of 4 nodes, 4 vnodes, rf 2 (ring file "),
        "{text}"
    );
    assert!(
        text.contains("n1    r1    1       25.000%  75.000%     1.5000"),
        "{text}"
    );
    assert!(
        text.contains("replicated (rf 2)  1.5000    0.5000    0.5000  100.0%"),
        "{text}"
    );
}

#[test]
fn simulate_balanced_3_to_8_stays_within_the_issue_limits() {
    let s = qkv_json(&[
        "ring",
        "simulate",
        "--nodes",
        "3..8",
        "--strategy",
        "balanced",
    ]);
    let rows = s["rows"].as_array().expect("rows");
    let sizes: Vec<u64> = rows.iter().filter_map(|r| r["nodes"].as_u64()).collect();
    assert_eq!(sizes, [3, 4, 5, 6, 7, 8]);
    for r in rows {
        let m = r["replicated_max_over_mean"].as_f64().expect("max/mean");
        let moved = r["moved_over_ideal"].as_f64().expect("moved/ideal");
        assert!(m <= 1.10, "{r}");
        assert!(moved <= 1.15, "{r}");
        let n = r["nodes"].as_f64().unwrap_or(0.0);
        assert!(close(r["ideal_moved"].as_f64().unwrap_or(0.0), 1.0 / n));
    }
    assert!(s["worst_max_over_mean"]["value"].as_f64().unwrap_or(9.0) <= 1.10);
    assert!(s.get("primary_cv_check").is_none(), "random only");
}

#[test]
fn simulate_one_size_with_random_tokens_checks_the_closed_form() {
    let s = qkv_json(&[
        "ring",
        "simulate",
        "--nodes",
        "40",
        "--strategy",
        "random",
        "--vnodes",
        "16",
        "--trials",
        "50",
        "--seed",
        "3",
    ]);
    let rows = s["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["nodes"], 40);
    let theory = (39.0f64 / (40.0 * 16.0 + 1.0)).sqrt();
    assert!(close(
        rows[0]["primary_cv_theory"].as_f64().unwrap_or(0.0),
        theory
    ));
    let check = &s["primary_cv_check"];
    assert!(close(check["theory"].as_f64().unwrap_or(0.0), theory));
    let err = check["relative_error"].as_f64().expect("error").abs();
    assert!(err < 0.10, "{check}");
}

#[test]
fn simulate_text_has_a_footer_and_writes_the_svg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("sim.svg");
    let svg_arg = svg.to_string_lossy().into_owned();
    let o = qkv(&[
        "ring", "simulate", "--nodes", "3..6", "--vnodes", "8", "--svg", &svg_arg,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("NODES  MAX/MEAN"), "{out}");
    assert!(out.contains("worst replicated max/mean: "), "{out}");
    assert!(out.contains("worst moved/ideal: "), "{out}");
    let drawn = std::fs::read_to_string(&svg).expect("svg written");
    assert!(drawn.starts_with("<svg") && drawn.contains("<polyline"));
}

#[test]
fn unknown_and_existing_nodes_are_one_line_errors() {
    let ring = fixture("ring_four.json");
    let o = qkv(&["ring", "plan", "--ring", &ring, "--remove", "n9"]);
    assert_fails(&o, 1, "unknown node \"n9\"");
    let o = qkv(&["ring", "what-if", "--ring", &ring, "--down", "n2,n9"]);
    assert_fails(&o, 1, "unknown node \"n9\"");
    let o = qkv(&["ring", "plan", "--ring", &ring, "--add", "n1"]);
    assert_fails(&o, 1, "node \"n1\" is already on the ring");
    let o = qkv(&["ring", "show", "--ring", &fixture("missing.json")]);
    assert_fails(&o, 1, "cannot read ring file");
}

#[test]
fn bad_usage_exits_2() {
    let ring = fixture("ring_four.json");
    for args in [
        &["ring", "simulate", "--nodes", "3..x"][..],
        &["ring", "simulate", "--nodes", "8..3"],
        &["ring", "simulate", "--strategy", "sorted"],
        &["ring", "simulate", "--rf", "0"],
        &["ring", "plan", "--ring", &ring],
        &[
            "ring", "plan", "--ring", &ring, "--add", "a", "--remove", "n1",
        ],
        &[
            "ring", "plan", "--ring", &ring, "--remove", "n1", "--vnodes", "4",
        ],
        &["ring", "what-if", "--ring", &ring],
    ] {
        let o = qkv(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_against_a_node_takes_racks_from_the_members() {
    let q = 1u64 << 62;
    let (url, seen) = fake(Arc::new(move |s| match s.uri.as_str() {
        "/cluster/ring" => json_err(
            200,
            &format!(
                r#"{{"tokens":[{{"token":0,"node":"n1"}},{{"token":{q},"node":"n2"}},
                {{"token":{},"node":"n3"}},{{"token":"{}","node":"n4"}}],
                "ownership":{{"n1":0.25,"n2":0.25,"n3":0.25,"n4":0.25}}}}"#,
                2 * q,
                3 * q
            ),
        ),
        "/cluster/members" => json_err(
            200,
            r#"[{"id":"n1","rack":"r1"},{"id":"n2","rack":"r1"},{"id":"n3","rack":"r2"},
                {"id":"n4","rack":"r2"},{"id":"n5","rack":"r9","tokens":[]}]"#,
        ),
        _ => json_err(404, r#"{"error":"not_found","message":"no route"}"#),
    }))
    .await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(["--node", &url, "--json", "ring", "show", "--rf", "2"])
        .env_remove("QKV_NODE")
        .env_remove("QKV_TOKEN")
        .output()
        .await
        .expect("qkv runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["source"], format!("cluster at {url}"));
    let nodes = s["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4, "a member without tokens is not on the ring");
    assert_eq!(nodes[0]["rack"], "r1");
    assert_eq!(nodes[0]["replicated"], 0.75);
    assert_eq!(nodes[1]["replicated"], 0.25);
    let paths: Vec<String> = seen
        .lock()
        .expect("log")
        .iter()
        .map(|x| x.uri.clone())
        .collect();
    assert_eq!(paths, ["/cluster/ring", "/cluster/members"]);
}
