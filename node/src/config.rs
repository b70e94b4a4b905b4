//! `qkvd` configuration: command-line flags, `QKV_*` environment variables
//! and a TOML file, merged in that order of precedence (flag > variable >
//! file > built-in default).
//!
//! clap handles flag-over-variable by itself (`env = "QKV_..."`). Every clap
//! field is an `Option` without a clap default, so that "not given" is
//! visible and the file can fill it; the defaults live in one place,
//! [`Config::resolve`], and are repeated in each flag's help text.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::storage::SyncMode;

/// Default `--max-clock-offset-ms`: CockroachDB's default `--max-offset`.
pub const DEFAULT_MAX_CLOCK_OFFSET_MS: u64 = 500;

/// Default row cache capacity (`--row-cache-mb`), in bytes.
pub const DEFAULT_ROW_CACHE_BYTES: u64 = 64 << 20;

/// Durability of acknowledged writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sync {
    /// A write is acknowledged only after an fsync covers it (group commit).
    Always,
    /// Writes are fsynced every `--sync-interval-ms`; a crash of the machine
    /// (not only of the process) can lose up to one interval.
    Periodic,
}

/// How a node chooses its ring tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenAllocation {
    /// Splits the most loaded ranges, counting replication: even with 16 vnodes.
    Balanced,
    /// Uniformly random tokens, as classic Dynamo and Cassandra before 3.0.
    Random,
}

/// Whether a node without tokens joins the ring on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Join {
    /// Choose tokens and join at first start (like Cassandra's auto_bootstrap).
    Auto,
    /// Join gossip without tokens and wait for `qkv ring apply`.
    Manual,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A feature switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// Storage engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// fjall, an LSM tree on disk under `--data-dir` (the default).
    Fjall,
    /// In memory: nothing survives a restart. For tests and experiments.
    Memory,
}

/// The quorumkv node.
///
/// Every flag can also be set as `QKV_<FLAG>` (upper case, `_` for `-`) or
/// in the TOML file given by `--config` (keys as the flag names with `_`);
/// a flag beats the variable, which beats the file.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "qkvd",
    version,
    about = "quorumkv node: a leaderless replicated key-value store"
)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// TOML configuration file. [env: QKV_CONFIG]
    #[arg(long, env = "QKV_CONFIG", value_name = "FILE", hide_env = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Node id, stable across restarts [default: the id stored in the data
    /// dir, else a new random one]
    #[arg(long, env = "QKV_ID")]
    pub id: Option<String>,

    /// HTTP API address [default: 127.0.0.1:8001]
    #[arg(long, env = "QKV_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,

    /// Gossip and internode address [default: 127.0.0.1:7001]
    #[arg(long, env = "QKV_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Comma-separated gossip addresses of seed nodes; none, or only this
    /// node, starts a new cluster [default: none]
    #[arg(long, env = "QKV_SEEDS", value_name = "ADDRS", value_delimiter = ',')]
    pub seeds: Option<Vec<SocketAddr>>,

    /// Data directory [default: ./data]
    #[arg(long, env = "QKV_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Cluster name; nodes of another cluster are refused [default: quorumkv]
    #[arg(long, env = "QKV_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// File holding the cluster's shared secret for internode authentication
    /// [default: none]
    #[arg(long, env = "QKV_CLUSTER_SECRET_FILE", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,

    /// Virtual nodes (tokens) this node takes when it joins, 1..=1024 [default: 16]
    #[arg(long, env = "QKV_VNODES")]
    pub vnodes: Option<u32>,

    /// Token allocation strategy [default: balanced]
    #[arg(long, env = "QKV_TOKEN_ALLOCATION", value_enum)]
    pub token_allocation: Option<TokenAllocation>,

    /// Rack of this node; replicas are spread over racks first [default: none]
    #[arg(long, env = "QKV_RACK", value_name = "NAME")]
    pub rack: Option<String>,

    /// Replicas per key for buckets that do not set `n`, 1..=16 [default: 3]
    #[arg(long, env = "QKV_DEFAULT_N", value_name = "N")]
    pub default_n: Option<u32>,

    /// Write durability [default: always]
    #[arg(long, env = "QKV_SYNC", value_enum)]
    pub sync: Option<Sync>,

    /// Interval between fsyncs with `--sync periodic`, in ms, 1..=60000 [default: 1000]
    #[arg(long, env = "QKV_SYNC_INTERVAL_MS", value_name = "MS")]
    pub sync_interval_ms: Option<u64>,

    /// Largest value accepted, in bytes, 1..=268435456 [default: 1048576]
    #[arg(long, env = "QKV_MAX_VALUE_BYTES", value_name = "BYTES")]
    pub max_value_bytes: Option<u64>,

    /// Largest a key may grow, all its versions (siblings) as stored, in
    /// bytes, --max-value-bytes..=1073741824; also sizes internode frames,
    /// so every node of a cluster must use the same [default: 4 ×
    /// --max-value-bytes, at most 256 MiB, at least --max-value-bytes]
    #[arg(long, env = "QKV_MAX_KEY_BYTES", value_name = "BYTES")]
    pub max_key_bytes: Option<u64>,

    /// Joining the ring on first start [default: auto]
    #[arg(long, env = "QKV_JOIN", value_enum)]
    pub join: Option<Join>,

    /// Enable the admin routes that inject delays and drops into internode
    /// traffic; never use in production [default: off]
    #[arg(long, env = "QKV_FAULT_INJECTION", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub fault_injection: Option<bool>,

    /// How far ahead of this node's clock a timestamp from another node
    /// may move it, in ms, 1..=86400000; versions stamped further ahead
    /// are kept but move the clock only this far (docs/CONSISTENCY.md)
    /// [default: 500]
    #[arg(long, env = "QKV_MAX_CLOCK_OFFSET_MS", value_name = "MS")]
    pub max_clock_offset_ms: Option<u64>,

    /// Default deadline of a request, in ms, 1..=600000 [default: 2000]
    #[arg(long, env = "QKV_TIMEOUT_MS", value_name = "MS")]
    pub timeout_ms: Option<u64>,

    /// Requests served at once before answering 503 `overloaded` [default: 4096]
    #[arg(long, env = "QKV_MAX_INFLIGHT", value_name = "N")]
    pub max_inflight: Option<u32>,

    /// Open HTTP connections at once; a connection beyond them is closed
    /// as soon as it is accepted. Keep the process's open-file limit above
    /// it, 1..=1048576 [default: 4096]
    #[arg(long, env = "QKV_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u32>,

    /// How long an HTTP connection may take to send a request's headers
    /// (and an idle keep-alive connection may wait for its next request)
    /// before it is closed, in ms, 100..=600000 [default: 30000]
    #[arg(long, env = "QKV_HTTP_HEADER_TIMEOUT_MS", value_name = "MS")]
    pub http_header_timeout_ms: Option<u64>,

    /// How long a request's body may take to arrive once its headers
    /// have; a slower one is answered 408 `request_timeout` and its
    /// connection closed, in ms, 100..=3600000 [default: 60000]
    #[arg(long, env = "QKV_HTTP_BODY_TIMEOUT_MS", value_name = "MS")]
    pub http_body_timeout_ms: Option<u64>,

    /// PEM certificate chain (the node's certificate first) to serve the
    /// HTTP API over HTTPS; needs `--tls-key` [default: none, plain HTTP]
    #[arg(long, env = "QKV_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert` [default: none]
    #[arg(long, env = "QKV_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle for mutual TLS between nodes: with
    /// `--internode-cert` and `--internode-key`, every internode
    /// connection runs over TLS 1.3 and a peer must present a certificate
    /// of this CA naming its node id as a DNS name [default: none, plain
    /// TCP]
    #[arg(long, env = "QKV_INTERNODE_CA", value_name = "FILE")]
    pub internode_ca: Option<PathBuf>,

    /// PEM certificate chain of this node for internode TLS (its own
    /// certificate first, with its node id as a DNS name) [default: none]
    #[arg(long, env = "QKV_INTERNODE_CERT", value_name = "FILE")]
    pub internode_cert: Option<PathBuf>,

    /// PEM private key of `--internode-cert` [default: none]
    #[arg(long, env = "QKV_INTERNODE_KEY", value_name = "FILE")]
    pub internode_key: Option<PathBuf>,
    /// Directory of `qkv exp` reports the web console at /ui lists and
    /// serves read-only (docs/OPERATIONS.md, "Console") [default: none]
    #[arg(long, env = "QKV_UI_REPORTS_DIR", value_name = "DIR")]
    pub ui_reports_dir: Option<PathBuf>,

    /// Storage engine [default: fjall]
    #[arg(long, env = "QKV_ENGINE", value_enum)]
    pub engine: Option<Engine>,

    /// File of client bearer tokens, one per line; when set (or an admin
    /// token is), every route but /health needs a token [default: none]
    #[arg(long, env = "QKV_CLIENT_TOKENS_FILE", value_name = "FILE")]
    pub client_tokens_file: Option<PathBuf>,

    /// File holding the admin bearer token, needed for /internal/... and
    /// cluster-changing routes [default: none]
    #[arg(long, env = "QKV_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Run with a non-loopback `--listen` and neither a cluster secret nor
    /// internode TLS, or a
    /// non-loopback `--http` and no bearer tokens: anyone who reaches the
    /// address can then join the cluster or read and write every key
    /// [default: off, such a node refuses to start]
    #[arg(long, env = "QKV_INSECURE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub insecure: Option<bool>,

    /// Time between gossip rounds, in ms, 10..=60000; failure detection
    /// scales with it (conviction after ~18.4 intervals of silence at the
    /// default threshold). For tests and experiments [default: 1000]
    #[arg(long, env = "QKV_GOSSIP_INTERVAL_MS", value_name = "MS", hide = true)]
    pub gossip_interval_ms: Option<u64>,

    /// Phi threshold at which the failure detector convicts a node,
    /// (0, 64] [default: 8]
    #[arg(long, env = "QKV_PHI_THRESHOLD", value_name = "PHI", hide = true)]
    pub phi_threshold: Option<f64>,

    /// Log format; the level comes from RUST_LOG [default: text]
    #[arg(long, env = "QKV_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Reads take full versions from one replica and digests from the
    /// others (fetching versions only on a mismatch), instead of full
    /// versions from all R. For measuring the two [default: off]
    #[arg(long, env = "QKV_READ_DIGESTS", value_enum, hide = true)]
    pub read_digests: Option<Switch>,

    /// Seconds between background anti-entropy passes (Merkle-tree repair
    /// of every range this node replicates, as `qkv repair` runs); the
    /// first pass comes 1 to 2 intervals after start; 0 turns the
    /// scheduler off [default: 3600]
    #[arg(long, env = "QKV_ANTI_ENTROPY_INTERVAL_SECS", value_name = "SECS")]
    pub anti_entropy_interval_secs: Option<u64>,

    /// Seconds a deletion's tombstone is kept at least; it is purged only
    /// after that *and* once its range was repaired with every replica
    /// after the delete (as Cassandra's gc_grace_seconds). A replica down
    /// longer than this must be wiped and repaired, not merely restarted,
    /// 0..=315360000 [default: 864000, 10 days]
    #[arg(long, env = "QKV_TOMBSTONE_GRACE_SECS", value_name = "SECS")]
    pub tombstone_grace_secs: Option<u64>,

    /// Start a node whose data dir was last up longer than
    /// --tombstone-grace-secs ago (e.g. after the whole cluster was stopped
    /// that long); without it such a node refuses to start, since its old
    /// data may hold values whose tombstones the others purged: wipe its
    /// data dir instead, and it replaces itself [default: off]
    #[arg(long, env = "QKV_REJOIN_AFTER_GRACE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub rejoin_after_grace: Option<bool>,

    /// Anti-entropy throttle: version bytes one repair pass (scheduled or
    /// `qkv repair`) may send plus receive per second, 1024..=2^40
    /// [default: 20971520, 20 MiB/s]
    #[arg(long, env = "QKV_REPAIR_BYTES_PER_SEC", value_name = "BYTES")]
    pub repair_bytes_per_sec: Option<u64>,

    /// Memory for the cache of the versions this node wrote or merged
    /// since it started, which reads and read-modify-writes use instead of
    /// searching the storage engine; 0 turns it off, 0..=1048576
    /// [default: 64]
    #[arg(long, env = "QKV_ROW_CACHE_MB", value_name = "MIB")]
    pub row_cache_mb: Option<u64>,

    /// Hinted handoff: keep writes for replicas that are down or late and
    /// deliver them when the replica is back [default: on]
    #[arg(long, env = "QKV_HINTED_HANDOFF", value_enum)]
    pub hinted_handoff: Option<Switch>,

    /// Hints older than this many seconds are dropped unsent (anti-entropy
    /// heals those replicas), 1..=604800 [default: 10800, 3 h]
    #[arg(long, env = "QKV_MAX_HINT_WINDOW_SECS", value_name = "SECS")]
    pub max_hint_window_secs: Option<u64>,

    /// Hints kept per target node; beyond it writes are not hinted (and
    /// counted) [default: 100000]
    #[arg(long, env = "QKV_MAX_HINTS_PER_TARGET", value_name = "N")]
    pub max_hints_per_target: Option<u64>,

    /// Hint replay throttle for the whole node (all targets together),
    /// bytes per second [default: 4194304]
    #[arg(long, env = "QKV_HINT_REPLAY_BYTES_PER_SEC", value_name = "BYTES")]
    pub hint_replay_bytes_per_sec: Option<u64>,

    /// Streaming throttle when this node receives ranges (join,
    /// decommission, removenode), bytes per second [default: 52428800]
    #[arg(long, env = "QKV_STREAM_BYTES_PER_SEC", value_name = "BYTES")]
    pub stream_bytes_per_sec: Option<u64>,

    /// Seconds the ring must stay unchanged after a cluster change before
    /// this node deletes, on its own, the data of ranges it gave up (what
    /// `qkv cleanup` does at once); 0 turns automatic cleanup off,
    /// 0..=2592000 [default: 3600]
    #[arg(long, env = "QKV_CLEANUP_GRACE_SECS", value_name = "SECS")]
    pub cleanup_grace_secs: Option<u64>,
}

/// A configuration error: one line for a person.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML for these settings.
    #[error("bad config file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A value is out of range or malformed.
    #[error("bad value for {name}: {reason}")]
    Value {
        /// The setting's flag name.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node id given explicitly (else taken from or stored in the data dir).
    pub id: Option<String>,
    /// HTTP API address.
    pub http: SocketAddr,
    /// Gossip and internode address.
    pub listen: SocketAddr,
    /// Seed gossip addresses.
    pub seeds: Vec<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Cluster name.
    pub cluster_name: String,
    /// Shared secret, read from `--cluster-secret-file`.
    pub cluster_secret: Option<String>,
    /// Vnodes taken at join.
    pub vnodes: u32,
    /// Token allocation strategy.
    pub token_allocation: TokenAllocation,
    /// Rack.
    pub rack: Option<String>,
    /// Default replicas per key.
    pub default_n: u32,
    /// Durability.
    pub sync: SyncMode,
    /// Largest value accepted.
    pub max_value_bytes: u64,
    /// Largest stored size of one key, all versions together.
    pub max_key_bytes: u64,
    /// Join mode.
    pub join: Join,
    /// Fault-injection admin routes enabled.
    pub fault_injection: bool,
    /// How far ahead a remote timestamp may move this node's clock, ms.
    pub max_clock_offset_ms: u64,
    /// Default request deadline.
    pub timeout: Duration,
    /// Concurrent requests before 503 overloaded.
    pub max_inflight: u32,
    /// Open HTTP connections at once.
    pub max_connections: u32,
    /// Deadline for a request's headers (and for an idle connection).
    pub http_header_timeout: Duration,
    /// Deadline for a request's body, once its headers are read.
    pub http_body_timeout: Duration,
    /// Certificate chain and key files of HTTPS (`None`: plain HTTP).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA bundle, certificate chain and key files of internode TLS
    /// (`None`: plain TCP between nodes).
    pub internode_tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// Reports directory of the web console (`None`: no reports view).
    pub ui_reports_dir: Option<PathBuf>,
    /// Storage engine.
    pub engine: Engine,
    /// Client bearer tokens.
    pub client_tokens: Vec<String>,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// Failure detector conviction threshold.
    pub phi_threshold: f64,
    /// Whether reads ask all but one replica for digests.
    pub read_digests: bool,
    /// Time between background anti-entropy passes (`None`: off).
    pub anti_entropy_interval: Option<Duration>,
    /// How long tombstones are kept at least (`--tombstone-grace-secs`).
    pub tombstone_grace: Duration,
    /// Start even when the data dir was last up longer than the grace ago
    /// (`--rejoin-after-grace`).
    pub rejoin_after_grace: bool,
    /// Repair throttle, bytes/s (`--repair-bytes-per-sec`).
    pub repair_bytes_per_sec: u64,
    /// Row cache capacity in bytes (`--row-cache-mb`; 0: off).
    pub row_cache_bytes: u64,
    /// Whether hints are written.
    pub hinted_handoff: bool,
    /// Hints older than this are dropped.
    pub max_hint_window: Duration,
    /// Hints kept per target.
    pub max_hints_per_target: u64,
    /// Replay throttle, bytes/s.
    pub hint_replay_bytes_per_sec: u64,
    /// Streaming throttle of the receiving side, bytes/s.
    pub stream_bytes_per_sec: u64,
    /// Automatic cleanup after a ring change (`None`: off).
    pub cleanup_grace: Option<Duration>,
}

fn read_secret_file(name: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Value {
        name,
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    Ok(text.trim().to_string())
}

/// `--max-key-bytes`, or its default: room for a few siblings of the
/// largest value (4 of them), capped at 256 MiB because every internode
/// frame may be that large and a node must hold whole frames in memory.
/// Below `--max-value-bytes` a value the node accepts could never be
/// stored, so that is refused.
fn max_key_bytes(given: Option<u64>, max_value_bytes: u64) -> Result<u64, ConfigError> {
    let Some(v) = given else {
        return Ok((4 * max_value_bytes).min(256 << 20).max(max_value_bytes));
    };
    if v < max_value_bytes {
        return Err(ConfigError::Value {
            name: "--max-key-bytes",
            reason: format!(
                "{v} is below --max-value-bytes ({max_value_bytes}): a value of the largest size could never be stored"
            ),
        });
    }
    in_range("--max-key-bytes", v, 1, 1 << 30)
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::Value {
            name,
            reason: format!("{v} is outside {lo}..={hi}"),
        });
    }
    Ok(v)
}

/// Refuses addresses other machines can reach without the lock that goes
/// with them: a non-loopback `--listen` needs a cluster secret or internode
/// TLS (else any process that connects can join and be handed data), a
/// non-loopback
/// `--http` needs bearer tokens (else anyone reads and writes every key).
/// `--insecure` skips the check.
fn no_open_door(
    http: SocketAddr,
    listen: SocketAddr,
    secret: bool,
    tokens: bool,
) -> Result<(), ConfigError> {
    // `secret`: a cluster secret or internode TLS, either of which keeps
    // strangers from joining.
    if !listen.ip().is_loopback() && !secret {
        return Err(ConfigError::Value {
            name: "--listen",
            reason: format!(
                "{listen} is reachable from other machines but neither a cluster secret nor internode TLS is set: add --cluster-secret-file FILE (the same secret on every node) or --internode-ca/--internode-cert/--internode-key, or --insecure to run the internode port open"
            ),
        });
    }
    if !http.ip().is_loopback() && !tokens {
        return Err(ConfigError::Value {
            name: "--http",
            reason: format!(
                "{http} is reachable from other machines but no bearer token is set: add --client-tokens-file FILE and --admin-token-file FILE, or --insecure to serve the API open"
            ),
        });
    }
    Ok(())
}

/// Node ids travel in gossip, URLs and logs: keep them simple.
pub fn validate_node_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Value {
            name: "--id",
            reason: format!("{id:?} must be 1 to 64 characters of [A-Za-z0-9._-]"),
        })
    }
}

/// A tombstone may be purged once its grace has passed; a hint for a
/// replica that missed the delete's key may be replayed up to the hint
/// window after it was written. A hint replayed after the tombstone it
/// predates was purged brings the deleted value back, so the grace must be
/// at least the hint window (as Cassandra requires of `gc_grace_seconds`
/// and `max_hint_window`).
pub fn check_tombstone_grace(grace: Duration, hint_window: Duration) -> Result<(), ConfigError> {
    if grace < hint_window {
        return Err(ConfigError::Value {
            name: "--tombstone-grace-secs",
            reason: format!(
                "{} s is shorter than --max-hint-window-secs ({} s): a hint replayed after its key's tombstone was purged would bring a deleted value back; raise the grace or lower the hint window",
                grace.as_secs(),
                hint_window.as_secs()
            ),
        });
    }
    Ok(())
}

impl Config {
    /// Parses the process's command line and environment, reads the file
    /// if one is named, and resolves defaults.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_args(Args::parse())
    }

    /// Merges `cli` (flags and variables, as clap parsed them) over the
    /// file it names.
    pub fn from_args(cli: Args) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                toml::from_str::<Args>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    reason: e.message().to_string(),
                })?
            }
            None => Args::default(),
        };
        Self::resolve(cli, file)
    }

    /// Applies precedence (`cli` over `file`) and the built-in defaults.
    pub fn resolve(cli: Args, file: Args) -> Result<Config, ConfigError> {
        macro_rules! pick {
            ($f:ident) => {
                cli.$f.or(file.$f)
            };
        }
        let id = pick!(id);
        if let Some(id) = &id {
            validate_node_id(id)?;
        }
        let default_http: SocketAddr = ([127, 0, 0, 1], 8001).into();
        let default_listen: SocketAddr = ([127, 0, 0, 1], 7001).into();
        let sync = pick!(sync).unwrap_or(Sync::Always);
        let interval = in_range(
            "--sync-interval-ms",
            pick!(sync_interval_ms).unwrap_or(1000),
            1,
            60_000,
        )?;
        let max_value_bytes = in_range(
            "--max-value-bytes",
            pick!(max_value_bytes).unwrap_or(1 << 20),
            1,
            256 << 20,
        )?;
        let max_key_bytes = max_key_bytes(pick!(max_key_bytes), max_value_bytes)?;
        let cluster_name = pick!(cluster_name).unwrap_or_else(|| "quorumkv".to_string());
        if cluster_name.is_empty() || cluster_name.len() > 128 {
            return Err(ConfigError::Value {
                name: "--cluster-name",
                reason: "must be 1 to 128 bytes".into(),
            });
        }
        let cluster_secret = match pick!(cluster_secret_file) {
            Some(p) => {
                let s = read_secret_file("--cluster-secret-file", &p)?;
                if s.is_empty() {
                    return Err(ConfigError::Value {
                        name: "--cluster-secret-file",
                        reason: format!("{} is empty", p.display()),
                    });
                }
                Some(s)
            }
            None => None,
        };
        let client_tokens = match pick!(client_tokens_file) {
            Some(p) => {
                let tokens: Vec<String> = read_secret_file("--client-tokens-file", &p)?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect();
                // An empty file would otherwise leave the API open while
                // the operator believes it is closed.
                if tokens.is_empty() {
                    return Err(ConfigError::Value {
                        name: "--client-tokens-file",
                        reason: format!("{} holds no token (only blank or # lines)", p.display()),
                    });
                }
                tokens
            }
            None => Vec::new(),
        };
        let admin_token = match pick!(admin_token_file) {
            Some(p) => {
                let t = read_secret_file("--admin-token-file", &p)?;
                if t.is_empty() {
                    return Err(ConfigError::Value {
                        name: "--admin-token-file",
                        reason: format!("{} is empty", p.display()),
                    });
                }
                Some(t)
            }
            None => None,
        };
        let rack = pick!(rack);
        if let Some(r) = &rack
            && (r.is_empty() || r.len() > 64)
        {
            return Err(ConfigError::Value {
                name: "--rack",
                reason: "must be 1 to 64 bytes".into(),
            });
        }
        let http = pick!(http).unwrap_or(default_http);
        let listen = pick!(listen).unwrap_or(default_listen);
        let internode_tls = match (
            pick!(internode_ca),
            pick!(internode_cert),
            pick!(internode_key),
        ) {
            (Some(ca), Some(cert), Some(key)) => Some((ca, cert, key)),
            (None, None, None) => None,
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    ("--internode-ca", ca.is_none()),
                    ("--internode-cert", cert.is_none()),
                    ("--internode-key", key.is_none()),
                ]
                .into_iter()
                .filter(|(_, m)| *m)
                .map(|(f, _)| f)
                .collect();
                return Err(ConfigError::Value {
                    name: "--internode-ca",
                    reason: format!(
                        "internode TLS needs --internode-ca, --internode-cert and --internode-key together; missing {}",
                        missing.join(", ")
                    ),
                });
            }
        };
        if !pick!(insecure).unwrap_or(false) {
            no_open_door(
                http,
                listen,
                cluster_secret.is_some() || internode_tls.is_some(),
                !client_tokens.is_empty() || admin_token.is_some(),
            )?;
        }
        let config = Config {
            id,
            http,
            listen,
            seeds: pick!(seeds).unwrap_or_default(),
            data_dir: pick!(data_dir).unwrap_or_else(|| PathBuf::from("./data")),
            cluster_name,
            cluster_secret,
            vnodes: in_range("--vnodes", pick!(vnodes).unwrap_or(16), 1, 1024)?,
            token_allocation: pick!(token_allocation).unwrap_or(TokenAllocation::Balanced),
            rack,
            default_n: in_range("--default-n", pick!(default_n).unwrap_or(3), 1, 16)?,
            sync: match sync {
                Sync::Always => SyncMode::Always,
                Sync::Periodic => SyncMode::Periodic(Duration::from_millis(interval)),
            },
            max_value_bytes,
            max_key_bytes,
            join: pick!(join).unwrap_or(Join::Auto),
            fault_injection: pick!(fault_injection).unwrap_or(false),
            rejoin_after_grace: pick!(rejoin_after_grace).unwrap_or(false),
            max_clock_offset_ms: in_range(
                "--max-clock-offset-ms",
                pick!(max_clock_offset_ms).unwrap_or(DEFAULT_MAX_CLOCK_OFFSET_MS),
                1,
                86_400_000,
            )?,
            timeout: Duration::from_millis(in_range(
                "--timeout-ms",
                pick!(timeout_ms).unwrap_or(2000),
                1,
                600_000,
            )?),
            max_inflight: in_range(
                "--max-inflight",
                pick!(max_inflight).unwrap_or(4096),
                1,
                1 << 20,
            )?,
            max_connections: in_range(
                "--max-connections",
                pick!(max_connections).unwrap_or(4096),
                1,
                1 << 20,
            )?,
            http_header_timeout: Duration::from_millis(in_range(
                "--http-header-timeout-ms",
                pick!(http_header_timeout_ms).unwrap_or(30_000),
                100,
                600_000,
            )?),
            http_body_timeout: Duration::from_millis(in_range(
                "--http-body-timeout-ms",
                pick!(http_body_timeout_ms).unwrap_or(60_000),
                100,
                3_600_000,
            )?),
            tls: match (pick!(tls_cert), pick!(tls_key)) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::Value {
                        name: "--tls-cert",
                        reason: "needs --tls-key, the certificate's private key".into(),
                    });
                }
                (None, Some(_)) => {
                    return Err(ConfigError::Value {
                        name: "--tls-key",
                        reason: "needs --tls-cert, the certificate it is the key of".into(),
                    });
                }
            },
            internode_tls,
            ui_reports_dir: match pick!(ui_reports_dir) {
                // Checked at start: a console that silently shows no
                // reports for a mistyped path helps no one.
                Some(dir) if !dir.is_dir() => {
                    return Err(ConfigError::Value {
                        name: "--ui-reports-dir",
                        reason: format!("{} is not a directory", dir.display()),
                    });
                }
                other => other,
            },
            engine: pick!(engine).unwrap_or(Engine::Fjall),
            client_tokens,
            admin_token,
            log_format: pick!(log_format).unwrap_or(LogFormat::Text),
            gossip_interval: Duration::from_millis(in_range(
                "--gossip-interval-ms",
                pick!(gossip_interval_ms).unwrap_or(1000),
                10,
                60_000,
            )?),
            phi_threshold: {
                let phi = pick!(phi_threshold).unwrap_or(8.0);
                if !(phi > 0.0 && phi <= 64.0) {
                    return Err(ConfigError::Value {
                        name: "--phi-threshold",
                        reason: format!("{phi} is outside (0, 64]"),
                    });
                }
                phi
            },
            anti_entropy_interval: match in_range(
                "--anti-entropy-interval-secs",
                pick!(anti_entropy_interval_secs).unwrap_or(3600),
                0,
                30 * 24 * 3600,
            )? {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            tombstone_grace: Duration::from_secs(in_range(
                "--tombstone-grace-secs",
                pick!(tombstone_grace_secs).unwrap_or(10 * 24 * 3600),
                0,
                10 * 365 * 24 * 3600,
            )?),
            repair_bytes_per_sec: in_range(
                "--repair-bytes-per-sec",
                pick!(repair_bytes_per_sec).unwrap_or(20 << 20),
                1024,
                1 << 40,
            )?,
            row_cache_bytes: in_range(
                "--row-cache-mb",
                pick!(row_cache_mb).unwrap_or(DEFAULT_ROW_CACHE_BYTES >> 20),
                0,
                1 << 20,
            )? << 20,
            read_digests: pick!(read_digests).unwrap_or(Switch::Off) == Switch::On,
            hinted_handoff: pick!(hinted_handoff).unwrap_or(Switch::On) == Switch::On,
            max_hint_window: Duration::from_secs(in_range(
                "--max-hint-window-secs",
                pick!(max_hint_window_secs).unwrap_or(3 * 3600),
                1,
                7 * 24 * 3600,
            )?),
            max_hints_per_target: in_range(
                "--max-hints-per-target",
                pick!(max_hints_per_target).unwrap_or(100_000),
                1,
                1 << 40,
            )?,
            hint_replay_bytes_per_sec: in_range(
                "--hint-replay-bytes-per-sec",
                pick!(hint_replay_bytes_per_sec).unwrap_or(4 << 20),
                1024,
                1 << 40,
            )?,
            stream_bytes_per_sec: in_range(
                "--stream-bytes-per-sec",
                pick!(stream_bytes_per_sec).unwrap_or(50 << 20),
                1024,
                1 << 40,
            )?,
            cleanup_grace: match in_range(
                "--cleanup-grace-secs",
                pick!(cleanup_grace_secs).unwrap_or(3600),
                0,
                30 * 24 * 3600,
            )? {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
        };
        check_tombstone_grace(config.tombstone_grace, config.max_hint_window)?;
        Ok(config)
    }

    /// Whether any bearer token is configured (then every route but
    /// `/health` needs one).
    pub fn auth_enabled(&self) -> bool {
        !self.client_tokens.is_empty() || self.admin_token.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut v = vec!["qkvd"];
        v.extend_from_slice(args);
        Args::try_parse_from(v).expect("test args parse")
    }

    #[test]
    fn a_tombstone_grace_shorter_than_the_hint_window_is_refused() {
        let refused = Config::from_args(parse(&[
            "--tombstone-grace-secs",
            "60",
            "--max-hint-window-secs",
            "61",
        ]))
        .expect_err("grace < hint window");
        assert!(
            matches!(&refused, ConfigError::Value { name: "--tombstone-grace-secs", reason } if reason.contains("--max-hint-window-secs")),
            "{refused}"
        );
        // The default hint window (3 h) with a short grace: refused too.
        assert!(Config::from_args(parse(&["--tombstone-grace-secs", "2"])).is_err());
        for (grace, window) in [("60", "60"), ("61", "60"), ("2", "1")] {
            let c = Config::from_args(parse(&[
                "--tombstone-grace-secs",
                grace,
                "--max-hint-window-secs",
                window,
            ]))
            .expect("grace >= hint window");
            assert!(c.tombstone_grace >= c.max_hint_window);
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let c = Config::resolve(Args::default(), Args::default()).expect("defaults are valid");
        assert_eq!(c.http, "127.0.0.1:8001".parse().expect("addr"));
        assert_eq!(c.vnodes, 16);
        assert_eq!(c.default_n, 3);
        assert_eq!(c.sync, SyncMode::Always);
        assert_eq!(c.max_value_bytes, 1 << 20);
        assert_eq!(c.max_key_bytes, 4 << 20);
        assert_eq!(c.join, Join::Auto);
        assert_eq!(c.token_allocation, TokenAllocation::Balanced);
        assert_eq!(c.max_connections, 4096);
        assert_eq!(c.http_header_timeout, Duration::from_secs(30));
        assert_eq!(c.http_body_timeout, Duration::from_secs(60));
    }

    #[test]
    fn flag_beats_file_and_file_beats_default() {
        let file: Args = toml::from_str(
            "vnodes = 32\ndefault_n = 2\nsync = \"periodic\"\nseeds = [\"127.0.0.1:7002\"]\n",
        )
        .expect("toml parses");
        let c = Config::resolve(parse(&["--vnodes", "8"]), file).expect("valid");
        assert_eq!(c.vnodes, 8);
        assert_eq!(c.default_n, 2);
        assert!(matches!(c.sync, SyncMode::Periodic(_)));
        assert_eq!(c.seeds.len(), 1);
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_flag_name() {
        let err = Config::resolve(parse(&["--default-n", "0"]), Args::default())
            .expect_err("n=0 is invalid");
        assert!(err.to_string().contains("--default-n"), "{err}");
        let err = Config::resolve(parse(&["--vnodes", "5000"]), Args::default())
            .expect_err("too many vnodes");
        assert!(err.to_string().contains("--vnodes"), "{err}");
    }

    #[test]
    fn the_key_bound_follows_the_value_limit_and_never_falls_below_it() {
        let key = |args: &[&str]| Config::resolve(parse(args), Args::default());
        let c = key(&["--max-value-bytes", "8388608"]).expect("valid");
        assert_eq!(c.max_key_bytes, 32 << 20);
        let c = key(&["--max-value-bytes", "268435456"]).expect("valid");
        assert_eq!(
            c.max_key_bytes,
            256 << 20,
            "capped, but not below the value"
        );
        let c = key(&["--max-value-bytes", "100", "--max-key-bytes", "100"]).expect("valid");
        assert_eq!(c.max_key_bytes, 100);
        let err = key(&["--max-value-bytes", "200", "--max-key-bytes", "100"])
            .expect_err("below the value limit");
        let text = err.to_string();
        assert!(
            text.contains("--max-key-bytes") && text.contains("--max-value-bytes"),
            "{text}"
        );
        let err = key(&["--max-key-bytes", "2147483648"]).expect_err("too large");
        assert!(err.to_string().contains("--max-key-bytes"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<Args>("vnode = 3").is_err());
    }

    #[test]
    fn a_reachable_address_without_its_lock_is_refused_unless_insecure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        let tokens = dir.path().join("tokens");
        std::fs::write(&secret, "s3cret\n").expect("write");
        std::fs::write(&tokens, "# clients\nt1\n").expect("write");
        let (secret, tokens) = (
            secret.to_str().expect("utf8"),
            tokens.to_str().expect("utf8"),
        );
        let try_args = |args: &[&str]| Config::resolve(parse(args), Args::default());

        let err = try_args(&["--listen", "0.0.0.0:7001"]).expect_err("open internode port");
        assert!(err.to_string().contains("--cluster-secret-file"), "{err}");
        let err = try_args(&["--http", "10.1.2.3:8001"]).expect_err("open API");
        assert!(err.to_string().contains("--client-tokens-file"), "{err}");
        let err = try_args(&["--http", "[::]:8001", "--cluster-secret-file", secret])
            .expect_err("a secret does not lock the API");
        assert!(err.to_string().contains("--http"), "{err}");

        for ok in [
            &["--listen", "0.0.0.0:7001", "--cluster-secret-file", secret][..],
            &[
                "--listen",
                "0.0.0.0:7001",
                "--internode-ca",
                "ca.pem",
                "--internode-cert",
                "n1.pem",
                "--internode-key",
                "n1.key",
            ],
            &["--http", "0.0.0.0:8001", "--client-tokens-file", tokens],
            &[
                "--listen",
                "0.0.0.0:7001",
                "--http",
                "0.0.0.0:8001",
                "--insecure",
            ],
            &["--listen", "[::1]:7001", "--http", "127.0.0.2:8001"],
        ] {
            try_args(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn token_files_without_a_token_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        let comments = dir.path().join("comments");
        std::fs::write(&empty, "\n  \n").expect("write");
        std::fs::write(&comments, "# one day\n\n# not yet\n").expect("write");
        for (flag, file) in [
            ("--client-tokens-file", &empty),
            ("--client-tokens-file", &comments),
            ("--admin-token-file", &empty),
        ] {
            let err = Config::resolve(
                parse(&[flag, file.to_str().expect("utf8")]),
                Args::default(),
            )
            .expect_err("no token");
            assert!(err.to_string().contains(flag), "{err}");
        }
    }

    #[test]
    fn a_tls_certificate_needs_its_key_and_the_reverse() {
        let c = Config::resolve(
            parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]),
            Args::default(),
        )
        .expect("both");
        assert!(c.tls.is_some());
        for (flag, other) in [("--tls-cert", "--tls-key"), ("--tls-key", "--tls-cert")] {
            let err = Config::resolve(parse(&[flag, "x.pem"]), Args::default())
                .expect_err("one without the other");
            assert!(err.to_string().contains(other), "{err}");
        }
    }

    #[test]
    fn internode_tls_needs_all_three_files() {
        let c = Config::resolve(
            parse(&[
                "--internode-ca",
                "ca.pem",
                "--internode-cert",
                "c.pem",
                "--internode-key",
                "k.pem",
            ]),
            Args::default(),
        )
        .expect("all three");
        assert!(c.internode_tls.is_some());
        let err = Config::resolve(
            parse(&["--internode-ca", "ca.pem", "--internode-cert", "c.pem"]),
            Args::default(),
        )
        .expect_err("no key");
        assert!(err.to_string().contains("missing --internode-key"), "{err}");
    }

    #[test]
    fn bad_node_ids_are_refused() {
        assert!(validate_node_id("n1").is_ok());
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id("a b").is_err());
        assert!(validate_node_id(&"x".repeat(65)).is_err());
    }
}
