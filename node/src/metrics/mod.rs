//! Prometheus metrics of a node, served as text on `GET /metrics`.
//!
//! Request counts and latency histograms are labelled by route *pattern*
//! (`keys`, `bucket`, ...), never by key, so the label space stays small
//! whatever clients send.

mod edge;
mod faults;
mod ops;

pub use edge::EdgeMetrics;
pub use faults::FaultMetrics;
pub use ops::OpsMetrics;

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route pattern, e.g. `keys`.
    pub route: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// Response status code.
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route pattern.
    pub route: &'static str,
    /// HTTP method.
    pub method: &'static str,
}

/// Methods and statuses of the key route whose series [`Metrics::observe`]
/// keeps handles to.
const HOT_METHODS: [&str; 3] = ["GET", "PUT", "DELETE"];
const HOT_STATUSES: [u16; 4] = [200, 204, 300, 404];

/// The key route's series, which nearly every request updates: looked up
/// in their families once, then updated through the handle (a family
/// lookup takes a lock and hashes the labels, 0.6% of a node's CPU under
/// the benchmark). A handle shares its series with the family, and the
/// families are never cleared, so `/metrics` shows the same figures.
#[derive(Default)]
struct HotSeries {
    requests: [[OnceLock<Counter>; HOT_STATUSES.len()]; HOT_METHODS.len()],
    latency: [OnceLock<Histogram>; HOT_METHODS.len()],
}

/// What triggered a read repair.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RepairKind {
    /// Before the read answered (`read_repair: blocking`).
    Blocking,
    /// After the read answered (`read_repair: async`).
    Async,
    /// A replica asked as a spare, repaired after the read answered.
    Background,
}

impl RepairKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RepairKind::Blocking => "blocking",
            RepairKind::Async => "async",
            RepairKind::Background => "background",
        }
    }
}

/// Labels of a read repair.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `blocking`, `async` or `background`.
    pub kind: &'static str,
}

/// Labels of a per-range figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RangeLabels {
    /// The replication factor the range was compared at.
    pub n: u32,
    /// The token range, `start-end` (the range is `(start, end]`).
    pub range: String,
}

/// Labels of a per-target hint figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// The node the hints are for.
    pub target: String,
}

/// Labels of a per-peer figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The other node's id.
    pub peer: String,
}

/// Labels of keys moved by anti-entropy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `received` (pulled from a peer) or `sent` (pushed to one).
    pub direction: &'static str,
}

/// Labels of dropped hints.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `full`, `expired` or `disabled`.
    pub reason: &'static str,
}

pub(crate) fn latency_histogram() -> Histogram {
    // 50 µs .. ~6.5 s, doubling: fine enough for p99s of loopback traffic.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Handles into `requests` and `latency` for the key route.
    hot: HotSeries,
    /// Request latency in seconds by route and method.
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Keys in this node's storage (tombstones included).
    pub keys_stored: Gauge,
    /// Bytes of encoded versions in this node's storage.
    pub bytes_stored: Gauge,
    /// Sibling versions returned to readers (counted when a read returns more than one).
    pub siblings_returned: Counter,
    /// Reads that returned more than one version.
    pub conflicted_reads: Counter,
    /// Concurrent versions dropped by last-writer-wins buckets.
    pub lww_dropped: Counter,
    /// Requests refused with 503 overloaded.
    pub overloaded: Counter<u64, AtomicU64>,
    /// Writes this node forwarded to a replica.
    pub forwarded_writes: Counter,
    /// Read repairs written, by kind.
    pub read_repairs: Family<KindLabels, Counter>,
    /// Hints this node holds, per target (refreshed when rendered).
    pub hints_pending: Family<TargetLabels, Gauge>,
    /// Hints stored.
    pub hints_written: Counter,
    /// Hints delivered to their target.
    pub hints_delivered: Counter,
    /// Hints not stored or thrown away, by reason.
    pub hints_dropped: Family<ReasonLabels, Counter>,
    /// This node's calls to each peer still unanswered (refreshed when
    /// rendered): a replica that falls behind shows here first.
    pub peer_calls_outstanding: Family<PeerLabels, Gauge>,
    /// The moving average of this node's read calls to each peer, in
    /// seconds (refreshed when rendered): the figure reads order replicas
    /// by.
    pub peer_read_latency: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// The current delay after which a read of a `speculative_retry: auto`
    /// bucket asks a spare, in seconds (refreshed when rendered).
    pub speculation_delay: Gauge<f64, AtomicU64>,
    /// Spare replicas reads asked because the ones asked were slow.
    pub speculative_spares: Counter,
    /// Probes sent to replicas no read asked for a while.
    pub read_probes: Counter,
    /// Internode frames written.
    pub net_frames_sent: Counter,
    /// Internode writes (flushes): frames sent / writes is the batching.
    pub net_writes: Counter,
    /// Internode frames received.
    pub net_frames_received: Counter,
    /// Internode frames received over the frame limit, skipped.
    pub net_frames_skipped: Counter,
    /// Internode requests and answers not sent: over the frame limit.
    pub net_too_large: Counter,
    /// Internode connections refused, by either side (the reasons are in
    /// the log).
    pub net_refusals: Counter,
    /// Anti-entropy passes finished (manual and scheduled).
    pub repair_passes: Counter,
    /// Keys moved by anti-entropy, by direction.
    pub repair_keys: Family<DirectionLabels, Counter>,
    /// Merkle leaves found differing by anti-entropy.
    pub repair_leaves_differing: Counter,
    /// When the last anti-entropy pass finished (unix seconds; 0: never).
    pub repair_last_pass: Gauge,
    /// Version bytes moved by anti-entropy, by direction.
    pub repair_bytes: Family<DirectionLabels, Counter>,
    /// Per range (at the default `n`): seconds since a repair pass first
    /// found it differing, while no later pass found it equal. Ranges found
    /// equal have no sample.
    pub repair_divergence_age: Family<RangeLabels, Gauge>,
    /// The largest of [`Metrics::repair_divergence_age`] (0: none).
    pub repair_divergence_max_age: Gauge,
    /// Tombstone-only keys removed from storage by purge.
    pub tombstones_purged: Counter,
    /// Timestamps seen more than `--max-clock-offset-ms` ahead of this
    /// node's clock (it moved only up to that bound).
    pub hlc_clamped: Counter,
    /// What fault injection did and what it injects now.
    pub faults: FaultMetrics,
    /// The HTTP edge: connections open, refused, timed out.
    pub edge: EdgeMetrics,
    /// Peers, disk, repair and stream progress, for operators.
    pub ops: OpsMetrics,
    /// Serialises [`Metrics::sync_hints`], whose catch-up is read-then-add.
    hint_sync: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `qkv_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("qkv");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by route and method",
            latency.clone(),
        );
        let keys_stored = Gauge::default();
        registry.register(
            "keys_stored",
            "Keys stored on this node, tombstones included",
            keys_stored.clone(),
        );
        let bytes_stored = Gauge::default();
        registry.register(
            "bytes_stored",
            "Bytes of encoded versions stored on this node",
            bytes_stored.clone(),
        );
        let siblings_returned = Counter::default();
        registry.register(
            "siblings_returned",
            "Sibling versions returned by reads that found more than one",
            siblings_returned.clone(),
        );
        let conflicted_reads = Counter::default();
        registry.register(
            "conflicted_reads",
            "Reads that returned concurrent versions (siblings)",
            conflicted_reads.clone(),
        );
        let lww_dropped = Counter::default();
        registry.register(
            "lww_dropped_versions",
            "Concurrent versions dropped by last-writer-wins buckets",
            lww_dropped.clone(),
        );
        let overloaded = Counter::default();
        registry.register(
            "overloaded_requests",
            "Requests refused with 503 overloaded",
            overloaded.clone(),
        );
        let forwarded_writes = Counter::default();
        registry.register(
            "forwarded_writes",
            "Writes forwarded to a replica because this node is not one",
            forwarded_writes.clone(),
        );
        let read_repairs = Family::<KindLabels, Counter>::default();
        registry.register(
            "read_repairs",
            "Stale replicas repaired by reads, by kind (blocking, async, background)",
            read_repairs.clone(),
        );
        let hints_pending = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "hints_pending",
            "Hints this node holds, per target node",
            hints_pending.clone(),
        );
        let peer_calls_outstanding = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "peer_calls_outstanding",
            "This node's internode calls to each peer still waiting for an answer",
            peer_calls_outstanding.clone(),
        );
        let peer_read_latency = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "peer_read_latency_seconds",
            "Moving average of this node's read calls to each peer: reads ask faster replicas first",
            peer_read_latency.clone(),
        );
        let speculation_delay = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "read_speculation_delay_seconds",
            "Delay after which a read of a speculative_retry auto bucket also asks a spare replica: the p99 of recent replica reads, 1 ms to 100 ms",
            speculation_delay.clone(),
        );
        let speculative_spares = Counter::default();
        registry.register(
            "read_speculative_spares",
            "Spare replicas reads asked because the replicas asked had not answered within the speculation delay",
            speculative_spares.clone(),
        );
        let read_probes = Counter::default();
        registry.register(
            "read_probes",
            "Digest reads sent to replicas that no read had asked for a while, to refresh their latency figure",
            read_probes.clone(),
        );
        let hints_written = Counter::default();
        registry.register("hints_written", "Hints stored", hints_written.clone());
        let hints_delivered = Counter::default();
        registry.register(
            "hints_delivered",
            "Hints delivered to their target",
            hints_delivered.clone(),
        );
        let hints_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "hints_dropped",
            "Hints not stored (full, disabled) or expired unsent, by reason",
            hints_dropped.clone(),
        );
        let net_frames_sent = Counter::default();
        registry.register(
            "net_frames_sent",
            "Internode frames written",
            net_frames_sent.clone(),
        );
        let net_writes = Counter::default();
        registry.register(
            "net_writes",
            "Internode socket writes; frames sent per write is how well messages are batched",
            net_writes.clone(),
        );
        let net_frames_received = Counter::default();
        registry.register(
            "net_frames_received",
            "Internode frames received",
            net_frames_received.clone(),
        );
        let net_frames_skipped = Counter::default();
        registry.register(
            "net_frames_skipped",
            "Internode frames received over the frame limit, read and discarded (do the nodes share --max-key-bytes?)",
            net_frames_skipped.clone(),
        );
        let net_too_large = Counter::default();
        registry.register(
            "net_too_large",
            "Internode requests and answers not sent because they exceed the frame limit (each fails its own call)",
            net_too_large.clone(),
        );
        let net_refusals = Counter::default();
        registry.register(
            "net_refusals",
            "Internode connections refused in their handshake (TLS or quorumkv's), by either side; the log says why",
            net_refusals.clone(),
        );
        let repair_passes = Counter::default();
        registry.register(
            "repair_passes",
            "Anti-entropy passes finished (qkv repair and the scheduler)",
            repair_passes.clone(),
        );
        let repair_keys = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "repair_keys",
            "Keys moved by anti-entropy, by direction (received, sent)",
            repair_keys.clone(),
        );
        let repair_leaves_differing = Counter::default();
        registry.register(
            "repair_leaves_differing",
            "Merkle-tree leaves anti-entropy found differing",
            repair_leaves_differing.clone(),
        );
        let repair_last_pass = Gauge::default();
        registry.register(
            "repair_last_pass_timestamp_seconds",
            "When the last anti-entropy pass of this node finished (unix time)",
            repair_last_pass.clone(),
        );
        let repair_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "repair_bytes",
            "Encoded version bytes moved by anti-entropy, by direction (received, sent)",
            repair_bytes.clone(),
        );
        let repair_divergence_age = Family::<RangeLabels, Gauge>::default();
        registry.register(
            "repair_divergence_age_seconds",
            "Per token range: seconds since a repair pass first found it differing and no pass since found it equal",
            repair_divergence_age.clone(),
        );
        let repair_divergence_max_age = Gauge::default();
        registry.register(
            "repair_divergence_max_age_seconds",
            "The oldest unrepaired divergence over this node's ranges, in seconds (0: none)",
            repair_divergence_max_age.clone(),
        );
        let tombstones_purged = Counter::default();
        registry.register(
            "tombstones_purged",
            "Tombstone-only keys removed from storage (past the grace period, range repaired since the delete)",
            tombstones_purged.clone(),
        );
        let hlc_clamped = Counter::default();
        registry.register(
            "hlc_clamped",
            "Version timestamps seen more than --max-clock-offset-ms ahead of this node's clock: kept, but the clock moved only up to that bound",
            hlc_clamped.clone(),
        );
        let faults = FaultMetrics::register(&mut registry);
        let edge = EdgeMetrics::register(&mut registry);
        let ops = OpsMetrics::register(&mut registry);
        Metrics {
            ops,
            faults,
            edge,
            hlc_clamped,
            repair_bytes,
            repair_divergence_age,
            repair_divergence_max_age,
            tombstones_purged,
            repair_passes,
            repair_keys,
            repair_leaves_differing,
            repair_last_pass,
            forwarded_writes,
            read_repairs,
            hints_pending,
            peer_calls_outstanding,
            peer_read_latency,
            speculation_delay,
            speculative_spares,
            read_probes,
            hints_written,
            hints_delivered,
            hints_dropped,
            net_frames_sent,
            net_writes,
            net_frames_received,
            net_frames_skipped,
            net_too_large,
            net_refusals,
            hint_sync: std::sync::Mutex::new(()),
            hot: HotSeries::default(),
            registry,
            requests,
            latency,
            keys_stored,
            bytes_stored,
            siblings_returned,
            conflicted_reads,
            lww_dropped,
            overloaded,
        }
    }

    /// Records one served request.
    pub fn observe(&self, route: &'static str, method: &'static str, status: u16, secs: f64) {
        let labels = RequestLabels {
            route,
            method,
            status,
        };
        let hot = (route == "keys")
            .then(|| HOT_METHODS.iter().position(|x| *x == method))
            .flatten();
        let counter = hot.and_then(|m| {
            let s = HOT_STATUSES.iter().position(|x| *x == status)?;
            self.hot.requests.get(m)?.get(s)
        });
        match counter {
            Some(c) => c
                .get_or_init(|| self.requests.get_or_create(&labels).clone())
                .inc(),
            None => self.requests.get_or_create(&labels).inc(),
        };
        let route = RouteLabels { route, method };
        match hot.and_then(|m| self.hot.latency.get(m)) {
            Some(h) => h
                .get_or_init(|| self.latency.get_or_create(&route).clone())
                .observe(secs),
            None => self.latency.get_or_create(&route).observe(secs),
        }
    }

    /// Refreshes the hint figures from the hint store: pending per target
    /// (0 for `members` without hints, so a drained target shows 0 rather
    /// than vanishing) and the store's running totals.
    pub fn sync_hints(
        &self,
        pending: &std::collections::BTreeMap<String, u64>,
        members: &[String],
        stats: &crate::hints::HintStats,
    ) {
        let _one_at_a_time = self.hint_sync.lock().unwrap_or_else(|p| p.into_inner());
        for m in members {
            let n = pending.get(m).copied().unwrap_or(0);
            self.hints_pending
                .get_or_create(&TargetLabels { target: m.clone() })
                .set(n as i64);
        }
        for (t, n) in pending {
            self.hints_pending
                .get_or_create(&TargetLabels { target: t.clone() })
                .set(*n as i64);
        }
        catch_up(&self.hints_written, stats.written);
        catch_up(&self.hints_delivered, stats.delivered);
        for (reason, total) in [
            ("full", stats.dropped_full),
            ("disabled", stats.dropped_disabled),
            ("expired", stats.expired),
        ] {
            catch_up(
                &self.hints_dropped.get_or_create(&ReasonLabels { reason }),
                total,
            );
        }
    }

    /// Sets the outstanding calls per peer (every peer ever called, so a
    /// peer that caught up shows 0 rather than vanishing).
    pub fn sync_outstanding(&self, outstanding: &[(String, usize)]) {
        for (peer, n) in outstanding {
            self.peer_calls_outstanding
                .get_or_create(&PeerLabels { peer: peer.clone() })
                .set(*n as i64);
        }
    }

    /// Refreshes the tail-tolerance figures: each peer's read latency
    /// (µs), the speculation delay and the probes sent so far.
    pub fn sync_latencies(&self, peers: &[(String, u64)], delay: std::time::Duration, probes: u64) {
        for (peer, us) in peers {
            self.peer_read_latency
                .get_or_create(&PeerLabels { peer: peer.clone() })
                .set(*us as f64 / 1e6);
        }
        self.speculation_delay.set(delay.as_secs_f64());
        catch_up(&self.read_probes, probes);
    }

    /// Refreshes the transport's figures from its counters.
    pub fn sync_net(&self, c: &crate::transport::tcp::Counters) {
        use std::sync::atomic::Ordering::Relaxed;
        catch_up(&self.net_frames_sent, c.sent.load(Relaxed));
        catch_up(&self.net_writes, c.writes.load(Relaxed));
        catch_up(&self.net_frames_received, c.received.load(Relaxed));
        catch_up(&self.net_frames_skipped, c.frames_skipped.load(Relaxed));
        let too_large = c.calls_too_large.load(Relaxed) + c.responses_too_large.load(Relaxed);
        catch_up(&self.net_too_large, too_large);
        catch_up(&self.net_refusals, c.refused.load(Relaxed));
    }

    /// Refreshes the clock figures: the count of clamped timestamps (the
    /// replica's total) and the clock's offset from the host's.
    pub fn sync_clock(&self, clamped: u64, offset_ms: i64) {
        catch_up(&self.hlc_clamped, clamped);
        self.faults.clock_offset_ms.set(offset_ms);
    }

    /// Counts one read repair.
    pub fn repaired(&self, kind: RepairKind) {
        self.read_repairs
            .get_or_create(&KindLabels { kind: kind.label() })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.push_str("# metrics encoding failed\n");
        }
        out
    }
}

/// Moves a counter mirrored from a running total up to that total.
fn catch_up(c: &Counter, total: u64) {
    c.inc_by(total.saturating_sub(c.get()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_shows_requests_by_route_and_status() {
        let m = Metrics::new();
        m.observe("keys", "GET", 200, 0.001);
        m.observe("keys", "GET", 404, 0.002);
        m.lww_dropped.inc();
        let text = m.render();
        assert!(
            text.contains(r#"qkv_http_requests_total{route="keys",method="GET",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("qkv_http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("qkv_lww_dropped_versions_total 1"), "{text}");
    }

    /// The key route's series go through cached handles, others through
    /// the families: both must land in the same series.
    #[test]
    fn cached_and_looked_up_series_count_alike() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.observe("keys", "PUT", 204, 0.001);
        }
        m.observe("keys", "PUT", 413, 0.001);
        m.observe("keys", "PATCH", 405, 0.001);
        m.observe("bucket", "GET", 200, 0.001);
        let text = m.render();
        for line in [
            r#"qkv_http_requests_total{route="keys",method="PUT",status="204"} 3"#,
            r#"qkv_http_requests_total{route="keys",method="PUT",status="413"} 1"#,
            r#"qkv_http_requests_total{route="keys",method="PATCH",status="405"} 1"#,
            r#"qkv_http_requests_total{route="bucket",method="GET",status="200"} 1"#,
            r#"qkv_http_request_duration_seconds_count{route="keys",method="PUT"} 4"#,
            r#"qkv_http_request_duration_seconds_count{route="keys",method="PATCH"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn outstanding_calls_show_per_peer_and_drop_back_to_zero() {
        let m = Metrics::new();
        for (n2, n3) in [(3, 0), (0, 1)] {
            m.sync_outstanding(&[("n2".into(), n2), ("n3".into(), n3)]);
            let text = m.render();
            for (peer, n) in [("n2", n2), ("n3", n3)] {
                let line = format!("qkv_peer_calls_outstanding{{peer=\"{peer}\"}} {n}");
                assert!(text.contains(&line), "{line} in {text}");
            }
        }
    }

    #[test]
    fn tail_figures_show_per_peer_latency_the_speculation_delay_and_probes() {
        let m = Metrics::new();
        m.speculative_spares.inc();
        m.sync_latencies(
            &[("n2".into(), 1_500), ("n3".into(), 100_000)],
            std::time::Duration::from_micros(2_048),
            3,
        );
        m.sync_latencies(&[], std::time::Duration::from_micros(2_048), 5);
        let text = m.render();
        for line in [
            r#"qkv_peer_read_latency_seconds{peer="n2"} 0.0015"#,
            r#"qkv_peer_read_latency_seconds{peer="n3"} 0.1"#,
            "qkv_read_speculation_delay_seconds 0.002048",
            "qkv_read_speculative_spares_total 1",
            "qkv_read_probes_total 5",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn transport_figures_follow_the_counters() {
        use std::sync::atomic::Ordering::Relaxed;
        let m = Metrics::new();
        let c = crate::transport::tcp::Counters::default();
        c.sent.store(12, Relaxed);
        c.writes.store(3, Relaxed);
        c.frames_skipped.store(2, Relaxed);
        c.calls_too_large.store(1, Relaxed);
        c.responses_too_large.store(4, Relaxed);
        c.refused.store(2, Relaxed);
        m.sync_net(&c);
        c.sent.store(20, Relaxed);
        m.sync_net(&c);
        let text = m.render();
        assert!(text.contains("qkv_net_frames_sent_total 20"), "{text}");
        assert!(text.contains("qkv_net_writes_total 3"), "{text}");
        assert!(text.contains("qkv_net_frames_received_total 0"), "{text}");
        assert!(text.contains("qkv_net_frames_skipped_total 2"), "{text}");
        assert!(text.contains("qkv_net_too_large_total 5"), "{text}");
        assert!(text.contains("qkv_net_refusals_total 2"), "{text}");
    }
}
