//! The storage shell: a [`MerkleTree`] of this node's copy of a range.
//!
//! Reads are paged so that a range of millions of keys never sits in memory
//! at once; only one leaf's hash state and the page are held.

use quorumkv_ring::{Token, TokenRange};

use super::{KeyFilter, MerkleTree, entry_hash};
use crate::storage::{DataEntry, StorageError, Store};
use crate::version::Dvvs;

/// Entries read per `scan_tokens` call.
pub const PAGE: usize = 1024;

/// [`build_filtered`] over every key: what tests compare trees of.
#[cfg(test)]
pub fn build_from_store(
    store: &Store,
    range: TokenRange,
    depth: u8,
) -> Result<MerkleTree, StorageError> {
    build_filtered(store, range, depth, &KeyFilter::All)
}

/// Builds the tree of `range` at `depth` from what `store` holds now, over
/// the keys `filter` admits only.
///
/// A value that is not a version set, or a scan that returns entries out of
/// ring order or outside the range, is [`StorageError::Corrupt`]: a tree
/// built around it would disagree with every healthy replica.
pub fn build_filtered(
    store: &Store,
    range: TokenRange,
    depth: u8,
    filter: &KeyFilter,
) -> Result<MerkleTree, StorageError> {
    let mut builder = MerkleTree::builder(range, depth);
    for (lo, hi) in spans(range) {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan_tokens(lo, hi, after.as_deref(), PAGE)?;
            for e in page.iter().filter(|e| filter.admits(&e.bucket)) {
                let dvvs = decode_entry(e)?;
                builder
                    .push(e.token, entry_hash(&e.bucket, &e.key, dvvs.digest()))
                    .map_err(|err| StorageError::Corrupt(format!("scanning {range}: {err}")))?;
            }
            if page.len() < PAGE {
                break;
            }
            after = page.last().map(DataEntry::stored_key);
        }
    }
    Ok(builder.finish())
}

/// The version set a scanned entry holds; a value that is not one is
/// [`StorageError::Corrupt`], naming the key.
pub(crate) fn decode_entry(e: &DataEntry) -> Result<Dvvs, StorageError> {
    Dvvs::decode(&e.value).map_err(|err| {
        StorageError::Corrupt(format!(
            "value of {}/{} at token {} is not a version set: {err}",
            e.bucket,
            String::from_utf8_lossy(&e.key),
            e.token
        ))
    })
}

/// `(start, end]` as inclusive `scan_tokens` intervals, in ring order from
/// just after `start`: one interval, or two when the range wraps past
/// `Token::MAX` (the whole ring, `start == end`, wraps unless it starts at
/// `Token::MAX`).
pub(crate) fn spans(range: TokenRange) -> Vec<(Token, Token)> {
    let TokenRange { start, end } = range;
    let mut out = Vec::with_capacity(2);
    if start < end {
        out.push((start + 1, end));
        return out;
    }
    if start < Token::MAX {
        out.push((start + 1, Token::MAX));
    }
    out.push((0, end));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::hlc::Timestamp;
    use crate::version::{Context, value::Value};
    use quorumkv_ring::token_of;

    fn dvvs(replica: &str, data: &str, ms: u64) -> Dvvs {
        let mut d = Dvvs::new();
        d.update(
            &Context::new(),
            replica,
            Value::live(data.as_bytes(), "text/plain", Timestamp::new(ms, 0)),
        )
        .expect("a fresh dot");
        d
    }

    /// `(bucket, key, state)` for `n` keys spread over three buckets.
    fn keys(n: usize) -> Vec<(String, Vec<u8>, Dvvs)> {
        (0..n)
            .map(|i| {
                let bucket = ["a", "b", "users"][i % 3].to_owned();
                let key = format!("key-{i}").into_bytes();
                let state = dvvs("n1", &format!("v{i}"), i as u64 + 1);
                (bucket, key, state)
            })
            .collect()
    }

    async fn store_with(keys: &[(String, Vec<u8>, Dvvs)]) -> Store {
        let store = Store::memory();
        for (b, k, d) in keys {
            store.put(b, k, d.encode()).await.expect("put");
        }
        store
    }

    /// The tree of `keys` built without storage: sort into ring order from
    /// the range's start, keep those inside.
    fn by_hand(keys: &[(String, Vec<u8>, Dvvs)], range: TokenRange, depth: u8) -> MerkleTree {
        let mut entries: Vec<(u64, Token, &str, &[u8], u64)> = keys
            .iter()
            .map(|(b, k, d)| {
                let t = token_of(b.as_bytes(), k);
                let pos = t.wrapping_sub(range.start).wrapping_sub(1);
                (pos, t, b.as_str(), k.as_slice(), d.digest())
            })
            .filter(|e| range.contains(e.1))
            .collect();
        entries.sort();
        MerkleTree::build(
            range,
            depth,
            entries
                .into_iter()
                .map(|(_, t, b, k, d)| (t, entry_hash(b, k, d))),
        )
        .expect("entries in order")
    }

    const RANGES: [TokenRange; 5] = [
        TokenRange { start: 0, end: 0 },
        TokenRange {
            start: u64::MAX,
            end: u64::MAX,
        },
        TokenRange {
            start: 1 << 62,
            end: 3 << 62,
        },
        TokenRange {
            start: 3 << 62,
            end: 1 << 62,
        },
        TokenRange {
            start: 12345,
            end: 12345,
        },
    ];

    #[tokio::test]
    async fn store_tree_equals_the_tree_built_by_hand() {
        let keys = keys(300);
        let store = store_with(&keys).await;
        for range in RANGES {
            for depth in [0, 1, 5, 10] {
                let tree = build_from_store(&store, range, depth).expect("build");
                assert_eq!(tree, by_hand(&keys, range, depth), "{range} depth {depth}");
            }
        }
        let whole = build_from_store(&store, RANGES[0], 4).expect("build");
        assert_eq!(whole.entries(), 300);
    }

    #[tokio::test]
    async fn paging_across_many_pages_sees_every_key() {
        let keys = keys(PAGE * 2 + 17);
        let store = store_with(&keys).await;
        let range = TokenRange { start: 7, end: 7 };
        let tree = build_from_store(&store, range, 8).expect("build");
        assert_eq!(tree.entries(), keys.len() as u64);
        assert_eq!(tree, by_hand(&keys, range, 8));
    }

    #[tokio::test]
    async fn stores_differing_in_one_key_differ_in_exactly_its_leaf() {
        let mut keys = keys(200);
        let a = store_with(&keys).await;
        // The same key, one more version (a sibling from another replica).
        let (bucket, key, state) = &mut keys[42];
        *state = state.sync(&dvvs("n2", "concurrent", 99));
        let token = token_of(bucket.as_bytes(), key);
        let b = store_with(&keys).await;
        let mut covered = 0;
        for range in RANGES {
            let ta = build_from_store(&a, range, 10).expect("build");
            let tb = build_from_store(&b, range, 10).expect("build");
            match ta.leaf_of(token) {
                Some(leaf) => {
                    assert_eq!(ta.diff(&tb), Ok(vec![ta.leaf_range(leaf)]), "{range}");
                    assert_eq!(ta.diff_leaves(&tb), Ok(vec![leaf]));
                    assert_ne!(ta.root(), tb.root());
                    covered += 1;
                }
                // A range without the key cannot see the change.
                None => assert_eq!(ta, tb, "{range}"),
            }
        }
        // The three whole-ring ranges and one of the halves.
        assert_eq!(covered, 4);
    }

    #[tokio::test]
    async fn a_wrapping_range_covers_keys_on_both_sides_of_zero() {
        let keys = keys(100);
        let store = store_with(&keys).await;
        let range = RANGES[3]; // (3·2^62, 2^62]
        let tokens: Vec<Token> = keys
            .iter()
            .map(|(b, k, _)| token_of(b.as_bytes(), k))
            .collect();
        let high = tokens.iter().filter(|&&t| t > 3 << 62).count() as u64;
        let low = tokens.iter().filter(|&&t| t <= 1 << 62).count() as u64;
        assert!(high > 0 && low > 0, "the fixture needs keys on both sides");
        let tree = build_from_store(&store, range, 6).expect("build");
        assert_eq!(tree.entries(), high + low);
        // Leaves before the wrap hold the high tokens, after it the low.
        let half = tree.leaf_count() / 2;
        let before: u64 = (0..half).map(|i| tree.leaf_entries(i)).sum();
        assert_eq!(before, high);
        assert_eq!(tree, by_hand(&keys, range, 6));
    }

    #[tokio::test]
    async fn a_corrupt_value_is_an_error_not_a_panic() {
        let store = store_with(&keys(10)).await;
        store
            .put("a", b"broken", b"not a version set".to_vec())
            .await
            .expect("put");
        let whole = TokenRange { start: 0, end: 0 };
        match build_from_store(&store, whole, 4) {
            Err(StorageError::Corrupt(why)) => assert!(why.contains("a/broken"), "{why}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Outside the scanned range it is not read at all.
        let t = token_of(b"a", b"broken");
        let elsewhere = TokenRange {
            start: t,
            end: t.wrapping_sub(1),
        };
        assert!(build_from_store(&store, elsewhere, 4).is_ok());
    }

    #[test]
    fn spans_cover_the_range_in_ring_order() {
        let max = Token::MAX;
        assert_eq!(spans(TokenRange { start: 3, end: 9 }), [(4, 9)]);
        assert_eq!(spans(TokenRange { start: 9, end: 3 }), [(10, max), (0, 3)]);
        assert_eq!(spans(TokenRange { start: 5, end: 5 }), [(6, max), (0, 5)]);
        assert_eq!(
            spans(TokenRange {
                start: max,
                end: max
            }),
            [(0, max)]
        );
        assert_eq!(spans(TokenRange { start: max, end: 7 }), [(0, 7)]);
        assert_eq!(
            spans(TokenRange {
                start: max - 1,
                end: max
            }),
            [(max, max)]
        );
    }
}
