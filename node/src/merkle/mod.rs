//! Merkle trees over token ranges: the comparison step of anti-entropy.
//!
//! # What they are for
//!
//! Read repair only heals keys somebody reads, and hints only cover the
//! writes a coordinator knew a replica missed. Anti-entropy heals the rest:
//! the replicas of a token range each build a [`MerkleTree`] over their copy
//! of the range, exchange roots, and when the roots differ descend only into
//! the subtrees that differ ([`MerkleTree::diff`]). The leaves that still
//! differ at the bottom name the sub-ranges worth streaming; the receiving
//! side merges what arrives with DVVSet `sync`, which is idempotent, so
//! streaming a key both sides already agree on costs bandwidth but never
//! correctness. Tombstones may only be purged once such a pass has covered
//! their range (docs/OPERATIONS.md), so the tree is also what makes deletes final.
//!
//! # Why leaves are token sub-ranges
//!
//! The data partition is keyed `token || bucket || 0x00 || key`, so a token
//! interval is one contiguous storage scan. Cutting the range into `2^depth`
//! sub-ranges of equal token width (rather than, say, equal key counts)
//! means both replicas cut it at the same places without talking to each
//! other, a leaf is resolved by one `scan_tokens` call, and a mismatching
//! leaf is streamed by the same kind of scan. Because tokens are hashes,
//! equal widths also mean roughly equal key counts. Per-leaf entry counts
//! are kept so that the streaming step can see what a mismatch costs before
//! paying for it.
//!
//! # Why entry hashes use the DVVSet digest
//!
//! Two replicas that hold the same versions of a key must hash equal even
//! if they got there by different paths (a write here, read repair there,
//! hints replayed in another order). [`crate::version::Dvvs::digest`] is a
//! hash of the canonical encoding, a function of the state's meaning only,
//! so equal states hash equal on every replica. The bucket and key are
//! hashed in too ([`entry_hash`]): otherwise two keys of one leaf holding
//! equal values could swap places unnoticed.
//!
//! # Implementation caveats
//!
//! * Entries must be given in ring order starting just after the range's
//!   start (the order `scan_tokens` returns them in, wrapping past
//!   `u64::MAX`); a leaf's hash folds its entries in that order, so both
//!   sides must agree on it. [`MerkleBuilder::push`] refuses tokens that go
//!   backwards or fall outside the range rather than build a tree that would
//!   disagree with every other replica.
//! * The depth is capped at [`MAX_DEPTH`] and at `log2(range width)`, so
//!   that every leaf holds at least one token (a [`TokenRange`] cannot say
//!   "empty"). Both sides apply the same cap, so trees requested at the same
//!   depth for the same range stay comparable.
//! * Trees travel as their leaves and counts only; inner nodes are
//!   recomputed on arrival, so a peer cannot send a tree whose inner hashes
//!   disagree with its leaves.

pub mod scan;

#[cfg(test)]
mod tests;

use quorumkv_ring::{Token, TokenRange};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

pub use scan::build_filtered;
#[cfg(test)]
pub use scan::build_from_store;

/// Which keys of a range a tree (and a repair of it) covers, by bucket.
/// Repair compares one replication factor at a time, and the replicas of a
/// range differ per `n`: a tree at `n = 5` must leave out the keys of
/// buckets with `n = 3`, which the 4th and 5th replicas never hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyFilter {
    /// Every key.
    #[default]
    All,
    /// Only the keys of these buckets.
    Only(Vec<String>),
    /// Every key but those of these buckets.
    Except(Vec<String>),
}

impl KeyFilter {
    /// Whether keys of `bucket` are covered.
    pub fn admits(&self, bucket: &str) -> bool {
        match self {
            KeyFilter::All => true,
            KeyFilter::Only(b) => b.iter().any(|x| x == bucket),
            KeyFilter::Except(b) => !b.iter().any(|x| x == bucket),
        }
    }
}

/// The deepest tree: 65,536 leaves, about 1 MiB of hashes and counts.
pub const MAX_DEPTH: u8 = 16;

/// The hash of a leaf holding no entries: xxh3 of nothing, the same on
/// every replica.
pub const EMPTY_LEAF: u64 = 0x2d06_8005_38d3_94c2;

/// Why two trees cannot be compared, or why entries cannot go into one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The trees cover different token ranges.
    #[error("trees cover different ranges: {ours} here, {theirs} there")]
    RangeMismatch {
        /// This tree's range.
        ours: TokenRange,
        /// The other tree's range.
        theirs: TokenRange,
    },
    /// The trees were built at different depths.
    #[error("trees have different depths: {ours} here, {theirs} there")]
    DepthMismatch {
        /// This tree's depth.
        ours: u8,
        /// The other tree's depth.
        theirs: u8,
    },
    /// An entry's token is not in the tree's range.
    #[error("token {token} is outside the tree's range {range}")]
    OutOfRange {
        /// The entry's token.
        token: Token,
        /// The tree's range.
        range: TokenRange,
    },
    /// Entries were not given in ring order from the range's start.
    #[error("token {token} comes after token {previous}, not in ring order")]
    OutOfOrder {
        /// The entry's token.
        token: Token,
        /// The token of the entry before it.
        previous: Token,
    },
    /// A received tree does not have the shape its depth implies.
    #[error("malformed tree: {0}")]
    Malformed(String),
}

/// What one stored key contributes to its leaf: its bucket, its key and the
/// digest of its version set. `bucket` never holds 0x00 and the digest has
/// a fixed width, so distinct `(bucket, key)` pairs cannot encode alike.
pub fn entry_hash(bucket: &str, key: &[u8], digest: u64) -> u64 {
    let mut h = Xxh3::new();
    h.update(bucket.as_bytes());
    h.update(&[0]);
    h.update(key);
    h.update(&digest.to_le_bytes());
    h.digest()
}

/// The depth a tree over `range` gets when `requested` is asked for.
pub fn effective_depth(range: TokenRange, requested: u8) -> u8 {
    // floor(log2(width)); width >= 1, so this is at most 64.
    let fits = 127 - range.width().leading_zeros();
    requested.min(MAX_DEPTH).min(fits as u8)
}

fn inner_hash(left: u64, right: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&left.to_le_bytes());
    buf[8..].copy_from_slice(&right.to_le_bytes());
    xxh3_64(&buf)
}

/// A Merkle tree over one token range. See the module documentation.
///
/// Layout: `nodes` is a binary heap (`nodes[0]` is the root, node `i` has
/// children `2i + 1` and `2i + 2`), so the leaves are the last `2^depth`
/// entries, in ring order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Wire", into = "Wire")]
pub struct MerkleTree {
    range: TokenRange,
    depth: u8,
    nodes: Vec<u64>,
    counts: Vec<u64>,
}

/// What travels: the leaves and counts; inner nodes are derived.
#[derive(Serialize, Deserialize)]
struct Wire {
    range: TokenRange,
    depth: u8,
    leaves: Vec<u64>,
    counts: Vec<u64>,
}

impl From<MerkleTree> for Wire {
    fn from(t: MerkleTree) -> Wire {
        let first = t.first_leaf();
        Wire {
            range: t.range,
            depth: t.depth,
            leaves: t.nodes[first..].to_vec(),
            counts: t.counts,
        }
    }
}

impl TryFrom<Wire> for MerkleTree {
    type Error = MerkleError;

    fn try_from(w: Wire) -> Result<MerkleTree, MerkleError> {
        if w.depth != effective_depth(w.range, w.depth) {
            return Err(MerkleError::Malformed(format!(
                "depth {} is not possible for range {}",
                w.depth, w.range
            )));
        }
        let n = 1usize << w.depth;
        if w.leaves.len() != n || w.counts.len() != n {
            return Err(MerkleError::Malformed(format!(
                "depth {} needs {n} leaves and counts, got {} and {}",
                w.depth,
                w.leaves.len(),
                w.counts.len()
            )));
        }
        Ok(MerkleTree::from_leaves(
            w.range, w.depth, w.leaves, w.counts,
        ))
    }
}

impl MerkleTree {
    /// Builds the tree of `range` at `depth` (capped, see
    /// [`effective_depth`]) from `(token, entry_hash)` pairs in ring order.
    pub fn build(
        range: TokenRange,
        depth: u8,
        entries: impl IntoIterator<Item = (Token, u64)>,
    ) -> Result<MerkleTree, MerkleError> {
        let mut b = MerkleTree::builder(range, depth);
        for (token, hash) in entries {
            b.push(token, hash)?;
        }
        Ok(b.finish())
    }

    /// A builder taking entries one at a time, for callers that stream
    /// them from storage instead of collecting a whole range.
    pub fn builder(range: TokenRange, depth: u8) -> MerkleBuilder {
        let depth = effective_depth(range, depth);
        let n = 1usize << depth;
        MerkleBuilder {
            shape: MerkleTree {
                range,
                depth,
                nodes: Vec::new(),
                counts: Vec::new(),
            },
            leaves: vec![EMPTY_LEAF; n],
            counts: vec![0; n],
            current: None,
            last: None,
        }
    }

    fn from_leaves(range: TokenRange, depth: u8, leaves: Vec<u64>, counts: Vec<u64>) -> Self {
        let n = leaves.len();
        let mut nodes = vec![0u64; n - 1];
        nodes.extend(leaves);
        for i in (0..n - 1).rev() {
            nodes[i] = inner_hash(nodes[2 * i + 1], nodes[2 * i + 2]);
        }
        MerkleTree {
            range,
            depth,
            nodes,
            counts,
        }
    }

    /// The range the tree covers.
    pub fn range(&self) -> TokenRange {
        self.range
    }

    /// The depth after capping: the tree has `2^depth` leaves.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// The root hash: equal roots mean (barring a 64-bit collision) equal
    /// data over the whole range.
    pub fn root(&self) -> u64 {
        self.nodes[0]
    }

    /// Number of leaves, `2^depth`.
    pub fn leaf_count(&self) -> usize {
        1 << self.depth
    }

    /// Number of entries over the whole range.
    pub fn entries(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Number of entries in leaf `i`: what streaming that leaf would send.
    ///
    /// # Panics
    /// If `i >= leaf_count()`.
    pub fn leaf_entries(&self, i: usize) -> u64 {
        self.counts[i]
    }

    /// The hash of leaf `i`.
    ///
    /// # Panics
    /// If `i >= leaf_count()`.
    pub fn leaf_hash(&self, i: usize) -> u64 {
        self.nodes[self.first_leaf() + i]
    }

    /// Token width of every leaf but the last (which also takes the
    /// remainder).
    fn leaf_width(&self) -> u128 {
        self.range.width() >> self.depth
    }

    fn first_leaf(&self) -> usize {
        self.leaf_count() - 1
    }

    /// The leaf whose sub-range holds `token`, or `None` outside the range.
    pub fn leaf_of(&self, token: Token) -> Option<usize> {
        leaf_index(self.range, self.depth, token)
    }

    /// The sub-range of leaf `i`: `(start + i·w, start + (i+1)·w]` with
    /// `w = width / 2^depth`, the last leaf ending at the range's end.
    ///
    /// # Panics
    /// If `i >= leaf_count()`.
    pub fn leaf_range(&self, i: usize) -> TokenRange {
        assert!(i < self.leaf_count(), "leaf {i} of {}", self.leaf_count());
        let w = self.leaf_width();
        let at = |k: u128| self.range.start.wrapping_add(k as u64);
        let end = if i + 1 == self.leaf_count() {
            self.range.end
        } else {
            at((i as u128 + 1) * w)
        };
        TokenRange {
            start: at(i as u128 * w),
            end,
        }
    }

    /// The leaves whose hashes differ, in ring order, found top-down: a
    /// subtree whose root agrees is never visited.
    pub fn diff_leaves(&self, other: &MerkleTree) -> Result<Vec<usize>, MerkleError> {
        self.comparable(other)?;
        let first = self.first_leaf();
        let mut out = Vec::new();
        // Depth-first, left child popped first, so leaves come out in order.
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            if self.nodes[i] == other.nodes[i] {
                continue;
            }
            if i >= first {
                out.push(i - first);
            } else {
                stack.push(2 * i + 2);
                stack.push(2 * i + 1);
            }
        }
        Ok(out)
    }

    /// The sub-ranges where the trees disagree: differing leaves, adjacent
    /// ones coalesced into one range (one scan each when streaming).
    pub fn diff(&self, other: &MerkleTree) -> Result<Vec<TokenRange>, MerkleError> {
        let leaves = self.diff_leaves(other)?;
        let mut out: Vec<TokenRange> = Vec::new();
        let mut prev: Option<usize> = None;
        for i in leaves {
            let r = self.leaf_range(i);
            match (prev, out.last_mut()) {
                (Some(p), Some(last)) if p + 1 == i => last.end = r.end,
                _ => out.push(r),
            }
            prev = Some(i);
        }
        Ok(out)
    }

    fn comparable(&self, other: &MerkleTree) -> Result<(), MerkleError> {
        if self.range != other.range {
            return Err(MerkleError::RangeMismatch {
                ours: self.range,
                theirs: other.range,
            });
        }
        if self.depth != other.depth {
            return Err(MerkleError::DepthMismatch {
                ours: self.depth,
                theirs: other.depth,
            });
        }
        Ok(())
    }
}

/// Offset of `token` in `range`, 0-based (the token just after `start` is 0).
fn offset(range: TokenRange, token: Token) -> Option<u128> {
    range
        .contains(token)
        .then(|| u128::from(token.wrapping_sub(range.start).wrapping_sub(1)))
}

fn leaf_index(range: TokenRange, depth: u8, token: Token) -> Option<usize> {
    let w = range.width() >> depth;
    let last = (1usize << depth) - 1;
    offset(range, token).map(|off| ((off / w) as usize).min(last))
}

/// Builds a [`MerkleTree`] from entries pushed one at a time in ring order;
/// holds one leaf's hash state at a time.
pub struct MerkleBuilder {
    /// Range and depth of the tree being built (nodes still empty).
    shape: MerkleTree,
    leaves: Vec<u64>,
    counts: Vec<u64>,
    /// The leaf being hashed and its state.
    current: Option<(usize, Xxh3)>,
    /// Offset and token of the last entry pushed, to check ring order.
    last: Option<(u128, Token)>,
}

impl std::fmt::Debug for MerkleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerkleBuilder")
            .field("range", &self.shape.range)
            .field("depth", &self.shape.depth)
            .field("entries", &self.counts.iter().sum::<u64>())
            .field("last", &self.last.map(|(_, t)| t))
            .finish_non_exhaustive()
    }
}

impl MerkleBuilder {
    /// Adds one entry. Tokens must not go backwards in ring order from the
    /// range's start (equal tokens are fine: distinct keys may share one).
    pub fn push(&mut self, token: Token, hash: u64) -> Result<(), MerkleError> {
        let range = self.shape.range;
        let off = offset(range, token).ok_or(MerkleError::OutOfRange { token, range })?;
        if let Some((prev_off, previous)) = self.last
            && off < prev_off
        {
            return Err(MerkleError::OutOfOrder { token, previous });
        }
        self.last = Some((off, token));
        let leaf = ((off / self.shape.leaf_width()) as usize).min(self.leaves.len() - 1);
        if self.current.as_ref().is_none_or(|(l, _)| *l != leaf) {
            self.seal();
            self.current = Some((leaf, Xxh3::new()));
        }
        if let Some((_, h)) = &mut self.current {
            h.update(&hash.to_le_bytes());
        }
        self.counts[leaf] += 1;
        Ok(())
    }

    fn seal(&mut self) {
        if let Some((leaf, h)) = self.current.take() {
            self.leaves[leaf] = h.digest();
        }
    }

    /// The finished tree.
    pub fn finish(mut self) -> MerkleTree {
        self.seal();
        MerkleTree::from_leaves(self.shape.range, self.shape.depth, self.leaves, self.counts)
    }
}
