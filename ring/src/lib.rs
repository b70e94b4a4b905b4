//! The consistent-hash ring of quorumkv: where every key lives, and what
//! moves when the cluster changes. Pure and deterministic: no I/O, no
//! clock, randomness passed in as seeds.
//!
//! # Tokens and vnodes
//!
//! A key hashes to a 64-bit token, `xxh3_64(bucket || 0x00 || key)`
//! ([`token_of`]). Each node owns several *virtual node* tokens on the
//! ring; the vnode with token `t` owns the keys in `(previous token, t]`.
//! The replicas of a key are the first `n` distinct nodes met walking
//! clockwise from its token — with racks, distinct racks first, as
//! Cassandra's `NetworkTopologyStrategy` does within a datacenter
//! ([`Ring::preference_list`], rule in the private `placement` module).
//!
//! Vnodes exist for two reasons. Load: one token per node leaves shares
//! that differ by factors of several; many small pieces average out.
//! Movement: a joining node takes a little from many nodes instead of half
//! of one node's range, so streaming is spread and short.
//!
//! # Allocation: random vs balanced
//!
//! Random tokens ([`alloc::random`]) need hundreds of vnodes before the
//! averaging is good (CV of ownership ≈ `1/sqrt(V)`). The balanced
//! allocator ([`alloc::balanced`]) instead places each token of a joining
//! node where it best evens out *replicated* ownership — the data nodes
//! really store with `rf` copies — which keeps the busiest node within a
//! few percent of the mean with only 16 vnodes while the cluster grows,
//! and moves close to the ideal `1/(n+1)` of the data per addition. The
//! algorithm and why it works are in the [`alloc`] module's essay.
//!
//! # Where each idea lives
//!
//! | module | what |
//! |---|---|
//! | [`ring`] | [`Ring`]: sorted tokens, owners, racks; `O(log T)` lookups; [`Ring::ranges`] |
//! | `placement` | the replica walk (distinct nodes; distinct racks first) |
//! | [`alloc`] | token allocation: [`Strategy`], [`allocate`], [`balanced`], [`random`] |
//! | [`stats`] | primary and replicated ownership, max/mean, CV, imbalance ([`ownership`]) |
//! | [`mod@plan`] | [`Plan`]: ranges that change replicas, transfers, per-pair totals, [`Plan::apply`] |
//! | [`whatif`] | [`what_if`]: ranges that lose `one`/`quorum`/`all` with nodes down |
//! | [`sim`] | [`simulate`] growth and [`render_svg`], for `qkv ring simulate` |
//! | [`mod@file`] | [`RingFile`]: the JSON of `/cluster/ring` (tokens are exact u64 numbers) |
//! | [`error`] | the crate's one [`Error`] enum |
//!
//! # Invariants the tests hold us to
//!
//! Unit tests sit next to the code; `tests/properties.rs` checks with
//! proptest that preference lists hold `n` distinct nodes (and distinct
//! racks where possible), replicated ownership sums to `rf`, applying a
//! plan to the old ring gives the new ring, adding a node moves data only
//! to it, removing one only away from it, and the same seed gives the same
//! tokens. `alloc` tests the balance targets (docs/RING.md) on a 3..64 node
//! growth; `sim` checks the simulator against the closed-form CV of random
//! tokens; `benches/lookup.rs` times lookups.
//!
//! # Implementation caveats
//!
//! * Node indices ([`NodeIndex`]) are positions in the sorted node list
//!   and change when nodes join or leave; keep names across ring versions.
//! * All shares are fractions of the token space, i.e. of the keys when
//!   keys hash uniformly; bytes per key can still differ between ranges,
//!   which is why plans accept reported per-range loads.
//! * One datacenter only: racks, not datacenters, shape placement.

#![warn(missing_docs)]

pub mod alloc;
pub mod error;
pub mod file;
mod placement;
pub mod plan;
pub mod ring;
pub mod sim;
pub mod stats;
pub mod whatif;

pub use alloc::{Strategy, allocate, balanced, evenly_spaced, random, random_for};
pub use error::Error;
pub use file::{RingFile, TokenEntry};
pub use plan::{
    DataSize, Estimate, Joining, NodeChange, PairTotal, Plan, RangeLoad, RangeMove, Transfer, plan,
};
pub use ring::{NodeIndex, RangeReplicas, Ring, TokenRange};
pub use sim::{SimRow, render_svg, simulate};
pub use stats::{NodeOwnership, Ownership, Summary, ownership};
pub use whatif::{LevelLoss, LostRange, WhatIf, quorum, what_if};

/// A position on the ring: the full `u64` space, wrapping at `u64::MAX`.
pub type Token = u64;

/// A node's stable identifier (the `--id` of `qkvd`).
pub type NodeId = String;

/// The token of a key in a bucket: `xxh3_64(bucket || 0x00 || key)`.
///
/// The separator byte keeps `("ab", "c")` and `("a", "bc")` apart; bucket
/// names cannot contain 0x00, so the encoding is unambiguous.
pub fn token_of(bucket: &[u8], key: &[u8]) -> Token {
    // Every request hashes its key more than once; the one-shot hash of a
    // stack copy is several times cheaper than the streaming state for the
    // short keys that are the common case. Both give the same token.
    const SHORT: usize = 256;
    let len = bucket.len() + 1 + key.len();
    if len <= SHORT {
        let mut buf = [0u8; SHORT];
        buf[..bucket.len()].copy_from_slice(bucket);
        buf[bucket.len() + 1..len].copy_from_slice(key);
        return xxhash_rust::xxh3::xxh3_64(&buf[..len]);
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(bucket);
    h.update(&[0]);
    h.update(key);
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_keeps_bucket_and_key_apart() {
        assert_ne!(token_of(b"ab", b"c"), token_of(b"a", b"bc"));
    }

    /// The token as it was first computed (streaming the three parts):
    /// stored data keys depend on it never changing.
    fn reference(bucket: &[u8], key: &[u8]) -> Token {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(bucket);
        h.update(&[0]);
        h.update(key);
        h.digest()
    }

    #[test]
    fn tokens_of_known_keys_never_change() {
        // Pinned values: a change here would move every stored key.
        assert_eq!(token_of(b"default", b"k"), reference(b"default", b"k"));
        assert_eq!(token_of(b"default", b"hello"), 15_203_937_867_536_220_259);
    }

    proptest::proptest! {
        #[test]
        fn short_and_long_keys_hash_as_one_input(
            bucket in proptest::collection::vec(1u8..=255, 0..80),
            key in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        ) {
            proptest::prop_assert_eq!(token_of(&bucket, &key), reference(&bucket, &key));
        }
    }
}
