//! The dotted version vector set of one key: its current versions and the
//! causal history that explains them. See the module essay in `mod.rs`.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::context::Context;
use super::hlc::Timestamp;
use super::value::Value;
use super::{ReplicaId, VersionError};

/// First byte of [`Dvvs::encode`]'s output, so that the storage and RPC
/// format can change without misreading old bytes.
const ENCODING_VERSION: u8 = 1;

/// One replica's part of a DVVSet: how many events (dots) of `id` the key
/// has seen, and which of them are still current versions.
///
/// Invariants (checked on decode): `counter ≥ 1`; `values` holds dots
/// strictly descending (newest first), each in `1..=counter`. A dot of
/// `id` up to `counter` that is not in `values` was overwritten.
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

    /// The merge of two entries of the same replica. A version survives
    /// iff neither side overwrote it: each side either still holds its dot
    /// or has not seen the dot yet (dot > that side's counter).
    fn merge(&self, other: &Entry) -> Entry {
        let mut values = Vec::with_capacity(self.values.len().max(other.values.len()));
        let (mut i, mut j) = (0, 0);
        while i < self.values.len() || j < other.values.len() {
            let a = self.values.get(i);
            let b = other.values.get(j);
            let order = match (a, b) {
                (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
                (Some(_), None) => Ordering::Greater,
                _ => Ordering::Less,
            };
            match (order, a, b) {
                (Ordering::Greater, Some((k, v)), _) => {
                    if *k > other.counter {
                        values.push((*k, v.clone()));
                    }
                    i += 1;
                }
                (Ordering::Less, _, Some((k, v))) => {
                    if *k > self.counter {
                        values.push((*k, v.clone()));
                    }
                    j += 1;
                }
                (Ordering::Equal, Some((k, va)), Some((_, vb))) => {
                    // The same dot is the same write everywhere; should two
                    // replicas disagree (a node id reused after data loss),
                    // pick the same one on both sides to stay convergent.
                    let v = if lww_value_cmp(va, vb) == Ordering::Less {
                        vb
                    } else {
                        va
                    };
                    values.push((*k, v.clone()));
                    i += 1;
                    j += 1;
                }
                _ => unreachable!("an index past its list is never chosen"),
            }
        }
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
            let mut above = e.counter + 1;
            for (k, _) in &e.values {
                if *k == 0 || *k >= above {
                    return invalid("version dots not strictly descending within 1..=counter");
                }
                above = *k;
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
    pub fn update(&mut self, ctx: &Context, id: &str, value: Value) {
        // Fold the context in: every covered dot goes, and the counters
        // learn what the client has seen (it may have read elsewhere).
        for e in &mut self.entries {
            let seen = ctx.get(&e.id);
            if seen > 0 {
                e.counter = e.counter.max(seen);
                e.values.retain(|(k, _)| *k > seen);
            }
        }
        for (cid, n) in ctx.iter() {
            if let Err(at) = self.find(cid) {
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
        e.counter += 1;
        e.values.insert(0, (e.counter, value));
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
            .max_by(|a, b| lww_cmp(a, b))
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

    /// The storage and RPC form: a format byte, then MessagePack.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![ENCODING_VERSION];
        // Writing plain structs of strings, integers and byte buffers to a
        // Vec cannot fail.
        if let Err(e) = rmp_serde::encode::write(&mut buf, self) {
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
            Some((&ENCODING_VERSION, rest)) => {
                let mut de = rmp_serde::Deserializer::new(rest);
                let d =
                    Dvvs::deserialize(&mut de).map_err(|e| VersionError::Decode(e.to_string()))?;
                let left = de.into_inner().len();
                if left != 0 {
                    return Err(VersionError::Invalid(format!("{left} trailing bytes")));
                }
                Ok(d)
            }
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
mod tests {}
