//! `qkv exp faults`: Jepsen-style fault experiments. Concurrent clients run
//! a workload against a real cluster while a nemesis injects partitions,
//! crashes, pauses, clock skew and lost disks; every operation and fault
//! is recorded as a history (`exp::history`) and judged by the checker
//! (`exp::check`).
//!
//! What lives where:
//! - [`level`] — `--levels` (`r=2,w=2`, `sloppy:r=2,w=2`, `lww:r=2,w=2`)
//!   and the bucket each level runs in (pure).
//! - [`nemesis`] — the fault kinds and the seeded schedule (pure).
//! - [`availability`] — which operations had their quorum reachable, from
//!   the history's nemesis events and the keys' replicas (pure).
//! - [`results`] — the per-level table of `results.json` and stdout (pure).
//! - [`workload`] — the register, set and lww clients and how their
//!   operations are recorded; [`record`] — the history file being written.
//! - [`cluster`] — starting, finding and stopping the cluster under test.
//! - [`inject`] — carrying faults out (`/internal/faults`, the local
//!   cluster's supervisor).
//! - [`run`] — one experiment from the buckets to the verdict;
//!   [`output`] — `results.json`, `timeline.svg` and `report.md`.
//!
//! docs/EXPERIMENTS.md, "Fault experiments", describes the workloads, the
//! faults, the definitions and the measured figures.

pub mod availability;
pub mod cluster;
pub mod inject;
pub mod level;
pub mod nemesis;
pub mod output;
pub mod record;
pub mod results;
pub mod run;
pub mod workload;
