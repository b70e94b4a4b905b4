//! The row cache: the encoded versions of the keys this replica wrote or
//! merged since it started, so that reads and the read half of each
//! read-modify-write skip the storage engine's search (fjall's memtable
//! skiplist walk was the largest user-space cost of a request).
//!
//! Entries are found by the key's ring token, which is already a uniform
//! 64-bit hash: the table hashes nothing and compares no key bytes to find
//! a slot. Each entry holds the full storage key in front of the versions,
//! and a lookup checks it, so two keys that share a token (astronomically
//! rare) only evict each other; a key never reads another's versions.
//!
//! When it is filled and emptied is the replica's business (see
//! [`super`]): filled only by durable writes under the key's lock, emptied
//! by a write that does not complete ([`Pending`]).

use std::hash::{BuildHasher, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use crate::storage::{DataKey, Token};

/// Bytes in front of the storage key in an entry: its length.
const LEN_PREFIX: usize = 4;

/// Charges an entry its bytes plus a fixed overhead.
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<Token, Arc<[u8]>> for ByBytes {
    fn weight(&self, _token: &Token, entry: &Arc<[u8]>) -> u64 {
        (entry.len() + 64) as u64
    }
}

/// Hashes a token to itself: it is a hash already.
#[derive(Clone, Default)]
struct TokenHash;

impl BuildHasher for TokenHash {
    type Hasher = TokenHasher;
    fn build_hasher(&self) -> TokenHasher {
        TokenHasher(0)
    }
}

struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    // Only tokens are hashed; anything else still hashes deterministically.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
}

type Table = quick_cache::sync::Cache<Token, Arc<[u8]>, ByBytes, TokenHash>;

/// The cache; `None` inside when it is turned off (`--row-cache-mb 0`).
pub(super) struct RowCache(Option<Table>);

/// A key's cached encoded versions.
pub(super) struct Cached {
    entry: Arc<[u8]>,
    start: usize,
}

impl Deref for Cached {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.entry[self.start..]
    }
}

impl RowCache {
    /// A cache of at most `bytes` (0: none).
    pub(super) fn new(bytes: u64) -> RowCache {
        RowCache((bytes > 0).then(|| {
            // Entries are ~250 bytes in the common case; the estimate only
            // sizes the table up front.
            let items = (bytes / 256).clamp(1024, 1 << 22) as usize;
            quick_cache::sync::Cache::with(items, bytes, ByBytes, TokenHash, Default::default())
        }))
    }

    /// The cached versions of `key`, if any.
    pub(super) fn get(&self, key: &DataKey) -> Option<Cached> {
        let entry = self.0.as_ref()?.get(&key.token())?;
        let want = key.as_bytes();
        let start = LEN_PREFIX + want.len();
        let len = u32::from_le_bytes(entry.get(..LEN_PREFIX)?.try_into().ok()?) as usize;
        (len == want.len() && entry.get(LEN_PREFIX..start) == Some(want))
            .then_some(Cached { entry, start })
    }

    /// Drops whatever is cached under `key`'s token.
    pub(super) fn forget(&self, key: &DataKey) {
        if let Some(c) = &self.0 {
            c.remove(&key.token());
        }
    }

    /// The entry caching `versions` as `key`'s, built before the write
    /// (which takes the encoded bytes); `None` when there is no cache or
    /// the key is too long to frame.
    pub(super) fn entry(&self, key: &DataKey, versions: &[u8]) -> Option<Entry> {
        self.0.as_ref()?;
        let k = key.as_bytes();
        let len = u32::try_from(k.len()).ok()?;
        // One allocation, the entry's own (a `Vec` turned into an `Arc`
        // would be copied), zeroed and then filled by three copies: a
        // chain of byte iterators collected directly is copied a byte at a
        // time, 15x slower for a 250-byte entry.
        let split = LEN_PREFIX + k.len();
        let mut entry: Arc<[u8]> = std::iter::repeat_n(0, split + versions.len()).collect();
        let fill = Arc::get_mut(&mut entry)?;
        fill[..LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
        fill[LEN_PREFIX..split].copy_from_slice(k);
        fill[split..].copy_from_slice(versions);
        Some(Entry(entry))
    }

    /// Starts a write of `key`: see [`Pending`].
    pub(super) fn pending<'a>(&'a self, key: &'a DataKey) -> Pending<'a> {
        Pending {
            cache: self,
            key: Some(key),
        }
    }
}

/// A cache entry ready to insert ([`RowCache::entry`]).
pub(super) struct Entry(Arc<[u8]>);

/// A write of one key in progress: unless [`Pending::done`] records what
/// it stored, dropping it (the write failed, or its future was dropped)
/// empties the key's cache entry, which may no longer match storage.
pub(super) struct Pending<'a> {
    cache: &'a RowCache,
    key: Option<&'a DataKey>,
}

impl Pending<'_> {
    /// The write is durable: cache what it stored (`entry`, from
    /// [`RowCache::entry`]; with `None` the old entry is emptied).
    pub(super) fn done(mut self, entry: Option<Entry>) {
        if let (Some(c), Some(key), Some(Entry(entry))) = (&self.cache.0, self.key, entry) {
            self.key = None;
            c.insert(key.token(), entry);
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.cache.forget(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two distinct keys forced onto one token: neither may read the
    /// other's versions.
    #[test]
    fn a_key_never_reads_another_keys_entry() {
        let cache = RowCache::new(1 << 20);
        let a = DataKey::new("b", b"a").expect("key");
        let b = DataKey::new("b", b"b").expect("key");
        let b_on_a = DataKey::with_token_for_tests(a.token(), "b", b"b");
        cache.pending(&a).done(cache.entry(&a, b"versions of a"));
        assert_eq!(cache.get(&a).as_deref(), Some(&b"versions of a"[..]));
        assert!(cache.get(&b_on_a).is_none());
        cache
            .pending(&b_on_a)
            .done(cache.entry(&b_on_a, b"versions of b"));
        assert!(cache.get(&a).is_none());
        assert_eq!(cache.get(&b_on_a).as_deref(), Some(&b"versions of b"[..]));
        assert!(cache.get(&b).is_none());
    }

    #[test]
    fn an_unfinished_write_empties_the_entry() {
        let cache = RowCache::new(1 << 20);
        let a = DataKey::new("b", b"a").expect("key");
        cache.pending(&a).done(cache.entry(&a, b"v1"));
        drop(cache.pending(&a));
        assert!(cache.get(&a).is_none());
    }

    #[test]
    fn a_cache_of_zero_bytes_holds_nothing() {
        let cache = RowCache::new(0);
        let a = DataKey::new("b", b"a").expect("key");
        cache.pending(&a).done(cache.entry(&a, b"v1"));
        assert!(cache.entry(&a, b"v1").is_none());
        assert!(cache.get(&a).is_none());
    }
}
