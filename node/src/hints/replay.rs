//! Replay and expiry: how stored hints leave the store, by delivery or
//! by age, and the replayer task that drives both.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::layout::{check_target, decode_record, parse_key, successor, target_end, target_start};
use super::{
    DeliverFn, EXPIRE_EVERY, Hint, Hints, IsUpFn, REPLAY_PAGE, REPLAY_PAGE_BYTES, ReplayReport,
    SCAN_PAGE, Target, sub_pending,
};
use crate::storage::{Op, Partition, StorageError};

/// Hints one pass decided to delete, written as one batch.
#[derive(Default)]
struct Deletions {
    keys: Vec<Vec<u8>>,
    /// How many of `keys` are counted in the target's pending count (all
    /// but keys outside the layout, which `open` did not count either).
    counted: u64,
    delivered: u64,
    bytes: u64,
    expired: u64,
    corrupt: u64,
}

impl Deletions {
    fn delivered(&mut self, key: Vec<u8>, bytes: u64) {
        self.keys.push(key);
        self.counted += 1;
        self.delivered += 1;
        self.bytes += bytes;
    }

    fn expired(&mut self, key: Vec<u8>) {
        self.keys.push(key);
        self.counted += 1;
        self.expired += 1;
    }

    /// A hint whose key parses but whose value does not decode.
    fn corrupt(&mut self, key: Vec<u8>) {
        self.keys.push(key);
        self.counted += 1;
        self.corrupt += 1;
    }

    /// A key outside the layout: never counted as pending.
    fn junk(&mut self, key: Vec<u8>) {
        self.keys.push(key);
        self.corrupt += 1;
    }
}

impl Hints {
    /// Delivers `target`'s hints, oldest first, deleting each one
    /// delivered; expired and undecodable hints are deleted without
    /// delivery. Stops at the first failed delivery (reported in
    /// [`ReplayReport::failure`]; that hint stays). Paced by the node's
    /// replay throttle. Waits while another replay of `target` runs.
    ///
    /// Deletions are written once per page of hints, so a crash (or a
    /// storage error, returned as `Err`) can leave delivered hints stored,
    /// to be delivered again: harmless, since the target merges.
    pub async fn replay<F, Fut>(
        &self,
        target: &str,
        deliver: F,
    ) -> Result<ReplayReport, StorageError>
    where
        F: FnMut(Hint) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        check_target(target)?;
        let t = self.target(target);
        let _guard = t.lock.lock().await;
        self.replay_locked(target, &t, deliver, None).await
    }

    /// The replay proper; the caller holds `t.lock`.
    async fn replay_locked<F, Fut>(
        &self,
        target: &str,
        t: &Target,
        mut deliver: F,
        stop: Option<CancellationToken>,
    ) -> Result<ReplayReport, StorageError>
    where
        F: FnMut(Hint) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut report = ReplayReport::default();
        let end = target_end(target);
        let mut cursor = target_start(target);
        loop {
            let page = self.store.raw_scan_within(
                Partition::Hints,
                &cursor,
                Some(&end),
                REPLAY_PAGE,
                REPLAY_PAGE_BYTES,
            )?;
            // A page cut by neither bound is the last one.
            let bytes: usize = page.iter().map(|(_, v)| v.len()).sum();
            let last_page = page.len() < REPLAY_PAGE && bytes < REPLAY_PAGE_BYTES;
            let mut done = Deletions::default();
            let mut halt = false;
            for (k, v) in page {
                cursor = successor(&k);
                let Some(created_ms) = parse_key(&k).map(|p| p.created_ms) else {
                    tracing::warn!(node = target, "deleting a hint key outside the layout");
                    done.junk(k);
                    continue;
                };
                if self.is_expired(created_ms) {
                    done.expired(k);
                    continue;
                }
                let (bucket, key, object) = match decode_record(&v) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(node = target, error = %e, "deleting an undecodable hint");
                        done.corrupt(k);
                        continue;
                    }
                };
                let size = (k.len() + v.len()) as u64;
                let wait = self.throttle.reserve_at(size, self.clock.monotonic());
                if !wait.is_zero()
                    && unless_stopped(self.clock.sleep(wait), stop.as_ref())
                        .await
                        .is_none()
                {
                    report.stopped = true;
                    halt = true;
                    break;
                }
                let hint = Hint {
                    target: target.to_owned(),
                    created_ms,
                    bucket,
                    key,
                    object,
                };
                match unless_stopped(deliver(hint), stop.as_ref()).await {
                    Some(Ok(())) => done.delivered(k, size),
                    Some(Err(e)) => {
                        self.stats.replay_failures.fetch_add(1, Ordering::Relaxed);
                        report.failure = Some(e);
                        halt = true;
                        break;
                    }
                    None => {
                        report.stopped = true;
                        halt = true;
                        break;
                    }
                }
            }
            report.delivered += done.delivered;
            report.bytes += done.bytes;
            report.expired += done.expired;
            report.corrupt += done.corrupt;
            self.apply(t, done).await?;
            if halt || last_page {
                return Ok(report);
            }
        }
    }

    /// Deletes every expired hint of every target; returns how many.
    /// Targets being replayed right now are skipped: their replay deletes
    /// their expired hints itself. Keys outside the hint layout are deleted
    /// too (counted in [`HintStats::corrupt`], not in the result).
    pub async fn expire(&self) -> Result<u64, StorageError> {
        let mut total = 0;
        let mut cursor = Vec::new();
        loop {
            let first = self
                .store
                .raw_scan_keys(Partition::Hints, &cursor, None, 1)?;
            let Some(k) = first.into_iter().next() else {
                return Ok(total);
            };
            let Some(name) = parse_key(&k).map(|p| p.target.to_owned()) else {
                tracing::warn!("deleting a hint key outside the layout");
                cursor = successor(&k);
                let mut junk = Deletions::default();
                junk.junk(k);
                self.apply(&Target::default(), junk).await?;
                continue;
            };
            // One target at a time: skip to the next target's range after.
            cursor = target_end(&name);
            let t = self.target(&name);
            let Ok(_guard) = t.lock.try_lock() else {
                continue;
            };
            total += self.expire_target(&name, &t).await?;
        }
    }

    /// Deletes `target`'s expired hints; the caller holds `t.lock`.
    async fn expire_target(&self, target: &str, t: &Target) -> Result<u64, StorageError> {
        let end = target_end(target);
        let mut cursor = target_start(target);
        let mut total = 0;
        loop {
            let page =
                self.store
                    .raw_scan_keys(Partition::Hints, &cursor, Some(&end), SCAN_PAGE)?;
            let last_page = page.len() < SCAN_PAGE;
            let mut done = Deletions::default();
            let mut young = false;
            for k in page {
                cursor = successor(&k);
                match parse_key(&k).map(|p| p.created_ms) {
                    None => done.junk(k),
                    Some(created) if self.is_expired(created) => done.expired(k),
                    // Time order: every later hint is younger still.
                    Some(_) => {
                        young = true;
                        break;
                    }
                }
            }
            total += done.expired;
            self.apply(t, done).await?;
            if young || last_page {
                return Ok(total);
            }
        }
    }

    /// Runs until `stop` is cancelled: every
    /// `check_every`, starts a replay for each target with pending hints
    /// that `is_up` says is up and that is not being replayed already; runs
    /// [`Hints::expire`] at start and every minute. Replays of different
    /// targets run as concurrent tasks (see the module docs); on stop, each
    /// ends after its current hint and writes its deletions before this
    /// returns.
    pub async fn run_replayer(
        self: Arc<Self>,
        is_up: IsUpFn,
        deliver: DeliverFn,
        stop: CancellationToken,
    ) {
        let mut running: JoinSet<()> = JoinSet::new();
        let mut last_expiry: Option<Duration> = None;
        loop {
            if stop.is_cancelled() {
                break;
            }
            while let Some(joined) = running.try_join_next() {
                log_join(joined);
            }
            let now = self.clock.monotonic();
            if last_expiry.is_none_or(|at| now.saturating_sub(at) >= EXPIRE_EVERY) {
                last_expiry = Some(now);
                match self.expire().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(hints = n, "expired hints deleted"),
                    Err(e) => tracing::warn!(error = %e, "expiring hints failed"),
                }
            }
            for name in self.pending().into_keys() {
                if !is_up(&name) {
                    continue;
                }
                let t = self.target(&name);
                let Ok(guard) = t.lock.clone().try_lock_owned() else {
                    continue;
                };
                let hints = self.clone();
                let deliver = deliver.clone();
                let stop = stop.clone();
                running.spawn(async move {
                    let _guard = guard;
                    let result = hints
                        .replay_locked(&name, &t, |h| deliver(h), Some(stop))
                        .await;
                    log_replay(&name, result);
                });
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                () = self.clock.sleep(self.config.check_every) => {}
            }
        }
        while let Some(joined) = running.join_next().await {
            log_join(joined);
        }
    }

    /// Writes a batch of deletions, then lowers the count and the stats.
    async fn apply(&self, t: &Target, done: Deletions) -> Result<(), StorageError> {
        if done.keys.is_empty() {
            return Ok(());
        }
        let ops = done
            .keys
            .into_iter()
            .map(|key| Op::Delete {
                partition: Partition::Hints,
                key,
            })
            .collect();
        self.store.write(ops).await?;
        sub_pending(t, done.counted);
        let s = &self.stats;
        s.delivered.fetch_add(done.delivered, Ordering::Relaxed);
        s.expired.fetch_add(done.expired, Ordering::Relaxed);
        s.corrupt.fetch_add(done.corrupt, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs `fut` unless `stop` is cancelled first (`None` then).
async fn unless_stopped<T>(
    fut: impl Future<Output = T>,
    stop: Option<&CancellationToken>,
) -> Option<T> {
    match stop {
        None => Some(fut.await),
        Some(stop) => tokio::select! {
            v = fut => Some(v),
            _ = stop.cancelled() => None,
        },
    }
}

fn log_replay(target: &str, result: Result<ReplayReport, StorageError>) {
    match result {
        Ok(r) if r.delivered + r.expired + r.corrupt > 0 || r.failure.is_some() => {
            tracing::info!(
                node = target,
                delivered = r.delivered,
                bytes = r.bytes,
                expired = r.expired,
                corrupt = r.corrupt,
                failure = r.failure.as_deref(),
                stopped = r.stopped,
                "hint replay"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(node = target, error = %e, "hint replay failed"),
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        tracing::error!(error = %e, "hint replay task failed");
    }
}
