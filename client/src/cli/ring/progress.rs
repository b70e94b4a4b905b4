//! Following a change while it runs: what the polled nodes report of it
//! ([`Tracker`]), the progress bars ([`Bars`]), and the final [`Summary`].
//!
//! # Which reports count
//!
//! Nodes keep finished changes in `/cluster/changes` (state `done`), so a
//! node re-joined after an earlier decommission may still list the old
//! change. The tracker therefore takes a baseline before the route is
//! called — every matching change already listed, by reporter and start
//! time — and only follows changes that are not in it.
//!
//! # When a change is done
//!
//! When every polled node that reports the change says `done` (and at
//! least one does). Streams are reported by their receiving node, so
//! progress is the union of the streams the polled nodes report, one per
//! (source, target, range). A node that stops answering keeps its last
//! report; a change that no node lists any more (a restarted node forgets
//! it) is left for the caller to settle from `/cluster/members`.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal as _;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::admin::{Change, ChangesAnswer, Stream};
use super::bytes;
use super::stage::{Kind, Staged};

/// Where a followed change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No polled node reports it yet.
    Pending,
    /// Some polled node reports it unfinished.
    Running,
    /// Every polled node that reports it says done.
    Done,
    /// It was reported, and now no polled node lists it.
    Vanished,
}

/// The followed change as the polled nodes report it.
pub struct Tracker {
    node: String,
    kind: Kind,
    baseline: HashSet<(String, u64)>,
    latest: BTreeMap<String, Vec<Change>>,
    seen: bool,
}

impl Tracker {
    /// Follows the `kind` change of `node`.
    pub fn new(node: &str, kind: Kind) -> Tracker {
        Tracker {
            node: node.to_string(),
            kind,
            baseline: HashSet::new(),
            latest: BTreeMap::new(),
            seen: false,
        }
    }

    fn matching<'a>(&'a self, answer: &'a ChangesAnswer) -> impl Iterator<Item = &'a Change> {
        answer
            .changes
            .iter()
            .filter(|c| c.node == self.node && c.kind == self.kind.as_str())
    }

    /// Records what `reporter` listed before the change was started, so
    /// that older changes of the same node and kind are not followed.
    pub fn baseline(&mut self, reporter: &str, answer: &ChangesAnswer) {
        let old: Vec<u64> = self.matching(answer).map(|c| c.started_unix_ms).collect();
        for started in old {
            self.baseline.insert((reporter.to_string(), started));
        }
    }

    /// Takes a fresh answer of `reporter`.
    pub fn update(&mut self, reporter: &str, answer: &ChangesAnswer) {
        let fresh: Vec<Change> = self
            .matching(answer)
            .filter(|c| {
                !self
                    .baseline
                    .contains(&(reporter.to_string(), c.started_unix_ms))
            })
            .cloned()
            .collect();
        self.seen |= !fresh.is_empty();
        self.latest.insert(reporter.to_string(), fresh);
    }

    /// Where the change stands.
    pub fn state(&self) -> State {
        let current: Vec<&Change> = self.latest.values().flatten().collect();
        if current.is_empty() {
            return if self.seen {
                State::Vanished
            } else {
                State::Pending
            };
        }
        if current.iter().all(|c| c.is_done()) {
            State::Done
        } else {
            State::Running
        }
    }

    /// Every stream reported, one per (source, target, range), in range
    /// order.
    pub fn streams(&self) -> Vec<Stream> {
        let mut by: BTreeMap<(u64, u64, String, String), Stream> = BTreeMap::new();
        for s in self.latest.values().flatten().flat_map(|c| &c.streams) {
            let key = (s.range.start, s.range.end, s.from.clone(), s.to.clone());
            match by.get_mut(&key) {
                // Two reporters of one stream: the furthest along wins.
                Some(e) if e.bytes >= s.bytes && (e.done || !s.done) => {}
                _ => {
                    by.insert(key, s.clone());
                }
            }
        }
        by.into_values().collect()
    }

    /// The change's span on the nodes' clocks: the earliest start and,
    /// once every report has one, the latest finish.
    pub fn span_ms(&self) -> Option<u64> {
        let current: Vec<&Change> = self.latest.values().flatten().collect();
        let start = current.iter().map(|c| c.started_unix_ms).min()?;
        let mut end = 0;
        for c in &current {
            end = end.max(c.finished_unix_ms?);
        }
        Some(end.saturating_sub(start))
    }
}

/// What `qkv ring apply` reports at the end (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `join`, `decommission` or `removenode`.
    pub change: String,
    /// The node joined, decommissioned or removed.
    pub node: String,
    /// Distinct ranges streamed.
    pub ranges: usize,
    /// Streams (a range to one target).
    pub streams: usize,
    /// Keys streamed.
    pub keys: u64,
    /// Bytes streamed.
    pub bytes: u64,
    /// From the route call to done (on the nodes' clocks when they say).
    pub duration_ms: u64,
    /// Bytes streamed per second over the duration, in MB (10^6 bytes).
    pub mb_per_s: f64,
    /// The plan's estimate of keys to stream.
    pub estimate_keys: Option<u64>,
    /// The plan's estimate of bytes to stream.
    pub estimate_bytes: Option<u64>,
    /// The sources' own figures for the streamed ranges at stream start.
    pub streams_bytes_estimate: u64,
    /// `(bytes - estimate_bytes) / estimate_bytes`.
    pub estimate_error: Option<f64>,
}

impl Summary {
    /// The summary of a finished change.
    pub fn new(staged: &Staged, streams: &[Stream], duration_ms: u64) -> Summary {
        let ranges: HashSet<(u64, u64)> = streams
            .iter()
            .map(|s| (s.range.start, s.range.end))
            .collect();
        let keys = streams.iter().map(|s| s.keys).sum();
        let bytes: u64 = streams.iter().map(|s| s.bytes).sum();
        let estimate_bytes = staged.estimate.map(|e| e.bytes);
        Summary {
            change: staged.kind.to_string(),
            node: staged.node.clone(),
            ranges: ranges.len(),
            streams: streams.len(),
            keys,
            bytes,
            duration_ms,
            mb_per_s: if duration_ms > 0 {
                bytes as f64 / 1e6 / (duration_ms as f64 / 1000.0)
            } else {
                0.0
            },
            estimate_keys: staged.estimate.map(|e| e.keys),
            estimate_bytes,
            streams_bytes_estimate: streams.iter().map(|s| s.bytes_estimate).sum(),
            estimate_error: estimate_bytes
                .filter(|e| *e > 0)
                .map(|e| (bytes as f64 - e as f64) / e as f64),
        }
    }

    /// The readable form.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Done: {} of {} in {:.1} s: {} ranges ({} streams), {} keys, {}, {:.2} MB/s\n",
            self.change,
            self.node,
            self.duration_ms as f64 / 1000.0,
            self.ranges,
            self.streams,
            self.keys,
            bytes(self.bytes),
            self.mb_per_s
        );
        let plan = match (self.estimate_keys, self.estimate_bytes) {
            (Some(k), Some(b)) => format!("{k} keys, {}", bytes(b)),
            _ => "unknown".into(),
        };
        let err = self
            .estimate_error
            .map(|e| format!(" (streamed {:+.1}% vs the plan)", e * 100.0))
            .unwrap_or_default();
        out.push_str(&format!(
            "Estimate: plan {plan}; sources at stream start {}{err}\n",
            bytes(self.streams_bytes_estimate)
        ));
        out
    }
}

/// A progress bar per stream and one for the total, with an ETA, on a
/// terminal; on anything else, one line per stream as it finishes.
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    per: BTreeMap<(u64, u64, String, String), ProgressBar>,
    finished: HashSet<(u64, u64, String, String)>,
    lines: bool,
}

impl Bars {
    /// Bars on stderr (hidden when stderr is not a terminal).
    pub fn new(estimate: u64) -> Bars {
        let lines = !std::io::stderr().is_terminal();
        let multi = MultiProgress::new();
        if lines {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        let total = multi.add(ProgressBar::new(estimate.max(1)));
        total.set_style(style(
            "total [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        ));
        Bars {
            multi,
            total,
            per: BTreeMap::new(),
            finished: HashSet::new(),
            lines,
        }
    }

    /// Shows `streams` (as the tracker reports them now).
    pub fn update(&mut self, streams: &[Stream]) {
        let (mut done_bytes, mut est) = (0u64, 0u64);
        for s in streams {
            let key = (s.range.start, s.range.end, s.from.clone(), s.to.clone());
            done_bytes += s.bytes;
            est += s.bytes_estimate.max(s.bytes);
            let bar = self.per.entry(key.clone()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(s.bytes_estimate.max(1)));
                b.set_style(style("{msg:40} [{bar:30}] {bytes}/{total_bytes}"));
                b.set_message(format!(
                    "{}->{} ({}, {}]",
                    s.from, s.to, s.range.start, s.range.end
                ));
                b
            });
            bar.set_length(s.bytes_estimate.max(s.bytes).max(1));
            bar.set_position(s.bytes);
            if s.done && self.finished.insert(key) {
                bar.finish();
                if self.lines {
                    eprintln!(
                        "stream {}->{} ({}, {}] done: {} keys, {}",
                        s.from,
                        s.to,
                        s.range.start,
                        s.range.end,
                        s.keys,
                        bytes(s.bytes)
                    );
                }
            }
        }
        if est > 0 {
            self.total
                .set_length(est.max(self.total.length().unwrap_or(0)));
        }
        self.total.set_position(done_bytes);
        self.total.set_message(format!(
            "{}/{} streams done",
            self.finished.len(),
            streams.len()
        ));
    }

    /// A line above the bars (or on stderr when there are none).
    pub fn note(&self, text: &str) {
        if self.lines {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }

    /// Removes the bars from the terminal.
    pub fn finish(self) {
        self.total.finish();
        let _ = self.multi.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorumkv_ring::TokenRange;

    fn change(state: &str, started: u64, streams: Vec<Stream>) -> Change {
        Change {
            node: "n4".into(),
            kind: "join".into(),
            state: state.into(),
            started_unix_ms: started,
            finished_unix_ms: (state == "done").then_some(started + 1000),
            streams,
        }
    }

    fn stream(start: u64, bytes: u64, done: bool) -> Stream {
        Stream {
            range: TokenRange {
                start,
                end: start + 10,
            },
            from: "n1".into(),
            to: "n4".into(),
            keys: bytes / 10,
            bytes,
            bytes_estimate: 100,
            done,
        }
    }

    fn answer(changes: Vec<Change>) -> ChangesAnswer {
        ChangesAnswer {
            node: "n4".into(),
            changes,
        }
    }

    #[test]
    fn an_older_change_of_the_same_node_is_not_followed() {
        let mut t = Tracker::new("n4", Kind::Join);
        let old = change("done", 5, vec![stream(0, 100, true)]);
        t.baseline("n4", &answer(vec![old.clone()]));
        t.update("n4", &answer(vec![old.clone()]));
        assert_eq!(t.state(), State::Pending);
        t.update(
            "n4",
            &answer(vec![old, change("joining", 9, vec![stream(0, 40, false)])]),
        );
        assert_eq!(t.state(), State::Running);
        assert_eq!(t.streams().len(), 1);
        assert_eq!(t.span_ms(), None);
    }

    #[test]
    fn done_needs_every_reporter_and_vanishing_is_told_apart() {
        let mut t = Tracker::new("n4", Kind::Join);
        t.update(
            "n4",
            &answer(vec![change("done", 9, vec![stream(0, 100, true)])]),
        );
        t.update(
            "n2",
            &answer(vec![change("joining", 10, vec![stream(50, 10, false)])]),
        );
        assert_eq!(t.state(), State::Running);
        t.update(
            "n2",
            &answer(vec![change("done", 10, vec![stream(50, 100, true)])]),
        );
        assert_eq!(t.state(), State::Done);
        assert_eq!(t.span_ms(), Some(1001));
        let staged_streams = t.streams();
        assert_eq!(staged_streams.len(), 2);
        t.update("n4", &answer(vec![]));
        t.update("n2", &answer(vec![]));
        assert_eq!(t.state(), State::Vanished);
    }

    #[test]
    fn the_summary_compares_streamed_bytes_with_the_plan() {
        let staged: Staged = serde_json::from_value(serde_json::json!({
            "version": 1, "created_unix_ms": 0, "kind": "join", "node": "n4", "rf": 3,
            "source": "x", "ring": [], "ranges_moving": 2, "moved_fraction": 0.2,
            "estimate": {"keys": 20, "bytes": 250}
        }))
        .expect("staged");
        let streams = vec![stream(0, 100, true), stream(50, 100, true), {
            let mut s = stream(50, 100, true);
            s.to = "n5".into();
            s
        }];
        let s = Summary::new(&staged, &streams, 2000);
        assert_eq!((s.ranges, s.streams, s.keys, s.bytes), (2, 3, 30, 300));
        assert!((s.mb_per_s - 0.00015).abs() < 1e-12);
        assert_eq!(s.streams_bytes_estimate, 300);
        assert!((s.estimate_error.expect("error") - 0.2).abs() < 1e-9);
        let text = s.render();
        assert!(text.contains("+20.0% vs the plan"), "{text}");
    }
}
