//! `qkv bench`: a mixed PUT/GET workload over HTTP, measured against the
//! nodes of `--node` and, with `--ceiling`, against a bare in-memory HTTP
//! key-value server built into the benchmark (the ceiling), in the same run,
//! with the ratio target / ceiling printed at the end.
//!
//! On a small machine the generator and the server must not share a core:
//! `--cpu N` pins the generator (its runtime threads inherit the mask), the
//! node is pinned by the caller (`taskset -c M qkvd ...`), and the built-in
//! ceiling server runs on `--ceiling-cpu` (default: a CPU other than `--cpu`,
//! i.e. the node's core on a 2-core machine), so both targets get the same
//! single core. `--serve-ceiling ADDR` runs only the ceiling server in the
//! foreground, for scripts that pin it with `taskset` themselves.
//!
//! Modules: [`workload`] (workers and phases), [`ceiling`] (the server),
//! [`report`] (figures), [`affinity`] (pinning).

pub mod affinity;
pub mod ceiling;
pub mod report;
pub mod workload;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use quorumkv_client::Consistency;
use serde_json::json;

use crate::cli::Globals;
use report::{RunFigures, figures, render};
use workload::Workload;

/// Arguments of `qkv bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Size of the key space (keys `bench-0000000000`...).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Fraction of reads, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Concurrent workers, one persistent connection each.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Measured window (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unrecorded run before the window.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Bucket of the benchmark's keys. Against a node that kept the keys of
    /// an earlier run, the preload's context-less writes become siblings of
    /// the old values until the workload rewrites them: use a fresh data
    /// directory (or bucket) for clean figures.
    #[arg(long, default_value = "default")]
    pub bucket: String,
    /// Read consistency sent with every GET.
    #[arg(long)]
    pub r: Option<Consistency>,
    /// Write consistency sent with every PUT.
    #[arg(long)]
    pub w: Option<Consistency>,
    /// Skip writing every key before measuring (reads may then miss).
    #[arg(long)]
    pub no_preload: bool,
    /// Write without causal contexts (each write to an existing key then
    /// adds a sibling, unless the bucket is LWW).
    #[arg(long)]
    pub blind_writes: bool,
    /// RNG seed of the key and operation choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A request slower than this counts as a `timeout` error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Also run the same workload against the built-in ceiling server and
    /// print the ratio.
    #[arg(long)]
    pub ceiling: bool,
    /// Run only against the built-in ceiling server.
    #[arg(long, conflicts_with = "ceiling")]
    pub ceiling_only: bool,
    /// Only serve the ceiling on ADDR in the foreground (no load).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["ceiling", "ceiling_only"])]
    pub serve_ceiling: Option<SocketAddr>,
    /// Pin the generator (or, with --serve-ceiling, the server) to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Pin the built-in ceiling server to this CPU (default: one other than
    /// --cpu, when --cpu is given).
    #[arg(long)]
    pub ceiling_cpu: Option<usize>,
    /// Generator runtime threads (default: 1 when pinned, else 2).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Runtime threads of the built-in ceiling server.
    #[arg(long, default_value_t = 1)]
    pub ceiling_threads: usize,
    /// Pid of the node under test, to report its CPU use (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Parses `10s`, `500ms`, `1.5s`, `2m`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "sec" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

impl BenchArgs {
    fn workload(&self, token: Option<String>) -> Workload {
        Workload {
            keys: self.keys,
            value_size: self.value_size,
            read_ratio: self.read_ratio,
            concurrency: self.concurrency,
            duration: self.duration,
            warmup: self.warmup,
            bucket: self.bucket.clone(),
            r: self.r,
            w: self.w,
            preload: !self.no_preload,
            blind_writes: self.blind_writes,
            seed: self.seed,
            token,
            request_timeout: self.request_timeout,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.read_ratio) {
            bail!("--read-ratio must be between 0 and 1");
        }
        if self.keys == 0 || self.concurrency == 0 {
            bail!("--keys and --concurrency must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration must be positive");
        }
        Ok(())
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    ceiling::runtime(threads).context("cannot start the async runtime")
}

/// Runs `qkv bench`.
pub fn run(g: &Globals, a: BenchArgs) -> anyhow::Result<()> {
    if let Some(addr) = a.serve_ceiling {
        if let Some(cpu) = a.cpu {
            affinity::pin_current_thread(cpu)?;
        }
        return ceiling::serve_foreground(addr, a.threads.unwrap_or(1));
    }
    a.check()?;
    let allowed = affinity::allowed_cpus()?;
    let with_ceiling = a.ceiling || a.ceiling_only;
    let ceiling_cpu = a
        .ceiling_cpu
        .or_else(|| a.cpu.and_then(|c| affinity::other_cpu(&allowed, c)));
    if let Some(cpu) = a.cpu {
        affinity::pin_current_thread(cpu)?;
    }
    let threads = a.threads.unwrap_or(if a.cpu.is_some() { 1 } else { 2 });
    let rt = runtime(threads)?;
    let w = a.workload(g.token.clone());

    let pin = |cpu: Option<usize>| cpu.map_or("unpinned".to_string(), |c| format!("cpu {c}"));
    if !g.json {
        println!(
            "workload: {} keys, {}-byte values, {:.0}% reads, {} connections, {:.1} s (+{:.1} s warmup), bucket {}{}{}",
            a.keys,
            a.value_size,
            a.read_ratio * 100.0,
            a.concurrency,
            a.duration.as_secs_f64(),
            a.warmup.as_secs_f64(),
            a.bucket,
            a.r.map_or(String::new(), |r| format!(", r={r}")),
            a.w.map_or(String::new(), |w| format!(", w={w}")),
        );
        println!(
            "generator: {threads} thread(s), {}{}",
            pin(a.cpu),
            if with_ceiling {
                format!(
                    "; ceiling server: {} thread(s), {}",
                    a.ceiling_threads,
                    pin(ceiling_cpu)
                )
            } else {
                String::new()
            }
        );
    }

    let mut target: Option<RunFigures> = None;
    if !a.ceiling_only {
        let probe = affinity::CpuProbe {
            in_process_server: None,
            server_pid: a.server_pid,
        };
        let m = rt.block_on(workload::run(&g.nodes, &w, probe))?;
        let f = figures("target", &g.nodes, &m);
        if !g.json {
            print!("{}", render(&f));
            if let Some(warn) = report::saturation_warning(&f, threads) {
                println!("{warn}");
            }
        }
        target = Some(f);
    }
    let mut ceiling_f: Option<RunFigures> = None;
    if with_ceiling {
        let server = ceiling::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ceiling_cpu,
            a.ceiling_threads,
        )?;
        let urls = vec![format!("http://{}", server.addr)];
        let probe = affinity::CpuProbe {
            in_process_server: Some(server.cpu_clock()),
            server_pid: None,
        };
        let m = rt.block_on(workload::run(&urls, &w, probe))?;
        drop(server);
        let f = figures("ceiling (built-in in-memory server)", &urls, &m);
        if !g.json {
            print!("{}", render(&f));
            if let Some(warn) = report::saturation_warning(&f, threads) {
                println!("{warn}");
            }
        }
        ceiling_f = Some(f);
    }
    let ratio = match (&target, &ceiling_f) {
        (Some(t), Some(c)) if c.ops_per_sec > 0.0 => Some(t.ops_per_sec / c.ops_per_sec),
        _ => None,
    };
    if g.json {
        let out = json!({
            "config": {
                "keys": a.keys, "value_size": a.value_size, "read_ratio": a.read_ratio,
                "concurrency": a.concurrency, "duration_s": a.duration.as_secs_f64(),
                "warmup_s": a.warmup.as_secs_f64(), "bucket": a.bucket,
                "r": a.r, "w": a.w, "preload": !a.no_preload, "seed": a.seed,
                "threads": threads, "cpu": a.cpu, "ceiling_cpu": ceiling_cpu,
                "ceiling_threads": a.ceiling_threads,
            },
            "target": target,
            "ceiling": ceiling_f,
            "ratio": ratio,
        });
        crate::cli::print_json(&out)?;
    } else if let Some(r) = ratio {
        println!("ratio target/ceiling (ops/s): {r:.3}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        let table = [
            ("10s", 10_000),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("2m", 120_000),
            ("3", 3_000),
        ];
        for (s, ms) in table {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for s in ["", "s", "10x", "-1s", "1e999s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn the_ceiling_workload_runs_end_to_end() {
        let a = BenchArgs {
            keys: 200,
            value_size: 10,
            read_ratio: 0.5,
            concurrency: 4,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            bucket: "default".into(),
            r: None,
            w: None,
            no_preload: false,
            blind_writes: false,
            seed: 7,
            request_timeout: Duration::from_secs(5),
            ceiling: false,
            ceiling_only: true,
            serve_ceiling: None,
            cpu: None,
            ceiling_cpu: None,
            threads: Some(1),
            ceiling_threads: 1,
            server_pid: None,
        };
        let server = ceiling::start(SocketAddr::from(([127, 0, 0, 1], 0)), None, 1).unwrap();
        let urls = vec![format!("http://{}", server.addr)];
        let rt = runtime(1).unwrap();
        let m = rt
            .block_on(workload::run(
                &urls,
                &a.workload(None),
                affinity::CpuProbe {
                    in_process_server: Some(server.cpu_clock()),
                    server_pid: None,
                },
            ))
            .unwrap();
        assert_eq!(m.preload.map(|p| (p.0, p.2)), Some((200, 0)));
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.not_found, 0);
        assert!(!m.read.is_empty() && !m.write.is_empty());
        assert!(m.generator_cpu.is_some() && m.server_cpu.is_some());
        let f = figures("ceiling", &urls, &m);
        assert!(f.ops_per_sec > 0.0);
    }
}
