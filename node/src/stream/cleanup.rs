//! Cleanup: after a change, the nodes that gave ranges up still hold their
//! data. `POST /cluster/cleanup` deletes every key this node is no longer
//! a replica of (per the key's bucket `n`, on the current ring), once no
//! change is in flight. [`run_auto`] does the same on its own once the
//! ring has stayed unchanged for `--cleanup-grace-secs` after a change
//! (the grace leaves time to notice a bad change and undo it while the
//! old copies still exist).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use super::ChangeDriver;
use super::Error;

/// Entries scanned per page.
const PAGE: usize = 1024;

/// What a cleanup removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    /// This node.
    pub node: String,
    /// Keys deleted.
    pub keys_removed: u64,
    /// Their stored bytes.
    pub bytes_removed: u64,
    /// Wall time, ms.
    pub duration_ms: u64,
}

impl ChangeDriver {
    /// Runs [`ChangeDriver::cleanup`] once the ring has stayed the same, with no change in
    /// flight, for `grace` after it last changed (checked every `grace / 4`,
    /// at most every 10 s). A ring that has not changed since this process
    /// started is not cleaned: nothing was given up meanwhile. A cleanup
    /// refused because a change started is retried after the next quiet grace.
    pub async fn run_auto_cleanup(
        self: Arc<Self>,
        grace: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let tick = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let first = self.cluster.fingerprint();
        // The ring last cleaned for (or found at start), and since when the
        // ring has looked as it does now.
        let mut cleaned = first;
        let mut stable: Option<(u64, Instant)> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.cancelled() => return,
            }
            if !self.cluster.in_flight().is_empty() || self.cluster.rings().1.is_some() {
                stable = None;
                continue;
            }
            let now = self.cluster.fingerprint();
            if now == cleaned {
                stable = None;
                continue;
            }
            match stable {
                Some((f, since)) if f == now => {
                    if since.elapsed() < grace {
                        continue;
                    }
                }
                _ => {
                    stable = Some((now, Instant::now()));
                    continue;
                }
            }
            match self.cleanup().await {
                Ok(r) => {
                    tracing::info!(
                        keys = r.keys_removed,
                        bytes = r.bytes_removed,
                        grace_secs = grace.as_secs(),
                        "automatic cleanup after the ring change"
                    );
                    cleaned = now;
                    stable = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "automatic cleanup postponed");
                    stable = None;
                }
            }
        }
    }

    /// Deletes the keys this node does not replicate. 409 `conflict` while a
    /// change is in flight, or when one starts meanwhile (the ring it judged
    /// by is no longer the one keys will be placed by).
    pub async fn cleanup(self: &Arc<Self>) -> Result<CleanupReport, Error> {
        let started = Instant::now();
        let me = self.replica.id().to_string();
        self.changes
            .claim(&self.cluster, &format!("cleanup on {me}"))
            .map_err(|e| Error::Conflict(format!("cannot clean up while {e}")))?;
        let result = self.sweep(&me).await;
        self.changes.release();
        let (keys_removed, bytes_removed) = result?;
        let report = CleanupReport {
            node: me,
            keys_removed,
            bytes_removed,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            keys = report.keys_removed,
            bytes = report.bytes_removed,
            ms = report.duration_ms,
            "cleanup done"
        );
        Ok(report)
    }

    async fn sweep(self: &Arc<Self>, me: &str) -> Result<(u64, u64), Error> {
        let ring = self.cluster.ring();
        let (mut keys, mut bytes) = (0u64, 0u64);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let store = self.replica.store().clone();
            let cursor = after.take();
            let page = crate::storage::blocking(move || {
                store.scan_tokens(0, u64::MAX, cursor.as_deref(), PAGE)
            })
            .await?;
            let full = page.len() == PAGE;
            for e in &page {
                let n = self.buckets.props_for_keys(&e.bucket).n as usize;
                let replicas = ring.preference_list_refs(e.token, n);
                if replicas.contains(&me) || replicas.is_empty() {
                    continue;
                }
                let (current, future) = self.cluster.rings();
                if future.is_some() || !Arc::ptr_eq(&current, &ring) {
                    return Err(Error::Conflict(
                        "the ring changed during cleanup; run it again once the change is done"
                            .into(),
                    ));
                }
                bytes += self.replica.forget(&e.bucket, &e.key).await?;
                keys += 1;
            }
            match page.last() {
                Some(last) if full => after = Some(last.stored_key()),
                _ => return Ok((keys, bytes)),
            }
        }
    }
}
