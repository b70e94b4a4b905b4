//! The connection handshake: protocol version, cluster name, node identity
//! and — when a cluster secret is configured — mutual authentication by
//! challenge-response. Nothing else is read from a connection before it
//! succeeds.
//!
//! ```text
//!  dialer                                          listener
//!    | Hello   version, cluster, id, addr, nonce_d, auth |
//!    |-------------------------------------------------->|  version? cluster? same auth?
//!    | HelloAck version, cluster, id, nonce_l,           |
//!    |          proof_l = MAC("listener"‖nonce_d‖id_l‖cluster)
//!    |<--------------------------------------------------|
//!    | Auth    proof_d = MAC("dialer"‖nonce_l‖id_d‖cluster) |  verify
//!    |-------------------------------------------------->|
//!    | Welcome                                           |
//!    |<--------------------------------------------------|
//! ```
//!
//! Either side answers a failed check with `Refuse { reason }` and closes,
//! so both logs say why. `MAC` is HMAC-SHA256 keyed with the secret; each
//! side proves it holds the secret by MACing the *other* side's fresh
//! random nonce (so old proofs cannot be replayed) together with its own id
//! and the cluster name. The role label (`"dialer"`/`"listener"`) and the
//! refusal of a peer claiming our own id stop a reflection attack, in which
//! an attacker would open a second connection to get the node to compute
//! the answer to its own challenge.
//!
//! Every handshake frame starts with a fixed 6-byte header, `qkvn` and the
//! protocol version as a big-endian u16, then a MessagePack body. The header
//! and the `Refuse` body never change, so a node can refuse a peer of
//! another version with a reason that peer understands.
//!
//! Implementation caveats:
//! * Without a secret the handshake still checks version and cluster name,
//!   but anyone who can reach the port can claim any id: set a secret on
//!   anything but a trusted network.
//! * Without internode TLS ([`super::tls`]) the traffic after the
//!   handshake is not encrypted: the secret authenticates peers, it does
//!   not hide data, and any holder of the secret can claim any id. With
//!   it, the handshake runs inside TLS and the id a peer claims must be
//!   named by its certificate (checked with the others in `check_peer`).

use futures::{SinkExt, StreamExt as _};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_util::codec::Framed;

use super::refusals::{MAX_TEXT, bounded};
use super::tls::{Certified, check_name};
use super::{NetError, PROTOCOL_VERSION, Refusal};

const MAGIC: &[u8; 4] = b"qkvn";
const HEADER: usize = 6;

type HmacSha256 = Hmac<Sha256>;

/// What one side brings to a handshake.
#[derive(Clone, Debug)]
pub struct Identity {
    /// This node's id.
    pub node: String,
    /// The gossip address this node listens on (what peers should dial).
    pub addr: String,
    /// The cluster name.
    pub cluster: String,
    /// The shared secret, when configured.
    pub secret: Option<String>,
}

/// Who is on the other end of an accepted connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id (authenticated when a secret is configured).
    pub node: String,
    /// The gossip address it listens on.
    pub addr: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Msg {
    Hello {
        cluster: String,
        node: String,
        addr: String,
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        auth: bool,
    },
    HelloAck {
        cluster: String,
        node: String,
        addr: String,
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        proof: Option<serde_bytes::ByteBuf>,
    },
    Auth {
        proof: Option<serde_bytes::ByteBuf>,
    },
    Welcome,
    Refuse {
        reason: String,
    },
}

type Conn<S> = Framed<S, super::FrameCodec>;

fn mac(secret: &str, role: &str, nonce: &[u8], id: &str, cluster: &str) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail.
    let mut m = <HmacSha256 as hmac::Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in [role.as_bytes(), nonce, id.as_bytes(), cluster.as_bytes()] {
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part);
    }
    m
}

fn prove(me: &Identity, role: &str, nonce: &[u8]) -> Option<serde_bytes::ByteBuf> {
    me.secret.as_deref().map(|s| {
        serde_bytes::ByteBuf::from(
            mac(s, role, nonce, &me.node, &me.cluster)
                .finalize()
                .into_bytes()
                .to_vec(),
        )
    })
}

fn verify(me: &Identity, role: &str, nonce: &[u8], peer: &str, proof: Option<&[u8]>) -> bool {
    match (me.secret.as_deref(), proof) {
        (None, None) => true,
        (Some(s), Some(p)) => mac(s, role, nonce, peer, &me.cluster)
            .verify_slice(p)
            .is_ok(),
        _ => false,
    }
}

fn nonce() -> Vec<u8> {
    rand::random::<[u8; 32]>().to_vec()
}

async fn send<S: Certified>(conn: &mut Conn<S>, msg: &Msg) -> Result<(), NetError> {
    let body = rmp_serde::to_vec(msg).map_err(|e| NetError::Encode(e.to_string()))?;
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    frame.extend_from_slice(&body);
    conn.send(bytes::Bytes::from(frame))
        .await
        .map_err(NetError::Io)
}

async fn recv<S: Certified>(conn: &mut Conn<S>) -> Result<Msg, NetError> {
    let frame = match conn.next().await {
        Some(Ok(super::Frame::Data(f))) => f,
        // A strict codec fails on an oversize frame instead.
        Some(Ok(super::Frame::Skipped { len, .. })) => {
            return Err(NetError::Decode(format!(
                "a handshake frame of {len} bytes"
            )));
        }
        Some(Err(e)) => return Err(NetError::Io(e)),
        None => return Err(NetError::Closed),
    };
    parse(&frame)
}

/// Reads one handshake frame from a peer not yet authenticated: bytes
/// anyone can send.
pub(super) fn parse(frame: &[u8]) -> Result<Msg, NetError> {
    if frame.len() < HEADER || &frame[..4] != MAGIC {
        return Err(NetError::Refused(Refusal::NotQuorumkv));
    }
    let version = u16::from_be_bytes([frame[4], frame[5]]);
    let msg: Result<Msg, _> = rmp_serde::from_slice(&frame[HEADER..]);
    // A Refuse is readable whatever the version; anything else only in ours.
    match msg {
        Ok(Msg::Refuse { reason }) => Err(NetError::Refused(Refusal::ByPeer(bounded(
            &reason, MAX_TEXT,
        )))),
        _ if version != PROTOCOL_VERSION => {
            Err(NetError::Refused(Refusal::Version { theirs: version }))
        }
        Ok(m) => Ok(m),
        Err(e) => Err(NetError::Decode(e.to_string())),
    }
}

/// Sends a refusal (best effort) and returns the error to log.
async fn refuse<S: Certified>(conn: &mut Conn<S>, why: Refusal) -> NetError {
    let _ = send(
        conn,
        &Msg::Refuse {
            reason: why.to_string(),
        },
    )
    .await;
    let _ = SinkExt::<bytes::Bytes>::close(conn).await;
    NetError::Refused(why)
}

fn unexpected(m: &Msg) -> NetError {
    NetError::Decode(format!("unexpected handshake message {m:?}"))
}

/// The common checks on the other side's greeting; `cert` is the
/// certificate it presented over TLS, which must name the id it claims.
fn check_peer(
    me: &Identity,
    cluster: &str,
    node: &str,
    auth: bool,
    cert: Option<&rustls::pki_types::CertificateDer<'_>>,
) -> Result<(), Refusal> {
    if cluster != me.cluster {
        // What the peer claims is logged: only so much of it.
        return Err(Refusal::Cluster {
            ours: me.cluster.clone(),
            theirs: bounded(cluster, MAX_TEXT),
        });
    }
    if node == me.node {
        return Err(Refusal::SameId(node.to_string()));
    }
    if let Some(cert) = cert {
        check_name(cert, node)?;
    }
    if auth != me.secret.is_some() {
        return Err(if auth {
            Refusal::SecretMissingHere
        } else {
            Refusal::SecretMissingThere
        });
    }
    Ok(())
}

/// Runs the dialer's side over a fresh connection; returns who answered.
pub async fn dial<S: Certified>(conn: &mut Conn<S>, me: &Identity) -> Result<PeerInfo, NetError> {
    let my_nonce = nonce();
    send(
        conn,
        &Msg::Hello {
            cluster: me.cluster.clone(),
            node: me.node.clone(),
            addr: me.addr.clone(),
            nonce: my_nonce.clone(),
            auth: me.secret.is_some(),
        },
    )
    .await?;
    let ack = match recv(conn).await {
        Err(NetError::Refused(why @ Refusal::Version { .. })) => {
            return Err(refuse(conn, why).await);
        }
        other => other?,
    };
    let (peer, their_nonce) = match ack {
        Msg::HelloAck {
            cluster,
            node,
            addr,
            nonce,
            proof,
        } => {
            if let Err(why) = check_peer(
                me,
                &cluster,
                &node,
                proof.is_some(),
                conn.get_ref().peer_certificate(),
            ) {
                return Err(refuse(conn, why).await);
            }
            if !verify(
                me,
                "listener",
                &my_nonce,
                &node,
                proof.as_ref().map(|p| p.as_slice()),
            ) {
                return Err(refuse(conn, Refusal::BadSecret).await);
            }
            (PeerInfo { node, addr }, nonce)
        }
        m => return Err(unexpected(&m)),
    };
    send(
        conn,
        &Msg::Auth {
            proof: prove(me, "dialer", &their_nonce),
        },
    )
    .await?;
    match recv(conn).await? {
        Msg::Welcome => Ok(peer),
        m => Err(unexpected(&m)),
    }
}

/// Runs the listener's side over an accepted connection; returns who
/// dialed.
pub async fn accept<S: Certified>(conn: &mut Conn<S>, me: &Identity) -> Result<PeerInfo, NetError> {
    let (peer, their_nonce) = match recv(conn).await {
        Ok(Msg::Hello {
            cluster,
            node,
            addr,
            nonce,
            auth,
        }) => {
            if let Err(why) =
                check_peer(me, &cluster, &node, auth, conn.get_ref().peer_certificate())
            {
                return Err(refuse(conn, why).await);
            }
            (PeerInfo { node, addr }, nonce)
        }
        Ok(m) => return Err(unexpected(&m)),
        Err(NetError::Refused(why @ Refusal::Version { .. })) => {
            return Err(refuse(conn, why).await);
        }
        Err(e) => return Err(e),
    };
    let my_nonce = nonce();
    send(
        conn,
        &Msg::HelloAck {
            cluster: me.cluster.clone(),
            node: me.node.clone(),
            addr: me.addr.clone(),
            nonce: my_nonce.clone(),
            proof: prove(me, "listener", &their_nonce),
        },
    )
    .await?;
    match recv(conn).await? {
        Msg::Auth { proof } => {
            if !verify(
                me,
                "dialer",
                &my_nonce,
                &peer.node,
                proof.as_ref().map(|p| p.as_slice()),
            ) {
                return Err(refuse(conn, Refusal::BadSecret).await);
            }
        }
        m => return Err(unexpected(&m)),
    }
    send(conn, &Msg::Welcome).await?;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::transport::tcp::framed;

    fn id(node: &str, cluster: &str, secret: Option<&str>) -> Identity {
        Identity {
            node: node.into(),
            addr: format!("{node}:7001"),
            cluster: cluster.into(),
            secret: secret.map(Into::into),
        }
    }

    /// Runs both sides over real loopback sockets.
    async fn handshake(
        dialer: Identity,
        listener: Identity,
    ) -> (Result<PeerInfo, NetError>, Result<PeerInfo, NetError>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let mut conn = framed(s, 64 << 10);
            accept(&mut conn, &listener).await
        });
        let s = TcpStream::connect(addr).await.expect("connect");
        let mut conn = framed(s, 64 << 10);
        let d = dial(&mut conn, &dialer).await;
        drop(conn);
        (d, server.await.expect("server task"))
    }

    #[tokio::test]
    async fn the_right_secret_is_accepted_both_ways() {
        let (d, l) = handshake(id("n1", "c", Some("s3cret")), id("n2", "c", Some("s3cret"))).await;
        assert_eq!(d.expect("dialer ok").node, "n2");
        let p = l.expect("listener ok");
        assert_eq!((p.node.as_str(), p.addr.as_str()), ("n1", "n1:7001"));
    }

    #[tokio::test]
    async fn no_secret_on_either_side_is_accepted() {
        let (d, l) = handshake(id("n1", "c", None), id("n2", "c", None)).await;
        assert!(d.is_ok() && l.is_ok(), "{d:?} {l:?}");
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_by_both_sides() {
        let (d, l) = handshake(id("n1", "c", Some("wrong")), id("n2", "c", Some("right"))).await;
        // The dialer checks the listener's proof first and refuses it.
        assert!(
            matches!(d, Err(NetError::Refused(Refusal::BadSecret))),
            "{d:?}"
        );
        assert!(
            matches!(l, Err(NetError::Refused(Refusal::ByPeer(ref r))) if r.contains("secret")),
            "{l:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_secret_is_refused() {
        let (d, l) = handshake(id("n1", "c", None), id("n2", "c", Some("right"))).await;
        assert!(
            matches!(l, Err(NetError::Refused(Refusal::SecretMissingThere))),
            "{l:?}"
        );
        assert!(
            matches!(d, Err(NetError::Refused(Refusal::ByPeer(_)))),
            "{d:?}"
        );
    }

    #[tokio::test]
    async fn another_cluster_is_refused() {
        let (d, l) = handshake(id("n1", "other", None), id("n2", "c", None)).await;
        assert!(
            matches!(l, Err(NetError::Refused(Refusal::Cluster { ref theirs, .. })) if theirs == "other"),
            "{l:?}"
        );
        assert!(
            matches!(d, Err(NetError::Refused(Refusal::ByPeer(ref r))) if r.contains("cluster")),
            "{d:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_claiming_our_own_id_is_refused() {
        let (_, l) = handshake(id("n2", "c", Some("s")), id("n2", "c", Some("s"))).await;
        assert!(
            matches!(l, Err(NetError::Refused(Refusal::SameId(_)))),
            "{l:?}"
        );
    }

    #[tokio::test]
    async fn another_protocol_version_is_refused_with_a_reason() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let me = id("n2", "c", None);
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            accept(&mut framed(s, 64 << 10), &me).await
        });
        let mut conn = framed(TcpStream::connect(addr).await.expect("connect"), 64 << 10);
        // A hello from a future version 999, whatever its body.
        let mut frame = b"qkvn".to_vec();
        frame.extend_from_slice(&999u16.to_be_bytes());
        frame.extend_from_slice(b"\x81\xa3new\xc0");
        conn.send(bytes::Bytes::from(frame)).await.expect("send");
        let l = server.await.expect("server task");
        assert!(
            matches!(l, Err(NetError::Refused(Refusal::Version { theirs: 999 }))),
            "{l:?}"
        );
        // The refusal is readable by the old (or new) peer.
        let Some(Ok(crate::transport::tcp::Frame::Data(reply))) = conn.next().await else {
            panic!("a frame")
        };
        let Ok(Msg::Refuse { reason }) = rmp_serde::from_slice::<Msg>(&reply[HEADER..]) else {
            panic!("not a refusal: {reply:?}");
        };
        assert!(reason.contains("version 999"), "{reason}");
    }

    #[test]
    fn refusal_texts_are_bounded_whatever_the_peer_claims() {
        let me = id("n2", "c", None);
        let long = "x".repeat(60_000);
        let why = check_peer(&me, &long, "n1", false, None).expect_err("another cluster");
        assert!(
            why.to_string().len() < 600,
            "{} bytes",
            why.to_string().len()
        );
        // A refusal the peer sends, with a reason as long as a frame allows.
        let mut frame = MAGIC.to_vec();
        frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        frame.extend(rmp_serde::to_vec(&Msg::Refuse { reason: long }).expect("encode"));
        match parse(&frame) {
            Err(NetError::Refused(why @ Refusal::ByPeer(_))) => {
                assert!(
                    why.to_string().len() < 600,
                    "{} bytes",
                    why.to_string().len()
                );
            }
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_is_not_a_peer() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let me = id("n2", "c", None);
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            accept(&mut framed(s, 64 << 10), &me).await
        });
        let mut conn = framed(TcpStream::connect(addr).await.expect("connect"), 64 << 10);
        conn.send(bytes::Bytes::from_static(b"GET / HTTP/1.1\r\n"))
            .await
            .expect("send");
        let l = server.await.expect("server task");
        assert!(
            matches!(l, Err(NetError::Refused(Refusal::NotQuorumkv))),
            "{l:?}"
        );
    }
}
