//! Internode transport: the `--listen` port, carrying gossip and
//! request/response RPC between authenticated peers.
//!
//! # What it is
//!
//! * **One persistent outbound connection per peer** (`peer.rs`), opened
//!   lazily on the first message for that address, re-opened with
//!   exponential backoff (100 ms doubling to 5 s) when it fails. Each peer
//!   has a bounded send queue ([`Config::queue`]); neither [`Net::send`]
//!   nor [`Net::call`] waits for room: a full queue drops a gossip message
//!   and counts it, which is right for gossip (the next round repeats
//!   whatever is still missing), and fails a call with
//!   [`CallError::QueueFull`].
//! * **A listener** that accepts connections from peers; every accepted
//!   connection can also *write* (a per-connection reply queue), which is
//!   where RPC responses go, multiplexed by request id.
//! * **RPC** ([`rpc`]): [`Net::call`] sends a [`crate::proto::Request`]
//!   and waits for its answer; the [`Handler`] given to
//!   [`Incoming::serve`] serves the requests other nodes send.
//! * **Binding** ([`Net::bind`]) gives the transport, its gossip inbox
//!   and its [`Incoming`] connections, which are accepted only once the
//!   node serves them with its finished handler. Until then a peer's
//!   connection waits in the listen backlog (its handshake deadline
//!   bounds how long), and its requests are served when the node is ready
//!   instead of being refused.
//! * **Frames** ([`frame`]): a 4-byte big-endian length, at most
//!   [`Config::max_frame`] bytes, around MessagePack ([`Envelope`] via
//!   rmp-serde). The limit follows `--max-key-bytes` ([`max_frame_for`]),
//!   so that any key a node accepted fits one frame. Sizes are checked when
//!   a frame is queued, so an oversize one fails only its own call
//!   ([`CallError::TooLarge`]), or becomes a
//!   [`proto::RemoteError::TooLarge`] answer; one that arrives anyway (a
//!   peer with a larger limit) is skipped and counted, and the connection
//!   stays up.
//! * **A handshake before anything else** ([`handshake`]): protocol
//!   version, cluster name, node id, and a mutual HMAC-SHA256
//!   challenge-response over the cluster secret when one is configured. A
//!   connection that fails it is closed; nothing it sent is processed.
//!   Refusals are logged at `warn` on both sides, with the reason: once a
//!   minute per peer address and kind of reason, within a node-wide budget
//!   ([`refusals`]).
//! * **Bounds against peers not yet authenticated**: at most
//!   [`Config::max_conns_per_addr`] connections per remote address and
//!   [`Config::max_conns`] in all (more are closed at accept, before the
//!   handshake); what a refused peer claims is remembered and logged only
//!   cut to a bounded length, in a bounded table ([`refusals`]).
//!
//! # Why this shape
//!
//! One TCP connection per peer with length-delimited
//! MessagePack frames over HTTP between nodes, for throughput. Gossip and
//! RPC share the connection and the handshake: the [`Envelope`] enum is the
//! only thing that grows with new kinds of traffic, and a node that
//! receives a variant it does not know drops that frame (and logs it at
//! debug) instead of the connection.
//!
//! Each direction between two nodes uses its own connection (as Cassandra
//! does): a node sends on connections it dialed and receives on those it
//! accepted, so two nodes dialing each other at once never have to decide
//! which connection wins. Gossip replies go to the sender's announced
//! listen address through the replier's own outbound connection; an RPC
//! response is the exception, going back on the connection its request came
//! on, so that it meets the caller's pending call on the same connection.
//!
//! # Implementation caveats
//!
//! * **Mutual TLS**, when `--internode-ca` is set ([`tls`]): every
//!   connection runs inside TLS 1.3 before the handshake, each side's
//!   certificate verified against the CA, and the handshake refuses a peer
//!   whose certificate does not name the id it claims.
//!
//! * Without TLS, traffic is in clear: the secret authenticates peers but
//!   hides nothing, and any holder of the secret can claim any id.
//! * Without a secret or TLS, a peer's claimed id and address are not
//!   verified.
//! * The advertised address is `--listen` itself: a node listening on
//!   `0.0.0.0` would advertise an undialable address (no `--advertise` yet).
//! * Messages queued while a peer is unreachable are dropped when the
//!   connection attempt fails (they would be stale by the next attempt);
//!   calls among them fail with [`CallError::Unreachable`], and so do calls
//!   made during the backoff that follows, so a coordinator learns at once
//!   that a replica is down. When gossip hears from the peer again,
//!   [`Net::peer_is_back`] ends the backoff at once; without that signal a
//!   returning peer is called again only after the backoff (at most 5 s).

#[cfg(test)]
mod decode_tests;
pub mod frame;
pub mod handshake;
pub mod lateness;
#[cfg(test)]
mod pause_tests;
mod peer;
mod peers;
mod refusals;
pub mod rpc;
#[cfg(test)]
mod rpc_tests;
pub mod tls;
#[cfg(test)]
mod tls_tests;
mod wire;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use quorumkv_gossip::{Addr, Message};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::codec::Framed;
use tokio_util::either::Either;
use tracing::{debug, warn};

pub use frame::{Frame, FrameCodec};
pub use handshake::{Identity, PeerInfo};
pub use peers::{GossipTransport, TcpPeers};
pub use rpc::CallError;
pub(crate) use wire::Outgoing;
pub use wire::{Envelope, MadeMs, Refusal};

use super::Handler;
use crate::proto;

/// The internode protocol version, exchanged in the handshake. Peers of
/// another version are refused. 2: versions travel encoded
/// ([`proto::Encoded`]) in replication requests and read answers. 3: a
/// forwarded write's context and consistency travel typed, and a replica
/// coordinator's failure as a [`crate::failure::QuorumError`]. 4: frames
/// are sized from `--max-key-bytes` ([`max_frame_for`]); an answer too
/// large for a frame is [`proto::RemoteError::TooLarge`]; a write over
/// `--max-key-bytes` is `QuorumError::KeyTooLarge` (a replica's refusal to
/// merge past it `RemoteError::KeyTooLarge`); an anti-entropy
/// `Request::Entries` carries a byte budget (`max_bytes`). 5: a request
/// carries when its call was made on the sender's monotonic clock
/// (`made_ms`, eight bytes at the end of its frame) instead of the
/// caller's wall-clock deadline, so a skewed clock no longer makes a node
/// drop its peers' requests ([`lateness`]).
pub const PROTOCOL_VERSION: u16 = 6;

/// Largest handshake frame accepted (before the peer is authenticated).
const HANDSHAKE_MAX_FRAME: usize = 64 << 10;

/// What a frame may hold besides one key's stored versions: the envelope,
/// bucket and key names, a forwarded write's value beside its context, a
/// trace, and the part of a stream chunk or anti-entropy page that shares
/// the frame with a large key (their byte budgets are well below this).
pub const ENVELOPE_ALLOWANCE: usize = 8 << 20;

/// The frame limit of a cluster whose keys hold at most `max_key_bytes`
/// (their stored versions, all siblings): one key plus
/// [`ENVELOPE_ALLOWANCE`], within the 4-byte length prefix.
pub fn max_frame_for(max_key_bytes: u64) -> usize {
    usize::try_from(max_key_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(ENVELOPE_ALLOWANCE)
        .min(u32::MAX as usize)
}

/// What can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket error (refused, reset, ...).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// A frame that cannot be decoded.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// A message that cannot be encoded (a bug).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A step took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The handshake failed.
    #[error("handshake refused: {0}")]
    Refused(Refusal),
    /// The message encodes to more than the frame limit; not sent.
    #[error("a message of {bytes} bytes exceeds the internode frame limit of {limit}")]
    TooLarge {
        /// Its encoded size.
        bytes: u64,
        /// The frame limit.
        limit: u64,
    },
    /// The peer's send queue is full; the message was dropped.
    #[error("send queue to {0} is full")]
    QueueFull(String),
    /// The transport has shut down.
    #[error("the internode transport has stopped")]
    Stopped,
    /// The last attempt to connect to the peer failed, and the backoff
    /// before the next one has not passed.
    #[error("{0}")]
    Unreachable(String),
}

/// Transport settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Who this node is, for the handshake.
    pub identity: Identity,
    /// Largest frame after the handshake, in bytes; default
    /// [`max_frame_for`] the default `--max-key-bytes` (4 MiB). Must
    /// exceed the gossip message cap (1 MiB). Both ends of a connection
    /// must use the same: see [`frame`].
    pub max_frame: usize,
    /// Messages queued per peer before new ones are dropped; default 1024.
    pub queue: usize,
    /// TCP connect deadline; default 2 s.
    pub connect_timeout: Duration,
    /// Handshake deadline; default 5 s.
    pub handshake_timeout: Duration,
    /// First reconnect delay; doubles per failure; default 100 ms.
    pub backoff_min: Duration,
    /// Longest reconnect delay; default 5 s.
    pub backoff_max: Duration,
    /// Inbound RPC requests served at once; beyond that they are answered
    /// `Overloaded`; default 4096.
    pub max_inbound: usize,
    /// Inbound connections open at once from one remote address, counted
    /// from accept (so before the handshake); default 64. Each peer holds
    /// one, and nodes on one machine share an address.
    pub max_conns_per_addr: u32,
    /// Inbound connections open at once in all; default 4096.
    pub max_conns: u32,
    /// Mutual TLS on every connection (`None`: plain TCP).
    pub tls: Option<tls::InternodeTls>,
}

impl Config {
    /// Defaults for `identity`.
    pub fn new(identity: Identity) -> Config {
        Config {
            identity,
            max_frame: max_frame_for(4 << 20),
            queue: 1024,
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_inbound: 4096,
            max_conns_per_addr: 64,
            max_conns: 4096,
            tls: None,
        }
    }
}

/// Counters of the transport, for logs and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames written.
    pub sent: AtomicU64,
    /// Batches of frames written (one flush each): `sent / writes` is
    /// how many frames share a write.
    pub writes: AtomicU64,
    /// Frames received and dispatched.
    pub received: AtomicU64,
    /// Messages dropped because a send queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Messages dropped because the peer could not be reached.
    pub dropped_unreachable: AtomicU64,
    /// Received messages dropped because the consumer lagged.
    pub dropped_inbound: AtomicU64,
    /// Handshakes refused, by either side.
    pub refused: AtomicU64,
    /// Outbound connections established.
    pub connects: AtomicU64,
    /// Requests read later than their timeout (their caller gave up),
    /// answered `Deadline` without being run.
    pub inbound_expired: AtomicU64,
    /// RPC calls made.
    pub calls: AtomicU64,
    /// Calls that got no answer within their timeout.
    pub call_timeouts: AtomicU64,
    /// Calls that failed otherwise (unreachable, queue full, connection
    /// lost, remote error, stopped).
    pub call_failures: AtomicU64,
    /// RPC requests received.
    pub inbound_requests: AtomicU64,
    /// Requests answered `Overloaded` because `max_inbound` were in
    /// progress.
    pub inbound_overloaded: AtomicU64,
    /// Responses dropped because their connection's reply queue was full
    /// or the connection was gone.
    pub responses_dropped: AtomicU64,
    /// Inbound connections closed at accept: their address (or the node)
    /// had as many open as allowed.
    pub conns_refused: AtomicU64,
    /// Frames received over the frame limit, skipped unread.
    pub frames_skipped: AtomicU64,
    /// Calls refused before sending: the request exceeded the frame limit.
    pub calls_too_large: AtomicU64,
    /// Answers replaced by `TooLarge`: they exceeded the frame limit.
    pub responses_too_large: AtomicU64,
}

/// Where received gossip goes: `(sender's listen address, message)`.
pub type GossipInbox = mpsc::Receiver<(Addr, Message)>;

/// Gossip messages buffered between the transport and the driver.
const GOSSIP_INBOX: usize = 1024;

/// The running transport.
pub struct Net {
    config: Config,
    peers: Mutex<HashMap<String, Link>>,
    gossip: mpsc::Sender<(Addr, Message)>,
    counters: Counters,
    /// Which refusals are logged at `warn` (bounded: [`refusals`]).
    refusals: Mutex<refusals::RefusalLog>,
    /// Inbound connections open, per remote address.
    conns: Mutex<refusals::ConnCounts>,
    stop: watch::Sender<bool>,
    /// Calls waiting for their answers.
    rpc: rpc::Calls,
    /// Permits for inbound requests in progress ([`Config::max_inbound`]).
    inbound: Arc<Semaphore>,
}

/// The way to one peer's task (`peer::run`).
struct Link {
    tx: mpsc::Sender<Outgoing>,
    /// Why the last connection attempt failed, while its backoff lasts:
    /// calls fail at once instead of queueing for an attempt seconds away.
    /// Its lock also makes "check, then queue" atomic with the peer task's
    /// "mark down, then drain the queue", so no call slips in between and
    /// waits for the next attempt.
    down: Arc<Mutex<Option<String>>>,
    /// Cuts the backoff short ([`Net::peer_is_back`]).
    retry: Arc<tokio::sync::Notify>,
}

/// Locks `m`, ignoring poisoning: every critical section here leaves its
/// data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The framing of `stream` for a handshake: frames up to `max` bytes, a
/// larger one an error ([`FrameCodec::strict`]).
pub fn framed<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    stream: S,
    max: usize,
) -> Framed<S, FrameCodec> {
    Framed::new(stream, FrameCodec::strict(max))
}

/// A bound listener whose connections are accepted once the node serves
/// them ([`Incoming::serve`]).
pub struct Incoming {
    net: Arc<Net>,
    listener: TcpListener,
}

impl super::Requests for Incoming {
    fn serve(self: Box<Self>, handler: Arc<dyn Handler>) {
        Incoming::serve(*self, handler);
    }
}

impl Incoming {
    /// Starts accepting peers' connections; `handler` answers their
    /// requests.
    pub fn serve(self, handler: Arc<dyn Handler>) {
        tokio::spawn(accept_loop(self.net, self.listener, handler));
    }
}

impl Net {
    /// The transport over `listener`: outbound calls and gossip work at
    /// once; peers' connections are accepted once [`Incoming::serve`]
    /// runs. Returns the stream of gossip messages it receives too.
    pub fn bind(config: Config, listener: TcpListener) -> (Arc<Net>, GossipInbox, Incoming) {
        let (gossip, inbox) = mpsc::channel(GOSSIP_INBOX);
        let permits = config.max_inbound.min(Semaphore::MAX_PERMITS);
        let net = Arc::new(Net {
            config,
            peers: Mutex::new(HashMap::new()),
            gossip,
            counters: Counters::default(),
            refusals: Mutex::new(refusals::RefusalLog::default()),
            conns: Mutex::new(refusals::ConnCounts::default()),
            stop: watch::channel(false).0,
            rpc: rpc::Calls::default(),
            inbound: Arc::new(Semaphore::new(permits)),
        });
        let incoming = Incoming {
            net: net.clone(),
            listener,
        };
        (net, inbox, incoming)
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Queues `env` for the peer listening at `to`, connecting if needed.
    /// Never waits: a full queue drops the message ([`NetError::QueueFull`]).
    pub fn send(self: &Arc<Self>, to: &str, env: Envelope) -> Result<(), NetError> {
        self.push(to, env, false)
    }

    /// `env` as a frame, or [`NetError::TooLarge`] when it exceeds the
    /// frame limit.
    fn encode(&self, env: &Envelope) -> Result<Outgoing, NetError> {
        let bytes = rmp_serde::to_vec(env).map_err(|e| NetError::Encode(e.to_string()))?;
        if bytes.len() > self.config.max_frame {
            return Err(NetError::TooLarge {
                bytes: bytes.len() as u64,
                limit: self.config.max_frame as u64,
            });
        }
        let call = match env {
            Envelope::Request { id, .. } => Some(*id),
            _ => None,
        };
        Ok(Outgoing { bytes, call })
    }

    /// Queues `env` for `to`; with `fail_fast`, refuses it while the peer
    /// is known to be unreachable ([`NetError::Unreachable`]).
    fn push(self: &Arc<Self>, to: &str, env: Envelope, fail_fast: bool) -> Result<(), NetError> {
        if *self.stop.borrow() {
            return Err(NetError::Stopped);
        }
        let out = self.encode(&env)?;
        let mut peers = lock(&self.peers);
        let (tx, down) = match peers.get(to) {
            Some(l) if !l.tx.is_closed() => (l.tx.clone(), l.down.clone()),
            _ => {
                let (tx, rx) = mpsc::channel(self.config.queue);
                let down = Arc::new(Mutex::new(None));
                let retry = Arc::new(tokio::sync::Notify::new());
                let link = Link {
                    tx: tx.clone(),
                    down: down.clone(),
                    retry: retry.clone(),
                };
                peers.insert(to.to_string(), link);
                tokio::spawn(peer::run(
                    self.clone(),
                    to.to_string(),
                    rx,
                    down.clone(),
                    retry,
                ));
                (tx, down)
            }
        };
        drop(peers);
        let down = lock(&down);
        if fail_fast && let Some(why) = down.as_ref() {
            return Err(NetError::Unreachable(why.clone()));
        }
        tx.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.counters.dropped_queue_full.fetch_add(1, Relaxed);
                NetError::QueueFull(to.to_string())
            }
            mpsc::error::TrySendError::Closed(_) => NetError::Stopped,
        })
    }

    /// Says that the peer at `addr` is reachable again (gossip heard from
    /// it): a connect backoff in progress ends now, so calls stop failing
    /// with the old "unreachable" and go out on a fresh connection instead
    /// of waiting up to [`Config::backoff_max`].
    pub fn peer_is_back(&self, addr: &str) {
        let peers = lock(&self.peers);
        if let Some(l) = peers.get(addr) {
            *lock(&l.down) = None;
            l.retry.notify_one();
        }
    }

    /// Stops accepting, closes every connection, and fails every pending
    /// call with [`CallError::Stopped`].
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        self.rpc.stop();
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Counts and reports a frame over the limit that `from` sent (read
    /// and discarded: what it held is lost, the connection is not), and
    /// fails the call it belonged to, known from its first bytes `head`:
    /// a request is answered [`proto::RemoteError::RequestTooLarge`] (it
    /// was not run), the answer to one of this node's calls fails that
    /// call with [`proto::RemoteError::TooLarge`] (it was run).
    fn skipped(&self, from: &PeerInfo, bytes: usize, head: &[u8], side: peer::Side<'_>) {
        self.counters.frames_skipped.fetch_add(1, Relaxed);
        let limit = self.config.max_frame;
        let (b, l) = (bytes as u64, limit as u64);
        match (wire::skipped_call(head), side) {
            (Some(wire::SkippedCall::Request(id)), peer::Side::Inbound { reply, .. }) => {
                let err = proto::RemoteError::RequestTooLarge { bytes: b, limit: l };
                self.answer(reply, id, Err(err));
            }
            (Some(wire::SkippedCall::Response(id)), peer::Side::Outbound { conn, .. }) => {
                let err = proto::RemoteError::TooLarge { bytes: b, limit: l };
                self.rpc.answer(id, conn, Err(err));
            }
            _ => {}
        }
        let admitted = lock(&self.refusals).admit(&from.addr, "oversize_frame", Instant::now());
        match admitted {
            Some(suppressed) => warn!(
                peer = %from.node,
                bytes,
                limit,
                suppressed,
                "skipped an internode frame over the limit: do the nodes use the same --max-key-bytes?"
            ),
            None => debug!(peer = %from.node, bytes, limit, "skipped an oversize internode frame"),
        }
    }

    /// Hands one received frame, from `from` on a connection of `side`, to
    /// its consumer.
    fn dispatch(self: &Arc<Self>, from: &PeerInfo, frame: &[u8], side: peer::Side<'_>) {
        let env = match Envelope::decode(frame) {
            Ok(e) => e,
            Err(e) => {
                // E.g. a variant from a newer node: skip the frame, keep the link.
                debug!(peer = %from.node, error = %e, "dropping an undecodable frame");
                return;
            }
        };
        self.counters.received.fetch_add(1, Relaxed);
        match env {
            Envelope::Gossip(msg) => {
                if self
                    .gossip
                    .try_send((Addr::from(from.addr.as_str()), msg))
                    .is_err()
                {
                    self.counters.dropped_inbound.fetch_add(1, Relaxed);
                }
            }
            Envelope::Request {
                id,
                timeout_ms,
                body,
                made_ms,
            } => match side {
                peer::Side::Inbound {
                    reply,
                    handler,
                    arrivals,
                } => {
                    let late_ms = arrivals.lateness(made_ms.0);
                    if lateness::stale(late_ms, timeout_ms) {
                        self.counters.inbound_expired.fetch_add(1, Relaxed);
                        debug!(peer = %from.node, id, late_ms, "dropping a request past its deadline");
                        return self.answer(reply, id, Err(proto::RemoteError::Deadline));
                    }
                    self.serve(handler, from, id, timeout_ms, body, reply)
                }
                // Requests come on connections their sender dialed; there
                // is no reply queue on ours.
                peer::Side::Outbound { .. } => {
                    debug!(peer = %from.node, id, "dropping a request on an outbound connection");
                }
            },
            Envelope::Response { id, result } => match side {
                peer::Side::Outbound { conn, .. } => self.rpc.answer(id, conn, result),
                peer::Side::Inbound { .. } => {
                    debug!(peer = %from.node, id, "dropping a response on an inbound connection");
                }
            },
        }
    }

    /// Logs a failed connection: refusals at `warn` (rate-limited per
    /// `key`), the rest (a peer that is down) at `debug`.
    fn report(&self, key: &str, direction: &str, err: &NetError) {
        let NetError::Refused(why) = err else {
            debug!(peer = key, direction, error = %err, "internode connection failed");
            return;
        };
        self.counters.refused.fetch_add(1, Relaxed);
        // Per address *and* kind of reason: loopback peers share an
        // address, and a new kind of reason from the same place is news;
        // a new claimed cluster name is not.
        let admitted = lock(&self.refusals).admit(key, why.kind(), Instant::now());
        match admitted {
            Some(suppressed) => warn!(
                peer = key,
                direction,
                reason = %why,
                suppressed,
                "internode connection refused: {why}"
            ),
            None => debug!(peer = key, direction, reason = %why, "internode connection refused"),
        }
    }

    /// Counts a connection from `ip` as open, if its address and the node
    /// are within their caps; else counts and logs the refusal.
    fn admit_conn(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let (per_addr, total) = (self.config.max_conns_per_addr, self.config.max_conns);
        if lock(&self.conns).open(ip, per_addr, total) {
            return Some(ConnSlot {
                net: self.clone(),
                ip,
            });
        }
        self.counters.conns_refused.fetch_add(1, Relaxed);
        let admitted =
            lock(&self.refusals).admit(&ip.to_string(), "too_many_connections", Instant::now());
        if let Some(suppressed) = admitted {
            warn!(
                peer = %ip,
                suppressed,
                "internode connection closed at accept: {per_addr} open from this address or {total} in all"
            );
        }
        None
    }
}

/// An inbound connection counted as open until dropped.
struct ConnSlot {
    net: Arc<Net>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        lock(&self.net.conns).close(self.ip);
    }
}

async fn accept_loop(net: Arc<Net>, listener: TcpListener, handler: Arc<dyn Handler>) {
    let mut stop = net.stopped();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((stream, remote)) => {
                    let Some(slot) = net.admit_conn(remote.ip()) else {
                        drop(stream);
                        continue;
                    };
                    let (net, handler) = (net.clone(), handler.clone());
                    tokio::spawn(async move {
                        serve_inbound(net, stream, remote.ip().to_string(), handler).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept on --listen failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Handshake, then read frames until the peer or this node closes.
async fn serve_inbound(
    net: Arc<Net>,
    stream: TcpStream,
    remote: String,
    handler: Arc<dyn Handler>,
) {
    let _ = stream.set_nodelay(true);
    // TLS and the handshake share one deadline.
    let hs = tokio::time::timeout(net.config.handshake_timeout, async {
        let stream = match &net.config.tls {
            Some(tls) => tls.accept(stream).await?,
            None => Either::Left(stream),
        };
        let mut conn = framed(stream, HANDSHAKE_MAX_FRAME);
        let peer = handshake::accept(&mut conn, &net.config.identity).await?;
        Ok::<_, NetError>((conn, peer))
    })
    .await;
    let (mut conn, peer) = match hs {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => return net.report(&remote, "inbound", &e),
        Err(_) => return net.report(&remote, "inbound", &NetError::Timeout("handshake")),
    };
    // The epoch of this side's lateness readings: after the peer's
    // (which it took before dialing), as lateness.rs relies on.
    let arrivals = peer::Arrivals::new();
    conn.codec_mut().skipping(net.config.max_frame);
    debug!(peer = %peer.node, addr = %peer.addr, "accepted internode connection");
    let (reply_tx, mut reply_rx) = mpsc::channel(net.config.queue);
    let side = peer::Side::Inbound {
        reply: &reply_tx,
        handler: &handler,
        arrivals: &arrivals,
    };
    if let Err(e) = peer::pump(&net, conn, &peer, None, &mut reply_rx, side).await {
        debug!(peer = %peer.node, error = %e, "inbound connection ended");
    }
}

#[cfg(test)]
mod net_tests;
