//! The values requests take and return: consistency levels, the causal
//! context, read results with their siblings, bucket properties and cluster
//! views.
//!
//! Everything a node returns is deserialized leniently: unknown fields are
//! ignored (or kept in an `extra` map where a round trip matters), and
//! optional-looking fields default, so a newer node does not break an older
//! client.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// How many replicas a read (`r`) or write (`w`) waits for.
///
/// Spelled as in API.md: `one`, `two`, `three`, `quorum`, `all`, `any`
/// (writes only: stored anywhere, a hint included), or an integer `1..=n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// Three replicas.
    Three,
    /// A majority of the bucket's `n`.
    Quorum,
    /// Every replica of the bucket.
    All,
    /// Writes only: acknowledged once stored anywhere, a hint included.
    Any,
    /// An explicit count, 1 to the bucket's `n` (checked by the node).
    N(u32),
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::One => f.write_str("one"),
            Consistency::Two => f.write_str("two"),
            Consistency::Three => f.write_str("three"),
            Consistency::Quorum => f.write_str("quorum"),
            Consistency::All => f.write_str("all"),
            Consistency::Any => f.write_str("any"),
            Consistency::N(k) => write!(f, "{k}"),
        }
    }
}

/// The error of parsing a [`Consistency`], [`Conflicts`] or [`ReadRepair`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl FromStr for Consistency {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "one" => Consistency::One,
            "two" => Consistency::Two,
            "three" => Consistency::Three,
            "quorum" => Consistency::Quorum,
            "all" => Consistency::All,
            "any" => Consistency::Any,
            other => match other.parse::<u32>() {
                Ok(k) if k >= 1 => Consistency::N(k),
                _ => {
                    return Err(ParseError(format!(
                        "{s:?} is not a consistency level: use one, two, three, quorum, all, any or an integer >= 1"
                    )));
                }
            },
        })
    }
}

/// Always a string (`"quorum"`, `"2"`): the node's bucket update takes
/// strings.
impl Serialize for Consistency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Accepts the string form and a bare JSON integer.
impl<'de> Deserialize<'de> for Consistency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            Value::Number(n) => match n.as_u64().and_then(|k| u32::try_from(k).ok()) {
                Some(k) if k >= 1 => Ok(Consistency::N(k)),
                _ => Err(serde::de::Error::custom(format!(
                    "{n} is not a consistency level"
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "{other} is not a consistency level"
            ))),
        }
    }
}

/// The opaque causal-context token of `X-Causal-Context`.
///
/// Read a key, keep its context, and send it with the next write or delete
/// of that key: the write then replaces exactly the versions the read saw
/// instead of becoming a sibling of them. The client never looks inside.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Context(pub String);

impl Context {
    /// The token as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Context {
    fn from(s: String) -> Self {
        Context(s)
    }
}

/// Options of a read. `None` means "the bucket's (or node's) default".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Replicas that must answer (`r`).
    pub r: Option<Consistency>,
    /// The node's deadline for the quorum, in milliseconds (`timeout_ms`).
    /// The client's own HTTP timeout is stretched to outlast it.
    pub timeout_ms: Option<u64>,
}

/// Options of a write or delete. `None` means "the bucket's default".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Replicas that must acknowledge (`w`).
    pub w: Option<Consistency>,
    /// The node's deadline for the quorum, in milliseconds (`timeout_ms`).
    pub timeout_ms: Option<u64>,
}

/// One stored value of a key, with the content type it was written with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// The exact bytes written.
    pub value: Vec<u8>,
    /// The `Content-Type` given at write time.
    pub content_type: String,
    /// A deletion concurrent with the other versions (its `value` is
    /// empty): the reader decides whether the key stays deleted.
    pub deleted: bool,
}

/// A found key: every live version plus the context that covers them all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// Send this with the next write to replace all of `values`.
    pub context: Context,
    /// One value normally; several when concurrent writes left siblings.
    /// Never collapsed by the client.
    pub values: Vec<Sibling>,
}

impl Versioned {
    /// True when concurrent writes left more than one value: the caller must
    /// merge them and write the result back with [`Versioned::context`].
    pub fn is_conflict(&self) -> bool {
        self.values.len() > 1
    }

    /// The value, when there is exactly one.
    pub fn single(&self) -> Option<&Sibling> {
        match self.values.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// The result of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// No live version. `context` is set when the node knows a deletion: a
    /// write with it supersedes the tombstone instead of racing it.
    NotFound {
        /// The tombstone's context, if any.
        context: Option<Context>,
    },
    /// One or more live versions.
    Found(Versioned),
}

impl Fetched {
    /// The context to write back with, found or not.
    pub fn context(&self) -> Option<&Context> {
        match self {
            Fetched::NotFound { context } => context.as_ref(),
            Fetched::Found(v) => Some(&v.context),
        }
    }
}

/// How a bucket resolves concurrent writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflicts {
    /// Keep every concurrent version; reads return siblings.
    Siblings,
    /// Keep the newest by hybrid-logical-clock timestamp.
    Lww,
    /// A mode this client does not know (from a newer node).
    #[serde(untagged)]
    Other(String),
}

/// When reads repair stale replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadRepair {
    /// Before answering (monotonic quorum reads).
    Blocking,
    /// After answering.
    Async,
    /// Never on reads.
    Off,
    /// A mode this client does not know (from a newer node).
    #[serde(untagged)]
    Other(String),
}

macro_rules! string_enum {
    ($t:ident { $($s:literal => $v:ident),* }) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($t::$v => f.write_str($s),)*
                    $t::Other(s) => f.write_str(s),
                }
            }
        }
        impl FromStr for $t {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($t::$v),)*
                    _ => Err(ParseError(format!(
                        "{s:?} is not one of {}", [$($s),*].join(", ")
                    ))),
                }
            }
        }
    };
}
string_enum!(Conflicts { "siblings" => Siblings, "lww" => Lww });
string_enum!(ReadRepair { "blocking" => Blocking, "async" => Async, "off" => Off });

/// A bucket's properties as `GET`/`PUT /buckets/{bucket}` answer them.
///
/// Fields a newer node adds are kept in `extra`, so they survive display
/// and `--json` output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketProps {
    /// Replicas per key. Fixed once the bucket holds data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Default read consistency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<Consistency>,
    /// Default write consistency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<Consistency>,
    /// Conflict resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Conflicts>,
    /// Whether fallback nodes count toward W (Dynamo's sloppy quorum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sloppy_quorum: Option<bool>,
    /// Read-repair mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_repair: Option<ReadRepair>,
    /// When a read asks a spare replica: `auto` (absent), `off`, `NNms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculative_retry: Option<String>,
    /// Properties this client does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `PUT /buckets/{bucket}`: only the fields set are sent, so
/// the others keep their current value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BucketPropsUpdate {
    /// Replicas per key (refused with 400 once the bucket holds data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Default read consistency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r: Option<Consistency>,
    /// Default write consistency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub w: Option<Consistency>,
    /// Conflict resolution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Conflicts>,
    /// Sloppy quorum on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sloppy_quorum: Option<bool>,
    /// Read-repair mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_repair: Option<ReadRepair>,
    /// Speculative retry: `auto`, `off` or `NNms` (the node checks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speculative_retry: Option<String>,
}

impl BucketPropsUpdate {
    /// True when no property is set (the request would change nothing).
    pub fn is_empty(&self) -> bool {
        *self == BucketPropsUpdate::default()
    }
}

/// `GET /health`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"` while the node serves.
    #[serde(default)]
    pub status: String,
    /// The node's id.
    #[serde(default)]
    pub node: String,
    /// Anything else the node reports.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One node as `GET /cluster/members` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The node's `--id`.
    pub id: String,
    /// Gossip and internode address (`--listen`).
    #[serde(default)]
    pub gossip_addr: String,
    /// HTTP API address (`--http`).
    #[serde(default)]
    pub http_addr: String,
    /// `up` or `down`, from the failure detector.
    #[serde(default)]
    pub status: String,
    /// `standby`, `joining`, `normal`, `leaving` or `left`.
    #[serde(default)]
    pub state: String,
    /// The failure detector's suspicion (null when it has no samples yet).
    #[serde(default)]
    pub phi: Option<f64>,
    /// Start generation: grows on each restart.
    #[serde(default)]
    pub generation: u64,
    /// Heartbeat counter within the generation.
    #[serde(default)]
    pub heartbeat: u64,
    /// The node's ring tokens.
    #[serde(default, deserialize_with = "lenient_tokens")]
    pub tokens: Vec<u64>,
    /// Hints the answering node holds for this member (absent from nodes
    /// that do not report it).
    #[serde(default)]
    pub hints_pending: Option<u64>,
    /// Fields this client does not know (e.g. `rack`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One virtual node of the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingToken {
    /// Position on the 64-bit ring.
    #[serde(deserialize_with = "lenient_u64")]
    pub token: u64,
    /// Its owner.
    pub node: String,
}

/// `GET /cluster/ring`: every token and each node's share of the ring.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RingInfo {
    /// Tokens in ring order.
    #[serde(default)]
    pub tokens: Vec<RingToken>,
    /// Fraction of the ring each node owns (primary ranges).
    #[serde(default)]
    pub ownership: BTreeMap<String, f64>,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A token as a JSON number or a decimal string (some JSON stacks lose
/// precision above 2^53, so a node may choose strings).
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a u64"))),
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("{other} is not a token"))),
    }
}

fn lenient_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    struct T(#[serde(deserialize_with = "lenient_u64")] u64);
    Ok(Option::<Vec<T>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_parses_and_displays_the_contract_spellings() {
        let table = [
            ("one", Consistency::One),
            ("two", Consistency::Two),
            ("three", Consistency::Three),
            ("quorum", Consistency::Quorum),
            ("all", Consistency::All),
            ("any", Consistency::Any),
            ("1", Consistency::N(1)),
            ("5", Consistency::N(5)),
        ];
        for (s, c) in table {
            assert_eq!(s.parse::<Consistency>(), Ok(c), "{s}");
            assert_eq!(c.to_string(), s);
        }
        assert_eq!("QUORUM".parse::<Consistency>(), Ok(Consistency::Quorum));
    }

    #[test]
    fn consistency_rejects_zero_negative_and_words() {
        for s in ["0", "-1", "", "majority", "1.5", "99999999999"] {
            assert!(s.parse::<Consistency>().is_err(), "{s}");
        }
    }

    #[test]
    fn consistency_serializes_as_string_and_reads_numbers_too() {
        assert_eq!(serde_json::to_string(&Consistency::N(2)).unwrap(), "\"2\"");
        let c: Consistency = serde_json::from_str("2").unwrap();
        assert_eq!(c, Consistency::N(2));
        let c: Consistency = serde_json::from_str("\"all\"").unwrap();
        assert_eq!(c, Consistency::All);
    }

    #[test]
    fn bucket_props_keep_unknown_fields_and_modes() {
        let json = r#"{"n":3,"r":"quorum","w":"2","conflicts":"lww","sloppy_quorum":false,
                       "read_repair":"sometimes","ttl_s":60}"#;
        let p: BucketProps = serde_json::from_str(json).unwrap();
        assert_eq!(p.n, Some(3));
        assert_eq!(p.w, Some(Consistency::N(2)));
        assert_eq!(p.conflicts, Some(Conflicts::Lww));
        assert_eq!(p.read_repair, Some(ReadRepair::Other("sometimes".into())));
        assert_eq!(p.extra.get("ttl_s"), Some(&Value::from(60)));
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["ttl_s"], 60);
        assert_eq!(back["read_repair"], "sometimes");
    }

    #[test]
    fn bucket_update_sends_only_what_is_set() {
        let u = BucketPropsUpdate {
            w: Some(Consistency::All),
            conflicts: Some(Conflicts::Siblings),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"w":"all","conflicts":"siblings"}"#
        );
        assert!(BucketPropsUpdate::default().is_empty());
    }

    #[test]
    fn member_needs_only_an_id_and_takes_string_tokens() {
        let m: Member = serde_json::from_str(r#"{"id":"n1"}"#).unwrap();
        assert_eq!(m.id, "n1");
        assert!(m.tokens.is_empty());
        let m: Member = serde_json::from_str(
            r#"{"id":"n1","tokens":[1,"18446744073709551615"],"phi":null,"rack":"a"}"#,
        )
        .unwrap();
        assert_eq!(m.tokens, vec![1, u64::MAX]);
        assert_eq!(m.phi, None);
        assert_eq!(m.extra["rack"], "a");
    }

    #[test]
    fn versioned_single_and_conflict() {
        let s = |v: &str| Sibling {
            value: v.as_bytes().to_vec(),
            content_type: "text/plain".into(),
            deleted: false,
        };
        let one = Versioned {
            context: Context("c".into()),
            values: vec![s("a")],
        };
        assert!(!one.is_conflict());
        assert_eq!(one.single(), Some(&s("a")));
        let two = Versioned {
            context: Context("c".into()),
            values: vec![s("a"), s("b")],
        };
        assert!(two.is_conflict());
        assert_eq!(two.single(), None);
    }

    #[test]
    fn string_enums_parse_strictly() {
        assert_eq!("lww".parse::<Conflicts>(), Ok(Conflicts::Lww));
        assert!("LWW?".parse::<Conflicts>().is_err());
        assert_eq!("off".parse::<ReadRepair>(), Ok(ReadRepair::Off));
        assert_eq!(ReadRepair::Async.to_string(), "async");
    }
}
