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
//!    prorated by token overlap. Against a live cluster the load is read
//!    from every up node's `GET /cluster/ranges` (one replica's worth per
//!    range), so the estimate is of real data, not token fractions.
//!
//! # Staging
//!
//! Against a live cluster, a plan for one node (`--add NAME` or `--remove
//! NAME`) is also staged in the plan file (`--plan-file`, default
//! `./.qkv/plan.json`; see `stage.rs`) for `qkv ring apply`: `--remove` of
//! an up node stages a decommission, of a down node a removenode. `qkv ring
//! plan` alone shows what is staged, `--clear` drops it, and `--dry-run`
//! plans without staging. Plans from a ring file, or for several nodes at
//! once, are previews only: apply carries out one node change at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{ArgGroup, Args};
use quorumkv_ring::plan::prorate;
use quorumkv_ring::{Estimate, Joining, Plan, RangeMove, Ring, Strategy};
use serde_json::{Value, json};

use super::super::Globals;
use super::super::output::table;
use super::admin::{NodeHttp, live_load, members};
use super::stage::{self, Kind, PlanFileArg, Staged, StagedPair};
use super::{
    Loaded, RANGES_SHOWN, SourceArgs, bytes, capped_title, emit, emit_json, load, parse_positive,
    parse_strategy, pct, ratio,
};

/// Vnodes for a joining node when neither `--vnodes` nor the ring suggests
/// a count (the node's `--vnodes` default).
const DEFAULT_VNODES: usize = 16;

/// Arguments of `qkv ring plan`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").multiple(false).args(["add", "remove", "clear"])))]
// A ring file is only planned against, never staged or shown as staged.
#[command(group(ArgGroup::new("nodes").multiple(true).args(["add", "remove"])))]
#[command(group(ArgGroup::new("from_file").args(["ring"]).requires("nodes")))]
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
    /// Drop the staged change.
    #[arg(long)]
    pub clear: bool,
    /// Show the plan without staging it.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the ring comes from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Where the staged change is kept.
    #[command(flatten)]
    pub file: PlanFileArg,
}

/// What the live cluster adds to a plan: its members (with URLs), to tell
/// an up node from a down one.
struct Live {
    members: BTreeMap<String, (quorumkv_client::Member, String)>,
}

/// Computes and prints the plan, and stages it when it can be applied;
/// or shows or clears the staged change.
pub async fn run(g: &Globals, mut a: PlanArgs) -> anyhow::Result<ExitCode> {
    let path = a.file.plan_file.clone();
    if a.clear {
        let existed = stage::clear(&path)?;
        if g.json {
            emit_json(&json!({"cleared": existed, "plan_file": path}))?;
        } else if existed {
            emit(&format!(
                "Dropped the staged change ({}).\n",
                path.display()
            ))?;
        } else {
            emit(&format!("Nothing was staged ({}).\n", path.display()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.add.is_empty() && a.remove.is_empty() {
        return stage::show(g, &path).await;
    }
    let mut loaded = load(g, &a.source).await?;
    let live = if a.source.ring.is_none() {
        Some(fill_live(g, &mut loaded, &mut a).await)
    } else {
        None
    };
    let (plan, what) = make_plan(&loaded, &a)?;
    let n_before = plan.before.nodes.len();
    let n_after = plan.after.nodes.len();
    let changed = a.add.len() + a.remove.len();
    let ideal = changed as f64 / n_before.max(n_after).max(1) as f64;
    let estimate =
        (!loaded.file.load.is_empty()).then(|| plan.estimate(|r| prorate(&loaded.file.load, r)));
    let staged = stage_plan(&a, &loaded, live.as_ref(), &plan, estimate.as_ref());
    let staged_note = match &staged {
        Ok(s) => {
            stage::save(&path, s)?;
            let standby = live
                .as_ref()
                .and_then(|l| l.members.get(&s.node))
                .is_some_and(|(m, _)| m.state == "standby");
            let hint = if s.kind == Kind::Join && !standby {
                format!(
                    "\nNote: {} is not a standby member yet: start it with --join manual before qkv ring apply",
                    s.node
                )
            } else {
                String::new()
            };
            format!(
                "Staged: {} {} in {} (qkv ring apply carries it out; qkv ring plan --clear drops it){hint}",
                s.kind,
                s.node,
                path.display()
            )
        }
        Err(why) => format!("Not staged: {why}"),
    };
    if g.json {
        let mut v = serde_json::to_value(&plan)?;
        if let Value::Object(o) = &mut v {
            o.insert("source".into(), json!(loaded.origin));
            o.insert("change".into(), json!(what));
            o.insert("ideal_moved_fraction".into(), json!(ideal));
            o.insert("estimate".into(), json!(estimate));
            let staged = match &staged {
                Ok(s) => {
                    json!({"plan_file": path, "kind": s.kind, "node": s.node, "tokens": s.tokens})
                }
                Err(why) => json!({"plan_file": null, "reason": why}),
            };
            o.insert("staged".into(), staged);
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
    writeln!(out)?;
    writeln!(out, "{staged_note}")?;
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the members, takes a standby node's rack for `--add` without
/// `--rack`, and fills the ring's per-range load from every up node (unless
/// it already has one). Failures only cost the estimate, with a warning.
async fn fill_live(g: &Globals, loaded: &mut Loaded, a: &mut PlanArgs) -> Live {
    let members = match members(g).await {
        Ok((m, _)) => m,
        Err(e) => {
            eprintln!("warning: cannot read /cluster/members ({e}): no load, no staging");
            return Live {
                members: BTreeMap::new(),
            };
        }
    };
    if a.rack.is_none()
        && let [name] = a.add.as_slice()
        && let Some((m, _)) = members.get(name)
        && let Some(rack) = m.extra.get("rack").and_then(Value::as_str)
        && !rack.is_empty()
    {
        a.rack = Some(rack.to_string());
    }
    if loaded.file.load.is_empty() {
        match NodeHttp::new(g) {
            Ok(http) => {
                let (load, failed) = live_load(&http, &members).await;
                for f in failed {
                    eprintln!("warning: no per-range load from {f}");
                }
                loaded.file.load = load;
            }
            Err(e) => eprintln!("warning: no per-range load ({e})"),
        }
    }
    Live { members }
}

/// The staged change for this plan, or why it cannot be staged.
fn stage_plan(
    a: &PlanArgs,
    loaded: &Loaded,
    live: Option<&Live>,
    plan: &Plan,
    estimate: Option<&Estimate>,
) -> Result<Staged, String> {
    if a.dry_run {
        return Err("--dry-run".into());
    }
    let Some(live) = live else {
        return Err("planned from a ring file; stage against the live cluster".into());
    };
    let (node, kind) = match (a.add.as_slice(), a.remove.as_slice()) {
        ([n], []) => (n.clone(), Kind::Join),
        ([], [n]) => {
            let kind = match live.members.get(n).map(|(m, _)| m.status.as_str()) {
                Some("up") => Kind::Decommission,
                Some(_) => Kind::Removenode,
                None => {
                    return Err(format!(
                        "{n} is not in /cluster/members: cannot tell whether it is up"
                    ));
                }
            };
            (n.clone(), kind)
        }
        _ => return Err("apply carries out one node change at a time: plan one node".into()),
    };
    let tokens = plan
        .changes
        .iter()
        .find(|c| c.node == node)
        .map(|c| c.added.clone())
        .unwrap_or_default();
    let pairs = plan
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| StagedPair {
            source: p.source.clone(),
            target: p.target.clone(),
            ranges: p.ranges,
            fraction: p.fraction,
            estimate: estimate.and_then(|e| e.pairs.get(i)).map(|x| x.2),
        })
        .collect();
    Ok(Staged {
        version: stage::VERSION,
        created_unix_ms: stage::now_ms(),
        kind,
        node,
        tokens,
        rack: if kind == Kind::Join {
            a.rack.clone()
        } else {
            None
        },
        rf: loaded.rf,
        source: loaded.origin.clone(),
        ring: loaded.file.tokens.clone(),
        ranges_moving: plan.moves.len(),
        moved_fraction: plan.moved_fraction,
        pairs,
        estimate: estimate.map(|e| e.total),
    })
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
