//! The ring file: the JSON of `GET /cluster/ring`, which the CLI reads with
//! `--ring FILE` and plans against.
//!
//! The minimal form is exactly what a node answers:
//!
//! ```json
//! {"tokens":[{"token":1152921504606846975,"node":"n1"}],"ownership":{"n1":1.0}}
//! ```
//!
//! Optional fields, all defaulted so the minimal form parses: `racks`
//! (`{node: rack}`), `rf` (the replication factor the file was made for),
//! and `load` (per-range keys and bytes, for byte estimates in plans).
//!
//! # Tokens are big integers
//!
//! Tokens are `u64` and are written as JSON numbers, exactly (serde_json
//! handles the full `u64` range). JavaScript's `JSON.parse` turns numbers
//! above 2^53 into nearby doubles, so JS clients must parse tokens as big
//! integers (e.g. a reviver with `BigInt`, or `json-bigint`). For stacks
//! that cannot, a token may also be given as a decimal string; this crate
//! reads both.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::plan::RangeLoad;
use crate::ring::Ring;
use crate::stats::ownership;
use crate::{NodeId, Token};

/// One vnode: a token and its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Position on the ring (a JSON number, or a decimal string on input).
    #[serde(deserialize_with = "lenient_u64")]
    pub token: Token,
    /// Its owner.
    pub node: NodeId,
}

/// The JSON shape of `/cluster/ring`, plus optional extras.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RingFile {
    /// Every vnode, in token order when written by us (any order on input).
    pub tokens: Vec<TokenEntry>,
    /// Primary ownership per node (sums to 1). Informational: recomputed
    /// from the tokens, never trusted on input.
    #[serde(default)]
    pub ownership: BTreeMap<NodeId, f64>,
    /// Rack per node; absent nodes are in the default rack.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub racks: BTreeMap<NodeId, String>,
    /// The replication factor the cluster uses, if the writer knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rf: Option<usize>,
    /// Keys and bytes per token range, when the cluster reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<RangeLoad>,
}

impl RingFile {
    /// The file for `ring`, with primary ownership filled in.
    pub fn from_ring(ring: &Ring) -> RingFile {
        let own = ownership(ring, 1);
        RingFile {
            tokens: ring
                .tokens()
                .map(|(token, node)| TokenEntry {
                    token,
                    node: node.clone(),
                })
                .collect(),
            ownership: own.nodes.into_iter().map(|n| (n.node, n.primary)).collect(),
            racks: ring.racks().clone(),
            rf: None,
            load: Vec::new(),
        }
    }

    /// The ring described by the file (tokens and racks; a repeated token
    /// keeps its first owner).
    pub fn to_ring(&self) -> Ring {
        let mut ring = Ring::from_entries(self.tokens.iter().map(|e| (e.token, e.node.clone())));
        for (node, rack) in &self.racks {
            ring.set_rack(node, Some(rack));
        }
        ring
    }
}

impl From<&Ring> for RingFile {
    fn from(ring: &Ring) -> RingFile {
        RingFile::from_ring(ring)
    }
}

impl From<&RingFile> for Ring {
    fn from(file: &RingFile) -> Ring {
        file.to_ring()
    }
}

/// Reads a `u64` given as a JSON number or as a decimal string.
pub(crate) fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => s
            .trim()
            .parse()
            .map_err(|e| serde::de::Error::custom(format!("token {s:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_node_answer_parses() {
        let json = r#"{"tokens":[{"token":18446744073709551615,"node":"n2"},
            {"token":"1","node":"n1"}],"ownership":{"n1":0.5,"n2":0.5}}"#;
        let f: RingFile = serde_json::from_str(json).unwrap();
        let ring = f.to_ring();
        assert_eq!(ring.node_tokens("n2"), vec![u64::MAX]);
        assert_eq!(ring.node_tokens("n1"), vec![1]);
        assert!(f.racks.is_empty() && f.rf.is_none() && f.load.is_empty());
    }

    #[test]
    fn ring_file_round_trips_through_json_exactly() {
        let mut ring = Ring::new();
        ring.insert_node("n1", &[u64::MAX, 1 << 60, (1 << 53) + 1]);
        ring.insert_node("n2", &[12345]);
        ring.set_rack("n2", Some("r2"));
        let file = RingFile::from_ring(&ring);
        let text = serde_json::to_string(&file).unwrap();
        assert!(text.contains("18446744073709551615"), "{text}");
        assert!(text.contains("9007199254740993"), "{text}");
        let back: RingFile = serde_json::from_str(&text).unwrap();
        assert_eq!(back.tokens, file.tokens);
        assert_eq!(back.racks, file.racks);
        assert_eq!(back.to_ring(), ring);
        for (node, share) in &file.ownership {
            assert!((back.ownership[node] - share).abs() < 1e-15, "{node}");
        }
        let sum: f64 = back.ownership.values().sum();
        assert!((sum - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ring_serde_uses_the_file_shape() {
        let mut ring = Ring::new();
        ring.insert_node("a", &[7]);
        let text = serde_json::to_string(&ring).unwrap();
        assert_eq!(text, r#"{"tokens":[{"token":7,"node":"a"}]}"#);
        let back: Ring = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ring);
    }

    #[test]
    fn a_bad_token_string_is_an_error() {
        let json = r#"{"tokens":[{"token":"12x","node":"n1"}]}"#;
        let err = serde_json::from_str::<RingFile>(json).unwrap_err();
        assert!(err.to_string().contains("12x"), "{err}");
    }
}
