//! `qkv exp staleness`: the CLI edge of `quorumkv_client::exp::staleness`.
//! Parses the options (the delays as `predict` reads them), finds the
//! cluster through `--node`, runs the measurement with a progress bar,
//! runs the prediction for the same delays and model, and prints or
//! writes the report. Ctrl-C clears the injected delays before exiting.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quorumkv_client::Client;
use quorumkv_client::exp::predict::{ReadCoordinator, Samples, predict};
use quorumkv_client::exp::staleness::report::StalenessReport;
use quorumkv_client::exp::staleness::run::{self, Node};
use quorumkv_client::exp::staleness::{Config, Costs, PairRun, PairSummary, summarize};

use super::{GivenDelays, list, shell};
use crate::cli::Globals;
use crate::cli::output::table;

/// `qkv exp staleness` options.
#[derive(Debug, Args)]
pub struct StalenessArgs {
    /// Replicas per key (N), the buckets' `n`.
    #[arg(long, default_value_t = 3)]
    pub n: usize,
    /// Read quorum R; a list measures every combination with --w.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub r: Vec<usize>,
    /// Write quorum W; a list measures every combination with --r.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub w: Vec<usize>,
    /// One-way delays injected on every node, as `predict --delays`
    /// (wan excepted).
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
    /// Waits after a write's acknowledgement, ms; every write is read
    /// once at each.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,5,10,20,50")]
    pub t: Vec<f64>,
    /// Writes per configuration.
    #[arg(long, default_value_t = 5000)]
    pub writes: u64,
    /// Keys written at once (more is faster but loads the machine, which
    /// shifts latencies).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Read through the writer's node instead of another one.
    #[arg(long)]
    pub same_coordinator: bool,
    /// The buckets' read_repair.
    #[arg(long, default_value = "off", value_name = "off|async|blocking")]
    pub read_repair: String,
    /// The buckets' speculative_retry.
    #[arg(long, default_value = "off", value_name = "off|auto|NNms")]
    pub speculative_retry: String,
    /// Seeds the choice of nodes, the nodes' delay draws and the prediction.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Trials of the prediction.
    #[arg(long, default_value_t = 1_000_000)]
    pub trials: u64,
    /// A request's deadline at the node, ms.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Compare with the injected legs alone: no calibration of the fixed
    /// costs of a client round trip and an internode call.
    #[arg(long)]
    pub no_calibrate: bool,
    /// The buckets' names start with this (then the start time and R/W).
    #[arg(long, default_value = "staleness")]
    pub bucket_prefix: String,
    /// Write summary.json, samples.csv, plot.svg and report.md into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The load averages, as /proc/loadavg has them (empty elsewhere).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn node_client(g: &Globals, url: &str) -> Result<Client, quorumkv_client::Error> {
    let mut b = Client::builder(vec![url.to_string()]).timeout(g.client_timeout);
    if let Some(t) = &g.token {
        b = b.bearer_token(t.clone());
    }
    b.build()
}

/// A measurement and its predictions.
pub(super) struct Measured {
    /// The node ids, in the samples' numbering.
    pub nodes: Vec<String>,
    /// The calibrated fixed costs (zero without calibration).
    pub costs: Costs,
    pub runs: Vec<PairRun>,
    pub summaries: Vec<PairSummary>,
    pub predicted: Vec<Samples>,
    /// Load averages at the start and the end.
    pub load: String,
}

/// Runs `cfg` on the cluster `--node` reaches, with a progress bar and
/// Ctrl-C clearing the delays, then predicts every configuration.
pub(super) fn measure(g: &Globals, cfg: &Config, bucket_prefix: &str) -> anyhow::Result<Measured> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Everything but the node count, before any node is asked.
    cfg.validate(usize::MAX)?;
    let load_before = load();
    let (nodes, (costs, runs)) = rt.block_on(async {
        let nodes = run::discover(&g.client()?, |url| node_client(g, url)).await?;
        cfg.validate(nodes.len())?;
        let total = cfg.writes * cfg.pairs.len() as u64;
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} writes, {elapsed} (eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let progress = |k: u64| bar.inc(k);
        let runs = tokio::select! {
            r = run::run(&nodes, cfg, bucket_prefix, stamp, &progress) => r?,
            _ = tokio::signal::ctrl_c() => {
                bar.finish_and_clear();
                let cleared = run::clear_faults(&nodes).await;
                bail!(
                    "interrupted{}",
                    match cleared {
                        Ok(()) => "; the injected delays are cleared".to_string(),
                        Err(e) => format!("; clearing the injected delays failed: {e}"),
                    }
                );
            }
        };
        bar.finish_and_clear();
        anyhow::Ok((nodes, runs))
    })?;
    let load = format!("{load_before} (start), {} (end)", load());
    let mut summaries = Vec::new();
    let mut predicted = Vec::new();
    for run in &runs {
        let one = |costs| -> anyhow::Result<_> {
            let p = predict(&cfg.prediction(nodes.len(), run.r, run.w, costs), 1)?;
            match p.pairs.into_iter().next() {
                Some(pair) => Ok(pair),
                None => bail!("the prediction of R={} W={} is empty", run.r, run.w),
            }
        };
        let costs = Costs {
            overshoot_ms: run.overshoot_ms,
            ..costs
        };
        let pair = one(costs)?;
        let legs_only = if costs == Costs::default() {
            pair.samples.clone()
        } else {
            one(Costs::default())?.samples
        };
        let t999 = pair.t_at.get("0.999").copied().unwrap_or(f64::NAN);
        summaries.push(summarize(
            run,
            cfg.n,
            &cfg.ts,
            &pair.samples,
            &legs_only,
            pair.latency_ms,
            t999,
        ));
        predicted.push(pair.samples);
    }
    for s in &summaries {
        if let Some(first) = &s.failures.first {
            eprintln!(
                "R={} W={}: {} writes and {} reads failed (first: {first})",
                s.r, s.w, s.failures.writes, s.failures.reads
            );
        }
    }
    Ok(Measured {
        nodes: nodes.iter().map(|n: &Node| n.id.clone()).collect(),
        costs,
        runs,
        summaries,
        predicted,
        load,
    })
}

/// Runs `qkv exp staleness`.
pub fn run(g: &Globals, a: StalenessArgs) -> anyhow::Result<()> {
    let given = GivenDelays::parse(&a.delays, [&a.w_delay, &a.a_delay, &a.r_delay, &a.s_delay])?;
    let mut pairs = Vec::new();
    for &r in &a.r {
        for &w in &a.w {
            if !pairs.contains(&(r, w)) {
                pairs.push((r, w));
            }
        }
    }
    let cfg = Config {
        n: a.n,
        pairs,
        ts: a.t.clone(),
        writes: a.writes,
        concurrency: a.concurrency,
        read_coordinator: if a.same_coordinator {
            ReadCoordinator::Same
        } else {
            ReadCoordinator::Other
        },
        delays: given.delays.clone(),
        read_repair: a.read_repair.clone(),
        speculative_retry: a.speculative_retry.clone(),
        seed: a.seed,
        trials: a.trials,
        timeout_ms: a.timeout_ms,
        calibrate: !a.no_calibrate,
        slow: None,
    };
    let mut command = format!(
        "qkv exp staleness --n {} --r {} --w {}{} --t {} --writes {} --concurrency {}",
        a.n,
        list(&a.r),
        list(&a.w),
        given.flags(),
        list(&a.t),
        a.writes,
        a.concurrency
    );
    if a.same_coordinator {
        command.push_str(" --same-coordinator");
    }
    if a.no_calibrate {
        command.push_str(" --no-calibrate");
    }
    command.push_str(&format!(
        " --read-repair {} --speculative-retry {} --seed {} --trials {}",
        shell(&a.read_repair),
        shell(&a.speculative_retry),
        a.seed,
        a.trials
    ));
    if g.json {
        command.push_str(" --json");
    }

    let m = measure(g, &cfg, &a.bucket_prefix)?;
    let report = StalenessReport {
        config: &cfg,
        nodes: m.nodes,
        runs: &m.runs,
        summaries: m.summaries,
        predicted: m.predicted,
        command,
        spec: given.spec.map(|s| s.to_string()),
        load: m.load,
        costs: m.costs,
    };
    if g.json {
        print!("{}", report.json());
    } else {
        for line in report.preamble() {
            println!("{line}");
        }
        for t in report.tables() {
            println!("\n{}", t.title);
            let header: Vec<&str> = t.header.iter().map(String::as_str).collect();
            print!("{}", table(&header, &t.rows));
        }
    }
    if let Some(dir) = &a.out {
        write_files(dir, &report.files())?;
    }
    Ok(())
}

/// Writes `files` into `dir` (created if missing) and says so on stderr.
pub(super) fn write_files(
    dir: &std::path::Path,
    files: &[(&'static str, String)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();
    eprintln!("wrote {} to {}", names.join(", "), dir.display());
    Ok(())
}
