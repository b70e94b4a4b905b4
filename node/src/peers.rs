//! This node's answers to other nodes' requests ([`serve`]), and the
//! background calls that keep bucket properties and hints moving.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::proto::{Encoded, RemoteError, Request, Response};
use crate::server::Node;
use crate::storage::StorageError;
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

/// How long an announcement of bucket properties may take per peer.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

fn bucket_request(r: crate::buckets::BucketRecord) -> Request {
    Request::Bucket {
        name: r.name,
        props: r.props,
        has_data: r.has_data,
        updated_ms: r.updated_ms,
    }
}

/// Tells every other member about bucket `name` (after it was set here),
/// in the background. A member that misses it learns it when this node
/// next sees it come up ([`push_buckets`]).
pub fn announce_bucket(node: &Arc<Node>, name: &str) {
    let Some(record) = node.buckets.record(name) else {
        return;
    };
    for peer in node.cluster.others() {
        let (node, req) = (node.clone(), bucket_request(record.clone()));
        tokio::spawn(async move {
            if let Err(e) = node.peers.call(&peer, req, ANNOUNCE_TIMEOUT).await {
                tracing::debug!(%peer, error = %e, "bucket announcement not delivered");
            }
        });
    }
}

/// Sends every bucket this node knows to `peer` (which just came up), in
/// the background: bucket properties converge without a coordinator.
pub fn push_buckets(node: &Arc<Node>, peer: &str) {
    let records = node.buckets.records();
    if records.is_empty() {
        return;
    }
    let (node, peer) = (node.clone(), peer.to_string());
    tokio::spawn(async move {
        for r in records {
            if let Err(e) = node
                .peers
                .call(&peer, bucket_request(r), ANNOUNCE_TIMEOUT)
                .await
            {
                tracing::debug!(%peer, error = %e, "bucket push not delivered");
            }
        }
    });
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
        Request::Write(w) => crate::coordinator::serve_forwarded(&node, w).await,
        Request::Replicate {
            bucket,
            key,
            object,
            hint_for,
        } => {
            let props = node.buckets.props_for_keys(&bucket);
            let object = object
                .decode()
                .map_err(|e| RemoteError::Bad(format!("versions that do not decode: {e}")))?;
            node.replica
                .merge(&bucket, &key, &object, props.conflicts)
                .await
                .map_err(|e| RemoteError::Storage(e.to_string()))?;
            if let Some(owner) = hint_for {
                crate::coordinator::hint(&node, &owner, &bucket, &key, &object).await;
            }
            Ok(Response::Ack)
        }
        Request::Read {
            bucket,
            key,
            digest,
        } => {
            node.faults.storage_delay().await;
            let storage = |e: StorageError| RemoteError::Storage(e.to_string());
            Ok(if digest {
                let found = node.replica.read(&bucket, &key).map_err(storage)?;
                Response::Digest(found.map(|o| o.digest()))
            } else {
                let found = node.replica.read_encoded(&bucket, &key).map_err(storage)?;
                Response::Object(found.map(Encoded::from))
            })
        }
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
        } => crate::repair::serve_tree(&node, range, depth, filter)
            .await
            .map(Response::Tree)
            .map_err(|e| RemoteError::Storage(e.to_string())),
        Request::Entries {
            range,
            after,
            limit,
        } => crate::repair::serve_entries(&node, range, after, limit)
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
