//! The measured half of the staleness experiments (`qkv exp staleness`):
//! on a live cluster with injected WARS delays, write a fresh version of a
//! key, wait `t` ms after the write was acknowledged, read it, and count
//! how often the read returned the version just written — next to what
//! [`super::predict`] predicts for the same delays and the same message
//! flow (the quorumkv model with local delays).
//!
//! This file is the pure part: what to run ([`Config`]), how a version is
//! written into a value and read back ([`encode`], [`decode`]), what one
//! read recorded ([`Sample`]), and how the samples become the measured
//! t-visibility curve, the versions-behind histogram, latency percentiles
//! and the RMSE against the prediction ([`summarize`]). The I/O shell
//! that drives a cluster is `run.rs`; the renderings are `report.rs`.
//! docs/EXPERIMENTS.md ("Measuring staleness") explains the method.

use std::collections::BTreeMap;

use quorumkv_faults::Delays;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::predict::{self, Model, Percentiles, QuorumkvModel, ReadCoordinator, Samples, quantile};

pub mod report;
pub mod run;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Replicas per key (the bucket's `n`).
    pub n: usize,
    /// The (R, W) configurations, measured one after the other, each in a
    /// bucket of its own.
    pub pairs: Vec<(usize, usize)>,
    /// The waits after a write's acknowledgement at which it is read, ms;
    /// every write is read once at each.
    pub ts: Vec<f64>,
    /// Writes per configuration.
    pub writes: u64,
    /// Keys written at once (each key's writes follow one another).
    pub concurrency: usize,
    /// Through which node the reads go, given the write's node (picked at
    /// random per write).
    pub read_coordinator: ReadCoordinator,
    /// The injected delays of every node, `local: true`.
    pub delays: Delays,
    /// The buckets' `read_repair` (`off` for the comparison).
    pub read_repair: String,
    /// The buckets' `speculative_retry` (`off`, `auto` or `NNms`).
    pub speculative_retry: String,
    /// Seeds the choice of nodes, the nodes' delay draws and the
    /// prediction.
    pub seed: u64,
    /// Trials of the prediction.
    pub trials: u64,
    /// A request's deadline at the node, ms.
    pub timeout_ms: u64,
    /// Measure the fixed costs of a client round trip and an internode
    /// call before the run, for the calibrated prediction.
    pub calibrate: bool,
    /// One slow replica: every other node delays all four legs of its
    /// messages to this node (by id) with this distribution, on top of
    /// nothing else (the tail-tolerance experiment). The prediction does
    /// not know of it.
    pub slow: Option<(String, quorumkv_faults::Dist)>,
}

/// The fixed costs the quorumkv model can add to the injected legs, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Costs {
    /// Per internode message (half an internode round trip).
    pub hop_ms: f64,
    /// Per message between the client and a coordinator (half a client
    /// round trip).
    pub client_ms: f64,
    /// How much longer than drawn the nodes' injected delays ran, per leg
    /// (W, A, R, S), during the configuration's run.
    pub overshoot_ms: [f64; 4],
}

/// Draws of one read call from which `speculative_retry: auto` takes its
/// p99 in the model.
pub const AUTO_SPECULATE_DRAWS: usize = 100_000;

/// The legs in the nodes' metrics' order.
pub const LEGS: [&str; 4] = ["w", "a", "r", "s"];

/// The injected delays a node has measured so far, per leg (W, A, R, S):
/// (total seconds, count), from its `qkv_fault_delay_seconds` histogram
/// in Prometheus text.
pub fn delay_totals(metrics: &str) -> [(f64, u64); 4] {
    let mut out = [(0.0, 0); 4];
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("qkv_fault_delay_seconds_") else {
            continue;
        };
        let Some((name, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        for (i, leg) in LEGS.iter().enumerate() {
            let label = format!("{{leg=\"{leg}\"}}");
            if name == format!("sum{label}") {
                out[i].0 += value.parse::<f64>().unwrap_or(0.0);
            } else if name == format!("count{label}") {
                out[i].1 += value.parse::<f64>().map_or(0, |v| v as u64);
            }
        }
    }
    out
}

/// Per leg, how much longer than `means` (ms) the delays between two
/// readings of [`delay_totals`] (summed over the nodes) ran on average;
/// 0 for a leg with no delays or no finite mean.
pub fn overshoot(
    before: &[(f64, u64); 4],
    after: &[(f64, u64); 4],
    means: [Option<f64>; 4],
) -> [f64; 4] {
    let mut out = [0.0; 4];
    for i in 0..4 {
        let (sum, count) = (
            after[i].0 - before[i].0,
            after[i].1.saturating_sub(before[i].1),
        );
        if let (Some(mean), true) = (means[i], count > 0) {
            out[i] = (sum * 1e3 / count as f64 - mean).max(0.0);
        }
    }
    out
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The costs from calibration timings without injected delays (ms): a
/// client round trip is `health`, an internode round trip is the extra
/// time of a W=2 write over a W=1 write through the same nodes.
pub fn costs(health: &[f64], w1: &[f64], w2: &[f64]) -> Costs {
    let half = |x: f64| {
        if x.is_finite() {
            (x / 2.0).max(0.0)
        } else {
            0.0
        }
    };
    Costs {
        hop_ms: half(median(w2) - median(w1)),
        client_ms: half(median(health)),
        overshoot_ms: [0.0; 4],
    }
}

/// A configuration that cannot be measured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// N out of range for the cluster.
    #[error("n={n}: N must be 1..={nodes} (the cluster has {nodes} nodes)")]
    N {
        /// N.
        n: usize,
        /// Nodes in the cluster.
        nodes: usize,
    },
    /// An R or W of 0 or above N.
    #[error("{which}={value} with n={n}: {which} must be 1..=n")]
    Quorum {
        /// `r` or `w`.
        which: &'static str,
        /// The value.
        value: usize,
        /// N.
        n: usize,
    },
    /// No configuration.
    #[error("no R/W configuration given")]
    NoPairs,
    /// A bad t, or none.
    #[error("--t {0}: waits must be finite and >= 0 ms, at least one")]
    T(String),
    /// Zero writes, keys or trials.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A remote delay (`wan`): the nodes cannot be told which replica is
    /// local to an operation.
    #[error(
        "wan's remote delay depends on where each replica is; measure its legs (lnkd-disk) instead"
    )]
    Remote,
    /// A read through another node in a one-node cluster.
    #[error("reading through another node than the writer's needs at least 2 nodes")]
    NoOtherNode,
    /// A `speculative_retry` the comparison cannot follow.
    #[error("speculative retry {0:?}: give off, auto or NNms")]
    Speculative(String),
}

/// The speculative-retry delay the quorumkv model uses for a bucket's
/// `speculative_retry`: `off` never speculates, `NNms` after NN ms, and
/// `auto` after the p99 of one replica read call under `delays` plus the
/// fixed costs, within 1..100 ms, as a node measures it from its own calls
/// ([`predict::auto_speculate_ms`], seeded with `seed`).
pub fn speculate_ms(
    speculative_retry: &str,
    delays: &Delays,
    costs: Costs,
    seed: u64,
) -> Result<f64, ConfigError> {
    let bad = || ConfigError::Speculative(speculative_retry.to_string());
    match speculative_retry {
        "off" => Ok(f64::INFINITY),
        "auto" => Ok(predict::auto_speculate_ms(
            delays,
            costs.hop_ms,
            costs.overshoot_ms,
            AUTO_SPECULATE_DRAWS,
            &mut ChaCha8Rng::seed_from_u64(seed),
        )),
        s => {
            let ms: f64 = s
                .strip_suffix("ms")
                .ok_or_else(bad)?
                .parse()
                .map_err(|_| bad())?;
            if ms.is_finite() && ms >= 0.0 {
                Ok(ms)
            } else {
                Err(bad())
            }
        }
    }
}

impl Config {
    /// Checks the configuration against a cluster of `nodes` nodes.
    pub fn validate(&self, nodes: usize) -> Result<(), ConfigError> {
        let n = self.n;
        if n == 0 || n > nodes {
            return Err(ConfigError::N { n, nodes });
        }
        if self.pairs.is_empty() {
            return Err(ConfigError::NoPairs);
        }
        for &(r, w) in &self.pairs {
            for (which, value) in [("r", r), ("w", w)] {
                if value == 0 || value > n {
                    return Err(ConfigError::Quorum { which, value, n });
                }
            }
        }
        if self.ts.is_empty() || self.ts.iter().any(|t| !t.is_finite() || *t < 0.0) {
            let ts: Vec<String> = self.ts.iter().map(f64::to_string).collect();
            return Err(ConfigError::T(ts.join(",")));
        }
        for (name, v) in [
            ("writes", self.writes),
            ("concurrency", self.concurrency as u64),
            ("trials", self.trials),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.delays.remote_ms.is_some() {
            return Err(ConfigError::Remote);
        }
        if self.read_coordinator == ReadCoordinator::Other && nodes < 2 {
            return Err(ConfigError::NoOtherNode);
        }
        speculate_ms(
            &self.speculative_retry,
            &self.delays,
            Costs::default(),
            self.seed,
        )?;
        Ok(())
    }

    /// The prediction to compare (R, W) with: the quorumkv model with
    /// local delays (every node delays its own replica operations too),
    /// the cluster's node count, the buckets' speculative retry and the
    /// same choice of the read's coordinator.
    pub fn prediction(&self, nodes: usize, r: usize, w: usize, costs: Costs) -> predict::Config {
        predict::Config {
            n: self.n,
            rs: vec![r],
            ws: vec![w],
            delays: self.delays.clone(),
            model: Model::Quorumkv(QuorumkvModel {
                nodes,
                speculate_ms: speculate_ms(&self.speculative_retry, &self.delays, costs, self.seed)
                    .unwrap_or(f64::INFINITY),
                local_delays: true,
                read_coordinator: self.read_coordinator,
                hop_ms: costs.hop_ms,
                client_ms: costs.client_ms,
                overshoot_ms: costs.overshoot_ms,
            }),
            ts: self.ts.clone(),
            ps: vec![0.999],
            max_k: 1,
            trials: self.trials,
            seed: self.seed,
        }
    }
}

/// The value written as version `seq` of a key.
pub fn encode(seq: u64) -> Vec<u8> {
    format!("qkv-staleness seq={seq}").into_bytes()
}

/// The version a value written by [`encode`] carries.
pub fn decode(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .strip_prefix("qkv-staleness seq=")?
        .parse()
        .ok()
}

/// One read of one write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The key's index (one key per concurrent writer).
    pub key: usize,
    /// The version just written (1, 2, ... per key).
    pub seq: u64,
    /// The wait asked for between the acknowledgement and the read, ms.
    pub t_ms: f64,
    /// The wait that passed before the read was sent, ms (timers run
    /// late).
    pub waited_ms: f64,
    /// The write's coordinator (index in the cluster's node list).
    pub write_node: usize,
    /// The read's coordinator.
    pub read_node: usize,
    /// The write's latency at the client, ms.
    pub write_ms: f64,
    /// The read's latency at the client, ms.
    pub read_ms: f64,
    /// The newest version the read returned (`None`: not found).
    pub seen: Option<u64>,
    /// Values the read returned (siblings when more than one).
    pub values: usize,
}

impl Sample {
    /// How many versions the read was behind the write (0: consistent).
    pub fn behind(&self) -> u64 {
        self.seq - self.seen.unwrap_or(0).min(self.seq)
    }
}

/// Operations that failed, and the first failure's message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Failures {
    /// Writes that failed (their reads are not made).
    pub writes: u64,
    /// Reads that failed.
    pub reads: u64,
    /// Reads that returned a value no write of the run made.
    pub foreign: u64,
    /// The first failure.
    pub first: Option<String>,
}

/// What one (R, W) configuration recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairRun {
    /// Read quorum.
    pub r: usize,
    /// Write quorum.
    pub w: usize,
    /// The bucket it ran in.
    pub bucket: String,
    /// Every read.
    pub samples: Vec<Sample>,
    /// Every acknowledged write's latency, ms.
    pub write_ms: Vec<f64>,
    /// What failed.
    pub failures: Failures,
    /// How much longer than drawn the injected delays ran, per leg.
    pub overshoot_ms: [f64; 4],
}

/// The measured and predicted P(consistent) at one t.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// The asked wait, ms.
    pub t_ms: f64,
    /// Reads made at this t.
    pub reads: u64,
    /// Of which returned the version just written.
    pub consistent: u64,
    /// `consistent / reads`.
    pub p_measured: f64,
    /// The mean wait that actually passed, ms.
    pub mean_waited_ms: f64,
    /// The prediction averaged over the waits that actually passed: what
    /// the model says these very reads should show.
    pub p_predicted: f64,
    /// The prediction at exactly `t_ms`.
    pub p_predicted_at_t: f64,
    /// The prediction of the injected legs alone (no fixed costs),
    /// averaged over the waits that passed.
    pub p_legs_only: f64,
}

/// Measured latency percentiles at the client, ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MeasuredLatency {
    /// Reads.
    pub read: Percentiles,
    /// Writes.
    pub write: Percentiles,
}

/// One configuration's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PairSummary {
    /// Read quorum.
    pub r: usize,
    /// Write quorum.
    pub w: usize,
    /// R + W > N: every read should be consistent.
    pub strict: bool,
    /// The bucket it ran in.
    pub bucket: String,
    /// Writes acknowledged.
    pub writes: u64,
    /// Reads made.
    pub reads: u64,
    /// Reads that returned an older version (or none).
    pub stale_reads: u64,
    /// Versions behind -> stale reads that many behind.
    pub behind: BTreeMap<u64, u64>,
    /// The measured and predicted curve.
    pub points: Vec<Point>,
    /// Root mean square of `p_measured - p_predicted` over the points.
    pub rmse: f64,
    /// The same against the prediction at the nominal t.
    pub rmse_at_t: f64,
    /// The same against the prediction of the injected legs alone.
    pub rmse_legs_only: f64,
    /// Measured latency at the client.
    pub latency_ms: MeasuredLatency,
    /// The model's latency (network legs only).
    pub predicted_latency_ms: predict::Latency,
    /// The model's t at which 99.9% of reads are consistent.
    pub predicted_t_999_ms: f64,
    /// What failed.
    pub failures: Failures,
    /// How much longer than drawn the injected delays ran, per leg (W, A,
    /// R, S), ms: the calibrated prediction adds it.
    pub overshoot_ms: [f64; 4],
}

/// The root mean square difference of two equally long lists (0 when
/// empty).
pub fn rmse(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let sum: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (sum / n as f64).sqrt()
}

fn percentiles(values: impl Iterator<Item = f64>) -> Percentiles {
    let mut v: Vec<f32> = values.map(|x| x as f32).collect();
    v.sort_by(f32::total_cmp);
    Percentiles {
        p50: quantile(&v, 0.5),
        p99: quantile(&v, 0.99),
        p999: quantile(&v, 0.999),
    }
}

/// Sums up one configuration's run against the prediction's per-trial
/// values for the same (R, W), with the fixed costs (`predicted`) and
/// without (`legs_only`).
pub fn summarize(
    run: &PairRun,
    n: usize,
    ts: &[f64],
    predicted: &Samples,
    legs_only: &Samples,
    predicted_latency_ms: predict::Latency,
    predicted_t_999_ms: f64,
) -> PairSummary {
    let mut points = Vec::with_capacity(ts.len());
    for &t in ts {
        let at: Vec<&Sample> = run.samples.iter().filter(|s| s.t_ms == t).collect();
        let reads = at.len() as u64;
        let consistent = at.iter().filter(|s| s.behind() == 0).count() as u64;
        let per = |f: &dyn Fn(&Sample) -> f64| {
            if at.is_empty() {
                f64::NAN
            } else {
                at.iter().map(|s| f(s)).sum::<f64>() / at.len() as f64
            }
        };
        points.push(Point {
            t_ms: t,
            reads,
            consistent,
            p_measured: if reads == 0 {
                f64::NAN
            } else {
                consistent as f64 / reads as f64
            },
            mean_waited_ms: per(&|s| s.waited_ms),
            p_predicted: per(&|s| predicted.p_consistent(s.waited_ms.max(0.0))),
            p_predicted_at_t: predicted.p_consistent(t),
            p_legs_only: per(&|s| legs_only.p_consistent(s.waited_ms.max(0.0))),
        });
    }
    let made: Vec<&Point> = points.iter().filter(|p| p.reads > 0).collect();
    let col = |f: fn(&Point) -> f64| made.iter().map(|p| f(p)).collect::<Vec<f64>>();
    let m = col(|p| p.p_measured);
    let (rmse_pred, rmse_at_t, rmse_legs_only) = (
        rmse(&m, &col(|p| p.p_predicted)),
        rmse(&m, &col(|p| p.p_predicted_at_t)),
        rmse(&m, &col(|p| p.p_legs_only)),
    );
    let mut behind = BTreeMap::new();
    for s in &run.samples {
        if s.behind() > 0 {
            *behind.entry(s.behind()).or_insert(0) += 1;
        }
    }
    PairSummary {
        r: run.r,
        w: run.w,
        strict: run.r + run.w > n,
        bucket: run.bucket.clone(),
        writes: run.write_ms.len() as u64,
        reads: run.samples.len() as u64,
        stale_reads: behind.values().sum(),
        behind,
        points,
        rmse: rmse_pred,
        rmse_at_t,
        rmse_legs_only,
        latency_ms: MeasuredLatency {
            read: percentiles(run.samples.iter().map(|s| s.read_ms)),
            write: percentiles(run.write_ms.iter().copied()),
        },
        predicted_latency_ms,
        predicted_t_999_ms,
        failures: run.failures.clone(),
        overshoot_ms: run.overshoot_ms,
    }
}

#[cfg(test)]
mod tests;
