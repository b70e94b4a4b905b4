//! One version of a key: the bytes a client stored, or a deletion.

use serde::{Deserialize, Serialize};

use super::hlc::Timestamp;

/// One version of a key: a value or a deletion (tombstone).
///
/// Deletes are versions too: a tombstone carries a dot like any write, so a
/// replica that missed the delete learns of it by sync instead of
/// resurrecting the value, and a later write with the tombstone's context
/// replaces it like any other version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// The bytes as the client sent them; empty for a tombstone.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// The client's `Content-Type`, returned on reads; empty for a tombstone.
    pub content_type: String,
    /// True for a deletion.
    pub tombstone: bool,
    /// When the coordinator accepted the write, from its hybrid logical
    /// clock; orders versions in LWW buckets.
    pub timestamp: Timestamp,
}

impl Value {
    /// A stored value.
    pub fn live(data: impl Into<Vec<u8>>, content_type: impl Into<String>, ts: Timestamp) -> Self {
        Value {
            data: data.into(),
            content_type: content_type.into(),
            tombstone: false,
            timestamp: ts,
        }
    }

    /// A deletion.
    pub fn tombstone(ts: Timestamp) -> Self {
        Value {
            data: Vec::new(),
            content_type: String::new(),
            tombstone: true,
            timestamp: ts,
        }
    }

    /// Approximate bytes this version occupies, for metrics.
    pub fn size_bytes(&self) -> usize {
        // data + content type + timestamp + tombstone flag
        self.data.len() + self.content_type.len() + 8 + 1
    }
}
