//! `qkv ring show|simulate|plan|what-if|apply|status`: ring management, a
//! thin shell over the pure `quorumkv_ring` crate and the nodes'
//! cluster-change routes.
//!
//! Every command except `simulate` works on a ring that comes either from a
//! live cluster (`GET /cluster/ring` on the first reachable `--node`, plus
//! `GET /cluster/members` for racks) or from a ring file (`--ring FILE`: the
//! same JSON, with the optional `racks`, `rf` and `load` fields of
//! [`RingFile`]). Only `apply` changes the cluster: `plan` computes and
//! prints a plan and stages it (`ring/stage.rs`), `apply` carries the staged
//! change out through the contract routes and follows it to the end.
//!
//! | command | file |
//! |---|---|
//! | `show` | `ring/show.rs` |
//! | `simulate` | `ring/simulate.rs` |
//! | `plan` | `ring/plan.rs` |
//! | `what-if` | `ring/whatif.rs` |
//! | `apply` | `ring/apply.rs` (progress: `ring/progress.rs`) |
//! | `status` | `ring/status.rs` |
//!
//! `ring/admin.rs` holds the contract routes' JSON shapes and the per-node
//! HTTP helper that `apply`, `status` and `qkv cleanup` share.
//!
//! Output follows the other commands: aligned tables, `--json` for the
//! machine-readable form, errors as one `Error: ...` line with exit code 1,
//! bad usage (e.g. `--nodes 3..x`) exit code 2 from clap.

pub mod admin;
mod apply;
mod plan;
mod progress;
mod show;
mod simulate;
mod stage;
mod status;
mod whatif;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use quorumkv_ring::{Ring, RingFile, Strategy};

use super::Globals;

/// How many ranges a table lists unless `--all-ranges` is given: enough to
/// see the pattern, few enough to keep the totals on screen.
pub const RANGES_SHOWN: usize = 20;

/// The replication factor when neither `--rf` nor the ring file gives one
/// (the node's default N).
pub const DEFAULT_RF: usize = 3;

/// `qkv ring ...`.
#[derive(Debug, Subcommand)]
pub enum RingCommand {
    /// Per-node vnodes, primary and replicated ownership, and balance.
    Show(show::ShowArgs),
    /// Grow a simulated cluster and report balance and data moved per size.
    Simulate(simulate::SimulateArgs),
    /// What adding or removing nodes would move, range by range; stages a
    /// one-node change for `apply` (alone: shows the staged change).
    Plan(plan::PlanArgs),
    /// Carries out the staged change and follows it to the end.
    Apply(apply::ApplyArgs),
    /// Membership changes in flight across the cluster.
    Status(status::StatusArgs),
    /// Which ranges lose `one`, `quorum` and `all` with some nodes down.
    #[command(name = "what-if")]
    WhatIf(whatif::WhatIfArgs),
}

/// Runs one `qkv ring` command.
pub async fn run(g: &Globals, cmd: RingCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RingCommand::Show(a) => show::run(g, a).await,
        RingCommand::Simulate(a) => simulate::run(g, a),
        RingCommand::Plan(a) => plan::run(g, a).await,
        RingCommand::Apply(a) => apply::run(g, a).await,
        RingCommand::Status(a) => status::run(g, a).await,
        RingCommand::WhatIf(a) => whatif::run(g, a).await,
    }
}

/// Where the ring comes from, shared by `show`, `plan` and `what-if`.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Read the ring from this file (the JSON of `/cluster/ring`, optionally
    /// with `racks`, `rf` and `load`) instead of asking the cluster.
    #[arg(long, value_name = "FILE")]
    pub ring: Option<PathBuf>,
    /// Replication factor [default: the ring file's `rf`, else 3].
    #[arg(long, value_parser = parse_positive)]
    pub rf: Option<usize>,
}

/// A ring ready to analyse, with where it came from.
pub struct Loaded {
    /// The file form: keeps the reported per-range `load` for estimates.
    pub file: RingFile,
    /// The ring, racks included.
    pub ring: Ring,
    /// The replication factor to analyse with.
    pub rf: usize,
    /// `ring file PATH` or `cluster at URL`, for headers and JSON.
    pub origin: String,
}

/// Loads the ring from `--ring FILE` or from the cluster.
///
/// From a cluster, racks come from `/cluster/members` (`rack` field); if
/// that call fails the ring is still analysed, without racks, and a
/// warning says so on stderr.
pub async fn load(g: &Globals, src: &SourceArgs) -> anyhow::Result<Loaded> {
    let (mut file, origin) = match &src.ring {
        Some(path) => (
            read_ring_file(path)?,
            format!("ring file {}", path.display()),
        ),
        None => {
            let client = g.client()?;
            let info = client.ring().await?;
            let value = serde_json::to_value(&info)?;
            let mut file: RingFile = serde_json::from_value(value)
                .context("the node's /cluster/ring answer is not a ring")?;
            match client.members().await {
                Ok(members) => {
                    for m in members {
                        let rack = m.extra.get("rack").and_then(|r| r.as_str());
                        if let Some(rack) = rack.filter(|r| !r.is_empty()) {
                            file.racks.entry(m.id).or_insert_with(|| rack.to_string());
                        }
                    }
                }
                Err(e) => eprintln!("warning: no racks (cannot read /cluster/members: {e})"),
            }
            let url = client.nodes().first().cloned().unwrap_or_default();
            (file, format!("cluster at {url}"))
        }
    };
    if file.tokens.is_empty() {
        bail!("the ring has no tokens ({origin})");
    }
    // Racks of nodes without tokens (standby members) do not shape placement.
    let on_ring: std::collections::BTreeSet<&str> =
        file.tokens.iter().map(|t| t.node.as_str()).collect();
    let racks = std::mem::take(&mut file.racks);
    file.racks = racks
        .into_iter()
        .filter(|(n, _)| on_ring.contains(n.as_str()))
        .collect();
    let ring = file.to_ring();
    let rf = src.rf.or(file.rf).unwrap_or(DEFAULT_RF);
    if rf == 0 {
        bail!("the ring file says rf 0; give --rf");
    }
    Ok(Loaded {
        file,
        ring,
        rf,
        origin,
    })
}

/// Reads and parses a ring file, with the path in every error.
pub fn read_ring_file(path: &std::path::Path) -> anyhow::Result<RingFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read ring file {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("ring file {} is not ring JSON", path.display()))
}

/// A clap parser for counts that must be at least 1 (`--rf`, `--vnodes`,
/// `--trials`): zero is a usage error, not a run that divides by zero.
pub fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A clap parser for `--strategy balanced|random`.
pub fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse::<Strategy>().map_err(|e| e.to_string())
}

/// Writes `text` to stdout. A closed pipe (`qkv ring plan | head`) ends
/// the output quietly instead of failing: the reader has what it wanted.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes `v` as pretty JSON (and a newline) to stdout, like [`emit`].
pub fn emit_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    emit(&text)
}

/// A share of the token space as a percentage with three decimals.
pub fn pct(f: f64) -> String {
    format!("{:.3}%", f * 100.0)
}

/// A ratio such as max/mean with four decimals.
pub fn ratio(f: f64) -> String {
    format!("{f:.4}")
}

/// A byte count, exact and in binary units (`1048576 (1.0 MiB)`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{n} ({v:.1} {unit})")
}

/// The header line for a capped list: `N ranges` plus, when capped, how
/// to see the rest.
pub fn capped_title(what: &str, total: usize, shown: usize) -> String {
    if shown < total {
        format!("{what}: {total} (first {shown}; --all-ranges for all)")
    } else {
        format!("{what}: {total}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_counts_refuse_zero_and_junk() {
        assert_eq!(parse_positive("3"), Ok(3));
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("x").is_err());
    }

    #[test]
    fn byte_counts_read_both_ways() {
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1536 (1.5 KiB)");
        assert_eq!(bytes(1 << 20), "1048576 (1.0 MiB)");
    }

    #[test]
    fn percentages_and_ratios_have_fixed_decimals() {
        assert_eq!(pct(0.25), "25.000%");
        assert_eq!(ratio(1.0), "1.0000");
        assert_eq!(capped_title("ranges", 5, 5), "ranges: 5");
        assert!(capped_title("ranges", 50, 20).contains("--all-ranges"));
    }
}
