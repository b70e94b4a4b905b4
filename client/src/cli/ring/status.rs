//! `qkv ring status`: the membership changes in flight across the cluster.
//!
//! Every up member is asked for `GET /cluster/changes`; each reports the
//! changes it knows of and the streams it receives, so one change can
//! appear on several rows (the joining node, each node a decommission
//! streams to). Finished changes the nodes still keep are hidden unless
//! `--all`. Members that are down are skipped, members that do not answer
//! are named in a warning (and when none answers, that is the error).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use serde_json::json;

use super::super::Globals;
use super::super::output::table;
use super::admin::{Change, ChangesAnswer, NodeHttp, members};
use super::stage::now_ms;
use super::{bytes, emit, emit_json};

/// Arguments of `qkv ring status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also list finished changes the nodes still report.
    #[arg(long)]
    pub all: bool,
}

/// Runs `qkv ring status`.
pub async fn run(g: &Globals, a: StatusArgs) -> anyhow::Result<ExitCode> {
    let (members, _) = members(g).await?;
    let http = NodeHttp::new(g)?;
    let mut answers: BTreeMap<String, ChangesAnswer> = BTreeMap::new();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    for (id, (m, url)) in &members {
        if m.status != "up" {
            continue;
        }
        match http.get::<ChangesAnswer>(url, "/cluster/changes").await {
            Ok(ans) => {
                answers.insert(id.clone(), ans);
            }
            Err(e) => {
                errors.insert(id.clone(), e.to_string());
            }
        }
    }
    if answers.is_empty()
        && let Some((id, e)) = errors.iter().next()
    {
        bail!(
            "no member answered /cluster/changes ({} asked; {id}: {e})",
            errors.len()
        );
    }
    if g.json {
        emit_json(&json!({"nodes": answers, "errors": errors}))?;
        return Ok(ExitCode::SUCCESS);
    }
    for (id, e) in &errors {
        eprintln!("warning: no answer from {id}: {e}");
    }
    let rows: Vec<Vec<String>> = answers
        .iter()
        .flat_map(|(reporter, ans)| {
            ans.changes
                .iter()
                .filter(|c| a.all || !c.is_done())
                .map(move |c| row(reporter, c))
        })
        .collect();
    let asked = answers.len() + errors.len();
    if rows.is_empty() {
        emit(&format!(
            "No changes in flight ({} of {asked} nodes answered).\n",
            answers.len()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = table(
        &[
            "REPORTED BY",
            "NODE",
            "CHANGE",
            "STATE",
            "RUNNING",
            "STREAMS",
            "KEYS",
            "BYTES",
            "OF ESTIMATE",
            "PROGRESS",
        ],
        &rows,
    );
    out.push_str(&format!(
        "({} of {asked} nodes answered; streams are reported by the node that receives them)\n",
        answers.len()
    ));
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// One table row: a change as `reporter` sees it, with its streams' totals.
fn row(reporter: &str, c: &Change) -> Vec<String> {
    let done = c.streams.iter().filter(|s| s.done).count();
    let keys: u64 = c.streams.iter().map(|s| s.keys).sum();
    let got: u64 = c.streams.iter().map(|s| s.bytes).sum();
    let est: u64 = c.streams.iter().map(|s| s.bytes_estimate).sum();
    let end = c.finished_unix_ms.unwrap_or_else(now_ms);
    let secs = end.saturating_sub(c.started_unix_ms) / 1000;
    let progress = if c.is_done() {
        "100%".to_string()
    } else if est > 0 {
        format!("{:.0}%", (got as f64 / est as f64 * 100.0).min(100.0))
    } else {
        "-".to_string()
    };
    vec![
        reporter.to_string(),
        c.node.clone(),
        c.kind.clone(),
        c.state.clone(),
        format!("{secs} s"),
        format!("{done}/{}", c.streams.len()),
        keys.to_string(),
        bytes(got),
        bytes(est),
        progress,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_totals_its_streams() {
        let c: Change = serde_json::from_value(json!({
            "node": "n4", "kind": "join", "state": "joining",
            "started_unix_ms": 1000, "finished_unix_ms": 5000,
            "streams": [
                {"range":{"start":1,"end":2},"from":"n1","to":"n4","keys":5,"bytes":500,"bytes_estimate":1000,"done":false},
                {"range":{"start":2,"end":3},"from":"n2","to":"n4","keys":5,"bytes":1000,"bytes_estimate":1000,"done":true}
            ]
        }))
        .expect("change");
        let r = row("n4", &c);
        assert_eq!(r[4], "4 s");
        assert_eq!(r[5], "1/2");
        assert_eq!(r[6], "10");
        assert_eq!(r[9], "75%");
    }
}
