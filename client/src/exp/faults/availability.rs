//! Availability while a quorum was reachable (pure): which operations
//! could have succeeded, judged from the nemesis events of the history and
//! the key's replicas, and how many of them did.
//!
//! An operation through coordinator `c` on a key with replicas `R` at
//! level `k` (its r for a read, its w for a write or add) had its quorum
//! **reachable** when, throughout the operation (from its invocation to
//! its completion), `c` was up and at least `k` replicas of `R` were up
//! and not cut off from `c`: no kill, pause or lost disk of theirs under
//! way, and no partition (symmetric, or one-way from `c`'s side to
//! theirs) between `c` and them. A fault's effect is taken to last a
//! settling time past its end, the time the failure detector and the
//! connections need to notice that the node is back (docs/EXPERIMENTS.md,
//! "Fault experiments"). Clock skew leaves every node reachable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::nemesis::Fault;
use crate::exp::history::{NemesisEvent, Op, OpKind, Outcome};

/// Whether a nemesis event starts or ends its fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Start,
    End,
}

/// The `value` of a nemesis event: the phase and the fault, and what went
/// wrong carrying it out, if anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisValue {
    pub phase: Phase,
    #[serde(flatten)]
    pub fault: Fault,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A fault as it happened: from its start event to its end event (ns after
/// the run began; `u64::MAX` when it never ended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Interval {
    pub start_ns: u64,
    pub end_ns: u64,
    pub fault: Fault,
}

/// The faults of a history's nemesis events: each start paired with the
/// next end of the same fault. Events of other shapes (the final `heal`)
/// are skipped.
pub fn intervals(events: &[NemesisEvent]) -> Vec<Interval> {
    let mut open: Vec<Interval> = Vec::new();
    let mut done: Vec<Interval> = Vec::new();
    for e in events {
        let Some(v) = e
            .value
            .as_ref()
            .and_then(|v| serde_json::from_value::<NemesisValue>(v.clone()).ok())
        else {
            continue;
        };
        let t = e.time_ns.unwrap_or(0);
        match v.phase {
            Phase::Start => open.push(Interval {
                start_ns: t,
                end_ns: u64::MAX,
                fault: v.fault,
            }),
            Phase::End => {
                if let Some(i) = open.iter().position(|o| o.fault == v.fault) {
                    let mut iv = open.remove(i);
                    iv.end_ns = t;
                    done.push(iv);
                }
            }
        }
    }
    done.extend(open);
    done.sort_by_key(|i| i.start_ns);
    done
}

/// Judges reachability against a history's faults.
#[derive(Clone, Debug)]
pub struct Reach<'a> {
    intervals: &'a [Interval],
    settle_ns: u64,
}

impl<'a> Reach<'a> {
    pub fn new(intervals: &'a [Interval], settle_ns: u64) -> Self {
        Reach {
            intervals,
            settle_ns,
        }
    }

    fn active(&self, t: u64) -> impl Iterator<Item = &'a Fault> + '_ {
        self.intervals
            .iter()
            .filter(move |i| i.start_ns <= t && t < i.end_ns.saturating_add(self.settle_ns))
            .map(|i| &i.fault)
    }

    /// At time `t`: `coordinator` is up and at least `need` of `replicas`
    /// are up and reachable from it.
    pub fn at(&self, t: u64, coordinator: &str, replicas: &[String], need: u32) -> bool {
        let faults: Vec<&Fault> = self.active(t).collect();
        let down = |n: &str| faults.iter().any(|f| f.down().iter().any(|d| d == n));
        if down(coordinator) {
            return false;
        }
        let reachable = replicas
            .iter()
            .filter(|r| !down(r) && !faults.iter().any(|f| f.cuts(coordinator, r)))
            .count();
        reachable >= need as usize
    }

    /// Throughout `[from, to]`: reachable at `from` and at every moment in
    /// between that a fault started or stopped counting.
    pub fn throughout(
        &self,
        from: u64,
        to: u64,
        coordinator: &str,
        replicas: &[String],
        need: u32,
    ) -> bool {
        let changes = self
            .intervals
            .iter()
            .flat_map(|i| [i.start_ns, i.end_ns.saturating_add(self.settle_ns)]);
        std::iter::once(from)
            .chain(changes.filter(|&t| t > from && t <= to))
            .all(|t| self.at(t, coordinator, replicas, need))
    }
}

/// Operations that had their quorum reachable, and how many of those
/// succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Availability {
    pub reachable: usize,
    pub ok: usize,
}

impl Availability {
    /// ok / reachable, when any operation was.
    pub fn ratio(&self) -> Option<f64> {
        (self.reachable > 0).then(|| self.ok as f64 / self.reachable as f64)
    }
}

/// Availability of each bucket's operations (final reads aside): `replicas`
/// maps bucket and key to the key's replicas, `n` is the replica count
/// levels are counted against. Operations whose key, node or level is
/// unknown are left out.
pub fn availability(
    ops: &[Op],
    reach: &Reach<'_>,
    replicas: &BTreeMap<(String, String), Vec<String>>,
    n: u32,
) -> BTreeMap<String, Availability> {
    let mut out: BTreeMap<String, Availability> = BTreeMap::new();
    for op in ops.iter().filter(|o| !o.final_read) {
        let level = match op.kind {
            OpKind::Read => op.r.as_ref(),
            OpKind::Write | OpKind::Add => op.w.as_ref(),
        };
        let (Some(need), Some(node), Some(reps), Some(from)) = (
            level.and_then(|l| l.count(n)),
            op.node.as_deref(),
            replicas.get(&(op.bucket.clone(), op.key.clone())),
            op.invoke_time_ns,
        ) else {
            continue;
        };
        let to = op.complete_time_ns.unwrap_or(from).max(from);
        let a = out.entry(op.bucket.clone()).or_default();
        if reach.throughout(from, to, node, reps, need) {
            a.reachable += 1;
            if op.outcome == Outcome::Ok {
                a.ok += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exp::history::{EventType, Func, Level};
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn nemesis(index: u64, time_ns: u64, value: serde_json::Value) -> NemesisEvent {
        NemesisEvent {
            index,
            process: "nemesis".into(),
            kind: EventType::Info,
            f: Some(Func::Other("x".into())),
            value: Some(value),
            time_ns: Some(time_ns),
        }
    }

    fn op(node: &str, from: u64, to: u64, outcome: Outcome) -> Op {
        Op {
            process: 1,
            kind: OpKind::Write,
            key: "k".into(),
            bucket: "exp-r2w2".into(),
            outcome,
            index: 0,
            complete_index: None,
            invoke_pos: 0,
            complete_pos: None,
            invoke_time_ns: Some(from),
            complete_time_ns: Some(to),
            value: None,
            context: None,
            node: Some(node.into()),
            r: None,
            w: Some(Level::Count(2)),
            final_read: false,
        }
    }

    #[test]
    fn start_and_end_events_pair_into_intervals_and_an_open_one_lasts_forever() {
        let events = [
            nemesis(
                0,
                10,
                json!({"phase": "start", "fault": "kill", "node": "n2"}),
            ),
            nemesis(
                1,
                20,
                json!({"phase": "start", "fault": "pause", "node": "n1"}),
            ),
            nemesis(
                2,
                30,
                json!({"phase": "end", "fault": "kill", "node": "n2"}),
            ),
            nemesis(3, 40, json!({"healed": true})),
        ];
        let iv = intervals(&events);
        assert_eq!(iv.len(), 2);
        assert_eq!((iv[0].start_ns, iv[0].end_ns), (10, 30));
        assert_eq!(iv[0].fault, Fault::Kill { node: "n2".into() });
        assert_eq!((iv[1].start_ns, iv[1].end_ns), (20, u64::MAX));
    }

    #[test]
    fn a_quorum_is_reachable_only_with_enough_live_uncut_replicas() {
        let iv = [
            Interval {
                start_ns: 100,
                end_ns: 200,
                fault: Fault::Kill { node: "n3".into() },
            },
            Interval {
                start_ns: 150,
                end_ns: 300,
                fault: Fault::OneWay {
                    from: s(&["n1"]),
                    to: s(&["n2", "n3"]),
                },
            },
        ];
        let reps = s(&["n1", "n2", "n3"]);
        let r = Reach::new(&iv, 50);
        assert!(r.at(0, "n1", &reps, 3));
        assert!(!r.at(120, "n1", &reps, 3), "n3 is down");
        assert!(r.at(120, "n1", &reps, 2));
        assert!(!r.at(120, "n3", &reps, 1), "the coordinator itself is down");
        assert!(!r.at(160, "n1", &reps, 2), "n1 only reaches itself");
        assert!(r.at(160, "n2", &reps, 2), "n2 still reaches n1 and itself");
        assert!(
            !r.at(240, "n1", &reps, 3),
            "n3 is settling after its restart"
        );
        assert!(r.at(251, "n2", &reps, 3));
        assert!(!r.at(320, "n1", &reps, 2), "the cut is settling");
        assert!(r.at(350, "n1", &reps, 3));
        assert!(r.throughout(0, 99, "n1", &reps, 3));
        assert!(!r.throughout(0, 100, "n1", &reps, 3));
        assert!(!r.throughout(90, 400, "n2", &reps, 3));
        assert!(r.throughout(90, 400, "n2", &reps, 2));
        let p = [Interval {
            start_ns: 0,
            end_ns: 10,
            fault: Fault::Partition {
                minority: s(&["n1"]),
                majority: s(&["n2", "n3"]),
            },
        }];
        let r = Reach::new(&p, 0);
        assert!(!r.at(5, "n2", &reps, 3) && r.at(5, "n2", &reps, 2));
        assert!(!r.at(5, "n1", &reps, 2) && r.at(5, "n1", &reps, 1));
    }

    #[test]
    fn availability_counts_only_operations_whose_quorum_was_reachable() {
        let iv = [Interval {
            start_ns: 100,
            end_ns: 200,
            fault: Fault::Partition {
                minority: s(&["n1"]),
                majority: s(&["n2", "n3"]),
            },
        }];
        let reach = Reach::new(&iv, 0);
        let mut replicas = BTreeMap::new();
        replicas.insert(
            ("exp-r2w2".to_string(), "k".to_string()),
            s(&["n1", "n2", "n3"]),
        );
        let mut unknown_key = op("n2", 0, 10, Outcome::Fail);
        unknown_key.key = "other".into();
        let mut final_read = op("n2", 0, 10, Outcome::Fail);
        final_read.final_read = true;
        let ops = [
            op("n1", 0, 50, Outcome::Ok),
            op("n1", 90, 110, Outcome::Info), // the partition began meanwhile
            op("n1", 120, 130, Outcome::Fail), // the minority side
            op("n2", 120, 130, Outcome::Ok),
            op("n3", 120, 130, Outcome::Fail), // a majority, and still failed
            unknown_key,
            final_read,
        ];
        let a = availability(&ops, &reach, &replicas, 3);
        assert_eq!(
            a["exp-r2w2"],
            Availability {
                reachable: 3,
                ok: 2
            }
        );
        assert_eq!(a["exp-r2w2"].ratio(), Some(2.0 / 3.0));
        assert_eq!(Availability::default().ratio(), None);
    }
}
