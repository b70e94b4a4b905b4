//! The engine trait and the vocabulary it speaks: partitions and write ops.
//!
//! An engine is deliberately small and synchronous: point reads, atomic
//! batches, an fsync, ordered range scans. Everything about durability
//! policy (group commit, periodic flushing) lives above it in `Store`, so
//! the two engines — fjall on disk, a `BTreeMap` in memory — stay simple and
//! are tested by the same suite.

use std::ops::Bound;

use super::StorageError;

/// Key-value pairs as a scan returns them, in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The three partitions (fjall keyspaces) of a node's database.
///
/// They are separate so that a token-range scan of `Data` never wades
/// through hints or metadata, and so that each can be tuned on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Partition {
    /// Replicated objects, keyed by `keys::data_key`.
    Data,
    /// Node-local metadata: node identity, bucket properties, ring state.
    Meta,
    /// Hinted-handoff records for replicas that were down.
    Hints,
}

impl Partition {
    /// All partitions, in a fixed order (engines index by it).
    pub const ALL: [Partition; 3] = [Partition::Data, Partition::Meta, Partition::Hints];

    /// The fjall keyspace name; stable on disk, so never rename.
    pub fn name(self) -> &'static str {
        match self {
            Partition::Data => "data",
            Partition::Meta => "meta",
            Partition::Hints => "hints",
        }
    }

    /// Position in [`Partition::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Partition::Data => 0,
            Partition::Meta => 1,
            Partition::Hints => 2,
        }
    }
}

/// A write operation in a batch. A batch of ops is applied atomically:
/// after a crash either all of it is there or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Store `value` under `key`, replacing any previous value.
    Put {
        /// Which partition.
        partition: Partition,
        /// The engine key (for `Data`, a `keys::data_key`).
        key: Vec<u8>,
        /// The bytes to store.
        value: Vec<u8>,
    },
    /// Remove `key` (a no-op if absent). Replica-level deletes are versions
    /// (tombstones) written with `Put`; this removes the engine entry itself,
    /// e.g. a delivered hint or a purged tombstone.
    Delete {
        /// Which partition.
        partition: Partition,
        /// The engine key.
        key: Vec<u8>,
    },
}

impl Op {
    /// The engine key this op touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    /// Bytes this op carries (key plus value), for batch sizing.
    pub(crate) fn size(&self) -> usize {
        match self {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
        }
    }
}

/// A storage engine: synchronous, thread-safe, ordered by key bytes.
///
/// Contract every implementation keeps (and the shared test suite checks):
/// `apply` is atomic and its effects are visible to `get`/`scan` as soon as
/// it returns; they are durable (survive power loss) only once a later
/// `sync` returns `Ok`. After `close`, every call returns
/// [`StorageError::Closed`] (and `close` itself returns `Ok`). No method
/// panics on bad disk data or I/O failure.
pub trait Engine: Send + Sync + 'static {
    /// Point read.
    fn get(&self, p: Partition, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Applies `ops` as one atomic batch; visible on return, durable only
    /// after `sync`.
    fn apply(&self, ops: Vec<Op>) -> Result<(), StorageError>;

    /// Makes everything applied so far durable (fdatasync of the journal).
    fn sync(&self) -> Result<(), StorageError>;

    /// Entries of `p` with `start <= key < end` (`end = None`: to the last
    /// key), in key order, at most `limit` of them, stopping once the values
    /// read reach `max_bytes` (the entry that reaches it included, so a
    /// page holds at least one entry whatever its size): callers that hold
    /// a page of whole objects, each as large as `--max-key-bytes`, bound
    /// it by bytes; nothing past the budget is read (`engine::page`).
    fn scan_within(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<KvPairs, StorageError>;

    /// [`Engine::scan_within`] bounded by `limit` alone.
    fn scan(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, StorageError> {
        self.scan_within(p, start, end, limit, usize::MAX)
    }

    /// The keys of [`Engine::scan`]'s entries, without their values: for
    /// callers that look at keys only (counting and expiring hints), so a
    /// page costs no value bytes. The default reads the values and drops
    /// them; the real engines override it.
    fn scan_keys(
        &self,
        p: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        Ok(self
            .scan(p, start, end, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Flushes and fsyncs everything, then releases the engine's resources
    /// (for fjall: the directory lock). Idempotent.
    fn close(&self) -> Result<(), StorageError>;

    /// Counts the keys of `p` and the bytes of their values. A full scan,
    /// paged so that memory stays bounded; engines may do better.
    fn count(&self, p: Partition) -> Result<(u64, u64), StorageError> {
        const PAGE: usize = 4096;
        let (mut keys, mut bytes) = (0u64, 0u64);
        let mut start: Vec<u8> = Vec::new();
        loop {
            let page = self.scan(p, &start, None, PAGE)?;
            for (_, v) in &page {
                keys += 1;
                bytes += v.len() as u64;
            }
            match page.last() {
                Some((k, _)) if page.len() == PAGE => start = super::keys::successor(k),
                _ => return Ok((keys, bytes)),
            }
        }
    }
}

/// The bounds of a range of keys.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The bounds of a scan of `start..end`, or `None` when it holds nothing
/// (`end <= start`, or no entry wanted).
pub(crate) fn key_range<'a>(
    start: &'a [u8],
    end: Option<&'a [u8]>,
    limit: usize,
) -> Option<KeyBounds<'a>> {
    if limit == 0 || end.is_some_and(|e| e <= start) {
        return None;
    }
    Some((
        Bound::Included(start),
        end.map_or(Bound::Unbounded, Bound::Excluded),
    ))
}

/// A page of [`Engine::scan_within`] taken from `rows`, read lazily: at
/// most `limit` rows, up to and including the one whose value brings the
/// page to `max_bytes`.
pub(crate) fn page(
    rows: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>>,
    limit: usize,
    max_bytes: usize,
) -> Result<KvPairs, StorageError> {
    let (mut out, mut bytes) = (Vec::with_capacity(limit.min(1024)), 0usize);
    for row in rows.take(limit) {
        let (k, v) = row?;
        bytes = bytes.saturating_add(v.len());
        out.push((k, v));
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(out)
}
