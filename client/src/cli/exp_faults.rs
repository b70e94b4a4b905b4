//! `qkv exp faults`: a fault experiment (`quorumkv_client::exp::faults`)
//! against a local cluster it starts (`--nodes K`), a recorded local
//! cluster (`--dir`), or a running cluster (`--node`), writing the history,
//! `results.json`, a timeline and a report into `--out`, and printing the
//! table (or, with `--json`, `results.json`). docs/EXPERIMENTS.md, "Fault
//! experiments", describes it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use quorumkv_client::exp::faults::cluster;
use quorumkv_client::exp::faults::level::parse_levels;
use quorumkv_client::exp::faults::nemesis::parse_kinds;
use quorumkv_client::exp::faults::output::write_all;
use quorumkv_client::exp::faults::results::table;
use quorumkv_client::exp::faults::run::{Config, Target, run};
use quorumkv_client::exp::faults::workload::parse_workloads;
use quorumkv_client::exp::history::History;
use quorumkv_client::local::Layout;

use super::Globals;
use super::output::print_json;

/// `qkv exp faults` options.
#[derive(Debug, Args)]
pub struct FaultsArgs {
    /// Start a local cluster of K nodes (each with --fault-injection) in
    /// --dir, and stop it afterwards; without it, run against the cluster
    /// recorded in --dir, or else the one at --node.
    #[arg(long, value_name = "K")]
    pub nodes: Option<u16>,
    /// The local cluster's directory (default: OUT/cluster when --nodes is
    /// given).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// HTTP port of n1 of a started cluster.
    #[arg(long, default_value_t = 8001)]
    pub base_http_port: u16,
    /// Gossip port of n1 of a started cluster.
    #[arg(long, default_value_t = 7001)]
    pub base_listen_port: u16,
    /// The qkvd binary of a started cluster (default: next to qkv, then
    /// on PATH).
    #[arg(long)]
    pub qkvd: Option<PathBuf>,
    /// Anti-entropy interval of a started cluster's nodes, seconds.
    #[arg(long, default_value_t = 10)]
    pub anti_entropy_secs: u64,
    /// How long the clients and the nemesis run (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Concurrent clients, spread over the levels.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// register, set, lww (comma-separated) or all.
    #[arg(long, default_value = "all")]
    pub workload: String,
    /// The levels, space-separated, each in a bucket of its own:
    /// `[sloppy:|lww:]r=R,w=W`.
    #[arg(long, default_value = "r=2,w=2 r=1,w=1 sloppy:r=2,w=2 lww:r=2,w=2")]
    pub levels: String,
    /// Replicas per key of every level's bucket.
    #[arg(long, default_value_t = 3)]
    pub n: u32,
    /// Faults: partition, one-way, kill, pause, skew, lose-disk
    /// (comma-separated), or none.
    #[arg(long, default_value = "partition,one-way,kill,pause,skew,lose-disk")]
    pub nemesis: String,
    /// Seed of the schedule and the clients' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Hot keys per register or lww level.
    #[arg(long, default_value_t = 3)]
    pub keys: usize,
    /// A client's pause between iterations, ms.
    #[arg(long, default_value_t = 20)]
    pub think_ms: u64,
    /// Shortest and longest fault, seconds (`MIN..MAX`).
    #[arg(long, default_value = "4..10")]
    pub fault_secs: String,
    /// Shortest and longest quiet spell between faults, seconds.
    #[arg(long, default_value = "2..5")]
    pub quiet_secs: String,
    /// How far a skewed clock is off, ms (ahead or behind, drawn).
    #[arg(long, default_value_t = 30_000)]
    pub skew_ms: i64,
    /// How long a fault's effect is taken to outlast it when judging
    /// availability, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub settle_secs: f64,
    /// The longest wait for the replicas to agree after the heal, seconds.
    #[arg(long, default_value_t = 120)]
    pub converge_secs: u64,
    /// A client request's HTTP timeout, ms.
    #[arg(long, default_value_t = 3000)]
    pub request_timeout_ms: u64,
    /// Output directory.
    #[arg(long, default_value = "faults-out")]
    pub out: PathBuf,
    /// Exit 1 when a level with strict expectations shows an anomaly.
    #[arg(long)]
    pub fail_on_anomaly: bool,
    /// Leave a started cluster running.
    #[arg(long)]
    pub keep: bool,
}

fn range(flag: &str, text: &str) -> anyhow::Result<(Duration, Duration)> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| anyhow!("--{flag} {text}: give MIN..MAX seconds"))?;
    let secs = |s: &str| -> anyhow::Result<Duration> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| anyhow!("--{flag} {text}: `{s}` is not a number of seconds"))?;
        Duration::try_from_secs_f64(v).map_err(|e| anyhow!("--{flag} {text}: {e}"))
    };
    let (lo, hi) = (secs(a)?, secs(b)?);
    if lo > hi || lo.is_zero() {
        bail!("--{flag} {text}: need 0 < MIN <= MAX");
    }
    Ok((lo, hi))
}

/// Runs `qkv exp faults`.
pub fn run_faults(g: &Globals, a: FaultsArgs) -> anyhow::Result<ExitCode> {
    let levels = parse_levels(&a.levels)?;
    let workloads = parse_workloads(&a.workload).map_err(|e| anyhow!("--workload: {e}"))?;
    let kinds = parse_kinds(&a.nemesis).map_err(|e| anyhow!("--nemesis: {e}"))?;
    let command = std::iter::once("qkv".to_string())
        .chain(std::env::args().skip(1))
        .map(|w| {
            if w.contains(' ') || w.is_empty() {
                format!("'{w}'")
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let cfg = Config {
        levels,
        workloads,
        clients: a.clients,
        n: a.n,
        duration: a.duration,
        kinds,
        seed: a.seed,
        keys: a.keys.max(1),
        think: Duration::from_millis(a.think_ms),
        settle: Duration::try_from_secs_f64(a.settle_secs)
            .map_err(|e| anyhow!("--settle-secs: {e}"))?,
        converge_timeout: Duration::from_secs(a.converge_secs),
        fault_len: range("fault-secs", &a.fault_secs)?,
        quiet_len: range("quiet-secs", &a.quiet_secs)?,
        skew_ms: a.skew_ms,
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        out: a.out.clone(),
        command,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(async {
        let (target, started) = match a.nodes {
            Some(k) => {
                let dir = cluster::absolute(&a.dir.clone().unwrap_or(a.out.join("cluster")))
                    .map_err(|e| anyhow!(e))?;
                let qkvd = super::local::find_qkvd(a.qkvd.as_deref())?;
                let layout = Layout {
                    nodes: k,
                    base_http_port: a.base_http_port,
                    base_listen_port: a.base_listen_port,
                    sync: None,
                    extra: vec![
                        "--fault-injection".into(),
                        "--anti-entropy-interval-secs".into(),
                        a.anti_entropy_secs.to_string(),
                    ],
                    tls: None,
                };
                eprintln!("starting {k} nodes in {}", dir.display());
                let nodes = cluster::start(&dir, &layout, &qkvd)
                    .await
                    .map_err(|e| anyhow!(e))?;
                (
                    Target {
                        nodes,
                        local_dir: Some(dir.clone()),
                    },
                    Some(dir),
                )
            }
            None => match &a.dir {
                Some(d) => {
                    let dir = cluster::absolute(d).map_err(|e| anyhow!(e))?;
                    (
                        Target {
                            nodes: cluster::recorded_nodes(&dir).map_err(|e| anyhow!(e))?,
                            local_dir: Some(dir),
                        },
                        None,
                    )
                }
                None => (
                    Target {
                        nodes: cluster::members(&g.nodes).await.map_err(|e| anyhow!(e))?,
                        local_dir: None,
                    },
                    None,
                ),
            },
        };
        eprintln!(
            "running {} clients for {} s against {}, seed {} (the faults it draws are in results.json and report.md)",
            cfg.clients,
            cfg.duration.as_secs(),
            target
                .nodes
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            cfg.seed
        );
        let res = run(&cfg, &target).await;
        if let Some(dir) = started
            && !a.keep
            && let Err(e) = tokio::task::spawn_blocking(move || cluster::stop(&dir))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
        {
            eprintln!("warning: stopping the cluster: {e}");
        }
        res.map_err(|e| anyhow!(e))
    })?;
    let history = History::read_file(&a.out.join("history.jsonl"))?;
    write_all(&a.out, &history, &outcome).map_err(|e| anyhow!(e))?;
    if g.json {
        print_json(&serde_json::to_value(&outcome)?)?;
    } else {
        print!("{}", table(&outcome.levels));
        println!(
            "strict anomalies: {}; healed at {:.1} s; files in {}",
            outcome.strict_anomalies,
            outcome.healed_at_secs,
            a.out.display()
        );
        for e in &outcome.nemesis_errors {
            println!("nemesis error: {e}");
        }
    }
    if a.fail_on_anomaly && outcome.strict_anomalies > 0 {
        return Ok(ExitCode::from(super::EXIT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}
