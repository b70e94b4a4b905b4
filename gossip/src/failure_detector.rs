//! Phi-accrual failure detection over gossiped heartbeats.
//!
//! # What it is
//!
//! Instead of a yes/no timeout, a phi-accrual detector (Hayashibara et al.,
//! "The φ Accrual Failure Detector", SRDS 2004) outputs a suspicion level
//!
//! ```text
//! phi(t) = -log10( P(no heartbeat for t | the node is alive) )
//! ```
//!
//! where `t` is the time since the last heartbeat *arrival* and the
//! probability comes from a model fitted to the recent inter-arrival times.
//! `phi = 8` means "if the node were alive, a silence this long would happen
//! with probability 10⁻⁸". The caller picks the threshold (default 8): each
//! +1 divides the false-positive rate by ten and adds a constant to the time
//! it takes to convict.
//!
//! # The model: exponential, as Cassandra does
//!
//! We assume inter-arrival times are exponential with the observed mean:
//! `P(silence > t) = e^(-t/mean)`, so
//!
//! ```text
//! phi(t) = t / mean · log10(e)        convict when t > threshold · ln(10) · mean
//! ```
//!
//! With a 1 s gossip interval the mean is ≈ 1 s, and threshold 8 convicts
//! after **8 · ln 10 ≈ 18.4 s** of silence (threshold 5: 11.5 s; 12: 27.6 s).
//!
//! Why exponential rather than Akka's normal distribution: heartbeats here
//! do not travel point to point. They arrive *through gossip*, relayed by
//! whichever peer happened to talk to us, so arrivals are bursty (two
//! relays in 100 ms, then nothing for 2 s) and the spread is of the order
//! of the mean itself. A normal model fitted to that learns a small standard
//! deviation in calm periods and then convicts on a single unlucky gap: its
//! tail falls like `e^(-t²)`, so phi explodes a few sigmas out. That is why
//! Akka needs an `acceptable-heartbeat-pause` fudge. The exponential tail is
//! the memoryless, heavy-enough one; its only parameter is the mean, which
//! is robust to bursts; and conviction time is a simple, predictable
//! multiple of it — the figure operators need (`simulate` prints measured
//! conviction times next to this bound).
//!
//! # Where it lives
//!
//! [`crate::Node`] keeps one [`ArrivalWindow`] per member, next to the
//! member's state. It records an arrival whenever a peer's heartbeat (or
//! generation) moves forward, checks phi once per round against
//! [`Config::threshold`], and turns crossings into [`crate::Event::Down`] /
//! [`crate::Event::Up`].
//!
//! # Implementation caveats
//!
//! * Inter-arrival times longer than [`Config::max_interval`] are not
//!   recorded (as in Cassandra): a partition or a pause is not the normal
//!   rhythm, and learning it would make the detector slow to convict for
//!   the next thousand samples.
//! * Before the first interval is known, the mean is
//!   [`Config::initial_interval`]; afterwards it is floored at
//!   [`Config::min_interval`] (the gossip interval), because relayed
//!   heartbeats arrive in bursts that would otherwise shrink it (the
//!   exponential analogue of Akka's minimum standard deviation). The mean
//!   adapts only upwards from there, to slow or lossy paths; conviction
//!   therefore takes at least `threshold · ln 10 · min_interval`.
//! * A restart (new generation) clears the window: intervals across a
//!   restart say nothing about the new process.

use std::{collections::VecDeque, time::Duration};

use crate::Error;

/// Failure detector settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Conviction threshold on phi. Range (0, 64]; default 8 (≈ 18.4 s of
    /// silence at a 1 s gossip interval).
    pub threshold: f64,
    /// How many inter-arrival samples to keep per peer. Range 1..=100 000;
    /// default 1000 (≈ 17 minutes of history at 1 s).
    pub window: usize,
    /// The mean inter-arrival time assumed before any sample is known.
    /// Must be > 0; default 1 s (the gossip interval).
    pub initial_interval: Duration,
    /// The mean is never taken below this. A node beats once per gossip
    /// round, so its heartbeats cannot *on average* arrive more often than
    /// that; but relayed heartbeats come in bursts (versions v and v+1 from
    /// two relays a few ms apart), and a handful of such samples would
    /// otherwise shrink the mean and convict a healthy node within
    /// seconds. Range [0, `max_interval`]; default 1 s: set it to the gossip
    /// interval. The mean still adapts *upwards* to slow or lossy paths.
    pub min_interval: Duration,
    /// Inter-arrival times above this are ignored (pauses, partitions).
    /// Must be ≥ `initial_interval`; default 2 s (twice the gossip interval).
    pub max_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            threshold: 8.0,
            window: 1000,
            initial_interval: Duration::from_secs(1),
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::InvalidConfig(format!("failure_detector.{m}")));
        if !(self.threshold > 0.0 && self.threshold <= 64.0) {
            return bad("threshold must be in (0, 64]");
        }
        if !(1..=100_000).contains(&self.window) {
            return bad("window must be in 1..=100000");
        }
        if self.initial_interval.is_zero() {
            return bad("initial_interval must be > 0");
        }
        if self.min_interval > self.max_interval {
            return bad("min_interval must be ≤ max_interval");
        }
        if self.max_interval < self.initial_interval
            || self.max_interval > Duration::from_secs(3600)
        {
            return bad("max_interval must be in [initial_interval, 1 h]");
        }
        Ok(())
    }

    /// Whether `phi` is above the threshold.
    pub fn convicts(&self, phi: f64) -> bool {
        phi > self.threshold
    }

    /// How long a silence convicts a peer whose mean inter-arrival time is
    /// `mean`: `threshold · ln(10) · mean`.
    pub fn conviction_after(&self, mean: Duration) -> Duration {
        mean.mul_f64(self.threshold * std::f64::consts::LN_10)
    }
}

/// Recent heartbeat inter-arrival times of one peer.
#[derive(Clone, Debug, Default)]
pub struct ArrivalWindow {
    last: Option<Duration>,
    /// Intervals in microseconds (bounded by `max_interval`, so u32 fits).
    samples: VecDeque<u32>,
    sum_micros: u64,
}

impl ArrivalWindow {
    /// Records a heartbeat arrival at `now`.
    pub fn record(&mut self, now: Duration, config: &Config) {
        if let Some(last) = self.last {
            let interval = now.saturating_sub(last);
            if interval <= config.max_interval {
                let micros = u32::try_from(interval.as_micros()).unwrap_or(u32::MAX);
                if self.samples.len() >= config.window
                    && let Some(old) = self.samples.pop_front()
                {
                    self.sum_micros -= u64::from(old);
                }
                self.samples.push_back(micros);
                self.sum_micros += u64::from(micros);
            }
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// The mean inter-arrival time used for phi: the window's average,
    /// floored at `min_interval` (the initial estimate until a sample
    /// exists).
    pub fn mean(&self, config: &Config) -> Duration {
        if self.samples.is_empty() {
            config.initial_interval
        } else {
            // Never 0: arrivals in the same microsecond would make phi infinite.
            let avg = Duration::from_micros((self.sum_micros / self.samples.len() as u64).max(1));
            avg.max(config.min_interval)
        }
    }

    /// Phi at `now` (0 before the first arrival).
    pub fn phi(&self, now: Duration, config: &Config) -> f64 {
        match self.last {
            None => 0.0,
            Some(last) => {
                let silence = now.saturating_sub(last).as_secs_f64();
                silence / self.mean(config).as_secs_f64() * std::f64::consts::LOG10_E
            }
        }
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no interval has been recorded yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn phi_grows_linearly_with_silence_over_the_mean() {
        let c = Config::default();
        let mut w = ArrivalWindow::default();
        for i in 0..10 {
            w.record(secs(i as f64), &c);
        }
        assert_eq!(w.mean(&c), secs(1.0));
        // Table: silence (s) → phi = silence · log10(e).
        for (silence, phi) in [(0.0, 0.0), (1.0, 0.434), (10.0, 4.34), (18.42, 8.0)] {
            let got = w.phi(secs(9.0 + silence), &c);
            assert!(
                (got - phi).abs() < 0.01,
                "silence {silence}: phi {got}, want {phi}"
            );
        }
    }

    #[test]
    fn threshold_eight_convicts_after_about_eighteen_seconds_at_one_second() {
        let c = Config::default();
        let t = c.conviction_after(secs(1.0)).as_secs_f64();
        assert!((t - 18.42).abs() < 0.01, "{t}");
    }

    #[test]
    fn bursts_of_relayed_heartbeats_do_not_shrink_the_mean_below_the_floor() {
        let c = Config::default();
        let mut w = ArrivalWindow::default();
        for t in [0.0, 0.005, 0.010, 0.015] {
            w.record(secs(t), &c);
        }
        assert_eq!(w.mean(&c), secs(1.0));
        assert!(!c.convicts(w.phi(secs(5.0), &c)));
        let raw = Config {
            min_interval: Duration::ZERO,
            ..c
        };
        assert!(
            raw.convicts(w.phi(secs(5.0), &raw)),
            "without the floor a burst convicts in seconds"
        );
    }

    #[test]
    fn slow_paths_raise_the_mean_and_the_time_to_convict() {
        let c = Config::default();
        let mut w = ArrivalWindow::default();
        for i in 0..20 {
            w.record(secs(1.8 * i as f64), &c);
        }
        assert!((w.mean(&c).as_secs_f64() - 1.8).abs() < 0.01);
        assert!(!c.convicts(w.phi(secs(1.8 * 19.0 + 30.0), &c)));
    }

    #[test]
    fn long_gaps_are_not_learned() {
        let c = Config::default();
        let mut w = ArrivalWindow::default();
        w.record(secs(0.0), &c);
        w.record(secs(1.0), &c);
        w.record(secs(31.0), &c); // a 30 s partition
        w.record(secs(32.0), &c);
        assert_eq!(w.len(), 2);
        assert_eq!(w.mean(&c), secs(1.0));
    }

    #[test]
    fn the_window_keeps_only_the_latest_samples() {
        let c = Config {
            window: 3,
            min_interval: Duration::ZERO,
            ..Config::default()
        };
        let mut w = ArrivalWindow::default();
        let mut t = 0.0;
        for dt in [0.2, 0.2, 0.2, 1.0, 1.0, 1.0] {
            t += dt;
            w.record(secs(t), &c);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.mean(&c), secs(1.0));
    }

    #[test]
    fn the_initial_interval_stands_in_before_any_sample() {
        let c = Config {
            initial_interval: secs(2.0),
            max_interval: secs(4.0),
            ..Config::default()
        };
        let mut w = ArrivalWindow::default();
        assert_eq!(w.phi(secs(100.0), &c), 0.0);
        w.record(secs(10.0), &c);
        let phi = w.phi(secs(12.0), &c);
        assert!((phi - 0.434).abs() < 0.01, "{phi}");
        assert!(!c.convicts(phi));
        assert!(c.convicts(w.phi(secs(10.0 + 37.0), &c)));
    }

    #[test]
    fn bad_configs_are_refused() {
        for c in [
            Config {
                threshold: 0.0,
                ..Config::default()
            },
            Config {
                threshold: f64::NAN,
                ..Config::default()
            },
            Config {
                window: 0,
                ..Config::default()
            },
            Config {
                initial_interval: Duration::ZERO,
                ..Config::default()
            },
            Config {
                max_interval: secs(0.5),
                ..Config::default()
            },
            Config {
                min_interval: secs(3.0),
                ..Config::default()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert!(Config::default().validate().is_ok());
    }
}
