//! A budget of log lines: at most so many per window, the rest counted
//! and reported with the next line logged. What other processes can
//! trigger (a refused peer, a connection over the limit) is logged
//! through one, so that a flood of them cannot grow the log faster than
//! the budget allows. Time is passed in, so tests need no sleeps.

use std::time::{Duration, Instant};

/// At most `per_window` lines per `window`; see the module docs.
#[derive(Debug)]
pub struct LogBudget {
    per_window: u32,
    window: Duration,
    /// When the current window began (`None`: nothing logged yet).
    start: Option<Instant>,
    /// Lines logged in the current window.
    used: u32,
    /// Events not logged since the last line that was.
    suppressed: u64,
}

impl LogBudget {
    /// A budget of `per_window` lines every `window`.
    pub const fn new(per_window: u32, window: Duration) -> LogBudget {
        LogBudget {
            per_window,
            window,
            start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether an event at `now` may be logged: `Some(n)` when it may,
    /// with `n` the events suppressed since the last line logged (to be
    /// said in that line); `None` when the window's budget is spent (the
    /// event is counted instead).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let new_window = self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if new_window {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_burst_is_cut_at_the_budget_and_the_rest_reported_next_window() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(2, Duration::from_secs(60));
        assert_eq!(b.admit(t0), Some(0));
        assert_eq!(b.admit(t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(b.admit(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(b.admit(t0 + Duration::from_secs(60)), Some(1000));
        assert_eq!(b.admit(t0 + Duration::from_secs(61)), Some(0));
        assert_eq!(b.admit(t0 + Duration::from_secs(62)), None);
    }

    proptest! {
        /// Whatever the arrival times: any span of the window's length
        /// holds at most two windows' budgets of lines (the end of one
        /// window and the start of the next), and every event is either
        /// logged or counted in a later line (or still pending).
        #[test]
        fn lines_stay_within_budget_and_no_event_is_lost(
            per_window in 1u32..5,
            gaps_ms in proptest::collection::vec(0u64..3000, 1..300),
        ) {
            let window = Duration::from_secs(1);
            let t0 = Instant::now();
            let mut b = LogBudget::new(per_window, window);
            let mut now = t0;
            let mut logged = Vec::new();
            let mut accounted = 0u64;
            for gap in &gaps_ms {
                now += Duration::from_millis(*gap);
                if let Some(n) = b.admit(now) {
                    logged.push(now);
                    accounted += 1 + n;
                }
            }
            prop_assert_eq!(accounted + b.suppressed, gaps_ms.len() as u64);
            for (i, t) in logged.iter().enumerate() {
                let within = logged[i..].iter().take_while(|u| **u - *t < window).count();
                prop_assert!(within <= 2 * per_window as usize, "{} lines within {:?}", within, window);
            }
        }
    }
}
