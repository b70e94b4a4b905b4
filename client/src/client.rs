//! [`Client`]: typed, async access to one quorumkv cluster over HTTP.
//!
//! # Which node answers
//!
//! Any node coordinates any request, so the client needs only addresses.
//! Every request goes to the FIRST node of the list; only when it cannot be
//! reached (the TCP connection fails — nothing was sent) does the client try
//! the next one, and so on. It never retries after a request was sent: a
//! write that timed out may already be applied, and repeating it without its
//! context would create a sibling. Keeping the first node preferred (rather
//! than sticking to the last one that worked) makes the coordinator of an
//! experiment predictable: create one `Client` per node to target each.
//!
//! # Reads
//!
//! Reads send `Accept: application/json`, so one request returns every
//! sibling with its base64 body and content type. The raw forms (200 with
//! the value as body, 300 with `siblings`) are understood too, in case a
//! node or proxy ignores `Accept`.
//!
//! # Timeouts
//!
//! The builder's timeout bounds each HTTP exchange (default 10 s). A request
//! with a larger `timeout_ms` for the node's quorum gets that plus 2 s, so
//! the node's `504 timeout` (which says how many replicas acknowledged)
//! arrives before the client gives up.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::key::encode_segment;
use crate::types::{
    BucketProps, BucketPropsUpdate, Context, Fetched, Health, Member, ReadOptions, RingInfo,
    Sibling, Versioned, WriteOptions,
};

/// The header carrying the causal context token.
pub const CONTEXT_HEADER: &str = "x-causal-context";

/// Content type stored when a write names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Extra client-side time granted past a request's `timeout_ms`.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

/// A handle to a quorumkv cluster. Cheap to clone (connections are pooled
/// and shared); safe to use from many tasks at once.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    nodes: Vec<String>,
    token: Option<String>,
    timeout: Duration,
}

/// Options for [`Client`]; start with [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    nodes: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

/// The certificates of a PEM bundle, as trust roots for `https://` nodes.
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, Error> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| Error::BadInput(format!("the CA bundle is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::BadInput(
            "the CA bundle holds no PEM certificate".into(),
        ));
    }
    Ok(certs)
}

impl ClientBuilder {
    /// The client-side timeout of one HTTP exchange (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long to wait for a TCP connection before trying the next node
    /// (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request, for nodes
    /// started with client tokens.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trusts the CA certificates of the PEM bundle `pem` for `https://`
    /// nodes, besides the system's roots.
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Checks the node addresses and builds the client.
    ///
    /// Addresses are base URLs (`http://127.0.0.1:8001`,
    /// `https://n1.example:8001`); a bare `host:port` gets `http://`
    /// prepended and a trailing `/` is dropped.
    pub fn build(self) -> Result<Client, Error> {
        if self.nodes.is_empty() {
            return Err(Error::BadInput("no node address given".into()));
        }
        let nodes = self
            .nodes
            .iter()
            .map(|n| normalize_node(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(pem) = &self.ca_pem {
            for cert in ca_certificates(pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| Error::BadInput(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            nodes,
            token: self.token,
            timeout: self.timeout,
        })
    }
}

/// Turns `host:port` or `http://host:port/` into `http://host:port`.
fn normalize_node(node: &str) -> Result<String, Error> {
    let node = node.trim();
    let with_scheme = if node.contains("://") {
        node.to_string()
    } else {
        format!("http://{node}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| Error::BadInput(format!("node address {node:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::BadInput(format!(
            "node address {node:?}: only http:// and https:// are supported"
        )));
    }
    if url.host_str().is_none() {
        return Err(Error::BadInput(format!(
            "node address {node:?} has no host"
        )));
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

/// The innermost cause of an error ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The JSON shape of a read: `{"context","values"}` (with `Accept: json`)
/// or `{"context","siblings"}` (a raw 300).
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    values: Option<Vec<WireSibling>>,
    #[serde(default)]
    siblings: Option<Vec<WireSibling>>,
}

#[derive(Deserialize)]
struct WireSibling {
    value_base64: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    deleted: bool,
}

/// Decodes standard or URL-safe base64, padded or not.
fn decode_base64(s: &str) -> Result<Vec<u8>, Error> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
        .ok_or_else(|| Error::InvalidResponse(format!("value_base64 is not base64: {s:.40}")))
}

fn header_context(headers: &HeaderMap) -> Option<Context> {
    headers
        .get(CONTEXT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(|s| Context(s.to_string()))
}

fn header_str(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parses a JSON read envelope into a [`Fetched`]. `None` when `body` is not
/// such an envelope (then a 200 is a raw value that happens to be JSON).
fn parse_envelope(body: &[u8], headers: &HeaderMap) -> Option<Result<Fetched, Error>> {
    let env: Envelope = serde_json::from_slice(body).ok()?;
    let wire = env.values.or(env.siblings)?;
    let context = env.context.map(Context).or_else(|| header_context(headers));
    let values = wire
        .into_iter()
        .map(|w| {
            Ok(Sibling {
                value: decode_base64(&w.value_base64)?,
                content_type: w
                    .content_type
                    .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string()),
                deleted: w.deleted,
            })
        })
        .collect::<Result<Vec<_>, Error>>();
    Some(values.and_then(|values| {
        if values.is_empty() {
            return Ok(Fetched::NotFound { context });
        }
        let context = context.ok_or_else(|| {
            Error::InvalidResponse("read answer carries no causal context".into())
        })?;
        Ok(Fetched::Found(Versioned { context, values }))
    }))
}

/// Interprets the answer to a key read (exposed within the crate for tests).
pub(crate) fn interpret_read(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Fetched, Error> {
    match status.as_u16() {
        200 => {
            let is_json = header_str(headers, CONTENT_TYPE)
                .is_some_and(|ct| ct.starts_with("application/json"));
            if is_json && let Some(fetched) = parse_envelope(&body, headers) {
                return fetched;
            }
            let context = header_context(headers).ok_or_else(|| {
                Error::InvalidResponse("200 read without X-Causal-Context".into())
            })?;
            let content_type = header_str(headers, CONTENT_TYPE)
                .unwrap_or(DEFAULT_CONTENT_TYPE)
                .to_string();
            Ok(Fetched::Found(Versioned {
                context,
                values: vec![Sibling {
                    value: body.to_vec(),
                    content_type,
                    deleted: false,
                }],
            }))
        }
        300 => parse_envelope(&body, headers).unwrap_or_else(|| {
            Err(Error::InvalidResponse(
                "300 Multiple Choices without a JSON siblings body".into(),
            ))
        }),
        404 => Ok(Fetched::NotFound {
            context: header_context(headers),
        }),
        s => Err(Error::from_response(s, &body)),
    }
}

/// The query string of `r`/`w` and `timeout_ms` (empty when neither is set).
fn query(level_name: &str, level: Option<String>, timeout_ms: Option<u64>) -> String {
    let mut parts = Vec::new();
    if let Some(l) = level {
        parts.push(format!("{level_name}={l}"));
    }
    if let Some(t) = timeout_ms {
        parts.push(format!("timeout_ms={t}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A request before it is sent to some node.
struct Call {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Bytes>,
    timeout_ms: Option<u64>,
}

impl Client {
    /// A client with default options for these nodes (see
    /// [`Client::builder`] for timeouts and tokens).
    pub fn new(nodes: Vec<String>) -> Result<Client, Error> {
        Client::builder(nodes).build()
    }

    /// Starts configuring a client for these nodes, tried in order.
    pub fn builder(nodes: Vec<String>) -> ClientBuilder {
        ClientBuilder {
            nodes,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            token: None,
            ca_pem: None,
        }
    }

    /// The node base URLs, in the order they are tried.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    fn call(&self, method: Method, path: String) -> Call {
        Call {
            method,
            path,
            headers: Vec::new(),
            body: None,
            timeout_ms: None,
        }
    }

    /// Sends `call` to the first reachable node; see the module docs.
    async fn send(&self, call: Call) -> Result<reqwest::Response, Error> {
        let timeout = match call.timeout_ms {
            Some(ms) => self.timeout.max(Duration::from_millis(ms) + TIMEOUT_MARGIN),
            None => self.timeout,
        };
        let mut failures = Vec::new();
        for node in &self.nodes {
            let mut req = self
                .http
                .request(call.method.clone(), format!("{node}{}", call.path))
                .timeout(timeout);
            if let Some(token) = &self.token {
                req = req.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            for (name, value) in &call.headers {
                req = req.header(*name, value);
            }
            if let Some(body) = &call.body {
                req = req.body(body.clone());
            }
            match req.send().await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_connect() => failures.push(format!("{node} ({})", root_cause(&e))),
                Err(e) => return Err(Error::from(e)),
            }
        }
        Err(Error::Transport(format!(
            "no node reachable: {}",
            failures.join(", ")
        )))
    }

    /// Sends `call` and reads the whole body; a non-2xx status becomes an
    /// [`Error::Api`].
    async fn send_ok(&self, call: Call) -> Result<(HeaderMap, Bytes), Error> {
        let resp = self.send(call).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        if !status.is_success() {
            return Err(Error::from_response(status.as_u16(), &body));
        }
        Ok((headers, body))
    }

    async fn get_json<T: DeserializeOwned>(&self, path: String) -> Result<T, Error> {
        let mut call = self.call(Method::GET, path);
        call.headers.push(("accept", "application/json".into()));
        let (_, body) = self.send_ok(call).await?;
        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse(e.to_string()))
    }

    fn key_path(bucket: &str, key: &[u8]) -> Result<String, Error> {
        if bucket.is_empty() {
            return Err(Error::BadInput("the bucket name is empty".into()));
        }
        if key.is_empty() {
            return Err(Error::BadInput("the key is empty (1 to 1024 bytes)".into()));
        }
        Ok(format!(
            "/buckets/{}/keys/{}",
            encode_segment(bucket.as_bytes()),
            encode_segment(key)
        ))
    }

    /// Reads every live version of `key`.
    ///
    /// A missing key is `Ok(Fetched::NotFound)`, not an error; siblings come
    /// back as several values of one [`Versioned`], never merged.
    pub async fn get(
        &self,
        bucket: &str,
        key: &[u8],
        opts: &ReadOptions,
    ) -> Result<Fetched, Error> {
        let path = Self::key_path(bucket, key)?
            + &query("r", opts.r.map(|c| c.to_string()), opts.timeout_ms);
        let mut call = self.call(Method::GET, path);
        call.headers
            .push((ACCEPT.as_str(), "application/json".into()));
        call.timeout_ms = opts.timeout_ms;
        let resp = self.send(call).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        interpret_read(status, &headers, body)
    }

    /// Writes `value` and returns the new version's context.
    ///
    /// Pass the context of an earlier read to replace the versions it saw;
    /// without one the write is concurrent with whatever is stored (a sibling,
    /// or decided by timestamp in an LWW bucket). `content_type` defaults to
    /// `application/octet-stream`.
    pub async fn put(
        &self,
        bucket: &str,
        key: &[u8],
        value: Vec<u8>,
        content_type: Option<&str>,
        context: Option<&Context>,
        opts: &WriteOptions,
    ) -> Result<Context, Error> {
        let path = Self::key_path(bucket, key)?
            + &query("w", opts.w.map(|c| c.to_string()), opts.timeout_ms);
        let mut call = self.call(Method::PUT, path);
        call.headers.push((
            CONTENT_TYPE.as_str(),
            content_type.unwrap_or(DEFAULT_CONTENT_TYPE).to_string(),
        ));
        if let Some(ctx) = context {
            call.headers.push((CONTEXT_HEADER, ctx.0.clone()));
        }
        call.body = Some(Bytes::from(value));
        call.timeout_ms = opts.timeout_ms;
        let (headers, _) = self.send_ok(call).await?;
        header_context(&headers)
            .ok_or_else(|| Error::InvalidResponse("write answer without X-Causal-Context".into()))
    }

    /// Deletes `key` (writes a tombstone). With a context, the deletion
    /// replaces exactly the versions that context covers.
    pub async fn delete(
        &self,
        bucket: &str,
        key: &[u8],
        context: Option<&Context>,
        opts: &WriteOptions,
    ) -> Result<(), Error> {
        let path = Self::key_path(bucket, key)?
            + &query("w", opts.w.map(|c| c.to_string()), opts.timeout_ms);
        let mut call = self.call(Method::DELETE, path);
        if let Some(ctx) = context {
            call.headers.push((CONTEXT_HEADER, ctx.0.clone()));
        }
        call.timeout_ms = opts.timeout_ms;
        self.send_ok(call).await.map(|_| ())
    }

    /// A bucket's properties (404 `not_found` for an unknown bucket).
    pub async fn bucket_get(&self, bucket: &str) -> Result<BucketProps, Error> {
        self.get_json(format!("/buckets/{}", encode_segment(bucket.as_bytes())))
            .await
    }

    /// Changes the properties set in `update`, returning all of them.
    pub async fn bucket_set(
        &self,
        bucket: &str,
        update: &BucketPropsUpdate,
    ) -> Result<BucketProps, Error> {
        let body = serde_json::to_vec(update).map_err(|e| Error::BadInput(e.to_string()))?;
        let mut call = self.call(
            Method::PUT,
            format!("/buckets/{}", encode_segment(bucket.as_bytes())),
        );
        call.headers
            .push((CONTENT_TYPE.as_str(), "application/json".into()));
        call.body = Some(Bytes::from(body));
        let (_, body) = self.send_ok(call).await?;
        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse(e.to_string()))
    }

    /// `GET /health` of the first reachable node.
    pub async fn health(&self) -> Result<Health, Error> {
        self.get_json("/health".into()).await
    }

    /// Every node the answering node knows, as gossip sees them.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        let v: serde_json::Value = self.get_json("/cluster/members".into()).await?;
        // The contract says a list; accept `{"members":[...]}` as well.
        let list = match v {
            serde_json::Value::Object(mut o) if o.contains_key("members") => {
                o.remove("members").unwrap_or_default()
            }
            other => other,
        };
        serde_json::from_value(list).map_err(|e| Error::InvalidResponse(e.to_string()))
    }

    /// The ring: every token with its owner, and each node's ownership.
    pub async fn ring(&self) -> Result<RingInfo, Error> {
        self.get_json("/cluster/ring".into()).await
    }

    /// The key's token and its preference list, as the node computes them.
    /// Returned as JSON: its fields beyond API.md's description may grow.
    pub async fn locate(&self, bucket: &str, key: &[u8]) -> Result<serde_json::Value, Error> {
        self.get_json(format!(
            "/cluster/locate/{}?bucket={}",
            encode_segment(key),
            encode_segment(bucket.as_bytes())
        ))
        .await
    }

    /// What the first reachable node itself stores for the key (no other
    /// replica asked), or `None` if it stores nothing.
    pub async fn local_inspect(
        &self,
        bucket: &str,
        key: &[u8],
    ) -> Result<Option<serde_json::Value>, Error> {
        let path = format!("/internal/local{}", Self::key_path(bucket, key)?);
        match self.get_json(path).await {
            Ok(v) => Ok(Some(v)),
            Err(Error::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs one anti-entropy repair pass on the first reachable node
    /// (`POST /internal/repair`, admin token when tokens are configured)
    /// and returns its report. A pass can take minutes on a large node:
    /// the request may run up to `timeout` (or the client timeout, if
    /// longer).
    pub async fn repair(&self, timeout: Duration) -> Result<serde_json::Value, Error> {
        self.repair_bucket(None, timeout).await
    }

    /// [`Client::repair`], over one bucket's keys only when `bucket` is
    /// given (`POST /internal/repair?bucket=B`).
    pub async fn repair_bucket(
        &self,
        bucket: Option<&str>,
        timeout: Duration,
    ) -> Result<serde_json::Value, Error> {
        let path = match bucket {
            Some(b) => format!("/internal/repair?bucket={}", encode_segment(b.as_bytes())),
            None => "/internal/repair".into(),
        };
        let mut call = self.call(Method::POST, path);
        call.headers.push(("accept", "application/json".into()));
        call.timeout_ms = Some(timeout.as_millis() as u64);
        let (_, body) = self.send_ok(call).await?;
        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse(e.to_string()))
    }

    /// The progress of the repair pass under way on the first reachable
    /// node (`GET /internal/repair`).
    pub async fn repair_progress(&self) -> Result<serde_json::Value, Error> {
        self.get_json("/internal/repair".into()).await
    }

    /// The faults the first reachable node injects (`GET /internal/faults`;
    /// 404 `not_found` on a node started without `--fault-injection`).
    pub async fn faults(&self) -> Result<quorumkv_faults::Settings, Error> {
        self.get_json("/internal/faults".into()).await
    }

    /// Replaces the faults the first reachable node injects (`PUT
    /// /internal/faults`) and returns the document now in force.
    pub async fn faults_put(
        &self,
        settings: &quorumkv_faults::Settings,
    ) -> Result<quorumkv_faults::Settings, Error> {
        let mut call = self.call(Method::PUT, "/internal/faults".into());
        call.headers
            .push((CONTENT_TYPE.as_str(), "application/json".into()));
        let body = serde_json::to_vec(settings).map_err(|e| Error::BadInput(e.to_string()))?;
        call.body = Some(Bytes::from(body));
        let (_, body) = self.send_ok(call).await?;
        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse(e.to_string()))
    }

    /// Removes every fault the first reachable node injects (`DELETE
    /// /internal/faults`).
    pub async fn faults_clear(&self) -> Result<(), Error> {
        self.send_ok(self.call(Method::DELETE, "/internal/faults".into()))
            .await
            .map(|_| ())
    }

    /// The node's Prometheus metrics, as text.
    pub async fn metrics(&self) -> Result<String, Error> {
        let (_, body) = self
            .send_ok(self.call(Method::GET, "/metrics".into()))
            .await?;
        String::from_utf8(body.to_vec()).map_err(|e| Error::InvalidResponse(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_are_normalized() {
        assert_eq!(
            normalize_node("127.0.0.1:8001").unwrap(),
            "http://127.0.0.1:8001"
        );
        assert_eq!(
            normalize_node("http://localhost:8001/").unwrap(),
            "http://localhost:8001"
        );
        assert_eq!(normalize_node("https://x:1/").unwrap(), "https://x:1");
        assert!(normalize_node("ftp://x:1").is_err());
        assert!(Client::new(vec![]).is_err());
    }

    #[test]
    fn client_and_its_futures_can_cross_threads() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let c = Client::new(vec!["127.0.0.1:1".into()]).unwrap();
        send_sync(&c);
        send(c.get("b", b"k", &ReadOptions::default()));
        send(c.put("b", b"k", vec![], None, None, &WriteOptions::default()));
        send(c.delete("b", b"k", None, &WriteOptions::default()));
        send(c.members());
    }

    #[test]
    fn query_strings() {
        assert_eq!(query("r", None, None), "");
        assert_eq!(query("r", Some("all".into()), None), "?r=all");
        assert_eq!(query("w", Some("2".into()), Some(50)), "?w=2&timeout_ms=50");
    }

    #[test]
    fn a_raw_json_value_is_not_mistaken_for_an_envelope() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        h.insert(CONTEXT_HEADER, "ctx".parse().unwrap());
        let body = Bytes::from_static(br#"{"context":"mine"}"#);
        let f = interpret_read(StatusCode::OK, &h, body.clone()).unwrap();
        let Fetched::Found(v) = f else { panic!() };
        assert_eq!(v.context.as_str(), "ctx");
        assert_eq!(v.values[0].value, body.to_vec());
    }

    #[test]
    fn base64_variants_decode() {
        assert_eq!(decode_base64("/+8=").unwrap(), vec![0xff, 0xef]);
        assert_eq!(decode_base64("_-8").unwrap(), vec![0xff, 0xef]);
        assert!(decode_base64("!!").is_err());
    }
}
