//! Storage: where a node keeps its replicas, hints and metadata, and the
//! exact promise it makes about durability.
//!
//! # What
//!
//! A [`Store`] is the node's handle on one embedded database. It wraps an
//! [`Engine`] — [`FjallEngine`] (an LSM tree on disk, the default) or
//! [`MemoryEngine`] (a `BTreeMap`, for fast tests) — and adds what an
//! engine does not decide: the key layout and the durability policy.
//!
//! The database has three [`Partition`]s: `data` (replicated objects),
//! `meta` (node metadata such as bucket properties) and `hints` (hinted
//! handoff). Data keys are `token (8 bytes BE) || bucket || 0x00 || key`
//! ([`data_key`]), so the engine's byte order is ring order and a token
//! range is one contiguous scan ([`Store::scan_tokens`]) — what
//! anti-entropy and streaming need.
//!
//! # Durability: what an `Ok` means
//!
//! Every write path (`put`, `delete`, `write`, `meta_put`) follows the
//! store's [`SyncMode`]:
//!
//! - **`SyncMode::Always`** (`qkvd --sync always`): `Ok` is returned only
//!   after an fdatasync of fjall's journal that covers the write. The write
//!   survives `kill -9`, a kernel panic and power loss (on a disk that
//!   honours flushes). Concurrent writers share fsyncs through **group
//!   commit** (see `commit.rs`): a committer thread applies everything that
//!   queued up while the previous fsync ran as one atomic batch, fsyncs
//!   once, and answers all of them; so a disk doing ~4,000 fdatasyncs per
//!   second acknowledges many times that many writes under concurrency.
//! - **`SyncMode::Periodic(interval)`** (`--sync periodic`): the write is
//!   applied without waiting for a disk, in one engine batch with the
//!   other writes that are ready at the same time (the write combiner in
//!   `commit.rs`: one journal `write(2)` for the lot instead of one each),
//!   and `Ok` is returned once it is applied; a background thread
//!   fdatasyncs every `interval`. Because fjall hands every committed batch
//!   to the kernel with `write(2)` before returning, an acknowledged write
//!   still **survives `kill -9`** of the process (it sits in the kernel's
//!   page cache, which outlives the process). What a **power loss or kernel
//!   crash** can lose is up to one interval of acknowledged writes (plus the
//!   fsync in flight). Restarts after either kind of crash see a prefix of
//!   the acknowledged batches: fjall replays its journal up to the last
//!   complete, checksummed batch.
//!
//! Why `persist(SyncData)` after `batch.commit()` is enough: `commit` writes
//! the batch (start marker, items, checksummed end marker) into the active
//! journal and flushes it to the kernel; `persist(SyncData)` takes the same
//! journal lock and fdatasyncs that file. Journal files are sized up front
//! (64 MiB) and fsynced together with their directory when created, and a
//! rotation `SyncAll`s the sealed file before switching, so a write is
//! always either in the file we fdatasync or in one already synced. Details
//! in `fjall.rs`.
//!
//! # Implementation caveats
//!
//! - **Visible before durable.** With `Always`, a write is applied (and so
//!   readable by a concurrent `get`) just before its fsync completes. A
//!   reader can thus see a value whose writer has not been acknowledged yet;
//!   if the node then crashes before the fsync, that value is gone. This is
//!   the usual trade of group-commit stores; quorum reads are unaffected in
//!   what they promise, since they only promise acknowledged writes.
//! - **Cancellation does not cancel.** If the future of a write is dropped
//!   after it was queued, the write may still be committed.
//! - **One failed fsync is final.** fjall poisons itself after a failed
//!   journal write or fsync (including a full disk); every later write gets
//!   [`StorageError::Engine`]/[`StorageError::DiskFull`] until `qkvd`
//!   restarts, because after a failed fsync nobody can know what reached
//!   the disk (see "Can applications recover from fsync failures?",
//!   ATC '20).
//! - **Blocking.** Engine calls are synchronous. `get`, `scan_tokens` and,
//!   in `Periodic` mode, writes run on a runtime thread: microseconds
//!   normally, but a write stall in fjall (compaction far behind) sleeps.
//!   `Always` writes wait on the committer thread without blocking the
//!   runtime.
//! - **Periodic flushes pause writers.** fjall fdatasyncs while holding its
//!   journal lock, so in `Periodic` mode each background flush makes
//!   concurrent writes wait for one fdatasync (a fraction of a millisecond
//!   on an idle disk, tens of ms on a busy one): visible at p99.9, not in
//!   throughput.
//! - **Locking.** fjall takes an exclusive `flock` on `<dir>/lock`; a second
//!   process on the same directory gets [`StorageError::Locked`]. The lock
//!   is released by [`Store::close`] (or when the last handle drops).

mod commit;
#[cfg(test)]
pub mod crash;
mod engine;
mod error;
mod fjall;
mod keys;
mod memory;
mod periodic;
mod reaper;

/// Runs a scan or another long storage job `f` off the async workers: on
/// a blocking thread in a multi-threaded runtime (a real node), so that
/// a scan of many pages does not stall the requests sharing its worker;
/// inline in a single-threaded runtime (the simulations), where there is
/// no other worker to protect, and where a paused clock would otherwise
/// jump past every deadline while the runtime waits for the thread.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Corrupt(format!("storage task failed: {e}")))?
}

#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use self::commit::{CommitStats, MAX_GROUP_BYTES, MAX_GROUP_WRITES, MIN_FLUSH_INTERVAL};
pub use self::engine::{Engine, KvPairs, Op, Partition};
pub use self::error::StorageError;
pub use self::fjall::{CACHE_BYTES, FjallEngine};
pub use self::keys::{DataKey, MAX_ENGINE_KEY_LEN, data_key, decode_data_key};
pub use self::memory::MemoryEngine;
pub use quorumkv_ring::Token;

use self::commit::{Combiner, Committer, Counters, Flusher};

/// When a write counts as durable. See the module docs for what each mode
/// survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge a write only after an fsync covering it (group commit).
    Always,
    /// Acknowledge once applied; fsync in the background every interval
    /// (clamped to at least [`MIN_FLUSH_INTERVAL`]).
    Periodic(Duration),
}

/// One entry of the data partition, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataEntry {
    /// The key's ring position.
    pub token: Token,
    /// The bucket.
    pub bucket: String,
    /// The user key within the bucket.
    pub key: Vec<u8>,
    /// The stored bytes (an encoded version set, to the layers above).
    pub value: Vec<u8>,
}

impl DataEntry {
    /// The key this entry is stored under, from the token as stored (not
    /// recomputed: resuming a scan must follow the engine's order).
    pub fn stored_key(&self) -> Vec<u8> {
        keys::data_key_at(self.token, &self.bucket, &self.key)
    }
}

/// The node's storage handle: cheap to clone, shared by every task.
///
/// It owns the durability policy: a group-commit thread for
/// [`SyncMode::Always`], a flusher thread for [`SyncMode::Periodic`].
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<dyn Engine>,
    sync: SyncMode,
    durability: Durability,
    counters: Arc<Counters>,
    closed: AtomicBool,
    /// Serialises `close` so a second caller waits for the first to finish.
    close_lock: tokio::sync::Mutex<()>,
}

enum Durability {
    Group(Committer),
    Periodic(Flusher, Combiner),
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without an explicit close: stop the threads without waiting. They
        // hold the engine; the committer answers what is queued first, and
        // the engine syncs as it drops (fjall persists on drop).
        match &self.durability {
            Durability::Group(c) => drop(c.shutdown()),
            Durability::Periodic(f, _) => drop(f.shutdown()),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("sync", &self.inner.sync)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the fjall database under `dir`.
    ///
    /// Fails with [`StorageError::DataDirUnusable`] if `dir` is a file,
    /// cannot be created or is not writable, with [`StorageError::Locked`]
    /// if another process (or another open `Store`) holds it, and with
    /// [`StorageError::Corrupt`] if its contents do not recover. Each reads
    /// as a one-line reason `qkvd` can print before exiting.
    pub fn open(dir: &Path, sync: SyncMode) -> Result<Store, StorageError> {
        let engine = FjallEngine::open(dir)?;
        Store::with_engine(Arc::new(engine), sync)
    }

    /// An in-memory store (nothing survives the process), for tests of the
    /// layers above storage. It runs the same group-commit path as a disk
    /// store in `Always` mode, with a no-op fsync.
    pub fn memory() -> Store {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        match Store::with_engine(engine.clone(), SyncMode::Always) {
            Ok(store) => store,
            // Only spawning the committer thread can fail, and only when the
            // process is out of threads or memory: no test can run then.
            Err(e) => panic!("cannot start the in-memory store: {e}"),
        }
    }

    /// Wraps any engine with the given durability policy (starts the
    /// committer or flusher thread).
    pub fn with_engine(engine: Arc<dyn Engine>, sync: SyncMode) -> Result<Store, StorageError> {
        let counters = Arc::new(Counters::default());
        let durability = match sync {
            SyncMode::Always => {
                Durability::Group(Committer::start(engine.clone(), counters.clone())?)
            }
            SyncMode::Periodic(every) => {
                let flusher = Flusher::start(engine.clone(), every, counters.clone())?;
                Durability::Periodic(flusher, Combiner::new(engine.clone(), counters.clone()))
            }
        };
        Ok(Store {
            inner: Arc::new(Inner {
                engine,
                sync,
                durability,
                counters,
                closed: AtomicBool::new(false),
                close_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The durability policy this store was opened with.
    pub fn sync_mode(&self) -> SyncMode {
        self.inner.sync
    }

    /// Write and fsync counters since open (for metrics and benchmarks).
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.counters.snapshot()
    }

    /// Reads the value stored for `key` in `bucket`.
    pub fn get(&self, bucket: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_at(&DataKey::new(bucket, key)?)
    }

    /// [`Store::get`] with the data key built.
    pub fn get_at(&self, key: &DataKey) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.engine.get(Partition::Data, key.as_bytes())
    }

    /// Stores `value` for `key` in `bucket`; durable per the sync mode when
    /// it returns `Ok` (see the module docs).
    pub async fn put(&self, bucket: &str, key: &[u8], value: Vec<u8>) -> Result<(), StorageError> {
        self.put_at(&DataKey::new(bucket, key)?, value).await
    }

    /// [`Store::put`] with the data key built.
    pub async fn put_at(&self, key: &DataKey, value: Vec<u8>) -> Result<(), StorageError> {
        self.write(vec![Op::Put {
            partition: Partition::Data,
            key: key.as_bytes().to_vec(),
            value,
        }])
        .await
    }

    /// Removes the entry for `key` in `bucket`, with the same durability as
    /// [`Store::put`]. (Replica deletes are tombstone versions written with
    /// `put`; this removes the entry itself, e.g. when a tombstone is purged.)
    pub async fn delete(&self, bucket: &str, key: &[u8]) -> Result<(), StorageError> {
        self.delete_at(&DataKey::new(bucket, key)?).await
    }

    /// [`Store::delete`] with the data key built.
    pub async fn delete_at(&self, key: &DataKey) -> Result<(), StorageError> {
        self.write(vec![Op::Delete {
            partition: Partition::Data,
            key: key.as_bytes().to_vec(),
        }])
        .await
    }

    /// Applies `ops` as one atomic batch, durable per the sync mode when it
    /// returns `Ok`. Keys of `Data` ops must come from [`data_key`].
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        for op in &ops {
            check_op(op)?;
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        if ops.is_empty() {
            return Ok(());
        }
        match &self.inner.durability {
            Durability::Group(committer) => committer.commit(ops).await,
            Durability::Periodic(_, combiner) => combiner.apply(ops).await,
        }
    }

    /// Reads node metadata `name` (e.g. a bucket's properties).
    pub fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.engine.get(Partition::Meta, name.as_bytes())
    }

    /// Stores node metadata `name`, with the same durability as a data write.
    pub async fn meta_put(&self, name: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.write(vec![Op::Put {
            partition: Partition::Meta,
            key: name.as_bytes().to_vec(),
            value,
        }])
        .await
    }

    /// Stores node metadata `name` and returns once it is on disk whatever
    /// the sync mode. For what a node must never forget or repeat — its
    /// id, its incarnation, its tokens, the ring it last saw — a machine
    /// crash under `--sync periodic` must not roll it back: under `Always`
    /// this is [`Store::meta_put`]; under `Periodic` the write is followed
    /// by an fsync of its own. Rare writes, so the extra fsync costs
    /// nothing that matters.
    pub async fn meta_put_durable(&self, name: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.meta_put(name, value).await?;
        if let Durability::Periodic(..) = &self.inner.durability {
            let engine = self.inner.engine.clone();
            let counters = self.inner.counters.clone();
            blocking(move || {
                engine.sync()?;
                counters.syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Point read in any partition (for hints and other raw users).
    pub fn raw_get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.engine.get(p, key)
    }

    /// Entries of `p` with `start <= key < end` (`None`: to the end), in key
    /// order, at most `limit` (for hints and other raw users).
    pub fn raw_scan(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StorageError> {
        self.inner.engine.scan(p, start, end, limit)
    }

    /// [`Store::raw_scan`] that also stops once the values read reach
    /// `max_bytes` (the entry that reaches it included): for pages of
    /// whole objects, which may each be as large as `--max-key-bytes`.
    pub fn raw_scan_within(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<KvPairs, StorageError> {
        self.inner
            .engine
            .scan_within(p, start, end, limit, max_bytes)
    }

    /// The keys of [`Store::raw_scan`]'s entries, without their values.
    pub fn raw_scan_keys(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        self.inner.engine.scan_keys(p, start, end, limit)
    }

    /// Data entries whose token lies in `[start, end]` (inclusive both
    /// ends), ordered by `(token, bucket, key)`, at most `limit`, resuming
    /// strictly after the full data key `after` when given.
    ///
    /// Anti-entropy and streaming page through a range with it: pass the
    /// [`data_key`] of the last entry of one page as `after` of the next,
    /// until a page comes back shorter than `limit`. A range that wraps
    /// past `Token::MAX` is two calls; `start > end` yields nothing.
    pub fn scan_tokens(
        &self,
        start: Token,
        end: Token,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<DataEntry>, StorageError> {
        if start > end || limit == 0 {
            return Ok(Vec::new());
        }
        let mut lower = keys::token_lower_bound(start);
        if let Some(after) = after {
            lower = lower.max(keys::successor(after));
        }
        let upper = keys::token_upper_bound(end);
        let rows = self
            .inner
            .engine
            .scan(Partition::Data, &lower, upper.as_deref(), limit)?;
        rows.into_iter()
            .map(|(k, value)| {
                let (token, bucket, key) = decode_data_key(&k).ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "data key {} does not follow the token||bucket||0x00||key layout",
                        hex(&k)
                    ))
                })?;
                Ok(DataEntry {
                    token,
                    bucket: bucket.to_owned(),
                    key: key.to_vec(),
                    value,
                })
            })
            .collect()
    }

    /// Counts keys and value bytes in the data partition. A full scan:
    /// meant for once at startup, to seed the keys/bytes metrics.
    pub fn count_data(&self) -> Result<(u64, u64), StorageError> {
        self.inner.engine.count(Partition::Data)
    }

    /// Shuts storage down: refuses new writes, lets the committer answer
    /// every write already queued, stops the flusher, then flushes and
    /// fsyncs the engine and releases the directory lock. Idempotent; every
    /// clone of this store is closed.
    pub async fn close(&self) -> Result<(), StorageError> {
        let _serial = self.inner.close_lock.lock().await;
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let thread = match &self.inner.durability {
            Durability::Group(c) => c.shutdown(),
            Durability::Periodic(f, _) => f.shutdown(),
        };
        let engine = self.inner.engine.clone();
        let counters = self.inner.counters.clone();
        let joined = tokio::task::spawn_blocking(move || {
            if let Some(t) = thread
                && t.join().is_err()
            {
                tracing::error!("storage background thread panicked");
            }
            let synced = engine.sync();
            if synced.is_ok() {
                counters.syncs.fetch_add(1, Ordering::Relaxed);
            }
            let closed = engine.close();
            synced.and(closed)
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => Err(StorageError::Engine(format!("closing storage failed: {e}"))),
        }
    }
}

/// Keeps ops the engine cannot store (fjall would panic on them) out.
fn check_op(op: &Op) -> Result<(), StorageError> {
    keys::check_engine_key(op.key())?;
    if let Op::Put { value, .. } = op
        && u32::try_from(value.len()).is_err()
    {
        return Err(StorageError::InvalidKey(format!(
            "value of {} bytes exceeds the engine limit of {} bytes",
            value.len(),
            u32::MAX
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
