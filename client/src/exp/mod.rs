//! Experiments on quorumkv's consistency: what each setting buys, predicted
//! and measured.
//!
//! * [`predict`]: the PBS predictor behind `qkv exp predict` — the
//!   probability that a read sees the last write `t` ms after it
//!   committed, k-staleness and latency, under the PBS paper's WARS model
//!   or quorumkv's own message flow (the per-trial models are in
//!   `trial.rs`).
//! * [`report`]: a prediction as JSON, text tables, CSV curves and a
//!   Markdown report.
//! * [`svg`]: hand-written SVG line and point plots with axes, ticks and a
//!   legend (predicted curves, and measured points over them).
//! * [`history`]: the fault experiments' history file format (JSON lines
//!   of invocations and completions), its reader and writer.
//! * [`staleness`]: `qkv exp staleness`, the measured half of
//!   `predict`: writes and reads on a live cluster with injected delays,
//!   the measured t-visibility beside the prediction, and its report.
//! * [`matrix`]: the R/W matrix (`qkv exp matrix`), the PBS paper's
//!   Table 4 for this store, predicted or measured.
//! * [`check`]: the history checker, which finds lost writes, stale and
//!   non-monotonic reads and counts siblings, per bucket.
//! * [`faults`]: the fault experiments of `qkv exp faults` (workloads, the
//!   nemesis, availability and the results table).
//!
//! docs/EXPERIMENTS.md describes the models, the checker and how to read
//! the output.

pub mod check;
pub mod faults;
pub mod history;
pub mod matrix;
pub mod predict;
pub mod report;
pub mod staleness;
pub mod svg;
mod trial;
