//! The node's tasks, owned: every task a service spawns is tracked here,
//! and one cancellation token tells the background loops to stop, so that
//! shutdown can wait until nothing that uses the store is still running
//! before it closes the store.
//!
//! Two kinds of work. Background loops (the hint replayer, the repair
//! scheduler, automatic cleanup, gossip following) run until
//! [`Tasks::cancelled`]; the work of a request (replicating a write,
//! a read repair, a hint stored off the latency path, a forwarded write a
//! peer asked for) runs to its own deadline. Shutdown cancels the first
//! kind and waits, bounded, for both.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TrackedFuture;

/// The tasks of one node; cheap to clone (a handle).
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Spawns `fut` as a tracked task.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// Tracks a future run elsewhere (a request's work that the transport
    /// runs in a task of its own).
    pub fn track<F: Future>(&self, fut: F) -> TrackedFuture<F> {
        self.tracker.track_future(fut)
    }

    /// The token background loops stop at.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Resolves once shutdown has begun.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Begins shutdown: background loops stop, no new task may start
    /// (one spawned anyway still runs and is waited for), and waits at
    /// most `within` for every task to end. Returns how many were still
    /// running when it gave up (0: all ended).
    pub async fn shutdown(&self, within: Duration) -> usize {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_err()
        {
            return self.tracker.len();
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_loops_and_waits_for_request_work() {
        let tasks = Tasks::new();
        let t = tasks.clone();
        tasks.spawn(async move { t.cancelled().await });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = done_tx.send(());
        });
        assert_eq!(tasks.running(), 2);
        assert_eq!(tasks.shutdown(Duration::from_secs(5)).await, 0);
        assert!(done_rx.await.is_ok(), "the request's work finished first");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_after_its_bound_and_says_how_many_remain() {
        let tasks = Tasks::new();
        tasks.spawn(std::future::pending::<()>());
        assert_eq!(tasks.shutdown(Duration::from_secs(1)).await, 1);
    }
}
