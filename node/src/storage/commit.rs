//! Durability machinery: the group committer (`SyncMode::Always`) and the
//! periodic flusher (`SyncMode::Periodic`).
//!
//! **Group commit.** One dedicated OS thread owns every durable write. A
//! writer sends its ops with a oneshot reply channel and awaits the reply.
//! The thread blocks for the first request, then drains whatever else is
//! already queued (bounded by [`MAX_GROUP_WRITES`] and [`MAX_GROUP_BYTES`]),
//! applies the whole group as *one* engine batch, calls `sync` once, and
//! answers every writer in the group with that single result. While it sits
//! in fdatasync, new writers pile up in the channel and form the next group,
//! so the number of fsyncs per second stays at what the disk can do while
//! the number of acknowledged writes grows with concurrency. Each writer's
//! ops are a contiguous slice of one atomic batch, so its own atomicity is
//! kept. If either step fails, *every* writer of the group gets the error:
//! a writer never sees `Ok` for a batch whose fsync did not succeed. If the
//! thread dies, reply channels drop and writers get an error, not a hang.
//!
//! **Write combining** (`SyncMode::Periodic`, [`Combiner`]): writers that
//! are ready together share one engine batch, without an fsync.
//!
//! **Periodic flusher.** A thread that wakes every interval and, if any
//! write was applied since its last pass, calls `sync`. Writers do not wait
//! for it.
//!
//! Both threads stop when their channel's sending side is dropped (by
//! `Store::close`, or when the last `Store` handle goes away); the committer
//! first finishes every request already queued.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::periodic::Periodic;
use super::{Engine, Op, StorageError};

/// At most this many writes share one fsync. Bounds the latency one group
/// adds to the next and the size of a single journal batch.
pub const MAX_GROUP_WRITES: usize = 1024;

/// A group stops growing once its ops carry this many bytes (16 MiB).
pub const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;

/// Counters shared by the store, the committer and the flusher.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Write batches acknowledged (`Store::write` and friends that returned Ok).
    pub writes: AtomicU64,
    /// Ops in those batches.
    pub ops: AtomicU64,
    /// Engine `sync` calls that succeeded (group commits, periodic flushes, close).
    pub syncs: AtomicU64,
    /// Groups committed by the group committer (one fsync each).
    pub groups: AtomicU64,
    /// The most writes that ever shared one group commit.
    pub max_group: AtomicU64,
}

/// A snapshot of the store's write and fsync counters.
///
/// `writes / syncs` under `SyncMode::Always` is the group-commit factor:
/// how many acknowledged writes one fdatasync covered on average.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write batches acknowledged since open.
    pub writes: u64,
    /// Ops in those batches.
    pub ops: u64,
    /// Successful engine fsyncs issued by the store (all causes).
    pub syncs: u64,
    /// Group commits (`SyncMode::Always` only); each is one fsync.
    pub groups: u64,
    /// The largest number of writes that shared one group commit.
    pub max_group: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            writes: self.writes.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            groups: self.groups.load(Ordering::Relaxed),
            max_group: self.max_group.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn record_writes(&self, writes: u64, ops: u64) {
        self.ops.fetch_add(ops, Ordering::Relaxed);
        // Release pairs with the flusher's Acquire: a flusher that sees this
        // count also sees the applied batch it counts.
        self.writes.fetch_add(writes, Ordering::Release);
    }
}

type Reply = oneshot::Sender<Result<(), StorageError>>;

struct Request {
    ops: Vec<Op>,
    reply: Reply,
}

/// Handle to the group-commit thread.
pub(crate) struct Committer {
    /// `None` once shut down.
    tx: RwLock<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    pub(crate) fn start(
        engine: Arc<dyn Engine>,
        counters: Arc<Counters>,
    ) -> Result<Committer, StorageError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("qkv-committer".into())
            .spawn(move || run_committer(&*engine, &rx, &counters))
            .map_err(|e| StorageError::Engine(format!("cannot start committer thread: {e}")))?;
        Ok(Committer {
            tx: RwLock::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `ops` and waits until they are applied and fsynced.
    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let (reply, done) = oneshot::channel();
        {
            let tx = self.tx.read().unwrap_or_else(|e| e.into_inner());
            let tx = tx.as_ref().ok_or(StorageError::Closed)?;
            tx.send(Request { ops, reply })
                .map_err(|_| committer_gone())?;
        }
        done.await.map_err(|_| committer_gone())?
    }

    /// Stops accepting requests and returns the thread to join; it exits
    /// after answering everything already queued.
    pub(crate) fn shutdown(&self) -> Option<JoinHandle<()>> {
        self.tx.write().unwrap_or_else(|e| e.into_inner()).take();
        self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

fn committer_gone() -> StorageError {
    StorageError::Engine("the commit thread stopped; the write may not be durable".into())
}

fn run_committer(engine: &dyn Engine, rx: &mpsc::Receiver<Request>, counters: &Counters) {
    while let Ok(first) = rx.recv() {
        let mut bytes: usize = first.ops.iter().map(Op::size).sum();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_WRITES && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.ops.iter().map(Op::size).sum::<usize>();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        apply_group(engine, counters, group, true);
    }
}

/// Applies a group of writes as one engine batch, fsyncs it when `sync`,
/// and answers every writer of the group with that one result.
fn apply_group(engine: &dyn Engine, counters: &Counters, group: Vec<Request>, sync: bool) {
    let mut ops = Vec::with_capacity(group.iter().map(|r| r.ops.len()).sum());
    let mut replies = Vec::with_capacity(group.len());
    for r in group {
        ops.extend(r.ops);
        replies.push(r.reply);
    }
    let n_ops = ops.len() as u64;
    let writes = replies.len() as u64;
    let result = engine
        .apply(ops)
        .and_then(|()| if sync { engine.sync() } else { Ok(()) });
    match &result {
        Ok(()) => {
            if sync {
                counters.syncs.fetch_add(1, Ordering::Relaxed);
                counters.groups.fetch_add(1, Ordering::Relaxed);
                counters.max_group.fetch_max(writes, Ordering::Relaxed);
            }
            counters.record_writes(writes, n_ops);
        }
        // Periodic writers get the error; a poisoned engine fails every
        // write, which would flood the log from here.
        Err(e) if sync => tracing::error!(error = %e, writes, "group commit failed"),
        Err(_) => {}
    }
    for reply in replies {
        // A writer that stopped waiting (request cancelled) is fine: its
        // write was still committed, it just is not told.
        let _ = reply.send(result.clone());
    }
}

/// `SyncMode::Periodic`'s write combiner: writers that are ready at the
/// same time share one engine batch, so they share fjall's journal lock
/// and its `write(2)` of the batch to the kernel (about 1.6 µs of kernel
/// time per write here, one per replica of every client write).
///
/// The first writer to queue schedules a *leader* task and waits like the
/// others. The leader yields once before it drains the queue: tokio runs
/// every task that is ready before it again, and each of them that writes
/// queues its ops meanwhile. The leader is a spawned task, not the first
/// writer itself, so that a writer whose request is cancelled cannot
/// strand the queue; and the group is applied when the leader is dropped,
/// so that even a leader dropped unrun (the runtime shutting down) answers
/// every writer it was responsible for.
pub(crate) struct Combiner {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Arc<dyn Engine>,
    counters: Arc<Counters>,
    /// The writers waiting for the scheduled leader. Non-empty exactly
    /// while a leader is scheduled: the writer that finds it empty
    /// schedules one, and only a leader empties it.
    queue: Mutex<Vec<Request>>,
}

/// Applies what is queued when dropped (after its yield, or unrun).
struct Leader(Arc<Shared>);

impl Drop for Leader {
    fn drop(&mut self) {
        let group = std::mem::take(&mut *self.0.queue.lock().unwrap_or_else(|e| e.into_inner()));
        apply_group(&*self.0.engine, &self.0.counters, group, false);
    }
}

impl Combiner {
    pub(crate) fn new(engine: Arc<dyn Engine>, counters: Arc<Counters>) -> Combiner {
        Combiner {
            shared: Arc::new(Shared {
                engine,
                counters,
                queue: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Applies `ops` together with whatever other writers queue in the same
    /// scheduling round; returns once they are in the engine (and, through
    /// fjall, in the kernel).
    pub(crate) async fn apply(&self, ops: Vec<Op>) -> Result<(), StorageError> {
        let (reply, done) = oneshot::channel();
        let lead = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push(Request { ops, reply });
            q.len() == 1
        };
        if lead {
            let leader = Leader(self.shared.clone());
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                drop(leader);
            });
        }
        done.await.map_err(|_| {
            StorageError::Engine("the write was dropped unapplied while storage stopped".into())
        })?
    }
}

/// Handle to the periodic flusher thread.
pub(crate) struct Flusher(Periodic);

/// The shortest flush interval we honour; zero would spin.
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(1);

impl Flusher {
    pub(crate) fn start(
        engine: Arc<dyn Engine>,
        interval: Duration,
        counters: Arc<Counters>,
    ) -> Result<Flusher, StorageError> {
        Periodic::start(
            "qkv-flusher",
            interval.max(MIN_FLUSH_INTERVAL),
            flusher(engine, counters),
        )
        .map(Flusher)
        .map_err(|e| StorageError::Engine(format!("cannot start flusher thread: {e}")))
    }

    /// Stops the flusher; returns the thread to join.
    pub(crate) fn shutdown(&self) -> Option<JoinHandle<()>> {
        self.0.shutdown()
    }
}

/// One flusher tick: syncs the engine if a write was applied since the
/// last successful sync; breaks once the engine is closed.
fn flusher(engine: Arc<dyn Engine>, counters: Arc<Counters>) -> impl FnMut() -> ControlFlow<()> {
    let mut synced_writes = 0u64;
    let mut failing = false;
    move || {
        // Read the counter before syncing: everything counted was applied
        // before it was counted, so this sync covers it.
        let writes = counters.writes.load(Ordering::Acquire);
        if writes == synced_writes {
            return ControlFlow::Continue(());
        }
        match engine.sync() {
            Ok(()) => {
                counters.syncs.fetch_add(1, Ordering::Relaxed);
                synced_writes = writes;
                if failing {
                    tracing::info!("periodic storage flush recovered");
                    failing = false;
                }
            }
            Err(StorageError::Closed) => return ControlFlow::Break(()),
            Err(e) => {
                // Log the transition only: a poisoned engine fails every time.
                if !failing {
                    tracing::error!(error = %e, "periodic storage flush failed");
                    failing = true;
                }
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use super::super::Partition;
    use super::super::memory::CountingEngine;
    use super::*;

    fn put(key: &[u8]) -> Vec<Op> {
        vec![Op::Put {
            partition: Partition::Meta,
            key: key.to_vec(),
            value: key.to_vec(),
        }]
    }

    fn combiner() -> (Arc<CountingEngine>, Arc<Counters>, Combiner) {
        let engine = Arc::new(CountingEngine::new());
        let counters = Arc::new(Counters::default());
        let c = Combiner::new(engine.clone(), counters.clone());
        (engine, counters, c)
    }

    #[tokio::test]
    async fn writers_ready_together_share_one_batch_and_all_land() {
        const WRITERS: usize = 64;
        const PER_WRITER: usize = 10;
        let (engine, counters, c) = combiner();
        let c = Arc::new(c);
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let c = c.clone();
                tokio::spawn(async move {
                    for i in 0..PER_WRITER {
                        c.apply(put(format!("{w}-{i}").as_bytes())).await?;
                    }
                    Ok::<_, StorageError>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer panicked").expect("write failed");
        }
        let writes = WRITERS * PER_WRITER;
        let batches = engine.applies.load(Ordering::Relaxed);
        assert_eq!(counters.snapshot().writes, writes as u64);
        // One runtime thread: every round, all 64 writers are ready at once.
        assert!(
            batches <= PER_WRITER * 2,
            "{writes} writes took {batches} engine batches"
        );
        for w in 0..WRITERS {
            for i in 0..PER_WRITER {
                let k = format!("{w}-{i}");
                assert_eq!(
                    engine.get(Partition::Meta, k.as_bytes()).unwrap(),
                    Some(k.into_bytes())
                );
            }
        }
    }

    #[tokio::test]
    async fn a_writer_cancelled_after_queueing_neither_strands_the_queue_nor_loses_its_write() {
        let (engine, _, c) = combiner();
        let mut first = Box::pin(c.apply(put(b"cancelled")));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(first.as_mut().poll(&mut cx), Poll::Pending));
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), c.apply(put(b"next")))
            .await
            .expect("the queue is stranded")
            .expect("write failed");
        for k in [&b"cancelled"[..], b"next"] {
            assert_eq!(engine.get(Partition::Meta, k).unwrap(), Some(k.to_vec()));
        }
    }

    #[test]
    fn a_leader_dropped_unrun_still_answers_its_writers() {
        let (engine, _, c) = combiner();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut write = Box::pin(c.apply(put(b"k")));
        let mut cx = Context::from_waker(Waker::noop());
        {
            let _in_rt = rt.enter();
            assert!(matches!(write.as_mut().poll(&mut cx), Poll::Pending));
        }
        // The leader task was spawned but never ran: dropping the runtime
        // drops it, which applies what it was to apply.
        drop(rt);
        assert!(matches!(write.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(
            engine.get(Partition::Meta, b"k").unwrap(),
            Some(b"k".to_vec())
        );
    }
}
