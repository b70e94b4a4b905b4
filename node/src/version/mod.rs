//! Versioning: dotted version vector sets (DVVSet), causal-context tokens and
//! the hybrid logical clock.
//!
//! # The problem
//!
//! Any replica accepts a write, replicas may miss writes for a while, and
//! two clients may write the same key at the same moment through different
//! nodes. The store must then tell apart a write that *replaces* another
//! (its client had read the old value) from one that is *concurrent* with it
//! (neither client saw the other's), keep the concurrent ones as siblings
//! for the application to reconcile, and drop the replaced ones on every
//! replica — without ever losing an acknowledged write silently, which is
//! what last-write-wins on wall clocks does.
//!
//! # Why not a vector clock per value
//!
//! A version vector with one entry per *client* grows with the number of
//! clients and must be pruned, and pruning loses causality. One entry per
//! *replica* (server) stays small, but a plain version vector per replica
//! cannot express "client A and client B both wrote through replica r
//! concurrently": the second write must get a counter that also claims to
//! have seen the first, so the first is wrongly overwritten — or, if the
//! server merges the contexts to be safe, siblings pile up that the clients
//! never saw and can never replace (Riak's "sibling explosion").
//!
//! # Dotted version vector sets
//!
//! Almeida, Baquero, Gonçalves, Preguiça and Fonte ("Scalable and Accurate
//! Causality Tracking for Eventually Consistent Stores", DAIS 2014) separate
//! two things a version vector conflates: the *dot* of each write — the
//! unique event (replica r, n-th event of r) that created it — and the
//! *causal past* it replaces. A key's state, the DVVSet, is a list of
//! entries, one per replica that ever coordinated a write to the key:
//! `(replica, counter, values)`, where `counter` says how many events of that
//! replica the key has seen, and `values` are the versions minted by that
//! replica which nothing has replaced yet. A dot `(r, k)` with `k ≤ counter`
//! that is not among the values was overwritten.
//!
//! * A read returns the values and the *context*: the version vector
//!   `{r ↦ counter}` ([`Context`], via [`Dvvs::context`]).
//! * A write at replica `r` with context `C` ([`Dvvs::update`]) drops every
//!   version whose dot `C` covers — exactly what the client saw — and adds the
//!   new value with the fresh dot `(r, counter + 1)`. Versions written since
//!   the read carry dots that `C` does not cover, so they stay: siblings.
//!   Because the new dot is separate from the context, a second concurrent
//!   write through the same replica gets its own dot and does not pretend to
//!   have seen the first.
//! * Replicas merge states with [`Dvvs::sync`]: per replica the larger
//!   counter, and a version survives iff no side has overwritten it (each side
//!   either still holds its dot, or has not seen the dot yet). This is a join
//!   of a semilattice — commutative, associative, idempotent — so replication,
//!   read repair, hinted handoff and anti-entropy converge in any order.
//!
//! The metadata is bounded by the number of *replicas* (a handful per key)
//! while siblings are bounded by the number of truly concurrent writes.
//!
//! # Where each idea lives
//!
//! * `dvvset` ([`Dvvs`]): the set, `update` (the paper's
//!   `update(new(ctx, v), local, r)`), `sync` (`sync/2`, `merge/5`),
//!   `context` (`join/1`), LWW resolution, storage encoding.
//! * `context` ([`Context`]): the version vector and its opaque,
//!   checksummed `X-Causal-Context` token.
//! * `hlc` ([`Clock`], [`Timestamp`]): the hybrid logical clock that stamps values, so
//!   that LWW buckets order writes by (wall, logical) time that respects
//!   causality, not by raw, skewable wall time.
//! * `value` ([`Value`]): one version — bytes, content type, tombstone
//!   flag and timestamp.
//!
//! # Implementation caveats
//!
//! * **Explicit dots.** `dvvset.erl` stores each entry's values as a list
//!   whose position implies the dot (the head is `counter`, the next
//!   `counter - 1`, …). We store the dot counter with each value (one
//!   integer per sibling). The implicit form cannot hold a gap, so
//!   `dvvset.erl`'s `lww` relabels the winner with the newest dot of its
//!   replica — and a later sync with a replica that still holds the real
//!   owner of that dot can then bring back a version LWW had dropped. With
//!   explicit dots the winner keeps its own dot and merge stays the plain
//!   "neither side overwrote it" rule.
//! * **No anonymous values.** The paper's `{Entries, AnonymousValues}`
//!   carries values without a dot only in the transient clock a client
//!   builds (`new(ctx, v)`) right before `update` gives it a dot. Our
//!   `update` takes the context and the value together, so every stored
//!   version has a dot; anonymous values would only make `sync`
//!   non-associative (the paper keeps or drops them by comparing whole
//!   clocks, which does not compose).
//! * **Dots must never repeat.** A node that lost its data and came back
//!   under the same id would mint dots again from 1, and those would clash
//!   with dots other replicas remember: a peer that has seen (n3, 5) takes
//!   a new (n3, 1) for a version it already overwrote, and the acknowledged
//!   write is lost when it syncs. So the replica id that names dots is not
//!   the node id but the node's *actor*, `id@incarnation`, where the
//!   incarnation is drawn at random when the data dir is created
//!   (`replica::actor_name`); a wiped node is a new actor. Data
//!   dirs created before incarnations existed keep the plain id (their
//!   dots are theirs already), and must not be wiped and restarted under
//!   the same id.
//! * **Tombstones are versions.** A delete is an update with a tombstone
//!   value; a key whose versions are all tombstones reads as absent
//!   ([`Dvvs::is_deleted`]). Purging tombstones (after the grace period and
//!   anti-entropy) is not done here.
//! * **LWW buckets** keep siblings transiently and then keep only the newest
//!   by HLC timestamp; ties go to a tombstone, then by content, then by dot,
//!   the same on every replica. Call [`Clock::observe`] with
//!   [`Dvvs::max_timestamp`] before stamping a write, so that the write
//!   beats what it replaces even if a skewed clock stamped that.
//! * **Tokens are checksummed, not signed.** The checksum catches
//!   corruption and tokens of other systems, not a client forging one. A
//!   forged token can only claim to have seen versions, i.e. replace what
//!   the client could replace anyway with a plain write; its counters are
//!   clamped to 2^62 when folded into a write so that no replica runs out
//!   of dots, but the replica ids it names stay in the key's metadata (up to
//!   [`context::MAX_ENTRIES`] per write). Sign tokens (an HMAC instead of
//!   the checksum, same layout) if clients are untrusted.
//! * **Token limits**: a context token holds at most
//!   [`context::MAX_ENTRIES`] replicas with ids of at most
//!   [`context::MAX_REPLICA_ID_LEN`] bytes; node ids must stay within that.

pub mod context;
pub mod dvvset;
pub mod hlc;
pub mod value;

pub use context::{Context, ContextError};
pub use dvvset::Dvvs;
pub use hlc::{Clock, Timestamp};
pub use value::Value;

/// A replica's identity as far as versions go: the actor that mints dots,
/// i.e. the node id plus the data dir's incarnation
/// (`replica::actor_name`). Dots are minted per replica, so it
/// must be unique in the cluster and never reused by a node that lost its
/// data — which the incarnation guarantees.
pub type ReplicaId = String;

/// Why stored or received versions could not be read. A corrupt record or a
/// peer speaking another format: the caller logs it and treats the bytes as
/// unusable, never as an empty key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum VersionError {
    /// The bytes are not MessagePack of the expected shape.
    #[error("versions could not be decoded: {0}")]
    Decode(String),
    /// Decoded, but break an invariant of the DVVSet.
    #[error("versions are invalid: {0}")]
    Invalid(String),
    /// Written by a newer (or foreign) format.
    #[error("versions use encoding version {0}, this node reads version 1")]
    UnsupportedEncoding(u8),
    /// A write cannot get a fresh dot: the replica's counter for the key
    /// is at its maximum (a corrupt or hostile state).
    #[error(
        "replica {0:?} has no fresh version dot left for this key (its counter is at the maximum)"
    )]
    CounterExhausted(String),
}
