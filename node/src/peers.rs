//! This node's answers to other nodes' requests ([`serve`]), and the
//! background calls that keep bucket properties and hints moving.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::proto::{Encoded, RemoteError, Request, Response};
use crate::server::Node;
use crate::transport::{Answer, Handler};

/// The transport's handler of requests from other nodes.
pub struct RpcHandler(pub Weak<Node>);

impl Handler for RpcHandler {
    fn handle(&self, _from: &str, req: Request) -> Answer {
        let node = self.0.upgrade();
        Box::pin(async move {
            match node {
                Some(node) => serve(node, req).await,
                None => Err(RemoteError::Overloaded("node is shutting down".into())),
            }
        })
    }
}

/// How long one hint delivery may take.
const HINT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The replayer's view of whether a hint's target can take it: up by the
/// failure detector.
pub fn hint_target_is_up(node: &Arc<Node>) -> crate::hints::IsUpFn {
    let node = Arc::downgrade(node);
    Arc::new(move |target: &str| node.upgrade().is_some_and(|n| n.cluster.is_alive(target)))
}

/// Delivers one hint: the target merges the versions (idempotent, so a
/// hint delivered twice after a crash does no harm).
pub fn hint_delivery(node: &Arc<Node>) -> crate::hints::DeliverFn {
    let node = Arc::downgrade(node);
    Arc::new(move |h: crate::hints::Hint| {
        let node = node.upgrade();
        Box::pin(async move {
            let Some(node) = node else {
                return Err("node is shutting down".to_string());
            };
            let req = Request::Replicate {
                bucket: h.bucket,
                key: h.key,
                object: Encoded::of(&h.object),
                hint_for: None,
            };
            match node.peers.call(&h.target, req, HINT_DELIVERY_TIMEOUT).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

/// What this node, as a replica, does with a request from a coordinator.
pub async fn serve(node: Arc<Node>, req: Request) -> Result<Response, RemoteError> {
    match req {
        Request::Ping => Ok(Response::Pong),
        Request::Write(w) => node.coordinator.serve_forwarded(w).await,
        Request::Replicate {
            bucket,
            key,
            object,
            hint_for,
        } => {
            node.coordinator
                .serve_replicate(&bucket, &key, &object, hint_for.as_deref())
                .await
        }
        Request::Read {
            bucket,
            key,
            digest,
        } => node.coordinator.serve_read(&bucket, &key, digest).await,
        Request::Bucket {
            name,
            props,
            has_data,
            updated_ms,
        } => {
            node.buckets
                .apply_remote(crate::buckets::BucketRecord {
                    name,
                    props,
                    has_data,
                    updated_ms,
                })
                .await
                .map_err(|e| RemoteError::Storage(e.to_string()))?;
            Ok(Response::Ack)
        }
        Request::Tree {
            range,
            depth,
            filter,
        } => node
            .repairer
            .serve_tree(range, depth, filter)
            .await
            .map(Response::Tree)
            .map_err(|e| RemoteError::Storage(e.to_string())),
        Request::Entries {
            range,
            after,
            limit,
        } => node
            .repairer
            .serve_entries(range, after, limit)
            .await
            .map(|(entries, next)| Response::Entries { entries, next })
            .map_err(|e| RemoteError::Storage(e.to_string())),
        Request::Stream(s) => crate::stream::serve::serve(node, s)
            .await
            .map(Response::Stream),
        Request::NodeTokens { node: id } => Ok(Response::Tokens(crate::tokens::known_tokens(
            &node.cluster.members(),
            &id,
        ))),
    }
}
