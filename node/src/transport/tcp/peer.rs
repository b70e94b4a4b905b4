//! One outbound peer: a task that owns the connection to one address,
//! connects when there is something to send, reconnects with backoff, and
//! moves frames both ways while connected ([`pump`], shared with inbound
//! connections). It is also where calls learn that their peer is gone: a
//! failed connect fails the calls queued for it, a lost connection those
//! sent on it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;
use tokio_util::either::Either;
use tracing::debug;

use super::rpc::CallError;
use super::tls::Stream;
use super::{
    Frame, FrameCodec, HANDSHAKE_MAX_FRAME, Net, NetError, Outgoing, PeerInfo, framed, handshake,
    lateness, lock,
};

/// An established connection: frames over TCP or TLS.
type Conn = Framed<Stream, FrameCodec>;

/// Which way a connection goes, and what that allows on it.
#[derive(Clone, Copy)]
pub(super) enum Side<'a> {
    /// Dialed by this node: requests go out, their responses come back.
    /// `conn` tells this connection's calls from those of the peer's
    /// earlier and later connections.
    Outbound {
        /// The connection's id ([`super::rpc::Calls::connection`]).
        conn: u64,
        /// When this node began dialing it: the epoch of the requests'
        /// `made_ms` stamps.
        dialed: Instant,
    },
    /// Accepted by this node: requests come in, their responses go out
    /// through `reply`.
    Inbound {
        /// The connection's reply queue.
        reply: &'a mpsc::Sender<Outgoing>,
        /// What serves the requests that arrive on it.
        handler: &'a Arc<dyn crate::transport::Handler>,
        /// How late its requests arrive.
        arrivals: &'a Arrivals,
    },
}

/// The lateness readings of one accepted connection ([`lateness`]),
/// against the instant its handshake finished.
pub(super) struct Arrivals {
    accepted: Instant,
    seen: Mutex<lateness::Arrivals>,
}

impl Arrivals {
    /// Readings from now on.
    pub(super) fn new() -> Arrivals {
        Arrivals {
            accepted: Instant::now(),
            seen: Mutex::new(lateness::Arrivals::default()),
        }
    }

    /// How late, ms, a request stamped `made_ms` by the peer is now.
    pub(super) fn lateness(&self, made_ms: i64) -> u64 {
        let now = lateness::stamp(Instant::now(), self.accepted);
        lock(&self.seen).lateness(now, made_ms)
    }
}

/// Runs until the transport stops or every sender of `rx` is gone. While
/// the backoff after a failed connect lasts, `down` holds why it failed
/// (see [`super::Link`]).
pub(super) async fn run(
    net: Arc<Net>,
    addr: String,
    mut rx: mpsc::Receiver<Outgoing>,
    down: Arc<Mutex<Option<String>>>,
    retry: Arc<tokio::sync::Notify>,
) {
    let mut stop = net.stopped();
    let mut backoff = net.config.backoff_min;
    loop {
        // Lazy: connect only when there is something to send.
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = stop.changed() => return,
        };
        // Before the first byte: the peer's epoch, taken once the
        // handshake is done, is later than this (lateness.rs).
        let dialed = Instant::now();
        match connect(&net, &addr).await {
            Ok((conn, peer)) => {
                backoff = net.config.backoff_min;
                net.counters.connects.fetch_add(1, Relaxed);
                debug!(peer = %peer.node, %addr, "connected");
                let id = net.rpc.connection();
                let side = Side::Outbound { conn: id, dialed };
                let result = tokio::select! {
                    r = pump(&net, conn, &peer, Some(first), &mut rx, side) => r,
                    _ = stop.changed() => return,
                };
                // No answer can come for what was sent on it; what is
                // still queued goes on the next connection.
                net.rpc.lost(id);
                if let Err(e) = result {
                    debug!(peer = %peer.node, %addr, error = %e, "connection lost");
                }
            }
            Err(e) => {
                net.report(&addr, "outbound", &e);
                let why = format!("{addr}: {e}");
                // What was queued is stale by the next attempt: drop it,
                // and tell the callers among it, who would otherwise wait
                // out their timeouts.
                let mut dropped = 0;
                {
                    let mut down = lock(&down);
                    *down = Some(why.clone());
                    let queued = std::iter::from_fn(|| rx.try_recv().ok());
                    for out in std::iter::once(first).chain(queued) {
                        if let Some(id) = out.call {
                            net.rpc.fail(id, CallError::Unreachable(why.clone()));
                        }
                        dropped += 1;
                    }
                }
                net.counters.dropped_unreachable.fetch_add(dropped, Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {
                        backoff = (backoff * 2).min(net.config.backoff_max);
                    }
                    // Gossip heard from it: try again now, from the start.
                    _ = retry.notified() => backoff = net.config.backoff_min,
                    _ = stop.changed() => return,
                }
                *lock(&down) = None;
            }
        }
    }
}

/// Connects and runs TLS (when configured) and the dialer's handshake,
/// within the deadlines.
async fn connect(net: &Net, addr: &str) -> Result<(Conn, PeerInfo), NetError> {
    let stream = tokio::time::timeout(net.config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| NetError::Timeout("connect"))??;
    let _ = stream.set_nodelay(true);
    let (mut conn, peer) = tokio::time::timeout(net.config.handshake_timeout, async {
        let stream = match &net.config.tls {
            Some(tls) => tls.connect(stream).await?,
            None => Either::Left(stream),
        };
        let mut conn = framed(stream, HANDSHAKE_MAX_FRAME);
        let peer = handshake::dial(&mut conn, &net.config.identity).await?;
        Ok::<_, NetError>((conn, peer))
    })
    .await
    .map_err(|_| NetError::Timeout("handshake"))??;
    conn.codec_mut().skipping(net.config.max_frame);
    Ok((conn, peer))
}

/// Whether `out` is still worth writing on `side`; records a request as
/// sent on the connection, so that losing it fails the call, and stamps
/// it with when its call was made.
fn wanted(net: &Net, out: &mut Outgoing, side: Side<'_>) -> bool {
    match (out.call, side) {
        (Some(id), Side::Outbound { conn, dialed }) => match net.rpc.mark_sent(id, conn) {
            Some(made) => {
                out.stamp(lateness::stamp(made, dialed));
                true
            }
            // Its caller gave up (timed out): skip it.
            None => false,
        },
        _ => true,
    }
}

/// Moves frames on an established connection: writes what `rx` yields
/// (`first` before anything else), batching what is already queued into
/// one flush, and dispatches what the peer sends. Returns when the peer
/// closes, on an I/O error, or `Ok` when `rx` closes.
pub(super) async fn pump(
    net: &Arc<Net>,
    conn: Conn,
    peer: &PeerInfo,
    first: Option<Outgoing>,
    rx: &mut mpsc::Receiver<Outgoing>,
    side: Side<'_>,
) -> Result<(), NetError> {
    let (mut sink, mut stream) = conn.split();
    let mut stop: watch::Receiver<bool> = net.stopped();
    if let Some(mut out) = first
        && wanted(net, &mut out, side)
    {
        sink.send(out.into_bytes()).await?;
        net.counters.sent.fetch_add(1, Relaxed);
    }
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(env) = m else { return Ok(()) };
                // Let the tasks that are ready run before writing: each
                // queues its own message, and they then share one write
                // (and one wake-up of the peer) instead of a write each.
                // Without this, tokio runs this task right after the one
                // that woke it, and the queue rarely holds more than one.
                tokio::task::yield_now().await;
                let mut n = 0;
                let batch = std::iter::once(env).chain(std::iter::from_fn(|| rx.try_recv().ok()));
                for mut out in batch {
                    if wanted(net, &mut out, side) {
                        sink.feed(out.into_bytes()).await?;
                        n += 1;
                    }
                }
                sink.flush().await?;
                net.counters.sent.fetch_add(n, Relaxed);
                net.counters.writes.fetch_add(1, Relaxed);
            }
            f = stream.next() => match f {
                Some(Ok(Frame::Data(frame))) => net.dispatch(peer, &frame, side),
                Some(Ok(Frame::Skipped { len, head })) => net.skipped(peer, len, &head, side),
                Some(Err(e)) => return Err(e.into()),
                None => return Err(NetError::Closed),
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}
