//! The gathering of a read: a plain state machine that the async read
//! path feeds with what happens — a replica's answer (its versions, a
//! digest of them, or its failure), the speculation timer, the deadline —
//! and that says, after each, whom to ask next, whether to keep waiting,
//! to answer, or to fail. Once answered it also says what the merge is,
//! which digests disagree with it, and which replicas to repair.
//!
//! The rules:
//! * the first `required` replicas of the read order are asked at once —
//!   the first for its versions, the others for digests when digests are
//!   on (`--read-digests`);
//! * whenever the replicas still asked cannot make `required` any more (a
//!   failure), or every answer so far is a digest, the next spare is asked
//!   for its versions; with no spare left and nobody to wait for, the read
//!   fails;
//! * when the speculation timer fires (an asked replica is slow), one
//!   spare is asked, once;
//! * the read is answered once `required` replicas answered and at least
//!   one of them with versions;
//! * the deadline fails it, counting whoever still had not answered.
//!
//! Nothing here waits, sends or reads storage.

use std::collections::VecDeque;

use super::tally::Shortfall;
use crate::cluster::NodeId;
use crate::failure::ReplicaFailure;
use crate::version::Dvvs;

/// What a replica answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// Its versions (`None`: it has none).
    Full(Option<Dvvs>),
    /// A digest of them (`None`: it has none).
    Digest(Option<u64>),
}

/// A replica to ask, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// For its versions.
    Versions(NodeId),
    /// For a digest of them.
    Digest(NodeId),
}

/// What the read should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Ask these replicas, then wait.
    Ask(Vec<Ask>),
    /// Wait for the replicas already asked.
    Wait,
    /// Enough replicas answered: merge and answer.
    Done,
    /// `required` answers can no longer come.
    Failed(Shortfall),
}

/// The answers of one read.
#[derive(Debug, Clone)]
pub struct Gather {
    required: usize,
    /// Replicas not asked yet, in read order.
    spares: VecDeque<NodeId>,
    waiting: Vec<NodeId>,
    full: Vec<(NodeId, Option<Dvvs>)>,
    digests: Vec<(NodeId, Option<u64>)>,
    failed: Vec<ReplicaFailure>,
    speculated: bool,
}

impl Gather {
    /// A read of `required` replicas among `order` (the read order); the
    /// first asks. With `digests`, all but the first ask for a digest.
    pub fn start(order: Vec<NodeId>, required: usize, digests: bool) -> (Gather, Vec<Ask>) {
        let mut spares: VecDeque<NodeId> = order.into();
        let mut asks = Vec::with_capacity(required);
        let mut waiting = Vec::with_capacity(required);
        for i in 0..required {
            let Some(n) = spares.pop_front() else { break };
            waiting.push(n.clone());
            asks.push(if i > 0 && digests {
                Ask::Digest(n)
            } else {
                Ask::Versions(n)
            });
        }
        let g = Gather {
            required,
            spares,
            waiting,
            full: Vec::new(),
            digests: Vec::new(),
            failed: Vec::new(),
            speculated: false,
        };
        (g, asks)
    }

    /// Replicas that answered (versions or digest).
    pub fn answered(&self) -> usize {
        self.full.len() + self.digests.len()
    }

    /// Replicas asked that have not answered.
    pub fn waiting(&self) -> &[NodeId] {
        &self.waiting
    }

    /// The next step from here.
    pub fn step(&mut self) -> Step {
        let mut asks = Vec::new();
        loop {
            if self.answered() >= self.required && !self.full.is_empty() {
                return Step::Done;
            }
            let short = self.answered() + self.waiting.len() < self.required
                || (self.waiting.is_empty() && self.full.is_empty());
            if !short {
                break;
            }
            match self.spares.pop_front() {
                Some(n) => {
                    self.waiting.push(n.clone());
                    asks.push(Ask::Versions(n));
                }
                None if self.waiting.is_empty() => {
                    return Step::Failed(self.shortfall());
                }
                None => break,
            }
        }
        if asks.is_empty() {
            Step::Wait
        } else {
            Step::Ask(asks)
        }
    }

    /// Replica `from` answered (or failed, with why). Answers from
    /// replicas not waited for are ignored.
    pub fn on_answer(&mut self, from: &str, answer: Result<Got, String>) -> Step {
        let Some(at) = self.waiting.iter().position(|n| **n == *from) else {
            return self.step();
        };
        let node = self.waiting.remove(at);
        match answer {
            Ok(Got::Full(o)) => self.full.push((node, o)),
            Ok(Got::Digest(d)) => self.digests.push((node, d)),
            Err(reason) => self.failed.push(ReplicaFailure {
                node: node.to_string(),
                reason,
            }),
        }
        self.step()
    }

    /// The replicas asked are slow: ask one spare for its versions (once
    /// per read).
    pub fn on_slow(&mut self) -> Step {
        if !self.speculated {
            self.speculated = true;
            if let Some(n) = self.spares.pop_front() {
                self.waiting.push(n.clone());
                return Step::Ask(vec![Ask::Versions(n)]);
            }
        }
        self.step()
    }

    /// The deadline passed before the read could answer: it fails, and
    /// everyone still asked counts as not answering.
    pub fn on_deadline(&mut self) -> Shortfall {
        self.failed
            .extend(self.waiting.drain(..).map(|node| ReplicaFailure {
                node: node.to_string(),
                reason: "no answer before the deadline".into(),
            }));
        self.shortfall()
    }

    fn shortfall(&self) -> Shortfall {
        Shortfall {
            required: self.required,
            acks: self.answered(),
            failed: self.failed.clone(),
        }
    }

    /// The only answer, taken, when it is the whole read: one replica
    /// answered with versions, none with a digest, nobody else is asked.
    /// Nothing can then be stale against it.
    pub fn take_single(&mut self) -> Option<Option<Dvvs>> {
        if self.full.len() == 1 && self.digests.is_empty() && self.waiting.is_empty() {
            return self.full.pop().map(|(_, o)| o);
        }
        None
    }

    /// The DVVSet merge of every answer with versions (`None`: none has
    /// any); with `lww`, resolved to the newest version.
    pub fn merged(&self, lww: bool) -> Option<Dvvs> {
        let mut answers = self.full.iter().filter_map(|(_, o)| o.as_ref());
        let first = answers.next()?;
        // Replicas usually agree: an answer equal to the merge so far adds
        // nothing (sync is idempotent), and comparing costs far less than
        // building the merge again.
        let mut merge: Option<Dvvs> = None;
        for o in answers {
            let so_far = merge.as_ref().unwrap_or(first);
            if o != so_far {
                merge = Some(so_far.sync(o));
            }
        }
        let mut m = merge.unwrap_or_else(|| first.clone());
        if lww {
            m.resolve_lww();
        }
        (!m.is_empty()).then_some(m)
    }

    /// The replicas whose digest differs from `merged`'s: their versions
    /// must be fetched before the read knows the merge.
    pub fn differing(&self, merged: Option<&Dvvs>) -> Vec<NodeId> {
        let digest = merged.map(Dvvs::digest);
        self.digests
            .iter()
            .filter(|(_, d)| *d != digest)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Adds the versions fetched from a replica whose digest differed
    /// (`None`: the fetch failed, so repair it with the merge).
    pub fn add_fetched(&mut self, from: NodeId, versions: Option<Dvvs>) {
        self.full.push((from, versions));
    }

    /// The replicas whose versions differ from `merged`: the ones to
    /// repair.
    pub fn stale(&self, merged: &Option<Dvvs>) -> Vec<NodeId> {
        self.full
            .iter()
            .filter(|(_, o)| o != merged)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Context, Timestamp, Value};

    /// A version of `v` written by actor `v`: versions of different
    /// values are concurrent, with distinct timestamps.
    fn object(v: &str) -> Dvvs {
        let mut o = Dvvs::new();
        o.update(
            &Context::default(),
            v,
            Value {
                data: v.as_bytes().to_vec(),
                content_type: "text/plain".into(),
                timestamp: Timestamp(u64::from(v.as_bytes()[0])),
                tombstone: false,
            },
        )
        .expect("a fresh dot");
        o
    }

    /// One event fed to a gather.
    #[derive(Clone, Copy)]
    enum E {
        /// Versions from a node.
        Full(&'static str),
        /// A digest from a node.
        Dig(&'static str),
        /// A failure.
        Fail(&'static str),
        /// The speculation timer.
        Slow,
    }

    /// A step in a table: `Ask(["v:a", "d:b"])`, `W`, `D`, `F(answered)`.
    #[derive(Debug, PartialEq)]
    enum S {
        Ask(Vec<String>),
        W,
        D,
        F(usize),
    }

    fn asks(a: &[Ask]) -> S {
        S::Ask(
            a.iter()
                .map(|a| match a {
                    Ask::Versions(n) => format!("v:{n}"),
                    Ask::Digest(n) => format!("d:{n}"),
                })
                .collect(),
        )
    }

    fn short(s: &Step) -> S {
        match s {
            Step::Ask(a) => asks(a),
            Step::Wait => S::W,
            Step::Done => S::D,
            Step::Failed(f) => S::F(f.acks),
        }
    }

    fn run(order: &[&str], required: usize, digests: bool, events: &[E]) -> Vec<S> {
        let (mut g, first) = Gather::start(
            order.iter().map(|s| NodeId::from(*s)).collect(),
            required,
            digests,
        );
        let mut out = vec![asks(&first), short(&g.step())];
        let v = Some(object("v"));
        for e in events {
            let s = match *e {
                E::Full(n) => g.on_answer(n, Ok(Got::Full(v.clone()))),
                E::Dig(n) => g.on_answer(n, Ok(Got::Digest(Some(1)))),
                E::Fail(n) => g.on_answer(n, Err("down".into())),
                E::Slow => g.on_slow(),
            };
            out.push(short(&s));
        }
        out
    }

    fn strs(v: &[NodeId]) -> Vec<&str> {
        v.iter().map(|n| &**n).collect()
    }

    fn ask(v: &[&str]) -> S {
        S::Ask(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_gather_asks_r_replicas_then_spares_and_answers_at_r() {
        use E::*;
        use S::{D, F, W};
        // (what, read order, r, digests, events, steps)
        type Case = (
            &'static str,
            &'static [&'static str],
            usize,
            bool,
            Vec<E>,
            Vec<S>,
        );
        let cases: Vec<Case> = vec![
            (
                "r=1: the first replica",
                &["a", "b", "c"],
                1,
                false,
                vec![Full("a")],
                vec![ask(&["v:a"]), W, D],
            ),
            (
                "r=2: two at once, done at the second",
                &["a", "b", "c"],
                2,
                false,
                vec![Full("b"), Full("a")],
                vec![ask(&["v:a", "v:b"]), W, W, D],
            ),
            (
                "r=2: a failure asks the spare",
                &["a", "b", "c"],
                2,
                false,
                vec![Full("a"), Fail("b"), Full("c")],
                vec![ask(&["v:a", "v:b"]), W, W, ask(&["v:c"]), D],
            ),
            (
                "r=2: two failures and one spare cannot make it",
                &["a", "b", "c"],
                2,
                false,
                vec![Fail("a"), Fail("b"), Full("c")],
                vec![ask(&["v:a", "v:b"]), W, ask(&["v:c"]), W, F(1)],
            ),
            (
                "r=2 with digests: the second asks for one",
                &["a", "b", "c"],
                2,
                true,
                vec![Dig("b"), Full("a")],
                vec![ask(&["v:a", "d:b"]), W, W, D],
            ),
            (
                "digests only: a spare is asked for versions",
                &["a", "b", "c"],
                2,
                true,
                vec![Fail("a"), Dig("b"), Full("c")],
                vec![ask(&["v:a", "d:b"]), W, ask(&["v:c"]), W, D],
            ),
            (
                "slow: one spare, once",
                &["a", "b", "c", "d"],
                2,
                false,
                vec![Full("a"), Slow, Slow, Full("c")],
                vec![ask(&["v:a", "v:b"]), W, W, ask(&["v:c"]), W, D],
            ),
            (
                "no spare for a slow read: keep waiting",
                &["a", "b"],
                2,
                false,
                vec![Slow, Full("a"), Full("b")],
                vec![ask(&["v:a", "v:b"]), W, W, W, D],
            ),
            (
                "an answer from a replica not asked is ignored",
                &["a", "b", "c"],
                1,
                false,
                vec![Full("c"), Full("a")],
                vec![ask(&["v:a"]), W, W, D],
            ),
            (
                "r above the replicas alive: fails at once when all fail",
                &["a"],
                2,
                false,
                vec![Full("a")],
                vec![ask(&["v:a"]), W, F(1)],
            ),
        ];
        for (what, order, r, digests, events, want) in cases {
            assert_eq!(run(order, r, digests, &events), want, "{what}");
        }
    }

    #[test]
    fn the_deadline_counts_the_silent_replicas_as_failed() {
        let (mut g, _) = Gather::start(vec!["a".into(), "b".into(), "c".into()], 3, false);
        g.on_answer("a", Ok(Got::Full(None)));
        g.on_answer("b", Err("refused".into()));
        let s = g.on_deadline();
        assert_eq!((s.required, s.acks), (3, 1));
        let nodes: Vec<&str> = s.failed.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(nodes, ["b", "c"]);
        assert!(g.waiting().is_empty());
    }

    #[test]
    fn the_merge_keeps_concurrent_versions_and_names_the_stale_replicas() {
        let (mut g, _) = Gather::start(vec!["a".into(), "b".into(), "c".into()], 3, false);
        let (x, y) = (object("x"), object("y"));
        g.on_answer("a", Ok(Got::Full(Some(x.clone()))));
        g.on_answer("b", Ok(Got::Full(Some(y.clone()))));
        assert_eq!(g.on_answer("c", Ok(Got::Full(None))), Step::Done);
        let merged = g.merged(false);
        assert_eq!(merged.as_ref().map(Dvvs::sibling_count), Some(2));
        assert_eq!(strs(&g.stale(&merged)), ["a", "b", "c"]);
        let lww = g.merged(true);
        assert_eq!(lww.as_ref().map(Dvvs::sibling_count), Some(1));
        // One replica holding the merge is not stale.
        let (mut g, _) = Gather::start(vec!["a".into(), "b".into()], 2, false);
        g.on_answer("a", Ok(Got::Full(Some(x.clone()))));
        g.on_answer("b", Ok(Got::Full(None)));
        let merged = g.merged(false);
        assert_eq!(merged, Some(x));
        assert_eq!(strs(&g.stale(&merged)), ["b"]);
    }

    #[test]
    fn digests_that_differ_from_the_merge_are_fetched_and_then_repaired() {
        let (mut g, _) = Gather::start(vec!["a".into(), "b".into(), "c".into()], 3, true);
        let x = object("x");
        g.on_answer("a", Ok(Got::Full(Some(x.clone()))));
        g.on_answer("b", Ok(Got::Digest(Some(x.digest()))));
        assert_eq!(g.on_answer("c", Ok(Got::Digest(None))), Step::Done);
        let merged = g.merged(false);
        assert_eq!(strs(&g.differing(merged.as_ref())), ["c"]);
        g.add_fetched("c".into(), None);
        assert_eq!(strs(&g.stale(&g.merged(false))), ["c"]);
    }

    #[test]
    fn a_single_answer_is_the_read_only_when_nothing_else_is_asked() {
        let (mut g, _) = Gather::start(vec!["a".into(), "b".into()], 1, false);
        g.on_answer("a", Ok(Got::Full(None)));
        assert_eq!(g.take_single(), Some(None));
        let (mut g, _) = Gather::start(vec!["a".into(), "b".into(), "c".into()], 1, false);
        g.on_slow();
        g.on_answer("a", Ok(Got::Full(None)));
        assert_eq!(g.take_single(), None, "a spare is still asked");
    }
}
