//! The operator's figures of `/metrics` (docs/API.md), for the dashboard
//! and alert rules of deploy/ (docs/OPERATIONS.md, "Deploying"): what the
//! failure detector thinks of each peer, the data dir's file system, the
//! anti-entropy pass and the cluster-change streams under way, and the
//! settings an alert compares against. The settings and the start time
//! are set once; the rest are refreshed when `/metrics` is rendered, so
//! serving requests pays nothing for them.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::PeerLabels;

/// Every operator gauge.
pub struct OpsMetrics {
    /// The failure detector's phi per peer.
    pub peer_phi: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// 1 while the failure detector holds a peer up, else 0.
    pub peer_up: Family<PeerLabels, Gauge>,
    /// Bytes available to the node on the data dir's file system.
    pub data_dir_free: Gauge,
    /// Size of the data dir's file system.
    pub data_dir_size: Gauge,
    /// `--tombstone-grace-secs`.
    pub tombstone_grace: Gauge,
    /// When the process started (unix seconds).
    pub start_time: Gauge,
    /// 1 while an anti-entropy pass runs.
    pub repair_running: Gauge,
    /// (range, peer) comparisons of the pass under way (or the last one).
    pub repair_comparisons: Gauge,
    /// Of those, the ones done.
    pub repair_comparisons_done: Gauge,
    /// Cluster-change streams this node receives that are not done.
    pub streams_active: Gauge,
    /// Bytes those streams have received so far.
    pub stream_bytes: Gauge,
    /// What their sources held when they started (the estimate to reach).
    pub stream_bytes_expected: Gauge,
}

impl OpsMetrics {
    /// Creates the gauges and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> OpsMetrics {
        let m = OpsMetrics {
            peer_phi: Family::default(),
            peer_up: Family::default(),
            data_dir_free: Gauge::default(),
            data_dir_size: Gauge::default(),
            tombstone_grace: Gauge::default(),
            start_time: Gauge::default(),
            repair_running: Gauge::default(),
            repair_comparisons: Gauge::default(),
            repair_comparisons_done: Gauge::default(),
            streams_active: Gauge::default(),
            stream_bytes: Gauge::default(),
            stream_bytes_expected: Gauge::default(),
        };
        // The host's clock, not the node's (which fault injection may skew).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        m.start_time.set(clamp(now));
        let r = registry;
        r.register(
            "peer_phi",
            "The failure detector's phi for each peer (convicted at --phi-threshold)",
            m.peer_phi.clone(),
        );
        r.register(
            "peer_up",
            "1 while the failure detector holds the peer up, 0 when down",
            m.peer_up.clone(),
        );
        r.register(
            "data_dir_free_bytes",
            "Bytes available to the node on the file system of --data-dir",
            m.data_dir_free.clone(),
        );
        r.register(
            "data_dir_size_bytes",
            "Size of the file system of --data-dir",
            m.data_dir_size.clone(),
        );
        r.register(
            "tombstone_grace_seconds",
            "--tombstone-grace-secs: every range must be repaired within it",
            m.tombstone_grace.clone(),
        );
        r.register(
            "start_time_seconds",
            "When this node's process started (unix time)",
            m.start_time.clone(),
        );
        r.register(
            "repair_pass_running",
            "1 while an anti-entropy pass runs on this node",
            m.repair_running.clone(),
        );
        r.register(
            "repair_pass_comparisons",
            "(range, peer) comparisons of the anti-entropy pass under way, or of the last one",
            m.repair_comparisons.clone(),
        );
        r.register(
            "repair_pass_comparisons_done",
            "Comparisons of that pass done so far",
            m.repair_comparisons_done.clone(),
        );
        r.register(
            "streams_active",
            "Cluster-change streams this node receives that are not done",
            m.streams_active.clone(),
        );
        r.register(
            "stream_bytes",
            "Bytes the streams not done have received so far",
            m.stream_bytes.clone(),
        );
        r.register(
            "stream_bytes_expected",
            "What the sources of the streams not done held when they started",
            m.stream_bytes_expected.clone(),
        );
        m
    }

    /// Sets each peer's phi and up/down from `(id, up, phi)`.
    pub fn sync_peers(&self, peers: impl IntoIterator<Item = (String, bool, f64)>) {
        for (peer, up, phi) in peers {
            let labels = PeerLabels { peer };
            self.peer_phi.get_or_create(&labels).set(phi);
            self.peer_up.get_or_create(&labels).set(i64::from(up));
        }
    }

    /// Sets the data dir's free and total bytes (left as they were when
    /// the file system cannot be asked).
    pub fn sync_data_dir(&self, dir: &Path) {
        if let Some((free, size)) = fs_space(dir) {
            self.data_dir_free.set(clamp(free));
            self.data_dir_size.set(clamp(size));
        }
    }

    /// Sets the anti-entropy figures: whether a pass runs, its (range,
    /// peer) comparisons and the ones done.
    pub fn sync_repair(&self, running: bool, comparisons: u64, done: u64) {
        self.repair_running.set(i64::from(running));
        self.repair_comparisons.set(clamp(comparisons));
        self.repair_comparisons_done.set(clamp(done));
    }

    /// Sets `--tombstone-grace-secs` (once: it does not change).
    pub fn set_tombstone_grace(&self, grace: std::time::Duration) {
        self.tombstone_grace.set(clamp(grace.as_secs()));
    }

    /// Sets the stream figures from `(active, bytes, expected)`, as
    /// `Changes::stream_totals` counts them.
    pub fn sync_streams(&self, (active, bytes, expected): (u64, u64, u64)) {
        self.streams_active.set(clamp(active));
        self.stream_bytes.set(clamp(bytes));
        self.stream_bytes_expected.set(clamp(expected));
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// (available, total) bytes of the file system holding `dir`.
fn fs_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is written by the call
    // before it is read (only when it returns 0).
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (u32 on some).
    #[allow(clippy::unnecessary_cast)]
    let (frsize, avail, blocks) = (st.f_frsize as u64, st.f_bavail as u64, st.f_blocks as u64);
    Some((avail.saturating_mul(frsize), blocks.saturating_mul(frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_data_dir_and_streams_render() {
        let mut registry = Registry::with_prefix("qkv");
        let m = OpsMetrics::register(&mut registry);
        m.sync_peers([("n2".into(), true, 0.5), ("n3".into(), false, 9.25)]);
        let dir = tempfile::tempdir().expect("tempdir");
        m.sync_data_dir(dir.path());
        m.sync_streams((1, 10, 40));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            r#"qkv_peer_phi{peer="n3"} 9.25"#,
            r#"qkv_peer_up{peer="n2"} 1"#,
            r#"qkv_peer_up{peer="n3"} 0"#,
            "qkv_streams_active 1",
            "qkv_stream_bytes 10",
            "qkv_stream_bytes_expected 40",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(m.data_dir_size.get() > 0 && m.data_dir_free.get() <= m.data_dir_size.get());
        assert!(m.start_time.get() > 1_600_000_000);
    }
}
