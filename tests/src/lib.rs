//! The harness shared by quorumkv's cluster tests: it starts real `qkvd`
//! processes on loopback ports with data in temporary directories, waits
//! for them by polling `/health`, and kills them when dropped.
//!
//! The `qkvd` binary is the one cargo built for this test run (it sits in
//! the target directory next to the test executable's `deps/`), or
//! `$QKVD_BIN` when set.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

pub mod cluster_ops;
pub mod http;

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

/// First port of the range tests give to nodes: below Linux's ephemeral
/// range (32768-60999), so that no outgoing connection of any client can
/// be holding a port between the moment we pick it and the moment the
/// node binds it (a node that lost that race would fail to start while
/// `/health` on its port answered for another test's node).
const PORT_BASE: u32 = 20_000;
const PORT_SPAN: u32 = 12_000;
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// A loopback port for a node: never handed out twice by this process,
/// spread by pid across processes, and bindable a moment ago.
pub fn free_port() -> Result<u16> {
    let offset = (std::process::id() % 600) * 20;
    for _ in 0..PORT_SPAN {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = (PORT_BASE + (offset + n) % PORT_SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!(
        "no free loopback port in {PORT_BASE}..{}",
        PORT_BASE + PORT_SPAN
    )
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

/// One running (or stopped) `qkvd` process.
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
    child: Option<Child>,
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
            child: None,
        };
        node.restart()?;
        Ok(node)
    }

    /// The full command line (without the binary).
    pub fn command_args(&self) -> Vec<String> {
        let mut args = vec![
            "--id".to_string(),
            self.spec.id.clone(),
            "--http".into(),
            self.http.to_string(),
            "--listen".into(),
            self.listen.to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
        ];
        if !self.seeds.is_empty() {
            args.push("--seeds".into());
            args.push(
                self.seeds
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        args.extend(self.spec.args.iter().cloned());
        args
    }

    /// (Re)starts the process with the same ports and data dir, and waits
    /// until `/health` answers.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("node {} is already running", self.spec.id);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(qkvd_bin()?)
            .args(self.command_args())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning qkvd")?;
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(30))
    }

    /// Polls `/health` until it answers 200, the process exits, or the
    /// deadline passes.
    pub fn wait_healthy(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "qkvd {} exited with {status} before serving; log:\n{}",
                    self.spec.id,
                    self.log_tail()
                );
            }
            if health_ok(self.http) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "qkvd {} did not answer /health within {within:?}; log:\n{}",
                    self.spec.id,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The OS pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal (e.g. `libc::SIGKILL`, `libc::SIGSTOP`).
    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = self.pid().context("node is not running")?;
        // SAFETY: kill(2) with a pid we spawned and still own (not reaped).
        let rc = unsafe { libc::kill(pid as i32, sig) };
        if rc != 0 {
            bail!(
                "kill({pid}, {sig}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> Result<Option<i32>> {
        let Some(mut c) = self.child.take() else {
            return Ok(None);
        };
        // SAFETY: as in `signal`.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                c.kill()?;
                c.wait()?;
                bail!(
                    "qkvd {} did not exit within {within:?} of SIGTERM",
                    self.spec.id
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn health_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
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

impl NodeProc {
    /// The whole log so far (empty if unreadable).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
