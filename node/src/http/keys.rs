//! `/buckets/{bucket}/keys/{key}` and its short form `/kv/{key}`.
//!
//! Reads answer 200 with the value when exactly one version is live, 300
//! with every version when there are concurrent ones, 404 when nothing or
//! only deletions are known. A deletion concurrent with a live value is a
//! conflict too: it is listed as a sibling with `"deleted": true` rather
//! than silently hidden, so the client decides which one wins.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use warp::http::{Method, header};

use super::request::{Request, decode_key};
use super::{Reply, json, respond};
use crate::buckets::{parse_consistency, validate_bucket_name};
use crate::coordinator;
use crate::error::ApiError;
use crate::replica::Mutation;
use crate::server::Node;
use crate::version::{Context, Dvvs, Value};

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Serves one key request.
pub async fn handle(node: &Node, bucket: &str, raw_key: &str, req: Request) -> Reply {
    validate_bucket_name(bucket)?;
    let key = decode_key(raw_key)?;
    match req.method {
        Method::GET | Method::HEAD => get(node, bucket, &key, req).await,
        Method::PUT | Method::POST => put(node, bucket, &key, req).await,
        Method::DELETE => delete(node, bucket, &key, req).await,
        ref m => Err(ApiError::MethodNotAllowed(m.to_string())),
    }
}

fn context_header(req: &Request) -> Result<Context, ApiError> {
    match req.headers.get("x-causal-context") {
        None => Ok(Context::default()),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::BadRequest("X-Causal-Context holds non-ASCII bytes".into())
            })?;
            if s.is_empty() {
                return Ok(Context::default());
            }
            Context::decode(s).map_err(|e| {
                ApiError::BadRequest(format!(
                    "X-Causal-Context is not a token this store issued: {e}"
                ))
            })
        }
    }
}

fn sibling_json(v: &Value) -> serde_json::Value {
    if v.tombstone {
        json!({"value_base64": "", "content_type": "", "deleted": true})
    } else {
        json!({"value_base64": B64.encode(&v.data), "content_type": v.content_type})
    }
}

async fn get(node: &Node, bucket: &str, key: &[u8], req: Request) -> Reply {
    let props = node.buckets.props_for_keys(bucket);
    let r = match req.query.get("r") {
        Some(s) => parse_consistency(s, "r", false)?,
        None => props.default_r(),
    };
    let timeout = req.query.timeout()?.unwrap_or(node.config.timeout);
    let found = coordinator::read(node, bucket, key, &props, r, timeout).await?;
    let Some(object) = found else {
        return Err(ApiError::KeyNotFound { context: None });
    };
    render_read(node, &object, &req)
}

/// Renders a read's versions per the contract.
fn render_read(node: &Node, object: &Dvvs, req: &Request) -> Reply {
    let ctx = object.context().encode();
    let values = object.values();
    if values.is_empty() || object.is_deleted() {
        return Err(ApiError::KeyNotFound {
            context: object.has_tombstone().then_some(ctx),
        });
    }
    if values.len() > 1 {
        node.metrics.conflicted_reads.inc();
        node.metrics.siblings_returned.inc_by(values.len() as u64);
    }
    let mut resp = if req.wants_json() {
        let list: Vec<_> = values.iter().map(|v| sibling_json(v)).collect();
        json(200, &json!({"context": ctx, "values": list}))
    } else if values.len() == 1 {
        let v = values[0];
        let ct = if v.content_type.is_empty() {
            DEFAULT_CONTENT_TYPE
        } else {
            &v.content_type
        };
        respond(200, ct, v.data.clone())
    } else {
        let list: Vec<_> = values.iter().map(|v| sibling_json(v)).collect();
        json(300, &json!({"context": ctx, "siblings": list}))
    };
    if let Ok(v) = header::HeaderValue::from_str(&ctx) {
        resp.headers_mut().insert("x-causal-context", v);
    }
    if req.method == Method::HEAD {
        *resp.body_mut() = Default::default();
    }
    Ok(resp)
}

async fn write(node: &Node, bucket: &str, key: &[u8], req: Request, delete: bool) -> Reply {
    let props = node.buckets.props_for_keys(bucket);
    let w = match req.query.get("w") {
        Some(s) => parse_consistency(s, "w", true)?,
        None => props.default_w(),
    };
    // Validate everything cheap before reading the body.
    w.required(props.n, "w")?;
    let timeout = req.query.timeout()?.unwrap_or(node.config.timeout);
    let ctx = context_header(&req)?;
    let mutation = if delete {
        Mutation::Delete
    } else {
        let content_type = req
            .header(header::CONTENT_TYPE.as_str())
            .unwrap_or(DEFAULT_CONTENT_TYPE)
            .to_string();
        let Request { headers, body, .. } = req;
        let data = body.read(&headers, node.config.max_value_bytes).await?;
        Mutation::Put {
            data: data.to_vec(),
            content_type,
        }
    };
    let object = coordinator::write(node, bucket, key, &props, &ctx, mutation, w, timeout).await?;
    let mut resp = respond(204, "text/plain", bytes::Bytes::new());
    resp.headers_mut().remove(header::CONTENT_TYPE);
    if let Ok(v) = header::HeaderValue::from_str(&object.context().encode()) {
        resp.headers_mut().insert("x-causal-context", v);
    }
    Ok(resp)
}

async fn put(node: &Node, bucket: &str, key: &[u8], req: Request) -> Reply {
    write(node, bucket, key, req, false).await
}

async fn delete(node: &Node, bucket: &str, key: &[u8], req: Request) -> Reply {
    write(node, bucket, key, req, true).await
}

/// `GET /internal/local/...`: what this node alone stores for a key.
pub fn local_view(node: &Node, bucket: &str, raw_key: &str) -> Reply {
    validate_bucket_name(bucket)?;
    let key = decode_key(raw_key)?;
    let me = node.replica.id().to_string();
    let object = node
        .replica
        .read(bucket, &key)
        .map_err(|e| ApiError::storage(&me, 1, e))?;
    let Some(object) = object else {
        return Err(ApiError::KeyNotFound { context: None });
    };
    let values: Vec<_> = object
        .live_values()
        .iter()
        .map(|v| sibling_json(v))
        .collect();
    Ok(json(
        200,
        &json!({
            "node": me,
            "values": values,
            "tombstone": object.has_tombstone(),
            "context": object.context().encode(),
        }),
    ))
}
