//! What repair remembers between and during passes, in memory: the
//! divergence streak of each range, the byte throttle, and the progress of
//! the pass under way (for `GET /internal/repair` and `qkv repair`'s
//! progress line).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::throttle::Throttle;
use std::time::Duration;

use tokio::time::Instant;

use quorumkv_ring::TokenRange;
use serde::Serialize;

/// The pass under way, as far as it got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Whether a pass is running.
    pub running: bool,
    /// (range, peer) comparisons the pass will make.
    pub comparisons_total: u64,
    /// Comparisons done (compared, failed or skipped).
    pub comparisons_done: u64,
    /// Keys merged here so far.
    pub keys_received: u64,
    /// Keys pushed to peers so far.
    pub keys_sent: u64,
    /// Version bytes received so far.
    pub bytes_received: u64,
    /// Version bytes sent so far.
    pub bytes_sent: u64,
    /// Milliseconds since the pass began.
    pub elapsed_ms: u64,
    #[serde(skip)]
    began: Option<Instant>,
}

/// Repair's memory on one node.
pub struct State {
    /// Per (n, range): when a pass first found it differing, in the current
    /// streak of passes that did (unix ms).
    divergent: Mutex<HashMap<(u32, TokenRange), u64>>,
    throttle: Throttle,
    progress: Mutex<Progress>,
    /// One pass at a time: a manual pass waits for a scheduled one.
    pub(super) pass: tokio::sync::Mutex<()>,
}

impl State {
    /// Repair state with a throttle of `bytes_per_sec`.
    pub fn new(bytes_per_sec: u64) -> Self {
        State {
            divergent: Mutex::new(HashMap::new()),
            // A page of versions may go at once after a pause.
            throttle: Throttle::starting_now(bytes_per_sec.max(1), Duration::from_millis(100)),
            progress: Mutex::new(Progress::default()),
            pass: tokio::sync::Mutex::new(()),
        }
    }

    /// Books `bytes` on the throttle and waits for what was booked
    /// before them.
    pub async fn throttle(&self, bytes: u64) {
        let wait = self.throttle.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The progress of the pass under way (or of the last one).
    pub fn progress(&self) -> Progress {
        let mut p = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if p.running {
            p.elapsed_ms = p.began.map_or(0, |b| b.elapsed().as_millis() as u64);
        }
        p
    }

    pub(super) fn update_progress(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(super) fn begin(&self, comparisons_total: u64) {
        self.update_progress(|p| {
            *p = Progress {
                running: true,
                comparisons_total,
                began: Some(Instant::now()),
                ..Progress::default()
            }
        });
    }

    pub(super) fn end(&self) {
        self.update_progress(|p| {
            p.running = false;
            p.elapsed_ms = p.began.map_or(0, |b| b.elapsed().as_millis() as u64);
        });
    }

    /// Records what a pass found for `range` at `n`: `Some(true)` differing,
    /// `Some(false)` equal with every replica, `None` not known (a replica
    /// failed and the others were equal). Returns when its divergence began,
    /// if it is divergent now.
    pub fn observe(
        &self,
        n: u32,
        range: TokenRange,
        differing: Option<bool>,
        now_ms: u64,
    ) -> Option<u64> {
        let mut d = self.divergent.lock().unwrap_or_else(|p| p.into_inner());
        match differing {
            Some(true) => Some(*d.entry((n, range)).or_insert(now_ms)),
            Some(false) => {
                d.remove(&(n, range));
                None
            }
            None => d.get(&(n, range)).copied(),
        }
    }

    /// Every divergent range with when its divergence began (unix ms).
    pub fn divergent(&self) -> Vec<((u32, TokenRange), u64)> {
        let d = self.divergent.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = d.iter().map(|(k, v)| (*k, *v)).collect();
        out.sort_by_key(|((n, r), _)| (*n, r.start));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_divergence_is_dated_from_its_first_finding_and_cleared_by_an_equal_pass() {
        let s = State::new(1 << 20);
        let r = TokenRange { start: 1, end: 9 };
        assert_eq!(s.observe(3, r, Some(true), 1_000), Some(1_000));
        assert_eq!(s.observe(3, r, Some(true), 5_000), Some(1_000));
        assert_eq!(
            s.observe(3, r, None, 6_000),
            Some(1_000),
            "unknown keeps it"
        );
        assert_eq!(s.divergent(), vec![((3, r), 1_000)]);
        assert_eq!(s.observe(3, r, Some(false), 7_000), None);
        assert!(s.divergent().is_empty());
        assert_eq!(s.observe(3, r, None, 8_000), None);
    }
}
