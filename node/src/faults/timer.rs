//! Sleeps of sub-millisecond precision, for injected delays.
//!
//! tokio's timer works in whole milliseconds and rounds every deadline up
//! to the next one, so a 0.3 ms leg (the `lnkd-ssd` preset's typical
//! draw) would last 1–2 ms and the measured delays would not follow the
//! distribution. [`sleep_until`] therefore waits on tokio's timer for all
//! but the last [`FINE`], and the rest on one dedicated thread that keeps
//! the pending wake-ups in a heap and sleeps on a channel with a timeout
//! (a futex wait: tens of microseconds late at worst on an idle host).
//!
//! Only the last [`FINE`] is real time, measured from when tokio's part
//! ends: under the simulations' paused clock a delay costs at most that
//! much of real time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The part of a delay left to the fine timer.
const FINE: Duration = Duration::from_millis(2);

/// One pending wake-up, ordered by time (then by arrival).
struct Due {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

type Request = (Instant, oneshot::Sender<()>);

/// The fine timer's queue, started on first use; `None` when its thread
/// could not be started (sleeps then fall back to tokio's timer).
fn fine_timer() -> Option<&'static Mutex<mpsc::Sender<Request>>> {
    static TIMER: OnceLock<Option<Mutex<mpsc::Sender<Request>>>> = OnceLock::new();
    TIMER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("qkv-fault-timer".into())
                .spawn(move || run(rx))
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

fn run(rx: mpsc::Receiver<Request>) {
    let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|d| d.0.at <= now) {
            if let Some(Reverse(d)) = heap.pop() {
                // The sleeper may be gone (its call ended): nothing to do.
                let _ = d.wake.send(());
            }
        }
        let next = match heap.peek() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.0.at.saturating_duration_since(now)),
        };
        match next {
            Ok((at, wake)) => {
                seq += 1;
                heap.push(Reverse(Due { at, seq, wake }));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Sleeps until `at`, to within tens of microseconds on an idle host.
pub async fn sleep_until(at: tokio::time::Instant) {
    if let Some(coarse) = at.checked_sub(FINE)
        && coarse > tokio::time::Instant::now()
    {
        tokio::time::sleep_until(coarse).await;
    }
    let rest = at.saturating_duration_since(tokio::time::Instant::now());
    if rest.is_zero() {
        return;
    }
    let (wake, woken) = oneshot::channel();
    let queued = fine_timer().is_some_and(|t| {
        t.lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((Instant::now() + rest, wake))
            .is_ok()
    });
    if !queued || woken.await.is_err() {
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tokio's timer alone would round a 0.3 ms sleep up to the next
    /// millisecond tick: a median of 1 ms or more. The median is robust to
    /// the odd sleep a busy host delays.
    #[tokio::test]
    async fn sub_millisecond_sleeps_last_about_as_long_as_asked() {
        let asked = Duration::from_micros(300);
        let mut took = Vec::new();
        for _ in 0..101 {
            let t0 = tokio::time::Instant::now();
            sleep_until(t0 + asked).await;
            took.push(t0.elapsed());
        }
        took.sort();
        assert!(took[0] >= asked, "woke early: {:?}", took[0]);
        assert!(
            took[50] < Duration::from_micros(800),
            "median {:?}",
            took[50]
        );
    }

    #[tokio::test]
    async fn longer_sleeps_end_at_their_deadline_too() {
        let t0 = tokio::time::Instant::now();
        sleep_until(t0 + Duration::from_micros(5_400)).await;
        let took = t0.elapsed();
        assert!(took >= Duration::from_micros(5_400), "{took:?}");
        assert!(took < Duration::from_millis(50), "{took:?}");
    }
}
