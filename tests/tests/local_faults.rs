//! `qkv local`'s process faults end to end: a real local cluster started
//! through the CLI into a temporary directory, then `kill`, `start`,
//! `restart`, `pause`, `resume` and `wipe` on one node, checked through
//! `qkv local status`, `cluster.json`, `/health` and what the node stores.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use quorumkv_client::local::cluster::read_record;
use quorumkv_client::local::process::probe_health;
use quorumkv_tests::cluster_ops::{key_path, local, local_is};
use quorumkv_tests::http::Api;
use quorumkv_tests::{consecutive_ports, eventually, qkvd_bin, run_qkv, text};
use serde_json::Value;

/// A local cluster started with `qkv local up`; `qkv local down` when
/// dropped, so that a failing test leaves no process behind.
struct CliCluster {
    dir: tempfile::TempDir,
}

impl CliCluster {
    fn up(nodes: u16) -> Result<CliCluster> {
        let dir = tempfile::Builder::new().prefix("qkv-local-").tempdir()?;
        let http = consecutive_ports(nodes)?.to_string();
        let listen = consecutive_ports(nodes)?.to_string();
        let qkvd = qkvd_bin()?.display().to_string();
        let c = CliCluster { dir };
        let nodes = nodes.to_string();
        let out = c.run(&[
            "up",
            "--nodes",
            &nodes,
            "--base-http-port",
            &http,
            "--base-listen-port",
            &listen,
            "--qkvd",
            &qkvd,
        ])?;
        if !out.status.success() {
            bail!("qkv local up failed: {}", text(&out.stderr));
        }
        Ok(c)
    }

    /// `qkv local ARGS --dir DIR`.
    fn run(&self, args: &[&str]) -> Result<Output> {
        let dir = self.dir.path().display().to_string();
        let mut line = vec!["local"];
        line.extend(args);
        line.extend(["--dir", &dir]);
        run_qkv(&line)
    }

    /// `qkv local ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!("qkv local {args:?} failed: {}", text(&out.stderr));
        }
        Ok(text(&out.stdout))
    }

    /// `qkv local ARGS`, which must fail with one `Error: ...` line; that
    /// line.
    fn refused(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if out.status.code() != Some(1) {
            bail!(
                "qkv local {args:?} should fail with 1, got {}: {}",
                out.status,
                text(&out.stdout)
            );
        }
        Ok(text(&out.stderr).trim_end().to_string())
    }

    /// Node id -> `(state, pid)` per `qkv --json local status`.
    fn status(&self, id: &str) -> Result<(String, u64)> {
        let dir = self.dir.path().display().to_string();
        let out = run_qkv(&["--json", "local", "status", "--dir", &dir])?;
        let v: Value = serde_json::from_slice(&out.stdout).context("status --json")?;
        let node = v
            .as_array()
            .and_then(|a| a.iter().find(|n| n["node"]["id"] == id))
            .with_context(|| format!("{id} missing from {v}"))?;
        let state = node["state"].as_str().unwrap_or_default().to_string();
        Ok((state, node["node"]["pid"].as_u64().unwrap_or_default()))
    }

    /// Node id -> (pid, http address) per cluster.json.
    fn recorded(&self, id: &str) -> Result<(u32, String)> {
        let rec = read_record(self.dir.path())?.context("no cluster.json")?;
        let n = rec
            .nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("{id} not recorded"))?;
        Ok((n.pid, n.http.clone()))
    }

    fn data_dir(&self, id: &str) -> std::path::PathBuf {
        self.dir.path().join(id)
    }
}

impl Drop for CliCluster {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

/// Waits until `/health` at `addr` answers.
async fn healthy(addr: &str) -> Result<()> {
    let a = addr.to_string();
    eventually(Duration::from_secs(10), "/health answers", || {
        let a = a.clone();
        async move { probe_health(&a).is_ok() }
    })
    .await
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

#[tokio::test]
async fn a_killed_node_shows_stopped_and_starts_again_under_a_new_recorded_pid() -> Result<()> {
    let c = CliCluster::up(2)?;
    let (n1_pid, _) = c.recorded("n1")?;
    let (old, http) = c.recorded("n2")?;

    let said = c.ok(&["kill", "n2"])?;
    assert!(said.contains(&format!("killed pid {old}")), "{said}");
    assert_eq!(c.status("n2")?, ("stopped".to_string(), u64::from(old)));
    assert_eq!(c.status("n1")?.0, "running", "only n2 was killed");
    assert!(
        probe_health(&http).is_err(),
        "a killed node answers nothing"
    );
    let err = c.refused(&["kill", "n2"])?;
    assert_eq!(err, format!("Error: n2 is not running (pid {old} is gone)"));

    c.ok(&["start", "n2"])?;
    let (new, _) = c.recorded("n2")?;
    assert_ne!(new, old, "the record holds the new pid");
    assert_eq!(c.recorded("n1")?.0, n1_pid, "n1's record is untouched");
    assert_eq!(c.status("n2")?, ("running".to_string(), u64::from(new)));
    probe_health(&http).map_err(anyhow::Error::msg)?;
    let err = c.refused(&["start", "n2"])?;
    assert_eq!(err, format!("Error: n2 is already running (pid {new})"));

    let said = c.ok(&["restart", "n2"])?;
    let (again, _) = c.recorded("n2")?;
    assert!(said.contains(&format!("killed pid {new}")), "{said}");
    assert!(said.contains(&format!("started pid {again}")), "{said}");
    assert_ne!(again, new);
    probe_health(&http).map_err(anyhow::Error::msg)?;

    let err = c.refused(&["kill", "n9"])?;
    assert_eq!(
        err,
        "Error: no node n9 in the local cluster (nodes: n1, n2)"
    );
    Ok(())
}

#[tokio::test]
async fn a_paused_node_answers_nothing_until_it_is_resumed() -> Result<()> {
    let c = CliCluster::up(1)?;
    let (pid, http) = c.recorded("n1")?;

    c.ok(&["pause", "n1"])?;
    assert_eq!(c.status("n1")?, ("paused".to_string(), u64::from(pid)));
    let table = c.ok(&["status"])?;
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("n1 "))
        .with_context(|| format!("no n1 row in\n{table}"))?
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..3],
        ["n1", pid.to_string().as_str(), "paused"],
        "{table}"
    );
    // A second of probes (each waits 500 ms for an answer): none is
    // answered while the process is stopped.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert!(probe_health(&http).is_err(), "a paused node answered");
    }
    let err = c.refused(&["pause", "n1"])?;
    assert_eq!(err, format!("Error: n1 is already paused (pid {pid})"));

    c.ok(&["resume", "n1"])?;
    assert_eq!(c.status("n1")?, ("running".to_string(), u64::from(pid)));
    healthy(&http).await?;
    assert_eq!(c.recorded("n1")?.0, pid, "the same process goes on");
    let err = c.refused(&["resume", "n1"])?;
    assert_eq!(
        err,
        format!("Error: n1 is not paused (pid {pid} is running)")
    );
    Ok(())
}

#[tokio::test]
async fn a_wiped_node_comes_back_healthy_without_what_it_stored() -> Result<()> {
    let c = CliCluster::up(2)?;
    let (old, http) = c.recorded("n2")?;
    let n1 = Api::new(&format!("http://{}", c.recorded("n1")?.1));
    let n2 = Api::new(&format!("http://{http}"));
    // n=2 of 2 nodes and w=all: both nodes store the key.
    let r = n1
        .put(&key_path("default", b"kept", "w=all"), b"before")
        .await?;
    assert_eq!(r.status, 204);
    assert!(local_is(&n2, "default", b"kept", b"before").await);
    // A file of our own in the data dir shows it is deleted, not reused.
    let marker = c.data_dir("n2").join("marker");
    std::fs::write(&marker, b"x")?;

    let said = c.ok(&["wipe", "n2"])?;
    assert!(said.contains(&format!("killed pid {old}")), "{said}");
    let (new, _) = c.recorded("n2")?;
    assert_ne!(new, old);
    assert_eq!(c.status("n2")?, ("running".to_string(), u64::from(new)));
    probe_health(&http).map_err(anyhow::Error::msg)?;
    assert!(!marker.exists(), "the data dir was deleted");
    assert!(!is_empty_dir(&c.data_dir("n2")), "qkvd made a new one");
    // A new client: the old one's pooled connection died with the process.
    let n2 = Api::new(&format!("http://{http}"));
    assert_eq!(
        local(&n2, "default", b"kept").await?,
        None,
        "the wiped node lost the key"
    );
    assert!(
        local_is(&n1, "default", b"kept", b"before").await,
        "n1 still holds it"
    );
    Ok(())
}
