//! Cluster changes: moving data when the ring changes.
//!
//! # What happens
//!
//! A change is one node **joining** (it announces `joining` with its
//! tokens), one node **leaving** (`POST /cluster/decommission`: it
//! announces `leaving`), or one dead node **being removed**
//! (`POST /cluster/removenode` on a live node, which gossips the removal
//! under its own state, see [`crate::cluster::REMOVING`]). Each node's
//! cluster view then holds the *future* ring, and coordinators send every
//! write to the key's pending owners too, needing one more acknowledgement
//! per pending owner ([`crate::coordinator`]).
//!
//! The node that drives the change ([`driver`]: the joining node, the
//! leaving node, or the remover) then:
//!
//! 1. waits until every live member places keys as it does (their
//!    [`crate::cluster::Cluster::fingerprint`]s match its own, asked with
//!    [`StreamRequest::View`]) — from then on every coordinator writes to
//!    the pending owners — plus a grace of the node's request timeout, so
//!    that writes placed with the old view have landed (skipped when the
//!    cluster stores no key at all);
//! 2. computes, for every replication factor in use (the default `n` and
//!    every bucket's), which ranges each node gains
//!    ([`plan::gains`], from [`quorumkv_ring::plan`]) and from whom: the
//!    node giving the range up first, then the other current replicas;
//! 3. tells each gaining node to pull its ranges ([`StreamRequest::Pull`],
//!    idempotent, polled until done — the gaining node may be itself);
//! 4. finishes: the joining node announces `normal`; the leaving node lets
//!    its hints drain and announces `left`; the remover moves the node from
//!    `removing` to `removed`. The ring drops or adds the node everywhere.
//!
//! **Pulling** ([`pull`]) is the receiving side's job, so that it is the
//! receiver that reports streams (`GET /cluster/changes`) and resumes
//! them. A range is read from its source with token-ordered, paged
//! [`StreamRequest::Chunk`]s (about [`pull::CHUNK_BYTES`] each, with an
//! xxh3 checksum verified on receipt), each entry merged with
//! [`crate::replica::Replica::merge`] (DVVSet sync: idempotent, so a key
//! received twice, or also written meanwhile, is merged, not overwritten),
//! paced by `--stream-bytes-per-sec`. After every chunk the position (the
//! last stored key) is persisted in the meta partition under
//! `stream/<change>/<range>`, so a restarted node resumes where it stopped.
//! A source that fails is replaced by the next live one, from the same
//! position (positions are data keys, the same on every replica).
//!
//! # Implementation caveats
//!
//! * One change at a time: a second join, decommission or removenode while
//!   one is in flight is refused with 409 `conflict` (auto-joining nodes
//!   wait for their turn instead). Cleanup is refused while a change is in
//!   flight.
//! * A write placed with the old view (before this node learned of the
//!   change) that lands on its replicas later than the grace after every
//!   node agreed may miss the stream; the write still reached W current
//!   replicas, and read repair or anti-entropy copy it over.
//! * A gaining node that is down stalls the change until it returns (the
//!   driver keeps polling it). A driver that crashes resumes at restart
//!   (the change is persisted in the meta partition); a remover that never
//!   returns leaves the removal in flight: remove it too, or restart it.
//! * On decommission, hints for live nodes are replayed before `left`;
//!   hints for nodes that are down are handed to live nodes
//!   ([`handoff`]), which deliver them when their target returns. Only a
//!   hint no live node takes stays behind (anti-entropy repairs it).
//! * One entry larger than the transport's frame limit (4 MiB) cannot be
//!   streamed: keep `--max-value-bytes` below it.

pub mod cleanup;
pub mod driver;
pub mod handoff;
pub mod plan;
pub mod pull;
pub mod serve;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorumkv_gossip::driver::Handle;
use quorumkv_ring::TokenRange;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

pub use crate::proto::{PullRange, PullState, StreamRequest, StreamResponse};

use crate::buckets::Buckets;
use crate::cluster::Cluster;
use crate::hints::Hints;
use crate::replica::Replica;
use crate::storage::{StorageError, Store};
use crate::tasks::Tasks;
use crate::throttle::Throttle;
use crate::transport::Peers;

/// Why a cluster change, a pull or a cleanup could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not now: another change is in flight, or this node is not in a
    /// state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// The change names a member that does not exist.
    #[error("{0}")]
    NoMember(String),
    /// This node's storage failed.
    #[error("this node could not use its storage: {0}")]
    Storage(#[from] StorageError),
    /// Gossip did not take this node's announcement.
    #[error("{0}")]
    Announce(String),
    /// A peer did not do what it was asked.
    #[error("{node}: {error}")]
    Peer {
        /// The peer.
        node: String,
        /// What happened.
        error: crate::transport::PeerError,
    },
    /// A peer answered something that does not fit the request.
    #[error("{node} {why}")]
    Protocol {
        /// The peer.
        node: String,
        /// What was wrong.
        why: String,
    },
    /// A change id that does not parse.
    #[error("bad change id {0:?}")]
    BadChange(String),
    /// No source could stream a range.
    #[error("no source could stream {range}: {last}")]
    NoSource {
        /// The range.
        range: TokenRange,
        /// The last source's failure.
        last: String,
    },
}

/// The change driver's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The replica count of buckets without one of their own
    /// (`--default-n`): its ranges move too.
    pub default_n: u32,
    /// The request timeout (`--timeout-ms`): how long writes placed with
    /// an old view may take to land before streaming starts.
    pub timeout: Duration,
    /// How fast this node receives streams (`--stream-bytes-per-sec`).
    pub stream_bytes_per_sec: u64,
}

/// What a [`ChangeDriver`] works with.
pub struct Parts {
    /// This node's copy of the data (and its store, where changes persist).
    pub replica: Arc<Replica>,
    /// Members, rings (current and future) and liveness.
    pub cluster: Arc<Cluster>,
    /// Bucket properties (the replica counts whose ranges move).
    pub buckets: Arc<Buckets>,
    /// Hints a leaving node drains or hands over.
    pub hints: Arc<Hints>,
    /// The other nodes.
    pub peers: Arc<dyn Peers>,
    /// Where changes are announced: this node's gossip state.
    pub gossip: Handle,
    /// Where changes and pulls run.
    pub tasks: Tasks,
}

/// Cluster changes as this node takes part in them: the change it drives
/// (join, decommission, removenode), the pulls it runs as a gaining node,
/// the chunks it serves as a source, and cleanup.
pub struct ChangeDriver {
    changes: Changes,
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    buckets: Arc<Buckets>,
    hints: Arc<Hints>,
    peers: Arc<dyn Peers>,
    gossip: Handle,
    tasks: Tasks,
    throttle: Throttle,
    options: Options,
}

impl ChangeDriver {
    /// A driver over `parts`.
    pub fn new(parts: Parts, options: Options) -> Arc<ChangeDriver> {
        Arc::new(ChangeDriver {
            changes: Changes::default(),
            replica: parts.replica,
            cluster: parts.cluster,
            buckets: parts.buckets,
            hints: parts.hints,
            peers: parts.peers,
            gossip: parts.gossip,
            tasks: parts.tasks,
            // A chunk's worth may go at once after a pause.
            throttle: Throttle::starting_now(
                options.stream_bytes_per_sec.max(1),
                Duration::from_millis(100),
            ),
            options,
        })
    }

    /// What this node knows of changes: the claim, records, pulls.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }
}

/// The kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A node joins the ring.
    Join,
    /// A live node leaves it.
    Decommission,
    /// A dead node is removed from it.
    Removenode,
}

impl Kind {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Join => "join",
            Kind::Decommission => "decommission",
            Kind::Removenode => "removenode",
        }
    }

    /// The state a change of this kind is in while in flight.
    fn in_flight_state(self) -> &'static str {
        match self {
            Kind::Join => "joining",
            Kind::Decommission => "leaving",
            Kind::Removenode => "removing",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "join" => Some(Kind::Join),
            "decommission" => Some(Kind::Decommission),
            "removenode" => Some(Kind::Removenode),
            _ => None,
        }
    }
}

/// A change a node drives, as persisted in the meta partition (so that a
/// restarted driver resumes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// What kind.
    pub kind: Kind,
    /// The node joining, leaving or being removed.
    pub node: String,
    /// When it started.
    pub started_ms: u64,
}

impl Saved {
    /// The change's id: names its persisted stream positions everywhere.
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.kind.as_str(), self.node, self.started_ms)
    }

    /// Parses [`Saved::id`].
    pub fn parse_id(id: &str) -> Option<Saved> {
        let mut parts = id.splitn(3, ':');
        let kind = Kind::parse(parts.next()?)?;
        let node = parts.next()?.to_string();
        let started_ms = parts.next()?.parse().ok()?;
        Some(Saved {
            kind,
            node,
            started_ms,
        })
    }
}

const SAVED_KEY: &str = "cluster_change";
const LEFT_KEY: &str = "left";
const REMOVED_KEY: &str = "removed";

/// The change this node drives, if one was in flight when it stopped.
pub fn saved(store: &Store) -> Result<Option<Saved>, StorageError> {
    Ok(store
        .meta_get(SAVED_KEY)?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

async fn save(store: &Store, s: Option<&Saved>) -> Result<(), StorageError> {
    let bytes = s
        .map(|s| serde_json::to_vec(s).unwrap_or_default())
        .unwrap_or_default();
    store.meta_put(SAVED_KEY, bytes).await
}

/// Whether this node has left the ring (decommissioned) for good.
pub fn has_left(store: &Store) -> Result<bool, StorageError> {
    Ok(store.meta_get(LEFT_KEY)?.is_some_and(|b| b == b"1"))
}

/// The nodes this node removed (it announces them again after a restart).
pub fn removed_by_me(store: &Store) -> Result<Vec<String>, StorageError> {
    Ok(store
        .meta_get(REMOVED_KEY)?
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default())
}

/// One stream this node runs as the receiving side.
#[derive(Debug)]
pub struct Stream {
    /// The range.
    pub range: TokenRange,
    /// This node.
    pub to: String,
    from: Mutex<String>,
    keys: AtomicU64,
    bytes: AtomicU64,
    estimate: AtomicU64,
    done: AtomicBool,
}

impl Stream {
    fn new(range: TokenRange, to: &str) -> Stream {
        Stream {
            range,
            to: to.to_string(),
            from: Mutex::new(String::new()),
            keys: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            estimate: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }

    fn json(&self) -> Json {
        json!({
            "range": {"start": self.range.start, "end": self.range.end},
            "from": *self.from.lock().unwrap_or_else(|p| p.into_inner()),
            "to": self.to,
            "keys": self.keys.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
            "bytes_estimate": self.estimate.load(Ordering::Relaxed),
            "done": self.done.load(Ordering::Relaxed),
        })
    }
}

/// A change as `GET /cluster/changes` shows it.
#[derive(Debug)]
struct Record {
    node: String,
    kind: Kind,
    state: &'static str,
    started_ms: u64,
    finished_ms: Option<u64>,
    streams: Vec<Arc<Stream>>,
}

/// Records of finished changes kept for `GET /cluster/changes`.
const KEEP_DONE: usize = 16;

/// This node's part in cluster changes: the change it drives, the pulls it
/// runs, and what it knows of changes in flight.
#[derive(Default)]
pub struct Changes {
    /// The id of the change this node drives (or the cleanup it runs).
    active: Mutex<Option<String>>,
    records: Mutex<Vec<Record>>,
    pulls: Mutex<HashMap<String, Arc<Mutex<PullState>>>>,
}

impl Changes {
    /// Claims the right to drive `id` on this node: `Err` with what is in
    /// flight when a change is (here or, per `cluster`, anywhere).
    pub fn claim(&self, cluster: &Cluster, id: &str) -> Result<(), Error> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = active.as_ref() {
            return Err(Error::Conflict(format!("{a} is in flight on this node")));
        }
        if let Some(f) = cluster.in_flight().first() {
            return Err(Error::Conflict(format!(
                "{} of {} is in flight (driven by {})",
                f.kind, f.node, f.by
            )));
        }
        *active = Some(id.to_string());
        Ok(())
    }

    /// Takes over `id` at restart (no check: it was claimed before).
    fn resume(&self, id: &str) {
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
    }

    /// Releases the claim of [`Changes::claim`].
    pub fn release(&self) {
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether this node drives a change or runs a cleanup.
    pub fn busy(&self) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Notes a change (starting it if unknown), for the report.
    fn note(&self, node: &str, kind: Kind, started_ms: u64) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        match records
            .iter_mut()
            .find(|r| r.node == node && r.kind == kind && r.finished_ms.is_none())
        {
            Some(r) => r.started_ms = r.started_ms.min(started_ms),
            None => records.push(Record {
                node: node.to_string(),
                kind,
                state: kind.in_flight_state(),
                started_ms,
                finished_ms: None,
                streams: Vec::new(),
            }),
        }
    }

    /// Adds a stream this node receives to its change's record.
    fn add_stream(&self, change: &Saved, stream: Arc<Stream>) {
        self.note(&change.node, change.kind, change.started_ms);
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = records
            .iter_mut()
            .rev()
            .find(|r| r.node == change.node && r.kind == change.kind)
        {
            r.streams.retain(|s| s.range != stream.range);
            r.streams.push(stream);
        }
    }

    /// Updates the records from the cluster view: changes in flight are
    /// noted, changes no longer in flight are done. Returns whether none
    /// is in flight any more (stream positions may then be dropped).
    pub fn observe(&self, cluster: &Cluster) -> bool {
        let now = crate::clock::unix_ms();
        let in_flight = cluster.in_flight();
        for f in &in_flight {
            if let Some(kind) = Kind::parse(f.kind) {
                self.note(&f.node, kind, now);
            }
        }
        let driving = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .and_then(|id| Saved::parse_id(&id));
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        for r in records.iter_mut().filter(|r| r.finished_ms.is_none()) {
            let still = in_flight
                .iter()
                .any(|f| f.node == r.node && f.kind == r.kind.as_str())
                || driving
                    .as_ref()
                    .is_some_and(|d| d.node == r.node && d.kind == r.kind);
            if !still {
                r.state = "done";
                r.finished_ms = Some(now);
            }
        }
        let done = records.iter().filter(|r| r.finished_ms.is_some()).count();
        if done > KEEP_DONE {
            let mut drop = done - KEEP_DONE;
            records.retain(|r| {
                if drop > 0 && r.finished_ms.is_some() {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
        in_flight.is_empty() && driving.is_none()
    }

    /// The body of `GET /cluster/changes`.
    pub fn report(&self, me: &str) -> Json {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let changes: Vec<Json> = records
            .iter()
            .map(|r| {
                json!({
                    "node": r.node,
                    "kind": r.kind.as_str(),
                    "state": r.state,
                    "started_unix_ms": r.started_ms,
                    "finished_unix_ms": r.finished_ms,
                    "streams": r.streams.iter().map(|s| s.json()).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({"node": me, "changes": changes})
    }

    /// `(streams not done, their bytes so far, their sources' estimate)`
    /// over every record: the figures of `/metrics`, read from what
    /// [`Changes::report`] shows without building it.
    pub fn stream_totals(&self) -> (u64, u64, u64) {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let (mut active, mut bytes, mut expected) = (0u64, 0u64, 0u64);
        for s in records
            .iter()
            .flat_map(|r| &r.streams)
            .filter(|s| !s.done.load(Ordering::Relaxed))
        {
            active += 1;
            bytes += s.bytes.load(Ordering::Relaxed);
            expected += s.estimate.load(Ordering::Relaxed);
        }
        (active, bytes, expected)
    }
}

/// Drops every persisted stream position (once no change is in flight).
pub async fn forget_positions(store: &Store) -> Result<(), StorageError> {
    use crate::storage::{Op, Partition};
    loop {
        let rows = store.raw_scan(Partition::Meta, b"stream/", Some(b"stream0"), 1024)?;
        if rows.is_empty() {
            return Ok(());
        }
        let ops = rows
            .into_iter()
            .map(|(key, _)| Op::Delete {
                partition: Partition::Meta,
                key,
            })
            .collect();
        store.write(ops).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids_round_trip() {
        let s = Saved {
            kind: Kind::Removenode,
            node: "n-5.a_b".into(),
            started_ms: 1234,
        };
        assert_eq!(s.id(), "removenode:n-5.a_b:1234");
        assert_eq!(Saved::parse_id(&s.id()), Some(s));
        assert_eq!(Saved::parse_id("nope:n1:1"), None);
        assert_eq!(Saved::parse_id("join:n1"), None);
    }

    #[test]
    fn stream_totals_count_the_streams_not_done() {
        let changes = Changes::default();
        assert_eq!(changes.stream_totals(), (0, 0, 0));
        let change = Saved {
            kind: Kind::Join,
            node: "n4".into(),
            started_ms: 9,
        };
        let running = Arc::new(Stream::new(TokenRange { start: 1, end: 2 }, "n1"));
        running.bytes.store(10, Ordering::Relaxed);
        running.estimate.store(40, Ordering::Relaxed);
        let finished = Arc::new(Stream::new(TokenRange { start: 2, end: 3 }, "n1"));
        finished.bytes.store(7, Ordering::Relaxed);
        finished.estimate.store(7, Ordering::Relaxed);
        finished.done.store(true, Ordering::Relaxed);
        changes.add_stream(&change, running);
        changes.add_stream(&change, finished);
        assert_eq!(changes.stream_totals(), (1, 10, 40));
    }

    #[tokio::test]
    async fn saved_changes_and_positions_persist_and_go() {
        let store = Store::memory();
        assert_eq!(saved(&store).expect("read"), None);
        let s = Saved {
            kind: Kind::Join,
            node: "n4".into(),
            started_ms: 9,
        };
        save(&store, Some(&s)).await.expect("save");
        assert_eq!(saved(&store).expect("read"), Some(s));
        save(&store, None).await.expect("clear");
        assert_eq!(saved(&store).expect("read"), None);
        store
            .meta_put("stream/join:n4:9/1-2", b"x".to_vec())
            .await
            .expect("put");
        store.meta_put("tokens", b"y".to_vec()).await.expect("put");
        forget_positions(&store).await.expect("forget");
        assert_eq!(store.meta_get("stream/join:n4:9/1-2").expect("get"), None);
        assert!(store.meta_get("tokens").expect("get").is_some());
    }
}
