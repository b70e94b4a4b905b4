//! The consistent-hash ring of quorumkv: where every key lives.
//!
//! Keys hash to 64-bit tokens with xxh3; each node owns several virtual-node
//! tokens; the replicas of a key are the first `n` distinct nodes clockwise
//! from its token. Everything here is pure and deterministic: no I/O, no
//! clock, randomness passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// A ring of virtual-node tokens, each owned by one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    tokens: BTreeMap<Token, NodeId>,
}

impl Ring {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `node`'s tokens; a token already taken keeps its first owner.
    pub fn insert_node(&mut self, node: &str, tokens: &[Token]) {
        for t in tokens {
            self.tokens.entry(*t).or_insert_with(|| node.to_string());
        }
    }

    /// All `(token, node)` pairs in token order.
    pub fn tokens(&self) -> impl Iterator<Item = (Token, &NodeId)> {
        self.tokens.iter().map(|(t, n)| (*t, n))
    }

    /// Number of distinct nodes.
    pub fn node_count(&self) -> usize {
        let mut nodes: Vec<&NodeId> = self.tokens.values().collect();
        nodes.sort();
        nodes.dedup();
        nodes.len()
    }

    /// The first `n` distinct nodes clockwise from `token` (the vnode whose
    /// token is the first one `>= token` owns it, wrapping around).
    pub fn preference_list(&self, token: Token, n: usize) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::with_capacity(n);
        for (_, node) in self.tokens.range(token..).chain(self.tokens.range(..token)) {
            if out.len() >= n {
                break;
            }
            if !out.contains(node) {
                out.push(node.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_keeps_bucket_and_key_apart() {
        assert_ne!(token_of(b"ab", b"c"), token_of(b"a", b"bc"));
    }

    #[test]
    fn preference_list_wraps_and_is_distinct() {
        let mut r = Ring::new();
        r.insert_node("a", &[10, 40]);
        r.insert_node("b", &[20]);
        r.insert_node("c", &[30]);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(r.preference_list(35, 3), names(&["a", "b", "c"]));
        assert_eq!(r.preference_list(u64::MAX, 2), names(&["a", "b"]));
    }
}
