//! A [`Prediction`] for people and programs: the JSON summary, text
//! tables, the curves as CSV, an SVG plot and a Markdown report naming the
//! distributions, the seed and the command that reproduces it. Everything
//! is rendered to strings; the CLI writes them (`qkv exp predict --out`).

use std::fmt::Write as _;

use serde::Serialize;

use super::predict::{Model, PairResult, Prediction, quantile};
use super::svg::{Axis, Mark, Plot, Scale, Series};

/// A prediction with what describes it beyond its numbers.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The figures.
    pub prediction: &'a Prediction,
    /// The `qkv` command line that reproduces it.
    pub command: String,
    /// The `--delays` value, when one was given (a preset or a
    /// distribution for every leg).
    pub spec: Option<String>,
}

/// A table: a title, a header and rows of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// What it shows.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
}

#[derive(Serialize)]
struct QuorumkvEcho {
    nodes: usize,
    /// `null`: no speculative retry.
    speculate_ms: Option<f64>,
    local_delays: bool,
    read_coordinator: &'static str,
    hop_ms: f64,
    client_ms: f64,
}

/// The speculation delay in words: `after N ms`, or `never`.
fn speculation(ms: f64) -> String {
    if ms.is_finite() {
        format!("after {ms} ms")
    } else {
        "never".into()
    }
}

#[derive(Serialize)]
struct DelaysEcho<'a> {
    spec: Option<&'a str>,
    w: String,
    a: String,
    r: String,
    s: String,
    remote_ms: Option<f64>,
}

#[derive(Serialize)]
struct Head<'a> {
    command: &'a str,
    model: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    quorumkv: Option<QuorumkvEcho>,
    n: usize,
    trials: u64,
    seed: u64,
    delays: DelaysEcho<'a>,
}

#[derive(Serialize)]
struct Single<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    #[serde(flatten)]
    pair: &'a PairResult,
}

#[derive(Serialize)]
struct Many<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    r: &'a [usize],
    w: &'a [usize],
    configs: &'a [PairResult],
}

/// A probability for a table: 0 and 1 exactly, else six decimals.
fn prob(p: f64) -> String {
    if p == 1.0 || p == 0.0 {
        format!("{p}")
    } else if p.is_nan() {
        "-".into()
    } else {
        format!("{p:.6}")
    }
}

/// Milliseconds for a table: up to four decimals, no trailing zeros.
fn ms(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// `0.999` as `99.9%`.
fn percent(p: f64) -> String {
    let s = format!("{:.4}", p * 100.0);
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

/// Quantile levels of the latency curves: every half percent, then the
/// tail.
fn levels() -> Vec<f64> {
    let mut q: Vec<f64> = (1..200).map(|i| i as f64 / 200.0).collect();
    q.extend([0.995, 0.999, 0.9995, 0.9999]);
    q.dedup();
    q
}

impl Report<'_> {
    fn head(&self) -> Head<'_> {
        let c = &self.prediction.config;
        let l = &c.delays.legs;
        Head {
            command: &self.command,
            model: c.model.name(),
            quorumkv: match c.model {
                Model::Quorumkv(m) => Some(QuorumkvEcho {
                    nodes: m.nodes,
                    speculate_ms: m.speculate_ms.is_finite().then_some(m.speculate_ms),
                    local_delays: m.local_delays,
                    read_coordinator: m.read_coordinator.name(),
                    hop_ms: m.hop_ms,
                    client_ms: m.client_ms,
                }),
                Model::Wars => None,
            },
            n: c.n,
            trials: c.trials,
            seed: c.seed,
            delays: DelaysEcho {
                spec: self.spec.as_deref(),
                w: l.w.to_string(),
                a: l.a.to_string(),
                r: l.r.to_string(),
                s: l.s.to_string(),
                remote_ms: c.delays.remote_ms,
            },
        }
    }

    /// The JSON summary: one object; with one (R, W) pair its figures are
    /// at the top level, with several they are in `configs`.
    pub fn json(&self) -> String {
        let p = self.prediction;
        let text = if let [pair] = p.pairs.as_slice() {
            serde_json::to_string_pretty(&Single {
                head: self.head(),
                pair,
            })
        } else {
            serde_json::to_string_pretty(&Many {
                head: self.head(),
                r: &p.config.rs,
                w: &p.config.ws,
                configs: &p.pairs,
            })
        };
        // Plain data (strings, numbers, maps with string keys) always
        // serialises.
        let mut text = text.unwrap_or_default();
        text.push('\n');
        text
    }

    /// What was predicted, in a few lines.
    pub fn preamble(&self) -> Vec<String> {
        let c = &self.prediction.config;
        let l = &c.delays.legs;
        let model = match c.model {
            Model::Wars => "WARS model".to_string(),
            Model::Quorumkv(m) => format!(
                "quorumkv model ({} nodes, speculation {}{}, read through {} node{})",
                m.nodes,
                speculation(m.speculate_ms),
                if m.local_delays { ", local delays" } else { "" },
                m.read_coordinator.name(),
                if m.hop_ms > 0.0 || m.client_ms > 0.0 {
                    format!(
                        ", +{} ms per internode message, +{} ms each way to the client",
                        m.hop_ms, m.client_ms
                    )
                } else {
                    String::new()
                }
            ),
        };
        let mut lines = vec![format!(
            "{model}, N={}, {} trials, seed {}; delays {}",
            c.n,
            c.trials,
            c.seed,
            self.spec.as_deref().unwrap_or("per leg")
        )];
        for (name, d) in [("W", &l.w), ("A", &l.a), ("R", &l.r), ("S", &l.s)] {
            lines.push(format!("  {name} = {d}"));
        }
        if let Some(extra) = c.delays.remote_ms {
            lines.push(format!(
                "  plus {extra} ms on every message to or from a remote replica (all but one, at random per operation)"
            ));
        }
        lines
    }

    /// The figures as tables: t-visibility, read repair (when some R > 1),
    /// latency and k-staleness.
    pub fn tables(&self) -> Vec<Table> {
        let p = self.prediction;
        let c = &p.config;
        let mut vis_header: Vec<String> = vec!["R".into(), "W".into()];
        vis_header.extend(c.ts.iter().map(|t| format!("t={}ms", ms(*t))));
        vis_header.extend(c.ps.iter().map(|q| format!("t@{}", percent(*q))));
        let rw = |x: &PairResult| vec![x.r.to_string(), x.w.to_string()];
        let vis_rows = p
            .pairs
            .iter()
            .map(|x| {
                let mut row = rw(x);
                row.extend(x.t_visibility.iter().map(|v| prob(v.p_consistent)));
                row.extend(c.ps.iter().map(|q| match x.t_at.get(&q.to_string()) {
                    Some(t) => format!("{} ms", ms(*t)),
                    None => "-".into(),
                }));
                row
            })
            .collect();
        let mut tables = vec![Table {
            title: "t-visibility: P(a read starting t ms after the write committed returns it)"
                .into(),
            header: vis_header,
            rows: vis_rows,
        }];
        if p.pairs.iter().any(|x| x.r > 1) {
            let mut header: Vec<String> = vec!["R".into(), "W".into()];
            header.extend(c.ts.iter().map(|t| format!("t={}ms", ms(*t))));
            tables.push(Table {
                title: "read repair: P(the R answers disagree, so the stale ones are repaired)"
                    .into(),
                header,
                rows: p
                    .pairs
                    .iter()
                    .map(|x| {
                        let mut row = rw(x);
                        row.extend(x.t_visibility.iter().map(|v| prob(v.p_repair)));
                        row
                    })
                    .collect(),
            });
        }
        tables.push(Table {
            title: "latency (ms): a read waits for its R-th answer, a write for its commit".into(),
            header: [
                "R",
                "W",
                "read p50",
                "read p99",
                "read p99.9",
                "write p50",
                "write p99",
                "write p99.9",
            ]
            .map(String::from)
            .to_vec(),
            rows: p
                .pairs
                .iter()
                .map(|x| {
                    let (r, w) = (x.latency_ms.read, x.latency_ms.write);
                    let mut row = rw(x);
                    row.extend([r.p50, r.p99, r.p999, w.p50, w.p99, w.p999].map(ms));
                    row
                })
                .collect(),
        });
        tables.push(Table {
            title: "k-staleness: P(a read returns one of the last k versions)".into(),
            header: ["R", "W", "k", "closed form", "simulated"]
                .map(String::from)
                .to_vec(),
            rows: p
                .pairs
                .iter()
                .flat_map(|x| {
                    x.k_staleness.iter().map(move |k| {
                        let mut row = rw(x);
                        row.extend([k.k.to_string(), prob(k.closed_form), prob(k.simulated)]);
                        row
                    })
                })
                .collect(),
        });
        tables
    }

    /// The t range of the curves: up to where every pair is consistent
    /// with probability 0.9999 (or the largest asked t), four decades.
    fn t_range(&self) -> (f64, f64) {
        let p = self.prediction;
        let hi = p
            .pairs
            .iter()
            .map(|x| quantile(&x.samples.stale_until, 0.9999))
            .chain(p.config.ts.iter().copied())
            .fold(0.0f64, f64::max);
        let hi = if hi > 0.0 { hi * 1.2 } else { 1.0 };
        (hi / 1e4, hi)
    }

    /// The t-visibility curves: `r,w,t_ms,p_consistent`, t = 0 then 200
    /// points spaced evenly on a log scale.
    pub fn visibility_csv(&self) -> String {
        let (lo, hi) = self.t_range();
        let mut out = String::from("r,w,t_ms,p_consistent\n");
        for x in &self.prediction.pairs {
            for t in std::iter::once(0.0).chain(log_grid(lo, hi, 200)) {
                let _ = writeln!(out, "{},{},{t},{}", x.r, x.w, x.samples.p_consistent(t));
            }
        }
        out
    }

    /// The latency distributions: `op,quorum,quantile,ms` for reads (by R)
    /// and writes (by W).
    pub fn latency_csv(&self) -> String {
        let mut out = String::from("op,quorum,quantile,ms\n");
        for (op, quorum, v) in self.latency_series() {
            for q in levels() {
                let _ = writeln!(out, "{op},{quorum},{q},{}", quantile(v, q));
            }
        }
        out
    }

    /// Each distinct read R and write W with its sorted latencies.
    fn latency_series(&self) -> Vec<(&'static str, usize, &[f32])> {
        let mut out: Vec<(&'static str, usize, &[f32])> = Vec::new();
        for x in &self.prediction.pairs {
            if !out.iter().any(|(op, q, _)| *op == "read" && *q == x.r) {
                out.push(("read", x.r, &x.samples.read));
            }
        }
        for x in &self.prediction.pairs {
            if !out.iter().any(|(op, q, _)| *op == "write" && *q == x.w) {
                out.push(("write", x.w, &x.samples.write));
            }
        }
        out
    }

    /// Two panels: the t-visibility curve of each (R, W), and the latency
    /// CDF of each read R and write W.
    pub fn svg(&self) -> String {
        let p = self.prediction;
        let (lo, hi) = self.t_range();
        let grid = log_grid(lo, hi, 200);
        let curves: Vec<Series> = p
            .pairs
            .iter()
            .enumerate()
            .map(|(i, x)| Series {
                label: format!("R={} W={}", x.r, x.w),
                points: grid
                    .iter()
                    .map(|&t| (t, x.samples.p_consistent(t)))
                    .collect(),
                mark: Mark::Line,
                color: i,
            })
            .collect();
        let lowest = curves
            .iter()
            .filter_map(|s| s.points.first().map(|p| p.1))
            .fold(1.0f64, f64::min);
        let ymin = ((lowest * 10.0).floor() / 10.0).min(0.9);
        let vis = Plot {
            title: format!(
                "t-visibility, N={}, {}",
                p.config.n,
                self.spec.as_deref().unwrap_or("per-leg delays")
            ),
            x: Axis {
                label: "t after the write committed (ms)".into(),
                min: lo,
                max: hi,
                scale: Scale::Log,
            },
            y: Axis {
                label: "P(consistent read)".into(),
                min: ymin,
                max: 1.0,
                scale: Scale::Linear,
            },
            series: curves,
        };
        let levels = levels();
        let series: Vec<(String, Vec<(f64, f64)>)> = self
            .latency_series()
            .into_iter()
            .map(|(op, q, v)| {
                let name = if op == "read" { "R" } else { "W" };
                let pts = levels.iter().map(|&l| (quantile(v, l), l)).collect();
                (format!("{op} {name}={q}"), pts)
            })
            .collect();
        let xs = series.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.0));
        let (min_pos, max) = xs.fold((f64::MAX, 0.0f64), |(m, x), v| {
            (if v > 0.0 { m.min(v) } else { m }, x.max(v))
        });
        let log = min_pos < f64::MAX && max / min_pos > 10.0;
        let lat = Plot {
            title: "latency".into(),
            x: Axis {
                label: "latency (ms)".into(),
                min: if log { min_pos } else { 0.0 },
                max: if max > 0.0 { max } else { 1.0 },
                scale: if log { Scale::Log } else { Scale::Linear },
            },
            y: Axis {
                label: "CDF".into(),
                min: 0.0,
                max: 1.0,
                scale: Scale::Linear,
            },
            series: series
                .into_iter()
                .enumerate()
                .map(|(i, (label, points))| Series {
                    label,
                    points,
                    mark: Mark::Line,
                    color: i,
                })
                .collect(),
        };
        super::svg::render(&[vis, lat])
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let c = &self.prediction.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Predicted staleness: N={}, {}, {} model\n",
            c.n,
            self.spec.as_deref().unwrap_or("per-leg delays"),
            c.model.name()
        );
        let _ = writeln!(
            out,
            "Made by `qkv exp predict` (docs/EXPERIMENTS.md explains the model and the figures). The same command gives the same figures, byte for byte:\n"
        );
        let _ = writeln!(out, "```sh\n{}\n```\n", self.command);
        let _ = writeln!(out, "| setting | value |\n|---|---|");
        let _ = writeln!(out, "| model | {} |", c.model.name());
        if let Model::Quorumkv(m) = c.model {
            let _ = writeln!(
                out,
                "| nodes | {} |\n| speculative retry | {} |\n| local replica operations delayed | {} |\n| read's coordinator | {} |\n| fixed cost per internode message | {} ms |\n| fixed cost client to coordinator, each way | {} ms |",
                m.nodes,
                speculation(m.speculate_ms),
                if m.local_delays { "yes" } else { "no" },
                m.read_coordinator.name(),
                m.hop_ms,
                m.client_ms
            );
        }
        let _ = writeln!(
            out,
            "| N | {} |\n| trials | {} |\n| seed | {} |",
            c.n, c.trials, c.seed
        );
        if let Some(spec) = &self.spec {
            let _ = writeln!(out, "| delays | `{spec}` |");
        }
        let l = &c.delays.legs;
        for (name, d) in [("W", &l.w), ("A", &l.a), ("R", &l.r), ("S", &l.s)] {
            let _ = writeln!(out, "| {name} (ms) | `{d}` |");
        }
        if let Some(extra) = c.delays.remote_ms {
            let _ = writeln!(out, "| remote replicas | +{extra} ms each way |");
        }
        out.push('\n');
        for t in self.tables() {
            let _ = writeln!(out, "## {}\n", t.title);
            let _ = writeln!(out, "| {} |", t.header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(t.header.len()));
            for row in &t.rows {
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
            out.push('\n');
        }
        out.push_str(
            "## Files\n\n\
             - `summary.json`: the figures above (what `--json` prints).\n\
             - `t_visibility.csv`: P(consistent) against t for each R and W (`r,w,t_ms,p_consistent`).\n\
             - `latency.csv`: latency quantiles of reads by R and writes by W (`op,quorum,quantile,ms`).\n\
             - `plot.svg`: the t-visibility curves and the latency CDFs.\n\n\
             ![t-visibility and latency](plot.svg)\n",
        );
        out
    }

    /// Every file of `--out DIR`: (name, contents).
    pub fn files(&self) -> Vec<(&'static str, String)> {
        vec![
            ("summary.json", self.json()),
            ("t_visibility.csv", self.visibility_csv()),
            ("latency.csv", self.latency_csv()),
            ("plot.svg", self.svg()),
            ("report.md", self.markdown()),
        ]
    }
}

/// `count` points from `lo` to `hi`, evenly spaced on a log scale.
fn log_grid(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    let ratio = (hi / lo).ln();
    (0..count)
        .map(|i| lo * (ratio * i as f64 / (count - 1).max(1) as f64).exp())
        .collect()
}

#[cfg(test)]
mod tests;
