//! Fault experiments: what the runner records and how it is judged.
//!
//! - [`history`]: the history file format (JSON lines of invocations and
//!   completions), its reader and writer.
//! - [`check`]: the history checker, which finds lost writes, stale and
//!   non-monotonic reads and counts siblings, per bucket.

pub mod check;
pub mod history;
