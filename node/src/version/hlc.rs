//! Hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks
//! and Consistent Snapshots in Globally Distributed Databases", 2014).
//!
//! A timestamp is a pair (wall milliseconds, logical counter) packed into one
//! `u64` so that comparing the integers compares the pairs. The wall part
//! follows the physical clock whenever the physical clock is ahead; when it
//! is not (the clock stepped backwards, or a message came from a node whose
//! clock runs ahead), the wall part stays put and the logical counter ticks.
//! So timestamps are strictly increasing on one node, every receive event is
//! later than the send it observed, and the wall part never drifts further
//! from physical time than the most skewed clock the node has heard from.
//!
//! The clock is pure: the caller passes the wall time in (milliseconds since
//! the Unix epoch), which keeps it deterministic in tests and simulations.

use serde::{Deserialize, Serialize};

/// Bits of the packed timestamp used by the logical counter.
const LOGICAL_BITS: u32 = 16;
/// Largest wall-clock value a timestamp can carry: 2^48 - 1 ms, the year
/// 10889. Later wall times are clamped.
pub const MAX_WALL_MS: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// A hybrid-logical-clock timestamp: 48 bits of wall milliseconds above a
/// 16-bit logical counter, so the derived integer order is the HLC order
/// (wall first, then logical).
///
/// LWW buckets order versions by it instead of raw wall time: it respects
/// causality (a write made after observing another is always later), which
/// a skewed wall clock alone cannot promise.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The smallest timestamp; what an empty history has seen.
    pub const ZERO: Timestamp = Timestamp(0);

    /// Packs a wall time (clamped to [`MAX_WALL_MS`]) and a logical counter.
    pub fn new(wall_ms: u64, logical: u16) -> Self {
        Timestamp((wall_ms.min(MAX_WALL_MS) << LOGICAL_BITS) | u64::from(logical))
    }

    /// Milliseconds since the Unix epoch this timestamp claims, for display
    /// and for bounding clock skew.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Events that shared the same wall millisecond on the clock that made
    /// this timestamp.
    pub fn logical(self) -> u16 {
        // The mask keeps exactly 16 bits, so the cast cannot truncate.
        (self.0 & u64::from(u16::MAX)) as u16
    }

    /// True when this timestamp claims a wall time more than `max_drift_ms`
    /// after `wall_ms`. A node can use it to log (or refuse) a peer whose
    /// clock is far ahead before observing it: once observed, such a
    /// timestamp drags this node's clock forward with it.
    pub fn is_ahead_of(self, wall_ms: u64, max_drift_ms: u64) -> bool {
        self.wall_ms() > wall_ms.saturating_add(max_drift_ms)
    }

    /// The next timestamp after `self` whose wall part is at least
    /// `wall_ms`: the wall part moves forward if it can, otherwise the
    /// logical counter ticks (and on overflow, the wall part steps by 1 ms).
    fn tick(self, wall_ms: u64) -> Timestamp {
        let wall_ms = wall_ms.min(MAX_WALL_MS);
        if wall_ms > self.wall_ms() {
            Timestamp::new(wall_ms, 0)
        } else if self.logical() < u16::MAX {
            Timestamp(self.0 + 1)
        } else if self.wall_ms() < MAX_WALL_MS {
            Timestamp::new(self.wall_ms() + 1, 0)
        } else {
            // 2^64 events past the year 10889: nothing larger exists.
            self
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.wall_ms(), self.logical())
    }
}

/// A hybrid logical clock. One per node, behind a lock; pure (the wall time
/// is an argument) so that tests can move time backwards at will.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    last: Timestamp,
}

impl Clock {
    /// A clock that has seen nothing yet: its first timestamp follows the
    /// wall time it is given.
    pub fn new() -> Self {
        Clock::default()
    }

    /// A clock that resumes after `last` (e.g. a timestamp persisted before
    /// a restart), so that a node whose wall clock stepped back while it was
    /// down still never reissues an earlier timestamp.
    pub fn starting_at(last: Timestamp) -> Self {
        Clock { last }
    }

    /// The latest timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A timestamp for a local event (a write coordinated here). Strictly
    /// greater than every timestamp this clock issued or observed before,
    /// even when `wall_ms` went backwards.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        self.last = self.last.tick(wall_ms);
        self.last
    }

    /// A receive event: folds in `remote` (a timestamp from another node or
    /// from a stored version) and returns a timestamp strictly greater than
    /// both `remote` and everything before. Calling it with the newest
    /// timestamp of a key's versions before minting a write's timestamp is
    /// what guarantees that the write wins LWW against the versions it saw,
    /// however far ahead the clock that stamped them ran.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Timestamp {
        self.last = self.last.max(remote).tick(wall_ms);
        self.last
    }

    /// [`Clock::observe`] with a bound: a `remote` more than
    /// `max_offset_ms` ahead of `wall_ms` is folded in only as far as that
    /// bound (the clock is *clamped*, and the second value says so), so
    /// that one node whose clock runs far ahead cannot drag every clock it
    /// reaches along with it (docs/CONSISTENCY.md, "Clocks").
    pub fn observe_within(
        &mut self,
        remote: Timestamp,
        wall_ms: u64,
        max_offset_ms: u64,
    ) -> (Timestamp, bool) {
        let (absorbed, clamped) = bound(remote, wall_ms, max_offset_ms);
        (self.observe(absorbed, wall_ms), clamped)
    }

    /// A write's timestamp: later than `seen` (the newest version already
    /// stored for the key) however far ahead that is, and later than
    /// everything this clock issued or observed within the bound. `seen`
    /// is folded into the clock only up to `max_offset_ms` past `wall_ms`
    /// ([`Clock::observe_within`]): a version stamped by a clock far ahead
    /// makes the next write *of its key* follow it — so last-writer-wins
    /// still orders that key's writes as they happened — without moving
    /// this node's clock, and with it every other key's writes. Returns
    /// whether `seen` was beyond the bound.
    pub fn stamp_after(
        &mut self,
        seen: Option<Timestamp>,
        wall_ms: u64,
        max_offset_ms: u64,
    ) -> (Timestamp, bool) {
        let clamped = seen.is_some_and(|s| self.observe_within(s, wall_ms, max_offset_ms).1);
        let t = self.now(wall_ms);
        match seen {
            Some(s) if s >= t => (s.tick(wall_ms), clamped),
            _ => (t, clamped),
        }
    }
}

/// `remote`, or the bound `max_offset_ms` past `wall_ms` when it is beyond
/// it (and whether it was).
fn bound(remote: Timestamp, wall_ms: u64, max_offset_ms: u64) -> (Timestamp, bool) {
    if remote.is_ahead_of(wall_ms, max_offset_ms) {
        (
            Timestamp::new(wall_ms.saturating_add(max_offset_ms), 0),
            true,
        )
    } else {
        (remote, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packing_round_trips_wall_and_logical() {
        for (wall, logical) in [
            (0, 0),
            (1, 0),
            (0, 1),
            (1_700_000_000_000, 7),
            (MAX_WALL_MS, u16::MAX),
        ] {
            let t = Timestamp::new(wall, logical);
            assert_eq!((t.wall_ms(), t.logical()), (wall, logical));
        }
        assert!(Timestamp::new(2, 0) > Timestamp::new(1, u16::MAX));
        assert_eq!(Timestamp::new(u64::MAX, 3).wall_ms(), MAX_WALL_MS);
    }

    #[test]
    fn now_follows_the_wall_clock_when_it_moves_forward() {
        let mut c = Clock::new();
        assert_eq!(c.now(1000), Timestamp::new(1000, 0));
        assert_eq!(c.now(1000), Timestamp::new(1000, 1));
        assert_eq!(c.now(1005), Timestamp::new(1005, 0));
        // Wall clock steps back: the wall part holds, the counter ticks.
        assert_eq!(c.now(900), Timestamp::new(1005, 1));
    }

    #[test]
    fn logical_overflow_steps_the_wall_part() {
        let mut c = Clock::starting_at(Timestamp::new(10, u16::MAX));
        assert_eq!(c.now(5), Timestamp::new(11, 0));
    }

    #[test]
    fn observe_is_later_than_the_remote_and_the_past() {
        let mut c = Clock::new();
        c.now(100);
        let remote = Timestamp::new(500, 3);
        assert_eq!(c.observe(remote, 200), Timestamp::new(500, 4));
        assert_eq!(
            c.observe(Timestamp::new(50, 0), 600),
            Timestamp::new(600, 0)
        );
    }

    /// A node whose clock runs an hour ahead stamps a write. A correct node
    /// that observes that write (as a coordinator does with the versions it
    /// replaces) stamps its next write later, at once — it does not wait an
    /// hour, which is what raw wall-clock LWW would do. And once its own
    /// wall clock passes the skewed one, its timestamps follow real time
    /// again (logical back to 0).
    #[test]
    fn a_clock_skewed_ahead_does_not_bury_later_writes() {
        let hour = 3_600_000;
        let mut skewed = Clock::new();
        let mut honest = Clock::new();
        let t0 = 1_700_000_000_000;
        let skewed_write = skewed.now(t0 + hour);
        let honest_write = honest.observe(skewed_write, t0 + 1);
        assert!(honest_write > skewed_write);
        assert_eq!(honest_write.wall_ms(), t0 + hour);
        let next = honest.now(t0 + 2);
        assert!(next > honest_write);
        assert_eq!(
            honest.now(t0 + hour + 10),
            Timestamp::new(t0 + hour + 10, 0)
        );
        assert!(skewed_write.is_ahead_of(t0, 1000));
        assert!(!honest_write.is_ahead_of(t0 + hour, 0));
    }

    #[test]
    fn a_remote_timestamp_beyond_the_max_offset_is_absorbed_only_up_to_it() {
        let t0 = 1_700_000_000_000;
        let mut c = Clock::new();
        c.now(t0);
        // 400 ms ahead, within a 500 ms bound: absorbed whole.
        let near = Timestamp::new(t0 + 400, 2);
        assert_eq!(
            c.observe_within(near, t0, 500),
            (Timestamp::new(t0 + 400, 3), false)
        );
        // An hour ahead: the clock moves to the bound, not an hour on.
        let far = Timestamp::new(t0 + 3_600_000, 0);
        let (t, clamped) = c.observe_within(far, t0 + 1, 500);
        assert!(clamped);
        assert_eq!(t, Timestamp::new(t0 + 501, 1));
        // This node's next write to another key follows its own time.
        let (other, clamped) = c.stamp_after(None, t0 + 600, 500);
        assert_eq!((other, clamped), (Timestamp::new(t0 + 600, 0), false));
        // A write to the far-ahead version's key is stamped after it, so
        // it still wins last-writer-wins, and the clock stays put.
        let (same_key, clamped) = c.stamp_after(Some(far), t0 + 700, 500);
        assert!(clamped);
        assert_eq!(same_key, Timestamp::new(t0 + 3_600_000, 1));
        assert!(c.last().wall_ms() <= t0 + 1200);
        // Within the bound, stamp_after is observe then now, as before.
        let mut a = Clock::starting_at(Timestamp::new(t0, 0));
        let mut b = a.clone();
        let seen = Timestamp::new(t0 + 300, 9);
        b.observe(seen, t0 + 10);
        assert_eq!(
            a.stamp_after(Some(seen), t0 + 10, 500),
            (b.now(t0 + 10), false)
        );
    }

    #[derive(Clone, Debug)]
    enum Event {
        Local(u64),
        Receive(u64, u16, u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        let wall = 0u64..(1 << 40);
        prop_oneof![
            wall.clone().prop_map(Event::Local),
            (wall.clone(), any::<u16>(), wall).prop_map(|(r, l, w)| Event::Receive(r, l, w)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn timestamps_strictly_increase_whatever_the_wall_clock_does(
            events in prop::collection::vec(event(), 1..64)
        ) {
            let mut c = Clock::new();
            let mut prev = c.last();
            for e in events {
                let t = match e {
                    Event::Local(w) => {
                        let t = c.now(w);
                        prop_assert!(t.wall_ms() >= w);
                        t
                    }
                    Event::Receive(r, l, w) => {
                        let remote = Timestamp::new(r, l);
                        let t = c.observe(remote, w);
                        prop_assert!(t > remote);
                        t
                    }
                };
                prop_assert!(t > prev);
                prev = t;
            }
        }

        /// Whatever remote and stored timestamps arrive, a write's stamp
        /// is later than the version it saw, and the clock itself never
        /// runs further ahead than the largest wall time plus the bound
        /// (plus one millisecond of logical overflow).
        #[test]
        fn the_bound_keeps_the_clock_near_its_wall_time_and_writes_after_what_they_saw(
            events in prop::collection::vec((any::<bool>(), 0u64..(1 << 40), any::<u16>(), 0u64..(1 << 40)), 1..64),
            max_offset in 0u64..10_000,
        ) {
            let mut c = Clock::new();
            let mut max_wall = 0;
            for (write, remote, logical, wall) in events {
                max_wall = max_wall.max(wall);
                let remote = Timestamp::new(remote, logical);
                let clamped = if write {
                    let (t, clamped) = c.stamp_after(Some(remote), wall, max_offset);
                    prop_assert!(t > remote);
                    clamped
                } else {
                    c.observe_within(remote, wall, max_offset).1
                };
                prop_assert_eq!(clamped, remote.is_ahead_of(wall, max_offset));
                prop_assert!(c.last().wall_ms() <= max_wall + max_offset + 1);
            }
        }

        #[test]
        fn wall_part_stays_within_the_largest_time_seen_plus_overflow(
            walls in prop::collection::vec(0u64..1_000_000, 1..64)
        ) {
            let mut c = Clock::new();
            let mut max = 0;
            for w in walls {
                max = max.max(w);
                let t = c.now(w);
                // Fewer than 65536 events here, so no overflow step.
                prop_assert_eq!(t.wall_ms(), max);
            }
        }
    }
}
