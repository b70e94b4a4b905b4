//! The bytes of a hint: its key in the `hints` partition and its value.
//!
//! Key: `target || 0x00 || created_ms (8 bytes BE) || seq (8 bytes BE)`.
//! Node ids never contain 0x00, so the first 0x00 ends the target, and
//! every key of one target lies in `[target || 0x00, target || 0x01)`: one
//! contiguous range per target that no other target's keys can enter (see
//! [`target_end`]). Big-endian integers make byte order time order within
//! that range, so a forward scan is oldest first and expiry can stop at the
//! first hint that is still young.
//!
//! Value: a format byte, then a MessagePack array `[bucket, key, object]`
//! where `object` is the key's versions as [`Dvvs::encode`] writes them. The
//! object keeps its own format byte rather than being inlined, so a hint
//! written before an upgrade of the version-set encoding still decodes
//! after it: hints outlive restarts by up to the hint window.

use serde::{Deserialize, Serialize};

use crate::storage::{MAX_ENGINE_KEY_LEN, StorageError};
use crate::version::{Dvvs, VersionError};

/// Bytes after the target and its 0x00: `created_ms` then `seq`.
const SUFFIX_LEN: usize = 16;

/// First byte of every hint value, so the record can change without old
/// hints being misread.
const RECORD_FORMAT: u8 = 1;

/// Why a stored hint value does not decode. Never leaves this module's
/// parent: a bad record is logged, deleted and counted, not returned.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("unknown hint record format {0}")]
    UnsupportedFormat(u8),
    #[error("hint record does not decode: {0}")]
    Decode(String),
    #[error("hint record has {0} trailing bytes")]
    Trailing(usize),
    #[error("hinted versions do not decode: {0}")]
    Object(#[from] VersionError),
}

/// A hint key split into its parts.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct KeyParts<'a> {
    pub target: &'a str,
    pub created_ms: u64,
    pub seq: u64,
}

/// Refuses a target the key layout cannot hold unambiguously.
pub(super) fn check_target(target: &str) -> Result<(), StorageError> {
    if target.is_empty() {
        return Err(StorageError::InvalidKey("empty hint target".to_owned()));
    }
    if target.as_bytes().contains(&0) {
        return Err(StorageError::InvalidKey(format!(
            "hint target {target:?} contains a 0x00 byte"
        )));
    }
    if target.len() + 1 + SUFFIX_LEN > MAX_ENGINE_KEY_LEN {
        return Err(StorageError::InvalidKey(format!(
            "hint target of {} bytes is too long",
            target.len()
        )));
    }
    Ok(())
}

/// The key of one hint. `target` must have passed [`check_target`].
pub(super) fn hint_key(target: &str, created_ms: u64, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() + 1 + SUFFIX_LEN);
    out.extend_from_slice(target.as_bytes());
    out.push(0);
    out.extend_from_slice(&created_ms.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// The smallest key a hint for `target` can have.
pub(super) fn target_start(target: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() + 1);
    out.extend_from_slice(target.as_bytes());
    out.push(0);
    out
}

/// The exclusive upper bound of `target`'s hints: `target || 0x01`.
///
/// No other target's keys fall in `[target || 0x00, target || 0x01)`: a
/// longer id `target || c || ..` has `c >= 0x01` (ids hold no 0x00), so its
/// keys sort at or above the bound; a shorter id that `target` extends has
/// keys `id || 0x00 ..`, below `target`; any other id differs from `target`
/// at a byte both have, which orders all of its keys on one side.
pub(super) fn target_end(target: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() + 1);
    out.extend_from_slice(target.as_bytes());
    out.push(1);
    out
}

/// The smallest byte string strictly greater than `key`, to resume a scan.
pub(super) fn successor(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.extend_from_slice(key);
    out.push(0);
    out
}

/// Splits a hint key; `None` for bytes no [`hint_key`] call produced.
pub(super) fn parse_key(key: &[u8]) -> Option<KeyParts<'_>> {
    let sep = key.iter().position(|&b| b == 0)?;
    let (target, rest) = key.split_at(sep);
    let target = std::str::from_utf8(target).ok().filter(|t| !t.is_empty())?;
    let suffix: &[u8; SUFFIX_LEN] = rest.get(1..)?.try_into().ok()?;
    let (created, seq) = suffix.split_at(8);
    Some(KeyParts {
        target,
        created_ms: u64::from_be_bytes(created.try_into().ok()?),
        seq: u64::from_be_bytes(seq.try_into().ok()?),
    })
}

#[derive(Serialize)]
struct RecordRef<'a> {
    bucket: &'a str,
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
    #[serde(with = "serde_bytes")]
    object: &'a [u8],
}

#[derive(Deserialize)]
struct Record {
    bucket: String,
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    object: Vec<u8>,
}

/// The stored value of a hint.
pub(super) fn encode_record(
    bucket: &str,
    key: &[u8],
    object: &Dvvs,
) -> Result<Vec<u8>, StorageError> {
    let object = object.encode();
    let mut out = Vec::with_capacity(1 + bucket.len() + key.len() + object.len() + 16);
    out.push(RECORD_FORMAT);
    // `encode::write` (not `to_vec_named`) writes the struct as an array:
    // no field names in every record.
    rmp_serde::encode::write(
        &mut out,
        &RecordRef {
            bucket,
            key,
            object: &object,
        },
    )
    .map_err(|e| StorageError::Engine(format!("encoding a hint failed: {e}")))?;
    Ok(out)
}

/// Reads [`encode_record`]'s output: `(bucket, key, object)`.
pub(super) fn decode_record(bytes: &[u8]) -> Result<(String, Vec<u8>, Dvvs), RecordError> {
    match bytes.split_first() {
        None => Err(RecordError::Empty),
        Some((&RECORD_FORMAT, rest)) => {
            let mut de = rmp_serde::Deserializer::new(rest);
            let r = Record::deserialize(&mut de).map_err(|e| RecordError::Decode(e.to_string()))?;
            let left = de.into_inner().len();
            if left != 0 {
                return Err(RecordError::Trailing(left));
            }
            let object = Dvvs::decode(&r.object)?;
            Ok((r.bucket, r.key, object))
        }
        Some((&v, _)) => Err(RecordError::UnsupportedFormat(v)),
    }
}
