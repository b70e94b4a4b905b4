//! One Monte Carlo trial of a write followed by a read: the delays it
//! draws and, for each read and write quorum size, when the write commits,
//! how long the read takes, and from which `t` on the read sees the write.
//!
//! Two models share the draws (four legs per replica, in a fixed order):
//!
//! * **WARS**, the PBS paper's: the coordinator is no replica; the write
//!   goes to all N and commits at the W-th fastest `W_i + A_i`; the read
//!   goes to all N and returns the first R answers by `R_i + S_i`.
//! * **quorumkv**, this store's message flow (node/src/coordinator): the
//!   write is minted on one replica — the coordinator when it is one, else
//!   the first replica after a forward leg, with a reply leg back — which
//!   stores its copy first and only then replicates; the coordinator's own
//!   copy costs no network leg; the read asks exactly R replicas (its own
//!   copy first, inline, then the others in preference order), and one
//!   spare when the R answers take longer than the speculation delay.
//!   docs/EXPERIMENTS.md explains each difference.
//!
//! A read that starts `t` ms after the commit is *stale* when every
//! replica it takes an answer from received the read request before the
//! write: `commit + t + request_i < visible_i` for all of them. Since the
//! read set does not depend on `t` in either model, one number per trial,
//! `stale_until = min_i(visible_i - request_i) - commit`, answers for every
//! `t`: the read is consistent iff `t >= stale_until`.
//!
//! Everything here is pure: the caller passes the random source.

use quorumkv_faults::Delays;
use rand::Rng;

/// Where an operation's coordinator is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Coord {
    /// Replica `i` of the key (index in preference order).
    Replica(usize),
    /// A node that is no replica; `local` is the replica in its
    /// datacenter (only used with a remote delay).
    Other { local: usize },
}

/// Which node a read goes through, given the write's coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadCoordinator {
    /// Any node at random, whatever the write's (each operation's own
    /// client, as the PBS model has it).
    #[default]
    Any,
    /// Any node but the write's coordinator, at random (a reader that is
    /// not the writer: `qkv exp staleness` by default).
    Other,
    /// The write's coordinator (a client reading its own writes through
    /// the node it wrote to).
    Same,
}

impl ReadCoordinator {
    /// `any`, `other` or `same`.
    pub fn name(self) -> &'static str {
        match self {
            ReadCoordinator::Any => "any",
            ReadCoordinator::Other => "other",
            ReadCoordinator::Same => "same",
        }
    }
}

/// The floor and ceiling of the node's `speculative_retry: auto` delay,
/// in ms (node/src/coordinator/latency.rs).
pub const SPECULATE_AUTO_BOUNDS_MS: (f64, f64) = (1.0, 100.0);

/// The speculation delay a node running `speculative_retry: auto` settles
/// on under these delays: the p99 of one replica read call (its R and S
/// legs, their overshoot and two hops), within
/// [`SPECULATE_AUTO_BOUNDS_MS`] — what the node measures from its own
/// calls, drawn here from the same distributions (`draws` of them, seeded).
pub fn auto_speculate_ms(
    d: &Delays,
    hop_ms: f64,
    overshoot_ms: [f64; 4],
    draws: usize,
    rng: &mut impl Rng,
) -> f64 {
    let fixed = 2.0 * hop_ms + overshoot_ms[2] + overshoot_ms[3];
    let mut calls: Vec<f64> = (0..draws.max(1))
        .map(|_| d.legs.r.sample(rng) + d.legs.s.sample(rng) + fixed)
        .collect();
    calls.sort_by(f64::total_cmp);
    let p99 = calls[(calls.len() * 99 / 100).min(calls.len() - 1)];
    let (floor, ceiling) = SPECULATE_AUTO_BOUNDS_MS;
    // Whole microseconds, as the node keeps it, so that the printed
    // command (`--speculate-ms` with this figure) reproduces the output.
    ((p99 * 1000.0).round() / 1000.0).clamp(floor, ceiling)
}

/// The quorumkv model's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuorumkvModel {
    /// Nodes in the cluster: the coordinator is one of them at random,
    /// a replica with probability N / nodes.
    pub nodes: usize,
    /// A read asks a spare when its R answers take longer than this
    /// (infinite: never, a bucket's `speculative_retry: off`).
    pub speculate_ms: f64,
    /// The coordinator's own copy pays the legs too (a node told to delay
    /// its local replica operations with the same distributions).
    pub local_delays: bool,
    /// Where the read goes, given where the write went.
    pub read_coordinator: ReadCoordinator,
    /// A fixed cost added to every internode message, ms: what a real
    /// call costs beyond its injected leg (the RPC, the replica's work).
    pub hop_ms: f64,
    /// A fixed one-way cost between the client and a coordinator, ms: the
    /// acknowledgement's way back and the read's way there delay the read
    /// by twice this after the commit, and both latencies grow by it.
    pub client_ms: f64,
    /// How much longer than drawn each injected delay runs, per leg (W,
    /// A, R, S), ms: a node's timer wakes late (docs/EXPERIMENTS.md,
    /// "Fault injection", Precision). Added to every leg, the
    /// coordinator's own included.
    pub overshoot_ms: [f64; 4],
}

/// What one trial says for one (R, W).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Outcome {
    /// Write latency: when the coordinator answers the client.
    pub commit: f64,
    /// Read latency: when the R-th answer arrives.
    pub read: f64,
    /// The read is consistent iff it starts at least this long after the
    /// commit (negative: consistent at once).
    pub stale_until: f64,
    /// From this `t` on, every answer the read takes has the write; in
    /// between, the answers disagree and read repair runs.
    pub all_fresh_from: f64,
    /// The replicas whose acknowledgements committed the write (bit i).
    pub write_set: u128,
    /// The replicas whose answers the read took.
    pub read_set: u128,
}

/// One trial's draws and scratch space, reused from trial to trial so
/// that a trial allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct Trial {
    pub n: usize,
    pub w: Vec<f64>,
    pub a: Vec<f64>,
    pub r: Vec<f64>,
    pub s: Vec<f64>,
    /// quorumkv: the forward leg to the minting replica and its reply.
    pub forward: f64,
    pub reply: f64,
    pub write_coord: Coord,
    pub read_coord: Coord,
    /// quorumkv: the extra delay between datacenters (0: one datacenter).
    pub remote: f64,
    // Derived by `prepare_*`.
    /// WARS: replicas by `w + a`; quorumkv: by acknowledgement time.
    write_order: Vec<usize>,
    /// WARS: replicas by `r + s`; quorumkv: the order reads ask in.
    read_order: Vec<usize>,
    /// When the write reaches each replica, from the write's start.
    visible: Vec<f64>,
    /// quorumkv: when each replica's acknowledgement reaches the minter.
    ack: Vec<f64>,
    /// quorumkv scratch: (answer time, request arrival, replica) of a read.
    answers: Vec<(f64, f64, usize)>,
}

/// Sorts `idx` by `key`, ties by index: insertion sort, the fastest for
/// the handful of replicas a key has, and stable so ties keep preference
/// order.
fn sort_by_key(idx: &mut [usize], key: impl Fn(usize) -> f64) {
    for i in 1..idx.len() {
        let v = idx[i];
        let kv = key(v);
        let mut j = i;
        while j > 0 && key(idx[j - 1]) > kv {
            idx[j] = idx[j - 1];
            j -= 1;
        }
        idx[j] = v;
    }
}

fn mask(set: impl Iterator<Item = usize>) -> u128 {
    set.fold(0, |m, i| m | 1 << i)
}

impl Trial {
    /// Scratch for `n` replicas (`1..=128`).
    pub fn new(n: usize) -> Trial {
        Trial {
            n,
            w: vec![0.0; n],
            a: vec![0.0; n],
            r: vec![0.0; n],
            s: vec![0.0; n],
            forward: 0.0,
            reply: 0.0,
            write_coord: Coord::Other { local: 0 },
            read_coord: Coord::Other { local: 0 },
            remote: 0.0,
            write_order: (0..n).collect(),
            read_order: (0..n).collect(),
            visible: vec![0.0; n],
            ack: vec![0.0; n],
            answers: Vec::with_capacity(n),
        }
    }

    fn draw_legs<R: Rng + ?Sized>(&mut self, d: &Delays, rng: &mut R) {
        for i in 0..self.n {
            self.w[i] = d.legs.w.sample(rng);
            self.a[i] = d.legs.a.sample(rng);
            self.r[i] = d.legs.r.sample(rng);
            self.s[i] = d.legs.s.sample(rng);
        }
    }

    /// Draws a WARS trial. With a remote delay, one local replica for the
    /// write and one for the read are drawn, and every other replica's
    /// legs of that operation get the delay (the paper's WAN setup).
    pub fn draw_wars<R: Rng + ?Sized>(&mut self, d: &Delays, rng: &mut R) {
        self.draw_legs(d, rng);
        if let Some(extra) = d.remote_ms {
            let (lw, lr) = (rng.random_range(0..self.n), rng.random_range(0..self.n));
            for i in 0..self.n {
                if i != lw {
                    self.w[i] += extra;
                    self.a[i] += extra;
                }
                if i != lr {
                    self.r[i] += extra;
                    self.s[i] += extra;
                }
            }
        }
        self.prepare_wars();
    }

    /// Orders the replicas for [`Trial::wars`].
    pub fn prepare_wars(&mut self) {
        let (w, a, r, s) = (&self.w, &self.a, &self.r, &self.s);
        sort_by_key(&mut self.write_order, |i| w[i] + a[i]);
        sort_by_key(&mut self.read_order, |i| r[i] + s[i]);
    }

    /// The WARS outcome for quorums `r` and `w` (after [`Trial::prepare_wars`]).
    pub fn wars(&self, r: usize, w: usize) -> Outcome {
        let wi = self.write_order[w - 1];
        let commit = self.w[wi] + self.a[wi];
        let ri = self.read_order[r - 1];
        let read_set = &self.read_order[..r];
        let (lo, hi) = read_set.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &i| {
            let v = self.w[i] - self.r[i];
            (lo.min(v), hi.max(v))
        });
        Outcome {
            commit,
            read: self.r[ri] + self.s[ri],
            stale_until: lo - commit,
            all_fresh_from: hi - commit,
            write_set: mask(self.write_order[..w].iter().copied()),
            read_set: mask(read_set.iter().copied()),
        }
    }

    /// Draws a quorumkv trial: the legs, a forward and a reply leg, and
    /// each operation's coordinator among `m.nodes` nodes (the first N
    /// being the replicas; the read's as `m.read_coordinator` says), with
    /// its datacenter when there is a remote delay.
    pub fn draw_quorumkv<R: Rng + ?Sized>(&mut self, d: &Delays, m: &QuorumkvModel, rng: &mut R) {
        self.draw_legs(d, rng);
        let [ow, oa, or, os] = m.overshoot_ms;
        if m.overshoot_ms != [0.0; 4] {
            for i in 0..self.n {
                self.w[i] += ow;
                self.a[i] += oa;
                self.r[i] += or;
                self.s[i] += os;
            }
        }
        self.forward = d.legs.w.sample(rng) + ow;
        self.reply = d.legs.a.sample(rng) + oa;
        let cw = rng.random_range(0..m.nodes);
        let cr = match m.read_coordinator {
            ReadCoordinator::Any => rng.random_range(0..m.nodes),
            // One of the other nodes - 1, numbered around the writer's; a
            // one-node cluster has no other (the predictor refuses it), so
            // the only node reads rather than an index past the cluster.
            ReadCoordinator::Other if m.nodes >= 2 => {
                let c = rng.random_range(0..m.nodes - 1);
                if c >= cw { c + 1 } else { c }
            }
            ReadCoordinator::Other => cw,
            ReadCoordinator::Same => cw,
        };
        let (lw, mut lr) = match d.remote_ms {
            Some(_) => (rng.random_range(0..self.n), rng.random_range(0..self.n)),
            None => (0, 0),
        };
        if m.read_coordinator == ReadCoordinator::Same {
            // The same node, so the same datacenter.
            lr = lw;
        }
        let coord = |c: usize, local| {
            if c < self.n {
                Coord::Replica(c)
            } else {
                Coord::Other { local }
            }
        };
        self.write_coord = coord(cw, lw);
        self.read_coord = coord(cr, lr);
        self.remote = d.remote_ms.unwrap_or(0.0);
        self.prepare_quorumkv(m);
    }

    /// The datacenter of a coordinator: each replica has its own, a
    /// coordinator that is no replica shares its local replica's.
    fn dc(c: Coord) -> usize {
        match c {
            Coord::Replica(i) => i,
            Coord::Other { local } => local,
        }
    }

    /// The extra delay of a message between datacenters `x` and `y`.
    fn between(&self, x: usize, y: usize) -> f64 {
        if x == y { 0.0 } else { self.remote }
    }

    /// Works out the write for [`Trial::quorumkv`]: when it reaches each
    /// replica and when each acknowledgement reaches the minter
    /// (node/src/coordinator/write.rs).
    pub fn prepare_quorumkv(&mut self, m: &QuorumkvModel) {
        let (minter, start) = match self.write_coord {
            Coord::Replica(i) => (i, 0.0),
            // Forwarded to the first replica in preference order.
            c @ Coord::Other { .. } => (0, self.forward + m.hop_ms + self.between(Self::dc(c), 0)),
        };
        let (lw, la) = if m.local_delays {
            (self.w[minter], self.a[minter])
        } else {
            (0.0, 0.0)
        };
        // The minter stores its copy, and only then sends the others theirs.
        self.visible[minter] = start + lw;
        let sent = start + lw + la;
        self.ack[minter] = sent;
        for j in (0..self.n).filter(|&j| j != minter) {
            let extra = self.between(minter, j) + m.hop_ms;
            self.visible[j] = sent + self.w[j] + extra;
            self.ack[j] = self.visible[j] + self.a[j] + extra;
        }
        let ack = &self.ack;
        sort_by_key(&mut self.write_order, |i| ack[i]);
        // Reads ask their own copy first, then the others in preference
        // order: with no other traffic every replica has as many calls
        // outstanding as the next (docs/EXPERIMENTS.md says why the
        // write's own calls never change what a read returns).
        self.read_order.clear();
        if let Coord::Replica(c) = self.read_coord {
            self.read_order.push(c);
        }
        let first = self.read_order.first().copied();
        self.read_order
            .extend((0..self.n).filter(|&i| Some(i) != first));
    }

    /// The quorumkv outcome for quorums `r` and `w` (after
    /// [`Trial::prepare_quorumkv`] with the same `m`).
    pub fn quorumkv(&mut self, r: usize, w: usize, m: &QuorumkvModel) -> Outcome {
        let mut commit = self.ack[self.write_order[w - 1]];
        if let c @ Coord::Other { .. } = self.write_coord {
            commit += self.reply + m.hop_ms + self.between(Self::dc(c), 0);
        }
        let rc = self.read_coord;
        let rdc = Self::dc(rc);
        // The own copy is read inline, before any request goes out.
        let local = match rc {
            Coord::Replica(c) if m.local_delays => (self.r[c], self.r[c] + self.s[c]),
            _ => (0.0, 0.0),
        };
        let asked_at = local.1;
        let mut answers = std::mem::take(&mut self.answers);
        let ask = |i: usize, at: f64| -> (f64, f64, usize) {
            if rc == Coord::Replica(i) {
                (local.1, local.0, i)
            } else {
                let extra = self.between(rdc, i) + m.hop_ms;
                let arrives = at + self.r[i] + extra;
                (arrives + self.s[i] + extra, arrives, i)
            }
        };
        answers.clear();
        answers.extend(self.read_order[..r].iter().map(|&i| ask(i, asked_at)));
        let by_time = |x: &(f64, f64, usize), y: &(f64, f64, usize)| x.0.total_cmp(&y.0);
        let rth = answers.iter().map(|x| x.0).fold(f64::MIN, f64::max);
        if rth > asked_at + m.speculate_ms && r < self.n {
            // Speculative retry: one spare, asked once.
            answers.push(ask(self.read_order[r], asked_at + m.speculate_ms));
            answers.sort_by(by_time);
            answers.truncate(r);
        }
        let read = answers.iter().map(|x| x.0).fold(f64::MIN, f64::max);
        let (lo, hi) = answers.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| {
            let v = self.visible[x.2] - x.1;
            (lo.min(v), hi.max(v))
        });
        let read_set = mask(answers.iter().map(|x| x.2));
        self.answers = answers;
        // In the coordinators' time: the write arrives at 0 and commits at
        // `commit`; the client hears it `client_ms` later and its read
        // arrives `client_ms` after it is sent.
        let c = m.client_ms;
        Outcome {
            commit: commit + 2.0 * c,
            read: read + 2.0 * c,
            stale_until: lo - commit - 2.0 * c,
            all_fresh_from: hi - commit - 2.0 * c,
            write_set: mask(self.write_order[..w].iter().copied()),
            read_set,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trial of `n` replicas with the given legs.
    fn trial(w: &[f64], a: &[f64], r: &[f64], s: &[f64]) -> Trial {
        let mut t = Trial::new(w.len());
        t.w = w.to_vec();
        t.a = a.to_vec();
        t.r = r.to_vec();
        t.s = s.to_vec();
        t
    }

    #[test]
    fn the_auto_speculation_delay_is_the_p99_of_a_read_call_within_its_bounds() {
        use quorumkv_faults::{Dist, Legs};
        use rand::SeedableRng as _;
        let c = |ms| Dist::constant(ms).expect("a valid delay");
        let legs = |r: Dist, s: Dist| Delays {
            legs: Legs {
                w: c(0.0),
                a: c(0.0),
                r,
                s,
            },
            remote_ms: None,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Uniform 0..10 each way: the sum's p99 is 10 * (2 - sqrt(0.02)) = 18.59.
        let u = || Dist::uniform(0.0, 10.0).expect("a valid delay");
        let d = legs(u(), u());
        let ms = auto_speculate_ms(&d, 0.0, [0.0; 4], 200_000, &mut rng);
        assert!((ms - 18.59).abs() < 0.1, "{ms}");
        // Fixed costs add; the bounds hold at both ends.
        let ms = auto_speculate_ms(&d, 1.0, [0.0, 0.0, 0.5, 0.5], 200_000, &mut rng);
        assert!((ms - 21.59).abs() < 0.1, "{ms}");
        let slow = legs(c(80.0), c(80.0));
        assert_eq!(auto_speculate_ms(&slow, 0.0, [0.0; 4], 10, &mut rng), 100.0);
        let fast = legs(c(0.1), c(0.1));
        assert_eq!(auto_speculate_ms(&fast, 0.0, [0.0; 4], 10, &mut rng), 1.0);
    }

    const FLOW: QuorumkvModel = QuorumkvModel {
        nodes: 3,
        speculate_ms: 100.0,
        local_delays: false,
        read_coordinator: ReadCoordinator::Any,
        hop_ms: 0.0,
        client_ms: 0.0,
        overshoot_ms: [0.0; 4],
    };

    #[test]
    fn wars_commits_at_the_w_th_acknowledgement_and_reads_the_r_fastest() {
        // Replica 2 gets the write late (W = 9); the read's fastest
        // answer is replica 2's (R + S = 2).
        let mut t = trial(
            &[1.0, 2.0, 9.0],
            &[1.0, 1.0, 1.0],
            &[3.0, 2.0, 1.0],
            &[3.0, 2.0, 1.0],
        );
        t.prepare_wars();
        let o = t.wars(1, 1);
        assert_eq!((o.commit, o.read), (2.0, 2.0));
        // Stale while commit + t + R_2 < W_2: 2 + t + 1 < 9, i.e. t < 6.
        assert_eq!(o.stale_until, 6.0);
        assert_eq!((o.write_set, o.read_set), (0b001, 0b100));
        let o = t.wars(2, 2);
        assert_eq!((o.commit, o.read), (3.0, 4.0));
        // Replica 1 (W 2, R 2) has it at once: 2 - 2 - 3 < 0.
        assert_eq!(o.stale_until, -3.0);
        assert_eq!(o.all_fresh_from, 9.0 - 1.0 - 3.0);
        assert_eq!((o.write_set, o.read_set), (0b011, 0b110));
    }

    #[test]
    fn a_replica_coordinator_mints_locally_and_answers_w_1_at_once() {
        let mut t = trial(&[5.0, 5.0, 5.0], &[1.0, 2.0, 3.0], &[1.0; 3], &[1.0; 3]);
        t.write_coord = Coord::Replica(1);
        t.read_coord = Coord::Replica(1);
        t.prepare_quorumkv(&FLOW);
        let o = t.quorumkv(1, 1, &FLOW);
        assert_eq!((o.commit, o.read), (0.0, 0.0));
        // Its own copy: stored before the commit, read inline.
        assert_eq!(o.stale_until, 0.0);
        assert_eq!((o.write_set, o.read_set), (0b010, 0b010));
        // W = 2: replica 0's acknowledgement (5 + 1) is the first remote one.
        let o = t.quorumkv(1, 2, &FLOW);
        assert_eq!(o.commit, 6.0);
        assert_eq!(o.write_set, 0b011);
    }

    #[test]
    fn a_read_through_another_replica_is_stale_until_the_write_reaches_it() {
        let mut t = trial(&[4.0, 7.0, 5.0], &[1.0; 3], &[1.0; 3], &[1.0; 3]);
        t.write_coord = Coord::Replica(0);
        t.read_coord = Coord::Replica(2);
        t.prepare_quorumkv(&FLOW);
        let o = t.quorumkv(1, 1, &FLOW);
        // Committed at 0 on replica 0; replica 2 has it at 5 and reads
        // itself with no leg: stale for t < 5.
        assert_eq!((o.commit, o.read, o.stale_until), (0.0, 0.0, 5.0));
        // R = 2 also asks replica 0 (the next in preference order), which
        // has had it since 0: request arrives at 0 + 1 after its own read.
        let o = t.quorumkv(2, 1, &FLOW);
        assert_eq!((o.read, o.stale_until), (2.0, -1.0));
        assert_eq!(o.all_fresh_from, 5.0);
        assert_eq!(o.read_set, 0b101);
    }

    #[test]
    fn a_write_through_a_node_that_is_no_replica_is_forwarded_to_the_first_replica() {
        let mut t = trial(
            &[9.0, 3.0, 4.0],
            &[1.0, 1.0, 2.0],
            &[1.0, 2.0, 3.0],
            &[1.0; 3],
        );
        t.forward = 2.0;
        t.reply = 0.5;
        t.write_coord = Coord::Other { local: 0 };
        t.read_coord = Coord::Other { local: 0 };
        t.prepare_quorumkv(&FLOW);
        let o = t.quorumkv(1, 1, &FLOW);
        // Replica 0 mints at 2 (its own W of 9 is unused) and answers the
        // coordinator after the reply leg.
        assert_eq!(o.commit, 2.5);
        // The read asks replica 0 first, which has it.
        assert_eq!((o.read, o.read_set), (2.0, 0b001));
        assert!(o.stale_until < 0.0);
        // W = 3: replica 2 acknowledges at 2 + 4 + 2.
        let o = t.quorumkv(1, 3, &FLOW);
        assert_eq!(o.commit, 8.0 + 0.5);
    }

    #[test]
    fn a_slow_read_asks_a_spare_after_the_speculation_delay() {
        let slow = QuorumkvModel {
            speculate_ms: 10.0,
            ..FLOW
        };
        let mut t = trial(&[1.0; 3], &[1.0; 3], &[50.0, 1.0, 1.0], &[50.0, 1.0, 1.0]);
        t.write_coord = Coord::Replica(2);
        t.read_coord = Coord::Other { local: 0 };
        t.prepare_quorumkv(&slow);
        let o = t.quorumkv(1, 1, &slow);
        // Replica 0 would answer at 100; the spare (replica 1) is asked at
        // 10 and answers at 12.
        assert_eq!((o.read, o.read_set), (12.0, 0b010));
        // Replica 1 has had the write since 1; the request arrives at 11.
        assert_eq!(o.stale_until, 1.0 - 11.0);
        // Without speculation the slow replica is waited for.
        let patient = QuorumkvModel {
            speculate_ms: 1000.0,
            ..FLOW
        };
        let o = t.quorumkv(1, 1, &patient);
        assert_eq!((o.read, o.read_set), (100.0, 0b001));
    }

    #[test]
    fn local_delays_make_the_coordinator_s_copy_pay_its_legs() {
        let m = QuorumkvModel {
            local_delays: true,
            ..FLOW
        };
        let mut t = trial(&[2.0, 3.0, 3.0], &[1.0; 3], &[0.5; 3], &[0.25; 3]);
        t.write_coord = Coord::Replica(0);
        t.read_coord = Coord::Replica(0);
        t.prepare_quorumkv(&m);
        let o = t.quorumkv(1, 1, &m);
        assert_eq!((o.commit, o.read), (3.0, 0.75));
        // Replication starts after the local write (2 + 1): replica 1 at 6.
        let o = t.quorumkv(1, 2, &m);
        assert_eq!(o.commit, 3.0 + 3.0 + 1.0);
    }

    #[test]
    fn fixed_hop_and_client_costs_delay_replication_and_the_read() {
        let m = QuorumkvModel {
            hop_ms: 0.5,
            client_ms: 0.25,
            overshoot_ms: [0.0; 4],
            ..FLOW
        };
        let mut t = trial(&[4.0, 7.0, 5.0], &[1.0; 3], &[1.0; 3], &[1.0; 3]);
        t.write_coord = Coord::Replica(0);
        t.read_coord = Coord::Replica(2);
        t.prepare_quorumkv(&m);
        let o = t.quorumkv(1, 1, &m);
        // The client hears the commit at 0.5 and reads replica 2's own
        // copy, which the write reaches at 5 + 0.5: stale for t < 5.
        assert_eq!((o.commit, o.read, o.stale_until), (0.5, 0.5, 5.0));
        // W = 2: replica 2 acknowledges at 5.5 + 1 + 0.5, heard at 7.5.
        let o = t.quorumkv(1, 2, &m);
        assert_eq!((o.commit, o.stale_until), (7.5, 5.5 - 7.0 - 0.5));
        // R = 2 asks replica 0 too, over the network: 1 + 0.5 each way.
        let o = t.quorumkv(2, 1, &m);
        assert_eq!(o.read, 3.0 + 0.5);
    }

    #[test]
    fn each_leg_runs_its_overshoot_longer_than_drawn() {
        use quorumkv_faults::{Delays, Legs};
        use rand::SeedableRng;
        let d = Delays {
            legs: Legs::every("const:1".parse().expect("dist")),
            remote_ms: None,
        };
        let m = QuorumkvModel {
            overshoot_ms: [0.5, 0.25, 0.125, 0.0],
            ..FLOW
        };
        let mut t = Trial::new(3);
        t.draw_quorumkv(&d, &m, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        assert_eq!((t.w.clone(), t.a.clone()), (vec![1.5; 3], vec![1.25; 3]));
        assert_eq!((t.r.clone(), t.s.clone()), (vec![1.125; 3], vec![1.0; 3]));
        assert_eq!((t.forward, t.reply), (1.5, 1.25));
    }

    #[test]
    fn wan_delays_messages_between_datacenters_only() {
        let mut t = trial(&[1.0; 3], &[1.0; 3], &[1.0; 3], &[1.0; 3]);
        t.remote = 75.0;
        t.write_coord = Coord::Replica(0);
        t.read_coord = Coord::Other { local: 1 };
        t.prepare_quorumkv(&FLOW);
        let o = t.quorumkv(1, 2, &FLOW);
        // Replica 0 to replica 1: 1 + 75 there, 1 + 75 back.
        assert_eq!(o.commit, 152.0);
        // The read's coordinator sits with replica 1 but asks replica 0
        // first (preference order knows no datacenters): 75 + 1 each way,
        // so at 100 ms it speculates on replica 1, which answers at 102.
        assert_eq!((o.read, o.read_set), (102.0, 0b010));
    }
}
