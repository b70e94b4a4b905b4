//! The fault-injection figures of `/metrics` (docs/API.md): what is
//! injected now (settings as gauges) and what the faults did (counters,
//! and the injected delays as measured). Registered with the node's
//! other metrics; `crate::faults::Faults` updates them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::latency_histogram;

/// Labels of a message a fault did something to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    /// `delayed`, `dropped`, `answer_dropped`, `duplicated`, `reordered`
    /// or `cut`.
    pub fault: &'static str,
    /// `rpc`, `gossip` or `local` (the own replica's operations).
    pub traffic: &'static str,
}

/// Labels of an injected delay.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LegLabels {
    /// `w`, `a`, `r` or `s`.
    pub leg: &'static str,
}

/// Labels of a per-peer fault setting.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultSettingLabels {
    /// The destination node, or `*` for every peer without its own entry.
    pub peer: String,
    /// `drop`, `dup`, `reorder`, or a leg's mean: `w_mean_ms`, ...
    pub setting: &'static str,
}

/// An f64 gauge.
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every fault-injection metric.
pub struct FaultMetrics {
    /// 1 when `--fault-injection` is on.
    pub injection: Gauge,
    /// Messages faults did something to, by fault and traffic.
    pub messages: Family<FaultLabels, Counter>,
    /// Injected delays as measured, by leg, in seconds.
    pub delay: Family<LegLabels, Histogram, fn() -> Histogram>,
    /// The injected faults' settings per peer (probabilities, leg means).
    pub settings: Family<FaultSettingLabels, FloatGauge>,
    /// Nodes this node's messages are cut from by the partition.
    pub peers_cut: Gauge,
    /// 1 when the own replica's operations pay the legs.
    pub local_legs: Gauge,
    /// The injected storage delay, ms.
    pub storage_delay_ms: Gauge,
    /// How far this node's clock reads from the host's, ms (refreshed
    /// when rendered).
    pub clock_offset_ms: Gauge,
    /// The injected clock drift, ppm.
    pub clock_drift_ppm: FloatGauge,
}

impl FaultMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> FaultMetrics {
        let injection = Gauge::default();
        registry.register(
            "fault_injection_enabled",
            "1 when the node runs with --fault-injection",
            injection.clone(),
        );
        let messages = Family::<FaultLabels, Counter>::default();
        registry.register(
            "fault_messages",
            "Messages injected faults acted on, by fault (delayed, dropped, answer_dropped, duplicated, reordered, cut) and traffic (rpc, gossip, local)",
            messages.clone(),
        );
        let delay = Family::<LegLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "fault_delay_seconds",
            "Injected delays as measured, by WARS leg (w, a, r, s)",
            delay.clone(),
        );
        let settings = Family::<FaultSettingLabels, FloatGauge>::default();
        registry.register(
            "fault_setting",
            "Injected fault settings per destination peer (* for every peer without its own): drop, dup, reorder probabilities and each leg's mean delay in ms",
            settings.clone(),
        );
        let peers_cut = Gauge::default();
        registry.register(
            "fault_peers_cut",
            "Nodes this node's messages are cut from by an injected partition",
            peers_cut.clone(),
        );
        let local_legs = Gauge::default();
        registry.register(
            "fault_local_legs",
            "1 when the coordinator's own replica operations pay the injected legs",
            local_legs.clone(),
        );
        let storage_delay_ms = Gauge::default();
        registry.register(
            "fault_storage_delay_ms",
            "Injected delay of every operation on this node's own replica, ms",
            storage_delay_ms.clone(),
        );
        let clock_offset_ms = Gauge::default();
        registry.register(
            "fault_clock_offset_ms",
            "How far this node's clock reads ahead of the host's (negative: behind), ms, injected offset plus drift so far",
            clock_offset_ms.clone(),
        );
        let clock_drift_ppm = FloatGauge::default();
        registry.register(
            "fault_clock_drift_ppm",
            "Injected drift of this node's clock, parts per million",
            clock_drift_ppm.clone(),
        );
        FaultMetrics {
            injection,
            messages,
            delay,
            settings,
            peers_cut,
            local_legs,
            storage_delay_ms,
            clock_offset_ms,
            clock_drift_ppm,
        }
    }

    /// Counts one message `fault` acted on.
    pub fn count(&self, fault: &'static str, traffic: &'static str) {
        self.messages
            .get_or_create(&FaultLabels { fault, traffic })
            .inc();
    }

    /// Records one injected delay of leg `leg` as measured.
    pub fn observe_delay(&self, leg: &'static str, secs: f64) {
        self.delay.get_or_create(&LegLabels { leg }).observe(secs);
    }

    /// Shows the fault settings node `me` now injects.
    pub fn show(&self, me: &str, s: &quorumkv_faults::Settings) {
        self.settings.clear();
        let links = std::iter::once(("*".to_string(), &s.all_peers))
            .chain(s.peers.iter().map(|(k, v)| (k.clone(), v)));
        for (peer, l) in links {
            let set = |setting, v: f64| {
                self.settings
                    .get_or_create(&FaultSettingLabels {
                        peer: peer.clone(),
                        setting,
                    })
                    .set(v);
            };
            set("drop", l.drop);
            set("dup", l.dup);
            set("reorder", l.reorder);
            for (leg, name) in [
                (quorumkv_faults::Leg::W, "w_mean_ms"),
                (quorumkv_faults::Leg::A, "a_mean_ms"),
                (quorumkv_faults::Leg::R, "r_mean_ms"),
                (quorumkv_faults::Leg::S, "s_mean_ms"),
            ] {
                // An infinite mean (a heavy Pareto tail) shows as +Inf.
                if let Some(d) = l.leg(leg) {
                    set(name, d.mean().unwrap_or(f64::INFINITY));
                }
            }
        }
        let cut = s.partition.as_ref().map_or(0, |p| p.cut_from(me).len());
        self.peers_cut.set(cut as i64);
        self.local_legs.set(i64::from(s.local));
        self.storage_delay_ms.set(s.storage_delay_ms as i64);
        self.clock_drift_ppm.set(s.clock.drift_ppm);
    }
}
