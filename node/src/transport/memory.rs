//! An in-process network: several nodes in one process, their RPC and
//! gossip carried by channels instead of sockets, with faults per directed
//! pair of nodes.
//!
//! It is the transport of the simulation harness (`node/src/sim/`): every
//! node of a simulated cluster binds to one [`Network`] and gets the same
//! three things the TCP transport gives a real node — a [`Peers`] handle,
//! a gossip transport and a request inbox — so that the services under
//! test are exactly the ones a real node runs. Under tokio's paused clock
//! the delays cost no real time, so a scenario that spans minutes of
//! gossip and timeouts runs in milliseconds.
//!
//! What it models, per directed pair `from → to` ([`Link`]):
//! * **latency**: a fixed one-way delay plus uniform jitter, drawn from the
//!   network's seeded generator;
//! * **drops**: each message lost with a probability;
//! * **partitions**: every message lost (one way, or both with
//!   [`Network::partition`]).
//!
//! A lost request or response behaves as on a real network: the caller
//! hears nothing and times out (`PeerError::Timeout`), while a request that
//! arrived is still applied. A node that is not serving (never started, or
//! [`Network::crash`]ed) refuses at once (`PeerError::NotSent`), as a
//! closed port does. Every request and response is encoded to MessagePack
//! and decoded again on the way, so that what crosses this network could
//! cross the real one.
//!
//! Caveat: per-pair FIFO order is not kept when jitter is set (each
//! message is delayed independently), which TCP would keep; gossip and
//! the quorum protocol tolerate reordering, and tests that want order set
//! no jitter.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quorumkv_gossip::driver::Transport;
use quorumkv_gossip::{Addr, Message};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use super::{Answer, Call, Handler, Outstanding, PeerError, Peers, Requests};
use crate::proto::{RemoteError, Request, Response};

/// Gossip messages buffered per node, as the TCP transport does.
const GOSSIP_INBOX: usize = 1024;

/// The faults of one direction between two nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Link {
    /// One-way delay of every message.
    pub latency: Duration,
    /// Extra delay, uniform in `[0, jitter]`, drawn per message.
    pub jitter: Duration,
    /// Probability that a message is lost.
    pub drop: f64,
    /// Every message is lost.
    pub cut: bool,
}

/// One simulated network; cheap to clone (a handle).
#[derive(Clone)]
pub struct Network {
    state: Arc<Mutex<State>>,
}

struct State {
    /// Node ids by their (never bound) listen address, for gossip.
    ids: HashMap<String, String>,
    /// The nodes that serve, by id.
    serving: HashMap<String, Arc<dyn Handler>>,
    /// Gossip inboxes by node id.
    gossip: HashMap<String, mpsc::Sender<(Addr, Message)>>,
    /// The listen address of each node id.
    addrs: HashMap<String, String>,
    /// Faults per directed pair; absent: [`State::default_link`].
    links: HashMap<(String, String), Link>,
    default_link: Link,
    rng: ChaCha8Rng,
    /// Messages delivered and lost, for tests that check a fault bit.
    delivered: u64,
    lost: u64,
}

/// What happens to one message.
enum Fate {
    Arrives(Duration),
    Lost,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn fate(&mut self, from: &str, to: &str) -> Fate {
        let link = self
            .links
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or(self.default_link);
        if link.cut || (link.drop > 0.0 && self.rng.random_bool(link.drop.min(1.0))) {
            self.lost += 1;
            return Fate::Lost;
        }
        self.delivered += 1;
        let jitter = if link.jitter.is_zero() {
            Duration::ZERO
        } else {
            link.jitter.mul_f64(self.rng.random::<f64>())
        };
        Fate::Arrives(link.latency + jitter)
    }
}

impl Network {
    /// An empty network whose random choices (drops, jitter) follow `seed`.
    pub fn new(seed: u64) -> Network {
        Network {
            state: Arc::new(Mutex::new(State {
                ids: HashMap::new(),
                serving: HashMap::new(),
                gossip: HashMap::new(),
                addrs: HashMap::new(),
                links: HashMap::new(),
                default_link: Link::default(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                delivered: 0,
                lost: 0,
            })),
        }
    }

    /// Binds node `id` at listen address `addr` (gossip's name for it):
    /// returns its peers handle, its gossip transport, and its request
    /// inbox, which serves once given the node's handler. Binding an id
    /// again (a restart) replaces the old binding.
    pub fn bind(&self, id: &str, addr: &str) -> (Arc<MemoryPeers>, MemoryGossip, MemoryRequests) {
        let (tx, rx) = mpsc::channel(GOSSIP_INBOX);
        let mut s = lock(&self.state);
        s.ids.insert(addr.to_string(), id.to_string());
        s.addrs.insert(id.to_string(), addr.to_string());
        s.gossip.insert(id.to_string(), tx);
        s.serving.remove(id);
        drop(s);
        let peers = Arc::new(MemoryPeers {
            network: self.clone(),
            me: id.to_string(),
            outstanding: Outstanding::default(),
        });
        let gossip = MemoryGossip {
            network: self.clone(),
            me: id.to_string(),
            addr: addr.to_string(),
            inbox: rx,
        };
        let requests = MemoryRequests {
            network: self.clone(),
            me: id.to_string(),
        };
        (peers, gossip, requests)
    }

    /// Stops node `id` from serving and hearing gossip, as a crashed
    /// process: calls to it are refused at once.
    pub fn crash(&self, id: &str) {
        let mut s = lock(&self.state);
        s.serving.remove(id);
        s.gossip.remove(id);
    }

    /// Sets the faults of messages from `from` to `to`.
    pub fn set_link(&self, from: &str, to: &str, link: Link) {
        lock(&self.state)
            .links
            .insert((from.to_string(), to.to_string()), link);
    }

    /// Sets the faults of every pair without a link of its own.
    pub fn set_default_link(&self, link: Link) {
        lock(&self.state).default_link = link;
    }

    /// Cuts every message between the nodes of `a` and those of `b`, both
    /// ways.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        for x in a {
            for y in b {
                self.cut_one_way(x, y);
                self.cut_one_way(y, x);
            }
        }
    }

    /// Cuts messages from `from` to `to` only: `to` no longer hears
    /// `from`, while `from` still hears `to`.
    pub fn cut_one_way(&self, from: &str, to: &str) {
        let mut s = lock(&self.state);
        let key = (from.to_string(), to.to_string());
        let mut link = s.links.get(&key).copied().unwrap_or(s.default_link);
        link.cut = true;
        s.links.insert(key, link);
    }

    /// Ends every cut (latencies and drop rates stay).
    pub fn heal(&self) {
        let mut s = lock(&self.state);
        for link in s.links.values_mut() {
            link.cut = false;
        }
    }

    /// Messages delivered and lost so far.
    pub fn counts(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.delivered, s.lost)
    }

    /// The ids of the nodes that serve now.
    pub fn serving(&self) -> HashSet<String> {
        lock(&self.state).serving.keys().cloned().collect()
    }

    fn fate(&self, from: &str, to: &str) -> Fate {
        lock(&self.state).fate(from, to)
    }

    fn handler(&self, id: &str) -> Option<Arc<dyn Handler>> {
        lock(&self.state).serving.get(id).cloned()
    }
}

/// One node's outbound calls on a [`Network`].
pub struct MemoryPeers {
    network: Network,
    me: String,
    outstanding: Outstanding,
}

/// Encodes and decodes `value` as the TCP transport's frames would.
fn wire<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> Result<T, String> {
    let bytes = rmp_serde::to_vec(value).map_err(|e| format!("cannot encode: {e}"))?;
    rmp_serde::from_slice(&bytes).map_err(|e| format!("cannot decode: {e}"))
}

impl MemoryPeers {
    async fn exchange(
        &self,
        to: &str,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        let Some(handler) = self.network.handler(to) else {
            return Err(PeerError::NotSent(format!(
                "unreachable: {to} is not serving"
            )));
        };
        let req = wire(&req).map_err(PeerError::NotSent)?;
        let lost = || PeerError::Timeout(timeout.as_millis() as u64);
        let Fate::Arrives(there) = self.network.fate(&self.me, to) else {
            tokio::time::sleep(timeout).await;
            return Err(lost());
        };
        tokio::time::sleep(there).await;
        // The callee runs the request in a task of its own with the
        // caller's deadline, as the TCP transport does: it is applied even
        // when the caller stops waiting.
        let work: Answer = handler.handle(&self.me, req);
        let answer = tokio::spawn(async move {
            tokio::time::timeout(timeout, work)
                .await
                .unwrap_or(Err(RemoteError::Deadline))
        })
        .await
        .map_err(|e| PeerError::Lost(format!("the handler failed: {e}")))?;
        let answer = match answer {
            Ok(resp) => Ok(wire(&resp).map_err(PeerError::Lost)?),
            Err(e) => Err(PeerError::Remote(e)),
        };
        let Fate::Arrives(back) = self.network.fate(to, &self.me) else {
            std::future::pending::<()>().await;
            return Err(lost());
        };
        tokio::time::sleep(back).await;
        answer
    }
}

impl Peers for MemoryPeers {
    fn call<'a>(&'a self, to: &'a str, req: Request, timeout: Duration) -> Call<'a> {
        Box::pin(async move {
            let _counted = self.outstanding.start(to);
            match tokio::time::timeout(timeout, self.exchange(to, req, timeout)).await {
                Ok(r) => r,
                Err(_) => Err(PeerError::Timeout(timeout.as_millis() as u64)),
            }
        })
    }

    fn outstanding(&self, to: &str) -> usize {
        self.outstanding.of(to)
    }

    fn all_outstanding(&self) -> Vec<(String, usize)> {
        self.outstanding.all()
    }

    fn peer_is_back(&self, _node: &str) {}
}

/// One node's request inbox on a [`Network`].
pub struct MemoryRequests {
    network: Network,
    me: String,
}

impl Requests for MemoryRequests {
    fn serve(self: Box<Self>, handler: Arc<dyn Handler>) {
        lock(&self.network.state)
            .serving
            .insert(self.me.clone(), handler);
    }
}

/// One node's gossip on a [`Network`].
pub struct MemoryGossip {
    network: Network,
    me: String,
    addr: String,
    inbox: mpsc::Receiver<(Addr, Message)>,
}

impl Transport for MemoryGossip {
    fn send(&mut self, to: &Addr, msg: Message) {
        let (target, fate) = {
            let mut s = lock(&self.network.state);
            let Some(id) = s.ids.get(to.as_str()).cloned() else {
                return;
            };
            let Some(tx) = s.gossip.get(&id).cloned() else {
                return;
            };
            (tx, s.fate(&self.me, &id))
        };
        let Fate::Arrives(delay) = fate else { return };
        let from = Addr::from(self.addr.as_str());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // A full inbox drops the message, as the TCP transport does.
            let _ = target.try_send((from, msg));
        });
    }

    fn recv(&mut self) -> impl Future<Output = Option<(Addr, Message)>> + Send {
        self.inbox.recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Handler for Echo {
        fn handle(&self, _from: &str, req: Request) -> Answer {
            Box::pin(async move {
                match req {
                    Request::Ping => Ok(Response::Pong),
                    _ => Err(RemoteError::Bad("only pings".into())),
                }
            })
        }
    }

    fn serve(net: &Network, id: &str) -> Arc<MemoryPeers> {
        let (peers, _gossip, requests) = net.bind(id, &format!("{id}:7000"));
        Box::new(requests).serve(Arc::new(Echo));
        peers
    }

    const T: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_call_takes_both_legs_latency_and_gets_its_answer() {
        let net = Network::new(1);
        let a = serve(&net, "a");
        serve(&net, "b");
        net.set_link(
            "a",
            "b",
            Link {
                latency: Duration::from_millis(30),
                ..Link::default()
            },
        );
        net.set_link(
            "b",
            "a",
            Link {
                latency: Duration::from_millis(12),
                ..Link::default()
            },
        );
        let t0 = tokio::time::Instant::now();
        assert!(matches!(
            a.call("b", Request::Ping, T).await,
            Ok(Response::Pong)
        ));
        assert_eq!(t0.elapsed(), Duration::from_millis(42));
        assert_eq!(a.outstanding("b"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partition_times_calls_out_and_heal_restores_them() {
        let net = Network::new(1);
        let a = serve(&net, "a");
        serve(&net, "b");
        net.partition(&["a"], &["b"]);
        let t0 = tokio::time::Instant::now();
        let r = a.call("b", Request::Ping, T).await;
        assert!(matches!(r, Err(PeerError::Timeout(1000))), "{r:?}");
        assert_eq!(t0.elapsed(), T);
        net.heal();
        assert!(matches!(
            a.call("b", Request::Ping, T).await,
            Ok(Response::Pong)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_one_way_cut_loses_the_answer_but_the_request_arrives() {
        let net = Network::new(1);
        let a = serve(&net, "a");
        serve(&net, "b");
        net.cut_one_way("b", "a");
        let r = a.call("b", Request::Ping, T).await;
        assert!(matches!(r, Err(PeerError::Timeout(_))), "{r:?}");
        // One message delivered (the request), one lost (the answer).
        assert_eq!(net.counts(), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashed_node_refuses_at_once() {
        let net = Network::new(1);
        let a = serve(&net, "a");
        serve(&net, "b");
        net.crash("b");
        let t0 = tokio::time::Instant::now();
        let r = a.call("b", Request::Ping, T).await;
        assert!(matches!(r, Err(PeerError::NotSent(_))), "{r:?}");
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(!net.serving().contains("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn gossip_reaches_the_addressed_node_with_the_senders_address() {
        let net = Network::new(1);
        let (_pa, mut ga, _ra) = net.bind("a", "a:7000");
        let (_pb, mut gb, _rb) = net.bind("b", "b:7000");
        let syn = Message::Syn {
            cluster: "c".into(),
            digests: vec![],
        };
        ga.send(&Addr::from("b:7000"), syn);
        let (from, msg) = gb.recv().await.expect("delivered");
        assert_eq!((from.as_str(), msg.kind()), ("a:7000", "syn"));
        net.cut_one_way("b", "a");
        gb.send(&Addr::from("a:7000"), msg);
        let got = tokio::time::timeout(T, ga.recv()).await;
        assert!(got.is_err(), "cut: nothing may arrive");
    }

    #[tokio::test(start_paused = true)]
    async fn drops_follow_the_seed() {
        let run = |seed| async move {
            let net = Network::new(seed);
            let a = serve(&net, "a");
            serve(&net, "b");
            net.set_default_link(Link {
                drop: 0.5,
                ..Link::default()
            });
            let mut outcomes = Vec::new();
            for _ in 0..20 {
                outcomes.push(a.call("b", Request::Ping, T).await.is_ok());
            }
            outcomes
        };
        let first = run(7).await;
        assert_eq!(first, run(7).await);
        assert!(first.contains(&true) && first.contains(&false), "{first:?}");
    }
}
