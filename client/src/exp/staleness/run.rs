//! The I/O shell of `qkv exp staleness`: finds the cluster's nodes, gives
//! each the injected delays (`PUT /internal/faults` with `local: true`, so
//! that all N replicas follow the model), makes one bucket per (R, W)
//! with the asked `read_repair` and `speculative_retry`, then per
//! configuration writes versions of `concurrency` keys at once and reads
//! each write once per asked `t` after its acknowledgement, through a
//! node chosen as [`ReadCoordinator`] says. The faults are cleared at the
//! end, whether the run succeeded or not ([`clear_faults`] is also what a
//! caller interrupted by Ctrl-C runs).
//!
//! The choices of nodes are seeded; the delays the nodes draw are seeded
//! through their fault settings (`seed`), but the interleaving of real
//! requests is not, so two runs give close, not equal, figures.

use std::time::Duration;

use futures::future::join_all;
use quorumkv_faults::{LinkFaults, Settings};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::{
    Config, ConfigError, Costs, Failures, PairRun, Sample, costs, decode, delay_totals, encode,
    overshoot,
};
use crate::client::Client;
use crate::error::Error;
use crate::exp::predict::ReadCoordinator;
use crate::types::{
    BucketPropsUpdate, Consistency, Context, Fetched, ReadOptions, ReadRepair, WriteOptions,
};

/// What stops a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration does not fit the cluster.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cluster could not be asked.
    #[error("{what}: {source}")]
    Cluster {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: Error,
    },
    /// A node without `--fault-injection`.
    #[error(
        "node {0} does not inject faults: start every node with --fault-injection (qkv local up --nodes 3 -- --fault-injection)"
    )]
    NoFaultInjection(String),
    /// A member without an HTTP address.
    #[error("member {0} lists no HTTP address")]
    NoAddress(String),
    /// A bad `read_repair`.
    #[error("read repair {0:?}: give off, async or blocking")]
    ReadRepair(String),
    /// The slow replica asked for is no member.
    #[error("--slow {0}: no such member (members: {1})")]
    NoSuchNode(String, String),
}

/// One node of the cluster, with a client that talks to it alone.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its id.
    pub id: String,
    /// Its base URL.
    pub url: String,
    /// A client of this node only.
    pub client: Client,
}

fn cluster(what: impl Into<String>) -> impl FnOnce(Error) -> RunError {
    let what = what.into();
    move |source| RunError::Cluster { what, source }
}

/// The cluster's members as `client`'s first reachable node lists them,
/// each with a client of its own built by `make`.
pub async fn discover(
    client: &Client,
    make: impl Fn(&str) -> Result<Client, Error>,
) -> Result<Vec<Node>, RunError> {
    let mut members = client
        .members()
        .await
        .map_err(cluster("listing the cluster's members"))?;
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let mut nodes = Vec::new();
    for m in members.into_iter().filter(|m| m.state != "left") {
        if m.http_addr.is_empty() {
            return Err(RunError::NoAddress(m.id));
        }
        let url = if m.http_addr.contains("://") {
            m.http_addr.clone()
        } else {
            format!("http://{}", m.http_addr)
        };
        let client = make(&url).map_err(cluster(format!("a client for {url}")))?;
        nodes.push(Node {
            id: m.id,
            url,
            client,
        });
    }
    Ok(nodes)
}

/// Fails unless every node runs with `--fault-injection`.
pub async fn check_fault_injection(nodes: &[Node]) -> Result<(), RunError> {
    for node in nodes {
        match node.client.faults().await {
            Ok(_) => {}
            Err(Error::Api { status: 404, .. }) => {
                return Err(RunError::NoFaultInjection(node.id.clone()));
            }
            Err(e) => return Err(cluster(format!("reading {}'s faults", node.id))(e)),
        }
    }
    Ok(())
}

/// Every node's measured injected delays, summed.
async fn delay_totals_of(nodes: &[Node]) -> Result<[(f64, u64); 4], RunError> {
    let mut total = [(0.0, 0); 4];
    for node in nodes {
        let text = node
            .client
            .metrics()
            .await
            .map_err(cluster(format!("reading {}'s metrics", node.id)))?;
        for (t, x) in total.iter_mut().zip(delay_totals(&text)) {
            t.0 += x.0;
            t.1 += x.1;
        }
    }
    Ok(total)
}

/// Rounds of calibration per node.
const CALIBRATION_ROUNDS: usize = 30;

/// Measures the fixed costs with no injected delays: client round trips
/// (`GET /health`) and W=1 against W=2 writes through every node, in
/// `bucket` (made here).
pub async fn calibrate(nodes: &[Node], cfg: &Config, bucket: &str) -> Result<Costs, RunError> {
    let mut health = Vec::new();
    for _ in 0..CALIBRATION_ROUNDS {
        for node in nodes {
            let started = Instant::now();
            node.client
                .health()
                .await
                .map_err(cluster(format!("calibrating against {}", node.id)))?;
            health.push(ms(started.elapsed()));
        }
    }
    let (mut w1, mut w2) = (Vec::new(), Vec::new());
    if cfg.n >= 2 {
        prepare_bucket(nodes, bucket, cfg).await?;
        for i in 0..CALIBRATION_ROUNDS {
            for (k, node) in nodes.iter().enumerate() {
                for (w, out) in [(1, &mut w1), (2, &mut w2)] {
                    let key = format!("c{i}-{k}-{w}");
                    let opts = WriteOptions {
                        w: Some(Consistency::N(w)),
                        timeout_ms: Some(cfg.timeout_ms),
                    };
                    let started = Instant::now();
                    node.client
                        .put(bucket, key.as_bytes(), encode(1), None, None, &opts)
                        .await
                        .map_err(cluster(format!("calibrating writes through {}", node.id)))?;
                    out.push(ms(started.elapsed()));
                }
            }
        }
    }
    Ok(costs(&health, &w1, &w2))
}

/// Gives every node the delays (all four legs to every peer and on its
/// own replica), each node seeded from `seed`.
pub async fn install_faults(nodes: &[Node], cfg: &Config) -> Result<(), RunError> {
    check_fault_injection(nodes).await?;
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    for (i, node) in nodes.iter().enumerate() {
        let settings = settings_of(cfg, &ids, i)?;
        node.client
            .faults_put(&settings)
            .await
            .map_err(cluster(format!("setting {}'s faults", node.id)))?;
    }
    Ok(())
}

/// The fault settings of node `ids[i]`: the delays on every leg to every
/// peer and on its own replica, and, when one replica is to be slow and it
/// is another node, the slow delay on every leg to that one.
fn settings_of(cfg: &Config, ids: &[&str], i: usize) -> Result<Settings, RunError> {
    let l = &cfg.delays.legs;
    let mut peers = std::collections::BTreeMap::new();
    if let Some((slow, d)) = &cfg.slow {
        if !ids.contains(&slow.as_str()) {
            return Err(RunError::NoSuchNode(slow.clone(), ids.join(", ")));
        }
        if ids[i] != slow {
            let d = d.inlined();
            peers.insert(
                slow.clone(),
                LinkFaults {
                    w: Some(d.clone()),
                    a: Some(d.clone()),
                    r: Some(d.clone()),
                    s: Some(d),
                    ..LinkFaults::default()
                },
            );
        }
    }
    Ok(Settings {
        all_peers: LinkFaults {
            w: Some(l.w.inlined()),
            a: Some(l.a.inlined()),
            r: Some(l.r.inlined()),
            s: Some(l.s.inlined()),
            ..LinkFaults::default()
        },
        peers,
        local: true,
        seed: Some(cfg.seed.wrapping_add(i as u64)),
        ..Settings::default()
    })
}

/// Removes every fault from every node; the first failure, after trying
/// them all.
pub async fn clear_faults(nodes: &[Node]) -> Result<(), RunError> {
    let mut first = None;
    for node in nodes {
        if let Err(e) = node.client.faults_clear().await {
            first.get_or_insert(cluster(format!("clearing {}'s faults", node.id))(e));
        }
    }
    first.map_or(Ok(()), Err)
}

/// The bucket of one configuration: fresh (named with `stamp`) so that
/// its N can be set.
pub fn bucket_name(prefix: &str, stamp: u64, r: usize, w: usize) -> String {
    format!("{prefix}-{stamp}-r{r}w{w}")
}

/// Sets the bucket's properties on every node (a bucket change reaches
/// the others by gossip; setting it everywhere makes it hold at once).
async fn prepare_bucket(nodes: &[Node], bucket: &str, cfg: &Config) -> Result<(), RunError> {
    let read_repair = match cfg.read_repair.as_str() {
        "off" => ReadRepair::Off,
        "async" => ReadRepair::Async,
        "blocking" => ReadRepair::Blocking,
        other => return Err(RunError::ReadRepair(other.to_string())),
    };
    let update = BucketPropsUpdate {
        n: Some(cfg.n as u32),
        read_repair: Some(read_repair),
        speculative_retry: Some(cfg.speculative_retry.clone()),
        ..BucketPropsUpdate::default()
    };
    for node in nodes {
        node.client
            .bucket_set(bucket, &update)
            .await
            .map_err(cluster(format!("setting bucket {bucket} on {}", node.id)))?;
    }
    Ok(())
}

/// The read's node for a write through `writer`.
fn read_node(rc: ReadCoordinator, writer: usize, nodes: usize, rng: &mut ChaCha8Rng) -> usize {
    match rc {
        ReadCoordinator::Any => rng.random_range(0..nodes),
        ReadCoordinator::Same => writer,
        ReadCoordinator::Other if nodes >= 2 => {
            let c = rng.random_range(0..nodes - 1);
            if c >= writer { c + 1 } else { c }
        }
        ReadCoordinator::Other => writer,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What one key's writer recorded.
#[derive(Default)]
struct KeyRun {
    samples: Vec<Sample>,
    write_ms: Vec<f64>,
    failures: Failures,
}

impl KeyRun {
    fn fail(&mut self, what: String) {
        self.failures.first.get_or_insert(what);
    }
}

/// Writes key `key`'s `count` versions one after the other, reading each
/// once per t.
#[allow(clippy::too_many_arguments)]
async fn run_key(
    nodes: &[Node],
    cfg: &Config,
    bucket: &str,
    (r, w): (usize, usize),
    key: usize,
    count: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> KeyRun {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(key as u64 + 1);
    let name = format!("k{key}");
    let wopts = WriteOptions {
        w: Some(Consistency::N(w as u32)),
        timeout_ms: Some(cfg.timeout_ms),
    };
    let ropts = ReadOptions {
        r: Some(Consistency::N(r as u32)),
        timeout_ms: Some(cfg.timeout_ms),
    };
    let mut out = KeyRun::default();
    let mut context: Option<Context> = None;
    for seq in 1..=count {
        let writer = rng.random_range(0..nodes.len());
        let readers: Vec<usize> = cfg
            .ts
            .iter()
            .map(|_| read_node(cfg.read_coordinator, writer, nodes.len(), &mut rng))
            .collect();
        let started = Instant::now();
        let put = nodes[writer]
            .client
            .put(
                bucket,
                name.as_bytes(),
                encode(seq),
                None,
                context.as_ref(),
                &wopts,
            )
            .await;
        let acked = Instant::now();
        match put {
            Ok(c) => context = Some(c),
            Err(e) => {
                out.failures.writes += 1;
                out.fail(format!(
                    "write of {bucket}/{name} through {}: {e}",
                    nodes[writer].id
                ));
                progress(1);
                continue;
            }
        }
        let write_ms = ms(acked - started);
        out.write_ms.push(write_ms);
        let reads = cfg.ts.iter().zip(&readers).map(|(&t, &reader)| {
            let (name, ropts) = (&name, &ropts);
            async move {
                tokio::time::sleep_until(acked + Duration::from_secs_f64(t / 1e3)).await;
                let sent = Instant::now();
                let got = nodes[reader]
                    .client
                    .get(bucket, name.as_bytes(), ropts)
                    .await;
                (t, reader, sent, Instant::now(), got)
            }
        });
        for (t, reader, sent, done, got) in join_all(reads).await {
            let (seen, values) = match got {
                Ok(Fetched::NotFound { .. }) => (None, 0),
                Ok(Fetched::Found(v)) => {
                    let seqs: Vec<Option<u64>> =
                        v.values.iter().map(|x| decode(&x.value)).collect();
                    if seqs.iter().any(Option::is_none) {
                        out.failures.foreign += 1;
                        out.fail(format!(
                            "{bucket}/{name} holds a value this run did not write"
                        ));
                        continue;
                    }
                    (seqs.into_iter().flatten().max(), v.values.len())
                }
                Err(e) => {
                    out.failures.reads += 1;
                    out.fail(format!(
                        "read of {bucket}/{name} through {}: {e}",
                        nodes[reader].id
                    ));
                    continue;
                }
            };
            out.samples.push(Sample {
                key,
                seq,
                t_ms: t,
                waited_ms: ms(sent - acked),
                write_node: writer,
                read_node: reader,
                write_ms,
                read_ms: ms(done - sent),
                seen,
                values,
            });
        }
        progress(1);
    }
    out
}

/// Runs one (R, W) configuration in `bucket` (made here).
pub async fn run_pair(
    nodes: &[Node],
    cfg: &Config,
    bucket: &str,
    (r, w): (usize, usize),
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PairRun, RunError> {
    prepare_bucket(nodes, bucket, cfg).await?;
    let before = delay_totals_of(nodes).await?;
    let keys = cfg.concurrency.min(cfg.writes as usize).max(1);
    let per =
        |k: usize| cfg.writes / keys as u64 + u64::from((k as u64) < cfg.writes % keys as u64);
    let runs =
        join_all((0..keys).map(|k| run_key(nodes, cfg, bucket, (r, w), k, per(k), progress))).await;
    let mut out = PairRun {
        r,
        w,
        bucket: bucket.to_string(),
        ..PairRun::default()
    };
    for k in runs {
        out.samples.extend(k.samples);
        out.write_ms.extend(k.write_ms);
        out.failures.writes += k.failures.writes;
        out.failures.reads += k.failures.reads;
        out.failures.foreign += k.failures.foreign;
        if out.failures.first.is_none() {
            out.failures.first = k.failures.first;
        }
    }
    let l = &cfg.delays.legs;
    out.overshoot_ms = overshoot(
        &before,
        &delay_totals_of(nodes).await?,
        [l.w.mean(), l.a.mean(), l.r.mean(), l.s.mean()],
    );
    out.samples.sort_by(|a, b| {
        (a.key, a.seq, a.t_ms)
            .partial_cmp(&(b.key, b.seq, b.t_ms))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(out)
}

/// Runs every configuration of `cfg` on `nodes`: clears their faults
/// and calibrates the fixed costs (when asked), installs the delays, runs
/// each (R, W) in its own bucket (`bucket_prefix`, `stamp`), and clears
/// the delays again, also when a step failed. `progress` is told of every
/// write done.
pub async fn run(
    nodes: &[Node],
    cfg: &Config,
    bucket_prefix: &str,
    stamp: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Costs, Vec<PairRun>), RunError> {
    cfg.validate(nodes.len())?;
    check_fault_injection(nodes).await?;
    let result: Result<(Costs, Vec<PairRun>), RunError> = async {
        let costs = if cfg.calibrate {
            clear_faults(nodes).await?;
            let bucket = format!("{bucket_prefix}-{stamp}-calibration");
            calibrate(nodes, cfg, &bucket).await?
        } else {
            Costs::default()
        };
        install_faults(nodes, cfg).await?;
        let mut runs = Vec::new();
        for &(r, w) in &cfg.pairs {
            let bucket = bucket_name(bucket_prefix, stamp, r, w);
            runs.push(run_pair(nodes, cfg, &bucket, (r, w), progress).await?);
        }
        Ok((costs, runs))
    }
    .await;
    let cleared = clear_faults(nodes).await;
    let out = result?;
    cleared?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_reader_is_never_the_writer_and_covers_every_other_node() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for writer in 0..3 {
            let mut seen = [0; 3];
            for _ in 0..300 {
                seen[read_node(ReadCoordinator::Other, writer, 3, &mut rng)] += 1;
            }
            assert_eq!(seen[writer], 0);
            assert!(
                seen.iter().enumerate().all(|(i, &c)| i == writer || c > 50),
                "{seen:?}"
            );
            assert_eq!(
                read_node(ReadCoordinator::Same, writer, 3, &mut rng),
                writer
            );
        }
        assert_eq!(read_node(ReadCoordinator::Other, 0, 1, &mut rng), 0);
    }

    #[test]
    fn a_slow_replica_is_slowed_on_every_leg_by_every_other_node_only() {
        let base: quorumkv_faults::Dist = "const:0".parse().expect("dist");
        let slow: quorumkv_faults::Dist = "const:50".parse().expect("dist");
        let cfg = Config {
            n: 3,
            pairs: vec![(2, 2)],
            ts: vec![0.0],
            writes: 1,
            concurrency: 1,
            read_coordinator: ReadCoordinator::Other,
            delays: quorumkv_faults::Delays {
                legs: quorumkv_faults::Legs::every(base.clone()),
                remote_ms: None,
            },
            read_repair: "off".into(),
            speculative_retry: "auto".into(),
            seed: 4,
            trials: 1,
            timeout_ms: 1000,
            calibrate: false,
            slow: Some(("n3".into(), slow.clone())),
        };
        let ids = ["n1", "n2", "n3"];
        for i in 0..2 {
            let s = settings_of(&cfg, &ids, i).expect("n3 is a member");
            let to_n3 = &s.peers["n3"];
            for leg in [&to_n3.w, &to_n3.a, &to_n3.r, &to_n3.s] {
                assert_eq!(leg.as_ref(), Some(&slow));
            }
            assert_eq!(s.peers.len(), 1);
            assert_eq!(s.all_peers.w.as_ref(), Some(&base));
            assert_eq!(s.seed, Some(4 + i as u64));
        }
        let own = settings_of(&cfg, &ids, 2).expect("n3 is a member");
        assert!(
            own.peers.is_empty(),
            "the slow node's own calls are not slowed"
        );
        let no = Config {
            slow: Some(("n9".into(), slow)),
            ..cfg
        };
        assert_eq!(
            settings_of(&no, &ids, 0)
                .expect_err("n9 is no member")
                .to_string(),
            "--slow n9: no such member (members: n1, n2, n3)"
        );
    }

    #[test]
    fn each_configuration_gets_a_fresh_bucket_of_its_own() {
        assert_eq!(bucket_name("staleness", 17, 1, 2), "staleness-17-r1w2");
        assert_ne!(bucket_name("s", 1, 1, 2), bucket_name("s", 1, 2, 1));
    }
}
