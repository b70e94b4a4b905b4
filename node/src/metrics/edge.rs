//! The network edge's figures of `/metrics` (docs/API.md): the HTTP
//! connections open, those refused over `--max-connections`, and those
//! closed because their headers did not arrive in time. Registered with
//! the node's other metrics; the accept loop (`crate::http::serve`)
//! updates them.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every metric of the HTTP edge.
pub struct EdgeMetrics {
    /// HTTP connections open now.
    pub connections_open: Gauge,
    /// Connections closed at accept because `--max-connections` were open.
    pub connections_refused: Counter,
    /// Connections closed because a request's headers (or an idle
    /// connection's next request) did not come within
    /// `--http-header-timeout-ms`.
    pub header_timeouts: Counter,
}

impl EdgeMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> EdgeMetrics {
        let m = EdgeMetrics {
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            header_timeouts: Counter::default(),
        };
        registry.register(
            "http_connections_open",
            "HTTP connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at accept because --max-connections were open",
            m.connections_refused.clone(),
        );
        registry.register(
            "http_header_timeouts",
            "HTTP connections closed because a request's headers did not arrive within --http-header-timeout-ms",
            m.header_timeouts.clone(),
        );
        m
    }
}
