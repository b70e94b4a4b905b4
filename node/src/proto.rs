//! The messages nodes send each other over internode RPC (`net::rpc`).
//!
//! Each [`Request`] gets exactly one [`Response`] or a [`RemoteError`]. The
//! types are plain data (MessagePack via serde) so that the transport knows
//! nothing about replicas or coordinators, and a replica's failure reaches
//! the coordinator as what it was (storage, overload, deadline, or the
//! replica coordinator's own API error), never as a bare string.

use serde::{Deserialize, Serialize};

use quorumkv_ring::TokenRange;

use crate::buckets::BucketProps;
use crate::buckets::Consistency;
use crate::failure::QuorumError;
use crate::merkle::MerkleTree;
use crate::replica::Mutation;
use crate::version::Context;
use crate::version::{Dvvs, VersionError};

/// A request from one node to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and round-trip probe.
    Ping,
    /// Coordinate a client's write as a replica: a coordinator that is not
    /// a replica of the key forwards the write here, so that the version's
    /// dot is minted by a replica.
    Write(WriteRequest),
    /// Merge these versions into what the replica stores (replication,
    /// read repair, hinted handoff).
    Replicate {
        /// The bucket.
        bucket: String,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The versions to merge, encoded once for every replica the
        /// write goes to.
        object: Encoded,
        /// Set when the receiver is a sloppy-quorum fallback standing in
        /// for this replica: it keeps a hint for it as well as the data.
        hint_for: Option<String>,
    },
    /// What the replica stores for a key: the versions, or only their
    /// digest when `digest` is set.
    Read {
        /// The bucket.
        bucket: String,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Answer with a digest instead of the versions.
        digest: bool,
    },
    /// A bucket's properties, announced by the node where they were set.
    Bucket {
        /// The bucket's name.
        name: String,
        /// Its properties.
        props: BucketProps,
        /// Whether it holds data (its `n` is then frozen).
        has_data: bool,
        /// When the properties were set (ms); the newest wins.
        updated_ms: u64,
    },
    /// Anti-entropy: the Merkle tree of the replica's copy of `range` at
    /// `depth` (capped as [`crate::merkle::effective_depth`] says).
    Tree {
        /// The token range.
        range: TokenRange,
        /// The requested depth.
        depth: u8,
        /// Which buckets' keys the tree covers (absent: all).
        #[serde(default)]
        filter: crate::merkle::KeyFilter,
    },
    /// Anti-entropy: the entries the replica stores in `range`, in ring
    /// order, one page at a time.
    Entries {
        /// The token range.
        range: TokenRange,
        /// Resume strictly after this stored data key (the `next` of the
        /// previous page); `None` for the first page.
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        /// At most this many entries.
        limit: u32,
        /// Stop adding entries before the page holds more than this many
        /// stored bytes (the first is taken whatever its size).
        max_bytes: u32,
    },
    /// Cluster changes: streaming between nodes (`crate::stream`).
    Stream(StreamRequest),
    /// The ring tokens the receiver knows for node `node`: what a node
    /// restarted on a wiped data dir asks its seeds before it gossips, to
    /// take back its place ([`crate::tokens::recover`]).
    NodeTokens {
        /// The node asked about.
        node: String,
    },
    /// The receiver's own figures (keys and bytes stored, hints held, the
    /// version it runs): what the web console shows of each member
    /// (`crate::http` `/ui/api/nodes`). A node of an older version does
    /// not know it and answers an error, shown as "n/a".
    Figures,
}

/// The requests of cluster changes (see `crate::stream`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StreamRequest {
    /// The receiver's [`crate::cluster::Cluster::fingerprint`]: a change's
    /// driver waits until every live node places keys as it does.
    View,
    /// How many keys and bytes the receiver stores in `range` (a stream's
    /// estimate).
    Count {
        /// The token range.
        range: TokenRange,
    },
    /// One chunk of the receiver's entries of `range`, in token order,
    /// resuming strictly after the stored data key `after`.
    Chunk {
        /// The token range.
        range: TokenRange,
        /// The `next` of the previous chunk; `None` for the first.
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        /// Stop adding entries once the chunk holds this many bytes.
        max_bytes: u32,
    },
    /// Pull these ranges (the receiver gains them) for change `change`:
    /// starts the pull in the background if it is not running yet, and
    /// answers its state. Sent again to poll; idempotent.
    Pull {
        /// The change's id (names the persisted progress).
        change: String,
        /// The ranges, each with the nodes to stream it from.
        ranges: Vec<PullRange>,
    },
}

/// A range a node gains, and where to stream it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRange {
    /// The range.
    pub range: TokenRange,
    /// Current replicas holding it, in the order to try them (the node
    /// giving the range up first).
    pub sources: Vec<String>,
}

/// The answers to [`StreamRequest`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StreamResponse {
    /// Answer to [`StreamRequest::View`].
    View {
        /// The node's view fingerprint.
        fingerprint: u64,
        /// Keys it stores (0 in a cluster without data: no grace needed).
        keys: u64,
    },
    /// Answer to [`StreamRequest::Count`].
    Count {
        /// Keys stored in the range.
        keys: u64,
        /// Their encoded bytes.
        bytes: u64,
    },
    /// Answer to [`StreamRequest::Chunk`].
    Chunk {
        /// The entries, a MessagePack `Vec<RangeEntry>`.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        /// xxh3-64 of `payload`, checked by the receiver.
        checksum: u64,
        /// Where the next chunk starts; `None` when the range is done.
        #[serde(with = "serde_bytes")]
        next: Option<Vec<u8>>,
    },
    /// Answer to [`StreamRequest::Pull`].
    Pull(PullState),
}

/// Where a pull stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullState {
    /// Still streaming: ranges done so far, of how many.
    Running {
        /// Ranges finished.
        done: u32,
        /// Ranges in all.
        total: u32,
    },
    /// Every range streamed.
    Done {
        /// Keys received.
        keys: u64,
        /// Bytes received.
        bytes: u64,
    },
    /// The pull gave up (e.g. no source reachable); ask again to retry.
    Failed(String),
}

impl Request {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Write(_) => "write",
            Request::Replicate { .. } => "replicate",
            Request::Read { .. } => "read",
            Request::Bucket { .. } => "bucket",
            Request::Tree { .. } => "tree",
            Request::Entries { .. } => "entries",
            Request::Stream(StreamRequest::View) => "stream_view",
            Request::Stream(StreamRequest::Count { .. }) => "stream_count",
            Request::Stream(StreamRequest::Chunk { .. }) => "stream_chunk",
            Request::Stream(StreamRequest::Pull { .. }) => "stream_pull",
            Request::NodeTokens { .. } => "node_tokens",
            Request::Figures => "figures",
        }
    }
}

/// A forwarded client write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The bucket.
    pub bucket: String,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The client's causal context (empty: none).
    pub context: Context,
    /// The value or the deletion.
    pub mutation: Mutation,
    /// The bucket's properties as the first coordinator saw them.
    pub props: BucketProps,
    /// The write consistency.
    pub w: Consistency,
    /// How long the replica coordinator has to answer, in ms (a little
    /// less than the forwarder's own deadline, so that its detailed 504
    /// arrives before the forwarder gives up).
    pub timeout_ms: u32,
    /// Record a trace of the replica coordinator's work.
    pub trace: bool,
}

/// A key's versions as [`Dvvs::encode`] writes them, which is also the
/// form a replica stores. A replica answers a read with its stored bytes as
/// they are (from the row cache or storage), and a coordinator encodes a
/// write once and shares the bytes among every replica it sends them to,
/// instead of each of these decoding or encoding the object again. The
/// receiver decodes, which checks every invariant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encoded(bytes::Bytes);

impl Encoded {
    /// Encodes `object`.
    pub fn of(object: &Dvvs) -> Encoded {
        Encoded(object.encode().into())
    }

    /// The versions, checked.
    pub fn decode(&self) -> Result<Dvvs, VersionError> {
        Dvvs::decode(&self.0)
    }

    /// The encoding's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<Vec<u8>> for Encoded {
    fn from(bytes: Vec<u8>) -> Encoded {
        Encoded(bytes.into())
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.0.len())
    }
}

/// The answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::Write`].
    Written(WriteReply),
    /// Answer to [`Request::Replicate`] and [`Request::Bucket`]: stored.
    Ack,
    /// Answer to [`Request::Read`] with `digest: false`.
    Object(Option<Encoded>),
    /// Answer to [`Request::Read`] with `digest: true` (`None`: no versions).
    Digest(Option<u64>),
    /// Answer to [`Request::Tree`].
    Tree(MerkleTree),
    /// Answer to [`Request::Entries`].
    Entries {
        /// The page, in ring order.
        entries: Vec<RangeEntry>,
        /// Where the next page starts (pass as `after`); `None` when this
        /// page ended the range.
        #[serde(with = "serde_bytes")]
        next: Option<Vec<u8>>,
    },
    /// Answer to [`Request::Stream`].
    Stream(StreamResponse),
    /// Answer to [`Request::NodeTokens`]: empty when the node is unknown
    /// or owns no ranges.
    Tokens(Vec<quorumkv_ring::Token>),
    /// Answer to [`Request::Figures`].
    Figures(NodeFigures),
}

/// A node's own figures, as it reports them ([`Request::Figures`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFigures {
    /// Keys stored (tombstones included), as `qkv_keys_stored`.
    pub keys: i64,
    /// Bytes of stored versions, as `qkv_bytes_stored`.
    pub bytes: i64,
    /// Hints this node holds for other nodes, all targets together.
    pub hints_held: u64,
    /// The `qkvd` version it runs.
    pub version: String,
}

/// One stored key of a token range, as anti-entropy streams it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeEntry {
    /// The bucket.
    pub bucket: String,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Every version the replica stores for it.
    pub object: Dvvs,
}

/// What a replica coordinator answers to a forwarded write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteReply {
    /// The key's versions after the write, on the replica coordinator.
    pub object: Dvvs,
    /// Replicas that acknowledged in time.
    pub acks: u32,
    /// The replica coordinator's timeline, when asked for.
    pub trace: Vec<TraceEvent>,
}

/// One step of a coordinator's timeline (`?trace=true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Microseconds since the traced request started on the node that
    /// recorded the event.
    pub at_us: u64,
    /// The node that recorded it.
    pub node: String,
    /// What happened.
    pub event: String,
}

/// Why a request failed on the remote node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The replica's storage failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// The replica is shedding load.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The request's deadline passed on the replica.
    #[error("deadline passed on the replica")]
    Deadline,
    /// The replica could not make sense of the request.
    #[error("bad request: {0}")]
    Bad(String),
    /// The replica coordinator of a forwarded write could not complete it.
    #[error("{0}")]
    Quorum(QuorumError),
    /// The replica refused to merge: the key's versions would exceed its
    /// `--max-key-bytes` ([`QuorumError::KeyTooLarge`] on a coordinator).
    #[error("the key would hold {size} bytes of versions, over the replica's limit of {limit}")]
    KeyTooLarge {
        /// The key's stored size after the merge.
        size: u64,
        /// The replica's limit.
        limit: u64,
    },
    /// The answer encoded to more than the internode frame limit, so it
    /// was not sent (the request itself was served).
    #[error("answer of {bytes} bytes exceeds the internode frame limit of {limit}")]
    TooLarge {
        /// The answer's encoded size.
        bytes: u64,
        /// The frame limit.
        limit: u64,
    },
    /// The request's frame was over the receiver's internode frame limit
    /// (nodes of one cluster with different `--max-key-bytes`): it was
    /// read past, not run.
    #[error(
        "request of {bytes} bytes exceeds the receiving node's internode frame limit of {limit}; it was not run (do the nodes use the same --max-key-bytes?)"
    )]
    RequestTooLarge {
        /// The request's frame size.
        bytes: u64,
        /// The receiver's frame limit.
        limit: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::ReplicaFailure;

    #[test]
    fn quorum_errors_cross_the_wire_as_themselves() {
        let e = QuorumError::Timeout {
            required: 2,
            acks: 1,
            message: "1 of 2".into(),
            failed: vec![ReplicaFailure {
                node: "n3".into(),
                reason: "late".into(),
            }],
        };
        let bytes = rmp_serde::to_vec(&RemoteError::Quorum(e.clone())).expect("encode");
        let back: RemoteError = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, RemoteError::Quorum(e));
    }

    #[test]
    fn requests_round_trip_through_messagepack() {
        let req = Request::Read {
            bucket: "b".into(),
            key: vec![0, 255, 7],
            digest: true,
        };
        let bytes = rmp_serde::to_vec(&req).expect("encode");
        let back: Request = rmp_serde::from_slice(&bytes).expect("decode");
        assert!(matches!(back, Request::Read { ref key, digest: true, .. } if key == &[0, 255, 7]));
    }

    #[test]
    fn stream_messages_round_trip_through_messagepack() {
        let req = Request::Stream(StreamRequest::Pull {
            change: "join-n4-1".into(),
            ranges: vec![PullRange {
                range: TokenRange { start: 1, end: 9 },
                sources: vec!["n1".into()],
            }],
        });
        let bytes = rmp_serde::to_vec(&req).expect("encode");
        let back: Request = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back.kind(), "stream_pull");
        let resp = Response::Stream(StreamResponse::Chunk {
            payload: vec![1, 2, 3],
            checksum: 7,
            next: Some(vec![0; 9]),
        });
        let bytes = rmp_serde::to_vec(&resp).expect("encode");
        let back: Response = rmp_serde::from_slice(&bytes).expect("decode");
        assert!(matches!(
            back,
            Response::Stream(StreamResponse::Chunk { checksum: 7, next: Some(ref n), .. }) if n.len() == 9
        ));
    }

    #[test]
    fn repair_messages_round_trip_through_messagepack() {
        let range = TokenRange { start: 9, end: 3 };
        let req = Request::Entries {
            range,
            after: Some(vec![1, 2, 0, 3]),
            limit: 7,
            max_bytes: 1 << 20,
        };
        let bytes = rmp_serde::to_vec(&req).expect("encode");
        let back: Request = rmp_serde::from_slice(&bytes).expect("decode");
        assert!(
            matches!(back, Request::Entries { range: r, after: Some(ref a), limit: 7, max_bytes: 1_048_576 } if r == range && a == &[1, 2, 0, 3])
        );
        let tree = MerkleTree::build(range, 3, []).expect("tree");
        let resp = Response::Tree(tree.clone());
        let bytes = rmp_serde::to_vec(&resp).expect("encode");
        let back: Response = rmp_serde::from_slice(&bytes).expect("decode");
        assert!(matches!(back, Response::Tree(t) if t == tree));
        let resp = Response::Entries {
            entries: vec![RangeEntry {
                bucket: "b".into(),
                key: vec![0, 1],
                object: Dvvs::new(),
            }],
            next: None,
        };
        let bytes = rmp_serde::to_vec(&resp).expect("encode");
        let back: Response = rmp_serde::from_slice(&bytes).expect("decode");
        assert!(
            matches!(back, Response::Entries { ref entries, next: None } if entries.len() == 1)
        );
    }
}
