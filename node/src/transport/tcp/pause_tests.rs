//! A callee stalled as SIGSTOP stalls a node: its transport runs alone on
//! a thread that the test blocks, so requests wait in its socket; on
//! resuming it must not run those whose callers gave up, and must serve
//! the next ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::*;
use crate::proto::{RemoteError, Request, Response};

/// Counts the requests it runs; answers `Ping` only.
struct Counting(Arc<AtomicUsize>);

impl Handler for Counting {
    fn handle(&self, _from: &str, req: Request) -> crate::transport::Answer {
        self.0.fetch_add(1, Relaxed);
        Box::pin(async move {
            match req {
                Request::Ping => Ok(Response::Pong),
                other => Err(RemoteError::Bad(format!("unexpected {}", other.kind()))),
            }
        })
    }
}

/// A node on a thread of its own, which [`Stallable::stall`] blocks.
struct Stallable {
    net: Arc<Net>,
    runs: Arc<AtomicUsize>,
    stall: tokio::sync::mpsc::UnboundedSender<(Duration, std_mpsc::Sender<()>)>,
}

impl Stallable {
    fn start() -> Stallable {
        let (ready_tx, ready) = std_mpsc::channel();
        let (stall, mut stalls) =
            tokio::sync::mpsc::unbounded_channel::<(Duration, std_mpsc::Sender<()>)>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let identity = Identity {
                    node: "b".into(),
                    addr: listener.local_addr().expect("addr").to_string(),
                    cluster: "c".into(),
                    secret: None,
                };
                let (net, _gossip, incoming) = Net::bind(Config::new(identity), listener);
                let runs = Arc::new(AtomicUsize::new(0));
                incoming.serve(Arc::new(Counting(runs.clone())));
                ready_tx.send((net, runs)).expect("test waits");
                // Blocking the only thread stops every task of the node.
                while let Some((d, started)) = stalls.recv().await {
                    let _ = started.send(());
                    std::thread::sleep(d);
                }
            });
        });
        let (net, runs) = ready.recv().expect("node started");
        Stallable { net, runs, stall }
    }

    /// Blocks the node for `d`, from when this returns.
    fn stall(&self, d: Duration) {
        let (started, began) = std_mpsc::channel();
        self.stall.send((d, started)).expect("node thread alive");
        began.recv().expect("stall began");
    }

    fn addr(&self) -> String {
        self.net.config().identity.addr.clone()
    }
}

async fn caller() -> Arc<Net> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let identity = Identity {
        node: "a".into(),
        addr: listener.local_addr().expect("addr").to_string(),
        cluster: "c".into(),
        secret: None,
    };
    Net::bind(Config::new(identity), listener).0
}

const STALL: Duration = Duration::from_millis(1500);
const TIMEOUT: Duration = Duration::from_millis(200);
const LONG: Duration = Duration::from_secs(10);

/// Stalls `b`, makes a call that times out meanwhile, and checks that `b`
/// answers it `Deadline` on resuming without running it, then serves a
/// fresh call. `runs_before`: what `b` ran before.
async fn a_call_outlived_by_a_stall(a: &Arc<Net>, b: &Stallable, runs_before: usize) {
    b.stall(STALL);
    let r = a.call(&b.addr(), Request::Ping, TIMEOUT).await;
    assert!(matches!(r, Err(CallError::Timeout)), "{r:?}");
    let counted = async {
        while b.net.counters().inbound_expired.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .expect("the stale request is read and answered Deadline");
    assert_eq!(b.runs.load(Relaxed), runs_before, "the stale request ran");
    let ok = a.call(&b.addr(), Request::Ping, LONG).await;
    assert!(matches!(ok, Ok(Response::Pong)), "{ok:?}");
    assert_eq!(b.runs.load(Relaxed), runs_before + 1);
    assert_eq!(b.net.counters().inbound_expired.load(Relaxed), 1);
}

#[tokio::test]
async fn a_callee_stalled_past_the_timeout_does_not_run_what_it_finds_on_resuming() {
    let a = caller().await;
    let b = Stallable::start();
    let warm = a.call(&b.addr(), Request::Ping, LONG).await;
    assert!(matches!(warm, Ok(Response::Pong)), "{warm:?}");
    a_call_outlived_by_a_stall(&a, &b, 1).await;
}

#[tokio::test]
async fn a_stall_before_the_first_request_on_a_connection_counts_too() {
    let a = caller().await;
    let b = Stallable::start();
    // Connected by gossip, no request on it yet.
    let syn = Envelope::Gossip(quorumkv_gossip::Message::Syn {
        cluster: "c".into(),
        digests: vec![],
    });
    a.send(&b.addr(), syn).expect("queued");
    let heard = async {
        while b.net.counters().received.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), heard)
        .await
        .expect("gossip arrives");
    a_call_outlived_by_a_stall(&a, &b, 0).await;
}

#[tokio::test]
async fn a_stall_shorter_than_the_timeout_delays_but_does_not_drop() {
    let a = caller().await;
    let b = Stallable::start();
    let warm = a.call(&b.addr(), Request::Ping, LONG).await;
    assert!(matches!(warm, Ok(Response::Pong)), "{warm:?}");
    b.stall(Duration::from_millis(300));
    let r = a.call(&b.addr(), Request::Ping, LONG).await;
    assert!(matches!(r, Ok(Response::Pong)), "{r:?}");
    assert_eq!(b.net.counters().inbound_expired.load(Relaxed), 0);
}
