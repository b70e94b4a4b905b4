//! The memtable reaper: frees fjall's old memtables on a thread of our own,
//! outside fjall's locks.
//!
//! Why: when fjall rotates a memtable it also drops the versions of the
//! tree that no reader needs any more (lsm-tree's
//! `SuperVersions::maintenance`), and it does so while holding the tree's
//! version-history write lock. The version dropped there usually holds the
//! last reference to the memtable flushed one rotation earlier, so the
//! whole skiplist of that memtable (hundreds of thousands of nodes, each
//! freed on its own) is freed under the lock. Every write, and every read
//! that misses the row cache, needs that lock; on a node serving 25 000
//! writes/s the whole runtime stopped for 100–330 ms at each rotation.
//!
//! What the reaper does: every [`POLL`] it takes a reference to each
//! keyspace's active memtable (an `Arc` clone, the same thing a reader's
//! snapshot holds) and keeps it. fjall's own reference then goes away
//! under its lock as before, but it is no longer the last one: ours is,
//! and the reaper drops it once it is the only holder left, with no lock
//! held. Nothing else changes: fjall still decides when a memtable is
//! sealed, flushed and retired, and readers that still use one keep it
//! alive as before. A memtable that lives less than [`POLL`] may be missed
//! and freed the old way.
//!
//! The handle to the active memtable is fjall's `#[doc(hidden)]` `tree`
//! field with lsm-tree's `AbstractTree::active_memtable`: not part of
//! fjall's stable API, so a fjall upgrade that changes it breaks the build
//! here rather than anything at run time.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fjall::{AbstractTree, Keyspace};

use super::periodic::Periodic;

/// How often the reaper looks at the active memtables. A 64 MiB memtable
/// lives for seconds even under the heaviest write load this node takes.
pub const POLL: Duration = Duration::from_millis(50);

/// What the reaper has done, for tests and diagnostics.
#[derive(Debug, Default)]
pub struct ReaperStats {
    /// Memtables it holds a reference to right now.
    pub held: AtomicU64,
    /// Memtables whose last reference it dropped (freed on its thread).
    pub freed: AtomicU64,
}

/// A running reaper; [`Reaper::stop`] (or dropping it) ends the thread and
/// releases everything it holds.
pub struct Reaper {
    thread: Periodic,
    stats: Arc<ReaperStats>,
}

impl Reaper {
    /// Starts reaping the memtables of `keyspaces`. The thread keeps the
    /// keyspace handles (and so fjall's directory lock) until it stops.
    pub fn start(keyspaces: Vec<Keyspace>) -> std::io::Result<Reaper> {
        let stats = Arc::new(ReaperStats::default());
        Ok(Reaper {
            thread: Periodic::start("qkv-reaper", POLL, reaper(keyspaces, stats.clone()))?,
            stats,
        })
    }

    pub fn stats(&self) -> &ReaperStats {
        &self.stats
    }

    /// Ends the thread and waits for it: afterwards it holds no keyspace
    /// handle and no memtable.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.shutdown()
            && t.join().is_err()
        {
            tracing::warn!("the memtable reaper thread panicked");
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The reaper's nice value. Freeing a 64 MiB memtable is ~100 ms of CPU;
/// at the default weight it would take half of a core the node's runtime
/// needs, at 10 about a tenth, so it stretches over a second instead of
/// pausing requests. Not idle priority: on a saturated node that would
/// starve it and retired memtables would pile up.
const NICE: libc::c_int = 10;

fn lower_priority() {
    // SAFETY: gettid and setpriority take and return plain integers; on
    // Linux, PRIO_PROCESS with a thread id changes only that thread.
    let tid = unsafe { libc::gettid() };
    let Ok(who) = libc::id_t::try_from(tid) else {
        return;
    };
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, NICE) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the reaper's priority");
    }
}

/// One reaper tick: takes a reference to each active memtable not held
/// yet, and drops those only the reaper still holds. The first tick, on
/// the reaper's own thread, lowers that thread's priority.
fn reaper(keyspaces: Vec<Keyspace>, stats: Arc<ReaperStats>) -> impl FnMut() -> ControlFlow<()> {
    let mut held = Vec::new();
    let mut first = true;
    move || {
        if std::mem::take(&mut first) {
            lower_priority();
        }
        for ks in &keyspaces {
            let active = ks.tree.active_memtable();
            if !held.iter().any(|m| Arc::ptr_eq(m, &active)) {
                held.push(active);
            }
        }
        // A memtable only we hold cannot come back: fjall hands out
        // references from its version history, which no longer has it.
        let before = held.len();
        held.retain(|m| Arc::strong_count(m) > 1);
        stats
            .freed
            .fetch_add((before - held.len()) as u64, Ordering::Relaxed);
        stats.held.store(held.len() as u64, Ordering::Relaxed);
        ControlFlow::Continue(())
    }
}
