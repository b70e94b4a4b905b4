//! Helpers for the multi-node replication tests (`quorum`, `handoff`,
//! `repair`): starting an N-node cluster and waiting until every node sees
//! the same ring, asking where a key lives and what one replica alone
//! stores, reading members and metrics, random keys and values, and a
//! bounded-concurrency loop so that thousand-key checks take seconds.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng;
use serde_json::Value;

use crate::http::{Api, Resp, enc};
use crate::{Cluster, NodeSpec, eventually};

/// Starts nodes `n1..=n{count}`, each with `args`, and waits until every
/// node sees all of them up and normal with the same tokens.
pub async fn start_cluster(count: usize, args: &[&str]) -> Result<Cluster> {
    let specs = (1..=count)
        .map(|i| NodeSpec::new(&format!("n{i}")).args(args.iter().copied()))
        .collect();
    let c = Cluster::start(specs)?;
    wait_converged(&c, Duration::from_secs(60)).await?;
    Ok(c)
}

/// Waits until every running node of `c` sees every node of `c` up and
/// normal with tokens, and all of them agree on those tokens.
pub async fn wait_converged(c: &Cluster, within: Duration) -> Result<()> {
    let ids: Vec<String> = c.nodes.iter().map(|n| n.spec.id.clone()).collect();
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    eventually(
        within,
        "every node sees the same ring of up members",
        || {
            let apis = apis.clone();
            let ids = ids.clone();
            async move {
                let mut first: Option<BTreeMap<String, Value>> = None;
                for api in &apis {
                    let Some(ms) = members(api).await else {
                        return false;
                    };
                    let mut tokens = BTreeMap::new();
                    for id in &ids {
                        let Some(m) = ms.iter().find(|m| m["id"] == id.as_str()) else {
                            return false;
                        };
                        let has_tokens = m["tokens"].as_array().is_some_and(|t| !t.is_empty());
                        if m["status"] != "up" || m["state"] != "normal" || !has_tokens {
                            return false;
                        }
                        tokens.insert(id.clone(), m["tokens"].clone());
                    }
                    match &first {
                        None => first = Some(tokens),
                        Some(f) if *f != tokens => return false,
                        Some(_) => {}
                    }
                }
                true
            }
        },
    )
    .await
}

/// `GET /cluster/members` of one node, or `None` if it does not answer.
pub async fn members(api: &Api) -> Option<Vec<Value>> {
    let r = api.get("/cluster/members").await.ok()?;
    if r.status != 200 {
        return None;
    }
    serde_json::from_slice::<Value>(&r.body)
        .ok()?
        .as_array()
        .cloned()
}

/// The member `id` as `api`'s node sees it.
pub async fn member(api: &Api, id: &str) -> Option<Value> {
    members(api).await?.into_iter().find(|m| m["id"] == id)
}

/// Waits until `api`'s node shows member `id` with `status` (`"up"` or
/// `"down"`); returns how long that took.
pub async fn wait_status(api: &Api, id: &str, status: &str, within: Duration) -> Result<Duration> {
    let began = std::time::Instant::now();
    let what = format!("{} to see {id} {status}", api.base);
    eventually(within, &what, || async move {
        member(api, id).await.is_some_and(|m| m["status"] == status)
    })
    .await?;
    Ok(began.elapsed())
}

/// `hints_pending` of member `target` on `api`'s node (`None` when the node
/// does not answer or does not show the field).
pub async fn hints_pending(api: &Api, target: &str) -> Option<u64> {
    member(api, target).await?["hints_pending"].as_u64()
}

/// Where a key lives, per `GET /cluster/locate`.
#[derive(Debug, Clone)]
pub struct Located {
    /// The key's token.
    pub token: u64,
    /// The N replicas, in preference order.
    pub replicas: Vec<String>,
    /// The rest of the ring order after the replicas (sloppy quorums).
    pub fallbacks: Vec<String>,
}

fn id_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /cluster/locate/{key}?bucket=`.
pub async fn locate(api: &Api, bucket: &str, key: &[u8]) -> Result<Located> {
    let r = api
        .get(&format!("/cluster/locate/{}?bucket={bucket}", enc(key)))
        .await?;
    if r.status != 200 {
        bail!("locate answered {}: {}", r.status, body_text(&r));
    }
    let v = r.json();
    Ok(Located {
        token: v["token"].as_u64().context("locate: no token")?,
        replicas: id_list(&v["replicas"]),
        fallbacks: id_list(&v["fallbacks"]),
    })
}

/// What one node alone stores for a key, per `/internal/local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// Live values (decoded), in the order the node lists them.
    pub values: Vec<Vec<u8>>,
    /// Whether a deletion is among the versions.
    pub tombstone: bool,
}

/// `GET /internal/local/buckets/{bucket}/keys/{key}` on `api`'s node:
/// `None` on 404.
pub async fn local(api: &Api, bucket: &str, key: &[u8]) -> Result<Option<Local>> {
    let r = api
        .get(&format!(
            "/internal/local/buckets/{bucket}/keys/{}",
            enc(key)
        ))
        .await?;
    match r.status {
        404 => Ok(None),
        200 => {
            let v = r.json();
            let values = v["values"]
                .as_array()
                .context("local: no values")?
                .iter()
                .map(|s| {
                    B64.decode(s["value_base64"].as_str().unwrap_or_default())
                        .context("local: bad base64")
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(Local {
                values,
                tombstone: v["tombstone"].as_bool().unwrap_or(false),
            }))
        }
        s => bail!("internal/local answered {s}: {}", body_text(&r)),
    }
}

/// Whether `api`'s node alone holds exactly `value` (one live version).
pub async fn local_is(api: &Api, bucket: &str, key: &[u8], value: &[u8]) -> bool {
    matches!(local(api, bucket, key).await, Ok(Some(l)) if l.values.len() == 1 && l.values[0] == value)
}

/// The sum of every sample of metric `name` whose labels contain all of
/// `labels` (e.g. `&[("kind", "blocking")]`); 0 when there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_part, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some(end) = r.find('}') else { continue };
            (&r[..end], r[end + 1..].trim())
        } else if rest.starts_with(' ') {
            ("", rest.trim())
        } else {
            continue; // a longer metric name with this prefix
        };
        let all = labels
            .iter()
            .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")));
        if !all {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            sum += v;
        }
    }
    sum
}

/// `metric_sum` over `api`'s `/metrics`.
pub async fn metric(api: &Api, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let r = api.get("/metrics").await?;
    if r.status != 200 {
        bail!("/metrics answered {}", r.status);
    }
    Ok(metric_sum(&String::from_utf8_lossy(&r.body), name, labels))
}

/// `PUT /buckets/{bucket}` with `props`, asserting 200.
pub async fn set_bucket(api: &Api, bucket: &str, props: Value) -> Result<()> {
    let r = api
        .put(&format!("/buckets/{bucket}"), props.to_string().as_bytes())
        .await?;
    if r.status != 200 {
        bail!(
            "PUT /buckets/{bucket} answered {}: {}",
            r.status,
            body_text(&r)
        );
    }
    Ok(())
}

/// Sets bucket `bucket`'s properties on every running node of `c` (so the
/// test does not depend on how properties spread between nodes).
pub async fn set_bucket_everywhere(c: &Cluster, bucket: &str, props: Value) -> Result<()> {
    for n in &c.nodes {
        set_bucket(&Api::new(&n.url()), bucket, props.clone()).await?;
    }
    Ok(())
}

/// `method /internal/faults` with `body` on `api`'s node (started with
/// `--fault-injection`); the document answered (failing on anything but
/// 200).
pub async fn faults(api: &Api, method: &str, body: Value) -> Result<Value> {
    let r = api
        .send(
            method,
            "/internal/faults",
            &[],
            Some(body.to_string().into_bytes()),
        )
        .await?;
    if r.status != 200 {
        bail!(
            "{method} /internal/faults answered {}: {}",
            r.status,
            body_text(&r)
        );
    }
    Ok(r.json())
}

/// The path of a key in a bucket, with an optional query (`"w=all"`).
pub fn key_path(bucket: &str, key: &[u8], query: &str) -> String {
    if query.is_empty() {
        format!("/buckets/{bucket}/keys/{}", enc(key))
    } else {
        format!("/buckets/{bucket}/keys/{}?{query}", enc(key))
    }
}

/// The body as text, for messages.
pub fn body_text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A key of random bytes, 1 to ~80 bytes long: ASCII (including `/`, `%`,
/// `?`, `#` and spaces), multi-byte UTF-8 (accents, CJK, emoji, RTL) and
/// raw bytes that are not UTF-8 at all.
pub fn random_key(rng: &mut impl Rng) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "é",
        "ß",
        "日本",
        "語",
        "🦀",
        "👩‍👩‍👧",
        "עברית",
        "ملف",
        "Ω",
        "\u{200b}",
        "\u{0301}",
        "ñ",
    ];
    let parts = rng.random_range(1..=12);
    let mut key = Vec::new();
    for _ in 0..parts {
        match rng.random_range(0..4) {
            0 => key.extend((0..rng.random_range(1..=6)).map(|_| rng.random_range(0x20u8..0x7f))),
            1 => key.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes()),
            2 => key.extend((0..rng.random_range(1..=4)).map(|_| rng.random::<u8>())),
            _ => key.extend_from_slice(b"/%?#"),
        }
    }
    key
}

/// `count` distinct random keys, none in `taken` (which gains them).
pub fn random_keys(rng: &mut impl Rng, count: usize, taken: &mut HashSet<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let k = random_key(rng);
        // "." and ".." are dot segments: URL parsers (reqwest's included)
        // drop them from the path, even percent-encoded, so no client
        // can name such a key in a URL.
        if k == b"." || k == b".." {
            continue;
        }
        if taken.insert(k.clone()) {
            out.push(k);
        }
    }
    out
}

/// `len` random bytes.
pub fn random_value(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random::<u8>()).collect()
}

/// Runs `f` on every item with at most `limit` in flight, and returns the
/// results in the items' order. A panic in `f` is re-raised here.
pub async fn concurrently<T, R, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let f = Arc::new(f);
    let sem = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let total = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await.expect("semaphore closed");
        let f = f.clone();
        set.spawn(async move {
            let r = f(item).await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<R>> = (0..total).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => out[i] = Some(r),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("task failed: {e}"),
        }
    }
    out.into_iter()
        .map(|r| r.expect("every task answered"))
        .collect()
}

/// What an `X-Trace` header says about the nodes of a request.
#[derive(Debug, Clone, Default)]
pub struct TraceNames {
    /// Every node named: recording nodes and candidates named in events.
    pub named: BTreeSet<String>,
    /// Candidates that answered: they recorded events themselves (other
    /// than the coordinator), or an event names them with an answer or an
    /// acknowledgement.
    pub answered: BTreeSet<String>,
}

/// Parses an `X-Trace` header, checking that it is a non-empty JSON array
/// of `{"at_us": int, "node": "id", "event": "text"}`, and finds which of
/// `candidates` it names and which it shows answering the request that
/// `coordinator` received.
pub fn trace_names(header: &str, coordinator: &str, candidates: &[String]) -> Result<TraceNames> {
    let v: Value =
        serde_json::from_str(header).with_context(|| format!("X-Trace is not JSON: {header}"))?;
    let entries = v
        .as_array()
        .with_context(|| format!("X-Trace is not an array: {header}"))?;
    if entries.is_empty() {
        bail!("X-Trace is empty");
    }
    let mut out = TraceNames::default();
    for e in entries {
        let ok = e["at_us"].is_u64() && e["node"].is_string() && e["event"].is_string();
        if !ok {
            bail!("X-Trace entry without at_us/node/event: {e}");
        }
        let by = e["node"].as_str().unwrap_or_default().to_string();
        if by != coordinator && candidates.contains(&by) {
            out.answered.insert(by.clone());
        }
        out.named.insert(by);
        let text = e["event"].as_str().unwrap_or_default();
        let lower = text.to_lowercase();
        let answer = lower.contains("answer") || lower.contains("ack");
        for c in candidates {
            let mentioned = text
                .split(|ch: char| !ch.is_ascii_alphanumeric() && ch != '-' && ch != '_')
                .any(|w| w == c);
            if mentioned {
                out.named.insert(c.clone());
                if answer && c != coordinator {
                    out.answered.insert(c.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Runs `qkv --json repair --node <url>` and returns the node's report.
pub fn qkv_repair(url: &str) -> Result<Value> {
    let out = std::process::Command::new(crate::qkv_bin()?)
        .args(["--json", "--node", url, "repair", "--timeout-secs", "120"])
        .output()
        .context("running qkv repair")?;
    if !out.status.success() {
        bail!(
            "qkv repair exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("qkv repair --json output")?;
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .context("qkv repair printed no report")
}

/// A report's numeric field; `u64::MAX` when missing, so that a check on
/// it fails rather than passes on 0.
pub fn field(v: &Value, name: &str) -> u64 {
    v[name].as_u64().unwrap_or(u64::MAX)
}

/// PUTs every item through `api` with `query`, 24 at a time; fails unless
/// all are answered 204.
pub async fn put_all(api: &Api, items: &[(Vec<u8>, Vec<u8>)], query: &'static str) -> Result<()> {
    let a = api.clone();
    let statuses = concurrently(items.to_vec(), 24, move |(k, v)| {
        let api = a.clone();
        async move {
            match api.put(&key_path("default", &k, query), &v).await {
                Ok(r) if r.status == 204 => None,
                Ok(r) => Some(format!("{} {}", r.status, body_text(&r))),
                Err(e) => Some(e.to_string()),
            }
        }
    })
    .await;
    let failed: Vec<String> = statuses.into_iter().flatten().collect();
    if !failed.is_empty() {
        bail!("{} writes failed, e.g. {}", failed.len(), failed[0]);
    }
    Ok(())
}
