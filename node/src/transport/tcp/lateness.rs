//! How late an internode request is read, judged on monotonic clocks only.
//!
//! A node that was paused (SIGSTOP) finds, on resuming, requests in its
//! sockets whose callers gave up long ago and hinted their writes; it must
//! not run them. Wall clocks cannot tell: they differ between nodes, and
//! a clock that is stepped or skewed would make a node drop every request
//! it reads (or every one it sends). Monotonic clocks cannot be compared
//! across nodes either, but each one measures durations truly, and that
//! is enough:
//!
//! * The sender stamps a request with when its call was made, in
//!   milliseconds since it began dialing the connection ([`stamp`];
//!   negative for a call made before that, queued while it dialed).
//! * The receiver reads the stamp against its own milliseconds since it
//!   finished accepting that connection. `arrival - stamp` is the
//!   request's age plus a constant of the connection (the receiver's
//!   epoch is later than the sender's, by the dial and the handshake), so
//!   differences between two requests are differences of age.
//!   [`Arrivals`] keeps the smallest `arrival - stamp` seen (the freshest
//!   request) as the connection's floor; a request's lateness is how far
//!   it is above the floor.
//! * The floor starts at 0, which causality makes no lower than the true
//!   one (the receiver's epoch comes after the sender's), so a receiver
//!   paused before the first request on a connection still sees that
//!   request as late, less the time the dial and handshake took.
//! * Lateness never exceeds the request's true age, so a request whose
//!   caller still waits is never dropped; the clocks' rates may differ
//!   (NTP slews a monotonic clock by up to 500 ppm), which the floor
//!   allows for by rising [`CREEP_PER_MS`] (1 ms per second) while no
//!   fresher request lowers it.
//!
//! A request later than its `timeout_ms` plus [`ALLOWANCE_MS`] is
//! [`stale`]: its caller has given up.

use std::time::Instant;

/// How far past its timeout a request may be read and still be run.
/// Lateness is measured, not guessed across clocks, so this only covers
/// the rounding of the stamps and a caller's timer firing a little late.
pub const ALLOWANCE_MS: u64 = 200;

/// The floor rises 1 ms per this many ms of the receiver's clock, more
/// than two clocks' rates can differ.
pub const CREEP_PER_MS: i64 = 1000;

/// Milliseconds from `epoch` to `at`, negative when `at` is earlier.
pub fn stamp(at: Instant, epoch: Instant) -> i64 {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match at.checked_duration_since(epoch) {
        Some(after) => ms(after),
        None => -ms(epoch.duration_since(at)),
    }
}

/// Whether a request `late_ms` late, whose caller waits `timeout_ms`, is
/// stale: its caller gave up on it.
pub fn stale(late_ms: u64, timeout_ms: u32) -> bool {
    late_ms > u64::from(timeout_ms).saturating_add(ALLOWANCE_MS)
}

/// What the receiving side of one connection has learnt of its sender's
/// stamps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Arrivals {
    /// The smallest `arrival - stamp` seen, ms (0 before any request).
    floor: i64,
    /// The receiver's ms when the floor was set; it creeps up from there.
    floor_at: i64,
}

impl Arrivals {
    /// How late, ms, a request stamped `stamp` by the sender is when read
    /// at `now` (ms since this side accepted the connection); lowers the
    /// floor when it is the freshest yet.
    pub fn lateness(&mut self, now: i64, stamp: i64) -> u64 {
        let sample = now.saturating_sub(stamp);
        let crept = self
            .floor
            .saturating_add(now.saturating_sub(self.floor_at).max(0) / CREEP_PER_MS);
        if sample <= crept {
            self.floor = sample;
            self.floor_at = now;
            return 0;
        }
        u64::try_from(sample.saturating_sub(crept)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn stamps_are_signed_milliseconds_from_the_epoch() {
        let epoch = Instant::now();
        let later = epoch + Duration::from_millis(1500);
        assert_eq!(stamp(later, epoch), 1500);
        assert_eq!(stamp(epoch, later), -1500);
        assert_eq!(stamp(epoch, epoch), 0);
    }

    #[test]
    fn stale_only_beyond_the_timeout_and_the_allowance() {
        let cases = [
            (0, 1000, false),
            (1000, 1000, false),
            (1000 + ALLOWANCE_MS, 1000, false),
            (1001 + ALLOWANCE_MS, 1000, true),
            (u64::MAX, u32::MAX, true),
            (ALLOWANCE_MS + 1, 0, true),
        ];
        for (late, timeout, want) in cases {
            assert_eq!(stale(late, timeout), want, "late {late}, timeout {timeout}");
        }
    }

    /// (now, stamp, expected lateness): one read.
    type Read = (i64, i64, u64);

    /// Reads in turn on one connection.
    /// In each, the receiver finished accepting 5 ms after the sender
    /// began dialing, and a request made at sender ms `m` and read at real
    /// ms `t` (from the sender's epoch) is `(t - 5, m)`.
    #[test]
    fn lateness_is_measured_against_the_freshest_request() {
        let table: &[(&str, &[Read])] = &[
            (
                "steady traffic is on time",
                &[(6, 10, 0), (96, 100, 0), (197, 200, 1), (296, 300, 0)],
            ),
            // Paused 3 s before reading the second; the floor crept 3 ms.
            (
                "a receiver pause shows as lateness",
                &[(5, 9, 0), (3_015, 19, 2_997)],
            ),
            // Against the floor of 0: the age less the 5 ms setup.
            (
                "a pause before the first request shows",
                &[(3_005, 10, 2_992)],
            ),
            // Made 40 ms before the dial began, read at 6.
            ("a call queued while dialing", &[(1, -40, 41), (55, 59, 0)]),
            (
                "a call queued 500 ms at the sender",
                &[(5, 9, 0), (595, 100, 499), (700, 704, 0)],
            ),
            // An hour without requests: the floor has crept 3.6 s.
            (
                "the floor creeps while nothing fresher comes",
                &[(0, 0, 0), (3_600_000, 3_596_000, 400)],
            ),
        ];
        for (what, reads) in table {
            let mut a = Arrivals::default();
            for (i, &(now, stamp, want)) in reads.iter().enumerate() {
                assert_eq!(a.lateness(now, stamp), want, "{what}, read {i}");
            }
        }
    }

    #[test]
    fn extreme_stamps_do_not_overflow() {
        let mut a = Arrivals::default();
        assert_eq!(a.lateness(0, i64::MAX), 0);
        assert_eq!(a.lateness(i64::MAX, i64::MIN), i64::MAX as u64);
        let mut b = Arrivals::default();
        let crept = i64::MAX / CREEP_PER_MS;
        assert_eq!(b.lateness(i64::MAX, i64::MIN), (i64::MAX - crept) as u64);
    }

    /// One request: made `gap` ms after the one before, in transit
    /// `transit` ms, read after the receiver was stalled `stall` ms more.
    #[derive(Clone, Debug)]
    struct Sent {
        gap: u32,
        transit: u16,
        stall: u32,
    }

    fn sent() -> impl Strategy<Value = Sent> {
        (
            0u32..60_000,
            0u16..50,
            prop_oneof![Just(0u32), 0u32..20_000],
        )
            .prop_map(|(gap, transit, stall)| Sent {
                gap,
                transit,
                stall,
            })
    }

    /// Replays `reqs` on one connection whose receiver's epoch is `setup`
    /// ms after the sender's, the receiver's clock running `ppm`
    /// millionths fast; yields per request (its age, the lateness
    /// measured, the least age before it, `setup` if none).
    fn replay(setup: u16, ppm: i32, reqs: &[Sent]) -> Vec<(i64, u64, i64)> {
        let setup = i64::from(setup);
        let mut a = Arrivals::default();
        let (mut made, mut least) = (0i64, setup);
        let mut out = Vec::new();
        for r in reqs {
            made += i64::from(r.gap);
            // Nothing is read before the receiver's epoch.
            let read = (made + i64::from(r.transit) + i64::from(r.stall)).max(setup);
            let age = read - made;
            let elapsed = read - setup;
            let now = elapsed + elapsed * i64::from(ppm) / 1_000_000;
            let late = a.lateness(now, made);
            out.push((age, late, least));
            least = least.min(age);
        }
        out
    }

    proptest! {
        /// A request is never judged later than it is old, so a request
        /// whose caller still waits is never dropped, whatever the
        /// connection's setup time and the clocks' rates.
        #[test]
        fn never_later_than_old(
            setup in 0u16..5_000,
            ppm in -500i32..=500,
            reqs in prop::collection::vec(sent(), 1..60),
        ) {
            for (age, late, _) in replay(setup, ppm, &reqs) {
                // +2: the receiver's reading and the creep are rounded.
                prop_assert!(late as i64 <= age + 2, "late {late} but {age} old");
            }
        }

        /// A stall shows: lateness is the age less the least age seen
        /// before (the floor), up to the rounding and the creep.
        #[test]
        fn a_stall_shows_as_lateness(
            setup in 0u16..5_000,
            reqs in prop::collection::vec(sent(), 1..60),
        ) {
            let total: i64 = reqs.iter().map(|r| i64::from(r.gap) + 50 + i64::from(r.stall)).sum();
            for (age, late, least) in replay(setup, 0, &reqs) {
                let want = (age - least).max(0);
                let creep = total / CREEP_PER_MS + 1;
                prop_assert!(late as i64 >= want - creep, "late {late}, want {want} - {creep}");
            }
        }
    }
}
