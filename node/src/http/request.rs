//! What a handler gets from a request, parsed and validated: the query,
//! the body (read with a size cap, never whole into memory first), keys
//! and bearer tokens.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use warp::http::{HeaderMap, Method, header};

use super::Api;
use crate::error::ApiError;

/// Longest key, in bytes, after percent-decoding.
pub const MAX_KEY_BYTES: usize = 1024;

type DataStream = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;
use bytes::Bytes;

/// A request body, read on demand.
pub struct Body {
    stream: DataStream,
    /// How long the whole body may take to arrive (`--http-body-timeout-ms`).
    deadline: Duration,
}

impl Body {
    /// Wraps warp's body stream; reading it must end within `deadline`.
    pub fn new<S, B>(s: S, deadline: Duration) -> Body
    where
        S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
        B: Buf + Send,
    {
        Body {
            stream: Box::pin(s.map(|r| r.map(|mut b| b.copy_to_bytes(b.remaining())))),
            deadline,
        }
    }

    /// Reads the whole body, failing with `value_too_large` as soon as it
    /// passes `limit` bytes (so a huge upload costs at most `limit` memory),
    /// and with `request_timeout` when it takes longer than the deadline:
    /// a client trickling its body holds a connection and an admission
    /// slot, so it gets a bounded time, whatever its rate.
    pub async fn read(self, headers: &HeaderMap, limit: u64) -> Result<Bytes, ApiError> {
        let deadline = self.deadline;
        tokio::time::timeout(deadline, self.read_all(headers, limit))
            .await
            .unwrap_or(Err(ApiError::RequestTimeout(deadline)))
    }

    async fn read_all(mut self, headers: &HeaderMap, limit: u64) -> Result<Bytes, ApiError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ApiError::ValueTooLarge { limit });
        }
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
        while let Some(chunk) = self.stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            })?;
            if buf.len() as u64 + chunk.len() as u64 > limit {
                return Err(ApiError::ValueTooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

/// The parsed request handed to a route.
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Query parameters.
    pub query: Query,
    /// Headers.
    pub headers: HeaderMap,
    /// The body, not yet read.
    pub body: Body,
}

impl Request {
    /// Whether the client asked for JSON (`Accept: application/json`).
    pub fn wants_json(&self) -> bool {
        self.headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/json"))
    }

    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Decoded query parameters (`a=b&c=d`); later duplicates win.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string (without `?`).
    pub fn parse(raw: &str) -> Query {
        Query {
            pairs: form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `timeout_ms`, if given: an integer from 1 to 600000.
    pub fn timeout(&self) -> Result<Option<Duration>, ApiError> {
        match self.get("timeout_ms") {
            None => Ok(None),
            Some(s) => match s.parse::<u64>() {
                Ok(ms) if (1..=600_000).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
                _ => Err(ApiError::BadRequest(format!(
                    "timeout_ms={s:?} must be an integer from 1 to 600000"
                ))),
            },
        }
    }

    /// A boolean flag such as `trace=true`.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1" | "yes"))
    }
}

/// Percent-decodes one raw path segment into key bytes and checks the
/// contract's length limits.
pub fn decode_key(segment: &str) -> Result<Vec<u8>, ApiError> {
    check_escapes(segment)?;
    // Through `Cow`: a segment without escapes (the common case) is copied
    // in one go instead of collected a byte at a time.
    let key = std::borrow::Cow::from(percent_encoding::percent_decode_str(segment)).into_owned();
    if key.is_empty() {
        return Err(ApiError::BadRequest(
            "the key is empty; keys are 1 to 1024 bytes".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::KeyTooLong(key.len()));
    }
    Ok(key)
}

/// Refuses a `%` not followed by two hex digits: decoders differ on what
/// such a key means (most pass it through literally), so storing it under
/// one reading would make it unreachable to a client that means another.
fn check_escapes(segment: &str) -> Result<(), ApiError> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + off;
        let hex = bytes.get(at + 1..at + 3);
        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            let shown: String = segment[at..].chars().take(3).collect();
            return Err(ApiError::BadRequest(format!(
                "malformed percent-encoding {shown:?} at byte {at} of the key: a % must be followed by two hex digits (write a literal % as %25)"
            )));
        }
        i = at + 3;
    }
    Ok(())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Constant-time comparison (`subtle`): a token check must not leak how
/// many leading bytes matched.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Checks the bearer token for `route` when tokens are configured:
/// `/health` is open, and so is `/ui` (the console checks its data routes
/// itself, as the API routes they stand beside); `/internal/...` (repair, faults, ...), `/cluster/ranges`,
/// the cluster-change routes (`cluster_change`, cleanup included) and any
/// change of a bucket's properties need the admin token; a client token
/// reads and writes keys and reads what the cluster and its buckets are.
pub fn check_auth(
    api: &Api,
    headers: &HeaderMap,
    route: &str,
    method: &Method,
) -> Result<(), ApiError> {
    let cfg = &api.config;
    if !cfg.auth_enabled() || matches!(route, "health" | "ui") {
        return Ok(());
    }
    let Some(token) = bearer(headers) else {
        return Err(ApiError::Unauthorized(
            "this node requires Authorization: Bearer <token>".into(),
        ));
    };
    let is_admin = cfg.admin_token.as_deref().is_some_and(|a| same(a, token));
    let bucket_change = route == "bucket" && !matches!(*method, Method::GET | Method::HEAD);
    if bucket_change || matches!(route, "internal" | "ranges" | "cluster_change") {
        return if is_admin {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(
                "this route needs the admin token".into(),
            ))
        };
    }
    if is_admin || cfg.client_tokens.iter().any(|t| same(t, token)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "the bearer token is not valid".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_decoded_and_length_checked() {
        assert_eq!(decode_key("a%2Fb").expect("ok"), b"a/b");
        assert_eq!(decode_key("%E2%9C%93").expect("ok"), "✓".as_bytes());
        assert_eq!(decode_key(&"k".repeat(1024)).expect("ok").len(), 1024);
        assert_eq!(
            decode_key(&"k".repeat(1025)).expect_err("long").code(),
            "key_too_long"
        );
        assert_eq!(decode_key("").expect_err("empty").code(), "bad_request");
        // 1024 bytes encoded as 3072 characters is still 1024 bytes.
        assert!(decode_key(&"%FF".repeat(1024)).is_ok());
    }

    #[test]
    fn a_key_with_a_malformed_escape_is_a_bad_request_not_stored_literally() {
        for bad in ["%", "%zz", "%4", "a%", "ab%4", "%4g", "ok%25then%"] {
            let err = decode_key(bad).expect_err(bad);
            assert_eq!(err.code(), "bad_request", "{bad}");
        }
        assert_eq!(decode_key("100%25").expect("ok"), b"100%");
        assert_eq!(decode_key("%aF%Ab").expect("ok"), [0xaf, 0xab]);
    }

    proptest::proptest! {
        /// Any segment is decoded or refused without a panic, and any key
        /// survives encoding every byte and decoding again.
        #[test]
        fn any_segment_is_decoded_or_refused_and_keys_round_trip(
            segment in "[%0-9a-zA-Z/\\u{80}-\\u{10ffff}]{0,40}",
            key in proptest::collection::vec(proptest::num::u8::ANY, 1..64),
        ) {
            let _ = decode_key(&segment);
            let encoded: String = key.iter().map(|b| format!("%{b:02X}")).collect();
            proptest::prop_assert_eq!(decode_key(&encoded).expect("encoded key"), key);
        }
    }

    #[test]
    fn query_parsing_and_timeouts() {
        let q = Query::parse("r=one&timeout_ms=250&trace=true");
        assert_eq!(q.get("r"), Some("one"));
        assert_eq!(q.timeout().expect("ok"), Some(Duration::from_millis(250)));
        assert!(q.flag("trace"));
        for bad in [
            "timeout_ms=0",
            "timeout_ms=-1",
            "timeout_ms=x",
            "timeout_ms=600001",
        ] {
            assert!(Query::parse(bad).timeout().is_err(), "{bad}");
        }
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
