//! The history of a fault experiment: every client operation and nemesis
//! action, one JSON object per line, in the style of Jepsen's histories.
//! The runner appends events with [`HistoryWriter`]; the checker
//! (`exp::check`) reads them back with [`History::read`], which also pairs
//! each invocation with its completion.
//!
//! One event per line (the format is described for people in
//! docs/EXPERIMENTS.md, "Checking a history"):
//!
//! ```json
//! {"index": 17, "process": 3, "type": "invoke", "f": "write", "key": "k1", "value": 42,
//!  "time_ns": 1200, "node": "n2", "w": 2, "bucket": "exp-r2w2", "context": "UUsB..."}
//! ```
//!
//! - `type`: `invoke`, then one of `ok`, `fail` (certainly not applied) or
//!   `info` (outcome unknown). A process has at most one operation in flight;
//!   an invocation never completed counts as `info`.
//! - `process`: a number for clients, a name (`"nemesis"`) for the fault
//!   injector, whose events are kept apart, in order, for timelines.
//! - `f`: `read`, `write` or `add` for clients; anything for the nemesis.
//! - `value`: a write's or add's value on its invoke; a read's list of
//!   sibling values on its `ok` (`[]` or `null`: not found).
//! - `context`: on a write's invoke, the causal context it carried; on a
//!   read's `ok`, the context the read returned. Empty means none.
//! - `final`: `true` on the invoke and `ok` of the reads made after the
//!   faults healed, which show the converged state.
//!
//! Unknown fields are ignored and every field but `process` and `type` is
//! optional, so that older readers accept newer files. A missing `index`
//! is the event's position in the file (from 0); a missing `bucket` is
//! `default`.

mod pairing;

use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use pairing::{History, NemesisEvent, Op, OpKind, Outcome};

/// Why a history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A line is not a valid event.
    #[error("line {line}, column {column}: {message}")]
    Parse {
        line: usize,
        column: usize,
        message: String,
    },
    /// A line is a valid event that makes no sense where it is (a second
    /// invocation while one is in flight, a completion without one, ...).
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
    /// Reading or writing the file failed.
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
}

impl HistoryError {
    /// A JSON error on `line`: serde_json counts lines within the one line
    /// it was given, so its own position is replaced by the file's.
    fn parse(line: usize, e: &serde_json::Error) -> Self {
        let text = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        HistoryError::Parse {
            line,
            column: e.column(),
            message: text.strip_suffix(&suffix).unwrap_or(&text).to_string(),
        }
    }
}

/// Who made an event: a client process, or a named actor such as the
/// nemesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    Client(u64),
    Named(String),
}

/// An event's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// An event's `f`: what the operation does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Func {
    Read,
    Write,
    Add,
    /// Anything else: the nemesis's actions (`partition`, `kill`, ...).
    #[serde(untagged)]
    Other(String),
}

/// A consistency level as the runner recorded it: a replica count or a
/// name (`one`, `quorum`, `all`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Level {
    Count(u32),
    Named(String),
}

impl Level {
    /// The replica count this level asks for among `n` replicas; `None`
    /// for a name this tool does not know. `any` counts as 0: a hint
    /// elsewhere promises nothing about the replicas.
    pub fn count(&self, n: u32) -> Option<u32> {
        match self {
            Level::Count(c) => Some(*c),
            Level::Named(s) => match s.as_str() {
                "any" => Some(0),
                "one" => Some(1),
                "two" => Some(2),
                "three" => Some(3),
                "quorum" => Some(n / 2 + 1),
                "all" => Some(n),
                other => other.parse().ok(),
            },
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f: Option<Func>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(rename = "final", default, skip_serializing_if = "is_false")]
    pub final_read: bool,
}

impl Event {
    /// An event with only its process, type and `f` set.
    pub fn new(process: Process, kind: EventType, f: Func) -> Event {
        Event {
            index: None,
            process,
            kind,
            f: Some(f),
            key: None,
            value: None,
            time_ns: None,
            node: None,
            r: None,
            w: None,
            bucket: None,
            context: None,
            final_read: false,
        }
    }
}

/// Appends events to a history, one JSON line each.
pub struct HistoryWriter<W: Write> {
    out: W,
}

impl HistoryWriter<LineWriter<File>> {
    /// Opens `path` for appending (creating it), flushing after every line
    /// so that a crash of the runner leaves only whole events behind.
    pub fn append_to(path: &Path) -> Result<Self, HistoryError> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| HistoryError::Io {
                context: format!("cannot open {}", path.display()),
                error,
            })?;
        Ok(HistoryWriter::new(LineWriter::new(file)))
    }
}

impl<W: Write> HistoryWriter<W> {
    pub fn new(out: W) -> Self {
        HistoryWriter { out }
    }

    /// Writes one event as one line.
    pub fn append(&mut self, event: &Event) -> Result<(), HistoryError> {
        let io = |error| HistoryError::Io {
            context: "cannot write the history".into(),
            error,
        };
        let line = serde_json::to_vec(event).map_err(|e| io(e.into()))?;
        self.out.write_all(&line).map_err(io)?;
        self.out.write_all(b"\n").map_err(io)
    }

    pub fn flush(&mut self) -> Result<(), HistoryError> {
        self.out.flush().map_err(|error| HistoryError::Io {
            context: "cannot write the history".into(),
            error,
        })
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn levels_count_replicas_by_name_or_number() {
        let named = |s: &str| Level::Named(s.into()).count(5);
        assert_eq!(Level::Count(2).count(5), Some(2));
        assert_eq!(named("quorum"), Some(3));
        assert_eq!(named("all"), Some(5));
        assert_eq!(named("one"), Some(1));
        assert_eq!(named("any"), Some(0));
        assert_eq!(named("4"), Some(4));
        assert_eq!(named("most"), None);
    }

    #[test]
    fn the_writer_appends_to_a_file_one_line_per_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let mut e = Event::new(Process::Client(1), EventType::Invoke, Func::Read);
        e.key = Some("k".into());
        HistoryWriter::append_to(&path)
            .expect("open")
            .append(&e)
            .expect("write");
        e.kind = EventType::Ok;
        e.value = Some(serde_json::json!([]));
        HistoryWriter::append_to(&path)
            .expect("reopen")
            .append(&e)
            .expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2, "{text}");
        let h = History::read_file(&path).expect("parses");
        assert_eq!(h.ops[0].outcome, Outcome::Ok);
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        let process = prop_oneof![
            any::<u64>().prop_map(Process::Client),
            "[a-z]{1,8}".prop_map(Process::Named),
        ];
        let kind = prop_oneof![
            Just(EventType::Invoke),
            Just(EventType::Ok),
            Just(EventType::Fail),
            Just(EventType::Info)
        ];
        let f = prop_oneof![
            Just(Func::Read),
            Just(Func::Write),
            Just(Func::Add),
            "x[a-z]{0,6}".prop_map(Func::Other),
        ];
        let level = prop_oneof![
            any::<u32>().prop_map(Level::Count),
            "[a-z]{1,6}".prop_map(Level::Named)
        ];
        let value = prop_oneof![
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            ".{0,8}".prop_map(|s| serde_json::json!(s)),
            proptest::collection::vec(any::<i32>(), 0..4).prop_map(|v| serde_json::json!(v)),
        ];
        (
            (any::<Option<u64>>(), process, kind, proptest::option::of(f)),
            (
                proptest::option::of(".{0,6}"),
                proptest::option::of(value),
                any::<Option<u64>>(),
                proptest::option::of("n[0-9]"),
            ),
            (
                proptest::option::of(level.clone()),
                proptest::option::of(level),
                proptest::option::of("[a-z-]{1,12}"),
                proptest::option::of(".{0,10}"),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (index, process, kind, f),
                    (key, value, time_ns, node),
                    (r, w, bucket, context, final_read),
                )| Event {
                    index,
                    process,
                    kind,
                    f,
                    key,
                    value,
                    time_ns,
                    node,
                    r,
                    w,
                    bucket,
                    context,
                    final_read,
                },
            )
    }

    proptest! {
        #[test]
        fn every_event_reads_back_as_it_was_written(e in arb_event()) {
            let mut w = HistoryWriter::new(Vec::new());
            w.append(&e).expect("serialises");
            let bytes = w.into_inner();
            prop_assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
            let back: Event = serde_json::from_slice(&bytes).expect("parses");
            prop_assert_eq!(back, e);
        }
    }
}
