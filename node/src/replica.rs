//! This node as a replica: the versions it stores, read and written
//! through the DVVSet rules.
//!
//! A write that this node coordinates mints a new dot for its own id
//! ([`Replica::write`]); a write that another replica coordinated arrives
//! as a whole DVVSet and is merged ([`Replica::merge`]). Both are
//! read-modify-write cycles on one key, so they hold a striped lock for
//! that key across the read, the merge and the durable write: two writes
//! to one key never interleave and lose a version, while writes to
//! different keys proceed in parallel (and share fsyncs through the
//! store's group commit). The lock is a tokio mutex because it is held
//! across the `.await` of the durable write.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::buckets::Conflicts;
use crate::storage::{StorageError, Store};
use crate::version::{Clock, Context, Dvvs, Timestamp, Value};

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

/// The result of a local write.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The key's versions after the write.
    pub object: Dvvs,
    /// Concurrent versions an LWW bucket dropped.
    pub lww_dropped: usize,
}

/// This node's replica of the data.
pub struct Replica {
    id: String,
    store: Store,
    locks: Vec<tokio::sync::Mutex<()>>,
    clock: Mutex<Clock>,
    keys: AtomicI64,
    bytes: AtomicI64,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Replica {
    /// A replica over `store`, counting what it holds (one scan at start).
    pub fn open(id: String, store: Store) -> Result<Replica, StorageError> {
        let (keys, bytes) = store.count_data()?;
        Ok(Replica {
            id,
            store,
            locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            clock: Mutex::new(Clock::new()),
            keys: AtomicI64::new(keys as i64),
            bytes: AtomicI64::new(bytes as i64),
        })
    }

    /// This node's id, which names the dots it mints.
    pub fn id(&self) -> &str {
        &self.id
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

    fn stripe(&self, bucket: &str, key: &[u8]) -> &tokio::sync::Mutex<()> {
        let t = quorumkv_ring::token_of(bucket.as_bytes(), key);
        &self.locks[(t % STRIPES as u64) as usize]
    }

    /// The versions this node stores for a key.
    pub fn read(&self, bucket: &str, key: &[u8]) -> Result<Option<Dvvs>, StorageError> {
        Ok(self.read_sized(bucket, key)?.map(|(object, _)| object))
    }

    /// The stored versions and their encoded size (what the byte counters
    /// need, without encoding the object again).
    fn read_sized(&self, bucket: &str, key: &[u8]) -> Result<Option<(Dvvs, usize)>, StorageError> {
        match self.store.get(bucket, key)? {
            None => Ok(None),
            Some(bytes) => Dvvs::decode(&bytes)
                .map(|object| Some((object, bytes.len())))
                .map_err(|e| {
                    StorageError::Corrupt(format!("stored versions of a key in {bucket}: {e}"))
                }),
        }
    }

    /// A timestamp from this node's hybrid logical clock, later than
    /// `seen` (the newest version already stored for the key): a write
    /// made after another is stamped after it even when this node's wall
    /// clock lags the one that stamped the older version.
    pub fn now_after(&self, seen: Option<Timestamp>) -> Timestamp {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let wall = wall_ms();
        if let Some(t) = seen {
            clock.observe(t, wall);
        }
        clock.now(wall)
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
    ) -> Result<WriteOutcome, StorageError> {
        let _guard = self.stripe(bucket, key).lock().await;
        let (old, old_size) = self.read_sized(bucket, key)?.unzip();
        let mut object = old.unwrap_or_default();
        let ts = self.now_after(object.max_timestamp());
        let value = match mutation {
            Mutation::Put { data, content_type } => Value::live(data, content_type, ts),
            Mutation::Delete => Value::tombstone(ts),
        };
        object.update(ctx, &self.id, value);
        let lww_dropped = match conflicts {
            Conflicts::Lww => object.resolve_lww(),
            Conflicts::Siblings => 0,
        };
        self.persist(bucket, key, &object, old_size).await?;
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
    ) -> Result<WriteOutcome, StorageError> {
        let _guard = self.stripe(bucket, key).lock().await;
        let (old, old_size) = self.read_sized(bucket, key)?.unzip();
        if let Some(t) = remote.max_timestamp() {
            let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
            clock.observe(t, wall_ms());
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
            self.persist(bucket, key, &object, old_size).await?;
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
        let _guard = self.stripe(bucket, key).lock().await;
        let Some(old) = self.store.get(bucket, key)? else {
            return Ok(0);
        };
        self.store.delete(bucket, key).await?;
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(old.len() as i64, Ordering::Relaxed);
        Ok(old.len() as u64)
    }

    async fn persist(
        &self,
        bucket: &str,
        key: &[u8],
        object: &Dvvs,
        old_size: Option<usize>,
    ) -> Result<(), StorageError> {
        let bytes = object.encode();
        let new_size = bytes.len() as i64;
        self.store.put(bucket, key, bytes).await?;
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
