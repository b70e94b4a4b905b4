//! The answering side of [`StreamRequest`]s: this node's view fingerprint,
//! the count and chunks of a range it stores (as a stream's source), and
//! starting or reporting a pull (as a stream's receiver).

use std::sync::Arc;

use quorumkv_ring::TokenRange;

use super::ChangeDriver;
use super::{StreamRequest, StreamResponse};
use crate::proto::{RangeEntry, RemoteError};
use crate::storage::{StorageError, Store};

/// The largest chunk a source builds, whatever the receiver asks: the
/// budget of an anti-entropy page, within the frame's envelope allowance
/// (a key larger than it travels alone).
pub const MAX_CHUNK_BYTES: u32 = crate::repair::MAX_PAGE_BYTES;

use crate::storage::blocking;

/// Keys and stored bytes in `range`: a scan of the range.
pub fn count(store: &Store, range: TokenRange) -> Result<(u64, u64), StorageError> {
    let (mut keys, mut bytes) = (0u64, 0u64);
    for (lo, hi) in crate::merkle::scan::spans(range) {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan_tokens(lo, hi, after.as_deref(), crate::merkle::scan::PAGE)?;
            let full = page.len() == crate::merkle::scan::PAGE;
            for e in &page {
                keys += 1;
                bytes += e.value.len() as u64;
            }
            match page.last() {
                Some(last) if full => after = Some(last.stored_key()),
                _ => break,
            }
        }
    }
    Ok((keys, bytes))
}

/// Entries of `range` after `after`, in token order, holding at most
/// `max_bytes` (a larger key alone); and the cursor of the next chunk. The
/// paging of anti-entropy ([`crate::repair::entries_page`]), by bytes only.
pub fn chunk(
    store: &Store,
    range: TokenRange,
    after: Option<Vec<u8>>,
    max_bytes: usize,
) -> Result<(Vec<RangeEntry>, Option<Vec<u8>>), StorageError> {
    crate::repair::entries_page(store, range, after.as_deref(), usize::MAX, max_bytes)
}

impl ChangeDriver {
    /// Answers one stream request.
    pub async fn serve(self: Arc<Self>, req: StreamRequest) -> Result<StreamResponse, RemoteError> {
        let storage = |e: StorageError| RemoteError::Storage(e.to_string());
        match req {
            StreamRequest::View => Ok(StreamResponse::View {
                fingerprint: self.cluster.fingerprint(),
                keys: self.replica.stored().0.max(0) as u64,
            }),
            StreamRequest::Count { range } => {
                let store = self.replica.store().clone();
                let (keys, bytes) = blocking(move || count(&store, range))
                    .await
                    .map_err(storage)?;
                Ok(StreamResponse::Count { keys, bytes })
            }
            StreamRequest::Chunk {
                range,
                after,
                max_bytes,
            } => {
                let store = self.replica.store().clone();
                let max = max_bytes.clamp(1, MAX_CHUNK_BYTES) as usize;
                let (entries, next) = blocking(move || chunk(&store, range, after, max))
                    .await
                    .map_err(storage)?;
                let payload = rmp_serde::to_vec(&entries)
                    .map_err(|e| RemoteError::Storage(format!("cannot encode a chunk: {e}")))?;
                let checksum = xxhash_rust::xxh3::xxh3_64(&payload);
                Ok(StreamResponse::Chunk {
                    payload,
                    checksum,
                    next,
                })
            }
            StreamRequest::Pull { change, ranges } => {
                let state = self
                    .start_pull(&change, ranges)
                    .map_err(|e| RemoteError::Bad(e.to_string()))?;
                let s = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
                Ok(StreamResponse::Pull(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::hlc::Timestamp;
    use crate::version::{Context, Dvvs, value::Value};

    #[tokio::test]
    async fn chunks_cover_a_range_once_and_counts_match() {
        let store = Store::memory();
        for i in 0..300 {
            let mut d = Dvvs::new();
            let v = vec![b'x'; 100 + i];
            d.update(
                &Context::new(),
                "n1",
                Value::live(&v[..], "text/plain", Timestamp::new(1, 0)),
            )
            .expect("a fresh dot");
            store
                .put("b", format!("k{i}").as_bytes(), d.encode())
                .await
                .expect("put");
        }
        let range = TokenRange {
            start: 3 << 62,
            end: 2 << 62,
        };
        let (keys, bytes) = count(&store, range).expect("count");
        assert!(keys > 100 && keys < 300, "{keys}");
        let mut seen = 0;
        let mut seen_bytes = 0;
        let mut after = None;
        let mut chunks = 0;
        loop {
            let (entries, next) = chunk(&store, range, after, 4096).expect("chunk");
            chunks += 1;
            seen += entries.len() as u64;
            seen_bytes += entries
                .iter()
                .map(|e| e.object.encode().len() as u64)
                .sum::<u64>();
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, keys);
        assert_eq!(seen_bytes, bytes);
        assert!(chunks > 3, "{chunks} chunks of ~4 KiB");
    }
}
