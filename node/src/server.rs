//! Starting and stopping a node: open the store, establish the node's
//! identity (id, generation, tokens), bind the ports, serve until SIGINT or
//! SIGTERM, then stop accepting, finish in-flight requests, flush storage.
//!
//! Every reason not to start (unusable data dir, a port in use, a data dir
//! that belongs to another node id) becomes one [`StartError`] line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::bucket_sync::BucketSync;
use crate::buckets::Buckets;
use crate::cluster::{Cluster, LocalNode};
use crate::config::{Config, Engine, validate_node_id};
use crate::coordinator::{self, Coordinator};
use crate::error::ApiError;
use crate::faults::Faults;
use crate::hints::{HintConfig, Hints};
use crate::membership;
use crate::metrics::Metrics;
use crate::repair::{self, Repairer};
use crate::replica::Replica;
use crate::storage::{StorageError, Store};
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
}

/// Everything a running node shares between its tasks.
pub struct Node {
    /// Resolved configuration.
    pub config: Config,
    /// This node's replica of the data.
    pub replica: Arc<Replica>,
    /// Bucket properties.
    pub buckets: Arc<Buckets>,
    /// Membership and ring.
    pub cluster: Arc<Cluster>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Injected faults (only with `--fault-injection`).
    pub faults: Arc<Faults>,
    /// The other nodes, over internode RPC.
    pub peers: Arc<dyn Peers>,
    /// The TCP transport underneath `peers` (its counters), when real.
    pub net: Option<Arc<Net>>,
    /// Hints this node holds for replicas that missed writes.
    pub hints: Arc<Hints>,
    /// Cluster changes: the one this node drives, the streams it runs.
    pub changes: crate::stream::Changes,
    /// Anti-entropy.
    pub repairer: Arc<Repairer>,
    /// Quorum reads and writes.
    pub coordinator: Arc<Coordinator>,
    /// Spreads bucket properties to the other members.
    pub bucket_sync: Arc<BucketSync>,
    inflight: Arc<Semaphore>,
}

impl Node {
    /// Admits one request, or refuses with `overloaded` when
    /// `--max-inflight` requests are already being served.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.inflight.clone().try_acquire_owned().map_err(|_| {
            ApiError::Overloaded(format!(
                "{} requests in flight (--max-inflight); retry with backoff",
                self.config.max_inflight
            ))
        })
    }

    /// Builds a node over an open store: identity, buckets, cluster view;
    /// `peers` makes its transport handle once the cluster view (which
    /// knows the peers' addresses) exists.
    pub async fn open(
        config: Config,
        store: Store,
        peers: impl FnOnce(&Arc<Cluster>) -> (Arc<dyn Peers>, Option<Arc<Net>>),
    ) -> Result<Node, StartError> {
        let dir = config.data_dir.display().to_string();
        let storage = |source| StartError::Storage {
            dir: dir.clone(),
            source,
        };
        let id = resolve_id(&config, &store).await?;
        let generation = next_generation(&store).await.map_err(storage)?;
        // A node without tokens chooses them once it has learned the ring
        // from gossip (`membership::start`); until then it is standby.
        let tokens = tokens::load(&store).map_err(storage)?.unwrap_or_default();
        let buckets =
            Arc::new(Buckets::load(store.clone(), &id, config.default_n).map_err(storage)?);
        let hints = Hints::open(
            store.clone(),
            HintConfig {
                enabled: config.hinted_handoff,
                window: config.max_hint_window,
                max_per_target: config.max_hints_per_target,
                replay_bytes_per_sec: config.hint_replay_bytes_per_sec,
                check_every: Duration::from_secs(1),
            },
        )
        .map_err(storage)?;
        let actor = crate::replica::actor_name(&id, load_incarnation(&store).map_err(storage)?);
        let replica = Arc::new(
            Replica::with_row_cache(id.clone(), actor, store, config.row_cache_bytes)
                .map_err(storage)?,
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
        let (peers, net) = peers(&cluster);
        let hints = Arc::new(hints);
        let metrics = Arc::new(Metrics::new());
        let faults = Arc::new(Faults::new(config.fault_injection));
        let bucket_sync = Arc::new(BucketSync::new(
            buckets.clone(),
            cluster.clone(),
            peers.clone(),
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
        Ok(Node {
            inflight: Arc::new(Semaphore::new(config.max_inflight as usize)),
            replica,
            buckets,
            cluster,
            metrics,
            faults,
            peers,
            net,
            coordinator,
            bucket_sync,
            hints,
            changes: Default::default(),
            repairer,
            config,
        })
    }
}

async fn resolve_id(config: &Config, store: &Store) -> Result<String, StartError> {
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
    // The transport starts before the node so that a node without stored
    // tokens can ask its seeds for the ones the cluster knows (a wiped
    // data dir), before gossip announces it anew; until the handler is
    // set, peers' requests are refused as overloaded.
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
    let peers_net = net.clone();
    let node = Arc::new(
        Node::open(config, store.clone(), move |cluster| {
            let peers: Arc<dyn Peers> = Arc::new(TcpPeers::new(peers_net.clone(), cluster.clone()));
            (peers, Some(peers_net))
        })
        .await?,
    );
    let cfg = &node.config;
    Box::new(incoming).serve(Arc::new(crate::peers::RpcHandler(Arc::downgrade(&node))));
    let (stop_background, background_stopped) = tokio::sync::watch::channel(false);
    let replayer = tokio::spawn(node.hints.clone().run_replayer(
        crate::peers::hint_target_is_up(&node),
        crate::peers::hint_delivery(&node),
        background_stopped.clone(),
    ));
    if let Some(every) = cfg.anti_entropy_interval {
        tokio::spawn(
            node.repairer
                .clone()
                .run_scheduler(every, background_stopped),
        );
    }
    if let Some(grace) = cfg.cleanup_grace {
        tokio::spawn(crate::stream::cleanup::run_auto(
            Arc::downgrade(&node),
            grace,
            stop_background.subscribe(),
        ));
    }
    // Gossip starts; a node without tokens joins the ring in the background
    // (a new cluster's first node before the API serves: see membership).
    let mut membership = membership::start(
        node.clone(),
        GossipTransport::new(net.clone(), inbox),
        &store,
    )
    .await?;
    if cfg.auth_enabled() {
        info!("bearer tokens configured: every route but /health needs one");
    } else if cfg.http.ip().is_loopback() {
        info!("no bearer tokens configured: the API is open, bound to loopback only");
    } else {
        warn!(addr = %cfg.http, "no bearer tokens configured and the API is NOT on loopback: anyone who can reach it can read and write");
    }
    let ring = node.cluster.ring();
    info!(
        id = node.replica.id(),
        actor = node.replica.actor(),
        http = %cfg.http,
        listen = %cfg.listen,
        data_dir = %dir,
        sync = ?cfg.sync,
        tokens = ring.node_tokens(&node.cluster.local().id).len(),
        generation = node.cluster.local().generation,
        cluster = %cfg.cluster_name,
        seeds = ?cfg.seeds,
        "qkvd serving"
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = warp::serve(crate::http::routes(node.clone()))
        .incoming(http)
        .graceful(async move {
            let _ = rx.await;
        })
        .run();
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
    stop_background.send_replace(true);
    if tokio::time::timeout(Duration::from_secs(5), replayer)
        .await
        .is_err()
    {
        warn!("hint replay did not stop within 5 s");
    }
    membership.stop();
    net.shutdown();
    store
        .close()
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
