//! The register workload's checks on one key: writes of unique values,
//! reads returning sibling lists, supersession through contexts (see the
//! module doc of `check` for the definitions).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::graph::{Frontier, Reach};
use super::{
    BucketVerdict, KeyOps, NonMonotonic, StaleRead, Unexpected, canonical, sibling_values,
};
use crate::exp::history::{Op, Outcome};

/// A successful read with its values resolved to write numbers.
struct Read<'a> {
    op: &'a Op,
    /// The writes whose values it returned (unexpected values left out).
    nodes: Vec<u32>,
}

pub(super) fn check_key(key: &KeyOps<'_>, v: &mut BucketVerdict) {
    let writes: Vec<&Op> = key.writes().collect();
    let mut node_of: HashMap<String, u32> = HashMap::with_capacity(writes.len());
    for (i, w) in writes.iter().enumerate() {
        // Pairing guarantees every write has a value.
        let Some(value) = &w.value else { continue };
        match node_of.entry(canonical(value)) {
            Entry::Occupied(_) => v.duplicate_values.push(w.index),
            Entry::Vacant(e) => {
                e.insert(i as u32);
            }
        }
    }

    let mut seen = vec![false; writes.len()];
    let mut reads: Vec<Read> = Vec::new();
    let mut nodes_of_read: HashMap<usize, usize> = HashMap::new();
    for op in key.ok_reads() {
        KeyOps::note_siblings(op, v);
        let mut nodes = Vec::new();
        for value in sibling_values(op) {
            match node_of.get(&canonical(value)) {
                Some(&n) => {
                    seen[n as usize] = true;
                    nodes.push(n);
                    if writes[n as usize].outcome == Outcome::Fail {
                        v.unexpected_values.push(Unexpected {
                            read: op.index,
                            value: value.clone(),
                        });
                    }
                }
                None => v.unexpected_values.push(Unexpected {
                    read: op.index,
                    value: value.clone(),
                }),
            }
        }
        nodes_of_read.insert(op.invoke_pos, reads.len());
        reads.push(Read { op, nodes });
    }

    // What each context stood for: the union of the values its reads
    // returned, computed once however many writes carry it.
    let mut stood_for: HashMap<&str, Vec<u32>> = HashMap::new();
    let parents: Vec<Vec<u32>> = writes
        .iter()
        .enumerate()
        .map(|(i, w)| {
            key.note_context(w, v);
            let (Some(c), Some(from)) = (w.context.as_deref(), key.context_reads(w)) else {
                return Vec::new();
            };
            let nodes = stood_for.entry(c).or_insert_with(|| {
                let mut ns: Vec<u32> = from
                    .iter()
                    .filter_map(|r| nodes_of_read.get(&r.invoke_pos))
                    .flat_map(|&r| reads[r].nodes.iter().copied())
                    .collect();
                ns.sort_unstable();
                ns.dedup();
                ns
            });
            nodes
                .iter()
                .copied()
                .filter(|&p| (p as usize) < i)
                .collect()
        })
        .collect();

    for (i, w) in writes.iter().enumerate() {
        if w.outcome == Outcome::Info {
            v.unknown.count += 1;
            v.unknown.ops.push(w.index);
            if seen[i] {
                v.unknown.visible_later += 1;
                v.unknown.visible.push(w.index);
            }
        }
    }

    let mut reach = Reach::new(&parents);
    stale_reads(&writes, &reads, &parents, &mut reach, v);
    non_monotonic_reads(&writes, &reads, &mut reach, v);
    lost_writes(key, &writes, &reads, &parents, &seen, v);
}

/// Reads that miss a write acknowledged before they were invoked.
fn stale_reads(
    writes: &[&Op],
    reads: &[Read],
    parents: &[Vec<u32>],
    reach: &mut Reach,
    v: &mut BucketVerdict,
) {
    enum Step {
        Acked(u32),
        Read(usize),
    }
    let mut steps: Vec<(usize, Step)> = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        if let (Outcome::Ok, Some(pos)) = (w.outcome, w.complete_pos) {
            steps.push((pos, Step::Acked(i as u32)));
        }
    }
    for (i, r) in reads.iter().enumerate() {
        if !r.op.final_read {
            steps.push((r.op.invoke_pos, Step::Read(i)));
        }
    }
    steps.sort_unstable_by_key(|(pos, _)| *pos);
    let mut frontier = Frontier::new(parents);
    for (pos, step) in steps {
        match step {
            Step::Acked(n) => frontier.acknowledge(n, pos),
            Step::Read(i) => {
                let read = &reads[i];
                let missed = frontier.iter().find(|&f| !reach.covered(&read.nodes, f));
                if let Some(f) = missed {
                    v.stale_reads.push(StaleRead {
                        read: read.op.index,
                        missed: writes[f as usize].index,
                    });
                }
            }
        }
    }
}

/// Reads older than the same process's previous read of the key.
fn non_monotonic_reads(writes: &[&Op], reads: &[Read], reach: &mut Reach, v: &mut BucketVerdict) {
    let mut previous: HashMap<u64, &Read> = HashMap::new();
    for read in reads.iter().filter(|r| !r.op.final_read) {
        if let Some(prev) = previous.insert(read.op.process, read) {
            let dropped = prev.nodes.iter().find(|&&n| !reach.covered(&read.nodes, n));
            if let Some(&n) = dropped {
                v.non_monotonic_reads.push(NonMonotonic {
                    read: read.op.index,
                    previous: prev.op.index,
                    value: writes[n as usize].value.clone().unwrap_or_default(),
                });
            }
        }
    }
}

/// Acknowledged writes the final read does not cover.
fn lost_writes(
    key: &KeyOps<'_>,
    writes: &[&Op],
    reads: &[Read],
    parents: &[Vec<u32>],
    seen: &[bool],
    v: &mut BucketVerdict,
) {
    let acked = || {
        writes
            .iter()
            .enumerate()
            .filter(|(_, w)| w.outcome == Outcome::Ok)
    };
    let Some(last) = key.final_read() else {
        let n = acked().count();
        if n > 0 {
            v.unchecked_keys.push(key.key.to_string());
            v.unchecked_writes += n;
        }
        return;
    };
    let Some(fin) = reads.iter().find(|r| r.op.invoke_pos == last.invoke_pos) else {
        return;
    };
    let mut covered = vec![false; writes.len()];
    let mut stack = fin.nodes.clone();
    while let Some(n) = stack.pop() {
        if !std::mem::replace(&mut covered[n as usize], true) {
            stack.extend_from_slice(&parents[n as usize]);
        }
    }
    for (i, w) in acked() {
        if !covered[i] {
            v.lost.push(w.index);
            if !seen[i] {
                v.lost_unseen.push(w.index);
            }
        }
    }
}
