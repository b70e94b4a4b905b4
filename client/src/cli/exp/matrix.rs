//! `qkv exp matrix`: the R/W matrix (`quorumkv_client::exp::matrix`),
//! measured on the cluster `--node` reaches (a short staleness sweep per
//! R and W, with the prediction's t-visibility at 99.9%) or, with
//! `--simulate`, predicted alone.

use std::path::PathBuf;

use clap::Args;
use quorumkv_client::exp::matrix::{self, Source};
use quorumkv_client::exp::predict::{self, Model, QuorumkvModel, ReadCoordinator, predict};
use quorumkv_client::exp::staleness::{Config, Costs, speculate_ms};

use super::staleness::{measure, write_files};
use super::{GivenDelays, list, shell};
use crate::cli::Globals;
use crate::cli::output::table;

/// `qkv exp matrix` options.
#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// Replicas per key (N).
    #[arg(long, default_value_t = 3)]
    pub n: usize,
    /// Read quorums (default every R in 1..=N).
    #[arg(long, value_delimiter = ',')]
    pub r: Vec<usize>,
    /// Write quorums (default every W in 1..=N).
    #[arg(long, value_delimiter = ',')]
    pub w: Vec<usize>,
    /// One-way delays, as `predict --delays` (wan only with --simulate).
    #[arg(long, value_name = "PRESET|DIST")]
    pub delays: Option<String>,
    /// Write request leg, overriding --delays.
    #[arg(long, value_name = "DIST")]
    pub w_delay: Option<String>,
    /// Write acknowledgement leg, overriding --delays.
    #[arg(long, value_name = "DIST")]
    pub a_delay: Option<String>,
    /// Read request leg, overriding --delays.
    #[arg(long, value_name = "DIST")]
    pub r_delay: Option<String>,
    /// Read response leg, overriding --delays.
    #[arg(long, value_name = "DIST")]
    pub s_delay: Option<String>,
    /// The wait after the write at which P(consistent) is given, ms.
    #[arg(long, default_value_t = 0.0)]
    pub t: f64,
    /// Predict only (no cluster): the quorumkv model with local delays.
    #[arg(long)]
    pub simulate: bool,
    /// --simulate: nodes in the cluster (default N).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Writes per configuration (measured).
    #[arg(long, default_value_t = 1000)]
    pub writes: u64,
    /// Keys written at once (measured).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Read through the writer's node instead of another one.
    #[arg(long)]
    pub same_coordinator: bool,
    /// The buckets' speculative_retry (and the model's).
    #[arg(long, default_value = "off", value_name = "off|auto|NNms")]
    pub speculative_retry: String,
    /// Seeds the choices of nodes and the prediction.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Trials of the prediction.
    #[arg(long, default_value_t = 1_000_000)]
    pub trials: u64,
    /// One slow replica, `NODE=DIST` (e.g. `n3=const:50`): every other
    /// node delays all four legs of its messages to NODE by DIST, beside
    /// the delays above (measured only; the prediction does not know of
    /// it) — the tail-tolerance experiment.
    #[arg(long, value_name = "NODE=DIST")]
    pub slow: Option<String>,
    /// Write summary.json, matrix.csv and report.md into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `qkv exp matrix`.
pub fn run(g: &Globals, a: MatrixArgs) -> anyhow::Result<()> {
    let given = GivenDelays::parse(&a.delays, [&a.w_delay, &a.a_delay, &a.r_delay, &a.s_delay])?;
    let all: Vec<usize> = (1..=a.n).collect();
    let rs = if a.r.is_empty() {
        all.clone()
    } else {
        a.r.clone()
    };
    let ws = if a.w.is_empty() { all } else { a.w.clone() };
    let read_coordinator = if a.same_coordinator {
        ReadCoordinator::Same
    } else {
        ReadCoordinator::Other
    };
    let mut command = format!(
        "qkv exp matrix --n {} --r {} --w {}{} --t {}",
        a.n,
        list(&rs),
        list(&ws),
        given.flags(),
        a.t
    );
    if a.same_coordinator {
        command.push_str(" --same-coordinator");
    }
    command.push_str(&format!(
        " --speculative-retry {} --seed {} --trials {}",
        shell(&a.speculative_retry),
        a.seed,
        a.trials
    ));
    let slow = match &a.slow {
        None => None,
        Some(text) => {
            let Some((node, dist)) = text.split_once('=') else {
                anyhow::bail!("--slow {text:?}: give NODE=DIST, e.g. n3=const:50");
            };
            let d = quorumkv_faults::load::dist(dist)
                .map_err(|e| anyhow::anyhow!("--slow {text:?}: {e}"))?;
            command.push_str(&format!(" --slow {}", shell(&format!("{node}={d}"))));
            Some((node.to_string(), d))
        }
    };
    let (source, rows, load) = if a.simulate {
        if slow.is_some() {
            anyhow::bail!("--slow applies to a measurement only (the model has no slow replica)");
        }
        let nodes = a.nodes.unwrap_or(a.n);
        command.push_str(&format!(" --simulate --nodes {nodes}"));
        let cfg = predict::Config {
            n: a.n,
            rs,
            ws,
            delays: given.delays.clone(),
            model: Model::Quorumkv(QuorumkvModel {
                nodes,
                speculate_ms: speculate_ms(
                    &a.speculative_retry,
                    &given.delays,
                    Costs::default(),
                    a.seed,
                )?,
                local_delays: true,
                read_coordinator,
                hop_ms: 0.0,
                client_ms: 0.0,
                overshoot_ms: [0.0; 4],
            }),
            ts: vec![a.t],
            ps: vec![0.999],
            max_k: 1,
            trials: a.trials,
            seed: a.seed,
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let p = predict(&cfg, threads)?;
        (Source::Predicted, matrix::predicted(&p), String::new())
    } else {
        if a.nodes.is_some() {
            anyhow::bail!(
                "--nodes applies to --simulate only (a measurement counts the cluster's)"
            );
        }
        command.push_str(&format!(
            " --writes {} --concurrency {}",
            a.writes, a.concurrency
        ));
        let mut pairs = Vec::new();
        for &r in &rs {
            for &w in &ws {
                pairs.push((r, w));
            }
        }
        let cfg = Config {
            n: a.n,
            pairs,
            ts: vec![a.t],
            writes: a.writes,
            concurrency: a.concurrency,
            read_coordinator,
            delays: given.delays.clone(),
            read_repair: "off".into(),
            speculative_retry: a.speculative_retry.clone(),
            seed: a.seed,
            trials: a.trials,
            timeout_ms: 10_000,
            calibrate: true,
            slow,
        };
        let m = measure(g, &cfg, "matrix")?;
        (
            Source::Measured,
            matrix::measured(a.n, &m.summaries),
            m.load,
        )
    };
    if g.json {
        command.push_str(" --json");
        print!("{}", matrix::json(&command, a.n, source, &load, &rows));
    } else {
        let t = matrix::table(source, &rows);
        println!("{}", t.title);
        let header: Vec<&str> = t.header.iter().map(String::as_str).collect();
        print!("{}", table(&header, &t.rows));
        if !load.is_empty() {
            println!("load average: {load}");
        }
    }
    if let Some(dir) = &a.out {
        write_files(
            dir,
            &[
                (
                    "summary.json",
                    matrix::json(&command, a.n, source, &load, &rows),
                ),
                ("matrix.csv", matrix::csv(&rows)),
                (
                    "report.md",
                    matrix::markdown(&command, source, &load, &rows),
                ),
            ],
        )?;
    }
    Ok(())
}
