//! The staged plan → apply flow, `qkv ring status` and `qkv cleanup`, run
//! as the built binary against an in-process fake that speaks the cluster-
//! change contract (`/cluster/ring`, `/cluster/members`, `/cluster/ranges`,
//! `/cluster/join|decommission|removenode`, `/cluster/changes`,
//! `/cluster/cleanup`). One fake plays every node: the members' `http_addr`
//! all point at it.
//!
//! The fake cluster: n1, n2, n3 with 4 tokens each (12 ranges),
//! every range reported with 100 keys and 100 000 bytes; n4 is a
//! standby member; n5 is on the ring only in the removenode test, down.
//! After a change is started, each `GET /cluster/changes` moves its two
//! streams 25 000 bytes further (50 000 each), so the change is done after
//! a few polls.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex, OnceLock};

use common::{Seen, fake, json_err};
use serde_json::{Value, json};

const RANGE_KEYS: u64 = 100;
const RANGE_BYTES: u64 = 100_000;
const STREAM_BYTES: u64 = 50_000;

/// What the fake cluster is and does.
struct State {
    /// (token, node) of the ring.
    ring: Vec<(u64, String)>,
    /// `(id, status, state)` of every member.
    members: Vec<(String, String, String)>,
    /// The change started, as `(node, kind)`.
    started: Option<(String, String)>,
    /// Polls of /cluster/changes since the start.
    polls: u64,
    /// Answer the change routes with this error instead.
    refuse: Option<(u16, String)>,
    /// Polls do not move the streams.
    frozen: bool,
}

struct FakeCluster {
    url: String,
    state: Arc<Mutex<State>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn ring_of(nodes: &[&str]) -> Vec<(u64, String)> {
    let step = u64::MAX / 16;
    let mut ring = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for k in 0..4u64 {
            ring.push((step * (k * 4 + i as u64 + 1), n.to_string()));
        }
    }
    ring.sort();
    ring
}

fn member(id: &str, status: &str, state: &str) -> (String, String, String) {
    (id.into(), status.into(), state.into())
}

/// The change as the fake reports it after `polls` polls.
fn change_json(node: &str, kind: &str, polls: u64) -> Value {
    let bytes = (polls * 25_000).min(STREAM_BYTES);
    let done = bytes == STREAM_BYTES;
    let stream = |start: u64, from: &str| {
        json!({"range": {"start": start, "end": start + 1000}, "from": from, "to": "n4",
               "keys": bytes / 1000, "bytes": bytes, "bytes_estimate": STREAM_BYTES, "done": done})
    };
    json!({"node": node, "kind": kind, "state": if done {"done"} else {"joining"},
           "started_unix_ms": 1_000_000, "finished_unix_ms": if done {json!(1_004_000)} else {Value::Null},
           "streams": [stream(10, "n1"), stream(5000, "n2")]})
}

fn handle(
    state: &Mutex<State>,
    addr: &str,
    s: &Seen,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut st = state.lock().unwrap();
    let path = s.uri.split('?').next().unwrap_or_default();
    match (s.method.as_str(), path) {
        ("GET", "/cluster/ring") => {
            let tokens: Vec<Value> = st
                .ring
                .iter()
                .map(|(t, n)| json!({"token": t, "node": n}))
                .collect();
            json_err(
                200,
                &json!({"tokens": tokens, "ownership": {}, "rf": 3}).to_string(),
            )
        }
        ("GET", "/cluster/members") => {
            // Once the change's streams are done, the membership shows it
            // finished, as a real cluster's does: apply waits for both.
            let finished = st
                .started
                .clone()
                .filter(|_| st.polls * 25_000 >= STREAM_BYTES);
            let list: Vec<Value> = st
                .members
                .iter()
                .map(|(id, status, state)| {
                    let mut tokens: Vec<u64> = st
                        .ring
                        .iter()
                        .filter(|(_, n)| n == id)
                        .map(|(t, _)| *t)
                        .collect();
                    let state = match &finished {
                        Some((node, kind)) if node == id && kind == "join" => {
                            if tokens.is_empty() {
                                tokens.push(7);
                            }
                            "normal"
                        }
                        Some((node, _)) if node == id => "left",
                        _ => state.as_str(),
                    };
                    json!({"id": id, "http_addr": addr, "status": status, "state": state, "tokens": tokens})
                })
                .collect();
            json_err(200, &Value::Array(list).to_string())
        }
        ("GET", "/cluster/ranges") => {
            let mut ranges = Vec::new();
            for (i, (t, _)) in st.ring.iter().enumerate() {
                let prev = st.ring[(i + st.ring.len() - 1) % st.ring.len()].0;
                ranges.push(
                    json!({"start": prev, "end": t, "keys": RANGE_KEYS, "bytes": RANGE_BYTES}),
                );
            }
            json_err(200, &json!({"node": "n1", "ranges": ranges}).to_string())
        }
        ("POST", "/cluster/join" | "/cluster/decommission" | "/cluster/removenode") => {
            if let Some((status, msg)) = &st.refuse {
                return json_err(
                    *status,
                    &json!({"error": "conflict", "message": msg}).to_string(),
                );
            }
            let kind = path.trim_start_matches("/cluster/").to_string();
            let node = match kind.as_str() {
                "removenode" => serde_json::from_slice::<Value>(&s.body)
                    .ok()
                    .and_then(|v| v["node"].as_str().map(str::to_string))
                    .unwrap_or_default(),
                "join" => "n4".into(),
                _ => "n3".into(),
            };
            st.started = Some((node.clone(), kind));
            st.polls = 0;
            json_err(202, &json!({"node": node, "state": "joining"}).to_string())
        }
        ("GET", "/cluster/changes") => {
            // An old, finished join of n4 is always listed: apply must not
            // take it for the change it starts.
            let mut changes = vec![json!({"node": "n4", "kind": "join", "state": "done",
                "started_unix_ms": 1, "finished_unix_ms": 2, "streams": []})];
            if let Some((node, kind)) = st.started.clone() {
                if !st.frozen {
                    st.polls += 1;
                }
                changes.push(change_json(&node, &kind, st.polls));
            }
            json_err(200, &json!({"node": "n4", "changes": changes}).to_string())
        }
        ("POST", "/cluster/cleanup") => match &st.refuse {
            Some((status, msg)) => json_err(
                *status,
                &json!({"error": "conflict", "message": msg}).to_string(),
            ),
            None => json_err(
                200,
                r#"{"node":"n1","keys_removed":120,"bytes_removed":123456,"duration_ms":1500}"#,
            ),
        },
        _ => json_err(404, r#"{"error":"not_found","message":"no route"}"#),
    }
}

async fn start(ring: Vec<(u64, String)>, members: Vec<(String, String, String)>) -> FakeCluster {
    let state = Arc::new(Mutex::new(State {
        ring,
        members,
        started: None,
        polls: 0,
        refuse: None,
        frozen: false,
    }));
    let addr: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let (st, ad) = (state.clone(), addr.clone());
    let (url, seen) = fake(Arc::new(move |s| {
        handle(&st, ad.get().map(String::as_str).unwrap_or_default(), s)
    }))
    .await;
    let _ = addr.set(url.trim_start_matches("http://").to_string());
    FakeCluster { url, state, seen }
}

async fn three_and_a_standby() -> FakeCluster {
    start(
        ring_of(&["n1", "n2", "n3"]),
        vec![
            member("n1", "up", "normal"),
            member("n2", "up", "normal"),
            member("n3", "up", "normal"),
            member("n4", "up", "standby"),
        ],
    )
    .await
}

async fn qkv(url: &str, args: &[&str], stdin_null: bool) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_qkv"));
    cmd.args(["--node", url])
        .args(args)
        .env_remove("QKV_NODE")
        .env_remove("QKV_TOKEN")
        .env_remove("QKV_PLAN_FILE");
    if stdin_null {
        cmd.stdin(std::process::Stdio::null());
    }
    cmd.output().await.expect("qkv runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn plan_path(dir: &Path) -> PathBuf {
    dir.join("state/plan.json")
}

fn read_plan(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("plan file")).expect("plan json")
}

fn posts(f: &FakeCluster) -> Vec<Seen> {
    f.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "POST")
        .cloned()
        .collect()
}

/// `qkv ring plan --add n4` against the fake, staged in `file`.
async fn stage_join(f: &FakeCluster, file: &str) -> Output {
    let o = qkv(
        &f.url,
        &["ring", "plan", "--add", "n4", "--plan-file", file],
        true,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_staged_shown_and_cleared() {
    let f = three_and_a_standby().await;
    let dir = tempfile::tempdir().unwrap();
    let path = plan_path(dir.path());
    let file = path.to_str().unwrap();
    let o = stage_join(&f, file).await;
    let out = text(&o.stdout);
    println!("{out}");
    assert!(out.contains("Staged: join n4"), "{out}");
    assert!(!out.contains("Estimated to stream: unknown"), "{out}");
    // Every up node with tokens was asked for its ranges (the standby has none).
    let asked = f
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.uri == "/cluster/ranges")
        .count();
    assert_eq!(asked, 3);
    let p = read_plan(&path);
    assert_eq!(p["kind"], "join");
    assert_eq!(p["node"], "n4");
    assert_eq!(p["tokens"].as_array().map(Vec::len), Some(4), "{p}");
    assert_eq!(p["ring"].as_array().map(Vec::len), Some(12));
    // rf 3 on 3 nodes: n4 takes a replica of what it covers; the live load
    // (100 keys per 1/12 of the ring) makes a real estimate.
    let keys = p["estimate"]["keys"].as_u64().expect("estimate keys");
    let bytes = p["estimate"]["bytes"].as_u64().expect("estimate bytes");
    println!("staged estimate: {keys} keys, {bytes} bytes");
    assert!(keys > 0 && keys <= 12 * RANGE_KEYS * 3, "{p}");
    let pairs: u64 = p["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|x| x["estimate"]["bytes"].as_u64().expect("pair estimate"))
        .sum();
    assert_eq!(pairs, bytes, "the pairs add up to the total: {p}");
    // 1000 bytes per key in every range; keys are rounded per range.
    assert!(bytes.abs_diff(keys * 1000) <= 12 * 1000, "{p}");

    let o = qkv(&f.url, &["ring", "plan", "--plan-file", file], true).await;
    let shown = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(shown.contains("join n4 with 4 tokens"), "{shown}");
    assert!(shown.contains("is the one planned against"), "{shown}");

    let o = qkv(
        &f.url,
        &["ring", "plan", "--clear", "--plan-file", file],
        true,
    )
    .await;
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("Dropped the staged change"));
    assert!(!path.exists());
    let o = qkv(&f.url, &["ring", "plan", "--plan-file", file], true).await;
    assert!(
        text(&o.stdout).contains("Nothing staged"),
        "{}",
        text(&o.stdout)
    );
    // A dry run or a ring file plans without staging.
    let o = qkv(
        &f.url,
        &[
            "ring",
            "plan",
            "--add",
            "n4",
            "--dry-run",
            "--plan-file",
            file,
        ],
        true,
    )
    .await;
    assert!(text(&o.stdout).contains("Not staged: --dry-run"));
    assert!(!path.exists());
    // A node that is not a standby member yet is staged, with a note.
    let o = qkv(
        &f.url,
        &["ring", "plan", "--add", "n9", "--plan-file", file],
        true,
    )
    .await;
    let out = text(&o.stdout);
    assert!(out.contains("Staged: join n9"), "{out}");
    assert!(out.contains("n9 is not a standby member yet"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_up_node_decommissions_it_and_a_down_one_is_removed() {
    let f = start(
        ring_of(&["n1", "n2", "n3", "n4"]),
        vec![
            member("n1", "up", "normal"),
            member("n2", "down", "normal"),
            member("n3", "up", "normal"),
            member("n4", "up", "normal"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = plan_path(dir.path());
    let file = path.to_str().unwrap();
    for (node, kind) in [("n3", "decommission"), ("n2", "removenode")] {
        let o = qkv(
            &f.url,
            &["ring", "plan", "--remove", node, "--plan-file", file],
            true,
        )
        .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let p = read_plan(&path);
        assert_eq!(
            (p["node"].as_str(), p["kind"].as_str()),
            (Some(node), Some(kind))
        );
        assert_eq!(p["tokens"], json!([]));
    }
    // Apply the removenode: it goes to a live normal node, naming n2.
    let o = qkv(
        &f.url,
        &[
            "ring",
            "apply",
            "--yes",
            "--poll-ms",
            "20",
            "--timeout-secs",
            "20",
            "--plan-file",
            file,
        ],
        true,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let sent = posts(&f);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].uri, "/cluster/removenode");
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body, json!({"node": "n2"}));
    let out = text(&o.stdout);
    println!("{out}");
    assert!(out.contains("Done: removenode of n2"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_without_a_terminal_and_without_yes() {
    let f = three_and_a_standby().await;
    let dir = tempfile::tempdir().unwrap();
    let path = plan_path(dir.path());
    let file = path.to_str().unwrap();
    stage_join(&f, file).await;
    let o = qkv(&f.url, &["ring", "apply", "--plan-file", file], true).await;
    let err = text(&o.stderr);
    println!("{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("Error: not confirmed") && err.contains("--yes"),
        "{err}"
    );
    assert!(posts(&f).is_empty(), "nothing was started");
    assert!(path.exists(), "the plan stays staged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_a_plan_made_against_another_ring() {
    let f = three_and_a_standby().await;
    let dir = tempfile::tempdir().unwrap();
    let path = plan_path(dir.path());
    let file = path.to_str().unwrap();
    stage_join(&f, file).await;
    // Meanwhile the ring changed: n1 took another token.
    f.state.lock().unwrap().ring.push((42, "n1".into()));
    let o = qkv(
        &f.url,
        &["ring", "apply", "--yes", "--plan-file", file],
        true,
    )
    .await;
    let err = text(&o.stderr);
    println!("{err}");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("re-run qkv ring plan") && err.contains("12 tokens then, 13 now"),
        "{err}"
    );
    assert!(posts(&f).is_empty());
    assert!(path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_starts_the_join_follows_the_streams_and_sums_up() {
    let f = three_and_a_standby().await;
    let dir = tempfile::tempdir().unwrap();
    let path = plan_path(dir.path());
    let file = path.to_str().unwrap();
    stage_join(&f, file).await;
    let staged = read_plan(&path);
    let o = qkv(
        &f.url,
        &[
            "--json",
            "ring",
            "apply",
            "--yes",
            "--poll-ms",
            "20",
            "--timeout-secs",
            "20",
            "--plan-file",
            file,
        ],
        true,
    )
    .await;
    let err = text(&o.stderr);
    println!("stderr:\n{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
    let sent = posts(&f);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].uri, "/cluster/join");
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(
        body["tokens"], staged["tokens"],
        "the planned tokens are sent"
    );
    // Without a terminal each stream's end is a line on stderr.
    assert_eq!(err.matches("] done: 50 keys, 50000").count(), 2, "{err}");
    let s: Value = serde_json::from_slice(&o.stdout).expect("summary json");
    println!("summary: {s}");
    assert_eq!(s["change"], "join");
    assert_eq!(s["node"], "n4");
    assert_eq!(
        (s["ranges"].as_u64(), s["streams"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (s["keys"].as_u64(), s["bytes"].as_u64()),
        (Some(100), Some(100_000))
    );
    // The nodes' clocks say 4 s.
    assert_eq!(s["duration_ms"], 4000);
    assert!(
        (s["mb_per_s"].as_f64().unwrap() - 0.025).abs() < 1e-9,
        "{s}"
    );
    assert_eq!(s["estimate_bytes"], staged["estimate"]["bytes"]);
    assert_eq!(s["streams_bytes_estimate"], 2 * STREAM_BYTES);
    assert!(s["estimate_error"].is_f64(), "{s}");
    assert!(!path.exists(), "the staged plan is dropped after success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_is_one_line_and_keeps_the_plan() {
    let f = three_and_a_standby().await;
    let dir = tempfile::tempdir().unwrap();
    let path = plan_path(dir.path());
    let file = path.to_str().unwrap();
    stage_join(&f, file).await;
    f.state.lock().unwrap().refuse = Some((409, "n4 is not standby".into()));
    let o = qkv(
        &f.url,
        &["ring", "apply", "--yes", "--plan-file", file],
        true,
    )
    .await;
    let err = text(&o.stderr);
    println!("{err}");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("join of n4 on n4") && err.contains("conflict") && err.contains("409"),
        "{err}"
    );
    assert!(path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_changes_in_flight() {
    let f = three_and_a_standby().await;
    let o = qkv(&f.url, &["ring", "status"], true).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("No changes in flight (4 of 4 nodes answered)"),
        "{}",
        text(&o.stdout)
    );
    {
        let mut st = f.state.lock().unwrap();
        st.started = Some(("n4".into(), "join".into()));
        st.polls = 1;
        st.frozen = true;
    }
    let o = qkv(&f.url, &["ring", "status"], true).await;
    let out = text(&o.stdout);
    println!("{out}");
    // Each of the 4 members (all this fake) reports the running join; the
    // finished old join is hidden without --all.
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(" join ")).collect();
    assert_eq!(rows.len(), 4, "{out}");
    for r in &rows {
        assert!(
            r.contains("joining") && r.contains("0/2") && r.contains("50%"),
            "{out}"
        );
    }
    let o = qkv(&f.url, &["--json", "ring", "status", "--all"], true).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["nodes"].as_object().map(|o| o.len()), Some(4), "{v}");
    assert_eq!(
        v["nodes"]["n1"]["changes"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_reports_each_node_and_fails_in_one_line_on_a_refusal() {
    let a = three_and_a_standby().await;
    let b = three_and_a_standby().await;
    let nodes = format!("{},{}", a.url, b.url);
    let o = qkv(&nodes, &["cleanup"], true).await;
    let out = text(&o.stdout);
    println!("{out}");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("123456 (120.6 KiB)"))
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("total: 240 keys, 246912 (241.1 KiB) removed on 2 nodes"),
        "{out}"
    );
    b.state.lock().unwrap().refuse = Some((409, "a change is in flight".into()));
    let o = qkv(&nodes, &["cleanup"], true).await;
    let err = text(&o.stderr);
    println!("{}{err}", text(&o.stdout));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cleanup failed on 1 of 2 nodes") && err.contains("a change is in flight"),
        "{err}"
    );
    // --all asks the members (4 up, all this fake) instead.
    let o = qkv(&a.url, &["--json", "cleanup", "--all"], true).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(4), "{v}");
}
