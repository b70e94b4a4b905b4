//! The client against a tiny in-process HTTP server that answers in the
//! shapes of API.md: 200 with `X-Causal-Context`, 300 JSON siblings, 404 and
//! 503 JSON errors. The fake records every request so the tests can check
//! what the client sent (path encoding, query, headers, body).

mod common;

use std::sync::Arc;

use common::{fake, json_err, resp};
use quorumkv_client::{
    BucketPropsUpdate, Client, Conflicts, Consistency, Context, Error, Fetched, ReadOptions,
    WriteOptions,
};

#[tokio::test]
async fn get_returns_the_value_and_context_from_the_json_form() {
    let (url, seen) = fake(Arc::new(|_| {
        resp(
            200,
            &[("content-type", "application/json"), ("x-causal-context", "CTX1")],
            br#"{"context":"CTX1","values":[{"value_base64":"AAH/","content_type":"application/x-bin"}]}"#,
        )
    }))
    .await;
    let c = Client::new(vec![url]).unwrap();
    let opts = ReadOptions {
        r: Some(Consistency::All),
        timeout_ms: Some(250),
    };
    let f = c.get("b1", "a/é ?".as_bytes(), &opts).await.unwrap();
    let Fetched::Found(v) = f else {
        panic!("{f:?}")
    };
    assert_eq!(v.context, Context("CTX1".into()));
    let s = v.single().expect("one value");
    assert_eq!(s.value, vec![0, 1, 255]);
    assert_eq!(s.content_type, "application/x-bin");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].uri,
        "/buckets/b1/keys/a%2F%C3%A9%20%3F?r=all&timeout_ms=250"
    );
    assert_eq!(seen[0].header("accept"), Some("application/json"));
}

#[tokio::test]
async fn get_understands_a_raw_200() {
    let (url, _) = fake(Arc::new(|_| {
        resp(
            200,
            &[("content-type", "text/plain"), ("x-causal-context", "C")],
            b"hi",
        )
    }))
    .await;
    let c = Client::new(vec![url]).unwrap();
    let f = c
        .get("default", b"k", &ReadOptions::default())
        .await
        .unwrap();
    let Fetched::Found(v) = f else { panic!() };
    assert_eq!(v.single().unwrap().value, b"hi");
    assert_eq!(v.single().unwrap().content_type, "text/plain");
    assert_eq!(v.context.as_str(), "C");
}

#[tokio::test]
async fn siblings_come_back_as_a_typed_conflict() {
    let (url, _) = fake(Arc::new(|_| {
        json_err(
            300,
            r#"{"context":"CS","siblings":[{"value_base64":"YQ==","content_type":"text/plain"},{"value_base64":"Yg==","content_type":"text/plain"}]}"#,
        )
    }))
    .await;
    let c = Client::new(vec![url]).unwrap();
    let f = c
        .get("default", b"k", &ReadOptions::default())
        .await
        .unwrap();
    let Fetched::Found(v) = f else { panic!() };
    assert!(v.is_conflict());
    assert_eq!(v.single(), None);
    let vals: Vec<&[u8]> = v.values.iter().map(|s| s.value.as_slice()).collect();
    assert_eq!(vals, vec![b"a" as &[u8], b"b"]);
    assert_eq!(v.context.as_str(), "CS");
}

#[tokio::test]
async fn not_found_keeps_the_tombstone_context() {
    let (url, _) = fake(Arc::new(|s| {
        let mut h = vec![("content-type", "application/json")];
        if s.uri.contains("deleted") {
            h.push(("x-causal-context", "TOMB"));
        }
        resp(404, &h, br#"{"error":"not_found","message":"no such key"}"#)
    }))
    .await;
    let c = Client::new(vec![url]).unwrap();
    let f = c
        .get("default", b"never", &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(f, Fetched::NotFound { context: None });
    let f = c
        .get("default", b"deleted", &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(f.context().map(Context::as_str), Some("TOMB"));
}

#[tokio::test]
async fn put_sends_value_type_context_and_w_and_returns_the_new_context() {
    let (url, seen) = fake(Arc::new(|_| resp(204, &[("x-causal-context", "NEW")], b""))).await;
    let c = Client::builder(vec![url])
        .bearer_token("s3cret")
        .build()
        .unwrap();
    let all: Vec<u8> = (0..=255).collect();
    let ctx = c
        .put(
            "default",
            b"k",
            all.clone(),
            Some("image/png"),
            Some(&Context("OLD".into())),
            &WriteOptions {
                w: Some(Consistency::N(2)),
                timeout_ms: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ctx.as_str(), "NEW");
    let seen = seen.lock().unwrap();
    let s = &seen[0];
    assert_eq!(s.method, "PUT");
    assert_eq!(s.uri, "/buckets/default/keys/k?w=2");
    assert_eq!(s.body, all);
    assert_eq!(s.header("content-type"), Some("image/png"));
    assert_eq!(s.header("x-causal-context"), Some("OLD"));
    assert_eq!(s.header("authorization"), Some("Bearer s3cret"));
}

#[tokio::test]
async fn put_without_a_context_header_in_the_answer_is_invalid() {
    let (url, _) = fake(Arc::new(|_| resp(204, &[], b""))).await;
    let c = Client::new(vec![url]).unwrap();
    let e = c
        .put(
            "default",
            b"k",
            vec![],
            None,
            None,
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidResponse(_)), "{e}");
}

#[tokio::test]
async fn delete_sends_the_context() {
    let (url, seen) = fake(Arc::new(|_| resp(204, &[], b""))).await;
    let c = Client::new(vec![url]).unwrap();
    c.delete(
        "default",
        b"k",
        Some(&Context("C".into())),
        &WriteOptions {
            w: Some(Consistency::Quorum),
            timeout_ms: Some(10),
        },
    )
    .await
    .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(
        seen[0].uri,
        "/buckets/default/keys/k?w=quorum&timeout_ms=10"
    );
    assert_eq!(seen[0].header("x-causal-context"), Some("C"));
}

#[tokio::test]
async fn unavailable_is_a_typed_api_error_with_its_figures() {
    let (url, _) = fake(Arc::new(|_| {
        json_err(
            503,
            r#"{"error":"unavailable","message":"1 of 3 replicas alive, 2 required","required":2,"alive":1}"#,
        )
    }))
    .await;
    let c = Client::new(vec![url]).unwrap();
    let e = c
        .put(
            "default",
            b"k",
            b"v".to_vec(),
            None,
            None,
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    let Error::Api {
        status, code, body, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((*status, code.as_str()), (503, "unavailable"));
    assert_eq!(body["alive"], 1);
    assert!(
        e.to_string()
            .starts_with("unavailable (503): 1 of 3 replicas alive")
    );
    // Reads surface the same error rather than "not found".
    let e = c
        .get("default", b"k", &ReadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(503));
}

#[tokio::test]
async fn an_unreachable_first_node_falls_back_to_the_next() {
    // A port that was just free: connecting to it is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (url, seen) = fake(Arc::new(|_| {
        json_err(200, r#"{"status":"ok","node":"n2"}"#)
    }))
    .await;
    let c = Client::new(vec![dead.clone(), url]).unwrap();
    assert_eq!(c.health().await.unwrap().node, "n2");
    assert_eq!(seen.lock().unwrap().len(), 1);
    let only_dead = Client::new(vec![dead]).unwrap();
    let e = only_dead.health().await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e}");
}

#[tokio::test]
async fn bucket_props_round_trip() {
    let (url, seen) = fake(Arc::new(|s| {
        if s.method == "PUT" {
            json_err(
                200,
                r#"{"n":3,"r":"quorum","w":"all","conflicts":"lww","sloppy_quorum":false,"read_repair":"blocking","future":1}"#,
            )
        } else {
            json_err(404, r#"{"error":"not_found","message":"no bucket nope"}"#)
        }
    }))
    .await;
    let c = Client::new(vec![url]).unwrap();
    let upd = BucketPropsUpdate {
        w: Some(Consistency::All),
        conflicts: Some(Conflicts::Lww),
        ..Default::default()
    };
    let p = c.bucket_set("users", &upd).await.unwrap();
    assert_eq!(p.conflicts, Some(Conflicts::Lww));
    assert_eq!(p.extra["future"], 1);
    assert_eq!(
        seen.lock().unwrap()[0].body,
        br#"{"w":"all","conflicts":"lww"}"#
    );
    let e = c.bucket_get("nope").await.unwrap_err();
    assert_eq!(e.to_string(), "not_found (404): no bucket nope");
}

#[tokio::test]
async fn members_and_ring_parse() {
    let (url, _) = fake(Arc::new(|s| match s.uri.as_str() {
        "/cluster/members" => json_err(
            200,
            r#"[{"id":"n1","gossip_addr":"127.0.0.1:7001","http_addr":"127.0.0.1:8001","status":"up","state":"normal","phi":0.5,"generation":7,"heartbeat":42,"tokens":[1,2,3]},{"id":"n2"}]"#,
        ),
        "/cluster/ring" => json_err(
            200,
            r#"{"tokens":[{"token":1,"node":"n1"},{"token":"18446744073709551615","node":"n2"}],"ownership":{"n1":0.5,"n2":0.5}}"#,
        ),
        "/metrics" => resp(200, &[("content-type", "text/plain")], b"qkv_up 1\n"),
        _ => json_err(404, r#"{"error":"not_found","message":"?"}"#),
    }))
    .await;
    let c = Client::new(vec![url]).unwrap();
    let m = c.members().await.unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].tokens.len(), 3);
    assert_eq!(m[0].heartbeat, 42);
    assert_eq!(m[1].status, "");
    let r = c.ring().await.unwrap();
    assert_eq!(r.tokens[1].token, u64::MAX);
    assert_eq!(r.ownership["n2"], 0.5);
    assert_eq!(c.metrics().await.unwrap(), "qkv_up 1\n");
}

#[tokio::test]
async fn empty_keys_are_refused_before_sending() {
    let c = Client::new(vec!["http://127.0.0.1:9".into()]).unwrap();
    let e = c
        .get("default", b"", &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadInput(_)));
}
