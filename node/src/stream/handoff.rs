//! A leaving node's hints for nodes that are down: handed to live nodes
//! before it leaves, so the writes they carry still reach their target
//! when it returns (hints for live nodes are simply replayed first).
//!
//! Each hint goes to its *heir*: the first live node of the key's
//! preference list on the ring after the change (not this node, not the
//! target), as a [`Request::Replicate`] with `hint_for` — the way a
//! sloppy-quorum stand-in receives a write: the heir merges the versions
//! (it is, or will be, a replica of the key, so the copy is no waste) and
//! stores a durable hint for the target, which its own replayer delivers
//! when the target is back. A hint no live node takes stays here, and is
//! counted in the log: anti-entropy repairs what it carried.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::hints::Hint;
use crate::proto::{Encoded, Request, Response};
use crate::server::Node;

/// How long one heir may take to store one hint.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// The live node that inherits `hint`: first of the key's future (else
/// current) preference list that is alive and neither this node nor the
/// target; else any other live member.
fn heir(node: &Node, hint: &Hint) -> Option<String> {
    let me = node.replica.id();
    let usable = |n: &str| n != me && n != hint.target && node.cluster.is_alive(n);
    let (current, future) = node.cluster.rings();
    let ring = future.unwrap_or(current);
    let n = node.buckets.props_for_keys(&hint.bucket).n as usize;
    let token = quorumkv_ring::token_of(hint.bucket.as_bytes(), &hint.key);
    ring.preference_list_refs(token, ring.node_count())
        .into_iter()
        .take(n.max(1))
        .find(|c| usable(c))
        .map(str::to_string)
        .or_else(|| node.cluster.others().into_iter().find(|c| usable(c)))
}

/// Hands every hint held for a down node to its heir. Returns (handed
/// over, left here).
pub async fn hand_off_down(node: &Arc<Node>) -> (u64, u64) {
    let (mut moved, mut kept) = (0, 0);
    for (target, count) in node.hints.pending() {
        if count == 0 || node.cluster.is_alive(&target) {
            continue;
        }
        let report = node
            .hints
            .replay(&target, |hint| {
                let node = node.clone();
                async move {
                    let heir = heir(&node, &hint).ok_or("no live node to take the hint")?;
                    let req = Request::Replicate {
                        bucket: hint.bucket,
                        key: hint.key,
                        object: Encoded::of(&hint.object),
                        hint_for: Some(hint.target),
                    };
                    match node.peers.call(&heir, req, HANDOFF_TIMEOUT).await {
                        Ok(Response::Ack) => Ok(()),
                        Ok(other) => Err(format!("{heir} answered {other:?}")),
                        Err(e) => Err(format!("{heir}: {e}")),
                    }
                }
            })
            .await;
        match report {
            Ok(r) => {
                moved += r.delivered;
                if let Some(why) = r.failure {
                    warn!(target = %target, error = %why, "hint handoff stopped");
                }
            }
            Err(e) => warn!(target = %target, error = %e, "hint handoff failed"),
        }
        kept += node.hints.pending_for(&target);
    }
    if moved + kept > 0 {
        info!(
            handed_over = moved,
            left_here = kept,
            "hints for down nodes handed to live nodes before leaving"
        );
    }
    (moved, kept)
}
