//! The transport's own tests: connections, handshakes, gossip and calls
//! between two in-process `Net`s over loopback.

use super::*;

async fn start(node: &str, cluster: &str, secret: Option<&str>) -> (Arc<Net>, GossipInbox) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let identity = Identity {
        node: node.into(),
        addr,
        cluster: cluster.into(),
        secret: secret.map(Into::into),
    };
    let (net, inbox, incoming) = Net::bind(Config::new(identity), listener);
    incoming.serve(Arc::new(NoRequests));
    (net, inbox)
}

/// Accepts connections (gossip rides them) but serves no request.
struct NoRequests;

impl Handler for NoRequests {
    fn handle(&self, _from: &str, _req: proto::Request) -> crate::transport::Answer {
        Box::pin(async { Err(proto::RemoteError::Bad("no requests here".into())) })
    }
}

fn syn(cluster: &str) -> Envelope {
    Envelope::Gossip(Message::Syn {
        cluster: cluster.into(),
        digests: vec![],
    })
}

#[tokio::test]
async fn gossip_reaches_an_authenticated_peer_with_the_senders_address() {
    let (a, _a_in) = start("a", "c", Some("s")).await;
    let (b, mut b_in) = start("b", "c", Some("s")).await;
    a.send(&b.config().identity.addr, syn("c")).expect("queued");
    let (from, msg) = tokio::time::timeout(Duration::from_secs(5), b_in.recv())
        .await
        .expect("delivered in time")
        .expect("inbox open");
    assert_eq!(from.as_str(), a.config().identity.addr);
    assert_eq!(msg.kind(), "syn");
    // The connection persists: a second message needs no new connect.
    a.send(&b.config().identity.addr, syn("c")).expect("queued");
    let _ = tokio::time::timeout(Duration::from_secs(5), b_in.recv()).await;
    assert_eq!(a.counters().connects.load(Relaxed), 1);
    assert_eq!(a.counters().sent.load(Relaxed), 2);
}

#[tokio::test]
async fn nothing_from_a_peer_with_the_wrong_secret_is_processed() {
    let (a, _a_in) = start("a", "c", Some("wrong")).await;
    let (b, mut b_in) = start("b", "c", Some("right")).await;
    for _ in 0..3 {
        let _ = a.send(&b.config().identity.addr, syn("c"));
    }
    let got = tokio::time::timeout(Duration::from_millis(500), b_in.recv()).await;
    assert!(got.is_err(), "nothing may arrive: {got:?}");
    assert!(a.counters().refused.load(Relaxed) >= 1);
    assert!(b.counters().refused.load(Relaxed) >= 1);
    assert_eq!(b.counters().received.load(Relaxed), 0);
}

/// Counts the `warn` events of this thread's subscriber and the
/// longest of them (all fields' text together).
#[derive(Clone, Default)]
struct Warnings {
    count: Arc<AtomicU64>,
    longest: Arc<AtomicU64>,
}

struct FieldBytes(usize);

impl tracing::field::Visit for FieldBytes {
    fn record_debug(&mut self, _: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0 += format!("{v:?}").len();
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut bytes = FieldBytes(0);
            event.record(&mut bytes);
            self.count.fetch_add(1, Relaxed);
            self.longest.fetch_max(bytes.0 as u64, Relaxed);
        }
    }
}

#[tokio::test]
async fn refusals_from_many_claimed_cluster_names_keep_the_table_and_the_log_bounded() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let warnings = Warnings::default();
    // A current-thread runtime: every task of the node logs here.
    let _log =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    let (b, _b_in) = start("b", "c", None).await;
    let addr = b.config().identity.addr.clone();
    let attempts = 300;
    for i in 0..attempts {
        // Each claims a cluster of its own, with a 10 kB name.
        let me = Identity {
            node: format!("x{i}"),
            addr: "127.0.0.1:1".into(),
            cluster: format!("{i}-{}", "n".repeat(10_000)),
            secret: None,
        };
        let s = TcpStream::connect(&addr).await.expect("connect");
        let r = handshake::dial(&mut framed(s, HANDSHAKE_MAX_FRAME), &me).await;
        assert!(matches!(r, Err(NetError::Refused(_))), "{r:?}");
    }
    let counted = async {
        while b.counters().refused.load(Relaxed) < attempts {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .expect("every refusal is counted");
    let table = lock(&b.refusals).len();
    assert!(table <= 2, "{table} entries remembered for one address");
    let lines = warnings.count.load(Relaxed);
    assert!(lines <= 2, "{lines} warn lines for one address and reason");
    let longest = warnings.longest.load(Relaxed);
    assert!(longest <= 2_000, "a warn line of {longest} bytes");
}

#[tokio::test]
async fn connections_from_one_address_beyond_the_cap_are_closed_at_once() {
    use tokio::io::AsyncReadExt as _;
    let (a, _a_in) = start("a", "c", None).await;
    let (b, mut b_in) = start("b", "c", None).await;
    let addr = b.config().identity.addr.clone();
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // Those over the cap are closed long before the 5 s handshake
    // deadline would close them; those within wait for a handshake.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut closed = 0;
    for s in &mut held {
        let mut buf = [0u8; 16];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 100 - 64, "connections closed at once");
    // Once they are gone, a peer from that address gets through.
    drop(held);
    let arrived = async {
        loop {
            let _ = a.send(&addr, syn("c"));
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), b_in.recv()).await
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), arrived)
        .await
        .expect("a peer gets through once the flood is gone");
}

#[tokio::test]
async fn an_unreachable_peer_drops_messages_and_counts_them() {
    let (a, _a_in) = start("a", "c", None).await;
    // A port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = dead.local_addr().expect("addr").to_string();
    drop(dead);
    a.send(&addr, syn("c")).expect("queued");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.counters().dropped_unreachable.load(Relaxed) >= 1);
    a.shutdown();
    assert!(matches!(a.send(&addr, syn("c")), Err(NetError::Stopped)));
}
