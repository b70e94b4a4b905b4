//! One fault experiment, from the buckets to the verdict: create a bucket
//! per level, locate the keys' replicas, run the clients and the nemesis
//! for the duration, heal everything, wait until the replicas agree, read
//! every key at `r=all` (the final reads), then judge the history and
//! write the outputs (`output.rs`).
//!
//! **Convergence.** After the last heal the runner asks every replica of
//! every key what it stores (`/internal/local`, no other replica asked)
//! every 250 ms; a bucket has converged when, for each of its keys, all
//! replicas hold the same live values and the same tombstone flag. Its
//! convergence time is the time from the end of the heal to the first
//! poll that found it so. Nothing is repaired by the runner: hinted
//! handoff, read repair (there are no reads meanwhile) and the nodes'
//! own anti-entropy passes do the work.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::availability::{NemesisValue, Phase, Reach, availability, intervals};
use super::inject::Injector;
use super::level::LevelSpec;
use super::nemesis::{FaultKind, Plan, Window, schedule};
use super::record::Recorder;
use super::results::{LevelResult, results};
use super::workload::{ClientSpec, Workload, assign, read_value, recorded, run_client};
use crate::Client;
use crate::exp::check::{CheckOptions, Verdict, check};
use crate::exp::history::{Event, EventType, Func, History, Process};
use crate::types::{Consistency, ReadOptions};

/// Everything a run needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    pub levels: Vec<LevelSpec>,
    pub workloads: Vec<Workload>,
    pub clients: usize,
    /// Replicas per key of every level's bucket.
    pub n: u32,
    pub duration: Duration,
    pub kinds: Vec<FaultKind>,
    pub seed: u64,
    /// Hot keys per register (and lww) level.
    pub keys: usize,
    /// Pause between a client's iterations.
    pub think: Duration,
    /// How long a fault's effect is taken to outlast it (availability).
    pub settle: Duration,
    /// The longest wait for convergence.
    pub converge_timeout: Duration,
    pub fault_len: (Duration, Duration),
    pub quiet_len: (Duration, Duration),
    pub skew_ms: i64,
    /// Per-request HTTP timeout of the clients.
    pub request_timeout: Duration,
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

/// The cluster under test: its nodes (id, base URL), and the directory of
/// its `cluster.json` when it is a local one (process faults).
#[derive(Clone, Debug)]
pub struct Target {
    pub nodes: Vec<(String, String)>,
    pub local_dir: Option<PathBuf>,
}

/// What a run produced (also `results.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub command: String,
    pub seed: u64,
    pub nodes: Vec<String>,
    pub n: u32,
    pub clients: usize,
    pub duration_secs: f64,
    pub workloads: Vec<Workload>,
    pub nemesis: Vec<FaultKind>,
    pub settle_secs: f64,
    /// The planned schedule.
    pub schedule: Vec<Scheduled>,
    /// Errors carrying faults out (each also in the history).
    pub nemesis_errors: Vec<String>,
    /// Seconds after the run began at which the last heal ended.
    pub healed_at_secs: f64,
    pub levels: Vec<LevelResult>,
    /// Strict anomalies over every bucket, as `qkv exp check` counts them.
    pub strict_anomalies: usize,
    #[serde(skip)]
    pub verdict: Option<Verdict>,
}

/// A planned fault, in seconds after the run began.
#[derive(Clone, Debug, Serialize)]
pub struct Scheduled {
    pub start_secs: f64,
    pub end_secs: f64,
    pub fault: super::nemesis::Fault,
}

fn nemesis_event(kind: &str, value: Value) -> Event {
    let mut e = Event::new(
        Process::Named("nemesis".into()),
        EventType::Info,
        Func::Other(kind.into()),
    );
    e.value = Some(value);
    e
}

/// Sleeps until `at` after `start`.
async fn until(start: Instant, at: Duration) {
    let now = start.elapsed();
    if at > now {
        tokio::time::sleep(at - now).await;
    }
}

/// Carries `windows` out, recording each start (before it is applied) and
/// end (after); returns the errors.
async fn nemesis(
    windows: Vec<Window>,
    inj: Arc<Injector>,
    rec: Recorder,
    start: Instant,
) -> Vec<String> {
    let mut errors = Vec::new();
    for w in windows {
        until(start, w.start).await;
        let kind = w.fault.kind().name();
        let mut v = NemesisValue {
            phase: Phase::Start,
            fault: w.fault.clone(),
            error: None,
        };
        rec.record(nemesis_event(kind, json!(v)));
        if let Err(e) = inj.start(&w.fault).await {
            errors.push(format!("{}: {e}", w.fault.describe()));
            v.error = Some(e);
            rec.record(nemesis_event(kind, json!({"failed": v})));
        }
        until(start, w.end).await;
        v.phase = Phase::End;
        v.error = inj.end(&w.fault).await.err();
        if let Some(e) = &v.error {
            errors.push(format!("end of {}: {e}", w.fault.describe()));
        }
        rec.record(nemesis_event(kind, json!(v)));
    }
    errors
}

fn client_for(url: &str, timeout: Duration) -> Result<Client, String> {
    Client::builder(vec![url.to_string()])
        .timeout(timeout)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .map_err(|e| e.to_string())
}

/// Creates each level's bucket and waits until every node reports its
/// properties.
async fn create_buckets(cfg: &Config, nodes: &[(String, Client)]) -> Result<(), String> {
    let first = &nodes[0].1;
    for l in &cfg.levels {
        first
            .bucket_set(&l.bucket(), &l.props(cfg.n))
            .await
            .map_err(|e| format!("cannot create bucket {}: {e}", l.bucket()))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (id, c) in nodes {
        for l in &cfg.levels {
            loop {
                let ok = match c.bucket_get(&l.bucket()).await {
                    Ok(p) => {
                        p.n == Some(cfg.n)
                            && p.sloppy_quorum == l.props(cfg.n).sloppy_quorum
                            && p.conflicts == l.props(cfg.n).conflicts
                    }
                    Err(_) => false,
                };
                if ok {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{id} did not learn bucket {} within 30 s",
                        l.bucket()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}

/// The key's replicas, as the first node computes them.
async fn locate(c: &Client, bucket: &str, key: &str) -> Result<Vec<String>, String> {
    let v = c
        .locate(bucket, key.as_bytes())
        .await
        .map_err(|e| format!("cannot locate {bucket}/{key}: {e}"))?;
    v.get("replicas")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .ok_or_else(|| format!("locate {bucket}/{key}: no replicas in {v}"))
}

/// What one replica stores for a key, for comparison: its live values and
/// whether a tombstone is among its versions (`None`: nothing).
type Stored = Option<(BTreeSet<String>, bool)>;

async fn stored(c: &Client, bucket: &str, key: &str) -> Result<Stored, String> {
    let v = c
        .local_inspect(bucket, key.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    Ok(v.map(|v| {
        let values = v
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.get("value_base64").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        let tomb = v.get("tombstone").and_then(Value::as_bool).unwrap_or(false);
        (values, tomb)
    }))
}

/// Polls every replica of every key until each bucket's replicas agree or
/// `timeout` passes; the seconds each bucket took (`None`: not within).
async fn converge(
    keys: &BTreeMap<(String, String), Vec<String>>,
    nodes: &BTreeMap<String, Client>,
    timeout: Duration,
) -> BTreeMap<String, Option<f64>> {
    let start = Instant::now();
    let mut out: BTreeMap<String, Option<f64>> =
        keys.keys().map(|(b, _)| (b.clone(), None)).collect();
    loop {
        let mut pending: BTreeSet<String> = BTreeSet::new();
        for ((bucket, key), replicas) in keys {
            if out.get(bucket).is_some_and(Option::is_some) || pending.contains(bucket) {
                continue;
            }
            let mut seen: Option<Stored> = None;
            let mut agree = true;
            for r in replicas {
                let Some(c) = nodes.get(r) else {
                    agree = false;
                    break;
                };
                match stored(c, bucket, key).await {
                    Ok(s) => match &seen {
                        None => seen = Some(s),
                        Some(first) if *first == s => {}
                        Some(_) => {
                            agree = false;
                            break;
                        }
                    },
                    Err(_) => {
                        agree = false;
                        break;
                    }
                }
            }
            if !agree {
                pending.insert(bucket.clone());
            }
        }
        let t = start.elapsed().as_secs_f64();
        for (b, v) in out.iter_mut() {
            if v.is_none() && !pending.contains(b) {
                *v = Some(t);
            }
        }
        if pending.is_empty() || start.elapsed() >= timeout {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads every key at `r=all`, marked final, through the nodes in turn;
/// a key whose read fails is tried again, up to five times.
async fn final_reads(
    keys: &BTreeMap<(String, String), Vec<String>>,
    nodes: &[(String, Client)],
    rec: &Recorder,
    process: u64,
) {
    let opts = ReadOptions {
        r: Some(Consistency::All),
        timeout_ms: None,
    };
    for (i, (bucket, key)) in keys.keys().enumerate() {
        for attempt in 0..5 {
            let (id, c) = &nodes[(i + attempt) % nodes.len()];
            let mut e = Event::new(Process::Client(process), EventType::Invoke, Func::Read);
            e.key = Some(key.clone());
            e.bucket = Some(bucket.clone());
            e.node = Some(id.clone());
            e.r = Some(recorded(Consistency::All));
            e.final_read = true;
            rec.record(e.clone());
            match c.get(bucket, key.as_bytes(), &opts).await {
                Ok(f) => {
                    e.kind = EventType::Ok;
                    e.value = Some(read_value(&f));
                    e.context = f.context().map(|c| c.0.clone());
                    rec.record(e);
                    break;
                }
                Err(err) => {
                    e.kind = super::workload::outcome(&err);
                    rec.record(e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Runs the experiment against `target`, writing `cfg.out/history.jsonl`.
/// The judging and the other outputs are [`judge`]'s.
pub async fn run(cfg: &Config, target: &Target) -> Result<Outcome, String> {
    for l in &cfg.levels {
        l.check(cfg.n).map_err(|e| e.to_string())?;
    }
    if target.nodes.is_empty() {
        return Err("no node to run against".into());
    }
    if target.local_dir.is_none()
        && let Some(k) = cfg.kinds.iter().find(|k| k.needs_processes())
    {
        return Err(format!(
            "--nemesis {k} needs a local cluster: start one with --nodes K, or give the --dir of a `qkv local` cluster"
        ));
    }
    let assignments = assign(cfg.clients, &cfg.levels, &cfg.workloads)?;
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| format!("cannot create {}: {e}", cfg.out.display()))?;
    let nodes: Vec<(String, Client)> = target
        .nodes
        .iter()
        .map(|(id, url)| Ok((id.clone(), client_for(url, cfg.request_timeout)?)))
        .collect::<Result<_, String>>()?;
    create_buckets(cfg, &nodes).await?;

    // The keys each client works on, and where they live.
    let mut specs = Vec::new();
    let mut keys: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let shared = Arc::new(nodes.clone());
    for a in &assignments {
        let level = &cfg.levels[a.level];
        let bucket = level.bucket();
        let ks: Vec<String> = match a.workload {
            Workload::Set => vec![format!("set-{}", a.process)],
            _ => (0..cfg.keys).map(|i| format!("reg-{i}")).collect(),
        };
        for k in &ks {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                keys.entry((bucket.clone(), k.clone()))
            {
                slot.insert(locate(&nodes[0].1, &bucket, k).await?);
            }
        }
        specs.push(ClientSpec {
            process: a.process,
            workload: a.workload,
            level: level.clone(),
            bucket,
            keys: ks,
            nodes: shared.clone(),
            seed: cfg.seed.wrapping_mul(1_000_003).wrapping_add(a.process),
            think: cfg.think,
        });
    }

    let ids: Vec<String> = target.nodes.iter().map(|(id, _)| id.clone()).collect();
    let mut plan = Plan::new(cfg.kinds.clone(), ids.clone(), cfg.duration, cfg.seed);
    plan.fault_len = cfg.fault_len;
    plan.quiet_len = cfg.quiet_len;
    plan.skew_ms = cfg.skew_ms;
    let windows = schedule(&plan);
    let inj = Arc::new(Injector::new(
        target.nodes.clone(),
        target.local_dir.as_deref(),
    )?);

    let start = Instant::now();
    let rec = Recorder::create(&cfg.out.join("history.jsonl"), start).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = specs
        .into_iter()
        .map(|s| tokio::spawn(run_client(s, rec.clone(), stop.clone())))
        .collect();
    let nem = tokio::spawn(nemesis(windows.clone(), inj.clone(), rec.clone(), start));
    until(start, cfg.duration).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let mut nemesis_errors = nem.await.unwrap_or_else(|e| vec![e.to_string()]);

    // Heal everything, then wait for the replicas to agree.
    rec.record(nemesis_event("heal", json!({"heal": "start"})));
    if let Err(e) = inj.heal_all().await {
        nemesis_errors.push(format!("heal: {e}"));
    }
    rec.record(nemesis_event("heal", json!({"heal": "end"})));
    let healed_at = start.elapsed();
    let by_id: BTreeMap<String, Client> = nodes.iter().cloned().collect();
    let convergence = converge(&keys, &by_id, cfg.converge_timeout).await;
    final_reads(&keys, &nodes, &rec, 1_000_000).await;
    rec.finish()?;

    let history = History::read_file(&cfg.out.join("history.jsonl")).map_err(|e| e.to_string())?;
    let mut out = judge(cfg, &history, &keys, &convergence);
    out.nodes = ids;
    out.schedule = windows
        .iter()
        .map(|w| Scheduled {
            start_secs: w.start.as_secs_f64(),
            end_secs: w.end.as_secs_f64(),
            fault: w.fault.clone(),
        })
        .collect();
    out.nemesis_errors = nemesis_errors;
    out.healed_at_secs = healed_at.as_secs_f64();
    Ok(out)
}

/// Judges a recorded history: the checker's verdict (as `qkv exp check`
/// gives it), availability per level, and the convergence figures.
pub fn judge(
    cfg: &Config,
    history: &History,
    keys: &BTreeMap<(String, String), Vec<String>>,
    convergence: &BTreeMap<String, Option<f64>>,
) -> Outcome {
    let verdict = check(history, &CheckOptions { n: cfg.n });
    let iv = intervals(&history.nemesis);
    let reach = Reach::new(
        &iv,
        u64::try_from(cfg.settle.as_nanos()).unwrap_or(u64::MAX),
    );
    let avail = availability(&history.ops, &reach, keys, cfg.n);
    let levels: Vec<(String, String)> = cfg
        .levels
        .iter()
        .map(|l| (l.to_string(), l.bucket()))
        .collect();
    Outcome {
        command: cfg.command.clone(),
        seed: cfg.seed,
        nodes: Vec::new(),
        n: cfg.n,
        clients: cfg.clients,
        duration_secs: cfg.duration.as_secs_f64(),
        workloads: cfg.workloads.clone(),
        nemesis: cfg.kinds.clone(),
        settle_secs: cfg.settle.as_secs_f64(),
        schedule: Vec::new(),
        nemesis_errors: Vec::new(),
        healed_at_secs: 0.0,
        levels: results(&levels, &verdict, &avail, convergence),
        strict_anomalies: verdict.strict_anomalies,
        verdict: Some(verdict),
    }
}
