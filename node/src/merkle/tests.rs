//! Properties of the pure tree; the storage shell is tested in `scan.rs`.

use proptest::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use super::*;

const WHOLE: TokenRange = TokenRange { start: 0, end: 0 };

fn range() -> impl Strategy<Value = TokenRange> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(start, end)| TokenRange { start, end }),
        any::<u64>().prop_map(|s| TokenRange { start: s, end: s }),
        // Narrower than 2^16 tokens: the depth gets capped.
        (any::<u64>(), 1u64..70_000).prop_map(|(s, w)| TokenRange {
            start: s,
            end: s.wrapping_add(w),
        }),
        // Wrapping just past u64::MAX.
        (0u64..1000, 0u64..1000).prop_map(|(a, b)| TokenRange {
            start: u64::MAX - a,
            end: b,
        }),
    ]
}

/// Raw positions: mostly spread, sometimes clustered at the range's start
/// (so that leaves hold several entries, some with equal tokens).
fn raw_position() -> impl Strategy<Value = u64> {
    prop_oneof![3 => any::<u64>(), 1 => 0u64..8]
}

/// The token `raw` lands on in `range`, and its 0-based ring position.
fn place(range: TokenRange, raw: u64) -> (u128, Token) {
    let off = u128::from(raw) % range.width();
    (off, range.start.wrapping_add(1).wrapping_add(off as u64))
}

/// The 0-based ring position of `t` in `range` (the inverse of `place`).
fn pos(range: TokenRange, t: Token) -> u128 {
    u128::from(t.wrapping_sub(range.start).wrapping_sub(1))
}

/// Entries in ring order from the range's start.
fn entries_in(range: TokenRange, raw: Vec<(u64, u64)>) -> Vec<(Token, u64)> {
    let mut placed: Vec<(u128, Token, u64)> = raw
        .into_iter()
        .map(|(r, h)| {
            let (off, t) = place(range, r);
            (off, t, h)
        })
        .collect();
    placed.sort_by_key(|e| e.0);
    placed.into_iter().map(|(_, t, h)| (t, h)).collect()
}

fn case() -> impl Strategy<Value = (TokenRange, u8, Vec<(Token, u64)>)> {
    (
        range(),
        0u8..=MAX_DEPTH,
        proptest::collection::vec((raw_position(), any::<u64>()), 0..200),
    )
        .prop_map(|(r, d, raw)| (r, d, entries_in(r, raw)))
}

fn tree(range: TokenRange, depth: u8, entries: &[(Token, u64)]) -> MerkleTree {
    MerkleTree::build(range, depth, entries.iter().copied()).expect("entries in ring order")
}

/// What `diff` must return, computed the slow way: compare every leaf's
/// sequence of entry hashes, then coalesce runs of differing leaves.
fn brute_diff(t: &MerkleTree, a: &[(Token, u64)], b: &[(Token, u64)]) -> Vec<TokenRange> {
    let per_leaf = |es: &[(Token, u64)]| {
        let mut v = vec![Vec::new(); t.leaf_count()];
        for &(tok, h) in es {
            v[t.leaf_of(tok).expect("in range")].push(h);
        }
        v
    };
    let (la, lb) = (per_leaf(a), per_leaf(b));
    let mut out: Vec<TokenRange> = Vec::new();
    let mut prev_differs = false;
    for i in 0..t.leaf_count() {
        let differs = la[i] != lb[i];
        if differs {
            let r = t.leaf_range(i);
            match out.last_mut() {
                Some(last) if prev_differs => last.end = r.end,
                _ => out.push(r),
            }
        }
        prev_differs = differs;
    }
    out
}

/// Whatever one-entry change was made at `token`, the trees differ in
/// exactly the leaf holding it, seen from either side.
fn differs_in_exactly(a: &MerkleTree, b: &MerkleTree, token: Token) -> Result<(), TestCaseError> {
    let leaf = a.leaf_of(token).expect("token in range");
    prop_assert_eq!(a.diff(b), Ok(vec![a.leaf_range(leaf)]));
    prop_assert_eq!(b.diff(a), Ok(vec![a.leaf_range(leaf)]));
    prop_assert_eq!(a.diff_leaves(b), Ok(vec![leaf]));
    prop_assert_ne!(a.root(), b.root());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_same_entries_make_the_same_tree((range, depth, entries) in case()) {
        let a = tree(range, depth, &entries);
        let b = tree(range, depth, &entries);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.diff(&b), Ok(vec![]));
        prop_assert_eq!(a.root(), b.root());
        prop_assert_eq!(a.entries(), entries.len() as u64);
        let wire = rmp_serde::to_vec(&a).expect("encode");
        let back: MerkleTree = rmp_serde::from_slice(&wire).expect("decode");
        prop_assert_eq!(back, a);
    }

    #[test]
    fn changing_one_hash_differs_in_exactly_its_leaf(
        (range, depth, entries) in case(),
        at in any::<prop::sample::Index>(),
        delta in 1u64..,
    ) {
        prop_assume!(!entries.is_empty());
        let i = at.index(entries.len());
        let mut changed = entries.clone();
        changed[i].1 = changed[i].1.wrapping_add(delta);
        differs_in_exactly(&tree(range, depth, &entries), &tree(range, depth, &changed), entries[i].0)?;
    }

    #[test]
    fn adding_one_entry_differs_in_exactly_its_leaf(
        (range, depth, entries) in case(),
        raw in raw_position(),
        hash in any::<u64>(),
    ) {
        let (off, token) = place(range, raw);
        let mut added = entries.clone();
        // After any entries with the same token: still ring order.
        let at = added.partition_point(|&(t, _)| pos(range, t) <= off);
        added.insert(at, (token, hash));
        differs_in_exactly(&tree(range, depth, &entries), &tree(range, depth, &added), token)?;
    }

    #[test]
    fn removing_one_entry_differs_in_exactly_its_leaf(
        (range, depth, entries) in case(),
        at in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!entries.is_empty());
        let i = at.index(entries.len());
        let mut removed = entries.clone();
        removed.remove(i);
        differs_in_exactly(&tree(range, depth, &entries), &tree(range, depth, &removed), entries[i].0)?;
    }

    #[test]
    fn diff_is_symmetric_and_finds_every_differing_leaf(
        (range, depth, entries) in case(),
        touched in proptest::collection::vec(any::<bool>(), 200),
        extra in proptest::collection::vec((raw_position(), any::<u64>()), 0..5),
    ) {
        // b: some of a's hashes changed, a few entries added.
        let mut raw_b: Vec<(u64, u64)> = entries
            .iter()
            .zip(&touched)
            .map(|(&(t, h), &flip)| (pos(range, t) as u64, if flip { !h } else { h }))
            .collect();
        raw_b.extend(extra);
        let other = entries_in(range, raw_b);
        let (a, b) = (tree(range, depth, &entries), tree(range, depth, &other));
        let ab = a.diff(&b).expect("comparable");
        prop_assert_eq!(&ab, &b.diff(&a).expect("comparable"));
        prop_assert_eq!(&ab, &brute_diff(&a, &entries, &other));
        prop_assert_eq!(ab.is_empty(), a.root() == b.root());
    }

    #[test]
    fn leaves_tile_the_range_and_hold_their_tokens((range, depth, entries) in case()) {
        let t = tree(range, depth, &entries);
        prop_assert!(t.depth() <= depth);
        let n = t.leaf_count();
        // The cap only bites when the range is too narrow for the depth.
        prop_assert!(t.depth() == depth || range.width() < 1u128 << depth);
        for &(tok, _) in &entries {
            let leaf = t.leaf_of(tok).expect("entry in range");
            prop_assert!(t.leaf_range(leaf).contains(tok), "{} not in leaf {}", tok, leaf);
        }
        prop_assert_eq!(t.leaf_range(0).start, range.start);
        prop_assert_eq!(t.leaf_range(n - 1).end, range.end);
        let mut total = 0u128;
        for i in 0..n {
            let r = t.leaf_range(i);
            // A leaf is the whole ring only when the tree is one leaf over it.
            prop_assert!(r.start != r.end || (n == 1 && range.start == range.end));
            total += r.width();
            if i + 1 < n {
                prop_assert_eq!(r.end, t.leaf_range(i + 1).start, "gap or overlap after leaf {}", i);
            }
            prop_assert_eq!(t.leaf_of(r.end), Some(i));
            prop_assert_eq!(t.leaf_of(r.start.wrapping_add(1)), Some(i));
            prop_assert_eq!(t.leaf_entries(i), entries.iter().filter(|e| r.contains(e.0)).count() as u64);
        }
        prop_assert_eq!(total, range.width());
        if range.start != range.end {
            prop_assert_eq!(t.leaf_of(range.start), None);
            prop_assert_eq!(t.leaf_of(range.end.wrapping_add(1)), None);
        }
    }
}

#[test]
fn the_empty_leaf_hash_is_xxh3_of_nothing() {
    assert_eq!(EMPTY_LEAF, xxh3_64(&[]));
    let t = tree(WHOLE, 0, &[]);
    assert_eq!(t.root(), EMPTY_LEAF);
    assert_eq!(tree(WHOLE, 3, &[]).root(), tree(WHOLE, 3, &[]).root());
}

#[test]
fn entry_hashes_separate_bucket_key_and_digest() {
    let h = entry_hash("ab", b"c", 7);
    assert_ne!(h, entry_hash("a", b"bc", 7));
    assert_ne!(h, entry_hash("ab", b"c", 8));
    assert_ne!(h, entry_hash("ab", b"d", 7));
    assert_eq!(h, entry_hash("ab", b"c", 7));
}

#[test]
fn trees_of_other_ranges_or_depths_do_not_compare() {
    let a = tree(WHOLE, 4, &[]);
    let other = TokenRange { start: 0, end: 9 };
    assert_eq!(
        a.diff(&tree(other, 3, &[])),
        Err(MerkleError::RangeMismatch {
            ours: WHOLE,
            theirs: other
        })
    );
    assert_eq!(
        a.diff(&tree(WHOLE, 5, &[])),
        Err(MerkleError::DepthMismatch { ours: 4, theirs: 5 })
    );
}

#[test]
fn the_builder_refuses_entries_out_of_range_or_order() {
    let range = TokenRange {
        start: u64::MAX - 10,
        end: 10,
    };
    let mut b = MerkleTree::builder(range, 2);
    assert_eq!(b.push(u64::MAX, 1), Ok(()));
    // Ring order: 3 comes after u64::MAX in this range.
    assert_eq!(b.push(3, 1), Ok(()));
    assert_eq!(b.push(3, 2), Ok(()));
    assert_eq!(
        b.push(u64::MAX - 1, 1),
        Err(MerkleError::OutOfOrder {
            token: u64::MAX - 1,
            previous: 3
        })
    );
    assert_eq!(
        b.push(11, 1),
        Err(MerkleError::OutOfRange { token: 11, range })
    );
    assert_eq!(b.finish().entries(), 3);
}

#[test]
fn depth_is_capped_by_the_range_width() {
    let narrow = TokenRange { start: 5, end: 8 };
    let t = tree(narrow, 16, &[(6, 1), (8, 2)]);
    assert_eq!(t.depth(), 1);
    assert_eq!(t.leaf_range(0), TokenRange { start: 5, end: 6 });
    assert_eq!(t.leaf_range(1), TokenRange { start: 6, end: 8 });
    assert_eq!(tree(WHOLE, 200, &[]).depth(), MAX_DEPTH);
    assert_eq!(tree(TokenRange { start: 1, end: 2 }, 9, &[]).depth(), 0);
}

#[test]
fn a_malformed_tree_is_refused_on_arrival() {
    let good = tree(WHOLE, 3, &[(1, 1)]);
    let mut wire = Wire::from(good);
    wire.leaves.pop();
    let bytes = rmp_serde::to_vec(&wire).expect("encode");
    assert!(rmp_serde::from_slice::<MerkleTree>(&bytes).is_err());
    let deep = Wire {
        range: TokenRange { start: 0, end: 4 },
        depth: 3,
        leaves: vec![EMPTY_LEAF; 8],
        counts: vec![0; 8],
    };
    let bytes = rmp_serde::to_vec(&deep).expect("encode");
    assert!(rmp_serde::from_slice::<MerkleTree>(&bytes).is_err());
}

#[test]
fn a_full_depth_tree_stays_compact_on_the_wire() {
    let t = tree(WHOLE, MAX_DEPTH, &[(1, 1), (u64::MAX / 2, 2)]);
    let bytes = rmp_serde::to_vec(&t).expect("encode");
    // 65,536 leaf hashes of 9 bytes plus one-byte counts, and little else.
    assert!(bytes.len() < 65_536 * 11, "{} bytes", bytes.len());
}
