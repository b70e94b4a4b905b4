//! The wall clock, read in one place.
//!
//! Everything that needs "now" as a date — the hybrid logical clock's
//! physical part, tombstone ages, bucket-property timestamps, change
//! records — reads it here, so that there
//! is one rule for a host clock set before 1970 (read as 0: age
//! everything as new rather than fail a write) and one place that clock
//! faults can reach. Deadlines and timeouts never use it: they run on the
//! monotonic clock (`tokio::time::Instant`), which a clock step cannot
//! move.
//!
//! A clock fault ([`set_fault`], `--fault-injection` only) skews every
//! read by an offset and a drift ([`quorumkv_faults::ClockFault`]). It is
//! process-wide: right for a real node (one per process), while the
//! in-process simulations, whose nodes share a process, share one clock.
//! Without a fault a read costs one relaxed atomic load more than the
//! host clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use quorumkv_faults::ClockFault;

/// Whether a fault is set: the one check of a read without one.
static SKEWED: AtomicBool = AtomicBool::new(false);

/// The fault, and the host's reading when it was set.
static FAULT: Mutex<Option<(ClockFault, u64)>> = Mutex::new(None);

/// The host's clock, ms since the epoch (0 before 1970).
fn host_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch (0 on a host clock before 1970), as
/// this node's clock reads them (skewed by a clock fault, if one is set).
pub fn unix_ms() -> u64 {
    let host = host_ms();
    if !SKEWED.load(Relaxed) {
        return host;
    }
    match *FAULT.lock().unwrap_or_else(|p| p.into_inner()) {
        Some((fault, since)) => fault.read(host, since),
        None => host,
    }
}

/// Whole seconds since the Unix epoch (0 on a host clock before 1970).
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// Skews this process's clock by `fault` from now on (a zero fault
/// clears it). Fault injection only.
pub fn set_fault(fault: ClockFault) {
    let mut slot = FAULT.lock().unwrap_or_else(|p| p.into_inner());
    if fault.is_zero() {
        *slot = None;
        SKEWED.store(false, Relaxed);
    } else {
        *slot = Some((fault, host_ms()));
        SKEWED.store(true, Relaxed);
    }
}

/// How far this node's clock reads from the host's now, ms (for metrics).
pub fn offset_ms() -> i64 {
    let host = host_ms();
    unix_ms() as i64 - host as i64
}
