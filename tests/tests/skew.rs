//! Clock skew on real `qkvd` processes (`--fault-injection`): with one
//! node's wall clock 30 s ahead and another's 30 s behind, writes and
//! reads at r=2,w=2 and at r=3,w=3 (so that both skewed nodes take part)
//! through every node all succeed. Internode requests carry no wall-clock
//! deadline: a node judges a request's lateness on its monotonic clock
//! (docs/ARCHITECTURE.md, "Internode transport"), so a skewed clock can
//! neither make it drop its peers' requests nor make its own be dropped.

use anyhow::Result;
use quorumkv_tests::cluster_ops::{body_text, faults, key_path, metric, start_cluster};
use quorumkv_tests::http::Api;
use serde_json::json;

/// How far the skewed clocks are off, as in `qkv exp faults --skew-ms`.
const SKEW_MS: i64 = 30_000;
/// Keys written and read through each node at each level.
const KEYS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_and_reads_through_every_node_succeed_while_two_clocks_are_30_s_off()
-> Result<()> {
    let c = start_cluster(3, &["--fault-injection"]).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    for (api, offset) in apis.iter().zip([SKEW_MS, -SKEW_MS]) {
        faults(api, "PATCH", json!({"clock": {"offset_ms": offset}})).await?;
        let shown = metric(api, "qkv_fault_clock_offset_ms", &[]).await?;
        assert!(
            (shown - offset as f64).abs() < 1_000.0,
            "{}: clock offset {shown} ms, set {offset}",
            api.base
        );
    }
    // Every key has all three nodes as replicas (N=3 of 3), so w=3 and
    // r=3 need the node 30 s ahead and the one 30 s behind to answer, and
    // w=2 and r=2 through either skewed node need the other or n3.
    let mut failures = Vec::new();
    let mut done = 0;
    for (w, r) in [(2, 2), (3, 3)] {
        for (i, api) in apis.iter().enumerate() {
            let through = i + 1;
            for k in 0..KEYS {
                let key = format!("skew-w{w}-n{through}-{k}").into_bytes();
                let value = format!("written through n{through} at w={w}").into_bytes();
                let put = api
                    .put(
                        &key_path("default", &key, &format!("w={w}&timeout_ms=2000")),
                        &value,
                    )
                    .await?;
                if put.status != 204 {
                    failures.push(format!(
                        "PUT w={w} through n{through}: {} {}",
                        put.status,
                        body_text(&put)
                    ));
                    continue;
                }
                // Read through the next node, so that a value written
                // through one node is read through another.
                let reader = &apis[(i + 1) % apis.len()];
                let get = reader
                    .get(&key_path(
                        "default",
                        &key,
                        &format!("r={r}&timeout_ms=2000"),
                    ))
                    .await?;
                if (get.status, &get.body) != (200, &value) {
                    failures.push(format!(
                        "GET r={r} through {} of a key written through n{through}: {} {}",
                        reader.base,
                        get.status,
                        body_text(&get)
                    ));
                    continue;
                }
                done += 1;
            }
        }
    }
    let total = 2 * apis.len() * KEYS;
    println!(
        "n1 +{SKEW_MS} ms, n2 -{SKEW_MS} ms: {done}/{total} write+read pairs succeeded at w=2,r=2 and w=3,r=3 through every node"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} failed while clocks were skewed; first: {:?}",
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>()
    );
    Ok(())
}
