//! The cluster-change routes: `POST /cluster/join`, `/cluster/decommission`,
//! `/cluster/removenode`, `/cluster/cleanup`, and `GET /cluster/changes`
//! (see docs/API.md). The work is in [`crate::stream`].

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use warp::http::Method;

use super::Api;
use super::request::Request;
use super::{Reply, json};
use crate::cluster::NodeState;
use crate::error::ApiError;

fn only(req: &Request, m: Method) -> Result<(), ApiError> {
    if req.method == m {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(req.method.to_string()))
    }
}

/// Reads an optional JSON body (empty: `T::default()`).
async fn body<T: for<'de> Deserialize<'de> + Default>(req: Request) -> Result<T, ApiError> {
    let Request { headers, body, .. } = req;
    let raw = body.read(&headers, 256 * 1024).await?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&raw).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    tokens: Option<Vec<u64>>,
}

/// `POST /cluster/join`: a standby node joins with the given tokens or
/// ones its allocator chooses against the current ring.
pub async fn join(api: &Arc<Api>, req: Request) -> Reply {
    only(&req, Method::POST)?;
    let b: JoinBody = body(req).await?;
    let me = api.replica.id().to_string();
    let m = api.cluster.member(&me);
    let standby = m
        .as_ref()
        .is_some_and(|m| m.state == NodeState::Standby && m.tokens.is_empty());
    if !standby {
        return Err(ApiError::Conflict(format!(
            "{me} is not standby (state {}); only a standby node without tokens can join",
            m.map_or("unknown".into(), |m| format!("{:?}", m.state)
                .to_lowercase())
        )));
    }
    let tokens = match b.tokens {
        Some(t) => {
            check_tokens(api, &t)?;
            t
        }
        None => {
            let snap = api.membership.handle().snapshot();
            crate::membership::choose_tokens(&api.config, &me, &snap)
                .map_err(ApiError::BadRequest)?
        }
    };
    api.changes.join(tokens.clone()).await?;
    Ok(json(
        202,
        &json!({"node": me, "state": "joining", "tokens": tokens}),
    ))
}

/// Tokens given to a join: 1 to 1024, distinct, owned by nobody.
fn check_tokens(api: &Api, tokens: &[u64]) -> Result<(), ApiError> {
    if tokens.is_empty() || tokens.len() > 1024 {
        return Err(ApiError::BadRequest(format!(
            "{} tokens given; a node takes 1 to 1024",
            tokens.len()
        )));
    }
    let distinct: HashSet<u64> = tokens.iter().copied().collect();
    if distinct.len() != tokens.len() {
        return Err(ApiError::BadRequest("tokens must be distinct".into()));
    }
    for m in api.cluster.members() {
        if let Some(t) = m.tokens.iter().find(|t| distinct.contains(t)) {
            return Err(ApiError::BadRequest(format!(
                "token {t} is already owned by {}",
                m.id
            )));
        }
    }
    Ok(())
}

/// `POST /cluster/decommission`.
pub async fn decommission(api: &Arc<Api>, req: Request) -> Reply {
    only(&req, Method::POST)?;
    let change = api.changes.decommission().await?;
    Ok(json(202, &json!({"node": change.node, "state": "leaving"})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    node: Option<String>,
}

/// `POST /cluster/removenode {"node":"n5"}`.
pub async fn removenode(api: &Arc<Api>, req: Request) -> Reply {
    only(&req, Method::POST)?;
    let b: RemoveBody = body(req).await?;
    let Some(target) = b.node.filter(|n| !n.is_empty()) else {
        return Err(ApiError::BadRequest(
            "the body must name the node: {\"node\":\"n5\"}".into(),
        ));
    };
    api.changes.removenode(&target).await?;
    Ok(json(
        202,
        &json!({"node": target, "state": "removing", "by": api.replica.id()}),
    ))
}

/// `GET /cluster/changes`.
pub fn changes(api: &Api, req: &Request) -> Reply {
    if req.method != Method::GET {
        return Err(ApiError::MethodNotAllowed(req.method.to_string()));
    }
    api.changes.changes().observe(&api.cluster);
    Ok(json(200, &api.changes.changes().report(api.replica.id())))
}

/// `POST /cluster/cleanup`.
pub async fn cleanup(api: &Arc<Api>, req: Request) -> Reply {
    only(&req, Method::POST)?;
    drop(req);
    let report = api.changes.cleanup().await?;
    Ok(json(200, &json!(report)))
}
