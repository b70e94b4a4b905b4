//! What spreads between nodes without a client asking each of them:
//! bucket properties set on one node reach the others, and a `w=any` write
//! whose only replica is dead (before the failure detector says so) is kept
//! by the coordinator with a hint and reaches the replica when it returns.
//! Real `qkvd` processes on loopback.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use quorumkv_tests::cluster_ops::{
    body_text, key_path, local_is, locate, set_bucket, set_bucket_everywhere, start_cluster,
};
use quorumkv_tests::eventually;
use quorumkv_tests::http::Api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_properties_set_on_one_node_reach_every_node() -> Result<()> {
    let c = start_cluster(3, &["--gossip-interval-ms", "200"]).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    set_bucket(
        &apis[0],
        "spread",
        json!({"n": 2, "conflicts": "lww", "read_repair": "async"}),
    )
    .await?;
    let began = Instant::now();
    for api in &apis[1..] {
        eventually(
            Duration::from_secs(10),
            "the bucket reaches every node",
            || async move {
                match api.get("/buckets/spread").await {
                    Ok(r) if r.status == 200 => {
                        let v = r.json();
                        v["n"] == 2 && v["conflicts"] == "lww" && v["read_repair"] == "async"
                    }
                    _ => false,
                }
            },
        )
        .await?;
    }
    println!(
        "bucket properties on all 3 nodes {} ms after the PUT",
        began.elapsed().as_millis()
    );
    // A later change through another node wins everywhere.
    set_bucket(&apis[2], "spread", json!({"read_repair": "off"})).await?;
    for api in &apis {
        eventually(
            Duration::from_secs(10),
            "the newer setting wins",
            || async move {
                api.get("/buckets/spread")
                    .await
                    .is_ok_and(|r| r.json()["read_repair"] == "off" && r.json()["n"] == 2)
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w_any_keeps_a_write_whose_only_replica_is_dead_and_hands_it_over() -> Result<()> {
    // Slow failure detection: the dead replica is still "up" when written.
    let mut c = start_cluster(3, &[]).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    set_bucket_everywhere(&c, "one", json!({"n": 1})).await?;
    // A key whose single replica is n3; write it through n1.
    let mut key = None;
    for i in 0..1_000 {
        let k = format!("any-{i}").into_bytes();
        if locate(&apis[0], "one", &k).await?.replicas == ["n3"] {
            key = Some(k);
            break;
        }
    }
    let Some(key) = key else {
        bail!("no key of n3 among 1 000");
    };
    c.nodes[2].kill9()?;

    let strict = apis[0]
        .put(&key_path("one", &key, "w=one"), b"lost")
        .await?;
    println!(
        "w=one with the replica dead: {} {}",
        strict.status,
        body_text(&strict)
    );
    assert!(
        strict.status == 503 || strict.status == 504,
        "w=one cannot succeed: {}",
        strict.status
    );
    let any = apis[0]
        .put(&key_path("one", &key, "w=any"), b"kept")
        .await?;
    println!("w=any with the replica dead: {}", any.status);
    assert_eq!(any.status, 204, "{}", body_text(&any));

    c.nodes[2].restart()?;
    c.nodes[2].wait_healthy(Duration::from_secs(30))?;
    let began = Instant::now();
    let n3 = apis[2].clone();
    let k = key.clone();
    eventually(
        Duration::from_secs(60),
        "the hinted write reaches n3",
        || {
            let (n3, k) = (n3.clone(), k.clone());
            async move { local_is(&n3, "one", &k, b"kept").await }
        },
    )
    .await?;
    println!(
        "w=any write on n3 {} ms after it was healthy again",
        began.elapsed().as_millis()
    );
    let r = apis[1].get(&key_path("one", &key, "r=one")).await?;
    assert_eq!((r.status, r.body.as_ref()), (200, &b"kept"[..]));
    Ok(())
}
