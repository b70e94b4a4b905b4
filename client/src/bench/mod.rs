//! `qkv bench`: a mixed PUT/GET workload over HTTP, measured against the
//! nodes of `--node` and, with `--ceiling`, against a bare in-memory HTTP
//! key-value server built into the benchmark (the ceiling), in the same run,
//! with the ratio target / ceiling printed at the end. Both sides are
//! preloaded first; then `--rounds` rounds each measure the target and then
//! the ceiling, and the ratio is the median of the rounds' ratios (with one
//! round, simply target / ceiling).
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
    /// Measure in this many rounds, each a warmup and a `--duration`
    /// window against the target and then (with `--ceiling`) the ceiling,
    /// alternating, after one preload of each. Prints every round's ratio;
    /// the ratio is their median, so a slow drift of the machine hits both
    /// sides of each pair alike.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rounds: u64,
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

    let target_side = if a.ceiling_only {
        None
    } else {
        let probe = affinity::CpuProbe {
            in_process_server: None,
            server_pid: a.server_pid,
        };
        Some(rt.block_on(Side::prepare("target", g.nodes.clone(), &w, probe))?)
    };
    // The server lives until the last round is measured.
    let mut server = None;
    let ceiling_side = if with_ceiling {
        let running = server.insert(ceiling::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ceiling_cpu,
            a.ceiling_threads,
        )?);
        let urls = vec![format!("http://{}", running.addr)];
        let probe = affinity::CpuProbe {
            in_process_server: Some(running.cpu_clock()),
            server_pid: None,
        };
        let label = "ceiling (built-in in-memory server)";
        Some(rt.block_on(Side::prepare(label, urls, &w, probe))?)
    } else {
        None
    };
    let mut sides = [target_side, ceiling_side];

    let mut rounds = Vec::new();
    for round in 0..a.rounds {
        let mut ops = [None, None];
        for (side, ops) in sides.iter_mut().zip(&mut ops) {
            if let Some(side) = side {
                *ops = Some(rt.block_on(side.measure(round))?);
            }
        }
        let r = Round {
            round: round + 1,
            target_ops_per_sec: ops[0],
            ceiling_ops_per_sec: ops[1],
        };
        if a.rounds > 1 && !g.json {
            println!("{}", r.render());
        }
        rounds.push(r);
    }
    drop(server);

    let [target, ceiling_f] = sides.map(|side| {
        let f = side?.figures()?;
        if !g.json {
            print!("{}", render(&f));
            if let Some(warn) = report::saturation_warning(&f, threads) {
                println!("{warn}");
            }
        }
        Some(f)
    });
    let ratios = sorted_ratios(&rounds);
    let ratio = median(&ratios);
    if g.json {
        let out = json!({
            "config": {
                "keys": a.keys, "value_size": a.value_size, "read_ratio": a.read_ratio,
                "concurrency": a.concurrency, "duration_s": a.duration.as_secs_f64(),
                "warmup_s": a.warmup.as_secs_f64(), "bucket": a.bucket,
                "r": a.r, "w": a.w, "preload": !a.no_preload, "seed": a.seed,
                "threads": threads, "cpu": a.cpu, "ceiling_cpu": ceiling_cpu,
                "ceiling_threads": a.ceiling_threads, "rounds": a.rounds,
            },
            "target": target,
            "ceiling": ceiling_f,
            "ratio": ratio,
            "per_round": rounds,
        });
        crate::cli::print_json(&out)?;
    } else if let Some(r) = ratio {
        if let (true, Some(lo), Some(hi)) = (a.rounds > 1, ratios.first(), ratios.last()) {
            println!(
                "ratio target/ceiling (ops/s): {r:.3} (median of {} rounds, {lo:.3}-{hi:.3})",
                ratios.len()
            );
        } else {
            println!("ratio target/ceiling (ops/s): {r:.3}");
        }
    }
    Ok(())
}

/// One side of the comparison (the target, or the ceiling): its prepared
/// workload, where its CPU figures come from, and what its rounds measured
/// so far.
struct Side {
    label: &'static str,
    urls: Vec<String>,
    prepared: workload::Prepared,
    probe: affinity::CpuProbe,
    measured: Option<workload::Measured>,
}

impl Side {
    async fn prepare(
        label: &'static str,
        urls: Vec<String>,
        w: &Workload,
        probe: affinity::CpuProbe,
    ) -> anyhow::Result<Side> {
        let prepared = workload::Prepared::new(&urls, w).await?;
        Ok(Side {
            label,
            urls,
            prepared,
            probe,
            measured: None,
        })
    }

    /// Measures one round, adds it to the side's total, and returns the
    /// round's ops/s.
    async fn measure(&mut self, round: u64) -> anyhow::Result<f64> {
        let m = self.prepared.measure(round, &self.probe).await?;
        let ops = report::ops_per_sec(m.read.len() + m.write.len(), m.window);
        match &mut self.measured {
            Some(total) => total.absorb(m)?,
            None => self.measured = Some(m),
        }
        Ok(ops)
    }

    /// The figures of every round together, with the preload.
    fn figures(self) -> Option<RunFigures> {
        let mut m = self.measured?;
        m.preload = self.prepared.preload;
        Some(figures(self.label, &self.urls, &m))
    }
}

/// One round's throughput on each side.
#[derive(Debug, Clone, serde::Serialize)]
struct Round {
    round: u64,
    target_ops_per_sec: Option<f64>,
    ceiling_ops_per_sec: Option<f64>,
}

impl Round {
    fn ratio(&self) -> Option<f64> {
        match (self.target_ops_per_sec, self.ceiling_ops_per_sec) {
            (Some(t), Some(c)) if c > 0.0 => Some(t / c),
            _ => None,
        }
    }

    fn render(&self) -> String {
        let side = |name: &str, v: Option<f64>| v.map(|v| format!(", {name} {v:.0} ops/s"));
        format!(
            "round {}{}{}{}",
            self.round,
            side("target", self.target_ops_per_sec).unwrap_or_default(),
            side("ceiling", self.ceiling_ops_per_sec).unwrap_or_default(),
            self.ratio()
                .map(|r| format!(", ratio {r:.3}"))
                .unwrap_or_default(),
        )
    }
}

/// The ratios of the rounds that have both sides, smallest first.
fn sorted_ratios(rounds: &[Round]) -> Vec<f64> {
    let mut r: Vec<f64> = rounds.iter().filter_map(Round::ratio).collect();
    r.sort_by(f64::total_cmp);
    r
}

/// The median of sorted values (the mean of the middle two for an even
/// count); `None` when there are none.
fn median(sorted: &[f64]) -> Option<f64> {
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// The median of the rounds' ratios; `None` when no round has both sides.
#[cfg(test)]
fn median_ratio(rounds: &[Round]) -> Option<f64> {
    median(&sorted_ratios(rounds))
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
            rounds: 1,
        };
        let server = ceiling::start(SocketAddr::from(([127, 0, 0, 1], 0)), None, 1).unwrap();
        let urls = vec![format!("http://{}", server.addr)];
        let rt = runtime(1).unwrap();
        let probe = affinity::CpuProbe {
            in_process_server: Some(server.cpu_clock()),
            server_pid: None,
        };
        let p = rt
            .block_on(workload::Prepared::new(&urls, &a.workload(None)))
            .unwrap();
        assert_eq!(p.preload.map(|p| (p.0, p.2)), Some((200, 0)));
        // Two rounds on one preload: each measures, and they add up.
        let mut m = rt.block_on(p.measure(0, &probe)).unwrap();
        let second = rt.block_on(p.measure(1, &probe)).unwrap();
        let (ops1, ops2) = (
            m.read.len() + m.write.len(),
            second.read.len() + second.write.len(),
        );
        assert!(ops1 > 0 && ops2 > 0, "{ops1} {ops2}");
        m.absorb(second).unwrap();
        assert_eq!(m.read.len() + m.write.len(), ops1 + ops2);
        assert_eq!(m.window, Duration::from_millis(600));
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.not_found, 0);
        assert!(!m.read.is_empty() && !m.write.is_empty());
        assert!(m.generator_cpu.is_some() && m.server_cpu.is_some());
        let f = figures("ceiling", &urls, &m);
        assert!(f.ops_per_sec > 0.0);
    }

    fn round(t: Option<f64>, c: Option<f64>) -> Round {
        Round {
            round: 1,
            target_ops_per_sec: t,
            ceiling_ops_per_sec: c,
        }
    }

    #[test]
    fn the_ratio_is_the_median_of_the_rounds_that_have_both_sides() {
        let odd = [
            round(Some(60.0), Some(100.0)),
            round(Some(90.0), Some(100.0)),
            round(Some(30.0), Some(100.0)),
        ];
        assert_eq!(median_ratio(&odd), Some(0.6));
        let even = [
            round(Some(50.0), Some(100.0)),
            round(Some(70.0), Some(100.0)),
        ];
        assert_eq!(median_ratio(&even), Some(0.6));
        // A round without a ceiling figure (or with a zero one) has no ratio.
        let partial = [
            round(Some(50.0), None),
            round(Some(50.0), Some(0.0)),
            round(Some(80.0), Some(100.0)),
        ];
        assert_eq!(median_ratio(&partial), Some(0.8));
        assert_eq!(median_ratio(&[round(Some(1.0), None)]), None);
        assert_eq!(median_ratio(&[]), None);
    }

    #[test]
    fn a_round_renders_what_it_measured() {
        let r = round(Some(600.0), Some(1000.0));
        assert_eq!(
            r.render(),
            "round 1, target 600 ops/s, ceiling 1000 ops/s, ratio 0.600"
        );
        assert_eq!(round(Some(5.0), None).render(), "round 1, target 5 ops/s");
    }
}
