//! Tombstone purge: when a deletion's tombstone may leave storage for good.
//!
//! # Why tombstones are kept at all
//!
//! A delete is a version (a tombstone) so that a replica that missed it
//! learns of it by the usual merge and cannot bring the value back: as long
//! as some replica holds the tombstone, any stale copy of the value it
//! covers loses to it. Dropping the tombstone too early re-opens that door —
//! the next read repair or anti-entropy pass would copy the stale value
//! back everywhere ("zombie" data in Cassandra's words).
//!
//! # The rule
//!
//! A key whose current versions are all tombstones is removed from this
//! node's storage only when both hold:
//!
//! 1. its newest tombstone is older than the grace period
//!    (`--tombstone-grace-secs`, default 10 days as Cassandra's
//!    `gc_grace_seconds`), counted on this node's clock from when it stored
//!    the tombstone (see the caveats); and
//! 2. its token range (for the key's bucket `n`) was *fully* repaired by
//!    this node after that tombstone was written: a repair pass started
//!    after the tombstone's time compared this node with every other
//!    replica of the range, without an error or a skipped (down) replica.
//!    [`crate::repair`] records the start of each such pass per range
//!    ([`record_repaired`]).
//!
//! Why 2 is enough: in that pass this node, which already held the
//! tombstone, pulled every peer's differing entries (a stale value merges
//! under the tombstone) and pushed its copy to every peer that held the key
//! in another state. After it, every replica that holds anything of the key
//! holds the tombstone (or a newer write, and then the key is not purged).
//! Why 1 still matters: it is the window in which a replica can be down,
//! hints be replayed and writes with old contexts arrive; a replica down for
//! longer than the grace period must be wiped and repaired, not restarted
//! (as in Cassandra).
//!
//! # Tombstones past grace in anti-entropy
//!
//! Replicas purge at different times (each after its own full pass). So that
//! a replica that purged does not get the tombstone back from one that has
//! not yet — and then push it back in turn, forever — repair moves a
//! tombstone-only object past its grace period only to a node that holds
//! the key in some other state ([`past_grace`]; see `repair::exchange`).
//! A node that holds nothing of the key needs nothing: it has no value to
//! resurrect. Until every replica has purged, their trees differ on those
//! keys (a pass reports differing leaves but moves nothing).
//!
//! # Implementation caveats
//!
//! * Purge scans this node's whole data partition after each repair pass
//!   (the pass itself has just read it all to build trees).
//! * Range records are keyed by `(n, start, end)`: after the ring changes,
//!   the new ranges have no record until they are repaired again, so
//!   nothing is purged early.
//! * The tombstone time is this node's own clock: the replica notes, in
//!   the same batch, when it stored a change that left the key tombstones
//!   only ([`crate::replica::Replica::tombstone_stored_ms`]), and both the
//!   grace and "repaired after the delete" compare that time with this
//!   node's clock (`now`, the pass's start). A writer whose clock lags
//!   cannot make a tombstone look older than it is here, nor a repair that
//!   began before the tombstone arrived look like one after it. The
//!   writer's HLC stamp still counts when it is later (a writer clock far
//!   ahead only makes the tombstone wait longer). Keys stored before these
//!   times were kept fall back to the writer's stamp.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quorumkv_ring::{RangeReplicas, Token, TokenRange};
use serde::Serialize;

use super::Repairer;
use crate::storage::{StorageError, Store};
use crate::version::Dvvs;

/// Meta key prefix of per-range "last full repair" records.
const REPAIRED_PREFIX: &str = "repaired";
/// Entries per scan page.
const PAGE: usize = 1024;

fn repaired_key(n: u32, range: TokenRange) -> String {
    format!(
        "{REPAIRED_PREFIX}/{n}/{:016x}-{:016x}",
        range.start, range.end
    )
}

/// Records that a repair pass started at `started_ms` compared `range`
/// (at replication factor `n`) with every other replica without an error.
pub async fn record_repaired(
    store: &Store,
    n: u32,
    range: TokenRange,
    started_ms: u64,
) -> Result<(), StorageError> {
    store
        .meta_put(&repaired_key(n, range), started_ms.to_be_bytes().to_vec())
        .await
}

/// When the last full repair of `range` at `n` started (ms), if any.
pub fn repaired_at(store: &Store, n: u32, range: TokenRange) -> Result<Option<u64>, StorageError> {
    match store.meta_get(&repaired_key(n, range))? {
        None => Ok(None),
        Some(b) => <[u8; 8]>::try_from(b.as_slice())
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| {
                StorageError::Corrupt(format!("repair record of {range} is {} bytes", b.len()))
            }),
    }
}

/// The wall time (ms) of the newest tombstone when every current version
/// of `object` is a tombstone; `None` when it holds a live value or
/// nothing.
pub fn tombstone_only_since(object: &Dvvs) -> Option<u64> {
    if !object.is_deleted() {
        return None;
    }
    object.max_timestamp().map(|t| t.wall_ms())
}

/// Whether `object` is tombstones only, the newest older than `grace` at
/// `now_ms`: what repair does not hand to a node that holds nothing of the
/// key (see the module docs).
pub fn past_grace(object: &Dvvs, now_ms: u64, grace: Duration) -> bool {
    tombstone_only_since(object)
        .is_some_and(|t| now_ms.saturating_sub(t) > grace.as_millis() as u64)
}

/// Whether a tombstone-only key whose newest tombstone was written at
/// `tombstone_ms` may go, at `now_ms`, given the start of the last full
/// repair of its range.
pub fn may_purge(
    tombstone_ms: u64,
    repaired_ms: Option<u64>,
    now_ms: u64,
    grace: Duration,
) -> bool {
    let aged = now_ms.saturating_sub(tombstone_ms) > grace.as_millis() as u64;
    aged && repaired_ms.is_some_and(|r| r > tombstone_ms)
}

/// The range of `ranges` (in ring order, as `Ring::ranges` gives them)
/// that holds `token`.
pub fn range_of(ranges: &[RangeReplicas], token: Token) -> Option<&RangeReplicas> {
    if ranges.is_empty() {
        return None;
    }
    // Range i is (end of i-1, end of i]; the first one wraps.
    let i = ranges.partition_point(|r| r.range.end < token);
    ranges.get(i).or_else(|| ranges.first())
}

/// What one purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// Keys scanned.
    pub keys_scanned: u64,
    /// Tombstone-only keys seen.
    pub tombstones: u64,
    /// Removed from storage.
    pub purged: u64,
    /// Kept: the newest tombstone is within the grace period.
    pub kept_in_grace: u64,
    /// Kept: past grace, but the range was not fully repaired since.
    pub kept_unrepaired: u64,
}

impl Repairer {
    /// Removes every tombstone-only key this node may purge (module docs).
    pub async fn purge(self: &Arc<Self>) -> Result<PurgeReport, StorageError> {
        let grace = self.options.tombstone_grace;
        let ring = self.cluster.ring();
        let store = self.replica.store().clone();
        let mut ranges: HashMap<u32, Vec<RangeReplicas>> = HashMap::new();
        let mut records: HashMap<(u32, TokenRange), Option<u64>> = HashMap::new();
        let mut report = PurgeReport::default();
        let whole = TokenRange { start: 0, end: 0 };
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (s, cursor) = (store.clone(), after.take());
            let (page, next) = crate::storage::blocking(move || {
                let budget = crate::repair::MAX_PAGE_BYTES as usize;
                crate::repair::entries_page(&s, whole, cursor.as_deref(), PAGE, budget)
            })
            .await?;
            let now = crate::clock::unix_ms();
            for e in page {
                report.keys_scanned += 1;
                let Some(written) = tombstone_only_since(&e.object) else {
                    continue;
                };
                report.tombstones += 1;
                // This node's own clock: when it stored the tombstone. The
                // writer's stamp only counts when later (a writer clock
                // ahead makes the tombstone wait longer, which is safe).
                let since = self
                    .replica
                    .tombstone_stored_ms(&e.bucket, &e.key)?
                    .map_or(written, |stored| stored.max(written));
                if now.saturating_sub(since) <= grace.as_millis() as u64 {
                    report.kept_in_grace += 1;
                    continue;
                }
                let n = self.buckets.props_for_keys(&e.bucket).n;
                let token = quorumkv_ring::token_of(e.bucket.as_bytes(), &e.key);
                let rs = ranges.entry(n).or_insert_with(|| ring.ranges(n as usize));
                let repaired = match range_of(rs, token) {
                    Some(rr) => match records.get(&(n, rr.range)) {
                        Some(r) => *r,
                        None => {
                            let r = repaired_at(&store, n, rr.range)?;
                            records.insert((n, rr.range), r);
                            r
                        }
                    },
                    None => None,
                };
                if !may_purge(since, repaired, now, grace) {
                    report.kept_unrepaired += 1;
                    continue;
                }
                if self
                    .replica
                    .purge(&e.bucket, &e.key, e.object.digest())
                    .await?
                {
                    report.purged += 1;
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        self.metrics.tombstones_purged.inc_by(report.purged);
        if report.purged > 0 {
            tracing::info!(
                purged = report.purged,
                kept_in_grace = report.kept_in_grace,
                kept_unrepaired = report.kept_unrepaired,
                "tombstones purged"
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Context, Timestamp, Value};

    const GRACE: Duration = Duration::from_secs(10);

    fn deleted_at(ms: u64) -> Dvvs {
        let mut d = Dvvs::new();
        d.update(
            &Context::new(),
            "n1",
            Value::live(&b"v"[..], "text/plain", Timestamp::new(ms - 5, 0)),
        )
        .expect("a fresh dot");
        let ctx = d.context();
        d.update(&ctx, "n1", Value::tombstone(Timestamp::new(ms, 0)))
            .expect("a fresh dot");
        d
    }

    /// The writer's clock lags an hour: its tombstone looks an hour old,
    /// and a full repair that began before it reached this node looks like
    /// one after the delete. On this node's clock it arrived just now: it
    /// stays for its grace.
    #[tokio::test]
    async fn a_tombstone_from_a_lagging_writer_clock_waits_its_grace_on_this_nodes_clock() {
        use crate::buckets::{Buckets, Conflicts};
        use crate::cluster::{Cluster, LocalNode};
        use crate::replica::Replica;

        let store = Store::memory();
        let replica =
            Arc::new(Replica::open("n1".into(), "n1".into(), store.clone()).expect("replica"));
        let cluster = Arc::new(Cluster::single(
            LocalNode {
                id: "n1".into(),
                http: "127.0.0.1:8001".parse().expect("addr"),
                listen: "127.0.0.1:7001".parse().expect("addr"),
                generation: 1,
                rack: None,
            },
            vec![1 << 63],
        ));
        let net = crate::transport::memory::Network::new(1);
        let (peers, _gossip, _requests) = net.bind("n1", "127.0.0.1:7001");
        let repairer = Repairer::new(
            super::super::Parts {
                replica: replica.clone(),
                cluster: cluster.clone(),
                buckets: Arc::new(Buckets::load(store.clone(), "n1", 3).expect("buckets")),
                peers,
                metrics: Arc::new(crate::metrics::Metrics::new()),
            },
            super::super::Options {
                default_n: 3,
                bytes_per_sec: 1 << 20,
                tombstone_grace: GRACE,
            },
        );
        let now = crate::clock::unix_ms();
        let repair_began = now - 1_000;
        for rr in cluster.ring().ranges(3) {
            record_repaired(&store, 3, rr.range, repair_began)
                .await
                .expect("record");
        }
        replica
            .merge("b", b"k", &deleted_at(now - 3_600_000), Conflicts::Siblings)
            .await
            .expect("merge");
        let stored = replica
            .tombstone_stored_ms("b", b"k")
            .expect("time")
            .expect("noted");
        assert!(stored >= now, "noted on this node's clock");
        let report = repairer.purge().await.expect("purge");
        assert_eq!(
            (report.tombstones, report.purged, report.kept_in_grace),
            (1, 0, 1),
            "{report:?}"
        );
        assert!(replica.read("b", b"k").expect("read").is_some());
    }

    #[test]
    fn only_tombstone_only_keys_are_candidates() {
        let t = deleted_at(1_000);
        assert_eq!(tombstone_only_since(&t), Some(1_000));
        let mut live = t.clone();
        live.update(
            &Context::new(),
            "n2",
            Value::live(&b"w"[..], "text/plain", Timestamp::new(900, 0)),
        )
        .expect("a fresh dot");
        assert_eq!(tombstone_only_since(&live), None, "a live sibling stays");
        assert_eq!(tombstone_only_since(&Dvvs::new()), None);
    }

    #[test]
    fn purge_needs_both_the_grace_period_and_a_repair_after_the_delete() {
        let g = GRACE.as_millis() as u64;
        let t = 1_000_000;
        // (repaired at, now, purge?)
        let table = [
            (None, t + g + 1, false),        // never repaired
            (Some(t - 1), t + g + 1, false), // repaired before the delete
            (Some(t + 1), t + g, false),     // within grace
            (Some(t + 1), t + g + 1, true),  // both
            (Some(t + g * 5), t + g * 9, true),
        ];
        for (repaired, now, want) in table {
            assert_eq!(
                may_purge(t, repaired, now, GRACE),
                want,
                "{repaired:?} {now}"
            );
        }
        assert!(!past_grace(&deleted_at(t), t + g, GRACE));
        assert!(past_grace(&deleted_at(t), t + g + 1, GRACE));
    }

    #[test]
    fn range_of_finds_the_range_holding_a_token_including_the_wrap() {
        let mut ring = quorumkv_ring::Ring::new();
        ring.insert_node("a", &[100, 300]);
        ring.insert_node("b", &[200]);
        let ranges = ring.ranges(1);
        let end_of = |t| range_of(&ranges, t).map(|r| r.range.end);
        assert_eq!(end_of(150), Some(200));
        assert_eq!(end_of(200), Some(200));
        assert_eq!(end_of(201), Some(300));
        assert_eq!(end_of(301), Some(100), "wraps");
        assert_eq!(end_of(5), Some(100));
        for t in [0, 100, 101, 250, u64::MAX] {
            let r = range_of(&ranges, t).expect("range");
            assert!(r.range.contains(t), "{t} in {}", r.range);
        }
    }
}
