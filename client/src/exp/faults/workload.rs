//! The workloads of a fault experiment: what each client does, and how its
//! operations are recorded.
//!
//! - **register**: reads and writes of unique values on a few hot keys
//!   shared by the level's clients; a client reads, then mostly writes with
//!   the read's context, sometimes blind (without one).
//! - **set**: each client adds unique elements to a key of its own by
//!   read-modify-write with the read's context, siblings merged by union.
//! - **lww**: the register workload on a last-writer-wins bucket.
//!
//! Each operation goes to one node chosen at random (a client per node
//! that never falls back to another, so the recorded node is the
//! coordinator). A 504, a 5xx other than 503 and a connection lost after
//! the request was sent are `info` (the outcome is unknown); a 503, a 4xx
//! and a connection that could not be made are `fail`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::level::{LevelSpec, Mode};
use super::record::Recorder;
use crate::exp::history::{Event, EventType, Func, Level, Process};
use crate::types::{Consistency, Context, Fetched, ReadOptions, WriteOptions};
use crate::{Client, Error};

/// A workload, as `--workload` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Register,
    Set,
    Lww,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Register, Workload::Set, Workload::Lww];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Lww => "lww",
        }
    }

    /// Whether this workload runs on `level`'s bucket: lww on `lww:`
    /// levels only, the others on sibling buckets only.
    pub fn fits(self, level: &LevelSpec) -> bool {
        (self == Workload::Lww) == (level.mode == Mode::Lww)
    }
}

/// `--workload register,set`, or `all`.
pub fn parse_workloads(text: &str) -> Result<Vec<Workload>, String> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let add: Vec<Workload> = if word == "all" {
            Workload::ALL.to_vec()
        } else {
            vec![
                Workload::ALL
                    .into_iter()
                    .find(|w| w.name() == word)
                    .ok_or_else(|| {
                        format!("`{word}` is no workload: use register, set, lww or all")
                    })?,
            ]
        };
        for w in add {
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    if out.is_empty() {
        return Err("no workload given".into());
    }
    Ok(out)
}

/// Which level and workload a client runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub process: u64,
    pub level: usize,
    pub workload: Workload,
}

/// Spreads `clients` over the levels (client `c` runs level `c mod L`)
/// and, within a level, over the workloads that fit it. A level that no
/// workload fits is an error, as is a level left without a client.
pub fn assign(
    clients: usize,
    levels: &[LevelSpec],
    workloads: &[Workload],
) -> Result<Vec<Assignment>, String> {
    let fitting: Vec<Vec<Workload>> = levels
        .iter()
        .map(|l| workloads.iter().copied().filter(|w| w.fits(l)).collect())
        .collect();
    for (l, f) in levels.iter().zip(&fitting) {
        if f.is_empty() {
            return Err(format!(
                "no workload among {} runs on level {l} (lww runs on lww: levels only, register and set on the others)",
                workloads
                    .iter()
                    .map(|w| w.name())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    if clients < levels.len() {
        return Err(format!(
            "{clients} clients for {} levels: every level needs one",
            levels.len()
        ));
    }
    Ok((0..clients)
        .map(|c| {
            let level = c % levels.len();
            let f = &fitting[level];
            Assignment {
                process: c as u64,
                level,
                workload: f[(c / levels.len()) % f.len()],
            }
        })
        .collect())
}

/// The recorded form of a consistency level.
pub fn recorded(c: Consistency) -> Level {
    match c {
        Consistency::N(k) => Level::Count(k),
        other => Level::Named(other.to_string()),
    }
}

/// How an error ends an operation: `fail` when it certainly did not
/// happen, `info` when it may have.
pub fn outcome(e: &Error) -> EventType {
    match e {
        Error::Api { status, .. } if *status == 503 || (400..500).contains(status) => {
            EventType::Fail
        }
        Error::Transport(t) if t.starts_with("no node reachable") => EventType::Fail,
        Error::BadInput(_) => EventType::Fail,
        _ => EventType::Info,
    }
}

/// A read's recorded value: the list of its live siblings, each a number
/// (register) or a list of elements (set); a value that is neither is kept
/// as its text, so that the checker reports it as unexpected.
pub fn read_value(f: &Fetched) -> Value {
    match f {
        Fetched::NotFound { .. } => json!([]),
        Fetched::Found(v) => Value::Array(
            v.values
                .iter()
                .filter(|s| !s.deleted)
                .map(|s| {
                    let text = String::from_utf8_lossy(&s.value);
                    serde_json::from_str::<Value>(&text)
                        .ok()
                        .filter(|v| v.is_u64() || v.is_array())
                        .unwrap_or(Value::String(text.into_owned()))
                })
                .collect(),
        ),
    }
}

/// The union of a set read's siblings, sorted.
pub fn union(read: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = read
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A value no other operation of the run writes: the process in the high
/// digits, its count in the low ones.
pub fn unique(process: u64, seq: u64) -> u64 {
    process * 1_000_000_000 + seq
}

/// One client's part of the run.
pub struct ClientSpec {
    pub process: u64,
    pub workload: Workload,
    pub level: LevelSpec,
    pub bucket: String,
    /// The keys it works on (the level's hot keys, or its own set key).
    pub keys: Vec<String>,
    /// One client per node: `(node id, client)`.
    pub nodes: Arc<Vec<(String, Client)>>,
    pub seed: u64,
    /// Pause between two iterations.
    pub think: Duration,
}

struct Runner<'a> {
    spec: &'a ClientSpec,
    rec: &'a Recorder,
    rng: ChaCha8Rng,
    seq: u64,
}

impl Runner<'_> {
    fn event(&self, kind: EventType, f: Func, key: &str, node: &str) -> Event {
        let mut e = Event::new(Process::Client(self.spec.process), kind, f);
        e.key = Some(key.to_string());
        e.bucket = Some(self.spec.bucket.clone());
        e.node = Some(node.to_string());
        e
    }

    fn node(&mut self) -> usize {
        self.rng.random_range(0..self.spec.nodes.len())
    }

    /// A recorded read; `Some` with its value and context when it worked.
    async fn read(&mut self, key: &str) -> Option<(Value, Option<Context>)> {
        let i = self.node();
        let (id, client) = &self.spec.nodes[i];
        let mut e = self.event(EventType::Invoke, Func::Read, key, id);
        e.r = Some(recorded(self.spec.level.r));
        self.rec.record(e.clone());
        let opts = ReadOptions {
            r: Some(self.spec.level.r),
            timeout_ms: None,
        };
        match client.get(&self.spec.bucket, key.as_bytes(), &opts).await {
            Ok(f) => {
                let value = read_value(&f);
                e.kind = EventType::Ok;
                e.value = Some(value.clone());
                e.context = f.context().map(|c| c.0.clone());
                self.rec.record(e);
                Some((value, f.context().cloned()))
            }
            Err(err) => {
                e.kind = outcome(&err);
                self.rec.record(e);
                None
            }
        }
    }

    /// A recorded write (`f` write or add) of `body`, recorded as `value`.
    async fn write(
        &mut self,
        f: Func,
        key: &str,
        value: Value,
        body: Vec<u8>,
        context: Option<&Context>,
    ) {
        let i = self.node();
        let (id, client) = &self.spec.nodes[i];
        let mut e = self.event(EventType::Invoke, f, key, id);
        e.w = Some(recorded(self.spec.level.w));
        e.value = Some(value);
        e.context = context.map(|c| c.0.clone());
        self.rec.record(e.clone());
        let opts = WriteOptions {
            w: Some(self.spec.level.w),
            timeout_ms: None,
        };
        let res = client
            .put(
                &self.spec.bucket,
                key.as_bytes(),
                body,
                Some("application/json"),
                context,
                &opts,
            )
            .await;
        e.kind = match res {
            Ok(_) => EventType::Ok,
            Err(err) => outcome(&err),
        };
        e.context = None;
        self.rec.record(e);
    }

    fn next_value(&mut self) -> u64 {
        self.seq += 1;
        unique(self.spec.process, self.seq)
    }

    async fn register_step(&mut self) {
        let key = self.spec.keys[self.rng.random_range(0..self.spec.keys.len())].clone();
        let read = self.read(&key).await;
        let roll: f64 = self.rng.random();
        let context = match (&read, roll) {
            (Some((_, ctx)), r) if r < 0.6 => ctx.clone(),
            (_, r) if r < 0.8 => None,
            _ => return,
        };
        let v = self.next_value();
        self.write(
            Func::Write,
            &key,
            json!(v),
            v.to_string().into_bytes(),
            context.as_ref(),
        )
        .await;
    }

    async fn set_step(&mut self) {
        let key = self.spec.keys[0].clone();
        // Without a read there is nothing to merge into: skip the add.
        let Some((value, ctx)) = self.read(&key).await else {
            return;
        };
        let mut elements = union(&value);
        let v = self.next_value();
        elements.push(v);
        let body = serde_json::to_vec(&elements).unwrap_or_default();
        self.write(Func::Add, &key, json!(v), body, ctx.as_ref())
            .await;
    }
}

/// Runs `spec` until `stop` is set, recording every operation.
pub async fn run_client(spec: ClientSpec, rec: Recorder, stop: Arc<AtomicBool>) {
    let mut r = Runner {
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        spec: &spec,
        rec: &rec,
        seq: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        match spec.workload {
            Workload::Register | Workload::Lww => r.register_step().await,
            Workload::Set => r.set_step().await,
        }
        tokio::time::sleep(spec.think).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Sibling, Versioned};

    fn levels(text: &str) -> Vec<LevelSpec> {
        super::super::level::parse_levels(text).expect("valid")
    }

    #[test]
    fn clients_spread_over_the_levels_and_the_workloads_that_fit_them() {
        let ls = levels("r=2,w=2 r=1,w=1 lww:r=2,w=2");
        let a = assign(7, &ls, &Workload::ALL).expect("fits");
        let got: Vec<(usize, Workload)> = a.iter().map(|x| (x.level, x.workload)).collect();
        assert_eq!(
            got,
            [
                (0, Workload::Register),
                (1, Workload::Register),
                (2, Workload::Lww),
                (0, Workload::Set),
                (1, Workload::Set),
                (2, Workload::Lww),
                (0, Workload::Register),
            ]
        );
        assert_eq!(a[6].process, 6);
        let err = assign(3, &ls, &[Workload::Register]).expect_err("lww level");
        assert!(err.contains("lww:r=2,w=2"), "{err}");
        let err = assign(2, &ls, &Workload::ALL).expect_err("too few");
        assert!(err.contains("every level needs one"), "{err}");
    }

    #[test]
    fn workloads_parse_by_name_or_all() {
        assert_eq!(parse_workloads("all"), Ok(Workload::ALL.to_vec()));
        assert_eq!(
            parse_workloads("set,register,set"),
            Ok(vec![Workload::Set, Workload::Register])
        );
        assert!(parse_workloads("bank").is_err());
    }

    #[test]
    fn a_503_is_a_failure_and_a_504_or_a_broken_connection_unknown() {
        let api = |s| Error::from_response(s, b"{}");
        assert_eq!(outcome(&api(503)), EventType::Fail);
        assert_eq!(outcome(&api(400)), EventType::Fail);
        assert_eq!(outcome(&api(504)), EventType::Info);
        assert_eq!(outcome(&api(500)), EventType::Info);
        assert_eq!(
            outcome(&Error::Transport("no node reachable: x".into())),
            EventType::Fail
        );
        assert_eq!(
            outcome(&Error::Transport("connection reset".into())),
            EventType::Info
        );
    }

    #[test]
    fn reads_record_live_siblings_as_numbers_or_element_lists() {
        let sib = |v: &str, deleted| Sibling {
            value: v.as_bytes().to_vec(),
            content_type: "application/json".into(),
            deleted,
        };
        let f = Fetched::Found(Versioned {
            context: Context("c".into()),
            values: vec![
                sib("7", false),
                sib("[1,2]", false),
                sib("", true),
                sib("x", false),
            ],
        });
        assert_eq!(read_value(&f), json!([7, [1, 2], "x"]));
        assert_eq!(read_value(&Fetched::NotFound { context: None }), json!([]));
        assert_eq!(union(&json!([[3, 1], [2, 3], 9])), vec![1, 2, 3]);
        assert_ne!(unique(1, 2), unique(2, 1));
    }
}
