//! Endpoint state: everything one node knows about one member, and the rules
//! by which two copies of it merge.
//!
//! A member's state is a small versioned map. Each node owns exactly one
//! entry in everybody's map — its own — and is the only writer of it, so
//! there are never concurrent writers to reconcile, only stale copies to
//! replace. Two numbers order the copies:
//!
//! * the **generation**, chosen by the driver when the process starts (a
//!   persisted counter or the wall clock in seconds) so that it grows across
//!   restarts. A higher generation replaces *everything* known about the
//!   node: whatever the previous incarnation said (tokens, status) no longer
//!   holds.
//! * the **version**, a counter private to one generation. Every local
//!   change — each heartbeat, each application-state write — takes the next
//!   version, so versions within a generation totally order the owner's
//!   writes. Per key, the higher version wins.
//!
//! The heartbeat is simply the version at which the owner last beat: it
//! shares the counter, so one digest `(generation, max version)` summarises
//! the whole state (Scuttlebutt's trick, see [`crate::node`]).
//!
//! Merge is a join: commutative, associative, idempotent, with the
//! generation dominating. Equal `(key, version)` pairs can only carry
//! different values if something upstream broke the single-writer rule; the
//! tie is then broken by value order so that every replica still agrees.
//! The property tests at the bottom of this file check those laws.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::protocol::Delta;

/// The generation of a node: grows across restarts of the same node id.
pub type Generation = u64;
/// A position in one node's per-generation change counter. Version 0 means
/// "nothing": real writes start at 1.
pub type Version = u64;
/// A position on the 64-bit token ring.
pub type Token = u64;

/// The name of a node, stable across restarts (e.g. `"n1"`).
///
/// Cheap to clone: thousands of simulated nodes each hold every id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

/// A gossip address, `"host:port"`. The driver maps it to a socket; this
/// crate only compares and forwards it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Addr(Arc<str>);

macro_rules! string_newtype {
    ($t:ident) => {
        impl $t {
            /// Wraps a string.
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                Self(s.into())
            }
            /// The underlying string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }
        impl From<String> for $t {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }
    };
}
string_newtype!(NodeId);
string_newtype!(Addr);

/// Where a node is in its life cycle, as it announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Running, but owns no tokens and takes no part in the ring.
    Standby,
    /// Has announced tokens as pending; receives writes for them while it
    /// streams existing data.
    Joining,
    /// Owns its tokens.
    Normal,
    /// Handing its ranges to others.
    Leaving,
    /// Gone for good; forgotten after [`crate::Config::left_quarantine`].
    Left,
}

impl Status {
    /// The lowercase name used in the HTTP API (`"normal"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Standby => "standby",
            Status::Joining => "joining",
            Status::Normal => "normal",
            Status::Leaving => "leaving",
            Status::Left => "left",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one application state. Each [`AppState`] value has exactly one key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    /// [`AppState::Status`]
    Status,
    /// [`AppState::Tokens`]
    Tokens,
    /// [`AppState::HttpAddr`]
    HttpAddr,
    /// [`AppState::GossipAddr`]
    GossipAddr,
    /// [`AppState::Rack`]
    Rack,
    /// [`AppState::Load`]
    Load,
    /// [`AppState::Custom`] with this name.
    Custom(Arc<str>),
}

/// One application state value. The key is implied by the variant, so a
/// key can never carry a value of the wrong type, on the wire or off it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AppState {
    /// Life-cycle status.
    Status(Status),
    /// The node's ring tokens (up to 1024; typically 16 or 256).
    Tokens(Arc<[Token]>),
    /// Client-facing HTTP address, `"host:port"`.
    HttpAddr(Arc<str>),
    /// Gossip/internode address, `"host:port"`: where peers send SYNs.
    GossipAddr(Addr),
    /// Rack (or availability zone) for rack-aware placement.
    Rack(Arc<str>),
    /// Bytes stored on the node, for load-aware decisions and display.
    Load(u64),
    /// Room for more: a named string value.
    Custom(Arc<str>, Arc<str>),
}

impl AppState {
    /// Orders this value's key against `key` without building a [`Key`]
    /// (same order as `Key`'s derived `Ord`).
    fn cmp_key(&self, key: &Key) -> std::cmp::Ordering {
        match (self, key) {
            (AppState::Custom(a, _), Key::Custom(b)) => a.cmp(b),
            _ => self.rank().cmp(&key_rank(key)),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            AppState::Status(_) => 0,
            AppState::Tokens(_) => 1,
            AppState::HttpAddr(_) => 2,
            AppState::GossipAddr(_) => 3,
            AppState::Rack(_) => 4,
            AppState::Load(_) => 5,
            AppState::Custom(..) => 6,
        }
    }

    /// The key this value is stored under.
    pub fn key(&self) -> Key {
        match self {
            AppState::Status(_) => Key::Status,
            AppState::Tokens(_) => Key::Tokens,
            AppState::HttpAddr(_) => Key::HttpAddr,
            AppState::GossipAddr(_) => Key::GossipAddr,
            AppState::Rack(_) => Key::Rack,
            AppState::Load(_) => Key::Load,
            AppState::Custom(name, _) => Key::Custom(name.clone()),
        }
    }
}

fn key_rank(key: &Key) -> u8 {
    match key {
        Key::Status => 0,
        Key::Tokens => 1,
        Key::HttpAddr => 2,
        Key::GossipAddr => 3,
        Key::Rack => 4,
        Key::Load => 5,
        Key::Custom(_) => 6,
    }
}

/// An application state with the version at which its owner wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The owner's version counter when it wrote `value`.
    pub version: Version,
    /// The value.
    pub value: AppState,
}

impl Versioned {
    /// Whether `self` beats `other` for the same key: higher version, ties
    /// broken by value so that merging stays commutative even on bad input.
    fn beats(&self, other: &Versioned) -> bool {
        (self.version, &self.value) > (other.version, &other.value)
    }
}

/// What a merge changed, so the caller can emit events and feed the
/// failure detector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// The incoming copy had a higher generation and replaced everything.
    pub restarted: bool,
    /// The heartbeat moved forward (or the generation did): evidence that
    /// the owner was alive after we last heard of it.
    pub heartbeat_advanced: bool,
    /// Application states whose value changed, in key order.
    pub changed: Vec<Key>,
}

/// Everything known about one member: generation, heartbeat and versioned
/// application states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointState {
    generation: Generation,
    heartbeat: Version,
    /// Cached maximum of `heartbeat` and the states' versions.
    max_version: Version,
    /// Sorted by key, one entry per key (a handful of entries: a vector
    /// beats a map in memory, which matters at 1000 nodes × 1000 copies).
    states: Vec<Versioned>,
}

impl EndpointState {
    /// An empty state of the given generation (heartbeat 0, no states).
    pub fn new(generation: Generation) -> Self {
        Self {
            generation,
            heartbeat: 0,
            max_version: 0,
            states: Vec::new(),
        }
    }

    /// The generation this state belongs to.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The version of the owner's last heartbeat (0: never beat).
    pub fn heartbeat(&self) -> Version {
        self.heartbeat
    }

    /// The highest version in this state: heartbeat or any application
    /// state. With the generation, this is the node's Scuttlebutt digest.
    pub fn max_version(&self) -> Version {
        self.max_version
    }

    /// All application states, in key order.
    pub fn states(&self) -> &[Versioned] {
        &self.states
    }

    /// The application state under `key`, if known.
    pub fn get(&self, key: &Key) -> Option<&Versioned> {
        self.states
            .binary_search_by(|s| s.value.cmp_key(key))
            .ok()
            .map(|i| &self.states[i])
    }

    /// Announced status, if known yet.
    pub fn status(&self) -> Option<Status> {
        match self.get(&Key::Status)?.value {
            AppState::Status(s) => Some(s),
            _ => None,
        }
    }

    /// Announced tokens (empty if none known).
    pub fn tokens(&self) -> &[Token] {
        match self.get(&Key::Tokens).map(|v| &v.value) {
            Some(AppState::Tokens(t)) => t,
            _ => &[],
        }
    }

    /// Announced HTTP address, if known.
    pub fn http_addr(&self) -> Option<&str> {
        match &self.get(&Key::HttpAddr)?.value {
            AppState::HttpAddr(a) => Some(a),
            _ => None,
        }
    }

    /// Announced gossip address, if known.
    pub fn gossip_addr(&self) -> Option<&Addr> {
        match &self.get(&Key::GossipAddr)?.value {
            AppState::GossipAddr(a) => Some(a),
            _ => None,
        }
    }

    /// Announced rack, if any.
    pub fn rack(&self) -> Option<&str> {
        match &self.get(&Key::Rack)?.value {
            AppState::Rack(r) => Some(r),
            _ => None,
        }
    }

    /// Announced load in bytes, if any.
    pub fn load(&self) -> Option<u64> {
        match self.get(&Key::Load)?.value {
            AppState::Load(l) => Some(l),
            _ => None,
        }
    }

    /// Records the owner's heartbeat at `version` (owner only).
    pub(crate) fn beat(&mut self, version: Version) {
        self.heartbeat = self.heartbeat.max(version);
        self.max_version = self.max_version.max(version);
    }

    /// Stores `v` if it beats what is there; returns whether it did.
    pub(crate) fn put(&mut self, v: Versioned) -> bool {
        let key = v.value.key();
        match self.states.binary_search_by(|s| s.value.cmp_key(&key)) {
            Ok(i) if v.beats(&self.states[i]) => {
                let changed = self.states[i].value != v.value;
                self.max_version = self.max_version.max(v.version);
                self.states[i] = v;
                changed
            }
            Ok(_) => false,
            Err(i) => {
                self.max_version = self.max_version.max(v.version);
                self.states.insert(i, v);
                true
            }
        }
    }

    /// Merges a full copy of the same member's state (a join: see the
    /// module docs).
    pub fn merge(&mut self, other: &EndpointState) -> Merged {
        self.merge_parts(other.generation, Some(other.heartbeat), &other.states)
    }

    /// Applies a gossiped delta (the node id is not checked here).
    pub fn apply(&mut self, delta: &Delta) -> Merged {
        self.merge_parts(delta.generation, delta.heartbeat, &delta.states)
    }

    fn merge_parts(
        &mut self,
        generation: Generation,
        heartbeat: Option<Version>,
        states: &[Versioned],
    ) -> Merged {
        let mut out = Merged::default();
        if generation < self.generation {
            return out;
        }
        if generation > self.generation {
            let old = std::mem::replace(self, EndpointState::new(generation));
            self.beat(heartbeat.unwrap_or(0));
            for s in states {
                self.put(s.clone());
            }
            out.restarted = true;
            out.heartbeat_advanced = true;
            out.changed = self
                .states
                .iter()
                .filter(|s| old.get(&s.value.key()).map(|o| &o.value) != Some(&s.value))
                .map(|s| s.value.key())
                .collect();
            return out;
        }
        if let Some(hb) = heartbeat
            && hb > self.heartbeat
        {
            self.beat(hb);
            out.heartbeat_advanced = true;
        }
        for s in states {
            if self.put(s.clone()) {
                out.changed.push(s.value.key());
            }
        }
        out.changed.sort();
        out.changed.dedup();
        out
    }

    /// The entries newer than `since` (0: everything), heartbeat included,
    /// in version order. Sending a *prefix* of this list keeps Scuttlebutt's
    /// invariant: a receiver that holds version `v` holds every entry with a
    /// version ≤ `v` that the sender had.
    pub(crate) fn entries_since(&self, since: Version) -> Vec<Entry<'_>> {
        let mut out: Vec<Entry<'_>> = self
            .states
            .iter()
            .filter(|s| s.version > since)
            .map(Entry::State)
            .collect();
        if self.heartbeat > since {
            out.push(Entry::Heartbeat(self.heartbeat));
        }
        out.sort_by_key(Entry::version);
        out
    }
}

/// One item of a delta, before packing.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Entry<'a> {
    Heartbeat(Version),
    State(&'a Versioned),
}

impl Entry<'_> {
    pub(crate) fn version(&self) -> Version {
        match self {
            Entry::Heartbeat(v) => *v,
            Entry::State(s) => s.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn app_state() -> impl Strategy<Value = AppState> {
        prop_oneof![
            prop_oneof![
                Just(Status::Joining),
                Just(Status::Normal),
                Just(Status::Left)
            ]
            .prop_map(AppState::Status),
            proptest::collection::vec(any::<u64>(), 0..4).prop_map(|t| AppState::Tokens(t.into())),
            "[a-c]{1,2}".prop_map(|s| AppState::Rack(s.into())),
            (0u64..3).prop_map(AppState::Load),
            ("[xy]", "[a-c]{1,2}").prop_map(|(k, v)| AppState::Custom(k.into(), v.into())),
        ]
    }

    /// Small generations and versions so that equal ones, the interesting
    /// cases, are common.
    fn endpoint() -> impl Strategy<Value = EndpointState> {
        (
            0u64..3,
            0u64..6,
            proptest::collection::vec((1u64..6, app_state()), 0..6),
        )
            .prop_map(|(generation, heartbeat, states)| {
                let mut e = EndpointState::new(generation);
                e.beat(heartbeat);
                for (version, value) in states {
                    e.put(Versioned { version, value });
                }
                e
            })
    }

    fn merged(a: &EndpointState, b: &EndpointState) -> EndpointState {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn merge_is_commutative(a in endpoint(), b in endpoint()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_idempotent(a in endpoint(), b in endpoint()) {
            prop_assert_eq!(merged(&a, &a), a.clone());
            let ab = merged(&a, &b);
            prop_assert_eq!(merged(&ab, &b), ab);
        }

        #[test]
        fn merge_is_associative(a in endpoint(), b in endpoint(), c in endpoint()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn higher_generation_replaces_everything(a in endpoint(), b in endpoint()) {
            prop_assume!(a.generation != b.generation);
            let (old, new) = if a.generation < b.generation { (a, b) } else { (b, a) };
            prop_assert_eq!(merged(&old, &new), new.clone());
            prop_assert_eq!(merged(&new, &old), new);
        }

        #[test]
        fn merge_never_lowers_a_version(a in endpoint(), b in endpoint()) {
            let m = merged(&a, &b);
            if m.generation == a.generation {
                prop_assert!(m.heartbeat >= a.heartbeat);
                for s in a.states() {
                    let got = m.get(&s.value.key()).map(|v| v.version);
                    prop_assert!(got >= Some(s.version));
                }
            }
        }

        #[test]
        fn a_delta_prefix_carries_everything_up_to_its_last_version(
            a in endpoint(), since in 0u64..6, take in 0usize..8,
        ) {
            // What a receiver holding `since` ends with after a truncated
            // delta must equal the full state restricted to versions ≤ its
            // new max version: nothing skipped below the watermark.
            // Versions are unique within a generation (one counter, one
            // writer); renumber the generated state to respect that.
            let mut renumbered = EndpointState::new(a.generation);
            for (i, s) in a.states.iter().enumerate() {
                renumbered.put(Versioned { version: i as u64 + 1, value: s.value.clone() });
            }
            renumbered.beat(a.states.len() as u64 + 1);
            let a = renumbered;
            let entries = a.entries_since(since);
            let take = take.min(entries.len());
            let mut receiver = EndpointState::new(a.generation);
            for s in a.states().iter().filter(|s| s.version <= since) {
                receiver.put(s.clone());
            }
            if a.heartbeat <= since {
                receiver.beat(a.heartbeat);
            }
            for e in &entries[..take] {
                match e {
                    Entry::Heartbeat(v) => receiver.beat(*v),
                    Entry::State(s) => { receiver.put((*s).clone()); }
                }
            }
            let watermark = receiver.max_version();
            for s in a.states().iter().filter(|s| s.version <= watermark) {
                prop_assert_eq!(receiver.get(&s.value.key()), Some(s));
            }
        }
    }

    #[test]
    fn put_keeps_states_sorted_and_unique() {
        let mut e = EndpointState::new(1);
        e.put(Versioned {
            version: 2,
            value: AppState::Load(5),
        });
        e.put(Versioned {
            version: 1,
            value: AppState::Status(Status::Normal),
        });
        e.put(Versioned {
            version: 3,
            value: AppState::Load(7),
        });
        e.put(Versioned {
            version: 2,
            value: AppState::Load(9),
        });
        assert_eq!(e.states().len(), 2);
        assert_eq!(e.load(), Some(7));
        assert_eq!(e.status(), Some(Status::Normal));
        assert_eq!(e.max_version(), 3);
    }
}
