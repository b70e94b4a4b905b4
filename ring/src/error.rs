//! The one error type of the ring crate.
//!
//! Everything here is pure, so nothing is retryable: every variant is a
//! caller mistake (bad input, or a plan applied to the wrong ring) that the
//! CLI reports as `Error: {e}` and the node turns into a 400.

use serde::{Deserialize, Serialize};

use crate::Token;

/// What can go wrong when asking the ring for something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// The named node has no tokens on the ring (a typo in `--remove`,
    /// `--down`, or a ring file from another cluster).
    #[error("unknown node {0:?}: it has no tokens on the ring")]
    UnknownNode(String),
    /// The named node is already on the ring, so allocating tokens for it
    /// as a newcomer would silently mix old and new tokens.
    #[error("node {0:?} is already on the ring")]
    NodeExists(String),
    /// A token is owned by another node; two nodes cannot share a position.
    #[error("token {token} already belongs to node {owner:?}")]
    TokenTaken {
        /// The contested position.
        token: Token,
        /// Its current owner.
        owner: String,
    },
    /// An argument is out of its domain (zero vnodes, zero replication
    /// factor, an empty node range, …); the message says which.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A plan was applied to a ring other than the one it was made from.
    #[error("plan does not match this ring: {0}")]
    PlanMismatch(String),
    /// No range is wide enough to hold another token (only possible on a
    /// ring with about 2^64 tokens, i.e. never in practice).
    #[error("the token space is full")]
    TokenSpaceFull,
}
