//! `qkv ring plan --add NAME | --remove NAME`: what a membership change
//! would move, before anything moves.
//!
//! The plan comes from `quorumkv_ring::Plan` (exact: the token boundaries
//! of both rings cut the space into segments with constant replica sets).
//! The output has four parts:
//!
//! 1. **Ownership** per node before and after (vnodes, primary and
//!    replicated shares, the change in replicated share) and the balance
//!    before and after.
//! 2. **Moving ranges**: every range `(START, END]` whose replica set
//!    changes, its share of the token space, each replica that changes
//!    hands as `losing→gaining` (`+gaining` when nobody gives a copy up,
//!    as when a cluster grows towards `rf`), and the `SOURCE` that streams
//!    it (a node holding the data in the old ring). Capped at
//!    [`RANGES_SHOWN`] rows unless `--all-ranges`.
//! 3. **Per pair**: totals per (source, target) stream.
//! 4. **Totals**: the fraction of all replica data that moves, the ideal
//!    for the change (`k / max(n_before, n_after)` for `k` nodes joining or
//!    leaving), and — when the ring file or cluster reports per-range keys
//!    and bytes (`load`) — the estimated keys and bytes to stream,
//!    prorated by token overlap.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{ArgGroup, Args};
use quorumkv_ring::plan::prorate;
use quorumkv_ring::{Estimate, Joining, Plan, RangeMove, Ring, Strategy};
use serde_json::{Value, json};

use super::super::Globals;
use super::super::output::table;
use super::{
    Loaded, RANGES_SHOWN, SourceArgs, bytes, capped_title, emit, emit_json, load, parse_positive,
    parse_strategy, pct, ratio,
};

/// Vnodes for a joining node when neither `--vnodes` nor the ring suggests
/// a count (the node's `--vnodes` default).
const DEFAULT_VNODES: usize = 16;

/// Arguments of `qkv ring plan`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).args(["add", "remove"])))]
pub struct PlanArgs {
    /// Plan adding this node (repeat or comma-separate for several).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub add: Vec<String>,
    /// Plan removing this node (repeat or comma-separate for several).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub remove: Vec<String>,
    /// Vnodes of each added node [default: the ring's most common count].
    #[arg(long, value_parser = parse_positive, conflicts_with = "remove")]
    pub vnodes: Option<usize>,
    /// Rack of the added nodes.
    #[arg(long, conflicts_with = "remove")]
    pub rack: Option<String>,
    /// Token allocation for added nodes: balanced or random.
    #[arg(long, default_value = "balanced", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// Seed of the allocation: same seed, same tokens.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// List every moving range, not just the first 20.
    #[arg(long)]
    pub all_ranges: bool,
    /// Where the ring comes from.
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Computes and prints the plan.
pub async fn run(g: &Globals, a: PlanArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(g, &a.source).await?;
    let (plan, what) = make_plan(&loaded, &a)?;
    let n_before = plan.before.nodes.len();
    let n_after = plan.after.nodes.len();
    let changed = a.add.len() + a.remove.len();
    let ideal = changed as f64 / n_before.max(n_after).max(1) as f64;
    let estimate =
        (!loaded.file.load.is_empty()).then(|| plan.estimate(|r| prorate(&loaded.file.load, r)));
    if g.json {
        let mut v = serde_json::to_value(&plan)?;
        if let Value::Object(o) = &mut v {
            o.insert("source".into(), json!(loaded.origin));
            o.insert("change".into(), json!(what));
            o.insert("ideal_moved_fraction".into(), json!(ideal));
            o.insert("estimate".into(), json!(estimate));
        }
        emit_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    writeln!(out, "Plan: {what}; rf {} ({})", plan.rf, loaded.origin)?;
    writeln!(out)?;
    write!(out, "{}", ownership_table(&plan))?;
    writeln!(
        out,
        "balance of replicated ownership: max/mean {} -> {}, min/mean {} -> {}, CV {} -> {}",
        ratio(plan.before.replicated.max_over_mean),
        ratio(plan.after.replicated.max_over_mean),
        ratio(plan.before.replicated.min_over_mean),
        ratio(plan.after.replicated.min_over_mean),
        ratio(plan.before.replicated.cv),
        ratio(plan.after.replicated.cv),
    )?;
    writeln!(out)?;
    let shown = if a.all_ranges {
        plan.moves.len()
    } else {
        plan.moves.len().min(RANGES_SHOWN)
    };
    writeln!(
        out,
        "{}",
        capped_title("Moving ranges", plan.moves.len(), shown)
    )?;
    if !plan.moves.is_empty() {
        write!(out, "{}", moves_table(&plan.moves[..shown]))?;
    }
    writeln!(out)?;
    writeln!(out, "Per pair: {}", plan.pairs.len())?;
    if !plan.pairs.is_empty() {
        write!(out, "{}", pairs_table(&plan, estimate.as_ref()))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Data moving: {} of all replica data (ideal {}, ratio {})",
        pct(plan.moved_fraction),
        pct(ideal),
        if ideal > 0.0 {
            ratio(plan.moved_fraction / ideal)
        } else {
            "-".into()
        }
    )?;
    match &estimate {
        Some(e) => writeln!(
            out,
            "Estimated to stream: {} keys, {} (prorated from the reported per-range load)",
            e.total.keys,
            bytes(e.total.bytes)
        ),
        None => writeln!(
            out,
            "Estimated to stream: unknown (no per-range keys/bytes reported)"
        ),
    }?;
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The plan for `--add` or `--remove`, and a one-line description of the
/// change. Unknown (for removal) or existing (for addition) nodes are
/// errors from the ring crate.
pub fn make_plan(loaded: &Loaded, a: &PlanArgs) -> anyhow::Result<(Plan, String)> {
    if !a.add.is_empty() {
        let vnodes = a.vnodes.unwrap_or_else(|| usual_vnodes(&loaded.ring));
        let joining: Vec<Joining> = a
            .add
            .iter()
            .map(|n| Joining {
                node: n.clone(),
                vnodes,
                rack: a.rack.clone(),
            })
            .collect();
        let plan = Plan::add_nodes(&loaded.ring, &joining, loaded.rf, a.strategy, a.seed)?;
        let rack = match &a.rack {
            Some(r) => format!(" in rack {r}"),
            // On a ring with racks, a node without one lands in the
            // default rack: say so, it changes placement.
            None if !loaded.ring.racks().is_empty() => " in the default rack (no --rack)".into(),
            None => String::new(),
        };
        let what = format!(
            "add {}{rack}: {vnodes} vnode{} each, {} allocation, seed {}",
            a.add.join(", "),
            if vnodes == 1 { "" } else { "s" },
            a.strategy,
            a.seed
        );
        Ok((plan, what))
    } else {
        let names: Vec<&str> = a.remove.iter().map(String::as_str).collect();
        let plan = Plan::remove_nodes(&loaded.ring, &names, loaded.rf)?;
        Ok((plan, format!("remove {}", a.remove.join(", "))))
    }
}

/// The most common vnode count on the ring (the larger one on a tie), so
/// a newcomer takes a fair share by default.
pub fn usual_vnodes(ring: &Ring) -> usize {
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, node) in ring.tokens() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    let mut freq: BTreeMap<usize, usize> = BTreeMap::new();
    for v in per_node.values() {
        *freq.entry(*v).or_default() += 1;
    }
    freq.into_iter()
        .max_by_key(|&(v, count)| (count, v))
        .map_or(DEFAULT_VNODES, |(v, _)| v)
}

/// Ownership of every node of either ring, before and after.
pub fn ownership_table(plan: &Plan) -> String {
    let mut names: Vec<&str> = plan
        .before
        .nodes
        .iter()
        .chain(&plan.after.nodes)
        .map(|n| n.node.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let rows: Vec<Vec<String>> = names
        .into_iter()
        .map(|name| {
            let b = plan.before.get(name);
            let a = plan.after.get(name);
            let share = |o: Option<f64>| o.map_or("-".into(), pct);
            let vnodes = match (b.map(|x| x.vnodes), a.map(|x| x.vnodes)) {
                (Some(x), Some(y)) if x == y => x.to_string(),
                (x, y) => format!("{}->{}", x.unwrap_or(0), y.unwrap_or(0)),
            };
            let rb = b.map_or(0.0, |x| x.replicated);
            let ra = a.map_or(0.0, |x| x.replicated);
            vec![
                name.to_string(),
                a.or(b)
                    .and_then(|x| x.rack.clone())
                    .unwrap_or_else(|| "-".into()),
                vnodes,
                share(b.map(|x| x.primary)),
                share(a.map(|x| x.primary)),
                share(b.map(|x| x.replicated)),
                share(a.map(|x| x.replicated)),
                format!("{:+.3}%", (ra - rb) * 100.0),
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "RACK",
            "VNODES",
            "PRIMARY BEFORE",
            "PRIMARY AFTER",
            "REPLICATED BEFORE",
            "REPLICATED AFTER",
            "CHANGE",
        ],
        &rows,
    )
}

/// The moving ranges: bounds, share, replica hand-overs, sources.
pub fn moves_table(moves: &[RangeMove]) -> String {
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| {
            let handover: Vec<String> = m
                .transfers
                .iter()
                .map(|t| match &t.from {
                    Some(from) => format!("{from}->{}", t.to),
                    None => format!("+{}", t.to),
                })
                .chain(
                    // Copies dropped with nobody taking them over.
                    m.losing
                        .iter()
                        .filter(|l| !m.transfers.iter().any(|t| t.from.as_ref() == Some(l)))
                        .map(|l| format!("{l}->x")),
                )
                .collect();
            let sources: Vec<String> = m
                .transfers
                .iter()
                .map(|t| t.source.clone().unwrap_or_else(|| "-".into()))
                .collect();
            vec![
                m.range.start.to_string(),
                m.range.end.to_string(),
                pct(m.range.fraction()),
                handover.join(","),
                if sources.is_empty() {
                    "-".into()
                } else {
                    sources.join(",")
                },
            ]
        })
        .collect();
    table(
        &["START", "END", "FRACTION", "LOSING->GAINING", "SOURCE"],
        &rows,
    )
}

/// Streaming totals per (source, target), with keys and bytes when the
/// load is known.
pub fn pairs_table(plan: &Plan, estimate: Option<&Estimate>) -> String {
    let rows: Vec<Vec<String>> = plan
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut row = vec![
                p.source.clone(),
                p.target.clone(),
                p.ranges.to_string(),
                pct(p.fraction),
            ];
            if let Some(e) = estimate {
                let d = e.pairs.get(i).map(|x| x.2).unwrap_or_default();
                row.extend([d.keys.to_string(), bytes(d.bytes)]);
            }
            row
        })
        .collect();
    let mut header = vec!["SOURCE", "TARGET", "RANGES", "FRACTION"];
    if estimate.is_some() {
        header.extend(["KEYS", "BYTES"]);
    }
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_vnodes_is_the_most_common_count() {
        let mut r = Ring::new();
        assert_eq!(usual_vnodes(&r), DEFAULT_VNODES);
        r.insert_node("a", &[1, 2, 3]);
        r.insert_node("b", &[4, 5, 6]);
        r.insert_node("c", &[7]);
        assert_eq!(usual_vnodes(&r), 3);
        r.insert_node("d", &[8]);
        // Tie between 1 and 3: the larger.
        assert_eq!(usual_vnodes(&r), 3);
    }

    #[test]
    fn a_joining_node_shows_its_vnodes_appearing() {
        let q = 1u64 << 62;
        let mut r = Ring::new();
        for (k, n) in ["a", "b", "c", "d"].iter().enumerate() {
            r.insert_node(n, &[k as u64 * q]);
        }
        let mut new = r.clone();
        new.insert_node("e", &[q / 2]);
        let p = quorumkv_ring::plan(&r, &new, 1);
        let t = ownership_table(&p);
        let e_row = t.lines().find(|l| l.starts_with('e')).unwrap_or_default();
        let cols: Vec<&str> = e_row.split_whitespace().collect();
        assert_eq!(
            cols,
            ["e", "-", "0->1", "-", "12.500%", "-", "12.500%", "+12.500%"]
        );
        let m = moves_table(&p.moves);
        assert!(m.contains("b->e"), "{m}");
        assert_eq!(m.lines().count(), 2, "{m}");
    }
}
