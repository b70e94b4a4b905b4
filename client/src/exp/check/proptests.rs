//! Properties on histories made by a tiny model of a correct register with
//! siblings: operations one at a time (invocation, then completion), a
//! write with a context replacing exactly the values that context stood
//! for, and a final read per key. Such a history has no anomaly; dropping
//! a value from a final read loses exactly what the model says it should.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

use super::*;
use crate::exp::history::{Event, EventType, Func, History, Process};

const KEYS: usize = 3;

/// One generated step: who, which key, what, a choice among earlier
/// contexts, and how it ends.
type Step = (u64, usize, u8, usize, u8, bool);

/// The model's run: its events, and for checking the oracle, each write's
/// index and the values its context stood for.
struct Run {
    events: Vec<Event>,
    /// value -> (index of its invocation, acknowledged, values superseded)
    writes: HashMap<u64, (u64, bool, Vec<u64>)>,
    /// key -> index of the final read's ok event in `events`.
    finals: Vec<usize>,
}

fn event(process: u64, kind: EventType, f: Func, key: usize) -> Event {
    let mut e = Event::new(Process::Client(process), kind, f);
    e.key = Some(format!("k{key}"));
    e.bucket = Some("exp-r2w2".into());
    e
}

/// Runs the model over `steps`; `tail` adds one contextless acknowledged
/// write to key 0 just before the final reads.
fn run(steps: &[Step], tail: bool) -> Run {
    let mut state: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); KEYS];
    let mut version = [0u64; KEYS];
    // key -> contexts handed out so far, with the values each stood for
    let mut contexts: Vec<Vec<(String, Vec<u64>)>> = vec![Vec::new(); KEYS];
    let mut out = Run {
        events: Vec::new(),
        writes: HashMap::new(),
        finals: Vec::new(),
    };
    let mut next_value = 0u64;
    let push = |out: &mut Run, mut e: Event| {
        e.index = Some(out.events.len() as u64);
        out.events.push(e);
    };
    let tail_step: Step = (7, 0, 5, 0, 0, true);
    for &(process, key, what, pick, end, applied) in steps.iter().chain(tail.then_some(&tail_step))
    {
        let ending = match end {
            0..7 => EventType::Ok,
            7 => EventType::Fail,
            _ => EventType::Info,
        };
        if what < 4 {
            push(&mut out, event(process, EventType::Invoke, Func::Read, key));
            let mut e = event(process, ending, Func::Read, key);
            if ending == EventType::Ok {
                let values: Vec<u64> = state[key].iter().copied().collect();
                let token = format!("k{key}v{}", version[key]);
                e.value = Some(json!(values));
                e.context = Some(token.clone());
                contexts[key].push((token, values));
            }
            push(&mut out, e);
            continue;
        }
        let value = next_value;
        next_value += 1;
        let context = match (what, contexts[key].is_empty()) {
            (7.., false) => Some(contexts[key][pick % contexts[key].len()].clone()),
            _ => None,
        };
        let mut e = event(process, EventType::Invoke, Func::Write, key);
        e.value = Some(json!(value));
        e.context = context.as_ref().map(|(t, _)| t.clone());
        let index = out.events.len() as u64;
        push(&mut out, e);
        let mut done = event(process, ending, Func::Write, key);
        done.value = Some(json!(value));
        push(&mut out, done);
        let superseded = context.map(|(_, vs)| vs).unwrap_or_default();
        let takes_effect = match ending {
            EventType::Ok => true,
            EventType::Fail => false,
            _ => applied,
        };
        if takes_effect {
            for v in &superseded {
                state[key].remove(v);
            }
            state[key].insert(value);
            version[key] += 1;
        }
        out.writes
            .insert(value, (index, ending == EventType::Ok, superseded));
    }
    for (key, values) in state.iter().enumerate() {
        let mut e = event(99, EventType::Invoke, Func::Read, key);
        e.final_read = true;
        push(&mut out, e);
        let mut e = event(99, EventType::Ok, Func::Read, key);
        e.final_read = true;
        e.value = Some(json!(values.iter().collect::<Vec<_>>()));
        e.context = Some(format!("k{key}v{}", version[key]));
        out.finals.push(out.events.len());
        push(&mut out, e);
    }
    out
}

fn verdict_of(events: Vec<Event>) -> BucketVerdict {
    let h = History::from_events(events).expect("the model writes valid histories");
    let mut v = check(&h, &CheckOptions::default());
    assert_eq!(v.buckets.len(), 1);
    v.buckets.remove(0)
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        (
            0u64..4,
            0..KEYS,
            0u8..10,
            any::<usize>(),
            0u8..10,
            any::<bool>(),
        ),
        0..150,
    )
}

/// The values of a final read's ok event.
fn final_values(e: &Event) -> Vec<u64> {
    serde_json::from_value(e.value.clone().expect("a value")).expect("numbers")
}

/// The naive oracle: acknowledged writes neither in `values` nor an
/// ancestor of one, by brute force over the model's own records.
fn naive_lost(run: &Run, key_values: &[Vec<u64>]) -> BTreeSet<u64> {
    let mut covered = BTreeSet::new();
    let mut stack: Vec<u64> = key_values.iter().flatten().copied().collect();
    while let Some(v) = stack.pop() {
        if covered.insert(v) {
            stack.extend(run.writes[&v].2.iter().copied());
        }
    }
    run.writes
        .iter()
        .filter(|(v, (_, acked, _))| *acked && !covered.contains(v))
        .map(|(_, (index, _, _))| *index)
        .collect()
}

proptest! {
    #[test]
    fn a_correct_sequential_register_history_has_no_anomaly(steps in steps()) {
        let run = run(&steps, false);
        let b = verdict_of(run.events);
        prop_assert_eq!(b.anomalies(), 0, "{:?}", b);
        prop_assert_eq!(b.lost_unseen.count, 0);
        prop_assert_eq!(b.unmatched_contexts.count, 0);
        prop_assert!(b.unchecked_keys.is_empty());
        prop_assert_eq!(b.unknown.count, b.unknown.ops.len());
    }

    #[test]
    fn dropping_an_acknowledged_write_from_the_final_read_loses_exactly_it(steps in steps()) {
        let mut run = run(&steps, true);
        // The tail write is the newest value of key 0 and supersedes nothing.
        let at = run.finals[0];
        let mut values = final_values(&run.events[at]);
        let tail = values.pop().expect("the tail write is in the final state");
        run.events[at].value = Some(json!(values));
        let index = run.writes[&tail].0;
        let b = verdict_of(run.events);
        prop_assert_eq!(b.lost, Listed { count: 1, ops: vec![index] });
        prop_assert_eq!(b.lost_unseen.count, 1, "no read ever returned it");
    }

    #[test]
    fn dropping_any_final_value_loses_what_a_brute_force_oracle_says(
        steps in steps(),
        pick in any::<Index>(),
    ) {
        let mut run = run(&steps, true);
        let mut finals: Vec<Vec<u64>> = run.finals.iter().map(|&at| final_values(&run.events[at])).collect();
        let all: Vec<(usize, usize)> = finals
            .iter()
            .enumerate()
            .flat_map(|(k, vs)| (0..vs.len()).map(move |i| (k, i)))
            .collect();
        let (key, i) = *pick.get(&all);
        finals[key].remove(i);
        run.events[run.finals[key]].value = Some(json!(finals[key]));
        let want = naive_lost(&run, &finals);
        let b = verdict_of(run.events);
        let got: BTreeSet<u64> = b.lost.ops.iter().copied().collect();
        prop_assert_eq!(got.len(), b.lost.count, "each lost write once");
        prop_assert_eq!(got, want);
    }
}

#[test]
fn the_model_exercises_siblings_resolutions_and_unknown_outcomes() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let steps: Vec<Step> = (0..2000)
        .map(|_| {
            (
                rng.random_range(0..4),
                rng.random_range(0..KEYS),
                rng.random_range(0..10),
                rng.random_range(0..usize::MAX),
                rng.random_range(0..10),
                rng.random(),
            )
        })
        .collect();
    let b = verdict_of(run(&steps, false).events);
    assert_eq!(b.anomalies(), 0, "{b:?}");
    assert!(
        b.siblings.reads > 0 && b.siblings.resolved > 0,
        "{:?}",
        b.siblings
    );
    assert!(b.unknown.visible_later > 0, "{:?}", b.unknown.count);
    assert!(b.unknown.visible_later < b.unknown.count);
    assert!(b.totals[&OpKind::Write].fail > 0);
}
