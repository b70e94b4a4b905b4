//! How a request fails before it becomes an HTTP answer: the errors of
//! a quorum read or write, as plain data.
//!
//! [`QuorumError`] is what the coordinator returns and what a replica
//! coordinator's failure becomes on the wire ([`crate::proto`]), so the
//! node that forwarded a write receives it as itself, not as a string to
//! match. `crate::error` turns it into the HTTP contract's error.

use crate::storage::StorageError;

/// Why a replica could not take part in a request (reported in 503/504
/// bodies so that a user sees which replicas failed and why).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ReplicaFailure {
    /// The replica's node id.
    pub node: String,
    /// What went wrong, for a person.
    pub reason: String,
}

/// How a quorum read or write failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum QuorumError {
    /// `r` or `w` is not a valid consistency for the bucket.
    #[error("{0}")]
    BadConsistency(String),
    /// Fewer live replicas than required; nothing was done.
    #[error("{message}")]
    Unavailable {
        /// Replicas that had to answer.
        required: usize,
        /// Replicas alive.
        alive: usize,
        /// What happened and how to fix it.
        message: String,
        /// Replicas that failed, with why.
        failed: Vec<ReplicaFailure>,
    },
    /// The deadline passed (or too many replicas failed) before enough
    /// replicas answered; a write may still be applied.
    #[error("{message}")]
    Timeout {
        /// Replicas that had to answer.
        required: usize,
        /// Replicas that answered in time.
        acks: usize,
        /// What happened.
        message: String,
        /// Replicas that failed or were late, with why.
        failed: Vec<ReplicaFailure>,
    },
    /// The write would grow the key's stored versions past
    /// `--max-key-bytes`; nothing was written.
    #[error(
        "the key would hold {size} bytes of versions (all siblings), over the limit of {limit} (--max-key-bytes); write with the context of a read to replace its versions"
    )]
    KeyTooLarge {
        /// The key's stored size after the write, in bytes.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl QuorumError {
    /// A local storage failure seen by a request that needed `required`
    /// replicas: this replica is out, so the request is unavailable.
    pub fn storage(node: &str, required: usize, err: StorageError) -> QuorumError {
        QuorumError::Unavailable {
            required,
            alive: 0,
            message: format!("replica {node} could not use its storage: {err}"),
            failed: vec![ReplicaFailure {
                node: node.to_string(),
                reason: err.to_string(),
            }],
        }
    }
}
