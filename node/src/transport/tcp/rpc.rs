//! Request/response RPC over the internode transport.
//!
//! Replication, quorum reads and forwarded writes need one answer per
//! request, within a deadline, from a specific peer. They ride the
//! connections gossip already uses (one per peer and direction,
//! authenticated by the handshake) instead of opening their own: a request
//! goes out as `Envelope::Request` on the connection this node dialed, and
//! its answer comes back as `Envelope::Response` on that same connection,
//! matched by an id unique per [`Net`], so any number of calls share it.
//!
//! * **Every ending is typed and reported at once** ([`CallError`]). A
//!   coordinator must tell "never delivered" (try another replica, hint
//!   it) from "may have been applied", and should not sit out a timeout
//!   when the transport already knows there will be no answer: a failed
//!   connect fails the calls queued for that peer, a lost connection the
//!   calls sent on it, a shutdown all of them.
//! * **Bounded everywhere.** A full send queue is an error, not a wait;
//!   the callee runs at most [`Config::max_inbound`] handlers and answers
//!   `Overloaded` beyond that instead of queueing work whose callers will
//!   have given up; a full reply queue drops the answer (the caller times
//!   out) rather than buffering without limit.
//! * **The deadline travels with the request** (`timeout_ms`), so the
//!   callee abandons work nobody waits for any more. It is a duration, not
//!   an instant, because the nodes' clocks are not synchronised; the
//!   callee's deadline therefore ends a little after the caller's.
//! * **A request read after its caller gave up is not run**: the frame
//!   says when the call was made on the caller's monotonic clock, and the
//!   callee measures the request's lateness on its own
//!   ([`super::lateness`]), so a node resumed from a pause does not apply
//!   the stale writes queued in its sockets (their callers answered 504
//!   and hinted them; a forwarded write that timed out is the client's to
//!   retry), and a skewed wall clock changes nothing.
//!
//! * **Size is per call.** A request that exceeds the frame limit fails
//!   its own call before it is sent ([`CallError::TooLarge`]), and an
//!   answer that would is replaced by [`RemoteError::TooLarge`]: neither
//!   touches the connection the other calls share.
//!
//! Caveats: a handler that panics sends no answer (its caller times out);
//! [`CallError::Stopped`] does not say whether a request already sent was
//! applied, since nobody on a stopping node is left to act on it.
//!
//! [`Config::max_inbound`]: super::Config::max_inbound

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::{Envelope, Net, NetError, Outgoing, PeerInfo, lock};
use crate::proto::{RemoteError, Request, Response};
use crate::transport::Handler;

/// Why a [`Net::call`] got no answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The connect or the handshake failed, now or in the last attempt:
    /// the request was never delivered.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer's send queue is full: the request was never delivered.
    #[error("send queue full")]
    QueueFull,
    /// No answer within the deadline; the request may still have been
    /// applied.
    #[error("timed out")]
    Timeout,
    /// The request was sent, then the connection dropped before the
    /// answer; it may have been applied.
    #[error("connection lost")]
    ConnectionLost,
    /// The peer answered with an error.
    #[error("{0}")]
    Remote(RemoteError),
    /// This node's transport is shutting down.
    #[error("the internode transport has stopped")]
    Stopped,
    /// The request encodes to more than the frame limit: never sent.
    #[error("request of {bytes} bytes exceeds the internode frame limit of {limit}")]
    TooLarge {
        /// Its encoded size.
        bytes: u64,
        /// The frame limit.
        limit: u64,
    },
}

impl CallError {
    /// Whether the peer may have applied the request despite the error, so
    /// that a retry or another replica's answer cannot be assumed to be the
    /// only effect. A remote `timeout` from a forwarded write counts: the
    /// replica coordinator stores the write before waiting for acks.
    pub fn maybe_applied(&self) -> bool {
        match self {
            CallError::Timeout | CallError::ConnectionLost => true,
            CallError::Remote(RemoteError::Deadline) => true,
            // The handler ran; only its answer could not travel.
            CallError::Remote(RemoteError::TooLarge { .. }) => true,
            CallError::Remote(RemoteError::Quorum(e)) => {
                matches!(e, crate::failure::QuorumError::Timeout { .. })
            }
            _ => false,
        }
    }

    /// A few words for a 503/504 body's per-replica failure list; the
    /// `Display` text has the details.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Unreachable(_) => "unreachable",
            CallError::QueueFull => "send queue full",
            CallError::Timeout => "timeout",
            CallError::ConnectionLost => "connection lost",
            CallError::Stopped => "stopping",
            CallError::TooLarge { .. } => "request too large",
            CallError::Remote(e) => match e {
                RemoteError::Storage(_) => "storage error",
                RemoteError::Overloaded(_) => "overloaded",
                RemoteError::Deadline => "deadline passed",
                RemoteError::Bad(_) => "bad request",
                RemoteError::Quorum(_) => "replica coordinator error",
                RemoteError::TooLarge { .. } => "answer too large",
                RemoteError::RequestTooLarge { .. } => "request too large",
                RemoteError::KeyTooLarge { .. } => "key too large",
            },
        }
    }
}

type Outcome = Result<Response, CallError>;

/// The calls waiting for an answer, by request id.
#[derive(Default)]
pub(super) struct Calls {
    next_id: AtomicU64,
    next_conn: AtomicU64,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    pending: HashMap<u64, Pending>,
    /// Set by shutdown, under the same lock as `pending`, so that no call
    /// can register after the table was emptied and wait forever.
    stopped: bool,
}

struct Pending {
    /// The outbound connection the request was written to, once written:
    /// only its loss, and only an answer on it, may end the call.
    sent_on: Option<u64>,
    /// When the call was made, which its request's lateness counts from.
    made: Instant,
    done: oneshot::Sender<Outcome>,
}

impl Calls {
    pub(super) fn register(&self) -> Result<(u64, oneshot::Receiver<Outcome>), CallError> {
        let id = self.next_id.fetch_add(1, Relaxed);
        let (done, rx) = oneshot::channel();
        let mut t = lock(&self.table);
        if t.stopped {
            return Err(CallError::Stopped);
        }
        t.pending.insert(
            id,
            Pending {
                sent_on: None,
                made: Instant::now(),
                done,
            },
        );
        Ok((id, rx))
    }

    /// A fresh id for an outbound connection.
    pub(super) fn connection(&self) -> u64 {
        self.next_conn.fetch_add(1, Relaxed)
    }

    /// Records that request `id` is being written on `conn`; returns when
    /// its call was made, or `None` when its caller is gone (timed out),
    /// so that it need not be sent.
    pub(super) fn mark_sent(&self, id: u64, conn: u64) -> Option<Instant> {
        let mut t = lock(&self.table);
        let p = t.pending.get_mut(&id)?;
        p.sent_on = Some(conn);
        Some(p.made)
    }

    /// Ends call `id` with `outcome`, if it still waits.
    pub(super) fn fail(&self, id: u64, outcome: CallError) {
        if let Some(p) = lock(&self.table).pending.remove(&id) {
            let _ = p.done.send(Err(outcome));
        }
    }

    /// Delivers the answer to `id` that arrived on `conn`.
    pub(super) fn answer(&self, id: u64, conn: u64, result: Result<Response, RemoteError>) {
        let mut t = lock(&self.table);
        match t.pending.get(&id) {
            Some(p) if p.sent_on == Some(conn) => {
                if let Some(p) = t.pending.remove(&id) {
                    let _ = p.done.send(result.map_err(CallError::Remote));
                }
            }
            // Its caller timed out, or a confused peer: nobody to tell.
            _ => debug!(id, conn, "dropping a response to no pending call"),
        }
    }

    /// Fails every call sent on `conn`, which is gone.
    pub(super) fn lost(&self, conn: u64) {
        let mut t = lock(&self.table);
        let ids: Vec<u64> = t
            .pending
            .iter()
            .filter(|(_, p)| p.sent_on == Some(conn))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = t.pending.remove(&id) {
                let _ = p.done.send(Err(CallError::ConnectionLost));
            }
        }
    }

    /// Fails every call, and any later one, with `Stopped`.
    pub(super) fn stop(&self) {
        let mut t = lock(&self.table);
        t.stopped = true;
        for (_, p) in t.pending.drain() {
            let _ = p.done.send(Err(CallError::Stopped));
        }
    }

    fn forget(&self, id: u64) {
        lock(&self.table).pending.remove(&id);
    }

    fn len(&self) -> usize {
        lock(&self.table).pending.len()
    }
}

/// Removes a call's entry however its caller stops waiting: answered
/// (already gone), timed out, or the caller's future dropped.
struct Forget<'a> {
    calls: &'a Calls,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.calls.forget(self.id);
    }
}

impl Net {
    /// Sends `req` to the peer listening at `to` and waits for its answer,
    /// at most `timeout` (which the peer also gets, to give up on its
    /// side).
    pub async fn call(
        self: &Arc<Self>,
        to: &str,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        self.counters.calls.fetch_add(1, Relaxed);
        let result = self.call_once(to, req, timeout).await;
        match &result {
            Ok(_) => {}
            Err(CallError::Timeout) => {
                self.counters.call_timeouts.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.counters.call_failures.fetch_add(1, Relaxed);
                debug!(peer = to, error = %e, "internode call failed");
            }
        }
        result
    }

    async fn call_once(
        self: &Arc<Self>,
        to: &str,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let (id, rx) = self.rpc.register()?;
        let _forget = Forget {
            calls: &self.rpc,
            id,
        };
        let env = Envelope::Request {
            id,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            body: req,
            // Stamped as it is written, when the connection is known.
            made_ms: super::MadeMs(0),
        };
        self.push(to, env, true).map_err(|e| match e {
            NetError::QueueFull(_) => CallError::QueueFull,
            NetError::Stopped => CallError::Stopped,
            NetError::Unreachable(why) => CallError::Unreachable(why),
            NetError::TooLarge { bytes, limit } => {
                self.counters.calls_too_large.fetch_add(1, Relaxed);
                CallError::TooLarge { bytes, limit }
            }
            e => CallError::Unreachable(e.to_string()),
        })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            // The entry went without an answer: only the transport itself
            // going away does that.
            Ok(Err(_)) => Err(CallError::Stopped),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// Calls waiting for an answer (for metrics, and to check nothing
    /// leaks).
    pub fn pending_calls(&self) -> usize {
        self.rpc.len()
    }

    /// Serves a request that arrived on an accepted connection; the answer
    /// goes to that connection's `reply` queue.
    pub(super) fn serve(
        self: &Arc<Self>,
        handler: &Arc<dyn Handler>,
        from: &PeerInfo,
        id: u64,
        timeout_ms: u32,
        body: Request,
        reply: &mpsc::Sender<Outgoing>,
    ) {
        self.counters.inbound_requests.fetch_add(1, Relaxed);
        let Ok(permit) = self.inbound.clone().try_acquire_owned() else {
            self.counters.inbound_overloaded.fetch_add(1, Relaxed);
            let busy = RemoteError::Overloaded(format!(
                "{} internode requests already in progress",
                self.config.max_inbound
            ));
            return self.answer(reply, id, Err(busy));
        };
        let work = handler.handle(&from.node, body);
        let deadline = Duration::from_millis(timeout_ms.into());
        let (net, reply) = (self.clone(), reply.clone());
        let mut stop = self.stopped();
        tokio::spawn(async move {
            let result = tokio::select! {
                r = tokio::time::timeout(deadline, work) => r.unwrap_or(Err(RemoteError::Deadline)),
                _ = stop.wait_for(|s| *s) => return,
            };
            drop(permit);
            net.answer(&reply, id, result);
        });
    }

    /// Queues the answer to request `id` on `reply`; an answer over the
    /// frame limit becomes [`RemoteError::TooLarge`], for its call alone.
    pub(super) fn answer(
        &self,
        reply: &mpsc::Sender<Outgoing>,
        id: u64,
        result: Result<Response, RemoteError>,
    ) {
        let encoded = match self.encode(&Envelope::Response { id, result }) {
            Err(NetError::TooLarge { bytes, limit }) => {
                self.counters.responses_too_large.fetch_add(1, Relaxed);
                debug!(id, bytes, limit, "internode answer over the frame limit");
                let result = Err(RemoteError::TooLarge { bytes, limit });
                self.encode(&Envelope::Response { id, result })
            }
            encoded => encoded,
        };
        let out = match encoded {
            Ok(out) => out,
            Err(e) => {
                // The caller times out.
                self.counters.responses_dropped.fetch_add(1, Relaxed);
                return debug!(id, error = %e, "internode answer not encodable");
            }
        };
        if let Err(e) = reply.try_send(out) {
            // The caller will time out (or has lost the connection already).
            self.counters.responses_dropped.fetch_add(1, Relaxed);
            let full = matches!(e, mpsc::error::TrySendError::Full(_));
            debug!(id, full, "internode response dropped");
        }
    }
}
