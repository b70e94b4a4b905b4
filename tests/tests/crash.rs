//! Durability across a stop: with `--sync always`, every write that was
//! acknowledged with 204 is still there, byte for byte, after the process
//! is killed mid-stream and restarted from its data directory; and a
//! SIGTERM under load ends every task of the node before its store
//! closes, losing nothing it acknowledged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use quorumkv_tests::cluster_ops::{local, start_cluster};
use quorumkv_tests::http::Api;
use quorumkv_tests::{Cluster, eventually};

const WRITERS: usize = 16;

fn value_for(writer: usize, seq: u64) -> Vec<u8> {
    // Distinct, verifiable, and not all the same length.
    let mut v = format!("w{writer}-s{seq}-").into_bytes();
    v.extend((0..(seq % 97) as u8).map(|i| i.wrapping_mul(31).wrapping_add(writer as u8)));
    v
}

/// The writes a node acknowledged (204), by key.
type Acked = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// `WRITERS` tasks writing fresh keys `PREFIX-w-seq` through `api` (with
/// `query`) until a write fails — the node stopped or died under them —
/// and noting every acknowledged one in `acked`.
fn writers(
    api: &Api,
    prefix: &'static str,
    query: &'static str,
    acked: &Acked,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (api, acked) = (api.clone(), acked.clone());
            tokio::spawn(async move {
                for seq in 0u64.. {
                    let key = format!("{prefix}-{w}-{seq}");
                    let value = value_for(w, seq);
                    match api.put(&format!("/kv/{key}{query}"), &value).await {
                        Ok(r) if r.status == 204 => {
                            acked
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(key, value);
                        }
                        // Refused while draining, or the node is gone.
                        _ => break,
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() -> Result<()> {
    let mut c = Cluster::single(&["--default-n", "1", "--sync", "always"])?;
    let api = Api::new(&c.node().url());
    let acked: Acked = Arc::default();
    let tasks = writers(&api, "crash", "", &acked);
    // Kill once a good stream of writes has been acknowledged.
    let counter = acked.clone();
    eventually(Duration::from_secs(60), "2000 acknowledged writes", || {
        let n = counter.lock().map(|m| m.len()).unwrap_or(0);
        async move { n >= 2000 }
    })
    .await?;
    c.nodes[0].kill9()?;
    for t in tasks {
        let _ = t.await;
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));

    c.nodes[0].restart()?;
    let api = Api::new(&c.nodes[0].url());
    let mut verified = 0usize;
    let mut lost = Vec::new();
    for (key, value) in &acked {
        let r = api.get(&format!("/kv/{key}")).await?;
        if r.status == 200 && &r.body == value {
            verified += 1;
        } else {
            lost.push((key.clone(), r.status));
        }
    }
    println!(
        "crash test: acked {} / verified {} / lost {}",
        acked.len(),
        verified,
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "lost acknowledged writes: {:?}",
        &lost[..lost.len().min(10)]
    );
    assert_eq!(verified, acked.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_ends_every_task_first_and_keeps_every_acknowledged_write() -> Result<()>
{
    // Periodic sync: only an orderly close makes the last writes durable,
    // so a store closed under running tasks would show here.
    let mut c = start_cluster(3, &["--sync", "periodic"]).await?;
    let n1 = Api::new(&c.nodes[0].url());
    let acked: Acked = Arc::default();
    let writers = writers(&n1, "term", "?w=quorum", &acked);
    let counter = acked.clone();
    eventually(Duration::from_secs(60), "1000 acknowledged writes", || {
        let n = counter.lock().map(|m| m.len()).unwrap_or(0);
        async move { n >= 1000 }
    })
    .await?;
    let code = c.nodes[0].terminate(Duration::from_secs(30))?;
    for t in writers {
        let _ = t.await;
    }
    assert_eq!(code, Some(0), "{}", c.nodes[0].log_tail());
    let log = c.nodes[0].log_text();
    assert!(
        log.contains("every task of the node has ended"),
        "the node waited for its tasks before closing the store: {}",
        c.nodes[0].log_tail()
    );
    assert!(!log.contains("tasks still running"), "{log}");

    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    c.nodes[0].restart()?;
    let n1 = Api::new(&c.nodes[0].url());
    // n1 minted every write it acknowledged (N=3: it replicates every
    // key), storing it before answering: its own copy must hold each.
    let mut lost = Vec::new();
    for (key, value) in &acked {
        match local(&n1, "default", key.as_bytes()).await? {
            Some(l) if l.values.iter().any(|v| v == value) => {}
            other => lost.push((key.clone(), other.map(|l| l.values.len()))),
        }
    }
    println!(
        "sigterm test: {} acknowledged, {} missing on n1",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost: {:?}", &lost[..lost.len().min(10)]);
    Ok(())
}
