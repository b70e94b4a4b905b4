//! The coordinator: turns a client's read or write into work on the key's
//! replicas and decides, by counting, whether it succeeded.
//!
//! * [`placement`] finds the key's replicas on the ring (its preference
//!   list of N nodes) and which of them to use: the live ones (strict
//!   quorum), or — in a `sloppy_quorum` bucket — the first N healthy nodes
//!   of the extended preference list, each stand-in holding a hint for the
//!   replica it replaces. It is pure ([`place`]) apart from reading the
//!   ring and the failure detector.
//! * [`Quorum::check`] refuses at once with `unavailable` when fewer than
//!   R or W targets are alive: a write that could never reach W must not
//!   half-happen.
//! * [`write`] (`write.rs`) mints the version on a replica — forwarding
//!   there when this node is not one — replicates in parallel, answers
//!   after W acknowledgements and hints the replicas that missed it.
//! * [`read`] (`read.rs`) asks R replicas, merges their versions and
//!   repairs the stale ones (`read_repair`: blocking, async or off).
//! * `trace.rs` records the timeline `?trace=true` returns.
//!
//! Hints never count toward R or W, except for `w=any`: that keeps the
//! R + W > N promise in strict buckets (see docs/CONSISTENCY.md).
//!
//! **Pending owners.** While the ring changes (a node joining, leaving or
//! being removed), [`write_placement`] adds the key's pending owners — the
//! nodes that will replicate it once the change completes
//! ([`crate::cluster::Cluster::pending`]). A write goes to the current replicas
//! *and* the pending ones, and needs W + |pending| acknowledgements
//! (Cassandra's rule): with one pending owner and W=2, three of the four
//! copies, so at least W of the replicas of the *future* ring hold every
//! acknowledged write when the change completes, whatever the stream
//! missed. It is refused up front (503) when fewer are alive. Reads use
//! the current replicas only.

mod gather;
pub mod latency;
mod read;
mod tally;
pub mod trace;
mod write;

pub use latency::Latencies;
pub use read::ReadArgs;
pub use write::WriteArgs;

use std::sync::Arc;

use crate::bucket_sync::BucketSync;
use crate::buckets::{BucketProps, Buckets};
use crate::cluster::{Cluster, NodeId};
use crate::failure::{QuorumError, ReplicaFailure};
use crate::faults::Faults;
use crate::hints::{HintOutcome, Hints};
use crate::metrics::Metrics;
use crate::proto::{Encoded, RemoteError, Response};
use crate::replica::{Replica, WriteError};
use crate::storage::StorageError;
use crate::tasks::Tasks;
use crate::transport::{PeerError, Peers};
use crate::version::Dvvs;

/// The coordinator's settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replicas after the first answer reads with a digest
    /// (`--read-digests`).
    pub read_digests: bool,
}

/// Quorum reads and writes over this node's replica and its peers.
pub struct Coordinator {
    replica: Arc<Replica>,
    cluster: Arc<Cluster>,
    buckets: Arc<Buckets>,
    hints: Arc<Hints>,
    peers: Arc<dyn Peers>,
    metrics: Arc<Metrics>,
    faults: Arc<Faults>,
    bucket_sync: Arc<BucketSync>,
    tasks: Tasks,
    options: Options,
    /// What this node's calls measured of each replica's speed.
    latencies: Latencies,
}

/// What a [`Coordinator`] works with.
pub struct Parts {
    /// This node's copy of the data.
    pub replica: Arc<Replica>,
    /// Members, ring and liveness.
    pub cluster: Arc<Cluster>,
    /// Bucket properties.
    pub buckets: Arc<Buckets>,
    /// Hinted handoff's store.
    pub hints: Arc<Hints>,
    /// The other nodes.
    pub peers: Arc<dyn Peers>,
    /// Where the coordinator counts.
    pub metrics: Arc<Metrics>,
    /// Injected faults.
    pub faults: Arc<Faults>,
    /// Announces a bucket when it first holds data.
    pub bucket_sync: Arc<BucketSync>,
    /// Where the work a request leaves behind runs (replication, repairs,
    /// hints).
    pub tasks: Tasks,
}

impl Coordinator {
    /// A coordinator over `parts`.
    pub fn new(parts: Parts, options: Options) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            replica: parts.replica,
            cluster: parts.cluster,
            buckets: parts.buckets,
            hints: parts.hints,
            peers: parts.peers,
            metrics: parts.metrics,
            faults: parts.faults,
            bucket_sync: parts.bucket_sync,
            tasks: parts.tasks,
            options,
            latencies: Latencies::default(),
        })
    }

    /// The replicas' measured speed and the speculation delay (for
    /// `/metrics` and tests).
    pub fn latencies(&self) -> &Latencies {
        &self.latencies
    }

    /// How a replica stands now: its measured speed and this node's calls
    /// to it still unanswered.
    fn standing(&self, n: &str) -> Standing {
        Standing {
            latency_us: self.latencies.estimate_us(n),
            outstanding: self.peers.outstanding(n),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        self.replica.id()
    }

    /// Serves a replica read for another node's coordinator: the key's
    /// versions, or only their digest.
    pub async fn serve_read(
        &self,
        bucket: &str,
        key: &[u8],
        digest: bool,
    ) -> Result<Response, RemoteError> {
        self.faults.storage_delay().await;
        let storage = |e: StorageError| RemoteError::Storage(e.to_string());
        Ok(if digest {
            let found = self.replica.read(bucket, key).map_err(storage)?;
            Response::Digest(found.map(|o| o.digest()))
        } else {
            let found = self.replica.read_encoded(bucket, key).map_err(storage)?;
            Response::Object(found.map(Encoded::from))
        })
    }

    /// Serves replication (a write's copy, a read repair, a hint's
    /// delivery): merges `object` into this replica, and keeps a hint for
    /// `hint_for` when this node stands in for it in a sloppy quorum.
    pub async fn serve_replicate(
        self: &Arc<Self>,
        bucket: &str,
        key: &[u8],
        object: &Encoded,
        hint_for: Option<&str>,
    ) -> Result<Response, RemoteError> {
        let props = self.buckets.props_for_keys(bucket);
        let object = object
            .decode()
            .map_err(|e| RemoteError::Bad(format!("versions that do not decode: {e}")))?;
        self.replica
            .merge(bucket, key, &object, props.conflicts)
            .await
            .map_err(|e| match e {
                WriteError::KeyTooLarge { size, limit } => RemoteError::KeyTooLarge { size, limit },
                WriteError::Storage(e) => RemoteError::Storage(e.to_string()),
            })?;
        if let Some(owner) = hint_for {
            self.hint(owner, bucket, key, &object).await;
        }
        Ok(Response::Ack)
    }
}

/// A node a request will use, and the replica it stands in for when it
/// is a sloppy-quorum fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node to ask.
    pub node: NodeId,
    /// The down replica whose place it takes (sloppy quorums only).
    pub hint_for: Option<NodeId>,
}

/// Where a key's request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The key's N replicas, in preference order.
    pub replicas: Vec<NodeId>,
    /// The nodes to use, in preference order: live replicas, then the
    /// stand-ins of a sloppy quorum.
    pub targets: Vec<Target>,
    /// Replicas that are down and have no stand-in: the coordinator hints
    /// them (pending owners that are down too).
    pub down: Vec<NodeId>,
    /// Pending owners of the key while the ring changes (writes only).
    pub pending: Vec<NodeId>,
    /// The live ones among `pending`: written to alongside the targets.
    pub pending_live: Vec<NodeId>,
}

impl Placement {
    /// Adds the pending owners `pending` (see the module docs): live ones
    /// become extra write targets, down ones are hinted.
    pub fn with_pending(mut self, pending: Vec<NodeId>, alive: impl Fn(&str) -> bool) -> Self {
        for p in &pending {
            if alive(p) {
                self.pending_live.push(p.clone());
            } else {
                self.down.push(p.clone());
            }
        }
        self.pending = pending;
        self
    }

    /// Acknowledgements a write at `w` needs: `w` plus one per pending
    /// owner.
    pub fn write_required(&self, w: usize) -> usize {
        w + self.pending.len()
    }
}

/// Chooses the targets among `replicas` (and, when `sloppy`, stand-ins from
/// `extended`: the nodes after the replicas in ring order).
pub fn place(
    replicas: Vec<NodeId>,
    extended: &[NodeId],
    sloppy: bool,
    alive: impl Fn(&str) -> bool,
) -> Placement {
    let mut targets = Vec::with_capacity(replicas.len());
    let mut down = Vec::new();
    for r in &replicas {
        if alive(r) {
            targets.push(Target {
                node: r.clone(),
                hint_for: None,
            });
        } else {
            down.push(r.clone());
        }
    }
    if sloppy {
        let mut spare = extended.iter().filter(|n| alive(n));
        down.retain(|owner| match spare.next() {
            Some(s) => {
                targets.push(Target {
                    node: s.clone(),
                    hint_for: Some(owner.clone()),
                });
                false
            }
            None => true,
        });
    }
    Placement {
        replicas,
        targets,
        down,
        pending: Vec::new(),
        pending_live: Vec::new(),
    }
}

/// How a replica stands when a request chooses whom to ask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// The moving average of this node's read calls to it, in µs
    /// ([`latency`]); `None` before the first.
    pub latency_us: Option<u64>,
    /// This node's calls to it still unanswered.
    pub outstanding: usize,
}

/// The order in which a read asks the targets of `p`: this node first
/// (`me`; its copy costs no round trip), then the other replicas by how
/// fast this node's read calls to them have been lately, in factor-of-two
/// bands ([`latency::band`]), then within a band by how many of this
/// node's calls to each are still unanswered, then the stand-ins of a
/// sloppy quorum, which hold only what was written while their owner was
/// down. Ties keep preference order. `standing` says how each replica
/// stands.
///
/// Cassandra's dynamic snitch: a replica slowed by a disk stall, a GC
/// pause or a slow link is asked last once its calls have shown it,
/// instead of costing every read whose preference list starts with it a
/// speculation delay or its whole latency. The outstanding calls react
/// at once (a stalled replica's calls pile up), the measured latency
/// after its first slow answers; bands keep two healthy replicas equal so
/// that reads still spread over them. A replica that fails its calls
/// counts as slow ([`latency::FAILED_CALL`]). One that no read asks any
/// more is probed now and then (`read.rs`, [`latency::probe_due`]) so
/// that its figure follows it when it recovers.
pub fn read_order(p: &Placement, me: &str, standing: impl Fn(&str) -> Standing) -> Vec<NodeId> {
    by_speed(p, Some(me), standing)
}

/// The order in which a write that this node (no replica of the key)
/// forwards tries the targets of `p`: the replicas as [`read_order`]
/// orders them, then the stand-ins. The replica that takes it mints the
/// version and answers after W acknowledgements, so a slow one there
/// costs the write its whole latency.
pub fn forward_order(p: &Placement, standing: impl Fn(&str) -> Standing) -> Vec<NodeId> {
    by_speed(p, None, standing)
}

fn by_speed(p: &Placement, me: Option<&str>, standing: impl Fn(&str) -> Standing) -> Vec<NodeId> {
    let mut order: Vec<(u8, u32, usize, &NodeId)> = p
        .targets
        .iter()
        .map(|t| {
            let n = &t.node;
            match (Some(&**n) == me, &t.hint_for) {
                (true, _) => (0, 0, 0, n),
                (false, None) => {
                    let s = standing(n);
                    (1, latency::band(s.latency_us), s.outstanding, n)
                }
                (false, Some(_)) => (2, 0, 0, n),
            }
        })
        .collect();
    // Stable: equal keys keep preference order.
    order.sort_by_key(|&(class, band, load, _)| (class, band, load));
    order.into_iter().map(|(_, _, _, n)| n.clone()).collect()
}

/// Counting: whether enough targets are alive.
#[derive(Debug, Clone, Copy)]
pub struct Quorum;

impl Quorum {
    /// Checks that at least `required` targets of `p` are alive.
    ///
    /// `n` is the bucket's replica count and `bucket` its name, used only to
    /// explain a refusal (the preference list is shorter than `n` when the
    /// ring has fewer nodes).
    pub fn check(bucket: &str, n: u32, p: &Placement, required: usize) -> Result<(), QuorumError> {
        let alive = p.targets.len() + p.pending_live.len();
        if alive >= required {
            return Ok(());
        }
        let failed = p
            .down
            .iter()
            .map(|r| ReplicaFailure {
                node: r.to_string(),
                reason: "down".into(),
            })
            .collect();
        let message = if p.replicas.len() < n as usize {
            format!(
                "bucket {bucket:?} has n={n} but the ring holds only {} node(s): {alive} of {required} required replicas alive. \
                 Start more nodes, or give the bucket a smaller n (PUT /buckets/{bucket} {{\"n\":{}}}) before it holds data",
                p.replicas.len(),
                p.replicas.len().max(1)
            )
        } else if !p.pending.is_empty() {
            format!(
                "{alive} of {required} required replicas alive for this key (n={n}, plus {} pending owner(s) while the ring changes: {}); retry when the down replicas return, or ask for a lower w",
                p.pending.len(),
                p.pending.join(", ")
            )
        } else {
            format!(
                "{alive} of {required} required replicas alive for this key (n={n}); retry when the down replicas return, or ask for a lower r/w"
            )
        };
        Err(QuorumError::Unavailable {
            required,
            alive,
            message,
            failed,
        })
    }
}

/// How long one hint delivery may take.
const HINT_DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The hint replayer's view of whether a hint's target can take it: up
/// by the failure detector.
pub fn hint_target_is_up(cluster: Arc<Cluster>) -> crate::hints::IsUpFn {
    Arc::new(move |target: &str| cluster.is_alive(target))
}

/// Delivers one hint: the target merges the versions (idempotent, so a
/// hint delivered twice after a crash does no harm).
pub fn hint_delivery(peers: Arc<dyn Peers>) -> crate::hints::DeliverFn {
    Arc::new(move |h: crate::hints::Hint| {
        let peers = peers.clone();
        Box::pin(async move {
            let req = crate::proto::Request::Replicate {
                bucket: h.bucket,
                key: h.key,
                object: Encoded::of(&h.object),
                hint_for: None,
            };
            match peers.call(&h.target, req, HINT_DELIVERY_TIMEOUT).await {
                Ok(_) => Ok(()),
                // The target will refuse it however often it is sent (its
                // copy of the key plus the hint exceed --max-key-bytes):
                // dropped, or it would block every later hint for the target.
                Err(PeerError::Remote(e @ RemoteError::KeyTooLarge { .. })) => {
                    tracing::warn!(node = %h.target, error = %e, "dropping a hint its target refuses");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

/// The 504 of a request whose deadline passed with `acks` of `required`;
/// `what_now` tells the client what that means for it.
fn timeout_error(
    required: usize,
    acks: usize,
    failed: Vec<ReplicaFailure>,
    what_now: &str,
) -> QuorumError {
    QuorumError::Timeout {
        required,
        acks,
        message: format!("{acks} of {required} replicas answered before the deadline; {what_now}"),
        failed,
    }
}

impl Coordinator {
    /// The placement of a key of `bucket` as this node sees the cluster now.
    pub fn placement(self: &Arc<Self>, bucket: &str, key: &[u8], props: &BucketProps) -> Placement {
        self.placement_at(quorumkv_ring::token_of(bucket.as_bytes(), key), props)
    }

    /// [`placement`] of the key at `token`.
    fn placement_at(
        self: &Arc<Self>,
        token: quorumkv_ring::Token,
        props: &BucketProps,
    ) -> Placement {
        let replicas = self.cluster.preference(token, props.n as usize);
        let extended = if props.sloppy_quorum {
            self.cluster.fallbacks(token, &replicas)
        } else {
            Vec::new()
        };
        place(replicas, &extended, props.sloppy_quorum, |r| {
            self.cluster.is_alive(r)
        })
    }

    /// The placement of a key for a write: [`placement`] plus the key's
    /// pending owners while the ring changes.
    pub fn write_placement(
        self: &Arc<Self>,
        bucket: &str,
        key: &[u8],
        props: &BucketProps,
    ) -> Placement {
        let token = quorumkv_ring::token_of(bucket.as_bytes(), key);
        let pending = self.cluster.pending(token, props.n as usize);
        self.placement_at(token, props)
            .with_pending(pending, |r| self.cluster.is_alive(r))
    }

    /// Stores a hint of `object` for `target` on this node, unless hinted
    /// handoff is off or the target's hints are at their bound. Returns
    /// whether a hint was stored.
    pub async fn hint(
        self: &Arc<Self>,
        target: &str,
        bucket: &str,
        key: &[u8],
        object: &Dvvs,
    ) -> bool {
        match self.hints.add(target, bucket, key, object).await {
            Ok(HintOutcome::Stored) => true,
            Ok(HintOutcome::Full) => {
                tracing::debug!(%target, "hints for this target are at their bound; not hinted");
                false
            }
            Ok(HintOutcome::Disabled) => false,
            Err(e) => {
                tracing::warn!(%target, error = %e, "cannot store a hint");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
