//! The `qkv` commands: argument definitions and dispatch. Each command group
//! has its own file, as mini-redis does with `src/cmd/`.

mod bucket;
mod cleanup;
mod exp;
mod exp_faults;
mod faults;
mod kv;
mod local;
pub mod output;
mod repair;
mod ring;
mod status;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use quorumkv_client::Client;

pub use output::print_json;

/// A request or command failed.
pub const EXIT_FAILED: u8 = 1;
/// `qkv get` found siblings: printed, left for the caller to resolve.
pub const EXIT_SIBLINGS: u8 = 3;

/// qkv — the quorumkv command-line tool.
///
/// Values print raw, everything else as a readable table (`--json` for
/// machine-readable output). Exit codes: 0 ok, 1 request failed (one line
/// `Error: ...` on stderr), 2 bad usage, 3 `get` found siblings.
#[derive(Debug, Parser)]
#[command(name = "qkv", version, args_override_self = true)]
pub struct Cli {
    /// A node's HTTP base URL. Repeat (or comma-separate) to give fallbacks:
    /// requests go to the first node, then the next one only if the first
    /// cannot be reached.
    #[arg(
        long = "node",
        id = "node",
        value_name = "URL",
        global = true,
        env = "QKV_NODE",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8001"
    )]
    pub nodes: Vec<String>,

    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,

    /// Bearer token for nodes started with client tokens.
    #[arg(long, global = true, env = "QKV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Client-side timeout of one HTTP request, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub client_timeout_ms: u64,

    /// PEM CA bundle to trust for https:// nodes, besides the system's
    /// roots (`qkv local up --tls` prints its own).
    #[arg(long, global = true, env = "QKV_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `qkv` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a key: the raw value on stdout; siblings as a table (exit 3).
    Get(kv::GetArgs),
    /// Write a key from an argument, a file or stdin; prints the new context.
    Put(kv::PutArgs),
    /// Delete a key (writes a tombstone).
    Delete(kv::DeleteArgs),
    /// Show or change a bucket's properties.
    #[command(subcommand)]
    Bucket(bucket::BucketCommand),
    /// The cluster's members as gossip sees them.
    Status,
    /// Ring ownership, growth simulation, rebalance plans and failure what-ifs.
    #[command(subcommand)]
    Ring(ring::RingCommand),
    /// Anti-entropy: each --node compares Merkle trees with the other
    /// replicas of its ranges and exchanges what differs (every --node is
    /// repaired in turn, not used as a fallback).
    Repair(repair::RepairArgs),
    /// Each --node (or every up member with --all) drops the data of keys
    /// it no longer replicates, after ranges moved away from it.
    Cleanup(cleanup::CleanupArgs),
    /// Start, stop, inspect and fault a cluster of real qkvd processes on
    /// loopback.
    #[command(subcommand)]
    Local(local::LocalCommand),
    /// Mixed PUT/GET load over HTTP, optionally against a built-in ceiling.
    Bench(crate::bench::BenchArgs),
    /// Experiments: predict staleness and latency with the PBS model, and
    /// check a recorded history.
    #[command(subcommand)]
    Exp(exp::ExpCommand),
    /// Inject faults into nodes started with --fault-injection: message
    /// delays per WARS leg, drops, duplicates, reordering, partitions,
    /// clock skew.
    #[command(subcommand)]
    Faults(faults::FaultsCommand),
}

/// Global options every command may need.
pub struct Globals {
    /// Node base URLs.
    pub nodes: Vec<String>,
    /// `--json`.
    pub json: bool,
    /// `--token`.
    pub token: Option<String>,
    /// `--client-timeout-ms`.
    pub client_timeout: Duration,
    /// The PEM bundle of `--ca-cert`, read once.
    pub ca_pem: Option<Vec<u8>>,
}

impl Globals {
    /// A library client for `--node`/`--token`/`--ca-cert`.
    pub fn client(&self) -> anyhow::Result<Client> {
        self.client_for(self.nodes.clone())
    }

    /// A library client for `nodes`, with `--token` and `--ca-cert`.
    pub fn client_for(&self, nodes: Vec<String>) -> anyhow::Result<Client> {
        let mut b = Client::builder(nodes).timeout(self.client_timeout);
        if let Some(t) = &self.token {
            b = b.bearer_token(t.clone());
        }
        if let Some(pem) = &self.ca_pem {
            b = b.ca_cert_pem(pem.clone());
        }
        Ok(b.build()?)
    }

    /// A plain reqwest client that trusts `--ca-cert` too.
    pub fn reqwest(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        let mut b = reqwest::Client::builder();
        if let Some(pem) = &self.ca_pem {
            for cert in quorumkv_client::ca_certificates(pem)? {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(b)
    }
}

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ca_pem = match &cli.ca_cert {
        Some(p) => Some(
            std::fs::read(p).with_context(|| format!("cannot read --ca-cert {}", p.display()))?,
        ),
        None => None,
    };
    let g = Globals {
        nodes: cli.nodes,
        json: cli.json,
        token: cli.token,
        client_timeout: Duration::from_millis(cli.client_timeout_ms),
        ca_pem,
    };
    if let Command::Bench(args) = cli.command {
        // The benchmark builds its own runtime (thread count, CPU pinning).
        return crate::bench::run(&g, args).map(|()| ExitCode::SUCCESS);
    }
    let command = match cli.command {
        // Pure computation: no runtime needed.
        Command::Exp(c) => return exp::run(&g, c),
        other => other,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match command {
            Command::Get(a) => kv::get(&g, a).await,
            Command::Put(a) => kv::put(&g, a).await,
            Command::Delete(a) => kv::delete(&g, a).await,
            Command::Bucket(c) => bucket::run(&g, c).await,
            Command::Status => status::run(&g).await,
            Command::Ring(c) => ring::run(&g, c).await,
            Command::Repair(a) => repair::run(&g, a).await,
            Command::Cleanup(a) => cleanup::run(&g, a).await,
            Command::Local(c) => local::run(&g, c).await,
            Command::Faults(c) => faults::run(&g, c).await,
            Command::Bench(_) | Command::Exp(_) => unreachable!("handled above"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn nodes_repeat_and_comma_separate() {
        let cli = Cli::parse_from(["qkv", "--node", "a:1,b:2", "--node", "c:3", "status"]);
        assert_eq!(cli.nodes, vec!["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn local_up_nodes_does_not_clash_with_the_global_node() {
        let cli = Cli::parse_from(["qkv", "--node", "a:1", "local", "up", "--nodes", "3"]);
        assert_eq!(cli.nodes, vec!["a:1"]);
        let Command::Local(local::LocalCommand::Up(up)) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(up.nodes, 3);
    }

    #[test]
    fn every_subcommand_parses_its_typical_line() {
        let lines: &[&[&str]] = &[
            &[
                "qkv",
                "get",
                "-b",
                "b1",
                "k",
                "--r",
                "quorum",
                "--timeout-ms",
                "5",
            ],
            &[
                "qkv",
                "put",
                "k",
                "v",
                "--w",
                "2",
                "--content-type",
                "text/plain",
            ],
            &["qkv", "put", "k", "--file", "/dev/null", "--context", "@f"],
            &["qkv", "delete", "k", "--context", "c", "--w", "all"],
            &["qkv", "bucket", "get", "b1"],
            &[
                "qkv",
                "bucket",
                "set",
                "b1",
                "--n",
                "3",
                "--conflicts",
                "lww",
                "--sloppy-quorum",
                "true",
                "--read-repair",
                "async",
            ],
            &["qkv", "--json", "status"],
            &["qkv", "--node", "a:1,b:2", "repair", "--timeout-secs", "60"],
            &["qkv", "local", "down", "--dir", "x"],
            &["qkv", "faults", "show", "--only", "n1"],
            &[
                "qkv",
                "faults",
                "set",
                "--w-delay",
                "const:5",
                "--drop",
                "0.1",
                "--to",
                "n2",
            ],
            &["qkv", "faults", "partition", "n1,n2|n3", "--one-way"],
            &["qkv", "faults", "heal"],
            &["qkv", "--json", "faults", "clear"],
            &[
                "qkv",
                "ring",
                "plan",
                "--add",
                "n4",
                "--plan-file",
                "p.json",
            ],
            &["qkv", "ring", "plan", "--clear"],
            &["qkv", "ring", "plan"],
            &["qkv", "ring", "apply", "--yes", "--poll-ms", "50"],
            &["qkv", "--json", "ring", "status", "--all"],
            &["qkv", "--node", "a:1,b:2", "cleanup"],
            &["qkv", "cleanup", "--all", "--timeout-secs", "5"],
            &[
                "qkv",
                "bench",
                "--ceiling",
                "--cpu",
                "0",
                "--duration",
                "1s",
                "--r",
                "one",
            ],
            &["qkv", "bench", "--serve-ceiling", "127.0.0.1:9000"],
            &[
                "qkv",
                "--json",
                "exp",
                "predict",
                "--n",
                "3",
                "--r",
                "1,2",
                "--w",
                "1",
                "--delays",
                "ymmr:alpha=3.5",
                "--w-delay",
                "exp:2",
                "--t",
                "0,1.5",
                "--model",
                "quorumkv",
                "--nodes",
                "5",
                "--out",
                "/tmp/x",
            ],
            &[
                "qkv",
                "exp",
                "check",
                "h.jsonl",
                "--json",
                "--fail-on-anomaly",
                "--n",
                "5",
            ],
        ];
        for line in lines {
            if let Err(e) = Cli::try_parse_from(*line) {
                panic!("{line:?}: {e}");
            }
        }
        assert!(Cli::try_parse_from(["qkv", "get", "k", "--r", "most"]).is_err());
        assert!(Cli::try_parse_from(["qkv", "ring", "plan", "--add", "a", "--clear"]).is_err());
        assert!(
            Cli::try_parse_from(["qkv", "ring", "plan", "--add", "a", "--remove", "b"]).is_err()
        );
        // A later flag overrides an earlier one (scripts append overrides).
        let cli = Cli::try_parse_from(["qkv", "bench", "--duration", "10s", "--duration", "30s"])
            .unwrap();
        let Command::Bench(b) = cli.command else {
            panic!()
        };
        assert_eq!(b.duration, Duration::from_secs(30));
        assert!(Cli::try_parse_from(["qkv", "put", "k", "v", "--file", "f"]).is_err());
    }
}
