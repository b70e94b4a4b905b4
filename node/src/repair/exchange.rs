//! One range with one peer: compare Merkle trees, then pull and merge
//! what differs and push what the peer lacks (see the module docs of
//! [`crate::repair`]); and the replica side of it, [`serve_tree`] and
//! [`serve_entries`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quorumkv_ring::TokenRange;

use super::Repairer;
use super::purge::past_grace;
use super::{RangeReport, RepairError};
use crate::merkle::scan::{decode_entry, spans};
use crate::merkle::{KeyFilter, MerkleTree, build_filtered};
use crate::proto::{Encoded, RangeEntry, RemoteError, Request, Response};
use crate::replica::WriteError;
use crate::storage::{StorageError, Store};
use crate::transport::PeerError;

/// Entries per [`Request::Entries`] page.
pub const PAGE: u32 = 256;
/// Stored bytes per [`Request::Entries`] page asked for, and the most one
/// is given whatever its asker says (a stream chunk's too): well within
/// the frame's envelope allowance, so that a page shares a frame with one
/// key of up to `--max-key-bytes` at most.
pub const MAX_PAGE_BYTES: u32 = 2 << 20;
/// Entries read from storage at a time while filling a page.
const SCAN: usize = 32;
/// How long a peer may take to build and send a tree.
const TREE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a peer may take to answer one page of entries.
const ENTRIES_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one pushed key may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// One page of the entries this node stores in `range`, in ring order,
/// resuming strictly after the stored data key `after`; and the cursor of
/// the next page (`None` when the range is exhausted). What
/// [`Request::Entries`] answers, and a stream chunk holds.
///
/// A page holds at most `limit` entries and `max_bytes` of stored bytes
/// (values, keys and bucket names), except that its first entry is taken
/// whatever its size: a key larger than the budget travels alone, so a
/// page never exceeds the larger of the budget and one key.
///
/// A stored value that is not a version set is [`StorageError::Corrupt`].
pub fn entries_page(
    store: &Store,
    range: TokenRange,
    after: Option<&[u8]>,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<RangeEntry>, Option<Vec<u8>>), StorageError> {
    let limit = limit.max(1);
    let spans = spans(range);
    // The cursor's token says which span it is in: spans before it are
    // done, the cursor applies to its own span only.
    let mut first = 0;
    if let Some(a) = after {
        let token = crate::storage::decode_data_key(a)
            .map(|(t, _, _)| t)
            .ok_or_else(|| StorageError::Corrupt("repair cursor is not a data key".into()))?;
        match spans
            .iter()
            .position(|&(lo, hi)| lo <= token && token <= hi)
        {
            Some(i) => first = i,
            None => return Ok((Vec::new(), None)),
        }
    }
    let mut out: Vec<RangeEntry> = Vec::new();
    let mut size = 0usize;
    let mut last_key: Option<Vec<u8>> = None;
    for (i, &(lo, hi)) in spans.iter().enumerate().skip(first) {
        let mut cursor = if i == first {
            after.map(<[u8]>::to_vec)
        } else {
            None
        };
        loop {
            let want = (limit - out.len()).min(SCAN);
            let scanned = store.scan_tokens(lo, hi, cursor.as_deref(), want)?;
            let more_here = scanned.len() == want;
            for e in scanned {
                let bytes = e.value.len() + e.key.len() + e.bucket.len();
                if !out.is_empty() && size.saturating_add(bytes) > max_bytes {
                    // Over the budget: this entry starts the next page.
                    return Ok((out, last_key));
                }
                size += bytes;
                let object = decode_entry(&e)?;
                last_key = Some(e.stored_key());
                out.push(RangeEntry {
                    bucket: e.bucket,
                    key: e.key,
                    object,
                });
            }
            if out.len() == limit {
                // The page is full: there may be more in this span or the next.
                return Ok((out, last_key));
            }
            if !more_here {
                break;
            }
            cursor = last_key.clone();
        }
    }
    Ok((out, None))
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, RepairError> {
    crate::storage::blocking(f)
        .await
        .map_err(|e| RepairError::Local(e.to_string()))
}

fn protocol(peer: &str, why: String) -> RepairError {
    RepairError::Protocol {
        peer: peer.to_string(),
        why,
    }
}

fn unexpected(peer: &str, wanted: &str, got: &Response) -> RepairError {
    let kind = match got {
        Response::Pong => "pong",
        Response::Written(_) => "a write reply",
        Response::Ack => "an ack",
        Response::Object(_) => "an object",
        Response::Digest(_) => "a digest",
        Response::Tree(_) => "a tree",
        Response::Entries { .. } => "entries",
        Response::Stream(_) => "a stream answer",
        Response::Tokens(_) => "tokens",
        Response::Figures(_) => "figures",
    };
    protocol(peer, format!("answered {kind} where {wanted} was expected"))
}

impl Repairer {
    /// Repairs `range` between this node and `peer`: compare trees at `depth`
    /// of the keys `filter` admits, then exchange the entries of the differing
    /// sub-ranges both ways.
    pub async fn repair_with(
        self: &Arc<Self>,
        peer: &str,
        range: TokenRange,
        depth: u8,
        filter: &KeyFilter,
    ) -> Result<RangeReport, RepairError> {
        let (store, f) = (self.replica.store().clone(), filter.clone());
        let local = blocking(move || build_filtered(&store, range, depth, &f)).await?;
        let req = Request::Tree {
            range,
            depth,
            filter: filter.clone(),
        };
        let remote = match self.rpc(peer, req, TREE_TIMEOUT).await? {
            Response::Tree(t) => t,
            other => return Err(unexpected(peer, "a tree", &other)),
        };
        let diff_leaves = local
            .diff_leaves(&remote)
            .map_err(|e| protocol(peer, e.to_string()))?;
        let mut report = RangeReport {
            leaves_differing: diff_leaves.len() as u64,
            ..RangeReport::default()
        };
        if diff_leaves.is_empty() {
            return Ok(report);
        }
        let sub_ranges = local
            .diff(&remote)
            .map_err(|e| protocol(peer, e.to_string()))?;
        for sub in sub_ranges {
            self.exchange(peer, sub, filter, &mut report).await?;
        }
        Ok(report)
    }

    /// Makes this node and `peer` agree on `sub` (the keys `filter` admits):
    /// pull and merge what differs there, then push what it lacks here.
    ///
    /// A tombstone-only object past its grace period moves only to a node
    /// that holds the key in another state (`purge.rs`): a node that
    /// holds nothing may have purged it, and handing it back would make
    /// replicas that purge at different times pass it to and fro forever.
    async fn exchange(
        self: &Arc<Self>,
        peer: &str,
        sub: TokenRange,
        filter: &KeyFilter,
        report: &mut RangeReport,
    ) -> Result<(), RepairError> {
        let grace = self.options.tombstone_grace;
        // Pull. Keep the peer's digest of every key so that the push below
        // sends only what the peer does not already hold exactly.
        let mut theirs: HashMap<(String, Vec<u8>), u64> = HashMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let req = Request::Entries {
                range: sub,
                after: after.clone(),
                limit: PAGE,
                max_bytes: MAX_PAGE_BYTES,
            };
            let (entries, next) = match self.rpc(peer, req, ENTRIES_TIMEOUT).await? {
                Response::Entries { entries, next } => (entries, next),
                other => return Err(unexpected(peer, "entries", &other)),
            };
            for e in entries {
                let token = quorumkv_ring::token_of(e.bucket.as_bytes(), &e.key);
                if !sub.contains(token) {
                    return Err(protocol(
                        peer,
                        format!("sent a key at token {token}, outside {sub}"),
                    ));
                }
                if !filter.admits(&e.bucket) {
                    continue;
                }
                let digest = e.object.digest();
                let ours = self
                    .replica
                    .read(&e.bucket, &e.key)
                    .map_err(|err| RepairError::Local(err.to_string()))?;
                let skip = match &ours {
                    Some(o) => o.digest() == digest,
                    None => past_grace(&e.object, crate::clock::unix_ms(), grace),
                };
                if !skip {
                    let props = self.buckets.props_for_keys(&e.bucket);
                    let merged = self
                        .replica
                        .merge(&e.bucket, &e.key, &e.object, props.conflicts)
                        .await;
                    match merged {
                        Ok(_) => {}
                        // Both copies together exceed --max-key-bytes: this
                        // key cannot converge here; the rest of the range can.
                        Err(err @ WriteError::KeyTooLarge { .. }) => {
                            tracing::warn!(peer, bucket = %e.bucket, error = %err, "anti-entropy cannot merge a key");
                            theirs.insert((e.bucket, e.key), digest);
                            continue;
                        }
                        Err(err) => return Err(RepairError::Local(err.to_string())),
                    }
                    let bytes = e.object.encode().len() as u64;
                    report.keys_received += 1;
                    report.bytes_received += bytes;
                    self.state.throttle(bytes).await;
                }
                theirs.insert((e.bucket, e.key), digest);
            }
            match next {
                // A peer that answers the same cursor again would loop forever.
                Some(n) if Some(&n) != after.as_ref() => after = Some(n),
                Some(_) => return Err(protocol(peer, "paging did not advance".into())),
                None => break,
            }
        }
        // Push: our copy of `sub` now holds the union; send every key whose
        // digest differs from what the peer showed us.
        let mut after: Option<Vec<u8>> = None;
        loop {
            let store = self.replica.store().clone();
            let cursor = after.take();
            let (page, next) = blocking(move || {
                let budget = MAX_PAGE_BYTES as usize;
                entries_page(&store, sub, cursor.as_deref(), PAGE as usize, budget)
            })
            .await?;
            for e in page {
                if !filter.admits(&e.bucket) {
                    continue;
                }
                let digest = e.object.digest();
                match theirs.get(&(e.bucket.clone(), e.key.clone())) {
                    Some(d) if *d == digest => continue,
                    None if past_grace(&e.object, crate::clock::unix_ms(), grace) => continue,
                    _ => {}
                }
                let object = Encoded::of(&e.object);
                let bytes = object.len() as u64;
                let req = Request::Replicate {
                    bucket: e.bucket,
                    key: e.key,
                    object,
                    hint_for: None,
                };
                match self.rpc(peer, req, PUSH_TIMEOUT).await {
                    Ok(Response::Ack) => {}
                    Ok(other) => return Err(unexpected(peer, "an ack", &other)),
                    // The peer's bound refuses the merge (see the pull above).
                    Err(RepairError::Peer {
                        error: PeerError::Remote(err @ RemoteError::KeyTooLarge { .. }),
                        ..
                    }) => {
                        tracing::warn!(peer, error = %err, "anti-entropy cannot push a key");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                report.keys_sent += 1;
                report.bytes_sent += bytes;
                self.state.throttle(bytes).await;
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(())
    }

    /// The tree [`Request::Tree`] answers: built off the async runtime, since
    /// it scans the whole range.
    pub async fn serve_tree(
        self: &Arc<Self>,
        range: TokenRange,
        depth: u8,
        filter: KeyFilter,
    ) -> Result<MerkleTree, StorageError> {
        let store = self.replica.store().clone();
        crate::storage::blocking(move || build_filtered(&store, range, depth, &filter)).await
    }

    /// The page [`Request::Entries`] answers, read off the async runtime.
    pub async fn serve_entries(
        self: &Arc<Self>,
        range: TokenRange,
        after: Option<Vec<u8>>,
        limit: u32,
        max_bytes: u32,
    ) -> Result<(Vec<RangeEntry>, Option<Vec<u8>>), StorageError> {
        let store = self.replica.store().clone();
        // A peer may ask for any limit; cap what one frame carries.
        let limit = (limit as usize).clamp(1, 4 * PAGE as usize);
        let max_bytes = max_bytes.clamp(1, MAX_PAGE_BYTES) as usize;
        crate::storage::blocking(move || {
            entries_page(&store, range, after.as_deref(), limit, max_bytes)
        })
        .await
    }

    async fn rpc(
        self: &Arc<Self>,
        peer: &str,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, RepairError> {
        self.peers
            .call(peer, req, timeout)
            .await
            .map_err(|error| RepairError::Peer {
                peer: peer.to_string(),
                error,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::build_from_store;
    use crate::version::hlc::Timestamp;
    use crate::version::{Context, Dvvs, value::Value};

    fn dvvs(data: &str) -> Dvvs {
        let mut d = Dvvs::new();
        d.update(
            &Context::new(),
            "n1",
            Value::live(data.as_bytes(), "text/plain", Timestamp::new(1, 0)),
        )
        .expect("a fresh dot");
        d
    }

    async fn store_with(n: usize) -> Store {
        let store = Store::memory();
        for i in 0..n {
            let key = format!("key-{i}");
            store
                .put("b", key.as_bytes(), dvvs(&key).encode())
                .await
                .expect("put");
        }
        store
    }

    /// What a page entry counts against the byte budget.
    fn stored_bytes(e: &RangeEntry) -> usize {
        e.object.encode().len() + e.key.len() + e.bucket.len()
    }

    /// Every key of `range`, by paging with `limit` and `max_bytes`;
    /// checks that every page keeps to both.
    fn page_through(
        store: &Store,
        range: TokenRange,
        limit: usize,
        max_bytes: usize,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (page, next) =
                entries_page(store, range, after.as_deref(), limit, max_bytes).expect("page");
            assert!(page.len() <= limit);
            let bytes: usize = page.iter().map(stored_bytes).sum();
            assert!(
                page.len() <= 1 || bytes <= max_bytes,
                "a page of {} entries holds {bytes} bytes, over {max_bytes}",
                page.len()
            );
            out.extend(page.into_iter().map(|e| e.key));
            match next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }

    #[tokio::test]
    async fn paging_sees_every_key_once_across_the_wrap() {
        let store = store_with(500).await;
        let ranges = [
            TokenRange { start: 0, end: 0 },
            TokenRange {
                start: 3 << 62,
                end: 1 << 62,
            },
            TokenRange {
                start: 1 << 62,
                end: 3 << 62,
            },
            TokenRange {
                start: u64::MAX,
                end: u64::MAX,
            },
        ];
        for range in ranges {
            let tree = build_from_store(&store, range, 4).expect("tree");
            for (limit, budget) in [(1, usize::MAX), (7, 200), (100, 1), (1000, 5000)] {
                let keys = page_through(&store, range, limit, budget);
                let mut unique = keys.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(
                    unique.len(),
                    keys.len(),
                    "{range} limit {limit}: duplicates"
                );
                assert_eq!(keys.len() as u64, tree.entries(), "{range} limit {limit}");
            }
        }
    }

    #[tokio::test]
    async fn a_corrupt_value_is_an_error() {
        let store = store_with(3).await;
        store
            .put("b", b"broken", b"junk".to_vec())
            .await
            .expect("put");
        let whole = TokenRange { start: 0, end: 0 };
        assert!(matches!(
            entries_page(&store, whole, None, 100, usize::MAX),
            Err(StorageError::Corrupt(_))
        ));
        assert!(entries_page(&store, whole, Some(b"xy"), 100, usize::MAX).is_err());
    }

    #[tokio::test]
    async fn pages_of_big_values_keep_to_the_byte_budget_and_a_bigger_key_travels_alone() {
        let store = Store::memory();
        for i in 0..12 {
            let key = format!("big-{i}");
            let value = "v".repeat(if i == 5 { 300_000 } else { 100_000 });
            store
                .put("b", key.as_bytes(), dvvs(&value).encode())
                .await
                .expect("put");
        }
        let whole = TokenRange { start: 0, end: 0 };
        let budget = 250_000;
        let keys = page_through(&store, whole, PAGE as usize, budget);
        assert_eq!(keys.len(), 12);
        // Two 100 kB entries per page at most: the budget, not the count,
        // cuts the pages.
        let (first, _) = entries_page(&store, whole, None, PAGE as usize, budget).expect("page");
        assert!((1..=2).contains(&first.len()), "{} entries", first.len());
    }
}
