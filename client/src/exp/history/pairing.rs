//! Pairing a history's events into operations: each client invocation
//! with its completion (Jepsen's semantics: a process has at most one
//! operation in flight, and one never completed counts as `info`), the
//! nemesis's events set apart. Reading a file goes through here so that
//! every error names its line.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::{Event, EventType, Func, HistoryError, Level, Process};

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
}
