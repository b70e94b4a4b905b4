//! The coordinator: turns a client's read or write into work on the key's
//! replicas and decides, by counting, whether it succeeded.
//!
//! The counting is a small pure type, [`Quorum`]: given the preference
//! list, which of its replicas are alive and how many must answer, it
//! either names the replicas to ask or refuses at once with `unavailable`
//! (nothing is written when too few replicas are alive: a write that could
//! never reach W must not half-happen). The async part asks the replicas
//! under the request's deadline; a deadline that passes is `timeout`.
//!
//! Implementation caveats: until internode RPC lands, only this node's own
//! replica can be asked, so a preference list naming other nodes counts
//! them as not alive.

use std::time::Duration;

use crate::buckets::{BucketProps, Consistency};
use crate::error::{ApiError, ReplicaFailure};
use crate::replica::{Mutation, Replica};
use crate::server::Node;
use crate::version::{Context, Dvvs};

/// The replicas a request will use, once enough of them are alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// Replicas that must answer.
    pub required: usize,
    /// The live replicas of the preference list, in preference order.
    pub targets: Vec<String>,
}

impl Quorum {
    /// Checks that at least `required` of `replicas` are alive.
    ///
    /// `n` is the bucket's replica count and `bucket` its name, used only to
    /// explain a refusal (the preference list is shorter than `n` when the
    /// ring has fewer nodes).
    pub fn plan(
        bucket: &str,
        n: u32,
        replicas: &[String],
        required: usize,
        alive: impl Fn(&str) -> bool,
    ) -> Result<Quorum, ApiError> {
        let targets: Vec<String> = replicas.iter().filter(|r| alive(r)).cloned().collect();
        if targets.len() >= required {
            return Ok(Quorum { required, targets });
        }
        let failed = replicas
            .iter()
            .filter(|r| !alive(r))
            .map(|r| ReplicaFailure {
                node: r.clone(),
                reason: "down".into(),
            })
            .collect();
        let message = if replicas.len() < n as usize {
            format!(
                "bucket {bucket:?} has n={n} but the ring holds only {} node(s): {} of {} required replicas alive. \
                 Start more nodes, or give the bucket a smaller n (PUT /buckets/{bucket} {{\"n\":{}}}) before it holds data",
                replicas.len(),
                targets.len(),
                required,
                replicas.len().max(1)
            )
        } else {
            format!(
                "{} of {} required replicas alive for this key (n={n}); retry when the down replicas return, or ask for a lower r/w",
                targets.len(),
                required
            )
        };
        Err(ApiError::Unavailable {
            required,
            alive: targets.len(),
            message,
            failed,
        })
    }
}

fn timeout_error(required: usize, acks: usize, node: &str, timeout: Duration) -> ApiError {
    ApiError::Timeout {
        required,
        acks,
        message: format!(
            "{acks} of {required} replicas answered within {} ms; a write may still be applied later",
            timeout.as_millis()
        ),
        failed: vec![ReplicaFailure {
            node: node.to_string(),
            reason: "no answer before the deadline".into(),
        }],
    }
}

/// Whether this coordinator can use replica `r`: alive, and — until
/// internode RPC lands — this node itself, so that a write is never
/// acknowledged for more replicas than actually stored it.
fn reachable(node: &Node, r: &str) -> bool {
    r == node.replica.id() && node.cluster.is_alive(r)
}

fn replicas_for(node: &Node, bucket: &str, key: &[u8], n: u32) -> Vec<String> {
    let token = quorumkv_ring::token_of(bucket.as_bytes(), key);
    node.cluster.ring().preference_list(token, n as usize)
}

fn local_target<'a>(node: &'a Node, q: &Quorum) -> Result<&'a Replica, ApiError> {
    let me = node.replica.id();
    if q.targets.iter().any(|t| t == me) {
        Ok(&node.replica)
    } else {
        Err(ApiError::Unavailable {
            required: q.required,
            alive: 0,
            message: format!(
                "this node ({me}) is not a replica of the key and cannot reach the replicas yet"
            ),
            failed: q
                .targets
                .iter()
                .map(|t| ReplicaFailure {
                    node: t.clone(),
                    reason: "unreachable from this node".into(),
                })
                .collect(),
        })
    }
}

/// Reads a key at consistency `r`; `None` when no replica has a version.
pub async fn read(
    node: &Node,
    bucket: &str,
    key: &[u8],
    props: &BucketProps,
    r: Consistency,
    timeout: Duration,
) -> Result<Option<Dvvs>, ApiError> {
    let required = r.required(props.n, "r")?;
    let replicas = replicas_for(node, bucket, key, props.n);
    let q = Quorum::plan(bucket, props.n, &replicas, required, |r| reachable(node, r))?;
    let replica = local_target(node, &q)?;
    let me = replica.id().to_string();
    let fut = async {
        node.faults.storage_delay().await;
        replica.read(bucket, key)
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(timeout_error(required, 0, &me, timeout)),
        Ok(Err(e)) => Err(ApiError::storage(&me, required, e)),
        Ok(Ok(found)) => Ok(found),
    }
}

/// Writes (or deletes) a key at consistency `w`; the key's versions after
/// the write.
#[allow(clippy::too_many_arguments)]
pub async fn write(
    node: &Node,
    bucket: &str,
    key: &[u8],
    props: &BucketProps,
    ctx: &Context,
    mutation: Mutation,
    w: Consistency,
    timeout: Duration,
) -> Result<Dvvs, ApiError> {
    let required = w.required(props.n, "w")?;
    let replicas = replicas_for(node, bucket, key, props.n);
    let q = Quorum::plan(bucket, props.n, &replicas, required, |r| reachable(node, r))?;
    let replica = local_target(node, &q)?;
    let me = replica.id().to_string();
    // The bucket exists from its first write on, and its n is frozen then.
    node.buckets
        .mark_has_data(bucket)
        .await
        .map_err(|e| ApiError::storage(&me, required, e))?;
    let fut = async {
        node.faults.storage_delay().await;
        replica
            .write(bucket, key, ctx, mutation, props.conflicts)
            .await
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(timeout_error(required, 0, &me, timeout)),
        Ok(Err(e)) => Err(ApiError::storage(&me, required, e)),
        Ok(Ok(outcome)) => {
            if outcome.lww_dropped > 0 {
                node.metrics.lww_dropped.inc_by(outcome.lww_dropped as u64);
            }
            Ok(outcome.object)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quorum_counts_live_replicas_in_preference_order() {
        let replicas = names(&["a", "b", "c"]);
        let q = Quorum::plan("default", 3, &replicas, 2, |r| r != "b").expect("2 of 3 alive");
        assert_eq!(q.targets, names(&["a", "c"]));
        let err = Quorum::plan("default", 3, &replicas, 3, |r| r != "b").expect_err("all");
        let body = err.body();
        assert_eq!(
            (body["required"].as_u64(), body["alive"].as_u64()),
            (Some(3), Some(2))
        );
        assert_eq!(body["failed"][0]["node"], "b");
    }

    #[test]
    fn a_ring_smaller_than_n_says_how_to_fix_it() {
        let err = Quorum::plan("default", 3, &names(&["a"]), 2, |_| true).expect_err("1 < 2");
        let msg = err.to_string();
        assert!(msg.contains("n=3") && msg.contains("\"n\":1"), "{msg}");
        assert_eq!(err.status(), 503);
    }

    #[test]
    fn an_empty_ring_is_unavailable() {
        let err = Quorum::plan("default", 1, &[], 1, |_| true).expect_err("no nodes");
        assert_eq!(err.code(), "unavailable");
    }
}
