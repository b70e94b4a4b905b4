//! Turning a [`Measured`] run into figures: ops/s, percentiles in
//! milliseconds, errors by kind; printed as text or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::workload::{Hist, Measured};

/// Figures of one operation type.
#[derive(Debug, Clone, Serialize)]
pub struct OpFigures {
    /// Successful operations in the window.
    pub ops: u64,
    /// `ops` per second of the window.
    pub ops_per_sec: f64,
    /// Latency percentiles and extremes, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Figures of one target (a node, or the ceiling).
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    /// What was measured (`target` or `ceiling`).
    pub label: String,
    /// The URLs it ran against.
    pub urls: Vec<String>,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Successful operations, reads and writes.
    pub ops: u64,
    /// `ops` per second.
    pub ops_per_sec: f64,
    /// Reads.
    pub read: OpFigures,
    /// Writes.
    pub write: OpFigures,
    /// Failures by kind (HTTP status, `connection`, `timeout`).
    pub errors: BTreeMap<String, u64>,
    /// Reads answered 404 (counted as successes).
    pub not_found: u64,
    /// Reads answered with siblings (counted as successes).
    pub siblings: u64,
    /// Preload: keys written, seconds, writes per second, failures.
    pub preload: Option<PreloadFigures>,
    /// The generator's CPU use in the window, in percent of one core
    /// (near 100 per generator thread: the figures are generator-bound).
    pub generator_cpu_pct: Option<f64>,
    /// The server's CPU use in the window, in percent of one core (the
    /// in-process ceiling, or a node given by `--server-pid`).
    pub server_cpu_pct: Option<f64>,
}

/// The preload phase.
#[derive(Debug, Clone, Serialize)]
pub struct PreloadFigures {
    /// Keys written.
    pub keys: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// Writes per second.
    pub ops_per_sec: f64,
    /// Failed writes.
    pub failed: u64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn op(h: &Hist, window: Duration) -> OpFigures {
    let ops = h.len();
    OpFigures {
        ops,
        ops_per_sec: ops_per_sec(ops, window),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        mean_ms: h.mean() / 1000.0,
        max_ms: ms(h.max()),
    }
}

/// `ops` over `window`, 0 for an empty window.
pub fn ops_per_sec(ops: u64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs > 0.0 { ops as f64 / secs } else { 0.0 }
}

/// Computes the figures of a run.
pub fn figures(label: &str, urls: &[String], m: &Measured) -> RunFigures {
    let secs = m.window.as_secs_f64();
    let read = op(&m.read, m.window);
    let write = op(&m.write, m.window);
    let ops = read.ops + write.ops;
    RunFigures {
        label: label.to_string(),
        urls: urls.to_vec(),
        window_s: secs,
        ops,
        ops_per_sec: ops_per_sec(ops, m.window),
        read,
        write,
        errors: m.errors.clone(),
        not_found: m.not_found,
        siblings: m.siblings,
        preload: m.preload.map(|(keys, d, failed)| PreloadFigures {
            keys,
            seconds: d.as_secs_f64(),
            ops_per_sec: ops_per_sec(keys, d),
            failed,
        }),
        generator_cpu_pct: m
            .generator_cpu
            .filter(|_| secs > 0.0)
            .map(|c| c.as_secs_f64() / secs * 100.0),
        server_cpu_pct: m
            .server_cpu
            .filter(|_| secs > 0.0)
            .map(|c| c.as_secs_f64() / secs * 100.0),
    }
}

/// The human-readable block of one run.
pub fn render(f: &RunFigures) -> String {
    let mut s = format!("{} ({})\n", f.label, f.urls.join(", "));
    if let Some(p) = &f.preload {
        s += &format!(
            "  preload  {} keys in {:.1} s ({:.0} writes/s{})\n",
            p.keys,
            p.seconds,
            p.ops_per_sec,
            if p.failed > 0 {
                format!(", {} failed", p.failed)
            } else {
                String::new()
            }
        );
    }
    s += &format!(
        "  total    {:>10.0} ops/s  ({} ops in {:.1} s)\n",
        f.ops_per_sec, f.ops, f.window_s
    );
    for (name, o) in [("read", &f.read), ("write", &f.write)] {
        s += &format!(
            "  {name:<6}   {:>10.0} ops/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms\n",
            o.ops_per_sec, o.p50_ms, o.p99_ms, o.p999_ms, o.max_ms
        );
    }
    let errors = if f.errors.is_empty() {
        "none".to_string()
    } else {
        f.errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    s += &format!(
        "  errors   {errors}   (reads: {} not found, {} with siblings)\n",
        f.not_found, f.siblings
    );
    let pct = |p: Option<f64>| p.map_or("?".to_string(), |p| format!("{p:.0}%"));
    s += &format!(
        "  cpu      generator {}, server {} (of one core)\n",
        pct(f.generator_cpu_pct),
        pct(f.server_cpu_pct)
    );
    s
}

/// A warning when the generator used nearly all of its `threads` cores:
/// then the figures measure the generator, not the server.
pub fn saturation_warning(f: &RunFigures, threads: usize) -> Option<String> {
    let pct = f.generator_cpu_pct?;
    (pct > 90.0 * threads as f64).then(|| {
        format!(
            "warning: the generator used {pct:.0}% CPU with {threads} thread(s): the {} figures are probably generator-bound",
            f.label
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn figures_and_rendering() {
        let mut read = Hist::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut write = read.clone();
        for us in 1..=1000 {
            read.record(us).unwrap();
        }
        write.record(2500).unwrap();
        let m = Measured {
            read,
            write,
            errors: BTreeMap::from([("503".to_string(), 2)]),
            not_found: 0,
            siblings: 1,
            window: Duration::from_secs(2),
            preload: Some((10, Duration::from_secs(1), 0)),
            generator_cpu: Some(Duration::from_millis(1900)),
            server_cpu: None,
        };
        let f = figures("target", &["http://x:1".into()], &m);
        assert_eq!(f.ops, 1001);
        assert_eq!(f.read.ops_per_sec, 500.0);
        assert_eq!(f.read.p50_ms, 0.5);
        assert!((f.write.p99_ms - 2.5).abs() < 0.01, "{}", f.write.p99_ms);
        let text = render(&f);
        assert!(text.contains("p50 0.500 ms"), "{text}");
        assert!(text.contains("503: 2"), "{text}");
        assert!(text.contains("preload  10 keys"), "{text}");
        assert!(
            text.contains("cpu      generator 95%, server ? (of one core)"),
            "{text}"
        );
        assert!(saturation_warning(&f, 1).is_some());
        assert!(saturation_warning(&f, 2).is_none());
    }
}
