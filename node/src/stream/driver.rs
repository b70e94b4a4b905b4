//! Driving a change from the node that owns it: announce, wait until every
//! live node writes to the pending owners, have each gaining node pull,
//! then announce the end (see the module docs of [`crate::stream`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use quorumkv_gossip::{AppState, Status};
use quorumkv_ring::Token;
use tracing::{info, warn};

use super::ChangeDriver;
use super::{Error, Kind, PullRange, PullState, Saved, StreamRequest, StreamResponse, save};
use crate::cluster::{NodeState, REMOVED, REMOVING};
use crate::proto::{Request, Response};

/// How long the driver waits for every live node to place keys alike
/// before it goes on anyway (logging who lags).
const AGREEMENT_LIMIT: Duration = Duration::from_secs(60);
/// How often the driver polls gaining nodes.
const POLL: Duration = Duration::from_millis(200);
/// How long a leaving node waits for its hints to live nodes to drain.
const HINT_DRAIN_LIMIT: Duration = Duration::from_secs(30);

fn conflict(why: impl Into<String>) -> Error {
    Error::Conflict(why.into())
}

impl ChangeDriver {
    async fn announce(self: &Arc<Self>, values: Vec<AppState>) -> Result<(), Error> {
        let handle = &self.gossip;
        for v in &values {
            handle
                .set_local(v.clone())
                .await
                .map_err(|e| Error::Announce(e.to_string()))?;
        }
        // The local view follows at once, not a gossip round later. The driver
        // answers `set_local` just before it publishes the snapshot: wait for
        // the one that shows what was announced.
        let mut watch = handle.watch();
        let shown = |snap: &quorumkv_gossip::driver::Snapshot| {
            snap.members.iter().any(|m| {
                m.is_local
                    && values
                        .iter()
                        .all(|v| m.state.get(&v.key()).is_some_and(|s| s.value == *v))
            })
        };
        let wait = async {
            loop {
                let snap = watch.borrow_and_update().clone();
                if shown(&snap) || watch.changed().await.is_err() {
                    return snap;
                }
            }
        };
        let snap = tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .unwrap_or_else(|_| handle.snapshot());
        self.cluster.apply(&snap);
        Ok(())
    }

    /// Starts this node's join with `tokens` (already checked against the
    /// ring): persists them, announces `joining` with them, and streams in the
    /// background; the node turns `normal` when every gained range is in.
    pub async fn join(self: &Arc<Self>, tokens: Vec<Token>) -> Result<Saved, Error> {
        let me = self.replica.id().to_string();
        let change = Saved {
            kind: Kind::Join,
            node: me,
            started_ms: crate::clock::unix_ms(),
        };
        self.changes.claim(&self.cluster, &change.id())?;
        let store = self.replica.store();
        let persisted = async {
            crate::tokens::save(store, &tokens).await?;
            save(store, Some(&change)).await
        };
        if let Err(e) = persisted.await {
            self.changes.release();
            return Err(e.into());
        }
        let announced = self
            .announce(vec![
                AppState::Tokens(tokens.as_slice().into()),
                AppState::Status(Status::Joining),
            ])
            .await;
        if let Err(e) = announced {
            self.changes.release();
            return Err(Error::Announce(format!("cannot announce the join: {e}")));
        }
        self.spawn_run(change.clone());
        Ok(change)
    }

    /// Starts this node's decommission: `leaving`, streams, hints, `left`.
    pub async fn decommission(self: &Arc<Self>) -> Result<Saved, Error> {
        let me = self.replica.id().to_string();
        let state = self.cluster.member(&me).map(|m| m.state);
        if state != Some(NodeState::Normal) {
            return Err(conflict(format!(
                "{me} is {}; only a normal node can be decommissioned",
                state.map_or("unknown".into(), |s| format!("{s:?}").to_lowercase())
            )));
        }
        let change = Saved {
            kind: Kind::Decommission,
            node: me,
            started_ms: crate::clock::unix_ms(),
        };
        self.begin(change, vec![AppState::Status(Status::Leaving)])
            .await
    }

    /// Starts removing `target`, a member that is down, on its behalf.
    pub async fn removenode(self: &Arc<Self>, target: &str) -> Result<Saved, Error> {
        let me = self.replica.id().to_string();
        let Some(m) = self.cluster.member(target) else {
            return Err(Error::NoMember(format!(
                "no member {target:?}; see GET /cluster/members"
            )));
        };
        if target == me {
            return Err(conflict(
                "a node cannot remove itself; decommission it instead (POST /cluster/decommission)",
            ));
        }
        if self.cluster.is_alive(target) {
            return Err(conflict(format!(
                "{target} is up; decommission it instead, or stop it first"
            )));
        }
        if !matches!(m.state, NodeState::Normal | NodeState::Leaving) || m.tokens.is_empty() {
            return Err(conflict(format!(
                "{target} owns no ranges (state {:?})",
                m.state
            )));
        }
        let change = Saved {
            kind: Kind::Removenode,
            node: target.to_string(),
            started_ms: crate::clock::unix_ms(),
        };
        self.begin(
            change,
            vec![AppState::Custom(REMOVING.into(), target.into())],
        )
        .await
    }

    /// Claims `change` (one at a time), persists it, gossips `announce`, and
    /// runs it in the background; a failure before it runs releases the claim.
    async fn begin(
        self: &Arc<Self>,
        change: Saved,
        announcement: Vec<AppState>,
    ) -> Result<Saved, Error> {
        self.changes.claim(&self.cluster, &change.id())?;
        if let Err(e) = save(self.replica.store(), Some(&change)).await {
            self.changes.release();
            return Err(e.into());
        }
        if let Err(e) = self.announce(announcement).await {
            self.changes.release();
            return Err(e);
        }
        self.spawn_run(change.clone());
        Ok(change)
    }

    /// Resumes the change `saved` this node was driving when it stopped
    /// (called once gossip announced its state again).
    pub fn resume(self: &Arc<Self>, saved: Saved) {
        info!(change = %saved.id(), "resuming the cluster change in flight at the last stop");
        self.changes.resume(&saved.id());
        self.spawn_run(saved);
    }

    fn spawn_run(self: &Arc<Self>, change: Saved) {
        let node = self.clone();
        self.changes
            .note(&change.node, change.kind, change.started_ms);
        let stop = self.tasks.token();
        self.tasks.spawn(async move {
            // Stopped at shutdown; a restart resumes the change.
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = async move {
                    let started = Instant::now();
                    loop {
                        match node.run_change(&change).await {
                            Ok(()) => break,
                            Err(e) => {
                                warn!(change = %change.id(), error = %e, "cluster change stalled; retrying in 5 s");
                                tokio::time::sleep(Duration::from_secs(5)).await;
                            }
                        }
                    }
                    node.changes.release();
                    node.changes.observe(&node.cluster);
                    info!(change = %change.id(), secs = started.elapsed().as_secs_f64(), "cluster change done");
                } => {}
            }
        });
    }

    /// One attempt at the whole change (idempotent: a retry or a restart runs
    /// it again, and pulls resume from their persisted positions).
    async fn run_change(self: &Arc<Self>, change: &Saved) -> Result<(), Error> {
        self.agree().await;
        let (current, future) = self.cluster.rings();
        let Some(future) = future else {
            // Nothing moves (e.g. a change seen done by everyone already).
            return self.finish(change).await;
        };
        let mut ns: BTreeSet<u32> = self.buckets.records().iter().map(|r| r.props.n).collect();
        ns.insert(self.options.default_n);
        let gains = super::plan::gains(&current, &future, &ns);
        let ranges: usize = gains.values().map(Vec::len).sum();
        info!(change = %change.id(), gaining_nodes = gains.len(), ranges, "streaming the ranges that move");
        let id = change.id();
        let mut waiting: Vec<(String, Vec<PullRange>)> = gains.into_iter().collect();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for (gainer, ranges) in waiting {
                match self.ask_pull(&gainer, &id, &ranges).await {
                    Ok(PullState::Done { keys, bytes }) => {
                        info!(change = %id, %gainer, keys, bytes, "gaining node has every range")
                    }
                    Ok(PullState::Running { .. }) => still.push((gainer, ranges)),
                    Ok(PullState::Failed(e)) => {
                        warn!(change = %id, %gainer, error = %e, "pull failed; asking again");
                        still.push((gainer, ranges));
                    }
                    Err(e) => {
                        warn!(change = %id, %gainer, error = %e, "gaining node did not answer; asking again");
                        still.push((gainer, ranges));
                    }
                }
            }
            waiting = still;
            if !waiting.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
        self.finish(change).await
    }

    /// Asks `gainer` (maybe this node) to pull, or how its pull stands.
    async fn ask_pull(
        self: &Arc<Self>,
        gainer: &str,
        id: &str,
        ranges: &[PullRange],
    ) -> Result<PullState, Error> {
        if gainer == self.replica.id() {
            let state = self.start_pull(id, ranges.to_vec())?;
            let s = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Ok(s);
        }
        let req = Request::Stream(StreamRequest::Pull {
            change: id.to_string(),
            ranges: ranges.to_vec(),
        });
        match self.peers.call(gainer, req, Duration::from_secs(10)).await {
            Ok(Response::Stream(StreamResponse::Pull(s))) => Ok(s),
            Ok(_) => Err(Error::Protocol {
                node: gainer.to_string(),
                why: "answered a pull with something else".into(),
            }),
            Err(error) => Err(Error::Peer {
                node: gainer.to_string(),
                error,
            }),
        }
    }

    /// Waits until every live member's view places keys as this one does,
    /// then for writes placed with older views to land (skipped when no live
    /// node stores a key).
    async fn agree(self: &Arc<Self>) {
        let began = Instant::now();
        let me = self.replica.id().to_string();
        let keys = loop {
            let mine = self.cluster.fingerprint();
            let mut keys = self.replica.stored().0.max(0) as u64;
            let mut lagging = Vec::new();
            for m in self.cluster.members() {
                if m.id == me || !self.cluster.is_alive(&m.id) || m.state == NodeState::Left {
                    continue;
                }
                let theirs = self
                    .peers
                    .call(
                        &m.id,
                        Request::Stream(StreamRequest::View),
                        Duration::from_secs(2),
                    )
                    .await;
                match theirs {
                    Ok(Response::Stream(StreamResponse::View {
                        fingerprint,
                        keys: k,
                    })) if fingerprint == mine => keys += k,
                    _ => lagging.push(m.id),
                }
            }
            if lagging.is_empty() {
                break keys;
            }
            if began.elapsed() > AGREEMENT_LIMIT {
                warn!(
                    ?lagging,
                    "these nodes still place keys differently; streaming anyway"
                );
                break u64::MAX;
            }
            tokio::time::sleep(POLL).await;
        };
        // Writes placed before a node learned of the change may still be on
        // their way to the old replicas: let them land before the scans pass.
        if keys > 0 {
            tokio::time::sleep(self.options.timeout.min(Duration::from_secs(5))).await;
        }
        info!(
            ms = began.elapsed().as_millis() as u64,
            "every live node writes to the pending owners"
        );
    }

    /// Announces the end of `change` and forgets it.
    async fn finish(self: &Arc<Self>, change: &Saved) -> Result<(), Error> {
        let store = self.replica.store();
        match change.kind {
            Kind::Join => {
                self.announce(vec![AppState::Status(Status::Normal)])
                    .await?;
            }
            Kind::Decommission => {
                self.drain_hints().await;
                store.meta_put(super::LEFT_KEY, b"1".to_vec()).await?;
                self.announce(vec![AppState::Status(Status::Left)]).await?;
                info!("decommissioned: this node has left the ring and can be stopped");
            }
            Kind::Removenode => {
                let mut removed = super::removed_by_me(store)?;
                if !removed.contains(&change.node) {
                    removed.push(change.node.clone());
                }
                let list = removed.join(",");
                store
                    .meta_put(super::REMOVED_KEY, list.clone().into_bytes())
                    .await?;
                self.announce(vec![
                    AppState::Custom(REMOVED.into(), list.into()),
                    AppState::Custom(REMOVING.into(), "".into()),
                ])
                .await?;
            }
        }
        save(store, None).await?;
        Ok(())
    }

    /// Lets the hint replayer deliver what this node holds for live nodes
    /// before it leaves (bounded), then hands the hints for down nodes to live
    /// ones ([`super::handoff`]).
    async fn drain_hints(self: &Arc<Self>) {
        let began = Instant::now();
        loop {
            let left: u64 = self
                .hints
                .pending()
                .into_iter()
                .filter(|(target, _)| self.cluster.is_alive(target))
                .map(|(_, n)| n)
                .sum();
            if left == 0 {
                break;
            }
            if began.elapsed() > HINT_DRAIN_LIMIT {
                warn!(
                    hints = left,
                    "hints to live nodes not all delivered before leaving"
                );
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let (_, behind) = self.hand_off_down().await;
        if behind > 0 {
            warn!(
                hints = behind,
                "hints no live node took stay behind on this node (anti-entropy repairs what they carry)"
            );
        }
    }
}
