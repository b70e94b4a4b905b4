//! quorumkv-node: the server `qkvd`.
//!
//! Modules, one concept each: `storage` (the on-disk and in-memory engines),
//! `version` (dotted version vector sets, causal-context tokens, the hybrid
//! logical clock).

pub mod storage;
pub mod version;
