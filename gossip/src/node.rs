//! The gossip state machine: push-pull Scuttlebutt with a phi-accrual
//! failure detector, messages and time in, messages and events out.
//!
//! # What it does
//!
//! Every node keeps a map `node id → EndpointState` (see [`crate::state`])
//! and owns one entry, its own. Once per [`Config::interval`] it starts a
//! *round*: it bumps its heartbeat and opens an exchange with one random
//! live peer — and, with a small probability, also with a seed and with a
//! node believed down (Cassandra's rules, see [`Config::seed_probability`]).
//! An exchange reconciles the two maps completely (up to the size caps):
//!
//! 1. SYN: the initiator sends one digest `(node, generation, max version)`
//!    per node it knows.
//! 2. ACK: the peer compares each digest with its own copy and answers with
//!    the deltas the initiator lacks (*push*) and digests of what it lacks
//!    itself (*requests*); nodes the initiator did not mention at all are
//!    sent in full.
//! 3. ACK2: the initiator answers the requests (*pull*, from the peer's
//!    point of view).
//!
//! # Why it converges, and in how many rounds
//!
//! Correctness (Scuttlebutt, van Renesse et al., "Efficient Reconciliation
//! and Flow Control for Anti-Entropy Protocols", 2008): versions of one
//! node within a generation are totally ordered by its single writer, and
//! deltas are sent as version-ordered prefixes, so "I hold `(g, v)`" means
//! "I hold every entry of generation `g` up to `v`". One digest per node is
//! therefore an exact summary, the comparison finds exactly what each side
//! lacks, and merging is a join (commutative, associative, idempotent). Any
//! two nodes that exchange end with the union of their knowledge; as long
//! as the "who talks to whom" graph stays connected over time, every
//! update reaches everyone.
//!
//! Speed: consider one new fact known to one node. Each round every node
//! initiates one exchange with a uniformly random peer, and an exchange
//! moves the fact in *both* directions. While few nodes know it, every
//! informed node pushes it to its own target and is also picked by about
//! one uninformed initiator that pulls it: the informed set roughly triples
//! per synchronous round. When most know it, an uninformed node stays so
//! only if its own target and everyone who picked it were uninformed: the
//! uninformed fraction squares each round. Hence Karp et al.'s bound for
//! push-pull, `log₃ n + O(log log n)` rounds — about 7–9 for n = 1000 —
//! against `log₂ n + ln n` (≈ 17 at n = 1000) for push alone, whose tail is
//! slow because the last few uninformed nodes must be *hit* by chance.
//! Real nodes are not synchronous: their rounds start at unrelated phases
//! and a message takes milliseconds, so a node informed early in a round
//! relays the fact in the same round. [`crate::sim`] models exactly that,
//! and `examples/simulate.rs` prints the measured distribution.
//!
//! # Membership life cycle
//!
//! * A node starts knowing only itself and [`Config::seeds`]; with no live
//!   peer it gossips to a seed every round, and the seed's ACK hands it the
//!   whole cluster (over several rounds if it exceeds the size cap).
//! * A node first learned of is `Joined` but not yet live: it becomes `Up`
//!   when its heartbeat is seen to advance (stale gossip about a dead node
//!   must not make it look alive). It goes `Down` when phi crosses the
//!   threshold, and `Up` again when its heartbeat or generation advances.
//! * A higher generation (a restart) replaces everything (`Restarted`).
//! * A node announcing [`Status::Left`] is kept for
//!   [`Config::left_quarantine`], then `Removed`; for as long again, gossip
//!   about that generation is ignored so that slow peers cannot resurrect
//!   it. A higher generation (the node came back) is accepted.
//!
//! # Implementation caveats
//!
//! * `tick` does work once per interval; call it at [`Node::next_round_at`].
//!   Liveness is re-evaluated once per round, so conviction has a
//!   granularity of one interval.
//! * A dead node that never announced `left` stays in the map (as `down`)
//!   until it returns; there is no "assassinate" yet.
//! * Requests and deltas beyond the caps wait for later rounds; SYNs are
//!   never split (one digest per known node).
//! * Events accumulate until [`Node::drain_events`]; drain after each call.

mod exchange;

use std::{collections::HashMap, time::Duration};

use rand::{Rng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

use crate::{
    Config, Error,
    failure_detector::ArrivalWindow,
    protocol::{Delta, Digest, Event, Message, Outgoing},
    state::{Addr, AppState, EndpointState, Generation, NodeId, Status, Version, Versioned},
};

/// Liveness as this node sees a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    /// Known from gossip, heartbeat not yet seen to advance.
    Unknown,
    Up,
    Down,
}

#[derive(Clone, Debug)]
struct Member {
    id: NodeId,
    state: EndpointState,
    liveness: Liveness,
    /// Heartbeat arrivals, for phi.
    window: ArrivalWindow,
    /// When this node learned that the member announced `left`.
    left_since: Option<Duration>,
    /// Copy of the announced gossip address (read every round).
    addr: Option<Addr>,
}

impl Member {
    fn new(id: NodeId, state: EndpointState, liveness: Liveness) -> Self {
        Self {
            id,
            state,
            liveness,
            window: ArrivalWindow::default(),
            left_since: None,
            addr: None,
        }
    }

    /// Refreshes the copies of announced states after they changed.
    fn refresh(&mut self, now: Duration) {
        self.addr = self.state.gossip_addr().cloned();
        self.left_since = match self.state.status() {
            Some(Status::Left) => Some(self.left_since.unwrap_or(now)),
            _ => None,
        };
    }
}

/// A read-only view of one member, as the driver shows it
/// (`/cluster/members`).
#[derive(Clone, Debug)]
pub struct MemberView<'a> {
    /// The member's id.
    pub id: &'a NodeId,
    /// Everything known about it.
    pub state: &'a EndpointState,
    /// Up according to the failure detector (always true for the local
    /// node; false until a heartbeat is seen to advance).
    pub live: bool,
    /// Phi as of the last `tick` or `handle` (0 for the local node).
    pub phi: f64,
    /// Whether this is the local node.
    pub is_local: bool,
}

impl MemberView<'_> {
    /// The member's generation.
    pub fn generation(&self) -> Generation {
        self.state.generation()
    }
    /// The member's heartbeat version.
    pub fn heartbeat(&self) -> Version {
        self.state.heartbeat()
    }
    /// Announced status, if known.
    pub fn status(&self) -> Option<Status> {
        self.state.status()
    }
    /// Announced tokens.
    pub fn tokens(&self) -> &[u64] {
        self.state.tokens()
    }
    /// Announced gossip address, if known.
    pub fn gossip_addr(&self) -> Option<&Addr> {
        self.state.gossip_addr()
    }
    /// Announced HTTP address, if known.
    pub fn http_addr(&self) -> Option<&str> {
        self.state.http_addr()
    }
}

/// What one side wants sent for one member (by index), before packing.
struct Want {
    member: usize,
    since: Version,
    staleness: u64,
}

/// The gossip state machine of one node. Generic over the RNG so tests and
/// simulations seed it; the driver passes a `ChaCha8Rng` seeded from the OS.
pub struct Node<R = ChaCha8Rng> {
    config: Config,
    addr: Addr,
    /// The local per-generation version counter.
    version: Version,
    /// Members in discovery order; index 0 is the local node, always.
    members: Vec<Member>,
    /// Member index by id (only looked up, never iterated: determinism
    /// does not depend on the hasher).
    index: HashMap<NodeId, usize>,
    /// Removed `left` nodes: ignore gossip of generations ≤ this until then.
    quarantine: HashMap<NodeId, (Generation, Duration)>,
    events: Vec<Event>,
    rng: R,
    next_round: Option<Duration>,
    now: Duration,
}

const LOCAL: usize = 0;

impl<R: Rng> Node<R> {
    /// A node that knows only itself. `generation` must grow across
    /// restarts of `id` (persist a counter, or use seconds since the epoch);
    /// `addr` is its gossip address, announced as [`AppState::GossipAddr`].
    pub fn new(
        id: NodeId,
        addr: Addr,
        generation: Generation,
        config: Config,
        rng: R,
    ) -> Result<Self, Error> {
        config.validate()?;
        let mut node = Self {
            config,
            addr: addr.clone(),
            version: 0,
            members: vec![Member::new(
                id.clone(),
                EndpointState::new(generation),
                Liveness::Up,
            )],
            index: HashMap::from([(id, LOCAL)]),
            quarantine: HashMap::new(),
            events: Vec::new(),
            rng,
            next_round: None,
            now: Duration::ZERO,
        };
        node.set_local(AppState::GossipAddr(addr))?;
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.members[LOCAL].id
    }

    /// This node's gossip address.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's own state.
    pub fn local(&self) -> &EndpointState {
        &self.members[LOCAL].state
    }

    /// Changes one of this node's application states (bumps the version;
    /// a no-op if the value is unchanged). Refuses values too large for a
    /// message.
    pub fn set_local(&mut self, value: AppState) -> Result<(), Error> {
        let limit = self.config.max_message_bytes / 2;
        let size = value.wire_size();
        if size > limit {
            return Err(Error::StateTooLarge { size, limit });
        }
        if self.local().get(&value.key()).map(|v| &v.value) == Some(&value) {
            return Ok(());
        }
        if let AppState::GossipAddr(a) = &value {
            self.addr = a.clone();
        }
        self.version += 1;
        let version = self.version;
        self.members[LOCAL].state.put(Versioned { version, value });
        Ok(())
    }

    /// When `tick` will next start a round.
    pub fn next_round_at(&self) -> Duration {
        self.next_round.unwrap_or(self.now)
    }

    /// Advances time. At most once per interval (the first call at once)
    /// this starts a round: heartbeat, failure detection, expiry of `left`
    /// nodes, and SYNs to send. Between rounds it returns nothing.
    pub fn tick(&mut self, now: Duration) -> Vec<Outgoing> {
        self.now = self.now.max(now);
        if self.next_round.is_some_and(|t| now < t) {
            return Vec::new();
        }
        let interval = self.config.interval;
        let mut next = self.next_round.unwrap_or(now) + interval;
        if next <= now {
            next = now + interval; // late: skip, do not burst
        }
        self.next_round = Some(next);

        self.version += 1;
        let version = self.version;
        self.members[LOCAL].state.beat(version);
        self.check_liveness(now);
        self.expire_left(now);
        self.start_round()
    }

    /// Handles a message from the peer at `from`. Replies (an ACK to a
    /// SYN, an ACK2 to an ACK) are addressed to `from` exactly, so a
    /// connection-oriented driver may pass any label for the connection
    /// and send the replies back on it. Messages naming another cluster are
    /// refused: nothing is applied or answered, and [`Event::Refused`] is
    /// emitted.
    pub fn handle(&mut self, from: &Addr, msg: Message, now: Duration) -> Vec<Outgoing> {
        self.now = self.now.max(now);
        if msg.cluster() != self.config.cluster_name {
            tracing::warn!(%from, cluster = msg.cluster(), "refused gossip from another cluster");
            self.events.push(Event::Refused {
                from: from.clone(),
                cluster: msg.cluster().to_string(),
            });
            return Vec::new();
        }
        match msg {
            Message::Syn { digests, .. } => self.on_syn(from, &digests),
            Message::Ack {
                states, requests, ..
            } => {
                self.apply_all(states, now);
                self.on_requests(from, &requests)
            }
            Message::Ack2 { states, .. } => {
                self.apply_all(states, now);
                Vec::new()
            }
        }
    }

    /// Adds a member this node knew before it restarted (its last-known
    /// state, as saved by the caller), so that a member that is down when
    /// this node comes back is still a member — down until its heartbeat is
    /// seen to advance, exactly like a member first heard of through
    /// gossip — and is passed on to peers that never heard of it. Ignored
    /// for this node itself, for a member already known, and for one in
    /// the `left` quarantine.
    pub fn remember(&mut self, state: Delta) {
        if self.index.contains_key(&state.node) {
            return;
        }
        let now = self.now;
        self.apply(state, now);
    }

    /// Takes the membership events produced since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Every known member, the local node included, in id order.
    pub fn members(&self) -> impl Iterator<Item = MemberView<'_>> {
        let mut all: Vec<&Member> = self.members.iter().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.into_iter().map(|m| self.view(m))
    }

    /// One member, if known.
    pub fn member(&self, id: &NodeId) -> Option<MemberView<'_>> {
        self.index.get(id).map(|&i| self.view(&self.members[i]))
    }

    /// Whether `id` is known and up.
    pub fn is_live(&self, id: &NodeId) -> bool {
        self.index
            .get(id)
            .is_some_and(|&i| self.members[i].liveness == Liveness::Up)
    }

    /// The `(generation, max version)` known of `id`: its digest.
    pub fn digest_of(&self, id: &NodeId) -> Option<(Generation, Version)> {
        let m = &self.members[*self.index.get(id)?];
        Some((m.state.generation(), m.state.max_version()))
    }

    /// The heartbeat arrival window of `id` (for its mean and phi).
    pub fn arrivals(&self, id: &NodeId) -> Option<&ArrivalWindow> {
        self.index.get(id).map(|&i| &self.members[i].window)
    }

    fn view<'a>(&'a self, m: &'a Member) -> MemberView<'a> {
        let is_local = m.id == *self.id();
        let fd = &self.config.failure_detector;
        MemberView {
            id: &m.id,
            state: &m.state,
            live: m.liveness == Liveness::Up,
            phi: if is_local {
                0.0
            } else {
                m.window.phi(self.now, fd)
            },
            is_local,
        }
    }

    fn check_liveness(&mut self, now: Duration) {
        let fd = &self.config.failure_detector;
        for m in self.members.iter_mut().skip(1) {
            if m.liveness != Liveness::Up {
                continue;
            }
            let phi = m.window.phi(now, fd);
            if fd.convicts(phi) {
                m.liveness = Liveness::Down;
                tracing::info!(node = %m.id, phi, "convicted: down");
                self.events.push(Event::Down {
                    node: m.id.clone(),
                    phi,
                });
            }
        }
    }

    fn expire_left(&mut self, now: Duration) {
        let hold = self.config.left_quarantine;
        self.quarantine.retain(|_, (_, until)| *until > now);
        let mut i = 1;
        while i < self.members.len() {
            if self.members[i].left_since.is_none_or(|t| t + hold > now) {
                i += 1;
                continue;
            }
            let m = self.members.swap_remove(i);
            self.index.remove(&m.id);
            if let Some(moved) = self.members.get(i) {
                self.index.insert(moved.id.clone(), i);
            }
            self.quarantine
                .insert(m.id.clone(), (m.state.generation(), now + hold));
            tracing::info!(node = %m.id, "left node forgotten");
            self.events.push(Event::Removed { node: m.id });
        }
    }

    fn is_quarantined(&self, id: &NodeId, generation: Generation) -> bool {
        !self.quarantine.is_empty()
            && self
                .quarantine
                .get(id)
                .is_some_and(|(g, _)| generation <= *g)
    }

    /// Picks this round's targets (Cassandra's rules) and builds the SYNs.
    fn start_round(&mut self) -> Vec<Outgoing> {
        let (mut live, mut down) = (Vec::new(), Vec::new());
        for m in self.members.iter().skip(1) {
            if m.left_since.is_some() {
                continue;
            }
            let Some(addr) = &m.addr else { continue };
            if *addr == self.addr {
                continue;
            }
            match m.liveness {
                Liveness::Up => live.push(addr),
                Liveness::Down | Liveness::Unknown => down.push(addr),
            }
        }
        let seeds: Vec<&Addr> = self
            .config
            .seeds
            .iter()
            .filter(|s| **s != self.addr)
            .collect();
        let rng = &mut self.rng;
        let mut targets: Vec<Addr> = live
            .choose_multiple(rng, self.config.fanout)
            .map(|a| (*a).clone())
            .collect();
        let to_seed = targets.iter().any(|t| seeds.contains(&t));
        if !down.is_empty() {
            let p = self
                .config
                .down_probability
                .unwrap_or(down.len() as f64 / (live.len() + 1) as f64);
            if rng.random::<f64>() < p
                && let Some(a) = down.choose(rng)
            {
                targets.push((*a).clone());
            }
        }
        if !seeds.is_empty() && (!to_seed || live.len() < seeds.len()) {
            let p = if live.is_empty() {
                1.0
            } else {
                self.config
                    .seed_probability
                    .unwrap_or(seeds.len() as f64 / (live.len() + down.len()) as f64)
            };
            if rng.random::<f64>() < p
                && let Some(s) = seeds.choose(rng)
                && !targets.contains(s)
            {
                targets.push((*s).clone());
            }
        }
        if targets.is_empty() {
            return Vec::new();
        }
        let digests: Vec<Digest> = self
            .members
            .iter()
            .map(|m| Digest {
                node: m.id.clone(),
                generation: m.state.generation(),
                version: m.state.max_version(),
            })
            .collect();
        tracing::trace!(
            targets = targets.len(),
            digests = digests.len(),
            "gossip round"
        );
        let cluster = self.config.cluster_name.clone();
        targets
            .into_iter()
            .map(|to| Outgoing {
                to,
                msg: Message::Syn {
                    cluster: cluster.clone(),
                    digests: digests.clone(),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Delta;
    use rand::SeedableRng;

    fn node(id: &str, seeds: &[&str]) -> Node {
        let mut c = Config::new("t");
        c.seeds = seeds.iter().map(|s| Addr::from(*s)).collect();
        let rng = ChaCha8Rng::seed_from_u64(id.len() as u64);
        let mut n = Node::new(id.into(), format!("{id}:1").into(), 100, c, rng).expect("valid");
        n.set_local(AppState::Status(Status::Normal)).expect("fits");
        n
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Runs one full exchange initiated by `a`'s first SYN.
    fn exchange(a: &mut Node, b: &mut Node, now: Duration) -> (usize, usize, usize) {
        let syn = a.tick(now).pop().expect("a gossips");
        let (a_addr, b_addr) = (a.addr().clone(), b.addr().clone());
        let ack = b.handle(&a_addr, syn.msg, now).pop().expect("b answers");
        let (states, requests) = match &ack.msg {
            Message::Ack {
                states, requests, ..
            } => (states.len(), requests.len()),
            m => panic!("expected ACK, got {m:?}"),
        };
        let ack2 = a.handle(&b_addr, ack.msg, now).pop();
        let ack2_states = ack2.map_or(0, |m| {
            let Message::Ack2 { states, .. } = &m.msg else {
                panic!("expected ACK2")
            };
            let n = states.len();
            assert!(
                b.handle(&a_addr, m.msg, now).is_empty(),
                "ACK2 ends the exchange"
            );
            n
        });
        (states, requests, ack2_states)
    }

    #[test]
    fn one_exchange_reconciles_both_sides() {
        let mut a = node("a", &["b:1"]);
        let mut b = node("b", &[]);
        let (states, requests, ack2) = exchange(&mut a, &mut b, secs(0.0));
        // b pushes its own state and requests a's (unknown to it); a answers.
        assert_eq!((states, requests, ack2), (1, 1, 1));
        assert_eq!(a.digest_of(b.id()), b.digest_of(b.id()));
        assert_eq!(b.digest_of(a.id()), a.digest_of(a.id()));
        assert_eq!(
            b.member(a.id()).map(|m| m.status()),
            Some(Some(Status::Normal))
        );
        let ev = a.drain_events();
        assert!(
            matches!(&ev[..], [Event::Joined { node, generation: 100 }, ..] if node.as_str() == "b"),
            "{ev:?}"
        );
    }

    #[test]
    fn a_remembered_member_is_down_until_it_beats_and_is_passed_on() {
        let mut a = node("a", &["b:1"]);
        let mut b = node("b", &[]);
        let mut c = node("c", &[]);
        c.tick(secs(0.0));
        let saved = |n: &Node| Delta {
            node: n.id().clone(),
            generation: n.local().generation(),
            heartbeat: Some(n.local().heartbeat()),
            states: n.local().states().to_vec(),
        };
        a.remember(saved(&c));
        assert!(!a.is_live(c.id()), "remembered, not seen beating");
        assert_eq!(
            a.member(c.id()).map(|m| m.status()),
            Some(Some(Status::Normal))
        );
        // Already known, or itself: nothing changes.
        let before = a.digest_of(c.id());
        a.remember(Delta {
            states: Vec::new(),
            ..saved(&c)
        });
        assert_eq!(a.digest_of(c.id()), before);
        let mine = a.digest_of(a.id());
        a.remember(Delta {
            node: a.id().clone(),
            generation: 1,
            heartbeat: Some(1),
            states: Vec::new(),
        });
        assert_eq!(a.digest_of(a.id()), mine);
        // Gossip passes it on to a peer that never heard of it.
        exchange(&mut a, &mut b, secs(1.0));
        assert_eq!(b.digest_of(c.id()), a.digest_of(c.id()));
    }

    #[test]
    fn a_discovered_node_is_up_only_once_its_heartbeat_advances() {
        let mut a = node("a", &["b:1"]);
        let mut b = node("b", &[]);
        exchange(&mut a, &mut b, secs(0.0));
        assert!(!a.is_live(b.id()), "known, not yet seen beating");
        b.tick(secs(0.5));
        exchange(&mut a, &mut b, secs(1.0));
        assert!(a.is_live(b.id()));
        assert!(
            a.drain_events()
                .iter()
                .any(|e| matches!(e, Event::Up { .. }))
        );
    }

    #[test]
    fn in_sync_peers_exchange_only_heartbeats() {
        let mut a = node("a", &["b:1"]);
        let mut b = node("b", &[]);
        exchange(&mut a, &mut b, secs(0.0));
        b.tick(secs(0.5));
        let syn = a.tick(secs(1.0)).pop().expect("syn");
        let ack = b.handle(a.addr(), syn.msg, secs(1.0)).pop().expect("ack");
        let Message::Ack {
            states, requests, ..
        } = &ack.msg
        else {
            panic!()
        };
        // b's heartbeat is newer; a's heartbeat is newer: one small delta each way.
        assert_eq!(states.len(), 1);
        assert!(states[0].states.is_empty() && states[0].heartbeat.is_some());
        assert_eq!(requests.len(), 1);
    }

    #[test]
    fn a_lonely_node_gossips_to_a_seed_every_round_and_a_seed_alone_stays_quiet() {
        let mut a = node("a", &["s:1", "t:1"]);
        for r in 0..5 {
            let out = a.tick(secs(r as f64));
            assert_eq!(out.len(), 1);
            assert!(["s:1", "t:1"].contains(&out[0].to.as_str()));
        }
        let mut s = node("s", &["s:1"]);
        assert!(s.tick(secs(0.0)).is_empty());
    }

    #[test]
    fn tick_starts_one_round_per_interval() {
        let mut a = node("a", &["s:1"]);
        assert_eq!(a.tick(secs(0.0)).len(), 1);
        assert!(a.tick(secs(0.5)).is_empty());
        assert_eq!(a.next_round_at(), secs(1.0));
        assert_eq!(a.tick(secs(1.0)).len(), 1);
        // Late by 3 intervals: one round, no burst.
        assert_eq!(a.tick(secs(4.2)).len(), 1);
        assert!(a.tick(secs(4.3)).is_empty());
        assert_eq!(a.local().heartbeat(), a.local().max_version());
    }

    #[test]
    fn deltas_beyond_the_cap_wait_for_later_rounds_most_out_of_date_first() {
        let mut c = Config::new("t");
        c.max_states_per_message = 3;
        let rng = ChaCha8Rng::seed_from_u64(1);
        let mut big = Node::new("big".into(), "big:1".into(), 1, c.clone(), rng).expect("valid");
        // big learns 10 nodes; one of them has many more versions.
        let states: Vec<Delta> = (0..10u64)
            .map(|i| Delta {
                node: format!("m{i}").into(),
                generation: 1,
                heartbeat: Some(if i == 7 { 500 } else { 2 + i }),
                states: vec![Versioned {
                    version: 1,
                    value: AppState::GossipAddr(format!("m{i}:1").into()),
                }],
            })
            .collect();
        big.handle(
            &"x:1".into(),
            Message::Ack2 {
                cluster: "t".into(),
                states,
            },
            secs(0.0),
        );
        let rng = ChaCha8Rng::seed_from_u64(2);
        let mut small = Node::new("small".into(), "small:1".into(), 1, c, rng).expect("valid");
        let mut rounds = 0;
        while small.members().count() < 12 {
            let syn = Message::Syn {
                cluster: "t".into(),
                digests: small
                    .members()
                    .map(|m| Digest {
                        node: m.id.clone(),
                        generation: m.generation(),
                        version: m.state.max_version(),
                    })
                    .collect(),
            };
            let ack = big.handle(small.addr(), syn, secs(0.0)).pop().expect("ack");
            let Message::Ack { states, .. } = &ack.msg else {
                panic!()
            };
            assert!(states.len() <= 3);
            if rounds == 0 {
                assert_eq!(
                    states[0].node.as_str(),
                    "m7",
                    "the most out-of-date goes first"
                );
            }
            small.handle(big.addr(), ack.msg, secs(0.0));
            rounds += 1;
            assert!(rounds < 10);
        }
        assert_eq!(rounds, 4, "11 states, 3 per message");
    }

    #[test]
    fn a_truncated_delta_is_a_version_prefix() {
        let mut c = Config::new("t");
        c.max_message_bytes = 4096;
        let rng = ChaCha8Rng::seed_from_u64(1);
        let mut a = Node::new("a".into(), "a:1".into(), 1, c, rng).expect("valid");
        for k in 0..6 {
            let v: String = "v".repeat(1500);
            a.set_local(AppState::Custom(format!("k{k}").into(), v.into()))
                .expect("fits");
        }
        let syn = Message::Syn {
            cluster: "t".into(),
            digests: vec![],
        };
        let ack = a.handle(&"b:1".into(), syn, secs(0.0)).pop().expect("ack");
        assert!(ack.msg.wire_size() <= 4096);
        let Message::Ack { states, .. } = ack.msg else {
            panic!()
        };
        let versions: Vec<u64> = states[0].states.iter().map(|s| s.version).collect();
        assert_eq!(
            versions,
            vec![1, 2, 3],
            "gossip addr, then the two custom values that fit"
        );
    }

    #[test]
    fn oversized_local_states_are_refused() {
        let mut a = node("a", &[]);
        let huge: String = "x".repeat(1 << 20);
        let err = a.set_local(AppState::Custom("k".into(), huge.into()));
        assert!(matches!(err, Err(Error::StateTooLarge { .. })));
    }

    #[test]
    fn gossip_about_ourselves_is_never_applied() {
        let mut a = node("a", &[]);
        let before = a.local().clone();
        let fake = Delta {
            node: "a".into(),
            generation: 999,
            heartbeat: Some(1),
            states: vec![Versioned {
                version: 1,
                value: AppState::Status(Status::Left),
            }],
        };
        a.handle(
            &"x:1".into(),
            Message::Ack2 {
                cluster: "t".into(),
                states: vec![fake],
            },
            secs(0.0),
        );
        assert_eq!(a.local(), &before);
    }

    #[test]
    fn duplicate_and_unknown_requests_are_harmless() {
        let mut a = node("a", &[]);
        let d = Digest {
            node: "a".into(),
            generation: 0,
            version: 0,
        };
        let ghost = Digest {
            node: "ghost".into(),
            generation: 1,
            version: 1,
        };
        let ack = Message::Ack {
            cluster: "t".into(),
            states: vec![],
            requests: vec![d.clone(), d, ghost],
        };
        let out = a.handle(&"x:1".into(), ack, secs(0.0));
        let Some(Message::Ack2 { states, .. }) = out.first().map(|o| &o.msg) else {
            panic!()
        };
        assert_eq!(states.len(), 1);
    }
}
