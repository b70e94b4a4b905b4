//! [`Settings`]: the faults one node injects, as the document its admin
//! route (`GET|PUT|PATCH|DELETE /internal/faults`, docs/API.md) and
//! `qkv faults` exchange — per-peer delays of the four WARS legs, drops,
//! duplicates and reordering ([`LinkFaults`]), a [`Partition`], a
//! [`ClockFault`], and the storage delay of the older `/internal/fault`.
//!
//! Everything here is data and arithmetic: which peer's faults apply
//! ([`Settings::link_to`]), which messages a partition cuts
//! ([`Partition::cuts`]), what a skewed clock reads ([`ClockFault::read`]),
//! and the checks a document must pass ([`Settings::validate`]). What to do
//! with one message is `plan.rs`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Dist;

/// One leg of the WARS model: a write request reaching a replica (`W`),
/// its acknowledgement (`A`), a read request (`R`) and its response (`S`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// A write (replication or a forwarded write) on its way to a replica.
    W,
    /// Its acknowledgement on the way back.
    A,
    /// A read request on its way to a replica.
    R,
    /// Its response on the way back.
    S,
}

impl Leg {
    /// The four legs, in WARS order.
    pub const ALL: [Leg; 4] = [Leg::W, Leg::A, Leg::R, Leg::S];

    /// `w`, `a`, `r` or `s`.
    pub fn name(self) -> &'static str {
        match self {
            Leg::W => "w",
            Leg::A => "a",
            Leg::R => "r",
            Leg::S => "s",
        }
    }
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The faults of the messages one node sends to one peer (or to every
/// peer without an entry of its own).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFaults {
    /// Delay of a write request (replication, a forwarded write), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<Dist>,
    /// Delay of a write's acknowledgement, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<Dist>,
    /// Delay of a read request, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<Dist>,
    /// Delay of a read's response, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<Dist>,
    /// Probability that a message is lost (each request and each answer
    /// drawn on its own).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drop: f64,
    /// Probability that a request is delivered twice.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dup: f64,
    /// Probability that a request is held back [`REORDER_HOLD_MS`], so
    /// that requests sent after it overtake it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reorder: f64,
}

/// How long a reordered message is held back, in ms.
pub const REORDER_HOLD_MS: f64 = 20.0;

fn is_zero(p: &f64) -> bool {
    *p == 0.0
}

impl LinkFaults {
    /// The distribution of `leg`, if one is set.
    pub fn leg(&self, leg: Leg) -> Option<&Dist> {
        match leg {
            Leg::W => self.w.as_ref(),
            Leg::A => self.a.as_ref(),
            Leg::R => self.r.as_ref(),
            Leg::S => self.s.as_ref(),
        }
    }

    /// Sets (or with `None` removes) the distribution of `leg`.
    pub fn set_leg(&mut self, leg: Leg, d: Option<Dist>) {
        let slot = match leg {
            Leg::W => &mut self.w,
            Leg::A => &mut self.a,
            Leg::R => &mut self.r,
            Leg::S => &mut self.s,
        };
        *slot = d;
    }

    /// Whether it does nothing to any message.
    pub fn is_quiet(&self) -> bool {
        Leg::ALL.iter().all(|l| self.leg(*l).is_none())
            && self.drop == 0.0
            && self.dup == 0.0
            && self.reorder == 0.0
    }
}

/// A network partition between sets of nodes (node ids).
///
/// Symmetric: no message crosses between two different sides. One-way:
/// each side's messages do not reach the sides listed after it, while
/// theirs still reach it (with two sides `A|B`: B does not hear A, A
/// hears B). Nodes named on no side are not partitioned from anyone.
///
/// Its text form is the sides' ids joined by `,`, the sides by `|`:
/// `n1,n2|n3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// The sides, each a set of node ids; two or more, disjoint.
    pub sides: Vec<BTreeSet<String>>,
    /// Only from earlier sides to later ones.
    #[serde(default)]
    pub one_way: bool,
}

impl Partition {
    /// Whether messages from node `from` to node `to` are cut.
    pub fn cuts(&self, from: &str, to: &str) -> bool {
        let side = |n: &str| self.sides.iter().position(|s| s.contains(n));
        match (side(from), side(to)) {
            (Some(f), Some(t)) if f != t => !self.one_way || f < t,
            _ => false,
        }
    }

    /// The nodes whose messages from `from` are cut, in id order.
    pub fn cut_from(&self, from: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .sides
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|to| self.cuts(from, to))
            .collect();
        out.sort_unstable();
        out
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.sides.len() < 2 {
            return Err(SettingsError::Partition(format!(
                "a partition needs two or more sides, got {}",
                self.sides.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for side in &self.sides {
            if side.is_empty() {
                return Err(SettingsError::Partition("a side names no node".into()));
            }
            for n in side {
                if n.trim().is_empty() {
                    return Err(SettingsError::Partition("an empty node id".into()));
                }
                if !seen.insert(n.as_str()) {
                    return Err(SettingsError::Partition(format!(
                        "node {n} is on two sides"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Partition {
    type Err = SettingsError;

    /// `A,B|C` (symmetric; set [`Partition::one_way`] afterwards).
    fn from_str(s: &str) -> Result<Partition, SettingsError> {
        let sides = s
            .split('|')
            .map(|side| {
                side.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(String::from)
                    .collect()
            })
            .collect();
        let p = Partition {
            sides,
            one_way: false,
        };
        p.validate().map_err(|e| match e {
            SettingsError::Partition(why) => {
                SettingsError::Partition(format!("`{s}`: {why} (expected e.g. n1,n2|n3)"))
            }
            other => other,
        })?;
        Ok(p)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, side) in self.sides.iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            let ids: Vec<&str> = side.iter().map(String::as_str).collect();
            f.write_str(&ids.join(","))?;
        }
        if self.one_way {
            f.write_str(" (one-way)")?;
        }
        Ok(())
    }
}

/// A node's wall clock set off from the host's: `offset_ms` ahead
/// (negative: behind) when the fault is set, gaining `drift_ppm`
/// millionths of the elapsed time from then on (1000 ppm = 1 ms/s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockFault {
    /// Offset when set, ms.
    #[serde(default)]
    pub offset_ms: i64,
    /// Drift from then on, parts per million (negative: the clock loses).
    #[serde(default)]
    pub drift_ppm: f64,
}

/// Largest clock offset accepted: ten years, in ms.
pub const MAX_CLOCK_OFFSET_MS: i64 = 10 * 365 * 86_400_000;

/// Largest drift accepted, ppm: a clock at most twice as fast, or stopped.
pub const MAX_DRIFT_PPM: f64 = 1_000_000.0;

impl ClockFault {
    /// Whether the clock reads the host's.
    pub fn is_zero(&self) -> bool {
        self.offset_ms == 0 && self.drift_ppm == 0.0
    }

    /// What the skewed clock reads when the host's reads `host_ms`, for a
    /// fault set when the host's read `since_ms`: `host_ms + offset_ms +
    /// drift_ppm · (host_ms − since_ms) / 10⁶`, rounded to the nearest
    /// ms, never below 0. A host clock stepped back before `since_ms`
    /// counts as no time elapsed.
    pub fn read(&self, host_ms: u64, since_ms: u64) -> u64 {
        let elapsed = host_ms.saturating_sub(since_ms) as f64;
        let drift = (self.drift_ppm * elapsed / 1e6).round();
        let skewed = host_ms as f64 + self.offset_ms as f64 + drift;
        if skewed <= 0.0 {
            0
        } else if skewed >= u64::MAX as f64 {
            u64::MAX
        } else {
            skewed as u64
        }
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.offset_ms.abs() > MAX_CLOCK_OFFSET_MS {
            return Err(SettingsError::Clock(format!(
                "offset_ms {} is beyond ±{MAX_CLOCK_OFFSET_MS} (ten years)",
                self.offset_ms
            )));
        }
        if !self.drift_ppm.is_finite() || self.drift_ppm.abs() > MAX_DRIFT_PPM {
            return Err(SettingsError::Clock(format!(
                "drift_ppm {} must be a number within ±{MAX_DRIFT_PPM}",
                self.drift_ppm
            )));
        }
        Ok(())
    }
}

/// Longest storage delay, ms; larger ones are clamped to it (as the older
/// `/internal/fault` always did).
pub const MAX_STORAGE_DELAY_MS: u64 = 600_000;

/// Every fault one node injects. The default injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Faults of messages to every peer without an entry in `peers`.
    #[serde(default, skip_serializing_if = "LinkFaults::is_quiet")]
    pub all_peers: LinkFaults,
    /// Faults of messages to one peer (by node id); an entry replaces
    /// `all_peers` for that peer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, LinkFaults>,
    /// The coordinator's operations on its own replica pay the legs too
    /// (those of this node's own entry in `peers`, else `all_peers`): W
    /// before and A after a local write, R before and S after a local
    /// read, so that all N replicas follow the delays.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// A partition, enforced by each sending node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// This node's clock.
    #[serde(default, skip_serializing_if = "ClockFault::is_zero")]
    pub clock: ClockFault,
    /// Delay added to every operation on this node's own replica, ms.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub storage_delay_ms: u64,
    /// Seeds the draws (drops, delays...) when set, so that a run can be
    /// repeated; otherwise they are seeded from the OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// Why a settings document was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// A probability outside `[0, 1]`.
    #[error("{field} of {target} is {value}: a probability must be within 0..=1")]
    Probability {
        /// `drop`, `dup` or `reorder`.
        field: &'static str,
        /// `all_peers` or `peers.ID`.
        target: String,
        /// The value given.
        value: f64,
    },
    /// A bad partition.
    #[error("partition: {0}")]
    Partition(String),
    /// A bad clock fault.
    #[error("clock: {0}")]
    Clock(String),
    /// An empty peer id in `peers`.
    #[error("peers: a node id is empty")]
    EmptyPeer,
}

impl Settings {
    /// The faults of messages to `peer`: its own entry, else `all_peers`.
    pub fn link_to(&self, peer: &str) -> &LinkFaults {
        self.peers.get(peer).unwrap_or(&self.all_peers)
    }

    /// Whether any message to another node is affected.
    pub fn touches_network(&self) -> bool {
        self.partition.is_some()
            || !self.all_peers.is_quiet()
            || self.peers.values().any(|l| !l.is_quiet())
    }

    /// Checks every value; clamps the storage delay to
    /// [`MAX_STORAGE_DELAY_MS`].
    pub fn validate(mut self) -> Result<Settings, SettingsError> {
        let links = std::iter::once(("all_peers".to_string(), &self.all_peers))
            .chain(self.peers.iter().map(|(k, v)| (format!("peers.{k}"), v)));
        for (target, l) in links {
            for (field, value) in [("drop", l.drop), ("dup", l.dup), ("reorder", l.reorder)] {
                if !(0.0..=1.0).contains(&value) {
                    return Err(SettingsError::Probability {
                        field,
                        target,
                        value,
                    });
                }
            }
        }
        if self.peers.keys().any(|k| k.trim().is_empty()) {
            return Err(SettingsError::EmptyPeer);
        }
        if let Some(p) = &self.partition {
            p.validate()?;
        }
        self.clock.validate()?;
        self.storage_delay_ms = self.storage_delay_ms.min(MAX_STORAGE_DELAY_MS);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(s: &str) -> Partition {
        s.parse().expect(s)
    }

    #[test]
    fn a_symmetric_partition_cuts_every_message_between_sides_and_none_within() {
        let p = part("n1,n2|n3");
        let cases = [
            ("n1", "n3", true),
            ("n3", "n1", true),
            ("n2", "n3", true),
            ("n3", "n2", true),
            ("n1", "n2", false),
            ("n2", "n1", false),
            // A node on no side reaches, and is reached by, everyone.
            ("n4", "n1", false),
            ("n3", "n4", false),
        ];
        for (from, to, cut) in cases {
            assert_eq!(p.cuts(from, to), cut, "{from} -> {to}");
        }
        assert_eq!(p.cut_from("n3"), ["n1", "n2"]);
        assert!(p.cut_from("n4").is_empty());
    }

    #[test]
    fn a_one_way_partition_cuts_only_from_earlier_sides_to_later_ones() {
        let mut p = part("a|b|c");
        p.one_way = true;
        // b does not hear a; a hears b.
        assert!(p.cuts("a", "b"));
        assert!(!p.cuts("b", "a"));
        assert!(p.cuts("a", "c") && p.cuts("b", "c"));
        assert!(!p.cuts("c", "a") && !p.cuts("c", "b"));
        assert_eq!(p.cut_from("a"), ["b", "c"]);
        assert!(p.cut_from("c").is_empty());
        assert_eq!(p.to_string(), "a|b|c (one-way)");
    }

    #[test]
    fn partitions_parse_from_sides_and_refuse_what_cannot_be_one() {
        let p = part(" n1 , n2 | n3 ");
        assert_eq!(p.sides.len(), 2);
        assert_eq!(p.to_string(), "n1,n2|n3");
        for (bad, why) in [
            ("n1,n2", "two or more sides"),
            ("n1|", "a side names no node"),
            ("n1,n2|n2", "node n2 is on two sides"),
        ] {
            let err = bad.parse::<Partition>().expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("expected e.g. n1,n2|n3"), "{err}");
        }
    }

    #[test]
    fn a_peer_s_own_entry_replaces_the_default_for_that_peer_only() {
        let d = |s: &str| s.parse::<Dist>().expect(s);
        let s = Settings {
            all_peers: LinkFaults {
                w: Some(d("const:1")),
                drop: 0.5,
                ..LinkFaults::default()
            },
            peers: [(
                "n2".to_string(),
                LinkFaults {
                    w: Some(d("const:200")),
                    ..LinkFaults::default()
                },
            )]
            .into(),
            ..Settings::default()
        };
        assert_eq!(s.link_to("n2").w, Some(d("const:200")));
        assert_eq!(s.link_to("n2").drop, 0.0);
        assert_eq!(s.link_to("n3").w, Some(d("const:1")));
        assert!(s.touches_network());
        assert!(!Settings::default().touches_network());
    }

    #[test]
    fn clock_offset_and_drift_arithmetic() {
        let f = |offset_ms, drift_ppm| ClockFault {
            offset_ms,
            drift_ppm,
        };
        let t0 = 1_700_000_000_000;
        let cases = [
            // (fault, host ms, expected reading)
            (f(0, 0.0), t0 + 5, t0 + 5),
            (f(2500, 0.0), t0, t0 + 2500),
            (f(-2500, 0.0), t0 + 10, t0 - 2490),
            // 1000 ppm = 1 ms per second: 60 s later, 60 ms gained.
            (f(0, 1000.0), t0 + 60_000, t0 + 60_060),
            (f(100, -500.0), t0 + 10_000, t0 + 10_095),
            // A host clock stepped back before the fault counts no drift.
            (f(7, 1000.0), t0 - 1000, t0 - 993),
        ];
        for (fault, host, want) in cases {
            assert_eq!(fault.read(host, t0), want, "{fault:?} at {host}");
        }
        // Never below the epoch.
        assert_eq!(f(-10_000, 0.0).read(5_000, 0), 0);
        assert!(f(0, 0.0).is_zero() && !f(0, 1.0).is_zero());
    }

    proptest::proptest! {
        /// With a drift above -10⁶ ppm the skewed clock never runs
        /// backwards while the host's runs forwards, and at the moment the
        /// fault is set it reads exactly host + offset.
        #[test]
        fn a_drifting_clock_is_monotonic_and_starts_at_its_offset(
            offset in -1_000_000i64..1_000_000,
            drift in -999_999.0..1_000_000.0f64,
            since in 1_000_000u64..1_000_000_000_000,
            steps in proptest::collection::vec(0u64..100_000, 1..50),
        ) {
            let fault = ClockFault { offset_ms: offset, drift_ppm: drift };
            proptest::prop_assert_eq!(fault.read(since, since) as i64, since as i64 + offset);
            let mut host = since;
            let mut prev = fault.read(host, since);
            for s in steps {
                host += s;
                let now = fault.read(host, since);
                proptest::prop_assert!(now >= prev, "{} then {}", prev, now);
                prev = now;
            }
        }
    }

    #[test]
    fn validation_refuses_bad_probabilities_partitions_and_clocks() {
        let mut s = Settings::default();
        s.peers.insert(
            "n2".into(),
            LinkFaults {
                dup: 1.5,
                ..LinkFaults::default()
            },
        );
        let err = s.validate().expect_err("dup 1.5").to_string();
        assert_eq!(
            err,
            "dup of peers.n2 is 1.5: a probability must be within 0..=1"
        );
        let s = Settings {
            all_peers: LinkFaults {
                drop: f64::NAN,
                ..LinkFaults::default()
            },
            ..Settings::default()
        };
        assert!(s.validate().is_err());
        let s = Settings {
            partition: Some(Partition {
                sides: vec![["n1".to_string()].into()],
                one_way: false,
            }),
            ..Settings::default()
        };
        assert!(
            s.validate()
                .expect_err("one side")
                .to_string()
                .starts_with("partition: ")
        );
        let s = Settings {
            clock: ClockFault {
                offset_ms: 0,
                drift_ppm: f64::INFINITY,
            },
            ..Settings::default()
        };
        assert!(s.validate().is_err());
        let s = Settings {
            storage_delay_ms: 10_000_000,
            ..Settings::default()
        };
        assert_eq!(
            s.validate().expect("clamped").storage_delay_ms,
            MAX_STORAGE_DELAY_MS
        );
    }

    #[test]
    fn the_document_round_trips_through_json_and_omits_what_is_unset() {
        let text = r#"{"all_peers":{"w":"const:5","a":"exp:1","drop":0.01},
            "peers":{"n2":{"w":"uniform:100..300"}},"local":true,
            "partition":{"sides":[["n1","n2"],["n3"]],"one_way":true},
            "clock":{"offset_ms":2500,"drift_ppm":100.0},"seed":7}"#;
        let s: Settings = serde_json::from_str(text).expect("valid");
        assert_eq!(s.all_peers.a, Some("exp:1".parse().expect("dist")));
        assert!(s.partition.as_ref().is_some_and(|p| p.one_way));
        let back: Settings =
            serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("again");
        assert_eq!(back, s);
        assert_eq!(
            serde_json::to_string(&Settings::default()).expect("json"),
            "{}"
        );
        let err = serde_json::from_str::<Settings>(r#"{"all_peers":{"x":1}}"#)
            .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
        let err = serde_json::from_str::<Settings>(r#"{"all_peers":{"w":"exp:-1"}}"#)
            .expect_err("bad distribution");
        assert!(err.to_string().contains("must be > 0"), "{err}");
    }
}
