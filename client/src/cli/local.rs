//! `qkv local ...`: a cluster of real `qkvd` processes on loopback, for
//! trying quorumkv and for experiments, and the process faults experiments
//! need. A thin shell over [`quorumkv_client::local`], which starts,
//! signals and records the processes.
//!
//! `up --nodes K` starts nodes `n1..nK` with HTTP on `127.0.0.1:(8001+i-1)`
//! and gossip/internode traffic on `127.0.0.1:(7001+i-1)`; every node lists
//! every listen address as a seed, data lives in `DIR/nI`, logs go to
//! `DIR/nI.log`, and `--default-n` is `min(3, K)`. Each process runs in its
//! own process group with stdin closed, so it outlives `qkv` and a Ctrl-C in
//! the terminal does not reach it. The pids, addresses and arguments are
//! recorded in `DIR/cluster.json`, which every other subcommand reads. `up`
//! refuses to start over a recorded cluster that still runs, waits until
//! every node answers `/health` (30 s) and then until every node sees every
//! other one `up` and `normal` (60 s: nodes join one at a time), and on
//! failure prints the log tail of the node that did not come up and stops
//! everything it started.
//!
//! `kill`, `start`, `restart`, `pause`, `resume` and `wipe` act on one
//! recorded node (see docs/OPERATIONS.md, "A local cluster"); those that
//! start a process record its new pid and wait for `/health` (30 s).
//!
//! Implementation caveats:
//! - A recorded pid is only signalled while `/proc/PID/cmdline` still is
//!   qkvd with the recorded arguments, so a recycled pid is left alone
//!   (without `/proc` the check is skipped).
//! - Ports are checked free just before starting; another program can still
//!   take one in between.
//! - Two `qkv local` commands on one directory at the same moment may
//!   overwrite each other's record.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use quorumkv_client::Client;
use quorumkv_client::local::cluster::{self, Fault};
use quorumkv_client::local::process::{self, wait_all_healthy};
use quorumkv_client::local::{
    ClusterRecord, Layout, LocalCluster, NodeProcess, NodeRecord, Ownership, ProcState,
    StopOutcome, log_tail, ports, tls,
};

use super::Globals;
use super::output::{print_json, table};

/// How long `up` waits for every node to answer `/health`, and a fault
/// that starts a node for that node.
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);
/// How long `up` then waits for every node to see every other one joined.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);
/// How long `down` waits after SIGTERM before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// `qkv local ...`.
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start K qkvd processes on loopback.
    Up(UpArgs),
    /// Stop the recorded processes (SIGTERM, then SIGKILL after 10 s).
    Down(DirArg),
    /// Show the recorded processes, their state and whether they answer.
    Status(DirArg),
    /// kill -9 one node.
    Kill(NodeArg),
    /// Start a stopped node again with its recorded arguments; waits for
    /// /health.
    Start(NodeArg),
    /// kill -9 one node, then start it again; waits for /health.
    Restart(NodeArg),
    /// Freeze one node (SIGSTOP): alive, answering nothing.
    Pause(NodeArg),
    /// Unfreeze a paused node (SIGCONT).
    Resume(NodeArg),
    /// Lose one node's disk: kill -9, delete its data directory, start it
    /// again; waits for /health.
    Wipe(NodeArg),
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
    /// Serve HTTPS and run mutual TLS between the nodes, with a new CA
    /// and a certificate per node made under DIR/tls/ (qkv needs
    /// --ca-cert DIR/tls/ca.pem).
    #[arg(long)]
    pub tls: bool,
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

/// One node of the recorded cluster, for the faults.
#[derive(Debug, Args)]
pub struct NodeArg {
    /// The node's id (n1, n2, ...).
    #[arg(value_name = "NODE")]
    pub id: String,
    /// Directory holding cluster.json.
    #[arg(long, default_value = ".qkv")]
    pub dir: PathBuf,
}

impl UpArgs {
    fn layout(&self, dir: &Path) -> Layout {
        Layout {
            tls: self.tls.then(|| dir.to_path_buf()),
            nodes: self.nodes,
            base_http_port: self.base_http_port,
            base_listen_port: self.base_listen_port,
            sync: self.sync.clone(),
            extra: self.qkvd_args.clone(),
        }
    }
}

/// Runs a `local` subcommand.
pub async fn run(g: &Globals, cmd: LocalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LocalCommand::Up(a) => up(g, a).await,
        LocalCommand::Down(d) => down(g, &d.dir),
        LocalCommand::Status(d) => status(g, &d.dir).await,
        LocalCommand::Kill(n) => fault(g, &n, |c, id| c.kill(id)),
        LocalCommand::Start(n) => fault(g, &n, |c, id| c.start(id, HEALTH_DEADLINE)),
        LocalCommand::Restart(n) => fault(g, &n, |c, id| c.restart(id, HEALTH_DEADLINE)),
        LocalCommand::Pause(n) => fault(g, &n, |c, id| c.pause(id)),
        LocalCommand::Resume(n) => fault(g, &n, |c, id| c.resume(id)),
        LocalCommand::Wipe(n) => fault(g, &n, |c, id| c.wipe(id, HEALTH_DEADLINE)),
    }
}

/// Finds qkvd: `--qkvd`, then next to this executable, then on PATH.
pub(super) fn find_qkvd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
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

/// Asks every node in turn, through `check`, until it says yes (`Ok`),
/// any process exits, or `deadline` passes. On failure: the failing node
/// and why (`{id} did not {what} within N s: {last answer}`).
async fn poll_each(
    procs: &mut [NodeProcess],
    token: Option<&str>,
    ca: Option<&[u8]>,
    deadline: Duration,
    what: &str,
    check: impl AsyncFn(&Client) -> Result<(), String>,
) -> Result<(), (usize, String)> {
    let until = Instant::now() + deadline;
    for i in 0..procs.len() {
        let launch = &procs[i].launch;
        let mut b = Client::builder(vec![tls::base_url(&launch.http, &launch.args)])
            .timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_millis(500));
        if let Some(t) = token {
            b = b.bearer_token(t);
        }
        if let Some(pem) = ca {
            b = b.ca_cert_pem(pem);
        }
        let client = b.build().map_err(|e| (i, e.to_string()))?;
        loop {
            for (j, p) in procs.iter_mut().enumerate() {
                if let Some(status) = p.exit_status() {
                    return Err((j, format!("qkvd {} exited ({status})", p.launch.id)));
                }
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
                        procs[i].launch.id,
                        deadline.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Waits until every node sees every node `up` and `normal` (joined, its
/// ranges streamed): `/health` answers before a node has joined the ring,
/// and a key request then would find too few replicas.
async fn wait_joined(
    procs: &mut [NodeProcess],
    token: Option<&str>,
    ca: Option<&[u8]>,
) -> Result<(), (usize, String)> {
    let ids: Vec<String> = procs.iter().map(|p| p.launch.id.clone()).collect();
    poll_each(
        procs,
        token,
        ca,
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

async fn up(g: &Globals, a: UpArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let dir = a.dir.canonicalize()?;
    if let Some(rec) = cluster::read_record(&dir)? {
        let live: Vec<String> = rec
            .nodes
            .iter()
            .filter(|n| n.state() != ProcState::Stopped)
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
    let qkvd = find_qkvd(a.qkvd.as_deref())?;
    let launches = a.layout(&dir).launches(&dir, &qkvd, "qkv local up")?;
    ports::check_free(launches.iter().flat_map(|l| {
        [
            (l.id.as_str(), l.http.as_str()),
            (l.id.as_str(), l.listen.as_str()),
        ]
    }))?;

    let ca = if a.tls {
        let ids: Vec<String> = launches.iter().map(|l| l.id.clone()).collect();
        tls::generate(&dir, &ids)?;
        let ca = tls::ca_file(&dir);
        Some(std::fs::read(&ca).with_context(|| format!("cannot read {}", ca.display()))?)
    } else {
        None
    };
    let mut procs: Vec<NodeProcess> = launches
        .into_iter()
        .map(|l| NodeProcess::new(l, Ownership::Detached))
        .collect();
    let mut record = ClusterRecord {
        qkvd: qkvd.clone(),
        started_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        nodes: Vec::new(),
    };
    let mut failure: Option<(usize, String)> = None;
    for (i, p) in procs.iter_mut().enumerate() {
        match p.spawn() {
            Ok(pid) => record.nodes.push(NodeRecord::new(&p.launch, pid)),
            Err(e) => {
                failure = Some((i, e.to_string()));
                break;
            }
        }
    }
    // Recorded at once, so `local down` can clean up even if we are killed
    // while waiting.
    cluster::write_record(&dir, &record)?;
    if failure.is_none() {
        failure = wait_all_healthy(&mut procs, HEALTH_DEADLINE)
            .err()
            .map(|(i, e)| (i, e.to_string()));
    }
    if failure.is_none() {
        failure = wait_joined(&mut procs, g.token.as_deref(), ca.as_deref())
            .await
            .err();
    }
    if let Some((i, why)) = failure {
        let log = procs[i].launch.log.clone();
        let tail = log_tail(&log, 20);
        process::stop_all(&mut procs, Duration::from_secs(5));
        cluster::remove_record(&dir)?;
        eprintln!("--- last lines of {} ---\n{tail}\n---", log.display());
        bail!("{why}; stopped the {} node(s) started", record.nodes.len());
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
                tls::base_url(&n.http, &n.args),
                n.listen.clone(),
                n.pid.to_string(),
                n.log.display().to_string(),
            ]
        })
        .collect();
    println!(
        "started {} qkvd node(s), data under {}:",
        record.nodes.len(),
        dir.display()
    );
    print!("{}", table(&["ID", "HTTP", "GOSSIP", "PID", "LOG"], &rows));
    let nodes: Vec<String> = record
        .nodes
        .iter()
        .map(|n| tls::base_url(&n.http, &n.args))
        .collect();
    let first = &nodes[0];
    println!();
    println!("try:");
    // Over TLS, curl and qkv are told the CA to trust.
    let (cacert, ca_env) = if a.tls {
        let ca = tls::ca_file(&dir).display().to_string();
        (format!("--cacert {ca} "), format!(" QKV_CA_CERT={ca}"))
    } else {
        (String::new(), String::new())
    };
    println!("  curl {cacert}-X PUT --data-binary hello {first}/kv/greeting");
    println!("  curl {cacert}{first}/kv/greeting");
    println!("  QKV_NODE={}{ca_env} qkv status", nodes.join(","));
    println!("stop with: qkv local down --dir {}", a.dir.display());
    Ok(ExitCode::SUCCESS)
}

fn down(g: &Globals, dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(rec) = cluster::read_record(dir)? else {
        eprintln!(
            "no local cluster recorded in {}; nothing to stop",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let mut procs: Vec<NodeProcess> = rec
        .nodes
        .iter()
        .map(|n| NodeProcess::adopt(n.launch(&rec.qkvd, "qkv local down"), n.pid))
        .collect();
    let outcomes = process::stop_all(&mut procs, STOP_DEADLINE);
    let killed: Vec<u32> = rec
        .nodes
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == StopOutcome::Killed)
        .map(|(n, _)| n.pid)
        .collect();
    cluster::remove_record(dir)?;
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
    let Some(rec) = cluster::read_record(dir)? else {
        bail!("no local cluster recorded in {}", dir.display());
    };
    let mut rows = Vec::new();
    let mut json_nodes = Vec::new();
    let ca_pem = std::fs::read(tls::ca_file(dir)).ok();
    for n in &rec.nodes {
        let state = n.state();
        let mut b =
            Client::builder(vec![tls::base_url(&n.http, &n.args)]).timeout(Duration::from_secs(1));
        if let Some(pem) = &ca_pem {
            b = b.ca_cert_pem(pem.clone());
        }
        let health = match b.build() {
            Ok(c) => match c.health().await {
                Ok(h) => h.status,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        rows.push(vec![
            n.id.clone(),
            n.pid.to_string(),
            state.to_string(),
            tls::base_url(&n.http, &n.args),
            health.clone(),
        ]);
        json_nodes.push(serde_json::json!({
            "node": n,
            "running": state != ProcState::Stopped,
            "state": state,
            "health": health,
        }));
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

/// Applies one fault to node `n.id` and prints what it did; when a start
/// failed, the node's log tail goes to stderr first.
fn fault(
    g: &Globals,
    n: &NodeArg,
    apply: impl FnOnce(&mut LocalCluster, &str) -> Result<Fault, quorumkv_client::local::Error>,
) -> anyhow::Result<ExitCode> {
    let mut c = LocalCluster::open(&n.dir)?;
    let done = match apply(&mut c, &n.id) {
        Ok(done) => done,
        Err(e) => {
            use quorumkv_client::local::Error as E;
            if matches!(e, E::Exited { .. } | E::NotHealthy { .. })
                && let Some(node) = c.record().nodes.iter().find(|r| r.id == n.id)
            {
                eprintln!(
                    "--- last lines of {} ---\n{}\n---",
                    node.log.display(),
                    log_tail(&node.log, 20)
                );
            }
            return Err(e.into());
        }
    };
    if g.json {
        print_json(&serde_json::to_value(&done)?)?;
    } else {
        println!("{}", describe(&done));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line saying what a fault did, e.g. `n2: killed pid 41 (SIGKILL),
/// deleted /d/n2, started pid 57`.
fn describe(f: &Fault) -> String {
    let mut parts = Vec::new();
    if let Some(pid) = f.killed {
        parts.push(format!("killed pid {pid} (SIGKILL)"));
    }
    if let Some(dir) = &f.wiped {
        parts.push(format!("deleted {}", dir.display()));
    }
    match f.action {
        "start" | "restart" | "wipe" => {
            parts.push(format!("started pid {}, /health answers", f.pid))
        }
        "pause" => parts.push(format!("paused pid {} (SIGSTOP)", f.pid)),
        "resume" => parts.push(format!("resumed pid {} (SIGCONT)", f.pid)),
        _ => {}
    }
    format!("{}: {}; now {}", f.node, parts.join(", "), f.state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    #[test]
    fn the_faults_take_a_node_id_and_the_dir() {
        for (verb, dir) in [
            ("kill", ".qkv"),
            ("start", "x"),
            ("restart", "x"),
            ("pause", ".qkv"),
            ("resume", "x"),
            ("wipe", "x"),
        ] {
            let mut line = vec!["qkv", "--node", "a:1", "local", verb, "n2"];
            if dir != ".qkv" {
                line.extend(["--dir", dir]);
            }
            let cli = Cli::try_parse_from(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(cli.nodes, ["a:1"], "the global --node is untouched");
            let Command::Local(cmd) = cli.command else {
                panic!("{line:?} parsed as {:?}", cli.command)
            };
            let n = match cmd {
                LocalCommand::Kill(n)
                | LocalCommand::Start(n)
                | LocalCommand::Restart(n)
                | LocalCommand::Pause(n)
                | LocalCommand::Resume(n)
                | LocalCommand::Wipe(n) => n,
                other => panic!("{verb} parsed as {other:?}"),
            };
            assert_eq!((n.id.as_str(), n.dir.as_path()), ("n2", Path::new(dir)));
        }
        assert!(Cli::try_parse_from(["qkv", "local", "kill"]).is_err());
    }

    #[test]
    fn a_fault_is_described_in_one_line() {
        let f = Fault {
            node: "n2".into(),
            action: "wipe",
            killed: Some(41),
            wiped: Some("/d/n2".into()),
            pid: 57,
            state: ProcState::Running,
        };
        assert_eq!(
            describe(&f),
            "n2: killed pid 41 (SIGKILL), deleted /d/n2, started pid 57, /health answers; now running"
        );
        let f = Fault {
            action: "pause",
            killed: None,
            wiped: None,
            state: ProcState::Paused,
            ..f
        };
        assert_eq!(describe(&f), "n2: paused pid 57 (SIGSTOP); now paused");
    }
}
