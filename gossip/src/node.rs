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

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use rand::{Rng, seq::IndexedRandom, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::{
    Config, Error,
    failure_detector::FailureDetector,
    protocol::{Delta, Digest, Event, Message, Outgoing, str_len},
    state::{Addr, AppState, EndpointState, Entry, Generation, NodeId, Status, Version},
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
    state: EndpointState,
    liveness: Liveness,
    /// When this node learned that the member announced `left`.
    left_since: Option<Duration>,
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
}

/// What one side wants sent for one node, before packing.
struct Want {
    node: NodeId,
    since: Version,
    staleness: u64,
}

/// The gossip state machine of one node. Generic over the RNG so tests and
/// simulations seed it; the driver passes a `ChaCha8Rng` seeded from the OS.
pub struct Node<R = ChaCha8Rng> {
    config: Config,
    id: NodeId,
    addr: Addr,
    /// The local per-generation version counter.
    version: Version,
    members: BTreeMap<NodeId, Member>,
    fd: FailureDetector,
    /// Removed `left` nodes: ignore gossip of generations ≤ this until then.
    quarantine: BTreeMap<NodeId, (Generation, Duration)>,
    events: Vec<Event>,
    rng: R,
    next_round: Option<Duration>,
    now: Duration,
}

impl<R: Rng> Node<R> {
    /// A node that knows only itself. `generation` must grow across
    /// restarts of `id` (persist a counter, or use seconds since the epoch);
    /// `addr` is its gossip address, announced as [`AppState::GossipAddr`].
    pub fn new(id: NodeId, addr: Addr, generation: Generation, config: Config, rng: R) -> Result<Self, Error> {
        config.validate()?;
        let fd = FailureDetector::new(config.failure_detector.clone());
        let mut node = Self {
            config,
            id: id.clone(),
            addr: addr.clone(),
            version: 0,
            members: BTreeMap::new(),
            fd,
            quarantine: BTreeMap::new(),
            events: Vec::new(),
            rng,
            next_round: None,
            now: Duration::ZERO,
        };
        let member = Member {
            state: EndpointState::new(generation),
            liveness: Liveness::Up,
            left_since: None,
        };
        node.members.insert(id, member);
        node.set_local(AppState::GossipAddr(addr))?;
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
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
        &self.local_member().state
    }

    fn local_member(&self) -> &Member {
        self.members.get(&self.id).expect("the local node is always a member")
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
        let id = self.id.clone();
        if let Some(m) = self.members.get_mut(&id) {
            m.state.put(crate::state::Versioned { version, value });
        }
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
        let mut next = self.next_round.map_or(now, |t| t) + interval;
        if next <= now {
            next = now + interval; // late: skip, do not burst
        }
        self.next_round = Some(next);

        self.version += 1;
        let (id, version) = (self.id.clone(), self.version);
        if let Some(m) = self.members.get_mut(&id) {
            m.state.beat(version);
        }
        self.check_liveness(now);
        self.expire_left(now);
        self.start_round()
    }

    /// Handles a message from the peer at `from` (where replies go).
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
            Message::Ack { states, requests, .. } => {
                self.apply_all(states, now);
                self.on_requests(from, &requests)
            }
            Message::Ack2 { states, .. } => {
                self.apply_all(states, now);
                Vec::new()
            }
        }
    }

    /// Takes the membership events produced since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Every known member, the local node included, in id order.
    pub fn members(&self) -> impl Iterator<Item = MemberView<'_>> {
        self.members.iter().map(|(id, m)| self.view(id, m))
    }

    /// One member, if known.
    pub fn member(&self, id: &NodeId) -> Option<MemberView<'_>> {
        self.members.get_key_value(id).map(|(id, m)| self.view(id, m))
    }

    /// Whether `id` is known and up.
    pub fn is_live(&self, id: &NodeId) -> bool {
        self.member(id).is_some_and(|m| m.live)
    }

    /// The `(generation, max version)` known of `id`: its digest.
    pub fn digest_of(&self, id: &NodeId) -> Option<(Generation, Version)> {
        self.members
            .get(id)
            .map(|m| (m.state.generation(), m.state.max_version()))
    }

    /// The failure detector (for phi and arrival statistics).
    pub fn failure_detector(&self) -> &FailureDetector {
        &self.fd
    }

    fn view<'a>(&'a self, id: &'a NodeId, m: &'a Member) -> MemberView<'a> {
        let is_local = *id == self.id;
        MemberView {
            id,
            state: &m.state,
            live: m.liveness == Liveness::Up,
            phi: if is_local { 0.0 } else { self.fd.phi(id, self.now) },
            is_local,
        }
    }

    fn check_liveness(&mut self, now: Duration) {
        for (id, m) in self.members.iter_mut() {
            if m.liveness != Liveness::Up || *id == self.id {
                continue;
            }
            let phi = self.fd.phi(id, now);
            if self.fd.convicts(phi) {
                m.liveness = Liveness::Down;
                tracing::info!(node = %id, phi, "convicted: down");
                self.events.push(Event::Down { node: id.clone(), phi });
            }
        }
    }

    fn expire_left(&mut self, now: Duration) {
        let hold = self.config.left_quarantine;
        self.quarantine.retain(|_, (_, until)| *until > now);
        let expired: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| **id != self.id && m.left_since.is_some_and(|t| t + hold <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(m) = self.members.remove(&id) {
                self.fd.remove(&id);
                self.quarantine.insert(id.clone(), (m.state.generation(), now + hold));
                tracing::info!(node = %id, "left node forgotten");
                self.events.push(Event::Removed { node: id });
            }
        }
    }

    fn is_quarantined(&self, id: &NodeId, generation: Generation) -> bool {
        self.quarantine.get(id).is_some_and(|(g, _)| generation <= *g)
    }

    /// Picks this round's targets (Cassandra's rules) and builds the SYNs.
    fn start_round(&mut self) -> Vec<Outgoing> {
        let (mut live, mut down) = (Vec::new(), Vec::new());
        for (id, m) in &self.members {
            if *id == self.id || m.state.status() == Some(Status::Left) {
                continue;
            }
            let Some(addr) = m.state.gossip_addr() else { continue };
            if *addr == self.addr {
                continue;
            }
            match m.liveness {
                Liveness::Up => live.push(addr),
                Liveness::Down | Liveness::Unknown => down.push(addr),
            }
        }
        let seeds: Vec<&Addr> = self.config.seeds.iter().filter(|s| **s != self.addr).collect();
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
            .map(|(id, m)| Digest {
                node: id.clone(),
                generation: m.state.generation(),
                version: m.state.max_version(),
            })
            .collect();
        tracing::trace!(targets = targets.len(), digests = digests.len(), "gossip round");
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

    /// SYN → ACK: push what the initiator lacks, request what we lack.
    fn on_syn(&mut self, from: &Addr, digests: &[Digest]) -> Vec<Outgoing> {
        let mut seen: HashSet<&str> = HashSet::with_capacity(digests.len());
        let mut wanted = Vec::new();
        let mut requests: Vec<(u64, Digest)> = Vec::new();
        for d in digests {
            if !seen.insert(d.node.as_str()) || self.is_quarantined(&d.node, d.generation) {
                continue;
            }
            let Some(m) = self.members.get(&d.node) else {
                let unknown = Digest { node: d.node.clone(), generation: 0, version: 0 };
                requests.push((d.version.saturating_add(1), unknown));
                continue;
            };
            let (g, v) = (m.state.generation(), m.state.max_version());
            let mine = || Digest { node: d.node.clone(), generation: g, version: v };
            if d.node == self.id {
                if d.generation > g {
                    tracing::warn!(generation = g, seen = d.generation, "a former incarnation of this node has a higher generation; peers will ignore us");
                } else if (d.generation, d.version) < (g, v) {
                    wanted.push(want(&d.node, d.generation, d.version, g, v));
                }
            } else if d.generation > g {
                requests.push((d.version, mine()));
            } else if d.generation < g || d.version < v {
                wanted.push(want(&d.node, d.generation, d.version, g, v));
            } else if d.version > v {
                requests.push((d.version - v, mine()));
            }
        }
        for (id, m) in &self.members {
            if !seen.contains(id.as_str()) {
                wanted.push(want(id, 0, 0, m.state.generation(), m.state.max_version()));
            }
        }
        // Requests take at most half the room; deltas fill the rest.
        let budget = self.budget();
        requests.sort_by(|a, b| b.0.cmp(&a.0));
        let mut used = 0;
        let mut reqs = Vec::new();
        for (_, d) in requests {
            let s = d.wire_size();
            if used + s > budget / 2 || reqs.len() >= self.config.max_states_per_message {
                break;
            }
            used += s;
            reqs.push(d);
        }
        let states = self.pack(wanted, budget - used);
        if states.is_empty() && reqs.is_empty() {
            return Vec::new();
        }
        vec![Outgoing {
            to: from.clone(),
            msg: Message::Ack {
                cluster: self.config.cluster_name.clone(),
                states,
                requests: reqs,
            },
        }]
    }

    /// ACK's requests → ACK2.
    fn on_requests(&mut self, from: &Addr, requests: &[Digest]) -> Vec<Outgoing> {
        let mut seen: HashSet<&str> = HashSet::with_capacity(requests.len());
        let mut wanted = Vec::new();
        for r in requests {
            if !seen.insert(r.node.as_str()) {
                continue;
            }
            if let Some(m) = self.members.get(&r.node) {
                let (g, v) = (m.state.generation(), m.state.max_version());
                if (r.generation, r.version) < (g, v) {
                    wanted.push(want(&r.node, r.generation, r.version, g, v));
                }
            }
        }
        let states = self.pack(wanted, self.budget());
        if states.is_empty() {
            return Vec::new();
        }
        vec![Outgoing {
            to: from.clone(),
            msg: Message::Ack2 {
                cluster: self.config.cluster_name.clone(),
                states,
            },
        }]
    }

    /// Bytes available for a message's deltas and requests: the cap minus
    /// the envelope (variant tag, cluster name, widest array headers).
    fn budget(&self) -> usize {
        self.config.max_message_bytes - (24 + str_len(self.config.cluster_name.len()))
    }

    /// Packs deltas, most out-of-date first, within `budget` bytes and the
    /// per-message count. Ties are shuffled so that, under a tight cap, no
    /// node is always last.
    fn pack(&mut self, mut wanted: Vec<Want>, budget: usize) -> Vec<Delta> {
        wanted.shuffle(&mut self.rng);
        wanted.sort_by(|a, b| b.staleness.cmp(&a.staleness));
        let mut out = Vec::new();
        let mut used = 0;
        for w in wanted {
            if out.len() >= self.config.max_states_per_message || budget - used < 32 {
                break;
            }
            let Some(m) = self.members.get(&w.node) else { continue };
            let generation = m.state.generation();
            let mut size = Delta::header_size(&w.node, generation) + 9;
            let mut delta = Delta {
                node: w.node,
                generation,
                heartbeat: None,
                states: Vec::new(),
            };
            for e in m.state.entries_since(w.since) {
                let s = match e {
                    Entry::Heartbeat(_) => 0, // counted in the header
                    Entry::State(v) => v.wire_size(),
                };
                if used + size + s > budget {
                    break;
                }
                size += s;
                match e {
                    Entry::Heartbeat(v) => delta.heartbeat = Some(v),
                    Entry::State(v) => delta.states.push(v.clone()),
                }
            }
            if delta.heartbeat.is_some() || !delta.states.is_empty() {
                used += size;
                out.push(delta);
            }
        }
        out
    }

    fn apply_all(&mut self, states: Vec<Delta>, now: Duration) {
        for d in states {
            self.apply(d, now);
        }
    }

    fn apply(&mut self, d: Delta, now: Duration) {
        if d.node == self.id {
            if d.generation > self.local().generation() {
                tracing::warn!(seen = d.generation, "peers hold a higher generation of this node");
            }
            return;
        }
        if self.is_quarantined(&d.node, d.generation) {
            return;
        }
        self.quarantine.remove(&d.node);
        let Some(m) = self.members.get_mut(&d.node) else {
            let mut state = EndpointState::new(d.generation);
            state.apply(&d);
            let left = state.status() == Some(Status::Left);
            tracing::info!(node = %d.node, generation = d.generation, "discovered");
            self.fd.report(&d.node, now);
            self.events.push(Event::Joined { node: d.node.clone(), generation: d.generation });
            let member = Member {
                state,
                liveness: Liveness::Unknown,
                left_since: left.then_some(now),
            };
            self.members.insert(d.node, member);
            return;
        };
        let merged = m.state.apply(&d);
        if merged.restarted {
            self.fd.reset(&d.node, now);
            tracing::info!(node = %d.node, generation = d.generation, "restarted");
            self.events.push(Event::Restarted { node: d.node.clone(), generation: d.generation });
        } else if merged.heartbeat_advanced {
            self.fd.report(&d.node, now);
        }
        if merged.heartbeat_advanced && m.liveness != Liveness::Up {
            m.liveness = Liveness::Up;
            tracing::info!(node = %d.node, "up");
            self.events.push(Event::Up { node: d.node.clone() });
        }
        m.left_since = match m.state.status() {
            Some(Status::Left) => Some(m.left_since.unwrap_or(now)),
            _ => None,
        };
        if !merged.changed.is_empty() {
            self.events.push(Event::Updated { node: d.node, keys: merged.changed });
        }
    }
}

fn want(node: &NodeId, their_gen: Generation, their_ver: Version, g: Generation, v: Version) -> Want {
    let since = if their_gen == g { their_ver } else { 0 };
    Want {
        node: node.clone(),
        since,
        staleness: v - since,
    }
}
