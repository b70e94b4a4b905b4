//! A node that lost its disk restores its ranges before it counts again.
//!
//! A node restarted on an empty data dir under an id the ring knows takes
//! its tokens back from its seeds ([`crate::tokens::recover`]) — its place
//! on the ring does not move — but it holds none of the data it held. Were
//! it to count as a replica at once, a read at `r=quorum` could be
//! answered by it and by a replica that missed a write, and report 404
//! for a write acknowledged before the disk was lost. So, as Cassandra's
//! `replace_address` node does, it stays out of every quorum until it has
//! its data back:
//!
//! 1. [`begin`] records, fsynced and *before* the tokens are stored, that
//!    the node is replacing; a restart in the middle resumes (a data dir
//!    with tokens and without the mark is a normal one).
//! 2. While the mark is there the node announces [`REPLACING`]: every
//!    node, itself included, keeps it on the ring but treats it as down
//!    (`cluster`'s module docs): coordinators hint its writes, deliver
//!    them when it is done, and never count it.
//! 3. [`run`] repairs the node: once its seeds have answered (so that it
//!    knows the ring), it runs anti-entropy passes
//!    ([`Repairer::repair_node`]) until one compares *every* range it
//!    replicates with *every* other replica of it without an error. A
//!    write acknowledged by `w` replicas before the loss is on at least
//!    one other replica unless only the lost disk held it, so after such
//!    a pass the node holds every write it held before. While a replica is
//!    down or unreachable the pass is partial and the node keeps waiting
//!    (reads that need it answer 503, which is right: too few replicas
//!    that hold the data are up).
//! 4. [`finish`] removes the mark and the node announces that it counts.

use std::sync::Arc;
use std::time::Duration;

use quorumkv_gossip::AppState;
use quorumkv_gossip::driver::Handle;
use tracing::{info, warn};

use crate::cluster::REPLACING;
use crate::repair::{Repairer, Scope};
use crate::storage::{StorageError, Store};
use crate::tasks::Tasks;

/// Meta key of the mark (`1` while replacing).
const META_KEY: &str = "replacing";

/// How long to wait between two passes that were not complete.
const RETRY: Duration = Duration::from_secs(2);

/// Exchanges answered by peers before the node trusts the ring it knows.
const ACKS: u64 = 2;

/// Whether the data dir is replacing a lost one.
pub fn is_replacing(store: &Store) -> Result<bool, StorageError> {
    Ok(store.meta_get(META_KEY)?.is_some_and(|v| v == b"1"))
}

/// Marks the data dir as replacing (fsynced); call before storing the
/// tokens taken back.
pub async fn begin(store: &Store) -> Result<(), StorageError> {
    store.meta_put_durable(META_KEY, b"1".to_vec()).await
}

/// Removes the mark (fsynced).
pub async fn finish(store: &Store) -> Result<(), StorageError> {
    store.meta_put_durable(META_KEY, b"0".to_vec()).await
}

/// The announcement of a replacing node (`true`) or of one that is done.
pub fn announcement(replacing: bool) -> AppState {
    AppState::Custom(REPLACING.into(), if replacing { "1" } else { "" }.into())
}

/// Repairs until a pass covers every range with every replica, then
/// finishes and announces it (see the module docs). Returns when done or
/// when the node stops.
pub async fn run(repairer: Arc<Repairer>, store: Store, handle: Handle, tasks: Tasks) {
    let mut snapshots = handle.watch();
    let learned = async {
        while snapshots.borrow_and_update().acks < ACKS {
            if snapshots.changed().await.is_err() {
                return false;
            }
        }
        true
    };
    info!(
        "replacing a lost data dir: restoring every range from the other replicas before counting as one"
    );
    tokio::select! {
        ok = learned => if !ok { return },
        _ = tasks.cancelled() => return,
    }
    let mut passes = 0u64;
    loop {
        passes += 1;
        let report = tokio::select! {
            r = repairer.repair_node(Scope::default()) => r,
            _ = tasks.cancelled() => return,
        };
        if report.ranges > 0 && report.ranges_fully_repaired == report.ranges {
            if let Err(e) = finish(&store).await {
                warn!(error = %e, "cannot record that the replacement is done; retrying");
            } else if let Err(e) = handle.set_local(announcement(false)).await {
                warn!(error = %e, "cannot announce that the replacement is done");
                return;
            } else {
                info!(
                    passes,
                    ranges = report.ranges,
                    keys_received = report.totals.keys_received,
                    "replacement done: every range repaired with every other replica; counting as a replica again"
                );
                return;
            }
        } else {
            info!(
                passes,
                ranges = report.ranges,
                fully_repaired = report.ranges_fully_repaired,
                errors = report.errors,
                "replacing: not every range could be repaired with every replica yet; retrying"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = tasks.cancelled() => return,
        }
    }
}
