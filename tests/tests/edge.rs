//! The network edge of a real `qkvd` process against clients that do not
//! play along: connections trickling their headers or bodies a byte at a
//! time, idle connections, and more connections than `--max-connections`.
//! The node must keep answering everyone else and close the slow ones
//! once their deadline has passed (docs/SECURITY.md).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use quorumkv_tests::Cluster;
use quorumkv_tests::http::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How one slow connection ended.
#[derive(Debug)]
struct Ended {
    /// When the node closed it, counted from the connection's start.
    after: Duration,
    /// What the node sent before closing.
    reply: String,
}

/// Opens a connection to `addr`, sends `head`, then one byte of `drip`
/// every 100 ms, for at most `give_up`; returns when the node closed the
/// connection (read end or a failed write), or an error when it never did.
fn trickle(
    addr: String,
    head: &'static str,
    drip: u8,
    give_up: Duration,
) -> JoinHandle<Result<Ended>> {
    tokio::spawn(async move {
        let start = Instant::now();
        let s = TcpStream::connect(&addr).await?;
        let (mut rd, mut wr) = s.into_split();
        let reader = tokio::spawn(async move {
            let mut reply = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return reply,
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                }
            }
        });
        wr.write_all(head.as_bytes()).await?;
        while !reader.is_finished() {
            if start.elapsed() > give_up {
                bail!("the node kept a trickling connection open for {give_up:?}");
            }
            if wr.write_all(&[drip]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reply = reader.await?;
        Ok(Ended {
            after: start.elapsed(),
            reply: String::from_utf8_lossy(&reply).into_owned(),
        })
    })
}

#[tokio::test]
async fn trickling_clients_are_closed_after_their_deadline_while_others_are_served() -> Result<()> {
    let c = Cluster::single(&[
        "--default-n",
        "1",
        "--sync",
        "periodic",
        "--http-header-timeout-ms",
        "1500",
        "--http-body-timeout-ms",
        "1500",
    ])?;
    let api = Api::new(&c.node().url());
    let addr = c.node().http.to_string();
    api.put("/kv/canary", b"still here").await?;
    let give_up = Duration::from_secs(30);
    let mut headers = Vec::new();
    let mut bodies = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..40 {
        // Headers that never end: one more byte of a header value each time.
        headers.push(trickle(
            addr.clone(),
            "GET /health HTTP/1.1\r\nHost: qkv\r\nX-Slow: ",
            b'a',
            give_up,
        ));
        // Complete headers, then a body of 100000 bytes at 10 bytes/s.
        bodies.push(trickle(
            addr.clone(),
            "PUT /kv/slow HTTP/1.1\r\nHost: qkv\r\nContent-Length: 100000\r\n\r\n",
            b'v',
            give_up,
        ));
    }
    for _ in 0..10 {
        idle.push(tokio::spawn({
            let addr = addr.clone();
            async move {
                let start = Instant::now();
                let mut s = TcpStream::connect(&addr).await?;
                let mut buf = [0u8; 64];
                match tokio::time::timeout(give_up, s.read(&mut buf)).await {
                    Ok(_) => Ok(start.elapsed()),
                    Err(_) => bail!("an idle connection stayed open for {give_up:?}"),
                }
            }
        }));
    }

    // While the slow ones hold their connections (and for a while after),
    // everyone else is served promptly.
    let served_until = Instant::now() + Duration::from_secs(4);
    let mut rounds = 0;
    while Instant::now() < served_until {
        let t = Instant::now();
        let health = tokio::time::timeout(Duration::from_secs(2), api.get("/health")).await;
        assert!(
            matches!(health, Ok(Ok(ref r)) if r.status == 200),
            "/health while slow clients trickle: {health:?}"
        );
        let put = tokio::time::timeout(
            Duration::from_secs(2),
            api.put(&format!("/kv/k{rounds}"), b"v"),
        )
        .await;
        assert!(
            matches!(put, Ok(Ok(ref r)) if r.status == 204),
            "a write while slow clients trickle: {put:?}"
        );
        let get = tokio::time::timeout(Duration::from_secs(2), api.get("/kv/canary")).await;
        assert!(
            matches!(get, Ok(Ok(ref r)) if r.status == 200 && r.body == b"still here"),
            "a read while slow clients trickle: {get:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(3));
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rounds >= 5, "only {rounds} rounds were served");

    // Each slow connection was closed, after its deadline and well
    // before the clients would have given up; a slow body got its 408.
    let limit = Duration::from_secs(10);
    for h in headers {
        let ended = h.await??;
        assert!(ended.after < limit, "headers: {ended:?}");
        assert!(
            ended.after >= Duration::from_millis(1400),
            "closed before its deadline: {ended:?}"
        );
    }
    for b in bodies {
        let ended = b.await??;
        assert!(ended.after < limit, "body: {ended:?}");
        assert!(
            ended.reply.starts_with("HTTP/1.1 408") && ended.reply.contains("request_timeout"),
            "a slow body is answered 408 request_timeout: {ended:?}"
        );
    }
    for i in idle {
        let after = i.await??;
        assert!(
            after < limit,
            "an idle connection was closed after {after:?}"
        );
    }
    assert_eq!(
        api.get("/kv/slow").await?.status,
        404,
        "no slow body was stored"
    );
    let metrics = String::from_utf8(api.get("/metrics").await?.body)?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("qkv_http_header_timeouts_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_over_max_connections_is_closed_at_once() -> Result<()> {
    let c = Cluster::single(&[
        "--default-n",
        "1",
        "--max-connections",
        "8",
        "--http-header-timeout-ms",
        "60000",
    ])?;
    let addr = c.node().http.to_string();
    // Eight idle connections take every slot (the node accepts them in
    // order, so they are in before the ninth).
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(&addr).await?);
    }
    let mut ninth = TcpStream::connect(&addr).await?;
    let _ = ninth
        .write_all(b"GET /health HTTP/1.1\r\nHost: qkv\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), ninth.read_to_end(&mut buf)).await;
    match read {
        Ok(Ok(_)) | Ok(Err(_)) => assert!(
            buf.is_empty(),
            "the ninth connection was served: {}",
            String::from_utf8_lossy(&buf)
        ),
        Err(_) => bail!("the ninth connection was neither served nor closed within 5 s"),
    }
    // Once the idle ones go, the node serves again, and counted the refusal.
    drop(held);
    let api = Api::new(&c.node().url());
    quorumkv_tests::eventually(Duration::from_secs(10), "served again", || async {
        api.get("/health").await.is_ok_and(|r| r.status == 200)
    })
    .await?;
    let metrics = String::from_utf8(api.get("/metrics").await?.body)?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("qkv_http_connections_refused_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    Ok(())
}
