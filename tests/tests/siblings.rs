//! Concurrent versions on a real node: siblings are kept and shown, a
//! write with a read's context resolves them, LWW buckets keep the newest,
//! and a delete with context hides the key.

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use quorumkv_tests::Cluster;
use quorumkv_tests::http::Api;

fn sibling_values(body: &serde_json::Value) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = body["siblings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["value_base64"].as_str())
                .filter_map(|s| B64.decode(s).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn concurrent_writes_become_siblings_and_a_context_write_resolves_them() -> Result<()> {
    let c = Cluster::single(&["--default-n", "1"])?;
    let api = Api::new(&c.node().url());
    assert_eq!(api.put("/kv/doc", b"from alice").await?.status, 204);
    assert_eq!(api.put("/kv/doc", b"from bob").await?.status, 204);
    let r = api.get("/kv/doc").await?;
    assert_eq!(r.status, 300, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(
        sibling_values(&body),
        vec![b"from alice".to_vec(), b"from bob".to_vec()]
    );
    let ctx = body["context"].as_str().unwrap_or_default().to_string();
    assert_eq!(r.context().as_deref(), Some(ctx.as_str()));

    let r = api
        .put_with("/kv/doc", &[("x-causal-context", &ctx)], b"merged")
        .await?;
    assert_eq!(r.status, 204);
    let r = api.get("/kv/doc").await?;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"merged"[..]));

    // A writer that read before "merged" and writes with its stale context
    // does not erase "merged": it becomes a sibling of it.
    let r = api
        .put_with("/kv/doc", &[("x-causal-context", &ctx)], b"late")
        .await?;
    assert_eq!(r.status, 204);
    let r = api.get("/kv/doc").await?;
    assert_eq!(r.status, 300);
    assert_eq!(
        sibling_values(&r.json()),
        vec![b"late".to_vec(), b"merged".to_vec()]
    );
    Ok(())
}

#[tokio::test]
async fn lww_bucket_keeps_only_the_newest_and_counts_the_drop() -> Result<()> {
    let c = Cluster::single(&["--default-n", "1"])?;
    let api = Api::new(&c.node().url());
    assert_eq!(
        api.put("/buckets/clock", br#"{"conflicts":"lww"}"#)
            .await?
            .status,
        200
    );
    for v in ["first", "second", "third"] {
        assert_eq!(
            api.put("/buckets/clock/keys/k", v.as_bytes()).await?.status,
            204
        );
    }
    let r = api.get("/buckets/clock/keys/k").await?;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"third"[..]));
    let metrics = String::from_utf8(api.get("/metrics").await?.body)?;
    assert!(
        metrics.contains("qkv_lww_dropped_versions_total 2"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn delete_with_context_then_get_is_404_with_the_tombstone_context() -> Result<()> {
    let c = Cluster::single(&["--default-n", "1"])?;
    let api = Api::new(&c.node().url());
    api.put("/kv/gone", b"v").await?;
    let ctx = api.get("/kv/gone").await?.context().unwrap_or_default();
    let r = api
        .delete_with("/kv/gone", &[("x-causal-context", &ctx)])
        .await?;
    assert_eq!(r.status, 204);
    let r = api.get("/kv/gone").await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    assert!(
        r.context().is_some(),
        "a known deletion still sends its context"
    );

    // A delete without context is concurrent with the value: both show.
    api.put("/kv/both", b"v").await?;
    api.delete_with("/kv/both", &[]).await?;
    let r = api.get("/kv/both").await?;
    assert_eq!(r.status, 300);
    let deleted = r.json()["siblings"]
        .as_array()
        .map(|a| a.iter().filter(|s| s["deleted"] == true).count())
        .unwrap_or(0);
    assert_eq!(deleted, 1);
    Ok(())
}
