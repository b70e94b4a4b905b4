//! Fault injection on real `qkvd` processes (`--fault-injection`): one-way
//! and symmetric partitions, an injected W delay seen in a write's trace,
//! `qkv faults` round trips, a clock offset seen in an LWW key's
//! timestamps with the remote timestamp clamped and counted, and the
//! route's 404 and admin token.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use quorumkv_tests::cluster_ops::{
    body_text, faults, key_path, metric, set_bucket_everywhere, start_cluster, wait_status,
};
use quorumkv_tests::http::Api;
use quorumkv_tests::{Cluster, NodeSpec, qkv_bin};
use serde_json::{Value, json};

/// Fault injection on, and gossip fast enough that a partition convicts
/// within seconds.
const ARGS: [&str; 3] = ["--fault-injection", "--gossip-interval-ms", "100"];

/// Runs `qkv ARGS` against `node`.
fn qkv(node: &str, args: &[&str]) -> Result<Output> {
    std::process::Command::new(qkv_bin()?)
        .arg("--node")
        .arg(node)
        .args(args)
        .env_remove("QKV_NODE")
        .env_remove("QKV_TOKEN")
        .output()
        .context("running qkv")
}

fn ok(out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "qkv exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The events of an `X-Trace` header, as (at_us, event) pairs.
fn events(header: &str) -> Result<Vec<(u64, String)>> {
    let v: Value = serde_json::from_str(header).context("X-Trace is JSON")?;
    Ok(v.as_array()
        .context("X-Trace is an array")?
        .iter()
        .map(|e| {
            (
                e["at_us"].as_u64().unwrap_or(u64::MAX),
                e["event"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

fn at(events: &[(u64, String)], event: &str) -> Result<u64> {
    events
        .iter()
        .find(|(_, e)| e == event)
        .map(|(t, _)| *t)
        .with_context(|| format!("no event {event:?} in {events:?}"))
}

fn host_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_partition_times_out_a_s_calls_to_b_while_b_s_calls_to_a_succeed() -> Result<()> {
    let c = start_cluster(3, &ARGS).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    // n1|n2 one way: n2 does not hear n1; n1 hears n2. Every node knows.
    let cut = json!({"partition": {"sides": [["n1"], ["n2"]], "one_way": true}});
    for api in &apis {
        faults(api, "PATCH", cut.clone()).await?;
    }
    // A w=all write through n1 waits for n2 in vain: a timeout at the
    // deadline naming n2, not a fast failure.
    let began = Instant::now();
    let r = apis[0]
        .put(
            &key_path("default", b"from-n1", "w=all&timeout_ms=600"),
            b"v",
        )
        .await?;
    let took = began.elapsed();
    assert_eq!(r.status, 504, "{}", body_text(&r));
    assert!(took >= Duration::from_millis(550), "failed fast: {took:?}");
    let failed = r.json()["failed"].to_string();
    assert!(
        failed.contains("n2") && failed.contains("no answer"),
        "{failed}"
    );
    // Through n2, n1 answers.
    let r = apis[1]
        .put(
            &key_path("default", b"from-n2", "w=all&timeout_ms=2000"),
            b"v",
        )
        .await?;
    assert_eq!(r.status, 204, "{}", body_text(&r));
    let cut_on = |i: usize| metric(&apis[i], "qkv_fault_messages_total", &[("fault", "cut")]);
    assert!(cut_on(0).await? >= 1.0);
    assert_eq!(cut_on(1).await?, 0.0);
    assert_eq!(metric(&apis[0], "qkv_fault_peers_cut", &[]).await?, 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symmetric_partition_convicts_each_side_and_heal_brings_them_back() -> Result<()> {
    let c = start_cluster(3, &ARGS).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let url = c.nodes[0].url();
    let table = ok(qkv(&url, &["faults", "partition", "n1|n2,n3"])?)?;
    assert_eq!(table.matches("n1|n2,n3").count(), 3, "{table}");
    let within = Duration::from_secs(20);
    let took = wait_status(&apis[0], "n2", "down", within).await?;
    wait_status(&apis[0], "n3", "down", within).await?;
    wait_status(&apis[1], "n1", "down", within).await?;
    wait_status(&apis[2], "n1", "down", within).await?;
    // n2 and n3 still see each other.
    wait_status(&apis[1], "n3", "up", within).await?;
    println!("convicted across the partition in {took:?}");
    ok(qkv(&url, &["faults", "heal"])?)?;
    for (i, other) in [(0, "n2"), (0, "n3"), (1, "n1"), (2, "n1")] {
        wait_status(&apis[i], other, "up", within).await?;
    }
    let shown: Value = serde_json::from_str(&ok(qkv(&url, &["--json", "faults", "show"])?)?)?;
    for n in shown["nodes"].as_array().context("nodes")? {
        assert_eq!(n["faults"], json!({}), "{n}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_w_delay_to_one_replica_shows_in_a_traced_write() -> Result<()> {
    let c = start_cluster(3, &ARGS).await?;
    let n1 = Api::new(&c.nodes[0].url());
    faults(&n1, "PUT", json!({"peers": {"n2": {"w": "const:200"}}})).await?;
    let r = n1
        .put(&key_path("default", b"slow", "w=all&trace=true"), b"v")
        .await?;
    assert_eq!(r.status, 204, "{}", body_text(&r));
    let ev = events(&r.header("x-trace").context("X-Trace")?)?;
    let to_n2 = at(&ev, "n2 acknowledged")? - at(&ev, "replicating to n2")?;
    let to_n3 = at(&ev, "n3 acknowledged")? - at(&ev, "replicating to n3")?;
    println!("replication round trips: n2 {to_n2} µs, n3 {to_n3} µs");
    assert!((200_000..350_000).contains(&to_n2), "n2: {to_n2} µs");
    assert!(to_n3 < 100_000, "n3: {to_n3} µs");
    let count = metric(&n1, "qkv_fault_delay_seconds_count", &[("leg", "w")]).await?;
    let sum = metric(&n1, "qkv_fault_delay_seconds_sum", &[("leg", "w")]).await?;
    assert!(
        count >= 1.0 && sum / count >= 0.2 && sum / count < 0.25,
        "{sum} / {count}"
    );
    let mean = metric(
        &n1,
        "qkv_fault_setting",
        &[("peer", "n2"), ("setting", "w_mean_ms")],
    )
    .await?;
    assert_eq!(mean, 200.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qkv_faults_set_show_and_clear_round_trip_on_every_node() -> Result<()> {
    let c = start_cluster(3, &["--fault-injection"]).await?;
    let url = c.nodes[1].url();
    let set = ok(qkv(
        &url,
        &[
            "faults",
            "set",
            "--w-delay",
            "const:5",
            "--drop",
            "0.01",
            "--to",
            "n2",
        ],
    )?)?;
    assert_eq!(
        set.matches("to n2: w=const:5 drop=0.01").count(),
        3,
        "{set}"
    );
    ok(qkv(
        &url,
        &["faults", "clock", "--offset-ms", "-40", "--only", "n3"],
    )?)?;
    let shown: Value = serde_json::from_str(&ok(qkv(&url, &["--json", "faults", "show"])?)?)?;
    let nodes = shown["nodes"].as_array().context("nodes")?;
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(
            n["faults"]["peers"]["n2"],
            json!({"w": "const:5", "drop": 0.01}),
            "{n}"
        );
        let clock = &n["faults"]["clock"];
        if n["node"] == "n3" {
            assert_eq!(clock["offset_ms"], -40, "{n}");
        } else {
            assert!(clock.is_null(), "{n}");
        }
    }
    let table = ok(qkv(&url, &["faults", "clear"])?)?;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows.iter().all(|r| r[1..] == ["-", "-", "-", "-"]),
        "{table}"
    );
    let shown: Value = serde_json::from_str(&ok(qkv(&url, &["--json", "faults", "show"])?)?)?;
    for n in shown["nodes"].as_array().context("nodes")? {
        assert_eq!(n["faults"], json!({}), "{n}");
    }
    let out = qkv(&url, &["faults", "show", "--only", "n9"])?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error: no member n9 (members: n1, n2, n3)"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_offset_shows_in_lww_timestamps_and_a_timestamp_beyond_the_max_offset_is_clamped()
-> Result<()> {
    let c = start_cluster(3, &ARGS).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    set_bucket_everywhere(&c, "sessions", json!({"conflicts": "lww"})).await?;
    let offset = 5_000;
    faults(&apis[0], "PATCH", json!({"clock": {"offset_ms": offset}})).await?;
    let shown = metric(&apis[0], "qkv_fault_clock_offset_ms", &[]).await?;
    assert!((shown - offset as f64).abs() < 100.0, "{shown}");
    // n1 mints the version with its clock 5 s ahead; n2 merges it.
    let r = apis[0]
        .put(&key_path("sessions", b"k", "w=all"), b"fast")
        .await?;
    assert_eq!(r.status, 204, "{}", body_text(&r));
    let stamp = |api: Api, key: &'static str| async move {
        let r = api
            .get(&format!("/internal/local/buckets/sessions/keys/{key}"))
            .await?;
        let v = r.json();
        let value = v["values"][0]["value_base64"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ts = v["values"][0]["timestamp_ms"]
            .as_u64()
            .context("timestamp_ms")?;
        anyhow::Ok((value, ts as i64 - host_ms() as i64))
    };
    let (_, ahead) = stamp(apis[1].clone(), "k").await?;
    assert!(
        (ahead - offset).abs() < 1_500,
        "n2 holds a version {ahead} ms ahead"
    );
    assert!(metric(&apis[1], "qkv_hlc_clamped_total", &[]).await? >= 1.0);
    // A blind write through n2 still replaces it (stamped after the
    // version it saw).
    let r = apis[1]
        .put(&key_path("sessions", b"k", "w=quorum"), b"later")
        .await?;
    assert_eq!(r.status, 204, "{}", body_text(&r));
    let (value, _) = stamp(apis[1].clone(), "k").await?;
    assert_eq!(value, "bGF0ZXI=", "the later write lost");
    // n2's own clock was not dragged along: another key's write is
    // stamped at the host's time.
    let r = apis[1]
        .put(&key_path("sessions", b"other", "w=quorum"), b"v")
        .await?;
    assert_eq!(r.status, 204, "{}", body_text(&r));
    let (_, other) = stamp(apis[1].clone(), "other").await?;
    assert!(other.abs() < 1_000, "n2's clock moved {other} ms");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_faults_route_is_404_without_fault_injection_and_needs_the_admin_token() -> Result<()> {
    let off = Cluster::single(&[])?;
    let r = Api::new(&off.node().url()).get("/internal/faults").await?;
    assert_eq!(r.status, 404);
    assert!(
        body_text(&r).contains("start qkvd with --fault-injection"),
        "{}",
        body_text(&r)
    );
    let dir = tempfile::tempdir()?;
    let (client, admin) = quorumkv_tests::token_files(dir.path())?;
    let on = Cluster::start(vec![NodeSpec::new("n1").args([
        "--fault-injection",
        "--client-tokens-file",
        &client,
        "--admin-token-file",
        &admin,
    ])])?;
    let api = Api::new(&on.node().url());
    let body = Some(br#"{"storage_delay_ms":1}"#.to_vec());
    let r = api
        .send(
            "PUT",
            "/internal/faults",
            &[("authorization", "Bearer c-token")],
            body.clone(),
        )
        .await?;
    assert_eq!(r.status, 401, "{}", body_text(&r));
    let r = api
        .send(
            "PUT",
            "/internal/faults",
            &[("authorization", "Bearer a-token")],
            body,
        )
        .await?;
    assert_eq!((r.status, r.json()), (200, json!({"storage_delay_ms": 1})));
    // The older route shows the same storage delay.
    let r = api
        .get_with("/internal/fault", &[("authorization", "Bearer a-token")])
        .await?;
    assert_eq!(r.json(), json!({"storage_delay_ms": 1}));
    let r = api
        .send(
            "PATCH",
            "/internal/faults",
            &[("authorization", "Bearer a-token")],
            Some(br#"{"all_peers":{"drop":2}}"#.to_vec()),
        )
        .await?;
    assert_eq!(r.status, 400);
    assert!(
        body_text(&r).contains("drop of all_peers is 2"),
        "{}",
        body_text(&r)
    );
    Ok(())
}
