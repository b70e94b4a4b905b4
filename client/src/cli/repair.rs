//! `qkv repair [--bucket B]`: runs an anti-entropy pass on each `--node`
//! in turn (`POST /internal/repair`), shows its progress while it runs
//! (polling `GET /internal/repair`, on stderr when that is a terminal),
//! and prints what it compared and exchanged.
//!
//! Unlike the other commands, every `--node` is a target, not a fallback:
//! a repair pass covers the ranges of the node that runs it, so repairing a
//! whole cluster means naming every node (running it on every node is
//! harmless: merges are idempotent). The first node that fails stops the
//! command with a one-line error and exit code 1.

use std::io::{IsTerminal, Write};
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
    /// Repair only this bucket's keys (at its replication factor).
    #[arg(long)]
    pub bucket: Option<String>,
    /// How long one node's pass may take, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

/// How often the progress line is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Repairs each `--node` in order and prints the reports.
pub async fn run(g: &Globals, args: RepairArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let show_progress = std::io::stderr().is_terminal();
    let mut reports = Vec::new();
    for node in &g.nodes {
        let client = g.client_for(vec![node.clone()])?;
        let pass = client.repair_bucket(args.bucket.as_deref(), timeout);
        let report = if show_progress {
            with_progress(&client, node, pass).await
        } else {
            pass.await
        }
        .with_context(|| format!("repair on {node}"))?;
        if !g.json {
            print!("{}", summary(node, &report));
        }
        reports.push(report);
    }
    if g.json {
        print_json(&Value::Array(reports))?;
    } else if reports.len() > 1 {
        println!("{}", totals(&reports));
    }
    Ok(ExitCode::SUCCESS)
}

/// Awaits `pass`, redrawing a progress line on stderr meanwhile.
async fn with_progress<T>(
    client: &Client,
    node: &str,
    pass: impl std::future::Future<Output = T>,
) -> T {
    let mut pass = std::pin::pin!(pass);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let out = loop {
        tokio::select! {
            r = &mut pass => break r,
            _ = tick.tick() => {
                if let Ok(p) = client.repair_progress().await {
                    eprint!("\r\x1b[2K{}", progress_line(node, &p));
                    let _ = std::io::stderr().flush();
                }
            }
        }
    };
    eprint!("\r\x1b[2K");
    out
}

/// One line of progress: a bar of the (range, peer) comparisons done, the
/// keys and bytes moved so far, the time spent.
pub fn progress_line(node: &str, p: &Value) -> String {
    let (done, total) = (num(p, "comparisons_done"), num(p, "comparisons_total"));
    const WIDTH: u64 = 24;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0).min(WIDTH);
    format!(
        "{node} [{}{}] {done}/{total} comparisons, {} keys received, {} sent, {}, {:.1} s",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize),
        num(p, "keys_received"),
        num(p, "keys_sent"),
        human_bytes(num(p, "bytes_received") + num(p, "bytes_sent")),
        num(p, "elapsed_ms") as f64 / 1000.0,
    )
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The sums over several nodes' reports.
pub fn totals(reports: &[Value]) -> String {
    let sum = |f: &str| reports.iter().map(|r| num(r, f)).sum::<u64>();
    let purged: u64 = reports
        .iter()
        .map(|r| r["purge"]["purged"].as_u64().unwrap_or(0))
        .sum();
    format!(
        "total over {} nodes: {} ranges compared, {} keys repaired ({} received, {} sent), \
         {} sent, {} tombstones purged, {} errors",
        reports.len(),
        sum("ranges_compared"),
        sum("keys_received") + sum("keys_sent"),
        sum("keys_received"),
        sum("keys_sent"),
        human_bytes(sum("bytes_sent")),
        purged,
        sum("errors"),
    )
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
    let purged = r["purge"]["purged"].as_u64();
    let divergent = r["divergent_ranges"].as_array().map_or(0, Vec::len);
    let oldest = r["divergent_ranges"][0]["age_secs"].as_u64().unwrap_or(0);
    out += &format!(
        "  {} ranges fully repaired (every replica compared); {} tombstones purged; \
         {} ranges divergent{}\n",
        num(r, "ranges_fully_repaired"),
        purged.map_or_else(|| "no".to_string(), |p| p.to_string()),
        divergent,
        if divergent > 0 {
            format!(" (oldest for {oldest} s)")
        } else {
            String::new()
        },
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
        assert!(lines[1].contains("0 ranges fully repaired"), "{s}");
        assert!(lines[2].starts_with("PEER"), "{s}");
        let cols: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(cols, ["n2", "32", "10", "30", "50", "0", "16"], "{s}");
        assert!(s.contains("  n2: range (1, 2]: peer n2: no answer"), "{s}");
    }

    #[test]
    fn the_progress_line_shows_a_bar_and_what_moved() {
        let p: Value = serde_json::from_str(
            r#"{"running":true,"comparisons_total":48,"comparisons_done":12,"keys_received":340,
                "keys_sent":2,"bytes_received":2097152,"bytes_sent":0,"elapsed_ms":3400}"#,
        )
        .expect("json");
        let l = progress_line("http://n3", &p);
        assert_eq!(
            l,
            "http://n3 [######------------------] 12/48 comparisons, 340 keys received, 2 sent, 2.0 MiB, 3.4 s"
        );
        let none: Value = serde_json::from_str("{}").expect("json");
        assert!(progress_line("x", &none).contains("0/0 comparisons"));
    }

    #[test]
    fn totals_add_up_every_node() {
        let a: Value = serde_json::from_str(
            r#"{"ranges_compared":96,"keys_received":10,"keys_sent":5,"bytes_sent":2048,"errors":0,
                "purge":{"purged":3}}"#,
        )
        .expect("json");
        let t = totals(&[a.clone(), a]);
        assert_eq!(
            t,
            "total over 2 nodes: 192 ranges compared, 30 keys repaired (20 received, 10 sent), 4.0 KiB sent, 6 tombstones purged, 0 errors"
        );
    }
}
