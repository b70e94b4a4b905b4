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

use super::ChangeDriver;
use crate::hints::Hint;
use crate::proto::{Encoded, Request, Response};

/// How long one heir may take to store one hint.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

impl ChangeDriver {
    /// The live node that inherits `hint`: first of the key's future (else
    /// current) preference list that is alive and neither this node nor the
    /// target; else any other live member.
    fn heir(self: &Arc<Self>, hint: &Hint) -> Option<String> {
        let me = self.replica.id();
        let usable = |n: &str| n != me && n != hint.target && self.cluster.is_alive(n);
        let (current, future) = self.cluster.rings();
        let ring = future.unwrap_or(current);
        let n = self.buckets.props_for_keys(&hint.bucket).n as usize;
        let token = quorumkv_ring::token_of(hint.bucket.as_bytes(), &hint.key);
        ring.preference_list_refs(token, ring.node_count())
            .into_iter()
            .take(n.max(1))
            .find(|c| usable(c))
            .map(str::to_string)
            .or_else(|| self.cluster.others().into_iter().find(|c| usable(c)))
    }

    /// Hands every hint held for a down node to its heir. Returns (handed
    /// over, left here).
    pub async fn hand_off_down(self: &Arc<Self>) -> (u64, u64) {
        let (mut moved, mut kept) = (0, 0);
        for (target, count) in self.hints.pending() {
            if count == 0 || self.cluster.is_alive(&target) {
                continue;
            }
            let report = self
                .hints
                .replay(&target, |hint| {
                    let node = self.clone();
                    async move {
                        let heir = node.heir(&hint).ok_or("no live node to take the hint")?;
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
            kept += self.hints.pending_for(&target);
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
}
