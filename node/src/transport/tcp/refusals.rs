//! What the transport remembers about peers it refused, and about
//! connections it holds per remote address: both are driven by processes
//! that have not authenticated, so both are bounded whatever they send.
//!
//! * [`RefusalLog`] decides which refusals are logged at `warn`: once a
//!   minute per peer address and reason *kind* (the claimed cluster name
//!   or the peer's refusal text is not part of the key, so new names are
//!   not new entries), in a table of at most [`MAX_SLOTS`] entries, and
//!   within a node-wide [`LogBudget`].
//! * [`ConnCounts`] counts the open inbound connections per remote
//!   address, so that one address cannot hold more than its share.
//!
//! Time is passed in; no I/O here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::log_budget::LogBudget;

/// Entries of the refusal table at most.
pub const MAX_SLOTS: usize = 1024;

/// A refusal is logged at `warn` at most this often per address and kind.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Refusal lines at `warn` per minute for the whole node.
const LINES_PER_MINUTE: u32 = 20;

/// Longest text kept from what a peer claims or says (a cluster name is
/// at most 128 bytes; a refusal reason is one line).
pub const MAX_TEXT: usize = 256;

/// `s` cut to at most `max` bytes (on a character boundary), marked with
/// `…` when cut.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Which refusals to log; see the module docs.
#[derive(Debug)]
pub struct RefusalLog {
    last: HashMap<(String, &'static str), Instant>,
    budget: LogBudget,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            last: HashMap::new(),
            budget: LogBudget::new(LINES_PER_MINUTE, Duration::from_secs(60)),
        }
    }
}

impl RefusalLog {
    /// Entries remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether a refusal of kind `kind` from `addr` at `now` is logged at
    /// `warn`: `Some(n)` with `n` the refusals left unlogged by the
    /// node-wide budget since the last line; `None` to log it at `debug`.
    pub fn admit(&mut self, addr: &str, kind: &'static str, now: Instant) -> Option<u64> {
        let key = (bounded(addr, MAX_TEXT), kind);
        let due = self
            .last
            .get(&key)
            .is_none_or(|t| now.saturating_duration_since(*t) >= LOG_EVERY);
        if !due {
            return None;
        }
        if self.last.len() >= MAX_SLOTS && !self.last.contains_key(&key) {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < LOG_EVERY);
        }
        // A table still full of fresh entries: the budget alone decides.
        if self.last.len() < MAX_SLOTS || self.last.contains_key(&key) {
            self.last.insert(key, now);
        }
        self.budget.admit(now)
    }
}

/// Open inbound connections per remote address; see the module docs.
#[derive(Debug, Default)]
pub struct ConnCounts {
    by_addr: HashMap<IpAddr, u32>,
    total: u32,
}

impl ConnCounts {
    /// Counts one more connection from `ip` if that keeps it within
    /// `per_addr` and the total within `total`; `false` (and nothing
    /// counted) otherwise.
    pub fn open(&mut self, ip: IpAddr, per_addr: u32, total: u32) -> bool {
        let n = self.by_addr.get(&ip).copied().unwrap_or(0);
        if n >= per_addr || self.total >= total {
            return false;
        }
        self.by_addr.insert(ip, n + 1);
        self.total += 1;
        true
    }

    /// Counts a connection from `ip` as closed.
    pub fn close(&mut self, ip: IpAddr) {
        if let Some(n) = self.by_addr.get_mut(&ip) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.by_addr.remove(&ip);
            }
        }
    }

    /// Addresses with a connection open.
    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn texts_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded("abcd", 3), "abc…");
        // 'é' is two bytes: a cut in its middle moves before it.
        assert_eq!(bounded("aé", 2), "a…");
    }

    #[test]
    fn one_line_per_address_and_kind_per_minute() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.admit("10.0.0.1", "cluster", t0), Some(0));
        assert_eq!(log.admit("10.0.0.1", "cluster", t0 + LOG_EVERY / 2), None);
        assert_eq!(log.admit("10.0.0.1", "bad_secret", t0), Some(0));
        assert_eq!(log.admit("10.0.0.2", "cluster", t0), Some(0));
        assert_eq!(log.admit("10.0.0.1", "cluster", t0 + LOG_EVERY), Some(0));
        assert_eq!(log.len(), 3);
    }

    proptest! {
        /// Whatever addresses refusals come from: the table never holds
        /// more than MAX_SLOTS entries, and no more than the node-wide
        /// budget of lines is logged per minute.
        #[test]
        fn the_table_and_the_lines_stay_bounded(
            addrs in proptest::collection::vec(0u32..5000, 1..3000),
            step_ms in 0u64..50,
        ) {
            let t0 = Instant::now();
            let mut log = RefusalLog::default();
            let mut lines = 0u32;
            let mut now = t0;
            for a in &addrs {
                now += Duration::from_millis(step_ms);
                if log.admit(&format!("10.{a}"), "cluster", now).is_some() {
                    lines += 1;
                }
                prop_assert!(log.len() <= MAX_SLOTS);
            }
            let minutes = (now - t0).as_secs() / 60 + 1;
            prop_assert!(u64::from(lines) <= 2 * u64::from(LINES_PER_MINUTE) * minutes);
        }

        /// Opening and closing in any order: no address above its cap,
        /// the total never above its cap, and every address forgotten
        /// once its connections close.
        #[test]
        fn connection_counts_respect_both_caps(
            ops in proptest::collection::vec((0u8..4, proptest::bool::ANY), 1..400),
        ) {
            let mut c = ConnCounts::default();
            let mut open: Vec<IpAddr> = Vec::new();
            for (a, is_open) in ops {
                let ip = IpAddr::from([10, 0, 0, a]);
                if is_open {
                    if c.open(ip, 3, 8) {
                        open.push(ip);
                    }
                } else if let Some(i) = open.iter().position(|x| *x == ip) {
                    open.swap_remove(i);
                    c.close(ip);
                }
                prop_assert!(open.len() <= 8);
                prop_assert!(open.iter().filter(|x| **x == ip).count() <= 3);
                prop_assert_eq!(c.total as usize, open.len());
            }
            for ip in open.drain(..) {
                c.close(ip);
            }
            prop_assert_eq!(c.addresses(), 0);
        }
    }
}
