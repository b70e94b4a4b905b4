//! `qkv ring show`: who owns how much of the ring, and how even it is.
//!
//! Two shares per node, both fractions of the token space (and so of the
//! keys, which hash uniformly): *primary*, where the node is the first
//! replica, and *replicated*, where it is among the first `rf` replicas —
//! the data it really stores, and so the share that matters for disk and
//! load. The balance block summarises both with max/mean, min/mean, the
//! coefficient of variation and Dynamo's imbalance ratio (the share of
//! nodes more than 15% off the mean).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use quorumkv_ring::{Ownership, Summary, ownership};
use serde_json::{Value, json};

use super::super::Globals;
use super::super::output::table;
use super::{SourceArgs, emit, emit_json, load, pct, ratio};

/// Arguments of `qkv ring show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Where the ring comes from.
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Prints the ownership table of the cluster's (or the file's) ring.
pub async fn run(g: &Globals, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(g, &args.source).await?;
    let own = ownership(&loaded.ring, loaded.rf);
    if g.json {
        let mut v = serde_json::to_value(&own)?;
        if let Value::Object(o) = &mut v {
            o.insert("source".into(), json!(loaded.origin));
            o.insert("vnodes".into(), json!(loaded.ring.vnode_count()));
        }
        return emit_json(&v).map(|()| ExitCode::SUCCESS);
    }
    let mut out = String::new();
    writeln!(
        out,
        "Ring of {} nodes, {} vnodes, rf {} ({})",
        own.nodes.len(),
        loaded.ring.vnode_count(),
        own.rf,
        loaded.origin
    )?;
    writeln!(out)?;
    write!(out, "{}", ownership_table(&own))?;
    writeln!(out)?;
    write!(out, "{}", balance_table(&own))?;
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// One row per node: rack, vnodes, primary and replicated share, and the
/// replicated share relative to the mean (1.0000 is a fair share).
pub fn ownership_table(own: &Ownership) -> String {
    let mean = own.replicated.mean;
    let rows: Vec<Vec<String>> = own
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                n.rack.clone().unwrap_or_else(|| "-".into()),
                n.vnodes.to_string(),
                pct(n.primary),
                pct(n.replicated),
                if mean > 0.0 {
                    ratio(n.replicated / mean)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "RACK",
            "VNODES",
            "PRIMARY",
            "REPLICATED",
            "REPL/MEAN",
        ],
        &rows,
    )
}

/// The balance figures of primary and replicated ownership.
pub fn balance_table(own: &Ownership) -> String {
    let row = |name: &str, s: &Summary| {
        vec![
            name.to_string(),
            ratio(s.max_over_mean),
            ratio(s.min_over_mean),
            ratio(s.cv),
            format!("{:.1}%", s.imbalance * 100.0),
        ]
    };
    table(
        &["BALANCE", "MAX/MEAN", "MIN/MEAN", "CV", "IMBALANCE"],
        &[
            row("primary", &own.primary),
            row(&format!("replicated (rf {})", own.rf), &own.replicated),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorumkv_ring::Ring;

    #[test]
    fn racks_shape_replicated_ownership_in_the_table() {
        // Quarters n1..n4; racks r1 = {n1, n2}, r2 = {n3, n4}; rf 2 puts
        // each range on both racks, so n1 and n3 hold three quarters.
        let q = 1u64 << 62;
        let mut r = Ring::new();
        for (k, (n, rack)) in [("n1", "r1"), ("n2", "r1"), ("n3", "r2"), ("n4", "r2")]
            .iter()
            .enumerate()
        {
            r.insert_node(n, &[k as u64 * q]);
            r.set_rack(n, Some(rack));
        }
        let own = ownership(&r, 2);
        let t = ownership_table(&own);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE  RACK  VNODES  PRIMARY"), "{t}");
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cols, ["n1", "r1", "1", "25.000%", "75.000%", "1.5000"]);
        let b = balance_table(&own);
        assert!(b.contains("replicated (rf 2)  1.5000"), "{b}");
    }
}
