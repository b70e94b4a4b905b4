//! The transport seam: how a node's services reach other nodes, and how
//! other nodes' requests reach those services.
//!
//! Services speak node ids and [`Request`]s. They call other nodes through
//! an `Arc<dyn` [`Peers`]`>` and answer other nodes through a [`Handler`],
//! and they never see sockets. Two transports implement the seam:
//!
//! * [`tcp`], the real one: one authenticated TCP connection per peer and
//!   direction, length-delimited MessagePack frames, requests multiplexed
//!   by id, gossip on the same connections (see its module docs).
//! * [`memory`], an in-process network for the simulation harness and
//!   unit tests: every node of a simulated cluster in one process, with
//!   per-directed-pair delays, drops and partitions, under tokio's paused
//!   clock so that a scenario of minutes runs in milliseconds.
//!
//! Binding a transport yields everything at once: the [`Peers`] handle for
//! outbound calls, the gossip transport, and the request inbox
//! ([`Requests`]) that starts serving when the node hands it its handler.
//! Nothing is attached to a transport after it is built; the node wires
//! its services in dependency order and gives the finished RPC service to
//! [`Requests::serve`] last.
//!
//! # What a caller learns
//!
//! [`PeerError`] keeps the one distinction a coordinator needs: whether the
//! request may have been applied (a timeout, a lost connection) or
//! certainly was not (unreachable, a full queue, an overloaded peer), so
//! that it knows whether to try another replica or to count a maybe.

#[cfg(test)]
pub mod memory;
pub mod tcp;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::proto::{RemoteError, Request, Response};

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

/// A call's answer, as the future a [`Peers`] implementation returns.
pub type Call<'a> = Pin<Box<dyn Future<Output = Result<Response, PeerError>> + Send + 'a>>;

/// A served request's answer, as the future a [`Handler`] returns.
pub type Answer = Pin<Box<dyn Future<Output = Result<Response, RemoteError>> + Send + 'static>>;

/// The other nodes, as this node's services call them.
pub trait Peers: Send + Sync + 'static {
    /// Sends `req` to node `to` and waits at most `timeout` for its
    /// answer (the peer gets the same deadline, to give up on its side).
    fn call<'a>(&'a self, to: &'a str, req: Request, timeout: Duration) -> Call<'a>;

    /// Calls to `to` that have not ended yet: how far behind it is with
    /// this node's requests (the coordinator's read order).
    fn outstanding(&self, to: &str) -> usize;

    /// [`Peers::outstanding`] of every node this one has called.
    fn all_outstanding(&self) -> Vec<(String, usize)>;

    /// Says that gossip heard from `node` again, so that a transport
    /// backing off from it may try at once.
    fn peer_is_back(&self, node: &str);
}

/// What serves the requests other nodes send this one.
pub trait Handler: Send + Sync + 'static {
    /// Answers `req` from node `from`. It is called on the transport's
    /// own task, so it should only set up the work; the work belongs in
    /// the returned future, which the transport runs in a task of its own
    /// and drops when the request's deadline passes or the transport stops
    /// (so it must tolerate being cancelled at any `.await`).
    fn handle(&self, from: &str, req: Request) -> Answer;
}

/// A bound transport's request inbox: nothing is served until the node
/// hands it the [`Handler`] that answers.
pub trait Requests: Send {
    /// Starts serving other nodes' requests with `handler`.
    fn serve(self: Box<Self>, handler: Arc<dyn Handler>);
}

/// Counts the calls to each node that have not ended yet, for
/// [`Peers::outstanding`]; shared by the transports.
#[derive(Default)]
pub struct Outstanding {
    /// Per node id (entries stay once made: one per node ever called).
    counts: RwLock<HashMap<String, Arc<AtomicUsize>>>,
}

/// Counts one call as outstanding until dropped, however the call ends
/// (answered, failed, timed out, or its caller gone).
pub struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Outstanding {
    /// Calls to `to` not ended yet.
    pub fn of(&self, to: &str) -> usize {
        self.counts().get(to).map_or(0, |c| c.load(Relaxed))
    }

    /// Every node's count.
    pub fn all(&self) -> Vec<(String, usize)> {
        self.counts()
            .iter()
            .map(|(k, c)| (k.clone(), c.load(Relaxed)))
            .collect()
    }

    /// Starts counting a call to `to`.
    pub fn start(&self, to: &str) -> Counted {
        // The read lock is released at the end of the statement, before
        // the first call to a node takes the write lock.
        let found = self.counts().get(to).cloned();
        let c = found.unwrap_or_else(|| {
            let mut map = self.counts.write().unwrap_or_else(|p| p.into_inner());
            map.entry(to.to_string()).or_default().clone()
        });
        c.fetch_add(1, Relaxed);
        Counted(c)
    }

    /// The counters, read-locked. Poisoning only records a panic
    /// elsewhere; the counts stay valid.
    fn counts(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<AtomicUsize>>> {
        self.counts.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_count_as_outstanding_until_they_end() {
        let p = Outstanding::default();
        assert_eq!(p.of("n2"), 0);
        let a = p.start("n2");
        let b = p.start("n2");
        let c = p.start("n3");
        assert_eq!((p.of("n2"), p.of("n3")), (2, 1));
        drop(a);
        assert_eq!(p.of("n2"), 1);
        drop((b, c));
        assert_eq!((p.of("n2"), p.of("n3")), (0, 0));
        let mut all = p.all();
        all.sort();
        assert_eq!(all, [("n2".to_string(), 0), ("n3".to_string(), 0)]);
    }
}
