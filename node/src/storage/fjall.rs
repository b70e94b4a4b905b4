//! The on-disk engine: one fjall 3 database, three keyspaces.
//!
//! Settings and why:
//!
//! - **Block cache 64 MiB** (fjall's default is 32 MiB): enough for the
//!   index and filter blocks plus a hot working set of a few hundred
//!   thousand small objects, while keeping a test cluster of five nodes on
//!   one machine well under a gigabyte.
//! - **Automatic journal flush to the OS on every batch** (fjall's default,
//!   `manual_journal_persist = false`): each `commit` ends with a `write(2)`
//!   of the batch from fjall's 8 KiB user-space buffer into the kernel. That
//!   is what makes an applied batch survive `kill -9` of the process even
//!   before any fsync — the page cache belongs to the kernel, not to us.
//! - **`sync` = `persist(SyncData)`** (fdatasync of the active journal). It
//!   is enough for power-loss durability because fjall sizes each new
//!   journal file to 64 MiB up front (`set_len`) and fsyncs it *and its
//!   directory* when it creates it (`Writer::create_new` +
//!   `fsync_directory`), and a journal rotation first `SyncAll`s the old
//!   file. So the only metadata an append changes is the allocation of
//!   blocks inside the (sparse) file, which fdatasync does flush; the
//!   directory entry and the file size are already durable. On recovery
//!   fjall replays complete batches and truncates an incomplete last batch
//!   (a write torn by the crash, never acknowledged), so a batch is never
//!   half-applied.
//! - **Keyspaces `data`, `meta`, `hints`** with fjall's default options (64
//!   MiB memtables, leveled compaction, LZ4 on deeper levels). `meta` expects
//!   point-read hits, the others do not.
//! - **A memtable reaper** (`reaper.rs`): a low-priority thread that holds
//!   a reference to every active memtable, so that the memtable fjall
//!   retires is freed there rather than under fjall's version-history lock,
//!   where freeing it stopped every read and write of the node for 100–330
//!   ms at each rotation.
//!
//! Locking: fjall takes an exclusive `flock` on `<dir>/lock` (via
//! `File::try_lock`) when it opens, and keeps it until the database and all
//! keyspace handles are dropped. `flock` conflicts between open file
//! descriptions, so a second `qkvd` on the same directory — or a second
//! open in this process — is refused; we map that to
//! [`StorageError::Locked`]. We therefore take no lock of our own.
//!
//! Caveats: a *complete* batch whose checksum fails stops recovery with an
//! error ([`StorageError::Corrupt`] at open) instead of being skipped; after
//! a kill -9 this cannot happen (the kernel has the whole batch), after a
//! power loss it could for an unacknowledged tail batch whose end marker
//! reached the disk before its middle — the node then refuses to start
//! rather than guess. After a failed journal write or fsync fjall *poisons* the
//! database and refuses every later write (we surface
//! [`StorageError::Engine`]); only a restart, which replays the journal,
//! clears it. Write stalls (too many sealed memtables or L0 runs) make
//! `apply` sleep in fjall; callers on an async runtime should expect it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::engine::{key_range, page};
use super::reaper::Reaper;
use super::{Engine, KvPairs, Op, Partition, StorageError};

/// Block cache capacity (bytes). See the module docs.
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;

struct Handles {
    db: Database,
    /// Indexed by `Partition::index`.
    keyspaces: [Keyspace; 3],
}

/// The fjall engine. See the module docs.
pub struct FjallEngine {
    path: PathBuf,
    /// Frees retired memtables outside fjall's locks (see `reaper.rs`);
    /// stopped before the handles go, since it holds keyspace handles too.
    reaper: Mutex<Option<Reaper>>,
    /// `None` once closed: dropping the handles releases the directory lock.
    handles: RwLock<Option<Handles>>,
}

impl std::fmt::Debug for FjallEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FjallEngine {
    /// Opens (creating if needed) the database under `dir`.
    ///
    /// Checks the directory first so that the common mistakes — a path that
    /// is a file, a directory we may not write — fail with a reason a person
    /// can act on rather than a bare I/O error from deep inside fjall.
    pub fn open(dir: &Path) -> Result<FjallEngine, StorageError> {
        check_dir(dir)?;
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let keyspace = |p: Partition| {
            db.keyspace(p.name(), || {
                KeyspaceCreateOptions::default().expect_point_read_hits(p == Partition::Meta)
            })
            .map_err(|e| open_error(dir, e))
        };
        let keyspaces = [
            keyspace(Partition::Data)?,
            keyspace(Partition::Meta)?,
            keyspace(Partition::Hints)?,
        ];
        // No persist needed here: fjall registers a new keyspace by ingesting
        // a table into its own meta keyspace, which it writes and fsyncs
        // itself, and recovery already `SyncAll`s the active journal.
        let reaper = Reaper::start(keyspaces.to_vec()).map_err(|e| StorageError::from_io(&e))?;
        Ok(FjallEngine {
            path: dir.to_path_buf(),
            reaper: Mutex::new(Some(reaper)),
            handles: RwLock::new(Some(Handles { db, keyspaces })),
        })
    }

    /// The directory this engine was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Memtables the reaper holds now, and memtables it has freed since
    /// open (`None` once closed).
    pub fn reaper_counts(&self) -> Option<(u64, u64)> {
        let reaper = self.reaper.lock().unwrap_or_else(|e| e.into_inner());
        reaper.as_ref().map(|r| {
            let s = r.stats();
            (
                s.held.load(Ordering::Relaxed),
                s.freed.load(Ordering::Relaxed),
            )
        })
    }

    /// Seals the data keyspace's memtable and waits for its flush, as
    /// fjall does on its own when a memtable is full.
    #[cfg(test)]
    pub(crate) fn rotate_data_memtable(&self) -> Result<(), StorageError> {
        let guard = self.handles();
        let h = guard.as_ref().ok_or(StorageError::Closed)?;
        h.keyspaces[Partition::Data.index()]
            .rotate_memtable_and_wait()
            .map_err(map_error)
    }

    fn handles(&self) -> RwLockReadGuard<'_, Option<Handles>> {
        // Poisoning only records that a thread panicked while holding the
        // guard; fjall's handles stay valid, so keep serving.
        self.handles.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes sure `dir` exists, is a directory, and is writable.
fn check_dir(dir: &Path) -> Result<(), StorageError> {
    let unusable = |reason: String| StorageError::DataDirUnusable {
        path: dir.to_path_buf(),
        reason,
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(unusable("it exists and is not a directory".into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| unusable(format!("cannot create it: {e}")))?;
        }
        Err(e) => return Err(unusable(format!("cannot inspect it: {e}"))),
    }
    // Probe writability with a real file: permission bits alone lie for
    // root, read-only mounts and ACLs.
    let probe = dir.join(".qkv-write-probe");
    std::fs::write(&probe, b"probe").map_err(|e| unusable(format!("not writable: {e}")))?;
    // Best effort: a leftover probe file is harmless.
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Maps a fjall error raised while opening.
fn open_error(dir: &Path, e: fjall::Error) -> StorageError {
    match e {
        fjall::Error::Locked => StorageError::Locked {
            path: dir.to_path_buf(),
        },
        fjall::Error::Io(io) => StorageError::DataDirUnusable {
            path: dir.to_path_buf(),
            reason: io.to_string(),
        },
        other => map_error(other),
    }
}

/// Maps a fjall error raised while serving.
fn map_error(e: fjall::Error) -> StorageError {
    match e {
        fjall::Error::Io(io) => StorageError::from_io(&io),
        fjall::Error::Poisoned => StorageError::Engine(
            "an earlier journal write or fsync failed; the database refuses writes until qkvd \
             is restarted"
                .into(),
        ),
        fjall::Error::Locked => StorageError::Engine("database is locked".into()),
        fjall::Error::KeyspaceDeleted => StorageError::Engine("keyspace was deleted".into()),
        fjall::Error::Storage(lsm_err) => match lsm_err {
            fjall::LsmError::Io(io) => StorageError::from_io(&io),
            other => StorageError::Corrupt(format!("{other:?}")),
        },
        fjall::Error::InvalidVersion(v) => StorageError::Corrupt(format!(
            "unsupported database format version {v:?} (not a fjall 3 database?)"
        )),
        fjall::Error::Unrecoverable => {
            StorageError::Corrupt("fjall could not recover the database; see its log".into())
        }
        other => StorageError::Corrupt(format!("{other:?}")),
    }
}

impl Engine for FjallEngine {
    fn get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let guard = self.handles();
        let h = guard.as_ref().ok_or(StorageError::Closed)?;
        let v = h.keyspaces[p.index()].get(key).map_err(map_error)?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let guard = self.handles();
        let h = guard.as_ref().ok_or(StorageError::Closed)?;
        if ops.is_empty() {
            return Ok(());
        }
        let mut batch = h.db.batch();
        for op in ops {
            match op {
                Op::Put {
                    partition,
                    key,
                    value,
                } => batch.insert(&h.keyspaces[partition.index()], key, value),
                Op::Delete { partition, key } => batch.remove(&h.keyspaces[partition.index()], key),
            }
        }
        batch.commit().map_err(map_error)
    }

    fn sync(&self) -> Result<(), StorageError> {
        let guard = self.handles();
        let h = guard.as_ref().ok_or(StorageError::Closed)?;
        h.db.persist(PersistMode::SyncData).map_err(map_error)
    }

    fn scan_within(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<KvPairs, StorageError> {
        let guard = self.handles();
        let h = guard.as_ref().ok_or(StorageError::Closed)?;
        let Some(range) = key_range(start, end, limit) else {
            return Ok(Vec::new());
        };
        let rows = h.keyspaces[p.index()].range::<&[u8], _>(range).map(|item| {
            let (k, v) = item.into_inner().map_err(map_error)?;
            Ok((k.to_vec(), v.to_vec()))
        });
        page(rows, limit, max_bytes)
    }

    fn scan_keys(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let guard = self.handles();
        let h = guard.as_ref().ok_or(StorageError::Closed)?;
        let Some(range) = key_range(start, end, limit) else {
            return Ok(Vec::new());
        };
        // `key()`: a key-value separated keyspace does not load the value.
        h.keyspaces[p.index()]
            .range::<&[u8], _>(range)
            .take(limit)
            .map(|item| Ok(item.key().map_err(map_error)?.to_vec()))
            .collect()
    }

    fn close(&self) -> Result<(), StorageError> {
        let mut guard = self.handles.write().unwrap_or_else(|e| e.into_inner());
        let Some(h) = guard.take() else {
            return Ok(());
        };
        // The reaper holds keyspace handles: it must let go first, or the
        // directory lock would outlive `close`.
        if let Some(mut reaper) = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reaper.stop();
        }
        // Persist explicitly so that a failure is reported; dropping the
        // database would only log it.
        let persisted = h.db.persist(PersistMode::SyncAll).map_err(map_error);
        // Dropping the handles stops fjall's workers and releases the lock.
        drop(h);
        persisted
    }

    fn count(&self, p: Partition) -> Result<(u64, u64), StorageError> {
        let guard = self.handles();
        let h = guard.as_ref().ok_or(StorageError::Closed)?;
        let (mut keys, mut bytes) = (0u64, 0u64);
        for item in h.keyspaces[p.index()].iter() {
            let (_, v) = item.into_inner().map_err(map_error)?;
            keys += 1;
            bytes += v.len() as u64;
        }
        Ok((keys, bytes))
    }
}
