//! The storage and RPC form of a [`Dvvs`], written and read by hand over
//! `rmp`'s MessagePack primitives.
//!
//! The bytes are exactly those `rmp_serde` writes for the serde derive
//! (structs as arrays, the smallest integer forms), so data written before
//! this codec existed reads back unchanged, and a property test holds the
//! two to the same bytes. It exists because it is the hottest decode of a
//! request: every read and every read-modify-write decodes one set, and
//! serde's visitors with `rmp_serde`'s copying reader took nearly twice as
//! long (`cargo bench -p quorumkv-node --bench codec`: decode 317 against
//! 178 ns for a one-version set, encode 237 against 129).
//!
//! ```text
//! set   = array(1)[ array(n) of entry ]
//! entry = array(3)[ id: str, counter: uint, array(m) of array(2)[ dot: uint, value ] ]
//! value = array(4)[ data: bin, content_type: str, tombstone: bool, timestamp: uint ]
//! ```

use rmp::decode as de;
use rmp::encode as en;

use super::{Dvvs, Entry, Unchecked};
use crate::version::VersionError;
use crate::version::hlc::Timestamp;
use crate::version::value::Value;

/// Appends the MessagePack form of `d` to `buf`.
pub(super) fn encode_into(d: &Dvvs, buf: &mut Vec<u8>) -> Result<(), String> {
    let e = |e: en::ValueWriteError<_>| e.to_string();
    let len = |n: usize| {
        u32::try_from(n).map_err(|_| format!("{n} items do not fit a MessagePack array"))
    };
    let (start, hint) = (buf.len(), encoded_size_hint(d));
    buf.reserve(hint);
    en::write_array_len(buf, 1).map_err(e)?;
    en::write_array_len(buf, len(d.entries.len())?).map_err(e)?;
    for entry in &d.entries {
        en::write_array_len(buf, 3).map_err(e)?;
        en::write_str(buf, &entry.id).map_err(e)?;
        en::write_uint(buf, entry.counter).map_err(e)?;
        en::write_array_len(buf, len(entry.values.len())?).map_err(e)?;
        for (dot, v) in &entry.values {
            en::write_array_len(buf, 2).map_err(e)?;
            en::write_uint(buf, *dot).map_err(e)?;
            en::write_array_len(buf, 4).map_err(e)?;
            en::write_bin(buf, &v.data).map_err(e)?;
            en::write_str(buf, &v.content_type).map_err(e)?;
            en::write_bool(buf, v.tombstone).map_err(|e| e.to_string())?;
            en::write_uint(buf, v.timestamp.0).map_err(e)?;
        }
    }
    debug_assert!(buf.len() - start <= hint, "the size hint is a bound");
    Ok(())
}

/// An upper bound on the encoded size, so the buffer is allocated once:
/// the payload [`Dvvs::size_bytes`] counts, plus what MessagePack adds
/// beyond it (at most 12 bytes of markers and wider integers per entry,
/// 14 per version, 6 for the set).
fn encoded_size_hint(d: &Dvvs) -> usize {
    d.size_bytes() + 6 + 16 * (d.entries.len() + d.sibling_count())
}

/// Reads [`encode_into`]'s output: the whole of `bytes`, nothing after it.
/// Shape errors are [`VersionError::Decode`]; the set's invariants are
/// checked by the caller.
pub(super) fn decode(mut bytes: &[u8]) -> Result<Unchecked, VersionError> {
    let rd = &mut bytes;
    array(rd, 1, "set")?;
    let n = array_len(rd)?;
    let mut entries = Vec::with_capacity(n.min(rd.len()));
    for _ in 0..n {
        array(rd, 3, "entry")?;
        let id = string(rd)?;
        let counter = uint(rd)?;
        let m = array_len(rd)?;
        let mut values = Vec::with_capacity(m.min(rd.len()));
        for _ in 0..m {
            array(rd, 2, "version")?;
            let dot = uint(rd)?;
            array(rd, 4, "value")?;
            let len = de::read_bin_len(rd).map_err(fail)? as usize;
            let data = take(rd, len)?.to_vec();
            let content_type = string(rd)?;
            let tombstone = de::read_bool(rd).map_err(fail)?;
            let timestamp = Timestamp(uint(rd)?);
            values.push((
                dot,
                Value {
                    data,
                    content_type,
                    tombstone,
                    timestamp,
                },
            ));
        }
        entries.push(Entry {
            id,
            counter,
            values,
        });
    }
    if !rd.is_empty() {
        return Err(VersionError::Invalid(format!(
            "{} trailing bytes",
            rd.len()
        )));
    }
    Ok(Unchecked { entries })
}

fn fail(e: impl std::fmt::Display) -> VersionError {
    VersionError::Decode(e.to_string())
}

fn array_len(rd: &mut &[u8]) -> Result<usize, VersionError> {
    Ok(de::read_array_len(rd).map_err(fail)? as usize)
}

fn array(rd: &mut &[u8], want: usize, what: &str) -> Result<(), VersionError> {
    match array_len(rd)? {
        n if n == want => Ok(()),
        n => Err(VersionError::Decode(format!(
            "a {what} has {n} fields, expected {want}"
        ))),
    }
}

fn uint(rd: &mut &[u8]) -> Result<u64, VersionError> {
    de::read_int(rd).map_err(fail)
}

fn take<'a>(rd: &mut &'a [u8], len: usize) -> Result<&'a [u8], VersionError> {
    if len > rd.len() {
        return Err(VersionError::Decode(format!(
            "{len} bytes announced, {} left",
            rd.len()
        )));
    }
    let (head, tail) = rd.split_at(len);
    *rd = tail;
    Ok(head)
}

fn string(rd: &mut &[u8]) -> Result<String, VersionError> {
    let len = de::read_str_len(rd).map_err(fail)? as usize;
    let bytes = take(rd, len)?;
    std::str::from_utf8(bytes).map(str::to_owned).map_err(fail)
}
