//! Buckets: names, properties (N, default R/W, conflict mode, quorum kind,
//! read repair) and the consistency levels requests ask for.
//!
//! Properties live in the store's metadata partition as JSON under
//! `bucket/<name>`, so they survive restarts. A bucket comes into being
//! when its properties are set or its first key is written (as in Riak);
//! from then on its `n` is fixed, because changing the replica count of
//! data already placed would silently strand copies.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::failure::QuorumError;
use crate::storage::{Partition, StorageError, Store};

/// The most replicas a bucket may ask for.
pub const MAX_N: u32 = 16;

/// How many replicas a read or write waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// 1 replica.
    One,
    /// 2 replicas.
    Two,
    /// 3 replicas.
    Three,
    /// A majority of N: N/2 + 1.
    Quorum,
    /// All N replicas.
    All,
    /// Writes only: stored anywhere, a hint included.
    Any,
    /// An explicit count, 1..=N.
    Count(u32),
}

impl Consistency {
    /// Parses the contract's spelling: `one|two|three|quorum|all|any|<int>`.
    pub fn parse(s: &str) -> Option<Consistency> {
        Some(match s {
            "one" => Consistency::One,
            "two" => Consistency::Two,
            "three" => Consistency::Three,
            "quorum" => Consistency::Quorum,
            "all" => Consistency::All,
            "any" => Consistency::Any,
            _ => {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 4 {
                    return None;
                }
                Consistency::Count(s.parse().ok()?)
            }
        })
    }

    /// The number of replicas this level needs for a bucket with `n`
    /// replicas, or a `bad_consistency` error naming `what` (`r` or `w`).
    pub fn required(self, n: u32, what: &str) -> Result<usize, QuorumError> {
        let k = match self {
            Consistency::One | Consistency::Any => 1,
            Consistency::Two => 2,
            Consistency::Three => 3,
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
            Consistency::Count(k) => k,
        };
        if k == 0 || k > n {
            return Err(QuorumError::BadConsistency(format!(
                "{what}={} asks for {k} replicas but the bucket has n={n}",
                self
            )));
        }
        Ok(k as usize)
    }
}

impl Consistency {
    /// The level's name, for the named levels (a count has none).
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Consistency::One => "one",
            Consistency::Two => "two",
            Consistency::Three => "three",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
            Consistency::Any => "any",
            Consistency::Count(_) => return None,
        })
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Consistency::Count(k) => write!(f, "{k}"),
            named => f.write_str(named.name().unwrap_or_default()),
        }
    }
}

/// Parses `r`/`w` from a query string: a `bad_consistency` error otherwise.
pub fn parse_consistency(s: &str, what: &str, allow_any: bool) -> Result<Consistency, QuorumError> {
    match Consistency::parse(s) {
        Some(Consistency::Any) if !allow_any => Err(QuorumError::BadConsistency(format!(
            "{what}=any is only valid for writes"
        ))),
        Some(c) => Ok(c),
        None => Err(QuorumError::BadConsistency(format!(
            "{what}={s:?} is not one of one, two, three, quorum, all{}, or an integer from 1 to the bucket's n",
            if allow_any { ", any" } else { "" }
        ))),
    }
}

/// How concurrent writes are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflicts {
    /// Keep every concurrent version; readers see siblings (the default).
    Siblings,
    /// Keep the version with the newest hybrid-logical-clock timestamp.
    Lww,
}

/// When a read repairs stale replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadRepair {
    /// Before answering: quorum reads become monotonic (the default).
    Blocking,
    /// After answering.
    Async,
    /// Never on reads; anti-entropy heals.
    Off,
}

/// When a read asks a spare replica because the ones it asked are slow
/// (speculative retry, as Cassandra's `speculative_retry`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SpeculativeRetry {
    /// When the node judges the asked replicas late (the default).
    #[default]
    Auto,
    /// Never: a read waits for the replicas it asked (what the PBS model
    /// assumes; the staleness experiments use it).
    Off,
    /// After this many milliseconds.
    After(u32),
}

impl SpeculativeRetry {
    /// Whether this is the default (not shown in a bucket's properties).
    pub fn is_auto(&self) -> bool {
        *self == SpeculativeRetry::Auto
    }
}

impl From<SpeculativeRetry> for String {
    fn from(s: SpeculativeRetry) -> String {
        match s {
            SpeculativeRetry::Auto => "auto".into(),
            SpeculativeRetry::Off => "off".into(),
            SpeculativeRetry::After(ms) => format!("{ms}ms"),
        }
    }
}

impl TryFrom<String> for SpeculativeRetry {
    type Error = String;

    fn try_from(s: String) -> Result<SpeculativeRetry, String> {
        match s.as_str() {
            "auto" => Ok(SpeculativeRetry::Auto),
            "off" => Ok(SpeculativeRetry::Off),
            other => other
                .strip_suffix("ms")
                .and_then(|ms| ms.parse::<u32>().ok())
                .filter(|ms| (1..=60_000).contains(ms))
                .map(SpeculativeRetry::After)
                .ok_or_else(|| {
                    format!("speculative_retry {other:?} is not auto, off, or 1ms to 60000ms")
                }),
        }
    }
}

/// A bucket's properties, as `GET /buckets/{bucket}` shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProps {
    /// Replicas per key.
    pub n: u32,
    /// Default read consistency. (A `Cow`: every request copies its
    /// bucket's properties, and the usual names, [`consistency_name`],
    /// then cost no allocation.)
    #[serde(deserialize_with = "de_consistency")]
    pub r: Cow<'static, str>,
    /// Default write consistency.
    #[serde(deserialize_with = "de_consistency")]
    pub w: Cow<'static, str>,
    /// Conflict resolution.
    pub conflicts: Conflicts,
    /// Dynamo's sloppy quorum (fallback nodes count toward W).
    pub sloppy_quorum: bool,
    /// Read-repair mode.
    pub read_repair: ReadRepair,
    /// When a read asks a spare replica; shown only when not `auto`.
    #[serde(default, skip_serializing_if = "SpeculativeRetry::is_auto")]
    pub speculative_retry: SpeculativeRetry,
}

/// A consistency setting's name, shared when it is one of the usual ones.
pub fn consistency_name(s: String) -> Cow<'static, str> {
    match Consistency::parse(&s).and_then(Consistency::name) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(s),
    }
}

fn de_consistency<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cow<'static, str>, D::Error> {
    String::deserialize(d).map(consistency_name)
}

impl BucketProps {
    /// The properties of a bucket nobody configured.
    pub fn defaults(n: u32) -> Self {
        BucketProps {
            n,
            r: "quorum".into(),
            w: "quorum".into(),
            conflicts: Conflicts::Siblings,
            sloppy_quorum: false,
            read_repair: ReadRepair::Blocking,
            speculative_retry: SpeculativeRetry::Auto,
        }
    }

    /// The default read consistency (validated when it was set).
    pub fn default_r(&self) -> Consistency {
        Consistency::parse(&self.r).unwrap_or(Consistency::Quorum)
    }

    /// The default write consistency (validated when it was set).
    pub fn default_w(&self) -> Consistency {
        Consistency::parse(&self.w).unwrap_or(Consistency::Quorum)
    }
}

/// The body of `PUT /buckets/{bucket}`: every property optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketUpdate {
    /// Replicas per key.
    pub n: Option<u32>,
    /// Default read consistency.
    pub r: Option<String>,
    /// Default write consistency.
    pub w: Option<String>,
    /// Conflict resolution.
    pub conflicts: Option<Conflicts>,
    /// Sloppy quorum.
    pub sloppy_quorum: Option<bool>,
    /// Read repair.
    pub read_repair: Option<ReadRepair>,
    /// Speculative retry.
    pub speculative_retry: Option<SpeculativeRetry>,
}

/// Why bucket properties could not be set.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad name or property value.
    #[error("{0}")]
    Invalid(String),
    /// An `r` or `w` that does not fit the bucket.
    #[error(transparent)]
    Consistency(#[from] QuorumError),
    /// This node could not store the properties.
    #[error("{node} could not store the bucket's properties: {source}")]
    Storage {
        /// This node.
        node: String,
        /// What failed.
        source: StorageError,
    },
}

/// Checks a bucket name against `[A-Za-z0-9_-]{1,64}`.
pub fn validate_bucket_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "bucket name {name:?} must be 1 to 64 characters of [A-Za-z0-9_-]"
        )))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    props: BucketProps,
    /// Set once a key was written: `n` is frozen from then on.
    has_data: bool,
    /// When the properties were last set (wall-clock ms, kept increasing):
    /// the newest setting wins when nodes exchange properties.
    #[serde(default)]
    updated_ms: u64,
}

/// A bucket as nodes exchange it: name, properties, whether it holds
/// data, and when its properties were set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRecord {
    /// The bucket's name.
    pub name: String,
    /// Its properties.
    pub props: BucketProps,
    /// Whether any node wrote a key to it.
    pub has_data: bool,
    /// When its properties were set (ms).
    pub updated_ms: u64,
}

/// The merge of two nodes' records of one bucket; commutative,
/// associative and idempotent, so every node ends with the same record
/// whatever order announcements arrive in.
///
/// The record set last wins (ties: the larger encoding) and `has_data` is
/// OR-ed. `n` obeys the rule a local update obeys — frozen once the bucket
/// holds data — also for changes made elsewhere: when a side knew the
/// bucket held data, its `n` is the one keys were written at, and it is
/// kept whatever a side that believed the bucket empty set meanwhile. Two
/// sides that both hold data at different `n` (possible only if they wrote
/// before hearing of each other) keep the larger: its preference lists
/// contain every replica the smaller one wrote to.
fn merge_stored(a: &Stored, b: &Stored) -> Stored {
    // The order ignores `n`, which is decided on its own below, so that a
    // merged record orders like the record it took its other properties from.
    let key = |s: &Stored| {
        let mut p = s.props.clone();
        p.n = 0;
        (
            s.updated_ms,
            serde_json::to_string(&p).unwrap_or_default(),
            s.props.n,
        )
    };
    let newer = if key(b) > key(a) { b } else { a };
    let n = match (a.has_data, b.has_data) {
        (true, true) => a.props.n.max(b.props.n),
        (true, false) => a.props.n,
        (false, true) => b.props.n,
        (false, false) => newer.props.n,
    };
    let mut props = newer.props.clone();
    props.n = n;
    Stored {
        props,
        has_data: a.has_data || b.has_data,
        updated_ms: newer.updated_ms,
    }
}

fn meta_key(name: &str) -> String {
    format!("bucket/{name}")
}

/// The node's buckets: an in-memory cache over the metadata partition.
pub struct Buckets {
    store: Store,
    /// This node's id, named in storage errors.
    node: String,
    default_n: u32,
    known: RwLock<HashMap<String, Stored>>,
}

impl Buckets {
    /// Loads every stored bucket of node `node`.
    pub fn load(store: Store, node: &str, default_n: u32) -> Result<Buckets, StorageError> {
        let mut known = HashMap::new();
        // "bucket0" is the first key after every "bucket/..." key.
        let entries = store.raw_scan(Partition::Meta, b"bucket/", Some(b"bucket0"), usize::MAX)?;
        for (k, v) in entries {
            let k = String::from_utf8_lossy(&k);
            let Some(name) = k.strip_prefix("bucket/") else {
                continue;
            };
            match serde_json::from_slice::<Stored>(&v) {
                Ok(s) => {
                    known.insert(name.to_string(), s);
                }
                Err(e) => {
                    return Err(StorageError::Corrupt(format!(
                        "bucket {name} properties: {e}"
                    )));
                }
            }
        }
        Ok(Buckets {
            store,
            node: node.to_string(),
            default_n,
            known: RwLock::new(known),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Stored>> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The properties of a bucket, if it exists (`default` always does).
    pub fn get(&self, name: &str) -> Option<BucketProps> {
        match self.read().get(name) {
            Some(s) => Some(s.props.clone()),
            None if name == "default" => Some(BucketProps::defaults(self.default_n)),
            None => None,
        }
    }

    /// The properties a key request uses: the bucket's, or the defaults
    /// for a bucket not yet created.
    pub fn props_for_keys(&self, name: &str) -> BucketProps {
        self.get(name)
            .unwrap_or_else(|| BucketProps::defaults(self.default_n))
    }

    /// Records that `name` holds data (freezing its `n`); a no-op after the
    /// first time, so the write path pays one map lookup. Returns whether
    /// this call recorded it (then other nodes should hear of it).
    pub async fn mark_has_data(&self, name: &str) -> Result<bool, StorageError> {
        if self.read().get(name).is_some_and(|s| s.has_data) {
            return Ok(false);
        }
        // The guard must be gone before `props_for_keys` reads again: a
        // second read lock on this thread waits behind a queued writer
        // (another first write's `persist`), which waits for the first one.
        let known = self
            .read()
            .get(name)
            .map(|s| (s.props.clone(), s.updated_ms));
        let (props, updated_ms) = known.unwrap_or_else(|| (self.props_for_keys(name), 0));
        let stored = Stored {
            props,
            has_data: true,
            updated_ms,
        };
        self.persist(name, stored).await.map(|()| true)
    }

    async fn persist(&self, name: &str, stored: Stored) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| StorageError::Corrupt(format!("bucket {name}: {e}")))?;
        self.store.meta_put(&meta_key(name), bytes).await?;
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), stored);
        Ok(())
    }

    /// Applies `update` to a bucket, creating it if needed; validates
    /// everything before changing anything.
    pub async fn update(&self, name: &str, update: BucketUpdate) -> Result<BucketProps, Error> {
        let (mut props, has_data, prev_ms) = match self.read().get(name) {
            Some(s) => (s.props.clone(), s.has_data, s.updated_ms),
            None => (BucketProps::defaults(self.default_n), false, 0),
        };
        if let Some(n) = update.n {
            if n == 0 || n > MAX_N {
                return Err(Error::Invalid(format!("n={n} is outside 1..={MAX_N}")));
            }
            if has_data && n != props.n {
                return Err(Error::Invalid(format!(
                    "bucket {name} already holds data with n={}; n cannot change once a bucket holds data (create a new bucket instead)",
                    props.n
                )));
            }
            props.n = n;
        }
        if let Some(r) = update.r {
            parse_consistency(&r, "r", false)?.required(props.n, "r")?;
            props.r = consistency_name(r);
        }
        if let Some(w) = update.w {
            parse_consistency(&w, "w", true)?.required(props.n, "w")?;
            props.w = consistency_name(w);
        }
        // A new n must still fit the defaults already stored.
        parse_consistency(&props.r, "r", false)?.required(props.n, "r")?;
        parse_consistency(&props.w, "w", true)?.required(props.n, "w")?;
        if let Some(c) = update.conflicts {
            props.conflicts = c;
        }
        if let Some(s) = update.sloppy_quorum {
            props.sloppy_quorum = s;
        }
        if let Some(rr) = update.read_repair {
            props.read_repair = rr;
        }
        if let Some(sr) = update.speculative_retry {
            props.speculative_retry = sr;
        }
        self.persist(
            name,
            Stored {
                props: props.clone(),
                has_data,
                updated_ms: crate::clock::unix_ms().max(prev_ms + 1),
            },
        )
        .await
        .map_err(|source| Error::Storage {
            node: self.node.clone(),
            source,
        })?;
        Ok(props)
    }

    /// Every bucket this node stores, to announce to other nodes.
    pub fn records(&self) -> Vec<BucketRecord> {
        self.read()
            .iter()
            .map(|(name, s)| BucketRecord {
                name: name.clone(),
                props: s.props.clone(),
                has_data: s.has_data,
                updated_ms: s.updated_ms,
            })
            .collect()
    }

    /// The record of one bucket, if this node stores it.
    pub fn record(&self, name: &str) -> Option<BucketRecord> {
        self.read().get(name).map(|s| BucketRecord {
            name: name.to_string(),
            props: s.props.clone(),
            has_data: s.has_data,
            updated_ms: s.updated_ms,
        })
    }

    /// Merges a bucket announced by another node ([`merge_stored`]: the
    /// properties set last win, except that `n` stays frozen once the
    /// bucket holds data, and a bucket that holds data anywhere holds data
    /// everywhere). Returns whether anything changed here.
    pub async fn apply_remote(&self, remote: BucketRecord) -> Result<bool, StorageError> {
        let local = self.read().get(&remote.name).cloned();
        let theirs = Stored {
            props: remote.props,
            has_data: remote.has_data,
            updated_ms: remote.updated_ms,
        };
        let merged = match local {
            None => theirs,
            Some(l) => {
                let merged = merge_stored(&l, &theirs);
                if merged.props == l.props
                    && merged.has_data == l.has_data
                    && merged.updated_ms == l.updated_ms
                {
                    return Ok(false);
                }
                merged
            }
        };
        self.persist(&remote.name, merged).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speculative_retry_reads_and_writes_as_text_and_refuses_nonsense() {
        for (text, want) in [
            ("auto", SpeculativeRetry::Auto),
            ("off", SpeculativeRetry::Off),
            ("25ms", SpeculativeRetry::After(25)),
        ] {
            let got = SpeculativeRetry::try_from(text.to_string()).expect("valid");
            assert_eq!(got, want);
            assert_eq!(String::from(got), text);
        }
        for bad in ["", "0ms", "60001ms", "fast", "10", "ms"] {
            assert!(
                SpeculativeRetry::try_from(bad.to_string()).is_err(),
                "{bad}"
            );
        }
        let shown = serde_json::to_value(BucketProps::defaults(3)).expect("json");
        assert!(
            shown.get("speculative_retry").is_none(),
            "auto is not shown: {shown}"
        );
    }

    #[test]
    fn stored_properties_read_back_the_same_and_share_the_usual_names() {
        for retry in [SpeculativeRetry::Auto, SpeculativeRetry::After(7)] {
            let mut props = BucketProps::defaults(3);
            props.w = consistency_name("2".into());
            props.speculative_retry = retry;
            for bytes in [
                rmp_serde::to_vec(&props).expect("encode"),
                serde_json::to_vec(&props).expect("json"),
            ] {
                let back: BucketProps = rmp_serde::from_slice(&bytes)
                    .or_else(|_| serde_json::from_slice(&bytes))
                    .expect("decode");
                assert_eq!(back, props);
                assert!(matches!(back.r, Cow::Borrowed("quorum")));
                assert!(matches!(back.w, Cow::Owned(ref w) if w == "2"));
            }
        }
    }

    #[test]
    fn consistency_levels_resolve_against_n() {
        let table: &[(&str, u32, Option<usize>)] = &[
            ("one", 3, Some(1)),
            ("two", 3, Some(2)),
            ("three", 3, Some(3)),
            ("quorum", 3, Some(2)),
            ("quorum", 5, Some(3)),
            ("quorum", 1, Some(1)),
            ("all", 5, Some(5)),
            ("2", 3, Some(2)),
            ("4", 3, None),
            ("0", 3, None),
            ("three", 1, None),
        ];
        for (s, n, want) in table {
            let c = Consistency::parse(s).expect("parses");
            assert_eq!(c.required(*n, "r").ok(), *want, "{s} with n={n}");
        }
    }

    #[test]
    fn bad_consistency_spellings_are_rejected() {
        for s in ["", "ONE", "quorom", "-1", "1.5", "99999999999", " 1"] {
            assert!(parse_consistency(s, "r", false).is_err(), "{s:?}");
        }
        assert!(parse_consistency("any", "r", false).is_err());
        assert!(parse_consistency("any", "w", true).is_ok());
    }

    #[test]
    fn bucket_names_follow_the_contract() {
        for ok in ["default", "a", "A-b_9", &"x".repeat(64)] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a.b", "é", &"x".repeat(65)] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn n_is_frozen_once_a_bucket_holds_data() {
        let b = Buckets::load(Store::memory(), "n1", 3).expect("load");
        b.update(
            "t",
            BucketUpdate {
                n: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("n can change while empty");
        b.mark_has_data("t").await.expect("mark");
        let err = b
            .update(
                "t",
                BucketUpdate {
                    n: Some(2),
                    ..Default::default()
                },
            )
            .await
            .expect_err("n is frozen");
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert_eq!(crate::error::ApiError::from(err).code(), "bad_request");
        assert_eq!(b.get("t").map(|p| p.n), Some(1));
    }

    #[tokio::test]
    async fn a_remote_update_does_not_change_n_of_a_bucket_that_holds_data_here() {
        let b = Buckets::load(Store::memory(), "n1", 3).expect("load");
        b.mark_has_data("t").await.expect("mark");
        let mut props = b.get("t").expect("t");
        props.n = 5;
        props.conflicts = Conflicts::Lww;
        // Set elsewhere, later, by a node that believed the bucket empty.
        let remote = BucketRecord {
            name: "t".into(),
            props,
            has_data: false,
            updated_ms: crate::clock::unix_ms() + 60_000,
        };
        assert!(b.apply_remote(remote).await.expect("apply"));
        let now = b.get("t").expect("t");
        assert_eq!(now.n, 3, "n is frozen once the bucket holds data");
        assert_eq!(
            now.conflicts,
            Conflicts::Lww,
            "the rest of the newer setting applies"
        );
    }

    fn stored() -> impl proptest::strategy::Strategy<Value = Stored> {
        use proptest::prelude::*;
        (1u32..6, any::<bool>(), 0u64..4, any::<bool>()).prop_map(|(n, has_data, ms, lww)| {
            let mut props = BucketProps::defaults(3);
            props.n = n;
            if lww {
                props.conflicts = Conflicts::Lww;
            }
            Stored {
                props,
                has_data,
                updated_ms: ms,
            }
        })
    }

    fn same(a: &Stored, b: &Stored) -> bool {
        a.props == b.props && a.has_data == b.has_data && a.updated_ms == b.updated_ms
    }

    proptest::proptest! {
        #[test]
        fn merging_bucket_records_converges_and_keeps_n_where_data_was(a in stored(), b in stored(), c in stored()) {
            proptest::prop_assert!(same(&merge_stored(&a, &b), &merge_stored(&b, &a)));
            proptest::prop_assert!(same(&merge_stored(&a, &a), &a));
            proptest::prop_assert!(same(
                &merge_stored(&merge_stored(&a, &b), &c),
                &merge_stored(&a, &merge_stored(&b, &c))
            ));
            let m = merge_stored(&a, &b);
            if a.has_data && !b.has_data {
                proptest::prop_assert_eq!(m.props.n, a.props.n);
            }
            if b.has_data && !a.has_data {
                proptest::prop_assert_eq!(m.props.n, b.props.n);
            }
        }
    }

    #[tokio::test]
    async fn properties_survive_a_reload_from_the_store() {
        let store = Store::memory();
        let b = Buckets::load(store.clone(), "n1", 3).expect("load");
        b.update(
            "lw",
            BucketUpdate {
                conflicts: Some(Conflicts::Lww),
                ..Default::default()
            },
        )
        .await
        .expect("update");
        let again = Buckets::load(store, "n1", 3).expect("reload");
        assert_eq!(again.get("lw").map(|p| p.conflicts), Some(Conflicts::Lww));
        assert!(again.get("nope").is_none());
        assert!(again.get("default").is_some());
    }
}
