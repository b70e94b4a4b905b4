//! The dotted version vector set of one key: its current versions and the
//! causal history that explains them. See the module essay in `mod.rs`.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::context::{Context, MAX_REPLICA_ID_LEN};
use super::hlc::Timestamp;
use super::value::Value;
use super::{ReplicaId, VersionError};

mod codec;
#[cfg(test)]
mod counters;

/// First byte of [`Dvvs::encode`]'s output, so that the storage and RPC
/// format can change without misreading old bytes.
const ENCODING_VERSION: u8 = 1;

/// Context counters above this (2^62) are clamped when a write folds its
/// context in. Tokens are checksummed, not signed, so a client can forge one
/// claiming `u64::MAX` events of a replica; unclamped, that would leave the
/// replica no fresh dot for the key. Real counters (writes to one key
/// through one node) never come near 2^62, so clamping changes nothing
/// a real context covers, and every counter a read returns stays far from
/// overflow.
const MAX_CONTEXT_COUNTER: u64 = 1 << 62;

/// The largest event counter a state may hold (2^63 − 1). Real counters
/// stay below the context clamp (2^62) plus the writes of one key through
/// one replica; a counter above this one comes from a corrupt record or a
/// hostile peer and is refused when decoded, and a replica whose counter
/// reached it refuses to mint ([`VersionError::CounterExhausted`]) rather
/// than wrap or saturate — either would mint a dot that already names
/// another write.
pub const MAX_COUNTER: u64 = u64::MAX >> 1;

/// One replica's part of a DVVSet: how many events (dots) of `id` the key
/// has seen, and which of them are still current versions.
///
/// Invariants (checked on decode): `1 ≤ counter ≤ MAX_COUNTER`; `values`
/// holds dots strictly descending (newest first), each in `1..=counter`.
/// A dot of `id` up to `counter` that is not in `values` was overwritten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    id: ReplicaId,
    counter: u64,
    values: Vec<(u64, Value)>,
}

impl Entry {
    fn empty(id: &str, counter: u64) -> Self {
        Entry {
            id: id.to_owned(),
            counter,
            values: Vec::new(),
        }
    }

    /// The version with dot `k`, if current.
    fn get(&self, k: u64) -> Option<&Value> {
        // Newest first: search on the reversed key.
        let at = self.values.binary_search_by(|(d, _)| k.cmp(d)).ok()?;
        self.values.get(at).map(|(_, v)| v)
    }

    /// The merge of two entries of the same replica. A version survives
    /// iff neither side overwrote it: each side either still holds its dot
    /// or has not seen the dot yet (dot > that side's counter).
    fn merge(&self, other: &Entry) -> Entry {
        let mut values = Vec::with_capacity(self.values.len() + other.values.len());
        for (k, v) in &self.values {
            match other.get(*k) {
                // The same dot is the same write everywhere; should two
                // replicas disagree (a node id reused after data loss), both
                // sides pick the same one, so sync stays commutative.
                Some(w) if lww_value_cmp(v, w) == Ordering::Less => values.push((*k, w.clone())),
                Some(_) => values.push((*k, v.clone())),
                None if *k > other.counter => values.push((*k, v.clone())),
                None => {}
            }
        }
        // Dots only `other` holds; a dot both hold is ≤ self.counter.
        values.extend(
            other
                .values
                .iter()
                .filter(|(k, _)| *k > self.counter)
                .cloned(),
        );
        values.sort_unstable_by_key(|(k, _)| std::cmp::Reverse(*k));
        Entry {
            id: self.id.clone(),
            counter: self.counter.max(other.counter),
            values,
        }
    }
}

/// Orders versions for last-writer-wins: HLC timestamp first, then a total
/// order on the content so that equal timestamps from different replicas
/// still resolve the same way everywhere.
fn lww_value_cmp(a: &Value, b: &Value) -> Ordering {
    a.timestamp
        .cmp(&b.timestamp)
        .then_with(|| a.tombstone.cmp(&b.tombstone))
        .then_with(|| a.content_type.cmp(&b.content_type))
        .then_with(|| a.data.cmp(&b.data))
}

/// A key's dotted version vector set: one entry per replica that ever
/// coordinated a write to it, each with that replica's event counter and the
/// versions it minted that no later write has replaced (the siblings).
///
/// Equality is canonical (entries sorted by replica id, values newest
/// first), so `==` on two sets compares what they mean, and the encoding
/// (hence [`Dvvs::digest`]) is a function of the meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct Dvvs {
    entries: Vec<Entry>,
}

/// A set as read off the wire, before its invariants are checked.
#[derive(Deserialize)]
struct Unchecked {
    entries: Vec<Entry>,
}

impl TryFrom<Unchecked> for Dvvs {
    type Error = VersionError;

    fn try_from(raw: Unchecked) -> Result<Self, VersionError> {
        let invalid = |why: &str| Err(VersionError::Invalid(why.to_owned()));
        for pair in raw.entries.windows(2) {
            if pair[0].id >= pair[1].id {
                return invalid("entries not in strictly ascending replica order");
            }
        }
        for e in &raw.entries {
            if e.id.is_empty() {
                return invalid("empty replica id");
            }
            if e.counter == 0 {
                return invalid("entry with counter 0");
            }
            if e.counter > MAX_COUNTER {
                return Err(VersionError::Invalid(format!(
                    "replica {:?} has counter {}, beyond the largest a replica can reach ({MAX_COUNTER}): a corrupt record or a bad peer",
                    e.id, e.counter
                )));
            }
            // Checked without `counter + 1`: each dot must lie below the
            // previous one (or at most at the counter, for the first).
            let mut below: Option<u64> = None;
            for (k, _) in &e.values {
                let fits = match below {
                    None => *k <= e.counter,
                    Some(prev) => *k < prev,
                };
                if *k == 0 || !fits {
                    return invalid("version dots not strictly descending within 1..=counter");
                }
                below = Some(*k);
            }
        }
        Ok(Dvvs {
            entries: raw.entries,
        })
    }
}

impl Dvvs {
    /// A key nobody wrote: no versions, empty context.
    pub fn new() -> Self {
        Dvvs::default()
    }

    /// A client write coordinated at replica `id` with the client's context
    /// `ctx`: the versions `ctx` covers (those the client read, or anything
    /// older) are discarded; the new value gets a fresh dot (`id`, counter +
    /// 1). Versions not covered stay as siblings, so a concurrent write is
    /// never lost. `id` must be the replica doing the update: dots are only
    /// unique because each replica mints its own.
    ///
    /// Fails, changing nothing, when `id`'s counter is at [`MAX_COUNTER`]
    /// (no fresh dot is left: only a corrupt or hostile state gets there).
    pub fn update(&mut self, ctx: &Context, id: &str, value: Value) -> Result<(), VersionError> {
        debug_assert!(
            !id.is_empty() && id.len() <= MAX_REPLICA_ID_LEN,
            "replica ids are 1..=255 bytes: {id:?}"
        );
        let mine = self.find(id).ok().map_or(0, |at| self.entries[at].counter);
        let seen = ctx.get(id).min(MAX_CONTEXT_COUNTER);
        let dot = mine
            .max(seen)
            .checked_add(1)
            .filter(|d| *d <= MAX_COUNTER)
            .ok_or_else(|| VersionError::CounterExhausted(id.to_owned()))?;
        // Fold the context in: every covered dot goes, and the counters
        // learn what the client has seen (it may have read elsewhere).
        for e in &mut self.entries {
            let seen = ctx.get(&e.id).min(MAX_CONTEXT_COUNTER);
            if seen > 0 {
                e.counter = e.counter.max(seen);
                e.values.retain(|(k, _)| *k > seen);
            }
        }
        for (cid, n) in ctx.iter() {
            if let Err(at) = self.find(cid) {
                let n = n.min(MAX_CONTEXT_COUNTER);
                self.entries.insert(at, Entry::empty(cid, n));
            }
        }
        let at = match self.find(id) {
            Ok(at) => at,
            Err(at) => {
                self.entries.insert(at, Entry::empty(id, 0));
                at
            }
        };
        let e = &mut self.entries[at];
        debug_assert_eq!(
            e.counter.checked_add(1),
            Some(dot),
            "the dot follows this entry"
        );
        e.counter = dot;
        e.values.insert(0, (dot, value));
        Ok(())
    }

    /// Merge with another replica's state of the same key: per replica, the
    /// larger counter, and the versions neither side has overwritten.
    /// Commutative, associative and idempotent, so replicas converge
    /// whatever order replication, read repair and anti-entropy deliver in.
    pub fn sync(&self, other: &Dvvs) -> Dvvs {
        let mut entries = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut i, mut j) = (0, 0);
        loop {
            match (self.entries.get(i), other.entries.get(j)) {
                (Some(a), Some(b)) => match a.id.cmp(&b.id) {
                    Ordering::Less => {
                        entries.push(a.clone());
                        i += 1;
                    }
                    Ordering::Greater => {
                        entries.push(b.clone());
                        j += 1;
                    }
                    Ordering::Equal => {
                        entries.push(a.merge(b));
                        i += 1;
                        j += 1;
                    }
                },
                (Some(a), None) => {
                    entries.push(a.clone());
                    i += 1;
                }
                (None, Some(b)) => {
                    entries.push(b.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        Dvvs { entries }
    }

    /// Every current version, tombstones included, newest first (by HLC
    /// timestamp, ties broken by content then dot): the same order on every
    /// replica, and `values()[0]` is what [`Dvvs::resolve_lww`] keeps.
    pub fn values(&self) -> Vec<&Value> {
        let mut all: Vec<(&str, u64, &Value)> = self.versions().collect();
        all.sort_by(|a, b| lww_cmp(b, a));
        all.into_iter().map(|(_, _, v)| v).collect()
    }

    /// The current versions that are not deletions, newest first.
    pub fn live_values(&self) -> Vec<&Value> {
        let mut values = self.values();
        values.retain(|v| !v.tombstone);
        values
    }

    /// Every current version with its dot (replica, counter), in storage
    /// order: for inspection, tests and debugging.
    pub fn versions(&self) -> impl Iterator<Item = (&str, u64, &Value)> {
        self.entries
            .iter()
            .flat_map(|e| e.values.iter().map(|(k, v)| (e.id.as_str(), *k, v)))
    }

    /// True when any current version is a deletion.
    pub fn has_tombstone(&self) -> bool {
        self.versions().any(|(_, _, v)| v.tombstone)
    }

    /// True when versions exist and all are deletions: reads answer 404.
    pub fn is_deleted(&self) -> bool {
        let mut any = false;
        for (_, _, v) in self.versions() {
            if !v.tombstone {
                return false;
            }
            any = true;
        }
        any
    }

    /// True when there is no current version at all.
    pub fn is_empty(&self) -> bool {
        self.versions().next().is_none()
    }

    /// The join of all dots seen: what a read returns as the causal context,
    /// and what a write must carry to replace the versions of this read.
    pub fn context(&self) -> Context {
        self.entries
            .iter()
            .map(|e| (e.id.clone(), e.counter))
            .collect()
    }

    /// `self.context().encode()`, without building the context: the
    /// entries are already in replica order, each replica once.
    pub fn context_token(&self) -> String {
        super::context::encode_sorted(
            self.entries
                .iter()
                .filter(|e| e.counter > 0)
                .map(|e| (e.id.as_str(), e.counter)),
        )
    }

    /// The newest timestamp among the current versions. A coordinator
    /// should `Clock::observe` it before stamping a write to the key, so that
    /// in an LWW bucket the write always beats what it replaces, even if a
    /// clock skewed far ahead stamped that.
    pub fn max_timestamp(&self) -> Option<Timestamp> {
        self.versions().map(|(_, _, v)| v.timestamp).max()
    }

    /// Last-writer-wins: keeps only the version with the greatest timestamp
    /// (ties broken by content, then by dot), and returns how many concurrent
    /// versions were dropped (a metric). The causal history stays, so the
    /// dropped versions are dropped on every replica this state reaches,
    /// and the winner keeps its own dot (unlike `dvvset.erl`'s `lww`, which
    /// relabels it, so a sync could resurrect a loser).
    pub fn resolve_lww(&mut self) -> usize {
        let winner = self
            .versions()
            .max_by(lww_cmp)
            .map(|(id, k, _)| (id.to_owned(), k));
        let Some((wid, wk)) = winner else {
            return 0;
        };
        let mut dropped = 0;
        for e in &mut self.entries {
            let before = e.values.len();
            if e.id == wid {
                e.values.retain(|(k, _)| *k == wk);
            } else {
                e.values.clear();
            }
            dropped += before - e.values.len();
        }
        dropped
    }

    /// Number of current versions, tombstones included (1 when there is no
    /// conflict; what the siblings metric counts).
    pub fn sibling_count(&self) -> usize {
        self.entries.iter().map(|e| e.values.len()).sum()
    }

    /// The storage and RPC form: a format byte, then MessagePack (see
    /// `codec.rs`).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![ENCODING_VERSION];
        // Writing to a Vec cannot fail, and no set has 2^32 entries or
        // versions (a value is at most --max-value-bytes).
        if let Err(e) = codec::encode_into(self, &mut buf) {
            unreachable!("encoding a Dvvs to memory failed: {e}");
        }
        buf
    }

    /// Reads [`Dvvs::encode`]'s output, checking every invariant, so that a
    /// corrupt record or a bad peer yields an error instead of a state that
    /// would break sync.
    pub fn decode(bytes: &[u8]) -> Result<Dvvs, VersionError> {
        match bytes.split_first() {
            None => Err(VersionError::Invalid("empty input".to_owned())),
            Some((&ENCODING_VERSION, rest)) => Dvvs::try_from(codec::decode(rest)?),
            Some((&v, _)) => Err(VersionError::UnsupportedEncoding(v)),
        }
    }

    /// Approximate payload bytes (ids, counters, values), for metrics;
    /// cheaper than encoding.
    pub fn size_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| {
                e.id.len()
                    + 8
                    + e.values
                        .iter()
                        .map(|(_, v)| 8 + v.size_bytes())
                        .sum::<usize>()
            })
            .sum()
    }

    /// xxh3-64 of the canonical encoding: equal states have equal digests on
    /// every replica, for read digests and Merkle trees.
    pub fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.encode())
    }

    fn find(&self, id: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.id.as_str().cmp(id))
    }
}

/// LWW order on versions with their dots: value order, then dot, which is
/// unique, so the order is total.
fn lww_cmp(a: &(&str, u64, &Value), b: &(&str, u64, &Value)) -> Ordering {
    lww_value_cmp(a.2, b.2)
        .then_with(|| a.0.cmp(b.0))
        .then_with(|| a.1.cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::version::Clock;

    fn ts(ms: u64) -> Timestamp {
        Timestamp::new(ms, 0)
    }

    fn put(data: &str, ms: u64) -> Value {
        Value::live(data.as_bytes(), "text/plain", ts(ms))
    }

    fn data(d: &Dvvs) -> Vec<String> {
        let mut v: Vec<String> = d
            .values()
            .iter()
            .map(|v| String::from_utf8_lossy(&v.data).into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn two_writes_without_context_become_siblings() {
        let mut d = Dvvs::new();
        d.update(&Context::new(), "a", put("x", 1))
            .expect("a fresh dot");
        d.update(&Context::new(), "a", put("y", 2))
            .expect("a fresh dot");
        assert_eq!(d.sibling_count(), 2);
        assert_eq!(data(&d), ["x", "y"]);
        assert_eq!(d.context(), [("a".to_owned(), 2)].into_iter().collect());
        // Newest first.
        assert_eq!(d.values()[0].data, b"y");
    }

    #[test]
    fn a_write_with_the_read_context_replaces_the_siblings() {
        let mut d = Dvvs::new();
        d.update(&Context::new(), "a", put("x", 1))
            .expect("a fresh dot");
        d.update(&Context::new(), "b", put("y", 2))
            .expect("a fresh dot");
        let read = d.context();
        d.update(&read, "a", put("z", 3)).expect("a fresh dot");
        assert_eq!(d.sibling_count(), 1);
        assert_eq!(data(&d), ["z"]);
        assert!(d.context().descends(&read));
    }

    #[test]
    fn a_write_keeps_what_was_written_after_its_read() {
        let mut d = Dvvs::new();
        d.update(&Context::new(), "a", put("x", 1))
            .expect("a fresh dot");
        let read = d.context();
        d.update(&Context::new(), "a", put("concurrent", 2))
            .expect("a fresh dot");
        d.update(&read, "a", put("z", 3)).expect("a fresh dot");
        assert_eq!(data(&d), ["concurrent", "z"]);
    }

    #[test]
    fn a_delete_with_context_leaves_only_a_tombstone() {
        let mut d = Dvvs::new();
        d.update(&Context::new(), "a", put("x", 1))
            .expect("a fresh dot");
        d.update(&Context::new(), "b", put("y", 2))
            .expect("a fresh dot");
        assert!(!d.has_tombstone() && !d.is_deleted());
        d.update(&d.context(), "a", Value::tombstone(ts(3)))
            .expect("a fresh dot");
        assert_eq!(d.sibling_count(), 1);
        assert!(d.has_tombstone() && d.is_deleted());
        assert!(d.live_values().is_empty());
        assert!(!d.context().is_empty());
        // A write after the delete, with its context, revives the key.
        d.update(&d.context(), "b", put("back", 4))
            .expect("a fresh dot");
        assert!(!d.is_deleted() && !d.has_tombstone());
        assert_eq!(data(&d), ["back"]);
    }

    #[test]
    fn a_delete_without_context_is_a_sibling_of_the_value() {
        let mut d = Dvvs::new();
        d.update(&Context::new(), "a", put("x", 1))
            .expect("a fresh dot");
        d.update(&Context::new(), "a", Value::tombstone(ts(2)))
            .expect("a fresh dot");
        assert!(d.has_tombstone() && !d.is_deleted());
        assert_eq!(d.live_values().len(), 1);
        assert!(!Dvvs::new().is_deleted() && Dvvs::new().is_empty());
    }

    #[test]
    fn sync_of_diverged_replicas_keeps_both_sides_and_drops_what_either_overwrote() {
        // a and b share "x", then each overwrites it, concurrently.
        let mut a = Dvvs::new();
        a.update(&Context::new(), "a", put("x", 1))
            .expect("a fresh dot");
        let mut b = a.clone();
        a.update(&a.context(), "a", put("from-a", 2))
            .expect("a fresh dot");
        b.update(&b.context(), "b", put("from-b", 3))
            .expect("a fresh dot");
        let m = a.sync(&b);
        assert_eq!(data(&m), ["from-a", "from-b"]);
        assert_eq!(m, b.sync(&a));
        // A stale copy adds nothing, and what it holds is not resurrected.
        let mut stale = Dvvs::new();
        stale
            .update(&Context::new(), "a", put("x", 1))
            .expect("a fresh dot");
        assert_eq!(m.sync(&stale), m);
        assert_eq!(m.sync(&Dvvs::new()), m);
    }

    #[test]
    fn a_write_at_another_replica_with_a_read_context_replaces_it_there() {
        let mut a = Dvvs::new();
        a.update(&Context::new(), "a", put("x", 1))
            .expect("a fresh dot");
        let read = a.context();
        // Replica c never saw "x"; the client's context still covers it.
        let mut c = Dvvs::new();
        c.update(&read, "c", put("y", 2)).expect("a fresh dot");
        assert_eq!(data(&c.sync(&a)), ["y"]);
    }

    #[test]
    fn resolve_lww_keeps_the_newest_and_counts_the_dropped() {
        // (writes as (replica, data, ms), winner, dropped)
        type Writes<'a> = &'a [(&'a str, &'a str, u64)];
        let cases: &[(Writes, Option<&str>, usize)] = &[
            (&[], None, 0),
            (&[("a", "x", 1)], Some("x"), 0),
            (&[("a", "x", 1), ("b", "y", 2)], Some("y"), 1),
            (&[("a", "x", 5), ("b", "y", 2), ("a", "z", 3)], Some("x"), 2),
            // Equal timestamps: the greater content wins, on every replica.
            (&[("b", "x", 7), ("a", "y", 7)], Some("y"), 1),
        ];
        for (writes, winner, dropped) in cases {
            let mut d = Dvvs::new();
            for (id, v, ms) in *writes {
                d.update(&Context::new(), id, put(v, *ms))
                    .expect("a fresh dot");
            }
            let ctx = d.context();
            assert_eq!(d.resolve_lww(), *dropped, "{writes:?}");
            assert_eq!(
                data(&d),
                winner.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            );
            assert_eq!(d.context(), ctx, "LWW keeps the causal history");
            assert_eq!(d.resolve_lww(), 0);
        }
    }

    #[test]
    fn a_tombstone_wins_an_lww_tie() {
        let mut d = Dvvs::new();
        d.update(&Context::new(), "a", put("x", 7))
            .expect("a fresh dot");
        d.update(&Context::new(), "b", Value::tombstone(ts(7)))
            .expect("a fresh dot");
        assert_eq!(d.resolve_lww(), 1);
        assert!(d.is_deleted());
    }

    /// The winner is an older dot of its replica (timestamps and dots out of
    /// order, e.g. two requests racing between the clock and the update).
    /// It keeps its own dot, and a replica still holding the loser cannot
    /// bring the loser back.
    #[test]
    fn lww_with_an_older_dot_winning_does_not_resurrect_the_loser() {
        let mut a = Dvvs::new();
        a.update(&Context::new(), "a", put("winner", 9))
            .expect("a fresh dot");
        a.update(&Context::new(), "a", put("loser", 4))
            .expect("a fresh dot");
        let other = a.clone();
        assert_eq!(a.resolve_lww(), 1);
        assert_eq!(data(&a), ["winner"]);
        assert_eq!(
            a.versions().map(|(id, k, _)| (id, k)).collect::<Vec<_>>(),
            [("a", 1)]
        );
        assert_eq!(data(&a.sync(&other)), ["winner"]);
        assert_eq!(data(&other.sync(&a)), ["winner"]);
    }

    /// Tokens are not signed: a client can claim any counter. The write
    /// still gets a fresh dot, the state still encodes, and the next read's
    /// token still decodes.
    #[test]
    fn a_forged_context_with_huge_counters_cannot_exhaust_the_dots() {
        let mut d = Dvvs::new();
        d.update(&Context::new(), "a", put("x", 1))
            .expect("a fresh dot");
        let forged: Context = [("a".to_owned(), u64::MAX), ("zz".to_owned(), u64::MAX)]
            .into_iter()
            .collect();
        let forged = Context::decode(&forged.encode()).unwrap_or_default();
        d.update(&forged, "a", put("y", 2)).expect("a fresh dot");
        d.update(&Context::new(), "a", put("z", 3))
            .expect("a fresh dot");
        assert_eq!(data(&d), ["y", "z"]);
        assert_eq!(d.context().get("a"), MAX_CONTEXT_COUNTER + 2);
        assert_eq!(Dvvs::decode(&d.encode()), Ok(d.clone()));
        assert_eq!(Context::decode(&d.context().encode()), Ok(d.context()));
    }

    #[test]
    fn max_timestamp_is_the_newest_version() {
        let mut d = Dvvs::new();
        assert_eq!(d.max_timestamp(), None);
        d.update(&Context::new(), "a", put("x", 5))
            .expect("a fresh dot");
        d.update(&Context::new(), "b", put("y", 3))
            .expect("a fresh dot");
        assert_eq!(d.max_timestamp(), Some(ts(5)));
    }

    #[test]
    fn encoding_round_trips_and_digests_are_canonical() {
        let mut a = Dvvs::new();
        a.update(&Context::new(), "b", put("x", 1))
            .expect("a fresh dot");
        a.update(
            &Context::new(),
            "a",
            Value::live(vec![0u8, 255, 7], "application/octet-stream", ts(2)),
        )
        .expect("a fresh dot");
        a.update(&Context::new(), "a", Value::tombstone(ts(3)))
            .expect("a fresh dot");
        let bytes = a.encode();
        assert_eq!(Dvvs::decode(&bytes), Ok(a.clone()));
        assert_eq!(Dvvs::decode(&Dvvs::new().encode()), Ok(Dvvs::new()));
        assert_ne!(a.digest(), Dvvs::new().digest());
        let b = Dvvs::decode(&bytes).unwrap_or_default();
        assert_eq!(a.digest(), b.digest());
        assert!(a.size_bytes() > 0 && a.size_bytes() < bytes.len() * 4);
    }

    #[test]
    fn decoding_refuses_broken_states() {
        let value = put("v", 1);
        let entry = |id: &str, counter: u64, dots: &[u64]| Entry {
            id: id.to_owned(),
            counter,
            values: dots.iter().map(|k| (*k, value.clone())).collect(),
        };
        let cases = [
            vec![entry("b", 1, &[1]), entry("a", 1, &[1])],
            vec![entry("a", 1, &[1]), entry("a", 2, &[2])],
            vec![entry("", 1, &[1])],
            vec![entry("a", 0, &[])],
            vec![entry("a", 2, &[3])],
            vec![entry("a", 2, &[0])],
            vec![entry("a", 3, &[1, 2])],
            vec![entry("a", 3, &[2, 2])],
        ];
        for entries in cases {
            let mut bytes = vec![ENCODING_VERSION];
            rmp_serde::encode::write(
                &mut bytes,
                &Dvvs {
                    entries: entries.clone(),
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                matches!(Dvvs::decode(&bytes), Err(VersionError::Invalid(_))),
                "{entries:?} accepted"
            );
        }
        let good = Dvvs {
            entries: vec![entry("a", 3, &[3, 1])],
        }
        .encode();
        assert!(Dvvs::decode(&good).is_ok());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            Dvvs::decode(&trailing),
            Err(VersionError::Invalid(_))
        ));
        assert!(matches!(Dvvs::decode(&[]), Err(VersionError::Invalid(_))));
        assert_eq!(
            Dvvs::decode(&[9, 1, 2]),
            Err(VersionError::UnsupportedEncoding(9))
        );
    }

    // ---- Properties over simulated histories ----------------------------
    //
    // States are produced by running random histories against three
    // replicas, so they are states the store can really reach: every dot
    // names one write, with one value, everywhere.

    const REPLICAS: [&str; 3] = ["a", "b", "c"];

    #[derive(Clone, Debug)]
    enum Op {
        /// A client write at replica `at`, with the context of a read from
        /// `read_from` first (or none).
        Write {
            at: usize,
            read_from: Option<usize>,
            delete: bool,
            wall_step: u64,
        },
        /// Replica `to` merges the state of `from`.
        Sync { from: usize, to: usize },
        /// Replica `at` resolves LWW (an LWW bucket does after each change).
        Lww { at: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        let r = 0..REPLICAS.len();
        prop_oneof![
            4 => (r.clone(), prop::option::of(r.clone()), prop::bool::weighted(0.2), 0u64..3)
                .prop_map(|(at, read_from, delete, wall_step)| Op::Write { at, read_from, delete, wall_step }),
            3 => (r.clone(), r.clone()).prop_map(|(from, to)| Op::Sync { from, to }),
            1 => r.prop_map(|at| Op::Lww { at }),
        ]
    }

    #[derive(Clone, Debug, Default)]
    struct Sim {
        states: [Dvvs; 3],
        clocks: [Clock; 3],
        wall: u64,
        writes: u64,
    }

    impl Sim {
        fn run(ops: &[Op]) -> Sim {
            let mut sim = Sim::default();
            for op in ops {
                sim.apply(op);
            }
            sim
        }

        fn value(&mut self, at: usize, delete: bool) -> Value {
            self.writes += 1;
            let t = self.clocks[at].now(self.wall);
            if delete {
                Value::tombstone(t)
            } else {
                Value::live(format!("w{}", self.writes).into_bytes(), "text/plain", t)
            }
        }

        fn write(&mut self, at: usize, ctx: &Context, delete: bool) -> Value {
            let v = self.value(at, delete);
            self.states[at]
                .update(ctx, REPLICAS[at], v.clone())
                .expect("a fresh dot");
            v
        }

        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Write {
                    at,
                    read_from,
                    delete,
                    wall_step,
                } => {
                    self.wall += wall_step;
                    let ctx = read_from
                        .map(|r| self.states[r].context())
                        .unwrap_or_default();
                    self.write(at, &ctx, delete);
                }
                Op::Sync { from, to } => {
                    self.states[to] = self.states[to].sync(&self.states[from]);
                }
                Op::Lww { at } => {
                    self.states[at].resolve_lww();
                }
            }
        }
    }

    type Dots = BTreeMap<(String, u64), Value>;

    fn dots(d: &Dvvs) -> Dots {
        d.versions()
            .map(|(id, k, v)| ((id.to_owned(), k), v.clone()))
            .collect()
    }

    fn history() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(op(), 0..40)
    }

    fn check_invariants(d: &Dvvs) -> Result<(), TestCaseError> {
        prop_assert_eq!(Dvvs::decode(&d.encode()), Ok(d.clone()));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn sync_is_commutative_associative_and_idempotent(ops in history()) {
            let [a, b, c] = Sim::run(&ops).states;
            prop_assert_eq!(a.sync(&b), b.sync(&a));
            prop_assert_eq!(a.sync(&b).sync(&c), a.sync(&b.sync(&c)));
            prop_assert_eq!(a.sync(&a), a.clone());
            // The empty set is the identity (a coordinator takes a lone
            // answer, or agreeing answers, as their merge).
            prop_assert_eq!(Dvvs::default().sync(&a), a.clone());
            prop_assert_eq!(a.sync(&Dvvs::default()), a.clone());
            // Absorption: merging in something already merged changes nothing.
            let ab = a.sync(&b);
            prop_assert_eq!(ab.sync(&a), ab.clone());
            prop_assert_eq!(ab.digest(), b.sync(&a).digest());
            check_invariants(&ab.sync(&c))?;
        }

        #[test]
        fn sync_keeps_exactly_the_versions_not_dominated(ops in history(), i in 0usize..3, j in 0usize..3) {
            let sim = Sim::run(&ops);
            let (a, b) = (&sim.states[i], &sim.states[j]);
            let (da, db) = (dots(a), dots(b));
            let (ca, cb) = (a.context(), b.context());
            let merged = dots(&a.sync(b));
            for ((id, k), v) in &da {
                let dominated = cb.covers(id, *k) && !db.contains_key(&(id.clone(), *k));
                prop_assert_eq!(merged.get(&(id.clone(), *k)), (!dominated).then_some(v));
            }
            for ((id, k), v) in &db {
                let dominated = ca.covers(id, *k) && !da.contains_key(&(id.clone(), *k));
                prop_assert_eq!(merged.get(&(id.clone(), *k)), (!dominated).then_some(v));
            }
            // Nothing appears from nowhere, and the context is the join.
            prop_assert!(merged.keys().all(|d| da.contains_key(d) || db.contains_key(d)));
            let mut join = ca.clone();
            join.join(&cb);
            prop_assert_eq!(a.sync(b).context(), join);
        }

        #[test]
        fn a_write_with_a_read_context_replaces_exactly_what_the_read_returned(
            before in history(), after in history(), reader in 0usize..3, writer in 0usize..3,
        ) {
            let mut sim = Sim::run(&before);
            let read = sim.states[reader].clone();
            let read_ctx = read.context();
            let read_dots = dots(&read);
            let prior_writes = sim.writes;
            for op in &after {
                sim.apply(op);
            }
            let old = dots(&sim.states[writer]);
            let new_value = sim.write(writer, &read_ctx, false);
            let now = dots(&sim.states[writer]);

            // Everything the read returned is gone.
            prop_assert!(read_dots.keys().all(|d| !now.contains_key(d)));
            // Everything else the writer held stays unless the read had
            // already seen it overwritten; in particular every version
            // written after the read stays.
            for ((id, k), v) in &old {
                let covered = read_ctx.covers(id, *k);
                prop_assert_eq!(now.get(&(id.clone(), *k)), (!covered).then_some(v));
                let written_after_read = !v.tombstone
                    && String::from_utf8_lossy(&v.data)[1..].parse::<u64>().is_ok_and(|n| n > prior_writes);
                prop_assert!(!written_after_read || !covered);
            }
            // Plus the new version, under a fresh dot of the writer.
            prop_assert_eq!(now.len(), old.iter().filter(|((id, k), _)| !read_ctx.covers(id, *k)).count() + 1);
            let (dot, v) = now.iter().find(|(_, v)| **v == new_value).ok_or_else(|| TestCaseError::fail("new value missing"))?;
            prop_assert_eq!(dot.0.as_str(), REPLICAS[writer]);
            prop_assert!(!old.contains_key(dot) && !read_ctx.covers(&dot.0, dot.1));
            prop_assert_eq!(v, &new_value);
            // With nothing in between, read and write at the same replica,
            // the write leaves exactly one version.
            if after.is_empty() && reader == writer {
                prop_assert_eq!(sim.states[writer].sibling_count(), 1);
            }
            check_invariants(&sim.states[writer])?;
        }

        #[test]
        fn concurrent_writes_without_context_become_siblings(ops in history(), i in 0usize..3, j in 0usize..3) {
            let mut sim = Sim::run(&ops);
            let base = dots(&sim.states[i].sync(&sim.states[j]));
            let vi = sim.write(i, &Context::new(), false);
            let vj = sim.write(j, &Context::new(), false);
            let merged = sim.states[i].sync(&sim.states[j]);
            let m = dots(&merged);
            prop_assert_eq!(m.len(), base.len() + 2);
            prop_assert!(base.iter().all(|(d, v)| m.get(d) == Some(v)));
            let values = merged.values();
            prop_assert!(values.contains(&&vi) && values.contains(&&vj));
        }

        #[test]
        fn replicas_converge_after_syncing_all_pairs(ops in history()) {
            let mut sim = Sim::run(&ops);
            for (from, to) in [(0, 1), (1, 2), (2, 0), (0, 1)] {
                sim.apply(&Op::Sync { from, to });
            }
            prop_assert_eq!(&sim.states[0], &sim.states[1]);
            prop_assert_eq!(&sim.states[1], &sim.states[2]);
        }

        #[test]
        fn the_context_token_is_the_contexts(ops in history()) {
            for s in Sim::run(&ops).states {
                prop_assert_eq!(s.context_token(), s.context().encode());
            }
        }

        #[test]
        fn encode_then_decode_is_identity(ops in history(), i in 0usize..3) {
            let d = &Sim::run(&ops).states[i];
            prop_assert_eq!(Dvvs::decode(&d.encode()), Ok(d.clone()));
        }

        /// The hand-written codec writes exactly what `rmp_serde` writes
        /// for the serde derive, and reads it: the bytes on disk from
        /// before the codec stay readable, and the derive (still used
        /// inside RPC messages) and the codec never drift apart.
        #[test]
        fn the_codec_matches_the_serde_form(ops in history(), i in 0usize..3) {
            let d = &Sim::run(&ops).states[i];
            let mut serde_form = vec![ENCODING_VERSION];
            rmp_serde::encode::write(&mut serde_form, d).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&d.encode(), &serde_form);
            prop_assert_eq!(Dvvs::decode(&serde_form), Ok(d.clone()));
            // Every proper prefix is refused, never misread.
            for cut in 0..serde_form.len() {
                prop_assert!(Dvvs::decode(&serde_form[..cut]).is_err(), "prefix of {} accepted", cut);
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Dvvs::decode(&bytes);
            let mut with_version = vec![ENCODING_VERSION];
            with_version.extend_from_slice(&bytes);
            if let Ok(d) = Dvvs::decode(&with_version) {
                // Whatever is accepted satisfies the invariants sync needs.
                prop_assert_eq!(d.sync(&d), d.clone());
            }
        }

        #[test]
        fn resolve_lww_keeps_the_newest_and_reports_the_dropped(ops in history(), i in 0usize..3) {
            let mut d = Sim::run(&ops).states[i].clone();
            let before = d.sibling_count();
            let newest = d.max_timestamp();
            let first = d.values().first().map(|v| (*v).clone());
            let ctx = d.context();
            let dropped = d.resolve_lww();
            prop_assert_eq!(dropped, before.saturating_sub(1));
            prop_assert_eq!(d.sibling_count(), before.min(1));
            prop_assert_eq!(d.max_timestamp(), newest);
            prop_assert_eq!(d.values().first().map(|v| (*v).clone()), first);
            prop_assert_eq!(d.context(), ctx);
        }
    }
}
