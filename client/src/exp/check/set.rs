//! The set workload's checks on one key: each add writes a unique element
//! (read-modify-write with the read's context), each sibling a read returns
//! is the list of elements it holds, and the set is the union of the
//! siblings. A correct store never drops an element once added, so no
//! supersession is needed: an element is either in a read's union or not.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{
    BucketVerdict, KeyOps, NonMonotonic, StaleRead, Unexpected, canonical, sibling_values,
};
use crate::exp::history::{Op, Outcome};

/// A successful read and the elements of its union.
struct SetRead<'a> {
    op: &'a Op,
    elements: HashSet<u32>,
}

pub(super) fn check_key(key: &KeyOps<'_>, v: &mut BucketVerdict) {
    let adds: Vec<&Op> = key.writes().collect();
    let mut element_of: HashMap<String, u32> = HashMap::with_capacity(adds.len());
    for (i, a) in adds.iter().enumerate() {
        let Some(value) = &a.value else { continue };
        match element_of.entry(canonical(value)) {
            Entry::Occupied(_) => v.duplicate_values.push(a.index),
            Entry::Vacant(e) => {
                e.insert(i as u32);
            }
        }
    }

    let mut seen = vec![false; adds.len()];
    let mut reads: Vec<SetRead> = Vec::new();
    for op in key.ok_reads() {
        KeyOps::note_siblings(op, v);
        let mut elements = HashSet::new();
        let mut strangers = HashSet::new();
        for value in sibling_values(op).iter().flat_map(members) {
            let text = canonical(value);
            match element_of.get(&text) {
                Some(&e) => {
                    if elements.insert(e) && adds[e as usize].outcome == Outcome::Fail {
                        v.unexpected_values.push(Unexpected {
                            read: op.index,
                            value: value.clone(),
                        });
                    }
                    seen[e as usize] = true;
                }
                None if strangers.insert(text) => v.unexpected_values.push(Unexpected {
                    read: op.index,
                    value: value.clone(),
                }),
                None => {}
            }
        }
        reads.push(SetRead { op, elements });
    }

    for (i, a) in adds.iter().enumerate() {
        key.note_context(a, v);
        if a.outcome == Outcome::Info {
            v.unknown.count += 1;
            v.unknown.ops.push(a.index);
            if seen[i] {
                v.unknown.visible_later += 1;
                v.unknown.visible.push(a.index);
            }
        }
    }

    stale_reads(&adds, &reads, v);
    non_monotonic_reads(&adds, &reads, v);
    lost_adds(key, &adds, &reads, &seen, v);
}

/// A sibling's elements: the members of its list (a lone value is itself).
fn members(sibling: &Value) -> &[Value] {
    match sibling {
        Value::Array(items) => items,
        v => std::slice::from_ref(v),
    }
}

fn acked_before(add: &Op, pos: usize) -> bool {
    add.outcome == Outcome::Ok && add.complete_pos.is_some_and(|p| p < pos)
}

/// Reads whose union lacks an add acknowledged before they were invoked.
fn stale_reads(adds: &[&Op], reads: &[SetRead], v: &mut BucketVerdict) {
    let mut acked: Vec<(usize, u32)> = adds
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match (a.outcome, a.complete_pos) {
            (Outcome::Ok, Some(pos)) => Some((pos, i as u32)),
            _ => None,
        })
        .collect();
    acked.sort_unstable();
    for read in reads.iter().filter(|r| !r.op.final_read) {
        let at = read.op.invoke_pos;
        let due = acked.partition_point(|&(pos, _)| pos < at);
        let held = read
            .elements
            .iter()
            .filter(|&&e| acked_before(adds[e as usize], at))
            .count();
        if held < due {
            // The newest missing add: a stale read usually lags by a little.
            let missed = acked[..due]
                .iter()
                .rev()
                .find(|(_, e)| !read.elements.contains(e));
            if let Some(&(_, e)) = missed {
                v.stale_reads.push(StaleRead {
                    read: read.op.index,
                    missed: adds[e as usize].index,
                });
            }
        }
    }
}

/// Reads that drop an element the same process's previous read returned.
fn non_monotonic_reads(adds: &[&Op], reads: &[SetRead], v: &mut BucketVerdict) {
    let mut previous: HashMap<u64, &SetRead> = HashMap::new();
    for read in reads.iter().filter(|r| !r.op.final_read) {
        if let Some(prev) = previous.insert(read.op.process, read)
            && let Some(&e) = prev
                .elements
                .iter()
                .filter(|e| !read.elements.contains(e))
                .min()
        {
            v.non_monotonic_reads.push(NonMonotonic {
                read: read.op.index,
                previous: prev.op.index,
                value: adds[e as usize].value.clone().unwrap_or_default(),
            });
        }
    }
}

/// Acknowledged adds missing from the final read's union.
fn lost_adds(
    key: &KeyOps<'_>,
    adds: &[&Op],
    reads: &[SetRead],
    seen: &[bool],
    v: &mut BucketVerdict,
) {
    let acked = || {
        adds.iter()
            .enumerate()
            .filter(|(_, a)| a.outcome == Outcome::Ok)
    };
    let fin = key
        .final_read()
        .and_then(|last| reads.iter().find(|r| r.op.invoke_pos == last.invoke_pos));
    let Some(fin) = fin else {
        let n = acked().count();
        if n > 0 {
            v.unchecked_keys.push(key.key.to_string());
            v.unchecked_writes += n;
        }
        return;
    };
    for (i, a) in acked() {
        if !fin.elements.contains(&(i as u32)) {
            v.lost.push(a.index);
            if !seen[i] {
                v.lost_unseen.push(a.index);
            }
        }
    }
}
