//! The `qkv` binary end to end against the in-process fake node: what it
//! prints on stdout and stderr, and its exit codes (0 ok, 1 failure, 2
//! usage, 3 siblings).

mod common;

use std::process::Output;
use std::sync::Arc;

use common::{fake, json_err, resp};

/// Runs `qkv` with `args` against `url`, stdin from `input`.
async fn qkv(url: &str, args: &[&str], input: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_qkv"))
        .arg("--node")
        .arg(url)
        .args(args)
        .env_remove("QKV_NODE")
        .env_remove("QKV_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fake node: `k` holds `hello`, `sib` has two siblings, `down` is 503,
/// everything else is missing; PUT and DELETE succeed.
async fn node() -> (String, Arc<std::sync::Mutex<Vec<common::Seen>>>) {
    fake(Arc::new(|s| match (s.method.as_str(), s.uri.split('?').next().unwrap_or("")) {
        ("GET", "/buckets/default/keys/k") => json_err(
            200,
            r#"{"context":"CK","values":[{"value_base64":"aGVsbG8=","content_type":"text/plain"}]}"#,
        ),
        ("GET", "/buckets/default/keys/sib") => json_err(
            200,
            r#"{"context":"CS","values":[{"value_base64":"YQ==","content_type":"text/plain"},{"value_base64":"/w==","content_type":"application/octet-stream"}]}"#,
        ),
        (_, "/buckets/default/keys/down") => json_err(
            503,
            r#"{"error":"unavailable","message":"1 of 3 replicas alive, 2 required","required":2,"alive":1}"#,
        ),
        ("PUT", _) => resp(204, &[("x-causal-context", "NEWCTX")], b""),
        ("DELETE", _) => resp(204, &[], b""),
        _ => json_err(404, r#"{"error":"not_found","message":"no such key"}"#),
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_the_raw_value_without_a_newline() {
    let (url, _) = node().await;
    let out = qkv(&url, &["get", "k"], b"").await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siblings_print_a_table_and_exit_3() {
    let (url, _) = node().await;
    let out = qkv(&url, &["get", "sib"], b"").await;
    assert_eq!(out.status.code(), Some(3));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("2 siblings"), "{stdout}");
    assert!(stdout.contains("0xff"), "{stdout}");
    let out = qkv(&url, &["--json", "get", "sib"], b"").await;
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["context"], "CS");
    assert_eq!(v["values"][1]["value_base64"], "/w==");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_unavailable_are_one_line_errors_with_exit_1() {
    let (url, _) = node().await;
    let out = qkv(&url, &["get", "nothing"], b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        "Error: not_found: no value for key \"nothing\" in bucket \"default\"\n"
    );
    let out = qkv(&url, &["put", "down", "v"], b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error: unavailable (503): 1 of 3 replicas alive, 2 required\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reads_stdin_and_prints_the_new_context() {
    let (url, seen) = node().await;
    let all: Vec<u8> = (0..=255).collect();
    let out = qkv(
        &url,
        &["put", "a/b", "--w", "all", "--context", "OLD"],
        &all,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "NEWCTX\n");
    let seen = seen.lock().unwrap();
    let put = seen.last().unwrap();
    assert_eq!(put.uri, "/buckets/default/keys/a%2Fb?w=all");
    assert_eq!(put.body, all);
    assert_eq!(put.header("x-causal-context"), Some("OLD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_succeeds_silently() {
    let (url, seen) = node().await;
    let out = qkv(&url, &["delete", "-b", "b1", "k"], b"").await;
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(seen.lock().unwrap()[0].method, "DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_exits_2() {
    let (url, _) = node().await;
    let out = qkv(&url, &["get", "k", "--r", "most"], b"").await;
    assert_eq!(out.status.code(), Some(2));
}

/// `qkv … | head -1`: a reader that goes away ends `qkv` quietly, as any
/// Unix tool, not with a panic about a broken pipe.
#[test]
fn a_closed_stdout_ends_qkv_quietly() {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args([
            "exp", "predict", "--r", "1,2,3", "--w", "1,2,3", "--delays", "lnkd-ssd", "--trials",
            "2000", "--k", "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qkv runs");
    // Close the reading end before qkv writes its many lines.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("stderr is text");
    let status = child.wait().expect("qkv ends");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!status.success(), "it cannot have printed everything");
}
