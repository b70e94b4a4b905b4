//! The acknowledgement tally of a write: a plain state machine that the
//! async write path feeds with what happens (an acknowledgement, a
//! replica's failure, the deadline) and that says, after each, whether the
//! write is acknowledged, still waiting, or failed — and why, with the
//! counts a 504 body carries.
//!
//! The replica that minted the write has stored it before replication
//! starts, so a tally starts with one acknowledgement. A write fails
//! *before* its deadline once every target has answered and fewer than
//! `required` acknowledged: waiting longer cannot change that.
//! Acknowledgements are counted once per node, and answers from nodes the
//! tally does not wait for are ignored, so a confused or duplicated
//! answer cannot push a write over its quorum.

use crate::cluster::NodeId;
use crate::failure::{QuorumError, ReplicaFailure};

/// What the write should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `required` acknowledgements: answer the client.
    Acknowledged {
        /// Acknowledgements so far (at least `required`).
        acks: usize,
    },
    /// Keep waiting for the targets that have not answered.
    Waiting,
    /// Every target answered and fewer than `required` acknowledged.
    Failed(Shortfall),
}

/// Why a write was not acknowledged: what a 504 body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// Acknowledgements needed.
    pub required: usize,
    /// Acknowledgements received (the write is stored on that many).
    pub acks: usize,
    /// The targets that failed or did not answer, and why.
    pub failed: Vec<ReplicaFailure>,
}

/// The tally of one write.
#[derive(Debug, Clone)]
pub struct Tally {
    required: usize,
    acks: usize,
    waiting: Vec<NodeId>,
    failed: Vec<ReplicaFailure>,
}

impl Shortfall {
    /// The 504 this shortfall answers, saying `message`.
    pub fn into_timeout(self, message: String) -> QuorumError {
        QuorumError::Timeout {
            required: self.required,
            acks: self.acks,
            message,
            failed: self.failed,
        }
    }
}

impl Tally {
    /// A write that needs `required` acknowledgements, has `acks` already
    /// (the minting replica's own copy), and waits for `targets`.
    pub fn new(required: usize, acks: usize, targets: Vec<NodeId>) -> Tally {
        Tally {
            required,
            acks,
            waiting: targets,
            failed: Vec::new(),
        }
    }

    /// Where the write stands.
    pub fn verdict(&self) -> Verdict {
        if self.acks >= self.required {
            Verdict::Acknowledged { acks: self.acks }
        } else if self.waiting.is_empty() {
            Verdict::Failed(self.shortfall())
        } else {
            Verdict::Waiting
        }
    }

    /// Target `from` answered: acknowledged (`Ok`) or failed (`Err`, with
    /// why). Answers from nodes not waited for are ignored.
    pub fn on_answer(&mut self, from: &str, answer: Result<(), String>) -> Verdict {
        let Some(at) = self.waiting.iter().position(|n| **n == *from) else {
            return self.verdict();
        };
        let node = self.waiting.remove(at);
        match answer {
            Ok(()) => self.acks += 1,
            Err(reason) => self.failed.push(ReplicaFailure {
                node: node.to_string(),
                reason,
            }),
        }
        self.verdict()
    }

    /// The deadline passed: unless already acknowledged, the write failed,
    /// and every target still waited for counts as not answering.
    pub fn on_deadline(&mut self) -> Verdict {
        if self.acks < self.required {
            self.failed
                .extend(self.waiting.drain(..).map(|node| ReplicaFailure {
                    node: node.to_string(),
                    reason: "no answer before the deadline".into(),
                }));
            return Verdict::Failed(self.shortfall());
        }
        self.verdict()
    }

    fn shortfall(&self) -> Shortfall {
        Shortfall {
            required: self.required,
            acks: self.acks,
            failed: self.failed.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event fed to a tally.
    #[derive(Clone, Copy)]
    enum E {
        Ack(&'static str),
        Fail(&'static str),
        Deadline,
    }

    /// What a verdict looks like in a table: `A(acks)`, `W`, `F(acks)`.
    #[derive(Debug, PartialEq)]
    enum V {
        A(usize),
        W,
        F(usize),
    }

    fn short(v: &Verdict) -> V {
        match v {
            Verdict::Acknowledged { acks } => V::A(*acks),
            Verdict::Waiting => V::W,
            Verdict::Failed(s) => V::F(s.acks),
        }
    }

    fn run(required: usize, targets: &[&str], events: &[E]) -> Vec<V> {
        let mut t = Tally::new(
            required,
            1,
            targets.iter().map(|s| NodeId::from(*s)).collect(),
        );
        let mut out = vec![short(&t.verdict())];
        for e in events {
            let v = match *e {
                E::Ack(n) => t.on_answer(n, Ok(())),
                E::Fail(n) => t.on_answer(n, Err("refused".into())),
                E::Deadline => t.on_deadline(),
            };
            out.push(short(&v));
        }
        out
    }

    #[test]
    fn a_tally_answers_at_the_wth_acknowledgement_and_fails_when_w_is_out_of_reach() {
        use E::*;
        use V::*;
        // (what, required, targets, events, verdicts)
        type Case = (
            &'static str,
            usize,
            &'static [&'static str],
            &'static [E],
            &'static [V],
        );
        let cases: &[Case] = &[
            (
                "w=1: the minting replica alone",
                1,
                &["b", "c"],
                &[],
                &[A(1)],
            ),
            ("w=2: one more", 2, &["b", "c"], &[Ack("b")], &[W, A(2)]),
            (
                "w=2: a failure, then an ack",
                2,
                &["b", "c"],
                &[Fail("b"), Ack("c")],
                &[W, W, A(2)],
            ),
            (
                "w=3: one failure makes it unreachable once all answered",
                3,
                &["b", "c"],
                &[Ack("b"), Fail("c")],
                &[W, W, F(2)],
            ),
            (
                "w=3: an early failure is not the end while another waits",
                3,
                &["b", "c"],
                &[Fail("b")],
                &[W, W],
            ),
            (
                "the deadline fails what is still short",
                3,
                &["b", "c"],
                &[Ack("b"), Deadline],
                &[W, W, F(2)],
            ),
            (
                "a duplicate acknowledgement counts once",
                3,
                &["b", "c"],
                &[Ack("b"), Ack("b"), Deadline],
                &[W, W, W, F(2)],
            ),
            (
                "an answer from a node not asked is ignored",
                2,
                &["b"],
                &[Ack("x"), Ack("b")],
                &[W, W, A(2)],
            ),
            (
                "a pending owner raises the bar: w=2 plus one",
                3,
                &["b", "c", "d"],
                &[Ack("b"), Ack("d")],
                &[W, W, A(3)],
            ),
            (
                "acknowledged stays acknowledged at the deadline",
                2,
                &["b", "c"],
                &[Ack("c"), Deadline],
                &[W, A(2), A(2)],
            ),
        ];
        for (what, required, targets, events, want) in cases {
            assert_eq!(run(*required, targets, events), *want, "{what}");
        }
    }

    #[test]
    fn a_shortfall_names_every_target_that_failed_or_never_answered() {
        let mut t = Tally::new(3, 1, vec!["b".into(), "c".into()]);
        t.on_answer("b", Err("disk full".into()));
        let Verdict::Failed(s) = t.on_deadline() else {
            panic!("short")
        };
        assert_eq!((s.required, s.acks), (3, 1));
        let reasons: Vec<(&str, &str)> = s
            .failed
            .iter()
            .map(|f| (f.node.as_str(), f.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [("b", "disk full"), ("c", "no answer before the deadline")]
        );
    }
}
