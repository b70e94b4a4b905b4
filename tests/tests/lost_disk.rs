//! Restarts and lost disks with a member down, on real `qkvd` processes,
//! as an operator would meet them (3 nodes, n=3):
//!
//! 1. n2 is killed; 60 writes go through n3 at `w=quorum` (on n1 and n3,
//!    hinted for n2);
//! 2. n3 loses its disk and restarts under the same id;
//! 3. n1 is paused (SIGSTOP: alive, answering nothing);
//! 4. n2 restarts.
//!
//! Only n1 now holds the 60 writes. A read through n2 must never answer
//! 404 for any of them: n2 must still know n1 (it remembers the ring it
//! last saw, though n1 cannot tell it anything), and n3 must not count as
//! a replica while it holds nothing (it is replacing its lost data). 503
//! is the right answer meanwhile. Once n1 resumes, n3 finishes restoring
//! its ranges and every write reads back through n2.
//!
//! Run with `--nocapture` for the figures.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use quorumkv_tests::cluster_ops::{
    body_text, key_path, member, put_all, random_value, start_cluster,
};
use quorumkv_tests::eventually;
use quorumkv_tests::http::Api;
use rand::SeedableRng;
use rand::rngs::StdRng;

const ARGS: [&str; 2] = ["--gossip-interval-ms", "200"];

/// What reading every item through `api` at `r=quorum` answered.
#[derive(Debug, Default)]
struct Reads {
    right: usize,
    missing: Vec<String>,
    wrong: Vec<String>,
    unavailable: usize,
}

async fn read_all(api: &Api, items: &[(Vec<u8>, Vec<u8>)]) -> Result<Reads> {
    let mut out = Reads::default();
    for (k, v) in items {
        let r = api.get(&key_path("default", k, "r=quorum")).await?;
        let key = String::from_utf8_lossy(k).into_owned();
        match r.status {
            200 if r.body == *v => out.right += 1,
            404 => out.missing.push(key),
            503 | 504 => out.unavailable += 1,
            s => out.wrong.push(format!("{key}: {s} {}", body_text(&r))),
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_reads_as_missing_after_a_lost_disk_while_a_member_is_down()
-> Result<()> {
    let mut c = start_cluster(3, &ARGS).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let mut rng = StdRng::seed_from_u64(rand::random());

    // 1. n2 dies; 60 writes through n3 at w=quorum.
    c.nodes[1].kill9()?;
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..60)
        .map(|i| (format!("k{i}").into_bytes(), random_value(&mut rng, 32)))
        .collect();
    put_all(&apis[2], &items, "w=quorum").await?;

    // 2. n3 loses its disk and restarts under the same id.
    c.nodes[2].kill9()?;
    let dir = c.nodes[2].data_dir.clone();
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    c.nodes[2].restart()?;

    // 3. n1 hangs; 4. n2 comes back.
    c.nodes[0].signal(libc::SIGSTOP)?;
    c.nodes[1].restart()?;
    let n2 = &apis[1];
    let listed = member(n2, "n1").await;
    println!(
        "n2 after its restart lists n1 as {}",
        listed.as_ref().map_or("nothing".into(), |m| format!(
            "{} {} with {} tokens",
            m["status"],
            m["state"],
            m["tokens"].as_array().map_or(0, Vec::len)
        ))
    );

    // While n1 is paused: never a 404, whatever n2 has heard by then.
    let began = Instant::now();
    let mut rounds = 0;
    let mut unavailable = 0;
    while began.elapsed() < Duration::from_secs(6) {
        let r = read_all(n2, &items).await?;
        rounds += 1;
        unavailable += r.unavailable;
        assert!(
            r.missing.is_empty() && r.wrong.is_empty(),
            "{} of 60 acknowledged writes read as missing through n2, {} wrong (round {rounds}): {:?} {:?}",
            r.missing.len(),
            r.wrong.len(),
            r.missing.first(),
            r.wrong.first()
        );
    }
    println!(
        "n1 paused: {rounds} rounds of 60 reads through n2, 0 missing, {unavailable} answered 503/504"
    );
    let m = member(n2, "n1").await.context("n2 must list n1")?;
    assert_eq!(m["status"], "down", "{m}");
    let m3 = member(n2, "n3").await.context("n2 must list n3")?;
    println!("n2 lists n3 as {m3}");

    // n1 resumes: n3 restores its ranges, and every write reads back.
    c.nodes[0].signal(libc::SIGCONT)?;
    let resumed = Instant::now();
    eventually(
        Duration::from_secs(90),
        "n3 done replacing, seen by n2",
        || {
            let n2 = n2.clone();
            async move {
                member(&n2, "n3")
                    .await
                    .is_some_and(|m| m["replacing"].is_null() && m["status"] == "up")
            }
        },
    )
    .await?;
    let readable = eventually(
        Duration::from_secs(60),
        "every write reads back through n2",
        || {
            let n2 = n2.clone();
            let items = items.clone();
            async move {
                read_all(&n2, &items)
                    .await
                    .is_ok_and(|r| r.right == items.len())
            }
        },
    )
    .await;
    if let Err(e) = readable {
        let r = read_all(n2, &items).await?;
        bail!("{e}; the last reads: {r:?}");
    }
    println!(
        "after n1 resumed: n3 replaced and all 60 writes read back through n2 within {} ms",
        resumed.elapsed().as_millis()
    );
    Ok(())
}

/// Two nodes lose their disks one after the other, the second before the
/// first has restored its ranges. Each must finish replacing (the other is
/// compared with, not waited for) and every write acknowledged by all
/// three replicas before reads back from the two replaced nodes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_lost_their_disks_one_after_the_other_both_finish_replacing() -> Result<()> {
    let mut c = start_cluster(3, &ARGS).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let mut rng = StdRng::seed_from_u64(rand::random());
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..60)
        .map(|i| (format!("k{i}").into_bytes(), random_value(&mut rng, 32)))
        .collect();
    put_all(&apis[0], &items, "w=all").await?;

    // n2, then n3, lose their disks; n3 restarts while n2 is still
    // announcing that it replaces.
    for i in [1, 2] {
        c.nodes[i].kill9()?;
        let dir = c.nodes[i].data_dir.clone();
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        c.nodes[i].restart()?;
    }
    let began = Instant::now();
    for (i, id) in [(1, "n2"), (2, "n3")] {
        // Seen by every node, as each of n2 and n3 coordinates the reads
        // below: one that still saw the other replacing would not count it.
        let replaced = eventually(
            Duration::from_secs(90),
            &format!("{id} done replacing, seen by every node"),
            || {
                let apis = apis.clone();
                async move {
                    for api in &apis {
                        let done = member(api, id)
                            .await
                            .is_some_and(|m| m["replacing"].is_null() && m["status"] == "up");
                        if !done {
                            return false;
                        }
                    }
                    true
                }
            },
        )
        .await;
        if let Err(e) = replaced {
            let log = c.nodes[i].log_text();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("replac") || l.contains("WARN"))
                .take(40)
                .collect();
            let members = apis[0].get("/cluster/members").await?;
            bail!(
                "{e}; {id}'s log about replacing:\n{}\nn1's members: {}\nthe other's log ends:\n{}",
                lines.join("\n"),
                body_text(&members),
                c.nodes[3 - i].log_tail()
            );
        }
    }
    println!(
        "n2 and n3 both replaced within {} ms",
        began.elapsed().as_millis()
    );

    // n1 down: n2 and n3 alone answer r=quorum, each with every write.
    c.nodes[0].kill9()?;
    for (id, api) in ["n2", "n3"].iter().zip(&apis[1..]) {
        let r = read_all(api, &items).await?;
        assert_eq!(
            r.right,
            items.len(),
            "read through {id} with n1 down: {r:?}"
        );
    }
    Ok(())
}
