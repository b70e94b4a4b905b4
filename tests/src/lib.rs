//! The harness shared by quorumkv's cluster tests: it starts real `qkvd`
//! processes on loopback ports with data in temporary directories, waits
//! for them by polling `/health`, and kills them when dropped — through
//! the supervisor `qkv local` uses too (`quorumkv_client::local`); this
//! layer adds fresh ports, temporary directories and test-friendly names.
//!
//! The `qkvd` binary is the one cargo built for this test run (it sits in
//! the target directory next to the test executable's `deps/`), or
//! `$QKVD_BIN` when set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use quorumkv_client::local::{
    self, Launch, NodeArgs, NodeProcess, Ownership, ProcState, StopOutcome,
};

pub mod cluster_ops;
pub mod http;
pub mod openapi;

/// Finds the `qkvd` binary built alongside the tests (or `$QKVD_BIN`).
pub fn qkvd_bin() -> Result<PathBuf> {
    workspace_bin("qkvd", "QKVD_BIN")
}

/// Finds the `qkv` CLI built alongside the tests (or `$QKV_BIN`).
pub fn qkv_bin() -> Result<PathBuf> {
    workspace_bin("qkv", "QKV_BIN")
}

/// A binary of this workspace: `$env` when set, else the one cargo built
/// for this test run, in the target directory above the test executable
/// (`target/<profile>/deps/<test>` -> `target/<profile>/<name>`).
fn workspace_bin(name: &str, env: &str) -> Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    bail!(
        "{name} binary not found next to {}; run the tests with `cargo test --workspace` or set {env}",
        exe.display()
    )
}

pub use quorumkv_client::local::free_port;

/// Runs the `qkv` CLI with `args` and waits for it, with `QKV_NODE`,
/// `QKV_TOKEN` and `QKV_CA_CERT` removed from its environment so that only
/// `args` decide where it goes and what it trusts.
pub fn run_qkv(args: &[&str]) -> Result<std::process::Output> {
    std::process::Command::new(qkv_bin()?)
        .args(args)
        .env_remove("QKV_NODE")
        .env_remove("QKV_TOKEN")
        .env_remove("QKV_CA_CERT")
        .output()
        .context("running qkv")
}

/// Bytes (a process's stdout or stderr) as text, lossily.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `n` consecutive loopback ports that were free a moment ago; the first.
pub fn consecutive_ports(n: u16) -> Result<u16> {
    for _ in 0..200 {
        let first = free_port()?;
        if (1..n).all(|i| free_port().ok() == first.checked_add(i)) {
            return Ok(first);
        }
    }
    bail!("no {n} consecutive free ports")
}

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `--id`.
    pub id: String,
    /// Extra flags, e.g. `["--sync", "always"]`.
    pub args: Vec<String>,
}

impl NodeSpec {
    /// A node named `id` with no extra flags.
    pub fn new(id: &str) -> NodeSpec {
        NodeSpec {
            id: id.to_string(),
            args: Vec::new(),
        }
    }

    /// Adds flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> NodeSpec {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// One running (or stopped) `qkvd` process: the test's view of a
/// [`NodeProcess`], which kills it when dropped.
pub struct NodeProc {
    /// The spec it was started with.
    pub spec: NodeSpec,
    /// HTTP address.
    pub http: SocketAddr,
    /// Gossip address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    seeds: Vec<SocketAddr>,
    process: NodeProcess,
}

impl NodeProc {
    /// Base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Starts a node with fresh ports under `dir`.
    pub fn start(dir: &Path, spec: NodeSpec, seeds: Vec<SocketAddr>) -> Result<NodeProc> {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let data_dir = dir.join(&spec.id);
        let log = dir.join(format!("{}.log", spec.id));
        let mut node = NodeProc {
            spec,
            http,
            listen,
            data_dir,
            log,
            seeds,
            // The launch is set from the fields at every (re)start.
            process: NodeProcess::new(Launch::default(), Ownership::Owned),
        };
        node.restart()?;
        Ok(node)
    }

    fn node_args(&self) -> NodeArgs {
        NodeArgs {
            id: self.spec.id.clone(),
            http: self.http.to_string(),
            listen: self.listen.to_string(),
            seeds: self.seeds.iter().map(SocketAddr::to_string).collect(),
            data_dir: self.data_dir.clone(),
            extra: self.spec.args.clone(),
        }
    }

    /// The full command line (without the binary).
    pub fn command_args(&self) -> Vec<String> {
        self.node_args().to_args()
    }

    /// (Re)starts the process with the same ports and data dir (and the
    /// spec as it is now), and waits until `/health` answers.
    pub fn restart(&mut self) -> Result<()> {
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        self.process.launch = Launch::new(&qkvd_bin()?, &self.node_args(), self.log.clone())
            .env("RUST_LOG", &rust_log);
        let started = self.process.start(Duration::from_secs(30));
        started.map(drop).map_err(|e| self.with_log(e))
    }

    /// Polls `/health` until it answers 200, the process exits, or the
    /// deadline passes.
    pub fn wait_healthy(&mut self, within: Duration) -> Result<()> {
        let healthy = self.process.wait_healthy(within);
        healthy.map_err(|e| self.with_log(e))
    }

    /// A failure to come up, with the log tail that says why.
    fn with_log(&self, e: local::Error) -> anyhow::Error {
        match e {
            local::Error::Exited { .. } | local::Error::NotHealthy { .. } => {
                anyhow!("{e}; log:\n{}", self.log_tail())
            }
            e => e.into(),
        }
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.process.state() != ProcState::Stopped
    }

    /// The OS pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Sends a signal (e.g. `libc::SIGKILL`, `libc::SIGSTOP`).
    pub fn signal(&self, sig: i32) -> Result<()> {
        Ok(self.process.signal(sig)?)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> Result<()> {
        Ok(self.process.kill9()?)
    }

    /// SIGTERM, then wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> Result<Option<i32>> {
        match self.process.stop(within) {
            StopOutcome::Exited(code) => Ok(code),
            StopOutcome::NotRunning | StopOutcome::Gone => Ok(None),
            StopOutcome::Killed => bail!(
                "qkvd {} did not exit within {within:?} of SIGTERM",
                self.spec.id
            ),
        }
    }

    /// The last lines of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        local::log_tail(&self.log, 30)
    }

    /// The whole log so far (empty if unreadable).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A set of nodes sharing one temporary directory.
pub struct Cluster {
    /// The nodes, in start order.
    pub nodes: Vec<NodeProc>,
    /// Kept so the directory lives as long as the cluster.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts one node per spec; the first node's gossip address seeds the
    /// others.
    pub fn start(specs: Vec<NodeSpec>) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("qkv-test-")
            .tempdir()
            .context("creating a temp dir")?;
        let mut nodes: Vec<NodeProc> = Vec::new();
        for spec in specs {
            let seeds = nodes.first().map(|n| vec![n.listen]).unwrap_or_default();
            nodes.push(NodeProc::start(dir.path(), spec, seeds)?);
        }
        Ok(Cluster { nodes, dir })
    }

    /// A single node with extra flags.
    pub fn single(args: &[&str]) -> Result<Cluster> {
        Self::start(vec![NodeSpec::new("n1").args(args.iter().copied())])
    }

    /// The first node.
    pub fn node(&self) -> &NodeProc {
        &self.nodes[0]
    }

    /// Starts one more node in the cluster's directory with the given
    /// seeds (e.g. a node of another cluster pointed at this one's seed),
    /// and returns it.
    pub fn add(&mut self, spec: NodeSpec, seeds: Vec<SocketAddr>) -> Result<&mut NodeProc> {
        let node = NodeProc::start(self.dir.path(), spec, seeds)?;
        self.nodes.push(node);
        let last = self.nodes.len() - 1;
        Ok(&mut self.nodes[last])
    }
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a client token file (`c-token`) and an admin token file
/// (`a-token`) under `dir`; returns their paths, for
/// `--client-tokens-file` and `--admin-token-file`.
pub fn token_files(dir: &Path) -> Result<(String, String)> {
    let client = dir.join("client");
    let admin = dir.join("admin");
    std::fs::write(&client, "c-token\n")?;
    std::fs::write(&admin, "a-token\n")?;
    Ok((client.display().to_string(), admin.display().to_string()))
}
