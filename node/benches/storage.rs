//! Storage write benchmark: what group commit buys.
//!
//! For each sync mode and writer count, concurrent tasks `put` unique keys
//! into a fresh fjall store for a fixed time; the bench prints acknowledged
//! writes per second, fsyncs per second, writes per fsync and write latency
//! percentiles. It also measures the disk's raw single-thread fdatasync rate
//! as the baseline group commit has to beat.
//!
//! Run: `cargo bench -p quorumkv-node --bench storage` (needs
//! `[[bench]] name = "storage", harness = false` in node/Cargo.toml).
//! Environment: `QKV_BENCH_SECS` (default 3), `QKV_BENCH_VALUE_BYTES`
//! (default 100), `QKV_BENCH_WRITERS` (comma list, default `1,8,32,64`),
//! `QKV_BENCH_DIR` (default: the system temp dir — put it on the disk you
//! care about).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quorumkv_node::storage::{Store, SyncMode};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tempdir() -> tempfile::TempDir {
    match std::env::var("QKV_BENCH_DIR") {
        Ok(base) => tempfile::tempdir_in(base).expect("QKV_BENCH_DIR is usable"),
        Err(_) => tempfile::tempdir().expect("temp dir is usable"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Raw fdatasync rate of one thread appending 100-byte records to one file.
fn raw_fdatasync_rate(secs: f64) -> f64 {
    let dir = tempdir();
    let mut f = std::fs::File::create(dir.path().join("f")).expect("create file");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&[7u8; 100]).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn run(mode: SyncMode, writers: usize, secs: f64, value_bytes: usize) {
    let dir = tempdir();
    let store = Store::open(dir.path(), mode).expect("open store");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let value = vec![b'v'; value_bytes];
                let mut lat = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    let t = Instant::now();
                    store
                        .put("bench", key.as_bytes(), value.clone())
                        .await
                        .expect("put");
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let before = store.commit_stats();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = store.commit_stats();
    store.close().await.expect("close");
    lat.sort_unstable();
    let writes = (after.writes - before.writes) as f64;
    let syncs = (after.syncs - before.syncs) as f64;
    println!(
        "{:<16} writers={:<3} {:>9.0} writes/s {:>7.0} fsyncs/s {:>7.1} writes/fsync  \
         p50={:>8.2?} p99={:>8.2?} p99.9={:>8.2?} max_group={}",
        match mode {
            SyncMode::Always => "always".to_string(),
            SyncMode::Periodic(d) => format!("periodic({d:?})"),
        },
        writers,
        writes / elapsed,
        syncs / elapsed,
        if syncs > 0.0 {
            writes / syncs
        } else {
            f64::INFINITY
        },
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        after.max_group,
    );
}

fn main() {
    let secs: f64 = env_or("QKV_BENCH_SECS", 3.0);
    let value_bytes: usize = env_or("QKV_BENCH_VALUE_BYTES", 100);
    let writers: Vec<usize> = std::env::var("QKV_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,8,32,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "storage bench: {secs}s per run, {value_bytes}-byte values, fjall under {}",
        tempdir()
            .path()
            .parent()
            .map_or("?".into(), |p| p.display().to_string())
    );
    println!(
        "raw single-thread fdatasync: {:.0}/s",
        raw_fdatasync_rate(secs.min(2.0))
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    for mode in [SyncMode::Always, SyncMode::Periodic(Duration::from_secs(1))] {
        for &w in &writers {
            rt.block_on(run(mode, w, secs, value_bytes));
        }
    }
}
