//! Delay distributions for quorumkv's experiments: what the staleness
//! predictor (`qkv exp predict`, docs/EXPERIMENTS.md) samples, and what
//! the node's fault injection will add to its internode messages, so that
//! a measured cluster and its prediction use the very same delays.
//!
//! * [`Dist`]: one distribution of delays in milliseconds, written as a
//!   string (`const:MS`, `uniform:A..B`, `exp:MEAN`, `pareto:XM,ALPHA`,
//!   `mix:W*DIST+W*DIST…`, `empirical:[…]` or `empirical:FILE`) that
//!   parses, prints back the same and is its serde form. Sampling is by
//!   inverse CDF from one or two uniform draws, with no allocation.
//! * [`Legs`]: the four one-way delays of the PBS paper's WARS model — a
//!   write request reaching a replica (W), its acknowledgement (A), a read
//!   request (R) and its response (S).
//! * [`Preset`]: the paper's production fits (`lnkd-ssd`, `lnkd-disk`,
//!   `ymmr`, `wan`), with parameters (`ymmr:alpha=3.5`); [`Delays`] is
//!   what a preset stands for: four legs plus, for `wan`, the extra delay
//!   of remote replicas.
//! * [`DelaySpec`]: what a `--delays` option holds, a preset or one
//!   distribution for every leg.
//! * [`load`]: the one piece of I/O, reading `empirical:FILE` samples.
//! * [`Settings`]: the fault-injection document a node's
//!   `/internal/faults` route and `qkv faults` exchange — per-peer leg
//!   delays, drops, duplicates, reordering, a [`Partition`], a
//!   [`ClockFault`] — and [`plan`], what happens to one message under them.
//!
//! The crate is pure apart from [`load`]: randomness comes in as an
//! [`rand::Rng`] the caller seeds, and time as numbers.

mod dist;
mod error;
pub mod load;
pub mod plan;
mod preset;
mod settings;
mod syntax;

pub use dist::Dist;
pub use error::Error;
pub use preset::{DelaySpec, Delays, Legs, Preset};
pub use settings::{
    ClockFault, Leg, LinkFaults, MAX_CLOCK_OFFSET_MS, MAX_DRIFT_PPM, MAX_STORAGE_DELAY_MS,
    Partition, REORDER_HOLD_MS, Settings, SettingsError,
};
