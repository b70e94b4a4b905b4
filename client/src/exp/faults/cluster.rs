//! The cluster a fault experiment runs against: one it starts itself
//! (`--nodes K` in `--dir`, recorded in `cluster.json` like `qkv local up`,
//! every node with `--fault-injection`), or one already running, whose
//! nodes are found through `/cluster/members`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Client;
use crate::local::cluster::{self, ClusterRecord, NodeRecord};
use crate::local::process::{self, NodeProcess, Ownership};
use crate::local::{Layout, ports};

/// How long the nodes have to serve and to see each other.
const UP_DEADLINE: Duration = Duration::from_secs(60);

/// Starts `layout` in `dir` with binary `qkvd`, records it, and waits
/// until every node serves and sees every node up and normal. On failure
/// the nodes started are stopped again.
pub async fn start(
    dir: &Path,
    layout: &Layout,
    qkvd: &Path,
) -> Result<Vec<(String, String)>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let Some(rec) = cluster::read_record(dir).map_err(|e| e.to_string())?
        && rec
            .nodes
            .iter()
            .any(|n| n.state() != crate::local::ProcState::Stopped)
    {
        return Err(format!(
            "a local cluster is already running in {}; stop it with `qkv local down --dir {}`",
            dir.display(),
            dir.display()
        ));
    }
    let launches = layout
        .launches(dir, qkvd, "qkv exp faults")
        .map_err(|e| e.to_string())?;
    ports::check_free(launches.iter().flat_map(|l| {
        [
            (l.id.as_str(), l.http.as_str()),
            (l.id.as_str(), l.listen.as_str()),
        ]
    }))
    .map_err(|e| e.to_string())?;
    let mut procs: Vec<NodeProcess> = launches
        .into_iter()
        .map(|l| NodeProcess::new(l, Ownership::Detached))
        .collect();
    let mut record = ClusterRecord {
        qkvd: qkvd.to_path_buf(),
        started_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        nodes: Vec::new(),
    };
    let mut failure = None;
    for p in procs.iter_mut() {
        match p.spawn() {
            Ok(pid) => record.nodes.push(NodeRecord::new(&p.launch, pid)),
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    cluster::write_record(dir, &record).map_err(|e| e.to_string())?;
    let nodes: Vec<(String, String)> = procs
        .iter()
        .map(|p| (p.launch.id.clone(), format!("http://{}", p.launch.http)))
        .collect();
    if failure.is_none() {
        let (ps, res) = tokio::task::spawn_blocking(move || {
            let r = process::wait_all_healthy(&mut procs, UP_DEADLINE);
            (procs, r)
        })
        .await
        .map_err(|e| e.to_string())?;
        procs = ps;
        if let Err((i, e)) = res {
            failure = Some(format!("{e}; log {}", procs[i].launch.log.display()));
        }
    }
    if failure.is_none()
        && let Err(e) = wait_joined(&nodes).await
    {
        failure = Some(e);
    }
    if let Some(why) = failure {
        process::stop_all(&mut procs, Duration::from_secs(5));
        let _ = cluster::remove_record(dir);
        return Err(why);
    }
    Ok(nodes)
}

/// Waits until every node sees every node up and normal.
async fn wait_joined(nodes: &[(String, String)]) -> Result<(), String> {
    let until = Instant::now() + UP_DEADLINE;
    for (id, url) in nodes {
        let c = Client::builder(vec![url.clone()])
            .timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| e.to_string())?;
        loop {
            let last = match c.members().await {
                Ok(ms) => {
                    let missing: Vec<&str> = nodes
                        .iter()
                        .filter(|(n, _)| {
                            !ms.iter()
                                .any(|m| &m.id == n && m.status == "up" && m.state == "normal")
                        })
                        .map(|(n, _)| n.as_str())
                        .collect();
                    if missing.is_empty() {
                        break;
                    }
                    format!("not yet: {}", missing.join(", "))
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= until {
                return Err(format!(
                    "{id} did not see every node up within 60 s: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The nodes of the local cluster recorded in `dir`.
pub fn recorded_nodes(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let rec = cluster::read_record(dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no local cluster recorded in {}", dir.display()))?;
    Ok(rec
        .nodes
        .iter()
        .map(|n| (n.id.clone(), format!("http://{}", n.http)))
        .collect())
}

/// Stops every node of the local cluster in `dir` and removes its record.
pub fn stop(dir: &Path) -> Result<(), String> {
    let Some(rec) = cluster::read_record(dir).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let mut procs: Vec<NodeProcess> = rec
        .nodes
        .iter()
        .map(|n| NodeProcess::adopt(n.launch(&rec.qkvd, "qkv exp faults"), n.pid))
        .collect();
    for p in procs.iter_mut() {
        // A paused node would not hear SIGTERM.
        if p.state() == crate::local::ProcState::Paused {
            let _ = p.resume();
        }
    }
    process::stop_all(&mut procs, Duration::from_secs(10));
    cluster::remove_record(dir).map_err(|e| e.to_string())
}

/// The members of a running cluster, through the first of `urls` that
/// answers: id and HTTP base URL of each.
pub async fn members(urls: &[String]) -> Result<Vec<(String, String)>, String> {
    let c = Client::builder(urls.to_vec())
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let ms = c.members().await.map_err(|e| e.to_string())?;
    let mut out: Vec<(String, String)> = ms
        .into_iter()
        .filter(|m| !m.http_addr.is_empty())
        .map(|m| (m.id, format!("http://{}", m.http_addr)))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err("the cluster lists no member with an HTTP address".into());
    }
    Ok(out)
}

/// `DIR` as an absolute path (the record keeps absolute paths).
pub fn absolute(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    dir.canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))
}
