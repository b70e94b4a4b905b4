//! The routing table of the HTTP API: every route the node serves, as one
//! list that [`super::dispatch`] walks for each request — its path pattern
//! (written as docs/openapi.yaml writes it), the methods it takes, the
//! label it is counted and authorised under, and the handler it runs.
//!
//! Being one table, it is what the unit test below compares with
//! docs/openapi.yaml: a route served but not documented (or documented but
//! not served) fails the build's tests, not a client.

/// Which handler serves a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// `/buckets/{bucket}/keys/{key}`.
    Key,
    /// `/kv/{key}`: a key of the `default` bucket.
    DefaultKey,
    /// `/health`.
    Health,
    /// `/buckets/{bucket}`.
    Bucket,
    /// `/cluster/members`.
    Members,
    /// `/cluster/ring`.
    Ring,
    /// `/cluster/locate/{key}`.
    Locate,
    /// `/cluster/join`.
    Join,
    /// `/cluster/decommission`.
    Decommission,
    /// `/cluster/removenode`.
    Removenode,
    /// `/cluster/cleanup`.
    Cleanup,
    /// `/cluster/changes`.
    Changes,
    /// `/cluster/ranges`.
    Ranges,
    /// `/metrics`.
    Metrics,
    /// `/openapi.yaml`.
    OpenApi,
    /// `/internal/fault`.
    Fault,
    /// `/internal/faults`.
    Faults,
    /// `/internal/repair`.
    Repair,
    /// `/internal/local/buckets/{bucket}/keys/{key}`.
    InternalLocal,
    /// `/ui`: the web console's page (its files and data routes under
    /// `/ui/` are served by `ui.rs` directly).
    Ui,
}

/// One route of the API.
#[derive(Debug)]
pub struct Route {
    /// The path, `{name}` standing for exactly one raw segment.
    pub pattern: &'static str,
    /// The methods served; any other is 405.
    pub methods: &'static [&'static str],
    /// Metrics and authorisation label (`qkv_http_requests_total{route}`).
    pub label: &'static str,
    /// What serves it.
    pub handler: Handler,
}

const fn route(
    pattern: &'static str,
    methods: &'static [&'static str],
    label: &'static str,
    handler: Handler,
) -> Route {
    Route {
        pattern,
        methods,
        label,
        handler,
    }
}

const KEY_METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE"];
const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];

/// Every route; the key routes first, as nearly every request is one.
pub static ROUTES: &[Route] = &[
    route(
        "/buckets/{bucket}/keys/{key}",
        KEY_METHODS,
        "keys",
        Handler::Key,
    ),
    route("/kv/{key}", KEY_METHODS, "keys", Handler::DefaultKey),
    route("/health", &["GET", "HEAD"], "health", Handler::Health),
    route(
        "/buckets/{bucket}",
        &["GET", "HEAD", "PUT", "POST"],
        "bucket",
        Handler::Bucket,
    ),
    route("/cluster/members", GET, "members", Handler::Members),
    route("/cluster/ring", GET, "ring", Handler::Ring),
    route("/cluster/locate/{key}", GET, "locate", Handler::Locate),
    route("/cluster/join", POST, "cluster_change", Handler::Join),
    route(
        "/cluster/decommission",
        POST,
        "cluster_change",
        Handler::Decommission,
    ),
    route(
        "/cluster/removenode",
        POST,
        "cluster_change",
        Handler::Removenode,
    ),
    route("/cluster/cleanup", POST, "cluster_change", Handler::Cleanup),
    route("/cluster/changes", GET, "cluster_change", Handler::Changes),
    route("/cluster/ranges", GET, "ranges", Handler::Ranges),
    route("/metrics", GET, "metrics", Handler::Metrics),
    route("/openapi.yaml", GET, "openapi", Handler::OpenApi),
    route(
        "/internal/fault",
        &["GET", "PUT", "POST"],
        "internal",
        Handler::Fault,
    ),
    route(
        "/internal/faults",
        &["GET", "PUT", "PATCH", "DELETE"],
        "internal",
        Handler::Faults,
    ),
    route(
        "/internal/repair",
        &["GET", "POST"],
        "internal",
        Handler::Repair,
    ),
    route(
        "/internal/local/buckets/{bucket}/keys/{key}",
        GET,
        "internal",
        Handler::InternalLocal,
    ),
    route("/ui", GET, "ui", Handler::Ui),
];

/// The OpenAPI document of this API, served at `GET /openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

/// A route found for a path, with its `{…}` segments in order.
pub struct Found<'a> {
    /// The route.
    pub route: &'static Route,
    /// The raw (still percent-encoded) segments the placeholders matched.
    pub params: [&'a str; 2],
}

/// The route serving `segments` (the path split at `/`, without the
/// leading one), if any.
pub fn find<'a>(segments: &[&'a str]) -> Option<Found<'a>> {
    'routes: for route in ROUTES {
        let mut params = [""; 2];
        let mut taken = 0;
        let mut pattern = route.pattern[1..].split('/');
        for seg in segments {
            let Some(p) = pattern.next() else {
                continue 'routes;
            };
            if p.starts_with('{') {
                if taken == params.len() {
                    continue 'routes;
                }
                params[taken] = seg;
                taken += 1;
            } else if p != *seg {
                continue 'routes;
            }
        }
        if pattern.next().is_none() {
            return Some(Found { route, params });
        }
    }
    None
}

/// The label of a path no route serves: `/internal/…` keeps its own, so
/// that probing it still needs the admin token.
pub fn unrouted_label(segments: &[&str]) -> &'static str {
    match segments.first() {
        Some(&"internal") => "internal",
        _ => "unknown",
    }
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
