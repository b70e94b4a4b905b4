//! `qkv ring what-if --down n2,n3`: which keys stop serving each
//! consistency level while those nodes are down.
//!
//! A key's replica set is constant inside a vnode range, so counting the
//! live replicas of every range answers the question exactly:
//!
//! * `one` is lost where no replica is live,
//! * `quorum` where fewer than `rf/2 + 1` are,
//! * `all` where any replica is down.
//!
//! With strict quorums (the default) these are exactly the requests that
//! would get 503 `unavailable`; sloppy-quorum buckets still accept writes
//! there, on stand-ins.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use quorumkv_ring::{LevelLoss, WhatIf, what_if};
use serde_json::{Value, json};

use super::super::Globals;
use super::super::output::table;
use super::{RANGES_SHOWN, SourceArgs, capped_title, emit, emit_json, load, pct};

/// Arguments of `qkv ring what-if`.
#[derive(Debug, Args)]
pub struct WhatIfArgs {
    /// Nodes assumed down (repeat or comma-separate).
    #[arg(long, value_name = "NODES", value_delimiter = ',', required = true)]
    pub down: Vec<String>,
    /// List every lost range, not just the first 20 per level.
    #[arg(long)]
    pub all_ranges: bool,
    /// Where the ring comes from.
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Computes and prints the what-if.
pub async fn run(g: &Globals, a: WhatIfArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(g, &a.source).await?;
    let down: Vec<&str> = a.down.iter().map(String::as_str).collect();
    let w = what_if(&loaded.ring, &down, loaded.rf)?;
    if g.json {
        let mut v = serde_json::to_value(&w)?;
        if let Value::Object(o) = &mut v {
            o.insert("source".into(), json!(loaded.origin));
        }
        emit_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    writeln!(
        out,
        "Down: {} of {} nodes; rf {} ({})",
        w.down.join(", "),
        loaded.ring.node_count(),
        w.rf,
        loaded.origin
    )?;
    writeln!(out)?;
    write!(out, "{}", levels_table(&w))?;
    for (name, level) in levels(&w) {
        if level.ranges.is_empty() {
            continue;
        }
        let shown = if a.all_ranges {
            level.ranges.len()
        } else {
            level.ranges.len().min(RANGES_SHOWN)
        };
        writeln!(out)?;
        writeln!(
            out,
            "{}",
            capped_title(
                &format!("Ranges that lose {name}"),
                level.ranges.len(),
                shown
            )
        )?;
        write!(out, "{}", ranges_table(level, shown))?;
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The three levels with their names, strictest last.
fn levels(w: &WhatIf) -> [(&'static str, &LevelLoss); 3] {
    [("one", &w.one), ("quorum", &w.quorum), ("all", &w.all)]
}

/// One row per level: live replicas needed, ranges and keyspace lost.
pub fn levels_table(w: &WhatIf) -> String {
    let rows: Vec<Vec<String>> = levels(w)
        .iter()
        .map(|(name, l)| {
            vec![
                name.to_string(),
                l.required.to_string(),
                l.ranges.len().to_string(),
                pct(l.fraction),
                pct(1.0 - l.fraction),
            ]
        })
        .collect();
    table(
        &[
            "LEVEL",
            "NEEDS",
            "RANGES LOST",
            "KEYSPACE LOST",
            "STILL SERVED",
        ],
        &rows,
    )
}

/// The first `shown` lost ranges of one level.
pub fn ranges_table(level: &LevelLoss, shown: usize) -> String {
    let rows: Vec<Vec<String>> = level
        .ranges
        .iter()
        .take(shown)
        .map(|r| {
            vec![
                r.range.start.to_string(),
                r.range.end.to_string(),
                pct(r.range.fraction()),
                r.replicas.join(","),
                r.live.to_string(),
            ]
        })
        .collect();
    table(&["START", "END", "FRACTION", "REPLICAS", "LIVE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorumkv_ring::Ring;

    #[test]
    fn levels_table_shows_each_level_once() {
        let q = 1u64 << 62;
        let mut r = Ring::new();
        for (k, n) in ["n1", "n2", "n3", "n4"].iter().enumerate() {
            r.insert_node(n, &[k as u64 * q]);
        }
        let w = what_if(&r, &["n2", "n3"], 3).unwrap_or_else(|e| panic!("{e}"));
        let t = levels_table(&w);
        let cols: Vec<Vec<&str>> = t
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(cols[0], ["one", "1", "0", "0.000%", "100.000%"]);
        assert_eq!(cols[1], ["quorum", "2", "2", "50.000%", "50.000%"]);
        assert_eq!(cols[2][3], "100.000%");
    }
}
