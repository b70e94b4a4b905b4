//! `qkv exp`: fault experiments. `check FILE` judges a recorded history
//! with the library's checker (`quorumkv_client::exp::check`) and prints
//! its verdict per bucket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use quorumkv_client::exp::check::{self, CheckOptions, render};
use quorumkv_client::exp::history::{History, HistoryError};

use super::Globals;
use super::output::print_json;

/// `qkv exp` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExpCommand {
    /// Check a recorded history (JSON lines) for lost writes, stale and
    /// non-monotonic reads and unexpected values, per bucket. Exit 0 when
    /// the history was checked, anomalies or not (see --fail-on-anomaly).
    Check(CheckArgs),
}

/// `qkv exp check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The history file, one JSON event per line.
    pub file: PathBuf,
    /// Replicas per key (N): a bucket whose r + w exceeds it, with strict
    /// quorums and siblings, has strict expectations.
    #[arg(long, default_value_t = 3)]
    pub n: u32,
    /// Exit 1 when a bucket with strict expectations shows an anomaly.
    #[arg(long)]
    pub fail_on_anomaly: bool,
}

/// Runs one `qkv exp` subcommand.
pub async fn run(g: &Globals, cmd: ExpCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ExpCommand::Check(a) => check_history(g, a),
    }
}

fn check_history(g: &Globals, a: CheckArgs) -> anyhow::Result<ExitCode> {
    let history = History::read_file(&a.file).map_err(|e| match e {
        HistoryError::Io { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(a.file.display().to_string()),
    })?;
    let verdict = check::check(&history, &CheckOptions { n: a.n });
    if g.json {
        print_json(&serde_json::to_value(&verdict)?)?;
    } else {
        print!("{}", render::text(&verdict));
    }
    if a.fail_on_anomaly && verdict.strict_anomalies > 0 {
        anyhow::bail!(
            "{} anomalies in buckets with strict expectations",
            verdict.strict_anomalies
        );
    }
    Ok(ExitCode::SUCCESS)
}
