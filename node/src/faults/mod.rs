//! Fault injection for tests and experiments, reachable only when `qkvd`
//! runs with `--fault-injection` (the admin routes answer 404 otherwise).
//!
//! What one node injects is a [`quorumkv_faults::Settings`] document,
//! read and replaced through `/internal/faults` (docs/API.md) and
//! `qkv faults`; [`Faults`] holds it and acts on it:
//!
//! * **Internode messages** ([`FaultyPeers`], [`FaultyGossip`]): every
//!   call this node makes to a peer is planned by
//!   [`quorumkv_faults::plan::plan_call`] — cut by a partition or dropped
//!   (the call then times out, as on a real network), held back
//!   (reordering), delayed by its request leg (W for replication and
//!   forwarded writes, R for reads), duplicated, and its answer dropped or
//!   delayed by its answer leg (A or S). All four legs are applied on the
//!   caller, around the real call: a node's settings shape every
//!   conversation it starts, and the callee sees a request exactly when
//!   the request leg has passed. Gossip gets partitions and drops only.
//! * **Its own replica** ([`Faults::local`]): the storage delay, and with
//!   `local: true` the same legs around the coordinator's local write
//!   (W, A) and read (R, S), so that all N replicas follow the model.
//! * **Its clock** ([`crate::clock`]): the offset and drift, process-wide.
//!
//! Without `--fault-injection` none of this is wired: the transport is
//! used unwrapped, and the request path's only cost is one relaxed atomic
//! load per local replica operation ([`Faults::local`]) and per
//! wall-clock read ([`crate::clock::unix_ms`]).

mod peers;
mod timer;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use quorumkv_faults::plan::{self, CallPlan, Fate};
use quorumkv_faults::{Leg, Settings, SettingsError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use peers::{FaultyGossip, FaultyPeers};

use crate::metrics::Metrics;

/// The document of the older `/internal/fault` route: the storage delay
/// alone (the same field as in [`Settings`]).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Delay added to every local replica read and write, in ms.
    #[serde(default)]
    pub storage_delay_ms: u64,
}

/// The node's fault switches.
pub struct Faults {
    enabled: bool,
    /// This node's id: the `from` of its messages in a partition.
    me: String,
    /// Whether any message to a peer is affected: the one check a call or
    /// a gossip message makes when nothing is injected.
    network: AtomicBool,
    /// Whether the own replica's operations are affected (storage delay,
    /// local legs).
    local: AtomicBool,
    storage_delay_ms: AtomicU64,
    settings: RwLock<Arc<Settings>>,
    rng: Mutex<ChaCha8Rng>,
    metrics: Arc<Metrics>,
}

impl Faults {
    /// Switches of node `me` that can be set only when `enabled`; what
    /// they do is counted in `metrics`.
    pub fn new(enabled: bool, me: &str, metrics: Arc<Metrics>) -> Faults {
        metrics.faults.injection.set(i64::from(enabled));
        Faults {
            enabled,
            me: me.to_string(),
            network: AtomicBool::new(false),
            local: AtomicBool::new(false),
            storage_delay_ms: AtomicU64::new(0),
            settings: RwLock::new(Arc::new(Settings::default())),
            rng: Mutex::new(ChaCha8Rng::from_os_rng()),
            metrics,
        }
    }

    /// Whether `--fault-injection` was given.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The storage delay, as the older `/internal/fault` shows it.
    pub fn settings(&self) -> FaultSettings {
        FaultSettings {
            storage_delay_ms: self.storage_delay_ms.load(Relaxed),
        }
    }

    /// Sets the storage delay alone (the older `/internal/fault`), keeping
    /// every other fault; ignored unless enabled.
    pub fn set(&self, s: &FaultSettings) {
        let mut doc = (*self.document()).clone();
        doc.storage_delay_ms = s.storage_delay_ms;
        // A storage delay alone always validates (it is clamped).
        let _ = self.replace(doc);
    }

    /// Every fault injected now.
    pub fn document(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces every fault with `s` once it validates, and returns what
    /// is now in force (ignored, and the default returned, unless
    /// enabled).
    pub fn replace(&self, s: Settings) -> Result<Arc<Settings>, SettingsError> {
        if !self.enabled {
            return Ok(Arc::new(Settings::default()));
        }
        let s = Arc::new(s.validate()?);
        if let Some(seed) = s.seed {
            *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = ChaCha8Rng::seed_from_u64(seed);
        }
        crate::clock::set_fault(s.clock);
        self.storage_delay_ms.store(s.storage_delay_ms, Relaxed);
        let local_legs = s.local
            && Leg::ALL
                .iter()
                .any(|l| s.link_to(&self.me).leg(*l).is_some());
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = s.clone();
        self.network.store(s.touches_network(), Relaxed);
        self.local
            .store(s.storage_delay_ms > 0 || local_legs, Relaxed);
        self.metrics.faults.show(&self.me, &s);
        Ok(s)
    }

    /// Whether any message to another node is affected now.
    pub fn network_active(&self) -> bool {
        self.network.load(Relaxed)
    }

    /// The plan of one call to `to` whose messages travel `legs`.
    pub fn plan_call(&self, to: &str, legs: Option<(Leg, Leg)>) -> CallPlan {
        let s = self.document();
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        plan::plan_call(&s, &self.me, to, legs, &mut *rng)
    }

    /// What becomes of one gossip message to `to`.
    pub fn plan_gossip(&self, to: &str) -> Fate {
        let s = self.document();
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        plan::plan_gossip(&s, &self.me, to, &mut *rng)
    }

    /// Counts one message `fault` did something to (`delayed`, `dropped`,
    /// `answer_dropped`, `duplicated`, `reordered`, `cut`), by `traffic`
    /// (`rpc`, `gossip`, `local`).
    pub fn count(&self, fault: &'static str, traffic: &'static str) {
        self.metrics.faults.count(fault, traffic);
    }

    /// Sleeps `ms` for leg `leg`, or until `deadline` if that comes first;
    /// returns whether the whole delay passed before the deadline. The
    /// delay as measured is recorded per leg.
    pub async fn delay(&self, ms: f64, leg: Option<Leg>, deadline: Option<Instant>) -> bool {
        let start = Instant::now();
        // Clamped before converting: a heavy tail may draw more seconds
        // than a Duration holds (from_secs_f64 would panic).
        let secs = (ms / 1000.0).clamp(0.0, FOREVER.as_secs_f64());
        let until = start + Duration::from_secs_f64(secs);
        let (until, whole) = match deadline {
            Some(d) if d < until => (d, false),
            _ => (until, true),
        };
        timer::sleep_until(until).await;
        if whole && let Some(leg) = leg {
            self.metrics
                .faults
                .observe_delay(leg.name(), start.elapsed().as_secs_f64());
        }
        whole
    }

    /// Waits out the injected storage delay, if any (a replica operation
    /// another node asked for).
    pub async fn storage_delay(&self) {
        let ms = self.storage_delay_ms.load(Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// Runs `op`, an operation of the coordinator on its own replica over
    /// `legs` (`(W, A)` for a write, `(R, S)` for a read), after the
    /// storage delay and, with `local: true`, between the two legs'
    /// delays. Nothing but one atomic load when no such fault is set.
    pub async fn local<T>(&self, legs: (Leg, Leg), op: impl Future<Output = T>) -> T {
        if !self.local.load(Relaxed) {
            return op.await;
        }
        self.storage_delay().await;
        let s = self.document();
        let planned = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            plan::plan_local(&s, &self.me, legs, &mut *rng)
        };
        let Some((before, after)) = planned else {
            return op.await;
        };
        self.count("delayed", "local");
        self.delay(before, Some(legs.0), None).await;
        let out = op.await;
        self.delay(after, Some(legs.1), None).await;
        out
    }
}

/// The longest single delay slept: a day (a distribution's tail may
/// draw more; every call's own deadline ends it far sooner anyway).
const FOREVER: Duration = Duration::from_secs(86_400);

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(enabled: bool) -> Faults {
        Faults::new(enabled, "n1", Arc::new(Metrics::new()))
    }

    fn doc(text: &str) -> Settings {
        serde_json::from_str(text).expect(text)
    }

    #[test]
    fn nothing_is_set_without_fault_injection() {
        let f = faults(false);
        f.replace(doc(r#"{"storage_delay_ms":5,"all_peers":{"drop":1.0}}"#))
            .expect("ignored");
        assert_eq!(*f.document(), Settings::default());
        assert!(!f.network_active());
        assert_eq!(f.settings().storage_delay_ms, 0);
    }

    #[test]
    fn the_storage_delay_route_keeps_the_other_faults_and_the_document_shows_it() {
        let f = faults(true);
        f.replace(doc(r#"{"all_peers":{"drop":0.5}}"#))
            .expect("valid");
        assert!(f.network_active());
        f.set(&FaultSettings {
            storage_delay_ms: 40,
        });
        let d = f.document();
        assert_eq!((d.storage_delay_ms, d.all_peers.drop), (40, 0.5));
        assert_eq!(f.settings().storage_delay_ms, 40);
        f.replace(Settings::default()).expect("cleared");
        assert!(!f.network_active());
        assert_eq!(f.settings().storage_delay_ms, 0);
    }

    #[test]
    fn an_invalid_document_changes_nothing() {
        let f = faults(true);
        f.replace(doc(r#"{"all_peers":{"drop":0.5}}"#))
            .expect("valid");
        let err = f
            .replace(doc(r#"{"all_peers":{"drop":2.0}}"#))
            .expect_err("not a probability");
        assert!(err.to_string().contains("drop of all_peers is 2"), "{err}");
        assert_eq!(f.document().all_peers.drop, 0.5);
    }

    #[test]
    fn a_seed_replays_the_same_plans() {
        let f = faults(true);
        let text = r#"{"all_peers":{"w":"exp:3","drop":0.3},"seed":11}"#;
        let run = || {
            f.replace(doc(text)).expect("valid");
            (0..50)
                .map(|_| f.plan_call("n2", Some((Leg::W, Leg::A))))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    /// A heavy tail can draw more seconds than a `Duration` holds; the
    /// delay is cut at the deadline instead of panicking.
    #[tokio::test]
    async fn an_absurdly_long_draw_ends_at_the_deadline() {
        let f = faults(true);
        let t0 = Instant::now();
        let whole = f
            .delay(1e300, Some(Leg::W), Some(t0 + Duration::from_millis(20)))
            .await;
        assert!(!whole);
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    #[tokio::test]
    async fn the_own_replica_pays_its_legs_only_with_local() {
        let f = faults(true);
        f.replace(doc(r#"{"all_peers":{"w":"const:30","a":"const:20"}}"#))
            .expect("valid");
        let t0 = Instant::now();
        f.local((Leg::W, Leg::A), async {}).await;
        assert!(
            t0.elapsed() < Duration::from_millis(30),
            "{:?}",
            t0.elapsed()
        );
        f.replace(doc(
            r#"{"all_peers":{"w":"const:30","a":"const:20"},"local":true}"#,
        ))
        .expect("valid");
        let t0 = Instant::now();
        let at = f.local((Leg::W, Leg::A), async { t0.elapsed() }).await;
        assert!(at >= Duration::from_millis(30), "ran at {at:?}");
        assert!(
            t0.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t0.elapsed()
        );
        let text = f.metrics.render();
        assert!(
            text.contains(r#"qkv_fault_messages_total{fault="delayed",traffic="local"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"qkv_fault_delay_seconds_count{leg="w"} 1"#),
            "{text}"
        );
    }
}
