//! Anti-entropy repair on demand: the replicas of every range this node
//! holds compare Merkle trees and exchange what differs.
//!
//! # Where it fits
//!
//! Read repair heals keys somebody reads; hinted handoff heals writes a
//! coordinator knew a replica missed. Neither heals a replica that was down
//! with hints off (or past the hint window), nor a key nobody reads. This
//! module does: [`repair_node`] (behind `POST /internal/repair` and
//! `qkv repair`) walks every token range of the ring that this node
//! replicates and, for each other live replica of it, runs [`repair_with`]:
//!
//! 1. build this node's [`MerkleTree`] of the range and ask the peer for
//!    its own ([`Request::Tree`]) at the same depth;
//! 2. for each differing sub-range ([`MerkleTree::diff`], adjacent leaves
//!    coalesced), pull the peer's entries page by page
//!    ([`Request::Entries`]) and merge every entry whose digest differs
//!    from ours into this node ([`crate::replica::Replica::merge`], DVVSet
//!    `sync`);
//! 3. then scan our own copy of that sub-range (now the union) and push
//!    every entry the peer did not hold exactly to it with
//!    [`Request::Replicate`].
//!
//! After one pass both sides hold `sync(ours, theirs)` for every key of the
//! range: merging is idempotent and commutative, so a key changed by a
//! concurrent write meanwhile is merged, not overwritten, and running repair
//! twice (or from both ends at once) is harmless. Tombstones travel like
//! any other version, so a replica that missed a delete gets the tombstone
//! and the value cannot come back.
//!
//! # Choices
//!
//! * **Replication factor.** The ranges are those of the ring at the
//!   node's default `n` (`--default-n`). A bucket with a larger `n` has
//!   replicas beyond those; they are not compared yet (follow-up: repair
//!   per distinct bucket `n`). A bucket with a smaller `n` is still
//!   correct: keys merge only into nodes that already hold a copy or are
//!   among the first `default_n` replicas (an extra copy on a node that is
//!   not one of its `n` replicas is harmless but costs space).
//! * **Depth.** [`DEFAULT_DEPTH`] = 10: 1,024 leaves per range, 16 KiB of
//!   hashes and counts on the wire per tree. A node holding 1/16 of 10^8
//!   keys over 16 vnodes has ~400k keys per range, ~400 per leaf: one
//!   changed key costs a scan and exchange of ~400 entries, not 400k.
//! * **Failures.** A peer that fails (down, timeout, storage error) is
//!   reported in its [`PeerReport::errors`] and skipped for the rest of the
//!   pass; the other peers are still repaired. Only this node's own storage
//!   failing makes a range fail outright, and that too is reported.
//! * **Caveats.** The peer's digests of one differing sub-range are held in
//!   memory (a few dozen bytes per key; a whole range when everything
//!   differs, e.g. a replica that lost its disk). There is no throttling
//!   and no scheduler yet: repair runs when asked, at full speed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorumkv_ring::TokenRange;
use serde::Serialize;

use crate::merkle::scan::{decode_entry, spans};
use crate::merkle::{MerkleTree, build_from_store};
use crate::peers::{PeerError, call};
use crate::proto::{RangeEntry, Request, Response};
use crate::server::Node;
use crate::storage::{StorageError, Store};

/// Merkle tree depth used by [`repair_node`]: 2^10 leaves per range.
pub const DEFAULT_DEPTH: u8 = 10;
/// Entries per [`Request::Entries`] page.
pub const PAGE: u32 = 256;
/// How long a peer may take to build and send a tree.
const TREE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a peer may take to answer one page of entries.
const ENTRIES_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one pushed key may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why repairing one range with one peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// This node's storage failed.
    #[error("local storage: {0}")]
    Local(String),
    /// The peer failed or did not answer.
    #[error("peer {peer}: {error}")]
    Peer {
        /// The peer.
        peer: String,
        /// What happened.
        error: PeerError,
    },
    /// The peer answered something that does not fit the request.
    #[error("peer {peer}: {why}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What was wrong.
        why: String,
    },
}

impl RepairError {
    /// Whether the peer itself failed (so the rest of the pass skips it).
    fn peer_failed(&self) -> bool {
        !matches!(self, RepairError::Local(_))
    }
}

/// What repairing one range with one peer did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RangeReport {
    /// Leaves of the trees whose hashes differed.
    pub leaves_differing: u64,
    /// Keys merged into this node because the peer's copy differed.
    pub keys_received: u64,
    /// Keys pushed to the peer because its copy differed.
    pub keys_sent: u64,
    /// Encoded version-set bytes received.
    pub bytes_received: u64,
    /// Encoded version-set bytes sent.
    pub bytes_sent: u64,
}

impl RangeReport {
    fn add(&mut self, o: &RangeReport) {
        self.leaves_differing += o.leaves_differing;
        self.keys_received += o.keys_received;
        self.keys_sent += o.keys_sent;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
    }
}

/// One peer's share of a repair pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerReport {
    /// Ranges compared with it successfully.
    pub ranges_compared: u64,
    /// Ranges where its tree differed from ours.
    pub ranges_differing: u64,
    /// Totals over those ranges.
    #[serde(flatten)]
    pub totals: RangeReport,
    /// Ranges not compared because it had failed or was down.
    pub ranges_skipped: u64,
    /// What went wrong (at most one per range tried).
    pub errors: Vec<String>,
}

/// What a repair pass of this node did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// This node.
    pub node: String,
    /// The replication factor whose ranges were compared (`--default-n`).
    pub n: u32,
    /// Merkle tree depth requested.
    pub depth: u8,
    /// Ranges of the ring this node replicates.
    pub ranges: u64,
    /// (range, peer) pairs compared successfully.
    pub ranges_compared: u64,
    /// (range, peer) pairs whose trees differed.
    pub ranges_differing: u64,
    /// Totals over every peer.
    #[serde(flatten)]
    pub totals: RangeReport,
    /// Wall time of the pass, in ms.
    pub duration_ms: u64,
    /// Per peer, in id order.
    pub peers: BTreeMap<String, PeerReport>,
    /// Number of errors over every peer (details under `peers`).
    pub errors: u64,
}

/// Runs one repair pass: every range this node replicates at the default
/// `n`, with every other live replica of it. See the module docs.
pub async fn repair_node(node: &Arc<Node>) -> RepairReport {
    let started = Instant::now();
    let me = node.replica.id().to_string();
    let n = node.config.default_n;
    let ring = node.cluster.ring();
    let mut report = RepairReport {
        node: me.clone(),
        n,
        depth: DEFAULT_DEPTH,
        ..RepairReport::default()
    };
    // Peers that failed in this pass: the rest of their ranges would only
    // cost a timeout each.
    let mut failed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for rr in ring.ranges(n as usize) {
        if !rr.replicas.contains(&me) {
            continue;
        }
        report.ranges += 1;
        for peer in rr.replicas.iter().filter(|r| **r != me) {
            let entry = report.peers.entry(peer.clone()).or_default();
            if failed.contains(peer) {
                entry.ranges_skipped += 1;
                continue;
            }
            if !node.cluster.is_alive(peer) {
                entry.ranges_skipped += 1;
                entry.errors.push(format!("{peer} is down"));
                failed.insert(peer.clone());
                continue;
            }
            match repair_with(node, peer, rr.range, DEFAULT_DEPTH).await {
                Ok(r) => {
                    entry.ranges_compared += 1;
                    if r.leaves_differing > 0 {
                        entry.ranges_differing += 1;
                    }
                    entry.totals.add(&r);
                }
                Err(e) => {
                    tracing::warn!(%peer, range = %rr.range, error = %e, "repair of a range failed");
                    // Our own storage failing is not the peer's fault: keep
                    // trying it on the other ranges.
                    if e.peer_failed() {
                        failed.insert(peer.clone());
                    }
                    entry.errors.push(format!("range {}: {e}", rr.range));
                }
            }
        }
    }
    for p in report.peers.values() {
        report.ranges_compared += p.ranges_compared;
        report.ranges_differing += p.ranges_differing;
        report.totals.add(&p.totals);
        report.errors += p.errors.len() as u64;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        ranges = report.ranges,
        compared = report.ranges_compared,
        leaves_differing = report.totals.leaves_differing,
        keys_received = report.totals.keys_received,
        keys_sent = report.totals.keys_sent,
        errors = report.errors,
        ms = report.duration_ms,
        "repair pass done"
    );
    let m = &node.metrics;
    m.repair_passes.inc();
    m.repair_leaves_differing
        .inc_by(report.totals.leaves_differing);
    for (direction, keys) in [
        ("received", report.totals.keys_received),
        ("sent", report.totals.keys_sent),
    ] {
        m.repair_keys
            .get_or_create(&crate::metrics::DirectionLabels { direction })
            .inc_by(keys);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    m.repair_last_pass.set(now);
    report
}

/// Runs [`repair_node`] every `interval` until `stop` turns true (or its
/// sender goes). The first pass waits one interval plus a random part of
/// another, so that nodes started together do not all compare trees at
/// once and a freshly started node serves before it repairs; a pass
/// already running when `stop` turns is abandoned (repair is idempotent:
/// the next pass redoes what it did not finish).
pub async fn run_scheduler(
    node: std::sync::Weak<Node>,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = interval + interval.mul_f64(rand::random::<f64>());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        wait = interval;
        let Some(node) = node.upgrade() else { return };
        tokio::select! {
            _ = repair_node(&node) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Repairs `range` between this node and `peer`: compare trees at `depth`,
/// then exchange the entries of the differing sub-ranges both ways.
pub async fn repair_with(
    node: &Arc<Node>,
    peer: &str,
    range: TokenRange,
    depth: u8,
) -> Result<RangeReport, RepairError> {
    let store = node.replica.store().clone();
    let local = blocking(move || build_from_store(&store, range, depth)).await?;
    let remote = match rpc(node, peer, Request::Tree { range, depth }, TREE_TIMEOUT).await? {
        Response::Tree(t) => t,
        other => return Err(unexpected(peer, "a tree", &other)),
    };
    let diff_leaves = local
        .diff_leaves(&remote)
        .map_err(|e| protocol(peer, e.to_string()))?;
    let mut report = RangeReport {
        leaves_differing: diff_leaves.len() as u64,
        ..RangeReport::default()
    };
    if diff_leaves.is_empty() {
        return Ok(report);
    }
    let sub_ranges = local
        .diff(&remote)
        .map_err(|e| protocol(peer, e.to_string()))?;
    for sub in sub_ranges {
        exchange(node, peer, sub, &mut report).await?;
    }
    Ok(report)
}

/// Makes this node and `peer` agree on `sub`: pull and merge what differs
/// there, then push what it lacks here.
async fn exchange(
    node: &Arc<Node>,
    peer: &str,
    sub: TokenRange,
    report: &mut RangeReport,
) -> Result<(), RepairError> {
    // Pull. Keep the peer's digest of every key so that the push below
    // sends only what the peer does not already hold exactly.
    let mut theirs: HashMap<(String, Vec<u8>), u64> = HashMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let req = Request::Entries {
            range: sub,
            after: after.clone(),
            limit: PAGE,
        };
        let (entries, next) = match rpc(node, peer, req, ENTRIES_TIMEOUT).await? {
            Response::Entries { entries, next } => (entries, next),
            other => return Err(unexpected(peer, "entries", &other)),
        };
        for e in entries {
            let token = quorumkv_ring::token_of(e.bucket.as_bytes(), &e.key);
            if !sub.contains(token) {
                return Err(protocol(
                    peer,
                    format!("sent a key at token {token}, outside {sub}"),
                ));
            }
            let digest = e.object.digest();
            let ours = node
                .replica
                .read(&e.bucket, &e.key)
                .map_err(|err| RepairError::Local(err.to_string()))?;
            if ours.map(|o| o.digest()) != Some(digest) {
                let props = node.buckets.props_for_keys(&e.bucket);
                node.replica
                    .merge(&e.bucket, &e.key, &e.object, props.conflicts)
                    .await
                    .map_err(|err| RepairError::Local(err.to_string()))?;
                report.keys_received += 1;
                report.bytes_received += e.object.encode().len() as u64;
            }
            theirs.insert((e.bucket, e.key), digest);
        }
        match next {
            // A peer that answers the same cursor again would loop forever.
            Some(n) if Some(&n) != after.as_ref() => after = Some(n),
            Some(_) => return Err(protocol(peer, "paging did not advance".into())),
            None => break,
        }
    }
    // Push: our copy of `sub` now holds the union; send every key whose
    // digest differs from what the peer showed us.
    let mut after: Option<Vec<u8>> = None;
    loop {
        let store = node.replica.store().clone();
        let cursor = after.take();
        let (page, next) =
            blocking(move || entries_page(&store, sub, cursor.as_deref(), PAGE as usize)).await?;
        for e in page {
            let digest = e.object.digest();
            if theirs.get(&(e.bucket.clone(), e.key.clone())) == Some(&digest) {
                continue;
            }
            let bytes = e.object.encode().len() as u64;
            let req = Request::Replicate {
                bucket: e.bucket,
                key: e.key,
                object: e.object,
                hint_for: None,
            };
            match rpc(node, peer, req, PUSH_TIMEOUT).await? {
                Response::Ack => {}
                other => return Err(unexpected(peer, "an ack", &other)),
            }
            report.keys_sent += 1;
            report.bytes_sent += bytes;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(())
}

/// One page of the entries this node stores in `range`, in ring order,
/// resuming strictly after the stored data key `after`; and the cursor of
/// the next page (`None` when the range is exhausted). What
/// [`Request::Entries`] answers.
///
/// A stored value that is not a version set is [`StorageError::Corrupt`].
pub fn entries_page(
    store: &Store,
    range: TokenRange,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<RangeEntry>, Option<Vec<u8>>), StorageError> {
    let limit = limit.max(1);
    let spans = spans(range);
    // The cursor's token says which span it is in: spans before it are
    // done, the cursor applies to its own span only.
    let mut first = 0;
    if let Some(a) = after {
        let token = crate::storage::decode_data_key(a)
            .map(|(t, _, _)| t)
            .ok_or_else(|| StorageError::Corrupt("repair cursor is not a data key".into()))?;
        match spans
            .iter()
            .position(|&(lo, hi)| lo <= token && token <= hi)
        {
            Some(i) => first = i,
            None => return Ok((Vec::new(), None)),
        }
    }
    let mut out: Vec<RangeEntry> = Vec::new();
    let mut last_key: Option<Vec<u8>> = None;
    for (i, &(lo, hi)) in spans.iter().enumerate().skip(first) {
        let cursor = if i == first { after } else { None };
        let want = limit - out.len();
        let page = store.scan_tokens(lo, hi, cursor, want)?;
        let full = page.len() == want;
        for e in page {
            let object = decode_entry(&e)?;
            last_key = Some(e.stored_key());
            out.push(RangeEntry {
                bucket: e.bucket,
                key: e.key,
                object,
            });
        }
        if full {
            // The page is full: there may be more in this span or the next.
            return Ok((out, last_key));
        }
    }
    Ok((out, None))
}

/// The tree [`Request::Tree`] answers: built off the async runtime, since
/// it scans the whole range.
pub async fn serve_tree(
    node: &Node,
    range: TokenRange,
    depth: u8,
) -> Result<MerkleTree, StorageError> {
    let store = node.replica.store().clone();
    flatten(tokio::task::spawn_blocking(move || build_from_store(&store, range, depth)).await)
}

/// The page [`Request::Entries`] answers, read off the async runtime.
pub async fn serve_entries(
    node: &Node,
    range: TokenRange,
    after: Option<Vec<u8>>,
    limit: u32,
) -> Result<(Vec<RangeEntry>, Option<Vec<u8>>), StorageError> {
    let store = node.replica.store().clone();
    // A peer may ask for any limit; cap what one frame carries.
    let limit = (limit as usize).clamp(1, 4 * PAGE as usize);
    flatten(
        tokio::task::spawn_blocking(move || entries_page(&store, range, after.as_deref(), limit))
            .await,
    )
}

fn flatten<T>(
    r: Result<Result<T, StorageError>, tokio::task::JoinError>,
) -> Result<T, StorageError> {
    r.map_err(|e| StorageError::Corrupt(format!("storage task failed: {e}")))?
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, RepairError> {
    flatten(tokio::task::spawn_blocking(f).await).map_err(|e| RepairError::Local(e.to_string()))
}

async fn rpc(
    node: &Node,
    peer: &str,
    req: Request,
    timeout: Duration,
) -> Result<Response, RepairError> {
    call(node, peer, req, timeout)
        .await
        .map_err(|error| RepairError::Peer {
            peer: peer.to_string(),
            error,
        })
}

fn protocol(peer: &str, why: String) -> RepairError {
    RepairError::Protocol {
        peer: peer.to_string(),
        why,
    }
}

fn unexpected(peer: &str, wanted: &str, got: &Response) -> RepairError {
    let kind = match got {
        Response::Pong => "pong",
        Response::Written(_) => "a write reply",
        Response::Ack => "an ack",
        Response::Object(_) => "an object",
        Response::Digest(_) => "a digest",
        Response::Tree(_) => "a tree",
        Response::Entries { .. } => "entries",
        Response::Stream(_) => "a stream answer",
        Response::Tokens(_) => "tokens",
    };
    protocol(peer, format!("answered {kind} where {wanted} was expected"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::hlc::Timestamp;
    use crate::version::{Context, Dvvs, value::Value};

    fn dvvs(data: &str) -> Dvvs {
        let mut d = Dvvs::new();
        d.update(
            &Context::new(),
            "n1",
            Value::live(data.as_bytes(), "text/plain", Timestamp::new(1, 0)),
        );
        d
    }

    async fn store_with(n: usize) -> Store {
        let store = Store::memory();
        for i in 0..n {
            let key = format!("key-{i}");
            store
                .put("b", key.as_bytes(), dvvs(&key).encode())
                .await
                .expect("put");
        }
        store
    }

    /// Every key of `range`, by paging with `limit`.
    fn page_through(store: &Store, range: TokenRange, limit: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (page, next) = entries_page(store, range, after.as_deref(), limit).expect("page");
            assert!(page.len() <= limit);
            out.extend(page.into_iter().map(|e| e.key));
            match next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }

    #[tokio::test]
    async fn paging_sees_every_key_once_across_the_wrap() {
        let store = store_with(500).await;
        let ranges = [
            TokenRange { start: 0, end: 0 },
            TokenRange {
                start: 3 << 62,
                end: 1 << 62,
            },
            TokenRange {
                start: 1 << 62,
                end: 3 << 62,
            },
            TokenRange {
                start: u64::MAX,
                end: u64::MAX,
            },
        ];
        for range in ranges {
            let tree = build_from_store(&store, range, 4).expect("tree");
            for limit in [1, 7, 100, 1000] {
                let keys = page_through(&store, range, limit);
                let mut unique = keys.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(
                    unique.len(),
                    keys.len(),
                    "{range} limit {limit}: duplicates"
                );
                assert_eq!(keys.len() as u64, tree.entries(), "{range} limit {limit}");
            }
        }
    }

    #[tokio::test]
    async fn a_corrupt_value_is_an_error() {
        let store = store_with(3).await;
        store
            .put("b", b"broken", b"junk".to_vec())
            .await
            .expect("put");
        let whole = TokenRange { start: 0, end: 0 };
        assert!(matches!(
            entries_page(&store, whole, None, 100),
            Err(StorageError::Corrupt(_))
        ));
        assert!(entries_page(&store, whole, Some(b"xy"), 100).is_err());
    }
}
