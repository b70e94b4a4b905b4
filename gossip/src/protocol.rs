//! The wire protocol: the three gossip messages, what a round sends, the
//! events it produces, and the codec.
//!
//! One exchange is three messages (Cassandra's names):
//!
//! ```text
//!  initiator                                  peer
//!     | SYN  cluster, one Digest per known node  |
//!     |----------------------------------------->|  compare digests
//!     | ACK  Deltas the peer has newer,          |
//!     |      Digests (requests) of what it lacks |
//!     |<-----------------------------------------|
//!     | ACK2 Deltas answering the requests       |
//!     |----------------------------------------->|
//! ```
//!
//! A [`Digest`] is `(node, generation, max version)`: ~20 bytes in
//! MessagePack for an id like `"n123"` and a seconds-since-epoch generation.
//! A [`Delta`] carries, for one node, the heartbeat and the application
//! states newer than what the other side said it had, in version order (so
//! a truncated delta is still a valid prefix; see [`crate::state`]).
//!
//! Sizes: a SYN carries one digest per known node, so it grows with the
//! cluster (≈ 20–25 KB at 1000 nodes) — inherent to Scuttlebutt, and the
//! price of never sending state the peer already has. Deltas are what can
//! be large (a thousand nodes × 256 tokens ≈ 2.3 MB for a newcomer), and
//! those are capped per message by [`crate::Config::max_message_bytes`] and
//! [`crate::Config::max_states_per_message`]: the rest follows in later
//! rounds, most out-of-date first.
//!
//! The codec is MessagePack via `rmp-serde` (structs as arrays), like the
//! internode RPC. [`Message::wire_size`] is a cheap upper bound of the
//! encoded size, used for packing without encoding.

use serde::{Deserialize, Serialize};

use crate::{
    Error,
    state::{Addr, AppState, Generation, Key, NodeId, Version, Versioned},
};

/// A node's summary in a SYN, or a request in an ACK: "I know `node` at
/// `generation` up to `version`". `(0, 0)` means "I know nothing of it".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Whose state this summarises.
    pub node: NodeId,
    /// The generation known.
    pub generation: Generation,
    /// The highest version known within that generation.
    pub version: Version,
}

/// The part of one node's state that the receiver lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Whose state.
    pub node: NodeId,
    /// Its generation. Higher than the receiver's: the delta is (a prefix
    /// of) the full state and replaces what the receiver had.
    pub generation: Generation,
    /// The heartbeat, when it is newer and fits in the prefix.
    pub heartbeat: Option<Version>,
    /// Application states, in version order.
    pub states: Vec<Versioned>,
}

/// A gossip message. Every message names its cluster; a node refuses
/// messages from another cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Opens an exchange: one digest per node the sender knows.
    Syn {
        /// The sender's cluster name.
        cluster: String,
        /// One per known node, the sender's own included.
        digests: Vec<Digest>,
    },
    /// Answers a SYN: what the responder has newer, and what it wants.
    Ack {
        /// The sender's cluster name.
        cluster: String,
        /// Deltas the initiator lacks, most out-of-date first.
        states: Vec<Delta>,
        /// What the responder lacks: its own digest of each such node.
        requests: Vec<Digest>,
    },
    /// Closes an exchange: the states the ACK asked for.
    Ack2 {
        /// The sender's cluster name.
        cluster: String,
        /// Deltas answering the ACK's requests.
        states: Vec<Delta>,
    },
}

impl Message {
    /// The cluster name the message claims.
    pub fn cluster(&self) -> &str {
        match self {
            Message::Syn { cluster, .. }
            | Message::Ack { cluster, .. }
            | Message::Ack2 { cluster, .. } => cluster,
        }
    }

    /// `"syn"`, `"ack"` or `"ack2"`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Syn { .. } => "syn",
            Message::Ack { .. } => "ack",
            Message::Ack2 { .. } => "ack2",
        }
    }

    /// Encodes to MessagePack.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        rmp_serde::to_vec(self).map_err(|e| Error::Encode(e.to_string()))
    }

    /// Decodes MessagePack from an untrusted peer. Never panics on bad
    /// input; a frame longer than `limit` bytes is refused before decoding.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Message, Error> {
        if bytes.len() > limit {
            return Err(Error::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        rmp_serde::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    /// An upper bound of the encoded size in bytes, computed without
    /// encoding (within a few bytes of the real size).
    pub fn wire_size(&self) -> usize {
        let body = match self {
            Message::Syn { cluster, digests } => {
                arr(2)
                    + str_len(cluster.len())
                    + arr(digests.len())
                    + sum(digests, Digest::wire_size)
            }
            Message::Ack {
                cluster,
                states,
                requests,
            } => {
                arr(3)
                    + str_len(cluster.len())
                    + arr(states.len())
                    + sum(states, Delta::wire_size)
                    + arr(requests.len())
                    + sum(requests, Digest::wire_size)
            }
            Message::Ack2 { cluster, states } => {
                arr(2) + str_len(cluster.len()) + arr(states.len()) + sum(states, Delta::wire_size)
            }
        };
        1 + str_len(self.kind().len() + 1) + body
    }
}

/// A message to send, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The peer's gossip address.
    pub to: Addr,
    /// What to send.
    pub msg: Message,
}

/// A membership change, for the driver (ring rebuild, hint replay, logs).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A node seen for the first time. Its state as known so far is in
    /// [`crate::Node::member`]; later changes come as `Updated`. It is not
    /// yet `Up`: that takes a heartbeat observed to advance after discovery.
    Joined {
        /// Who.
        node: NodeId,
        /// Its generation.
        generation: Generation,
    },
    /// A known node came back with a higher generation: its old state was
    /// replaced wholesale.
    Restarted {
        /// Who.
        node: NodeId,
        /// The new generation.
        generation: Generation,
    },
    /// Application states of a node changed (heartbeats excluded).
    Updated {
        /// Who.
        node: NodeId,
        /// Which states, in key order.
        keys: Vec<Key>,
    },
    /// The failure detector convicted a node.
    Down {
        /// Who.
        node: NodeId,
        /// Its phi at conviction.
        phi: f64,
    },
    /// A node is alive: its heartbeat advanced after discovery or after a
    /// conviction.
    Up {
        /// Who.
        node: NodeId,
    },
    /// A `left` node was forgotten after the quarantine.
    Removed {
        /// Who.
        node: NodeId,
    },
    /// A message from another cluster was refused.
    Refused {
        /// Where it came from.
        from: Addr,
        /// The cluster it claimed.
        cluster: String,
    },
}

// --- MessagePack size upper bounds -------------------------------------

fn sum<T>(items: &[T], f: impl Fn(&T) -> usize) -> usize {
    items.iter().map(f).sum()
}

/// Encoded size of an unsigned integer.
pub(crate) fn uint(v: u64) -> usize {
    match v {
        0..=127 => 1,
        128..=255 => 2,
        256..=65_535 => 3,
        65_536..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Encoded size of a string of `len` bytes.
pub(crate) fn str_len(len: usize) -> usize {
    len + match len {
        0..=31 => 1,
        32..=255 => 2,
        256..=65_535 => 3,
        _ => 5,
    }
}

/// Encoded size of an array header.
pub(crate) fn arr(len: usize) -> usize {
    match len {
        0..=15 => 1,
        16..=65_535 => 3,
        _ => 5,
    }
}

/// An externally tagged enum variant with data: `{name: value}`.
fn variant(name: &str) -> usize {
    1 + str_len(name.len())
}

impl Digest {
    /// Upper bound of the encoded size.
    pub fn wire_size(&self) -> usize {
        arr(3) + str_len(self.node.as_str().len()) + uint(self.generation) + uint(self.version)
    }
}

impl Delta {
    /// Upper bound of the encoded size.
    pub fn wire_size(&self) -> usize {
        Self::header_size(&self.node, self.generation)
            + self.heartbeat.map_or(1, uint)
            + sum(&self.states, Versioned::wire_size)
    }

    /// Size of a delta with no heartbeat and no states (array headers at
    /// their widest, so that adding entries never exceeds the estimate).
    pub(crate) fn header_size(node: &NodeId, generation: Generation) -> usize {
        arr(4) + str_len(node.as_str().len()) + uint(generation) + 5
    }
}

impl Versioned {
    /// Upper bound of the encoded size.
    pub fn wire_size(&self) -> usize {
        arr(2) + uint(self.version) + self.value.wire_size()
    }
}

impl AppState {
    /// Upper bound of the encoded size.
    pub fn wire_size(&self) -> usize {
        match self {
            AppState::Status(s) => variant("Status") + str_len(s.as_str().len()),
            AppState::Tokens(t) => {
                variant("Tokens") + arr(t.len()) + t.iter().map(|&x| uint(x)).sum::<usize>()
            }
            AppState::HttpAddr(a) => variant("HttpAddr") + str_len(a.len()),
            AppState::GossipAddr(a) => variant("GossipAddr") + str_len(a.as_str().len()),
            AppState::Rack(r) => variant("Rack") + str_len(r.len()),
            AppState::Load(l) => variant("Load") + uint(*l),
            AppState::Custom(k, v) => {
                variant("Custom") + arr(2) + str_len(k.len()) + str_len(v.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Status;
    use std::sync::Arc;

    fn sample() -> Vec<Message> {
        let tokens: Arc<[u64]> = (0..256u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let delta = Delta {
            node: "n42".into(),
            generation: 1_795_830_000,
            heartbeat: Some(70_000),
            states: vec![
                Versioned {
                    version: 1,
                    value: AppState::Status(Status::Normal),
                },
                Versioned {
                    version: 2,
                    value: AppState::Tokens(tokens),
                },
                Versioned {
                    version: 3,
                    value: AppState::HttpAddr("127.0.0.1:8001".into()),
                },
                Versioned {
                    version: 4,
                    value: AppState::GossipAddr("127.0.0.1:7001".into()),
                },
                Versioned {
                    version: 5,
                    value: AppState::Rack("r1".into()),
                },
                Versioned {
                    version: 6,
                    value: AppState::Load(1 << 40),
                },
                Versioned {
                    version: 7,
                    value: AppState::Custom("schema".into(), "x".repeat(40).into()),
                },
            ],
        };
        let digest = Digest {
            node: "n999".into(),
            generation: 1_795_830_000,
            version: 123_456,
        };
        vec![
            Message::Syn {
                cluster: "c".into(),
                digests: vec![digest.clone(); 1000],
            },
            Message::Ack {
                cluster: "prod".into(),
                states: vec![delta.clone(); 3],
                requests: vec![digest; 20],
            },
            Message::Ack2 {
                cluster: "prod".into(),
                states: vec![Delta {
                    heartbeat: None,
                    ..delta
                }],
            },
            Message::Ack2 {
                cluster: "prod".into(),
                states: vec![],
            },
        ]
    }

    #[test]
    fn messages_round_trip_through_the_codec() {
        for m in sample() {
            let bytes = m.encode().expect("encode");
            assert_eq!(Message::decode(&bytes, usize::MAX).expect("decode"), m);
        }
    }

    #[test]
    fn wire_size_is_a_tight_upper_bound() {
        for m in sample() {
            let real = m.encode().expect("encode").len();
            let est = m.wire_size();
            assert!(est >= real, "{}: estimate {est} < real {real}", m.kind());
            assert!(
                est <= real + real / 10 + 16,
                "{}: estimate {est} ≫ real {real}",
                m.kind()
            );
        }
    }

    #[test]
    fn a_digest_is_compact() {
        let d = Digest {
            node: "n999".into(),
            generation: 1_795_830_000,
            version: 123_456,
        };
        assert!(d.wire_size() <= 16, "{}", d.wire_size());
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(matches!(
            Message::decode(&[0xc1, 0xff, 0x00], 1024),
            Err(Error::Decode(_))
        ));
        assert!(matches!(
            Message::decode(&[0u8; 10], 4),
            Err(Error::TooLarge { .. })
        ));
        let mut bytes = sample()[1].encode().expect("encode");
        bytes.truncate(bytes.len() / 2);
        assert!(Message::decode(&bytes, usize::MAX).is_err());
    }
}
