//! What this node learns about its replicas' speed from its own calls, and
//! the two decisions it feeds (docs/CONSISTENCY.md, "Tail tolerance"):
//!
//! * **Which replica a read asks first** ([`super::read_order`]): per
//!   peer, a time-weighted moving average of how long this node's read
//!   calls to it took ([`PeerLatency`]), compared in factor-of-two bands
//!   ([`band`]) so that two healthy replicas count as equally fast and
//!   the older tie-breaks (outstanding calls, preference order) decide
//!   between them.
//! * **When a read asks a spare** (`speculative_retry: auto`): the p99 of
//!   recent replica read calls of this node, kept in a small histogram of
//!   atomic counters ([`ReadDelays`]), between a floor and a ceiling
//!   ([`speculation_delay`]).
//!
//! A replica ordered last is asked by no read, so its figure would never
//! change: a read that does not ask it sends it a **probe** (a digest read
//! whose answer only feeds the figure) when its last sample is older than
//! [`PROBE_AFTER`] ([`probe_due`]). The moving average weighs a sample by
//! the time since the one before it ([`ewma`]), so after a pause one fresh
//! sample outweighs the old figure: a replica that recovered is asked
//! again after a few probes (some 1.5 s).
//!
//! The functions are pure (time and samples passed in); [`Latencies`] is
//! the shared, lock-free state the read path updates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::NodeId;

/// The time constant of a peer's moving average: a sample weighs
/// `1 - e^(-dt/TAU)` where `dt` is the time since the peer's previous
/// sample, so the figure follows roughly the last `TAU` of calls at any
/// call rate.
pub const TAU: Duration = Duration::from_millis(250);

/// A replica no read asked for this long gets a probe.
pub const PROBE_AFTER: Duration = Duration::from_millis(500);

/// What a failed call counts as in its peer's moving average (at least):
/// a replica that refuses at once should not look fast.
pub const FAILED_CALL: Duration = Duration::from_secs(1);

/// The lower bound of the speculation delay: below it, asking a spare
/// costs a second read for little gain.
pub const SPECULATE_FLOOR: Duration = Duration::from_millis(1);

/// The upper bound of the speculation delay, and the delay before enough
/// samples are known: the fixed delay `auto` had before it adapted.
pub const SPECULATE_CEILING: Duration = Duration::from_millis(100);

/// Samples the histogram needs before its p99 is used.
pub const MIN_SAMPLES: u64 = 64;

/// The histogram's p99 is recomputed every this many samples.
const RECOMPUTE_EVERY: u64 = 32;

/// Past this many samples the histogram's counts are halved: it forgets
/// older samples geometrically.
const WINDOW: u64 = 4096;

/// The width of the fastest band, in µs ([`band`]).
const BAND_BASE_US: u64 = 1000;

/// The band of a latency figure (µs): 0 below 1 ms, then one band per
/// doubling (1–3 ms, 3–7 ms, 7–15 ms, ...). Replicas in one band count as
/// equally fast; an unknown figure is band 0 (a new replica is tried).
pub fn band(us: Option<u64>) -> u32 {
    us.map_or(0, |us| (us / BAND_BASE_US + 1).ilog2())
}

/// A moving average `prev` (µs; `None`: no sample yet) after `sample`,
/// taken `dt` after the previous sample.
pub fn ewma(prev: Option<f64>, sample: Duration, dt: Duration) -> f64 {
    let x = sample.as_secs_f64() * 1e6;
    match prev {
        None => x,
        Some(p) => {
            let w = 1.0 - (-dt.as_secs_f64() / TAU.as_secs_f64()).exp();
            p + (x - p) * w
        }
    }
}

/// Whether a peer whose last sample was taken at `last_sample` and last
/// probed at `last_probe` (both `None`: never) is due a probe at `now`.
pub fn probe_due(
    now: Duration,
    last_sample: Option<Duration>,
    last_probe: Option<Duration>,
) -> bool {
    let older = |t: Option<Duration>| t.is_none_or(|t| now.saturating_sub(t) >= PROBE_AFTER);
    last_sample.is_some() && older(last_sample) && older(last_probe)
}

/// Histogram buckets per doubling of latency.
const SUB: u32 = 4;
/// The smallest bucket's upper bound, as a power of two of µs (16 µs).
const LOW_POW: u32 = 4;
/// Buckets: 16 µs up to 2^(LOW_POW + OCTAVES) µs (~17 s); longer samples
/// go to the last.
const OCTAVES: u32 = 20;
/// The number of histogram buckets.
pub const BUCKETS: usize = (SUB * OCTAVES + 1) as usize;

/// The histogram bucket of a sample of `us` µs: buckets are a quarter of
/// an octave wide, so a bucket's bound is at most 19% above any sample in
/// it.
pub fn bucket_of(us: u64) -> usize {
    let low = 1u64 << LOW_POW;
    if us <= low {
        return 0;
    }
    let octave = (us - 1).ilog2(); // us in (2^octave, 2^(octave+1)]
    let base = 1u64 << octave;
    // The quarter of the octave: (us - base) / (base / SUB), rounded up
    // (base is at least 32, so base / SUB divides it exactly).
    let quarter = ((us - base - 1) / (base / u64::from(SUB)) + 1) as u32; // 1..=SUB
    let i = (octave - LOW_POW) * SUB + quarter;
    (i as usize).min(BUCKETS - 1)
}

/// The upper bound (µs) of histogram bucket `i`.
pub fn bucket_bound(i: usize) -> u64 {
    if i == 0 {
        return 1 << LOW_POW;
    }
    let i = i as u32 - 1;
    let octave = LOW_POW + i / SUB;
    let base = 1u64 << octave;
    base + base * u64::from(i % SUB + 1) / u64::from(SUB)
}

/// The bound (µs) of the bucket holding quantile `q` (0..=1) of `counts`;
/// `None` when they hold fewer than [`MIN_SAMPLES`].
pub fn quantile(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total < MIN_SAMPLES {
        return None;
    }
    // The rank of the quantile sample, 1-based: at least the first.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_bound(i));
        }
    }
    counts.len().checked_sub(1).map(bucket_bound)
}

/// The speculation delay of `auto` from the p99 of recent replica reads
/// (µs; `None`: too few samples): that p99, within
/// [[`SPECULATE_FLOOR`], [`SPECULATE_CEILING`]].
pub fn speculation_delay(p99_us: Option<u64>) -> Duration {
    match p99_us {
        None => SPECULATE_CEILING,
        Some(us) => Duration::from_micros(us).clamp(SPECULATE_FLOOR, SPECULATE_CEILING),
    }
}

/// Times stored in atomics: nanoseconds since [`Latencies`]' start, plus
/// one (0: never).
fn stored(t: Duration) -> u64 {
    (t.as_nanos() as u64).saturating_add(1)
}

fn loaded(v: u64) -> Option<Duration> {
    v.checked_sub(1).map(Duration::from_nanos)
}

/// One peer's figures.
#[derive(Default)]
pub struct PeerLatency {
    /// The moving average in µs, as `f64` bits (valid once `last` is set).
    ewma_us: AtomicU64,
    /// When the last sample was taken ([`stored`]).
    last: AtomicU64,
    /// When the last probe was sent ([`stored`]).
    probed: AtomicU64,
}

impl PeerLatency {
    /// The moving average in µs; `None` before the first sample.
    pub fn estimate_us(&self) -> Option<u64> {
        loaded(self.last.load(Relaxed))?;
        Some(f64::from_bits(self.ewma_us.load(Relaxed)) as u64)
    }

    fn record(&self, now: Duration, sample: Duration) {
        let before = loaded(self.last.swap(stored(now), Relaxed));
        let dt = before.map_or(Duration::ZERO, |b| now.saturating_sub(b));
        // Two samples at once may each read the old figure: one of them
        // is lost, which an average of many shrugs off.
        let prev = before.map(|_| f64::from_bits(self.ewma_us.load(Relaxed)));
        self.ewma_us
            .store(ewma(prev, sample, dt).to_bits(), Relaxed);
    }
}

/// The node-wide histogram of replica read calls for the p99.
struct ReadDelays {
    counts: [AtomicU64; BUCKETS],
    /// Samples since the counts were last halved.
    since_halved: AtomicU64,
    /// Samples ever: every [`RECOMPUTE_EVERY`]th recomputes `delay_us`.
    total: AtomicU64,
    /// The current speculation delay of `auto`, µs.
    delay_us: AtomicU64,
}

impl Default for ReadDelays {
    fn default() -> Self {
        ReadDelays {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            since_halved: AtomicU64::new(0),
            total: AtomicU64::new(0),
            delay_us: AtomicU64::new(SPECULATE_CEILING.as_micros() as u64),
        }
    }
}

impl ReadDelays {
    fn record(&self, sample: Duration) {
        self.counts[bucket_of(sample.as_micros() as u64)].fetch_add(1, Relaxed);
        if self.since_halved.fetch_add(1, Relaxed) + 1 >= WINDOW {
            self.since_halved.store(0, Relaxed);
            for c in &self.counts {
                // Not atomic with concurrent increments: one may be lost.
                c.store(c.load(Relaxed) / 2, Relaxed);
            }
        }
        if (self.total.fetch_add(1, Relaxed) + 1).is_multiple_of(RECOMPUTE_EVERY) {
            let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
            let delay = speculation_delay(quantile(&counts, 0.99));
            self.delay_us.store(delay.as_micros() as u64, Relaxed);
        }
    }
}

/// How a call's latency was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampled {
    /// A read asked the replica: counts for its figure and for the p99.
    Asked,
    /// A probe: counts for the replica's figure only (a probed replica is
    /// one reads avoid, and its slowness must not raise every read's
    /// speculation delay).
    Probe,
}

/// The figures of every peer this node has read from, and the p99.
pub struct Latencies {
    start: Instant,
    peers: RwLock<HashMap<NodeId, Arc<PeerLatency>>>,
    reads: ReadDelays,
    probes: AtomicU64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            start: Instant::now(),
            peers: RwLock::default(),
            reads: ReadDelays::default(),
            probes: AtomicU64::new(0),
        }
    }
}

impl Latencies {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn peer(&self, n: &str) -> Option<Arc<PeerLatency>> {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(n)
            .cloned()
    }

    /// `n`'s moving average in µs; `None` before its first sample.
    pub fn estimate_us(&self, n: &str) -> Option<u64> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        peers.get(n).and_then(|p| p.estimate_us())
    }

    /// Records a read call to `n` that took `took` and succeeded (`ok`)
    /// or failed.
    pub fn record(&self, n: &NodeId, took: Duration, ok: bool, how: Sampled) {
        let sample = if ok { took } else { took.max(FAILED_CALL) };
        let now = self.now();
        match self.peer(n) {
            Some(p) => p.record(now, sample),
            None => {
                let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
                peers.entry(n.clone()).or_default().record(now, sample);
            }
        }
        if ok && how == Sampled::Asked {
            self.reads.record(took);
        }
    }

    /// Whether `n` is due a probe now; if so, the probe is claimed (one
    /// read of the many that may see it due sends it).
    pub fn claim_probe(&self, n: &str) -> bool {
        let Some(p) = self.peer(n) else { return false };
        let now = self.now();
        let probed = p.probed.load(Relaxed);
        if !probe_due(now, loaded(p.last.load(Relaxed)), loaded(probed)) {
            return false;
        }
        let claimed = p
            .probed
            .compare_exchange(probed, stored(now), Relaxed, Relaxed)
            .is_ok();
        if claimed {
            self.probes.fetch_add(1, Relaxed);
        }
        claimed
    }

    /// The speculation delay of `speculative_retry: auto` now.
    pub fn speculation_delay(&self) -> Duration {
        Duration::from_micros(self.reads.delay_us.load(Relaxed))
    }

    /// Probes sent so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(Relaxed)
    }

    /// Every peer's moving average in µs, for `/metrics`.
    pub fn all(&self) -> Vec<(String, u64)> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        peers
            .iter()
            .filter_map(|(n, p)| Some((n.to_string(), p.estimate_us()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bands_double_from_one_millisecond_and_an_unknown_figure_is_the_fastest() {
        for (us, want) in [
            (None, 0),
            (Some(0), 0),
            (Some(999), 0),
            (Some(1_000), 1),
            (Some(2_999), 1),
            (Some(3_000), 2),
            (Some(7_000), 3),
            (Some(50_000), 5),
            (Some(100_000), 6),
        ] {
            assert_eq!(band(us), want, "{us:?}");
        }
    }

    #[test]
    fn a_sample_after_a_long_pause_outweighs_the_old_figure() {
        // First sample: the figure.
        assert_eq!(ewma(None, 50 * MS, Duration::ZERO), 50_000.0);
        // Back to back: the old figure holds.
        let quick = ewma(Some(100_000.0), MS, Duration::from_micros(10));
        assert!(quick > 99_000.0, "{quick}");
        // One TAU later: 63% of the way.
        let tau = ewma(Some(100_000.0), Duration::ZERO, TAU);
        assert!((tau - 36_788.0).abs() < 1.0, "{tau}");
        // Two probe intervals of a recovered replica: under a millisecond.
        let once = ewma(Some(100_000.0), Duration::from_micros(300), PROBE_AFTER);
        let twice = ewma(Some(once), Duration::from_micros(300), PROBE_AFTER);
        let thrice = ewma(Some(twice), Duration::from_micros(300), PROBE_AFTER);
        assert!(band(Some(thrice as u64)) == 0, "{once} {twice} {thrice}");
    }

    #[test]
    fn a_replica_is_probed_once_per_interval_and_only_when_nothing_sampled_it() {
        let at = |ms: u64| Duration::from_millis(ms);
        for (now, sample, probe, due) in [
            (1000, None, None, false), // never asked: nothing to refresh
            (1000, Some(900), None, false),
            (1000, Some(500), None, true),
            (1000, Some(100), Some(600), false),
            (1000, Some(100), Some(500), true),
            (1000, Some(600), Some(100), false),
        ] {
            let sample = sample.map(at);
            let probe = probe.map(at);
            assert_eq!(
                probe_due(at(now), sample, probe),
                due,
                "{now} {sample:?} {probe:?}"
            );
        }
    }

    #[test]
    fn histogram_buckets_are_a_quarter_octave_wide() {
        for (us, bound) in [
            (0, 16),
            (16, 16),
            (17, 20),
            (20, 20),
            (21, 24),
            (32, 32),
            (33, 40),
            (1000, 1024),
            (1025, 1280),
            (50_000, 57_344),
        ] {
            assert_eq!(bucket_bound(bucket_of(us)), bound, "{us}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn the_speculation_delay_is_the_p99_between_floor_and_ceiling() {
        let mut counts = [0u64; BUCKETS];
        assert_eq!(
            speculation_delay(quantile(&counts, 0.99)),
            SPECULATE_CEILING
        );
        // 99 fast samples and one slow: the p99 is the fast one.
        counts[bucket_of(2_000)] = 990;
        counts[bucket_of(50_000)] = 10;
        assert_eq!(quantile(&counts, 0.99), Some(2_048));
        assert_eq!(
            speculation_delay(quantile(&counts, 0.99)),
            Duration::from_micros(2_048)
        );
        // Two in a hundred slow: the slow one.
        counts[bucket_of(50_000)] = 20;
        assert_eq!(quantile(&counts, 0.99), Some(57_344));
        // Clamped.
        assert_eq!(speculation_delay(Some(10)), SPECULATE_FLOOR);
        assert_eq!(speculation_delay(Some(10_000_000)), SPECULATE_CEILING);
        // Too few samples: the ceiling.
        let few = [MIN_SAMPLES - 1; 1];
        assert_eq!(quantile(&few, 0.99), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_node_wide_delay_follows_asked_reads_but_not_probes_or_failures() {
        let l = Latencies::default();
        let n = NodeId::from("n2");
        assert_eq!(l.speculation_delay(), SPECULATE_CEILING);
        for _ in 0..MIN_SAMPLES {
            l.record(&n, 2 * MS, true, Sampled::Asked);
            l.record(&n, 80 * MS, true, Sampled::Probe);
            l.record(&n, 80 * MS, false, Sampled::Asked);
        }
        assert_eq!(l.speculation_delay(), Duration::from_micros(2_048));
        assert!(l.estimate_us(&n).is_some_and(|us| us >= 1_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_call_makes_a_replica_look_slow() {
        let l = Latencies::default();
        let n = NodeId::from("n2");
        l.record(&n, Duration::from_micros(10), false, Sampled::Asked);
        assert_eq!(l.estimate_us(&n), Some(FAILED_CALL.as_micros() as u64));
        assert_eq!(l.estimate_us("n3"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn one_read_of_many_claims_a_due_probe() {
        let l = Latencies::default();
        let n = NodeId::from("n2");
        assert!(!l.claim_probe("n2"), "never sampled");
        l.record(&n, 50 * MS, true, Sampled::Asked);
        assert!(!l.claim_probe("n2"), "fresh");
        tokio::time::advance(PROBE_AFTER).await;
        assert!(l.claim_probe("n2"));
        assert!(!l.claim_probe("n2"), "claimed");
        assert_eq!(l.probes(), 1);
    }

    proptest! {
        /// A bucket's bound is at least its samples and at most 25% above
        /// them; buckets grow with the sample.
        #[test]
        fn a_bucket_bounds_its_samples_closely(us in 17u64..(1 << 24), more in 0u64..1000) {
            let b = bucket_bound(bucket_of(us));
            prop_assert!(b >= us && b * 4 <= us * 5, "{} -> {}", us, b);
            prop_assert!(bucket_of(us) <= bucket_of(us + more));
        }

        /// A quantile is a bucket bound no lower for a higher q, and within
        /// the samples' range.
        #[test]
        fn quantiles_grow_with_q(samples in proptest::collection::vec(0u64..200_000, 64..300), q in 0.0f64..1.0) {
            let mut counts = [0u64; BUCKETS];
            for s in &samples {
                counts[bucket_of(*s)] += 1;
            }
            let lo = quantile(&counts, q).expect("enough samples");
            let hi = quantile(&counts, (q + 0.1).min(1.0)).expect("enough samples");
            prop_assert!(lo <= hi);
            let max = samples.iter().copied().max().unwrap_or(0);
            prop_assert!(lo <= bucket_bound(bucket_of(max)));
            let min = samples.iter().copied().min().unwrap_or(0);
            prop_assert!(lo >= min);
        }

        /// The moving average stays between the old figure and the sample.
        #[test]
        fn the_average_moves_toward_the_sample(prev in 0.0f64..1e6, sample in 0u64..1_000_000, dt in 0u64..10_000_000) {
            let x = sample as f64;
            let e = ewma(Some(prev), Duration::from_micros(sample), Duration::from_micros(dt));
            prop_assert!(e >= prev.min(x) - 1e-6 && e <= prev.max(x) + 1e-6);
        }
    }
}
