//! Cluster changes on real `qkvd` processes, under load: growing with
//! `POST /cluster/join` (`--join manual`) and with `--join auto`,
//! shrinking with `POST /cluster/decommission`, and `POST
//! /cluster/removenode` of a SIGKILLed node. While a change runs, a
//! background task writes unique keys at w=quorum and reads keys
//! acknowledged before each read began at r=quorum; afterwards no
//! acknowledged write is lost, no read missed, and — after cleanup —
//! every key is stored on exactly the N nodes `/cluster/locate` names
//! (checked with `/internal/local` on every node of the ring).
//!
//! Figures are printed; run with `--nocapture` to see them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use quorumkv_tests::cluster_ops::{
    body_text, concurrently, hints_pending, key_path, local, local_is, locate, members,
    start_cluster,
};
use quorumkv_tests::http::Api;
use quorumkv_tests::{Cluster, NodeSpec, eventually};
use serde_json::{Value, json};

const ARGS: [&str; 4] = ["--gossip-interval-ms", "200", "--vnodes", "8"];

fn args_with(extra: &[&str]) -> Vec<String> {
    ARGS.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// What the background load saw.
#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    write_errors: AtomicU64,
    reads: AtomicU64,
    read_misses: AtomicU64,
    read_errors: AtomicU64,
}

/// Writes unique keys and reads acknowledged ones through `apis` (round
/// robin) until `stop`.
async fn load(apis: Vec<Api>, tally: Arc<Tally>, stop: Arc<AtomicBool>, prefix: &'static str) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let api = &apis[i as usize % apis.len()];
        let key = format!("{prefix}-{i}").into_bytes();
        let value = format!("value-{i}").into_bytes();
        match api
            .put(&key_path("default", &key, "w=quorum"), &value)
            .await
        {
            Ok(r) if r.status == 204 => tally
                .acked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((key, value)),
            _ => {
                tally.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Read a key acknowledged before this read began.
        let earlier = {
            let acked = tally.acked.lock().unwrap_or_else(|p| p.into_inner());
            (!acked.is_empty()).then(|| acked[(i as usize * 7919) % acked.len()].clone())
        };
        if let Some((k, v)) = earlier {
            let api = &apis[(i as usize + 1) % apis.len()];
            tally.reads.fetch_add(1, Ordering::Relaxed);
            match api.get(&key_path("default", &k, "r=quorum")).await {
                Ok(r) if r.status == 200 && r.body == v => {}
                Ok(r) if r.status == 404 || r.status == 200 => {
                    tally.read_misses.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "read of {} missed: {} {}",
                        String::from_utf8_lossy(&k),
                        r.status,
                        body_text(&r)
                    );
                }
                _ => {
                    tally.read_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        i += 1;
    }
}

struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(apis: Vec<Api>, prefix: &'static str) -> Load {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(load(apis, tally.clone(), stop.clone(), prefix));
        Load { tally, stop, task }
    }

    fn acked(&self) -> usize {
        self.tally
            .acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    async fn wait_acked(&self, n: usize) -> Result<()> {
        eventually(
            Duration::from_secs(30),
            "the load to ack writes",
            || async { self.acked() >= n },
        )
        .await
    }

    async fn finish(self) -> Result<Arc<Tally>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?;
        Ok(self.tally)
    }
}

fn api(c: &Cluster, id: &str) -> Api {
    let n = c
        .nodes
        .iter()
        .find(|n| n.spec.id == id)
        .map(|n| n.url())
        .unwrap_or_default();
    Api::new(&n)
}

async fn post(api: &Api, path: &str, body: Value) -> Result<(u16, Value)> {
    let r = api
        .send("POST", path, &[], Some(body.to_string().into_bytes()))
        .await?;
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok((r.status, v))
}

/// Waits until every node in `observers` sees each `(id, state)`.
async fn wait_states(
    c: &Cluster,
    observers: &[&str],
    want: &[(&str, &str)],
    within: Duration,
) -> Result<()> {
    let apis: Vec<Api> = observers.iter().map(|o| api(c, o)).collect();
    let what = format!("{observers:?} to see {want:?}");
    eventually(within, &what, || {
        let apis = apis.clone();
        async move {
            for a in &apis {
                let Some(ms) = members(a).await else {
                    return false;
                };
                for (id, state) in want {
                    if !ms.iter().any(|m| m["id"] == *id && m["state"] == *state) {
                        return false;
                    }
                }
            }
            true
        }
    })
    .await
}

/// Waits until `GET /cluster/changes` on every observer shows no change in
/// flight.
async fn wait_no_change(c: &Cluster, observers: &[&str], within: Duration) -> Result<()> {
    let apis: Vec<Api> = observers.iter().map(|o| api(c, o)).collect();
    eventually(within, "no change in flight anywhere", || {
        let apis = apis.clone();
        async move {
            for a in &apis {
                let Ok(r) = a.get("/cluster/changes").await else {
                    return false;
                };
                let v = r.json();
                let busy = v["changes"]
                    .as_array()
                    .is_none_or(|cs| cs.iter().any(|c| c["state"] != "done"));
                if r.status != 200 || busy {
                    return false;
                }
            }
            true
        }
    })
    .await
}

/// Prints and returns (streams, keys, bytes) of the changes `id` ran.
async fn streamed(c: &Cluster, id: &str) -> Result<(usize, u64, u64)> {
    let r = api(c, id).get("/cluster/changes").await?;
    let v = r.json();
    let mut out = (0, 0, 0);
    for ch in v["changes"].as_array().cloned().unwrap_or_default() {
        for s in ch["streams"].as_array().cloned().unwrap_or_default() {
            if s["done"] != true {
                bail!("{id}: a stream is not done: {s}");
            }
            out.0 += 1;
            out.1 += s["keys"].as_u64().unwrap_or(0);
            out.2 += s["bytes"].as_u64().unwrap_or(0);
        }
    }
    println!(
        "{id} received {} streams: {} keys, {} bytes",
        out.0, out.1, out.2
    );
    Ok(out)
}

/// Runs cleanup on every node of `ring`; returns keys removed in all.
async fn cleanup_all(c: &Cluster, ring: &[&str]) -> Result<u64> {
    let mut removed = 0;
    for id in ring {
        let (status, v) = post(&api(c, id), "/cluster/cleanup", json!({})).await?;
        if status != 200 {
            bail!("cleanup on {id} answered {status}: {v}");
        }
        println!(
            "cleanup on {id}: {} keys, {} bytes removed",
            v["keys_removed"], v["bytes_removed"]
        );
        removed += v["keys_removed"].as_u64().unwrap_or(0);
    }
    Ok(removed)
}

/// Every acknowledged key reads back at r=quorum, and is held by exactly
/// the nodes `/cluster/locate` names among `ring`. Returns (lost,
/// misplaced).
async fn check_keys(c: &Cluster, ring: &[&str], tally: &Tally) -> Result<(usize, usize)> {
    let acked = tally
        .acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let apis: Vec<(String, Api)> = ring.iter().map(|id| (id.to_string(), api(c, id))).collect();
    let results = concurrently(acked, 16, move |(k, v)| {
        let apis = apis.clone();
        async move {
            let (_, first) = &apis[0];
            let read = first.get(&key_path("default", &k, "r=quorum")).await;
            let lost = !matches!(read, Ok(ref r) if r.status == 200 && r.body == v);
            let Ok(loc) = locate(first, "default", &k).await else {
                return (lost, true);
            };
            let want: BTreeSet<String> = loc.replicas.into_iter().collect();
            let mut have = BTreeSet::new();
            for (id, a) in &apis {
                if matches!(local(a, "default", &k).await, Ok(Some(l)) if l.values.contains(&v)) {
                    have.insert(id.clone());
                }
            }
            if have != want {
                eprintln!(
                    "{}: on {have:?}, replicas {want:?}",
                    String::from_utf8_lossy(&k)
                );
            }
            (lost, have != want)
        }
    })
    .await;
    let lost = results.iter().filter(|r| r.0).count();
    let misplaced = results.iter().filter(|r| r.1).count();
    Ok((lost, misplaced))
}

fn report(what: &str, t: &Tally, lost: usize, misplaced: usize, secs: f64) {
    println!(
        "{what}: acked {} (write errors {}), lost {lost}, reads {} missed {} (errors {}), misplaced after cleanup {misplaced}, change took {secs:.1} s",
        t.acked.lock().unwrap_or_else(|p| p.into_inner()).len(),
        t.write_errors.load(Ordering::Relaxed),
        t.reads.load(Ordering::Relaxed),
        t.read_misses.load(Ordering::Relaxed),
        t.read_errors.load(Ordering::Relaxed),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn growing_three_to_five_under_load_loses_nothing_and_places_every_key() -> Result<()> {
    let mut c = start_cluster(3, &ARGS).await?;
    let seed = vec![c.nodes[0].listen];
    let base: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let load = Load::start(base.clone(), "grow");
    load.wait_acked(300).await?;

    // n4 with --join manual: standby until POST /cluster/join.
    c.add(
        NodeSpec::new("n4").args(args_with(&["--join", "manual"])),
        seed.clone(),
    )?;
    wait_states(
        &c,
        &["n1", "n4"],
        &[("n4", "standby")],
        Duration::from_secs(20),
    )
    .await?;
    let (status, v) = post(&api(&c, "n1"), "/cluster/join", json!({})).await?;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let began = Instant::now();
    let (status, v) = post(&api(&c, "n4"), "/cluster/join", json!({})).await?;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["state"], "joining");
    // A second change while this one is in flight is refused.
    wait_states(&c, &["n1"], &[("n4", "joining")], Duration::from_secs(5)).await?;
    let (status, _) = post(&api(&c, "n1"), "/cluster/decommission", json!({})).await?;
    assert_eq!(status, 409, "decommission during a join");
    let all4 = ["n1", "n2", "n3", "n4"];
    wait_states(&c, &all4, &[("n4", "normal")], Duration::from_secs(40)).await?;
    wait_no_change(&c, &all4, Duration::from_secs(20)).await?;
    let join4 = began.elapsed().as_secs_f64();
    let (_, keys4, _) = streamed(&c, "n4").await?;
    assert!(keys4 > 0, "n4 streamed keys");

    // n5 with --join auto: joins by itself.
    let began = Instant::now();
    c.add(NodeSpec::new("n5").args(args_with(&[])), seed)?;
    let all5 = ["n1", "n2", "n3", "n4", "n5"];
    wait_states(&c, &all5, &[("n5", "normal")], Duration::from_secs(40)).await?;
    wait_no_change(&c, &all5, Duration::from_secs(20)).await?;
    let join5 = began.elapsed().as_secs_f64();
    let (_, keys5, _) = streamed(&c, "n5").await?;
    assert!(keys5 > 0, "n5 streamed keys");

    let tally = load.finish().await?;
    let removed = cleanup_all(&c, &all5).await?;
    assert!(removed > 0, "the nodes that gave ranges up dropped them");
    let (lost, misplaced) = check_keys(&c, &all5, &tally).await?;
    report("grow 3 -> 5", &tally, lost, misplaced, join4 + join5);
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_eq!(tally.read_misses.load(Ordering::Relaxed), 0, "reads missed");
    assert_eq!(misplaced, 0, "keys not on exactly their N replicas");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decommissioning_a_node_under_load_loses_nothing_and_places_every_key() -> Result<()> {
    let c = start_cluster(4, &ARGS).await?;
    let stay: Vec<Api> = c.nodes[..3].iter().map(|n| Api::new(&n.url())).collect();
    let load = Load::start(stay, "shrink");
    load.wait_acked(300).await?;
    let began = Instant::now();
    let (status, v) = post(&api(&c, "n4"), "/cluster/decommission", json!({})).await?;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["state"], "leaving");
    let ring = ["n1", "n2", "n3"];
    wait_states(
        &c,
        &["n1", "n2", "n3", "n4"],
        &[("n4", "left")],
        Duration::from_secs(40),
    )
    .await?;
    wait_no_change(&c, &ring, Duration::from_secs(20)).await?;
    let secs = began.elapsed().as_secs_f64();
    let mut received = 0;
    for id in ring {
        received += streamed(&c, id).await?.1;
    }
    assert!(received > 0, "the remaining nodes streamed n4's ranges");
    let tally = load.finish().await?;
    cleanup_all(&c, &ring).await?;
    let (lost, misplaced) = check_keys(&c, &ring, &tally).await?;
    report("decommission n4", &tally, lost, misplaced, secs);
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_eq!(tally.read_misses.load(Ordering::Relaxed), 0, "reads missed");
    assert_eq!(misplaced, 0, "keys not on exactly their N replicas");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_killed_node_brings_every_key_back_to_n_replicas() -> Result<()> {
    let mut c = start_cluster(4, &ARGS).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..400)
        .map(|i| (format!("rm-{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    let a = apis[0].clone();
    let failed: Vec<String> = concurrently(items.clone(), 16, move |(k, v)| {
        let a = a.clone();
        async move {
            match a.put(&key_path("default", &k, "w=all"), &v).await {
                Ok(r) if r.status == 204 => None,
                Ok(r) => Some(body_text(&r)),
                Err(e) => Some(e.to_string()),
            }
        }
    })
    .await
    .into_iter()
    .flatten()
    .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let tally = Tally::default();
    *tally.acked.lock().unwrap_or_else(|p| p.into_inner()) = items;

    let (status, v) = post(&apis[0], "/cluster/removenode", json!({"node": "n4"})).await?;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("conflict")),
        "n4 is up: {v}"
    );
    c.nodes[3].kill9()?;
    let ring = ["n1", "n2", "n3"];
    for a in &apis[..3] {
        eventually(Duration::from_secs(30), "n1-n3 to see n4 down", || async {
            members(a)
                .await
                .is_some_and(|ms| ms.iter().any(|m| m["id"] == "n4" && m["status"] == "down"))
        })
        .await?;
    }
    let began = Instant::now();
    let (status, v) = post(&apis[1], "/cluster/removenode", json!({"node": "n4"})).await?;
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["by"].as_str()),
        (Some("removing"), Some("n2"))
    );
    wait_states(&c, &ring, &[("n4", "left")], Duration::from_secs(40)).await?;
    wait_no_change(&c, &ring, Duration::from_secs(20)).await?;
    let secs = began.elapsed().as_secs_f64();
    let mut received = 0;
    for id in ring {
        received += streamed(&c, id).await?.1;
    }
    assert!(received > 0, "the survivors re-replicated n4's ranges");
    cleanup_all(&c, &ring).await?;
    let (lost, misplaced) = check_keys(&c, &ring, &tally).await?;
    report("removenode n4", &tally, lost, misplaced, secs);
    assert_eq!(lost, 0, "keys lost");
    assert_eq!(misplaced, 0, "keys not back on exactly N replicas");
    Ok(())
}

/// `qkv ring plan ARGS` then `qkv ring apply --yes --json` against `url`,
/// with the plan staged in `plan_file`; returns apply's summary. Runs the
/// CLI on a blocking thread so the load goes on meanwhile.
async fn plan_and_apply(url: String, plan_file: String, args: Vec<&'static str>) -> Result<Value> {
    tokio::task::spawn_blocking(move || -> Result<Value> {
        let qkv = |extra: &[&str]| -> Result<std::process::Output> {
            Ok(std::process::Command::new(quorumkv_tests::qkv_bin()?)
                .args(["--node", &url])
                .args(extra)
                .env_remove("QKV_PLAN_FILE")
                .output()?)
        };
        let mut plan = vec!["ring", "plan", "--plan-file", &plan_file];
        plan.extend(args.iter().copied());
        let out = qkv(&plan)?;
        if !out.status.success() {
            bail!("qkv {plan:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = qkv(&[
            "ring",
            "apply",
            "--yes",
            "--json",
            "--poll-ms",
            "200",
            "--plan-file",
            &plan_file,
        ])?;
        if !out.status.success() {
            bail!("qkv ring apply: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn growing_and_shrinking_through_qkv_ring_plan_and_apply_loses_nothing() -> Result<()> {
    let mut c = start_cluster(3, &ARGS).await?;
    let seed = vec![c.nodes[0].listen];
    let plan_file = c.dir.path().join("plan.json").display().to_string();
    let base: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let n1 = c.nodes[0].url();
    let load = Load::start(base.clone(), "cli");
    load.wait_acked(300).await?;

    // Grow 3 -> 5: two plan/apply rounds, each joining a standby node.
    let began = Instant::now();
    let mut ring = vec!["n1", "n2", "n3"];
    for id in ["n4", "n5"] {
        c.add(
            NodeSpec::new(id).args(args_with(&["--join", "manual"])),
            seed.clone(),
        )?;
        wait_states(&c, &["n1", id], &[(id, "standby")], Duration::from_secs(20)).await?;
        let s = plan_and_apply(n1.clone(), plan_file.clone(), vec!["--add", id]).await?;
        ring.push(id);
        wait_states(&c, &ring, &[(id, "normal")], Duration::from_secs(40)).await?;
        println!(
            "apply join {id}: {} streams, {} keys, {} bytes (plan estimate {}), {} ms",
            s["streams"], s["keys"], s["bytes"], s["estimate_bytes"], s["duration_ms"]
        );
        assert_eq!(
            (s["change"].as_str(), s["node"].as_str()),
            (Some("join"), Some(id))
        );
        assert!(
            s["keys"].as_u64().unwrap_or(0) > 0,
            "{id} streamed keys: {s}"
        );
    }
    wait_no_change(&c, &ring, Duration::from_secs(20)).await?;
    let grow = began.elapsed().as_secs_f64();
    cleanup_all(&c, &ring).await?;
    let acked_after_grow = load.acked();

    // Shrink 5 -> 3: two plan --remove / apply rounds (decommissions).
    let began = Instant::now();
    for id in ["n5", "n4"] {
        let s = plan_and_apply(n1.clone(), plan_file.clone(), vec!["--remove", id]).await?;
        ring.retain(|n| *n != id);
        wait_states(&c, &ring, &[(id, "left")], Duration::from_secs(40)).await?;
        println!(
            "apply decommission {id}: {} streams, {} keys, {} bytes (plan estimate {}), {} ms",
            s["streams"], s["keys"], s["bytes"], s["estimate_bytes"], s["duration_ms"]
        );
        assert_eq!(s["change"].as_str(), Some("decommission"), "{s}");
    }
    wait_no_change(&c, &ring, Duration::from_secs(20)).await?;
    let shrink = began.elapsed().as_secs_f64();
    let tally = load.finish().await?;
    assert!(tally.acked.lock().unwrap_or_else(|p| p.into_inner()).len() > acked_after_grow);
    cleanup_all(&c, &ring).await?;
    let (lost, misplaced) = check_keys(&c, &ring, &tally).await?;
    println!("qkv ring apply: grow 3 -> 5 took {grow:.1} s, shrink 5 -> 3 {shrink:.1} s");
    report(
        "qkv ring apply: grow then shrink",
        &tally,
        lost,
        misplaced,
        grow + shrink,
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_eq!(tally.read_misses.load(Ordering::Relaxed), 0, "reads missed");
    assert_eq!(misplaced, 0, "keys not on exactly their N replicas");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_node_killed_mid_stream_resumes_after_restart() -> Result<()> {
    let mut c = start_cluster(3, &ARGS).await?;
    let apis: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..600)
        .map(|i| (format!("resume-{i}").into_bytes(), vec![b'x'; 200]))
        .collect();
    let a = apis[0].clone();
    let failed = concurrently(items.clone(), 16, move |(k, v)| {
        let a = a.clone();
        async move {
            match a.put(&key_path("default", &k, "w=all"), &v).await {
                Ok(r) if r.status == 204 => None,
                _ => Some(()),
            }
        }
    })
    .await;
    assert!(failed.iter().all(Option::is_none), "writes failed");
    let tally = Tally::default();
    *tally.acked.lock().unwrap_or_else(|p| p.into_inner()) = items;

    // Slow streaming (~30 KiB/s against ~100 KiB to pull) so that the kill
    // lands mid-stream.
    let slow = args_with(&["--join", "manual", "--stream-bytes-per-sec", "30000"]);
    c.add(NodeSpec::new("n4").args(slow), vec![c.nodes[0].listen])?;
    wait_states(
        &c,
        &["n1", "n4"],
        &[("n4", "standby")],
        Duration::from_secs(20),
    )
    .await?;
    let (status, v) = post(&api(&c, "n4"), "/cluster/join", json!({})).await?;
    assert_eq!(status, 202, "{v}");
    let n4 = api(&c, "n4");
    let progress = |v: &Value| -> (u64, usize, usize) {
        let streams: Vec<Value> = v["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|ch| ch["streams"].as_array().cloned().unwrap_or_default())
            .collect();
        let keys = streams
            .iter()
            .map(|s| s["keys"].as_u64().unwrap_or(0))
            .sum();
        let done = streams.iter().filter(|s| s["done"] == true).count();
        (keys, done, streams.len())
    };
    eventually(
        Duration::from_secs(30),
        "n4 to stream some keys",
        || async {
            match n4.get("/cluster/changes").await {
                Ok(r) => progress(&r.json()).0 >= 100,
                Err(_) => false,
            }
        },
    )
    .await?;
    let before = progress(&n4.get("/cluster/changes").await?.json());
    println!(
        "n4 killed after {} keys, {} of {} streams done",
        before.0, before.1, before.2
    );
    assert!(before.1 < before.2, "still streaming when killed");
    // Mid-join, /cluster/locate shows n4 as a pending owner of some keys,
    // never as a current replica, and nothing else as pending.
    let n1 = api(&c, "n1");
    let mut pending_n4 = 0;
    for i in 0..60 {
        let v = n1.get(&format!("/cluster/locate/resume-{i}")).await?.json();
        let pending: Vec<&str> = v["pending"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(pending.iter().all(|p| *p == "n4"), "{v}");
        assert!(
            !v["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == "n4")),
            "{v}"
        );
        pending_n4 += usize::from(!pending.is_empty());
    }
    println!("mid-join: n4 pending for {pending_n4} of 60 keys");
    assert!(pending_n4 > 0, "n4 is a pending owner of some keys");
    c.nodes[3].kill9()?;
    c.nodes[3].restart()?;
    let all4 = ["n1", "n2", "n3", "n4"];
    wait_states(&c, &all4, &[("n4", "normal")], Duration::from_secs(60)).await?;
    wait_no_change(&c, &all4, Duration::from_secs(20)).await?;
    let after = progress(&api(&c, "n4").get("/cluster/changes").await?.json());
    println!(
        "after restart n4 streamed {} more keys over {} streams",
        after.0, after.2
    );
    assert!(after.0 > 0, "the restarted node streamed the rest");
    cleanup_all(&c, &all4).await?;
    let (lost, misplaced) = check_keys(&c, &all4, &tally).await?;
    report("join resumed after SIGKILL", &tally, lost, misplaced, 0.0);
    assert_eq!(lost, 0, "keys lost");
    assert_eq!(misplaced, 0, "keys not on exactly N replicas");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_drop_the_ranges_they_gave_up_on_their_own_after_the_grace() -> Result<()> {
    let args = args_with(&["--cleanup-grace-secs", "2"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = start_cluster(3, &args).await?;
    let seed = vec![c.nodes[0].listen];
    let base: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.url())).collect();
    let load = Load::start(base, "auto");
    load.wait_acked(300).await?;
    let tally = load.finish().await?;

    c.add(NodeSpec::new("n4").args(args.clone()), seed)?;
    let all4 = ["n1", "n2", "n3", "n4"];
    wait_states(&c, &all4, &[("n4", "normal")], Duration::from_secs(40)).await?;
    wait_no_change(&c, &all4, Duration::from_secs(20)).await?;
    let joined = Instant::now();
    // No POST /cluster/cleanup: the nodes that gave ranges to n4 must drop
    // them by themselves once the ring has been still for 2 s.
    eventually(
        Duration::from_secs(30),
        "every key on exactly its N replicas",
        || {
            let (c, tally) = (&c, &tally);
            async move { matches!(check_keys(c, &all4, tally).await, Ok((0, 0))) }
        },
    )
    .await?;
    let took = joined.elapsed().as_secs_f64();
    let (lost, misplaced) = check_keys(&c, &all4, &tally).await?;
    println!(
        "automatic cleanup: {} keys on exactly their N replicas {took:.1} s after n4 turned normal (grace 2 s); lost {lost}, misplaced {misplaced}",
        tally.acked.lock().unwrap_or_else(|p| p.into_inner()).len(),
    );
    assert_eq!((lost, misplaced), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaving_node_hands_its_hints_for_a_down_node_to_live_ones() -> Result<()> {
    // Five nodes with one chosen token each, so that n4 gains nothing when
    // n5 leaves (ranges of n5 go to n1, n2, n3): n4 can be down during
    // the decommission without stalling it, and n5's hints for n4 are
    // what must survive n5's departure.
    let step = u64::MAX / 5;
    let specs = (1..=5)
        .map(|i| NodeSpec::new(&format!("n{i}")).args(args_with(&["--join", "manual"])))
        .collect();
    let mut c = Cluster::start(specs)?;
    for i in 1..=5u64 {
        let id = format!("n{i}");
        wait_states(
            &c,
            &["n1"],
            &[(id.as_str(), "standby")],
            Duration::from_secs(20),
        )
        .await?;
        let (status, v) = post(
            &api(&c, &id),
            "/cluster/join",
            json!({"tokens": [i * step]}),
        )
        .await?;
        assert_eq!(status, 202, "{v}");
        wait_states(
            &c,
            &["n1", id.as_str()],
            &[(id.as_str(), "normal")],
            Duration::from_secs(30),
        )
        .await?;
        // Every node, standby ones too, must know the join is over before
        // the next one is asked (one change at a time).
        wait_no_change(&c, &["n1", "n2", "n3", "n4", "n5"], Duration::from_secs(20)).await?;
    }
    let all5 = ["n1", "n2", "n3", "n4", "n5"];
    wait_no_change(&c, &all5, Duration::from_secs(20)).await?;

    c.nodes[3].kill9()?;
    let n5 = api(&c, "n5");
    eventually(Duration::from_secs(30), "n5 to see n4 down", || async {
        members(&n5)
            .await
            .is_some_and(|ms| ms.iter().any(|m| m["id"] == "n4" && m["status"] == "down"))
    })
    .await?;
    // Keys whose replicas are n5 and n4 (and a third), written through n5:
    // n5 coordinates them and hints n4.
    let mut written = Vec::new();
    let mut i = 0;
    while written.len() < 40 {
        let key = format!("handoff-{i}").into_bytes();
        i += 1;
        let loc = locate(&n5, "default", &key).await?;
        if !(loc.replicas.iter().any(|r| r == "n4") && loc.replicas.iter().any(|r| r == "n5")) {
            continue;
        }
        let value = format!("v{i}").into_bytes();
        let r = n5
            .put(&key_path("default", &key, "w=quorum"), &value)
            .await?;
        assert_eq!(r.status, 204, "{}", body_text(&r));
        written.push((key, value));
    }
    eventually(
        Duration::from_secs(20),
        "n5 to hold 40 hints for n4",
        || async { hints_pending(&n5, "n4").await.is_some_and(|h| h >= 40) },
    )
    .await?;

    let (status, v) = post(&n5, "/cluster/decommission", json!({})).await?;
    assert_eq!(status, 202, "{v}");
    let ring = ["n1", "n2", "n3"];
    wait_states(&c, &ring, &[("n5", "left")], Duration::from_secs(40)).await?;
    let left_on_n5 = hints_pending(&n5, "n4").await.unwrap_or(u64::MAX);
    let mut inherited = 0;
    for id in ring {
        inherited += hints_pending(&api(&c, id), "n4").await.unwrap_or(0);
    }
    println!("decommission of n5: hints for n4 left on n5 {left_on_n5}, on n1..n3 {inherited}");
    assert_eq!(left_on_n5, 0, "n5 handed every hint for n4 over");
    assert!(inherited >= 40, "the live nodes hold the hints for n4");
    c.nodes[4].terminate(Duration::from_secs(10))?;

    // n4 returns: without any read, the inherited hints bring it every key.
    c.nodes[3].restart()?;
    let n4 = api(&c, "n4");
    let back = Instant::now();
    eventually(
        Duration::from_secs(60),
        "n4 to hold every key written while it was down",
        || {
            let (n4, written) = (&n4, &written);
            async move {
                for (k, v) in written {
                    if !local_is(n4, "default", k, v).await {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await?;
    println!(
        "n4 back: all {} keys written while it was down arrived by inherited hints in {:.1} s",
        written.len(),
        back.elapsed().as_secs_f64()
    );
    Ok(())
}
