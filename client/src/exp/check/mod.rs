//! The history checker: a pure function from a parsed [`History`] to a
//! [`Verdict`] per bucket. It knows nothing of how the history was made
//! (Jepsen's model): only what the operations returned, and in which order
//! they were recorded.
//!
//! Causality is what the history shows. A write carrying context C
//! *supersedes* the values returned by the reads whose `ok` returned C, and
//! transitively what those superseded; a write without a context supersedes
//! nothing (docs/CONSISTENCY.md, "Concurrent writes"). A value *covers* a
//! write when it is that write's value or supersedes it. "Before" is the
//! order of events in the file.
//!
//! Anomalies, per bucket, each with the offending operations (the `index`
//! of their invocation):
//! - `lost`: an acknowledged write or add that the final read (`final`)
//!   does not cover; keys without a final read are `unchecked_keys`.
//!   `lost_unseen` is the part of `lost` that no read ever returned
//!   (Jepsen's measure of lost writes for last-writer-wins).
//! - `stale_reads`: a read that does not cover a write acknowledged before
//!   the read was invoked (for sets: whose union lacks such an add).
//! - `non_monotonic_reads`: a read that does not cover a value the previous
//!   read of the same process and key returned (for sets: drops an element).
//! - `unexpected_values`: a read returned a value no write wrote, or one
//!   whose write failed.
//!
//! And counts that are not anomalies: `siblings` (reads with more than one
//! value, writes resolving them), `unknown` (`info` writes, and how many
//! became visible), `unmatched_contexts` (writes whose context no read
//! returned; they supersede nothing), `duplicate_values`.
//!
//! Final reads are the reference for `lost` and are not themselves judged
//! stale or non-monotonic. A bucket has *strict* expectations when it keeps
//! siblings, uses strict quorums and R + W > N (docs/CONSISTENCY.md, "The
//! promise"); there lost, stale, non-monotonic and unexpected values are
//! violations, counted in [`Verdict::strict_anomalies`].
//!
//! The verdict serialises as the JSON documented in docs/EXPERIMENTS.md
//! ("Checking a history"):
//!
//! ```json
//! {"events": 9, "operations": 4, "strict_anomalies": 2,
//!  "nemesis": [{"index": 5, "process": "nemesis", "type": "info", "f": "partition", "value": {}, "time_ns": 9}],
//!  "buckets": [{"bucket": "exp-r2w2",
//!    "settings": {"conflicts": "siblings", "sloppy": false, "n": 3, "r": 2, "w": 2, "strict": true},
//!    "keys": 1, "totals": {"read": {"ok": 2, "fail": 0, "info": 0}, "write": {"ok": 2, "fail": 0, "info": 0}},
//!    "lost": {"count": 1, "ops": [0]}, "lost_unseen": {"count": 1, "ops": [0]},
//!    "stale_reads": {"count": 1, "ops": [{"read": 2, "missed": 0}]},
//!    "non_monotonic_reads": {"count": 0, "ops": []},
//!    "unexpected_values": {"count": 0, "ops": []},
//!    "siblings": {"reads": 0, "max": 0, "resolved": 0},
//!    "unknown": {"count": 0, "visible_later": 0, "ops": [], "visible": []},
//!    "unmatched_contexts": {"count": 0, "ops": []}, "duplicate_values": {"count": 0, "ops": []},
//!    "unchecked_keys": [], "unchecked_writes": 0}]}
//! ```
//!
//! Non-monotonic reads list `{"read", "previous", "value"}`, unexpected
//! values `{"read", "value"}`.
//!
//! Cost: near-linear in the history. Each key is checked on its own; the
//! ancestor questions ("does value s supersede write f?") walk the graph of
//! supersession backwards only as far as f's invocation and are memoised,
//! and a read is compared only with the acknowledged writes nothing
//! acknowledged supersedes yet (see `graph`).

mod graph;
#[cfg(test)]
mod proptests;
mod register;
pub mod render;
mod set;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::history::{History, NemesisEvent, Op, OpKind, Outcome};

/// What the checker needs to know that the history does not say.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Replicas per key (N), to judge R + W > N.
    pub n: u32,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { n: 3 }
    }
}

/// The checker's findings for a whole history.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub events: usize,
    pub operations: usize,
    /// Anomalies in buckets with strict expectations: lost writes, stale
    /// and non-monotonic reads and unexpected values.
    pub strict_anomalies: usize,
    pub nemesis: Vec<NemesisEvent>,
    /// One per bucket, by name.
    pub buckets: Vec<BucketVerdict>,
}

/// How a bucket was configured, as far as the history shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// `lww` when the bucket's name has an `lww` segment, else `siblings`.
    pub conflicts: &'static str,
    /// The bucket's name has a `sloppy` segment.
    pub sloppy: bool,
    pub n: u32,
    /// The smallest r of its reads (final reads aside) and w of its writes,
    /// from the events or else from an `r<R>w<W>` segment of the name.
    pub r: Option<u32>,
    pub w: Option<u32>,
    /// Siblings, strict quorums and r + w > n: every anomaly is a violation.
    pub strict: bool,
}

/// Operations that ended each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

/// An anomaly's count and the operations behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listed<T> {
    pub count: usize,
    pub ops: Vec<T>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            count: 0,
            ops: Vec::new(),
        }
    }
}

impl<T> Listed<T> {
    fn push(&mut self, t: T) {
        self.count += 1;
        self.ops.push(t);
    }
}

/// A read that missed an acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaleRead {
    pub read: u64,
    /// The oldest such write (register) or the newest such add (set).
    pub missed: u64,
}

/// A read older than the same process's previous read of the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NonMonotonic {
    pub read: u64,
    pub previous: u64,
    /// A value (an element, for sets) the previous read returned and this
    /// one does not cover.
    pub value: Value,
}

/// A value a read returned that no successful or unknown write wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unexpected {
    pub read: u64,
    pub value: Value,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Siblings {
    /// Reads that returned more than one value.
    pub reads: usize,
    /// The most values one read returned.
    pub max: usize,
    /// Writes (acknowledged or unknown) whose context came from a read
    /// with siblings.
    pub resolved: usize,
}

/// Writes whose outcome is unknown (`info`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Unknown {
    pub count: usize,
    /// Of those, how many a read (or the final read) returned.
    pub visible_later: usize,
    pub ops: Vec<u64>,
    pub visible: Vec<u64>,
}

/// The findings for one bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BucketVerdict {
    pub bucket: String,
    pub settings: Settings,
    pub keys: usize,
    /// Per `f` (`read`, `write`, `add`).
    pub totals: BTreeMap<OpKind, Counts>,
    pub lost: Listed<u64>,
    pub lost_unseen: Listed<u64>,
    pub stale_reads: Listed<StaleRead>,
    pub non_monotonic_reads: Listed<NonMonotonic>,
    pub unexpected_values: Listed<Unexpected>,
    pub siblings: Siblings,
    pub unknown: Unknown,
    pub unmatched_contexts: Listed<u64>,
    /// Writes whose value an earlier write already wrote: the checker
    /// assumes unique values and attributes the value to the first.
    pub duplicate_values: Listed<u64>,
    /// Keys with acknowledged writes but no successful final read.
    pub unchecked_keys: Vec<String>,
    pub unchecked_writes: usize,
}

impl BucketVerdict {
    fn new(bucket: &str, settings: Settings) -> Self {
        BucketVerdict {
            bucket: bucket.into(),
            settings,
            keys: 0,
            totals: BTreeMap::new(),
            lost: Listed::default(),
            lost_unseen: Listed::default(),
            stale_reads: Listed::default(),
            non_monotonic_reads: Listed::default(),
            unexpected_values: Listed::default(),
            siblings: Siblings::default(),
            unknown: Unknown::default(),
            unmatched_contexts: Listed::default(),
            duplicate_values: Listed::default(),
            unchecked_keys: Vec::new(),
            unchecked_writes: 0,
        }
    }

    /// Keys were checked one after the other; people read by index.
    fn sort_lists(&mut self) {
        self.lost.ops.sort_unstable();
        self.lost_unseen.ops.sort_unstable();
        self.stale_reads.ops.sort_by_key(|s| s.read);
        self.non_monotonic_reads.ops.sort_by_key(|n| n.read);
        self.unexpected_values.ops.sort_by_key(|u| u.read);
        self.unknown.ops.sort_unstable();
        self.unknown.visible.sort_unstable();
        self.unmatched_contexts.ops.sort_unstable();
        self.duplicate_values.ops.sort_unstable();
        self.unchecked_keys.sort_unstable();
    }

    /// Lost writes, stale and non-monotonic reads and unexpected values:
    /// the anomalies that strict expectations forbid.
    pub fn anomalies(&self) -> usize {
        self.lost.count
            + self.stale_reads.count
            + self.non_monotonic_reads.count
            + self.unexpected_values.count
    }
}

/// Checks a history.
pub fn check(history: &History, opts: &CheckOptions) -> Verdict {
    let mut buckets: BTreeMap<&str, BTreeMap<&str, Vec<&Op>>> = BTreeMap::new();
    for op in &history.ops {
        buckets
            .entry(&op.bucket)
            .or_default()
            .entry(&op.key)
            .or_default()
            .push(op);
    }
    let buckets: Vec<BucketVerdict> = buckets
        .into_iter()
        .map(|(name, keys)| check_bucket(name, &keys, opts))
        .collect();
    Verdict {
        events: history.events,
        operations: history.ops.len(),
        strict_anomalies: buckets
            .iter()
            .filter(|b| b.settings.strict)
            .map(BucketVerdict::anomalies)
            .sum(),
        nemesis: history.nemesis.clone(),
        buckets,
    }
}

fn check_bucket(name: &str, keys: &BTreeMap<&str, Vec<&Op>>, opts: &CheckOptions) -> BucketVerdict {
    let all = || keys.values().flatten().copied();
    let mut v = BucketVerdict::new(name, settings(name, all(), opts.n));
    v.keys = keys.len();
    for op in all() {
        let c = v.totals.entry(op.kind).or_default();
        match op.outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Fail => c.fail += 1,
            Outcome::Info => c.info += 1,
        }
    }
    for (key, ops) in keys {
        let key = KeyOps::new(key, ops);
        if ops.iter().any(|op| op.kind == OpKind::Add) {
            set::check_key(&key, &mut v);
        } else {
            register::check_key(&key, &mut v);
        }
    }
    v.sort_lists();
    v
}

/// Derives a bucket's settings from its name and its operations' levels.
fn settings<'a>(name: &str, ops: impl Iterator<Item = &'a Op>, n: u32) -> Settings {
    let segments: Vec<&str> = name.split('-').collect();
    let lww = segments.contains(&"lww");
    let sloppy = segments.contains(&"sloppy");
    let (mut r, mut w) = (None::<u32>, None::<u32>);
    let min = |a: Option<u32>, b: Option<u32>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    for op in ops {
        match op.kind {
            OpKind::Read if !op.final_read => r = min(r, op.r.as_ref().and_then(|l| l.count(n))),
            OpKind::Write | OpKind::Add => w = min(w, op.w.as_ref().and_then(|l| l.count(n))),
            OpKind::Read => {}
        }
    }
    if let Some((nr, nw)) = segments.iter().find_map(|s| levels_in_name(s, n)) {
        r = r.or(Some(nr));
        w = w.or(Some(nw));
    }
    let strict = !lww && !sloppy && matches!((r, w), (Some(r), Some(w)) if r + w > n);
    Settings {
        conflicts: if lww { "lww" } else { "siblings" },
        sloppy,
        n,
        r,
        w,
        strict,
    }
}

/// `r2w2` -> (2, 2); `rquorumwall` -> (quorum, all) among `n`.
fn levels_in_name(segment: &str, n: u32) -> Option<(u32, u32)> {
    use super::history::Level;
    let rest = segment.strip_prefix('r')?;
    let count = |s: &str| Level::Named(s.into()).count(n);
    rest.match_indices('w')
        .find_map(|(i, _)| Some((count(&rest[..i])?, count(&rest[i + 1..])?)))
}

/// One key's operations, with what both workloads need precomputed.
struct KeyOps<'a> {
    key: &'a str,
    /// In invocation order.
    ops: &'a [&'a Op],
    /// Context -> the successful reads that returned it.
    reads_by_context: HashMap<&'a str, Vec<&'a Op>>,
}

impl<'a> KeyOps<'a> {
    fn new(key: &'a str, ops: &'a [&'a Op]) -> Self {
        let mut reads_by_context: HashMap<&str, Vec<&Op>> = HashMap::new();
        for op in ops {
            if let (OpKind::Read, Outcome::Ok, Some(c)) = (op.kind, op.outcome, &op.context) {
                reads_by_context.entry(c).or_default().push(op);
            }
        }
        KeyOps {
            key,
            ops,
            reads_by_context,
        }
    }

    fn ok_reads(&self) -> impl Iterator<Item = &'a Op> + '_ {
        self.ops
            .iter()
            .copied()
            .filter(|op| op.kind == OpKind::Read && op.outcome == Outcome::Ok)
    }

    fn writes(&self) -> impl Iterator<Item = &'a Op> + '_ {
        self.ops
            .iter()
            .copied()
            .filter(|op| op.kind != OpKind::Read)
    }

    /// The last successful final read, by completion.
    fn final_read(&self) -> Option<&'a Op> {
        self.ok_reads()
            .filter(|op| op.final_read)
            .max_by_key(|op| op.complete_pos)
    }

    /// The reads a write's context came from: `None` when it carried no
    /// context, an empty list when no read returned it.
    fn context_reads(&self, write: &Op) -> Option<&[&'a Op]> {
        let c = write.context.as_deref()?;
        Some(self.reads_by_context.get(c).map_or(&[], Vec::as_slice))
    }

    /// Counts siblings created by a read.
    fn note_siblings(read: &Op, v: &mut BucketVerdict) {
        let n = sibling_values(read).len();
        if n > 1 {
            v.siblings.reads += 1;
            v.siblings.max = v.siblings.max.max(n);
        }
    }

    /// Counts an unmatched context or a resolution of siblings for a write.
    fn note_context(&self, write: &Op, v: &mut BucketVerdict) {
        match self.context_reads(write) {
            Some([]) => v.unmatched_contexts.push(write.index),
            Some(reads)
                if write.outcome != Outcome::Fail
                    && reads.iter().any(|r| sibling_values(r).len() > 1) =>
            {
                v.siblings.resolved += 1
            }
            _ => {}
        }
    }
}

/// A successful read's values: its list of siblings (a lone value is a
/// list of one; `null` is empty).
fn sibling_values(read: &Op) -> &[Value] {
    match &read.value {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(v) => std::slice::from_ref(v),
    }
}

/// The identity of a value: its JSON text, so that `1` and `"1"` differ.
fn canonical(v: &Value) -> String {
    v.to_string()
}
