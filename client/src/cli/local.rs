//! `qkv local up|down|status`: a cluster of real `qkvd` processes on
//! loopback, for trying quorumkv and for experiments.
//!
//! `up --nodes K` starts nodes `n1..nK` with HTTP on `127.0.0.1:(8001+i-1)`
//! and gossip/internode traffic on `127.0.0.1:(7001+i-1)`; every node lists
//! every listen address as a seed, data lives in `DIR/nI`, logs go to
//! `DIR/nI.log`, and `--default-n` is `min(3, K)`. Each process runs in its
//! own process group with stdin closed, so it outlives `qkv` and a Ctrl-C in
//! the terminal does not reach it. The pids and addresses are recorded in
//! `DIR/cluster.json`, which `down` and `status` read. `up` refuses to start
//! over a recorded cluster that still runs, waits until every node answers
//! `/health` (30 s) and then until every node sees every other one `up`
//! and `normal` (60 s: nodes join one at a time), and on failure prints the
//! log tail of the node that did not come up and stops everything it
//! started.
//!
//! Implementation caveats:
//! - A pid is only signalled if `/proc/PID/cmdline` still names `qkvd`, so a
//!   recycled pid is left alone (without `/proc` the check is skipped).
//! - Ports are checked free just before starting; another program can still
//!   take one in between.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use quorumkv_client::Client;
use serde::{Deserialize, Serialize};

use super::Globals;
use super::output::{print_json, table};

/// How long `up` waits for every node to answer `/health`.
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);
/// How long `up` then waits for every node to see every other one joined.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);
/// How long `down` waits after SIGTERM before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// The record of a running local cluster, inside `--dir`.
const CLUSTER_FILE: &str = "cluster.json";

/// `qkv local ...`.
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start K qkvd processes on loopback.
    Up(UpArgs),
    /// Stop the recorded processes (SIGTERM, then SIGKILL after 10 s).
    Down(DirArg),
    /// Show the recorded processes and whether they answer.
    Status(DirArg),
}

/// Arguments of `qkv local up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub nodes: u16,
    /// Directory for data, logs and cluster.json.
    #[arg(long, default_value = ".qkv")]
    pub dir: PathBuf,
    /// HTTP port of n1; node i uses this + i - 1.
    #[arg(long, default_value_t = 8001)]
    pub base_http_port: u16,
    /// Gossip/internode port of n1; node i uses this + i - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_listen_port: u16,
    /// Durability mode passed to every node (periodic or always).
    #[arg(long, value_parser = ["periodic", "always"])]
    pub sync: Option<String>,
    /// The qkvd binary (default: next to qkv, then on PATH).
    #[arg(long)]
    pub qkvd: Option<PathBuf>,
    /// Extra arguments for every qkvd, after `--`.
    #[arg(last = true)]
    pub qkvd_args: Vec<String>,
}

/// `--dir` for `down` and `status`.
#[derive(Debug, Args)]
pub struct DirArg {
    /// Directory holding cluster.json.
    #[arg(long, default_value = ".qkv")]
    pub dir: PathBuf,
}

/// One node to start: its identity, addresses, files and full argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// `n1`, `n2`, ...
    pub id: String,
    /// HTTP address, `127.0.0.1:port`.
    pub http: String,
    /// Gossip/internode address.
    pub listen: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// Arguments for qkvd (without the program name).
    pub args: Vec<String>,
}

/// Computes the K node commands of `up` (pure: no I/O).
pub fn node_specs(a: &UpArgs, dir: &Path) -> anyhow::Result<Vec<NodeSpec>> {
    let k = a.nodes;
    let port = |base: u16, i: u16| {
        base.checked_add(i)
            .with_context(|| format!("port {base} + {i} is beyond 65535"))
    };
    let listens: Vec<String> = (0..k)
        .map(|i| Ok(format!("127.0.0.1:{}", port(a.base_listen_port, i)?)))
        .collect::<anyhow::Result<_>>()?;
    let seeds = listens.join(",");
    let default_n = k.min(3);
    (0..k)
        .map(|i| {
            let id = format!("n{}", i + 1);
            let http = format!("127.0.0.1:{}", port(a.base_http_port, i)?);
            let listen = listens[usize::from(i)].clone();
            let data_dir = dir.join(&id);
            let log = dir.join(format!("{id}.log"));
            let mut args: Vec<String> = [
                "--id",
                &id,
                "--http",
                &http,
                "--listen",
                &listen,
                "--seeds",
                &seeds,
                "--data-dir",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(data_dir.display().to_string());
            args.extend(["--default-n".to_string(), default_n.to_string()]);
            if let Some(sync) = &a.sync {
                args.extend(["--sync".to_string(), sync.clone()]);
            }
            args.extend(a.qkvd_args.iter().cloned());
            Ok(NodeSpec {
                id,
                http,
                listen,
                data_dir,
                log,
                args,
            })
        })
        .collect()
}

/// `DIR/cluster.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The binary that was started.
    pub qkvd: PathBuf,
    /// Seconds since the Unix epoch.
    pub started_at_unix: u64,
    /// One entry per node.
    pub nodes: Vec<NodeRecord>,
}

/// One started node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub id: String,
    /// Process id.
    pub pid: u32,
    /// HTTP address.
    pub http: String,
    /// Gossip/internode address.
    pub listen: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log file.
    pub log: PathBuf,
}

/// Runs a `local` subcommand.
pub async fn run(g: &Globals, cmd: LocalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LocalCommand::Up(a) => up(g, a).await,
        LocalCommand::Down(d) => down(g, &d.dir).await,
        LocalCommand::Status(d) => status(g, &d.dir).await,
    }
}

fn read_record(dir: &Path) -> anyhow::Result<Option<ClusterRecord>> {
    let path = dir.join(CLUSTER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a cluster record", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_record(dir: &Path, rec: &ClusterRecord) -> anyhow::Result<()> {
    let path = dir.join(CLUSTER_FILE);
    let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// Finds qkvd: `--qkvd`, then next to this executable, then on PATH.
fn find_qkvd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--qkvd {} is not a file", p.display());
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let p = dir.join("qkvd");
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("qkvd");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "qkvd not found next to qkv or on PATH: build it (cargo build -p quorumkv-node) or pass --qkvd PATH"
    )
}

/// True when `pid` is a live (not zombie) process that still looks like a
/// qkvd — a recycled pid of another program is treated as gone.
fn is_running_qkvd(pid: u32) -> bool {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ..." — the state follows the last ')'.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.trim_start())
            && rest.starts_with('Z')
        {
            return false;
        }
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => cmd.split(|b| *b == 0).next().is_some_and(|argv0| {
            let argv0 = String::from_utf8_lossy(argv0);
            let name = argv0.rsplit('/').next().unwrap_or_default();
            name.contains("qkvd")
        }),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(p) = libc::pid_t::try_from(pid) {
        // SAFETY: sending a signal to a pid we checked is a qkvd we started.
        unsafe { libc::kill(p, sig) };
    }
}

/// SIGTERM every live pid, wait up to `deadline`, then SIGKILL the rest.
/// Returns the pids that needed SIGKILL.
async fn stop_pids(pids: &[u32], deadline: Duration) -> Vec<u32> {
    let live: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| is_running_qkvd(*p))
        .collect();
    for p in &live {
        signal(*p, libc::SIGTERM);
    }
    let until = Instant::now() + deadline;
    while Instant::now() < until && live.iter().any(|p| is_running_qkvd(*p)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stubborn: Vec<u32> = live.into_iter().filter(|p| is_running_qkvd(*p)).collect();
    for p in &stubborn {
        signal(*p, libc::SIGKILL);
    }
    stubborn
}

/// The last `n` lines of a log file, for error messages.
fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn spawn(qkvd: &Path, spec: &NodeSpec) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    std::fs::create_dir_all(&spec.data_dir)
        .with_context(|| format!("cannot create {}", spec.data_dir.display()))?;
    let mut log: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("cannot open {}", spec.log.display()))?;
    writeln!(
        log,
        "=== qkv local up: {} {}",
        qkvd.display(),
        spec.args.join(" ")
    )?;
    let err = log.try_clone()?;
    Command::new(qkvd)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        // qkv's own variables are not qkvd's settings.
        .env_remove("QKV_NODE")
        .env_remove("QKV_TOKEN")
        .spawn()
        .with_context(|| format!("cannot start {}", qkvd.display()))
}

/// Asks every node in turn, through `check`, until it says yes (`Ok`),
/// any child exits, or `deadline` passes. On failure: the failing node and
/// why (`{id} did not {what} within N s: {last answer}`).
async fn poll_each(
    specs: &[NodeSpec],
    children: &mut [Child],
    token: Option<&str>,
    deadline: Duration,
    what: &str,
    check: impl AsyncFn(&Client) -> Result<(), String>,
) -> Result<(), (usize, String)> {
    let until = Instant::now() + deadline;
    for (i, spec) in specs.iter().enumerate() {
        let mut b = Client::builder(vec![format!("http://{}", spec.http)])
            .timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_millis(500));
        if let Some(t) = token {
            b = b.bearer_token(t);
        }
        let client = b.build().map_err(|e| (i, e.to_string()))?;
        loop {
            if let Some((j, status)) = children
                .iter_mut()
                .enumerate()
                .find_map(|(j, c)| c.try_wait().ok().flatten().map(|s| (j, s)))
            {
                return Err((j, format!("qkvd {} exited ({status})", specs[j].id)));
            }
            let last = match check(&client).await {
                Ok(()) => break,
                Err(e) => e,
            };
            if Instant::now() >= until {
                return Err((
                    i,
                    format!(
                        "{} did not {what} within {} s: {last}",
                        spec.id,
                        deadline.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Waits until every node answers `/health`.
async fn wait_healthy(
    specs: &[NodeSpec],
    children: &mut [Child],
    token: Option<&str>,
) -> Result<(), (usize, String)> {
    poll_each(
        specs,
        children,
        token,
        HEALTH_DEADLINE,
        "answer /health",
        async |c| c.health().await.map(|_| ()).map_err(|e| e.to_string()),
    )
    .await
}

/// Waits until every node sees every node `up` and `normal` (joined, its
/// ranges streamed): `/health` answers before a node has joined the ring,
/// and a key request then would find too few replicas.
async fn wait_joined(
    specs: &[NodeSpec],
    children: &mut [Child],
    token: Option<&str>,
) -> Result<(), (usize, String)> {
    let ids: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
    poll_each(
        specs,
        children,
        token,
        JOIN_DEADLINE,
        "see every node up and normal",
        async |c| {
            let members = c.members().await.map_err(|e| e.to_string())?;
            let missing: Vec<&str> = ids
                .iter()
                .filter(|id| {
                    !members
                        .iter()
                        .any(|m| m.id == **id && m.status == "up" && m.state == "normal")
                })
                .map(String::as_str)
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not yet: {}", missing.join(", ")))
            }
        },
    )
    .await
}

fn ports_free(specs: &[NodeSpec]) -> anyhow::Result<()> {
    for s in specs {
        for addr in [&s.http, &s.listen] {
            if let Err(e) = std::net::TcpListener::bind(addr.as_str()) {
                bail!(
                    "{addr} (for {}) is not free: {e}; choose other ports with --base-http-port / --base-listen-port",
                    s.id
                );
            }
        }
    }
    Ok(())
}

async fn up(g: &Globals, a: UpArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let dir = a.dir.canonicalize()?;
    if let Some(rec) = read_record(&dir)? {
        let live: Vec<String> = rec
            .nodes
            .iter()
            .filter(|n| is_running_qkvd(n.pid))
            .map(|n| format!("{} (pid {})", n.id, n.pid))
            .collect();
        if !live.is_empty() {
            bail!(
                "a local cluster is already running in {}: {}; stop it with `qkv local down --dir {}`",
                dir.display(),
                live.join(", "),
                a.dir.display()
            );
        }
        eprintln!(
            "note: replacing the stale record of stopped nodes in {}",
            dir.display()
        );
    }
    let specs = node_specs(&a, &dir)?;
    ports_free(&specs)?;
    let qkvd = find_qkvd(a.qkvd.as_deref())?;

    let mut children: Vec<Child> = Vec::new();
    let mut record = ClusterRecord {
        qkvd: qkvd.clone(),
        started_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        nodes: Vec::new(),
    };
    let mut failure: Option<(usize, String)> = None;
    for (i, spec) in specs.iter().enumerate() {
        match spawn(&qkvd, spec) {
            Ok(child) => {
                record.nodes.push(NodeRecord {
                    id: spec.id.clone(),
                    pid: child.id(),
                    http: spec.http.clone(),
                    listen: spec.listen.clone(),
                    data_dir: spec.data_dir.clone(),
                    log: spec.log.clone(),
                });
                children.push(child);
            }
            Err(e) => {
                failure = Some((i, format!("{e:#}")));
                break;
            }
        }
    }
    // Recorded at once, so `local down` can clean up even if we are killed
    // while waiting.
    write_record(&dir, &record)?;
    if failure.is_none() {
        failure = wait_healthy(&specs, &mut children, g.token.as_deref())
            .await
            .err();
    }
    if failure.is_none() {
        failure = wait_joined(&specs, &mut children, g.token.as_deref())
            .await
            .err();
    }
    if let Some((i, why)) = failure {
        let tail = log_tail(&specs[i].log, 20);
        let pids: Vec<u32> = children.iter().map(Child::id).collect();
        stop_pids(&pids, Duration::from_secs(5)).await;
        for c in &mut children {
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(dir.join(CLUSTER_FILE));
        eprintln!(
            "--- last lines of {} ---\n{tail}\n---",
            specs[i].log.display()
        );
        bail!("{why}; stopped the {} node(s) started", children.len());
    }

    if g.json {
        print_json(&serde_json::to_value(&record)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = record
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                format!("http://{}", n.http),
                n.listen.clone(),
                n.pid.to_string(),
                n.log.display().to_string(),
            ]
        })
        .collect();
    println!(
        "started {} qkvd node(s), data under {}:",
        specs.len(),
        dir.display()
    );
    print!("{}", table(&["ID", "HTTP", "GOSSIP", "PID", "LOG"], &rows));
    let first = &specs[0].http;
    let nodes: Vec<String> = specs.iter().map(|s| format!("http://{}", s.http)).collect();
    println!();
    println!("try:");
    println!("  curl -X PUT --data-binary hello http://{first}/kv/greeting");
    println!("  curl http://{first}/kv/greeting");
    println!("  QKV_NODE={} qkv status", nodes.join(","));
    println!("stop with: qkv local down --dir {}", a.dir.display());
    Ok(ExitCode::SUCCESS)
}

async fn down(g: &Globals, dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(rec) = read_record(dir)? else {
        eprintln!(
            "no local cluster recorded in {}; nothing to stop",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let pids: Vec<u32> = rec.nodes.iter().map(|n| n.pid).collect();
    let killed = stop_pids(&pids, STOP_DEADLINE).await;
    std::fs::remove_file(dir.join(CLUSTER_FILE))
        .with_context(|| format!("cannot remove {}", dir.join(CLUSTER_FILE).display()))?;
    if g.json {
        print_json(&serde_json::json!({"stopped": rec.nodes, "sigkill": killed}))?;
    } else {
        for n in &rec.nodes {
            let how = if killed.contains(&n.pid) {
                "SIGKILL"
            } else {
                "stopped"
            };
            println!("{}  pid {}  {how}", n.id, n.pid);
        }
        println!("data kept under {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(g: &Globals, dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(rec) = read_record(dir)? else {
        bail!("no local cluster recorded in {}", dir.display());
    };
    let mut rows = Vec::new();
    let mut json_nodes = Vec::new();
    for n in &rec.nodes {
        let running = is_running_qkvd(n.pid);
        let health = match Client::builder(vec![format!("http://{}", n.http)])
            .timeout(Duration::from_secs(1))
            .build()
        {
            Ok(c) => match c.health().await {
                Ok(h) => h.status,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        rows.push(vec![
            n.id.clone(),
            n.pid.to_string(),
            if running { "running" } else { "gone" }.to_string(),
            format!("http://{}", n.http),
            health.clone(),
        ]);
        json_nodes.push(serde_json::json!({"node": n, "running": running, "health": health}));
    }
    if g.json {
        print_json(&serde_json::Value::Array(json_nodes))?;
    } else {
        print!(
            "{}",
            table(&["ID", "PID", "PROCESS", "HTTP", "HEALTH"], &rows)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(k: u16) -> UpArgs {
        UpArgs {
            nodes: k,
            dir: PathBuf::from(".qkv"),
            base_http_port: 8001,
            base_listen_port: 7001,
            sync: None,
            qkvd: None,
            qkvd_args: vec![],
        }
    }

    #[test]
    fn three_nodes_get_consecutive_ports_and_every_seed() {
        let specs = node_specs(&args(3), Path::new("/tmp/c")).unwrap();
        assert_eq!(specs.len(), 3);
        let n2 = &specs[1];
        assert_eq!(n2.id, "n2");
        assert_eq!(n2.http, "127.0.0.1:8002");
        assert_eq!(n2.listen, "127.0.0.1:7002");
        assert_eq!(n2.data_dir, PathBuf::from("/tmp/c/n2"));
        assert_eq!(n2.log, PathBuf::from("/tmp/c/n2.log"));
        assert_eq!(
            n2.args,
            [
                "--id",
                "n2",
                "--http",
                "127.0.0.1:8002",
                "--listen",
                "127.0.0.1:7002",
                "--seeds",
                "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
                "--data-dir",
                "/tmp/c/n2",
                "--default-n",
                "3"
            ]
        );
    }

    #[test]
    fn default_n_is_capped_by_the_node_count() {
        for (k, n) in [(1, "1"), (2, "2"), (3, "3"), (5, "3")] {
            let specs = node_specs(&args(k), Path::new("d")).unwrap();
            let i = specs[0]
                .args
                .iter()
                .position(|a| a == "--default-n")
                .unwrap();
            assert_eq!(specs[0].args[i + 1], n, "k={k}");
        }
    }

    #[test]
    fn sync_and_extra_args_are_passed_through() {
        let mut a = args(1);
        a.sync = Some("always".into());
        a.qkvd_args = vec!["--fault-injection".into()];
        let s = &node_specs(&a, Path::new("d")).unwrap()[0];
        assert!(s.args.ends_with(&[
            "--sync".to_string(),
            "always".to_string(),
            "--fault-injection".to_string()
        ]));
    }

    #[test]
    fn ports_beyond_65535_are_refused() {
        let mut a = args(3);
        a.base_http_port = 65535;
        assert!(node_specs(&a, Path::new("d")).is_err());
    }

    #[test]
    fn the_record_round_trips_and_dead_pids_are_not_running() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_record(dir.path()).unwrap(), None);
        let rec = ClusterRecord {
            qkvd: "/bin/qkvd".into(),
            started_at_unix: 1,
            nodes: vec![NodeRecord {
                id: "n1".into(),
                pid: u32::MAX,
                http: "127.0.0.1:8001".into(),
                listen: "127.0.0.1:7001".into(),
                data_dir: "d/n1".into(),
                log: "d/n1.log".into(),
            }],
        };
        write_record(dir.path(), &rec).unwrap();
        assert_eq!(read_record(dir.path()).unwrap(), Some(rec));
        assert!(!is_running_qkvd(u32::MAX));
        // This test process is alive but is not a qkvd.
        assert!(!is_running_qkvd(std::process::id()));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&p, 2), "b\nc");
    }
}
