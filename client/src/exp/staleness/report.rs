//! A staleness measurement for people and programs: text tables, the JSON
//! summary, the raw samples as CSV, an SVG of the measured points over the
//! predicted lines, and a Markdown report with the exact command.
//! Everything is rendered to strings; the CLI writes them.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Config, Costs, PairRun, PairSummary};
use crate::exp::predict::Samples;
use crate::exp::report::Table;
use crate::exp::svg::{self, Axis, Mark, Plot, Scale, Series};

/// A measurement with what describes it.
#[derive(Debug, Clone)]
pub struct StalenessReport<'a> {
    /// What was run.
    pub config: &'a Config,
    /// The cluster's node ids, in the order samples number them.
    pub nodes: Vec<String>,
    /// The raw runs, one per (R, W).
    pub runs: &'a [PairRun],
    /// Their figures, in the same order.
    pub summaries: Vec<PairSummary>,
    /// The prediction's per-trial values per (R, W), for the lines.
    pub predicted: Vec<Samples>,
    /// The command line that reproduces it.
    pub command: String,
    /// The `--delays` value, when given.
    pub spec: Option<String>,
    /// The machine's load averages when the run started and ended.
    pub load: String,
    /// The fixed costs the calibrated prediction adds to the legs.
    pub costs: Costs,
}

#[derive(Serialize)]
struct Json<'a> {
    command: &'a str,
    n: usize,
    nodes: &'a [String],
    writes_per_config: u64,
    concurrency: usize,
    read_coordinator: &'static str,
    read_repair: &'a str,
    speculative_retry: &'a str,
    seed: u64,
    prediction: PredictionEcho,
    delays: DelaysEcho<'a>,
    load: &'a str,
    costs: Costs,
    configs: &'a [PairSummary],
    /// Per configuration, the `qkv exp predict` command of its calibrated
    /// prediction.
    predict_commands: Vec<String>,
}

#[derive(Serialize)]
struct PredictionEcho {
    model: &'static str,
    local_delays: bool,
    trials: u64,
}

#[derive(Serialize)]
struct DelaysEcho<'a> {
    spec: Option<&'a str>,
    w: String,
    a: String,
    r: String,
    s: String,
}

fn prob(p: f64) -> String {
    if p.is_nan() {
        "-".into()
    } else {
        format!("{p:.4}")
    }
}

fn ms(v: f64) -> String {
    format!("{v:.2}")
}

impl StalenessReport<'_> {
    /// The JSON summary: the settings and one object per (R, W).
    pub fn json(&self) -> String {
        let c = self.config;
        let l = &c.delays.legs;
        let j = Json {
            command: &self.command,
            n: c.n,
            nodes: &self.nodes,
            writes_per_config: c.writes,
            concurrency: c.concurrency,
            read_coordinator: c.read_coordinator.name(),
            read_repair: &c.read_repair,
            speculative_retry: &c.speculative_retry,
            seed: c.seed,
            prediction: PredictionEcho {
                model: "quorumkv",
                local_delays: true,
                trials: c.trials,
            },
            delays: DelaysEcho {
                spec: self.spec.as_deref(),
                w: l.w.to_string(),
                a: l.a.to_string(),
                r: l.r.to_string(),
                s: l.s.to_string(),
            },
            load: &self.load,
            costs: self.costs,
            configs: &self.summaries,
            predict_commands: self
                .summaries
                .iter()
                .map(|s| self.predict_command(s))
                .collect(),
        };
        // Plain data always serialises (NaN becomes null).
        let mut text = serde_json::to_string_pretty(&j).unwrap_or_default();
        text.push('\n');
        text
    }

    /// What was measured, in a few lines.
    pub fn preamble(&self) -> Vec<String> {
        let c = self.config;
        let l = &c.delays.legs;
        let mut lines = vec![
            format!(
                "measured on {} nodes ({}), N={}, {} writes per configuration, {} keys at once, reads through the {} node; read_repair {}, speculative_retry {}",
                self.nodes.len(),
                self.nodes.join(", "),
                c.n,
                c.writes,
                c.concurrency,
                match c.read_coordinator.name() {
                    "other" => "other (not the writer's)",
                    "same" => "writer's",
                    _ => "any",
                },
                c.read_repair,
                c.speculative_retry
            ),
            format!(
                "predicted by the quorumkv model with local delays, {} trials, seed {}; delays {}",
                c.trials,
                c.seed,
                self.spec.as_deref().unwrap_or("per leg")
            ),
            format!(
                "fixed costs (calibrated without delays): +{:.3} ms per internode message, +{:.3} ms each way between client and node; each leg's timer overshoot as the nodes measured it during the run (below)",
                self.costs.hop_ms, self.costs.client_ms
            ),
        ];
        for (name, d) in [("W", &l.w), ("A", &l.a), ("R", &l.r), ("S", &l.s)] {
            lines.push(format!("  {name} = {d}"));
        }
        lines.push(format!("load average: {}", self.load));
        lines
    }

    /// The `qkv exp predict` command that gives configuration `s`'s
    /// calibrated prediction: the injected legs, the cluster's node count,
    /// local delays, the reads' coordinator, the buckets' speculative retry
    /// and the fixed costs measured for it.
    pub fn predict_command(&self, s: &PairSummary) -> String {
        let c = self.config;
        let l = &c.delays.legs;
        let quote = |d: &quorumkv_faults::Dist| format!("'{d}'");
        let speculate = match c.speculative_retry.as_str() {
            "off" => "off".to_string(),
            "auto" => "auto".to_string(),
            other => other.trim_end_matches("ms").to_string(),
        };
        let ts: Vec<String> = c.ts.iter().map(|t| t.to_string()).collect();
        let [ow, oa, or, os] = s.overshoot_ms;
        format!(
            "qkv exp predict --model quorumkv --n {} --r {} --w {} --w-delay {} --a-delay {} --r-delay {} --s-delay {} \\\n    --nodes {} --local-delays --read-coordinator {} --speculate-ms {} \\\n    --hop-ms {:.3} --client-ms {:.3} --overshoot-ms {ow:.3},{oa:.3},{or:.3},{os:.3} --t {} --trials {} --seed {}",
            c.n,
            s.r,
            s.w,
            quote(&l.w),
            quote(&l.a),
            quote(&l.r),
            quote(&l.s),
            self.nodes.len(),
            c.read_coordinator.name(),
            speculate,
            self.costs.hop_ms,
            self.costs.client_ms,
            ts.join(","),
            c.trials,
            c.seed,
        )
    }

    /// The overview, the t-visibility per configuration and the latencies.
    pub fn tables(&self) -> Vec<Table> {
        let head = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut tables = vec![Table {
            title: "staleness: measured against predicted".into(),
            header: head(&[
                "R",
                "W",
                "R+W>N",
                "writes",
                "reads",
                "stale",
                "behind (versions: reads)",
                "RMSE (pp)",
                "RMSE at t (pp)",
                "RMSE legs only (pp)",
                "overshoot W/A/R/S (ms)",
                "failed",
            ]),
            rows: self
                .summaries
                .iter()
                .map(|s| {
                    let behind: Vec<String> =
                        s.behind.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    let f = &s.failures;
                    vec![
                        s.r.to_string(),
                        s.w.to_string(),
                        if s.strict { "yes" } else { "no" }.into(),
                        s.writes.to_string(),
                        s.reads.to_string(),
                        s.stale_reads.to_string(),
                        if behind.is_empty() {
                            "-".into()
                        } else {
                            behind.join(", ")
                        },
                        format!("{:.2}", s.rmse * 100.0),
                        format!("{:.2}", s.rmse_at_t * 100.0),
                        format!("{:.2}", s.rmse_legs_only * 100.0),
                        s.overshoot_ms.map(|o| format!("{o:.2}")).join("/"),
                        (f.writes + f.reads + f.foreign).to_string(),
                    ]
                })
                .collect(),
        }];
        tables.push(Table {
            title: "t-visibility: P(consistent) measured and predicted (at the waits that passed, and at t)".into(),
            header: head(&[
                "R", "W", "t (ms)", "waited (ms)", "reads", "measured", "predicted", "predicted at t",
                "legs only",
            ]),
            rows: self
                .summaries
                .iter()
                .flat_map(|s| {
                    s.points.iter().map(move |p| {
                        vec![
                            s.r.to_string(),
                            s.w.to_string(),
                            p.t_ms.to_string(),
                            ms(p.mean_waited_ms),
                            p.reads.to_string(),
                            prob(p.p_measured),
                            prob(p.p_predicted),
                            prob(p.p_predicted_at_t),
                            prob(p.p_legs_only),
                        ]
                    })
                })
                .collect(),
        });
        tables.push(Table {
            title: "latency (ms): measured at the client; predicted (network legs only)".into(),
            header: head(&[
                "R",
                "W",
                "read p50",
                "read p99",
                "read p99.9",
                "write p50",
                "write p99",
                "write p99.9",
                "pred. read p99.9",
                "pred. write p99.9",
                "pred. t at 99.9%",
            ]),
            rows: self
                .summaries
                .iter()
                .map(|s| {
                    let (r, w) = (s.latency_ms.read, s.latency_ms.write);
                    let p = s.predicted_latency_ms;
                    let mut row = vec![s.r.to_string(), s.w.to_string()];
                    row.extend(
                        [
                            r.p50,
                            r.p99,
                            r.p999,
                            w.p50,
                            w.p99,
                            w.p999,
                            p.read.p999,
                            p.write.p999,
                            s.predicted_t_999_ms,
                        ]
                        .map(ms),
                    );
                    row
                })
                .collect(),
        });
        tables
    }

    /// Every read: `r,w,key,seq,t_ms,waited_ms,write_node,read_node,
    /// write_ms,read_ms,seen,values,behind` (`seen` empty: not found).
    pub fn samples_csv(&self) -> String {
        let mut out = String::from(
            "r,w,key,seq,t_ms,waited_ms,write_node,read_node,write_ms,read_ms,seen,values,behind\n",
        );
        let id = |i: usize| self.nodes.get(i).map_or("?", String::as_str);
        for run in self.runs {
            for s in &run.samples {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{:.4},{},{},{:.4},{:.4},{},{},{}",
                    run.r,
                    run.w,
                    s.key,
                    s.seq,
                    s.t_ms,
                    s.waited_ms,
                    id(s.write_node),
                    id(s.read_node),
                    s.write_ms,
                    s.read_ms,
                    s.seen.map(|v| v.to_string()).unwrap_or_default(),
                    s.values,
                    s.behind()
                );
            }
        }
        out
    }

    /// One panel: each configuration's predicted curve as a line and its
    /// measured points (at the mean wait that passed) in the same colour.
    pub fn svg(&self) -> String {
        let hi = self
            .summaries
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.mean_waited_ms.max(p.t_ms)))
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max)
            * 1.05;
        let grid: Vec<f64> = (0..=200).map(|i| hi * f64::from(i) / 200.0).collect();
        let mut series = Vec::new();
        let mut lowest = 1.0f64;
        for (i, (s, pred)) in self.summaries.iter().zip(&self.predicted).enumerate() {
            let line: Vec<(f64, f64)> = grid.iter().map(|&t| (t, pred.p_consistent(t))).collect();
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.reads > 0)
                .map(|p| (p.mean_waited_ms, p.p_measured))
                .collect();
            lowest = line
                .iter()
                .chain(&points)
                .map(|p| p.1)
                .fold(lowest, f64::min);
            series.push(Series {
                label: format!("R={} W={} predicted", s.r, s.w),
                points: line,
                mark: Mark::Line,
                color: i,
            });
            series.push(Series {
                label: format!(
                    "R={} W={} measured (RMSE {:.2} pp)",
                    s.r,
                    s.w,
                    s.rmse * 100.0
                ),
                points,
                mark: Mark::Points,
                color: i,
            });
        }
        let plot = Plot {
            title: format!(
                "t-visibility, N={}, {}",
                self.config.n,
                self.spec.as_deref().unwrap_or("per-leg delays")
            ),
            x: Axis {
                label: "wait after the write was acknowledged (ms)".into(),
                min: 0.0,
                max: hi,
                scale: Scale::Linear,
            },
            y: Axis {
                label: "P(consistent read)".into(),
                min: ((lowest * 10.0).floor() / 10.0).clamp(0.0, 0.9),
                max: 1.0,
                scale: Scale::Linear,
            },
            series,
        };
        svg::render(&[plot])
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Measured staleness: N={}, {}\n",
            self.config.n,
            self.spec.as_deref().unwrap_or("per-leg delays")
        );
        let _ = writeln!(
            out,
            "Made by `qkv exp staleness` (docs/EXPERIMENTS.md, \"Measuring staleness\", explains the method). Measurements vary from run to run and with the machine's load; the command:\n"
        );
        let _ = writeln!(out, "```sh\n{}\n```\n", self.command);
        let _ = writeln!(
            out,
            "The calibrated prediction of each configuration, alone:\n"
        );
        let commands: Vec<String> = self
            .summaries
            .iter()
            .map(|s| self.predict_command(s))
            .collect();
        let _ = writeln!(out, "```sh\n{}\n```\n", commands.join("\n"));
        for line in self.preamble() {
            let _ = writeln!(out, "    {line}");
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
             - `samples.csv`: every read (`r,w,key,seq,t_ms,waited_ms,write_node,read_node,write_ms,read_ms,seen,values,behind`).\n\
             - `plot.svg`: measured points over predicted lines.\n\n\
             ![measured over predicted t-visibility](plot.svg)\n",
        );
        out
    }

    /// Every file of `--out DIR`: (name, contents).
    pub fn files(&self) -> Vec<(&'static str, String)> {
        vec![
            ("summary.json", self.json()),
            ("samples.csv", self.samples_csv()),
            ("plot.svg", self.svg()),
            ("report.md", self.markdown()),
        ]
    }
}
