//! The load generator: `concurrency` workers, each with ONE persistent raw
//! hyper http1 connection (no pool, no per-request allocation beyond the
//! request itself), issuing a seeded, uniformly random mix of GETs and PUTs.
//!
//! Phases: preload (every key written once, keys split among workers, so
//! reads hit), then warmup (same loop, not recorded), then the measured
//! window: an operation counts when it STARTED inside the window. A
//! [`Prepared`] workload repeats warmup and window as often as asked (the
//! rounds of `--rounds`), on one preload.
//!
//! Writes carry the newest causal context the benchmark has seen for their
//! key (from the last write's answer or the last read), as a well-behaved
//! client does; otherwise every write to an existing key would add a
//! sibling and the sibling lists would grow without bound. `--blind-writes`
//! turns this off (meaningful for LWW buckets).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use quorumkv_client::Consistency;
use quorumkv_client::key::encode_segment;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::net::TcpStream;

use super::affinity::CpuProbe;

/// What to run, independent of where.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Size of the key space.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Fraction of operations that are reads, 0.0 to 1.0.
    pub read_ratio: f64,
    /// Workers = connections.
    pub concurrency: usize,
    /// Measured window.
    pub duration: Duration,
    /// Unrecorded run before the window.
    pub warmup: Duration,
    /// Bucket of every key.
    pub bucket: String,
    /// `r` on reads.
    pub r: Option<Consistency>,
    /// `w` on writes.
    pub w: Option<Consistency>,
    /// Write every key before measuring.
    pub preload: bool,
    /// Write without contexts.
    pub blind_writes: bool,
    /// RNG seed (worker i uses a seed derived from it).
    pub seed: u64,
    /// `Authorization: Bearer` token.
    pub token: Option<String>,
    /// A request taking longer counts as a `timeout` error.
    pub request_timeout: Duration,
}

/// Latencies of one operation type, in microseconds.
pub type Hist = Histogram<u64>;

/// Everything one run measured.
#[derive(Debug)]
pub struct Measured {
    /// Successful reads (hits, misses and siblings).
    pub read: Hist,
    /// Successful writes.
    pub write: Hist,
    /// Failures by kind: an HTTP status (`"503"`), `"connection"`, `"timeout"`.
    pub errors: BTreeMap<String, u64>,
    /// Reads answered 404.
    pub not_found: u64,
    /// Reads answered with siblings (300).
    pub siblings: u64,
    /// Length of the measured window.
    pub window: Duration,
    /// Preload: keys written, time taken, failures.
    pub preload: Option<(u64, Duration, u64)>,
    /// CPU time the generator used during the window (the process's,
    /// minus the in-process server's when one is given); `None` when it
    /// could not be separated.
    pub generator_cpu: Option<Duration>,
    /// CPU time the server used during the window, when known.
    pub server_cpu: Option<Duration>,
}

fn new_hist() -> Hist {
    // 1 µs to 60 s at 3 significant digits; values beyond saturate.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid histogram bounds")
}

/// `host:port` of a base URL, for TCP and the `Host` header.
pub fn authority(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.contains("://") {
        bail!("{url}: the benchmark speaks plain http:// only");
    }
    let auth = rest.split('/').next().unwrap_or_default();
    if auth.is_empty() || !auth.contains(':') {
        bail!("{url}: give host:port (e.g. http://127.0.0.1:8001)");
    }
    Ok(auth.to_string())
}

async fn connect(authority: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// State shared by the workers of one run.
struct Shared {
    w: Workload,
    bucket_path: String,
    read_query: String,
    write_query: String,
    value: Bytes,
    auth: Option<HeaderValue>,
    contexts: Vec<Mutex<Option<HeaderValue>>>,
}

impl Shared {
    fn path(&self, key: u64, read: bool) -> String {
        let q = if read {
            &self.read_query
        } else {
            &self.write_query
        };
        format!("{}bench-{key:010}{q}", self.bucket_path)
    }

    fn context(&self, key: u64) -> Option<HeaderValue> {
        let slot = self.contexts.get(key as usize)?;
        slot.lock().ok()?.clone()
    }

    fn remember(&self, key: u64, ctx: Option<HeaderValue>) {
        if let (Some(slot), Some(ctx)) = (self.contexts.get(key as usize), ctx)
            && let Ok(mut s) = slot.lock()
        {
            *s = Some(ctx);
        }
    }
}

/// One request's outcome.
enum Outcome {
    /// An HTTP status and the context header.
    Status(u16, Option<HeaderValue>),
    /// The connection failed; it must be replaced.
    Broken(&'static str),
}

/// One worker's connection, replaced when it breaks.
struct Worker {
    shared: Arc<Shared>,
    authority: String,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Worker {
    async fn request(&mut self, key: u64, read: bool) -> Outcome {
        let sh = self.shared.clone();
        let mut b = Request::builder()
            .method(if read { Method::GET } else { Method::PUT })
            .uri(sh.path(key, read))
            .header(HOST, self.host.clone());
        if let Some(a) = &sh.auth {
            b = b.header(AUTHORIZATION, a.clone());
        }
        let body = if read {
            Full::new(Bytes::new())
        } else {
            b = b.header(CONTENT_TYPE, "application/octet-stream");
            if !sh.w.blind_writes
                && let Some(ctx) = sh.context(key)
            {
                b = b.header("x-causal-context", ctx);
            }
            Full::new(sh.value.clone())
        };
        let Ok(req) = b.body(body) else {
            return Outcome::Broken("request");
        };
        if self.sender.is_none() {
            match connect(&self.authority).await {
                Ok(s) => self.sender = Some(s),
                Err(_) => {
                    // The server is gone or refusing: do not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return Outcome::Broken("connection");
                }
            }
        }
        let Some(sender) = self.sender.as_mut() else {
            return Outcome::Broken("connection");
        };
        let exchange = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            // Copied: a header slice would pin the whole read buffer of the
            // connection for as long as the context is remembered.
            let ctx = resp
                .headers()
                .get("x-causal-context")
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, ctx))
        };
        match tokio::time::timeout(sh.w.request_timeout, exchange).await {
            Ok(Ok((status, ctx))) => Outcome::Status(status, ctx),
            Ok(Err(_)) => {
                self.sender = None;
                Outcome::Broken("connection")
            }
            Err(_) => {
                self.sender = None;
                Outcome::Broken("timeout")
            }
        }
    }
}

/// Per-worker results, merged at the end.
struct Tally {
    read: Hist,
    write: Hist,
    errors: BTreeMap<String, u64>,
    not_found: u64,
    siblings: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            read: new_hist(),
            write: new_hist(),
            errors: BTreeMap::new(),
            not_found: 0,
            siblings: 0,
        }
    }

    /// Records one outcome; true when it counts as a success.
    fn record(&mut self, read: bool, outcome: &Outcome, took: Duration, keep: bool) -> bool {
        let ok = match outcome {
            Outcome::Status(s, _) if (200..300).contains(s) => true,
            Outcome::Status(300, _) if read => {
                if keep {
                    self.siblings += 1;
                }
                true
            }
            Outcome::Status(404, _) if read => {
                if keep {
                    self.not_found += 1;
                }
                true
            }
            Outcome::Status(s, _) => {
                if keep {
                    *self.errors.entry(s.to_string()).or_default() += 1;
                }
                false
            }
            Outcome::Broken(kind) => {
                if keep {
                    *self.errors.entry(kind.to_string()).or_default() += 1;
                }
                false
            }
        };
        if ok && keep {
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
            let h = if read {
                &mut self.read
            } else {
                &mut self.write
            };
            h.saturating_record(us);
        }
        ok
    }
}

async fn preload_worker(mut wk: Worker, id: u64, n: u64) -> (u64, u64) {
    let keys = wk.shared.w.keys;
    let (mut ok, mut failed) = (0, 0);
    let mut key = id;
    while key < keys {
        let out = wk.request(key, false).await;
        match out {
            Outcome::Status(s, ctx) if (200..300).contains(&s) => {
                wk.shared.remember(key, ctx);
                ok += 1;
            }
            _ => failed += 1,
        }
        key += n;
    }
    (ok, failed)
}

async fn measure_worker(mut wk: Worker, id: u64, measure_from: Instant, end: Instant) -> Tally {
    let sh = wk.shared.clone();
    let mut rng = StdRng::seed_from_u64(sh.w.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut t = Tally::new();
    loop {
        let start = Instant::now();
        if start >= end {
            break;
        }
        let key = rng.random_range(0..sh.w.keys);
        let read = rng.random::<f64>() < sh.w.read_ratio;
        let out = wk.request(key, read).await;
        let took = start.elapsed();
        if t.record(read, &out, took, start >= measure_from)
            && let Outcome::Status(_, ctx) = out
        {
            sh.remember(key, ctx);
        }
    }
    t
}

/// A workload ready to measure against base URLs `targets` (worker i
/// uses target `i % len`), any number of times:
/// connectivity checked, keys preloaded, and the causal contexts it has
/// seen kept from one measurement to the next (a later window must not
/// write without the contexts an earlier one learned, or every such write
/// would add a sibling).
pub struct Prepared {
    shared: Arc<Shared>,
    authorities: Vec<String>,
    /// Preload: keys written, time taken, failures.
    pub preload: Option<(u64, Duration, u64)>,
}

impl Prepared {
    /// Checks that every target answers, then preloads (when the workload
    /// says so).
    pub async fn new(targets: &[String], w: &Workload) -> anyhow::Result<Prepared> {
        if targets.is_empty() {
            bail!("no target to benchmark");
        }
        let authorities = targets
            .iter()
            .map(|t| authority(t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut value = vec![0u8; w.value_size];
        StdRng::seed_from_u64(w.seed).fill_bytes(&mut value);
        let q = |name: &str, level: Option<Consistency>| match level {
            Some(l) => format!("?{name}={l}"),
            None => String::new(),
        };
        let contexts = if w.blind_writes {
            Vec::new()
        } else {
            let n = usize::try_from(w.keys).context("--keys is too large")?;
            (0..n).map(|_| Mutex::new(None)).collect()
        };
        let shared = Arc::new(Shared {
            bucket_path: format!("/buckets/{}/keys/", encode_segment(w.bucket.as_bytes())),
            read_query: q("r", w.r),
            write_query: q("w", w.w),
            value: Bytes::from(value),
            auth: match &w.token {
                Some(t) => Some(HeaderValue::from_str(&format!("Bearer {t}"))?),
                None => None,
            },
            contexts,
            w: w.clone(),
        });
        // Fail fast, with the cause, if a target does not answer at all.
        for a in &authorities {
            connect(a).await?;
        }
        let mut prepared = Prepared {
            shared,
            authorities,
            preload: None,
        };
        if w.preload {
            let started = Instant::now();
            let n = w.concurrency as u64;
            let handles: Vec<_> = prepared
                .workers()?
                .into_iter()
                .enumerate()
                .map(|(i, wk)| tokio::spawn(preload_worker(wk, i as u64, n)))
                .collect();
            let (mut ok, mut failed) = (0, 0);
            for h in handles {
                let (o, f) = h.await?;
                ok += o;
                failed += f;
            }
            if ok == 0 && failed > 0 {
                bail!("preload failed: none of {failed} writes succeeded");
            }
            prepared.preload = Some((ok, started.elapsed(), failed));
        }
        Ok(prepared)
    }

    fn workers(&self) -> anyhow::Result<Vec<Worker>> {
        (0..self.shared.w.concurrency)
            .map(|i| {
                let authority = self.authorities[i % self.authorities.len()].clone();
                Ok(Worker {
                    shared: self.shared.clone(),
                    host: HeaderValue::from_str(&authority)?,
                    authority,
                    sender: None,
                })
            })
            .collect()
    }

    /// One warmup and one measured window on fresh connections. `round`
    /// varies the workers' random streams from one measurement to the next.
    pub async fn measure(&self, round: u64, probe: &CpuProbe) -> anyhow::Result<Measured> {
        let w = &self.shared.w;
        // Connect every worker before the clock starts.
        let mut ready = self.workers()?;
        for wk in &mut ready {
            wk.sender = Some(connect(&wk.authority).await?);
        }
        let measure_from = Instant::now() + w.warmup;
        let end = measure_from + w.duration;
        let n = ready.len() as u64;
        let handles: Vec<_> = ready
            .into_iter()
            .enumerate()
            .map(|(i, wk)| {
                let id = round * n + i as u64;
                tokio::spawn(measure_worker(wk, id, measure_from, end))
            })
            .collect();
        tokio::time::sleep_until(measure_from.into()).await;
        let (gen0, srv0) = probe.sample();
        tokio::time::sleep_until(end.into()).await;
        let (gen1, srv1) = probe.sample();
        let delta =
            |a: Option<Duration>, b: Option<Duration>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
        let (generator_cpu, server_cpu) = (delta(gen0, gen1), delta(srv0, srv1));
        let mut m = Measured {
            read: new_hist(),
            write: new_hist(),
            errors: BTreeMap::new(),
            not_found: 0,
            siblings: 0,
            window: w.duration,
            preload: None,
            generator_cpu,
            server_cpu,
        };
        for h in handles {
            m.add_counts(h.await?)?;
        }
        Ok(m)
    }
}

impl Measured {
    /// Adds a worker's (or another window's) outcomes: latencies, failures
    /// by kind, misses and siblings.
    fn add_counts(&mut self, t: Tally) -> anyhow::Result<()> {
        self.read.add(&t.read)?;
        self.write.add(&t.write)?;
        for (k, v) in t.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.not_found += t.not_found;
        self.siblings += t.siblings;
        Ok(())
    }

    /// Adds `other`, a later window of the same workload, to this one:
    /// latencies, counts, window lengths and CPU times add up (a CPU time
    /// stays known only while both are). A window carries no preload, so
    /// this one's is kept.
    pub fn absorb(&mut self, other: Measured) -> anyhow::Result<()> {
        self.add_counts(Tally {
            read: other.read,
            write: other.write,
            errors: other.errors,
            not_found: other.not_found,
            siblings: other.siblings,
        })?;
        self.window += other.window;
        let sum = |a: Option<Duration>, b: Option<Duration>| a.zip(b).map(|(a, b)| a + b);
        self.generator_cpu = sum(self.generator_cpu, other.generator_cpu);
        self.server_cpu = sum(self.server_cpu, other.server_cpu);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_of_base_urls() {
        assert_eq!(
            authority("http://127.0.0.1:8001").unwrap(),
            "127.0.0.1:8001"
        );
        assert_eq!(authority("localhost:9/").unwrap(), "localhost:9");
        assert!(authority("https://x:1").is_err());
        assert!(authority("http://nohost").is_err());
    }

    #[test]
    fn outcomes_are_tallied_by_kind() {
        let mut t = Tally::new();
        let ms = Duration::from_millis(1);
        assert!(t.record(true, &Outcome::Status(200, None), ms, true));
        assert!(t.record(true, &Outcome::Status(404, None), ms, true));
        assert!(t.record(true, &Outcome::Status(300, None), ms, true));
        assert!(t.record(false, &Outcome::Status(204, None), ms, true));
        assert!(!t.record(false, &Outcome::Status(404, None), ms, true));
        assert!(!t.record(false, &Outcome::Status(503, None), ms, true));
        assert!(!t.record(false, &Outcome::Broken("timeout"), ms, true));
        assert!(t.record(false, &Outcome::Status(204, None), ms, false));
        assert_eq!(t.read.len(), 3);
        assert_eq!(t.write.len(), 1);
        assert_eq!((t.not_found, t.siblings), (1, 1));
        assert_eq!(t.errors["503"], 1);
        assert_eq!(t.errors["404"], 1);
        assert_eq!(t.errors["timeout"], 1);
    }
}
