//! Fault injection for tests and experiments, reachable only when `qkvd`
//! runs with `--fault-injection` (the admin route answers 404 otherwise).
//!
//! Today it can slow this node's replica operations down, which is how the
//! tests provoke a 504 `timeout` and a 503 `overloaded` on one node; the
//! internode transport will add per-peer delays and drops. A request path
//! pays one relaxed atomic load for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The faults currently injected.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Delay added to every local replica read and write, in ms.
    #[serde(default)]
    pub storage_delay_ms: u64,
}

/// The node's fault switches.
#[derive(Debug, Default)]
pub struct Faults {
    enabled: bool,
    storage_delay_ms: AtomicU64,
}

impl Faults {
    /// Switches that can be set only when `enabled`.
    pub fn new(enabled: bool) -> Faults {
        Faults {
            enabled,
            storage_delay_ms: AtomicU64::new(0),
        }
    }

    /// Whether `--fault-injection` was given.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The current settings.
    pub fn settings(&self) -> FaultSettings {
        FaultSettings {
            storage_delay_ms: self.storage_delay_ms.load(Ordering::Relaxed),
        }
    }

    /// Replaces the settings (ignored unless enabled).
    pub fn set(&self, s: &FaultSettings) {
        if self.enabled {
            self.storage_delay_ms
                .store(s.storage_delay_ms.min(600_000), Ordering::Relaxed);
        }
    }

    /// Waits out the injected storage delay, if any.
    pub async fn storage_delay(&self) {
        let ms = self.storage_delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}
