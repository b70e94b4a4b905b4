//! `qkv ring simulate`: grow a cluster one node at a time and measure.
//!
//! Per cluster size it prints the balance of replicated ownership
//! (max/mean, min/mean, CV), the CV of primary ownership, Dynamo's
//! imbalance ratio, and the data that size's addition moved against the
//! ideal. The row for `n` nodes describes the ring just after the `n`th
//! node joined; its ideal is `1/n` of all replica data — that is,
//! `1/(n+1)` for going from `n` to `n+1` nodes.
//!
//! `--nodes A..B` prints every size from `A` to `B`; `--nodes N` prints
//! size `N` only. The cluster always grows from one node (the balanced
//! allocator places each node against the ring before it); with the random
//! strategy the tokens of a node do not depend on the ring, so only the
//! measured rings are built (the `quorumkv_ring::simulate` shortcut), which
//! keeps `--trials 200 --nodes 100 --vnodes 256` fast.
//!
//! For the random strategy the table also shows the closed form of the CV
//! of primary ownership, `sqrt((n−1)/(nV+1))` (a node's share is a sum of
//! `V` of the `nV` uniform spacings: Beta(V, (n−1)V)); the measured value
//! matching it is the check that the simulator is right.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context as _;
use clap::Args;
use quorumkv_ring::sim::MAX_SIM_NODES;
use quorumkv_ring::{SimRow, Strategy, render_svg, simulate};
use serde_json::{Value, json};

use super::super::Globals;
use super::super::output::table;
use super::{emit, emit_json, parse_positive, parse_strategy, ratio};

/// The balance targets (docs/RING.md), printed next to the worst figures.
const MAX_OVER_MEAN_LIMIT: f64 = 1.10;
const MOVED_OVER_IDEAL_LIMIT: f64 = 1.15;

/// Arguments of `qkv ring simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Cluster sizes to report: `A..B` (every size, inclusive; `A..=B` also
    /// works) or `N` (that size only).
    #[arg(long, default_value = "3..64", value_name = "A..B|N")]
    pub nodes: NodeSpan,
    /// Vnode tokens per node.
    #[arg(long, default_value_t = 16, value_parser = parse_positive)]
    pub vnodes: usize,
    /// Replication factor.
    #[arg(long, default_value_t = 3, value_parser = parse_positive)]
    pub rf: usize,
    /// Token allocation: balanced or random.
    #[arg(long, default_value = "balanced", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// Independent growths to average (each with its own seed).
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub trials: usize,
    /// Seed of the whole run: same seed, same figures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also draw max/mean and moved/ideal against the node count as SVG.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// The sizes to report: `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpan {
    /// Smallest reported size.
    pub from: usize,
    /// Largest reported size (the cluster grows to it).
    pub to: usize,
}

impl FromStr for NodeSpan {
    type Err = String;

    /// `A..B`, `A..=B` or `N`, with `1 <= A <= B <= MAX_SIM_NODES`.
    fn from_str(s: &str) -> Result<NodeSpan, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("{t:?} is not a node count (expected A..B or N)"))
        };
        let (from, to) = match s.split_once("..") {
            Some((a, b)) => (num(a)?, num(b.strip_prefix('=').unwrap_or(b))?),
            None => {
                let n = num(s)?;
                (n, n)
            }
        };
        if from == 0 || from > to {
            return Err(format!("{s:?}: need 1 <= A <= B"));
        }
        if to > MAX_SIM_NODES {
            return Err(format!("{s:?}: at most {MAX_SIM_NODES} nodes"));
        }
        Ok(NodeSpan { from, to })
    }
}

/// The worst value of a figure and the size where it occurred.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Worst {
    /// The figure.
    pub value: f64,
    /// The cluster size it occurred at.
    pub nodes: usize,
}

/// The largest `pick(row)` over `rows` (first occurrence on ties).
pub fn worst(rows: &[SimRow], pick: impl Fn(&SimRow) -> f64) -> Worst {
    rows.iter().fold(
        Worst {
            value: f64::NEG_INFINITY,
            nodes: 0,
        },
        |w, r| {
            if pick(r) > w.value {
                Worst {
                    value: pick(r),
                    nodes: r.nodes,
                }
            } else {
                w
            }
        },
    )
}

/// The closed-form CV of primary ownership with `v` random tokens per node
/// on `n` nodes: `sqrt((n−1)/(nV+1))`.
pub fn random_primary_cv(n: usize, v: usize) -> f64 {
    ((n as f64 - 1.0) / (n as f64 * v as f64 + 1.0)).sqrt()
}

/// Runs the simulation and prints (or writes) its figures.
pub fn run(g: &Globals, a: SimulateArgs) -> anyhow::Result<ExitCode> {
    let rows = simulate(
        a.nodes.from,
        a.nodes.to,
        a.vnodes,
        a.rf,
        a.strategy,
        a.trials,
        a.seed,
    )?;
    if let Some(path) = &a.svg {
        std::fs::write(path, render_svg(&rows))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let random = a.strategy == Strategy::Random;
    let bal = worst(&rows, |r| r.replicated_max_over_mean);
    let moved = worst(&rows, |r| r.moved_over_ideal);
    let last = rows.last().copied().unwrap_or_default();
    let theory = random_primary_cv(last.nodes, a.vnodes);
    let error = if theory > 0.0 {
        (last.primary_cv - theory) / theory
    } else {
        0.0
    };
    if g.json {
        let mut rows_json: Vec<Value> = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut v = serde_json::to_value(r)?;
            if let (true, Value::Object(o)) = (random, &mut v) {
                o.insert(
                    "primary_cv_theory".into(),
                    json!(random_primary_cv(r.nodes, a.vnodes)),
                );
            }
            rows_json.push(v);
        }
        let mut doc = json!({
            "strategy": a.strategy,
            "vnodes": a.vnodes,
            "rf": a.rf,
            "trials": a.trials,
            "seed": a.seed,
            "nodes_from": a.nodes.from,
            "nodes_to": a.nodes.to,
            "rows": rows_json,
            "worst_max_over_mean": bal,
            "worst_moved_over_ideal": moved,
        });
        if random {
            doc["primary_cv_check"] = json!({
                "nodes": last.nodes,
                "measured": last.primary_cv,
                "theory": theory,
                "relative_error": error,
            });
        }
        emit_json(&doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    write!(out, "{}", rows_table(&rows, random.then_some(a.vnodes)))?;
    writeln!(out)?;
    let trials = if a.trials == 1 { "trial" } else { "trials" };
    writeln!(
        out,
        "{} allocation, {} vnodes, rf {}, {} {trials}, seed {}, sizes {}..{}",
        a.strategy, a.vnodes, a.rf, a.trials, a.seed, a.nodes.from, a.nodes.to
    )?;
    writeln!(
        out,
        "worst replicated max/mean: {} at {} nodes (target <= {MAX_OVER_MEAN_LIMIT:.2})",
        ratio(bal.value),
        bal.nodes
    )?;
    writeln!(
        out,
        "worst moved/ideal:         {} at {} nodes (target <= {MOVED_OVER_IDEAL_LIMIT:.2})",
        ratio(moved.value),
        moved.nodes
    )?;
    if random {
        writeln!(
            out,
            "primary CV at {} nodes: measured {} vs sqrt((n-1)/(nV+1)) = {} ({:+.2}%)",
            last.nodes,
            ratio(last.primary_cv),
            ratio(theory),
            error * 100.0
        )?;
    }
    if let Some(path) = &a.svg {
        writeln!(out, "chart written to {}", path.display())?;
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// One row per size; with `theory_vnodes` (random strategy) a column with
/// the closed-form CV of primary ownership.
pub fn rows_table(rows: &[SimRow], theory_vnodes: Option<usize>) -> String {
    let mut header = vec!["NODES", "MAX/MEAN", "MIN/MEAN", "CV(REPL)", "CV(PRIMARY)"];
    if theory_vnodes.is_some() {
        header.push("CV(THEORY)");
    }
    header.extend(["IMBALANCE", "MOVED", "IDEAL", "MOVED/IDEAL"]);
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.nodes.to_string(),
                ratio(r.replicated_max_over_mean),
                ratio(r.replicated_min_over_mean),
                ratio(r.replicated_cv),
                ratio(r.primary_cv),
            ];
            if let Some(v) = theory_vnodes {
                row.push(ratio(random_primary_cv(r.nodes, v)));
            }
            row.extend([
                format!("{:.1}%", r.imbalance * 100.0),
                ratio(r.moved),
                ratio(r.ideal_moved),
                ratio(r.moved_over_ideal),
            ]);
            row
        })
        .collect();
    table(&header, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_spans_parse_ranges_and_single_sizes() {
        let ok = [
            ("3..64", (3, 64)),
            ("3..=64", (3, 64)),
            ("100", (100, 100)),
            (" 5 .. 5 ", (5, 5)),
        ];
        for (s, (from, to)) in ok {
            assert_eq!(s.parse::<NodeSpan>(), Ok(NodeSpan { from, to }), "{s}");
        }
        for bad in ["", "x", "3..", "..5", "0..4", "9..3", "3..x", "1..100000"] {
            assert!(bad.parse::<NodeSpan>().is_err(), "{bad}");
        }
    }

    #[test]
    fn closed_form_cv_table() {
        // (n, V, sqrt((n-1)/(nV+1)))
        for (n, v, cv) in [(1, 16, 0.0), (100, 16, 0.24867), (100, 256, 0.06219)] {
            assert!((random_primary_cv(n, v) - cv).abs() < 1e-4, "{n} {v}");
        }
    }

    #[test]
    fn worst_finds_the_maximum_and_its_size() {
        let row = |nodes, m| SimRow {
            nodes,
            replicated_max_over_mean: m,
            ..SimRow::default()
        };
        let rows = [row(3, 1.0), row(4, 1.07), row(5, 1.02)];
        assert_eq!(
            worst(&rows, |r| r.replicated_max_over_mean),
            Worst {
                value: 1.07,
                nodes: 4
            }
        );
        let t = rows_table(&rows, Some(16));
        assert!(t.lines().next().unwrap_or("").contains("CV(THEORY)"), "{t}");
        assert_eq!(t.lines().count(), 4);
    }
}
