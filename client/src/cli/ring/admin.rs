//! The cluster-change routes, one node at a time: the JSON shapes of
//! `/cluster/ranges`, `/cluster/changes` and `/cluster/cleanup`, and a small
//! HTTP helper that sends a request to exactly the node named.
//!
//! The library [`quorumkv_client::Client`] tries its nodes in order as
//! fallbacks, which is right for reads and writes but wrong here: a
//! decommission must reach the node that leaves, a join the standby node,
//! and progress is read from the nodes that receive streams. So these calls
//! name their node, and a node that cannot be reached is an error naming
//! it. Error bodies become the same [`quorumkv_client::Error::Api`] the
//! library returns, so they print as one line (`conflict (409): ...`).

use std::collections::BTreeMap;
use std::time::Duration;

use quorumkv_client::{Error, Member};
use quorumkv_ring::{RangeLoad, TokenRange};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::Globals;

/// `GET /cluster/ranges`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RangesAnswer {
    /// The answering node.
    pub node: String,
    /// Its keys and bytes per ring range.
    #[serde(default)]
    pub ranges: Vec<RangeLoad>,
}

/// `GET /cluster/changes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangesAnswer {
    /// The answering node.
    pub node: String,
    /// What it knows of changes in flight (and finished ones it kept).
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One membership change as a node reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The node joining, leaving or being removed.
    pub node: String,
    /// `join`, `decommission` or `removenode`.
    pub kind: String,
    /// `joining`, `leaving`, `removing` or `done`.
    pub state: String,
    /// When it started (the reporting node's clock).
    #[serde(default)]
    pub started_unix_ms: u64,
    /// When it finished, once it has.
    #[serde(default)]
    pub finished_unix_ms: Option<u64>,
    /// The streams the reporting node runs for it (it receives them).
    #[serde(default)]
    pub streams: Vec<Stream>,
}

impl Change {
    /// Whether the reporting node considers the change finished.
    pub fn is_done(&self) -> bool {
        self.state == "done"
    }
}

/// One range streaming from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// The range `(start, end]`.
    pub range: TokenRange,
    /// The sending node.
    pub from: String,
    /// The receiving node.
    pub to: String,
    /// Keys received so far.
    #[serde(default)]
    pub keys: u64,
    /// Bytes received so far.
    #[serde(default)]
    pub bytes: u64,
    /// The source's bytes for the range when the stream started.
    #[serde(default)]
    pub bytes_estimate: u64,
    /// Finished.
    #[serde(default)]
    pub done: bool,
}

/// `POST /cluster/cleanup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CleanupAnswer {
    /// The node cleaned.
    pub node: String,
    /// Keys it deleted.
    #[serde(default)]
    pub keys_removed: u64,
    /// Bytes it deleted.
    #[serde(default)]
    pub bytes_removed: u64,
    /// How long it took.
    #[serde(default)]
    pub duration_ms: u64,
}

/// Sends requests to one named node at a time, with `--token`.
#[derive(Clone)]
pub struct NodeHttp {
    http: reqwest::Client,
    token: Option<String>,
    timeout: Duration,
}

impl NodeHttp {
    /// A helper with the global `--token` and `--client-timeout-ms`.
    pub fn new(g: &Globals) -> anyhow::Result<NodeHttp> {
        let http = g
            .reqwest()?
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(NodeHttp {
            http,
            token: g.token.clone(),
            timeout: g.client_timeout,
        })
    }

    /// `GET base+path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, base: &str, path: &str) -> Result<T, Error> {
        self.send(reqwest::Method::GET, base, path, None, None)
            .await
    }

    /// `POST base+path` with an optional JSON body; `timeout` overrides the
    /// client timeout when longer (cleanup scans a whole node).
    pub async fn post<T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        self.send(reqwest::Method::POST, base, path, body, timeout)
            .await
    }

    /// `method base+path` with an optional JSON body, as JSON; `timeout`
    /// overrides the client timeout when longer.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        base: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        let base = base.trim_end_matches('/');
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .timeout(timeout.map_or(self.timeout, |t| t.max(self.timeout)))
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(Error::Transport(format!(
                    "cannot reach {base} ({})",
                    root_cause(&e)
                )));
            }
            Err(e) => return Err(Error::from(e)),
        };
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        if !(200..300).contains(&status) {
            return Err(Error::from_response(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::InvalidResponse(format!("{base}{path}: {e}")))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The HTTP base URL of `m`, from its `http_addr`. A wildcard bind address
/// (`0.0.0.0`, `[::]`) is reachable at the host of `via`, the URL that
/// listed the member.
pub fn member_url(m: &Member, via: &str) -> Option<String> {
    let addr = m.http_addr.trim();
    if addr.is_empty() {
        return None;
    }
    if addr.starts_with("http://") || addr.starts_with("https://") {
        return Some(addr.trim_end_matches('/').to_string());
    }
    let (host, port) = addr.rsplit_once(':')?;
    let host = if matches!(host, "0.0.0.0" | "[::]" | "::") {
        url_host(via).unwrap_or("127.0.0.1")
    } else {
        host
    };
    // Members of a cluster reached over HTTPS serve HTTPS too.
    let scheme = if via.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{host}:{port}"))
}

/// The host part of a base URL (`http://h:1/` → `h`).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    (!host.is_empty()).then_some(host)
}

/// Every member by id, with its URL, as the first reachable `--node` sees
/// them; also returns that node's URL.
pub async fn members(g: &Globals) -> anyhow::Result<(BTreeMap<String, (Member, String)>, String)> {
    let client = g.client()?;
    let list = client.members().await?;
    // The node that answered is the first reachable one; members' wildcard
    // addresses resolve against it.
    let via = client.nodes().first().cloned().unwrap_or_default();
    let mut out = BTreeMap::new();
    for m in list {
        if let Some(url) = member_url(&m, &via) {
            out.insert(m.id.clone(), (m, url));
        }
    }
    Ok((out, via))
}

/// Keys and bytes per range from every up node that holds tokens, merged
/// into one replica's worth per range (the largest report: replicas of a
/// range hold the same data, and the most complete one is the one to
/// plan for). Nodes that fail are listed in the second value.
pub async fn live_load(
    http: &NodeHttp,
    members: &BTreeMap<String, (Member, String)>,
) -> (Vec<RangeLoad>, Vec<String>) {
    let mut per: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    let mut failed = Vec::new();
    for (id, (m, url)) in members {
        if m.status != "up" || m.tokens.is_empty() {
            continue;
        }
        match http.get::<RangesAnswer>(url, "/cluster/ranges").await {
            Ok(a) => {
                for r in a.ranges {
                    let e = per.entry((r.start, r.end)).or_default();
                    e.0 = e.0.max(r.keys);
                    e.1 = e.1.max(r.bytes);
                }
            }
            Err(e) => failed.push(format!("{id}: {e}")),
        }
    }
    let load = per
        .into_iter()
        .map(|((start, end), (keys, bytes))| RangeLoad {
            start,
            end,
            keys,
            bytes,
        })
        .collect();
    (load, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(addr: &str) -> Member {
        serde_json::from_value(serde_json::json!({"id": "n1", "http_addr": addr})).expect("member")
    }

    #[test]
    fn member_urls_come_from_http_addr() {
        let via = "http://10.0.0.5:8001";
        assert_eq!(
            member_url(&member("127.0.0.1:8002"), via).as_deref(),
            Some("http://127.0.0.1:8002")
        );
        assert_eq!(
            member_url(&member("0.0.0.0:8003"), via).as_deref(),
            Some("http://10.0.0.5:8003")
        );
        assert_eq!(
            member_url(&member("http://h:1/"), via).as_deref(),
            Some("http://h:1")
        );
        assert_eq!(member_url(&member(""), via), None);
        assert_eq!(url_host("http://[::1]:8001/x"), Some("[::1]"));
    }

    #[test]
    fn changes_parse_the_contract_shape() {
        let v = serde_json::json!({"node":"n4","changes":[{"node":"n4","kind":"join","state":"joining",
            "started_unix_ms":5,"finished_unix_ms":null,
            "streams":[{"range":{"start":1,"end":2},"from":"n1","to":"n4","keys":3,"bytes":4,
                        "bytes_estimate":8,"done":false}]}]});
        let a: ChangesAnswer = serde_json::from_value(v).expect("parses");
        assert_eq!(
            a.changes[0].streams[0].range,
            TokenRange { start: 1, end: 2 }
        );
        assert!(!a.changes[0].is_done());
    }
}
