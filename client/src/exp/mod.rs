//! Fault experiments: what the runner records and how it is judged.
//!
//! - [`history`]: the history file format (JSON lines of invocations and
//!   completions), its reader and writer.

pub mod history;
