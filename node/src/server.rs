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
    /// `--internode-ca`, `--internode-cert` or `--internode-key` cannot be
    /// used.
    #[error(transparent)]
    InternodeTls(#[from] tcp::tls::TlsError),
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
        if remaining == 0 {
            // Nothing can write any more: every version this run minted is
            // on disk once this is, so the next run may keep the
            // incarnation (see `begin_run`).
            if let Err(e) = end_run(&self.store).await {
                warn!(error = %e, "cannot record the clean stop; the next start draws a new incarnation");
            }
        }
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
    check_downtime(
        &store,
        config.tombstone_grace,
        config.rejoin_after_grace,
        crate::clock::unix_ms(),
    )
    .map_err(StartError::Identity)?;
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
    let actor = crate::replica::actor_name(&id, begin_run(&store).await.map_err(storage)?);
    let replica = Arc::new(
        Replica::with_row_cache(id.clone(), actor, store.clone(), config.row_cache_bytes)
            .map_err(storage)?
            .with_max_clock_offset(config.max_clock_offset_ms)
            .with_max_key_bytes(config.max_key_bytes),
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
    metrics.ops.set_tombstone_grace(config.tombstone_grace);
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
        replica: replica.clone(),
        hints: hints.clone(),
        tasks: tasks.clone(),
    }));

    // Background work, until shutdown cancels it.
    tasks.spawn(record_up(store.clone(), tasks.token()));
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
            repairer: repairer.clone(),
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
    let stored = match store.meta_get(NODE_ID_KEY).map_err(storage)? {
        None => None,
        Some(b) => Some(stored_id(&b).map_err(|why| {
            StartError::Identity(format!(
                "data dir {dir} holds a corrupt node id ({why}); restore the data dir from a backup, or move it away and start the node on an empty one (it then takes its place back and repairs: docs/OPERATIONS.md, \"Replacing a node's disk\")"
            ))
        })?),
    };
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
            // Both fsynced whatever --sync says: a machine crash must not
            // leave a node that forgets who it is.
            store
                .meta_put_durable(
                    INCARNATION_KEY,
                    rand::random::<u32>().to_be_bytes().to_vec(),
                )
                .await
                .map_err(storage)?;
            store
                .meta_put_durable(NODE_ID_KEY, id.clone().into_bytes())
                .await
                .map_err(storage)?;
            Ok(id)
        }
    }
}

/// Meta key of the data dir's node id (UTF-8, as `--id` spells it).
const NODE_ID_KEY: &str = "node_id";

/// The node id stored in a data dir, checked: bytes that are not UTF-8 or
/// not a valid id are a corrupt data dir, never an id to run under (a
/// lossy read would start the node under another id, as a stranger).
fn stored_id(bytes: &[u8]) -> Result<String, String> {
    let id = std::str::from_utf8(bytes)
        .map_err(|_| format!("{} bytes that are not UTF-8", bytes.len()))?;
    validate_node_id(id).map_err(|_| format!("{id:?} is not a valid node id"))?;
    Ok(id.to_string())
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

/// Meta key recording whether the node is running, and under which sync
/// mode, or stopped cleanly.
const RUN_KEY: &str = "run";
const RUN_STOPPED: &[u8] = b"stopped";
const RUN_PERIODIC: &[u8] = b"running periodic";
const RUN_ALWAYS: &[u8] = b"running always";

/// The incarnation this run mints its dots under, and the record that it
/// runs.
///
/// A dot `(actor, counter)` must name one write only. The counter of a key
/// lives in the key's stored versions; under `--sync periodic` a machine
/// crash can lose the last writes, their counters with them, after other
/// replicas acknowledged and kept them. The same actor would then mint the
/// same dots again for other values, and merging two different versions
/// with one dot keeps only one of them — an acknowledged write silently
/// lost. So when the last run under `--sync periodic` did not stop cleanly
/// (a crash of the process or the machine: they cannot be told apart),
/// this run draws a new incarnation: its dots can collide with nothing
/// minted before. Under `--sync always` a version reaches others only
/// after its fsync, so no dot can be lost that way and the incarnation is
/// kept. The record is fsynced whatever the sync mode.
async fn begin_run(store: &Store) -> Result<Option<u32>, StorageError> {
    let mut incarnation = load_incarnation(store)?;
    if store.meta_get(RUN_KEY)?.as_deref() == Some(RUN_PERIODIC) {
        let fresh = loop {
            let drawn = rand::random::<u32>();
            if Some(drawn) != incarnation {
                break drawn;
            }
        };
        store
            .meta_put_durable(INCARNATION_KEY, fresh.to_be_bytes().to_vec())
            .await?;
        warn!(
            previous = ?incarnation.map(|i| format!("{i:08x}")),
            new = %format!("{fresh:08x}"),
            "the last run under --sync periodic did not stop cleanly: minting under a new incarnation, so that no version dot lost in a crash is ever minted again"
        );
        incarnation = Some(fresh);
    }
    let running = match store.sync_mode() {
        crate::storage::SyncMode::Periodic(_) => RUN_PERIODIC,
        crate::storage::SyncMode::Always => RUN_ALWAYS,
    };
    store.meta_put_durable(RUN_KEY, running.to_vec()).await?;
    Ok(incarnation)
}

/// Records a clean stop (fsynced): the next run keeps the incarnation.
async fn end_run(store: &Store) -> Result<(), StorageError> {
    store.meta_put_durable(RUN_KEY, RUN_STOPPED.to_vec()).await
}

/// Meta key of the last time (unix ms) this data dir was known up.
const LAST_UP_KEY: &str = "last_up_ms";
/// How often the running node refreshes [`LAST_UP_KEY`].
const LAST_UP_EVERY: Duration = Duration::from_secs(60);

/// Refuses to start a data dir that owns ranges and was last up longer
/// than the tombstone grace ago, unless `allow` (`--rejoin-after-grace`):
/// the other replicas may have purged tombstones of deletes it missed, and
/// its old values would come back through read repair and anti-entropy.
/// Wiped, it replaces itself instead (`membership::replace`). `now_ms` is
/// passed in for the tests.
fn check_downtime(store: &Store, grace: Duration, allow: bool, now_ms: u64) -> Result<(), String> {
    let io = |e: StorageError| e.to_string();
    if tokens::load(store)
        .map_err(io)?
        .is_none_or(|t| t.is_empty())
    {
        return Ok(());
    }
    let Some(b) = store.meta_get(LAST_UP_KEY).map_err(io)? else {
        return Ok(());
    };
    let last = <[u8; 8]>::try_from(b.as_slice())
        .map(u64::from_be_bytes)
        .map_err(|_| format!("stored last-up time is {} bytes, not 8", b.len()))?;
    let away = Duration::from_millis(now_ms.saturating_sub(last));
    if away <= grace + LAST_UP_EVERY || allow {
        return Ok(());
    }
    Err(format!(
        "this data dir was last up {} s ago, longer than --tombstone-grace-secs ({} s): other replicas may have purged the tombstones of deletes it missed, and its old values would come back. Wipe the data dir and start the node again under the same id (it then replaces itself: docs/OPERATIONS.md, \"Replacing a node's disk\"), or pass --rejoin-after-grace if every node was down as long (the whole cluster was stopped)",
        away.as_secs(),
        grace.as_secs()
    ))
}

/// Keeps [`LAST_UP_KEY`] fresh while the node runs.
async fn record_up(store: Store, stop: tokio_util::sync::CancellationToken) {
    loop {
        let now = crate::clock::unix_ms();
        if let Err(e) = store
            .meta_put(LAST_UP_KEY, now.to_be_bytes().to_vec())
            .await
        {
            tracing::debug!(error = %e, "cannot record that the node is up");
        }
        tokio::select! {
            _ = tokio::time::sleep(LAST_UP_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The generation grows across restarts: at least the previous one plus
/// one, and the wall-clock second when that is larger (as Cassandra does),
/// so a wiped-and-restarted node still out-ranks its old gossip state.
async fn next_generation(store: &Store) -> Result<u64, StorageError> {
    let prev = match store.meta_get("generation")? {
        None => 0,
        Some(b) => <[u8; 8]>::try_from(b.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| {
                StorageError::Corrupt(format!("stored generation is {} bytes, not 8", b.len()))
            })?,
    };
    let now = crate::clock::unix_secs();
    let generation = prev
        .checked_add(1)
        .ok_or_else(|| StorageError::Corrupt("stored generation is at its maximum".into()))?
        .max(now);
    store
        .meta_put_durable("generation", generation.to_be_bytes().to_vec())
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
    let internode_tls = match &config.internode_tls {
        Some((ca, cert, key)) => Some(tcp::tls::InternodeTls::load(ca, cert, key)?),
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
    match (&config.cluster_secret, &internode_tls) {
        (None, None) => {
            info!(
                "no --cluster-secret-file or --internode-ca: internode peers are not authenticated"
            )
        }
        (_, Some(_)) => {
            info!("internode TLS: peers need a certificate of --internode-ca naming their id")
        }
        (Some(_), None) => {}
    }
    // The transport is bound before the services so that a node without
    // stored tokens can ask its seeds for the ones the cluster knows (a
    // wiped data dir), before gossip announces it anew. Peers' connections
    // wait in the listen backlog until the RPC service serves them.
    let mut transport_config = tcp::Config {
        max_frame: tcp::max_frame_for(config.max_key_bytes),
        ..tcp::Config::new(identity)
    };
    transport_config.tls = internode_tls;
    let (net, inbox, incoming) = Net::bind(transport_config, listen);
    let storage = |source| StartError::Storage {
        dir: dir.clone(),
        source,
    };
    if tokens::load(&store).map_err(storage)?.is_none() {
        let known = tokens::recover(&net, &config, &id).await.map_err(storage)?;
        if !known.is_empty() {
            // The cluster knows this id: this data dir replaces a lost one.
            // Marked before the tokens are stored, so that a crash between
            // the two cannot leave a node that counts without its data.
            membership::replace::begin(&store).await.map_err(storage)?;
            tokens::save(&store, &known).await.map_err(storage)?;
        }
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
    async fn identity_generation_and_tokens_survive_a_machine_crash_under_periodic_sync() {
        use crate::storage::SyncMode;
        use crate::storage::crash::CrashEngine;
        // A flush interval no test reaches: only explicit fsyncs count.
        let periodic = SyncMode::Periodic(Duration::from_secs(3600));
        let engine = CrashEngine::new();
        let store = Store::with_engine(engine.clone(), periodic).expect("store");
        assert_eq!(resolve_id(&config("n3"), &store).await.expect("id"), "n3");
        let incarnation = load_incarnation(&store).expect("load");
        let generation = next_generation(&store).await.expect("generation");
        tokens::save(&store, &[7, 9]).await.expect("tokens");

        let after = Store::with_engine(engine.crash(), periodic).expect("store");
        assert_eq!(
            after.meta_get(NODE_ID_KEY).expect("get").as_deref(),
            Some(&b"n3"[..]),
            "the node id must be on disk"
        );
        assert_eq!(load_incarnation(&after).expect("load"), incarnation);
        assert!(incarnation.is_some());
        assert_eq!(tokens::load(&after).expect("load"), Some(vec![7, 9]));
        assert!(next_generation(&after).await.expect("generation") > generation);
    }

    /// A write acknowledged under `--sync periodic`, kept by another
    /// replica, lost here by a machine crash: the next write of the key
    /// here must not reuse its dot, or merging the two drops one.
    #[tokio::test]
    async fn after_a_crash_under_periodic_sync_a_new_write_never_reuses_a_lost_dot() {
        use crate::buckets::Conflicts;
        use crate::replica::Mutation;
        use crate::storage::SyncMode;
        use crate::storage::crash::CrashEngine;
        use crate::version::Context;
        let periodic = SyncMode::Periodic(Duration::from_secs(3600));
        let put = |v: &str| Mutation::Put {
            data: v.as_bytes().to_vec(),
            content_type: "text/plain".into(),
        };
        let engine = CrashEngine::new();
        let store = Store::with_engine(engine.clone(), periodic).expect("store");
        resolve_id(&config("n1"), &store).await.expect("id");
        let incarnation = begin_run(&store).await.expect("run");
        let replica = Replica::open(
            "n1".into(),
            crate::replica::actor_name("n1", incarnation),
            store,
        )
        .expect("replica");
        let acked = replica
            .write(
                "b",
                b"k",
                &Context::new(),
                put("first"),
                Conflicts::Siblings,
            )
            .await
            .expect("write")
            .object;

        // The machine crashes before the background fsync; the node restarts.
        let store = Store::with_engine(engine.crash(), periodic).expect("store");
        assert!(
            store.get("b", b"k").expect("get").is_none(),
            "the write was lost here"
        );
        let incarnation = begin_run(&store).await.expect("run");
        let replica = Replica::open(
            "n1".into(),
            crate::replica::actor_name("n1", incarnation),
            store,
        )
        .expect("replica");
        let second = replica
            .write(
                "b",
                b"k",
                &Context::new(),
                put("second"),
                Conflicts::Siblings,
            )
            .await
            .expect("write")
            .object;
        let merged = acked.sync(&second);
        let mut values: Vec<&[u8]> = merged.values().iter().map(|v| v.data.as_slice()).collect();
        values.sort();
        assert_eq!(
            values,
            [&b"first"[..], b"second"],
            "both writes survive the merge"
        );
    }

    #[tokio::test]
    async fn a_clean_stop_or_sync_always_keeps_the_incarnation() {
        use crate::storage::SyncMode;
        use crate::storage::crash::CrashEngine;
        // (sync mode, stopped cleanly before the crash)
        for (sync, clean) in [
            (SyncMode::Periodic(Duration::from_secs(3600)), true),
            (SyncMode::Always, true),
            (SyncMode::Always, false),
        ] {
            let engine = CrashEngine::new();
            let store = Store::with_engine(engine.clone(), sync).expect("store");
            resolve_id(&config("n1"), &store).await.expect("id");
            let first = begin_run(&store).await.expect("run");
            if clean {
                end_run(&store).await.expect("stop");
            }
            let store = Store::with_engine(engine.crash(), sync).expect("store");
            assert_eq!(
                begin_run(&store).await.expect("run"),
                first,
                "{sync:?}, clean {clean}"
            );
        }
    }

    #[tokio::test]
    async fn a_data_dir_down_longer_than_the_tombstone_grace_refuses_a_normal_rejoin() {
        let grace = Duration::from_secs(3600);
        let store = Store::memory();
        let now = 10_000_000_000;
        // A new data dir, or one without ranges: nothing to check.
        assert!(check_downtime(&store, grace, false, now).is_ok());
        tokens::save(&store, &[1, 2]).await.expect("tokens");
        assert!(
            check_downtime(&store, grace, false, now).is_ok(),
            "never recorded up"
        );
        let up_at = |ms: u64| ms.to_be_bytes().to_vec();
        store
            .meta_put(LAST_UP_KEY, up_at(now - 1_000))
            .await
            .expect("put");
        assert!(
            check_downtime(&store, grace, false, now).is_ok(),
            "a plain restart"
        );
        store
            .meta_put(LAST_UP_KEY, up_at(now - 2 * 3_600_000))
            .await
            .expect("put");
        let refused = check_downtime(&store, grace, false, now).expect_err("down past the grace");
        assert!(refused.contains("--tombstone-grace-secs"), "{refused}");
        assert!(
            check_downtime(&store, grace, true, now).is_ok(),
            "--rejoin-after-grace"
        );
    }

    #[tokio::test]
    async fn a_corrupt_node_id_is_a_clear_start_error() {
        for bad in [&b"n\xff3"[..], b"", b"n3/../n4", b"n3\n"] {
            let store = Store::memory();
            store
                .meta_put(NODE_ID_KEY, bad.to_vec())
                .await
                .expect("put");
            let e = resolve_id(&config("n3"), &store)
                .await
                .expect_err("a corrupt id must not start");
            assert!(
                matches!(&e, StartError::Identity(m) if m.contains("corrupt node id")),
                "{bad:?}: {e}"
            );
        }
    }

    #[tokio::test]
    async fn a_data_dir_from_before_incarnations_keeps_the_plain_id() {
        let store = Store::memory();
        store
            .meta_put(NODE_ID_KEY, b"n3".to_vec())
            .await
            .expect("put");
        assert_eq!(resolve_id(&config("n3"), &store).await.expect("id"), "n3");
        assert_eq!(load_incarnation(&store).expect("load"), None);
        let actor = crate::replica::actor_name("n3", load_incarnation(&store).expect("load"));
        assert_eq!(actor, "n3");
    }
}
