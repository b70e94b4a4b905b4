//! Supervising real `qkvd` processes on this machine: the one place that
//! starts, watches, signals and stops them, shared by `qkv local` (which
//! leaves its nodes running and records them in `cluster.json`) and the
//! cluster-test harness (whose nodes die with the test).
//!
//! What lives where:
//! - [`layout`]: a node's command line, and the `n1..nK` loopback layout
//!   of `qkv local up` (pure).
//! - [`procfs`]: what `/proc/PID/stat` and `/proc/PID/cmdline` say about a
//!   pid — running, paused or gone, and whether it is still our `qkvd`
//!   (pure parsing, thin readers).
//! - [`process`]: [`NodeProcess`], one node's process: start (own log,
//!   stdin closed), wait for `/health`, SIGTERM-then-SIGKILL stop, kill -9,
//!   pause/resume, lose the disk, and what happens when the handle drops.
//! - [`cluster`]: the `cluster.json` record of a local cluster and the
//!   process faults applied to one of its nodes ([`LocalCluster`]).
//! - [`ports`]: choosing loopback ports.
//! - [`tls`]: the throwaway CA and node certificates of `qkv local up
//!   --tls`, and HTTPS base URLs and probes.
//!
//! Every failure is an [`Error`]; waits poll with deadlines, never sleep
//! blindly.

pub mod cluster;
pub mod layout;
pub mod ports;
pub mod process;
pub mod procfs;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

pub use cluster::{ClusterRecord, LocalCluster, NodeRecord};
pub use layout::{Layout, NodeArgs};
pub use ports::free_port;
pub use process::{Launch, NodeProcess, Ownership, StopOutcome, log_tail};
pub use procfs::ProcState;

/// Everything supervising a process can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read, written or removed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done (`cannot open`, `cannot remove`, ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The binary could not be started.
    #[error("cannot start {}: {source}", .bin.display())]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The process exited while we waited for it to serve.
    #[error("qkvd {id} exited with {status} before serving")]
    Exited {
        /// Node id.
        id: String,
        /// How it ended (`exit status: 1`, `signal: 9 (SIGKILL)`, ...).
        status: String,
    },
    /// `/health` did not answer 200 in time.
    #[error("qkvd {id} did not answer /health within {} s: {last}", .within.as_secs_f64())]
    NotHealthy {
        /// Node id.
        id: String,
        /// How long we waited.
        within: Duration,
        /// The last probe's failure.
        last: String,
    },
    /// A start was asked of a node whose process still runs.
    #[error("{id} is already running (pid {pid})")]
    AlreadyRunning {
        /// Node id.
        id: String,
        /// Its pid.
        pid: u32,
    },
    /// A signal was asked for a node whose process is not running.
    #[error("{id} is not running{}", .pid.map(|p| format!(" (pid {p} is gone)")).unwrap_or_default())]
    NotRunning {
        /// Node id.
        id: String,
        /// The pid it last had, if any.
        pid: Option<u32>,
    },
    /// `pause` of a paused node.
    #[error("{id} is already paused (pid {pid})")]
    AlreadyPaused {
        /// Node id.
        id: String,
        /// Its pid.
        pid: u32,
    },
    /// `resume` of a node that is not paused.
    #[error("{id} is not paused (pid {pid} is running)")]
    NotPaused {
        /// Node id.
        id: String,
        /// Its pid.
        pid: u32,
    },
    /// kill(2) failed.
    #[error("kill({pid}, {signal}) failed: {source}")]
    Signal {
        /// The pid.
        pid: u32,
        /// The signal number.
        signal: i32,
        /// Why.
        source: std::io::Error,
    },
    /// The process did not reach the state a signal asks for in time.
    #[error("{id} (pid {pid}) did not become {want} within {} s", .within.as_secs_f64())]
    StateTimeout {
        /// Node id.
        id: String,
        /// The pid.
        pid: u32,
        /// The state waited for.
        want: ProcState,
        /// How long we waited.
        within: Duration,
    },
    /// No `cluster.json` in the directory.
    #[error("no local cluster recorded in {}", .dir.display())]
    NoCluster {
        /// The `--dir`.
        dir: PathBuf,
    },
    /// `cluster.json` exists but is not a record.
    #[error("{} is not a cluster record: {source}", .path.display())]
    BadRecord {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A node id the record does not list.
    #[error("no node {id} in the local cluster (nodes: {})", .known.join(", "))]
    UnknownNode {
        /// The id asked for.
        id: String,
        /// The ids recorded.
        known: Vec<String>,
    },
    /// A record written before arguments were recorded cannot restart a
    /// node.
    #[error(
        "the record of {id} lists no qkvd arguments (written by an older qkv); restart the cluster with `qkv local down` and `qkv local up`"
    )]
    NoArguments {
        /// Node id.
        id: String,
    },
    /// A port the layout needs is taken.
    #[error(
        "{addr} (for {id}) is not free: {source}; choose other ports with --base-http-port / --base-listen-port"
    )]
    PortTaken {
        /// The address.
        addr: String,
        /// Node id.
        id: String,
        /// Why the bind failed.
        source: std::io::Error,
    },
    /// A layout that does not fit in the port space, or no free port left.
    #[error("{0}")]
    Ports(String),
    /// A certificate could not be made.
    #[error("{0}")]
    Tls(String),
}
