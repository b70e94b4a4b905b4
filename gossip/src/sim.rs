//! A deterministic simulated network of gossip nodes, for scenario tests
//! and for the figures `examples/simulate.rs` prints.
//!
//! Many [`Node`]s run over a discrete-event network: a simulated clock, a
//! queue of timers and in-flight messages ordered by time, seeded message
//! loss and delay, partitions, kills and restarts. The same seed gives the
//! same run, event for event.
//!
//! Modelling choices (they decide what "rounds" means in the figures):
//!
//! * Each host's rounds start at a random phase within the interval, as
//!   real processes started at unrelated times do; a host added with
//!   [`Sim::add_node_at`] `(Duration::ZERO)` starts its first round at once.
//! * Messages take a uniform delay in `[min_delay, max_delay]` (default
//!   1–10 ms, a LAN) and are lost independently with probability `loss`.
//! * Rounds until convergence are measured as elapsed simulated time
//!   divided by the interval, from the change to the moment the last host
//!   holds it ([`Sim::watch`]).
//! * Bytes are the MessagePack size when [`SimConfig::encode`] is set (and
//!   every message then goes through the real codec), else the
//!   [`Message::wire_size`] upper bound, which is within a few percent.

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap},
    time::Duration,
};

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::{
    AppState, Config, Delta, Event, Message, Node, NodeId, Status,
    state::{Addr, Generation, Version},
};

/// Network behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Probability that a message is lost, in [0, 1]. Default 0.
    pub loss: f64,
    /// Smallest one-way delay. Default 1 ms.
    pub min_delay: Duration,
    /// Largest one-way delay (≥ `min_delay`). Default 10 ms.
    pub max_delay: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            loss: 0.0,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        }
    }
}

/// Simulation settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Gossip settings for every node; `seeds` is filled in by the sim.
    pub gossip: Config,
    /// The network.
    pub net: NetConfig,
    /// Seeds the whole run.
    pub seed: u64,
    /// The first `seeds` hosts are seed nodes. Default 3.
    pub seeds: usize,
    /// Tokens each node announces. Default 16.
    pub tokens_per_node: usize,
    /// Encode and decode every message with the real codec, and count real
    /// bytes. Default false (faster; bytes are the upper-bound estimate).
    pub encode: bool,
    /// Keep every node's events in [`Sim::log`]. Default false.
    pub record_events: bool,
}

impl SimConfig {
    /// Defaults with the given RNG seed.
    pub fn new(seed: u64) -> Self {
        Self {
            gossip: Config::new("sim"),
            net: NetConfig::default(),
            seed,
            seeds: 3,
            tokens_per_node: 16,
            encode: false,
            record_events: false,
        }
    }
}

/// One simulated process.
struct Host {
    id: NodeId,
    addr: Addr,
    node: Option<Node<ChaCha8Rng>>,
    incarnation: u64,
    generation: Generation,
    bytes_sent: u64,
    messages_sent: u64,
}

enum Action {
    Tick { host: usize, incarnation: u64 },
    Deliver { to: usize, from: Addr, msg: Message },
}

struct Scheduled {
    at: Duration,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` is a max-heap, we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A `Down` event seen by some host.
#[derive(Clone, Debug, PartialEq)]
pub struct Conviction {
    /// When.
    pub at: Duration,
    /// The host that convicted.
    pub observer: usize,
    /// The host convicted.
    pub subject: usize,
    /// Whether the subject was running at the time.
    pub subject_alive: bool,
    /// Whether a partition was in force, or lifted less than five
    /// intervals ago (convictions it caused may land just after the heal).
    pub during_partition: bool,
}

impl Conviction {
    /// A running node convicted with no partition to explain it.
    pub fn is_false(&self) -> bool {
        self.subject_alive && !self.during_partition
    }
}

/// Identifies a [`Sim::watch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchId(usize);

struct Watch {
    subject: NodeId,
    generation: Generation,
    version: Version,
    known: Vec<bool>,
    remaining: usize,
    started: Duration,
    done: Option<Duration>,
}

/// The simulated cluster.
pub struct Sim {
    config: SimConfig,
    now: Duration,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    hosts: Vec<Host>,
    by_addr: HashMap<Addr, usize>,
    by_id: HashMap<NodeId, usize>,
    groups: Option<Vec<usize>>,
    healed_at: Option<Duration>,
    watches: Vec<Watch>,
    /// Every `Down` event, in time order.
    pub convictions: Vec<Conviction>,
    /// Every event of every host, if [`SimConfig::record_events`].
    pub log: Vec<(Duration, usize, Event)>,
    /// Messages handed to the network / lost (loss and partitions).
    pub sent: u64,
    /// See `sent`.
    pub dropped: u64,
    /// The largest message sent so far, in bytes.
    pub largest_message: usize,
}

impl Sim {
    /// An empty network.
    pub fn new(config: SimConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Self {
            config,
            now: Duration::ZERO,
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            hosts: Vec::new(),
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            groups: None,
            healed_at: None,
            watches: Vec::new(),
            convictions: Vec::new(),
            log: Vec::new(),
            sent: 0,
            dropped: 0,
            largest_message: 0,
        }
    }

    /// `n` nodes that already know each other's state (as if they had
    /// gossiped for a while), with rounds at random phases, after `warmup`
    /// rounds of gossip (2–3 suffice for everyone to see everyone up).
    pub fn converged(config: SimConfig, n: usize, warmup: u32) -> Self {
        let mut sim = Sim::new(config);
        for _ in 0..n {
            sim.add_node();
        }
        let states: Vec<Delta> = sim
            .hosts
            .iter()
            .filter_map(|h| h.node.as_ref())
            .map(|node| Delta {
                node: node.id().clone(),
                generation: node.local().generation(),
                heartbeat: Some(node.local().heartbeat()),
                states: node.local().states().to_vec(),
            })
            .collect();
        let cluster = sim.config.gossip.cluster_name.clone();
        let now = sim.now;
        for h in &mut sim.hosts {
            if let Some(node) = h.node.as_mut() {
                let msg = Message::Ack2 {
                    cluster: cluster.clone(),
                    states: states.clone(),
                };
                node.handle(&h.addr, msg, now);
                node.drain_events();
            }
        }
        sim.run_for(sim.interval() * warmup);
        sim
    }

    /// The gossip interval.
    pub fn interval(&self) -> Duration {
        self.config.gossip.interval
    }

    /// Simulated time now.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Number of hosts ever added (killed ones included).
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host was added.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Host `h`'s node id.
    pub fn id(&self, h: usize) -> &NodeId {
        &self.hosts[h].id
    }

    /// Host `h`'s node, unless killed.
    pub fn node(&self, h: usize) -> Option<&Node<ChaCha8Rng>> {
        self.hosts[h].node.as_ref()
    }

    /// Host `h`'s node, unless killed, to change its state.
    pub fn node_mut(&mut self, h: usize) -> Option<&mut Node<ChaCha8Rng>> {
        self.hosts[h].node.as_mut()
    }

    /// Whether host `h` is running.
    pub fn is_alive(&self, h: usize) -> bool {
        self.hosts[h].node.is_some()
    }

    /// Indices of running hosts.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&h| self.is_alive(h))
            .collect()
    }

    /// Adds a host whose first round starts at a random phase.
    pub fn add_node(&mut self) -> usize {
        let phase = self.interval().mul_f64(self.rng.random::<f64>());
        self.add_node_at(phase)
    }

    /// Adds a host (id `n{index}`, address `n{index}:7000`, status normal,
    /// random tokens) whose first round starts after `delay`. It knows only
    /// the seeds.
    pub fn add_node_at(&mut self, delay: Duration) -> usize {
        let h = self.hosts.len();
        let id = NodeId::from(format!("n{h}"));
        let addr = Addr::from(format!("n{h}:7000"));
        self.by_addr.insert(addr.clone(), h);
        self.by_id.insert(id.clone(), h);
        self.hosts.push(Host {
            id,
            addr,
            node: None,
            incarnation: 0,
            // Seconds since the epoch, as drivers typically choose: keeps
            // the byte counts realistic.
            generation: 1_795_830_000,
            bytes_sent: 0,
            messages_sent: 0,
        });
        self.start(h, delay);
        h
    }

    /// Kills host `h` (its state is lost; messages to it vanish).
    pub fn kill(&mut self, h: usize) {
        self.hosts[h].node = None;
        self.hosts[h].incarnation += 1;
    }

    /// Restarts host `h` with a higher generation and its first round now.
    pub fn restart(&mut self, h: usize) {
        self.kill(h);
        self.start(h, Duration::ZERO);
    }

    fn start(&mut self, h: usize, delay: Duration) {
        let mut gossip = self.config.gossip.clone();
        gossip.seeds = (0..self.config.seeds.min(self.hosts.len()))
            .map(|s| self.hosts[s].addr.clone())
            .collect();
        if gossip.seeds.is_empty() {
            gossip.seeds.push(self.hosts[0].addr.clone());
        }
        let host = &mut self.hosts[h];
        host.generation += 1;
        let rng = ChaCha8Rng::seed_from_u64(self.rng.random());
        let mut node = Node::new(
            host.id.clone(),
            host.addr.clone(),
            host.generation,
            gossip,
            rng,
        )
        .expect("simulation config is valid");
        let tokens: Vec<u64> = (0..self.config.tokens_per_node)
            .map(|_| self.rng.random())
            .collect();
        let setup = [
            AppState::Status(Status::Normal),
            AppState::Tokens(tokens.into()),
            AppState::HttpAddr(format!("{}:8000", host.id).into()),
            AppState::Rack(format!("r{}", h % 3).into()),
        ];
        for s in setup {
            node.set_local(s).expect("small states fit");
        }
        host.node = Some(node);
        let incarnation = host.incarnation;
        self.schedule(
            self.now + delay,
            Action::Tick {
                host: h,
                incarnation,
            },
        );
    }

    /// Cuts the network into groups: hosts in different groups cannot
    /// talk. Hosts not listed form one more group together.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let mut g = vec![0; self.hosts.len()];
        for (i, members) in groups.iter().enumerate() {
            for &h in *members {
                g[h] = i + 1;
            }
        }
        self.groups = Some(g);
    }

    /// Removes any partition.
    pub fn heal(&mut self) {
        if self.groups.take().is_some() {
            self.healed_at = Some(self.now);
        }
    }

    /// Starts measuring how long until every running host holds host
    /// `subject`'s current state (its generation and max version).
    pub fn watch(&mut self, subject: usize) -> WatchId {
        let id = self.hosts[subject].id.clone();
        let (generation, version) = self
            .node(subject)
            .and_then(|n| n.digest_of(&id))
            .unwrap_or((0, 0));
        let mut w = Watch {
            subject: id,
            generation,
            version,
            known: vec![true; self.hosts.len()],
            remaining: 0,
            started: self.now,
            done: None,
        };
        for h in self.alive() {
            w.known[h] = false;
            w.remaining += 1;
        }
        self.watches.push(w);
        for h in self.alive() {
            self.check_watches(h);
        }
        WatchId(self.watches.len() - 1)
    }

    /// Time from the start of watch `w` until the last host held the
    /// state, if that happened.
    pub fn watch_elapsed(&self, w: WatchId) -> Option<Duration> {
        let w = &self.watches[w.0];
        w.done.map(|d| d - w.started)
    }

    /// Runs until watch `w` completes or `limit` passes; returns the
    /// elapsed time in rounds (fractional).
    pub fn run_watch(&mut self, w: WatchId, limit: Duration) -> Option<f64> {
        let deadline = self.now + limit;
        while self.watches[w.0].done.is_none() && self.step(deadline) {}
        self.watch_elapsed(w)
            .map(|d| d.as_secs_f64() / self.interval().as_secs_f64())
    }

    /// Runs the simulation for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_until(deadline);
    }

    /// Runs until simulated time `t`.
    pub fn run_until(&mut self, t: Duration) {
        while self.step(t) {}
        self.now = self.now.max(t);
    }

    /// Executes the next scheduled action if it is due by `deadline`.
    fn step(&mut self, deadline: Duration) -> bool {
        match self.queue.peek() {
            Some(s) if s.at <= deadline => {}
            _ => return false,
        }
        let Some(s) = self.queue.pop() else {
            return false;
        };
        self.now = s.at;
        match s.action {
            Action::Tick { host, incarnation } => {
                if self.hosts[host].incarnation != incarnation {
                    return true;
                }
                let Some(node) = self.hosts[host].node.as_mut() else {
                    return true;
                };
                let outs = node.tick(self.now);
                let next = node.next_round_at();
                self.schedule(next, Action::Tick { host, incarnation });
                self.after(host, outs);
            }
            Action::Deliver { to, from, msg } => {
                let now = self.now;
                let Some(node) = self.hosts[to].node.as_mut() else {
                    return true;
                };
                let outs = node.handle(&from, msg, now);
                self.after(to, outs);
                self.check_watches(to);
            }
        }
        true
    }

    fn schedule(&mut self, at: Duration, action: Action) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            action,
        });
    }

    /// Collects host `h`'s events and puts its messages on the wire.
    fn after(&mut self, h: usize, outs: Vec<crate::Outgoing>) {
        let events = self.hosts[h]
            .node
            .as_mut()
            .map(|n| n.drain_events())
            .unwrap_or_default();
        for e in events {
            if let Event::Down { node, .. } = &e
                && let Some(&subject) = self.by_id.get(node)
            {
                self.convictions.push(Conviction {
                    at: self.now,
                    observer: h,
                    subject,
                    subject_alive: self.is_alive(subject),
                    during_partition: self.groups.is_some()
                        || self
                            .healed_at
                            .is_some_and(|t| self.now < t + self.interval() * 5),
                });
            }
            if self.config.record_events {
                self.log.push((self.now, h, e));
            }
        }
        let from = self.hosts[h].addr.clone();
        for out in outs {
            let (size, msg) = if self.config.encode {
                let bytes = out.msg.encode().expect("messages encode");
                let msg = Message::decode(&bytes, usize::MAX).expect("own messages decode");
                (bytes.len(), msg)
            } else {
                (out.msg.wire_size(), out.msg)
            };
            self.largest_message = self.largest_message.max(size);
            self.hosts[h].bytes_sent += size as u64;
            self.hosts[h].messages_sent += 1;
            self.sent += 1;
            let Some(&to) = self.by_addr.get(&out.to) else {
                self.dropped += 1;
                continue;
            };
            let cut = self.groups.as_ref().is_some_and(|g| g[h] != g[to]);
            if cut || self.rng.random::<f64>() < self.config.net.loss {
                self.dropped += 1;
                continue;
            }
            let (lo, hi) = (self.config.net.min_delay, self.config.net.max_delay);
            let delay = lo + (hi.saturating_sub(lo)).mul_f64(self.rng.random::<f64>());
            self.schedule(
                self.now + delay,
                Action::Deliver {
                    to,
                    from: from.clone(),
                    msg,
                },
            );
        }
    }

    fn check_watches(&mut self, h: usize) {
        let Some(node) = self.hosts[h].node.as_ref() else {
            return;
        };
        for w in &mut self.watches {
            if w.done.is_some() || w.known.get(h).is_none_or(|k| *k) {
                continue;
            }
            let holds = node
                .digest_of(&w.subject)
                .is_some_and(|(g, v)| g > w.generation || (g == w.generation && v >= w.version));
            if holds {
                w.known[h] = true;
                w.remaining -= 1;
                if w.remaining == 0 {
                    w.done = Some(self.now);
                }
            }
        }
    }

    /// Bytes host `h` has sent since the last [`Sim::reset_counters`].
    pub fn bytes_sent(&self, h: usize) -> u64 {
        self.hosts[h].bytes_sent
    }

    /// Messages host `h` has sent since the last reset.
    pub fn messages_sent(&self, h: usize) -> u64 {
        self.hosts[h].messages_sent
    }

    /// Zeroes byte and message counters.
    pub fn reset_counters(&mut self) {
        for h in &mut self.hosts {
            h.bytes_sent = 0;
            h.messages_sent = 0;
        }
        self.sent = 0;
        self.dropped = 0;
    }

    /// Whether every running host holds exactly the application states
    /// and generation of every other running host (heartbeats, always a
    /// little behind, excluded).
    pub fn converged_state(&self) -> bool {
        let alive = self.alive();
        alive.iter().all(|&a| {
            let Some(na) = self.node(a) else { return false };
            alive.iter().all(|&b| {
                let Some(nb) = self.node(b) else { return false };
                na.member(nb.id()).is_some_and(|m| {
                    m.state.generation() == nb.local().generation()
                        && m.state.states() == nb.local().states()
                })
            })
        })
    }

    /// Whether every running host sees every other running host as up.
    pub fn all_see_all_up(&self) -> bool {
        let alive = self.alive();
        alive.iter().all(|&a| {
            alive
                .iter()
                .all(|&b| self.node(a).is_some_and(|n| n.is_live(&self.hosts[b].id)))
        })
    }

    /// A random running host other than those in `except`.
    pub fn random_alive(&mut self, except: &[usize]) -> Option<usize> {
        let mut c: Vec<usize> = self
            .alive()
            .into_iter()
            .filter(|h| !except.contains(h))
            .collect();
        c.shuffle(&mut self.rng);
        c.first().copied()
    }
}
