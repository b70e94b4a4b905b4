//! Time for hints: the clock they are aged and throttled by (replay is
//! paced by the node's one byte-rate limiter, `crate::throttle`).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future that can cross tasks.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where hints read time from.
///
/// A trait so that tests run expiry (hours) and throttling (seconds) in
/// virtual time: `tokio::time::pause` cannot help with the first, because
/// hint ages are wall-clock time (they must survive restarts), and this
/// crate's tests do not build tokio's `test-util` anyway.
pub(crate) trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch: when a hint was written, and how
    /// old it is now.
    fn wall_ms(&self) -> u64;
    /// Monotonic time since an arbitrary origin, for the token bucket
    /// (immune to wall-clock steps).
    fn monotonic(&self) -> Duration;
    /// Waits `d` of this clock's time.
    fn sleep(&self, d: Duration) -> BoxFuture<()>;
}

/// The real clocks: the system's wall clock, tokio's monotonic one.
pub(crate) struct SystemClock {
    origin: tokio::time::Instant,
}

impl SystemClock {
    pub(crate) fn new() -> Self {
        SystemClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> u64 {
        // A clock before 1970 is a broken host; age everything as new
        // rather than fail writes.
        crate::clock::unix_ms()
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(d))
    }
}

#[cfg(test)]
pub(super) mod manual {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::{BoxFuture, Clock};

    /// A clock that moves only when told to, or when someone sleeps on it:
    /// a sleep advances it by the sleep's length, so `elapsed` after a
    /// throttled replay is exactly the time the replay waited.
    #[derive(Clone)]
    pub(crate) struct ManualClock {
        wall_origin_ms: u64,
        nanos: Arc<AtomicU64>,
    }

    impl ManualClock {
        pub(crate) fn at(wall_ms: u64) -> Self {
            ManualClock {
                wall_origin_ms: wall_ms,
                nanos: Arc::new(AtomicU64::new(0)),
            }
        }

        pub(crate) fn advance(&self, d: Duration) {
            let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            self.nanos.fetch_add(n, Ordering::SeqCst);
        }

        /// Time passed since the clock was made.
        pub(crate) fn elapsed(&self) -> Duration {
            Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
        }
    }

    impl Clock for ManualClock {
        fn wall_ms(&self) -> u64 {
            self.wall_origin_ms + self.elapsed().as_millis() as u64
        }

        fn monotonic(&self) -> Duration {
            self.elapsed()
        }

        fn sleep(&self, d: Duration) -> BoxFuture<()> {
            let clock = self.clone();
            Box::pin(async move {
                clock.advance(d);
                tokio::task::yield_now().await;
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The throttle as hints make it (`Hints::open_with_clock`).
    fn hint_throttle(rate: u64) -> crate::throttle::Throttle {
        crate::throttle::Throttle::new(rate, Duration::from_secs(1), Duration::ZERO)
    }

    #[test]
    fn bucket_paces_to_the_rate() {
        let b = hint_throttle(1000);
        // Starts empty but not in debt: the first send goes at once.
        assert_eq!(b.reserve_at(100, ms(0)), Duration::ZERO);
        // 100 bytes of debt at 1000 B/s: 100 ms.
        assert_eq!(b.reserve_at(100, ms(0)), ms(100));
        // After the first wait, paid back to -100: the next waits again.
        assert_eq!(b.reserve_at(100, ms(100)), ms(100));
    }

    #[test]
    fn oversized_send_goes_then_the_next_waits() {
        let b = hint_throttle(1000);
        assert_eq!(b.reserve_at(3000, ms(0)), Duration::ZERO);
        assert_eq!(b.reserve_at(1, ms(0)), ms(3000));
    }

    #[test]
    fn idle_time_buys_at_most_one_second() {
        let b = hint_throttle(1000);
        // An hour idle: the bucket caps at 1000 bytes.
        assert_eq!(b.reserve_at(1000, ms(3_600_000)), Duration::ZERO);
        assert_eq!(b.reserve_at(500, ms(3_600_000)), Duration::ZERO);
        assert_eq!(b.reserve_at(1, ms(3_600_000)), ms(500));
    }

    #[test]
    fn zero_rate_is_unthrottled() {
        let b = hint_throttle(0);
        for _ in 0..10 {
            assert_eq!(b.reserve_at(u64::MAX, ms(0)), Duration::ZERO);
        }
    }
}
