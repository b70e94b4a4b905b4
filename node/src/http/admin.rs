//! Bucket properties, cluster views, metrics and inspection routes.

use std::collections::BTreeMap;

use std::sync::Arc;

use serde_json::json;
use warp::http::Method;

use super::Api;
use super::request::{Request, decode_key};
use super::{Reply, json, respond};
use crate::buckets::{BucketUpdate, validate_bucket_name};
use crate::error::ApiError;
use crate::faults::FaultSettings;
use quorumkv_faults::Settings;

fn only(req: &Request, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(&req.method) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(req.method.to_string()))
    }
}

/// `GET /health`.
pub fn health(api: &Api, req: &Request) -> Reply {
    only(req, &[Method::GET, Method::HEAD])?;
    Ok(json(
        200,
        &json!({"status": "ok", "node": api.replica.id()}),
    ))
}

/// `GET|PUT /buckets/{bucket}`.
pub async fn bucket(api: &Arc<Api>, name: &str, req: Request) -> Reply {
    validate_bucket_name(name)?;
    match req.method {
        Method::GET | Method::HEAD => match api.buckets.get(name) {
            Some(p) => Ok(json(200, &json!(p))),
            None => Err(ApiError::NotFound(format!(
                "bucket {name:?} does not exist; PUT /buckets/{name} creates it, and so does writing a key to it"
            ))),
        },
        Method::PUT | Method::POST => {
            let Request { headers, body, .. } = req;
            let raw = body.read(&headers, 64 * 1024).await.map_err(|e| match e {
                ApiError::ValueTooLarge { .. } => {
                    ApiError::BadRequest("bucket properties are limited to 64 KiB".into())
                }
                other => other,
            })?;
            let update: BucketUpdate = if raw.iter().all(u8::is_ascii_whitespace) {
                BucketUpdate::default()
            } else {
                serde_json::from_slice(&raw).map_err(|e| {
                    ApiError::BadRequest(format!("bucket properties are not valid: {e}"))
                })?
            };
            let props = api.buckets.update(name, update).await?;
            api.bucket_sync.announce(name);
            Ok(json(200, &json!(props)))
        }
        ref m => Err(ApiError::MethodNotAllowed(m.to_string())),
    }
}

/// `GET /cluster/members`.
pub fn members(api: &Api, req: &Request) -> Reply {
    only(req, &[Method::GET])?;
    let mut list = json!(api.cluster.members());
    if let Some(items) = list.as_array_mut() {
        for m in items {
            let id = m["id"].as_str().unwrap_or_default().to_string();
            m["hints_pending"] = json!(api.hints.pending_for(&id));
        }
    }
    Ok(json(200, &list))
}

/// `GET /cluster/ring`: tokens in ring order, each node's primary share
/// of the token space (`ownership`, sums to 1), and — additions to the
/// contract — the racks, the default replica count `rf` and each node's
/// replicated ownership for it (what `qkv ring show` and `plan` read).
pub fn ring(api: &Api, req: &Request) -> Reply {
    only(req, &[Method::GET])?;
    let ring = api.cluster.ring();
    let rf = api.config.default_n as usize;
    let mut file = quorumkv_ring::RingFile::from_ring(&ring);
    file.rf = Some(rf);
    let mut body = json!(file);
    let replicated: BTreeMap<String, f64> = quorumkv_ring::ownership(&ring, rf)
        .nodes
        .into_iter()
        .map(|n| (n.node, n.replicated))
        .collect();
    body["replicated_ownership"] = json!(replicated);
    Ok(json(200, &body))
}

/// `GET /cluster/locate/{key}?bucket=`.
pub fn locate(api: &Api, raw_key: &str, req: &Request) -> Reply {
    only(req, &[Method::GET])?;
    let bucket = req.query.get("bucket").unwrap_or("default");
    validate_bucket_name(bucket)?;
    let key = decode_key(raw_key)?;
    let props = api.buckets.props_for_keys(bucket);
    let token = quorumkv_ring::token_of(bucket.as_bytes(), &key);
    let replicas = api.cluster.preference(token, props.n as usize);
    let fallbacks = api.cluster.fallbacks(token, &replicas);
    let placement = api.coordinator.placement(bucket, &key, &props);
    let targets: Vec<_> = placement
        .targets
        .iter()
        .map(|t| json!({"node": &*t.node, "for": t.hint_for.as_deref()}))
        .collect();
    Ok(json(
        200,
        &json!({
            "bucket": bucket,
            "key": String::from_utf8_lossy(&key),
            "token": token,
            "n": props.n,
            "replicas": replicas,
            "fallbacks": fallbacks,
            "targets": targets,
            "down": placement.down,
            "pending": api.cluster.pending(token, props.n as usize),
        }),
    ))
}

/// `GET /metrics`.
pub fn metrics(api: &Api, req: &Request) -> Reply {
    only(req, &[Method::GET])?;
    let (keys, bytes) = api.replica.stored();
    api.metrics.keys_stored.set(keys);
    api.metrics.bytes_stored.set(bytes);
    api.metrics.sync_hints(
        &api.hints.pending(),
        &api.cluster.others(),
        &api.hints.stats(),
    );
    if let Some(net) = &api.net {
        api.metrics.sync_net(net.counters());
    }
    api.metrics.sync_outstanding(&api.peers.all_outstanding());
    let l = api.coordinator.latencies();
    api.metrics
        .sync_latencies(&l.all(), l.speculation_delay(), l.probes());
    api.metrics
        .sync_clock(api.replica.clock_clamped(), crate::clock::offset_ms());
    let me = api.replica.id();
    api.metrics.ops.sync_peers(
        api.cluster
            .members()
            .into_iter()
            .filter(|m| m.id != me)
            .map(|m| (m.id, m.status == "up", m.phi)),
    );
    api.metrics.ops.sync_data_dir(&api.config.data_dir);
    let progress = api.repairer.state().progress();
    let ops = &api.metrics.ops;
    ops.sync_repair(
        progress.running,
        progress.comparisons_total,
        progress.comparisons_done,
    );
    ops.sync_streams(api.changes.changes().stream_totals());
    Ok(respond(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        api.metrics.render(),
    ))
}

/// `GET /internal/local/buckets/{bucket}/keys/{key}`.
pub fn internal_local(api: &Api, bucket: &str, raw_key: &str, req: &Request) -> Reply {
    only(req, &[Method::GET])?;
    super::keys::local_view(api, bucket, raw_key)
}

/// `POST /internal/repair[?bucket=B]`: one anti-entropy pass of this node
/// with every other replica of its ranges (only bucket B's keys when
/// given); answers the report when it is done. `GET /internal/repair`: the
/// progress of the pass under way (or the last one).
pub async fn repair(api: &Arc<Api>, req: Request) -> Reply {
    only(&req, &[Method::POST, Method::GET])?;
    if req.method == Method::GET {
        return Ok(json(200, &json!(api.repairer.state().progress())));
    }
    let bucket = req.query.get("bucket").map(str::to_string);
    if let Some(b) = &bucket {
        crate::buckets::validate_bucket_name(b)?;
    }
    drop(req);
    let report = api
        .repairer
        .repair_node(crate::repair::Scope { bucket })
        .await;
    Ok(json(200, &json!(report)))
}

fn fault_injection_on(api: &Api) -> Result<(), ApiError> {
    if api.faults.enabled() {
        Ok(())
    } else {
        Err(ApiError::NotFound(
            "fault injection is disabled; start qkvd with --fault-injection".into(),
        ))
    }
}

/// Largest fault document accepted (inline empirical samples make it
/// long).
const MAX_FAULTS_BODY: u64 = 4 << 20;

/// `GET|PUT|PATCH|DELETE /internal/faults` (`--fault-injection` only):
/// the fault document — read, replaced, merge-patched (RFC 7386: `null`
/// removes a member), or cleared. Answers the document now in force.
pub async fn faults(api: &Api, req: Request) -> Reply {
    fault_injection_on(api)?;
    let invalid = |e: &dyn std::fmt::Display| {
        ApiError::BadRequest(format!("fault settings are not valid: {e}"))
    };
    let next: Settings = match req.method {
        Method::GET => return Ok(json(200, &json!(*api.faults.document()))),
        Method::DELETE => Settings::default(),
        Method::PUT | Method::PATCH => {
            let patch = req.method == Method::PATCH;
            let Request { headers, body, .. } = req;
            let raw = body.read(&headers, MAX_FAULTS_BODY).await?;
            if patch {
                let patch: serde_json::Value =
                    serde_json::from_slice(&raw).map_err(|e| invalid(&e))?;
                let mut doc = json!(*api.faults.document());
                json_patch::merge(&mut doc, &patch);
                serde_json::from_value(doc).map_err(|e| invalid(&e))?
            } else {
                serde_json::from_slice(&raw).map_err(|e| invalid(&e))?
            }
        }
        ref m => return Err(ApiError::MethodNotAllowed(m.to_string())),
    };
    let now = api.faults.replace(next).map_err(|e| invalid(&e))?;
    Ok(json(200, &json!(*now)))
}

/// `GET|PUT /internal/fault`: the storage delay alone (`--fault-injection`
/// only); `/internal/faults` has every fault.
pub async fn fault(api: &Api, req: Request) -> Reply {
    fault_injection_on(api)?;
    match req.method {
        Method::GET => Ok(json(200, &json!(api.faults.settings()))),
        Method::PUT | Method::POST => {
            let Request { headers, body, .. } = req;
            let raw = body.read(&headers, 64 * 1024).await?;
            let s: FaultSettings = serde_json::from_slice(&raw)
                .map_err(|e| ApiError::BadRequest(format!("fault settings are not valid: {e}")))?;
            api.faults.set(&s);
            Ok(json(200, &json!(api.faults.settings())))
        }
        ref m => Err(ApiError::MethodNotAllowed(m.to_string())),
    }
}
