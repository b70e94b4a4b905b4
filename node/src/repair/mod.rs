//! Anti-entropy repair: the replicas of every range this node holds compare
//! Merkle trees and exchange what differs; then tombstones that may go are
//! purged.
//!
//! # Where it fits
//!
//! Read repair heals keys somebody reads; hinted handoff heals writes a
//! coordinator knew a replica missed. Neither heals a replica that was down
//! with hints off (or past the hint window), nor a key nobody reads, nor a
//! replica whose disk was wiped. This module does: [`repair_node`] (behind
//! `POST /internal/repair`, `qkv repair` and the scheduler
//! [`run_scheduler`]) walks every token range of the ring that this node
//! replicates and, for each other live replica of it, runs
//! [`exchange::repair_with`]:
//!
//! 1. build this node's [`crate::merkle::MerkleTree`] of the range and ask
//!    the peer for its own ([`crate::proto::Request::Tree`]) at the same
//!    depth, over the same buckets ([`KeyFilter`]);
//! 2. for each differing sub-range (adjacent leaves coalesced), pull the
//!    peer's entries page by page and merge every entry whose digest
//!    differs from ours into this node
//!    ([`crate::replica::Replica::merge`], DVVSet `sync`);
//! 3. then scan our own copy of that sub-range (now the union) and push
//!    every entry the peer did not hold exactly to it.
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
//! * **Replication factor.** Replicas differ per `n`, so a pass runs once
//!   per distinct bucket `n`: at `--default-n` over every bucket that does
//!   not set another `n` (and unknown ones), and at each other `n` over the
//!   buckets that set it. The trees and the exchange then cover only those
//!   buckets' keys, so the 4th replica of a range at `n = 4` is never asked
//!   for (nor sent) the keys of a bucket with `n = 3`. With one `n` in use
//!   (the usual case) a pass is one walk over every key, as before.
//!   `qkv repair --bucket B` compares only B's keys, at B's `n`.
//! * **Depth.** [`DEFAULT_DEPTH`] = 10: 1,024 leaves per range, 16 KiB of
//!   hashes and counts on the wire per tree. A node holding 1/16 of 10^8
//!   keys over 16 vnodes has ~400k keys per range, ~400 per leaf: one
//!   changed key costs a scan and exchange of ~400 entries, not 400k.
//! * **Throttle.** `--repair-bytes-per-sec` (default 20 MiB/s) bounds the
//!   version bytes a pass merges plus pushes per second, shared by the
//!   scheduler and manual passes (one pass runs at a time; a second waits).
//!   Trees and the peer's pages of keys that turn out equal are not counted.
//! * **Failures.** A peer that fails (down, timeout, storage error) is
//!   reported in its [`PeerReport::errors`] and skipped for the rest of the
//!   pass; the other peers are still repaired. Only this node's own storage
//!   failing makes a range fail outright, and that too is reported.
//! * **Full repairs and purge.** A range compared with *every* other
//!   replica without an error is recorded with the time its comparison
//!   began ([`purge::record_repaired`]); after the pass,
//!   [`Repairer::purge`] removes tombstone-only keys past the grace
//!   period whose range was fully repaired after the delete. A
//!   `--bucket` pass records nothing (it did not compare the other buckets).
//! * **Divergence age.** Per (n, range), the time a pass first found it
//!   differing with some replica is remembered (in memory) until a pass
//!   finds it equal with every replica. `qkv_repair_divergence_age_seconds`
//!   gives the age per range (label `range="start-end"`, plus `n`), the
//!   report lists them, and `qkv_repair_divergence_max_age_seconds` the
//!   oldest. A pass that finds and fixes a difference still dates it: the
//!   figure says "replicas have been seen differing for this long", and an
//!   equal pass is the proof that they no longer do. Ranges that keep
//!   differing pass after pass (a replica that keeps missing writes,
//!   replicas purging at different moments) show a growing age.
//! * **Caveats.** The peer's digests of one differing sub-range are held in
//!   memory (a few dozen bytes per key; a whole range when everything
//!   differs, e.g. a replica that lost its disk). Divergence dates are lost
//!   on restart.

mod exchange;
mod state;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::time::Instant;

use quorumkv_ring::TokenRange;
use serde::Serialize;

pub use exchange::{MAX_PAGE_BYTES, entries_page};
pub use state::State;

use crate::buckets::Buckets;
use crate::cluster::Cluster;
use crate::merkle::KeyFilter;
use crate::metrics::Metrics;
use crate::metrics::{DirectionLabels, RangeLabels};
use crate::replica::Replica;
use crate::transport::{PeerError, Peers};

mod purge;

pub use purge::PurgeReport;

/// The repairer's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The replica count of buckets without one of their own
    /// (`--default-n`).
    pub default_n: u32,
    /// Bytes per second a pass may exchange (`--repair-bytes-per-sec`).
    pub bytes_per_sec: u64,
    /// How long a tombstone is kept before it may be purged
    /// (`--tombstone-grace`).
    pub tombstone_grace: std::time::Duration,
}

/// What a [`Repairer`] works with.
pub struct Parts {
    /// This node's copy of the data.
    pub replica: Arc<Replica>,
    /// Members, ring and liveness.
    pub cluster: Arc<Cluster>,
    /// Bucket properties (each bucket's n).
    pub buckets: Arc<Buckets>,
    /// The other replicas.
    pub peers: Arc<dyn Peers>,
    /// Where repair counts.
    pub metrics: Arc<Metrics>,
}

/// Anti-entropy: compares this node's ranges with their other replicas
/// and exchanges what differs; purges tombstones once every replica
/// compared them.
pub struct Repairer {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    buckets: Arc<Buckets>,
    peers: Arc<dyn Peers>,
    metrics: Arc<Metrics>,
    state: State,
    options: Options,
}

/// Merkle tree depth used by [`repair_node`]: 2^10 leaves per range.
pub const DEFAULT_DEPTH: u8 = 10;

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

/// A range whose replicas were last seen differing.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    /// Replication factor the range was compared at.
    pub n: u32,
    /// The range, `start-end` (`(start, end]`).
    pub range: String,
    /// When a pass first found it differing (unix ms).
    pub since_ms: u64,
    /// Seconds since then.
    pub age_secs: u64,
}

/// What a repair pass of this node did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// This node.
    pub node: String,
    /// The default replication factor (`--default-n`).
    pub n: u32,
    /// Every replication factor compared (one sub-pass each).
    pub ns: Vec<u32>,
    /// Only this bucket's keys were compared (`qkv repair --bucket`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Merkle tree depth requested.
    pub depth: u8,
    /// Ranges of the ring this node replicates (summed over `ns`).
    pub ranges: u64,
    /// Ranges compared with every other replica without an error.
    pub ranges_fully_repaired: u64,
    /// (range, peer) pairs compared successfully.
    pub ranges_compared: u64,
    /// (range, peer) pairs whose trees differed.
    pub ranges_differing: u64,
    /// Totals over every peer.
    #[serde(flatten)]
    pub totals: RangeReport,
    /// The throttle the pass ran under (`--repair-bytes-per-sec`).
    pub bytes_per_sec_limit: u64,
    /// Wall time of the pass, in ms.
    pub duration_ms: u64,
    /// Per peer, in id order.
    pub peers: BTreeMap<String, PeerReport>,
    /// Number of errors over every peer (details under `peers`), plus one
    /// if purge failed.
    pub errors: u64,
    /// Tombstone purge after the pass (absent for a `--bucket` pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge: Option<PurgeReport>,
    /// Why purge failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_error: Option<String>,
    /// Ranges still counted as divergent after the pass, oldest first.
    pub divergent_ranges: Vec<Divergence>,
}

/// What a pass covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only this bucket's keys (at its `n`); `None`: every bucket.
    pub bucket: Option<String>,
}

/// The sub-passes a scope needs: each replication factor with the buckets
/// it covers. Pure, so that it can be tested on its own.
pub fn sub_passes(
    default_n: u32,
    buckets: &[(String, u32)],
    only: Option<(&str, u32)>,
) -> Vec<(u32, KeyFilter)> {
    if let Some((b, n)) = only {
        return vec![(n, KeyFilter::Only(vec![b.to_string()]))];
    }
    let mut other: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (name, n) in buckets {
        if *n != default_n {
            other.entry(*n).or_default().push(name.clone());
        }
    }
    if other.is_empty() {
        return vec![(default_n, KeyFilter::All)];
    }
    let except: Vec<String> = other.values().flatten().cloned().collect();
    let mut out = vec![(default_n, KeyFilter::Except(except))];
    out.extend(other.into_iter().map(|(n, b)| (n, KeyFilter::Only(b))));
    out
}

fn range_label(r: TokenRange) -> String {
    format!("{}-{}", r.start, r.end)
}

impl Repairer {
    /// A repairer of `parts.replica`'s ranges with their other replicas.
    pub fn new(parts: Parts, options: Options) -> Arc<Repairer> {
        Arc::new(Repairer {
            state: State::new(options.bytes_per_sec),
            replica: parts.replica,
            cluster: parts.cluster,
            buckets: parts.buckets,
            peers: parts.peers,
            metrics: parts.metrics,
            options,
        })
    }

    /// Anti-entropy's memory: divergence dates, throttle, progress.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Runs [`Repairer::repair_node`] every `interval` until `stop` is
    /// cancelled. The first pass waits one interval plus
    /// a random part of another, so that nodes started together do not
    /// all compare trees at once and a freshly started node serves before
    /// it repairs; a pass already running when `stop` turns is abandoned
    /// (repair is idempotent: the next pass redoes what it did not
    /// finish).
    pub async fn run_scheduler(
        self: Arc<Self>,
        interval: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut wait = interval + interval.mul_f64(rand::random::<f64>());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
            wait = interval;
            tokio::select! {
                _ = self.repair_node(Scope::default()) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Runs one repair pass over `scope`: every range this node replicates,
    /// with every other live replica of it, then purge. See the module docs.
    pub async fn repair_node(self: &Arc<Self>, scope: Scope) -> RepairReport {
        let _one_at_a_time = self.state.pass.lock().await;
        let started = Instant::now();
        let me = self.replica.id().to_string();
        let ring = self.cluster.ring();
        let buckets: Vec<(String, u32)> = self
            .buckets
            .records()
            .into_iter()
            .map(|r| (r.name, r.props.n))
            .collect();
        let only = scope
            .bucket
            .as_deref()
            .map(|b| (b, self.buckets.props_for_keys(b).n));
        let passes = sub_passes(self.options.default_n, &buckets, only);
        let mut report = RepairReport {
            node: me.clone(),
            n: self.options.default_n,
            ns: passes.iter().map(|(n, _)| *n).collect(),
            bucket: scope.bucket.clone(),
            depth: DEFAULT_DEPTH,
            bytes_per_sec_limit: self.options.bytes_per_sec,
            ..RepairReport::default()
        };
        let work: Vec<(u32, KeyFilter, quorumkv_ring::RangeReplicas)> = passes
            .iter()
            .flat_map(|(n, f)| {
                ring.ranges(*n as usize)
                    .into_iter()
                    .filter(|rr| rr.replicas.contains(&me))
                    .map(move |rr| (*n, f.clone(), rr))
            })
            .collect();
        let comparisons: u64 = work
            .iter()
            .map(|(_, _, rr)| rr.replicas.len() as u64 - 1)
            .sum();
        self.state.begin(comparisons);
        // Peers that failed in this pass: the rest of their ranges would only
        // cost a timeout each.
        let mut failed: HashSet<String> = HashSet::new();
        for (n, filter, rr) in &work {
            report.ranges += 1;
            let range_started = crate::clock::unix_ms();
            let mut full = true;
            let mut differing = false;
            for peer in rr.replicas.iter().filter(|r| **r != me) {
                let entry = report.peers.entry(peer.clone()).or_default();
                self.state.update_progress(|p| p.comparisons_done += 1);
                if failed.contains(peer) {
                    entry.ranges_skipped += 1;
                    full = false;
                    continue;
                }
                // A replacing peer is compared too: it counts toward no
                // quorum, but what it holds and what it lacks are exchanged
                // like any replica's. Skipping it would leave two nodes that
                // lost their disks one after the other each waiting for the
                // other to finish first (docs/OPERATIONS.md, "Replacing a
                // node's disk").
                if !self.cluster.is_up(peer) {
                    entry.ranges_skipped += 1;
                    entry.errors.push(format!("{peer} is down"));
                    failed.insert(peer.clone());
                    full = false;
                    continue;
                }
                match self
                    .repair_with(peer, rr.range, DEFAULT_DEPTH, filter)
                    .await
                {
                    Ok(r) => {
                        entry.ranges_compared += 1;
                        if r.leaves_differing > 0 {
                            entry.ranges_differing += 1;
                            differing = true;
                        }
                        entry.totals.add(&r);
                        self.state.update_progress(|p| {
                            p.keys_received += r.keys_received;
                            p.keys_sent += r.keys_sent;
                            p.bytes_received += r.bytes_received;
                            p.bytes_sent += r.bytes_sent;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(%peer, range = %rr.range, error = %e, "repair of a range failed");
                        full = false;
                        // Our own storage failing is not the peer's fault: keep
                        // trying it on the other ranges.
                        if e.peer_failed() {
                            failed.insert(peer.clone());
                        }
                        entry.errors.push(format!("range {}: {e}", rr.range));
                    }
                }
            }
            let found = if differing {
                Some(true)
            } else if full {
                Some(false)
            } else {
                None
            };
            // A --bucket pass saw one bucket only: it may date a divergence,
            // never clear one nor vouch for the range.
            let found = match (&scope.bucket, found) {
                (Some(_), Some(false)) => None,
                (_, f) => f,
            };
            self.state.observe(*n, rr.range, found, range_started);
            if full && scope.bucket.is_none() {
                report.ranges_fully_repaired += 1;
                if let Err(e) =
                    purge::record_repaired(self.replica.store(), *n, rr.range, range_started).await
                {
                    tracing::warn!(range = %rr.range, error = %e, "cannot record a full repair");
                }
            }
        }
        for p in report.peers.values() {
            report.ranges_compared += p.ranges_compared;
            report.ranges_differing += p.ranges_differing;
            report.totals.add(&p.totals);
            report.errors += p.errors.len() as u64;
        }
        if scope.bucket.is_none() {
            match self.purge().await {
                Ok(p) => report.purge = Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "tombstone purge failed");
                    report.purge_error = Some(e.to_string());
                    report.errors += 1;
                }
            }
        }
        report.divergent_ranges = self.publish_divergence();
        report.duration_ms = started.elapsed().as_millis() as u64;
        self.state.end();
        tracing::info!(
            ranges = report.ranges,
            compared = report.ranges_compared,
            fully_repaired = report.ranges_fully_repaired,
            leaves_differing = report.totals.leaves_differing,
            keys_received = report.totals.keys_received,
            keys_sent = report.totals.keys_sent,
            purged = report.purge.as_ref().map_or(0, |p| p.purged),
            divergent = report.divergent_ranges.len(),
            errors = report.errors,
            ms = report.duration_ms,
            "repair pass done"
        );
        let m = &self.metrics;
        m.repair_passes.inc();
        m.repair_leaves_differing
            .inc_by(report.totals.leaves_differing);
        for (direction, keys, bytes) in [
            (
                "received",
                report.totals.keys_received,
                report.totals.bytes_received,
            ),
            ("sent", report.totals.keys_sent, report.totals.bytes_sent),
        ] {
            let l = DirectionLabels { direction };
            m.repair_keys.get_or_create(&l).inc_by(keys);
            m.repair_bytes.get_or_create(&l).inc_by(bytes);
        }
        m.repair_last_pass
            .set((crate::clock::unix_ms() / 1000) as i64);
        report
    }

    /// Refreshes the divergence metrics from the repair state and returns the
    /// divergent ranges, oldest first.
    fn publish_divergence(self: &Arc<Self>) -> Vec<Divergence> {
        let now = crate::clock::unix_ms();
        let mut out: Vec<Divergence> = self
            .state
            .divergent()
            .into_iter()
            .map(|((n, range), since_ms)| Divergence {
                n,
                range: range_label(range),
                since_ms,
                age_secs: now.saturating_sub(since_ms) / 1000,
            })
            .collect();
        out.sort_by_key(|d| d.since_ms);
        let m = &self.metrics;
        m.repair_divergence_age.clear();
        for d in &out {
            m.repair_divergence_age
                .get_or_create(&RangeLabels {
                    n: d.n,
                    range: d.range.clone(),
                })
                .set(d.age_secs as i64);
        }
        m.repair_divergence_max_age
            .set(out.first().map_or(0, |d| d.age_secs as i64));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(f: &KeyFilter) -> Vec<String> {
        match f {
            KeyFilter::All => vec![],
            KeyFilter::Only(b) | KeyFilter::Except(b) => b.clone(),
        }
    }

    #[test]
    fn one_pass_when_every_bucket_uses_the_default_n() {
        let b = [("default".to_string(), 3), ("x".to_string(), 3)];
        assert_eq!(sub_passes(3, &b, None), vec![(3, KeyFilter::All)]);
    }

    #[test]
    fn one_pass_per_distinct_n_each_over_its_buckets() {
        let b = [
            ("default".to_string(), 3),
            ("five".to_string(), 5),
            ("one".to_string(), 1),
            ("five2".to_string(), 5),
        ];
        let p = sub_passes(3, &b, None);
        assert_eq!(p.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [3, 1, 5]);
        assert!(matches!(p[0].1, KeyFilter::Except(_)));
        assert_eq!(names(&p[0].1), ["one", "five", "five2"]);
        assert_eq!(p[2].1, KeyFilter::Only(vec!["five".into(), "five2".into()]));
        // Every bucket is covered by exactly one pass.
        for (name, _) in &b {
            let covering = p.iter().filter(|(_, f)| f.admits(name)).count();
            assert_eq!(covering, 1, "{name}");
        }
        assert_eq!(p.iter().filter(|(_, f)| f.admits("unknown")).count(), 1);
    }

    #[test]
    fn a_bucket_pass_covers_that_bucket_at_its_n() {
        let p = sub_passes(3, &[], Some(("b", 5)));
        assert_eq!(p, vec![(5, KeyFilter::Only(vec!["b".into()]))]);
    }
}
