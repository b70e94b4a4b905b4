//! The receiving side of streaming: pull the ranges this node gains from
//! their current replicas, chunk by chunk, checksummed, throttled, with the
//! position persisted after every chunk (see the module docs of
//! [`crate::stream`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tracing::{info, warn};

use super::ChangeDriver;
use super::{Error, PullRange, PullState, Saved, Stream, StreamRequest, StreamResponse};
use crate::proto::{RangeEntry, Request, Response};
use crate::replica::WriteError;

/// Bytes a receiver asks per chunk.
pub const CHUNK_BYTES: u32 = 1 << 20;
/// How long a source may take to answer one chunk or count.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// Rounds over every source before a pull gives up (one second apart).
const ROUNDS: u32 = 60;
/// Ranges streamed at once by one pull.
const PARALLEL: usize = 2;
/// The persisted position of a finished range.
const DONE: &[u8] = b"done";

/// The meta key under which a pull persists its position in one range.
fn position_key(id: &str, pr: &PullRange) -> String {
    format!("stream/{id}/{}-{}", pr.range.start, pr.range.end)
}

impl ChangeDriver {
    /// Starts pulling `ranges` for change `id` unless that pull is already
    /// running or done here; returns its state (shared with the task).
    pub fn start_pull(
        self: &Arc<Self>,
        id: &str,
        ranges: Vec<PullRange>,
    ) -> Result<Arc<Mutex<PullState>>, Error> {
        let change = Saved::parse_id(id).ok_or_else(|| Error::BadChange(id.to_string()))?;
        let mut pulls = self.changes.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = pulls.get(id) {
            let failed = matches!(
                *s.lock().unwrap_or_else(|p| p.into_inner()),
                PullState::Failed(_)
            );
            if !failed {
                return Ok(s.clone());
            }
        }
        let state = Arc::new(Mutex::new(PullState::Running {
            done: 0,
            total: ranges.len() as u32,
        }));
        pulls.insert(id.to_string(), state.clone());
        drop(pulls);
        let (node, id, task_state) = (self.clone(), id.to_string(), state.clone());
        self.tasks.spawn(async move {
            // Stopped at shutdown; the positions persisted let the next
            // attempt resume.
            let pulled = node.pull_all(&change, &id, ranges, &task_state);
            let result = tokio::select! {
                r = pulled => r,
                _ = node.tasks.cancelled() => return,
            };
            let mut s = task_state.lock().unwrap_or_else(|p| p.into_inner());
            *s = match result {
                Ok((keys, bytes)) => PullState::Done { keys, bytes },
                Err(e) => {
                    warn!(change = %id, error = %e, "pull failed");
                    PullState::Failed(e.to_string())
                }
            };
        });
        Ok(state)
    }

    async fn pull_all(
        self: &Arc<Self>,
        change: &Saved,
        id: &str,
        ranges: Vec<PullRange>,
        state: &Mutex<PullState>,
    ) -> Result<(u64, u64), Error> {
        let started = Instant::now();
        let me = self.replica.id().to_string();
        let total = ranges.len() as u32;
        let streams: Vec<(PullRange, Arc<Stream>)> = ranges
            .into_iter()
            .map(|pr| {
                let s = Arc::new(Stream::new(pr.range, &me));
                self.changes.add_stream(change, s.clone());
                (pr, s)
            })
            .collect();
        let mut done = 0u32;
        let mut queue = streams.iter();
        let mut running = futures::stream::FuturesUnordered::new();
        use futures::StreamExt;
        loop {
            while running.len() < PARALLEL {
                let Some((pr, s)) = queue.next() else { break };
                running.push(self.pull_range(id, pr, s.clone()));
            }
            match running.next().await {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(())) => {
                    done += 1;
                    *state.lock().unwrap_or_else(|p| p.into_inner()) =
                        PullState::Running { done, total };
                }
            }
        }
        let (keys, bytes) = streams.iter().fold((0, 0), |(k, b), (_, s)| {
            (
                k + s.keys.load(std::sync::atomic::Ordering::Relaxed),
                b + s.bytes.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        let secs = started.elapsed().as_secs_f64();
        info!(
            change = %id,
            ranges = total,
            keys,
            bytes,
            secs,
            mb_per_sec = bytes as f64 / 1e6 / secs.max(1e-3),
            "pulled every range"
        );
        Ok((keys, bytes))
    }

    /// Streams one range, trying its sources in order (live ones only), each
    /// from the persisted position.
    async fn pull_range(
        self: &Arc<Self>,
        id: &str,
        pr: &PullRange,
        stream: Arc<Stream>,
    ) -> Result<(), Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let store = self.replica.store();
        let key = position_key(id, pr);
        let mut after = match store.meta_get(&key)? {
            Some(p) if p == DONE => {
                stream.done.store(true, Relaxed);
                return Ok(());
            }
            Some(p) if !p.is_empty() => Some(p),
            _ => None,
        };
        let me = self.replica.id().to_string();
        let mut last_error = String::from("no live source");
        for round in 0..ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            for src in pr
                .sources
                .iter()
                .filter(|s| **s != me && self.cluster.is_alive(s))
            {
                *stream.from.lock().unwrap_or_else(|p| p.into_inner()) = src.clone();
                if stream.estimate.load(Relaxed) == 0
                    && let Ok(Response::Stream(StreamResponse::Count { bytes, .. })) = self
                        .peers
                        .call(
                            src,
                            Request::Stream(StreamRequest::Count { range: pr.range }),
                            CHUNK_TIMEOUT,
                        )
                        .await
                {
                    stream.estimate.store(bytes, Relaxed);
                }
                match self.from_source(src, pr, &key, &mut after, &stream).await {
                    Ok(()) => {
                        stream.done.store(true, Relaxed);
                        return Ok(());
                    }
                    Err(e) => {
                        warn!(source = %src, range = %pr.range, error = %e, "stream from this source failed; trying another");
                        last_error = format!("{src}: {e}");
                    }
                }
            }
        }
        Err(Error::NoSource {
            range: pr.range,
            last: format!("tried {:?}; {last_error}", pr.sources),
        })
    }

    /// Streams `pr` from `src` from position `after` to the end.
    async fn from_source(
        self: &Arc<Self>,
        src: &str,
        pr: &PullRange,
        key: &str,
        after: &mut Option<Vec<u8>>,
        stream: &Stream,
    ) -> Result<(), Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let protocol = |why: String| Error::Protocol {
            node: src.to_string(),
            why,
        };
        let throttle = &self.throttle;
        loop {
            let req = Request::Stream(StreamRequest::Chunk {
                range: pr.range,
                after: after.clone(),
                max_bytes: CHUNK_BYTES,
            });
            let (payload, checksum, next) = match self.peers.call(src, req, CHUNK_TIMEOUT).await {
                Ok(Response::Stream(StreamResponse::Chunk {
                    payload,
                    checksum,
                    next,
                })) => (payload, checksum, next),
                Ok(_) => return Err(protocol("answered something other than a chunk".into())),
                Err(error) => {
                    return Err(Error::Peer {
                        node: src.to_string(),
                        error,
                    });
                }
            };
            if xxhash_rust::xxh3::xxh3_64(&payload) != checksum {
                return Err(protocol("sent a chunk that fails its checksum".into()));
            }
            let entries: Vec<RangeEntry> = rmp_serde::from_slice(&payload)
                .map_err(|e| protocol(format!("sent an undecodable chunk: {e}")))?;
            for e in &entries {
                let token = quorumkv_ring::token_of(e.bucket.as_bytes(), &e.key);
                if !pr.range.contains(token) {
                    return Err(protocol(format!(
                        "sent a key at token {token}, outside {}",
                        pr.range
                    )));
                }
                let props = self.buckets.props_for_keys(&e.bucket);
                match self
                    .replica
                    .merge(&e.bucket, &e.key, &e.object, props.conflicts)
                    .await
                {
                    Ok(_) => {}
                    // What this node already holds of the key plus the
                    // streamed copy exceed --max-key-bytes: the key stays on
                    // its other replicas, the stream goes on.
                    Err(err @ WriteError::KeyTooLarge { .. }) => {
                        warn!(source = src, bucket = %e.bucket, error = %err, "a streamed key cannot be merged");
                        continue;
                    }
                    Err(WriteError::Storage(err)) => return Err(err.into()),
                }
                stream.keys.fetch_add(1, Relaxed);
                stream
                    .bytes
                    .fetch_add(e.object.encode().len() as u64, Relaxed);
            }
            if next.is_some() && next == *after {
                return Err(protocol("sent a page that did not advance".into()));
            }
            let position = next.clone().unwrap_or_else(|| DONE.to_vec());
            self.replica.store().meta_put(key, position).await?;
            let wait = throttle.reserve(payload.len() as u64);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            match next {
                None => return Ok(()),
                Some(n) => *after = Some(n),
            }
        }
    }
}
