//! What travels on an authenticated internode connection: the
//! [`Envelope`] of every frame, the request's fixed-width [`MadeMs`]
//! stamp, a frame queued already encoded ([`Outgoing`]), and the
//! [`Refusal`]s a handshake ends with.

use quorumkv_gossip::Message;
use serde::{Deserialize, Serialize};

use super::PROTOCOL_VERSION;
use crate::proto;

/// A frame queued for a connection, already encoded (and so checked
/// against the frame limit by its sender, not by the connection's task).
pub(crate) struct Outgoing {
    pub(super) bytes: Vec<u8>,
    /// The id of the call whose request this is.
    pub(super) call: Option<u64>,
}

impl Outgoing {
    /// Writes when a request's call was made into its frame: the
    /// [`MadeMs`] that ends it, known only once the connection it goes on
    /// is (the stamp counts from the dial).
    pub(super) fn stamp(&mut self, made_ms: i64) {
        if let Some(at) = self.bytes.len().checked_sub(8) {
            self.bytes[at..].copy_from_slice(&made_ms.to_be_bytes());
        }
    }

    pub(super) fn into_bytes(self) -> bytes::Bytes {
        self.bytes.into()
    }
}

/// When a request's call was made (ms, see `Envelope::Request`), encoded
/// as exactly eight big-endian bytes (MessagePack `bin 8` of length 8) so
/// that, as the last field of the request, it is the frame's last eight
/// bytes: a frame is encoded once, when queued, and stamped as it is
/// written ([`Outgoing::stamp`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MadeMs(pub i64);

impl Serialize for MadeMs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.to_be_bytes())
    }
}

impl<'de> Deserialize<'de> for MadeMs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MadeMs, D::Error> {
        let b: serde_bytes::ByteArray<8> = Deserialize::deserialize(d)?;
        Ok(MadeMs(i64::from_be_bytes(b.into_array())))
    }
}

/// One frame after the handshake.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Envelope {
    /// A gossip message (SYN, ACK or ACK2).
    Gossip(Message),
    /// An RPC request, on a connection its sender dialed.
    Request {
        /// Matches the response to the call; unique per sending node.
        id: u64,
        /// How long the caller waits: the callee gives up after as long.
        timeout_ms: u32,
        /// What is asked.
        body: proto::Request,
        /// When the call was made: ms of the sender's monotonic clock
        /// since it began dialing this connection (negative: queued
        /// before), filled in as the frame is written. A request read
        /// later than its timeout ([`super::lateness`]), e.g. by a node that was
        /// paused, is answered `Deadline` without being run: its caller
        /// gave up and has hinted the write.
        made_ms: MadeMs,
    },
    /// The answer to a request, on the connection the request came on.
    Response {
        /// The request's id.
        id: u64,
        /// The answer, or why there is none.
        result: Result<proto::Response, proto::RemoteError>,
    },
}

impl Envelope {
    /// Decodes one frame of an authenticated peer (a frame is at most
    /// [`super::Config::max_frame`] bytes; decoding allocates no more than that).
    pub(crate) fn decode(frame: &[u8]) -> Result<Envelope, rmp_serde::decode::Error> {
        rmp_serde::from_slice(frame)
    }
}

/// Whose call a frame skipped for its size belonged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SkippedCall {
    /// A request with this id: its caller is to be told it was not run.
    Request(u64),
    /// The answer to this node's call with this id.
    Response(u64),
}

/// Reads which call a skipped frame belonged to from its first bytes
/// (`frame::HEAD` of them): an [`Envelope`] is encoded as a one-entry map
/// from the variant's name to its fields, the id first. `None` for gossip
/// or bytes that are not such a start.
pub(super) fn skipped_call(head: &[u8]) -> Option<SkippedCall> {
    use rmp::decode as de;
    let rd = &mut &head[..];
    if de::read_map_len(rd).ok()? != 1 {
        return None;
    }
    let len = de::read_str_len(rd).ok()? as usize;
    let name = rd.get(..len)?;
    *rd = &rd[len..];
    let fields = de::read_array_len(rd).ok()?;
    let id = de::read_int::<u64, _>(rd).ok()?;
    match (name, fields) {
        (b"Request", 4) => Some(SkippedCall::Request(id)),
        (b"Response", 2) => Some(SkippedCall::Response(id)),
        _ => None,
    }
}

/// Why the other side of a handshake was refused. The `Display` text is
/// what both logs show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The bytes are not a quorumkv handshake at all.
    #[error("not a quorumkv node (bad handshake header)")]
    NotQuorumkv,
    /// Another protocol version.
    #[error(
        "unsupported internode protocol version {theirs} (this node speaks {PROTOCOL_VERSION})"
    )]
    Version {
        /// The version the peer spoke.
        theirs: u16,
    },
    /// Another cluster.
    #[error("cluster name mismatch: refusing side is in {ours:?}, refused side in {theirs:?}")]
    Cluster {
        /// The refusing side's cluster name.
        ours: String,
        /// The refused side's.
        theirs: String,
    },
    /// The peer claims the refusing node's own id.
    #[error("the peer claims the refusing node's own id {0:?}")]
    SameId(String),
    /// The peer authenticates but this node has no secret.
    #[error(
        "cluster secret mismatch: the refused side has a cluster secret, the refusing side none"
    )]
    SecretMissingHere,
    /// This node requires a secret but the peer has none.
    #[error(
        "cluster secret mismatch: the refusing side requires a cluster secret, the refused side has none"
    )]
    SecretMissingThere,
    /// The peer's proof is wrong: another secret.
    #[error("cluster secret mismatch: authentication failed")]
    BadSecret,
    /// The other side refused us, with its reason.
    #[error("refused by the peer: {0}")]
    ByPeer(String),
    /// The TLS handshake failed: a certificate from another CA, none, or
    /// a peer that does not speak TLS.
    #[error("internode TLS failed: {0}")]
    Tls(String),
    /// The peer's certificate does not name the node id it claims.
    #[error(
        "the peer claims node id {0:?} but its certificate does not name it (a DNS name equal to the node id is required)"
    )]
    NotCertified(String),
}

impl Refusal {
    /// The kind of reason, without what the peer claimed: what refusals
    /// are counted and rate-limited by.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NotQuorumkv => "not_quorumkv",
            Refusal::Version { .. } => "version",
            Refusal::Cluster { .. } => "cluster",
            Refusal::SameId(_) => "same_id",
            Refusal::SecretMissingHere => "secret_missing_here",
            Refusal::SecretMissingThere => "secret_missing_there",
            Refusal::BadSecret => "bad_secret",
            Refusal::ByPeer(_) => "by_peer",
            Refusal::Tls(_) => "tls",
            Refusal::NotCertified(_) => "not_certified",
        }
    }
}
