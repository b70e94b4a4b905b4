//! A recorded local cluster: `DIR/cluster.json`, written by `qkv local up`
//! (every node's pid, addresses, files and full argv), and the process
//! faults applied to one of its nodes through [`LocalCluster`] — kill -9,
//! start again, restart, pause, resume, lose the disk. Each fault that
//! starts a process records its new pid before waiting for it to serve, so
//! the record stays right even if `qkv` is interrupted meanwhile.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Error;
use super::process::{Launch, NodeProcess, remove_data_dir};
use super::procfs::{self, ProcState};

/// The record's file name inside the cluster's directory.
pub const CLUSTER_FILE: &str = "cluster.json";

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

/// One node of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub id: String,
    /// Process id of its latest start.
    pub pid: u32,
    /// HTTP address.
    pub http: String,
    /// Gossip/internode address.
    pub listen: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// qkvd's arguments, to start it again (empty in records written
    /// before they were kept).
    #[serde(default)]
    pub args: Vec<String>,
}

impl NodeRecord {
    /// The record of `launch` started as `pid`.
    pub fn new(launch: &Launch, pid: u32) -> NodeRecord {
        NodeRecord {
            id: launch.id.clone(),
            pid,
            http: launch.http.clone(),
            listen: launch.listen.clone(),
            data_dir: launch.data_dir.clone(),
            log: launch.log.clone(),
            args: launch.args.clone(),
        }
    }

    /// How to start it again with binary `bin`, the log headed
    /// `=== {header}: ...`.
    pub fn launch(&self, bin: &Path, header: &str) -> Launch {
        Launch {
            id: self.id.clone(),
            bin: bin.to_path_buf(),
            args: self.args.clone(),
            http: self.http.clone(),
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            log: self.log.clone(),
            env: Vec::new(),
            header: Some(header.to_string()),
        }
    }

    /// Its process's state now (stopped when the pid is gone or is no
    /// longer this qkvd).
    pub fn state(&self) -> ProcState {
        procfs::probe(self.pid, &self.args)
    }
}

/// Reads `DIR/cluster.json`; `None` when there is none.
pub fn read_record(dir: &Path) -> Result<Option<ClusterRecord>, Error> {
    let path = dir.join(CLUSTER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::BadRecord { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            what: "cannot read",
            path,
            source,
        }),
    }
}

/// Writes `DIR/cluster.json` whole (through a rename, so a reader never
/// sees half of it).
pub fn write_record(dir: &Path, rec: &ClusterRecord) -> Result<(), Error> {
    let path = dir.join(CLUSTER_FILE);
    let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(rec).map_err(|source| Error::BadRecord {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&tmp, bytes).map_err(|source| Error::Io {
        what: "cannot write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| Error::Io {
        what: "cannot write",
        path,
        source,
    })
}

/// Removes `DIR/cluster.json` (nothing to do when there is none).
pub fn remove_record(dir: &Path) -> Result<(), Error> {
    let path = dir.join(CLUSTER_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            what: "cannot remove",
            path,
            source,
        }),
    }
}

/// What a fault did to one node, for reporting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Node id.
    pub node: String,
    /// `kill`, `start`, `restart`, `pause`, `resume` or `wipe`.
    pub action: &'static str,
    /// The pid killed with SIGKILL, if one was.
    pub killed: Option<u32>,
    /// The data directory deleted, if one was.
    pub wiped: Option<PathBuf>,
    /// The node's pid afterwards (the new one after a start).
    pub pid: u32,
    /// Its state afterwards.
    pub state: ProcState,
}

/// A recorded local cluster, for faults on its nodes.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    record: ClusterRecord,
}

impl LocalCluster {
    /// Opens the cluster recorded in `dir`.
    pub fn open(dir: &Path) -> Result<LocalCluster, Error> {
        let record = read_record(dir)?.ok_or_else(|| Error::NoCluster {
            dir: dir.to_path_buf(),
        })?;
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            record,
        })
    }

    /// The record as it stands.
    pub fn record(&self) -> &ClusterRecord {
        &self.record
    }

    fn index(&self, id: &str) -> Result<usize, Error> {
        self.record
            .nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| Error::UnknownNode {
                id: id.to_string(),
                known: self.record.nodes.iter().map(|n| n.id.clone()).collect(),
            })
    }

    /// The state of node `id`.
    pub fn state(&self, id: &str) -> Result<ProcState, Error> {
        Ok(self.record.nodes[self.index(id)?].state())
    }

    /// The handle on node `id`'s recorded process; a start through it
    /// heads the log `=== qkv local {action}: ...`.
    fn process(&self, i: usize, action: &str) -> NodeProcess {
        let n = &self.record.nodes[i];
        let launch = n.launch(&self.record.qkvd, &format!("qkv local {action}"));
        NodeProcess::adopt(launch, n.pid)
    }

    /// The process of node `i` must be running (or paused).
    fn require_running(&self, i: usize) -> Result<(), Error> {
        let n = &self.record.nodes[i];
        match n.state() {
            ProcState::Stopped => Err(Error::NotRunning {
                id: n.id.clone(),
                pid: Some(n.pid),
            }),
            _ => Ok(()),
        }
    }

    /// Node `i` can be started again: its arguments are recorded.
    fn require_args(&self, i: usize) -> Result<(), Error> {
        let n = &self.record.nodes[i];
        if n.args.is_empty() {
            return Err(Error::NoArguments { id: n.id.clone() });
        }
        Ok(())
    }

    /// Starts `p` (a stopped node `i`), records its pid, then waits for
    /// `/health`; a process that does not come up is killed again.
    fn start_recorded(
        &mut self,
        i: usize,
        p: &mut NodeProcess,
        within: Duration,
    ) -> Result<u32, Error> {
        self.require_args(i)?;
        let pid = p.spawn()?;
        self.record.nodes[i].pid = pid;
        write_record(&self.dir, &self.record)?;
        if let Err(e) = p.wait_healthy(within) {
            let _ = p.kill9();
            return Err(e);
        }
        Ok(pid)
    }

    fn fault(&self, i: usize, action: &'static str) -> Fault {
        let n = &self.record.nodes[i];
        Fault {
            node: n.id.clone(),
            action,
            killed: None,
            wiped: None,
            pid: n.pid,
            state: n.state(),
        }
    }

    /// kill -9 of a running (or paused) node.
    pub fn kill(&mut self, id: &str) -> Result<Fault, Error> {
        let i = self.index(id)?;
        self.require_running(i)?;
        let pid = self.record.nodes[i].pid;
        self.process(i, "kill").kill9()?;
        Ok(Fault {
            killed: Some(pid),
            ..self.fault(i, "kill")
        })
    }

    /// Starts a stopped node again with its recorded arguments and waits
    /// until it answers `/health` (at most `within`).
    pub fn start(&mut self, id: &str, within: Duration) -> Result<Fault, Error> {
        let i = self.index(id)?;
        let mut p = self.process(i, "start");
        self.start_recorded(i, &mut p, within)?;
        Ok(self.fault(i, "start"))
    }

    /// SIGSTOP to a running node.
    pub fn pause(&mut self, id: &str) -> Result<Fault, Error> {
        let i = self.index(id)?;
        self.require_running(i)?;
        self.process(i, "pause").pause()?;
        Ok(self.fault(i, "pause"))
    }

    /// SIGCONT to a paused node.
    pub fn resume(&mut self, id: &str) -> Result<Fault, Error> {
        let i = self.index(id)?;
        self.require_running(i)?;
        self.process(i, "resume").resume()?;
        Ok(self.fault(i, "resume"))
    }

    /// kill -9 (when running), then [`start`](Self::start).
    pub fn restart(&mut self, id: &str, within: Duration) -> Result<Fault, Error> {
        self.relaunch(id, within, false)
    }

    /// Loses node `id`'s disk: kill -9 (when running), delete its data
    /// directory, start it again and wait for `/health`.
    pub fn wipe(&mut self, id: &str, within: Duration) -> Result<Fault, Error> {
        self.relaunch(id, within, true)
    }

    fn relaunch(&mut self, id: &str, within: Duration, lose_disk: bool) -> Result<Fault, Error> {
        let action = if lose_disk { "wipe" } else { "restart" };
        let i = self.index(id)?;
        self.require_args(i)?;
        let mut p = self.process(i, action);
        let killed = self.kill_if_running(i, &mut p)?;
        let wiped = if lose_disk {
            let dir = self.record.nodes[i].data_dir.clone();
            remove_data_dir(&dir)?;
            Some(dir)
        } else {
            None
        };
        self.start_recorded(i, &mut p, within)?;
        Ok(Fault {
            killed,
            wiped,
            ..self.fault(i, action)
        })
    }

    fn kill_if_running(&self, i: usize, p: &mut NodeProcess) -> Result<Option<u32>, Error> {
        let pid = self.record.nodes[i].pid;
        if p.state() == ProcState::Stopped {
            return Ok(None);
        }
        p.kill9()?;
        Ok(Some(pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, args: Vec<String>) -> ClusterRecord {
        ClusterRecord {
            qkvd: "/bin/qkvd".into(),
            started_at_unix: 1,
            nodes: vec![NodeRecord {
                id: "n1".into(),
                pid,
                http: "127.0.0.1:8001".into(),
                listen: "127.0.0.1:7001".into(),
                data_dir: "d/n1".into(),
                log: "d/n1.log".into(),
                args,
            }],
        }
    }

    #[test]
    fn the_record_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_record(dir.path()).expect("readable"), None);
        let rec = record(u32::MAX, vec!["--id".into(), "n1".into()]);
        write_record(dir.path(), &rec).expect("write");
        assert_eq!(read_record(dir.path()).expect("read"), Some(rec));
        remove_record(dir.path()).expect("remove");
        assert_eq!(read_record(dir.path()).expect("readable"), None);
    }

    #[test]
    fn a_record_without_arguments_still_reads() {
        let json = r#"{"qkvd":"/bin/qkvd","started_at_unix":1,"nodes":[{"id":"n1","pid":7,"http":"h","listen":"l","data_dir":"d","log":"g"}]}"#;
        let rec: ClusterRecord = serde_json::from_str(json).expect("old record");
        assert!(rec.nodes[0].args.is_empty());
    }

    #[test]
    fn a_record_that_is_not_json_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CLUSTER_FILE), "{").expect("write");
        let err = read_record(dir.path()).expect_err("not a record");
        assert!(err.to_string().contains("is not a cluster record"), "{err}");
    }

    #[test]
    fn faults_name_what_is_wrong_with_the_node_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = LocalCluster::open(dir.path()).expect_err("no record");
        assert!(matches!(none, Error::NoCluster { .. }), "{none}");

        write_record(dir.path(), &record(u32::MAX, vec!["--id".into()])).expect("write");
        let mut c = LocalCluster::open(dir.path()).expect("open");
        let err = c.kill("n9").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no node n9 in the local cluster (nodes: n1)"
        );
        // The recorded pid is long gone: n1 is stopped.
        assert_eq!(c.state("n1").expect("known"), ProcState::Stopped);
        for err in [
            c.kill("n1").expect_err("stopped"),
            c.pause("n1").expect_err("stopped"),
            c.resume("n1").expect_err("stopped"),
        ] {
            assert!(matches!(err, Error::NotRunning { .. }), "{err}");
            assert!(err.to_string().starts_with("n1 is not running"), "{err}");
        }

        write_record(dir.path(), &record(u32::MAX, vec![])).expect("write");
        let mut c = LocalCluster::open(dir.path()).expect("open");
        let err = c
            .start("n1", Duration::from_secs(1))
            .expect_err("no arguments");
        assert!(matches!(err, Error::NoArguments { .. }), "{err}");
    }
}
