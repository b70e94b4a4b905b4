//! The PBS predictor (`qkv exp predict`): how likely a read is to see the
//! last committed write `t` ms after it committed (t-visibility), how long
//! until that reaches a chosen probability, the closed-form and simulated
//! k-staleness, and read and write latency percentiles, for any N and a
//! list of R and W, under the paper's WARS model or quorumkv's own message
//! flow (`trial.rs`). docs/EXPERIMENTS.md explains the model and how to
//! read its output.
//!
//! Pure and seeded: the trials are cut into fixed chunks of [`CHUNK`],
//! chunk `i` drawing from ChaCha8 seeded with the seed on stream `i`, so
//! the same seed gives the same figures whatever the number of threads.
//! Every (R, W) pair is evaluated on the same draws (common random
//! numbers: the differences between pairs are not sampling noise).
//!
//! Per trial only a few numbers are kept, in preallocated vectors of
//! `f32` (enough for figures quoted to 0.1 µs): when the read stops being
//! stale (clamped at 0, which is all `t >= 0` needs) per pair, the write
//! latency per W and the read latency per R. Sorting them gives exact
//! percentiles and the whole t-visibility curve.

use std::collections::BTreeMap;

use quorumkv_faults::Delays;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::trial::Trial;
pub use super::trial::{
    QuorumkvModel, ReadCoordinator, SPECULATE_AUTO_BOUNDS_MS, auto_speculate_ms,
};

/// Trials per chunk: the unit of seeding and of work per thread.
pub const CHUNK: usize = 1 << 16;
/// The largest N: replica sets are kept as 128-bit masks.
pub const MAX_N: usize = 128;
/// The largest k of k-staleness.
pub const MAX_K: usize = 1000;
/// At most this many per-trial values (4 bytes each) are kept: trials
/// times (pairs + distinct W + distinct R).
pub const MAX_VALUES: u64 = 500_000_000;

/// Which model of the message flow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    /// The PBS paper's WARS model.
    Wars,
    /// quorumkv's coordinator (node/src/coordinator).
    Quorumkv(QuorumkvModel),
}

impl Model {
    /// `wars` or `quorumkv`.
    pub fn name(&self) -> &'static str {
        match self {
            Model::Wars => "wars",
            Model::Quorumkv(_) => "quorumkv",
        }
    }
}

/// What to predict.
#[derive(Debug, Clone)]
pub struct Config {
    /// Replicas per key.
    pub n: usize,
    /// Read quorums; every combination with `ws` is predicted.
    pub rs: Vec<usize>,
    /// Write quorums.
    pub ws: Vec<usize>,
    /// The delays of the four legs.
    pub delays: Delays,
    /// The message flow.
    pub model: Model,
    /// Times after the commit at which to give P(consistent), in ms.
    pub ts: Vec<f64>,
    /// Probabilities whose t to find (the t-visibility "t at p").
    pub ps: Vec<f64>,
    /// k-staleness for k = 1..=max_k.
    pub max_k: usize,
    /// Trials (one write and one read each).
    pub trials: u64,
    /// Seed of the random draws.
    pub seed: u64,
}

/// A configuration the predictor cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// N out of range.
    #[error("n={n}: N must be 1..={MAX_N}")]
    N {
        /// N.
        n: usize,
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
    /// No R or no W.
    #[error("no {which} given")]
    NoQuorum {
        /// `r` or `w`.
        which: &'static str,
    },
    /// Zero trials.
    #[error("trials must be at least 1")]
    Trials,
    /// A bad t.
    #[error("t={t}: times must be finite and >= 0 ms")]
    T {
        /// The t.
        t: f64,
    },
    /// A bad probability.
    #[error("p={p}: probabilities must be in (0, 1]")]
    P {
        /// The probability.
        p: f64,
    },
    /// A bad k.
    #[error("k={k}: k-staleness goes up to k in 1..={MAX_K}")]
    K {
        /// The k.
        k: usize,
    },
    /// Fewer nodes than replicas.
    #[error("nodes={nodes} with n={n}: the cluster needs at least N nodes")]
    Nodes {
        /// Nodes.
        nodes: usize,
        /// N.
        n: usize,
    },
    /// More per-trial values than memory allows.
    #[error(
        "{trials} trials x {per_trial} values per trial is more than {MAX_VALUES} values (4 bytes each): ask for fewer trials or fewer R/W pairs"
    )]
    TooMany {
        /// Trials.
        trials: u64,
        /// Values kept per trial.
        per_trial: u64,
    },
    /// A read through another node than the write's, in a one-node
    /// cluster.
    #[error(
        "nodes={nodes}: reading through another coordinator than the write's needs at least 2 nodes"
    )]
    NoOtherCoordinator {
        /// Nodes.
        nodes: usize,
    },
    /// A bad fixed cost.
    #[error("{name}={ms}: must be finite and >= 0")]
    Cost {
        /// `hop_ms`, `client_ms` or `overshoot_ms`.
        name: &'static str,
        /// The value.
        ms: f64,
    },
    /// A bad speculation delay.
    #[error("speculate_ms={ms}: must be >= 0 (infinite: never)")]
    Speculate {
        /// The delay.
        ms: f64,
    },
}

impl Config {
    /// Checks everything [`predict`] relies on.
    pub fn validate(&self) -> Result<(), Error> {
        let n = self.n;
        if n == 0 || n > MAX_N {
            return Err(Error::N { n });
        }
        for (which, list) in [("r", &self.rs), ("w", &self.ws)] {
            if list.is_empty() {
                return Err(Error::NoQuorum { which });
            }
            if let Some(&value) = list.iter().find(|&&v| v == 0 || v > n) {
                return Err(Error::Quorum { which, value, n });
            }
        }
        if self.trials == 0 {
            return Err(Error::Trials);
        }
        let slots = Slots::new(self.pairs());
        let per_trial = (slots.pairs.len() + slots.ws.len() + slots.rs.len()) as u64;
        if self.trials.saturating_mul(per_trial) > MAX_VALUES {
            return Err(Error::TooMany {
                trials: self.trials,
                per_trial,
            });
        }
        if let Some(&t) = self.ts.iter().find(|t| !t.is_finite() || **t < 0.0) {
            return Err(Error::T { t });
        }
        if let Some(&p) = self.ps.iter().find(|p| !(**p > 0.0 && **p <= 1.0)) {
            return Err(Error::P { p });
        }
        if self.max_k == 0 || self.max_k > MAX_K {
            return Err(Error::K { k: self.max_k });
        }
        if let Model::Quorumkv(m) = self.model {
            if m.nodes < n {
                return Err(Error::Nodes { nodes: m.nodes, n });
            }
            if m.speculate_ms.is_nan() || m.speculate_ms < 0.0 {
                return Err(Error::Speculate { ms: m.speculate_ms });
            }
            let [ow, oa, or, os] = m.overshoot_ms;
            for (name, ms) in [
                ("hop_ms", m.hop_ms),
                ("client_ms", m.client_ms),
                ("overshoot_ms", ow),
                ("overshoot_ms", oa),
                ("overshoot_ms", or),
                ("overshoot_ms", os),
            ] {
                if !ms.is_finite() || ms < 0.0 {
                    return Err(Error::Cost { name, ms });
                }
            }
            if m.read_coordinator == ReadCoordinator::Other && m.nodes < 2 {
                return Err(Error::NoOtherCoordinator { nodes: m.nodes });
            }
        }
        Ok(())
    }

    /// Every (R, W) pair, R major, each once, in the order given.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for &r in &self.rs {
            for &w in &self.ws {
                if !pairs.contains(&(r, w)) {
                    pairs.push((r, w));
                }
            }
        }
        pairs
    }
}

/// P(consistent) at one t.
#[derive(Debug, Clone, Serialize)]
pub struct Visibility {
    /// Milliseconds after the commit.
    pub t_ms: f64,
    /// Probability that a read starting then returns the write.
    pub p_consistent: f64,
    /// Probability that the R answers disagree (some have the write, some
    /// not), so that read repair writes it to the stale ones.
    pub p_repair: f64,
}

/// Latency percentiles in ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// Read and write latency.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// The R-th answer.
    pub read: Percentiles,
    /// The commit.
    pub write: Percentiles,
}

/// P(a read returns one of the last k versions).
#[derive(Debug, Clone, Serialize)]
pub struct KStaleness {
    /// Versions.
    pub k: usize,
    /// `1 - (C(N-W, R) / C(N, R))^k`: quorums drawn uniformly at random.
    pub closed_form: f64,
    /// The model's own read and write sets, each read against the write
    /// sets of the k latest trials of its chunk.
    pub simulated: f64,
}

/// The prediction for one (R, W).
#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    /// Read quorum.
    pub r: usize,
    /// Write quorum.
    pub w: usize,
    /// P(consistent) at each asked t.
    pub t_visibility: Vec<Visibility>,
    /// For each asked probability, the t (ms) from which reads are
    /// consistent with at least that probability.
    pub t_at: BTreeMap<String, f64>,
    /// Latency percentiles.
    pub latency_ms: Latency,
    /// k-staleness for k = 1..=max_k.
    pub k_staleness: Vec<KStaleness>,
    /// The sorted per-trial values behind the figures, for curves.
    #[serde(skip)]
    pub samples: Samples,
}

/// A pair's per-trial values, each sorted ascending (ms).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// When the read stops being stale, clamped at 0.
    pub stale_until: Vec<f32>,
    /// Read latencies.
    pub read: Vec<f32>,
    /// Write latencies.
    pub write: Vec<f32>,
}

impl Samples {
    /// P(consistent) at `t` >= 0: the share of trials stale for less.
    pub fn p_consistent(&self, t: f64) -> f64 {
        let below = self.stale_until.partition_point(|&x| f64::from(x) <= t);
        below as f64 / self.stale_until.len().max(1) as f64
    }
}

/// The value of nearest rank `q` in `sorted` (`q` in (0, 1]).
pub fn quantile(sorted: &[f32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // The small slack keeps 0.999 * 1e6 from rounding up to the next rank.
    let rank = ((q * sorted.len() as f64) - 1e-9).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Rounds milliseconds to 0.1 µs, what f32 storage can vouch for.
pub fn round_ms(ms: f64) -> f64 {
    (ms * 1e4).round() / 1e4
}

/// `C(N-W, R) / C(N, R)`: the probability that a read quorum of R and a
/// write quorum of W drawn uniformly at random do not intersect.
pub fn miss_probability(n: usize, r: usize, w: usize) -> f64 {
    if n < w + r {
        return 0.0;
    }
    (0..r)
        .map(|i| (n - w - i) as f64 / (n - i) as f64)
        .product()
}

/// The whole prediction.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// What was asked.
    pub config: Config,
    /// One result per (R, W) pair, in [`Config::pairs`] order.
    pub pairs: Vec<PairResult>,
}

/// Where one chunk writes its per-trial values, and what it counts.
struct Job<'a> {
    index: usize,
    /// Per pair.
    stale: Vec<&'a mut [f32]>,
    /// Per distinct W / R.
    write: Vec<&'a mut [f32]>,
    read: Vec<&'a mut [f32]>,
}

/// Counts summed over chunks (integers: the sum does not depend on order).
#[derive(Clone)]
struct Counts {
    /// [pair][t]: reads consistent at t.
    consistent: Vec<Vec<u64>>,
    /// [pair][t]: reads whose answers disagree at t.
    repair: Vec<Vec<u64>>,
    /// [pair][run]: trials whose read missed the write sets of exactly
    /// `run` latest writes (capped at max_k).
    runs: Vec<Vec<u64>>,
    /// [k - 1]: trials with at least k writes of history in their chunk.
    history: Vec<u64>,
}

impl Counts {
    fn new(pairs: usize, ts: usize, k: usize) -> Counts {
        Counts {
            consistent: vec![vec![0; ts]; pairs],
            repair: vec![vec![0; ts]; pairs],
            runs: vec![vec![0; k + 1]; pairs],
            history: vec![0; k],
        }
    }

    fn add(&mut self, o: &Counts) {
        let add = |a: &mut Vec<u64>, b: &Vec<u64>| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        for (a, b) in [
            (&mut self.consistent, &o.consistent),
            (&mut self.repair, &o.repair),
            (&mut self.runs, &o.runs),
        ] {
            a.iter_mut().zip(b).for_each(|(x, y)| add(x, y));
        }
        add(&mut self.history, &o.history);
    }
}

/// Where each pair's write and read latencies go: the index of its W and
/// R in the distinct lists, and whether it is the pair that fills them.
struct Slots {
    pairs: Vec<(usize, usize)>,
    ws: Vec<usize>,
    rs: Vec<usize>,
    /// [pair]: (W slot, fills it?, R slot, fills it?).
    slot: Vec<(usize, bool, usize, bool)>,
}

impl Slots {
    fn new(pairs: Vec<(usize, usize)>) -> Slots {
        let (mut ws, mut rs, mut slot) = (Vec::new(), Vec::new(), Vec::new());
        for &(r, w) in &pairs {
            let find = |list: &mut Vec<usize>, v| match list.iter().position(|&x| x == v) {
                Some(i) => (i, false),
                None => {
                    list.push(v);
                    (list.len() - 1, true)
                }
            };
            let (wi, wf) = find(&mut ws, w);
            let (ri, rf) = find(&mut rs, r);
            slot.push((wi, wf, ri, rf));
        }
        Slots {
            pairs,
            ws,
            rs,
            slot,
        }
    }
}

/// Runs the trials of one chunk.
fn run_chunk(cfg: &Config, slots: &Slots, job: &mut Job<'_>, counts: &mut Counts) {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(job.index as u64);
    let mut trial = Trial::new(cfg.n);
    let k = cfg.max_k;
    // [pair]: the write sets of the latest k trials, a ring.
    let mut recent = vec![vec![0u128; k]; slots.pairs.len()];
    let len = job.stale.first().map_or(0, |s| s.len());
    for j in 0..len {
        match &cfg.model {
            Model::Wars => trial.draw_wars(&cfg.delays, &mut rng),
            Model::Quorumkv(m) => trial.draw_quorumkv(&cfg.delays, m, &mut rng),
        }
        for (p, &(r, w)) in slots.pairs.iter().enumerate() {
            let o = match &cfg.model {
                Model::Wars => trial.wars(r, w),
                Model::Quorumkv(m) => trial.quorumkv(r, w, m),
            };
            job.stale[p][j] = o.stale_until.max(0.0) as f32;
            let (wi, wf, ri, rf) = slots.slot[p];
            if wf {
                job.write[wi][j] = o.commit as f32;
            }
            if rf {
                job.read[ri][j] = o.read as f32;
            }
            for (i, &t) in cfg.ts.iter().enumerate() {
                if o.stale_until <= t {
                    counts.consistent[p][i] += 1;
                    if t < o.all_fresh_from {
                        counts.repair[p][i] += 1;
                    }
                }
            }
            let ring = &mut recent[p];
            ring[j % k] = o.write_set;
            let mut run = 0;
            while run < k.min(j + 1) && ring[(j - run) % k] & o.read_set == 0 {
                run += 1;
            }
            counts.runs[p][run] += 1;
        }
    }
    for (i, h) in counts.history.iter_mut().enumerate() {
        *h += (len as u64).saturating_sub(i as u64);
    }
}

/// Runs the prediction on `threads` threads (the result does not depend
/// on how many).
pub fn predict(cfg: &Config, threads: usize) -> Result<Prediction, Error> {
    cfg.validate()?;
    let slots = Slots::new(cfg.pairs());
    let trials = usize::try_from(cfg.trials).map_err(|_| Error::Trials)?;
    let mut stale = vec![vec![0f32; trials]; slots.pairs.len()];
    let mut write = vec![vec![0f32; trials]; slots.ws.len()];
    let mut read = vec![vec![0f32; trials]; slots.rs.len()];
    let chunks = trials.div_ceil(CHUNK);
    let mut jobs: Vec<Job<'_>> = (0..chunks)
        .map(|index| Job {
            index,
            stale: Vec::new(),
            write: Vec::new(),
            read: Vec::new(),
        })
        .collect();
    for (vecs, pick) in [(&mut stale, 0usize), (&mut write, 1), (&mut read, 2)] {
        for v in vecs.iter_mut() {
            for (job, part) in jobs.iter_mut().zip(v.chunks_mut(CHUNK)) {
                match pick {
                    0 => job.stale.push(part),
                    1 => job.write.push(part),
                    _ => job.read.push(part),
                }
            }
        }
    }
    let threads = threads.clamp(1, chunks.max(1));
    let mut shares: Vec<Vec<Job<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        shares[i % threads].push(job);
    }
    let empty = Counts::new(slots.pairs.len(), cfg.ts.len(), cfg.max_k);
    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|mut share| {
                let (slots, mut counts) = (&slots, empty.clone());
                scope.spawn(move || {
                    for job in &mut share {
                        run_chunk(cfg, slots, job, &mut counts);
                    }
                    counts
                })
            })
            .collect();
        let mut total = empty.clone();
        for h in handles {
            match h.join() {
                Ok(c) => total.add(&c),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        total
    });
    for v in stale
        .iter_mut()
        .chain(write.iter_mut())
        .chain(read.iter_mut())
    {
        v.sort_unstable_by(f32::total_cmp);
    }
    let n = trials as f64;
    let pairs = slots
        .pairs
        .iter()
        .enumerate()
        .map(|(p, &(r, w))| {
            let (wi, _, ri, _) = slots.slot[p];
            let samples = Samples {
                stale_until: std::mem::take(&mut stale[p]),
                read: read[ri].clone(),
                write: write[wi].clone(),
            };
            let pct = |v: &[f32]| Percentiles {
                p50: round_ms(quantile(v, 0.5)),
                p99: round_ms(quantile(v, 0.99)),
                p999: round_ms(quantile(v, 0.999)),
            };
            let miss = miss_probability(cfg.n, r, w);
            let runs = &counts.runs[p];
            PairResult {
                r,
                w,
                t_visibility: cfg
                    .ts
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| Visibility {
                        t_ms: t,
                        p_consistent: counts.consistent[p][i] as f64 / n,
                        p_repair: counts.repair[p][i] as f64 / n,
                    })
                    .collect(),
                t_at: cfg
                    .ps
                    .iter()
                    .map(|&q| (q.to_string(), round_ms(quantile(&samples.stale_until, q))))
                    .collect(),
                latency_ms: Latency {
                    read: pct(&samples.read),
                    write: pct(&samples.write),
                },
                k_staleness: (1..=cfg.max_k)
                    .map(|k| {
                        let missed: u64 = runs[k..].iter().sum();
                        let had = counts.history[k - 1];
                        KStaleness {
                            k,
                            closed_form: 1.0 - miss.powi(k as i32),
                            simulated: if had == 0 {
                                f64::NAN
                            } else {
                                1.0 - missed as f64 / had as f64
                            },
                        }
                    })
                    .collect(),
                samples,
            }
        })
        .collect();
    Ok(Prediction {
        config: cfg.clone(),
        pairs,
    })
}

#[cfg(test)]
mod tests;
