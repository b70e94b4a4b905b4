//! (tests only) An engine that models a machine crash: what was applied
//! is visible at once, but only what a `sync` covered survives
//! [`CrashEngine::crash`]. Used to check what a node keeps across a power
//! loss under `--sync periodic`, without pulling a plug.

use std::sync::{Arc, Mutex, PoisonError};

use super::{Engine, KvPairs, MemoryEngine, Op, Partition, StorageError};

/// Applied batches are visible; only synced ones survive a crash.
pub struct CrashEngine {
    live: MemoryEngine,
    durable: MemoryEngine,
    unsynced: Mutex<Vec<Vec<Op>>>,
}

impl CrashEngine {
    /// An empty engine.
    pub fn new() -> Arc<CrashEngine> {
        Self::holding(MemoryEngine::new())
    }

    fn holding(durable: MemoryEngine) -> Arc<CrashEngine> {
        Arc::new(CrashEngine {
            live: copy_of(&durable),
            durable,
            unsynced: Mutex::new(Vec::new()),
        })
    }

    /// The machine crashed and came back: a new engine holding only what
    /// was synced before the crash.
    pub fn crash(&self) -> Arc<CrashEngine> {
        Self::holding(copy_of(&self.durable))
    }
}

/// A new in-memory engine with `e`'s contents.
fn copy_of(e: &MemoryEngine) -> MemoryEngine {
    let copy = MemoryEngine::new();
    for p in Partition::ALL {
        let ops = e
            .scan(p, &[], None, usize::MAX)
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| Op::Put {
                partition: p,
                key,
                value,
            })
            .collect();
        // A fresh in-memory engine refuses nothing.
        let _ = copy.apply(ops);
    }
    copy
}

impl Engine for CrashEngine {
    fn get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.live.get(p, key)
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        self.live.apply(ops.clone())?;
        self.unsynced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ops);
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        let batches =
            std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(PoisonError::into_inner));
        for ops in batches {
            self.durable.apply(ops)?;
        }
        Ok(())
    }

    fn scan_within(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<KvPairs, StorageError> {
        self.live.scan_within(p, start, end, limit, max_bytes)
    }

    fn scan_keys(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        self.live.scan_keys(p, start, end, limit)
    }

    fn close(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
