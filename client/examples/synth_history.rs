//! Writes a synthetic, seeded history of concurrent clients for timing
//! `qkv exp check` (docs/EXPERIMENTS.md, "Checking a history"):
//!
//! ```sh
//! cargo run -p quorumkv-client --example synth_history -- 200000 7 > /tmp/h.jsonl
//! ```
//!
//! Arguments: the number of client events (about), then the seed. Clients
//! overlap: each step one random process invokes or completes. The store
//! is a model that applies writes when they complete: a register with
//! siblings on a few hot keys in `exp-r2w2` (reads, then writes with the
//! read's context or none), a register on `exp-lww-r2w2` that keeps only the
//! newest write, and sets in `exp-r2w2` (read, then add with the context).
//! One in a thousand reads of `exp-r2w2` returns the previous state, so
//! that the checker has something to find.

use std::collections::HashMap;
use std::io::Write;

use quorumkv_client::exp::history::{
    Event, EventType, Func, HistoryError, HistoryWriter, Level, Process,
};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const PROCESSES: u64 = 16;
const HOT_KEYS: u64 = 4;

/// A register with siblings (or, for lww, only the newest value).
#[derive(Default)]
struct Register {
    values: Vec<u64>,
    previous: Vec<u64>,
    version: u64,
    /// Context -> the values it stood for.
    contexts: HashMap<String, Vec<u64>>,
}

/// A set key: the union of everything added (one sibling).
#[derive(Default)]
struct Set {
    elements: Vec<u64>,
    version: u64,
}

/// An operation in flight.
struct Pending {
    event: Event,
    /// The read-modify-write's next step, for the process's next invoke.
    follow_up: Option<Event>,
}

fn main() -> Result<(), HistoryError> {
    let args: Vec<String> = std::env::args().collect();
    let target: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let seed: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let stdout = std::io::stdout().lock();
    let mut out = HistoryWriter::new(std::io::BufWriter::new(stdout));
    let mut index = 0u64;
    let mut emit = |out: &mut HistoryWriter<_>, mut e: Event| -> Result<(), HistoryError> {
        e.index = Some(index);
        e.time_ns = Some(index * 1_000);
        index += 1;
        out.append(&e)
    };

    let mut registers: HashMap<(String, String), Register> = HashMap::new();
    let mut sets: HashMap<String, Set> = HashMap::new();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut next_up: HashMap<u64, Event> = HashMap::new();
    let mut next_value = 0u64;
    let mut events = 0usize;
    while events < target {
        let p = rng.random_range(0..PROCESSES);
        if let Some(op) = pending.remove(&p) {
            let done = complete(&op.event, &mut registers, &mut sets, &mut rng);
            if let Some(mut follow) = op.follow_up {
                follow.context = done.context.clone();
                next_up.insert(p, follow);
            }
            emit(&mut out, done)?;
            events += 1;
            continue;
        }
        let (event, follow_up) = match next_up.remove(&p) {
            Some(e) => (e, None),
            None => invoke(p, &mut next_value, &mut rng),
        };
        emit(&mut out, event.clone())?;
        events += 1;
        pending.insert(p, Pending { event, follow_up });
    }
    // In-flight operations end unknown; then the converged state.
    let mut open: Vec<(u64, Pending)> = pending.into_iter().collect();
    open.sort_by_key(|(p, _)| *p);
    for (_, op) in open {
        let mut info = op.event.clone();
        info.kind = EventType::Info;
        emit(&mut out, info)?;
    }
    let mut keys: Vec<(String, String, bool)> = registers
        .keys()
        .map(|(b, k)| (b.clone(), k.clone(), false))
        .chain(
            sets.keys()
                .map(|k| ("exp-r2w2".to_string(), k.clone(), true)),
        )
        .collect();
    keys.sort();
    for (bucket, key, is_set) in keys {
        let mut e = client(99, EventType::Invoke, Func::Read, &bucket, &key);
        e.final_read = true;
        e.r = Some(Level::Named("all".into()));
        emit(&mut out, e.clone())?;
        e.kind = EventType::Ok;
        e.value = Some(if is_set {
            json!([sets[&key].elements])
        } else {
            json!(registers[&(bucket.clone(), key.clone())].values)
        });
        emit(&mut out, e)?;
    }
    out.flush()?;
    std::io::stdout().flush().map_err(|error| HistoryError::Io {
        context: "stdout".into(),
        error,
    })
}

fn client(p: u64, kind: EventType, f: Func, bucket: &str, key: &str) -> Event {
    let mut e = Event::new(Process::Client(p), kind, f);
    e.bucket = Some(bucket.into());
    e.key = Some(key.into());
    e.node = Some(format!("n{}", p % 3 + 1));
    e
}

/// A new operation for process `p`, and the write that follows a read in
/// a read-modify-write.
fn invoke(p: u64, next_value: &mut u64, rng: &mut impl Rng) -> (Event, Option<Event>) {
    let bucket = if rng.random_bool(0.25) {
        "exp-lww-r2w2"
    } else {
        "exp-r2w2"
    };
    let set_key = format!("s{p}-{}", *next_value / (50 * PROCESSES));
    let mut value = || {
        *next_value += 1;
        json!(*next_value)
    };
    let read = |bucket: &str, key: &str| {
        let mut e = client(p, EventType::Invoke, Func::Read, bucket, key);
        e.r = Some(Level::Count(2));
        e
    };
    let roll = rng.random_range(0..10);
    if roll == 0 {
        // Sets: this process's own key, a new one every 50 elements.
        let mut add = client(p, EventType::Invoke, Func::Add, "exp-r2w2", &set_key);
        add.value = Some(value());
        add.w = Some(Level::Count(2));
        return (read("exp-r2w2", &set_key), Some(add));
    }
    let key = format!("k{}", rng.random_range(0..HOT_KEYS));
    let mut write = client(p, EventType::Invoke, Func::Write, bucket, &key);
    write.value = Some(value());
    write.w = Some(Level::Count(2));
    match roll {
        1..5 => (read(bucket, &key), Some(write)),
        5..7 => (write, None),
        _ => (read(bucket, &key), None),
    }
}

/// The completion of `inv`, applying it to the model.
fn complete(
    inv: &Event,
    registers: &mut HashMap<(String, String), Register>,
    sets: &mut HashMap<String, Set>,
    rng: &mut impl Rng,
) -> Event {
    let mut e = inv.clone();
    e.context = None;
    let bucket = inv.bucket.clone().unwrap_or_default();
    let key = inv.key.clone().unwrap_or_default();
    let lww = bucket.contains("lww");
    let value = |v: &Option<Value>| v.as_ref().and_then(Value::as_u64).unwrap_or(0);
    let ending = match rng.random_range(0..100) {
        0 => EventType::Fail,
        1 => EventType::Info,
        _ => EventType::Ok,
    };
    e.kind = ending;
    let applied = match ending {
        EventType::Ok => true,
        EventType::Fail => false,
        _ => rng.random_bool(0.5),
    };
    match inv.f {
        Some(Func::Add) => {
            let s = sets.entry(key).or_default();
            if applied {
                s.elements.push(value(&inv.value));
                s.version += 1;
            }
        }
        Some(Func::Read) if key.starts_with('s') => {
            let s = sets.entry(key.clone()).or_default();
            if ending == EventType::Ok {
                e.value = Some(json!([s.elements]));
                e.context = Some(format!("{key}@{}", s.version));
            } else {
                e.value = None;
            }
        }
        Some(Func::Read) => {
            let r = registers.entry((bucket.clone(), key)).or_default();
            if ending == EventType::Ok {
                let stale = !lww && rng.random_range(0..1000) == 0;
                let values = if stale { &r.previous } else { &r.values };
                let token = format!("{bucket}@{}{}", r.version, if stale { "s" } else { "" });
                r.contexts.insert(token.clone(), values.clone());
                e.value = Some(json!(values));
                e.context = Some(token);
            } else {
                e.value = None;
            }
        }
        _ => {
            let r = registers.entry((bucket, key)).or_default();
            if applied {
                let v = value(&inv.value);
                r.previous = r.values.clone();
                if lww {
                    r.values = vec![v];
                } else {
                    let superseded = inv
                        .context
                        .as_ref()
                        .and_then(|c| r.contexts.get(c))
                        .cloned()
                        .unwrap_or_default();
                    r.values.retain(|x| !superseded.contains(x));
                    r.values.push(v);
                }
                r.version += 1;
            }
        }
    }
    e
}
