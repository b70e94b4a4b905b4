//! The HTTP contract (API.md) against a real single `qkvd` process: every
//! route, every error code, the limits, and that bad requests neither
//! break the node nor touch stored data.

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use quorumkv_tests::Cluster;
use quorumkv_tests::http::{Api, Resp, enc};
use serde_json::json;

fn single(args: &[&str]) -> Result<(Cluster, Api)> {
    let mut all = vec!["--default-n", "1", "--sync", "periodic"];
    all.extend_from_slice(args);
    let c = Cluster::single(&all)?;
    let api = Api::new(&c.node().url());
    Ok((c, api))
}

async fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(
        resp.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&resp.body)
    );
    let body = resp.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A canary written first and checked after every bad request.
async fn canary_intact(api: &Api) -> Result<()> {
    let r = api.get("/kv/canary").await?;
    assert_eq!(r.status, 200, "node lost the canary or stopped serving");
    assert_eq!(r.body, b"still here");
    Ok(())
}

#[tokio::test]
async fn keys_round_trip_through_both_url_forms() -> Result<()> {
    let (_c, api) = single(&[])?;
    let r = api
        .put_with("/kv/greeting", &[("content-type", "text/plain")], b"hello")
        .await?;
    assert_eq!(r.status, 204);
    assert!(r.context().is_some(), "PUT returns X-Causal-Context");
    let r = api.get("/buckets/default/keys/greeting").await?;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    assert!(r.context().is_some());
    let r = api
        .get_with("/kv/greeting", &[("accept", "application/json")])
        .await?;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["values"][0]["value_base64"], B64.encode("hello"));
    assert_eq!(body["values"][0]["content_type"], "text/plain");
    assert!(body["context"].is_string());
    let r = api.get("/kv/missing").await?;
    assert_error(&r, 404, "not_found").await;
    Ok(())
}

#[tokio::test]
async fn key_length_limits_are_exact() -> Result<()> {
    let (_c, api) = single(&[])?;
    let k1024 = vec![b'k'; 1024];
    let r = api.put(&format!("/kv/{}", enc(&k1024)), b"v").await?;
    assert_eq!(r.status, 204, "1024-byte key accepted");
    let r = api.get(&format!("/kv/{}", enc(&k1024))).await?;
    assert_eq!(r.body, b"v");
    let k1025 = vec![b'k'; 1025];
    let r = api.put(&format!("/kv/{}", enc(&k1025)), b"v").await?;
    assert_error(&r, 400, "key_too_long").await;
    let r = api.get(&format!("/kv/{}", enc(&k1025))).await?;
    assert_error(&r, 400, "key_too_long").await;
    // Multi-byte characters count as bytes: 342 × 3 bytes = 1026.
    let wide = "€".repeat(342);
    let r = api
        .put(&format!("/kv/{}", enc(wide.as_bytes())), b"v")
        .await?;
    assert_error(&r, 400, "key_too_long").await;
    let r = api.put("/kv/", b"v").await?;
    assert_error(&r, 400, "bad_request").await;
    Ok(())
}

#[tokio::test]
async fn values_over_the_limit_are_refused_with_413() -> Result<()> {
    let (_c, api) = single(&["--max-value-bytes", "1000"])?;
    api.put("/kv/canary", b"still here").await?;
    let r = api.put("/kv/big", &[7u8; 1000]).await?;
    assert_eq!(r.status, 204, "exactly the limit is accepted");
    let r = api.put("/kv/big2", &[7u8; 1001]).await?;
    assert_error(&r, 413, "value_too_large").await;
    assert_error(&api.get("/kv/big2").await?, 404, "not_found").await;
    let r = api.put("/kv/empty", b"").await?;
    assert_eq!(r.status, 204, "empty values are values");
    let r = api.get("/kv/empty").await?;
    assert_eq!((r.status, r.body.len()), (200, 0));
    canary_intact(&api).await
}

#[tokio::test]
async fn unicode_keys_and_every_byte_value_round_trip_exactly() -> Result<()> {
    let (_c, api) = single(&[])?;
    let all: Vec<u8> = (0..=255u8).collect();
    let keys: Vec<Vec<u8>> = vec![
        "ключ/with slash".as_bytes().to_vec(),
        "日本語キー".as_bytes().to_vec(),
        "emoji 🎉 %20 +".as_bytes().to_vec(),
        vec![0xff, 0x00, 0x2f, 0x25],
    ];
    for (i, key) in keys.iter().enumerate() {
        let path = format!("/buckets/b{i}/keys/{}", enc(key));
        assert_eq!(api.put(&path, &all).await?.status, 204);
        let r = api.get(&path).await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, all, "value of key {key:?} changed");
        let local = api
            .get(&format!("/internal/local/buckets/b{i}/keys/{}", enc(key)))
            .await?;
        assert_eq!(local.json()["values"][0]["value_base64"], B64.encode(&all));
    }
    Ok(())
}

#[tokio::test]
async fn bad_context_tokens_are_400_and_harmless() -> Result<()> {
    let (_c, api) = single(&[])?;
    api.put("/kv/canary", b"still here").await?;
    let ok = api.put("/kv/k", b"v1").await?.context().unwrap_or_default();
    let truncated = &ok[..ok.len() / 2];
    let mut flipped = B64URL.decode(&ok)?;
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let flipped = B64URL.encode(flipped);
    let random = B64URL.encode((0..40u8).map(|i| i.wrapping_mul(97)).collect::<Vec<_>>());
    for bad in [
        "not base64 !!",
        truncated,
        flipped.as_str(),
        random.as_str(),
        "AAAA",
        "////",
    ] {
        let r = api
            .put_with("/kv/k", &[("x-causal-context", bad)], b"v2")
            .await?;
        assert_error(&r, 400, "bad_request").await;
        let r = api
            .delete_with("/kv/k", &[("x-causal-context", bad)])
            .await?;
        assert_error(&r, 400, "bad_request").await;
    }
    let r = api.get("/kv/k").await?;
    assert_eq!(r.body, b"v1", "bad writes changed nothing");
    canary_intact(&api).await
}

#[tokio::test]
async fn bad_consistency_values_are_rejected() -> Result<()> {
    let (_c, api) = single(&[])?;
    api.put("/kv/canary", b"still here").await?;
    for q in ["r=none", "r=0", "r=2", "r=any", "r=", "r=QUORUM", "r=1.0"] {
        let r = api.get(&format!("/kv/canary?{q}")).await?;
        assert_error(&r, 400, "bad_consistency").await;
    }
    for q in ["w=none", "w=0", "w=2", "w=three", "w=-1"] {
        let r = api.put(&format!("/kv/x?{q}"), b"v").await?;
        assert_error(&r, 400, "bad_consistency").await;
    }
    for q in ["r=one", "r=quorum", "r=all", "r=1"] {
        assert_eq!(
            api.get(&format!("/kv/canary?{q}")).await?.status,
            200,
            "{q}"
        );
    }
    assert_eq!(api.put("/kv/x?w=any", b"v").await?.status, 204);
    let r = api.get("/kv/canary?timeout_ms=abc").await?;
    assert_error(&r, 400, "bad_request").await;
    canary_intact(&api).await
}

#[tokio::test]
async fn bad_bucket_names_and_bodies_are_400() -> Result<()> {
    let (_c, api) = single(&[])?;
    api.put("/kv/canary", b"still here").await?;
    let long = "b".repeat(65);
    for name in ["bad.name", "sp%20ace", "%C3%A9", long.as_str()] {
        let r = api.put(&format!("/buckets/{name}/keys/k"), b"v").await?;
        assert_error(&r, 400, "bad_request").await;
        let r = api.get(&format!("/buckets/{name}")).await?;
        assert_error(&r, 400, "bad_request").await;
    }
    for body in [
        "{",
        "[]",
        r#"{"n":"three"}"#,
        r#"{"n":0}"#,
        r#"{"n":17}"#,
        r#"{"bogus":1}"#,
        r#"{"conflicts":"merge"}"#,
        r#"{"read_repair":"sometimes"}"#,
    ] {
        let r = api.put("/buckets/props", body.as_bytes()).await?;
        assert_error(&r, 400, "bad_request").await;
    }
    let r = api.put("/buckets/props", br#"{"n":1,"r":"two"}"#).await?;
    assert_error(&r, 400, "bad_consistency").await;
    canary_intact(&api).await
}

#[tokio::test]
async fn bucket_properties_persist_and_n_is_frozen_by_data() -> Result<()> {
    let (mut c, api) = single(&[])?;
    assert_error(&api.get("/buckets/fresh").await?, 404, "not_found").await;
    let r = api
        .put(
            "/buckets/fresh",
            br#"{"n":1,"r":"one","w":"all","conflicts":"lww","read_repair":"async"}"#,
        )
        .await?;
    assert_eq!(r.status, 200);
    let want = json!({"n":1,"r":"one","w":"all","conflicts":"lww","sloppy_quorum":false,"read_repair":"async"});
    assert_eq!(r.json(), want);
    assert_eq!(api.put("/buckets/fresh/keys/k", b"v").await?.status, 204);
    let r = api.put("/buckets/fresh", br#"{"n":2}"#).await?;
    assert_error(&r, 400, "bad_request").await;
    let node = &mut c.nodes[0];
    assert_eq!(node.terminate(std::time::Duration::from_secs(15))?, Some(0));
    node.restart()?;
    let api = Api::new(&node.url());
    let r = api.get("/buckets/fresh").await?;
    assert_eq!(r.json(), want, "properties survive a restart");
    let r = api.get("/buckets/default").await?;
    assert_eq!(r.status, 200, "default always exists");
    assert_eq!(r.json()["n"], 1);
    Ok(())
}

#[tokio::test]
async fn n_larger_than_the_cluster_is_unavailable_with_advice() -> Result<()> {
    let (_c, api) = single(&[])?;
    assert_eq!(api.put("/buckets/wide", br#"{"n":3}"#).await?.status, 200);
    let r = api.put("/buckets/wide/keys/k", b"v").await?;
    assert_error(&r, 503, "unavailable").await;
    let body = r.json();
    assert_eq!(
        (body["required"].as_u64(), body["alive"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        body["message"].as_str().unwrap_or("").contains("\"n\":1"),
        "{body}"
    );
    let r = api.get("/buckets/wide/keys/k?r=all").await?;
    assert_error(&r, 503, "unavailable").await;
    assert_eq!(r.json()["required"], 3);
    // Nothing was written: with n=1 allowed again (no data yet) the key is absent.
    assert_eq!(api.put("/buckets/wide", br#"{"n":1}"#).await?.status, 200);
    assert_error(&api.get("/buckets/wide/keys/k").await?, 404, "not_found").await;
    Ok(())
}

#[tokio::test]
async fn cluster_routes_describe_the_single_node() -> Result<()> {
    let (c, api) = single(&["--vnodes", "8"])?;
    let r = api.get("/health").await?;
    assert_eq!(r.json(), json!({"status":"ok","node":"n1"}));
    let members = api.get("/cluster/members").await?.json();
    let m = &members[0];
    assert_eq!(m["id"], "n1");
    assert_eq!(m["status"], "up");
    assert_eq!(m["state"], "normal");
    assert_eq!(m["http_addr"], c.node().http.to_string());
    assert_eq!(m["gossip_addr"], c.node().listen.to_string());
    assert_eq!(m["tokens"].as_array().map(Vec::len), Some(8));
    for f in ["phi", "generation", "heartbeat"] {
        assert!(m[f].is_number(), "{f} in {m}");
    }
    let ring = api.get("/cluster/ring").await?.json();
    assert_eq!(ring["tokens"].as_array().map(Vec::len), Some(8));
    let own = ring["ownership"]["n1"].as_f64().unwrap_or(0.0);
    assert!((own - 1.0).abs() < 1e-9, "{ring}");
    let loc = api
        .get("/cluster/locate/some%20key?bucket=default")
        .await?
        .json();
    assert_eq!(loc["replicas"], json!(["n1"]));
    assert!(loc["token"].is_u64());
    let r = api.get("/cluster/locate/k?bucket=bad.name").await?;
    assert_error(&r, 400, "bad_request").await;
    Ok(())
}

#[tokio::test]
async fn metrics_count_requests_siblings_and_storage() -> Result<()> {
    let (_c, api) = single(&[])?;
    api.put("/kv/a", b"1").await?;
    api.put("/kv/a", b"2").await?;
    assert_eq!(api.get("/kv/a").await?.status, 300);
    api.get("/kv/nope").await?;
    let r = api.get("/metrics").await?;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body)?;
    for needle in [
        r#"qkv_http_requests_total{route="keys",method="PUT",status="204"} 2"#,
        r#"qkv_http_requests_total{route="keys",method="GET",status="404"} 1"#,
        r#"qkv_http_requests_total{route="keys",method="GET",status="300"} 1"#,
        "qkv_http_request_duration_seconds_bucket",
        "qkv_keys_stored 1",
        "qkv_siblings_returned_total 2",
        "qkv_lww_dropped_versions_total 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(text.contains("qkv_bytes_stored "), "{text}");
    Ok(())
}

#[tokio::test]
async fn internal_local_shows_this_replica() -> Result<()> {
    let (_c, api) = single(&[])?;
    api.put("/kv/k", b"v").await?;
    let r = api.get("/internal/local/buckets/default/keys/k").await?;
    let body = r.json();
    assert_eq!(body["node"], "n1");
    assert_eq!(body["values"][0]["value_base64"], B64.encode("v"));
    assert_eq!(body["tombstone"], false);
    assert!(body["context"].is_string());
    let ctx = r.json()["context"].as_str().unwrap_or_default().to_string();
    api.delete_with("/kv/k", &[("x-causal-context", &ctx)])
        .await?;
    let body = api
        .get("/internal/local/buckets/default/keys/k")
        .await?
        .json();
    assert_eq!(body["tombstone"], true);
    assert_eq!(body["values"], json!([]));
    let r = api
        .get("/internal/local/buckets/default/keys/never")
        .await?;
    assert_error(&r, 404, "not_found").await;
    Ok(())
}

#[tokio::test]
async fn unknown_routes_and_methods_are_4xx() -> Result<()> {
    let (_c, api) = single(&[])?;
    assert_error(&api.get("/nope").await?, 404, "not_found").await;
    assert_error(&api.get("/buckets/default/keys").await?, 404, "not_found").await;
    let r = api.send("PATCH", "/kv/k", &[], None).await?;
    assert_eq!(r.status, 405);
    Ok(())
}

#[tokio::test]
async fn a_key_with_a_malformed_escape_is_400_and_nothing_is_stored() -> Result<()> {
    let (_c, api) = single(&[])?;
    for bad in ["%", "%zz", "%4", "a%4g"] {
        let r = api.put(&format!("/kv/{bad}"), b"v").await?;
        assert_error(&r, 400, "bad_request").await;
        // The literal key (what a lenient decoder would have stored).
        let literal = enc(bad.as_bytes());
        assert_eq!(
            api.get(&format!("/kv/{literal}")).await?.status,
            404,
            "{bad}"
        );
    }
    assert_eq!(api.put("/kv/100%25", b"v").await?.status, 204);
    assert_eq!(api.get("/kv/100%25").await?.body, b"v");
    Ok(())
}

#[tokio::test]
async fn bearer_tokens_guard_every_route_but_health() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (client_s, admin_s) = quorumkv_tests::token_files(dir.path())?;
    let (_c, api) = single(&[
        "--client-tokens-file",
        &client_s,
        "--admin-token-file",
        &admin_s,
    ])?;
    assert_eq!(api.get("/health").await?.status, 200);
    assert_error(&api.put("/kv/k", b"v").await?, 401, "unauthorized").await;
    let bad = [("authorization", "Bearer wrong")];
    assert_error(&api.get_with("/kv/k", &bad).await?, 401, "unauthorized").await;
    let c = [("authorization", "Bearer c-token")];
    assert_eq!(api.put_with("/kv/k", &c, b"v").await?.status, 204);
    assert_eq!(api.get_with("/kv/k", &c).await?.status, 200);
    assert_eq!(api.get_with("/cluster/members", &c).await?.status, 200);
    let local = "/internal/local/buckets/default/keys/k";
    assert_error(&api.get_with(local, &c).await?, 401, "unauthorized").await;
    let a = [("authorization", "Bearer a-token")];
    assert_eq!(api.get_with(local, &a).await?.status, 200);

    // A client token reads what a bucket is but cannot change it (to lww,
    // or to sloppy quorums), nor repair or clean up.
    let lww = br#"{"conflicts":"lww"}"#;
    assert_error(
        &api.put_with("/buckets/b", &c, lww).await?,
        401,
        "unauthorized",
    )
    .await;
    let r = api.get_with("/buckets/b", &a).await?;
    assert_eq!(r.status, 404, "the refused change created nothing");
    assert_eq!(api.get_with("/buckets/default", &c).await?.status, 200);
    assert_eq!(api.put_with("/buckets/b", &a, lww).await?.status, 200);
    assert_eq!(
        api.get_with("/buckets/b", &c).await?.json()["conflicts"],
        "lww"
    );
    for (path, body) in [
        ("/internal/repair", &b"{}"[..]),
        ("/cluster/cleanup", b"{}"),
    ] {
        let r = api.send("POST", path, &c, Some(body.to_vec())).await?;
        assert_error(&r, 401, "unauthorized").await;
    }
    Ok(())
}

#[tokio::test]
async fn a_slow_replica_gives_504_timeout_with_acks() -> Result<()> {
    let (_c, api) = single(&["--fault-injection"])?;
    api.put("/kv/canary", b"still here").await?;
    let r = api
        .put("/internal/fault", br#"{"storage_delay_ms":400}"#)
        .await?;
    assert_eq!(r.status, 200);
    let r = api.put("/kv/slow?timeout_ms=50", b"v").await?;
    assert_error(&r, 504, "timeout").await;
    let body = r.json();
    assert_eq!(
        (body["required"].as_u64(), body["acks"].as_u64()),
        (Some(1), Some(0))
    );
    let r = api.get("/kv/canary?timeout_ms=50").await?;
    assert_error(&r, 504, "timeout").await;
    api.put("/internal/fault", br#"{"storage_delay_ms":0}"#)
        .await?;
    canary_intact(&api).await
}

#[tokio::test]
async fn fault_routes_do_not_exist_without_the_flag() -> Result<()> {
    let (_c, api) = single(&[])?;
    let r = api
        .put("/internal/fault", br#"{"storage_delay_ms":400}"#)
        .await?;
    assert_error(&r, 404, "not_found").await;
    Ok(())
}

#[tokio::test]
async fn requests_beyond_max_inflight_are_503_overloaded() -> Result<()> {
    let (_c, api) = single(&["--fault-injection", "--max-inflight", "1"])?;
    api.put("/internal/fault", br#"{"storage_delay_ms":1500}"#)
        .await?;
    // Poll until the slow request holds the only slot: then an admitted route that touches no storage (/cluster/members; a key read would itself wait on the storage delay and hold the slot) is
    // refused, while /health and /metrics (outside admission) still
    // answer. Poll for as long as the slow request is under way (on a
    // loaded machine it may reach the node late), not for a fixed number
    // of rounds. A probe can also reach the node first and hold the slot,
    // so that the slow request itself is refused: then it is sent again.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (saw, slow) = loop {
        let slow = {
            let api = api.clone();
            tokio::spawn(async move { api.put("/kv/held", b"v").await })
        };
        let mut saw = None;
        while !slow.is_finished() && std::time::Instant::now() < give_up {
            let r = api.get("/cluster/members").await?;
            if r.status == 503 {
                let health = api.get("/health").await?;
                let metrics = api.get("/metrics").await?;
                // Still refused after both: the slot was held throughout.
                if api.get("/cluster/members").await?.status == 503 {
                    saw = Some((r, health, metrics));
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if saw.is_some() || std::time::Instant::now() >= give_up {
            break (saw, slow);
        }
        let early = slow.await??;
        assert_eq!(
            early.status, 503,
            "the slow request finished without any probe being refused"
        );
    };
    let (r, health, metrics) = saw.expect("a request was refused while the slot was held");
    assert_error(&r, 503, "overloaded").await;
    assert_eq!(health.status, 200, "/health is answered while overloaded");
    assert_eq!(metrics.status, 200, "/metrics is answered while overloaded");
    let done = slow.await??;
    assert_eq!(done.status, 204, "the admitted request completes");
    api.put("/internal/fault", br#"{"storage_delay_ms":0}"#)
        .await?;
    let metrics = String::from_utf8(api.get("/metrics").await?.body)?;
    assert!(
        !metrics.contains("qkv_overloaded_requests_total 0"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_restarted_node_keeps_id_tokens_and_data_and_raises_its_generation() -> Result<()> {
    let (mut c, api) = single(&["--vnodes", "16"])?;
    api.put("/kv/k", b"v").await?;
    let before = api.get("/cluster/members").await?.json()[0].clone();
    let node = &mut c.nodes[0];
    assert_eq!(node.terminate(std::time::Duration::from_secs(15))?, Some(0));
    node.restart()?;
    let api = Api::new(&node.url());
    let after = api.get("/cluster/members").await?.json()[0].clone();
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["tokens"], before["tokens"], "tokens are persisted");
    assert_eq!(after["tokens"].as_array().map(Vec::len), Some(16));
    assert!(
        after["generation"].as_u64() > before["generation"].as_u64(),
        "generation grows: {before} -> {after}"
    );
    assert_eq!(api.get("/kv/k").await?.body, b"v");
    let ring = api.get("/cluster/ring").await?.json();
    assert_eq!(ring["rf"], 1);
    assert!((ring["replicated_ownership"]["n1"].as_f64().unwrap_or(0.0) - 1.0).abs() < 1e-9);
    Ok(())
}

#[tokio::test]
async fn a_data_dir_refuses_another_node_id() -> Result<()> {
    let (mut c, _api) = single(&[])?;
    let node = &mut c.nodes[0];
    node.terminate(std::time::Duration::from_secs(15))?;
    node.spec.id = "other".into();
    let err = node.restart().expect_err("another id must be refused");
    assert!(err.to_string().contains("belongs to node \"n1\""), "{err}");
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_is_served_as_built() -> Result<()> {
    let (_c, api) = single(&[])?;
    let r = api.get("/openapi.yaml").await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/yaml")
    );
    assert!(
        r.body == quorumkv_tests::openapi::OPENAPI_YAML.as_bytes(),
        "the node serves another document than docs/openapi.yaml ({} bytes): rebuild qkvd",
        r.body.len()
    );
    Ok(())
}
