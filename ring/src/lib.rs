//! The consistent-hash ring of quorumkv: where every key lives, and what
//! moves when the cluster changes.
//!
//! WORK IN PROGRESS essay.

pub mod alloc;
pub mod error;
pub mod file;
mod placement;
pub mod plan;
pub mod ring;
pub mod sim;
pub mod stats;
pub mod whatif;

pub use alloc::{allocate, balanced, evenly_spaced, random, random_for, Strategy};
pub use error::Error;
pub use file::{RingFile, TokenEntry};
pub use plan::{plan, DataSize, Estimate, Joining, NodeChange, PairTotal, Plan, RangeLoad, RangeMove, Transfer};
pub use ring::{NodeIndex, RangeReplicas, Ring, TokenRange};
pub use sim::{render_svg, simulate, SimRow};
pub use stats::{ownership, NodeOwnership, Ownership, Summary};
pub use whatif::{quorum, what_if, LevelLoss, LostRange, WhatIf};

/// A position on the ring: the full `u64` space, wrapping at `u64::MAX`.
pub type Token = u64;

/// A node's stable identifier (the `--id` of `qkvd`).
pub type NodeId = String;

/// The token of a key in a bucket: `xxh3_64(bucket || 0x00 || key)`.
///
/// The separator byte keeps `("ab", "c")` and `("a", "bc")` apart; bucket
/// names cannot contain 0x00, so the encoding is unambiguous.
pub fn token_of(bucket: &[u8], key: &[u8]) -> Token {
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
}
