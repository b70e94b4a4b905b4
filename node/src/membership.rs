//! Membership: the gossip state machine driven over the internode
//! transport, the node's announcements, joining the ring, and keeping
//! [`crate::cluster::Cluster`] up to date.
//!
//! # What happens at start
//!
//! 1. A [`quorumkv_gossip::Node`] is built with this node's id, `--listen`
//!    address, persisted generation (it grows across restarts, so peers
//!    replace the old incarnation's state), `--cluster-name`, `--seeds`,
//!    and the round interval and phi threshold (hidden flags
//!    `--gossip-interval-ms`, `--phi-threshold`; the detector's interval
//!    floor follows the round interval).
//! 2. It remembers the members of the ring it last saw ([`saved`]): each
//!    is a member again, `down` until it is heard from, so that a member
//!    that is down while this node restarts keeps its place on the ring.
//!    It announces its HTTP address, rack, and — when the data dir holds
//!    tokens — those tokens with status `normal`; otherwise `standby`.
//! 3. The gossip driver ([`quorumkv_gossip::driver`]) runs over the
//!    transport's gossip side (authenticated TCP connections in a real
//!    node, [`crate::transport`]),
//!    and every snapshot it publishes is applied to the cluster view (the
//!    ring is rebuilt when owners change). Membership events are logged.
//! 4. **Joining** (`--join auto`, no stored tokens): the node announces
//!    `joining` without tokens and, in the background (the API serves
//!    meanwhile; a node that is its own only seed starts a new cluster and
//!    serves only once it is `normal`), learns the ring: it waits until seeds answered two
//!    exchanges (so it holds what they knew, including other nodes
//!    starting at the same moment) or [`JOIN_ROUNDS`] rounds passed — no
//!    wait at all when it is its own only seed. Then it waits for its
//!    turn: nodes joining at the same time go one by one in id order (a
//!    node waits while a member with a smaller id is `joining` without
//!    tokens, at most [`JOIN_MAX_ROUNDS`] rounds), because the balanced
//!    allocator is deterministic and two nodes allocating against the same
//!    ring would choose the same tokens; and it waits while another
//!    cluster change driven by a live node is in flight (one change at a
//!    time). Finally it chooses tokens with the ring crate's allocator
//!    against the ring it learned and hands over to
//!    [`ChangeDriver::join`]: tokens persisted, announced as
//!    `joining`, every gained range streamed, then `normal`. With
//!    `--join manual` it announces `standby` and waits for
//!    `POST /cluster/join`.
//! 5. **A lost disk** ([`replace`]): a node that took its tokens back on
//!    an empty data dir announces that it is replacing, counts toward no
//!    quorum, and repairs every range with every other replica before it
//!    announces that it counts again.
//! 6. **Restarts in the middle of a change**: a node that was joining
//!    announces `joining` with its tokens and resumes streaming; one that
//!    was leaving announces `leaving` and resumes; one that left announces
//!    `left`; a remover announces again the nodes it removed (or is
//!    removing, and resumes). See [`crate::stream`].
//!
//! # Implementation caveats
//!
//! * Joining nodes that do not hear of each other before choosing (no
//!   common seed answered in time) may allocate against different partial
//!   rings: the ring stays correct (tokens already known are never chosen
//!   again, and a token claimed twice keeps its first owner) but is less
//!   balanced. Start nodes one by one for the best balance.
//! * A node that crashed while `joining` without tokens holds up the nodes
//!   with larger ids until [`JOIN_MAX_ROUNDS`] pass; one that crashed while
//!   streaming does not hold anyone up (only live drivers' changes are
//!   waited for), but its change stays in flight until it returns.
//! * No graceful "shutdown" announcement: a stopped node is noticed by the
//!   failure detector (about 18 rounds at threshold 8).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use quorumkv_gossip::driver::{self, Handle, Snapshot, Transport};
use quorumkv_gossip::{Addr, AppState, Event, Node as GossipNode, Status};
use quorumkv_ring::Token;
use rand_chacha::ChaCha8Rng;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::bucket_sync::BucketSync;
use crate::cluster::{Cluster, REMOVED, REMOVING, ring_of};
use crate::config::{Config, Join, TokenAllocation};
use crate::storage::Store;
use crate::stream::{self, ChangeDriver, Kind};
use crate::tasks::Tasks;
use crate::tokens;
use crate::transport::Peers;

pub mod replace;
pub mod saved;

/// A joining node waits at most this many gossip rounds for seeds' answers.
pub const JOIN_ROUNDS: u64 = 3;

/// A joining node chooses its tokens after at most this many rounds, even
/// if a joining node with a smaller id still has not finished.
pub const JOIN_MAX_ROUNDS: u64 = 30;

/// Exchanges answered by seeds before a joining node trusts what it knows.
const JOIN_ACKS: u64 = 2;

/// The gossip settings this node runs with.
pub fn gossip_config(config: &Config) -> quorumkv_gossip::Config {
    let mut g = quorumkv_gossip::Config::new(config.cluster_name.clone());
    g.seeds = config
        .seeds
        .iter()
        .map(|s| Addr::from(s.to_string()))
        .collect();
    g.interval = config.gossip_interval;
    let fd = &mut g.failure_detector;
    fd.threshold = config.phi_threshold;
    fd.initial_interval = config.gossip_interval;
    fd.min_interval = config.gossip_interval;
    fd.max_interval = config.gossip_interval * 2;
    g
}

/// Whether this node has a seed other than itself.
fn has_other_seeds(config: &Config) -> bool {
    config.seeds.iter().any(|s| *s != config.listen)
}

/// Gossip built but not yet running: its [`Handle`] exists, so that the
/// services that announce through gossip (the change driver) can be built
/// with it before [`Prepared::start`] runs the driver.
pub struct Prepared<T> {
    driver: driver::Driver<ChaCha8Rng, T>,
    handle: Handle,
    /// The change this node was driving at its last stop.
    saved: Option<stream::Saved>,
    /// Whether this node was decommissioned.
    left: bool,
    /// The tokens the data dir holds (empty: none yet).
    stored: Vec<Token>,
    /// The [`saved::shape`] of the ring saved at the last run.
    ring_shape: u64,
    /// Whether the data dir replaces a lost one ([`replace`]).
    replacing: bool,
}

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gossip settings do not work (e.g. an interval of 0).
    #[error("invalid gossip settings: {0}")]
    Settings(String),
    /// This node's state could not be set for gossip.
    #[error("cannot announce: {0}")]
    Announce(String),
    /// The store could not say what change was in flight.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// No tokens could be chosen against the ring learned.
    #[error("cannot choose ring tokens: {0}")]
    Tokens(String),
    /// The join could not start.
    #[error("cannot join the ring: {0}")]
    Join(#[from] stream::Error),
}

/// Builds this node's gossip over `transport` and announces its state
/// (see the module docs); nothing is sent until [`Prepared::start`].
/// `rng` drives gossip's choices of peers.
pub fn prepare<T: Transport>(
    config: &Config,
    cluster: &Cluster,
    store: &Store,
    transport: T,
    rng: ChaCha8Rng,
) -> Result<Prepared<T>, Error> {
    let local = cluster.local().clone();
    let stored = cluster.ring().node_tokens(&local.id);
    let mut gossip = GossipNode::new(
        local.id.as_str().into(),
        local.listen.to_string().into(),
        local.generation,
        gossip_config(config),
        rng,
    )
    .map_err(|e| Error::Settings(e.to_string()))?;
    let remembered = saved::load(store)?;
    let ring_shape = saved::shape(&remembered);
    if !remembered.is_empty() {
        info!(
            members = remembered.len(),
            "remembering the members of the ring this node last saw (down until heard from)"
        );
    }
    for member in remembered {
        gossip.remember(member);
    }
    let saved = stream::saved(store)?;
    let left = stream::has_left(store)?;
    let replacing = replace::is_replacing(store)? && !stored.is_empty() && !left;
    let removed = stream::removed_by_me(store)?;
    let mut announce = vec![AppState::HttpAddr(local.http.to_string().into())];
    if let Some(rack) = &local.rack {
        announce.push(AppState::Rack(rack.as_str().into()));
    }
    if !removed.is_empty() {
        announce.push(AppState::Custom(REMOVED.into(), removed.join(",").into()));
    }
    let mine = |k: Kind| saved.as_ref().is_some_and(|s| s.kind == k);
    if mine(Kind::Removenode)
        && let Some(s) = &saved
    {
        announce.push(AppState::Custom(REMOVING.into(), s.node.as_str().into()));
    }
    if left {
        announce.push(AppState::Tokens(stored.as_slice().into()));
        announce.push(AppState::Status(Status::Left));
    } else if stored.is_empty() && config.join == Join::Auto {
        announce.push(AppState::Status(Status::Joining));
    } else if stored.is_empty() {
        announce.push(AppState::Status(Status::Standby));
    } else {
        announce.push(AppState::Tokens(stored.as_slice().into()));
        announce.push(AppState::Status(if mine(Kind::Join) {
            Status::Joining
        } else if mine(Kind::Decommission) {
            Status::Leaving
        } else {
            Status::Normal
        }));
    }
    if replacing {
        announce.push(replace::announcement(true));
    }
    for value in announce {
        gossip
            .set_local(value)
            .map_err(|e| Error::Announce(e.to_string()))?;
    }
    let (driver, handle) = driver::driver(gossip, transport);
    Ok(Prepared {
        driver,
        handle,
        saved,
        left,
        stored,
        ring_shape,
        replacing,
    })
}

/// What membership works with once gossip runs.
pub struct Parts {
    /// The node's settings (seeds, joining, token allocation).
    pub config: Arc<Config>,
    /// The cluster view every snapshot is applied to.
    pub cluster: Arc<Cluster>,
    /// Joins, and resumes the change in flight at the last stop.
    pub changes: Arc<ChangeDriver>,
    /// The other nodes (told when a peer is back).
    pub peers: Arc<dyn Peers>,
    /// Pushes bucket properties to a member that comes up.
    pub bucket_sync: Arc<BucketSync>,
    /// Restores the ranges of a node that lost its disk ([`replace`]).
    pub repairer: Arc<crate::repair::Repairer>,
    /// This node's store (stream positions are dropped once no change is
    /// in flight).
    pub store: Store,
    /// Where gossip and its followers run; their cancellation stops them.
    pub tasks: Tasks,
}

/// Running membership: gossip, the cluster view kept up to date, joining.
pub struct Membership {
    parts: Parts,
    handle: Handle,
}

impl<T: Transport> Prepared<T> {
    /// The gossip handle (snapshots, events, announcements).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs gossip, keeps `parts.cluster` up to date, and starts joining
    /// the ring (or resumes the change in flight) in the background when
    /// it must (see the module docs). A new cluster's first node joins
    /// before this returns.
    pub async fn start(self, parts: Parts) -> Result<Arc<Membership>, Error> {
        let Prepared {
            driver,
            handle,
            saved,
            left,
            stored,
            ring_shape,
            replacing,
        } = self;
        let stop = parts.tasks.token();
        parts
            .tasks
            .spawn(async move { driver.run(stop.cancelled_owned()).await });
        parts.cluster.apply(&handle.snapshot());
        let m = Arc::new(Membership { parts, handle });
        m.parts.tasks.spawn(m.clone().follow(ring_shape));
        if replacing {
            m.parts.tasks.spawn(replace::run(
                m.parts.repairer.clone(),
                m.parts.store.clone(),
                m.handle.clone(),
                m.parts.tasks.clone(),
            ));
        }
        let config = m.parts.config.clone();
        if left {
            info!("this node was decommissioned: it stays out of the ring");
        } else if let Some(s) = saved
            && (!stored.is_empty() || s.kind == Kind::Removenode)
        {
            m.parts.changes.resume(s);
        } else if stored.is_empty() && config.join == Join::Auto && !has_other_seeds(&config) {
            // A new cluster: nothing to stream, so the node serves only once
            // it owns the ring (clients may write at once).
            m.join().await?;
            let began = tokio::time::Instant::now();
            while m.parts.changes.changes().busy() && began.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } else if stored.is_empty() && config.join == Join::Auto {
            let joiner = m.clone();
            m.parts.tasks.spawn(async move {
                tokio::select! {
                    r = joiner.join() => if let Err(e) = r {
                        warn!(error = %e, "cannot join the ring");
                    },
                    _ = joiner.parts.tasks.cancelled() => {}
                }
            });
        } else if stored.is_empty() {
            info!("--join manual: in gossip as standby, without tokens, until POST /cluster/join");
        }
        Ok(m)
    }
}

impl Membership {
    /// The gossip handle (snapshots, events, announcements).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Chooses this node's tokens against `snapshot`'s ring with the
/// configured allocator, never one someone already announced.
pub fn choose_tokens(config: &Config, id: &str, snapshot: &Snapshot) -> Result<Vec<Token>, String> {
    let ring = ring_of(snapshot);
    let taken: HashSet<Token> = snapshot
        .members
        .iter()
        .flat_map(|m| m.state.tokens().iter().copied())
        .collect();
    let collides = |c: &[Token]| c.iter().any(|t| taken.contains(t));
    let mut chosen = tokens::allocate(&ring, id, config).map_err(|e| e.to_string())?;
    if collides(&chosen) {
        // Someone allocated against the same ring: random tokens instead.
        warn!("balanced tokens collide with a joining node's; choosing random ones");
        let mut random = config.clone();
        random.token_allocation = TokenAllocation::Random;
        while collides(&chosen) {
            chosen = tokens::allocate(&ring, id, &random).map_err(|e| e.to_string())?;
        }
    }
    Ok(chosen)
}

impl Membership {
    /// Waits to learn the ring and for its turn, chooses tokens against the
    /// ring, and starts the join (streaming in the background).
    async fn join(self: &Arc<Self>) -> Result<(), Error> {
        let (config, handle) = (&self.parts.config, &self.handle);
        let id = self.parts.cluster.local().id.clone();
        let learned = if has_other_seeds(config) {
            learn(handle, &id, config.gossip_interval).await
        } else {
            handle.snapshot()
        };
        // The rounds count from which a crashed joiner without tokens stops
        // holding this node up (restarted whenever another change ran).
        let mut idle_since = learned.rounds;
        loop {
            let snapshot = handle.snapshot();
            self.parts.cluster.apply(&snapshot);
            // One change at a time: wait while a live node drives another,
            // then for nodes with smaller ids that wait too.
            let busy: Vec<String> = self
                .parts
                .cluster
                .in_flight()
                .into_iter()
                .filter(|f| f.by != id && self.parts.cluster.is_alive(&f.by))
                .map(|f| format!("{} of {}", f.kind, f.node))
                .collect();
            if !busy.is_empty() {
                idle_since = snapshot.rounds;
            }
            let ahead = snapshot.rounds <= idle_since + JOIN_MAX_ROUNDS
                && snapshot.members.iter().any(|m| {
                    !m.is_local
                        && m.live
                        && m.id.as_str() < id.as_str()
                        && m.state.status() == Some(Status::Joining)
                        && m.state.tokens().is_empty()
                });
            if !busy.is_empty() || ahead {
                debug!(?busy, ahead, "joining: waiting for its turn");
                tokio::time::sleep(config.gossip_interval).await;
                continue;
            }
            let chosen = choose_tokens(config, &id, &snapshot).map_err(Error::Tokens)?;
            match self.parts.changes.join(chosen.clone()).await {
                Ok(change) => {
                    info!(
                        count = chosen.len(),
                        strategy = ?config.token_allocation,
                        learned_nodes = ring_of(&snapshot).node_count(),
                        members = snapshot.members.len(),
                        rounds = snapshot.rounds,
                        change = %change.id(),
                        "chose ring tokens against the learned ring; joining (streaming the ranges it gains)"
                    );
                    return Ok(());
                }
                Err(stream::Error::Conflict(why)) => {
                    debug!(%why, "joining: another change started first; waiting");
                    tokio::time::sleep(config.gossip_interval).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Why a joining node waits, given the latest snapshot; `None`: go.
fn waiting_for(snap: &Snapshot, me: &str) -> Option<String> {
    if snap.rounds > JOIN_MAX_ROUNDS {
        return None;
    }
    if snap.acks < JOIN_ACKS && snap.rounds <= JOIN_ROUNDS {
        return Some("seeds".into());
    }
    snap.members
        .iter()
        .find(|m| {
            !m.is_local
                && m.id.as_str() < me
                && m.state.status() == Some(Status::Joining)
                && m.state.tokens().is_empty()
        })
        .map(|m| format!("{} to finish joining", m.id))
}

/// The snapshot to allocate against: once seeds answered and no joining
/// node with a smaller id is ahead (see the module docs).
async fn learn(handle: &Handle, me: &str, interval: Duration) -> Arc<Snapshot> {
    let mut watch = handle.watch();
    let mut waiting = String::new();
    let wait = async {
        loop {
            let snap = watch.borrow_and_update().clone();
            match waiting_for(&snap, me) {
                None => return snap,
                Some(why) if why != waiting => {
                    debug!(waiting_for = %why, "joining: waiting");
                    waiting = why;
                }
                Some(_) => {}
            }
            if watch.changed().await.is_err() {
                return snap;
            }
        }
    };
    // A backstop in case the driver stopped publishing.
    let limit = interval * (JOIN_MAX_ROUNDS as u32 + 2);
    let snap = match tokio::time::timeout(limit, wait).await {
        Ok(snap) => snap,
        Err(_) => handle.snapshot(),
    };
    if snap.acks == 0 {
        warn!(
            rounds = snap.rounds,
            "no seed answered; choosing tokens against the ring known so far"
        );
    } else if snap.rounds > JOIN_MAX_ROUNDS {
        warn!(
            rounds = snap.rounds,
            "gave up waiting for other joining nodes; choosing tokens now"
        );
    }
    snap
}

impl Membership {
    /// Applies every snapshot to the cluster view, saves the ring when it
    /// changed (`ring_shape`: the shape saved last) and logs membership
    /// events, until the driver stops.
    async fn follow(self: Arc<Self>, mut ring_shape: u64) {
        let (node, handle) = (&self.parts, &self.handle);
        let mut snapshots = handle.watch();
        let mut events = handle.events();
        loop {
            tokio::select! {
                _ = node.tasks.cancelled() => return,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snap = snapshots.borrow_and_update().clone();
                    if node.cluster.apply(&snap) {
                        let ring = node.cluster.ring();
                        info!(nodes = ring.node_count(), tokens = ring.vnode_count(), "ring changed");
                    }
                    let members = saved::of(&snap);
                    let shape = saved::shape(&members);
                    if shape != ring_shape {
                        match saved::save(&node.store, &members).await {
                            Ok(()) => ring_shape = shape,
                            Err(e) => warn!(error = %e, "cannot save the ring; retrying at the next snapshot"),
                        }
                    }
                    if node.changes.changes().observe(&node.cluster) {
                        // No change in flight: stream positions are history.
                        let store = &node.store;
                        if store.raw_scan(crate::storage::Partition::Meta, b"stream/", Some(b"stream0"), 1)
                            .is_ok_and(|r| !r.is_empty())
                            && let Err(e) = stream::forget_positions(store).await
                        {
                            debug!(error = %e, "cannot drop old stream positions");
                        }
                    }
                }
                event = events.recv() => match event {
                    Ok(e) => {
                        log_event(&e);
                        if let Event::Up { node: peer } | Event::Restarted { node: peer, .. } = &e {
                            // Calls to it may be failing fast in a connect
                            // backoff from while it was down: end that now.
                            node.peers.peer_is_back(peer.as_str());
                        }
                        if let Event::Up { node: peer } = &e {
                            node.bucket_sync.push_to(peer.as_str());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        debug!(missed = n, "membership event log lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

/// The gossip crate already logs discoveries, restarts, ups and refusals
/// at `info`/`warn`; a conviction is worth a `warn` here too.
fn log_event(e: &Event) {
    match e {
        Event::Down { node, phi } => warn!(%node, phi, "node is down"),
        other => debug!(event = ?other, "membership event"),
    }
}

#[cfg(test)]
mod tests {
    use quorumkv_gossip::driver::MemberSnapshot;
    use quorumkv_gossip::{Delta, EndpointState, Versioned};

    use super::*;

    fn member(id: &str, status: Status, tokens: &[u64]) -> MemberSnapshot {
        let mut state = EndpointState::new(1);
        state.apply(&Delta {
            node: id.into(),
            generation: 1,
            heartbeat: Some(3),
            states: vec![
                Versioned {
                    version: 1,
                    value: AppState::Status(status),
                },
                Versioned {
                    version: 2,
                    value: AppState::Tokens(tokens.into()),
                },
            ],
        });
        MemberSnapshot {
            id: id.into(),
            state,
            live: true,
            phi: 0.0,
            is_local: id == "n3",
        }
    }

    fn snap(acks: u64, rounds: u64, members: Vec<MemberSnapshot>) -> Snapshot {
        Snapshot {
            members,
            rounds,
            acks,
        }
    }

    #[test]
    fn a_joining_node_waits_for_seeds_then_for_smaller_joiners_then_goes() {
        let me = || member("n3", Status::Joining, &[]);
        let cases = [
            // (acks, rounds, others, waits)
            (0, 1, vec![], true),
            (1, 2, vec![], true),
            (2, 2, vec![], false),
            (0, JOIN_ROUNDS + 1, vec![], false),
            (2, 2, vec![member("n1", Status::Joining, &[])], true),
            (2, 2, vec![member("n1", Status::Normal, &[7])], false),
            (2, 2, vec![member("n1", Status::Standby, &[])], false),
            (2, 2, vec![member("n4", Status::Joining, &[])], false),
            (
                2,
                JOIN_MAX_ROUNDS + 1,
                vec![member("n1", Status::Joining, &[])],
                false,
            ),
        ];
        for (acks, rounds, mut others, waits) in cases {
            others.push(me());
            let s = snap(acks, rounds, others);
            assert_eq!(
                waiting_for(&s, "n3").is_some(),
                waits,
                "acks {acks} rounds {rounds}: {:?}",
                waiting_for(&s, "n3")
            );
        }
    }

    /// n2 is down when this node restarts, and no peer can tell about it:
    /// it is still a member (down, normal, with its tokens) and on the
    /// ring, from the ring saved at the last run.
    #[tokio::test]
    async fn a_restarted_node_keeps_a_member_nobody_can_tell_it_about() {
        use rand::SeedableRng;

        use crate::cluster::{LocalNode, NodeState};

        let store = Store::memory();
        let n2 = Delta {
            node: "n2".into(),
            generation: 5,
            heartbeat: Some(3),
            states: vec![
                Versioned {
                    version: 1,
                    value: AppState::Status(Status::Normal),
                },
                Versioned {
                    version: 2,
                    value: AppState::Tokens(vec![42].into()),
                },
                Versioned {
                    version: 3,
                    value: AppState::GossipAddr("127.0.0.1:7999".into()),
                },
            ],
        };
        saved::save(&store, &[n2]).await.expect("save");
        let mut c = crate::config::Config::resolve(Default::default(), Default::default())
            .expect("defaults are valid");
        c.seeds = vec![c.listen];
        let cluster = Cluster::single(
            LocalNode {
                id: "n1".into(),
                http: c.http,
                listen: c.listen,
                generation: 9,
                rack: None,
            },
            vec![7],
        );
        let net = driver::MemoryNetwork::new();
        let prepared = prepare(
            &c,
            &cluster,
            &store,
            net.transport(c.listen.to_string()),
            ChaCha8Rng::seed_from_u64(1),
        )
        .expect("prepare");
        cluster.apply(&prepared.handle().snapshot());
        let m = cluster.member("n2").expect("n2 is remembered");
        assert_eq!((m.status, m.state), ("down", NodeState::Normal));
        assert_eq!(m.tokens, [42]);
        assert_eq!(cluster.ring().nodes(), ["n1", "n2"]);
        assert!(!cluster.is_alive("n2"));
        assert_eq!(cluster.addr_of("n2").as_deref(), Some("127.0.0.1:7999"));
    }

    /// A node restarted in the middle of its replacement (the mark is in
    /// its data dir, beside the tokens) announces it again: it still does
    /// not count, on itself either; once the mark is gone it counts.
    #[tokio::test]
    async fn a_node_restarted_while_replacing_still_does_not_count() {
        use rand::SeedableRng;

        use crate::cluster::LocalNode;

        for marked in [true, false] {
            let store = Store::memory();
            replace::begin(&store).await.expect("mark");
            if !marked {
                replace::finish(&store).await.expect("done");
            }
            let mut c = crate::config::Config::resolve(Default::default(), Default::default())
                .expect("defaults are valid");
            c.seeds = vec![c.listen];
            let cluster = Cluster::single(
                LocalNode {
                    id: "n1".into(),
                    http: c.http,
                    listen: c.listen,
                    generation: 9,
                    rack: None,
                },
                vec![7],
            );
            let net = driver::MemoryNetwork::new();
            let prepared = prepare(
                &c,
                &cluster,
                &store,
                net.transport(c.listen.to_string()),
                ChaCha8Rng::seed_from_u64(1),
            )
            .expect("prepare");
            cluster.apply(&prepared.handle().snapshot());
            assert_eq!(cluster.is_replacing("n1"), marked);
            assert_eq!(cluster.is_alive("n1"), !marked);
            assert_eq!(cluster.ring().nodes(), ["n1"], "on the ring either way");
        }
    }

    #[test]
    fn the_detector_follows_the_gossip_interval() {
        let mut c = crate::config::Config::resolve(Default::default(), Default::default())
            .expect("defaults are valid");
        c.gossip_interval = Duration::from_millis(200);
        c.phi_threshold = 5.0;
        c.seeds = vec![c.listen];
        let g = gossip_config(&c);
        assert!(g.validate().is_ok());
        assert_eq!(g.failure_detector.min_interval, Duration::from_millis(200));
        assert_eq!(g.failure_detector.max_interval, Duration::from_millis(400));
        assert_eq!(g.failure_detector.threshold, 5.0);
        assert!(!has_other_seeds(&c), "its own only seed");
    }
}
