//! Requests to other nodes by node id, and this node's answers to theirs.
//!
//! The coordinator speaks in node ids; the transport (`net`) in addresses.
//! [`call`] looks the address up in the cluster view and turns the
//! transport's failures into [`PeerError`], which keeps the one distinction
//! a coordinator needs: whether the request may have been applied (a
//! timeout, a lost connection) or certainly was not (unreachable, a full
//! queue, an overloaded peer). [`serve`] is the other side: what a replica
//! does with a request from a coordinator.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, Weak};
use std::time::Duration;

use crate::net::{CallError, Handler, Net, PeerInfo};
use crate::proto::{Encoded, RemoteError, Request, Response};
use crate::server::Node;
use crate::storage::StorageError;

/// Why a request to a peer failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeerError {
    /// The request never reached the peer (no address, unreachable, queue
    /// full): certainly not applied.
    #[error("{0}")]
    NotSent(String),
    /// No answer before the deadline: it may still be applied.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// Sent, then the connection dropped: it may have been applied.
    #[error("{0}")]
    Lost(String),
    /// The peer answered with an error.
    #[error("{0}")]
    Remote(RemoteError),
}

impl PeerError {
    /// Whether the peer may have applied the request anyway.
    pub fn maybe_applied(&self) -> bool {
        match self {
            PeerError::NotSent(_) => false,
            PeerError::Timeout(_) | PeerError::Lost(_) => true,
            PeerError::Remote(e) => matches!(e, RemoteError::Deadline | RemoteError::Api(_)),
        }
    }

    /// Whether the peer certainly did nothing with the request, so that
    /// another replica may be asked instead.
    pub fn not_applied(&self) -> bool {
        match self {
            PeerError::NotSent(_) => true,
            PeerError::Remote(e) => matches!(e, RemoteError::Overloaded(_)),
            _ => false,
        }
    }
}

/// This node's end of the internode transport, set once it has started,
/// and how many of its calls each peer has yet to answer.
#[derive(Default)]
pub struct Peers {
    net: OnceLock<Arc<Net>>,
    /// Unanswered calls per node id (entries stay once made: one per
    /// node this one has ever called).
    outstanding: RwLock<HashMap<String, Arc<AtomicUsize>>>,
}

/// Counts one call to a peer as outstanding until dropped, however the
/// call ends (answered, failed, timed out, or its caller gone).
struct Outstanding(Arc<AtomicUsize>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Peers {
    /// Attaches the running transport.
    pub fn attach(&self, net: Arc<Net>) {
        let _ = self.net.set(net);
    }

    /// The transport, once attached.
    pub fn net(&self) -> Option<&Arc<Net>> {
        self.net.get()
    }

    /// Calls to node `to` that have not ended yet: how far behind it is
    /// with this node's requests (the coordinator's read order).
    pub fn outstanding(&self, to: &str) -> usize {
        self.counters().get(to).map_or(0, |c| c.load(Relaxed))
    }

    /// Outstanding calls of every peer this node has called.
    pub fn all_outstanding(&self) -> Vec<(String, usize)> {
        let counters = self.counters();
        counters
            .iter()
            .map(|(k, c)| (k.clone(), c.load(Relaxed)))
            .collect()
    }

    /// Starts counting a call to `to`.
    fn start_call(&self, to: &str) -> Outstanding {
        // The read lock is released at the end of the statement, before
        // the first call to a peer takes the write lock.
        let found = self.counters().get(to).cloned();
        let c = found.unwrap_or_else(|| {
            let mut map = self.outstanding.write().unwrap_or_else(|p| p.into_inner());
            map.entry(to.to_string()).or_default().clone()
        });
        c.fetch_add(1, Relaxed);
        Outstanding(c)
    }

    /// The counters, read-locked. Poisoning only records a panic
    /// elsewhere; the counts stay valid.
    fn counters(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<AtomicUsize>>> {
        self.outstanding.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends `req` to node `to` and waits at most `timeout` for its answer.
pub async fn call(
    node: &Node,
    to: &str,
    req: Request,
    timeout: Duration,
) -> Result<Response, PeerError> {
    let Some(net) = node.peers.net() else {
        return Err(PeerError::NotSent("internode transport not started".into()));
    };
    let Some(addr) = node.cluster.addr_of(to) else {
        return Err(PeerError::NotSent(format!("no known address for {to}")));
    };
    let _counted = node.peers.start_call(to);
    net.call(&addr, req, timeout).await.map_err(|e| match e {
        CallError::Unreachable(why) => PeerError::NotSent(format!("unreachable: {why}")),
        CallError::QueueFull => PeerError::NotSent(format!("send queue to {to} is full")),
        CallError::Stopped => PeerError::NotSent("this node is shutting down".into()),
        CallError::Timeout => PeerError::Timeout(timeout.as_millis() as u64),
        CallError::ConnectionLost => PeerError::Lost("connection lost before the answer".into()),
        CallError::Remote(r) => PeerError::Remote(r),
    })
}

/// The transport's handler of requests from other nodes.
pub struct RpcHandler(pub Weak<Node>);

impl Handler for RpcHandler {
    fn handle(
        &self,
        _from: &PeerInfo,
        req: Request,
    ) -> Pin<Box<dyn Future<Output = Result<Response, RemoteError>> + Send + 'static>> {
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
            if let Err(e) = call(&node, &peer, req, ANNOUNCE_TIMEOUT).await {
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
            if let Err(e) = call(&node, &peer, bucket_request(r), ANNOUNCE_TIMEOUT).await {
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
            match call(&node, &h.target, req, HINT_DELIVERY_TIMEOUT).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_count_as_outstanding_until_they_end() {
        let p = Peers::default();
        assert_eq!(p.outstanding("n2"), 0);
        let a = p.start_call("n2");
        let b = p.start_call("n2");
        let c = p.start_call("n3");
        assert_eq!((p.outstanding("n2"), p.outstanding("n3")), (2, 1));
        drop(a);
        assert_eq!(p.outstanding("n2"), 1);
        drop((b, c));
        assert_eq!((p.outstanding("n2"), p.outstanding("n3")), (0, 0));
        let mut all = p.all_outstanding();
        all.sort();
        assert_eq!(all, [("n2".to_string(), 0), ("n3".to_string(), 0)]);
    }
}
