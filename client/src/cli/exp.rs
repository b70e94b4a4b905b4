//! `qkv exp`: experiments on consistency. `predict` runs the PBS staleness
//! predictor of `quorumkv_client::exp` (no cluster needed) and prints its
//! figures, or writes them with a plot and a report (`--out`); `check FILE`
//! judges a recorded history with the library's checker
//! (`quorumkv_client::exp::check`) and prints its verdict per bucket.
//! docs/EXPERIMENTS.md describes the models, the checker and the output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use quorumkv_client::exp::check::{self, CheckOptions, render};
use quorumkv_client::exp::history::{History, HistoryError};
use quorumkv_client::exp::predict::{
    Config, Model, QuorumkvModel, ReadCoordinator, auto_speculate_ms, predict,
};
use quorumkv_client::exp::report::Report;
use quorumkv_faults::{DelaySpec, Delays, Dist, Legs, load};
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

use super::Globals;
use super::output::{print_json, table};

mod matrix;
mod staleness;

/// The `exp` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExpCommand {
    /// Predict how stale reads are and how long operations take, by Monte
    /// Carlo over the PBS paper's WARS model or quorumkv's own message flow.
    ///
    /// Every combination of --r and --w is predicted on the same draws;
    /// with more than one, the JSON holds one object per pair in
    /// `configs`. The same --seed gives the same output, byte for byte,
    /// whatever --threads.
    Predict(Box<PredictArgs>),
    /// Check a recorded history (JSON lines) for lost writes, stale and
    /// non-monotonic reads and unexpected values, per bucket. Exit 0 when
    /// the history was checked, anomalies or not (see --fail-on-anomaly).
    Check(CheckArgs),
    /// Measure on a live cluster what `predict` predicts: write versions
    /// of keys under injected delays, read each t ms after its
    /// acknowledgement, and compare P(consistent) with the quorumkv model
    /// (docs/EXPERIMENTS.md, "Measuring staleness"). Needs nodes started
    /// with --fault-injection.
    Staleness(Box<staleness::StalenessArgs>),
    /// The R/W matrix (the PBS paper's Table 4): latency, t-visibility at
    /// 99.9% and the replicas that may be down, for every R and W in
    /// 1..=N; measured on the cluster, or predicted with --simulate
    /// (docs/EXPERIMENTS.md, "The matrix").
    Matrix(Box<matrix::MatrixArgs>),
    /// Run a fault experiment: concurrent clients against a real cluster
    /// while a nemesis injects partitions, crashes, pauses, clock skew and
    /// lost disks; record the history, heal, wait for convergence, read
    /// every key at r=all, and judge it per level.
    Faults(Box<super::exp_faults::FaultsArgs>),
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

/// Which message flow to model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// The PBS paper's: a coordinator outside the replicas sends to all N
    /// and waits for the first W (R) answers.
    Wars,
    /// quorumkv's coordinator: a replica mints the write (after a forward
    /// leg when the coordinator is none), its own copy costs nothing, reads
    /// ask exactly R replicas and a spare when slow.
    Quorumkv,
}

/// Which node a read goes through, given the write's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadCoordinatorArg {
    /// Any node at random (each operation's own client).
    Any,
    /// Any node but the write's coordinator.
    Other,
    /// The write's coordinator.
    Same,
}

impl From<ReadCoordinatorArg> for ReadCoordinator {
    fn from(a: ReadCoordinatorArg) -> ReadCoordinator {
        match a {
            ReadCoordinatorArg::Any => ReadCoordinator::Any,
            ReadCoordinatorArg::Other => ReadCoordinator::Other,
            ReadCoordinatorArg::Same => ReadCoordinator::Same,
        }
    }
}

/// `--speculate-ms`: a delay in ms, `off` (never: infinite) or `auto`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speculate {
    /// What a node running `speculative_retry: auto` settles on under the
    /// given delays ([`auto_speculate_ms`]).
    Auto,
    /// A fixed delay in ms (infinite: never).
    Ms(f64),
}

/// A speculation delay in ms, `off` (never) or `auto`.
pub fn parse_speculate(s: &str) -> Result<Speculate, String> {
    match s {
        "off" => return Ok(Speculate::Ms(f64::INFINITY)),
        "auto" => return Ok(Speculate::Auto),
        _ => {}
    }
    match s.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms >= 0.0 => Ok(Speculate::Ms(ms)),
        _ => Err(format!(
            "{s:?} is not a delay in ms (>= 0), `off` or `auto`"
        )),
    }
}

/// `MS` or `off`, as [`parse_speculate`] reads it.
pub fn speculate_text(ms: f64) -> String {
    if ms.is_finite() {
        ms.to_string()
    } else {
        "off".into()
    }
}

/// `qkv exp predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Replicas per key (N).
    #[arg(long, default_value_t = 3)]
    pub n: usize,
    /// Read quorum R; a list (1,2,3) predicts every combination with --w.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub r: Vec<usize>,
    /// Write quorum W; a list predicts every combination with --r.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub w: Vec<usize>,
    /// One-way delays: a preset of the PBS paper (lnkd-ssd, lnkd-disk,
    /// ymmr[:alpha=A], wan[:remote_ms=D]) or one distribution for all four
    /// legs (const:MS, uniform:A..B, exp:MEAN, pareto:XM,ALPHA,
    /// mix:W*DIST+..., empirical:FILE or empirical:[MS,...]). Needed unless
    /// all four of --w-delay, --a-delay, --r-delay and --s-delay are given.
    #[arg(long, value_name = "PRESET|DIST")]
    pub delays: Option<String>,
    /// Write request leg (coordinator to replica), overriding --delays.
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
    /// Times after the commit, in ms, at which to give P(consistent).
    #[arg(long, value_delimiter = ',', default_value = "0,1,5,10")]
    pub t: Vec<f64>,
    /// Probabilities of a consistent read whose t to find.
    #[arg(long, value_delimiter = ',', default_value = "0.999")]
    pub p: Vec<f64>,
    /// k-staleness for k = 1..=K.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Trials (one write and one read each); docs/EXPERIMENTS.md gives
    /// the cost of a trial.
    #[arg(long, default_value_t = 1_000_000)]
    pub trials: u64,
    /// Seed of the random draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The message flow.
    #[arg(long, value_enum, default_value_t = ModelArg::Wars)]
    pub model: ModelArg,
    /// quorumkv model: nodes in the cluster (default N); each operation's
    /// coordinator is one of them at random, a replica with probability
    /// N/nodes.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// quorumkv model: a read asks a spare replica when its R answers take
    /// longer than this (the node's speculative retry); `off`: never (a
    /// bucket's `speculative_retry: off`); `auto` (the default): the p99 of
    /// one replica read call under the given delays, within 1..100 ms, as
    /// a node running `speculative_retry: auto` measures it.
    #[arg(long, value_name = "MS|off|auto", value_parser = parse_speculate)]
    pub speculate_ms: Option<Speculate>,
    /// quorumkv model: which node a read goes through, given the write's:
    /// any (at random), other (any but the writer's) or same (the writer's).
    #[arg(long, value_enum, default_value_t = ReadCoordinatorArg::Any)]
    pub read_coordinator: ReadCoordinatorArg,
    /// quorumkv model: a fixed cost added to every internode message, ms
    /// (the real call beyond its injected leg).
    #[arg(long, value_name = "MS")]
    pub hop_ms: Option<f64>,
    /// quorumkv model: a fixed one-way cost between the client and a
    /// coordinator, ms.
    #[arg(long, value_name = "MS")]
    pub client_ms: Option<f64>,
    /// quorumkv model: how much longer than drawn each injected delay
    /// runs, per leg: W,A,R,S in ms (what `qkv exp staleness` measures).
    #[arg(long, value_name = "W,A,R,S", value_delimiter = ',', num_args = 4)]
    pub overshoot_ms: Option<Vec<f64>>,
    /// quorumkv model: the coordinator's own copy pays the legs too (a node
    /// delaying its local replica operations with the same distributions).
    #[arg(long)]
    pub local_delays: bool,
    /// Threads (default: every core); the figures do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write summary.json, t_visibility.csv, latency.csv, plot.svg and
    /// report.md into DIR (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Draws of one read call from which `--speculate-ms auto` takes its p99.
const AUTO_SPECULATE_DRAWS: usize = 100_000;

/// Runs an `exp` subcommand (no async runtime: both are computation).
pub fn run(g: &Globals, cmd: ExpCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ExpCommand::Predict(a) => run_predict(g, *a).map(|()| ExitCode::SUCCESS),
        ExpCommand::Check(a) => check_history(g, a),
        ExpCommand::Staleness(a) => staleness::run(g, *a).map(|()| ExitCode::SUCCESS),
        ExpCommand::Matrix(a) => matrix::run(g, *a).map(|()| ExitCode::SUCCESS),
        ExpCommand::Faults(a) => super::exp_faults::run_faults(g, *a),
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
        bail!(
            "{} anomalies in buckets with strict expectations",
            verdict.strict_anomalies
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_.,:=/+-@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn list<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// The delays given by `--delays` and the `--X-delay` overrides: the
/// parsed preset or distribution (when given), the four legs, and which
/// legs were overridden (W, A, R, S), for the reproducing command line.
pub(super) struct GivenDelays {
    pub spec: Option<DelaySpec>,
    pub delays: Delays,
    pub legs: [(&'static str, bool); 4],
}

impl GivenDelays {
    /// Reads the flags; a one-line error names the flag at fault.
    pub fn parse(
        delays: &Option<String>,
        [w, ack, r, s]: [&Option<String>; 4],
    ) -> anyhow::Result<GivenDelays> {
        let spec = match delays {
            Some(s) => Some(load::spec(s).with_context(|| format!("--delays {s:?}"))?),
            None => None,
        };
        let leg = |flag: &str, text: &Option<String>| -> anyhow::Result<Option<Dist>> {
            match text {
                Some(s) => Ok(Some(
                    load::dist(s).with_context(|| format!("{flag} {s:?}"))?,
                )),
                None => Ok(None),
            }
        };
        let (w, ack, r, s) = (
            leg("--w-delay", w)?,
            leg("--a-delay", ack)?,
            leg("--r-delay", r)?,
            leg("--s-delay", s)?,
        );
        let mut delays = match (&spec, &w, &ack, &r, &s) {
            (Some(spec), ..) => spec.delays(),
            (None, Some(w), Some(a), Some(r), Some(s)) => Delays {
                legs: Legs {
                    w: w.clone(),
                    a: a.clone(),
                    r: r.clone(),
                    s: s.clone(),
                },
                remote_ms: None,
            },
            _ => bail!(
                "give --delays (a preset: lnkd-ssd, lnkd-disk, ymmr, wan; or a distribution for every leg), or all four of --w-delay, --a-delay, --r-delay and --s-delay"
            ),
        };
        let legs = [
            ("--w-delay", w.is_some()),
            ("--a-delay", ack.is_some()),
            ("--r-delay", r.is_some()),
            ("--s-delay", s.is_some()),
        ];
        for (slot, d) in [
            (&mut delays.legs.w, w),
            (&mut delays.legs.a, ack),
            (&mut delays.legs.r, r),
            (&mut delays.legs.s, s),
        ] {
            if let Some(d) = d {
                *slot = d;
            }
        }
        Ok(GivenDelays { spec, delays, legs })
    }

    /// The flags that reproduce these delays, distributions in their
    /// canonical form.
    pub fn flags(&self) -> String {
        let mut out = String::new();
        if let Some(spec) = &self.spec {
            out.push_str(&format!(" --delays {}", shell(&spec.to_string())));
        }
        let l = &self.delays.legs;
        for ((flag, given), d) in self.legs.iter().zip([&l.w, &l.a, &l.r, &l.s]) {
            if *given {
                out.push_str(&format!(" {flag} {}", shell(&d.to_string())));
            }
        }
        out
    }
}

fn run_predict(g: &Globals, a: PredictArgs) -> anyhow::Result<()> {
    let given = GivenDelays::parse(&a.delays, [&a.w_delay, &a.a_delay, &a.r_delay, &a.s_delay])?;
    let delays = given.delays.clone();
    let model = match a.model {
        ModelArg::Wars => {
            if a.nodes.is_some()
                || a.speculate_ms.is_some()
                || a.local_delays
                || a.read_coordinator != ReadCoordinatorArg::Any
                || a.hop_ms.is_some()
                || a.client_ms.is_some()
                || a.overshoot_ms.is_some()
            {
                bail!(
                    "--nodes, --speculate-ms, --local-delays, --read-coordinator, --hop-ms, --client-ms and --overshoot-ms apply to --model quorumkv only"
                );
            }
            Model::Wars
        }
        ModelArg::Quorumkv => {
            let hop_ms = a.hop_ms.unwrap_or(0.0);
            let overshoot_ms = match a.overshoot_ms.as_deref() {
                None => [0.0; 4],
                Some(&[w, ack, r, s]) => [w, ack, r, s],
                Some(_) => bail!("--overshoot-ms takes four values: W,A,R,S"),
            };
            let speculate_ms = match a.speculate_ms.unwrap_or(Speculate::Auto) {
                Speculate::Ms(ms) => ms,
                Speculate::Auto => auto_speculate_ms(
                    &delays,
                    hop_ms,
                    overshoot_ms,
                    AUTO_SPECULATE_DRAWS,
                    &mut ChaCha8Rng::seed_from_u64(a.seed),
                ),
            };
            Model::Quorumkv(QuorumkvModel {
                nodes: a.nodes.unwrap_or(a.n),
                speculate_ms,
                local_delays: a.local_delays,
                read_coordinator: a.read_coordinator.into(),
                hop_ms,
                client_ms: a.client_ms.unwrap_or(0.0),
                overshoot_ms,
            })
        }
    };
    let cfg = Config {
        n: a.n,
        rs: a.r.clone(),
        ws: a.w.clone(),
        delays,
        model,
        ts: a.t.clone(),
        ps: a.p.clone(),
        max_k: a.k,
        trials: a.trials,
        seed: a.seed,
    };
    cfg.validate()?;

    // The command that reproduces this output: every flag that changes a
    // figure, distributions in their canonical form.
    let mut command = format!(
        "qkv exp predict --model {} --n {} --r {} --w {}",
        model.name(),
        a.n,
        list(&a.r),
        list(&a.w)
    );
    command.push_str(&given.flags());
    if let Model::Quorumkv(m) = model {
        command.push_str(&format!(
            " --nodes {} --speculate-ms {}",
            m.nodes,
            speculate_text(m.speculate_ms)
        ));
        if m.local_delays {
            command.push_str(" --local-delays");
        }
        if m.hop_ms != 0.0 || m.client_ms != 0.0 {
            command.push_str(&format!(
                " --hop-ms {} --client-ms {}",
                m.hop_ms, m.client_ms
            ));
        }
        if m.overshoot_ms != [0.0; 4] {
            command.push_str(&format!(" --overshoot-ms {}", list(&m.overshoot_ms)));
        }
        if m.read_coordinator != ReadCoordinator::Any {
            command.push_str(&format!(
                " --read-coordinator {}",
                m.read_coordinator.name()
            ));
        }
    }
    command.push_str(&format!(
        " --t {} --p {} --k {} --trials {} --seed {}",
        list(&a.t),
        list(&a.p),
        a.k,
        a.trials,
        a.seed
    ));
    if g.json {
        command.push_str(" --json");
    }

    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = Instant::now();
    let prediction = predict(&cfg, threads)?;
    let took = started.elapsed().as_secs_f64();
    let report = Report {
        prediction: &prediction,
        command,
        spec: given.spec.map(|s| s.to_string()),
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
        eprintln!(
            "\n{} trials x {} pair(s) in {took:.2} s on {threads} thread(s)",
            cfg.trials,
            prediction.pairs.len()
        );
    }
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut names = Vec::new();
        for (name, contents) in report.files() {
            let path = dir.join(name);
            std::fs::write(&path, contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
            names.push(name);
        }
        eprintln!("wrote {} to {}", names.join(", "), dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell("lnkd-ssd"), "lnkd-ssd");
        assert_eq!(shell("ymmr:alpha=3.5"), "ymmr:alpha=3.5");
        assert_eq!(
            shell("mix:0.5*exp:1+0.5*const:2"),
            "'mix:0.5*exp:1+0.5*const:2'"
        );
        assert_eq!(shell("empirical:[1,2]"), "'empirical:[1,2]'");
        assert_eq!(shell("it's"), r"'it'\''s'");
    }
}
