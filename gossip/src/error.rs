//! The crate's one error type.

/// What can go wrong in gossip. Message-level problems from peers (foreign
/// cluster, stale state) are not errors: they are refused quietly, with an
/// [`crate::Event`] or a log line, because a peer's bug must not stop ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range. Fix the config; not retryable.
    #[error("invalid gossip config: {0}")]
    InvalidConfig(String),
    /// An application state is too large to ever fit in one message.
    #[error("application state of {size} bytes exceeds the limit of {limit} bytes")]
    StateTooLarge {
        /// Encoded size of the state.
        size: usize,
        /// The largest state a message can carry.
        limit: usize,
    },
    /// A frame from a peer is larger than allowed; drop it.
    #[error("gossip message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Frame size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A frame from a peer is not a valid message; drop it.
    #[error("undecodable gossip message: {0}")]
    Decode(String),
    /// A message could not be encoded (a bug, not a peer's fault).
    #[error("cannot encode gossip message: {0}")]
    Encode(String),
}
