//! The node's view of the cluster: who the members are, which are alive,
//! and the ring built from the tokens of the members that own ranges.
//!
//! The view is fed by gossip ([`crate::membership`]): every snapshot the
//! gossip driver publishes goes through [`Cluster::apply`], which rebuilds
//! the member list and — only when the owners' tokens, states or racks
//! changed — the ring. Readers (`/cluster/members`, the coordinator) take
//! an `Arc` of the current view and never wait for gossip; a view is
//! replaced whole, never edited in place.
//!
//! The ring is built from the members announcing `normal` (and `leaving`:
//! a leaving node keeps its ranges until it has handed them over) with
//! their gossiped tokens. Down members stay in the ring — the failure
//! detector says who answers, not who owns. Joining and standby members
//! are not in it (pending ranges come with cluster changes, issue 6).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use quorumkv_gossip::{Status, driver::Snapshot};
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

impl From<Status> for NodeState {
    fn from(s: Status) -> Self {
        match s {
            Status::Standby => NodeState::Standby,
            Status::Joining => NodeState::Joining,
            Status::Normal => NodeState::Normal,
            Status::Leaving => NodeState::Leaving,
            Status::Left => NodeState::Left,
        }
    }
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

/// What the ring is built from: `(id, tokens, rack)` of each owner, in id
/// order. Compared between snapshots so that the ring is rebuilt only when
/// it would change.
type Owners = Vec<(String, Vec<Token>, Option<String>)>;

/// One consistent view: members, liveness and the ring.
struct View {
    members: Arc<Vec<Member>>,
    live: HashSet<String>,
    owners: Owners,
    ring: Arc<Ring>,
}

/// The cluster as this node sees it.
pub struct Cluster {
    local: LocalNode,
    view: RwLock<Arc<View>>,
}

/// Whether a member in `state` owns ranges on the ring.
fn owns_ranges(state: NodeState) -> bool {
    matches!(state, NodeState::Normal | NodeState::Leaving)
}

/// Builds a ring from its owners.
fn build_ring(owners: &Owners) -> Ring {
    let mut ring = Ring::new();
    for (id, tokens, rack) in owners {
        ring.insert_node(id, tokens);
        if rack.is_some() {
            ring.set_rack(id, rack.as_deref());
        }
    }
    ring
}

fn owners_of(members: &[Member]) -> Owners {
    members
        .iter()
        .filter(|m| owns_ranges(m.state) && !m.tokens.is_empty())
        .map(|m| (m.id.clone(), m.tokens.clone(), m.rack.clone()))
        .collect()
}

/// The ring that a gossip snapshot describes (what a joining node
/// allocates its tokens against).
pub fn ring_of(snapshot: &Snapshot) -> Ring {
    build_ring(&owners_of(&members_of(snapshot)))
}

/// API.md's member objects for every member of `snapshot`, in id order.
pub fn members_of(snapshot: &Snapshot) -> Vec<Member> {
    snapshot
        .members
        .iter()
        .map(|m| {
            let s = &m.state;
            Member {
                id: m.id.to_string(),
                gossip_addr: s.gossip_addr().map(|a| a.to_string()).unwrap_or_default(),
                http_addr: s.http_addr().unwrap_or_default().to_string(),
                status: if m.live || m.is_local { "up" } else { "down" },
                // A member whose status has not reached us yet has no ranges.
                state: s.status().map_or(NodeState::Standby, NodeState::from),
                phi: if m.is_local { 0.0 } else { m.phi },
                generation: s.generation(),
                heartbeat: s.heartbeat(),
                tokens: s.tokens().to_vec(),
                rack: s.rack().map(str::to_string),
            }
        })
        .collect()
}

impl Cluster {
    /// A cluster of this node alone, with `tokens` (empty: standby): the
    /// view before gossip has run.
    pub fn single(local: LocalNode, tokens: Vec<Token>) -> Cluster {
        let state = if tokens.is_empty() {
            NodeState::Standby
        } else {
            NodeState::Normal
        };
        let me = Member {
            id: local.id.clone(),
            gossip_addr: local.listen.to_string(),
            http_addr: local.http.to_string(),
            status: "up",
            state,
            phi: 0.0,
            generation: local.generation,
            heartbeat: 0,
            tokens,
            rack: local.rack.clone(),
        };
        let members = vec![me];
        let owners = owners_of(&members);
        let view = View {
            ring: Arc::new(build_ring(&owners)),
            live: HashSet::from([local.id.clone()]),
            members: Arc::new(members),
            owners,
        };
        Cluster {
            local,
            view: RwLock::new(Arc::new(view)),
        }
    }

    /// Replaces the view with what `snapshot` says; the ring is rebuilt
    /// only if its owners changed. Returns whether the ring changed.
    pub fn apply(&self, snapshot: &Snapshot) -> bool {
        let members = members_of(snapshot);
        let owners = owners_of(&members);
        let live = members
            .iter()
            .filter(|m| m.status == "up")
            .map(|m| m.id.clone())
            .collect();
        let old = self.current();
        let changed = old.owners != owners;
        let ring = if changed {
            Arc::new(build_ring(&owners))
        } else {
            old.ring.clone()
        };
        let view = View {
            members: Arc::new(members),
            live,
            owners,
            ring,
        };
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        changed
    }

    fn current(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This node.
    pub fn local(&self) -> &LocalNode {
        &self.local
    }

    /// The current ring (cheap to clone; replaced whole on changes).
    pub fn ring(&self) -> Arc<Ring> {
        self.current().ring.clone()
    }

    /// Whether `node` is believed alive (this node always is).
    pub fn is_alive(&self, node: &str) -> bool {
        node == self.local.id || self.current().live.contains(node)
    }

    /// The internode (`--listen`) address of a member, if known.
    pub fn addr_of(&self, node: &str) -> Option<String> {
        let view = self.current();
        view.members
            .iter()
            .find(|m| m.id == node)
            .map(|m| m.gossip_addr.clone())
            .filter(|a| !a.is_empty())
    }

    /// The ids of every member but this node, in id order.
    pub fn others(&self) -> Vec<String> {
        self.current()
            .members
            .iter()
            .filter(|m| m.id != self.local.id)
            .map(|m| m.id.clone())
            .collect()
    }

    /// Every known member, in id order.
    pub fn members(&self) -> Vec<Member> {
        self.current().members.as_ref().clone()
    }
}

#[cfg(test)]
mod tests {
    use quorumkv_gossip::driver::MemberSnapshot;
    use quorumkv_gossip::{AppState, Delta, EndpointState, Versioned};

    use super::*;

    fn member(id: &str, status: Status, tokens: &[u64], live: bool) -> MemberSnapshot {
        let mut state = EndpointState::new(7);
        let values = [
            AppState::Status(status),
            AppState::Tokens(tokens.into()),
            AppState::HttpAddr(format!("{id}:8001").into()),
        ];
        state.apply(&Delta {
            node: id.into(),
            generation: 7,
            heartbeat: Some(4),
            states: values
                .into_iter()
                .enumerate()
                .map(|(i, value)| Versioned {
                    version: i as u64 + 1,
                    value,
                })
                .collect(),
        });
        MemberSnapshot {
            id: id.into(),
            state,
            live,
            phi: if live { 0.5 } else { 9.0 },
            is_local: id == "n1",
        }
    }

    fn local() -> LocalNode {
        LocalNode {
            id: "n1".into(),
            http: "127.0.0.1:8001".parse().expect("addr"),
            listen: "127.0.0.1:7001".parse().expect("addr"),
            generation: 7,
            rack: None,
        }
    }

    #[test]
    fn the_ring_holds_normal_members_only_and_down_ones_stay_in_it() {
        let c = Cluster::single(local(), vec![1]);
        let snap = Snapshot {
            members: vec![
                member("n1", Status::Normal, &[1], true),
                member("n2", Status::Normal, &[2], false),
                member("n3", Status::Standby, &[], true),
                member("n4", Status::Joining, &[4], true),
            ],
            ..Snapshot::default()
        };
        assert!(c.apply(&snap), "the ring changed");
        let ring = c.ring();
        assert_eq!(ring.nodes(), ["n1", "n2"]);
        assert!(c.is_alive("n1") && !c.is_alive("n2") && c.is_alive("n3"));
        let ms = c.members();
        assert_eq!(ms.len(), 4);
        assert_eq!((ms[1].status, ms[1].state), ("down", NodeState::Normal));
        assert_eq!(ms[1].http_addr, "n2:8001");
        assert_eq!(ms[2].state, NodeState::Standby);
        // Same owners again: the ring is not rebuilt.
        assert!(!c.apply(&snap));
        assert!(Arc::ptr_eq(&ring, &c.ring()));
    }

    #[test]
    fn a_single_node_is_normal_with_tokens_and_standby_without() {
        let c = Cluster::single(local(), vec![3, 9]);
        assert_eq!(c.members()[0].state, NodeState::Normal);
        assert_eq!(c.ring().vnode_count(), 2);
        let c = Cluster::single(local(), vec![]);
        assert_eq!(c.members()[0].state, NodeState::Standby);
        assert!(c.ring().is_empty());
    }
}
