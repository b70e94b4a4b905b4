//! A thin raw-HTTP helper for contract tests: every call returns the status,
//! headers and body exactly as the node sent them, refuses any 5xx other
//! than the contract's 503 and 504, and checks the response against
//! docs/openapi.yaml ([`crate::openapi`]).

use anyhow::{Result, bail};
use reqwest::header::HeaderMap;

/// A response as received.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON (panics with the body when it is not JSON: tests only).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` code of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }

    /// The causal context header.
    pub fn context(&self) -> Option<String> {
        self.header("x-causal-context")
    }
}

/// Raw HTTP access to one node.
#[derive(Clone)]
pub struct Api {
    /// Base URL, e.g. `http://127.0.0.1:8001`.
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for `base`.
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Sends a request; `path` is already percent-encoded.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Resp> {
        let accepts_json = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("accept") && v.contains("application/json"));
        let method_name = method;
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?.to_vec();
        if (500..600).contains(&status) && status != 503 && status != 504 {
            bail!(
                "undocumented {status} for {path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        crate::openapi::check(&crate::openapi::Exchange {
            method: method_name,
            path,
            accepts_json,
            status,
            content_type: text("content-type"),
            trace: text("x-trace"),
            body: &body,
        });
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Resp> {
        self.send("GET", path, &[], None).await
    }

    /// GET with headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Resp> {
        self.send("GET", path, headers, None).await
    }

    /// PUT a body.
    pub async fn put(&self, path: &str, body: &[u8]) -> Result<Resp> {
        self.send("PUT", path, &[], Some(body.to_vec())).await
    }

    /// PUT with headers.
    pub async fn put_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Resp> {
        self.send("PUT", path, headers, Some(body.to_vec())).await
    }

    /// DELETE with headers.
    pub async fn delete_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Resp> {
        self.send("DELETE", path, headers, None).await
    }
}

/// Percent-encodes key bytes as one path segment.
pub fn enc(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len() * 3);
    for &b in key {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
