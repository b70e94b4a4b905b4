//! The ceiling: a bare in-memory HTTP key-value server built into the
//! benchmark.
//!
//! It speaks just enough of the contract for the benchmark's workload — PUT
//! stores the body and answers 204 with an `X-Causal-Context`, GET answers
//! 200 with the body, its content type and a context, or a 404 JSON error,
//! DELETE answers 204 — on both `/kv/{key}` and `/buckets/{b}/keys/{k}`,
//! over the same HTTP stack (hyper http1) a node uses. It keeps no versions,
//! no disk, no replicas: whatever the real node costs beyond this is the
//! price of being a database, and `target / ceiling` measures it.
//!
//! Storage is a sharded `HashMap` behind std mutexes (never held across an
//! `.await`). The server runs on its own OS thread with its own runtime,
//! optionally pinned to a CPU, so it can be given the core a node would get.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::affinity;

const SHARDS: usize = 64;

struct Entry {
    value: Bytes,
    content_type: HeaderValue,
    context: HeaderValue,
}

/// The ceiling's data: keys sharded over mutex-guarded maps.
pub struct Store {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<Vec<u8>, Entry>>>,
    versions: AtomicU64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            versions: AtomicU64::new(0),
        }
    }
}

impl Store {
    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Vec<u8>, Entry>> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    fn next_context(&self) -> HeaderValue {
        let v = self.versions.fetch_add(1, Ordering::Relaxed);
        // About as long as a real single-writer context token.
        HeaderValue::from_str(&format!("c1.{v:016x}")).unwrap_or(HeaderValue::from_static("c1"))
    }
}

/// The storage key of a request path: `bucket \0 key`, or `None` for a path
/// outside the two key routes. The key stays percent-encoded: distinct keys
/// have distinct encodings, which is all a map needs.
pub fn storage_key(path: &str) -> Option<Vec<u8>> {
    let (bucket, key) = if let Some(key) = path.strip_prefix("/kv/") {
        ("default", key)
    } else {
        let rest = path.strip_prefix("/buckets/")?;
        let (bucket, rest) = rest.split_once('/')?;
        (bucket, rest.strip_prefix("keys/")?)
    };
    if bucket.is_empty() || key.is_empty() || key.contains('/') {
        return None;
    }
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    Some(k)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Answers one request.
pub async fn handle(store: &Store, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = storage_key(req.uri().path()) else {
        if req.uri().path() == "/health" {
            return Response::new(Full::new(Bytes::from_static(
                br#"{"status":"ok","node":"ceiling"}"#,
            )));
        }
        return error(StatusCode::NOT_FOUND, "not_found", "no such route");
    };
    match *req.method() {
        Method::GET => {
            let shard = store.shard(&key).lock();
            let Ok(shard) = shard else {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "poisoned");
            };
            match shard.get(&key) {
                Some(e) => {
                    let mut r = Response::new(Full::new(e.value.clone()));
                    r.headers_mut().insert(CONTENT_TYPE, e.content_type.clone());
                    r.headers_mut()
                        .insert("x-causal-context", e.context.clone());
                    r
                }
                None => error(StatusCode::NOT_FOUND, "not_found", "no such key"),
            }
        }
        Method::PUT => {
            // Copies, not slices: a slice would pin the connection's whole
            // read buffer for as long as the entry lives.
            let content_type = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let value = match req.into_body().collect().await {
                Ok(b) => Bytes::copy_from_slice(&b.to_bytes()),
                Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
            };
            let context = store.next_context();
            let entry = Entry {
                value,
                content_type,
                context: context.clone(),
            };
            if let Ok(mut shard) = store.shard(&key).lock() {
                shard.insert(key, entry);
            }
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r.headers_mut().insert("x-causal-context", context);
            r
        }
        Method::DELETE => {
            if let Ok(mut shard) = store.shard(&key).lock() {
                shard.remove(&key);
            }
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
            "only GET, PUT and DELETE",
        ),
    }
}

/// Accepts connections on `listener` forever, one task per connection.
pub async fn serve(listener: TcpListener, store: Arc<Store>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of file descriptors and the like: back off briefly.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let store = store.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(handle(&store, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A ceiling server running on its own thread; stops when dropped.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    threads: usize,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The CPU-time clock of the server, when it runs on one thread (a
    /// current-thread runtime); `None` with more threads.
    pub fn cpu_clock(&self) -> Option<libc::clockid_t> {
        match &self.thread {
            Some(t) if self.threads <= 1 => affinity::thread_cpu_clock(t),
            _ => None,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tokio runtime: current-thread for one thread, else multi-thread.
/// Shared by the ceiling server and the load generator.
pub(crate) fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Starts the ceiling on `addr` (port 0: any free port) on a new thread,
/// pinned to `cpu` if given, with a runtime of `threads` worker threads
/// (1: current-thread runtime).
pub fn start(addr: SocketAddr, cpu: Option<usize>, threads: usize) -> anyhow::Result<Running> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name("qkv-ceiling".into())
        .spawn(move || {
            let setup = (|| -> Result<tokio::runtime::Runtime, String> {
                if let Some(cpu) = cpu {
                    affinity::pin_current_thread(cpu).map_err(|e| e.to_string())?;
                }
                runtime(threads).map_err(|e| e.to_string())
            })();
            let rt = match setup {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = serve(listener, Arc::new(Store::default())) => {}
                    _ = stop_rx => {}
                }
            });
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Running {
            addr,
            threads,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => anyhow::bail!("ceiling server: {e}"),
        Err(_) => anyhow::bail!("ceiling server thread died"),
    }
}

/// Runs the ceiling in the foreground until Ctrl-C (`--serve-ceiling`), so
/// a script can pin it with `taskset` like a node.
pub fn serve_foreground(addr: SocketAddr, threads: usize) -> anyhow::Result<()> {
    let rt = runtime(threads)?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!(
            "ceiling server listening on http://{} (Ctrl-C to stop)",
            listener.local_addr()?
        );
        tokio::select! {
            _ = serve(listener, Arc::new(Store::default())) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_key_routes_map_to_the_same_storage_key() {
        assert_eq!(
            storage_key("/kv/abc"),
            storage_key("/buckets/default/keys/abc")
        );
        assert_eq!(storage_key("/buckets/b/keys/k").unwrap(), b"b\0k");
        assert_eq!(storage_key("/buckets/b/keys/"), None);
        assert_eq!(storage_key("/buckets/b"), None);
        assert_eq!(storage_key("/kv/a/b"), None);
        assert_eq!(storage_key("/health"), None);
    }

    #[tokio::test]
    async fn put_then_get_then_delete_over_http() {
        let server = start("127.0.0.1:0".parse().unwrap(), None, 1).unwrap();
        let c = quorumkv_client::Client::new(vec![format!("http://{}", server.addr)]).unwrap();
        let w = quorumkv_client::WriteOptions::default();
        let r = quorumkv_client::ReadOptions::default();
        let ctx = c
            .put(
                "default",
                b"k 1",
                b"v".to_vec(),
                Some("text/plain"),
                None,
                &w,
            )
            .await
            .unwrap();
        assert!(ctx.as_str().starts_with("c1."));
        let f = c.get("default", b"k 1", &r).await.unwrap();
        let quorumkv_client::Fetched::Found(v) = f else {
            panic!()
        };
        assert_eq!(v.single().unwrap().value, b"v");
        assert_eq!(v.single().unwrap().content_type, "text/plain");
        c.delete("default", b"k 1", None, &w).await.unwrap();
        let f = c.get("default", b"k 1", &r).await.unwrap();
        assert!(matches!(f, quorumkv_client::Fetched::NotFound { .. }));
    }
}
