//! What happens to one message, decided from a node's [`Settings`] and a
//! random draw: the pure half of the node's fault injection
//! (`node/src/faults/`), which only sleeps, sends or swallows as told.
//!
//! * A **call** (a request and its answer) to a peer gets a [`CallPlan`]
//!   ([`plan_call`]): cut by the partition, lost, or sent — after a
//!   reordering hold and the request leg's delay (W for writes, R for
//!   reads), possibly twice — and its answer lost or delayed by the answer
//!   leg (A or S).
//! * A **gossip** message gets a [`Fate`] ([`plan_gossip`]): partitions
//!   and drops apply, delays do not.
//! * The coordinator's **own replica** operation gets its two legs'
//!   delays when [`Settings::local`] asks ([`plan_local`]).
//!
//! The draws come in a fixed order from the generator given, so a seeded
//! generator replays the same plans.

use rand::Rng;

use crate::settings::{Leg, LinkFaults, REORDER_HOLD_MS, Settings};

/// What becomes of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It is sent.
    Sent,
    /// The partition cuts it.
    Cut,
    /// It is lost (the drop probability).
    Dropped,
}

/// The plan of one call from this node to a peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallPlan {
    /// What becomes of the request.
    pub fate: Fate,
    /// Held back this long before anything else (reordering), ms.
    pub hold_ms: f64,
    /// The request leg's delay, ms (0 when the call has no leg or its leg
    /// has no distribution).
    pub request_ms: f64,
    /// A second copy of the request is delivered too.
    pub duplicate: bool,
    /// The answer is lost: the request is applied, the caller times out.
    pub answer_lost: bool,
    /// The answer leg's delay, ms.
    pub answer_ms: f64,
}

impl CallPlan {
    /// A call nothing happens to.
    pub const QUIET: CallPlan = CallPlan {
        fate: Fate::Sent,
        hold_ms: 0.0,
        request_ms: 0.0,
        duplicate: false,
        answer_lost: false,
        answer_ms: 0.0,
    };
}

/// Whether a draw from `rng` falls under probability `p` (no draw for 0).
fn chance<R: Rng + ?Sized>(p: f64, rng: &mut R) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

fn delay<R: Rng + ?Sized>(link: &LinkFaults, leg: Option<Leg>, rng: &mut R) -> f64 {
    leg.and_then(|l| link.leg(l)).map_or(0.0, |d| d.sample(rng))
}

/// Plans a call from `me` to `to`, whose request and answer travel the
/// legs `legs` (`(W, A)` for a write, `(R, S)` for a read, `None` for
/// other requests, which are never delayed).
pub fn plan_call<R: Rng + ?Sized>(
    s: &Settings,
    me: &str,
    to: &str,
    legs: Option<(Leg, Leg)>,
    rng: &mut R,
) -> CallPlan {
    if s.partition.as_ref().is_some_and(|p| p.cuts(me, to)) {
        return CallPlan {
            fate: Fate::Cut,
            ..CallPlan::QUIET
        };
    }
    let link = s.link_to(to);
    if chance(link.drop, rng) {
        return CallPlan {
            fate: Fate::Dropped,
            ..CallPlan::QUIET
        };
    }
    let hold_ms = if chance(link.reorder, rng) {
        REORDER_HOLD_MS
    } else {
        0.0
    };
    let request_ms = delay(link, legs.map(|l| l.0), rng);
    let duplicate = chance(link.dup, rng);
    let answer_lost = chance(link.drop, rng);
    let answer_ms = if answer_lost {
        0.0
    } else {
        delay(link, legs.map(|l| l.1), rng)
    };
    CallPlan {
        fate: Fate::Sent,
        hold_ms,
        request_ms,
        duplicate,
        answer_lost,
        answer_ms,
    }
}

/// Plans a gossip message from `me` to `to`: partitions and drops apply,
/// delays and duplicates do not.
pub fn plan_gossip<R: Rng + ?Sized>(s: &Settings, me: &str, to: &str, rng: &mut R) -> Fate {
    if s.partition.as_ref().is_some_and(|p| p.cuts(me, to)) {
        Fate::Cut
    } else if chance(s.link_to(to).drop, rng) {
        Fate::Dropped
    } else {
        Fate::Sent
    }
}

/// The delays (before, after) of an operation coordinator `me` runs on
/// its own replica over `legs`, when [`Settings::local`] asks for them:
/// the legs of `me`'s own entry in `peers`, else of `all_peers`.
pub fn plan_local<R: Rng + ?Sized>(
    s: &Settings,
    me: &str,
    legs: (Leg, Leg),
    rng: &mut R,
) -> Option<(f64, f64)> {
    if !s.local {
        return None;
    }
    let link = s.link_to(me);
    if link.leg(legs.0).is_none() && link.leg(legs.1).is_none() {
        return None;
    }
    Some((
        delay(link, Some(legs.0), rng),
        delay(link, Some(legs.1), rng),
    ))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::Dist;
    use crate::settings::Partition;

    const WA: Option<(Leg, Leg)> = Some((Leg::W, Leg::A));

    fn with_link(link: LinkFaults) -> Settings {
        Settings {
            all_peers: link,
            ..Settings::default()
        }
    }

    fn plans(s: &Settings, legs: Option<(Leg, Leg)>, n: usize, seed: u64) -> Vec<CallPlan> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| plan_call(s, "n1", "n2", legs, &mut rng))
            .collect()
    }

    /// `count` of `n` draws is within 5 standard errors of `p`.
    fn near(count: usize, n: usize, p: f64) -> bool {
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        ((count as f64 / n as f64) - p).abs() < 5.0 * sd + 1e-9
    }

    #[test]
    fn nothing_happens_without_faults() {
        assert!(
            plans(&Settings::default(), WA, 100, 1)
                .iter()
                .all(|p| *p == CallPlan::QUIET)
        );
    }

    #[test]
    fn a_partition_cuts_calls_and_gossip_whatever_the_other_faults() {
        let mut s = with_link(LinkFaults {
            w: Some(Dist::constant(5.0).expect("valid")),
            ..LinkFaults::default()
        });
        let mut p: Partition = "n1|n2".parse().expect("valid");
        p.one_way = true;
        s.partition = Some(p);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(plan_call(&s, "n1", "n2", WA, &mut rng).fate, Fate::Cut);
        assert_eq!(plan_gossip(&s, "n1", "n2", &mut rng), Fate::Cut);
        // One way: n2 still reaches n1, with the delays.
        let back = plan_call(&s, "n2", "n1", WA, &mut rng);
        assert_eq!((back.fate, back.request_ms), (Fate::Sent, 5.0));
        assert_eq!(plan_gossip(&s, "n2", "n1", &mut rng), Fate::Sent);
    }

    #[test]
    fn drops_duplicates_and_reorders_follow_their_probabilities() {
        let s = with_link(LinkFaults {
            drop: 0.1,
            dup: 0.25,
            reorder: 0.05,
            ..LinkFaults::default()
        });
        let n = 100_000;
        let p = plans(&s, WA, n, 7);
        let dropped = p.iter().filter(|c| c.fate == Fate::Dropped).count();
        assert!(near(dropped, n, 0.1), "{dropped}");
        // Of the requests sent: duplicates, holds, and answers lost with
        // the same drop probability.
        let sent: Vec<&CallPlan> = p.iter().filter(|c| c.fate == Fate::Sent).collect();
        let dup = sent.iter().filter(|c| c.duplicate).count();
        let held = sent.iter().filter(|c| c.hold_ms == REORDER_HOLD_MS).count();
        let lost = sent.iter().filter(|c| c.answer_lost).count();
        assert!(near(dup, sent.len(), 0.25), "{dup}");
        assert!(near(held, sent.len(), 0.05), "{held}");
        assert!(near(lost, sent.len(), 0.1), "{lost}");
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let gossip = (0..n)
            .filter(|_| plan_gossip(&s, "n1", "n2", &mut rng) == Fate::Dropped)
            .count();
        assert!(near(gossip, n, 0.1), "{gossip}");
    }

    #[test]
    fn leg_delays_are_drawn_from_their_distributions() {
        let s = with_link(LinkFaults {
            w: Some(Dist::exp(4.0).expect("valid")),
            a: Some(Dist::uniform(1.0, 3.0).expect("valid")),
            r: Some(Dist::constant(7.0).expect("valid")),
            ..LinkFaults::default()
        });
        let n = 50_000;
        let writes = plans(&s, WA, n, 3);
        let mean = |f: &dyn Fn(&CallPlan) -> f64| writes.iter().map(f).sum::<f64>() / n as f64;
        // Exp(4): sd of the mean 4/sqrt(n) ≈ 0.018.
        assert!((mean(&|c| c.request_ms) - 4.0).abs() < 0.1);
        assert!((mean(&|c| c.answer_ms) - 2.0).abs() < 0.02);
        assert!(writes.iter().all(|c| (1.0..=3.0).contains(&c.answer_ms)));
        // A read travels R and S; S has no distribution here.
        let reads = plans(&s, Some((Leg::R, Leg::S)), 10, 3);
        assert!(
            reads
                .iter()
                .all(|c| c.request_ms == 7.0 && c.answer_ms == 0.0)
        );
        // Other requests are never delayed.
        assert!(plans(&s, None, 10, 3).iter().all(|c| *c == CallPlan::QUIET));
        // The same seed replays the same plans.
        assert_eq!(plans(&s, WA, 100, 9), plans(&s, WA, 100, 9));
        assert_ne!(plans(&s, WA, 100, 9), plans(&s, WA, 100, 10));
    }

    #[test]
    fn the_own_replica_pays_its_legs_only_when_asked() {
        let mut s = with_link(LinkFaults {
            w: Some(Dist::constant(3.0).expect("valid")),
            a: Some(Dist::constant(1.0).expect("valid")),
            ..LinkFaults::default()
        });
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(plan_local(&s, "n1", (Leg::W, Leg::A), &mut rng), None);
        s.local = true;
        assert_eq!(
            plan_local(&s, "n1", (Leg::W, Leg::A), &mut rng),
            Some((3.0, 1.0))
        );
        // No read legs are set: nothing to pay.
        assert_eq!(plan_local(&s, "n1", (Leg::R, Leg::S), &mut rng), None);
        // Its own entry in `peers` wins over `all_peers`.
        s.peers.insert(
            "n1".into(),
            LinkFaults {
                w: Some(Dist::constant(9.0).expect("valid")),
                ..LinkFaults::default()
            },
        );
        assert_eq!(
            plan_local(&s, "n1", (Leg::W, Leg::A), &mut rng),
            Some((9.0, 0.0))
        );
    }
}
