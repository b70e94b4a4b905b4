//! The nemesis's schedule (pure): which fault happens when, drawn from a
//! seed so that the same seed, nodes and duration give the same schedule.
//!
//! Faults come one at a time, each for a few seconds, separated by quiet
//! spells; the kinds asked for take turns (in an order drawn from the
//! seed), so that a short run still sees each of them. The last fault ends
//! a quiet spell before the run does. The runner (`run.rs`) carries the
//! schedule out and records each fault's start and end as nemesis events,
//! from which `availability.rs` judges reachability.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A kind of fault, as `--nemesis` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A minority of the nodes cut from the rest, both ways.
    Partition,
    /// One node's messages to the others cut; theirs still reach it.
    OneWay,
    /// kill -9 of a node, started again at the fault's end.
    Kill,
    /// SIGSTOP of a node, SIGCONT at the end.
    Pause,
    /// A node's wall clock set off by the skew, back at the end.
    Skew,
    /// kill -9 of a node whose data directory is deleted before it is
    /// started again at the fault's end.
    LoseDisk,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Skew,
        FaultKind::LoseDisk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Skew => "skew",
            FaultKind::LoseDisk => "lose-disk",
        }
    }

    /// Faults that need the processes (a local cluster), not only
    /// `/internal/faults`.
    pub fn needs_processes(self) -> bool {
        matches!(
            self,
            FaultKind::Kill | FaultKind::Pause | FaultKind::LoseDisk
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is no fault: use {}",
                    FaultKind::ALL.map(FaultKind::name).join(", ")
                )
            })
    }
}

/// `--nemesis partition,kill`: the kinds, each once, in the order given;
/// `none` or an empty list is no fault at all.
pub fn parse_kinds(text: &str) -> Result<Vec<FaultKind>, String> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if word == "none" {
            continue;
        }
        let k: FaultKind = word.parse()?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

/// One fault with its targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// `minority` and the other nodes cannot talk to each other.
    Partition {
        minority: Vec<String>,
        majority: Vec<String>,
    },
    /// Messages from `from` to `to` are cut (requests and gossip `from`
    /// starts); `to`'s messages to `from` still go through.
    OneWay {
        from: Vec<String>,
        to: Vec<String>,
    },
    Kill {
        node: String,
    },
    Pause {
        node: String,
    },
    Skew {
        node: String,
        offset_ms: i64,
    },
    LoseDisk {
        node: String,
    },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::OneWay { .. } => FaultKind::OneWay,
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Skew { .. } => FaultKind::Skew,
            Fault::LoseDisk { .. } => FaultKind::LoseDisk,
        }
    }

    /// Nodes that serve nothing while the fault lasts.
    pub fn down(&self) -> &[String] {
        match self {
            Fault::Kill { node } | Fault::Pause { node } | Fault::LoseDisk { node } => {
                std::slice::from_ref(node)
            }
            _ => &[],
        }
    }

    /// Whether a request from `from` to `to` is cut while the fault lasts.
    pub fn cuts(&self, from: &str, to: &str) -> bool {
        let has = |v: &[String], n: &str| v.iter().any(|x| x == n);
        match self {
            Fault::Partition { minority, majority } => {
                (has(minority, from) && has(majority, to))
                    || (has(majority, from) && has(minority, to))
            }
            Fault::OneWay { from: a, to: b } => has(a, from) && has(b, to),
            _ => false,
        }
    }

    /// One line for people: `partition n1 | n2,n3`, `kill n2`.
    pub fn describe(&self) -> String {
        match self {
            Fault::Partition { minority, majority } => {
                format!("partition {} | {}", minority.join(","), majority.join(","))
            }
            Fault::OneWay { from, to } => format!("one-way {} -> {}", from.join(","), to.join(",")),
            Fault::Kill { node } => format!("kill {node}"),
            Fault::Pause { node } => format!("pause {node}"),
            Fault::Skew { node, offset_ms } => format!("skew {node} {offset_ms:+} ms"),
            Fault::LoseDisk { node } => format!("lose-disk {node}"),
        }
    }
}

/// A planned fault: from `start` to `end` after the run began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: Duration,
    pub end: Duration,
    pub fault: Fault,
}

/// What the schedule is drawn from.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub kinds: Vec<FaultKind>,
    /// Node ids, in a fixed order (the draws index into it).
    pub nodes: Vec<String>,
    pub duration: Duration,
    pub seed: u64,
    /// How long each fault lasts, drawn uniformly between the two.
    pub fault_len: (Duration, Duration),
    /// The quiet spell before each fault (and the least after the last).
    pub quiet_len: (Duration, Duration),
    /// A skewed clock is off by this much, ahead or behind (drawn).
    pub skew_ms: i64,
}

impl Plan {
    /// Defaults for a run of `duration`: faults of 4–10 s apart by 2–5 s
    /// of quiet, clocks off by 30 s.
    pub fn new(kinds: Vec<FaultKind>, nodes: Vec<String>, duration: Duration, seed: u64) -> Plan {
        Plan {
            kinds,
            nodes,
            duration,
            seed,
            fault_len: (Duration::from_secs(4), Duration::from_secs(10)),
            quiet_len: (Duration::from_secs(2), Duration::from_secs(5)),
            skew_ms: 30_000,
        }
    }
}

fn draw(rng: &mut ChaCha8Rng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    let ms = rng.random_range(lo.as_millis()..=hi.as_millis());
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The schedule of `plan`: non-overlapping windows in time order, every
/// one inside the run and followed by at least the shortest quiet spell.
pub fn schedule(plan: &Plan) -> Vec<Window> {
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let mut out = Vec::new();
    if plan.kinds.is_empty() || plan.nodes.is_empty() {
        return out;
    }
    let mut order = plan.kinds.clone();
    order.shuffle(&mut rng);
    let mut t = draw(&mut rng, plan.quiet_len);
    let mut turn = 0usize;
    loop {
        let len = draw(&mut rng, plan.fault_len);
        let kind = order[turn % order.len()];
        turn += 1;
        if t + len + plan.quiet_len.0 > plan.duration {
            break;
        }
        let fault = target(&mut rng, kind, &plan.nodes, plan.skew_ms);
        out.push(Window {
            start: t,
            end: t + len,
            fault,
        });
        t += len + draw(&mut rng, plan.quiet_len);
    }
    out
}

fn target(rng: &mut ChaCha8Rng, kind: FaultKind, nodes: &[String], skew_ms: i64) -> Fault {
    let node = nodes[rng.random_range(0..nodes.len())].clone();
    let split = |rng: &mut ChaCha8Rng| {
        let mut shuffled = nodes.to_vec();
        shuffled.shuffle(rng);
        // The largest minority: a majority stays on the other side.
        let k = (nodes.len().saturating_sub(1) / 2).max(1);
        let mut minority = shuffled[..k.min(shuffled.len())].to_vec();
        let mut majority = shuffled[k.min(shuffled.len())..].to_vec();
        minority.sort();
        majority.sort();
        (minority, majority)
    };
    match kind {
        FaultKind::Partition => {
            let (minority, majority) = split(rng);
            Fault::Partition { minority, majority }
        }
        FaultKind::OneWay => {
            let mut to: Vec<String> = nodes.iter().filter(|n| **n != node).cloned().collect();
            to.sort();
            Fault::OneWay {
                from: vec![node],
                to,
            }
        }
        FaultKind::Kill => Fault::Kill { node },
        FaultKind::Pause => Fault::Pause { node },
        FaultKind::Skew => Fault::Skew {
            node,
            offset_ms: if rng.random_bool(0.5) {
                skew_ms
            } else {
                -skew_ms
            },
        },
        FaultKind::LoseDisk => Fault::LoseDisk { node },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(k: usize) -> Vec<String> {
        (1..=k).map(|i| format!("n{i}")).collect()
    }

    fn plan(seed: u64, secs: u64) -> Plan {
        Plan::new(
            FaultKind::ALL.to_vec(),
            nodes(5),
            Duration::from_secs(secs),
            seed,
        )
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let a = schedule(&plan(7, 300));
        assert_eq!(a, schedule(&plan(7, 300)));
        assert_ne!(a, schedule(&plan(8, 300)));
        assert!(a.len() >= 20, "{} faults in 300 s", a.len());
    }

    #[test]
    fn every_kind_asked_for_takes_its_turn() {
        let s = schedule(&plan(3, 90));
        let mut kinds: Vec<FaultKind> = s.iter().map(|w| w.fault.kind()).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds, FaultKind::ALL.to_vec());
    }

    #[test]
    fn no_kind_no_fault() {
        let mut p = plan(1, 60);
        p.kinds.clear();
        assert!(schedule(&p).is_empty());
        assert_eq!(parse_kinds("none"), Ok(vec![]));
    }

    #[test]
    fn kinds_parse_by_name_and_unknown_ones_are_named() {
        assert_eq!(
            parse_kinds("kill, one-way,kill"),
            Ok(vec![FaultKind::Kill, FaultKind::OneWay])
        );
        let err = parse_kinds("kill,flood").expect_err("unknown");
        assert!(err.starts_with("`flood` is no fault"), "{err}");
    }

    #[test]
    fn partitions_cut_both_ways_and_one_way_cuts_only_its_direction() {
        let p = Fault::Partition {
            minority: vec!["n1".into()],
            majority: vec!["n2".into(), "n3".into()],
        };
        assert!(p.cuts("n1", "n2") && p.cuts("n3", "n1"));
        assert!(!p.cuts("n2", "n3"));
        let o = Fault::OneWay {
            from: vec!["n1".into()],
            to: vec!["n2".into(), "n3".into()],
        };
        assert!(o.cuts("n1", "n2"));
        assert!(!o.cuts("n2", "n1"));
        assert_eq!(Fault::Kill { node: "n2".into() }.down(), ["n2"]);
        assert!(o.down().is_empty());
    }

    proptest! {
        #[test]
        fn windows_are_ordered_apart_inside_the_run_and_leave_a_majority(
            seed in any::<u64>(), secs in 0u64..400, k in 1usize..8,
        ) {
            let mut p = plan(seed, secs);
            p.nodes = nodes(k);
            let s = schedule(&p);
            let mut last_end = Duration::ZERO;
            for w in &s {
                prop_assert!(w.start >= last_end + p.quiet_len.0);
                prop_assert!(w.end > w.start);
                prop_assert!(w.end - w.start >= p.fault_len.0 && w.end - w.start <= p.fault_len.1);
                prop_assert!(w.end + p.quiet_len.0 <= p.duration);
                if let Fault::Partition { minority, majority } = &w.fault {
                    prop_assert!(k < 2 || minority.len() < majority.len() || k == 2);
                    prop_assert_eq!(minority.len() + majority.len(), k);
                }
                last_end = w.end;
            }
        }
    }
}
