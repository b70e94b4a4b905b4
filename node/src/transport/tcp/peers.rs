//! The TCP transport behind the seam: [`TcpPeers`] turns node ids into
//! listen addresses (from the cluster view) and the transport's
//! [`CallError`]s into [`PeerError`]s; [`GossipTransport`] carries the
//! gossip driver's messages as envelopes on the same connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use quorumkv_gossip::driver::Transport;
use quorumkv_gossip::{Addr, Message};
use tracing::debug;

use super::{CallError, Envelope, GossipInbox, Net, NetError};
use crate::cluster::Cluster;
use crate::proto::Request;
use crate::transport::{Call, Outstanding, PeerError, Peers};

/// The other nodes over a [`Net`], addressed by node id.
pub struct TcpPeers {
    net: Arc<Net>,
    cluster: Arc<Cluster>,
    outstanding: Outstanding,
}

impl TcpPeers {
    /// Calls over `net`, looking addresses up in `cluster`.
    pub fn new(net: Arc<Net>, cluster: Arc<Cluster>) -> TcpPeers {
        TcpPeers {
            net,
            cluster,
            outstanding: Outstanding::default(),
        }
    }
}

impl Peers for TcpPeers {
    fn call<'a>(&'a self, to: &'a str, req: Request, timeout: Duration) -> Call<'a> {
        Box::pin(async move {
            let Some(addr) = self.cluster.addr_of(to) else {
                return Err(PeerError::NotSent(format!("no known address for {to}")));
            };
            let _counted = self.outstanding.start(to);
            self.net
                .call(&addr, req, timeout)
                .await
                .map_err(|e| match e {
                    CallError::Unreachable(why) => {
                        PeerError::NotSent(format!("unreachable: {why}"))
                    }
                    CallError::QueueFull => {
                        PeerError::NotSent(format!("send queue to {to} is full"))
                    }
                    CallError::Stopped => PeerError::NotSent("this node is shutting down".into()),
                    CallError::Timeout => PeerError::Timeout(timeout.as_millis() as u64),
                    CallError::ConnectionLost => {
                        PeerError::Lost("connection lost before the answer".into())
                    }
                    CallError::Remote(r) => PeerError::Remote(r),
                    e @ CallError::TooLarge { .. } => PeerError::NotSent(e.to_string()),
                })
        })
    }

    fn outstanding(&self, to: &str) -> usize {
        self.outstanding.of(to)
    }

    fn all_outstanding(&self) -> Vec<(String, usize)> {
        self.outstanding.all()
    }

    fn peer_is_back(&self, node: &str) {
        if let Some(addr) = self.cluster.addr_of(node) {
            self.net.peer_is_back(&addr);
        }
    }
}

/// The gossip driver's view of a [`Net`]: gossip messages as envelopes.
pub struct GossipTransport {
    net: Arc<Net>,
    inbox: GossipInbox,
}

impl GossipTransport {
    /// Gossip over `net`, receiving from `inbox` (both from [`Net::bind`]).
    pub fn new(net: Arc<Net>, inbox: GossipInbox) -> Self {
        Self { net, inbox }
    }
}

impl Transport for GossipTransport {
    fn send(&mut self, to: &Addr, msg: Message) {
        match self.net.send(to.as_str(), Envelope::Gossip(msg)) {
            Ok(()) | Err(NetError::Stopped) => {}
            // Gossip tolerates loss; the transport counts the drop.
            Err(e) => debug!(peer = %to, error = %e, "gossip message dropped"),
        }
    }

    fn recv(&mut self) -> impl Future<Output = Option<(Addr, Message)>> + Send {
        self.inbox.recv()
    }
}
