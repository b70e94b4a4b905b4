//! Gossip settings.

use std::time::Duration;

use crate::{Error, failure_detector, state::Addr};

/// Gossip settings. Start from [`Config::new`] and override fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Messages naming another cluster are refused. Non-empty, ≤ 255 bytes;
    /// no default (the driver passes the configured cluster name).
    pub cluster_name: String,
    /// Time between the starts of two gossip rounds. Range 10 ms..=60 s;
    /// default 1 s. Detection and convergence times scale with it.
    pub interval: Duration,
    /// Gossip addresses of the seed nodes: a node that knows no live peer
    /// contacts them, and every node gossips to one now and then so that
    /// partitions heal through them. Empty is allowed for a single node;
    /// default empty. A node's own address in the list is skipped.
    pub seeds: Vec<Addr>,
    /// Live peers contacted per round. Range 1..=16; default 1 (Cassandra's
    /// choice; push-pull already spreads in O(log n) rounds, see the
    /// [`crate::node`] docs).
    pub fanout: usize,
    /// Probability per round of also gossiping to a seed (when the live
    /// peer chosen was not one). `None` (default): Cassandra's adaptive
    /// `seeds / (live + down)`, and always when no peer is live.
    pub seed_probability: Option<f64>,
    /// Probability per round of also gossiping to one random down (or not
    /// yet seen alive) node, so that a recovered node is noticed. `None`
    /// (default): Cassandra's adaptive `down / (live + 1)`.
    pub down_probability: Option<f64>,
    /// How long a node that announced `left` stays in membership (so that
    /// everyone learns it left) before it is forgotten; it is then
    /// quarantined for as long again, during which stale gossip about its
    /// generation is ignored. Range ≥ 2 × `interval`; default 72 h, as
    /// Cassandra, so that a node down for a weekend still learns of the
    /// departure instead of resurrecting the old state.
    pub left_quarantine: Duration,
    /// Upper bound of one message's encoded size, in bytes. Deltas beyond
    /// it wait for later rounds. SYNs (one ~20 B digest per node) are not
    /// split and must fit: range 4 KiB..=64 MiB; default 1 MiB (a SYN of
    /// 40 000 nodes, or ~400 full states with 256 tokens).
    pub max_message_bytes: usize,
    /// Upper bound of node deltas per ACK or ACK2. Range ≥ 1; default 1024.
    pub max_states_per_message: usize,
    /// Failure detector settings.
    pub failure_detector: failure_detector::Config,
}

impl Config {
    /// Defaults for the given cluster name.
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            interval: Duration::from_secs(1),
            seeds: Vec::new(),
            fanout: 1,
            seed_probability: None,
            down_probability: None,
            left_quarantine: Duration::from_secs(72 * 3600),
            max_message_bytes: 1 << 20,
            max_states_per_message: 1024,
            failure_detector: failure_detector::Config::default(),
        }
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if self.cluster_name.is_empty() || self.cluster_name.len() > 255 {
            return bad("cluster_name must be 1..=255 bytes");
        }
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(60) {
            return bad("interval must be in 10 ms..=60 s");
        }
        if !(1..=16).contains(&self.fanout) {
            return bad("fanout must be in 1..=16");
        }
        for (name, p) in [
            ("seed_probability", self.seed_probability),
            ("down_probability", self.down_probability),
        ] {
            if let Some(p) = p
                && !(0.0..=1.0).contains(&p)
            {
                return bad(&format!("{name} must be in [0, 1]"));
            }
        }
        if self.left_quarantine < 2 * self.interval {
            return bad("left_quarantine must be at least two intervals");
        }
        if !(4096..=64 << 20).contains(&self.max_message_bytes) {
            return bad("max_message_bytes must be in 4 KiB..=64 MiB");
        }
        if self.max_states_per_message == 0 {
            return bad("max_states_per_message must be ≥ 1");
        }
        self.failure_detector.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_ones() {
        let c = Config::new("prod");
        assert!(c.validate().is_ok());
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.failure_detector.threshold, 8.0);
    }

    #[test]
    fn out_of_range_fields_are_refused() {
        let base = Config::new("prod");
        let cases = [
            Config {
                cluster_name: String::new(),
                ..base.clone()
            },
            Config {
                interval: Duration::ZERO,
                ..base.clone()
            },
            Config {
                fanout: 0,
                ..base.clone()
            },
            Config {
                seed_probability: Some(1.5),
                ..base.clone()
            },
            Config {
                left_quarantine: Duration::from_millis(1),
                ..base.clone()
            },
            Config {
                max_message_bytes: 100,
                ..base.clone()
            },
            Config {
                max_states_per_message: 0,
                ..base
            },
        ];
        for c in cases {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig(_))),
                "{c:?}"
            );
        }
    }
}
