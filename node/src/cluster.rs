//! The node's view of the cluster: who the members are, which are alive,
//! and the ring built from the tokens of the `normal` members.
//!
//! Until gossip is wired in, the view holds this node alone; the ring and
//! the liveness answers already go through this one type so the
//! coordinator does not change when membership starts to spread.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use quorumkv_ring::{Ring, Token};
use serde::Serialize;

/// Membership state of a node (API.md `state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// In gossip, without tokens: waiting for a plan to be applied.
    Standby,
    /// Tokens announced, receiving data.
    Joining,
    /// Serving its ranges.
    Normal,
    /// Handing its ranges to others.
    Leaving,
    /// Gone from the ring.
    Left,
}

/// One member as `GET /cluster/members` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// Gossip and internode address.
    pub gossip_addr: String,
    /// HTTP API address.
    pub http_addr: String,
    /// `up` or `down`, from the failure detector.
    pub status: &'static str,
    /// Membership state.
    pub state: NodeState,
    /// The failure detector's suspicion level.
    pub phi: f64,
    /// Start generation (grows across restarts).
    pub generation: u64,
    /// Heartbeat version within the generation.
    pub heartbeat: u64,
    /// Ring tokens.
    pub tokens: Vec<Token>,
    /// Rack, if configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// Static facts about this node.
#[derive(Clone, Debug)]
pub struct LocalNode {
    /// Node id.
    pub id: String,
    /// HTTP address.
    pub http: SocketAddr,
    /// Gossip and internode address.
    pub listen: SocketAddr,
    /// Generation of this process.
    pub generation: u64,
    /// Rack.
    pub rack: Option<String>,
}

/// The cluster as this node sees it.
pub struct Cluster {
    local: LocalNode,
    tokens: RwLock<Vec<Token>>,
    ring: RwLock<Arc<Ring>>,
}

impl Cluster {
    /// A cluster of this node alone, with `tokens` (empty: standby).
    pub fn single(local: LocalNode, tokens: Vec<Token>) -> Cluster {
        let mut ring = Ring::new();
        ring.insert_node(&local.id, &tokens);
        Cluster {
            local,
            tokens: RwLock::new(tokens),
            ring: RwLock::new(Arc::new(ring)),
        }
    }

    /// This node.
    pub fn local(&self) -> &LocalNode {
        &self.local
    }

    /// The current ring (cheap to clone; replaced whole on changes).
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `node` is believed alive.
    pub fn is_alive(&self, node: &str) -> bool {
        node == self.local.id
    }

    /// Every known member.
    pub fn members(&self) -> Vec<Member> {
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let state = if tokens.is_empty() {
            NodeState::Standby
        } else {
            NodeState::Normal
        };
        vec![Member {
            id: self.local.id.clone(),
            gossip_addr: self.local.listen.to_string(),
            http_addr: self.local.http.to_string(),
            status: "up",
            state,
            phi: 0.0,
            generation: self.local.generation,
            heartbeat: 0,
            tokens,
            rack: self.local.rack.clone(),
        }]
    }
}
