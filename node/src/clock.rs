//! The wall clock, read in one place.
//!
//! Everything that needs "now" as a date — the hybrid logical clock's
//! physical part, tombstone ages, bucket-property timestamps, change
//! records, a request's wall-clock expiry — reads it here, so that there
//! is one rule for a host clock set before 1970 (read as 0: age
//! everything as new rather than fail a write) and one place that clock
//! faults can reach. Deadlines and timeouts never use it: they run on the
//! monotonic clock (`tokio::time::Instant`), which a clock step cannot
//! move.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 on a host clock before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whole seconds since the Unix epoch (0 on a host clock before 1970).
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}
