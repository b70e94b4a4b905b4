//! One outbound peer: a task that owns the connection to one address,
//! connects when there is something to send, reconnects with backoff, and
//! moves frames both ways while connected ([`pump`], shared with inbound
//! connections). It is also where calls learn that their peer is gone: a
//! failed connect fails the calls queued for it, a lost connection those
//! sent on it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::debug;

use super::rpc::CallError;
use super::tls::Stream;
use super::{Envelope, HANDSHAKE_MAX_FRAME, Net, NetError, PeerInfo, framed, handshake, lock};

/// An established connection: frames over TCP or TLS.
type Conn = Framed<Stream, LengthDelimitedCodec>;

/// Which way a connection goes, and what that allows on it.
#[derive(Clone, Copy)]
pub(super) enum Side<'a> {
    /// Dialed by this node: requests go out, their responses come back.
    /// `conn` tells this connection's calls from those of the peer's
    /// earlier and later connections.
    Outbound {
        /// The connection's id ([`super::rpc::Calls::connection`]).
        conn: u64,
    },
    /// Accepted by this node: requests come in, their responses go out
    /// through `reply`.
    Inbound {
        /// The connection's reply queue.
        reply: &'a mpsc::Sender<Envelope>,
        /// What serves the requests that arrive on it.
        handler: &'a Arc<dyn crate::transport::Handler>,
    },
}

/// Runs until the transport stops or every sender of `rx` is gone. While
/// the backoff after a failed connect lasts, `down` holds why it failed
/// (see [`super::Link`]).
pub(super) async fn run(
    net: Arc<Net>,
    addr: String,
    mut rx: mpsc::Receiver<Envelope>,
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
        match connect(&net, &addr).await {
            Ok((conn, peer)) => {
                backoff = net.config.backoff_min;
                net.counters.connects.fetch_add(1, Relaxed);
                debug!(peer = %peer.node, %addr, "connected");
                let id = net.rpc.connection();
                let side = Side::Outbound { conn: id };
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
                    for env in std::iter::once(first).chain(queued) {
                        if let Envelope::Request { id, .. } = env {
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
            None => Stream::Plain(stream),
        };
        let mut conn = framed(stream, HANDSHAKE_MAX_FRAME);
        let peer = handshake::dial(&mut conn, &net.config.identity).await?;
        Ok::<_, NetError>((conn, peer))
    })
    .await
    .map_err(|_| NetError::Timeout("handshake"))??;
    conn.codec_mut().set_max_frame_length(net.config.max_frame);
    Ok((conn, peer))
}

fn encode(env: &Envelope) -> Result<bytes::Bytes, NetError> {
    rmp_serde::to_vec(env)
        .map(Into::into)
        .map_err(|e| NetError::Encode(e.to_string()))
}

/// Whether `env` is still worth writing on `side`; records a request as
/// sent on the connection, so that losing it fails the call.
fn wanted(net: &Net, env: &Envelope, side: Side<'_>) -> bool {
    match (env, side) {
        // Its caller gave up (timed out): skip it.
        (Envelope::Request { id, .. }, Side::Outbound { conn }) => net.rpc.mark_sent(*id, conn),
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
    first: Option<Envelope>,
    rx: &mut mpsc::Receiver<Envelope>,
    side: Side<'_>,
) -> Result<(), NetError> {
    let (mut sink, mut stream) = conn.split();
    let mut stop: watch::Receiver<bool> = net.stopped();
    if let Some(env) = first
        && wanted(net, &env, side)
    {
        sink.send(encode(&env)?).await?;
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
                for env in batch {
                    if wanted(net, &env, side) {
                        sink.feed(encode(&env)?).await?;
                        n += 1;
                    }
                }
                sink.flush().await?;
                net.counters.sent.fetch_add(n, Relaxed);
                net.counters.writes.fetch_add(1, Relaxed);
            }
            f = stream.next() => match f {
                Some(Ok(frame)) => net.dispatch(peer, &frame, side),
                Some(Err(e)) => return Err(e.into()),
                None => return Err(NetError::Closed),
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}
