//! How bucket properties spread without a coordinator: a node that sets a
//! bucket's properties (or first writes to it, which freezes its `n`)
//! announces the record to every other member, and a node that sees a
//! member come up pushes it every record it knows. The receiver keeps the
//! newest record ([`crate::buckets::Buckets::apply_remote`]), so the
//! order of arrival does not matter and a missed announcement is repaired
//! by the next push.

use std::sync::Arc;
use std::time::Duration;

use crate::buckets::{BucketRecord, Buckets};
use crate::cluster::Cluster;
use crate::proto::Request;
use crate::tasks::Tasks;
use crate::transport::Peers;

/// How long an announcement of bucket properties may take per peer.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends bucket records to other members, in the background.
pub struct BucketSync {
    buckets: Arc<Buckets>,
    cluster: Arc<Cluster>,
    peers: Arc<dyn Peers>,
    tasks: Tasks,
}

fn request(r: BucketRecord) -> Request {
    Request::Bucket {
        name: r.name,
        props: r.props,
        has_data: r.has_data,
        updated_ms: r.updated_ms,
    }
}

impl BucketSync {
    /// Announcements of `buckets`' records to `cluster`'s members.
    pub fn new(
        buckets: Arc<Buckets>,
        cluster: Arc<Cluster>,
        peers: Arc<dyn Peers>,
        tasks: Tasks,
    ) -> Self {
        BucketSync {
            buckets,
            cluster,
            peers,
            tasks,
        }
    }

    /// Tells every other member about bucket `name` (after it was set
    /// here). A member that misses it learns it when this node next sees
    /// it come up ([`BucketSync::push_to`]).
    pub fn announce(&self, name: &str) {
        let Some(record) = self.buckets.record(name) else {
            return;
        };
        for peer in self.cluster.others() {
            let (peers, req) = (self.peers.clone(), request(record.clone()));
            self.tasks.spawn(async move {
                if let Err(e) = peers.call(&peer, req, ANNOUNCE_TIMEOUT).await {
                    tracing::debug!(%peer, error = %e, "bucket announcement not delivered");
                }
            });
        }
    }

    /// Sends every bucket this node knows to `peer`, which just came up.
    pub fn push_to(&self, peer: &str) {
        let records = self.buckets.records();
        if records.is_empty() {
            return;
        }
        let (peers, peer) = (self.peers.clone(), peer.to_string());
        self.tasks.spawn(async move {
            for r in records {
                if let Err(e) = peers.call(&peer, request(r), ANNOUNCE_TIMEOUT).await {
                    tracing::debug!(%peer, error = %e, "bucket push not delivered");
                }
            }
        });
    }
}
