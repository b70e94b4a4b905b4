//! The causal context: a version vector, and its opaque token form
//! (`X-Causal-Context`).
//!
//! Token layout (then base64url without padding):
//!
//! ```text
//! 0x51 0x4B            magic "QK": not a token of some other system
//! 0x01                 format version
//! varint n             number of entries, at most MAX_ENTRIES
//! n × { varint len, len bytes of UTF-8 replica id, varint counter ≥ 1 }
//!                      strictly ascending by replica id (bytewise)
//! 4 bytes              low 32 bits of xxh3-64 of everything before, LE
//! ```
//!
//! Varints are unsigned LEB128 in their shortest form. Decoding is strict
//! (one byte string per context, so `encode(decode(t)) == t` for every token
//! it accepts) and total: any input yields a context or a [`ContextError`],
//! never a panic, and allocation is bounded by the input's length.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::ReplicaId;

/// The most entries a token may hold. A key gets one entry per replica that
/// ever coordinated a write to it, so real contexts hold a handful.
pub const MAX_ENTRIES: usize = 1024;
/// The longest replica (node) id a token may hold, in bytes. Node ids must
/// stay within it, or contexts naming them would not decode.
pub const MAX_REPLICA_ID_LEN: usize = 255;

const MAGIC: [u8; 2] = *b"QK";
const FORMAT: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1;
const CHECKSUM_LEN: usize = 4;
const MAX_VARINT_LEN: usize = 10;
/// Largest binary token: header, entry count, entries at their largest,
/// checksum.
const MAX_TOKEN_BYTES: usize = HEADER_LEN
    + MAX_VARINT_LEN
    + MAX_ENTRIES * (MAX_VARINT_LEN + MAX_REPLICA_ID_LEN + MAX_VARINT_LEN)
    + CHECKSUM_LEN;
/// Longest token string: base64 of the largest binary token.
pub const MAX_TOKEN_CHARS: usize = MAX_TOKEN_BYTES.div_ceil(3) * 4;

/// Why a causal-context token was refused. Every variant is the client's
/// fault (the HTTP layer answers 400 `bad_request` with the message), and
/// the messages are written for the person who sent the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// An empty string: send no header instead.
    #[error("causal context is empty (omit the header to write without a context)")]
    Empty,
    /// Longer than any token this store can issue.
    #[error("causal context is {len} characters long, longer than any token ({max})")]
    TooLong {
        /// Characters received.
        len: usize,
        /// The longest a token can be.
        max: usize,
    },
    /// Not base64url without padding.
    #[error("causal context is not valid base64url (unpadded, alphabet A-Z a-z 0-9 - _)")]
    InvalidBase64,
    /// Ends before its header, an entry or the checksum does.
    #[error("causal context is truncated")]
    Truncated,
    /// Valid base64, but not a quorumkv token.
    #[error("causal context was not issued by quorumkv (unknown magic bytes)")]
    ForeignToken,
    /// A quorumkv token of a format this node does not know.
    #[error("causal context has format version {0}; this node reads version {FORMAT}")]
    UnsupportedFormat(u8),
    /// The bytes do not match their checksum.
    #[error("causal context checksum mismatch (token from another system or corrupted)")]
    ChecksumMismatch,
    /// More entries than [`MAX_ENTRIES`].
    #[error("causal context claims {count} entries, more than the {max} allowed")]
    TooManyEntries {
        /// Entries claimed.
        count: u64,
        /// The most allowed.
        max: usize,
    },
    /// A replica id longer than [`MAX_REPLICA_ID_LEN`].
    #[error("causal context names a replica id of {len} bytes, more than the {max} allowed")]
    ReplicaIdTooLong {
        /// Bytes claimed.
        len: u64,
        /// The most allowed.
        max: usize,
    },
    /// Well-framed but not something `encode` writes.
    #[error("causal context is malformed: {0}")]
    Malformed(&'static str),
    /// Bytes left over after the last entry.
    #[error("causal context has {0} unexpected bytes after its entries")]
    TrailingBytes(usize),
}

/// The causal context: a version vector mapping each replica to the number
/// of its events (dots) seen. A read returns the join of everything it saw;
/// a write that carries it replaces exactly the versions it covers.
///
/// Invariant: no entry has counter 0 (an absent entry means 0), so derived
/// equality is equality of version vectors.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(
    try_from = "BTreeMap<ReplicaId, u64>",
    into = "BTreeMap<ReplicaId, u64>"
)]
pub struct Context {
    entries: BTreeMap<ReplicaId, u64>,
}

impl From<Context> for BTreeMap<ReplicaId, u64> {
    fn from(c: Context) -> Self {
        c.entries
    }
}

/// A context as it crosses the internode wire: refused when an entry
/// breaks the invariant (a zero counter).
impl TryFrom<BTreeMap<ReplicaId, u64>> for Context {
    type Error = ContextError;

    fn try_from(entries: BTreeMap<ReplicaId, u64>) -> Result<Context, ContextError> {
        if entries.values().any(|&n| n == 0) {
            return Err(ContextError::Malformed("an entry with counter 0"));
        }
        Ok(Context { entries })
    }
}

impl Context {
    /// The empty context: a write carrying it is concurrent with everything.
    pub fn new() -> Self {
        Context::default()
    }

    /// True when the context covers no event at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of replicas with at least one event seen.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Events of `replica` seen (0 if none).
    pub fn get(&self, replica: &str) -> u64 {
        self.entries.get(replica).copied().unwrap_or(0)
    }

    /// The entries in replica order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|(id, n)| (id.as_str(), *n))
    }

    /// True if the event `counter` of `replica` happened before this context.
    pub fn covers(&self, replica: &str, counter: u64) -> bool {
        counter <= self.get(replica)
    }

    /// Raises the entry of `replica` to at least `counter` (a pointwise max,
    /// so contexts only ever grow).
    pub fn observe(&mut self, replica: &str, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.entries.get_mut(replica) {
            Some(n) => *n = (*n).max(counter),
            None => {
                self.entries.insert(replica.to_owned(), counter);
            }
        }
    }

    /// The least upper bound of two contexts: everything either has seen.
    pub fn join(&mut self, other: &Context) {
        for (id, n) in other.iter() {
            self.observe(id, n);
        }
    }

    /// True if every event `other` has seen, `self` has seen too (`self ≥
    /// other` pointwise). Equal contexts descend from each other.
    pub fn descends(&self, other: &Context) -> bool {
        other.iter().all(|(id, n)| self.get(id) >= n)
    }

    /// The opaque token for `X-Causal-Context`: compact binary (see the
    /// module docs), base64url without padding. Clients must treat it as
    /// opaque; only [`Context::decode`] reads it.
    pub fn encode(&self) -> String {
        encode_sorted(self.entries.iter().map(|(id, n)| (id.as_str(), *n)))
    }

    /// Reads a token [`Context::encode`] wrote, strictly: anything else —
    /// random text, a truncated or corrupted token, padding, trailing
    /// bytes, a token of another system — is an error that says what is
    /// wrong. Never panics; allocates at most in proportion to the input.
    pub fn decode(token: &str) -> Result<Context, ContextError> {
        if token.is_empty() {
            return Err(ContextError::Empty);
        }
        if token.len() > MAX_TOKEN_CHARS {
            return Err(ContextError::TooLong {
                len: token.len(),
                max: MAX_TOKEN_CHARS,
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ContextError::InvalidBase64)?;
        if bytes.len() < MAGIC.len() {
            return Err(ContextError::Truncated);
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(ContextError::ForeignToken);
        }
        match bytes.get(MAGIC.len()) {
            None => return Err(ContextError::Truncated),
            Some(&FORMAT) => {}
            Some(&other) => return Err(ContextError::UnsupportedFormat(other)),
        }
        // Header, at least one byte of entry count, checksum.
        if bytes.len() < HEADER_LEN + 1 + CHECKSUM_LEN {
            return Err(ContextError::Truncated);
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(ContextError::ChecksumMismatch);
        }
        let mut r = Reader {
            rest: &body[HEADER_LEN..],
        };
        let count = r.varint()?;
        if count > MAX_ENTRIES as u64 {
            return Err(ContextError::TooManyEntries {
                count,
                max: MAX_ENTRIES,
            });
        }
        let mut ctx = Context::new();
        let mut previous: Option<&str> = None;
        for _ in 0..count {
            let len = r.varint()?;
            if len > MAX_REPLICA_ID_LEN as u64 {
                return Err(ContextError::ReplicaIdTooLong {
                    len,
                    max: MAX_REPLICA_ID_LEN,
                });
            }
            // `len` ≤ 255, so the cast is lossless.
            let id = std::str::from_utf8(r.take(len as usize)?)
                .map_err(|_| ContextError::Malformed("replica id is not UTF-8"))?;
            if id.is_empty() {
                return Err(ContextError::Malformed("empty replica id"));
            }
            if previous.is_some_and(|p| p >= id) {
                return Err(ContextError::Malformed(
                    "entries not in ascending replica order",
                ));
            }
            let n = r.varint()?;
            if n == 0 {
                return Err(ContextError::Malformed("zero counter"));
            }
            ctx.entries.insert(id.to_owned(), n);
            previous = Some(id);
        }
        if !r.rest.is_empty() {
            return Err(ContextError::TrailingBytes(r.rest.len()));
        }
        Ok(ctx)
    }
}

impl FromIterator<(ReplicaId, u64)> for Context {
    /// Builds a context from (replica, counter) pairs, keeping the largest
    /// counter per replica and dropping zeros.
    fn from_iter<I: IntoIterator<Item = (ReplicaId, u64)>>(iter: I) -> Self {
        let mut ctx = Context::new();
        for (id, n) in iter {
            ctx.observe(&id, n);
        }
        ctx
    }
}

/// The token of the context made of `entries`: replicas in strictly
/// increasing order, each once, with non-zero counters (what a `Context`
/// holds). [`crate::version::Dvvs::context_token`] encodes a version set's
/// context with it without building the `Context` first.
pub(crate) fn encode_sorted<'a, I>(entries: I) -> String
where
    I: Iterator<Item = (&'a str, u64)> + Clone,
{
    let count = entries.clone().count();
    debug_assert!(count <= MAX_ENTRIES, "context too large to encode");
    let mut buf = Vec::with_capacity(HEADER_LEN + 1 + count * 12 + CHECKSUM_LEN);
    buf.extend_from_slice(&MAGIC);
    buf.push(FORMAT);
    put_varint(&mut buf, count as u64);
    for (id, n) in entries {
        debug_assert!(id.len() <= MAX_REPLICA_ID_LEN, "replica id too long: {id}");
        put_varint(&mut buf, id.len() as u64);
        buf.extend_from_slice(id.as_bytes());
        put_varint(&mut buf, n);
    }
    let sum = checksum(&buf);
    buf.extend_from_slice(&sum);
    URL_SAFE_NO_PAD.encode(buf)
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = xxhash_rust::xxh3::xxh3_64(bytes).to_le_bytes();
    [h[0], h[1], h[2], h[3]]
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ContextError> {
        if n > self.rest.len() {
            return Err(ContextError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A shortest-form LEB128 u64.
    fn varint(&mut self) -> Result<u64, ContextError> {
        let mut v: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let [b] = self.take(1)? else {
                return Err(ContextError::Truncated);
            };
            let b = *b;
            let bits = u64::from(b & 0x7f);
            if i == MAX_VARINT_LEN - 1 && bits > 1 {
                return Err(ContextError::Malformed("number overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(ContextError::Malformed("number not in shortest form"));
                }
                return Ok(v);
            }
        }
        Err(ContextError::Malformed("number overflows 64 bits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx(pairs: &[(&str, u64)]) -> Context {
        pairs.iter().map(|(id, n)| (id.to_string(), *n)).collect()
    }

    /// Builds a token with a valid checksum around an arbitrary body, to
    /// reach the structural checks behind the checksum.
    fn forge(body: &[u8]) -> String {
        let mut buf = MAGIC.to_vec();
        buf.push(FORMAT);
        buf.extend_from_slice(body);
        let sum = checksum(&buf);
        buf.extend_from_slice(&sum);
        URL_SAFE_NO_PAD.encode(buf)
    }

    #[test]
    fn empty_context_round_trips() {
        let t = Context::new().encode();
        assert_eq!(Context::decode(&t), Ok(Context::new()));
        assert!(Context::decode(&t).is_ok_and(|c| c.is_empty()));
    }

    #[test]
    fn tokens_are_compact() {
        let c = ctx(&[("node-1", 12), ("node-2", 3), ("node-3", 300)]);
        // 3 header + 1 count + 3 × (1 + 6 + 1..2) + 4 checksum = 33 bytes.
        assert_eq!(c.encode().len(), 44);
    }

    #[test]
    fn descends_is_pointwise_greater_or_equal() {
        let a = ctx(&[("a", 2), ("b", 1)]);
        let b = ctx(&[("a", 1)]);
        let c = ctx(&[("c", 1)]);
        assert!(a.descends(&b));
        assert!(!b.descends(&a));
        assert!(a.descends(&a));
        assert!(!a.descends(&c) && !c.descends(&a));
        assert!(a.descends(&Context::new()));
        assert!(ctx(&[("a", 0)]).is_empty());
    }

    #[test]
    fn bad_tokens_get_readable_errors() {
        let long = "A".repeat(MAX_TOKEN_CHARS + 1);
        let two_entries_unsorted = forge(&[2, 1, b'b', 1, 1, b'a', 1]);
        let cases: Vec<(String, ContextError)> = vec![
            (String::new(), ContextError::Empty),
            (
                long.clone(),
                ContextError::TooLong {
                    len: long.len(),
                    max: MAX_TOKEN_CHARS,
                },
            ),
            ("not base64!".into(), ContextError::InvalidBase64),
            ("UUs".into(), ContextError::Truncated), // "QK"
            (
                URL_SAFE_NO_PAD.encode(b"hello world"),
                ContextError::ForeignToken,
            ),
            (
                URL_SAFE_NO_PAD.encode(b"QK\x09\x00abcd"),
                ContextError::UnsupportedFormat(9),
            ),
            (
                URL_SAFE_NO_PAD.encode(b"QK\x01\x00abcd"),
                ContextError::ChecksumMismatch,
            ),
            (
                forge(&[0x81, 0x08]),
                ContextError::TooManyEntries {
                    count: 1025,
                    max: 1024,
                },
            ),
            (
                forge(&[1, 0x80, 0x02]),
                ContextError::ReplicaIdTooLong { len: 256, max: 255 },
            ),
            (forge(&[1, 5, b'a']), ContextError::Truncated),
            (
                forge(&[1, 1, 0xff, 1]),
                ContextError::Malformed("replica id is not UTF-8"),
            ),
            (
                forge(&[1, 0, 1]),
                ContextError::Malformed("empty replica id"),
            ),
            (
                forge(&[1, 1, b'a', 0]),
                ContextError::Malformed("zero counter"),
            ),
            (
                forge(&[1, 1, b'a', 0x81, 0x00]),
                ContextError::Malformed("number not in shortest form"),
            ),
            (
                forge(&[
                    1, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ]),
                ContextError::Malformed("number overflows 64 bits"),
            ),
            (
                two_entries_unsorted,
                ContextError::Malformed("entries not in ascending replica order"),
            ),
            (forge(&[1, 1, b'a', 1, 7]), ContextError::TrailingBytes(1)),
        ];
        for (token, want) in cases {
            assert_eq!(Context::decode(&token), Err(want), "token {token:?}");
        }
        // Padding is refused, even on an otherwise valid token.
        let mut padded = ctx(&[("a", 1)]).encode();
        while !padded.len().is_multiple_of(4) {
            padded.push('=');
        }
        assert_eq!(Context::decode(&padded), Err(ContextError::InvalidBase64));
        let msg = ContextError::ChecksumMismatch.to_string();
        assert_eq!(
            msg,
            "causal context checksum mismatch (token from another system or corrupted)"
        );
    }

    #[test]
    fn the_largest_counter_round_trips() {
        let c = ctx(&[("a", u64::MAX), ("b", 1)]);
        assert_eq!(Context::decode(&c.encode()), Ok(c));
    }

    fn context() -> impl Strategy<Value = Context> {
        prop::collection::vec(("[a-z0-9é-]{1,12}", any::<u64>()), 0..8)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn encode_then_decode_is_identity(c in context()) {
            let token = c.encode();
            prop_assert_eq!(Context::decode(&token), Ok(c));
        }

        #[test]
        fn decoding_any_string_never_panics(s in ".{0,200}") {
            let _ = Context::decode(&s);
        }

        #[test]
        fn decoding_random_base64_is_an_error(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            // Without the magic and a matching checksum (2^-32), nothing passes.
            let token = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(Context::decode(&token).is_err());
        }

        #[test]
        fn decoding_random_bytes_behind_a_valid_header_is_an_error(
            body in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            let mut buf = MAGIC.to_vec();
            buf.push(FORMAT);
            buf.extend_from_slice(&body);
            prop_assert!(Context::decode(&URL_SAFE_NO_PAD.encode(&buf)).is_err());
        }

        #[test]
        fn forged_checksums_never_panic_and_accepted_tokens_are_canonical(
            body in prop::collection::vec(any::<u8>(), 0..64)
        ) {
            let token = forge(&body);
            if let Ok(c) = Context::decode(&token) {
                prop_assert_eq!(c.encode(), token);
            }
        }

        #[test]
        fn flipping_any_bit_of_a_token_is_an_error(c in context(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let token = c.encode();
            // In the binary form...
            let mut bytes = URL_SAFE_NO_PAD.decode(&token).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(Context::decode(&URL_SAFE_NO_PAD.encode(&bytes)).is_err());
            // ...and in the text form (unused trailing bits included).
            let mut chars = token.into_bytes();
            let i = pos.index(chars.len());
            chars[i] ^= 1 << bit;
            if let Ok(s) = String::from_utf8(chars) {
                prop_assert!(Context::decode(&s).is_err());
            }
        }

        #[test]
        fn truncating_a_token_is_an_error(c in context(), cut in any::<prop::sample::Index>()) {
            let token = c.encode();
            let keep = cut.index(token.len());
            prop_assert!(Context::decode(&token[..keep]).is_err());
        }

        #[test]
        fn join_is_the_least_upper_bound(a in context(), b in context()) {
            let mut j = a.clone();
            j.join(&b);
            prop_assert!(j.descends(&a) && j.descends(&b));
            for (id, n) in j.iter() {
                prop_assert_eq!(n, a.get(id).max(b.get(id)));
            }
        }
    }
}
