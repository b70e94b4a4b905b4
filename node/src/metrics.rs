//! Prometheus metrics of a node, served as text on `GET /metrics`.
//!
//! Request counts and latency histograms are labelled by route *pattern*
//! (`keys`, `bucket`, ...), never by key, so the label space stays small
//! whatever clients send.

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

fn latency_histogram() -> Histogram {
    // 50 µs .. ~6.5 s, doubling: fine enough for p99s of loopback traffic.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
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
        Metrics {
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
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(secs);
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
}
