//! `GET /cluster/ranges`: this node's keys and bytes per ring range.
//!
//! Plans (`qkv ring plan`) estimate what a change streams by prorating
//! these figures over the moving ranges, and the streams of a change report
//! their `bytes_estimate` from the same counting (one function,
//! [`crate::stream::serve::count`]), so the two compare like with like. Counting is one token-ordered scan per range of the current
//! ring (paged, off the async runtime), computed on request: the figures
//! are exact for the moment of the scan and nothing is cached that could go
//! stale. Bytes are stored value bytes (the encoded version sets), the same
//! measure as the `qkv_bytes_stored` metric, so the ranges of a node sum to
//! its metrics.
//!
//! Listed: every range of the ring where this node holds data or is a
//! replica at the default `n` (a range it replicates but holds nothing of
//! is listed with zeros, so "empty" and "not mine" read differently).

use quorumkv_ring::Ring;
use serde::Serialize;
use serde_json::json;
use warp::http::Method;

use super::Api;
use super::request::Request;
use super::{Reply, json};
use crate::error::ApiError;
use crate::storage::{StorageError, Store};

/// One range of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RangeCount {
    /// Exclusive start of the range.
    pub start: u64,
    /// Inclusive end of the range.
    pub end: u64,
    /// Keys stored in the range (tombstones included).
    pub keys: u64,
    /// Value bytes stored in the range.
    pub bytes: u64,
}

/// `GET /cluster/ranges`.
pub async fn ranges(api: &Api, req: Request) -> Reply {
    if req.method != Method::GET {
        return Err(ApiError::MethodNotAllowed(req.method.to_string()));
    }
    // The request holds the body stream, which is not `Sync`: it must not
    // live across the scan's await.
    drop(req);
    let me = api.replica.id().to_string();
    let ring = api.cluster.ring();
    let n = api.config.default_n as usize;
    let store = api.replica.store().clone();
    let who = me.clone();
    let counted = crate::storage::blocking(move || count_ranges(&store, &ring, &who, n))
        .await
        .map_err(|e| ApiError::storage(&me, 1, e))?;
    Ok(json(200, &json!({"node": me, "ranges": counted})))
}

/// Keys and bytes of every range of `ring` that `me` replicates at `n` or
/// holds data in, in token order.
pub fn count_ranges(
    store: &Store,
    ring: &Ring,
    me: &str,
    n: usize,
) -> Result<Vec<RangeCount>, StorageError> {
    let mut out = Vec::new();
    for rr in ring.ranges(n) {
        let (keys, bytes) = crate::stream::serve::count(store, rr.range)?;
        if keys > 0 || rr.replicas.iter().any(|r| r == me) {
            out.push(RangeCount {
                start: rr.range.start,
                end: rr.range.end,
                keys,
                bytes,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ranges_sum_to_the_store_and_skip_ranges_neither_held_nor_replicated() {
        let store = Store::memory();
        // More than a page, so paging is exercised.
        for i in 0..(crate::merkle::scan::PAGE * 2 + 7) {
            let key = format!("k{i}");
            store
                .put("b", key.as_bytes(), vec![0u8; 10 + i % 5])
                .await
                .expect("put");
        }
        let q = 1u64 << 62;
        let mut ring = Ring::new();
        ring.insert_node("a", &[q, 3 * q]);
        ring.insert_node("b", &[2 * q, u64::MAX]);
        let (total_keys, total_bytes) = store.count_data().expect("count");
        // rf 2 on two nodes: "a" replicates all four ranges.
        let all = count_ranges(&store, &ring, "a", 2).expect("count");
        assert_eq!(all.len(), 4);
        assert_eq!(all.iter().map(|r| r.keys).sum::<u64>(), total_keys);
        assert_eq!(all.iter().map(|r| r.bytes).sum::<u64>(), total_bytes);
        // Every range holds data here, so even a non-replica lists them.
        let other = count_ranges(&store, &ring, "zz", 1).expect("count");
        assert_eq!(other, all);
        // An empty store lists only the ranges this node replicates.
        let empty = Store::memory();
        let mine = count_ranges(&empty, &ring, "a", 1).expect("count");
        assert_eq!(
            mine.iter().map(|r| r.end).collect::<Vec<_>>(),
            vec![q, 3 * q]
        );
        assert!(mine.iter().all(|r| r.keys == 0 && r.bytes == 0));
    }

    #[tokio::test]
    async fn a_wrapping_range_counts_both_ends() {
        let store = Store::memory();
        for i in 0..200 {
            store
                .put("b", format!("k{i}").as_bytes(), vec![1u8; 3])
                .await
                .expect("put");
        }
        let whole = quorumkv_ring::TokenRange { start: 7, end: 7 };
        assert_eq!(
            crate::stream::serve::count(&store, whole).expect("count"),
            (200, 600)
        );
    }
}
