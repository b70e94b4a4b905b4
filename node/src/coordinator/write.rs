//! The write path: place the key, refuse at once when too few replicas
//! are alive, forward to a replica when this node is not one, mint the
//! version there, replicate in parallel and answer after W
//! acknowledgements. Replicas that are down or do not acknowledge in time
//! get a durable hint.

use std::sync::Arc;
use std::time::Duration;

use quorumkv_faults::Leg;
use tokio::time::Instant;

use tokio::sync::mpsc;

use super::Coordinator;
use super::tally::{Tally, Verdict};
use super::trace::{Trace, note};
use super::{Placement, Quorum, Target, forward_order, timeout_error};
use crate::buckets::{BucketProps, Consistency};
use crate::cluster::NodeId;
use crate::failure::{QuorumError, ReplicaFailure};
use crate::proto::{Encoded, RemoteError, Request, Response, WriteReply, WriteRequest};
use crate::replica::{Mutation, WriteError};
use crate::transport::PeerError;
use crate::version::{Context, Dvvs};

/// One client write (or delete).
#[derive(Clone)]
pub struct WriteArgs {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: Vec<u8>,
    /// The bucket's properties.
    pub props: BucketProps,
    /// The client's causal context (empty: none).
    pub ctx: Context,
    /// The value or the deletion.
    pub mutation: Mutation,
    /// The write consistency.
    pub w: Consistency,
    /// The request's deadline.
    pub timeout: Duration,
    /// The timeline, when asked for.
    pub trace: Option<Trace>,
}

/// Moves the mutation out of `a` for [`coordinate`], the last thing to
/// use it (it leaves a deletion behind, which nothing reads).
fn take_mutation(a: &mut WriteArgs) -> Mutation {
    std::mem::replace(&mut a.mutation, Mutation::Delete)
}

fn describe(p: &Placement) -> String {
    let targets: Vec<String> = p
        .targets
        .iter()
        .map(|t| match &t.hint_for {
            Some(o) => format!("{} (for {o})", t.node),
            None => t.node.to_string(),
        })
        .collect();
    let mut s = format!(
        "replicas [{}], using [{}], down [{}]",
        p.replicas.join(", "),
        targets.join(", "),
        p.down.join(", ")
    );
    if !p.pending.is_empty() {
        s.push_str(&format!(", pending [{}]", p.pending.join(", ")));
    }
    s
}

impl Coordinator {
    /// Writes a key at consistency `w`; the key's versions after the write
    /// on the replica that minted it.
    pub async fn write(self: &Arc<Self>, mut a: WriteArgs) -> Result<Dvvs, QuorumError> {
        let w = a.w.required(a.props.n, "w")?;
        let deadline = Instant::now() + a.timeout;
        let p = self.write_placement(&a.bucket, &a.key, &a.props);
        let required = p.write_required(w);
        let me = self.replica.id();
        note(&a.trace, || describe(&p));
        if p.targets.is_empty() && a.w == Consistency::Any && !p.replicas.is_empty() {
            // Cassandra's ANY: no replica is up, so this node keeps the
            // write and hints every replica; it becomes visible when one
            // returns and takes its hint.
            let mutation = take_mutation(&mut a);
            return self
                .coordinate(&a, mutation, &p, 1, deadline, true)
                .await
                .map(|(o, _)| o);
        }
        Quorum::check(&a.bucket, a.props.n, &p, required)?;
        // The version's dot is minted by a replica: this node when it is one,
        // else the first live replica. Only when every replica is down does a
        // sloppy stand-in mint (it keeps its copy, so its dot counters never
        // repeat).
        let minter = p
            .targets
            .iter()
            .find(|t| t.hint_for.is_none())
            .or(p.targets.first());
        let me_replica = p
            .targets
            .iter()
            .any(|t| *t.node == *me && t.hint_for.is_none());
        if me_replica || minter.is_some_and(|t| *t.node == *me) {
            let mutation = take_mutation(&mut a);
            return self
                .coordinate(&a, mutation, &p, required, deadline, false)
                .await
                .map(|(o, _)| o);
        }
        match self.forward(&a, &p, required, deadline).await {
            // w=any: no replica took it, so this node keeps it with hints.
            Err(QuorumError::Unavailable { .. }) if a.w == Consistency::Any => {
                note(&a.trace, || {
                    "no replica took the write; keeping it here with hints (w=any)".into()
                });
                let mutation = take_mutation(&mut a);
                self.coordinate(&a, mutation, &p, 1, deadline, true)
                    .await
                    .map(|(o, _)| o)
            }
            other => other,
        }
    }

    /// Hands the write to the first live replica that takes it, the
    /// fastest first ([`forward_order`]).
    async fn forward(
        self: &Arc<Self>,
        a: &WriteArgs,
        p: &Placement,
        required: usize,
        deadline: Instant,
    ) -> Result<Dvvs, QuorumError> {
        let mut failed = Vec::new();
        for node in forward_order(p, |n| self.standing(n)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // The replica coordinator gets 90% of what is left, so that its
            // 504 (which knows which replicas were late) reaches us first.
            let inner = left.mul_f64(0.9).max(Duration::from_millis(1));
            let req = Request::Write(WriteRequest {
                bucket: a.bucket.clone(),
                key: a.key.clone(),
                context: a.ctx.clone(),
                mutation: a.mutation.clone(),
                props: a.props.clone(),
                w: a.w,
                timeout_ms: inner.as_millis().min(u32::MAX as u128) as u32,
                trace: a.trace.is_some(),
            });
            let sent_at = a.trace.as_ref().map_or(0, Trace::now_us);
            note(&a.trace, || format!("forwarding to replica {}", node));
            self.metrics.forwarded_writes.inc();
            match self.peers.call(&node, req, left).await {
                Ok(Response::Written(reply)) => {
                    if let Some(tr) = &a.trace {
                        tr.absorb(reply.trace, sent_at);
                        tr.event(format!("{} answered: {} acks", node, reply.acks));
                    }
                    return Ok(reply.object);
                }
                Ok(other) => failed.push(ReplicaFailure {
                    node: node.to_string(),
                    reason: format!("unexpected answer {other:?}"),
                }),
                Err(PeerError::Remote(RemoteError::Quorum(e))) => {
                    note(&a.trace, || format!("{} answered: {e}", node));
                    return Err(e);
                }
                Err(e) if e.not_applied() => {
                    note(&a.trace, || format!("{} did not take the write: {e}", node));
                    failed.push(ReplicaFailure {
                        node: node.to_string(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    failed.push(ReplicaFailure {
                        node: node.to_string(),
                        reason: e.to_string(),
                    });
                    return Err(QuorumError::Timeout {
                        required,
                        acks: 0,
                        message: format!(
                            "replica {} took the write but did not answer in time ({e}); the write may still be applied",
                            node
                        ),
                        failed,
                    });
                }
            }
        }
        Err(QuorumError::Unavailable {
            required,
            alive: 0,
            message: "no live replica of the key could take the write".into(),
            failed,
        })
    }

    /// Mints the new version here, stores it, replicates it to the other
    /// targets in parallel, and waits for `required` acknowledgements.
    /// `fallback`: this node is no replica and keeps the write for them
    /// (`w=any` with every replica down). The mutation is `a`'s, taken out of
    /// it (see [`take_mutation`]) so that the local write owns it uncopied.
    async fn coordinate(
        self: &Arc<Self>,
        a: &WriteArgs,
        mutation: Mutation,
        p: &Placement,
        required: usize,
        deadline: Instant,
        fallback: bool,
    ) -> Result<(Dvvs, usize), QuorumError> {
        let me = self.replica.id();
        if self
            .buckets
            .mark_has_data(&a.bucket)
            .await
            .map_err(|e| QuorumError::storage(me, required, e))?
        {
            self.bucket_sync.announce(&a.bucket);
        }
        let local = self.faults.local(
            (Leg::W, Leg::A),
            self.replica
                .write(&a.bucket, &a.key, &a.ctx, mutation, a.props.conflicts),
        );
        let outcome = match tokio::time::timeout_at(deadline, local).await {
            Err(_) => {
                return Err(timeout_error(
                    required,
                    0,
                    vec![ReplicaFailure {
                        node: me.to_string(),
                        reason: "local storage did not finish before the deadline".into(),
                    }],
                    "the write may still be applied later",
                ));
            }
            // Refused before anything was stored or sent: 413.
            Ok(Err(WriteError::KeyTooLarge { size, limit })) => {
                return Err(QuorumError::KeyTooLarge { size, limit });
            }
            Ok(Err(WriteError::Storage(e))) => return Err(QuorumError::storage(me, required, e)),
            Ok(Ok(o)) => o,
        };
        if outcome.lww_dropped > 0 {
            self.metrics.lww_dropped.inc_by(outcome.lww_dropped as u64);
        }
        let object = outcome.object;
        note(&a.trace, || {
            format!("stored locally ({} versions)", object.sibling_count())
        });

        // Hints that count (the w=any fallback's, one per replica) or that
        // carry a stand-in's copy home (for the owner it replaces) are stored
        // before answering. Hints for down replicas in a strict quorum count for
        // nothing, so they are written alongside replication, off the latency
        // path.
        let stands_in_for = p
            .targets
            .iter()
            .find(|t| *t.node == *me)
            .and_then(|t| t.hint_for.clone());
        let (now, later): (Vec<NodeId>, Vec<NodeId>) = if fallback {
            (p.replicas.clone(), Vec::new())
        } else {
            (stands_in_for.into_iter().collect(), p.down.clone())
        };
        let mut hinted = 0;
        for target in &now {
            if self.hint(target, &a.bucket, &a.key, &object).await {
                hinted += 1;
                note(&a.trace, || format!("hint stored for {target}"));
            }
        }
        if !later.is_empty() {
            let (node, bucket, key, object, trace) = (
                self.clone(),
                a.bucket.clone(),
                a.key.clone(),
                object.clone(),
                a.trace.clone(),
            );
            self.tasks.spawn(async move {
                for target in &later {
                    if node.hint(target, &bucket, &key, &object).await {
                        note(&trace, || format!("hint stored for {target}"));
                    }
                }
            });
        }
        if fallback {
            return if hinted > 0 {
                Ok((object, hinted))
            } else {
                Err(QuorumError::Unavailable {
                    required: 1,
                    alive: 0,
                    message: "w=any: no replica is up and no hint could be stored here".into(),
                    failed: p
                        .replicas
                        .iter()
                        .map(|r| ReplicaFailure {
                            node: r.to_string(),
                            reason: "down".into(),
                        })
                        .collect(),
                })
            };
        }

        let mut others: Vec<Target> = p
            .targets
            .iter()
            .filter(|t| *t.node != *me)
            .cloned()
            .collect();
        // Pending owners get every write while the ring changes.
        others.extend(
            p.pending_live
                .iter()
                .filter(|n| ***n != *me)
                .map(|n| Target {
                    node: n.clone(),
                    hint_for: None,
                }),
        );
        // Where the targets answer (nothing to make when there are none).
        let mut answers = None;
        if !others.is_empty() {
            let (tx, rx) = mpsc::channel(others.len());
            answers = Some(rx);
            // Encoded once; every target's request shares the bytes.
            let encoded = Encoded::of(&object);
            let written = Arc::new((a.bucket.clone(), a.key.clone()));
            for t in &others {
                self.tasks.spawn(self.clone().replicate(
                    t.clone(),
                    written.clone(),
                    encoded.clone(),
                    deadline,
                    tx.clone(),
                    a.trace.clone(),
                ));
            }
        }
        let targets = others.iter().map(|t| t.node.clone()).collect();
        let mut tally = Tally::new(required, 1, targets);
        let acks = loop {
            match tally.verdict() {
                Verdict::Acknowledged { acks } => break acks,
                // Decided: W can no longer be reached, and every target
                // has answered (so `acks` is exact).
                Verdict::Failed(s) => {
                    let acks = s.acks;
                    return Err(s.into_timeout(format!(
                        "{acks} of {required} replicas acknowledged; the others failed. The write is stored on {acks} and may become visible"
                    )));
                }
                Verdict::Waiting => {}
            }
            let next = async {
                match &mut answers {
                    Some(rx) => rx.recv().await,
                    None => None,
                }
            };
            match tokio::time::timeout_at(deadline, next).await {
                Err(_) | Ok(None) => {
                    let Verdict::Failed(s) = tally.on_deadline() else {
                        continue;
                    };
                    return Err(timeout_error(
                        required,
                        s.acks,
                        s.failed,
                        "the write may still be applied on the others later",
                    ));
                }
                Ok(Some((from, result))) => {
                    tally.on_answer(&from, result.map_err(|e| e.to_string()));
                }
            }
        };
        note(&a.trace, || {
            format!("{acks} of {required} acknowledgements: answering")
        });
        Ok((object, acks))
    }

    /// Sends the object of the key `written` (bucket, key; shared by the
    /// write's replication tasks) to one target; a failure leaves a hint (for
    /// the owner when the target was a stand-in). Reports to the waiting
    /// coordinator, which may have answered already.
    async fn replicate(
        self: Arc<Self>,
        t: Target,
        written: Arc<(String, Vec<u8>)>,
        object: Encoded,
        deadline: Instant,
        done: mpsc::Sender<(NodeId, Result<(), PeerError>)>,
        trace: Option<Trace>,
    ) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (bucket, key) = &*written;
        let req = Request::Replicate {
            bucket: bucket.clone(),
            key: key.clone(),
            object: object.clone(),
            hint_for: t.hint_for.as_deref().map(str::to_string),
        };
        note(&trace, || format!("replicating to {}", t.node));
        let result = match self.peers.call(&t.node, req, left).await {
            Ok(Response::Ack) => Ok(()),
            Ok(other) => Err(PeerError::Remote(RemoteError::Bad(format!(
                "unexpected answer {other:?}"
            )))),
            Err(e) => Err(e),
        };
        match &result {
            Ok(()) => note(&trace, || format!("{} acknowledged", t.node)),
            Err(e) => {
                note(&trace, || format!("{} failed: {e}", t.node));
                let owner = t.hint_for.as_deref().unwrap_or(&t.node);
                // This node encoded the object itself: it decodes.
                if let Ok(object) = object.decode()
                    && self.hint(owner, bucket, key, &object).await
                {
                    note(&trace, || format!("hint stored for {owner}"));
                }
            }
        }
        let _ = done.send((t.node, result)).await;
    }

    /// Serves a write forwarded by a coordinator that is not a replica.
    pub async fn serve_forwarded(
        self: &Arc<Self>,
        w: WriteRequest,
    ) -> Result<Response, RemoteError> {
        let consistency = w.w;
        let ctx = w.context;
        let trace = w.trace.then(|| Trace::new(self.replica.id()));
        let mut args = WriteArgs {
            bucket: w.bucket,
            key: w.key,
            props: w.props,
            ctx,
            mutation: w.mutation,
            w: consistency,
            timeout: Duration::from_millis(w.timeout_ms as u64),
            trace: trace.clone(),
        };
        let w = consistency
            .required(args.props.n, "w")
            .map_err(RemoteError::Quorum)?;
        let deadline = Instant::now() + args.timeout;
        let p = self.write_placement(&args.bucket, &args.key, &args.props);
        let required = p.write_required(w);
        let result = match Quorum::check(&args.bucket, args.props.n, &p, required) {
            Err(e) => Err(e),
            Ok(()) => {
                let mutation = take_mutation(&mut args);
                self.coordinate(&args, mutation, &p, required, deadline, false)
                    .await
            }
        };
        match result {
            Ok((object, acks)) => Ok(Response::Written(WriteReply {
                object,
                acks: acks as u32,
                trace: trace.map(|t| t.events()).unwrap_or_default(),
            })),
            Err(e) => Err(RemoteError::Quorum(e)),
        }
    }
}
