//! The RPC service: what this node does with other nodes' requests. It
//! routes each [`Request`] to the service that owns the work — the
//! coordinator (forwarded writes, replica reads and merges), the repairer
//! (Merkle trees and entry pages), the change driver (streams), the
//! bucket catalogue — and is the [`Handler`] the transport serves with,
//! handed to it once every service exists.

use std::future::Future;
use std::sync::Arc;

use crate::buckets::{BucketRecord, Buckets};
use crate::cluster::Cluster;
use crate::coordinator::Coordinator;
use crate::hints::Hints;
use crate::proto::{NodeFigures, RemoteError, Request, Response};
use crate::repair::Repairer;
use crate::replica::Replica;
use crate::stream::ChangeDriver;
use crate::tasks::Tasks;
use crate::transport::{Answer, Handler};

/// Answers other nodes' requests.
pub struct Rpc {
    /// Forwarded writes, replica reads, replication.
    pub coordinator: Arc<Coordinator>,
    /// Anti-entropy's trees and pages.
    pub repairer: Arc<Repairer>,
    /// Streams of cluster changes.
    pub changes: Arc<ChangeDriver>,
    /// Bucket properties announced by other nodes.
    pub buckets: Arc<Buckets>,
    /// The tokens this node knows of a member.
    pub cluster: Arc<Cluster>,
    /// This node's copy, counted for [`Request::Figures`].
    pub replica: Arc<Replica>,
    /// Hints held, counted for [`Request::Figures`].
    pub hints: Arc<Hints>,
    /// Tracks every request's work, so that shutdown waits for it.
    pub tasks: Tasks,
}

/// This node's own figures, as [`Request::Figures`] answers them.
pub fn figures(replica: &Replica, hints: &Hints) -> NodeFigures {
    let (keys, bytes) = replica.stored();
    NodeFigures {
        keys,
        bytes,
        hints_held: hints.pending().values().sum(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

impl Rpc {
    fn answer(
        &self,
        work: impl Future<Output = Result<Response, RemoteError>> + Send + 'static,
    ) -> Answer {
        Box::pin(self.tasks.track(work))
    }
}

impl Handler for Rpc {
    fn handle(&self, _from: &str, req: Request) -> Answer {
        match req {
            Request::Ping => self.answer(async { Ok(Response::Pong) }),
            Request::Write(w) => {
                let c = self.coordinator.clone();
                self.answer(async move { c.serve_forwarded(w).await })
            }
            Request::Replicate {
                bucket,
                key,
                object,
                hint_for,
            } => {
                let c = self.coordinator.clone();
                self.answer(async move {
                    c.serve_replicate(&bucket, &key, &object, hint_for.as_deref())
                        .await
                })
            }
            Request::Read {
                bucket,
                key,
                digest,
            } => {
                let c = self.coordinator.clone();
                self.answer(async move { c.serve_read(&bucket, &key, digest).await })
            }
            Request::Bucket {
                name,
                props,
                has_data,
                updated_ms,
            } => {
                let buckets = self.buckets.clone();
                self.answer(async move {
                    let record = BucketRecord {
                        name,
                        props,
                        has_data,
                        updated_ms,
                    };
                    buckets
                        .apply_remote(record)
                        .await
                        .map_err(|e| RemoteError::Storage(e.to_string()))?;
                    Ok(Response::Ack)
                })
            }
            Request::Tree {
                range,
                depth,
                filter,
            } => {
                let r = self.repairer.clone();
                self.answer(async move {
                    r.serve_tree(range, depth, filter)
                        .await
                        .map(Response::Tree)
                        .map_err(|e| RemoteError::Storage(e.to_string()))
                })
            }
            Request::Entries {
                range,
                after,
                limit,
                max_bytes,
            } => {
                let r = self.repairer.clone();
                self.answer(async move {
                    r.serve_entries(range, after, limit, max_bytes)
                        .await
                        .map(|(entries, next)| Response::Entries { entries, next })
                        .map_err(|e| RemoteError::Storage(e.to_string()))
                })
            }
            Request::Stream(s) => {
                let changes = self.changes.clone();
                self.answer(async move { changes.serve(s).await.map(Response::Stream) })
            }
            Request::NodeTokens { node } => {
                let tokens = crate::tokens::known_tokens(&self.cluster.members(), &node);
                self.answer(async move { Ok(Response::Tokens(tokens)) })
            }
            Request::Figures => {
                let f = figures(&self.replica, &self.hints);
                self.answer(async move { Ok(Response::Figures(f)) })
            }
        }
    }
}
