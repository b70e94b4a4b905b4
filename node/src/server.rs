//! Starting and stopping a node: open the store, establish the node's
//! identity (id, generation, tokens), bind the ports, wire the services,
//! serve until SIGINT or SIGTERM, then stop accepting, finish in-flight
//! requests, stop the background work, flush storage.
//!
//! This is the one place that wires the node's services together. Each is
//! built once, in dependency order, from the ones before it, and none
//! reaches for another through a shared node object:
//!
//! ```text
//! store ─┬─ buckets, hints, replica, cluster view   (state)
//!        │
//! transport (TCP or in-memory): peers ─┬─ bucket_sync
//!                                      ├─ coordinator ── replica, cluster, buckets, hints, peers
//!                                      ├─ repairer ───── replica, cluster, buckets, peers
//! gossip (prepared) ───────────────────┼─ change driver ─ replica, cluster, buckets, hints, peers, gossip
//!                                      ├─ rpc ────────── coordinator, repairer, change driver, buckets
//!                                      │    (handed to the transport's request inbox: serving starts)
//!                                      ├─ membership ─── cluster, change driver, peers, bucket_sync
//!                                      └─ http api ───── every service above
//! ```
//!
//! [`start`] does the wiring over any transport — the TCP one in [`run`],
//! the in-memory network in the simulations — and returns the running
//! [`Running`] node; [`run`] adds the ports, the signals and the HTTP server.
//!
//! Every reason not to start (unusable data dir, a port in use, a data dir
//! that belongs to another node id) becomes one [`StartError`] line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::bucket_sync::BucketSync;
use crate::buckets::Buckets;
use crate::cluster::{Cluster, LocalNode};
use crate::config::{Config, Engine, validate_node_id};
use crate::coordinator::{self, Coordinator};
use crate::faults::{Faults, FaultyGossip, FaultyPeers};
use crate::hints::{HintConfig, Hints};
use crate::http::Api;
use crate::membership;
use crate::metrics::Metrics;
use crate::repair::{self, Repairer};
use crate::replica::Replica;
use crate::rpc::Rpc;
use crate::storage::{StorageError, Store};
use crate::stream::{self, ChangeDriver};
use crate::tasks::Tasks;
use crate::tokens;
use crate::transport::tcp::{self, GossipTransport, Identity, Net, TcpPeers};
use crate::transport::{Peers, Requests};

/// Why a node refused to start: one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir cannot be used.
    #[error("cannot use data dir {dir}: {source}")]
    Storage {
        /// The directory.
        dir: String,
        /// The storage error.
        source: StorageError,
    },
    /// A port could not be bound.
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which port: `--http` or `--listen`.
        what: &'static str,
        /// Why (e.g. address in use).
        reason: String,
    },
    /// The data dir holds another node.
    #[error("{0}")]
    Identity(String),
    /// Gossip could not start, or joining the ring failed.
    #[error("{0}")]
    Membership(String),
    /// `--tls-cert` or `--tls-key` cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::http::tls::TlsError),
}

/// A bound transport, as [`start`] wires it.
pub struct Transport<G> {
    /// Outbound calls, by node id.
    pub peers: Arc<dyn Peers>,
    /// Gossip's side of the transport.
    pub gossip: G,
    /// The request inbox; served once the RPC service exists.
    pub requests: Box<dyn Requests>,
    /// The TCP transport underneath, when it is one (metrics, shutdown).
    pub net: Option<Arc<Net>>,
}

/// How long stopping waits for the node's tasks to end.
const TASKS_DRAIN: Duration = Duration::from_secs(10);

/// A started node: its services (through the HTTP API's handle) and what
/// stopping it needs.
pub struct Running {
    api: Arc<Api>,
    store: Store,
    net: Option<Arc<Net>>,
    tasks: Tasks,
}

impl Running {
    /// The services, as the HTTP API sees them.
    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Stops the node's work and closes the store: the background loops
    /// and gossip stop, the transport stops (no new request from a peer;
    /// calls to peers fail at once), every task still running — a write's
    /// replication, a read repair, a peer's request — is waited for (at
    /// most `TASKS_DRAIN`, 10 s), and only then is the store closed. Returns
    /// how many tasks were still running when the wait gave up.
    pub async fn stop(self) -> Result<usize, StorageError> {
        let stopping = self.tasks.shutdown(TASKS_DRAIN);
        if let Some(net) = &self.net {
            net.shutdown();
        }
        let remaining = stopping.await;
        if remaining > 0 {
            warn!(
                remaining,
                "tasks still running after {TASKS_DRAIN:?}; closing the store anyway"
            );
        } else {
            info!("every task of the node has ended; closing the store");
        }
        drop(self.api);
        self.store.close().await?;
        Ok(remaining)
    }
}

/// Wires a node's services over `store` for node `id` (see the module
/// docs for the order): `bind` makes the transport once the cluster view
/// exists (the TCP transport looks peers' addresses up in it); `rng`
/// drives gossip's choices. Returns once the node serves other nodes and
/// gossips (a new cluster's first node once it owns the ring).
pub async fn start<G: quorumkv_gossip::driver::Transport>(
    config: Config,
    store: Store,
    id: String,
    bind: impl FnOnce(&Arc<Cluster>) -> Transport<G>,
    rng: ChaCha8Rng,
) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let dir = config.data_dir.display().to_string();
    let storage = |source| StartError::Storage {
        dir: dir.clone(),
        source,
    };
    // State.
    let generation = next_generation(&store).await.map_err(storage)?;
    // A node without tokens chooses them once it has learned the ring
    // from gossip (`membership`); until then it is standby.
    let tokens = tokens::load(&store).map_err(storage)?.unwrap_or_default();
    let buckets = Arc::new(Buckets::load(store.clone(), &id, config.default_n).map_err(storage)?);
    let hints = Arc::new(
        Hints::open(
            store.clone(),
            HintConfig {
                enabled: config.hinted_handoff,
                window: config.max_hint_window,
                max_per_target: config.max_hints_per_target,
                replay_bytes_per_sec: config.hint_replay_bytes_per_sec,
                check_every: Duration::from_secs(1),
            },
        )
        .map_err(storage)?,
    );
    let actor = crate::replica::actor_name(&id, load_incarnation(&store).map_err(storage)?);
    let replica = Arc::new(
        Replica::with_row_cache(id.clone(), actor, store.clone(), config.row_cache_bytes)
            .map_err(storage)?
            .with_max_clock_offset(config.max_clock_offset_ms),
    );
    let cluster = Arc::new(Cluster::single(
        LocalNode {
            id,
            http: config.http,
            listen: config.listen,
            generation,
            rack: config.rack.clone(),
        },
        tokens,
    ));
    let metrics = Arc::new(Metrics::new());
    let faults = Arc::new(Faults::new(
        config.fault_injection,
        &cluster.local().id,
        metrics.clone(),
    ));
    let tasks = Tasks::new();

    // Services over the transport; with --fault-injection, through the
    // fault layer (without it, untouched).
    let transport = bind(&cluster);
    let peers: Arc<dyn Peers> = if faults.enabled() {
        Arc::new(FaultyPeers::new(transport.peers.clone(), faults.clone()))
    } else {
        transport.peers.clone()
    };
    let gossip_transport = FaultyGossip::new(
        transport.gossip,
        faults.enabled().then(|| faults.clone()),
        cluster.clone(),
    );
    let bucket_sync = Arc::new(BucketSync::new(
        buckets.clone(),
        cluster.clone(),
        peers.clone(),
        tasks.clone(),
    ));
    let coordinator = Coordinator::new(
        coordinator::Parts {
            replica: replica.clone(),
            cluster: cluster.clone(),
            buckets: buckets.clone(),
            hints: hints.clone(),
            peers: peers.clone(),
            metrics: metrics.clone(),
            faults: faults.clone(),
            bucket_sync: bucket_sync.clone(),
            tasks: tasks.clone(),
        },
        coordinator::Options {
            read_digests: config.read_digests,
        },
    );
    let repairer = Repairer::new(
        repair::Parts {
            replica: replica.clone(),
            cluster: cluster.clone(),
            buckets: buckets.clone(),
            peers: peers.clone(),
            metrics: metrics.clone(),
        },
        repair::Options {
            default_n: config.default_n,
            bytes_per_sec: config.repair_bytes_per_sec,
            tombstone_grace: config.tombstone_grace,
        },
    );
    let membership_error = |e: membership::Error| match e {
        membership::Error::Storage(source) => StartError::Storage {
            dir: dir.clone(),
            source,
        },
        e => StartError::Membership(e.to_string()),
    };
    let gossip = membership::prepare(&config, &cluster, &store, gossip_transport, rng)
        .map_err(membership_error)?;
    let changes = ChangeDriver::new(
        stream::Parts {
            replica: replica.clone(),
            cluster: cluster.clone(),
            buckets: buckets.clone(),
            hints: hints.clone(),
            peers: peers.clone(),
            gossip: gossip.handle().clone(),
            tasks: tasks.clone(),
        },
        stream::Options {
            default_n: config.default_n,
            timeout: config.timeout,
            stream_bytes_per_sec: config.stream_bytes_per_sec,
        },
    );
    transport.requests.serve(Arc::new(Rpc {
        coordinator: coordinator.clone(),
        repairer: repairer.clone(),
        changes: changes.clone(),
        buckets: buckets.clone(),
        cluster: cluster.clone(),
        tasks: tasks.clone(),
    }));

    // Background work, until shutdown cancels it.
    tasks.spawn(hints.clone().run_replayer(
        coordinator::hint_target_is_up(cluster.clone()),
        coordinator::hint_delivery(peers.clone()),
        tasks.token(),
    ));
    if let Some(every) = config.anti_entropy_interval {
        tasks.spawn(repairer.clone().run_scheduler(every, tasks.token()));
    }
    if let Some(grace) = config.cleanup_grace {
        tasks.spawn(changes.clone().run_auto_cleanup(grace, tasks.token()));
    }
    // Gossip starts; a node without tokens joins the ring in the background
    // (a new cluster's first node before the API serves: see membership).
    let membership = gossip
        .start(membership::Parts {
            config: config.clone(),
            cluster: cluster.clone(),
            changes: changes.clone(),
            peers: peers.clone(),
            bucket_sync: bucket_sync.clone(),
            store: store.clone(),
            tasks: tasks.clone(),
        })
        .await
        .map_err(membership_error)?;
    let api = Arc::new(Api {
        inflight: Arc::new(Semaphore::new(config.max_inflight as usize)),
        config,
        replica,
        cluster,
        buckets,
        hints,
        metrics,
        faults,
        peers,
        net: transport.net.clone(),
        coordinator,
        repairer,
        changes,
        membership,
        bucket_sync,
    });
    Ok(Running {
        api,
        store,
        net: transport.net,
        tasks,
    })
}

/// The node id of the data dir in `store`: the stored one, or — for a
/// new data dir — `--id` (or a random one), stored with a new incarnation.
pub async fn resolve_id(config: &Config, store: &Store) -> Result<String, StartError> {
    let dir = config.data_dir.display().to_string();
    let storage = |source| StartError::Storage {
        dir: dir.clone(),
        source,
    };
    let stored = store
        .meta_get("node_id")
        .map_err(storage)?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    match (&config.id, stored) {
        (Some(want), Some(have)) if *want != have => Err(StartError::Identity(format!(
            "data dir {dir} belongs to node {have:?}, not {want:?}; start with --id {have} or use another --data-dir"
        ))),
        (_, Some(have)) => Ok(have),
        (want, None) => {
            let id = want
                .clone()
                .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
            validate_node_id(&id).map_err(|e| StartError::Identity(e.to_string()))?;
            // A new data dir: a new incarnation, stored before the id so
            // that a dir holding an id always holds its incarnation too
            // (a dir with an id and none predates incarnations).
            store
                .meta_put(
                    INCARNATION_KEY,
                    rand::random::<u32>().to_be_bytes().to_vec(),
                )
                .await
                .map_err(storage)?;
            store
                .meta_put("node_id", id.clone().into_bytes())
                .await
                .map_err(storage)?;
            Ok(id)
        }
    }
}

/// Meta key of the data dir's incarnation (4 bytes, big endian).
const INCARNATION_KEY: &str = "incarnation";

/// The incarnation drawn when the data dir was created; `None` for a data
/// dir created before incarnations existed (its dots keep the plain id).
fn load_incarnation(store: &Store) -> Result<Option<u32>, StorageError> {
    match store.meta_get(INCARNATION_KEY)? {
        None => Ok(None),
        Some(b) => <[u8; 4]>::try_from(b.as_slice())
            .map(|b| Some(u32::from_be_bytes(b)))
            .map_err(|_| {
                StorageError::Corrupt(format!("stored incarnation is {} bytes, not 4", b.len()))
            }),
    }
}

/// The generation grows across restarts: at least the previous one plus
/// one, and the wall-clock second when that is larger (as Cassandra does),
/// so a wiped-and-restarted node still out-ranks its old gossip state.
async fn next_generation(store: &Store) -> Result<u64, StorageError> {
    let prev = store
        .meta_get("generation")?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let now = crate::clock::unix_secs();
    let generation = (prev + 1).max(now);
    store
        .meta_put("generation", generation.to_be_bytes().to_vec())
        .await?;
    Ok(generation)
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| StartError::Bind {
        addr,
        what,
        reason: e.to_string(),
    })
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
        _ = term => info!("SIGTERM received, shutting down"),
    }
}

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs a node until a shutdown signal; returns once storage is flushed.
pub async fn run(config: Config) -> Result<(), StartError> {
    // The certificate is read first: a bad one is refused before anything
    // is bound or opened.
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::http::tls::acceptor(cert, key)?),
        None => None,
    };
    let dir = config.data_dir.display().to_string();
    let store = match config.engine {
        Engine::Fjall => {
            Store::open(&config.data_dir, config.sync).map_err(|source| StartError::Storage {
                dir: dir.clone(),
                source,
            })?
        }
        Engine::Memory => Store::memory(),
    };
    let http = bind(config.http, "--http").await?;
    let listen = bind(config.listen, "--listen").await?;
    let id = resolve_id(&config, &store).await?;
    let identity = Identity {
        node: id.clone(),
        addr: config.listen.to_string(),
        cluster: config.cluster_name.clone(),
        secret: config.cluster_secret.clone(),
    };
    if config.cluster_secret.is_none() {
        info!("no --cluster-secret-file: internode peers are not authenticated");
    }
    // The transport is bound before the services so that a node without
    // stored tokens can ask its seeds for the ones the cluster knows (a
    // wiped data dir), before gossip announces it anew. Peers' connections
    // wait in the listen backlog until the RPC service serves them.
    let (net, inbox, incoming) = Net::bind(tcp::Config::new(identity), listen);
    let storage = |source| StartError::Storage {
        dir: dir.clone(),
        source,
    };
    if tokens::load(&store).map_err(storage)?.is_none() {
        tokens::recover(&net, &config, &id, &store)
            .await
            .map_err(storage)?;
    }
    let transport = |cluster: &Arc<Cluster>| {
        let peers: Arc<dyn Peers> = Arc::new(TcpPeers::new(net.clone(), cluster.clone()));
        Transport {
            peers,
            gossip: GossipTransport::new(net.clone(), inbox),
            requests: Box::new(incoming),
            net: Some(net.clone()),
        }
    };
    let node = start(config, store, id, transport, ChaCha8Rng::from_os_rng()).await?;
    let api = node.api().clone();
    let cfg = &api.config;
    if cfg.auth_enabled() {
        info!("bearer tokens configured: every route but /health needs one");
    } else if cfg.http.ip().is_loopback() {
        info!("no bearer tokens configured: the API is open, bound to loopback only");
    } else {
        warn!(addr = %cfg.http, "no bearer tokens configured and the API is NOT on loopback: anyone who can reach it can read and write");
    }
    let ring = api.cluster.ring();
    info!(
        id = api.replica.id(),
        actor = api.replica.actor(),
        http = %cfg.http,
        https = cfg.tls.is_some(),
        listen = %cfg.listen,
        data_dir = %dir,
        sync = ?cfg.sync,
        tokens = ring.node_tokens(&api.cluster.local().id).len(),
        generation = api.cluster.local().generation,
        cluster = %cfg.cluster_name,
        seeds = ?cfg.seeds,
        "qkvd serving"
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let limits = crate::http::serve::Limits {
        max_connections: cfg.max_connections as usize,
        header_timeout: cfg.http_header_timeout,
        tls,
    };
    let server = crate::http::serve::serve(
        http,
        crate::http::routes(api.clone()),
        limits,
        api.metrics.clone(),
        async move {
            let _ = rx.await;
        },
    );
    let mut server = std::pin::pin!(server);
    tokio::select! {
        _ = &mut server => {}
        _ = shutdown_signal() => {
            let _ = tx.send(());
            if tokio::time::timeout(DRAIN, &mut server).await.is_err() {
                warn!("in-flight requests did not finish within {DRAIN:?}; closing anyway");
            }
        }
    }
    drop(api);
    node.stop()
        .await
        .map_err(|source| StartError::Storage { dir, source })?;
    info!("storage flushed; bye");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Args;

    fn config(id: &str) -> Config {
        let args =
            Args::try_parse_from(["qkvd", "--id", id, "--data-dir", "/nonexistent"]).expect("args");
        Config::from_args(args).expect("config")
    }

    #[tokio::test]
    async fn a_new_data_dir_gets_an_incarnation_that_restarts_keep() {
        let store = Store::memory();
        assert_eq!(resolve_id(&config("n3"), &store).await.expect("id"), "n3");
        let first = load_incarnation(&store).expect("load");
        assert!(first.is_some());
        resolve_id(&config("n3"), &store).await.expect("restart");
        assert_eq!(load_incarnation(&store).expect("load"), first);
    }

    #[tokio::test]
    async fn a_wiped_data_dir_gets_another_incarnation() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let store = Store::memory();
            resolve_id(&config("n3"), &store).await.expect("id");
            seen.insert(load_incarnation(&store).expect("load"));
        }
        // 20 draws of a random u32: a repeat is a one-in-ten-million event.
        assert_eq!(seen.len(), 20);
    }

    #[tokio::test]
    async fn a_data_dir_from_before_incarnations_keeps_the_plain_id() {
        let store = Store::memory();
        store
            .meta_put("node_id", b"n3".to_vec())
            .await
            .expect("put");
        assert_eq!(resolve_id(&config("n3"), &store).await.expect("id"), "n3");
        assert_eq!(load_incarnation(&store).expect("load"), None);
        let actor = crate::replica::actor_name("n3", load_incarnation(&store).expect("load"));
        assert_eq!(actor, "n3");
    }
}
