//! One outbound peer: a task that owns the connection to one address,
//! connects when there is something to send, reconnects with backoff, and
//! moves frames both ways while connected ([`pump`], shared with inbound
//! connections).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::debug;

use super::{Envelope, HANDSHAKE_MAX_FRAME, Net, NetError, PeerInfo, framed, handshake};

/// Runs until the transport stops or every sender of `rx` is gone.
pub(super) async fn run(net: Arc<Net>, addr: String, mut rx: mpsc::Receiver<Envelope>) {
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
                // The outbound side writes; a reply queue is never used
                // here, so a dummy one that stays open keeps `pump` uniform.
                let (reply_tx, _reply_rx) = mpsc::channel(1);
                let result = tokio::select! {
                    r = pump(&net, conn, &peer, Some(first), &mut rx, &reply_tx) => r,
                    _ = stop.changed() => return,
                };
                if let Err(e) = result {
                    debug!(peer = %peer.node, %addr, error = %e, "connection lost");
                }
            }
            Err(e) => {
                net.report(&addr, "outbound", &e);
                // What was queued is stale by the next attempt: drop it.
                let mut dropped = 1;
                while rx.try_recv().is_ok() {
                    dropped += 1;
                }
                net.counters.dropped_unreachable.fetch_add(dropped, Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(net.config.backoff_max);
            }
        }
    }
}

/// Connects and runs the dialer's handshake, within the deadlines.
async fn connect(
    net: &Net,
    addr: &str,
) -> Result<(Framed<TcpStream, LengthDelimitedCodec>, PeerInfo), NetError> {
    let stream = tokio::time::timeout(net.config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| NetError::Timeout("connect"))??;
    let _ = stream.set_nodelay(true);
    let mut conn = framed(stream, HANDSHAKE_MAX_FRAME);
    let peer = tokio::time::timeout(
        net.config.handshake_timeout,
        handshake::dial(&mut conn, &net.config.identity),
    )
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

/// Moves frames on an established connection: writes what `rx` yields
/// (`first` before anything else), batching what is already queued into
/// one flush, and dispatches what the peer sends. Returns when the peer
/// closes, on an I/O error, or `Ok` when `rx` closes.
pub(super) async fn pump(
    net: &Net,
    conn: Framed<TcpStream, LengthDelimitedCodec>,
    peer: &PeerInfo,
    first: Option<Envelope>,
    rx: &mut mpsc::Receiver<Envelope>,
    reply: &mpsc::Sender<Envelope>,
) -> Result<(), NetError> {
    let (mut sink, mut stream) = conn.split();
    let mut stop: watch::Receiver<bool> = net.stopped();
    if let Some(env) = first {
        sink.send(encode(&env)?).await?;
        net.counters.sent.fetch_add(1, Relaxed);
    }
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(env) = m else { return Ok(()) };
                sink.feed(encode(&env)?).await?;
                let mut n = 1;
                while let Ok(more) = rx.try_recv() {
                    sink.feed(encode(&more)?).await?;
                    n += 1;
                }
                sink.flush().await?;
                net.counters.sent.fetch_add(n, Relaxed);
            }
            f = stream.next() => match f {
                Some(Ok(frame)) => net.dispatch(peer, &frame, reply),
                Some(Err(e)) => return Err(e.into()),
                None => return Err(NetError::Closed),
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}
