//! The errors a request can end in, and their one mapping to HTTP.
//!
//! Two layers. [`QuorumError`] is how a quorum read or write fails — too
//! few replicas alive, too few answering in time, an r/w the bucket cannot
//! satisfy — as the coordinator says it; it is plain data, so a replica
//! coordinator's failure reaches the node that forwarded the write as
//! itself, over the wire. [`ApiError`] is what an HTTP client gets.
//!
//! Handlers return `Result<_, ApiError>`; [`ApiError::status`] and
//! [`ApiError::body`] are the only place where an error becomes a status
//! code and the contract's JSON body (`{"error": code, "message": text,
//! ...}`), so the codes of API.md cannot drift between routes; the
//! conversions into [`ApiError`] (from [`QuorumError`] and from the
//! cluster-change driver's errors) are here too.

use serde_json::{Value as Json, json};

use crate::failure::QuorumError;
use crate::storage::StorageError;

impl From<QuorumError> for ApiError {
    fn from(e: QuorumError) -> ApiError {
        ApiError::Quorum(e)
    }
}

impl From<crate::buckets::Error> for ApiError {
    fn from(e: crate::buckets::Error) -> ApiError {
        use crate::buckets::Error as E;
        match e {
            E::Invalid(m) => ApiError::BadRequest(m),
            E::Consistency(q) => q.into(),
            E::Storage { node, source } => ApiError::storage(&node, 1, source),
        }
    }
}

impl From<crate::stream::Error> for ApiError {
    fn from(e: crate::stream::Error) -> ApiError {
        use crate::stream::Error as E;
        match e {
            E::Conflict(m) => ApiError::Conflict(m),
            E::NoMember(m) => ApiError::NotFound(m),
            // The change could not start on this node: it is unavailable
            // for it, and says why.
            e => ApiError::Quorum(QuorumError::Unavailable {
                required: 1,
                alive: 0,
                message: e.to_string(),
                failed: Vec::new(),
            }),
        }
    }
}

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: path, query, body or causal context.
    #[error("{0}")]
    BadRequest(String),
    /// The key is longer than 1024 bytes.
    #[error("key is {0} bytes; keys are 1 to 1024 bytes")]
    KeyTooLong(usize),
    /// The value is larger than `--max-value-bytes`.
    #[error("value is larger than this node's limit of {limit} bytes (--max-value-bytes)")]
    ValueTooLarge {
        /// The node's limit.
        limit: u64,
    },
    /// A bucket (or other named thing) that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The key has no live version.
    #[error("key not found")]
    KeyNotFound {
        /// The context of a known deletion, sent as `X-Causal-Context`.
        context: Option<String>,
    },
    /// A quorum read or write failed: `bad_consistency` (400),
    /// `unavailable` (503) or `timeout` (504), with the counts and the
    /// replicas that failed.
    #[error(transparent)]
    Quorum(QuorumError),
    /// Too many requests in flight.
    #[error("node is overloaded: {0}")]
    Overloaded(String),
    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// The method is not served on this route.
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// The node is not in a state that allows this (e.g. a cluster change
    /// while another is in flight).
    #[error("{0}")]
    Conflict(String),
    /// The request's body did not arrive within `--http-body-timeout-ms`.
    #[error("the request body did not arrive within {0:?} (--http-body-timeout-ms)")]
    RequestTimeout(std::time::Duration),
}

impl ApiError {
    /// The HTTP status code of the error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) | ApiError::KeyTooLong(_) => 400,
            ApiError::Quorum(QuorumError::BadConsistency(_)) => 400,
            ApiError::ValueTooLarge { .. } | ApiError::Quorum(QuorumError::KeyTooLarge { .. }) => {
                413
            }
            ApiError::NotFound(_) | ApiError::KeyNotFound { .. } => 404,
            ApiError::Quorum(QuorumError::Unavailable { .. }) | ApiError::Overloaded(_) => 503,
            ApiError::Quorum(QuorumError::Timeout { .. }) => 504,
            ApiError::Unauthorized(_) => 401,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Conflict(_) => 409,
            ApiError::RequestTimeout(_) => 408,
        }
    }

    /// The stable error code of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::MethodNotAllowed(_) => "bad_request",
            ApiError::KeyTooLong(_) => "key_too_long",
            ApiError::ValueTooLarge { .. } => "value_too_large",
            ApiError::Quorum(QuorumError::KeyTooLarge { .. }) => "key_too_large",
            ApiError::Quorum(QuorumError::BadConsistency(_)) => "bad_consistency",
            ApiError::NotFound(_) | ApiError::KeyNotFound { .. } => "not_found",
            ApiError::Quorum(QuorumError::Unavailable { .. }) => "unavailable",
            ApiError::Quorum(QuorumError::Timeout { .. }) => "timeout",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Conflict(_) => "conflict",
            ApiError::RequestTimeout(_) => "request_timeout",
        }
    }

    /// The JSON body: `error`, `message`, and the fields each code adds.
    pub fn body(&self) -> Json {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        match self {
            ApiError::Quorum(QuorumError::Unavailable {
                required,
                alive,
                failed,
                ..
            }) => {
                body["required"] = json!(required);
                body["alive"] = json!(alive);
                body["failed"] = json!(failed);
            }
            ApiError::Quorum(QuorumError::Timeout {
                required,
                acks,
                failed,
                ..
            }) => {
                body["required"] = json!(required);
                body["acks"] = json!(acks);
                body["failed"] = json!(failed);
            }
            _ => {}
        }
        body
    }

    /// A local storage failure seen by a request that needed `required`
    /// replicas: this replica is out, so the request is unavailable.
    pub fn storage(node: &str, required: usize, err: StorageError) -> ApiError {
        QuorumError::storage(node, required, err).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_contract_status_and_code() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::KeyTooLong(1025), 400, "key_too_long"),
            (
                ApiError::ValueTooLarge { limit: 10 },
                413,
                "value_too_large",
            ),
            (
                QuorumError::KeyTooLarge {
                    size: 20,
                    limit: 10,
                }
                .into(),
                413,
                "key_too_large",
            ),
            (
                QuorumError::BadConsistency("r".into()).into(),
                400,
                "bad_consistency",
            ),
            (ApiError::NotFound("b".into()), 404, "not_found"),
            (ApiError::KeyNotFound { context: None }, 404, "not_found"),
            (
                ApiError::from(QuorumError::Unavailable {
                    required: 2,
                    alive: 1,
                    message: "m".into(),
                    failed: vec![],
                }),
                503,
                "unavailable",
            ),
            (
                ApiError::from(QuorumError::Timeout {
                    required: 2,
                    acks: 1,
                    message: "m".into(),
                    failed: vec![],
                }),
                504,
                "timeout",
            ),
            (ApiError::Overloaded("x".into()), 503, "overloaded"),
            (ApiError::Unauthorized("x".into()), 401, "unauthorized"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (
                ApiError::RequestTimeout(std::time::Duration::from_secs(1)),
                408,
                "request_timeout",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status(), status, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.body()["error"], code);
            assert!(err.body()["message"].is_string());
        }
    }

    #[test]
    fn unavailable_and_timeout_bodies_carry_their_counts() {
        let b = ApiError::from(QuorumError::Unavailable {
            required: 2,
            alive: 1,
            message: "m".into(),
            failed: vec![],
        })
        .body();
        assert_eq!(
            (b["required"].as_u64(), b["alive"].as_u64()),
            (Some(2), Some(1))
        );
        let b = ApiError::from(QuorumError::Timeout {
            required: 3,
            acks: 2,
            message: "m".into(),
            failed: vec![],
        })
        .body();
        assert_eq!(
            (b["required"].as_u64(), b["acks"].as_u64()),
            (Some(3), Some(2))
        );
    }
}
