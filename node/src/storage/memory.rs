//! The in-memory engine: one `BTreeMap` per partition behind a single lock.
//!
//! It exists for fast unit tests of everything above storage (coordinator,
//! HTTP handlers) and keeps the same contract as the fjall engine — atomic
//! batches, ordered scans, `Closed` after `close` — minus durability:
//! `sync` is a no-op and everything is gone when the process ends.
//!
//! One `RwLock` over all three maps (rather than one per partition) is what
//! makes a batch touching several partitions atomic to readers.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::engine::{key_range, page};
use super::{Engine, KvPairs, Op, Partition, StorageError};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// The in-memory engine. See the module docs.
#[derive(Debug)]
pub struct MemoryEngine {
    /// `None` once closed.
    maps: RwLock<Option<[Map; 3]>>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        MemoryEngine::new()
    }
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        MemoryEngine {
            maps: RwLock::new(Some(Default::default())),
        }
    }

    // A poisoned lock means a panic happened while holding it; the maps are
    // still structurally valid (BTreeMap ops do not leave them torn), so we
    // keep serving rather than turning one panic into a dead node.
    fn read(&self) -> RwLockReadGuard<'_, Option<[Map; 3]>> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Option<[Map; 3]>> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine for MemoryEngine {
    fn get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let guard = self.read();
        let maps = guard.as_ref().ok_or(StorageError::Closed)?;
        Ok(maps[p.index()].get(key).cloned())
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let mut guard = self.write();
        let maps = guard.as_mut().ok_or(StorageError::Closed)?;
        for op in ops {
            match op {
                Op::Put {
                    partition,
                    key,
                    value,
                } => {
                    maps[partition.index()].insert(key, value);
                }
                Op::Delete { partition, key } => {
                    maps[partition.index()].remove(&key);
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        match *self.read() {
            Some(_) => Ok(()),
            None => Err(StorageError::Closed),
        }
    }

    fn scan_within(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<KvPairs, StorageError> {
        let guard = self.read();
        let maps = guard.as_ref().ok_or(StorageError::Closed)?;
        let Some(range) = key_range(start, end, limit) else {
            return Ok(Vec::new());
        };
        let rows = maps[p.index()]
            .range::<[u8], _>(range)
            .map(|(k, v)| Ok((k.clone(), v.clone())));
        page(rows, limit, max_bytes)
    }

    fn scan_keys(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let guard = self.read();
        let maps = guard.as_ref().ok_or(StorageError::Closed)?;
        let Some(range) = key_range(start, end, limit) else {
            return Ok(Vec::new());
        };
        Ok(maps[p.index()]
            .range::<[u8], _>(range)
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn close(&self) -> Result<(), StorageError> {
        *self.write() = None;
        Ok(())
    }

    fn count(&self, p: Partition) -> Result<(u64, u64), StorageError> {
        let guard = self.read();
        let maps = guard.as_ref().ok_or(StorageError::Closed)?;
        let map = &maps[p.index()];
        Ok((map.len() as u64, map.values().map(|v| v.len() as u64).sum()))
    }
}

/// For tests: a memory engine that counts the batches applied to it and,
/// by not overriding it, uses the trait's default (paged) `count`.
#[cfg(test)]
pub(crate) struct CountingEngine {
    pub(crate) inner: MemoryEngine,
    pub(crate) applies: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl CountingEngine {
    pub(crate) fn new() -> Self {
        CountingEngine {
            inner: MemoryEngine::new(),
            applies: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

#[cfg(test)]
impl Engine for CountingEngine {
    fn get(&self, p: Partition, k: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(p, k)
    }
    fn apply(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.applies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.apply(ops)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.inner.sync()
    }
    fn scan_within(
        &self,
        p: Partition,
        s: &[u8],
        e: Option<&[u8]>,
        l: usize,
        max: usize,
    ) -> Result<KvPairs, StorageError> {
        self.inner.scan_within(p, s, e, l, max)
    }
    fn close(&self) -> Result<(), StorageError> {
        self.inner.close()
    }
}
