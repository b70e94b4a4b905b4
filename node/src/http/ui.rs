//! The web console at `/ui` (docs/OPERATIONS.md, "Console"): a page of
//! plain HTML, CSS and JavaScript compiled into `qkvd`, and the few routes
//! it needs beyond the API's own.
//!
//! The page's files hold no data and are served to anyone; everything the
//! page shows comes from the API, with the bearer token the user typed,
//! and from the data routes below, which check the same tokens as the
//! route they stand beside:
//!
//! - `/ui/api/ring`: the ring as arcs to draw, merged per run of one owner
//!   and one set of pending owners (client token, as `/cluster/ring`);
//! - `/ui/api/nodes`: each member's own figures (keys, bytes, hints held,
//!   version), asked of it over the internode transport (client token, as
//!   `/cluster/members`);
//! - `/ui/api/local/buckets/{bucket}/keys/{key}?node=ID`: what replica `ID` stores of a
//!   key, `/internal/local/...` of that node (admin token);
//! - `/ui/reports/...`: the `qkv exp` reports of `--ui-reports-dir`,
//!   read-only, never a file outside it (client token).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use warp::http::{HeaderValue, Method, header};
use warp::reply::Response as WarpResponse;

use super::request::{Request, check_auth, decode_key};
use super::{Api, Reply, json, respond};
use crate::buckets::validate_bucket_name;
use crate::error::ApiError;
use crate::failure::{QuorumError, ReplicaFailure};
use crate::proto::{Request as PeerRequest, Response as PeerResponse};
use quorumkv_ring::{Ring, Token};

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// The page may load its own files, fetch the API and show images it
/// fetched (blob URLs); nothing else, and it is framed by no one.
const PAGE_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
/// A report file opened on its own runs nothing (an SVG may hold script).
const REPORT_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// How long the console waits for a member's figures.
const FIGURES_TIMEOUT: Duration = Duration::from_secs(1);
/// Most files a reports listing walks, and how deep.
const MAX_REPORT_FILES: usize = 2000;
const MAX_REPORT_DEPTH: usize = 6;
/// Largest report file served.
const MAX_REPORT_BYTES: u64 = 32 << 20;

/// Serves `/ui/{rest...}`.
pub(super) async fn serve(api: &Arc<Api>, rest: &[&str], req: Request) -> Reply {
    if !matches!(req.method, Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed(req.method.to_string()));
    }
    match rest {
        [] | [""] | ["index.html"] => Ok(asset(INDEX, "text/html; charset=utf-8")),
        ["app.js"] => Ok(asset(APP_JS, "text/javascript; charset=utf-8")),
        ["app.css"] => Ok(asset(APP_CSS, "text/css; charset=utf-8")),
        ["api", "ring"] => {
            authorize(api, &req, "ring")?;
            Ok(json(200, &ring_view(api)))
        }
        ["api", "nodes"] => {
            authorize(api, &req, "members")?;
            Ok(json(200, &nodes(api).await))
        }
        ["api", "local", "buckets", bucket, "keys", key] => {
            authorize(api, &req, "internal")?;
            let node = req.query.get("node").map(str::to_string);
            local(api, bucket, key, node).await
        }
        ["reports"] | ["reports", ""] => {
            authorize(api, &req, "ui_data")?;
            let root = reports_root(api)?;
            let listing = tokio::task::spawn_blocking(move || list_reports(&root))
                .await
                .map_err(|e| ApiError::NotFound(format!("reports listing failed: {e}")))?;
            Ok(json(200, &listing))
        }
        ["reports", path @ ..] => {
            authorize(api, &req, "ui_data")?;
            let root = reports_root(api)?;
            let full = report_path(&root, path)?;
            let body = tokio::task::spawn_blocking(move || read_report(&full))
                .await
                .map_err(|e| ApiError::NotFound(format!("report read failed: {e}")))??;
            Ok(body)
        }
        _ => Err(ApiError::NotFound(format!(
            "no console route /ui/{}; see docs/OPERATIONS.md, \"Console\"",
            rest.join("/")
        ))),
    }
}

/// The console's data routes check the token `route` of the API would.
fn authorize(api: &Api, req: &Request, route: &str) -> Result<(), ApiError> {
    check_auth(api, &req.headers, route, &req.method)
}

fn with_header(resp: &mut WarpResponse, name: header::HeaderName, value: &'static str) {
    resp.headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

fn asset(body: &'static str, content_type: &str) -> WarpResponse {
    let mut resp = respond(200, content_type, body);
    with_header(&mut resp, header::CONTENT_SECURITY_POLICY, PAGE_POLICY);
    with_header(&mut resp, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // A new qkvd is seen at the next load, not after a cache expires.
    with_header(&mut resp, header::CACHE_CONTROL, "no-cache");
    resp
}

/// One arc of the ring drawing: the token range `(start, end]`, as
/// fractions of the circle (`from` is negative for the range that wraps
/// past 0), its owner (first replica) now, and the nodes that will become
/// its replicas when the change in flight is done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct RingArc {
    pub from: f64,
    pub to: f64,
    /// Tokens as text: they pass 2^53, which JavaScript numbers do not hold.
    pub start: String,
    pub end: String,
    pub owner: String,
    pub pending: Vec<String>,
}

fn fraction(t: Token) -> f64 {
    t as f64 / 18_446_744_073_709_551_616.0
}

/// The arcs to draw for `current`, with the pending owners of `future`
/// (the ring once the change in flight is done) at replication `rf`.
/// Adjacent ranges with one owner and the same pending owners are one
/// arc, so the page draws at most one arc per token of the two rings.
pub(super) fn ring_arcs(current: &Ring, future: Option<&Ring>, rf: usize) -> Vec<RingArc> {
    let mut bounds: Vec<Token> = current.tokens().map(|(t, _)| t).collect();
    if let Some(f) = future {
        bounds.extend(f.tokens().map(|(t, _)| t));
        bounds.sort_unstable();
        bounds.dedup();
    }
    let Some(&last) = bounds.last() else {
        return Vec::new();
    };
    let mut arcs: Vec<RingArc> = Vec::new();
    let mut prev = last;
    for &end in &bounds {
        let Some(owner) = current.owner(end) else {
            // A ring with no node yet: nothing is owned, nothing to draw.
            return Vec::new();
        };
        let pending: Vec<String> = match future {
            Some(f) => {
                let now = current.preference_list_refs(end, rf);
                f.preference_list_refs(end, rf)
                    .into_iter()
                    .filter(|n| !now.contains(n))
                    .map(str::to_string)
                    .collect()
            }
            None => Vec::new(),
        };
        match arcs.last_mut() {
            Some(a) if a.owner == owner && a.pending == pending => {
                a.to = fraction(end);
                a.end = end.to_string();
            }
            _ => {
                let from = if prev >= end {
                    fraction(prev) - 1.0
                } else {
                    fraction(prev)
                };
                arcs.push(RingArc {
                    from,
                    to: fraction(end),
                    start: prev.to_string(),
                    end: end.to_string(),
                    owner: owner.to_string(),
                    pending,
                });
            }
        }
        prev = end;
    }
    arcs
}

/// `/ui/api/ring`.
fn ring_view(api: &Api) -> serde_json::Value {
    let (current, future) = api.cluster.rings();
    let rf = api.config.default_n as usize;
    let arcs = ring_arcs(&current, future.as_deref(), rf);
    let owners: Vec<_> = quorumkv_ring::ownership(&current, rf)
        .nodes
        .into_iter()
        .map(|n| {
            json!({
                "id": n.node, "rack": n.rack, "vnodes": n.vnodes,
                "primary": n.primary, "replicated": n.replicated,
            })
        })
        .collect();
    let in_flight: Vec<_> = api
        .cluster
        .in_flight()
        .into_iter()
        .map(|c| json!({"node": c.node, "kind": c.kind, "by": c.by}))
        .collect();
    json!({
        "node": api.replica.id(),
        "rf": rf,
        "vnodes": current.vnode_count(),
        "owners": owners,
        "racks": current.racks(),
        "future_racks": future.as_deref().map(Ring::racks),
        "changing": future.is_some(),
        "in_flight": in_flight,
        "arcs": arcs,
    })
}

/// `/ui/api/nodes`: every member's own figures, asked of each live member
/// at once; a member that is down, slow, or too old to know the request
/// is reported with the reason instead.
async fn nodes(api: &Arc<Api>) -> serde_json::Value {
    let me = api.replica.id().to_string();
    let members = api.cluster.members();
    let asks = members.iter().map(|m| {
        let me = &me;
        async move {
            let figures = if m.id == *me {
                Ok(crate::rpc::figures(&api.replica, &api.hints))
            } else if m.status != "up" {
                Err("down".to_string())
            } else {
                match api
                    .peers
                    .call(&m.id, PeerRequest::Figures, FIGURES_TIMEOUT)
                    .await
                {
                    Ok(PeerResponse::Figures(f)) => Ok(f),
                    Ok(_) => Err("unexpected answer".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            };
            let value = match figures {
                Ok(f) => json!(f),
                Err(reason) => json!({ "error": reason }),
            };
            (m.id.clone(), value)
        }
    });
    let figures: serde_json::Map<String, serde_json::Value> =
        futures::future::join_all(asks).await.into_iter().collect();
    json!({"node": me, "version": env!("CARGO_PKG_VERSION"), "figures": figures})
}

/// `/ui/api/local/buckets/{bucket}/keys/{key}?node=ID`: what `ID` (default: this
/// node) stores of the key, as its `/internal/local/...` answers.
async fn local(api: &Arc<Api>, bucket: &str, raw_key: &str, node: Option<String>) -> Reply {
    let me = api.replica.id();
    let node = node.as_deref().unwrap_or(me);
    if node == me {
        return super::keys::local_view(api, bucket, raw_key);
    }
    validate_bucket_name(bucket)?;
    let key = decode_key(raw_key)?;
    if api.cluster.member(node).is_none() {
        return Err(ApiError::NotFound(format!("{node:?} is not a member")));
    }
    let ask = PeerRequest::Read {
        bucket: bucket.to_string(),
        key,
        digest: false,
    };
    let unreachable = |reason: String| {
        ApiError::Quorum(QuorumError::Unavailable {
            required: 1,
            alive: 0,
            message: format!("{node} did not answer: {reason}"),
            failed: vec![ReplicaFailure {
                node: node.to_string(),
                reason,
            }],
        })
    };
    match api.peers.call(node, ask, api.config.timeout).await {
        Ok(PeerResponse::Object(Some(encoded))) => {
            let object = encoded
                .decode()
                .map_err(|e| unreachable(format!("versions that do not decode: {e}")))?;
            Ok(json(200, &super::keys::local_json(node, &object)))
        }
        Ok(PeerResponse::Object(None)) => Err(ApiError::KeyNotFound { context: None }),
        Ok(_) => Err(unreachable("unexpected answer".into())),
        Err(e) => Err(unreachable(e.to_string())),
    }
}

fn reports_root(api: &Api) -> Result<PathBuf, ApiError> {
    api.config.ui_reports_dir.clone().ok_or_else(|| {
        ApiError::NotFound("no reports directory: start qkvd with --ui-reports-dir DIR".into())
    })
}

/// The file a report path names, inside `root` and nowhere else: each
/// segment is percent-decoded and must be a plain name (no `..`, no
/// hidden or empty segment, no separator), and the file it resolves to,
/// symbolic links followed, must still lie under `root`.
pub(super) fn report_path(root: &Path, raw: &[&str]) -> Result<PathBuf, ApiError> {
    let refused = || {
        ApiError::BadRequest(
            "a report path is plain names inside the reports directory: no '..', hidden or empty segments"
                .into(),
        )
    };
    let mut rel = PathBuf::new();
    for seg in raw {
        let name = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| refused())?;
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
            return Err(refused());
        }
        rel.push(&*name);
    }
    let missing = || ApiError::NotFound(format!("no report {}", rel.display()));
    let root = root.canonicalize().map_err(|_| missing())?;
    let full = root.join(&rel).canonicalize().map_err(|_| missing())?;
    if !full.starts_with(&root) || !full.is_file() {
        return Err(missing());
    }
    Ok(full)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        Some("md") => "text/markdown; charset=utf-8",
        // HTML, logs and anything else readable: shown as text, never run.
        _ => "text/plain; charset=utf-8",
    }
}

fn read_report(path: &Path) -> Result<WarpResponse, ApiError> {
    let missing = |e: std::io::Error| ApiError::NotFound(format!("report unreadable: {e}"));
    let len = std::fs::metadata(path).map_err(missing)?.len();
    if len > MAX_REPORT_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the report is {len} bytes; the console serves up to {MAX_REPORT_BYTES}"
        )));
    }
    let bytes = std::fs::read(path).map_err(missing)?;
    let mut resp = respond(200, content_type(path), bytes);
    with_header(&mut resp, header::CONTENT_SECURITY_POLICY, REPORT_POLICY);
    with_header(&mut resp, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    with_header(&mut resp, header::CACHE_CONTROL, "no-cache");
    Ok(resp)
}

/// Every regular file under `root` (hidden names and symbolic links left
/// out), as `{path, bytes, modified_unix_ms}` in path order.
pub(super) fn list_reports(root: &Path) -> serde_json::Value {
    let mut files = Vec::new();
    let mut truncated = false;
    let mut dirs = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if name.starts_with('.') || kind.is_symlink() {
                continue;
            }
            let path = format!("{prefix}{name}");
            if kind.is_dir() && depth < MAX_REPORT_DEPTH {
                dirs.push((entry.path(), format!("{path}/"), depth + 1));
            } else if kind.is_file() {
                if files.len() >= MAX_REPORT_FILES {
                    truncated = true;
                    continue;
                }
                let meta = entry.metadata().ok();
                let modified = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                files.push(json!({
                    "path": path,
                    "bytes": meta.map_or(0, |m| m.len()),
                    "modified_unix_ms": modified,
                }));
            }
        }
    }
    files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    json!({"files": files, "truncated": truncated})
}

#[cfg(test)]
#[path = "ui_tests.rs"]
mod tests;
