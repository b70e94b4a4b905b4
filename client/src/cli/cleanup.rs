//! `qkv cleanup`: each node drops the data of keys it is no longer a
//! replica of (`POST /cluster/cleanup`), after a join or decommission moved
//! ranges away from it.
//!
//! Like `qkv repair`, every `--node` is a target, not a fallback (cleanup
//! works on the data of the node that runs it); `--all` targets every up
//! member instead. Nodes are cleaned one after the other — a cleanup scans
//! the whole node — and one that fails (409 while a change is in flight)
//! does not stop the others: the table shows every node, and the command
//! then fails with one line naming how many did not clean up.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::json;

use super::Globals;
use super::output::{print_json, table};
use super::ring::admin::{CleanupAnswer, NodeHttp, members};
use super::ring::bytes;

/// `qkv cleanup` options.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Clean every up member (as the first reachable --node lists them)
    /// instead of each --node.
    #[arg(long)]
    pub all: bool,
    /// How long one node's cleanup may take, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

/// Runs `qkv cleanup`.
pub async fn run(g: &Globals, a: CleanupArgs) -> anyhow::Result<ExitCode> {
    let targets: Vec<(String, String)> = if a.all {
        let (members, _) = members(g).await?;
        members
            .into_iter()
            .filter(|(_, (m, _))| m.status == "up")
            .map(|(id, (_, url))| (id, url))
            .collect()
    } else {
        g.nodes
            .iter()
            .map(|u| (String::new(), u.trim_end_matches('/').to_string()))
            .collect()
    };
    if targets.is_empty() {
        bail!("no node to clean up");
    }
    let http = NodeHttp::new(g)?;
    let timeout = Duration::from_secs(a.timeout_secs);
    let mut done: Vec<(String, CleanupAnswer)> = Vec::new();
    let mut failed: Vec<(String, String, String)> = Vec::new();
    for (id, url) in &targets {
        match http
            .post::<CleanupAnswer>(url, "/cluster/cleanup", None, Some(timeout))
            .await
        {
            Ok(ans) => done.push((url.clone(), ans)),
            Err(e) => {
                // Without --all the node's id is only known from an answer.
                let who = if id.is_empty() { "?" } else { id.as_str() };
                failed.push((who.to_string(), url.clone(), e.to_string()));
            }
        }
    }
    if g.json {
        let nodes: Vec<_> = done
            .iter()
            .map(|(url, a)| {
                json!({"url": url, "node": a.node, "keys_removed": a.keys_removed,
                "bytes_removed": a.bytes_removed, "duration_ms": a.duration_ms})
            })
            .collect();
        let errors: Vec<_> = failed
            .iter()
            .map(|(n, url, e)| json!({"node": n, "url": url, "error": e}))
            .collect();
        print_json(&json!({"nodes": nodes, "errors": errors}))?;
    } else {
        let mut rows: Vec<Vec<String>> = done
            .iter()
            .map(|(url, a)| {
                vec![
                    a.node.clone(),
                    url.clone(),
                    a.keys_removed.to_string(),
                    bytes(a.bytes_removed),
                    format!("{:.2} s", a.duration_ms as f64 / 1000.0),
                ]
            })
            .collect();
        rows.extend(failed.iter().map(|(n, url, e)| {
            vec![
                n.clone(),
                url.clone(),
                "-".into(),
                "-".into(),
                format!("failed: {e}"),
            ]
        }));
        print!(
            "{}",
            table(
                &["NODE", "URL", "KEYS REMOVED", "BYTES REMOVED", "DURATION"],
                &rows
            )
        );
        let keys: u64 = done.iter().map(|(_, a)| a.keys_removed).sum();
        let b: u64 = done.iter().map(|(_, a)| a.bytes_removed).sum();
        println!(
            "total: {keys} keys, {} removed on {} node{}",
            bytes(b),
            done.len(),
            if done.len() == 1 { "" } else { "s" }
        );
    }
    if !failed.is_empty() {
        bail!(
            "cleanup failed on {} of {} nodes (first: {}: {})",
            failed.len(),
            targets.len(),
            failed[0].1,
            failed[0].2
        );
    }
    Ok(ExitCode::SUCCESS)
}
