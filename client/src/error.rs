//! The client's one error type.
//!
//! Callers act on the variant: an [`Error::Api`] is the node's answer (its
//! `code` is the stable string of API.md, e.g. `unavailable`, `timeout`,
//! `bad_consistency`), an [`Error::Transport`] means no node answered at all,
//! an [`Error::InvalidResponse`] means a node answered something outside the
//! contract, and [`Error::BadInput`] is refused before anything is sent.

use serde_json::Value;

/// Everything a request through [`crate::Client`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node answered with an error status and (usually) the contract's
    /// JSON error body `{"error","message",...}`. `body` keeps the whole body
    /// so fields such as `required`, `alive` and `acks` stay reachable.
    #[error("{}", render_api(*.status, .code, .message, .body))]
    Api {
        /// HTTP status code (400, 404, 503, 504, ...).
        status: u16,
        /// The contract's error code (`"unavailable"`, `"timeout"`, ...);
        /// `http_<status>` when the body had none.
        code: String,
        /// The node's explanation for a person.
        message: String,
        /// The parsed JSON body (`Value::Null` if it was not JSON).
        body: Value,
    },
    /// No node could be reached, or the connection broke mid-request.
    #[error("transport: {0}")]
    Transport(String),
    /// A node answered, but not in the shape API.md promises.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The request was refused locally: nothing was sent.
    #[error("bad input: {0}")]
    BadInput(String),
}

impl Error {
    /// Builds an [`Error::Api`] from a status and the raw response body.
    ///
    /// A body that is not the contract's JSON still yields a readable error:
    /// its text (trimmed, shortened) becomes the message.
    pub fn from_response(status: u16, body: &[u8]) -> Error {
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let code = parsed
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("http_{status}"));
        let message = match parsed.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None if parsed.is_null() => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let mut short: String = text.chars().take(200).collect();
                if short.len() < text.len() {
                    short.push('…');
                }
                short
            }
            None => String::new(),
        };
        Error::Api {
            status,
            code,
            message,
            body: parsed,
        }
    }

    /// The HTTP status, for an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The contract's error code, for an [`Error::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when trying again later may succeed: too few replicas (503),
    /// a quorum timeout (504), or no node reachable. A 504 write may already
    /// be applied on some replicas, so retrying it without the context can
    /// create a sibling.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Transport(_)) || matches!(self.status(), Some(503) | Some(504))
    }
}

/// One line: `code (status): message`; the quorum figures (`required`,
/// `alive`, `acks`) stand in for a missing message. The node's messages
/// already state them, so they are not repeated.
fn render_api(status: u16, code: &str, message: &str, body: &Value) -> String {
    let num = |k: &str| body.get(k).and_then(Value::as_u64);
    let mut figures = Vec::new();
    if let Some(r) = num("required") {
        figures.push(format!("required {r}"));
    }
    if let Some(a) = num("alive") {
        figures.push(format!("alive {a}"));
    }
    if let Some(a) = num("acks") {
        figures.push(format!("acks {a}"));
    }
    let mut line = format!("{code} ({status})");
    if !message.is_empty() {
        line.push_str(": ");
        line.push_str(&message.replace('\n', " "));
    }
    if !figures.is_empty() && message.is_empty() {
        line.push_str(": ");
        line.push_str(&figures.join(", "));
    }
    line
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's Display hides the cause ("error sending request"); the
        // source chain holds the useful part ("Connection refused").
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        if e.is_decode() {
            Error::InvalidResponse(text)
        } else {
            Error::Transport(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_renders_message_and_figures_on_one_line() {
        let body = br#"{"error":"unavailable","message":"1 of 3 replicas alive, 2 required","required":2,"alive":1}"#;
        let e = Error::from_response(503, body);
        assert_eq!(
            e.to_string(),
            "unavailable (503): 1 of 3 replicas alive, 2 required"
        );
        assert_eq!(e.code(), Some("unavailable"));
        assert!(e.is_retryable());
    }

    #[test]
    fn timeout_without_message_shows_the_figures() {
        let e = Error::from_response(504, br#"{"error":"timeout","required":2,"acks":1}"#);
        assert_eq!(e.to_string(), "timeout (504): required 2, acks 1");
    }

    #[test]
    fn non_json_body_becomes_the_message() {
        let e = Error::from_response(502, b"Bad Gateway\n");
        assert_eq!(e.to_string(), "http_502 (502): Bad Gateway");
        assert_eq!(e.code(), Some("http_502"));
    }

    #[test]
    fn multi_line_message_stays_on_one_line() {
        let e = Error::from_response(400, br#"{"error":"bad_request","message":"a\nb"}"#);
        assert_eq!(e.to_string(), "bad_request (400): a b");
        assert!(!e.is_retryable());
    }

    #[test]
    fn empty_body_still_renders() {
        let e = Error::from_response(500, b"");
        assert_eq!(e.to_string(), "http_500 (500)");
    }
}
