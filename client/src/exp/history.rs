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

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, LineWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

/// A client operation's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Read,
    Write,
    Add,
}

/// A client operation: an invocation paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub process: u64,
    pub kind: OpKind,
    pub key: String,
    pub bucket: String,
    pub outcome: Outcome,
    /// The invocation's `index`: how reports name the operation.
    pub index: u64,
    pub complete_index: Option<u64>,
    /// Positions of the invocation and completion among all events of the
    /// file: the real-time order the runner recorded them in.
    pub invoke_pos: usize,
    pub complete_pos: Option<usize>,
    pub invoke_time_ns: Option<u64>,
    pub complete_time_ns: Option<u64>,
    /// Write/add: the value written. Read: the completion's sibling list.
    pub value: Option<Value>,
    /// Write/add: the context it carried. Read: the context returned.
    /// Never empty (an empty context is `None`).
    pub context: Option<String>,
    pub node: Option<String>,
    pub r: Option<Level>,
    pub w: Option<Level>,
    pub final_read: bool,
}

/// A nemesis (or other non-client) event, kept for timelines.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NemesisEvent {
    pub index: u64,
    pub process: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub f: Option<Func>,
    pub value: Option<Value>,
    pub time_ns: Option<u64>,
}

/// A parsed history: client operations in invocation order, and the
/// nemesis's events in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub ops: Vec<Op>,
    pub nemesis: Vec<NemesisEvent>,
    /// Events in the file (blank lines not counted).
    pub events: usize,
}

impl History {
    /// Reads a JSONL history from `path`.
    pub fn read_file(path: &Path) -> Result<History, HistoryError> {
        let file = File::open(path).map_err(|error| HistoryError::Io {
            context: format!("cannot open {}", path.display()),
            error,
        })?;
        History::read(BufReader::new(file))
    }

    /// Reads a JSONL history: one event per line, blank lines skipped.
    pub fn read(input: impl BufRead) -> Result<History, HistoryError> {
        let mut pairer = Pairer::default();
        for (i, line) in input.lines().enumerate() {
            let line = line.map_err(|error| HistoryError::Io {
                context: format!("cannot read line {}", i + 1),
                error,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(&line).map_err(|e| HistoryError::parse(i + 1, &e))?;
            pairer.push(i + 1, event)?;
        }
        Ok(pairer.finish())
    }

    /// Pairs events already in memory; errors name the event's position
    /// (from 1) as its line.
    pub fn from_events(events: impl IntoIterator<Item = Event>) -> Result<History, HistoryError> {
        let mut pairer = Pairer::default();
        for (i, event) in events.into_iter().enumerate() {
            pairer.push(i + 1, event)?;
        }
        Ok(pairer.finish())
    }
}

/// Pairs invocations with completions as events arrive.
#[derive(Default)]
struct Pairer {
    ops: Vec<Op>,
    nemesis: Vec<NemesisEvent>,
    /// Process -> position in `ops` of its operation in flight.
    in_flight: HashMap<u64, usize>,
    pos: usize,
}

impl Pairer {
    fn push(&mut self, line: usize, e: Event) -> Result<(), HistoryError> {
        let pos = self.pos;
        self.pos += 1;
        let index = e.index.unwrap_or(pos as u64);
        let invalid = |message: String| HistoryError::Invalid { line, message };
        let process = match e.process {
            Process::Client(p) => p,
            Process::Named(name) => {
                self.nemesis.push(NemesisEvent {
                    index,
                    process: name,
                    kind: e.kind,
                    f: e.f,
                    value: e.value,
                    time_ns: e.time_ns,
                });
                return Ok(());
            }
        };
        let kind = match &e.f {
            Some(Func::Read) => Some(OpKind::Read),
            Some(Func::Write) => Some(OpKind::Write),
            Some(Func::Add) => Some(OpKind::Add),
            Some(Func::Other(f)) => {
                return Err(invalid(format!(
                    "process {process}: unknown f {f:?} (read, write or add)"
                )));
            }
            None => None,
        };
        if e.kind == EventType::Invoke {
            if let Some(&open) = self.in_flight.get(&process) {
                return Err(invalid(format!(
                    "process {process} invokes again while operation {} is in flight",
                    self.ops[open].index
                )));
            }
            let kind =
                kind.ok_or_else(|| invalid(format!("process {process}: invoke without f")))?;
            let key = e
                .key
                .ok_or_else(|| invalid(format!("process {process}: invoke without key")))?;
            if kind != OpKind::Read && e.value.is_none() {
                return Err(invalid(format!(
                    "process {process}: {kind:?} invoke without value"
                )));
            }
            let (value, context) = match kind {
                OpKind::Read => (None, None),
                _ => (e.value, e.context.filter(|c| !c.is_empty())),
            };
            self.in_flight.insert(process, self.ops.len());
            self.ops.push(Op {
                process,
                kind,
                key,
                bucket: e.bucket.unwrap_or_else(|| "default".into()),
                outcome: Outcome::Info,
                index,
                complete_index: None,
                invoke_pos: pos,
                complete_pos: None,
                invoke_time_ns: e.time_ns,
                complete_time_ns: None,
                value,
                context,
                node: e.node,
                r: e.r,
                w: e.w,
                final_read: e.final_read,
            });
            return Ok(());
        }
        let Some(at) = self.in_flight.remove(&process) else {
            return Err(invalid(format!(
                "process {process}: {:?} completion without an invocation in flight",
                e.kind
            )));
        };
        let op = &mut self.ops[at];
        if let Some(kind) = kind
            && kind != op.kind
        {
            return Err(invalid(format!(
                "process {process}: {kind:?} completes the {:?} invoked at index {}",
                op.kind, op.index
            )));
        }
        if let Some(key) = &e.key
            && *key != op.key
        {
            return Err(invalid(format!(
                "process {process}: completion for key {key:?} but the invocation at index {} was for {:?}",
                op.index, op.key
            )));
        }
        op.outcome = match e.kind {
            EventType::Ok => Outcome::Ok,
            EventType::Fail => Outcome::Fail,
            _ => Outcome::Info,
        };
        op.complete_index = Some(index);
        op.complete_pos = Some(pos);
        op.complete_time_ns = e.time_ns;
        op.final_read |= e.final_read;
        if op.kind == OpKind::Read {
            op.value = e.value;
            op.context = e.context.filter(|c| !c.is_empty());
        }
        Ok(())
    }

    fn finish(self) -> History {
        History {
            ops: self.ops,
            nemesis: self.nemesis,
            events: self.pos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(text: &str) -> Result<History, HistoryError> {
        History::read(text.as_bytes())
    }

    #[test]
    fn invocations_pair_with_their_completions_per_process() {
        let h = read(concat!(
            r#"{"index":0,"process":1,"type":"invoke","f":"write","key":"k","value":7,"context":"c1","bucket":"b","w":2}"#,
            "\n",
            r#"{"index":1,"process":2,"type":"invoke","f":"read","key":"k","r":"quorum"}"#,
            "\n\n",
            r#"{"index":2,"process":2,"type":"ok","f":"read","key":"k","value":[7,8],"context":"c2"}"#,
            "\n",
            r#"{"index":3,"process":1,"type":"ok","f":"write","key":"k","value":7}"#,
            "\n",
        ))
        .expect("parses");
        assert_eq!(h.events, 4);
        assert_eq!(h.ops.len(), 2);
        let (w, r) = (&h.ops[0], &h.ops[1]);
        assert_eq!(
            (w.kind, w.outcome, w.index, w.complete_index),
            (OpKind::Write, Outcome::Ok, 0, Some(3))
        );
        assert_eq!((w.invoke_pos, w.complete_pos), (0, Some(3)));
        assert_eq!(w.value, Some(serde_json::json!(7)));
        assert_eq!(w.context.as_deref(), Some("c1"));
        assert_eq!(w.bucket, "b");
        assert_eq!(w.w, Some(Level::Count(2)));
        assert_eq!(
            (r.kind, r.outcome, r.complete_index),
            (OpKind::Read, Outcome::Ok, Some(2))
        );
        assert_eq!(r.value, Some(serde_json::json!([7, 8])));
        assert_eq!(r.context.as_deref(), Some("c2"));
        assert_eq!(r.r, Some(Level::Named("quorum".into())));
        assert_eq!(r.bucket, "default");
    }

    #[test]
    fn an_invocation_never_completed_counts_as_info() {
        let h = read(r#"{"process":0,"type":"invoke","f":"add","key":"s","value":"e1"}"#)
            .expect("parses");
        assert_eq!(h.ops[0].outcome, Outcome::Info);
        assert_eq!(h.ops[0].complete_pos, None);
        assert_eq!(h.ops[0].index, 0, "a missing index is the event's position");
    }

    #[test]
    fn nemesis_events_are_kept_apart_with_their_times() {
        let h = read(concat!(
            r#"{"index":0,"process":"nemesis","type":"info","f":"partition","value":{"cut":["n1"]},"time_ns":5}"#,
            "\n",
            r#"{"index":1,"process":0,"type":"invoke","f":"read","key":"k"}"#,
        ))
        .expect("parses");
        assert_eq!(h.ops.len(), 1);
        assert_eq!(h.nemesis.len(), 1);
        let n = &h.nemesis[0];
        assert_eq!((n.process.as_str(), n.time_ns), ("nemesis", Some(5)));
        assert_eq!(n.f, Some(Func::Other("partition".into())));
        assert_eq!(n.value, Some(serde_json::json!({"cut": ["n1"]})));
    }

    #[test]
    fn unknown_fields_are_ignored_and_final_marks_both_events() {
        let h = read(concat!(
            r#"{"process":0,"type":"invoke","f":"read","key":"k","final":true,"shiny":[1]}"#,
            "\n",
            r#"{"process":0,"type":"ok","value":null,"extra":{"a":1}}"#,
        ))
        .expect("parses");
        assert!(h.ops[0].final_read);
        assert_eq!(h.ops[0].outcome, Outcome::Ok);
    }

    #[test]
    fn a_bad_line_is_an_error_naming_its_line() {
        let e = read("\n{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"k\"}\n{oops\n")
            .expect_err("fails");
        assert!(matches!(e, HistoryError::Parse { line: 3, .. }), "{e}");
        assert_eq!(e.to_string(), "line 3, column 2: key must be a string");
        let e = read(r#"{"process":0,"type":"started"}"#).expect_err("fails");
        assert!(
            e.to_string()
                .starts_with("line 1, column 29: unknown variant `started`"),
            "{e}"
        );
    }

    #[test]
    fn events_out_of_place_are_errors_naming_their_line() {
        let cases = [
            (
                "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"k\"}\n{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"k\"}",
                "line 2: process 0 invokes again",
            ),
            (
                "{\"process\":4,\"type\":\"ok\",\"f\":\"read\"}",
                "line 1: process 4: Ok completion without",
            ),
            (
                "{\"process\":0,\"type\":\"invoke\",\"f\":\"cas\",\"key\":\"k\"}",
                "line 1: process 0: unknown f \"cas\"",
            ),
            (
                "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}",
                "line 1: process 0: invoke without key",
            ),
            (
                "{\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"k\"}",
                "line 1: process 0: Write invoke without value",
            ),
            (
                "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"k\"}\n{\"process\":0,\"type\":\"ok\",\"f\":\"write\"}",
                "line 2: process 0: Write completes the Read",
            ),
            (
                "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"k\"}\n{\"process\":0,\"type\":\"ok\",\"key\":\"j\"}",
                "line 2: process 0: completion for key \"j\"",
            ),
        ];
        for (text, want) in cases {
            let e = read(text).expect_err(text);
            assert!(e.to_string().starts_with(want), "{text}: {e}");
        }
    }

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
