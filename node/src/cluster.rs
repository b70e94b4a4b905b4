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
//! are not in it.
//!
//! # The future ring and pending owners
//!
//! While the cluster changes, the view also keeps the *future* ring: the
//! owners once every change in flight is done — `normal` and `joining`
//! members with tokens, without `leaving` ones and without nodes being
//! removed. For a key, its *pending* owners are the future preference
//! list minus the current one ([`pending_of`]): coordinators send them
//! every write on top of the current replicas and need one more
//! acknowledgement per pending owner (see [`crate::coordinator`]), so
//! nothing acknowledged is missing when the change completes. Reads use
//! the current ring only. When nothing is joining, leaving or being
//! removed, there is no future ring and no key has pending owners.
//!
//! # Replacing members
//!
//! A member that restarted on an empty data dir under an id the ring
//! knows (its disk was lost) takes its tokens back but holds nothing: it
//! announces [`REPLACING`] until it has repaired every range it replicates
//! with every other replica of it (`membership::replace`). Meanwhile it
//! keeps its place on the ring — keys are placed exactly as before — but
//! [`Cluster::is_alive`] says no for it, on every node and on itself: it
//! counts toward no `r` or `w`, reads do not ask it, it mints no version,
//! and writes for it are hinted and delivered once it is done. Counting
//! it would let a quorum of "replicas" that never received a write
//! answer 404 for it.
//!
//! A dead node is removed (`POST /cluster/removenode`) by another member,
//! which gossips it under its own application state [`REMOVING`]; once the
//! ranges are re-replicated it moves it to [`REMOVED`] (a comma-separated
//! list). Every node's view applies both, whoever announced them: a node
//! being removed is out of the future ring, a removed node out of both.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use quorumkv_gossip::{AppState, Key, Status, driver::Snapshot};
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
    /// Restarted without its data and still restoring it (see the module
    /// docs): on the ring, but counted as down. Shown only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replacing: bool,
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
    /// Members up by the failure detector and not replacing.
    live: HashSet<String>,
    /// Members up by the failure detector, replacing or not.
    up: HashSet<String>,
    /// Members announcing [`REPLACING`].
    replacing: HashSet<String>,
    /// Every member's internode address, by id.
    addrs: HashMap<String, Arc<str>>,
    owners: Owners,
    ring: Arc<Ring>,
    /// The ring's node ids by node index, shared.
    ring_ids: Arc<[NodeId]>,
    /// Owners once the changes in flight are done.
    future_owners: Owners,
    /// The future ring, only while it differs from `ring`.
    future: Option<Arc<Ring>>,
    /// The future ring's node ids by node index.
    future_ids: Arc<[NodeId]>,
    /// Nodes being removed, each with the member removing it.
    removing: BTreeMap<String, String>,
    /// Nodes removed for good.
    removed: BTreeSet<String>,
}

/// A node's id as placements hand it out: shared, so that putting it in a
/// request's targets costs a reference count, not an allocation.
pub type NodeId = Arc<str>;

/// `ring`'s node ids by node index, shared.
fn ids_of(ring: &Ring) -> Arc<[NodeId]> {
    ring.nodes()
        .iter()
        .map(|n| NodeId::from(n.as_str()))
        .collect()
}

/// The preference list of `token` on `ring` as shared ids (`ids` from
/// [`ids_of`] of the same ring).
fn preference(ring: &Ring, ids: &[NodeId], token: Token, n: usize) -> Vec<NodeId> {
    let mut idx = Vec::with_capacity(n);
    ring.preference_into(token, n, &mut idx);
    idx.iter()
        .filter_map(|&i| ids.get(i as usize).cloned())
        .collect()
}

fn addrs_of(members: &[Member]) -> HashMap<String, Arc<str>> {
    members
        .iter()
        .filter(|m| !m.gossip_addr.is_empty())
        .map(|m| (m.id.clone(), Arc::from(m.gossip_addr.as_str())))
        .collect()
}

/// The gossip application state (a `Custom` one) under which a member
/// announces the node it is removing (empty: none).
pub const REMOVING: &str = "removing";
/// The gossip application state under which a member lists the nodes it
/// removed, comma-separated.
pub const REMOVED: &str = "removed";
/// The gossip application state under which a member says that it is
/// restoring the data of the ranges it took back after losing its disk
/// (`1`; empty or absent: it is not).
pub const REPLACING: &str = "replacing";

/// A change in flight, as the view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The node joining, leaving or being removed.
    pub node: String,
    /// `join`, `decommission` or `removenode`.
    pub kind: &'static str,
    /// Who drives it (the node itself, or the remover).
    pub by: String,
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

/// The owners once the changes in flight complete: normal and joining
/// members with tokens, minus the nodes being removed or removed.
fn future_owners_of(members: &[Member], gone: impl Fn(&str) -> bool) -> Owners {
    members
        .iter()
        .filter(|m| matches!(m.state, NodeState::Normal | NodeState::Joining))
        .filter(|m| !m.tokens.is_empty() && !gone(&m.id))
        .map(|m| (m.id.clone(), m.tokens.clone(), m.rack.clone()))
        .collect()
}

/// A `Custom` application state of a member, if announced.
fn custom<'a>(m: &'a quorumkv_gossip::driver::MemberSnapshot, name: &str) -> Option<&'a str> {
    match &m.state.get(&Key::Custom(name.into()))?.value {
        AppState::Custom(_, v) => Some(v),
        _ => None,
    }
}

/// Who is being removed (by whom) and who was removed, per every member's
/// announcements.
fn removals_of(snapshot: &Snapshot) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut removing = BTreeMap::new();
    let mut removed = BTreeSet::new();
    for m in &snapshot.members {
        if let Some(v) = custom(m, REMOVED) {
            removed.extend(v.split(',').filter(|s| !s.is_empty()).map(String::from));
        }
        if let Some(v) = custom(m, REMOVING).filter(|v| !v.is_empty()) {
            removing.insert(v.to_string(), m.id.to_string());
        }
    }
    removing.retain(|n, _| !removed.contains(n));
    (removing, removed)
}

/// The ring that a gossip snapshot describes (what a joining node
/// allocates its tokens against).
pub fn ring_of(snapshot: &Snapshot) -> Ring {
    let (_, removed) = removals_of(snapshot);
    let mut members = members_of(snapshot);
    members.retain(|m| !removed.contains(&m.id));
    build_ring(&owners_of(&members))
}

/// The pending owners of `token` at replication `n`: the nodes of its
/// future preference list that are not in its current one, in future
/// preference order. Empty when there is no future ring. `*_ids` are the
/// rings' node ids by index ([`ids_of`]).
fn pending_of(
    current: (&Ring, &[NodeId]),
    future: Option<(&Ring, &[NodeId])>,
    token: Token,
    n: usize,
) -> Vec<NodeId> {
    let Some((future, future_ids)) = future else {
        return Vec::new();
    };
    let now = preference(current.0, current.1, token, n);
    preference(future, future_ids, token, n)
        .into_iter()
        .filter(|f| !now.contains(f))
        .collect()
}

/// [`pending_of`] in a view.
fn pending_ids(v: &View, token: Token, n: usize) -> Vec<NodeId> {
    pending_of(
        (&v.ring, &v.ring_ids),
        v.future.as_deref().map(|f| (f, &*v.future_ids)),
        token,
        n,
    )
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
                replacing: custom(m, REPLACING).is_some_and(|v| !v.is_empty()),
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
            replacing: false,
        };
        let members = vec![me];
        let owners = owners_of(&members);
        let ring = build_ring(&owners);
        let view = View {
            ring_ids: ids_of(&ring),
            ring: Arc::new(ring),
            live: HashSet::from([local.id.clone()]),
            up: HashSet::from([local.id.clone()]),
            replacing: HashSet::new(),
            addrs: addrs_of(&members),
            members: Arc::new(members),
            future_owners: owners.clone(),
            owners,
            future: None,
            future_ids: Arc::from(Vec::new()),
            removing: BTreeMap::new(),
            removed: BTreeSet::new(),
        };
        Cluster {
            local,
            view: RwLock::new(Arc::new(view)),
        }
    }

    /// Replaces the view with what `snapshot` says; the ring is rebuilt
    /// only if its owners changed. Returns whether the ring changed.
    pub fn apply(&self, snapshot: &Snapshot) -> bool {
        let (removing, removed) = removals_of(snapshot);
        let mut members = members_of(snapshot);
        for m in &mut members {
            if removed.contains(&m.id) {
                m.state = NodeState::Left;
            }
        }
        let owners = owners_of(&members);
        let future_owners = future_owners_of(&members, |id| {
            removing.contains_key(id) || removed.contains(id)
        });
        let replacing: HashSet<String> = members
            .iter()
            .filter(|m| m.replacing)
            .map(|m| m.id.clone())
            .collect();
        let up: HashSet<String> = members
            .iter()
            .filter(|m| m.status == "up")
            .map(|m| m.id.clone())
            .collect();
        let live = up.difference(&replacing).cloned().collect();
        let old = self.current();
        let changed = old.owners != owners;
        let (ring, ring_ids) = if changed {
            let ring = build_ring(&owners);
            let ids = ids_of(&ring);
            (Arc::new(ring), ids)
        } else {
            (old.ring.clone(), old.ring_ids.clone())
        };
        let (future, future_ids) = if future_owners == owners {
            (None, Arc::from(Vec::new()))
        } else if old.future_owners == future_owners && old.future.is_some() {
            (old.future.clone(), old.future_ids.clone())
        } else {
            let f = build_ring(&future_owners);
            let ids = ids_of(&f);
            (Some(Arc::new(f)), ids)
        };
        let view = View {
            addrs: addrs_of(&members),
            members: Arc::new(members),
            live,
            up,
            replacing,
            owners,
            ring,
            ring_ids,
            future_owners,
            future,
            future_ids,
            removing,
            removed,
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

    /// Whether `node` is believed alive and may count toward `r` and `w`:
    /// up by the failure detector (this node always is) and not replacing
    /// (see the module docs; this node neither, while it replaces).
    pub fn is_alive(&self, node: &str) -> bool {
        let v = self.current();
        if v.replacing.contains(node) {
            return false;
        }
        node == self.local.id || v.live.contains(node)
    }

    /// Whether `node` is up by the failure detector, replacing or not:
    /// reachable for an exchange such as anti-entropy, though it may not
    /// count toward `r` and `w` ([`Cluster::is_alive`]).
    pub fn is_up(&self, node: &str) -> bool {
        node == self.local.id || self.current().up.contains(node)
    }

    /// Whether `node` announces that it is replacing (restoring the data
    /// it lost).
    pub fn is_replacing(&self, node: &str) -> bool {
        self.current().replacing.contains(node)
    }

    /// The internode (`--listen`) address of a member, if known.
    pub fn addr_of(&self, node: &str) -> Option<Arc<str>> {
        self.current().addrs.get(node).cloned()
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

    /// One member, if known.
    pub fn member(&self, id: &str) -> Option<Member> {
        self.current().members.iter().find(|m| m.id == id).cloned()
    }

    /// The ring once the changes in flight are done; `None` when nothing
    /// is changing (it would equal [`Cluster::ring`]).
    pub fn future_ring(&self) -> Option<Arc<Ring>> {
        self.current().future.clone()
    }

    /// The current ring and the future one (`None`: no change), from one
    /// view.
    pub fn rings(&self) -> (Arc<Ring>, Option<Arc<Ring>>) {
        let v = self.current();
        (v.ring.clone(), v.future.clone())
    }

    /// The pending owners of `token` at replication `n` (see
    /// [`pending_of`]).
    pub fn pending(&self, token: Token, n: usize) -> Vec<NodeId> {
        pending_ids(&self.current(), token, n)
    }

    /// The preference list of `token`: its first `n` distinct nodes on the
    /// current ring, as shared ids.
    pub fn preference(&self, token: Token, n: usize) -> Vec<NodeId> {
        let v = self.current();
        preference(&v.ring, &v.ring_ids, token, n)
    }

    /// The nodes after `replicas` in the ring order of `token` (where a
    /// sloppy quorum finds its stand-ins).
    pub fn fallbacks(&self, token: Token, replicas: &[NodeId]) -> Vec<NodeId> {
        let v = self.current();
        preference(&v.ring, &v.ring_ids, token, v.ring.node_count())
            .into_iter()
            .filter(|n| !replicas.contains(n))
            .collect()
    }

    /// Nodes removed for good (announced by any member).
    pub fn removed(&self) -> BTreeSet<String> {
        self.current().removed.clone()
    }

    /// The changes in flight: members joining with tokens, leaving, or
    /// being removed, in node order.
    pub fn in_flight(&self) -> Vec<InFlight> {
        let v = self.current();
        let mut out: Vec<InFlight> = v
            .members
            .iter()
            .filter(|m| !v.removed.contains(&m.id) && !v.removing.contains_key(&m.id))
            .filter_map(|m| {
                let kind = match m.state {
                    NodeState::Joining if !m.tokens.is_empty() => "join",
                    NodeState::Leaving => "decommission",
                    _ => return None,
                };
                Some(InFlight {
                    node: m.id.clone(),
                    kind,
                    by: m.id.clone(),
                })
            })
            .collect();
        out.extend(v.removing.iter().map(|(node, by)| InFlight {
            node: node.clone(),
            kind: "removenode",
            by: by.clone(),
        }));
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// A digest of the current and future owners: two nodes whose
    /// fingerprints match place every key (and its pending owners) alike.
    pub fn fingerprint(&self) -> u64 {
        let v = self.current();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (label, owners) in [(b"now", &v.owners), (b"fut", &v.future_owners)] {
            h.update(label);
            for (id, tokens, rack) in owners.iter() {
                h.update(id.as_bytes());
                h.update(&[0]);
                for t in tokens {
                    h.update(&t.to_be_bytes());
                }
                h.update(rack.as_deref().unwrap_or("").as_bytes());
                h.update(&[0]);
            }
        }
        h.digest()
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
    fn a_replacing_member_keeps_its_place_on_the_ring_but_is_not_alive() {
        let c = Cluster::single(local(), vec![100]);
        let mut n3 = member("n3", Status::Normal, &[300], true);
        let replacing = |v: &str| Delta {
            node: "n3".into(),
            generation: 7,
            heartbeat: None,
            states: vec![Versioned {
                version: 10,
                value: AppState::Custom(REPLACING.into(), v.into()),
            }],
        };
        n3.state.apply(&replacing("1"));
        let snap = |n3: &MemberSnapshot| Snapshot {
            members: vec![
                member("n1", Status::Normal, &[100], true),
                member("n2", Status::Normal, &[200], true),
                n3.clone(),
            ],
            ..Snapshot::default()
        };
        c.apply(&snap(&n3));
        assert_eq!(c.ring().nodes(), ["n1", "n2", "n3"]);
        assert_eq!(
            c.preference(250, 3),
            [NodeId::from("n3"), NodeId::from("n1"), NodeId::from("n2")],
            "placement does not move"
        );
        assert!(c.is_replacing("n3") && !c.is_alive("n3") && c.is_up("n3"));
        assert!(c.is_alive("n2"));
        let m = c.member("n3").expect("n3");
        assert_eq!(
            (m.status, m.state, m.replacing),
            ("up", NodeState::Normal, true)
        );
        // Done: it counts again.
        n3.state.apply(&Delta {
            states: vec![Versioned {
                version: 11,
                value: AppState::Custom(REPLACING.into(), "".into()),
            }],
            ..replacing("")
        });
        c.apply(&snap(&n3));
        assert!(!c.is_replacing("n3") && c.is_alive("n3"));
    }

    #[test]
    fn this_node_is_not_alive_to_itself_while_it_replaces() {
        let c = Cluster::single(local(), vec![100]);
        let mut n1 = member("n1", Status::Normal, &[100], true);
        n1.state.apply(&Delta {
            node: "n1".into(),
            generation: 7,
            heartbeat: None,
            states: vec![Versioned {
                version: 10,
                value: AppState::Custom(REPLACING.into(), "1".into()),
            }],
        });
        c.apply(&Snapshot {
            members: vec![n1, member("n2", Status::Normal, &[200], true)],
            ..Snapshot::default()
        });
        assert!(!c.is_alive("n1"));
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

    #[test]
    fn joining_and_leaving_members_make_a_future_ring_with_pending_owners() {
        let c = Cluster::single(local(), vec![1]);
        let snap = Snapshot {
            members: vec![
                member("n1", Status::Normal, &[100], true),
                member("n2", Status::Normal, &[200], true),
                member("n3", Status::Leaving, &[300], true),
                member("n4", Status::Joining, &[150], true),
            ],
            ..Snapshot::default()
        };
        c.apply(&snap);
        assert_eq!(c.ring().nodes(), ["n1", "n2", "n3"]);
        let future = c.future_ring().expect("a change is in flight");
        assert_eq!(future.nodes(), ["n1", "n2", "n4"]);
        // Token 120 is owned by n2 now (n2, n3 at n=2), by n4 later (n4, n2).
        assert_eq!(c.pending(120, 2), [NodeId::from("n4")]);
        assert_eq!(c.pending(120, 3), [NodeId::from("n4")]);
        let kinds: Vec<_> = c
            .in_flight()
            .into_iter()
            .map(|f| (f.node, f.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("n3".to_string(), "decommission"),
                ("n4".to_string(), "join")
            ]
        );
    }

    #[test]
    fn a_removed_node_leaves_the_future_ring_then_the_ring() {
        let c = Cluster::single(local(), vec![1]);
        let mut n1 = member("n1", Status::Normal, &[100], true);
        let removing = |v: &str| Delta {
            node: "n1".into(),
            generation: 7,
            heartbeat: None,
            states: vec![Versioned {
                version: 10,
                value: AppState::Custom(REMOVING.into(), v.into()),
            }],
        };
        n1.state.apply(&removing("n3"));
        let members = |n1: &MemberSnapshot| Snapshot {
            members: vec![
                n1.clone(),
                member("n2", Status::Normal, &[200], true),
                member("n3", Status::Normal, &[300], false),
            ],
            ..Snapshot::default()
        };
        c.apply(&members(&n1));
        assert_eq!(c.ring().nodes(), ["n1", "n2", "n3"]);
        assert_eq!(c.future_ring().expect("removing").nodes(), ["n1", "n2"]);
        assert_eq!(c.in_flight()[0].kind, "removenode");
        assert_eq!(c.in_flight()[0].by, "n1");
        n1.state.apply(&Delta {
            node: "n1".into(),
            generation: 7,
            heartbeat: None,
            states: vec![Versioned {
                version: 11,
                value: AppState::Custom(REMOVED.into(), "n3".into()),
            }],
        });
        c.apply(&members(&n1));
        assert_eq!(c.ring().nodes(), ["n1", "n2"]);
        assert!(c.future_ring().is_none());
        assert!(c.in_flight().is_empty());
        assert_eq!(c.member("n3").map(|m| m.state), Some(NodeState::Left));
    }

    fn ring_with(nodes: &[(usize, &[u64])]) -> Ring {
        let mut r = Ring::new();
        for (i, tokens) in nodes {
            r.insert_node(&format!("n{i}"), tokens);
        }
        r
    }

    proptest::proptest! {
        #[test]
        fn pending_owners_are_never_current_replicas(
            tokens in proptest::collection::btree_set(proptest::prelude::any::<u64>(), 6..40),
            owners in proptest::collection::vec(0usize..6, 40),
            states in proptest::collection::vec(0u8..3, 6),
            key in proptest::prelude::any::<u64>(),
            n in 1usize..5,
        ) {
            // Node i: 0 normal, 1 joining, 2 leaving.
            let tokens: Vec<u64> = tokens.into_iter().collect();
            let mut per: Vec<Vec<u64>> = vec![Vec::new(); 6];
            for (t, o) in tokens.iter().zip(owners) {
                per[o].push(*t);
            }
            let pick = |want: &[u8]| -> Vec<(usize, &[u64])> {
                (0..6)
                    .filter(|&i| !per[i].is_empty() && want.contains(&states[i]))
                    .map(|i| (i, per[i].as_slice()))
                    .collect()
            };
            let current = ring_with(&pick(&[0, 2]));
            let future = ring_with(&pick(&[0, 1]));
            let changing = current != future;
            let (current_ids, future_ids) = (ids_of(&current), ids_of(&future));
            let pending = pending_of(
                (&current, &current_ids),
                changing.then_some((&future, &*future_ids)),
                key,
                n,
            );
            let now = current.preference_list(key, n);
            for p in &pending {
                proptest::prop_assert!(!now.iter().any(|x| **x == **p));
                proptest::prop_assert!(future.preference_list(key, n).iter().any(|x| **x == **p));
            }
            // Nothing joining or leaving: no future ring, nothing pending.
            let c = Cluster::single(local(), vec![]);
            c.apply(&Snapshot {
                members: (0..6)
                    .filter(|&i| !per[i].is_empty())
                    .map(|i| member(&format!("n{i}"), Status::Normal, &per[i], true))
                    .collect(),
                ..Snapshot::default()
            });
            proptest::prop_assert!(c.future_ring().is_none());
            proptest::prop_assert!(c.pending(key, n).is_empty());
            proptest::prop_assert!(c.in_flight().is_empty());
        }
    }
}
