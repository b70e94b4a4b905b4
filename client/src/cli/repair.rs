//! `qkv repair`: runs an anti-entropy pass on each `--node` in turn
//! (`POST /internal/repair`) and prints what it compared and exchanged.
//!
//! Unlike the other commands, every `--node` is a target, not a fallback:
//! a repair pass covers the ranges of the node that runs it, so repairing a
//! whole cluster means naming every node (running it on every node is
//! harmless: merges are idempotent). The first node that fails stops the
//! command with a one-line error and exit code 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use quorumkv_client::Client;
use serde_json::Value;

use super::Globals;
use super::output::{print_json, table};

/// `qkv repair` options.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// How long one node's pass may take, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

/// Repairs each `--node` in order and prints the reports.
pub async fn run(g: &Globals, args: RepairArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut reports = Vec::new();
    for node in &g.nodes {
        let mut b = Client::builder(vec![node.clone()]).timeout(g.client_timeout);
        if let Some(t) = &g.token {
            b = b.bearer_token(t.clone());
        }
        let report = b
            .build()?
            .repair(timeout)
            .await
            .with_context(|| format!("repair on {node}"))?;
        if !g.json {
            print!("{}", summary(node, &report));
        }
        reports.push(report);
    }
    if g.json {
        print_json(&Value::Array(reports))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn num(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}

/// A readable summary of one node's report: totals, then one row per peer,
/// then the peers' errors.
pub fn summary(url: &str, r: &Value) -> String {
    let mut out = format!(
        "repair of {} ({url}): {} ranges at n={}, {} compared with peers, {} differing, {} leaves differing; \
         {} keys received ({} B), {} keys sent ({} B) in {:.2} s; {} errors\n",
        r["node"].as_str().unwrap_or("?"),
        num(r, "ranges"),
        num(r, "n"),
        num(r, "ranges_compared"),
        num(r, "ranges_differing"),
        num(r, "leaves_differing"),
        num(r, "keys_received"),
        num(r, "bytes_received"),
        num(r, "keys_sent"),
        num(r, "bytes_sent"),
        num(r, "duration_ms") as f64 / 1000.0,
        num(r, "errors"),
    );
    let mut errors = Vec::new();
    let rows: Vec<Vec<String>> = r["peers"]
        .as_object()
        .map(|peers| {
            peers
                .iter()
                .map(|(id, p)| {
                    if let Some(es) = p["errors"].as_array() {
                        errors.extend(
                            es.iter()
                                .filter_map(Value::as_str)
                                .map(|e| format!("  {id}: {e}\n")),
                        );
                    }
                    vec![
                        id.clone(),
                        num(p, "ranges_compared").to_string(),
                        num(p, "ranges_differing").to_string(),
                        num(p, "leaves_differing").to_string(),
                        num(p, "keys_received").to_string(),
                        num(p, "keys_sent").to_string(),
                        num(p, "ranges_skipped").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !rows.is_empty() {
        out += &table(
            &[
                "PEER",
                "COMPARED",
                "DIFFERING",
                "LEAVES",
                "RECEIVED",
                "SENT",
                "SKIPPED",
            ],
            &rows,
        );
    }
    if !errors.is_empty() {
        out += "errors:\n";
        out.extend(errors);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_totals_peers_and_errors() {
        let r: Value = serde_json::from_str(
            r#"{"node":"n3","n":3,"depth":10,"ranges":48,"ranges_compared":80,"ranges_differing":40,
                "leaves_differing":90,"keys_received":200,"keys_sent":0,"bytes_received":4096,
                "bytes_sent":0,"duration_ms":1234,"errors":1,
                "peers":{"n1":{"ranges_compared":48,"ranges_differing":30,"leaves_differing":60,
                               "keys_received":150,"keys_sent":0,"ranges_skipped":0,"errors":[]},
                         "n2":{"ranges_compared":32,"ranges_differing":10,"leaves_differing":30,
                               "keys_received":50,"keys_sent":0,"ranges_skipped":16,
                               "errors":["range (1, 2]: peer n2: no answer within 60000 ms"]}}}"#,
        )
        .expect("json");
        let s = summary("http://x", &r);
        assert!(
            s.starts_with("repair of n3 (http://x): 48 ranges at n=3"),
            "{s}"
        );
        assert!(s.contains("200 keys received (4096 B)"), "{s}");
        assert!(s.contains("in 1.23 s; 1 errors"), "{s}");
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[1].starts_with("PEER"), "{s}");
        let cols: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(cols, ["n2", "32", "10", "30", "50", "0", "16"], "{s}");
        assert!(s.contains("  n2: range (1, 2]: peer n2: no answer"), "{s}");
    }
}
