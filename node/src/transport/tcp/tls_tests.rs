//! Internode mutual TLS between real `Net`s and handshakes over loopback:
//! peers of one CA call each other; a certificate of another CA, or one
//! naming another node id, is refused.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

use super::tls::InternodeTls;
use super::*;
use crate::proto::{RemoteError, Request, Response};

/// A throwaway CA.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed");
    Ca { cert, key }
}

/// A node certificate of `ca` whose only DNS name is `name`, and its key.
fn node_cert(ca: &Ca, name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![SanType::DnsName(name.try_into().expect("a DNS name"))];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("signed");
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), der)
}

/// TLS for a node trusting `trusted`, with a certificate of `issuer`
/// naming `name`.
fn tls(trusted: &Ca, issuer: &Ca, name: &str) -> InternodeTls {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.cert.der().clone()).expect("a root");
    let (cert, key) = node_cert(issuer, name);
    InternodeTls::new(roots, vec![cert], key).expect("a TLS configuration")
}

/// Answers `Ping` with `Pong`.
struct Pong;

impl Handler for Pong {
    fn handle(&self, _from: &str, req: Request) -> crate::transport::Answer {
        Box::pin(async move {
            match req {
                Request::Ping => Ok(Response::Pong),
                other => Err(RemoteError::Bad(format!("unexpected {}", other.kind()))),
            }
        })
    }
}

async fn start(node: &str, tls: InternodeTls) -> Arc<Net> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let identity = Identity {
        node: node.into(),
        addr: listener.local_addr().expect("addr").to_string(),
        cluster: "c".into(),
        secret: None,
    };
    let mut config = Config::new(identity);
    config.tls = Some(tls);
    config.backoff_max = Duration::from_millis(200);
    let (net, _gossip, incoming) = Net::bind(config, listener);
    incoming.serve(Arc::new(Pong));
    net
}

/// Pings `to` from `from` until the call succeeds or `tries` fail.
async fn ping(from: &Arc<Net>, to: &Arc<Net>, tries: u32) -> Result<Response, CallError> {
    let addr = to.config().identity.addr.clone();
    let mut last = Err(CallError::Stopped);
    for _ in 0..tries {
        last = from
            .call(&addr, Request::Ping, Duration::from_secs(5))
            .await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test]
async fn peers_of_one_ca_connect_over_tls_and_exchange_a_call() {
    let ours = ca();
    let a = start("n1", tls(&ours, &ours, "n1")).await;
    let b = start("n2", tls(&ours, &ours, "n2")).await;
    let answer = ping(&a, &b, 1).await.expect("answered over TLS");
    assert!(matches!(answer, Response::Pong), "{answer:?}");
    assert_eq!(a.counters().refused.load(Relaxed), 0);
    assert_eq!(b.counters().refused.load(Relaxed), 0);
}

#[tokio::test]
async fn a_peer_with_a_certificate_of_another_ca_is_refused() {
    let (ours, theirs) = (ca(), ca());
    let b = start("n2", tls(&ours, &ours, "n2")).await;
    // Trusts our CA, so only its own certificate is wrong.
    let stranger = start("n9", tls(&ours, &theirs, "n9")).await;
    let r = ping(&stranger, &b, 3).await;
    assert!(r.is_err(), "{r:?}");
    let refused = async {
        while b.counters().refused.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("the listener counts the refusal");
    assert_eq!(b.counters().inbound_requests.load(Relaxed), 0);
    // And a node of our CA refuses to dial a listener of another one.
    let a = start("n1", tls(&ours, &ours, "n1")).await;
    let impostor = start("n3", tls(&theirs, &theirs, "n3")).await;
    assert!(ping(&a, &impostor, 3).await.is_err());
    assert_eq!(impostor.counters().inbound_requests.load(Relaxed), 0);
}

/// Runs TLS and the quorumkv handshake between a dialer claiming
/// `dialer.0` with a certificate naming `dialer.1`, and a listener
/// claiming `listener.0` with one naming `listener.1`.
async fn handshake_over_tls(
    dialer: (&str, &str),
    listener: (&str, &str),
) -> (Result<PeerInfo, NetError>, Result<PeerInfo, NetError>) {
    let ours = ca();
    let (dial_tls, listen_tls) = (tls(&ours, &ours, dialer.1), tls(&ours, &ours, listener.1));
    let id = |node: &str| Identity {
        node: node.into(),
        addr: format!("{node}:7001"),
        cluster: "c".into(),
        secret: None,
    };
    let (me, them) = (id(dialer.0), id(listener.0));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.expect("accept");
        let stream = listen_tls.accept(s).await?;
        handshake::accept(&mut framed(stream, HANDSHAKE_MAX_FRAME), &them).await
    });
    let s = TcpStream::connect(addr).await.expect("connect");
    let d = match dial_tls.connect(s).await {
        Ok(stream) => handshake::dial(&mut framed(stream, HANDSHAKE_MAX_FRAME), &me).await,
        Err(e) => Err(e),
    };
    (d, server.await.expect("listener task"))
}

#[tokio::test]
async fn a_peer_whose_certificate_names_another_id_is_refused() {
    // The dialer holds a certificate of the cluster's CA, for n3, and
    // claims to be n1.
    let (d, l) = handshake_over_tls(("n1", "n3"), ("n2", "n2")).await;
    assert!(
        matches!(l, Err(NetError::Refused(Refusal::NotCertified(ref id))) if id == "n1"),
        "{l:?}"
    );
    assert!(
        matches!(d, Err(NetError::Refused(Refusal::ByPeer(ref r))) if r.contains("certificate")),
        "{d:?}"
    );
    // The same the other way: a listener posing as n2.
    let (d, _) = handshake_over_tls(("n1", "n1"), ("n2", "n3")).await;
    assert!(
        matches!(d, Err(NetError::Refused(Refusal::NotCertified(ref id))) if id == "n2"),
        "{d:?}"
    );
    // Certificates naming the ids they claim pass.
    let (d, l) = handshake_over_tls(("n1", "n1"), ("n2", "n2")).await;
    assert_eq!(d.expect("dialer ok").node, "n2");
    assert_eq!(l.expect("listener ok").node, "n1");
}

#[tokio::test]
async fn a_plain_peer_is_refused_by_a_tls_listener() {
    let ours = ca();
    let b = start("n2", tls(&ours, &ours, "n2")).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let identity = Identity {
        node: "n1".into(),
        addr: listener.local_addr().expect("addr").to_string(),
        cluster: "c".into(),
        secret: None,
    };
    let (plain, _gossip, _incoming) = Net::bind(Config::new(identity), listener);
    assert!(ping(&plain, &b, 2).await.is_err());
    assert_eq!(b.counters().inbound_requests.load(Relaxed), 0);
}

#[test]
fn unusable_files_are_refused_with_their_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let ours = ca();
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["n1".to_string()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, &ours.cert, &ours.key)
        .expect("signed");
    let (ca_pem, cert_pem, key_pem) = (
        write("ca.pem", &ours.cert.pem()),
        write("cert.pem", &cert.pem()),
        write("key.pem", &key.serialize_pem()),
    );
    assert!(InternodeTls::load(&ca_pem, &cert_pem, &key_pem).is_ok());
    let empty = write("empty.pem", "");
    let other_key = write(
        "other.pem",
        &KeyPair::generate().expect("key").serialize_pem(),
    );
    let missing = dir.path().join("missing.pem");
    let cases = [
        (&missing, &cert_pem, &key_pem, "--internode-ca"),
        (&empty, &cert_pem, &key_pem, "--internode-ca"),
        (&ca_pem, &empty, &key_pem, "--internode-cert"),
        (&ca_pem, &cert_pem, &missing, "--internode-key"),
        (&ca_pem, &cert_pem, &other_key, "cannot run internode TLS"),
    ];
    for (ca, cert, key, says) in cases {
        let Err(err) = InternodeTls::load(ca, cert, key) else {
            panic!("{ca:?} {cert:?} {key:?} were accepted");
        };
        assert!(err.to_string().contains(says), "{err}");
    }
}
