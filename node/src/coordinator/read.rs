//! The read path: ask R of the key's live replicas (this node first when
//! it is one), ask a spare when one fails or is slow, merge what R of them
//! answer with DVVSet sync, and repair the replicas that answered stale
//! versions — before answering (`blocking`, the default: quorum reads
//! become monotonic), after answering (`async`), or not at all (`off`).
//!
//! Every replica answers with its full versions, not a digest: with
//! values of typical size the versions cost little more to send than a
//! digest, and a digest mismatch would cost a second round trip to fetch
//! them (docs/CONSISTENCY.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::trace::{Trace, note};
use super::{Quorum, placement, timeout_error};
use crate::buckets::{BucketProps, Conflicts, Consistency, ReadRepair};
use crate::error::{ApiError, ReplicaFailure};
use crate::metrics::RepairKind;
use crate::peers::{self, PeerError};
use crate::proto::{RemoteError, Request, Response};
use crate::server::Node;
use crate::version::Dvvs;

/// A spare replica is asked when an asked one has not answered after this
/// long: one slow or paused replica should not cost the whole timeout.
const SPECULATE_AFTER: Duration = Duration::from_millis(100);

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

type Answer = (String, Result<Option<Dvvs>, PeerError>);

/// Reads a key at consistency `r`; `None` when no replica has a version.
pub async fn read(node: &Arc<Node>, a: ReadArgs) -> Result<Option<Dvvs>, ApiError> {
    let required = a.r.required(a.props.n, "r")?;
    let deadline = Instant::now() + a.timeout;
    let p = placement(node, &a.bucket, &a.key, &a.props);
    Quorum::check(&a.bucket, a.props.n, &p, required)?;
    let me = node.replica.id().to_string();
    // This node first: its copy costs no round trip.
    let mut order: Vec<String> = p.targets.iter().map(|t| t.node.clone()).collect();
    if let Some(i) = order.iter().position(|n| *n == me) {
        let mine = order.remove(i);
        order.insert(0, mine);
    }
    note(&a.trace, || {
        format!("reading r={required} from [{}]", order.join(", "))
    });

    let (tx, mut rx) = mpsc::channel::<Answer>(order.len().max(1));
    let mut spares = order.into_iter();
    let mut waiting: Vec<String> = Vec::new();
    let mut answers: Vec<(String, Option<Dvvs>)> = Vec::new();
    let mut failed: Vec<ReplicaFailure> = Vec::new();
    for _ in 0..required {
        if let Some(n) = spares.next() {
            ask(
                node,
                &a,
                &n,
                deadline,
                &tx,
                &mut waiting,
                &mut answers,
                &mut failed,
            )
            .await;
        }
    }
    let mut speculate_at = Instant::now() + SPECULATE_AFTER;
    while answers.len() < required {
        if answers.len() + waiting.len() < required {
            // Ask a spare for every replica that failed.
            match spares.next() {
                Some(n) => {
                    ask(
                        node,
                        &a,
                        &n,
                        deadline,
                        &tx,
                        &mut waiting,
                        &mut answers,
                        &mut failed,
                    )
                    .await;
                    continue;
                }
                None if waiting.is_empty() => {
                    return Err(ApiError::Timeout {
                        required,
                        acks: answers.len(),
                        message: format!(
                            "{} of {required} replicas answered; the others failed",
                            answers.len()
                        ),
                        failed,
                    });
                }
                None => {}
            }
        }
        let wake = speculate_at.min(deadline);
        match tokio::time::timeout_at(wake.into(), rx.recv()).await {
            Err(_) if Instant::now() >= deadline => {
                failed.extend(waiting.drain(..).map(|n| ReplicaFailure {
                    node: n,
                    reason: "no answer before the deadline".into(),
                }));
                return Err(timeout_error(required, answers.len(), failed, deadline));
            }
            Err(_) => {
                speculate_at = deadline;
                if let Some(n) = spares.next() {
                    note(&a.trace, || format!("slow replicas; also asking {n}"));
                    ask(
                        node,
                        &a,
                        &n,
                        deadline,
                        &tx,
                        &mut waiting,
                        &mut answers,
                        &mut failed,
                    )
                    .await;
                }
            }
            // `tx` lives in this function: the channel cannot close here.
            Ok(None) => {}
            Ok(Some((from, result))) => {
                waiting.retain(|n| *n != from);
                take(&a.trace, from, result, &mut answers, &mut failed);
            }
        }
    }

    let mut merged = answers
        .iter()
        .filter_map(|(_, o)| o.as_ref())
        .fold(Dvvs::default(), |acc, o| acc.sync(o));
    if a.props.conflicts == Conflicts::Lww {
        merged.resolve_lww();
    }
    let merged = (!merged.is_empty()).then_some(merged);
    let stale: Vec<String> = answers
        .iter()
        .filter(|(_, o)| *o != merged)
        .map(|(n, _)| n.clone())
        .collect();
    if let Some(m) = &merged
        && !stale.is_empty()
    {
        note(&a.trace, || format!("stale: [{}]", stale.join(", ")));
        match a.props.read_repair {
            ReadRepair::Blocking => {
                let repairs = stale.iter().map(|n| {
                    repair(
                        node,
                        n,
                        &a.bucket,
                        &a.key,
                        m,
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
                        node.clone(),
                        a.bucket.clone(),
                        a.key.clone(),
                        m.clone(),
                        a.trace.clone(),
                    );
                    let until = Instant::now() + a.timeout;
                    tokio::spawn(async move {
                        repair(
                            &node,
                            &n,
                            &bucket,
                            &key,
                            &m,
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
    if !waiting.is_empty() && a.props.read_repair != ReadRepair::Off {
        // Spares asked but not needed: repair them too when they answer.
        let (node, bucket, key, merged) = (
            node.clone(),
            a.bucket.clone(),
            a.key.clone(),
            merged.clone(),
        );
        tokio::spawn(async move {
            while let Ok(Some((from, Ok(theirs)))) =
                tokio::time::timeout_at(deadline.into(), rx.recv()).await
            {
                if let Some(m) = &merged
                    && theirs.as_ref() != Some(m)
                {
                    repair(
                        &node,
                        &from,
                        &bucket,
                        &key,
                        m,
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

fn take(
    trace: &Option<Trace>,
    from: String,
    result: Result<Option<Dvvs>, PeerError>,
    answers: &mut Vec<(String, Option<Dvvs>)>,
    failed: &mut Vec<ReplicaFailure>,
) {
    match result {
        Ok(o) => {
            note(trace, || {
                format!(
                    "{from} answered: {}",
                    o.as_ref().map_or("nothing".to_string(), |o| format!(
                        "{} versions",
                        o.sibling_count()
                    ))
                )
            });
            answers.push((from, o));
        }
        Err(e) => {
            note(trace, || format!("{from} failed: {e}"));
            failed.push(ReplicaFailure {
                node: from,
                reason: e.to_string(),
            });
        }
    }
}

/// Asks one replica: this node inline, another over RPC in a task that
/// reports on `tx`.
#[allow(clippy::too_many_arguments)]
async fn ask(
    node: &Arc<Node>,
    a: &ReadArgs,
    target: &str,
    deadline: Instant,
    tx: &mpsc::Sender<Answer>,
    waiting: &mut Vec<String>,
    answers: &mut Vec<(String, Option<Dvvs>)>,
    failed: &mut Vec<ReplicaFailure>,
) {
    if target == node.replica.id() {
        let local = async {
            node.faults.storage_delay().await;
            node.replica.read(&a.bucket, &a.key)
        };
        let result = match tokio::time::timeout_at(deadline.into(), local).await {
            Err(_) => Err(PeerError::Timeout(0)),
            Ok(Err(e)) => Err(PeerError::Remote(RemoteError::Storage(e.to_string()))),
            Ok(Ok(o)) => Ok(o),
        };
        take(&a.trace, target.to_string(), result, answers, failed);
        return;
    }
    note(&a.trace, || format!("asking {target}"));
    waiting.push(target.to_string());
    let req = Request::Read {
        bucket: a.bucket.clone(),
        key: a.key.clone(),
        digest: false,
    };
    let (node, target, tx) = (node.clone(), target.to_string(), tx.clone());
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::spawn(async move {
        let result = match peers::call(&node, &target, req, left).await {
            Ok(Response::Object(o)) => Ok(o),
            Ok(other) => Err(PeerError::Remote(RemoteError::Bad(format!(
                "unexpected answer {other:?}"
            )))),
            Err(e) => Err(e),
        };
        let _ = tx.send((target, result)).await;
    });
}

/// Brings one replica up to `merged`.
#[allow(clippy::too_many_arguments)]
async fn repair(
    node: &Arc<Node>,
    target: &str,
    bucket: &str,
    key: &[u8],
    merged: &Dvvs,
    deadline: Instant,
    kind: RepairKind,
    trace: &Option<Trace>,
) {
    let props = node.buckets.props_for_keys(bucket);
    let result = if target == node.replica.id() {
        node.replica
            .merge(bucket, key, merged, props.conflicts)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        let req = Request::Replicate {
            bucket: bucket.to_string(),
            key: key.to_vec(),
            object: merged.clone(),
            hint_for: None,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match peers::call(node, target, req, left).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    match result {
        Ok(()) => {
            node.metrics.repaired(kind);
            note(trace, || format!("repaired {target} ({})", kind.label()));
        }
        Err(e) => note(trace, || format!("repair of {target} failed: {e}")),
    }
}
