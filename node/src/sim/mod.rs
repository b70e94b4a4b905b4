//! The in-process simulation harness: a cluster of 3–5 nodes in one test
//! process, each running the node's real services ([`server::start`])
//! over the in-memory network ([`transport::memory`]) and the in-memory
//! storage engine, under tokio's paused clock with seeded randomness.
//!
//! What it is for: the coordinator's behaviour across nodes — forwarding,
//! quorums, read repair, hints, sloppy quorums, pending owners, partitions
//! — checked in milliseconds of real time per scenario instead of the
//! 20–60 s a scenario of real processes takes. What it is not for: crashes
//! with a real disk, fsync, the TCP transport, a real ring change of
//! processes. Those stay in the process tests of `tests/`.
//!
//! Time is virtual: every sleep and deadline runs on tokio's paused clock,
//! which jumps to the next timer whenever every task waits, so gossip
//! rounds, failure detection (the phi detector convicts after some
//! 18 rounds) and request timeouts cost no real time. The network's
//! drops and jitter and every node's gossip choices follow the seed, and
//! each scenario prints its seed when it fails.
//!
//! Nodes start with tokens of their own (evenly spread over the ring, so
//! that placements are easy to reason about) and need no join; a node
//! started with [`Sim::add_joining`] joins as a real one does, streaming
//! included.

mod scenarios;
mod tail;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::buckets::{BucketUpdate, Consistency};
use crate::config::{Args, Config};
use crate::coordinator::{ReadArgs, WriteArgs};
use crate::failure::QuorumError;
use crate::http::Api;
use crate::replica::Mutation;
use crate::server::{self, Running, Transport};
use crate::storage::{MemoryEngine, Store, SyncMode};
use crate::transport::memory::Network;
use crate::version::{Context, Dvvs};

/// Gossip round interval of simulated nodes.
pub const GOSSIP: Duration = Duration::from_millis(500);

/// Virtual nodes per simulated node.
const VNODES: u64 = 4;

/// A node of the simulation.
pub struct SimNode {
    /// Its id (`n1`, `n2`, ...).
    pub id: String,
    running: Option<Running>,
    store: Store,
}

/// A simulated cluster.
pub struct Sim {
    /// The network every node is bound to.
    pub net: Network,
    /// The nodes, `n1` first.
    pub nodes: Vec<SimNode>,
    seed: u64,
    /// Extra `qkvd` flags every node gets.
    flags: Vec<String>,
}

fn listen_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, (i + 1) as u8], 7000))
}

/// Tokens of node `i` of `n`: `VNODES` evenly spread, interleaved with
/// the other nodes' so that every node owns equal shares.
fn tokens_of(i: usize, n: usize) -> Vec<u64> {
    let slots = n as u64 * VNODES;
    let step = u64::MAX / slots;
    (0..VNODES)
        .map(|k| (k * n as u64 + i as u64) * step + step / 2)
        .collect()
}

/// A store on the in-memory engine whose writes apply on the writing task
/// (periodic durability): a group-commit thread would leave the runtime
/// idle while it works, and the paused clock would then jump past every
/// deadline.
fn memory_store() -> Store {
    Store::with_engine(
        Arc::new(MemoryEngine::new()),
        SyncMode::Periodic(Duration::from_secs(3600)),
    )
    .expect("an in-memory store")
}

impl Sim {
    /// Starts `n` nodes (N=3 by default), each with `flags` added to its
    /// command line, and waits until every node sees every other one up
    /// and the whole ring.
    pub async fn start(n: usize, seed: u64, flags: &[&str]) -> Sim {
        let mut sim = Sim {
            net: Network::new(seed),
            nodes: Vec::new(),
            seed,
            flags: flags.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            let store = memory_store();
            crate::tokens::save(&store, &tokens_of(i, n))
                .await
                .expect("tokens saved");
            sim.nodes.push(SimNode {
                id: format!("n{}", i + 1),
                running: None,
                store,
            });
        }
        for i in 0..n {
            sim.boot(i, &[]).await;
        }
        sim.until("every node sees the whole ring, up", |s| s.converged())
            .await;
        sim
    }

    /// Adds a node without tokens that joins the ring on its own (as
    /// `--join auto` does), streaming the ranges it gains; returns its
    /// index once it serves (it may still be joining).
    pub async fn add_joining(&mut self, flags: &[&str]) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode {
            id: format!("n{}", i + 1),
            running: None,
            store: memory_store(),
        });
        self.boot(i, flags).await;
        i
    }

    fn config(&self, i: usize, extra: &[&str]) -> Config {
        let id = &self.nodes[i].id;
        let seeds: Vec<String> = (0..self.nodes.len().max(1))
            .map(|j| listen_of(j).to_string())
            .collect();
        let mut argv: Vec<String> = [
            "qkvd",
            "--id",
            id,
            "--listen",
            &listen_of(i).to_string(),
            "--http",
            &format!("127.0.0.1:{}", 18000 + i),
            "--seeds",
            &seeds.join(","),
            "--data-dir",
            &format!("/nonexistent/sim/{id}"),
            "--engine",
            "memory",
            "--gossip-interval-ms",
            &GOSSIP.as_millis().to_string(),
            "--anti-entropy-interval-secs",
            "0",
            "--cleanup-grace-secs",
            "0",
            // Simulated addresses (10.0.0.x) on the in-memory network.
            "--insecure",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(self.flags.iter().cloned());
        argv.extend(extra.iter().map(|s| s.to_string()));
        let args = Args::try_parse_from(argv).expect("simulated node's flags");
        Config::from_args(args).expect("simulated node's config")
    }

    async fn boot(&mut self, i: usize, extra: &[&str]) {
        let config = self.config(i, extra);
        let node = &self.nodes[i];
        let store = node.store.clone();
        let id = server::resolve_id(&config, &store).await.expect("id");
        let (peers, gossip, requests) = self.net.bind(&id, &listen_of(i).to_string());
        let transport = |_: &Arc<crate::cluster::Cluster>| Transport {
            peers,
            gossip,
            requests: Box::new(requests),
            net: None,
        };
        let rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(i as u64));
        let running = server::start(config, store, id, transport, rng)
            .await
            .unwrap_or_else(|e| panic!("seed {}: node {i} did not start: {e}", self.seed));
        self.nodes[i].running = Some(running);
    }

    /// Stops node `i` as SIGTERM does (after the network stops reaching
    /// it): returns how many of its tasks were still running when its
    /// store closed.
    pub async fn stop(&mut self, i: usize) -> usize {
        self.net.crash(&self.nodes[i].id);
        let running = self.nodes[i].running.take().expect("the node runs");
        running.stop().await.expect("the store closes")
    }

    /// Node `i`'s services.
    pub fn api(&self, i: usize) -> &Arc<Api> {
        self.nodes[i].running.as_ref().expect("the node runs").api()
    }

    fn converged(&self) -> bool {
        let n = self.nodes.len();
        self.nodes.iter().enumerate().all(|(i, _)| {
            let c = &self.api(i).cluster;
            c.ring().node_count() == n && self.nodes.iter().all(|m| c.is_alive(&m.id))
        })
    }

    /// Polls `cond` every 10 ms of virtual time until it holds; fails the
    /// test (with the seed) after 5 virtual minutes.
    pub async fn until(&self, what: &str, mut cond: impl FnMut(&Sim) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "seed {}: timed out waiting until {what}",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until node `observer` sees node `target` down (or up).
    pub async fn until_seen(&self, observer: usize, target: usize, alive: bool) {
        let id = self.nodes[target].id.clone();
        let what = format!(
            "{} sees {id} {}",
            self.nodes[observer].id,
            if alive { "up" } else { "down" }
        );
        self.until(&what, |s| s.api(observer).cluster.is_alive(&id) == alive)
            .await;
    }

    /// Cuts every message between the nodes of `a` and those of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let ids =
            |v: &[usize]| -> Vec<String> { v.iter().map(|&i| self.nodes[i].id.clone()).collect() };
        let (a, b) = (ids(a), ids(b));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        self.net.partition(&a, &b);
    }

    /// Ends every partition.
    pub fn heal(&self) {
        self.net.heal();
    }

    /// The indexes of the key's replicas (preference order) as node `via`
    /// places it.
    pub fn replicas(&self, via: usize, bucket: &str, key: &str) -> Vec<usize> {
        let api = self.api(via);
        let n = api.buckets.props_for_keys(bucket).n as usize;
        let token = quorumkv_ring::token_of(bucket.as_bytes(), key.as_bytes());
        api.cluster
            .ring()
            .preference_list(token, n)
            .iter()
            .map(|id| self.index(id))
            .collect()
    }

    /// The index of node `id`.
    pub fn index(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Sets bucket `name`'s properties on node `via` and announces them.
    pub async fn bucket(&self, via: usize, name: &str, update: BucketUpdate) {
        let api = self.api(via);
        api.buckets.update(name, update).await.expect("bucket set");
        api.bucket_sync.announce(name);
        let want = api.buckets.get(name);
        self.until("every node has the bucket's properties", |s| {
            (0..s.nodes.len()).all(|i| s.api(i).buckets.get(name) == want)
        })
        .await;
    }

    /// Writes `value` to `key` through node `via` at `w`, with context
    /// `ctx` (empty: none).
    pub async fn put(
        &self,
        via: usize,
        bucket: &str,
        key: &str,
        value: &str,
        w: Consistency,
        ctx: &Context,
    ) -> Result<Dvvs, QuorumError> {
        let api = self.api(via);
        api.coordinator
            .write(WriteArgs {
                bucket: bucket.into(),
                key: key.as_bytes().to_vec(),
                props: api.buckets.props_for_keys(bucket),
                ctx: ctx.clone(),
                mutation: Mutation::Put {
                    data: value.as_bytes().to_vec(),
                    content_type: "text/plain".into(),
                },
                w,
                timeout: Duration::from_secs(2),
                trace: None,
            })
            .await
    }

    /// Reads `key` through node `via` at `r`: the sibling values, sorted.
    pub async fn get(
        &self,
        via: usize,
        bucket: &str,
        key: &str,
        r: Consistency,
    ) -> Result<Vec<String>, QuorumError> {
        let api = self.api(via);
        let found = api
            .coordinator
            .read(ReadArgs {
                bucket: bucket.into(),
                key: key.as_bytes().to_vec(),
                props: api.buckets.props_for_keys(bucket),
                r,
                timeout: Duration::from_secs(2),
                trace: None,
            })
            .await?;
        Ok(found.map_or_else(Vec::new, |o| values(&o)))
    }

    /// What node `i` alone stores for `key`: its sibling values, sorted.
    pub fn local(&self, i: usize, bucket: &str, key: &str) -> Vec<String> {
        self.api(i)
            .replica
            .read(bucket, key.as_bytes())
            .expect("local read")
            .map_or_else(Vec::new, |o| values(&o))
    }
}

/// The live values of `o` as text, sorted.
pub fn values(o: &Dvvs) -> Vec<String> {
    let mut v: Vec<String> = o
        .live_values()
        .iter()
        .map(|v| String::from_utf8_lossy(&v.data).into_owned())
        .collect();
    v.sort();
    v
}
