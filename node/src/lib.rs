//! quorumkv-node: the server `qkvd`.
//!
//! One concept per module: `config` (flags, variables, file), `storage`
//! (the on-disk and in-memory engines), `version` (dotted version vector
//! sets, causal-context tokens, the hybrid logical clock), `replica` (this
//! node's copy of the data), `buckets` (properties and consistency
//! levels), `cluster` (the members and the ring, as the API shows them),
//! `hints` (hinted handoff: writes a replica missed, stored and replayed
//! when it is back), `transport` (the internode transport on `--listen`,
//! and its in-memory twin for the simulations), `merkle` (Merkle trees
//! over token ranges), `repair` (anti-entropy: compare trees with each
//! replica, exchange what differs), `membership` (gossip over the
//! transport, joining, feeding `cluster`), `coordinator` (quorum reads and
//! writes), `http` (the API), `metrics`, `error` (the one mapping of
//! failures to HTTP), `server` (the one place that wires the services
//! together; start and stop). docs/ARCHITECTURE.md draws the whole.

#[cfg(test)]
mod alloc_probe;
mod bucket_sync;
mod buckets;
mod clock;
mod cluster;
pub mod config;
mod coordinator;
mod error;
mod failure;
mod faults;
mod hints;
mod http;
mod log_budget;
mod membership;
mod merkle;
mod metrics;
mod pem;
mod proto;
mod repair;
mod replica;
mod rpc;
pub mod server;
#[cfg(test)]
mod sim;
pub mod storage;
mod stream;
mod tasks;
mod throttle;
mod tokens;
mod transport;
pub mod version;
