//! RPC between real `Net`s over loopback sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::proto::{RemoteError, Request, Response};

/// A call timeout no test should reach.
const LONG: Duration = Duration::from_secs(10);

/// A bound transport whose connections are accepted once [`serve`] gives
/// it a handler.
struct TestNet {
    net: Arc<Net>,
    incoming: std::sync::Mutex<Option<Incoming>>,
}

impl std::ops::Deref for TestNet {
    type Target = Arc<Net>;

    fn deref(&self) -> &Arc<Net> {
        &self.net
    }
}

fn bound(config: Config, listener: TcpListener) -> TestNet {
    let (net, _gossip, incoming) = Net::bind(config, listener);
    TestNet {
        net,
        incoming: std::sync::Mutex::new(Some(incoming)),
    }
}

async fn start(node: &str, secret: Option<&str>, tweak: impl FnOnce(&mut Config)) -> TestNet {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let identity = Identity {
        node: node.into(),
        addr: listener.local_addr().expect("addr").to_string(),
        cluster: "c".into(),
        secret: secret.map(Into::into),
    };
    let mut config = Config::new(identity);
    tweak(&mut config);
    bound(config, listener)
}

fn addr(net: &Net) -> String {
    net.config().identity.addr.clone()
}

/// A read of `bucket`, which picks the test handler's behaviour, for the
/// key `n`.
fn read(bucket: &str, n: u64) -> Request {
    Request::Read {
        bucket: bucket.into(),
        key: n.to_be_bytes().to_vec(),
        digest: true,
    }
}

/// Answers `Ping` with `Pong`, and reads by bucket: `echo` with the key as
/// a digest, `fail` with a storage error, `park` never (after saying so on
/// `parked`).
struct TestHandler {
    runs: Arc<AtomicUsize>,
    parked: mpsc::UnboundedSender<()>,
}

impl Handler for TestHandler {
    fn handle(&self, _from: &str, req: Request) -> crate::transport::Answer {
        self.runs.fetch_add(1, Relaxed);
        let parked = self.parked.clone();
        Box::pin(async move {
            match req {
                Request::Ping => Ok(Response::Pong),
                Request::Read { bucket, key, .. } => match bucket.as_str() {
                    "echo" => {
                        let n = <[u8; 8]>::try_from(key.as_slice())
                            .map_err(|_| RemoteError::Bad("key is not a u64".into()))?;
                        Ok(Response::Digest(Some(u64::from_be_bytes(n))))
                    }
                    "fail" => Err(RemoteError::Storage("disk on fire".into())),
                    // An answer of as many bytes as the key says.
                    "big" => {
                        let n = <[u8; 8]>::try_from(key.as_slice())
                            .map_err(|_| RemoteError::Bad("key is not a u64".into()))?;
                        let bytes = vec![7u8; u64::from_be_bytes(n) as usize];
                        Ok(Response::Object(Some(crate::proto::Encoded::from(bytes))))
                    }
                    "park" => {
                        let _ = parked.send(());
                        std::future::pending().await
                    }
                    other => Err(RemoteError::Bad(format!("no bucket {other}"))),
                },
                other => Err(RemoteError::Bad(format!("unexpected {}", other.kind()))),
            }
        })
    }
}

/// Serves `net` with a [`TestHandler`]; returns how many requests it has
/// run and where it reports parking.
fn serve(net: &TestNet) -> (Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let (parked, rx) = mpsc::unbounded_channel();
    let incoming = net
        .incoming
        .lock()
        .expect("lock")
        .take()
        .expect("served once");
    incoming.serve(Arc::new(TestHandler {
        runs: runs.clone(),
        parked,
    }));
    (runs, rx)
}

/// Calls `req` on `to` in a task of its own (so that the test can act
/// while it is in flight).
fn spawn_call(
    net: &Arc<Net>,
    to: &str,
    req: Request,
) -> tokio::task::JoinHandle<Result<Response, CallError>> {
    let (net, to) = (net.clone(), to.to_string());
    tokio::spawn(async move { net.call(&to, req, LONG).await })
}

/// Waits (boundedly) until the handler has parked a request.
async fn until_parked(parked: &mut mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(Duration::from_secs(5), parked.recv())
        .await
        .expect("the request reached the handler")
        .expect("handler alive");
}

/// A port nobody listens on.
async fn dead_addr() -> String {
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    dead.local_addr().expect("addr").to_string()
}

#[tokio::test]
async fn a_ping_gets_a_pong_between_authenticated_peers() {
    let a = start("a", Some("s"), |_| {}).await;
    let b = start("b", Some("s"), |_| {}).await;
    let (runs, _parked) = serve(&b);
    let r = a.call(&addr(&b), Request::Ping, LONG).await;
    assert!(matches!(r, Ok(Response::Pong)), "{r:?}");
    assert_eq!(runs.load(Relaxed), 1);
    assert_eq!(a.counters().calls.load(Relaxed), 1);
    assert_eq!(b.counters().inbound_requests.load(Relaxed), 1);
    assert_eq!(a.pending_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_calls_share_one_connection() {
    let a = start("a", Some("s"), |_| {}).await;
    let b = start("b", Some("s"), |_| {}).await;
    let (runs, _parked) = serve(&b);
    let to = addr(&b);
    let calls = (0..1000u64).map(|n| a.call(&to, read("echo", n), LONG));
    let results = tokio::time::timeout(Duration::from_secs(30), join_all(calls))
        .await
        .expect("all answered");
    for (n, r) in (0u64..).zip(results) {
        match r {
            Ok(Response::Digest(Some(d))) if d == n => {}
            other => panic!("call {n} got {other:?}"),
        }
    }
    assert_eq!(a.counters().connects.load(Relaxed), 1);
    assert_eq!(runs.load(Relaxed), 1000);
    assert_eq!(a.counters().calls.load(Relaxed), 1000);
    assert_eq!(a.counters().call_failures.load(Relaxed), 0);
    assert_eq!(a.pending_calls(), 0);
}

/// Calls made by tasks that are ready together leave in one write, not
/// one each: the sending task lets them queue before it writes (with one
/// worker, tokio would otherwise run it right after the first caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn calls_ready_together_share_a_write() {
    let a = start("a", None, |_| {}).await;
    let b = start("b", None, |_| {}).await;
    let (runs, _parked) = serve(&b);
    let to = addr(&b);
    // Connected first, so that the batch below is not the handshake's.
    let first = a.call(&to, read("echo", 0), LONG).await;
    assert!(matches!(first, Ok(Response::Digest(Some(0)))), "{first:?}");
    let before = (
        a.counters().sent.load(Relaxed),
        a.counters().writes.load(Relaxed),
    );
    let tasks: Vec<_> = (1..=100u64)
        .map(|n| {
            let (a, to) = (a.clone(), to.clone());
            tokio::spawn(async move { a.call(&to, read("echo", n), LONG).await })
        })
        .collect();
    for (n, t) in (1u64..).zip(tasks) {
        match t.await.expect("task") {
            Ok(Response::Digest(Some(d))) if d == n => {}
            other => panic!("call {n} got {other:?}"),
        }
    }
    let sent = a.counters().sent.load(Relaxed) - before.0;
    let writes = a.counters().writes.load(Relaxed) - before.1;
    assert_eq!(sent, 100);
    assert!(writes * 4 <= sent, "{sent} frames took {writes} writes");
    assert_eq!(runs.load(Relaxed), 101);
}

#[tokio::test]
async fn a_slow_handler_times_out_and_leaves_nothing_pending() {
    let a = start("a", None, |_| {}).await;
    let b = start("b", None, |_| {}).await;
    let (_runs, _parked) = serve(&b);
    let to = addr(&b);
    let t0 = Instant::now();
    let r = a
        .call(&to, read("park", 0), Duration::from_millis(300))
        .await;
    let took = t0.elapsed();
    assert!(matches!(r, Err(CallError::Timeout)), "{r:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(a.pending_calls(), 0);
    assert_eq!(a.counters().call_timeouts.load(Relaxed), 1);
    // B gives up too and answers late; A drops that answer, not the link.
    let r = a.call(&to, Request::Ping, LONG).await;
    assert!(matches!(r, Ok(Response::Pong)), "{r:?}");
    assert_eq!(a.counters().connects.load(Relaxed), 1);
}

#[tokio::test]
async fn the_callee_answers_deadline_when_the_request_outlives_its_timeout() {
    let a = start("a", None, |_| {}).await;
    let b = start("b", None, |_| {}).await;
    let (_runs, _parked) = serve(&b);
    // A pending call whose frame says 50 ms while A itself would wait on:
    // only B's deadline can end it.
    let (id, rx) = a.rpc.register().expect("not stopped");
    let body = read("park", 0);
    let env = Envelope::Request {
        id,
        timeout_ms: 50,
        body,
        made_ms: MadeMs(0),
    };
    a.send(&addr(&b), env).expect("queued");
    let r = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("answered")
        .expect("still pending");
    assert!(
        matches!(r, Err(CallError::Remote(RemoteError::Deadline))),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_request_written_after_its_callers_timeout_is_not_run() {
    let a = start("a", None, |_| {}).await;
    let b = start("b", None, |_| {}).await;
    let (runs, _parked) = serve(&b);
    let to = addr(&b);
    let warm = a.call(&to, Request::Ping, LONG).await;
    assert!(matches!(warm, Ok(Response::Pong)), "{warm:?}");
    // As a caller paused between making its call and writing it would
    // send it: the call was made longer ago than its timeout and the
    // allowance.
    let timeout_ms = 100;
    let (id, rx) = a.rpc.register().expect("not stopped");
    tokio::time::sleep(Duration::from_millis(
        timeout_ms + lateness::ALLOWANCE_MS + 300,
    ))
    .await;
    let env = Envelope::Request {
        id,
        timeout_ms: timeout_ms as u32,
        body: read("echo", 7),
        made_ms: MadeMs(0),
    };
    a.send(&to, env).expect("queued");
    let r = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("answered")
        .expect("still pending");
    assert!(
        matches!(r, Err(CallError::Remote(RemoteError::Deadline))),
        "{r:?}"
    );
    assert_eq!(runs.load(Relaxed), 1, "the handler must not run it");
    assert_eq!(b.counters().inbound_expired.load(Relaxed), 1);
    // A fresh call on the same connection is served.
    let ok = a.call(&to, read("echo", 7), LONG).await;
    assert!(matches!(ok, Ok(Response::Digest(Some(7)))), "{ok:?}");
}

#[tokio::test]
async fn a_remote_error_arrives_typed() {
    let a = start("a", None, |_| {}).await;
    let b = start("b", None, |_| {}).await;
    let (_runs, _parked) = serve(&b);
    let r = a.call(&addr(&b), read("fail", 0), LONG).await;
    match r {
        Err(CallError::Remote(RemoteError::Storage(why))) => assert_eq!(why, "disk on fire"),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.counters().call_failures.load(Relaxed), 1);
}

#[tokio::test]
async fn an_unreachable_peer_fails_calls_at_once() {
    // A long backoff, so that the second call surely falls inside it.
    let a = start("a", None, |c| c.backoff_min = LONG).await;
    let to = dead_addr().await;
    let t0 = Instant::now();
    let r = a.call(&to, Request::Ping, Duration::from_secs(5)).await;
    assert!(matches!(r, Err(CallError::Unreachable(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // While the backoff lasts, calls fail without queueing for the next
    // attempt.
    let t1 = Instant::now();
    let r = a.call(&to, Request::Ping, Duration::from_secs(5)).await;
    assert!(matches!(r, Err(CallError::Unreachable(_))), "{r:?}");
    assert!(t1.elapsed() < Duration::from_secs(1), "{:?}", t1.elapsed());
    assert_eq!(a.counters().call_failures.load(Relaxed), 2);
    assert_eq!(a.pending_calls(), 0);
}

#[tokio::test]
async fn a_peer_back_ends_the_backoff_at_once() {
    // A backoff longer than the test: only peer_is_back can end it.
    let a = start("a", None, |c| c.backoff_min = LONG).await;
    let to = dead_addr().await;
    let r = a.call(&to, Request::Ping, Duration::from_secs(5)).await;
    assert!(matches!(r, Err(CallError::Unreachable(_))), "{r:?}");
    // The peer comes up on that address.
    let listener = TcpListener::bind(&to).await.expect("rebind the dead port");
    let identity = Identity {
        node: "b".into(),
        addr: to.clone(),
        cluster: "c".into(),
        secret: None,
    };
    let b = bound(Config::new(identity), listener);
    let (_runs, _parked) = serve(&b);
    let r = a.call(&to, Request::Ping, Duration::from_secs(5)).await;
    assert!(
        matches!(r, Err(CallError::Unreachable(_))),
        "still in the backoff: {r:?}"
    );
    a.peer_is_back(&to);
    let t0 = Instant::now();
    let r = a.call(&to, Request::Ping, Duration::from_secs(5)).await;
    assert!(matches!(r, Ok(Response::Pong)), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn a_peer_going_away_mid_call_fails_it_at_once() {
    let a = start("a", None, |_| {}).await;
    let b = start("b", None, |_| {}).await;
    let (_runs, mut parked) = serve(&b);
    let call = spawn_call(&a, &addr(&b), read("park", 0));
    until_parked(&mut parked).await;
    let t0 = Instant::now();
    b.shutdown();
    let r = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("failed well before the call's timeout")
        .expect("call task");
    assert!(
        matches!(
            r,
            Err(CallError::ConnectionLost | CallError::Unreachable(_))
        ),
        "{r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(a.pending_calls(), 0);
}

#[tokio::test]
async fn shutdown_fails_pending_and_later_calls_with_stopped() {
    let a = start("a", None, |_| {}).await;
    let b = start("b", None, |_| {}).await;
    let (_runs, mut parked) = serve(&b);
    let to = addr(&b);
    let call = spawn_call(&a, &to, read("park", 0));
    until_parked(&mut parked).await;
    a.shutdown();
    let r = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("failed at once")
        .expect("call task");
    assert!(matches!(r, Err(CallError::Stopped)), "{r:?}");
    let r = a.call(&to, Request::Ping, LONG).await;
    assert!(matches!(r, Err(CallError::Stopped)), "{r:?}");
    assert_eq!(a.pending_calls(), 0);
}

#[tokio::test]
async fn a_node_serves_nothing_until_it_has_its_handler_then_answers_what_waited() {
    let a = start("a", None, |_| {}).await;
    let b = start("b", None, |_| {}).await;
    let mut call = spawn_call(&a, &addr(&b), Request::Ping);
    // Bound but not serving: the connection waits in the listen backlog,
    // so the call neither fails nor is answered.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut call).await;
    assert!(early.is_err(), "answered before the node served: {early:?}");
    let (runs, _parked) = serve(&b);
    let r = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("answered once served")
        .expect("call task");
    assert!(matches!(r, Ok(Response::Pong)), "{r:?}");
    assert_eq!(runs.load(Relaxed), 1);
}

#[tokio::test]
async fn a_peer_with_the_wrong_secret_is_unreachable_and_never_served() {
    let a = start("a", Some("wrong"), |_| {}).await;
    let b = start("b", Some("right"), |_| {}).await;
    let (runs, _parked) = serve(&b);
    let t0 = Instant::now();
    let r = a
        .call(&addr(&b), Request::Ping, Duration::from_secs(5))
        .await;
    match r {
        Err(CallError::Unreachable(why)) => assert!(why.contains("secret"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(runs.load(Relaxed), 0);
    assert_eq!(b.counters().inbound_requests.load(Relaxed), 0);
}

#[tokio::test]
async fn requests_beyond_max_inbound_are_answered_overloaded() {
    let a = start("a", None, |_| {}).await;
    let b = start("b", None, |c| c.max_inbound = 1).await;
    let (runs, mut parked) = serve(&b);
    let to = addr(&b);
    let _first = spawn_call(&a, &to, read("park", 0));
    until_parked(&mut parked).await;
    let r = a.call(&to, Request::Ping, LONG).await;
    assert!(
        matches!(r, Err(CallError::Remote(RemoteError::Overloaded(_)))),
        "{r:?}"
    );
    assert_eq!(runs.load(Relaxed), 1);
    assert_eq!(b.counters().inbound_overloaded.load(Relaxed), 1);
}

#[tokio::test]
async fn a_full_send_queue_fails_calls_instead_of_growing() {
    let a = start("a", None, |c| {
        c.queue = 1;
        c.handshake_timeout = LONG;
    })
    .await;
    // Accepts TCP connections (in the kernel's backlog) but never answers
    // the handshake: the first request waits in the connect, the next one
    // fills the queue, and nothing drains it.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let to = silent.local_addr().expect("addr").to_string();
    let calls = (0..3).map(|n| a.call(&to, read("echo", n), Duration::from_millis(300)));
    let results = join_all(calls).await;
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(CallError::QueueFull)))
        .count();
    assert!(full >= 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(CallError::QueueFull | CallError::Timeout))),
        "{results:?}"
    );
    assert!(a.counters().dropped_queue_full.load(Relaxed) >= 1);
    assert_eq!(a.pending_calls(), 0);
    drop(silent);
}

#[test]
fn what_may_have_been_applied() {
    assert!(CallError::Timeout.maybe_applied());
    assert!(CallError::ConnectionLost.maybe_applied());
    assert!(CallError::Remote(RemoteError::Deadline).maybe_applied());
    assert!(!CallError::Unreachable("x".into()).maybe_applied());
    assert!(!CallError::QueueFull.maybe_applied());
    assert!(!CallError::Remote(RemoteError::Overloaded("x".into())).maybe_applied());
    assert!(!CallError::Remote(RemoteError::Storage("x".into())).maybe_applied());
    assert_eq!(CallError::Timeout.reason(), "timeout");
    assert_eq!(
        CallError::Remote(RemoteError::Storage("x".into())).reason(),
        "storage error"
    );
}

/// A replication request carrying `bytes` bytes of versions.
fn replicate(bytes: usize) -> Request {
    Request::Replicate {
        bucket: "b".into(),
        key: b"k".to_vec(),
        object: crate::proto::Encoded::from(vec![1u8; bytes]),
        hint_for: None,
    }
}

#[tokio::test]
async fn a_request_over_the_frame_limit_fails_alone_before_it_is_sent() {
    let small = |c: &mut Config| c.max_frame = 64 << 10;
    let a = start("a", None, small).await;
    let b = start("b", None, small).await;
    let (runs, _parked) = serve(&b);
    let to = addr(&b);
    let first = a.call(&to, Request::Ping, LONG).await;
    assert!(matches!(first, Ok(Response::Pong)), "{first:?}");
    let r = a.call(&to, replicate(100 << 10), LONG).await;
    assert!(
        matches!(r, Err(CallError::TooLarge { limit, .. }) if limit == 64 << 10),
        "{r:?}"
    );
    assert_eq!(a.counters().calls_too_large.load(Relaxed), 1);
    // Nothing reached the peer, and the connection is the same one.
    let again = a.call(&to, Request::Ping, LONG).await;
    assert!(matches!(again, Ok(Response::Pong)), "{again:?}");
    assert_eq!(runs.load(Relaxed), 2);
    assert_eq!(a.counters().connects.load(Relaxed), 1);
}

#[tokio::test]
async fn an_answer_over_the_frame_limit_is_a_typed_error_for_its_call_alone() {
    let small = |c: &mut Config| c.max_frame = 64 << 10;
    let a = start("a", None, small).await;
    let b = start("b", None, small).await;
    let (_runs, _parked) = serve(&b);
    let to = addr(&b);
    let fits = a.call(&to, read("big", 1000), LONG).await;
    assert!(matches!(fits, Ok(Response::Object(Some(_)))), "{fits:?}");
    let r = a.call(&to, read("big", 100 << 10), LONG).await;
    assert!(
        matches!(r, Err(CallError::Remote(RemoteError::TooLarge { limit, .. })) if limit == 64 << 10),
        "{r:?}"
    );
    assert!(r.as_ref().is_err_and(CallError::maybe_applied));
    assert_eq!(b.counters().responses_too_large.load(Relaxed), 1);
    let again = a.call(&to, read("echo", 5), LONG).await;
    assert!(matches!(again, Ok(Response::Digest(Some(5)))), "{again:?}");
    assert_eq!(a.counters().connects.load(Relaxed), 1);
}

#[tokio::test]
async fn a_frame_over_the_receivers_limit_is_skipped_and_the_connection_lives() {
    // A peer with a larger limit than this node's: a misconfiguration the
    // connection survives, and the call fails at once with a typed error
    // rather than at its deadline.
    let a = start("a", None, |c| c.max_frame = 1 << 20).await;
    let b = start("b", None, |c| c.max_frame = 64 << 10).await;
    let (runs, _parked) = serve(&b);
    let to = addr(&b);
    let first = a.call(&to, Request::Ping, LONG).await;
    assert!(matches!(first, Ok(Response::Pong)), "{first:?}");
    let r = a.call(&to, replicate(200 << 10), LONG).await;
    assert!(
        matches!(
            r,
            Err(CallError::Remote(RemoteError::RequestTooLarge { bytes, limit }))
                if bytes > 200 << 10 && limit == 64 << 10
        ),
        "{r:?}"
    );
    assert!(
        !r.as_ref().is_err_and(CallError::maybe_applied),
        "it was not run"
    );
    assert_eq!(b.counters().frames_skipped.load(Relaxed), 1);
    let again = a.call(&to, read("echo", 9), LONG).await;
    assert!(matches!(again, Ok(Response::Digest(Some(9)))), "{again:?}");
    assert_eq!(runs.load(Relaxed), 2, "the skipped request never ran");
    assert_eq!(a.counters().connects.load(Relaxed), 1);
}

#[tokio::test]
async fn an_answer_over_the_callers_limit_fails_its_call_at_once_and_the_connection_lives() {
    // The callee's limit is larger: it sends an answer the caller skips.
    let a = start("a", None, |c| c.max_frame = 64 << 10).await;
    let b = start("b", None, |c| c.max_frame = 1 << 20).await;
    let (runs, _parked) = serve(&b);
    let to = addr(&b);
    let r = a.call(&to, read("big", 200 << 10), LONG).await;
    assert!(
        matches!(
            r,
            Err(CallError::Remote(RemoteError::TooLarge { bytes, limit }))
                if bytes > 200 << 10 && limit == 64 << 10
        ),
        "{r:?}"
    );
    assert!(
        r.as_ref().is_err_and(CallError::maybe_applied),
        "it was run"
    );
    assert_eq!(a.counters().frames_skipped.load(Relaxed), 1);
    let again = a.call(&to, read("echo", 4), LONG).await;
    assert!(matches!(again, Ok(Response::Digest(Some(4)))), "{again:?}");
    assert_eq!(runs.load(Relaxed), 2);
    assert_eq!(a.counters().connects.load(Relaxed), 1);
}

#[test]
fn a_skipped_frame_names_its_call_from_its_first_bytes() {
    use super::frame::HEAD;
    use super::wire::{SkippedCall, skipped_call};
    let encode = |e: &Envelope| rmp_serde::to_vec(e).expect("encodes");
    for id in [0, 1, 300, u64::from(u32::MAX) + 7, u64::MAX] {
        let request = encode(&Envelope::Request {
            id,
            timeout_ms: 1000,
            body: read("k", 1),
            made_ms: MadeMs(5),
        });
        let response = encode(&Envelope::Response {
            id,
            result: Ok(Response::Pong),
        });
        assert_eq!(
            skipped_call(&request[..HEAD]),
            Some(SkippedCall::Request(id))
        );
        assert_eq!(
            skipped_call(&response[..HEAD.min(response.len())]),
            Some(SkippedCall::Response(id))
        );
        // Cut before the id: nothing is guessed.
        assert_eq!(skipped_call(&request[..10]), None);
    }
    let gossip = encode(&Envelope::Gossip(quorumkv_gossip::Message::Syn {
        cluster: "c".into(),
        digests: vec![],
    }));
    assert_eq!(skipped_call(&gossip), None);
    assert_eq!(skipped_call(&[]), None);
    assert_eq!(skipped_call(&[0xff; HEAD]), None);
}

#[test]
fn a_request_is_stamped_in_its_encoded_frame_and_nothing_else_changes() {
    for made in [0, 1, -7, 123_456_789, i64::MIN, i64::MAX] {
        let env = Envelope::Request {
            id: 42,
            timeout_ms: 900,
            body: read("k", 3),
            made_ms: MadeMs(0),
        };
        let bytes = rmp_serde::to_vec(&env).expect("encodes");
        let mut out = Outgoing {
            bytes,
            call: Some(42),
        };
        out.stamp(made);
        let back = Envelope::decode(&out.into_bytes()).expect("decodes");
        let Envelope::Request {
            id,
            timeout_ms,
            made_ms,
            ..
        } = back
        else {
            panic!("not a request: {back:?}");
        };
        assert_eq!((id, timeout_ms, made_ms), (42, 900, MadeMs(made)));
    }
}
