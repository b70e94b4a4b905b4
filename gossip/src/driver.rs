//! The tokio driver: the one place where the sans-IO [`Node`] meets a clock
//! and a network.
//!
//! # What it does
//!
//! [`Driver::run`] owns a [`Node`] and a [`Transport`] and loops over four
//! sources of work until its shutdown future resolves:
//!
//! * the round timer — it sleeps until [`Node::next_round_at`] and calls
//!   [`Node::tick`], sending the SYNs it returns;
//! * the transport's incoming messages — each goes to [`Node::handle`], and
//!   the replies go back out through the transport;
//! * commands from a [`Handle`] — today [`Handle::set_local`], the only way
//!   for the rest of the process to change what this node announces
//!   (status, tokens) without sharing the state machine behind a lock;
//! * shutdown.
//!
//! After each step it drains the node's events onto a `broadcast` channel
//! ([`Handle::events`]), and after each round and each step that produced
//! events it publishes an owned [`Snapshot`] of the membership on a `watch`
//! channel ([`Handle::watch`]). Readers (the HTTP API, the ring builder)
//! read the latest snapshot without ever touching the state machine; a
//! snapshot is at most one round stale in its heartbeats and phis.
//!
//! # Why a trait and a twin
//!
//! [`Transport`] is all the driver knows of the network: "send this to that
//! address, best effort" and "the next message, and who sent it". The
//! node's TCP transport implements it over authenticated connections;
//! [`MemoryNetwork`] implements it over in-process channels, so that the
//! loop itself (timers, replies, commands, snapshots) is tested with tokio's
//! paused clock and no sockets (quickwit-oss/chitchat's `transport/`
//! follows the same split).
//!
//! # Time
//!
//! The node's clock is `tokio::time::Instant` elapsed since the driver was
//! built: monotonic (wall-clock jumps cannot convict anyone) and pausable in
//! tests.
//!
//! # Implementation caveats
//!
//! * `send` must not block: a full queue drops the message. Gossip
//!   tolerates loss (the next round repeats everything still missing).
//! * A snapshot clones every member's state (cheap: tokens and strings are
//!   shared `Arc`s); it is built once per round and on membership events,
//!   not per message.
//! * When the transport's incoming side closes, the driver stops.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::{
    Error, Event, Message, Node,
    state::{Addr, AppState, EndpointState, NodeId},
};

/// What the driver needs from a network. Implementations deliver whole
/// messages (framing and authentication are theirs) and never block.
pub trait Transport: Send + 'static {
    /// Sends `msg` to the node listening at `to`, best effort: a message
    /// that cannot be queued or delivered is dropped (and, ideally,
    /// counted).
    fn send(&mut self, to: &Addr, msg: Message);

    /// The next message and the gossip address of its sender (replies are
    /// sent there); `None` once the transport is closed for good.
    fn recv(&mut self) -> impl Future<Output = Option<(Addr, Message)>> + Send;
}

/// One member as of the last snapshot: an owned [`crate::MemberView`].
#[derive(Clone, Debug)]
pub struct MemberSnapshot {
    /// The member's id.
    pub id: NodeId,
    /// Everything known about it.
    pub state: EndpointState,
    /// Up according to the failure detector (always for the local node).
    pub live: bool,
    /// Phi when the snapshot was taken.
    pub phi: f64,
    /// Whether this is the local node.
    pub is_local: bool,
}

/// The membership as the driver last published it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every known member, the local node included, in id order.
    pub members: Vec<MemberSnapshot>,
    /// Rounds started since the driver began.
    pub rounds: u64,
    /// ACKs received, i.e. exchanges this node started that a peer
    /// answered: after the first one the node holds (up to the size caps)
    /// everything that peer knew.
    pub acks: u64,
}

impl Snapshot {
    /// One member, if known.
    pub fn member(&self, id: &str) -> Option<&MemberSnapshot> {
        self.members.iter().find(|m| m.id.as_str() == id)
    }
}

/// Why a command to the driver failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver has stopped (shutdown, or its transport closed).
    #[error("the gossip driver has stopped")]
    Stopped,
    /// The state machine refused the change.
    #[error(transparent)]
    Gossip(#[from] Error),
}

enum Command {
    SetLocal(AppState, oneshot::Sender<Result<(), Error>>),
}

/// The rest of the process's side of a running driver: cheap to clone.
#[derive(Clone)]
pub struct Handle {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<Event>,
    commands: mpsc::Sender<Command>,
}

impl Handle {
    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// A receiver that wakes on every new snapshot.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    /// Membership events from now on. A receiver that falls more than
    /// [`EVENT_CAPACITY`] events behind gets `Lagged` and should re-read
    /// the snapshot.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Changes one of this node's announced states (see
    /// [`Node::set_local`]); the change is in the next message sent.
    pub async fn set_local(&self, value: AppState) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SetLocal(value, tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await
            .map_err(|_| DriverError::Stopped)?
            .map_err(Into::into)
    }
}

/// Events buffered per subscriber before it lags.
pub const EVENT_CAPACITY: usize = 1024;

/// A state machine, its transport and the channels it publishes on; run it
/// with [`Driver::run`].
pub struct Driver<R, T> {
    node: Node<R>,
    transport: T,
    start: Instant,
    snapshots: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<Event>,
    commands: mpsc::Receiver<Command>,
    rounds: u64,
    acks: u64,
}

/// Wraps `node` and `transport` in a driver, and returns the handle the rest
/// of the process uses. The first snapshot (this node alone, or whatever the
/// node already knew) is published at once.
pub fn driver<R, T>(node: Node<R>, transport: T) -> (Driver<R, T>, Handle)
where
    R: Rng + Send + 'static,
    T: Transport,
{
    let (snap_tx, snap_rx) = watch::channel(Arc::new(snapshot_of(&node, 0, 0)));
    let (events, _) = broadcast::channel(EVENT_CAPACITY);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let handle = Handle {
        snapshots: snap_rx,
        events: events.clone(),
        commands: cmd_tx,
    };
    let driver = Driver {
        node,
        transport,
        start: Instant::now(),
        snapshots: snap_tx,
        events,
        commands: cmd_rx,
        rounds: 0,
        acks: 0,
    };
    (driver, handle)
}

fn snapshot_of<R: Rng>(node: &Node<R>, rounds: u64, acks: u64) -> Snapshot {
    Snapshot {
        members: node
            .members()
            .map(|m| MemberSnapshot {
                id: m.id.clone(),
                state: m.state.clone(),
                live: m.live,
                phi: m.phi,
                is_local: m.is_local,
            })
            .collect(),
        rounds,
        acks,
    }
}

impl<R, T> Driver<R, T>
where
    R: Rng + Send + 'static,
    T: Transport,
{
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn send_all(&mut self, out: Vec<crate::Outgoing>) {
        for o in out {
            self.transport.send(&o.to, o.msg);
        }
    }

    /// Broadcasts the drained events; returns whether there were any.
    fn flush_events(&mut self) -> bool {
        let events = self.node.drain_events();
        let any = !events.is_empty();
        for e in events {
            tracing::debug!(event = ?e, "gossip event");
            // No subscriber is not an error: nobody is listening yet.
            let _ = self.events.send(e);
        }
        any
    }

    fn publish(&self) {
        let snap = snapshot_of(&self.node, self.rounds, self.acks);
        self.snapshots.send_replace(Arc::new(snap));
    }

    /// Runs until `shutdown` resolves or the transport closes; returns the
    /// state machine (for inspection in tests).
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Node<R> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut commands_open = true;
        loop {
            let round_at = self.start + self.node.next_round_at();
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(round_at) => {
                    let out = self.node.tick(self.now());
                    self.rounds += 1;
                    self.send_all(out);
                    self.flush_events();
                    self.publish();
                }
                cmd = self.commands.recv(), if commands_open => match cmd {
                    Some(Command::SetLocal(value, reply)) => {
                        let result = self.node.set_local(value);
                        let _ = reply.send(result);
                        self.flush_events();
                        self.publish();
                    }
                    None => commands_open = false,
                },
                incoming = self.transport.recv() => {
                    let Some((from, msg)) = incoming else {
                        tracing::warn!("gossip transport closed; driver stops");
                        break;
                    };
                    let is_ack = matches!(msg, Message::Ack { .. });
                    let now = self.now();
                    let out = self.node.handle(&from, msg, now);
                    self.send_all(out);
                    if is_ack {
                        self.acks += 1;
                    }
                    // The first ACK is what a joining node waits for.
                    if self.flush_events() || (is_ack && self.acks == 1) {
                        self.publish();
                    }
                }
            }
        }
        self.node
    }
}

// --- the in-memory twin ---------------------------------------------------

type Inbox = mpsc::UnboundedSender<(Addr, Message)>;

#[derive(Default)]
struct Hub {
    inboxes: HashMap<Addr, Inbox>,
    /// Ordered pairs (from, to) whose messages are dropped.
    blocked: Vec<(Addr, Addr)>,
}

/// An in-process network of [`MemoryTransport`]s, for tests of the driver
/// and of whatever sits on top of it. Delivery is immediate and in order;
/// [`MemoryNetwork::block`] drops messages between chosen pairs.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport reachable at `addr` (replacing any previous one there).
    pub fn transport(&self, addr: impl Into<Addr>) -> MemoryTransport {
        let addr = addr.into();
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().inboxes.insert(addr.clone(), tx);
        MemoryTransport {
            addr,
            network: self.clone(),
            rx,
        }
    }

    /// Drops (or, with `blocked = false`, delivers again) messages from
    /// `from` to `to`.
    pub fn block(&self, from: &Addr, to: &Addr, blocked: bool) {
        let mut hub = self.lock();
        hub.blocked.retain(|(f, t)| !(f == from && t == to));
        if blocked {
            hub.blocked.push((from.clone(), to.clone()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One node's end of a [`MemoryNetwork`].
pub struct MemoryTransport {
    addr: Addr,
    network: MemoryNetwork,
    rx: mpsc::UnboundedReceiver<(Addr, Message)>,
}

impl Transport for MemoryTransport {
    fn send(&mut self, to: &Addr, msg: Message) {
        let hub = self.network.lock();
        if hub.blocked.iter().any(|(f, t)| *f == self.addr && t == to) {
            return;
        }
        if let Some(inbox) = hub.inboxes.get(to) {
            // A closed inbox is a stopped node: the message is lost.
            let _ = inbox.send((self.addr.clone(), msg));
        }
    }

    fn recv(&mut self) -> impl Future<Output = Option<(Addr, Message)>> + Send {
        self.rx.recv()
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        let mut hub = self.network.lock();
        if hub.inboxes.get(&self.addr).is_some_and(|i| i.is_closed()) {
            hub.inboxes.remove(&self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::{Config, Status};

    fn start(
        net: &MemoryNetwork,
        i: usize,
        seeds: &[&str],
    ) -> (Handle, tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let addr = format!("10.0.0.{i}:7001");
        let mut config = Config::new("test");
        config.seeds = seeds.iter().map(|s| Addr::from(*s)).collect();
        let mut node = Node::new(
            NodeId::from(format!("n{i}").as_str()),
            Addr::from(addr.as_str()),
            1,
            config,
            ChaCha8Rng::seed_from_u64(i as u64),
        )
        .expect("valid config");
        node.set_local(AppState::Status(Status::Normal))
            .expect("small state");
        let (driver, handle) = driver(node, net.transport(addr.as_str()));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            driver
                .run(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        (handle, task, stop_tx)
    }

    fn all_live(h: &Handle, n: usize) -> bool {
        let s = h.snapshot();
        s.members.len() == n && s.members.iter().all(|m| m.live)
    }

    #[tokio::test(start_paused = true)]
    async fn four_nodes_converge_then_convict_a_stopped_one() {
        let net = MemoryNetwork::new();
        let seed = "10.0.0.1:7001";
        let mut nodes: Vec<_> = (1..=4).map(|i| start(&net, i, &[seed])).collect();
        let began = Instant::now();
        while !nodes.iter().all(|(h, _, _)| all_live(h, 4)) {
            assert!(began.elapsed() < Duration::from_secs(10), "no convergence");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Stop n4: the others convict it within the detector's bound
        // (threshold 8 at a 1 s mean: 18.4 s of silence, plus a round).
        let (_, task, stop) = nodes.pop().expect("four nodes");
        let _ = stop.send(());
        let _ = task.await;
        let mut events = nodes[0].0.events();
        let stopped = Instant::now();
        let down = |h: &Handle| h.snapshot().member("n4").is_some_and(|m| !m.live);
        while !nodes.iter().all(|(h, _, _)| down(h)) {
            assert!(stopped.elapsed() < Duration::from_secs(25), "no conviction");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(stopped.elapsed() >= Duration::from_secs(15));
        let mut saw_down = false;
        while let Ok(e) = events.try_recv() {
            saw_down |= matches!(e, Event::Down { ref node, .. } if node.as_str() == "n4");
        }
        assert!(saw_down, "a Down event is broadcast");
    }

    #[tokio::test(start_paused = true)]
    async fn set_local_spreads_to_every_peer() {
        let net = MemoryNetwork::new();
        let seed = "10.0.0.1:7001";
        let nodes: Vec<_> = (1..=3).map(|i| start(&net, i, &[seed])).collect();
        nodes[2]
            .0
            .set_local(AppState::Tokens(vec![5, 6].into()))
            .await
            .expect("driver runs");
        let began = Instant::now();
        let knows = |h: &Handle| {
            h.snapshot()
                .member("n3")
                .is_some_and(|m| m.state.tokens() == [5, 6])
        };
        while !nodes.iter().all(|(h, _, _)| knows(h)) {
            assert!(began.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(nodes[1].0.snapshot().acks > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_pair_still_converges_through_the_others() {
        let net = MemoryNetwork::new();
        let seed = "10.0.0.1:7001";
        let (a, b) = (Addr::from("10.0.0.2:7001"), Addr::from("10.0.0.3:7001"));
        net.block(&a, &b, true);
        net.block(&b, &a, true);
        let nodes: Vec<_> = (1..=3).map(|i| start(&net, i, &[seed])).collect();
        let began = Instant::now();
        while !nodes.iter().all(|(h, _, _)| all_live(h, 3)) {
            assert!(began.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn commands_fail_once_the_driver_stopped() {
        let net = MemoryNetwork::new();
        let (h, task, stop) = start(&net, 1, &[]);
        let _ = stop.send(());
        let _ = task.await;
        let r = h.set_local(AppState::Load(1)).await;
        assert!(matches!(r, Err(DriverError::Stopped)), "{r:?}");
    }
}
