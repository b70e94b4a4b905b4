//! The HTTP API of API.md, served with warp.
//!
//! One warp filter extracts the request (method, raw path, raw query,
//! headers, body stream) and [`dispatch`] routes it through the table of
//! [`routes`] (also what docs/openapi.yaml is checked against). Routing by
//! hand keeps three things under our control that warp's rejection system
//! makes awkward: keys are percent-decoded from exactly one raw path
//! segment (so `%2F` is part of a key, not a separator), every failure
//! becomes the contract's JSON error from one place ([`ApiError`]), and
//! every response is counted in the metrics by route pattern.
//!
//! [`serve`] runs the filter on the `--http` port within the edge's
//! limits (connections, header and body deadlines). `/health` and
//! `/metrics` are served even when `--max-inflight` requests are under way:
//! they are what an operator (or a load balancer) looks at to see the
//! overload, and they touch no replica.

mod admin;
mod changes;
mod keys;
mod ranges;
mod request;
pub mod routes;
pub mod serve;
pub mod tls;
mod ui;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use warp::Filter;
use warp::http::{HeaderMap, Method, Response, StatusCode, header};
use warp::reply::Response as WarpResponse;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bucket_sync::BucketSync;
use crate::buckets::Buckets;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::hints::Hints;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::repair::Repairer;
use crate::replica::Replica;
use crate::stream::ChangeDriver;
use crate::transport::Peers;
use crate::transport::tcp::Net;

pub use request::Query;

/// `X-Causal-Context`, named once (a name given as text is parsed and
/// copied on every insert).
pub(crate) const CONTEXT_HEADER: header::HeaderName =
    header::HeaderName::from_static("x-causal-context");

/// A reply body.
pub(crate) type Reply = Result<WarpResponse, ApiError>;

/// Builds a response with a status, content type and body.
pub(crate) fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> WarpResponse {
    let body: Bytes = body.into();
    let mut resp = Response::new(body.into());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A JSON response.
pub(crate) fn json(status: u16, value: &serde_json::Value) -> WarpResponse {
    respond(status, "application/json", value.to_string())
}

/// An error as the contract's JSON body, with `X-Causal-Context` when a
/// deletion is known.
pub(crate) fn error_response(err: &ApiError) -> WarpResponse {
    let mut resp = json(err.status(), &err.body());
    match err {
        ApiError::KeyNotFound { context: Some(ctx) } => {
            if let Ok(v) = header::HeaderValue::from_str(ctx) {
                resp.headers_mut().insert(CONTEXT_HEADER, v);
            }
        }
        // The rest of that body is still on its way, or never coming:
        // the connection cannot carry another request.
        ApiError::RequestTimeout(_) => {
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        _ => {}
    }
    resp
}

/// What the HTTP API serves from: the node's services, and the admission
/// limit of `--max-inflight`.
pub struct Api {
    /// The node's settings.
    pub config: Arc<Config>,
    /// This node's copy of the data (`/internal/local`, counts).
    pub replica: Arc<Replica>,
    /// Members and ring.
    pub cluster: Arc<Cluster>,
    /// Bucket properties.
    pub buckets: Arc<Buckets>,
    /// Hints held (metrics).
    pub hints: Arc<Hints>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Injected faults (`/internal/fault`).
    pub faults: Arc<Faults>,
    /// The other nodes (outstanding calls, for metrics).
    pub peers: Arc<dyn Peers>,
    /// The TCP transport's counters, when the node runs on one.
    pub net: Option<Arc<Net>>,
    /// Key reads and writes.
    pub coordinator: Arc<Coordinator>,
    /// `/internal/repair`.
    pub repairer: Arc<Repairer>,
    /// `/cluster/*` changes and cleanup.
    pub changes: Arc<ChangeDriver>,
    /// Gossip's view, for a join without tokens.
    pub membership: Arc<Membership>,
    /// Announces bucket properties set here.
    pub bucket_sync: Arc<BucketSync>,
    /// Permits of `--max-inflight`.
    pub inflight: Arc<Semaphore>,
}

impl Api {
    /// Admits one request, or refuses with `overloaded` when
    /// `--max-inflight` requests are already being served.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.inflight.clone().try_acquire_owned().map_err(|_| {
            ApiError::Overloaded(format!(
                "{} requests in flight (--max-inflight); retry with backoff",
                self.config.max_inflight
            ))
        })
    }
}

/// The warp filter serving the whole API from `api`.
pub fn routes(
    api: Arc<Api>,
) -> impl Filter<Extract = (WarpResponse,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::any()
        .map(move || api.clone())
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            |api: Arc<Api>,
             method: Method,
             path: warp::path::FullPath,
             query: String,
             headers: HeaderMap,
             body| async move {
                let body = request::Body::new(body, api.config.http_body_timeout);
                serve(api, method, path.as_str(), &query, headers, body).await
            },
        )
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

async fn serve(
    api: Arc<Api>,
    method: Method,
    path: &str,
    query: &str,
    headers: HeaderMap,
    body: request::Body,
) -> WarpResponse {
    let start = Instant::now();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let found = routes::find(&segments);
    let route = match (&found, segments.first()) {
        (Some(f), _) => f.route.label,
        // The console's files and data routes under /ui/ (ui.rs): its data
        // routes check the token of the route they stand beside themselves.
        (None, Some(&"ui")) => "ui",
        (None, _) => routes::unrouted_label(&segments),
    };
    let admitted = match route {
        "health" | "metrics" => Ok(None),
        _ => api.admit().map(Some),
    };
    let result = match admitted {
        Err(e) => Err(e),
        Ok(_permit) => match request::check_auth(&api, &headers, route, &method) {
            Err(e) => Err(e),
            Ok(()) => {
                let req = request::Request {
                    method: method.clone(),
                    query: Query::parse(query),
                    headers,
                    body,
                };
                match found {
                    Some(found) => dispatch(&api, found, req).await,
                    None if route == "ui" => ui::serve(&api, &segments[1..], req).await,
                    None => Err(ApiError::NotFound(format!(
                        "no route for /{}; see docs/API.md",
                        segments.join("/")
                    ))),
                }
            }
        },
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, ApiError::Overloaded(_)) {
                api.metrics.overloaded.inc();
            }
            error_response(&e)
        }
    };
    api.metrics.observe(
        route,
        method_label(&method),
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Runs the handler of the route found, for a method its table entry
/// lists (any other is 405).
async fn dispatch(api: &Arc<Api>, found: routes::Found<'_>, req: request::Request) -> Reply {
    use routes::Handler as H;
    if !found.route.methods.contains(&req.method.as_str()) {
        return Err(ApiError::MethodNotAllowed(req.method.to_string()));
    }
    let [a, b] = found.params;
    match found.route.handler {
        H::Key => keys::handle(api, a, b, req).await,
        H::DefaultKey => keys::handle(api, "default", a, req).await,
        H::Health => admin::health(api, &req),
        H::Bucket => admin::bucket(api, a, req).await,
        H::Members => admin::members(api, &req),
        H::Ring => admin::ring(api, &req),
        H::Locate => admin::locate(api, a, &req),
        H::Join => changes::join(api, req).await,
        H::Decommission => changes::decommission(api, req).await,
        H::Removenode => changes::removenode(api, req).await,
        H::Cleanup => changes::cleanup(api, req).await,
        H::Changes => changes::changes(api, &req),
        H::Ranges => ranges::ranges(api, req).await,
        H::Metrics => admin::metrics(api, &req),
        H::OpenApi => Ok(respond(200, "application/yaml", routes::OPENAPI_YAML)),
        H::Fault => admin::fault(api, req).await,
        H::Faults => admin::faults(api, req).await,
        H::Repair => admin::repair(api, req).await,
        H::InternalLocal => admin::internal_local(api, a, b, &req),
        H::Ui => ui::serve(api, &[], req).await,
    }
}
