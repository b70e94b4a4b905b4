//! One byte-rate limiter for the node's background traffic — hint replay
//! (`--hint-replay-bytes-per-sec`), anti-entropy (`--repair-bytes-per-sec`)
//! and streaming (`--stream-bytes-per-sec`) — so that each keeps to its
//! rate the same way.
//!
//! It is a schedule of the link, not a counter: every byte books `1/rate`
//! seconds of it, and a caller *reserves* before it moves bytes, learning
//! how long to wait for what is already booked. So a transfer larger than
//! a whole second's budget is never stuck (it goes as soon as nothing is
//! booked ahead of it) and the time it books delays whoever comes next;
//! concurrent users of one throttle queue behind each other and together
//! keep to the rate. Idle time is banked up to `burst`, so a quiet spell
//! allows a burst that long, no more; a new throttle has nothing banked.
//!
//! Time is passed in as a duration since any fixed origin, so that tests
//! (and hints, whose clock tests drive by hand) can run it without sleeping.

use std::sync::Mutex;
use std::time::Duration;

/// A byte-rate limiter; see the module docs.
#[derive(Debug)]
pub struct Throttle {
    /// Bytes per second; 0 means unthrottled.
    rate: u64,
    burst: Duration,
    /// When the link is free again.
    next: Mutex<Duration>,
    /// Where [`Throttle::reserve`] measures time from: when the throttle
    /// was made.
    origin: tokio::time::Instant,
}

impl Throttle {
    /// A throttle of `bytes_per_sec` (0: none) that banks at most `burst`
    /// of idle time, created at `now`.
    pub fn new(bytes_per_sec: u64, burst: Duration, now: Duration) -> Throttle {
        Throttle {
            rate: bytes_per_sec,
            burst,
            next: Mutex::new(now),
            origin: tokio::time::Instant::now(),
        }
    }

    /// A throttle on tokio's clock, starting now (see
    /// [`Throttle::reserve`]).
    pub fn starting_now(bytes_per_sec: u64, burst: Duration) -> Throttle {
        Throttle::new(bytes_per_sec, burst, Duration::ZERO)
    }

    /// Books `bytes` at `now` (a duration since the origin the throttle
    /// was created with); returns how long to wait before moving them.
    pub fn reserve_at(&self, bytes: u64, now: Duration) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*next).max(now.saturating_sub(self.burst));
        let cost = Duration::from_nanos(
            u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(self.rate))
                .unwrap_or(u64::MAX),
        );
        *next = start.saturating_add(cost);
        start.saturating_sub(now)
    }

    /// [`Throttle::reserve_at`] on tokio's clock (a throttle made with
    /// [`Throttle::starting_now`]).
    pub fn reserve(&self, bytes: u64) -> Duration {
        self.reserve_at(bytes, self.origin.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_throttle_makes_each_transfer_wait_for_what_is_booked_before_it() {
        let t = Throttle::new(1000, 100 * MS, Duration::ZERO);
        // Nothing booked: go; 500 bytes book 500 ms.
        assert_eq!(t.reserve_at(500, Duration::ZERO), Duration::ZERO);
        // The next waits for them, however large it is itself.
        assert_eq!(t.reserve_at(5000, Duration::ZERO), 500 * MS);
        assert_eq!(t.reserve_at(1, Duration::ZERO), 5500 * MS);
        // Later, only what is still booked.
        assert_eq!(t.reserve_at(1, 5000 * MS), 501 * MS);
    }

    #[test]
    fn idle_time_is_banked_up_to_the_burst_and_no_more() {
        let t = Throttle::new(1000, 100 * MS, Duration::ZERO);
        assert_eq!(t.reserve_at(100, Duration::ZERO), Duration::ZERO);
        // Ten seconds idle: 100 ms banked, so 100 + 50 bytes go at once
        // and the next waits 50 ms.
        let later = 10_000 * MS;
        assert_eq!(t.reserve_at(150, later), Duration::ZERO);
        assert_eq!(t.reserve_at(1, later), 50 * MS);
    }

    #[test]
    fn a_rate_of_zero_never_waits() {
        let t = Throttle::new(0, 100 * MS, Duration::ZERO);
        assert_eq!(t.reserve_at(u64::MAX, Duration::ZERO), Duration::ZERO);
        assert_eq!(t.reserve_at(u64::MAX, Duration::ZERO), Duration::ZERO);
    }

    proptest! {
        /// Whatever the sizes and arrival times, a caller that waits as
        /// told has moved, by any moment, no more than the rate allows
        /// since the start plus one burst and one transfer.
        #[test]
        fn callers_that_wait_keep_to_the_rate(
            sizes in proptest::collection::vec(1u64..5000, 1..60),
            gaps in proptest::collection::vec(0u64..300, 60),
        ) {
            let rate = 1000u64;
            let burst = 100 * MS;
            let t = Throttle::new(rate, burst, Duration::ZERO);
            let mut now = Duration::ZERO;
            let mut moved = 0u64;
            for (size, gap) in sizes.iter().zip(&gaps) {
                now += Duration::from_millis(*gap);
                now += t.reserve_at(*size, now);
                let allowed = now.as_secs_f64() * rate as f64
                    + burst.as_secs_f64() * rate as f64;
                prop_assert!(moved as f64 <= allowed + 1e-6, "{moved} bytes by {now:?}");
                moved += size;
            }
        }
    }
}
