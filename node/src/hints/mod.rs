//! Hinted handoff: writes a replica missed, kept by the coordinator and
//! handed over when the replica is back.
//!
//! # What hints are for
//!
//! A coordinator sends each write to the key's N replicas and answers the
//! client once W of them acknowledge. A replica that was down, or did not
//! answer in time, missed the write; without help it stays stale until a
//! read repairs that key or anti-entropy reaches its range. So the
//! coordinator stores a *hint* instead ([`Hints::add`]): the key's versions
//! as it knows them (a whole [`Dvvs`]) addressed to the replica that missed
//! them. When gossip reports the replica up again, the replayer
//! ([`Hints::run_replayer`], `replay.rs`) sends it its hints, oldest first, through a
//! caller-supplied `deliver` function (an RPC the target answers by merging
//! the versions). Merging is idempotent, so a hint delivered twice (a crash
//! between delivery and deletion, a retry after a lost answer) does no
//! harm; a hint is deleted once delivered. This is Cassandra's hinted
//! handoff: a hint window (`max_hint_window`), a throttle in bytes per
//! second, and a bound per target.
//!
//! Hints are an optimisation of convergence, never its guarantee: a hint
//! can be refused (the bound, hints disabled), expire, or be lost with this
//! node's disk. What hints miss, anti-entropy repairs.
//!
//! # Layout
//!
//! Hints live in the store's `hints` partition under
//! `target || 0x00 || created_ms (8 bytes BE) || seq (8 bytes BE)`
//! (`layout.rs`). One target's hints are one contiguous key range, so
//! replaying a node is a range scan that never touches other nodes' hints,
//! and within it byte order is time order, so the scan is oldest first and
//! expiry stops at the first young hint. `seq` tells apart hints written in
//! the same millisecond; it starts above every stored `seq` (and above the
//! clock, in thousandths of a millisecond), so a restarted node never
//! overwrites a hint it has not delivered. The value is a compact
//! MessagePack record of bucket, key and encoded versions.
//!
//! # Expiry: why a window
//!
//! A hint older than the window (default 3 h) is deleted, not delivered.
//! The reason is deletes: a tombstone is purged once its grace period has
//! passed everywhere, and a replica that was away for longer may still hold
//! the value the tombstone deleted. Handing it old hints pretends it caught
//! up; worse, a hint carrying a version the others have since deleted and
//! purged would *resurrect* the delete. A replica down longer than the
//! window must be repaired by anti-entropy (which compares with what the
//! others hold now), so the window must stay well below the tombstone grace
//! period. Expiry also bounds how long the hints of a node that never comes
//! back occupy the disk. Hint age is wall-clock time, since hints outlive
//! restarts; a clock stepped far backwards delays expiry, one stepped
//! forwards hastens it.
//!
//! # Bounds and rates
//!
//! - At most `max_per_target` hints per target are stored; more are
//!   refused ([`HintOutcome::Full`]) and counted. Per target, so one dead
//!   node cannot crowd out hints for the others.
//! - Replay is throttled to `replay_bytes_per_sec` by one token bucket for
//!   the whole node (`throttle.rs`): a recovering node, or several at once,
//!   must not starve client traffic on this node's disk and network.
//! - Pending counts are kept in memory, seeded by one scan of the partition
//!   at [`Hints::open`]. A count is raised before its hint is written (so
//!   concurrent adds cannot pass the bound) and lowered after the hint's
//!   deletion is written; every deletion that lowers a count happens under
//!   that target's replay lock, so no hint is subtracted twice. An `add`
//!   whose future is dropped mid-write keeps its count (the write may still
//!   land): a count errs high, never low, until the next restart.
//!
//! # Concurrency
//!
//! At most one replay per target runs at a time (a per-target lock, which
//! [`Hints::replay`] waits for and the replayer skips when busy). The
//! replayer runs the replays of different targets as concurrent tasks, so
//! a slow or hanging target does not hold back the others; the shared
//! throttle keeps their sum to the rate. [`Hints::expire`] skips a target
//! that is being replayed, whose replay deletes expired hints as it meets
//! them (they are the oldest, so it meets them first).

mod layout;
mod replay;
mod throttle;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use self::layout::{check_target, encode_record, hint_key, parse_key, successor};
use self::throttle::{Clock, SystemClock};
use crate::storage::{Op, Partition, StorageError, Store};
use crate::throttle::Throttle;
use crate::version::Dvvs;

/// Hints read per page when replaying, and the value bytes a page stops
/// at (the hint that reaches them included): a hint holds a whole object,
/// which may be as large as `--max-key-bytes`.
const REPLAY_PAGE: usize = 64;
const REPLAY_PAGE_BYTES: usize = 8 << 20;
/// Keys read per page when counting at open or expiring (keys only: no
/// value is read).
const SCAN_PAGE: usize = 1024;
/// How often the replayer runs [`Hints::expire`].
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// How hinted handoff behaves (`qkvd` flags map onto it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintConfig {
    /// Store hints at all. When false, [`Hints::add`] stores nothing; hints
    /// already stored are still delivered.
    pub enabled: bool,
    /// Hints older than this are deleted, not delivered (see the module
    /// docs for why). Default 3 hours.
    pub window: Duration,
    /// Hints stored per target at most. Default 100,000.
    pub max_per_target: u64,
    /// Replay rate for the whole node, in bytes (key plus stored value) per
    /// second; 0 means unthrottled. Default 4 MiB/s.
    pub replay_bytes_per_sec: u64,
    /// How often the replayer looks for targets to replay. Default 1 s.
    pub check_every: Duration,
}

impl Default for HintConfig {
    fn default() -> Self {
        HintConfig {
            enabled: true,
            window: Duration::from_secs(3 * 3600),
            max_per_target: 100_000,
            replay_bytes_per_sec: 4 * 1024 * 1024,
            check_every: Duration::from_secs(1),
        }
    }
}

/// One hint: versions of a key that `target` missed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The node id of the replica that missed the write.
    pub target: String,
    /// When the hint was written, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The bucket of the key.
    pub bucket: String,
    /// The key.
    pub key: Vec<u8>,
    /// The key's versions as the coordinator knew them; the target merges
    /// them.
    pub object: Dvvs,
}

/// What [`Hints::add`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintOutcome {
    /// Stored durably (per the store's sync mode).
    Stored,
    /// Hints are disabled; nothing stored.
    Disabled,
    /// The target already has `max_per_target` hints; nothing stored.
    Full,
}

/// Counters since open, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HintStats {
    /// Hints stored.
    pub written: u64,
    /// Hints delivered (and deleted).
    pub delivered: u64,
    /// Hints deleted because they outlived the window.
    pub expired: u64,
    /// Hints refused because their target was full.
    pub dropped_full: u64,
    /// Hints refused because hints are disabled.
    pub dropped_disabled: u64,
    /// Deliveries that failed (each stops its replay).
    pub replay_failures: u64,
    /// Stored hints that did not decode (damaged bytes), deleted.
    pub corrupt: u64,
}

/// What one replay of one target did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Hints delivered and deleted.
    pub delivered: u64,
    /// Bytes (key plus stored value) of the delivered hints.
    pub bytes: u64,
    /// Expired hints deleted without delivery.
    pub expired: u64,
    /// Undecodable hints deleted.
    pub corrupt: u64,
    /// The delivery error that stopped the replay; that hint and every
    /// later one stay stored.
    pub failure: Option<String>,
    /// The replay was cut short by the replayer's stop signal.
    pub stopped: bool,
}

/// The function that sends a hint to its target ([`Hints::run_replayer`]).
pub type DeliverFn =
    Arc<dyn Fn(Hint) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Whether gossip considers a node up ([`Hints::run_replayer`]).
pub type IsUpFn = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The hint store of this node and its replayer.
pub struct Hints {
    store: Store,
    config: HintConfig,
    clock: Arc<dyn Clock>,
    targets: RwLock<HashMap<String, Arc<Target>>>,
    next_seq: AtomicU64,
    throttle: Throttle,
    stats: Counters,
}

/// In-memory state of one target.
#[derive(Default)]
struct Target {
    /// Hints stored (or being written) for the target.
    pending: AtomicU64,
    /// Held by the one replay or expiry pass deleting this target's hints.
    lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    delivered: AtomicU64,
    expired: AtomicU64,
    dropped_full: AtomicU64,
    dropped_disabled: AtomicU64,
    replay_failures: AtomicU64,
    corrupt: AtomicU64,
}

impl std::fmt::Debug for Hints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hints")
            .field("config", &self.config)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Hints {
    /// Opens the hint store over `store`, counting the hints it holds per
    /// target (one scan of the hints partition).
    pub fn open(store: Store, config: HintConfig) -> Result<Hints, StorageError> {
        Hints::open_with_clock(store, config, Arc::new(SystemClock::new()))
    }

    /// [`Hints::open`] with the clock hints are aged and throttled by.
    pub(crate) fn open_with_clock(
        store: Store,
        config: HintConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Hints, StorageError> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut max_seq: Option<u64> = None;
        let mut junk = 0u64;
        let mut start = Vec::new();
        loop {
            let page = store.raw_scan_keys(Partition::Hints, &start, None, SCAN_PAGE)?;
            for k in &page {
                match parse_key(k) {
                    Some(p) => {
                        *counts.entry(p.target.to_owned()).or_default() += 1;
                        max_seq = max_seq.max(Some(p.seq));
                    }
                    None => junk += 1,
                }
            }
            match page.last() {
                Some(k) if page.len() == SCAN_PAGE => start = successor(k),
                _ => break,
            }
        }
        if junk > 0 {
            tracing::warn!(
                keys = junk,
                "hints partition holds keys outside the hint layout; the next expiry pass deletes them"
            );
        }
        let next_seq = max_seq
            .map_or(0, |s| s.saturating_add(1))
            .max(clock.wall_ms().saturating_mul(1000));
        let targets = counts
            .into_iter()
            .map(|(name, n)| {
                let t = Target {
                    pending: AtomicU64::new(n),
                    ..Target::default()
                };
                (name, Arc::new(t))
            })
            .collect();
        // A second of idle replay banked at most: a returning node gets a
        // short burst, then the rate.
        let throttle = Throttle::new(
            config.replay_bytes_per_sec,
            Duration::from_secs(1),
            clock.monotonic(),
        );
        Ok(Hints {
            store,
            config,
            clock,
            targets: RwLock::new(targets),
            next_seq: AtomicU64::new(next_seq),
            throttle,
            stats: Counters::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &HintConfig {
        &self.config
    }

    /// Stores a hint of `object` (the versions of `key` in `bucket`) for
    /// `target`. `Ok(Stored)` means durable per the store's sync mode.
    /// Fails with [`StorageError::InvalidKey`] for an empty target or one
    /// holding 0x00.
    pub async fn add(
        &self,
        target: &str,
        bucket: &str,
        key: &[u8],
        object: &Dvvs,
    ) -> Result<HintOutcome, StorageError> {
        if !self.config.enabled {
            self.stats.dropped_disabled.fetch_add(1, Ordering::Relaxed);
            return Ok(HintOutcome::Disabled);
        }
        check_target(target)?;
        let value = encode_record(bucket, key, object)?;
        let t = self.target(target);
        let max = self.config.max_per_target;
        // Reserve before writing, so that concurrent adds cannot overshoot.
        let reserved = t
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if reserved.is_err() {
            self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            return Ok(HintOutcome::Full);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let op = Op::Put {
            partition: Partition::Hints,
            key: hint_key(target, self.clock.wall_ms(), seq),
            value,
        };
        match self.store.write(vec![op]).await {
            Ok(()) => {
                self.stats.written.fetch_add(1, Ordering::Relaxed);
                Ok(HintOutcome::Stored)
            }
            Err(e) => {
                sub_pending(&t, 1);
                Err(e)
            }
        }
    }

    /// Hints pending per target (targets with none are left out).
    pub fn pending(&self) -> BTreeMap<String, u64> {
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        targets
            .iter()
            .map(|(name, t)| (name.clone(), t.pending.load(Ordering::Acquire)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Hints pending for `target`.
    pub fn pending_for(&self, target: &str) -> u64 {
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        targets
            .get(target)
            .map_or(0, |t| t.pending.load(Ordering::Acquire))
    }

    /// Counters since open.
    pub fn stats(&self) -> HintStats {
        let s = &self.stats;
        HintStats {
            written: s.written.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            expired: s.expired.load(Ordering::Relaxed),
            dropped_full: s.dropped_full.load(Ordering::Relaxed),
            dropped_disabled: s.dropped_disabled.load(Ordering::Relaxed),
            replay_failures: s.replay_failures.load(Ordering::Relaxed),
            corrupt: s.corrupt.load(Ordering::Relaxed),
        }
    }

    /// The state of `name`, created on first use.
    fn target(&self, name: &str) -> Arc<Target> {
        {
            let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = targets.get(name) {
                return t.clone();
            }
        }
        let mut targets = self.targets.write().unwrap_or_else(|p| p.into_inner());
        targets.entry(name.to_owned()).or_default().clone()
    }

    fn is_expired(&self, created_ms: u64) -> bool {
        let window = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        self.clock.wall_ms().saturating_sub(created_ms) > window
    }
}

/// Lowers a pending count, never below zero (which would wrap to 2^64 and
/// make the target look full forever).
fn sub_pending(t: &Target, n: u64) {
    let _ = t
        .pending
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
            Some(p.saturating_sub(n))
        });
}
