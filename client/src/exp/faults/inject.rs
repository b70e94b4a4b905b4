//! Carrying faults out: network faults and clock skew through each node's
//! `/internal/faults` (docs/API.md; the same merge patches as `qkv faults
//! partition`, `heal` and `clock`), process faults through the local
//! cluster's supervisor (`crate::local::LocalCluster`: kill -9, SIGSTOP,
//! SIGCONT, a deleted data directory, a start).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::nemesis::Fault;
use crate::local::LocalCluster;
use crate::local::process::remove_data_dir;

/// How long a node is given to serve again after a start.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// What the nemesis acts on.
pub struct Injector {
    http: reqwest::Client,
    /// Every node: id and base URL.
    nodes: Vec<(String, String)>,
    /// The local cluster, for process faults.
    local: Option<Arc<Mutex<LocalCluster>>>,
}

impl Injector {
    pub fn new(nodes: Vec<(String, String)>, local_dir: Option<&Path>) -> Result<Injector, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let local = match local_dir {
            Some(d) => Some(Arc::new(Mutex::new(
                LocalCluster::open(d).map_err(|e| e.to_string())?,
            ))),
            None => None,
        };
        Ok(Injector { http, nodes, local })
    }

    /// PATCHes `/internal/faults` of the nodes listed (all when `None`);
    /// every node is tried, the failures are returned joined.
    async fn patch(&self, only: Option<&str>, patch: &Value) -> Result<(), String> {
        let mut errors = Vec::new();
        for (id, url) in &self.nodes {
            if only.is_some_and(|o| o != id) {
                continue;
            }
            let res = self
                .http
                .patch(format!("{url}/internal/faults"))
                .json(patch)
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => errors.push(format!("{id}: HTTP {}", r.status())),
                Err(e) => errors.push(format!("{id}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Runs `f` on the local cluster on a blocking thread.
    async fn local<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LocalCluster) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let Some(local) = self.local.clone() else {
            return Err("process faults need a local cluster (--nodes or --dir)".into());
        };
        tokio::task::spawn_blocking(move || {
            let mut c = match local.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            f(&mut c)
        })
        .await
        .map_err(|e| format!("the supervisor's thread failed: {e}"))?
    }

    /// Starts the fault.
    pub async fn start(&self, fault: &Fault) -> Result<(), String> {
        match fault {
            Fault::Partition { minority, majority } => {
                self.patch(
                    None,
                    &json!({"partition": {"sides": [minority, majority], "one_way": false}}),
                )
                .await
            }
            Fault::OneWay { from, to } => {
                self.patch(
                    None,
                    &json!({"partition": {"sides": [from, to], "one_way": true}}),
                )
                .await
            }
            Fault::Skew { node, offset_ms } => {
                self.patch(
                    Some(node),
                    &json!({"clock": {"offset_ms": offset_ms, "drift_ppm": 0.0}}),
                )
                .await
            }
            Fault::Kill { node } => {
                let id = node.clone();
                self.local(move |c| c.kill(&id).map(drop).map_err(|e| e.to_string()))
                    .await
            }
            Fault::Pause { node } => {
                let id = node.clone();
                self.local(move |c| c.pause(&id).map(drop).map_err(|e| e.to_string()))
                    .await
            }
            Fault::LoseDisk { node } => {
                let id = node.clone();
                self.local(move |c| {
                    c.kill(&id).map_err(|e| e.to_string())?;
                    let dir = c
                        .record()
                        .nodes
                        .iter()
                        .find(|n| n.id == id)
                        .map(|n| n.data_dir.clone())
                        .ok_or_else(|| format!("no node {id}"))?;
                    remove_data_dir(&dir).map_err(|e| e.to_string())
                })
                .await
            }
        }
    }

    /// Ends the fault.
    pub async fn end(&self, fault: &Fault) -> Result<(), String> {
        match fault {
            Fault::Partition { .. } | Fault::OneWay { .. } => {
                self.patch(None, &json!({"partition": null})).await
            }
            Fault::Skew { node, .. } => self.patch(Some(node), &json!({"clock": null})).await,
            Fault::Kill { node } | Fault::LoseDisk { node } => {
                let id = node.clone();
                self.local(move |c| {
                    c.start(&id, START_DEADLINE)
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
                .await
            }
            Fault::Pause { node } => {
                let id = node.clone();
                self.local(move |c| c.resume(&id).map(drop).map_err(|e| e.to_string()))
                    .await
            }
        }
    }

    /// Ends whatever may still be in force: resumes paused nodes, starts
    /// stopped ones, ends partitions and skew on every node.
    pub async fn heal_all(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.local.is_some() {
            let r = self
                .local(|c| {
                    let ids: Vec<String> = c.record().nodes.iter().map(|n| n.id.clone()).collect();
                    let mut errs = Vec::new();
                    for id in ids {
                        let res = match c.state(&id) {
                            Ok(crate::local::ProcState::Paused) => c.resume(&id).map(drop),
                            Ok(crate::local::ProcState::Stopped) => {
                                c.start(&id, START_DEADLINE).map(drop)
                            }
                            Ok(_) => Ok(()),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = res {
                            errs.push(e.to_string());
                        }
                    }
                    if errs.is_empty() {
                        Ok(())
                    } else {
                        Err(errs.join("; "))
                    }
                })
                .await;
            if let Err(e) = r {
                errors.push(e);
            }
        }
        if let Err(e) = self
            .patch(None, &json!({"partition": null, "clock": null}))
            .await
        {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}
