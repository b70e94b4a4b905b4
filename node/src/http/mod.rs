//! The HTTP API of API.md, served with warp.
//!
//! One warp filter extracts the request (method, raw path, raw query,
//! headers, body stream) and [`dispatch`] routes it by hand. Routing by
//! hand keeps three things under our control that warp's rejection system
//! makes awkward: keys are percent-decoded from exactly one raw path
//! segment (so `%2F` is part of a key, not a separator), every failure
//! becomes the contract's JSON error from one place ([`ApiError`]), and
//! every response is counted in the metrics by route pattern.

mod admin;
mod changes;
mod keys;
mod ranges;
mod request;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use warp::Filter;
use warp::http::{HeaderMap, Method, Response, StatusCode, header};
use warp::reply::Response as WarpResponse;

use crate::error::ApiError;
use crate::server::Node;

pub use request::{Query, decode_key};

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
    if let ApiError::KeyNotFound { context: Some(ctx) } = err
        && let Ok(v) = header::HeaderValue::from_str(ctx)
    {
        resp.headers_mut().insert(CONTEXT_HEADER, v);
    }
    resp
}

/// The warp filter serving the whole API for `node`.
pub fn routes(
    node: Arc<Node>,
) -> impl Filter<Extract = (WarpResponse,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::any()
        .map(move || node.clone())
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            |node: Arc<Node>,
             method: Method,
             path: warp::path::FullPath,
             query: String,
             headers: HeaderMap,
             body| async move {
                let body = request::Body::new(body);
                serve(node, method, path.as_str(), &query, headers, body).await
            },
        )
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

async fn serve(
    node: Arc<Node>,
    method: Method,
    path: &str,
    query: &str,
    headers: HeaderMap,
    body: request::Body,
) -> WarpResponse {
    let start = Instant::now();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = route_label(&segments);
    let result = match node.admit() {
        Err(e) => Err(e),
        Ok(_permit) => match request::check_auth(&node, &headers, route) {
            Err(e) => Err(e),
            Ok(()) => {
                let req = request::Request {
                    method: method.clone(),
                    query: Query::parse(query),
                    headers,
                    body,
                };
                dispatch(&node, &segments, req).await
            }
        },
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, ApiError::Overloaded(_)) {
                node.metrics.overloaded.inc();
            }
            error_response(&e)
        }
    };
    node.metrics.observe(
        route,
        method_label(&method),
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// The route pattern of a path, for metrics and authorisation.
fn route_label(segments: &[&str]) -> &'static str {
    match segments {
        ["health"] => "health",
        ["kv", _] | ["buckets", _, "keys", _] => "keys",
        ["buckets", _] => "bucket",
        ["cluster", "members"] => "members",
        ["cluster", "ring"] => "ring",
        ["cluster", "locate", _] => "locate",
        [
            "cluster",
            "join" | "decommission" | "removenode" | "cleanup" | "changes",
        ] => "cluster_change",
        ["cluster", "ranges"] => "ranges",
        ["metrics"] => "metrics",
        ["internal", ..] => "internal",
        _ => "unknown",
    }
}

async fn dispatch(node: &Arc<Node>, segments: &[&str], req: request::Request) -> Reply {
    match segments {
        ["health"] => admin::health(node, &req),
        ["kv", key] => keys::handle(node, "default", key, req).await,
        ["buckets", bucket, "keys", key] => keys::handle(node, bucket, key, req).await,
        ["buckets", bucket] => admin::bucket(node, bucket, req).await,
        ["cluster", "members"] => admin::members(node, &req),
        ["cluster", "ring"] => admin::ring(node, &req),
        ["cluster", "locate", key] => admin::locate(node, key, &req),
        ["cluster", "join"] => changes::join(node, req).await,
        ["cluster", "decommission"] => changes::decommission(node, req).await,
        ["cluster", "removenode"] => changes::removenode(node, req).await,
        ["cluster", "cleanup"] => changes::cleanup(node, req).await,
        ["cluster", "changes"] => changes::changes(node, &req),
        ["cluster", "ranges"] => ranges::ranges(node, req).await,
        ["metrics"] => admin::metrics(node, &req),
        ["internal", "fault"] => admin::fault(node, req).await,
        ["internal", "repair"] => admin::repair(node, req).await,
        ["internal", "local", "buckets", bucket, "keys", key] => {
            admin::internal_local(node, bucket, key, &req)
        }
        _ => Err(ApiError::NotFound(format!(
            "no route for /{}; see docs/API.md",
            segments.join("/")
        ))),
    }
}
