//! `/buckets/{bucket}/keys/{key}` and its short form `/kv/{key}`.
//!
//! Reads answer 200 with the value when exactly one version is live, 300
//! with every version when there are concurrent ones, 404 when nothing or
//! only deletions are known. A deletion concurrent with a live value is a
//! conflict too: it is listed as a sibling with `"deleted": true` rather
//! than silently hidden, so the client decides which one wins.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use warp::http::{Method, header};

use super::Api;
use super::request::{Request, decode_key};
use super::{CONTEXT_HEADER, Reply, json, respond};
use crate::buckets::{parse_consistency, validate_bucket_name};
use crate::coordinator::{ReadArgs, WriteArgs, trace::Trace};
use crate::error::ApiError;
use crate::replica::Mutation;
use crate::version::{Context, Dvvs, Value};
use warp::reply::Response as WarpResponse;

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Serves one key request.
pub async fn handle(api: &Arc<Api>, bucket: &str, raw_key: &str, req: Request) -> Reply {
    validate_bucket_name(bucket)?;
    let key = decode_key(raw_key)?;
    match req.method {
        Method::GET | Method::HEAD => get(api, bucket, key, req).await,
        Method::PUT | Method::POST => write(api, bucket, key, req, false).await,
        Method::DELETE => write(api, bucket, key, req, true).await,
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

/// The timeline of `?trace=true`, started when asked for.
fn trace_of(api: &Api, req: &Request) -> Option<Trace> {
    req.query
        .flag("trace")
        .then(|| Trace::new(api.replica.id()))
}

/// Puts the timeline on a response: the `X-Trace` header (compact JSON).
fn with_trace(mut resp: WarpResponse, trace: &Option<Trace>) -> WarpResponse {
    if let Some(t) = trace
        && let Ok(text) = serde_json::to_string(&t.events())
        && let Ok(v) = header::HeaderValue::from_str(&text)
    {
        resp.headers_mut().insert("x-trace", v);
    }
    resp
}

/// An error response carrying the timeline: it says most when things fail.
fn traced_error(e: ApiError, trace: &Option<Trace>) -> Reply {
    match trace {
        None => Err(e),
        Some(_) => Ok(with_trace(super::error_response(&e), trace)),
    }
}

async fn get(api: &Arc<Api>, bucket: &str, key: Vec<u8>, req: Request) -> Reply {
    let props = api.buckets.props_for_keys(bucket);
    let r = match req.query.get("r") {
        Some(s) => parse_consistency(s, "r", false)?,
        None => props.default_r(),
    };
    let timeout = req.query.timeout()?.unwrap_or(api.config.timeout);
    let trace = trace_of(api, &req);
    let args = ReadArgs {
        bucket: bucket.to_string(),
        key,
        props,
        r,
        timeout,
        trace: trace.clone(),
    };
    let found = match api.coordinator.read(args).await {
        Ok(f) => f,
        Err(e) => return traced_error(e.into(), &trace),
    };
    let rendered = match found {
        None => Err(ApiError::KeyNotFound { context: None }),
        Some(object) => render_read(api, &object, &req, &trace),
    };
    match rendered {
        Ok(resp) => Ok(with_trace(resp, &trace)),
        Err(e) => traced_error(e, &trace),
    }
}

/// Renders a read's versions per the contract (with the timeline in the
/// JSON body too when one was asked for).
fn render_read(api: &Api, object: &Dvvs, req: &Request, trace: &Option<Trace>) -> Reply {
    let ctx = object.context_token();
    let values = object.values();
    if values.is_empty() || object.is_deleted() {
        return Err(ApiError::KeyNotFound {
            context: object.has_tombstone().then_some(ctx),
        });
    }
    if values.len() > 1 {
        api.metrics.conflicted_reads.inc();
        api.metrics.siblings_returned.inc_by(values.len() as u64);
    }
    let mut resp = if req.wants_json() {
        let list: Vec<_> = values.iter().map(|v| sibling_json(v)).collect();
        let mut body = json!({"context": ctx, "values": list});
        if let Some(t) = trace {
            body["trace"] = json!(t.events());
        }
        json(200, &body)
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
    // The token's own bytes become the header value, uncopied.
    if let Ok(v) = header::HeaderValue::try_from(ctx) {
        resp.headers_mut().insert(CONTEXT_HEADER, v);
    }
    if req.method == Method::HEAD {
        *resp.body_mut() = Default::default();
    }
    Ok(resp)
}

async fn write(api: &Arc<Api>, bucket: &str, key: Vec<u8>, req: Request, delete: bool) -> Reply {
    let props = api.buckets.props_for_keys(bucket);
    let w = match req.query.get("w") {
        Some(s) => parse_consistency(s, "w", true)?,
        None => props.default_w(),
    };
    // Validate everything cheap before reading the body.
    w.required(props.n, "w")?;
    let timeout = req.query.timeout()?.unwrap_or(api.config.timeout);
    let ctx = context_header(&req)?;
    let trace = trace_of(api, &req);
    let mutation = if delete {
        Mutation::Delete
    } else {
        let content_type = req
            .header(header::CONTENT_TYPE.as_str())
            .unwrap_or(DEFAULT_CONTENT_TYPE)
            .to_string();
        let Request { headers, body, .. } = req;
        let data = body.read(&headers, api.config.max_value_bytes).await?;
        Mutation::Put {
            data: data.to_vec(),
            content_type,
        }
    };
    let args = WriteArgs {
        bucket: bucket.to_string(),
        key,
        props,
        ctx,
        mutation,
        w,
        timeout,
        trace: trace.clone(),
    };
    let object = match api.coordinator.write(args).await {
        Ok(o) => o,
        Err(e) => return traced_error(e.into(), &trace),
    };
    let mut resp = WarpResponse::new(Default::default());
    *resp.status_mut() = warp::http::StatusCode::NO_CONTENT;
    if let Ok(v) = header::HeaderValue::try_from(object.context_token()) {
        resp.headers_mut().insert(CONTEXT_HEADER, v);
    }
    Ok(with_trace(resp, &trace))
}

/// `GET /internal/local/...`: what this node alone stores for a key.
pub fn local_view(api: &Api, bucket: &str, raw_key: &str) -> Reply {
    validate_bucket_name(bucket)?;
    let key = decode_key(raw_key)?;
    let me = api.replica.id().to_string();
    let object = api
        .replica
        .read(bucket, &key)
        .map_err(|e| ApiError::storage(&me, 1, e))?;
    let Some(object) = object else {
        return Err(ApiError::KeyNotFound { context: None });
    };
    Ok(json(200, &local_json(&me, &object)))
}

/// The body of `/internal/local/...` for what `node` stores of a key
/// (also what the console shows of another replica's copy).
pub(super) fn local_json(node: &str, object: &Dvvs) -> serde_json::Value {
    // Inspection adds each version's timestamp (its wall part, ms): what
    // orders a last-writer-wins bucket, and where a skewed clock shows.
    let values: Vec<_> = object
        .live_values()
        .iter()
        .map(|v| {
            let mut j = sibling_json(v);
            j["timestamp_ms"] = json!(v.timestamp.wall_ms());
            j
        })
        .collect();
    json!({
        "node": node,
        "values": values,
        "tombstone": object.has_tombstone(),
        "context": object.context_token(),
    })
}
