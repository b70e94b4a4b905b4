//! This node as a replica: the versions it stores, read and written
//! through the DVVSet rules.
//!
//! A write that this node coordinates mints a new dot for its own *actor*
//! ([`Replica::write`]): the node id plus the incarnation of its data dir
//! (see [`actor_name`]); a write that another replica coordinated arrives
//! as a whole DVVSet and is merged ([`Replica::merge`]). Both are
//! read-modify-write cycles on one key, so they hold a striped lock for
//! that key across the read, the merge and the durable write: two writes
//! to one key never interleave and lose a version, while writes to
//! different keys proceed in parallel (and share fsyncs through the
//! store's group commit). The lock is a tokio mutex because it is held
//! across the `.await` of the durable write.
//!
//! A row cache ([`cache::RowCache`]) keeps the encoded versions of the keys this
//! replica wrote or merged since it started, so that reads and the read of
//! a read-modify-write skip the storage engine's search (its memtable
//! skiplist was the largest user-space cost of a request). It is filled
//! only by successful writes, under the key's lock, and a write that does
//! not complete — it fails, or its future is dropped half-way at a
//! deadline — empties the key's entry ([`cache::Pending`]), so reads fall back to
//! storage, which is the truth. Reads never fill it: an unlocked read that
//! filled it could put a value back that a concurrent write had just
//! replaced.
//!
//! Both refuse a change that would grow a key's stored versions (all
//! siblings, as encoded) past `--max-key-bytes` ([`WriteError::KeyTooLarge`]),
//! so that every replica applies the same bound and any key stored fits
//! one internode frame. A change that shrinks a key is always taken, so a
//! key over a lowered bound can still be replaced or deleted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::buckets::Conflicts;
use crate::storage::{DataKey, Op, Partition, StorageError, Store};
use crate::version::{Clock, Context, Dvvs, Timestamp, Value};

#[cfg(test)]
mod bound_tests;
mod cache;

use cache::RowCache;

const STRIPES: usize = 4096;

/// What a client asked to store: a value, or a deletion.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Mutation {
    /// Store `data` with its content type.
    Put {
        /// The value.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Its content type, returned on reads.
        content_type: String,
    },
    /// Delete: a tombstone version.
    Delete,
}

/// Why a local write or merge failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The key's stored versions would grow past the bound; nothing was
    /// written.
    #[error("the key would hold {size} bytes of versions, over the limit of {limit}")]
    KeyTooLarge {
        /// The key's encoded size after the change.
        size: u64,
        /// `--max-key-bytes`.
        limit: u64,
    },
}

/// The result of a local write.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The key's versions after the write.
    pub object: Dvvs,
    /// Concurrent versions an LWW bucket dropped.
    pub lww_dropped: usize,
}

/// Separates the node id from the incarnation in an actor name. Node ids
/// are `[A-Za-z0-9._-]`, so an actor name can never equal another node's
/// id, nor another incarnation's name.
pub const INCARNATION_SEPARATOR: char = '@';

/// The name under which a node mints dots: `id@incarnation` (8 hex
/// digits), or the plain id for a data dir created before incarnations
/// existed.
///
/// Why: a dot must never be minted twice. A node whose data dir was wiped
/// and that restarts under the same id starts its counters again from 1;
/// under the plain id its new dots (id, 1), (id, 2)… would collide with the
/// old ones other replicas still remember, and `sync` would take the new
/// writes for already-seen (overwritten) ones: acknowledged writes lost.
/// A fresh data dir draws a fresh random incarnation, so its dots are
/// another actor's. Placement, traces and `/internal/local` keep using the
/// node id ([`Replica::id`]).
pub fn actor_name(id: &str, incarnation: Option<u32>) -> String {
    match incarnation {
        Some(i) => format!("{id}{INCARNATION_SEPARATOR}{i:08x}"),
        None => id.to_string(),
    }
}

/// This node's replica of the data.
pub struct Replica {
    id: String,
    actor: String,
    store: Store,
    locks: Vec<tokio::sync::Mutex<()>>,
    clock: Mutex<Clock>,
    /// How far ahead of this node's wall clock a timestamp seen in a
    /// version may move its clock (`--max-clock-offset-ms`).
    max_clock_offset_ms: u64,
    /// Timestamps seen beyond that bound.
    clock_clamped: AtomicU64,
    keys: AtomicI64,
    bytes: AtomicI64,
    cache: RowCache,
    /// The largest a key's encoded versions may grow (`--max-key-bytes`).
    max_key_bytes: u64,
}

impl Replica {
    /// A replica over `store` for node `id`, minting dots as `actor` (see
    /// [`actor_name`]), counting what it holds (one scan at start), with a
    /// row cache of the default size.
    pub fn open(id: String, actor: String, store: Store) -> Result<Replica, StorageError> {
        Replica::with_row_cache(id, actor, store, crate::config::DEFAULT_ROW_CACHE_BYTES)
    }

    /// [`Replica::open`] with a row cache of `cache_bytes` (0: none).
    pub fn with_row_cache(
        id: String,
        actor: String,
        store: Store,
        cache_bytes: u64,
    ) -> Result<Replica, StorageError> {
        let (keys, bytes) = store.count_data()?;
        Ok(Replica {
            id,
            actor,
            store,
            locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            clock: Mutex::new(Clock::new()),
            max_clock_offset_ms: crate::config::DEFAULT_MAX_CLOCK_OFFSET_MS,
            clock_clamped: AtomicU64::new(0),
            keys: AtomicI64::new(keys as i64),
            bytes: AtomicI64::new(bytes as i64),
            cache: RowCache::new(cache_bytes),
            max_key_bytes: u64::MAX,
        })
    }

    /// The same replica, refusing to grow a key's stored versions past
    /// `bytes` (`--max-key-bytes`; unbounded by default).
    pub fn with_max_key_bytes(mut self, bytes: u64) -> Replica {
        self.max_key_bytes = bytes;
        self
    }

    /// The same replica, letting timestamps move its clock at most
    /// `ms` ahead of its wall clock (`--max-clock-offset-ms`).
    pub fn with_max_clock_offset(mut self, ms: u64) -> Replica {
        self.max_clock_offset_ms = ms;
        self
    }

    /// Timestamps seen more than the max clock offset ahead of this node's
    /// clock, which moved it only as far as the bound (for metrics).
    pub fn clock_clamped(&self) -> u64 {
        self.clock_clamped.load(Ordering::Relaxed)
    }

    fn count_clamped(&self, clamped: bool) {
        if clamped {
            self.clock_clamped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// This node's id: what placement, traces and inspection name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The actor that names the dots this node mints ([`actor_name`]).
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Keys and value bytes stored (tombstones included), for metrics.
    pub fn stored(&self) -> (i64, i64) {
        (
            self.keys.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    fn stripe(&self, key: &DataKey) -> &tokio::sync::Mutex<()> {
        &self.locks[(key.token() % STRIPES as u64) as usize]
    }

    /// The versions this node stores for a key.
    pub fn read(&self, bucket: &str, key: &[u8]) -> Result<Option<Dvvs>, StorageError> {
        let k = DataKey::new(bucket, key)?;
        Ok(self.read_sized(bucket, &k)?.map(|(object, _)| object))
    }

    /// The versions this node stores for a key, encoded as they are stored
    /// (what a remote read answers: nothing to decode and encode again).
    pub fn read_encoded(&self, bucket: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let k = DataKey::new(bucket, key)?;
        match self.cache.get(&k) {
            Some(bytes) => Ok(Some(bytes.to_vec())),
            None => self.store.get_at(&k),
        }
    }

    /// The stored versions and their encoded size (what the byte counters
    /// need, without encoding the object again).
    fn read_sized(
        &self,
        bucket: &str,
        key: &DataKey,
    ) -> Result<Option<(Dvvs, usize)>, StorageError> {
        let decode = |bytes: &[u8]| {
            Dvvs::decode(bytes)
                .map(|object| (object, bytes.len()))
                .map_err(|e| {
                    StorageError::Corrupt(format!("stored versions of a key in {bucket}: {e}"))
                })
        };
        match self.cache.get(key) {
            Some(bytes) => decode(&bytes[..]).map(Some),
            None => self.store.get_at(key)?.as_deref().map(decode).transpose(),
        }
    }

    /// A timestamp from this node's hybrid logical clock, later than
    /// `seen` (the newest version already stored for the key): a write
    /// made after another is stamped after it even when this node's wall
    /// clock lags the one that stamped the older version. A `seen` beyond
    /// the max clock offset does not move the clock itself
    /// ([`Clock::stamp_after`]).
    pub fn now_after(&self, seen: Option<Timestamp>) -> Timestamp {
        let wall = crate::clock::unix_ms();
        let (ts, clamped) = self
            .clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stamp_after(seen, wall, self.max_clock_offset_ms);
        self.count_clamped(clamped);
        ts
    }

    /// Coordinates a client write here: the versions `ctx` covers are
    /// replaced by the new one, which gets a fresh dot of this node.
    pub async fn write(
        &self,
        bucket: &str,
        key: &[u8],
        ctx: &Context,
        mutation: Mutation,
        conflicts: Conflicts,
    ) -> Result<WriteOutcome, WriteError> {
        let k = DataKey::new(bucket, key)?;
        let _guard = self.stripe(&k).lock().await;
        let (old, old_size) = self.read_sized(bucket, &k)?.unzip();
        let mut object = old.unwrap_or_default();
        let ts = self.now_after(object.max_timestamp());
        let value = match mutation {
            Mutation::Put { data, content_type } => Value::live(data, content_type, ts),
            Mutation::Delete => Value::tombstone(ts),
        };
        // Only a corrupt or hostile stored state leaves no fresh dot: an
        // error for this write, never a dot that names another one.
        object.update(ctx, &self.actor, value).map_err(|e| {
            StorageError::Corrupt(format!("{bucket}/{}: {e}", String::from_utf8_lossy(key)))
        })?;
        let lww_dropped = match conflicts {
            Conflicts::Lww => object.resolve_lww(),
            Conflicts::Siblings => 0,
        };
        let bytes = self.bounded(&object, old_size)?;
        self.persist(&k, &object, bytes, old_size).await?;
        Ok(WriteOutcome {
            object,
            lww_dropped,
        })
    }

    /// Merges versions coordinated elsewhere (replication, read repair,
    /// hints, anti-entropy) into what this node stores.
    pub async fn merge(
        &self,
        bucket: &str,
        key: &[u8],
        remote: &Dvvs,
        conflicts: Conflicts,
    ) -> Result<WriteOutcome, WriteError> {
        let k = DataKey::new(bucket, key)?;
        let _guard = self.stripe(&k).lock().await;
        let (old, old_size) = self.read_sized(bucket, &k)?.unzip();
        if let Some(t) = remote.max_timestamp() {
            let wall = crate::clock::unix_ms();
            let (_, clamped) = self
                .clock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe_within(t, wall, self.max_clock_offset_ms);
            self.count_clamped(clamped);
        }
        let mut object = match &old {
            Some(o) => o.sync(remote),
            None => remote.clone(),
        };
        let lww_dropped = match conflicts {
            Conflicts::Lww => object.resolve_lww(),
            Conflicts::Siblings => 0,
        };
        if old.as_ref() != Some(&object) {
            let bytes = self.bounded(&object, old_size)?;
            self.persist(&k, &object, bytes, old_size).await?;
        }
        Ok(WriteOutcome {
            object,
            lww_dropped,
        })
    }

    /// Deletes a key this node no longer replicates (cleanup after a ring
    /// change), under the key's lock, keeping the counters right. Returns
    /// the stored bytes freed (0: nothing was stored).
    pub async fn forget(&self, bucket: &str, key: &[u8]) -> Result<u64, StorageError> {
        let k = DataKey::new(bucket, key)?;
        let _guard = self.stripe(&k).lock().await;
        let Some(old) = self.store.get_at(&k)? else {
            return Ok(0);
        };
        self.cache.forget(&k);
        self.store
            .write(vec![
                Op::Delete {
                    partition: Partition::Data,
                    key: k.as_bytes().to_vec(),
                },
                Op::Delete {
                    partition: Partition::Meta,
                    key: tombstone_key(&k),
                },
            ])
            .await?;
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(old.len() as i64, Ordering::Relaxed);
        Ok(old.len() as u64)
    }

    /// Removes the key from storage if its versions still have `digest`
    /// (what purge decided on): a write or merge that changed them since
    /// keeps the key. Returns whether it was removed.
    pub async fn purge(&self, bucket: &str, key: &[u8], digest: u64) -> Result<bool, StorageError> {
        let k = DataKey::new(bucket, key)?;
        let _guard = self.stripe(&k).lock().await;
        let Some((object, size)) = self.read_sized(bucket, &k)? else {
            return Ok(false);
        };
        if object.digest() != digest {
            return Ok(false);
        }
        self.cache.forget(&k);
        self.store
            .write(vec![
                Op::Delete {
                    partition: Partition::Data,
                    key: k.as_bytes().to_vec(),
                },
                Op::Delete {
                    partition: Partition::Meta,
                    key: tombstone_key(&k),
                },
            ])
            .await?;
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(size as i64, Ordering::Relaxed);
        Ok(true)
    }

    /// When this node last stored a change to `key` that left it
    /// tombstones only, by this node's own clock (unix ms); `None` for a
    /// key that is not tombstone-only, or stored before these times were
    /// kept. Purge counts the grace period from here, so that the
    /// writer's clock — which may lag — never shortens it (see
    /// `repair::purge`).
    pub fn tombstone_stored_ms(
        &self,
        bucket: &str,
        key: &[u8],
    ) -> Result<Option<u64>, StorageError> {
        let k = DataKey::new(bucket, key)?;
        match self.store.raw_get(Partition::Meta, &tombstone_key(&k))? {
            None => Ok(None),
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(|b| Some(u64::from_be_bytes(b)))
                .map_err(|_| {
                    StorageError::Corrupt(format!("tombstone time of a key is {} bytes", b.len()))
                }),
        }
    }

    /// `object` encoded, unless that grows the key (stored at `old_size`)
    /// past the bound.
    fn bounded(&self, object: &Dvvs, old_size: Option<usize>) -> Result<Vec<u8>, WriteError> {
        let bytes = object.encode();
        let size = bytes.len() as u64;
        if size > self.max_key_bytes && size > old_size.unwrap_or(0) as u64 {
            return Err(WriteError::KeyTooLarge {
                size,
                limit: self.max_key_bytes,
            });
        }
        Ok(bytes)
    }

    /// Stores `object`, encoded as `bytes`.
    async fn persist(
        &self,
        key: &DataKey,
        object: &Dvvs,
        bytes: Vec<u8>,
        old_size: Option<usize>,
    ) -> Result<(), StorageError> {
        let new_size = bytes.len() as i64;
        // The store takes the bytes; the cache (when there is one) a copy.
        let entry = self.cache.entry(key, &bytes);
        let pending = self.cache.pending(key);
        if object.is_deleted() {
            // A change that leaves tombstones only: note when, on this
            // node's clock, in the same batch (see `tombstone_stored_ms`).
            let now = crate::clock::unix_ms();
            self.store
                .write(vec![
                    Op::Put {
                        partition: Partition::Data,
                        key: key.as_bytes().to_vec(),
                        value: bytes,
                    },
                    Op::Put {
                        partition: Partition::Meta,
                        key: tombstone_key(key),
                        value: now.to_be_bytes().to_vec(),
                    },
                ])
                .await?;
        } else {
            self.store.put_at(key, bytes).await?;
        }
        pending.done(entry);
        match old_size {
            None => {
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(new_size, Ordering::Relaxed);
            }
            Some(old) => {
                self.bytes
                    .fetch_add(new_size - old as i64, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Meta key of the time a key last became (or stayed, changed)
/// tombstones only on this node.
fn tombstone_key(k: &DataKey) -> Vec<u8> {
    let mut out = b"tomb/".to_vec();
    out.extend_from_slice(k.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn put(data: &str) -> Mutation {
        Mutation::Put {
            data: data.as_bytes().to_vec(),
            content_type: "text/plain".into(),
        }
    }

    fn live(o: &Dvvs) -> Vec<Vec<u8>> {
        o.live_values().iter().map(|v| v.data.clone()).collect()
    }

    #[test]
    fn actor_names_never_equal_a_node_id() {
        assert_eq!(actor_name("n3", None), "n3");
        assert_eq!(actor_name("n3", Some(0x7f3a)), "n3@00007f3a");
        assert!(crate::config::validate_node_id(&actor_name("n3", Some(1))).is_err());
    }

    /// `writes` successive client writes to one key (each with the context
    /// of the previous one) through a replica minting as `actor`.
    async fn history(actor: &str, writes: usize, prefix: &str) -> Dvvs {
        let r = Replica::open("n3".into(), actor.into(), Store::memory()).expect("open");
        let mut ctx = Context::new();
        for i in 0..writes {
            let out = r
                .write(
                    "b",
                    b"k",
                    &ctx,
                    put(&format!("{prefix}-{i}")),
                    Conflicts::Siblings,
                )
                .await
                .expect("write");
            ctx = out.object.context();
        }
        r.read("b", b"k").expect("read").unwrap_or_default()
    }

    /// What a peer that kept the old history holds after merging the first
    /// write of a wiped node that restarted as `new_actor`.
    async fn after_wipe(old_actor: &str, new_actor: &str, old_writes: usize) -> Dvvs {
        let peer = history(old_actor, old_writes, "old").await;
        let wiped = Replica::open("n3".into(), new_actor.into(), Store::memory()).expect("open");
        let out = wiped
            .write("b", b"k", &Context::new(), put("new"), Conflicts::Siblings)
            .await
            .expect("write");
        peer.sync(&out.object)
    }

    #[tokio::test]
    async fn a_wiped_node_under_a_new_incarnation_does_not_lose_its_first_write() {
        let merged = after_wipe("n3@00000001", "n3@00000002", 3).await;
        let mut values = live(&merged);
        values.sort();
        assert_eq!(values, [b"new".to_vec(), b"old-2".to_vec()]);
    }

    #[tokio::test]
    async fn reusing_the_actor_would_lose_it() {
        // Why incarnations exist: the new (n3, 1) looks overwritten to a
        // peer that has seen (n3, 3).
        let merged = after_wipe("n3", "n3", 3).await;
        assert_eq!(live(&merged), [b"old-2".to_vec()]);
    }

    #[tokio::test]
    async fn a_forgotten_key_is_gone_from_the_cache_too() {
        let r = Replica::open("n1".into(), "n1".into(), Store::memory()).expect("open");
        r.write("b", b"k", &Context::new(), put("v"), Conflicts::Siblings)
            .await
            .expect("write");
        assert!(r.forget("b", b"k").await.expect("forget") > 0);
        assert!(r.read("b", b"k").expect("read").is_none());
        assert_eq!(r.stored(), (0, 0));
    }

    /// A version stamped an hour ahead (a peer whose clock runs fast) is
    /// kept, and a later blind write of its key in an LWW bucket still
    /// replaces it; but it moves this replica's clock only up to the max
    /// offset, so another key's write is stamped near the wall clock.
    #[tokio::test]
    async fn a_version_from_a_clock_far_ahead_is_kept_and_clamped_and_counted() {
        let r = Replica::open("n1".into(), "n1".into(), Store::memory())
            .expect("open")
            .with_max_clock_offset(500);
        let hour = 3_600_000;
        let ahead = Timestamp::new(crate::clock::unix_ms() + hour, 0);
        let mut remote = Dvvs::default();
        remote
            .update(
                &Context::new(),
                "n2",
                Value::live(b"fast".to_vec(), "t", ahead),
            )
            .expect("a fresh dot");
        r.merge("b", b"k", &remote, Conflicts::Lww)
            .await
            .expect("merge");
        assert_eq!(r.clock_clamped(), 1);
        assert_eq!(
            live(&r.read("b", b"k").expect("read").expect("kept")),
            [b"fast".to_vec()]
        );
        let out = r
            .write("b", b"k", &Context::new(), put("later"), Conflicts::Lww)
            .await
            .expect("write");
        assert_eq!(live(&out.object), [b"later".to_vec()]);
        assert_eq!(r.clock_clamped(), 2);
        let other = r
            .write("b", b"other", &Context::new(), put("v"), Conflicts::Lww)
            .await
            .expect("write");
        let stamped = other.object.max_timestamp().expect("stamped").wall_ms();
        assert!(
            stamped < crate::clock::unix_ms() + 1000,
            "another key's write is stamped {stamped}, dragged toward {}",
            ahead.wall_ms()
        );
    }

    /// Open or shut; writes wait while it is shut.
    #[derive(Default)]
    struct Gate {
        shut: Mutex<bool>,
        opened: std::sync::Condvar,
    }

    impl Gate {
        fn set(&self, shut: bool) {
            *self.shut.lock().unwrap_or_else(|p| p.into_inner()) = shut;
            self.opened.notify_all();
        }
    }

    /// A memory engine whose writes wait while its gate is shut: a write
    /// can be caught between its start and its commit.
    struct Gated {
        inner: crate::storage::MemoryEngine,
        gate: Arc<Gate>,
    }

    impl crate::storage::Engine for Gated {
        fn get(
            &self,
            p: crate::storage::Partition,
            key: &[u8],
        ) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get(p, key)
        }
        fn apply(&self, ops: Vec<crate::storage::Op>) -> Result<(), StorageError> {
            let shut = self.gate.shut.lock().unwrap_or_else(|p| p.into_inner());
            let _open = self
                .gate
                .opened
                .wait_while(shut, |shut| *shut)
                .unwrap_or_else(|p| p.into_inner());
            self.inner.apply(ops)
        }
        fn sync(&self) -> Result<(), StorageError> {
            self.inner.sync()
        }
        fn scan_within(
            &self,
            p: crate::storage::Partition,
            start: &[u8],
            end: Option<&[u8]>,
            limit: usize,
            max_bytes: usize,
        ) -> Result<crate::storage::KvPairs, StorageError> {
            self.inner.scan_within(p, start, end, limit, max_bytes)
        }
        fn close(&self) -> Result<(), StorageError> {
            self.inner.close()
        }
    }

    /// A write dropped while it waits for its commit (a deadline) may
    /// still reach storage: the cache must not keep serving the value it
    /// replaced.
    #[tokio::test]
    async fn a_write_dropped_mid_commit_leaves_no_stale_cache_entry() {
        let gate = Arc::new(Gate::default());
        let engine = Gated {
            inner: crate::storage::MemoryEngine::new(),
            gate: gate.clone(),
        };
        let store =
            Store::with_engine(Arc::new(engine), crate::storage::SyncMode::Always).expect("store");
        let r = Replica::open("n1".into(), "n1".into(), store.clone()).expect("open");
        let first = r
            .write("b", b"k", &Context::new(), put("v1"), Conflicts::Siblings)
            .await
            .expect("write");
        assert_eq!(
            live(&r.read("b", b"k").expect("read").expect("some")),
            [b"v1".to_vec()]
        );
        gate.set(true);
        {
            let ctx = first.object.context();
            let second = r.write("b", b"k", &ctx, put("v2"), Conflicts::Siblings);
            let mut second = std::pin::pin!(second);
            // One poll queues the commit, which waits at the gate; then the
            // future is dropped.
            assert!(futures::poll!(second.as_mut()).is_pending());
        }
        gate.set(false);
        // Wait until the commit has reached storage.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stored = store.get("b", b"k").expect("get").expect("stored");
            let stored = Dvvs::decode(&stored).expect("decode");
            if live(&stored) == [b"v2".to_vec()] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the commit never landed"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(
            live(&r.read("b", b"k").expect("read").expect("some")),
            [b"v2".to_vec()]
        );
    }

    #[tokio::test]
    async fn without_a_cache_reads_and_writes_are_the_same() {
        let r =
            Replica::with_row_cache("n1".into(), "n1".into(), Store::memory(), 0).expect("open");
        let a = r
            .write("b", b"k", &Context::new(), put("a"), Conflicts::Siblings)
            .await
            .expect("write");
        r.write(
            "b",
            b"k",
            &a.object.context(),
            put("b"),
            Conflicts::Siblings,
        )
        .await
        .expect("write");
        assert_eq!(
            live(&r.read("b", b"k").expect("read").expect("some")),
            [b"b".to_vec()]
        );
    }

    proptest! {
        #[test]
        fn a_new_incarnation_keeps_every_new_write(old in 0usize..6, new in 1usize..6, a: u32, b: u32) {
            prop_assume!(a != b);
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            rt.block_on(async {
                let peer = history(&actor_name("n3", Some(a)), old, "old").await;
                let mine = history(&actor_name("n3", Some(b)), new, "new").await;
                let merged = peer.sync(&mine);
                // Both latest writes survive as siblings: neither node saw
                // the other's history.
                let want: usize = usize::from(old > 0) + 1;
                prop_assert_eq!(merged.live_values().len(), want);
                let newest = format!("new-{}", new - 1).into_bytes();
                prop_assert!(live(&merged).contains(&newest));
                Ok(())
            })?;
        }
    }
}
