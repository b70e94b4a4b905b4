//! The read path: ask R of the key's live replicas (this node first when
//! it is one, then the others by how fast they have answered this node's
//! calls lately and how many they have yet to answer: [`read_order`]),
//! ask a spare when one fails or is slow (after the bucket's
//! `speculative_retry`; `auto` is the p99 of recent replica reads,
//! [`super::latency`]), merge what R of them answer with DVVSet sync, and
//! repair the replicas that answered stale versions — before answering
//! (`blocking`, the default: quorum reads become monotonic), after
//! answering (`async`), or not at all (`off`).
//!
//! By default every replica answers with its full versions. With the
//! hidden `--read-digests on`, one replica (this node when it is one)
//! answers with versions and the others with a digest; a digest that
//! differs from the merge costs a second round trip for that replica's
//! versions. docs/PERFORMANCE.md compares the two.
//!
//! Every read call's duration feeds [`super::latency::Latencies`]; a read
//! also probes the replicas it does not ask when their figure is stale.

use std::sync::Arc;
use std::time::Duration;

use quorumkv_faults::Leg;
use tokio::time::Instant;

use tokio::sync::mpsc;

use super::Coordinator;
use super::gather::{Ask, Gather, Got, Step};
use super::latency::Sampled;
use super::trace::{Trace, note};
use super::{Quorum, read_order, timeout_error};
use crate::buckets::{BucketProps, Conflicts, Consistency, ReadRepair, SpeculativeRetry};
use crate::cluster::NodeId;
use crate::failure::QuorumError;
use crate::metrics::RepairKind;
use crate::proto::{Encoded, RemoteError, Request, Response};
use crate::transport::PeerError;
use crate::version::Dvvs;

/// The longest a probe waits for its answer: past it the replica's figure
/// is bad enough.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A key's merged versions, as a repair writes them to a replica.
#[derive(Clone, Copy)]
struct Merged<'a> {
    bucket: &'a str,
    key: &'a [u8],
    versions: &'a Dvvs,
    conflicts: Conflicts,
}

/// One client read.
pub struct ReadArgs {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: Vec<u8>,
    /// The bucket's properties.
    pub props: BucketProps,
    /// The read consistency.
    pub r: Consistency,
    /// The request's deadline.
    pub timeout: Duration,
    /// The timeline, when asked for.
    pub trace: Option<Trace>,
}

/// A replica's answer as it reaches the read: who, and what.
type Answer = (NodeId, Result<Got, PeerError>);

/// The I/O side of a read: asks replicas — this node inline, another
/// over RPC in a task that reports on the channel — and logs what they
/// answer to the trace. What to ask and when is [`Gather`]'s decision.
struct Asker<'a> {
    node: &'a Arc<Coordinator>,
    a: &'a ReadArgs,
    deadline: Instant,
    /// Where asked replicas answer; made by the first remote ask (a read
    /// of this node's copy alone needs none).
    answers: Option<(mpsc::Sender<Answer>, mpsc::Receiver<Answer>)>,
    /// How many replicas one read may ask at most (the channel's bound).
    most: usize,
}

impl Asker<'_> {
    /// Asks one replica; this node's own copy is read inline and its
    /// answer returned at once.
    async fn ask(&mut self, ask: Ask) -> Option<Answer> {
        let (node, a) = (self.node, self.a);
        let (target, digest) = match ask {
            Ask::Versions(n) => (n, false),
            Ask::Digest(n) => (n, true),
        };
        if *target == *node.replica.id() {
            let local = node.faults.local((Leg::R, Leg::S), async {
                node.replica.read(&a.bucket, &a.key)
            });
            let result = match tokio::time::timeout_at(self.deadline, local).await {
                Err(_) => Err(PeerError::Timeout(0)),
                Ok(Err(e)) => Err(PeerError::Remote(RemoteError::Storage(e.to_string()))),
                Ok(Ok(o)) => Ok(Got::Full(o)),
            };
            return Some((target, result));
        }
        note(&a.trace, || {
            format!(
                "asking {target}{}",
                if digest { " for a digest" } else { "" }
            )
        });
        let req = Request::Read {
            bucket: a.bucket.clone(),
            key: a.key.clone(),
            digest,
        };
        let most = self.most;
        let (tx, _) = self.answers.get_or_insert_with(|| mpsc::channel(most));
        let (node, tx) = (node.clone(), tx.clone());
        let left = self.deadline.saturating_duration_since(Instant::now());
        self.node.tasks.spawn(async move {
            let sent = Instant::now();
            let result = node.peers.call(&target, req, left).await;
            node.latencies
                .record(&target, sent.elapsed(), result.is_ok(), Sampled::Asked);
            let result = match result {
                Ok(Response::Object(o)) => match o.as_ref().map(Encoded::decode).transpose() {
                    Ok(o) => Ok(Got::Full(o)),
                    Err(e) => Err(PeerError::Remote(RemoteError::Bad(format!(
                        "versions that do not decode: {e}"
                    )))),
                },
                Ok(Response::Digest(d)) => Ok(Got::Digest(d)),
                Ok(other) => Err(PeerError::Remote(RemoteError::Bad(format!(
                    "unexpected answer {other:?}"
                )))),
                Err(e) => Err(e),
            };
            let _ = tx.send((target, result)).await;
        });
        None
    }

    /// Logs `answer` to the trace and hands it to the gather.
    fn take(&self, g: &mut Gather, (from, result): Answer) -> Step {
        let trace = &self.a.trace;
        match &result {
            Ok(Got::Full(o)) => note(trace, || {
                format!(
                    "{from} answered: {}",
                    o.as_ref().map_or("nothing".to_string(), |o| format!(
                        "{} versions",
                        o.sibling_count()
                    ))
                )
            }),
            Ok(Got::Digest(_)) => note(trace, || format!("{from} answered a digest")),
            Err(e) => note(trace, || format!("{from} failed: {e}")),
        }
        g.on_answer(&from, result.map_err(|e| e.to_string()))
    }

    /// Asks every replica of `asks`; feeds the inline answers to `g` and
    /// returns its step after them.
    async fn ask_all(&mut self, g: &mut Gather, asks: Vec<Ask>) -> Step {
        let mut inline = Vec::new();
        for ask in asks {
            inline.extend(self.ask(ask).await);
        }
        let mut step = g.step();
        for answer in inline {
            step = self.take(g, answer);
        }
        step
    }
}

impl Coordinator {
    /// Reads a key at consistency `r`; `None` when no replica has a version.
    pub async fn read(self: &Arc<Self>, a: ReadArgs) -> Result<Option<Dvvs>, QuorumError> {
        let required = a.r.required(a.props.n, "r")?;
        let deadline = Instant::now() + a.timeout;
        let p = self.placement(&a.bucket, &a.key, &a.props);
        Quorum::check(&a.bucket, a.props.n, &p, required)?;
        let me = self.replica.id();
        let order = read_order(&p, me, |n| self.standing(n));
        note(&a.trace, || {
            format!("reading r={required} from [{}]", order.join(", "))
        });
        // The replicas this read will not ask at first, when no read
        // asked them for a while: a probe refreshes their figure.
        for n in order.iter().skip(required) {
            let replica = p
                .targets
                .iter()
                .any(|t| t.node == *n && t.hint_for.is_none());
            if replica && **n != *me && self.latencies.claim_probe(n) {
                note(&a.trace, || format!("probing {n}"));
                self.probe(n.clone(), &a);
            }
        }

        let mut io = Asker {
            node: self,
            a: &a,
            deadline,
            answers: None,
            most: order.len().max(1),
        };
        let (mut g, first) = Gather::start(order, required, self.options.read_digests);
        let mut step = io.ask_all(&mut g, first).await;
        // With no speculation the timer is the deadline itself.
        let mut speculate_at = match a.props.speculative_retry {
            SpeculativeRetry::Auto => Instant::now() + self.latencies.speculation_delay(),
            SpeculativeRetry::After(ms) => Instant::now() + Duration::from_millis(ms.into()),
            SpeculativeRetry::Off => deadline,
        };
        loop {
            match step {
                Step::Done => break,
                Step::Failed(s) => {
                    let acks = s.acks;
                    return Err(s.into_timeout(format!(
                        "{acks} of {required} replicas answered; the others failed"
                    )));
                }
                Step::Ask(asks) => {
                    step = io.ask_all(&mut g, asks).await;
                    continue;
                }
                Step::Wait => {}
            }
            let wake = speculate_at.min(deadline);
            // Nothing is waiting without the channel (only remote asks wait).
            let next = async {
                match &mut io.answers {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            step = match tokio::time::timeout_at(wake, next).await {
                Err(_) if Instant::now() >= deadline => {
                    let s = g.on_deadline();
                    return Err(timeout_error(
                        required,
                        s.acks,
                        s.failed,
                        "retry, or ask for a lower r",
                    ));
                }
                Err(_) => {
                    speculate_at = deadline;
                    let step = g.on_slow();
                    if let Step::Ask(asks) = &step {
                        self.metrics.speculative_spares.inc();
                        note(&a.trace, || {
                            let names: Vec<&str> = asks
                                .iter()
                                .map(|a| match a {
                                    Ask::Versions(n) | Ask::Digest(n) => &**n,
                                })
                                .collect();
                            format!("slow replicas; also asking {}", names.join(", "))
                        });
                    }
                    step
                }
                // `io.answers` holds a sender until the end of this
                // function: the channel cannot close here.
                Ok(None) => Step::Wait,
                Ok(Some(answer)) => io.take(&mut g, answer),
            };
        }

        if a.props.conflicts == Conflicts::Siblings
            && let Some(only) = g.take_single()
        {
            // One answer (r=1, the common single-replica read): it is the
            // merge, and no replica read can be stale against it. Take it
            // rather than copy it.
            note(&a.trace, || "answering".to_string());
            return Ok(only.filter(|o| !o.is_empty()));
        }
        // Digests that differ from the merge: fetch those replicas' versions.
        let lww = a.props.conflicts == Conflicts::Lww;
        let mut merged = g.merged(lww);
        let differing = g.differing(merged.as_ref());
        if !differing.is_empty() {
            note(&a.trace, || {
                format!("digests differ: [{}]", differing.join(", "))
            });
            let fetches = differing.iter().map(|n| {
                let req = Request::Read {
                    bucket: a.bucket.clone(),
                    key: a.key.clone(),
                    digest: false,
                };
                let left = deadline.saturating_duration_since(Instant::now());
                async move { (n.clone(), self.peers.call(n, req, left).await) }
            });
            for (n, r) in futures::future::join_all(fetches).await {
                match r {
                    Ok(Response::Object(o))
                        if let Ok(o) = o.as_ref().map(Encoded::decode).transpose() =>
                    {
                        g.add_fetched(n, o)
                    }
                    Ok(_) | Err(_) => {
                        // Its digest said it differs: repair it with the merge.
                        g.add_fetched(n, None);
                    }
                }
            }
            merged = g.merged(lww);
        }
        let stale = g.stale(&merged);
        if let Some(m) = &merged
            && !stale.is_empty()
        {
            note(&a.trace, || format!("stale: [{}]", stale.join(", ")));
            match a.props.read_repair {
                ReadRepair::Blocking => {
                    let repairs = stale.iter().map(|n| {
                        self.repair(
                            n,
                            Merged {
                                bucket: &a.bucket,
                                key: &a.key,
                                versions: m,
                                conflicts: a.props.conflicts,
                            },
                            deadline,
                            RepairKind::Blocking,
                            &a.trace,
                        )
                    });
                    futures::future::join_all(repairs).await;
                }
                ReadRepair::Async => {
                    for n in stale {
                        let (node, bucket, key, m, trace) = (
                            self.clone(),
                            a.bucket.clone(),
                            a.key.clone(),
                            m.clone(),
                            a.trace.clone(),
                        );
                        let until = Instant::now() + a.timeout;
                        let conflicts = a.props.conflicts;
                        self.tasks.spawn(async move {
                            node.repair(
                                &n,
                                Merged {
                                    bucket: &bucket,
                                    key: &key,
                                    versions: &m,
                                    conflicts,
                                },
                                until,
                                RepairKind::Async,
                                &trace,
                            )
                            .await;
                        });
                    }
                }
                ReadRepair::Off => {}
            }
        }
        if !g.waiting().is_empty() && a.props.read_repair != ReadRepair::Off {
            // Spares asked but not needed: repair them too when they answer.
            let (node, bucket, key, merged) = (
                self.clone(),
                a.bucket.clone(),
                a.key.clone(),
                merged.clone(),
            );
            let conflicts = a.props.conflicts;
            // Only remote asks wait, and they made the channel. Without our
            // sender it closes once the last of them has answered.
            let Some((_, mut rx)) = io.answers.take() else {
                return Ok(merged);
            };
            self.tasks.spawn(async move {
                while let Ok(Some((from, Ok(Got::Full(theirs))))) =
                    tokio::time::timeout_at(deadline, rx.recv()).await
                {
                    if let Some(m) = &merged
                        && theirs.as_ref() != Some(m)
                    {
                        node.repair(
                            &from,
                            Merged {
                                bucket: &bucket,
                                key: &key,
                                versions: m,
                                conflicts,
                            },
                            deadline,
                            RepairKind::Background,
                            &None,
                        )
                        .await;
                    }
                }
            });
        }
        note(&a.trace, || "answering".to_string());
        Ok(merged)
    }

    /// Sends replica `n` a digest read of `a`'s key whose only use is its
    /// duration ([`Sampled::Probe`]); nobody waits for it.
    fn probe(self: &Arc<Self>, n: NodeId, a: &ReadArgs) {
        let req = Request::Read {
            bucket: a.bucket.clone(),
            key: a.key.clone(),
            digest: true,
        };
        let node = self.clone();
        self.tasks.spawn(async move {
            let sent = Instant::now();
            let ok = node.peers.call(&n, req, PROBE_TIMEOUT).await.is_ok();
            node.latencies
                .record(&n, sent.elapsed(), ok, Sampled::Probe);
        });
    }

    /// Brings one replica up to `merged`.
    async fn repair(
        self: &Arc<Self>,
        target: &str,
        m: Merged<'_>,
        deadline: Instant,
        kind: RepairKind,
        trace: &Option<Trace>,
    ) {
        let Merged {
            bucket,
            key,
            versions: merged,
            conflicts,
        } = m;
        let result = if target == self.replica.id() {
            self.replica
                .merge(bucket, key, merged, conflicts)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            let req = Request::Replicate {
                bucket: bucket.to_string(),
                key: key.to_vec(),
                object: Encoded::of(merged),
                hint_for: None,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match self.peers.call(target, req, left).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        };
        match result {
            Ok(()) => {
                self.metrics.repaired(kind);
                note(trace, || format!("repaired {target} ({})", kind.label()));
            }
            Err(e) => note(trace, || format!("repair of {target} failed: {e}")),
        }
    }
}
