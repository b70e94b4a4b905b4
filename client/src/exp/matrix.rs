//! The PBS paper's Table 4 for this store (`qkv exp matrix`): for every R
//! and W in 1..=N, read and write latency (p50, p99, p99.9), the
//! t-visibility at 99.9%, whether R + W > N, and how many of the N
//! replicas may be down before reads (R <= N - down) and writes
//! (W <= N - down) fail.
//!
//! Rows come either from the predictor alone ([`predicted`], `--simulate`:
//! no cluster) or from a staleness measurement ([`measured`]: latency and
//! P(consistent) at the asked t measured on the cluster, the t-visibility
//! at 99.9% from the prediction for the same delays, since a short sweep
//! cannot resolve a 99.9% point). Pure: the CLI runs the measurement.

use std::fmt::Write as _;

use serde::Serialize;

use super::predict::{Percentiles, Prediction};
use super::report::Table;
use super::staleness::PairSummary;

/// One (R, W) row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Read quorum.
    pub r: usize,
    /// Write quorum.
    pub w: usize,
    /// R + W > N.
    pub strict: bool,
    /// Read latency, ms.
    pub read_ms: Percentiles,
    /// Write latency, ms.
    pub write_ms: Percentiles,
    /// From this t (ms after the commit) on, 99.9% of reads are
    /// consistent (predicted).
    pub t_visibility_999_ms: f64,
    /// P(consistent) at the first asked t (measured, or predicted).
    pub p_consistent: f64,
    /// That t, ms.
    pub t_ms: f64,
    /// Replicas that may be down with reads still served: N - R.
    pub down_for_reads: usize,
    /// Replicas that may be down with writes still acknowledged: N - W.
    pub down_for_writes: usize,
}

/// Where the figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Everything from the predictor.
    Predicted,
    /// Latency and P(consistent) measured, t-visibility predicted.
    Measured,
}

/// How many of `n` replicas may be down before a quorum of `q` cannot
/// be met.
pub fn tolerated(n: usize, q: usize) -> usize {
    n.saturating_sub(q)
}

/// The rows of a prediction over every (R, W) (`--simulate`).
pub fn predicted(p: &Prediction) -> Vec<Row> {
    let n = p.config.n;
    let t = p.config.ts.first().copied().unwrap_or(0.0);
    p.pairs
        .iter()
        .map(|x| Row {
            r: x.r,
            w: x.w,
            strict: x.r + x.w > n,
            read_ms: x.latency_ms.read,
            write_ms: x.latency_ms.write,
            t_visibility_999_ms: x.t_at.get("0.999").copied().unwrap_or(f64::NAN),
            p_consistent: x.samples.p_consistent(t),
            t_ms: t,
            down_for_reads: tolerated(n, x.r),
            down_for_writes: tolerated(n, x.w),
        })
        .collect()
}

/// The rows of a staleness measurement (each summary carries the
/// prediction's t at 99.9%).
pub fn measured(n: usize, summaries: &[PairSummary]) -> Vec<Row> {
    summaries
        .iter()
        .map(|s| {
            let first = s.points.first();
            Row {
                r: s.r,
                w: s.w,
                strict: s.r + s.w > n,
                read_ms: s.latency_ms.read,
                write_ms: s.latency_ms.write,
                t_visibility_999_ms: s.predicted_t_999_ms,
                p_consistent: first.map_or(f64::NAN, |p| p.p_measured),
                t_ms: first.map_or(0.0, |p| p.t_ms),
                down_for_reads: tolerated(n, s.r),
                down_for_writes: tolerated(n, s.w),
            }
        })
        .collect()
}

fn ms(v: f64) -> String {
    format!("{v:.2}")
}

/// The matrix as a table.
pub fn table(source: Source, rows: &[Row]) -> Table {
    let t = rows.first().map_or(0.0, |r| r.t_ms);
    let what = match source {
        Source::Predicted => "predicted",
        Source::Measured => "measured",
    };
    Table {
        title: format!(
            "R/W matrix ({what} latency in ms and P(consistent) at t={t} ms; t-visibility at 99.9% predicted)"
        ),
        header: [
            "R",
            "W",
            "R+W>N",
            "read p50",
            "read p99",
            "read p99.9",
            "write p50",
            "write p99",
            "write p99.9",
            "t at 99.9% (ms)",
            "P(consistent)",
            "down: reads ok",
            "down: writes ok",
        ]
        .map(String::from)
        .to_vec(),
        rows: rows
            .iter()
            .map(|x| {
                let mut row = vec![
                    x.r.to_string(),
                    x.w.to_string(),
                    if x.strict { "yes" } else { "no" }.into(),
                ];
                row.extend(
                    [
                        x.read_ms.p50,
                        x.read_ms.p99,
                        x.read_ms.p999,
                        x.write_ms.p50,
                        x.write_ms.p99,
                        x.write_ms.p999,
                        x.t_visibility_999_ms,
                    ]
                    .map(ms),
                );
                row.push(format!("{:.4}", x.p_consistent));
                row.push(format!("<= {}", x.down_for_reads));
                row.push(format!("<= {}", x.down_for_writes));
                row
            })
            .collect(),
    }
}

/// The matrix as CSV.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "r,w,strict,read_p50,read_p99,read_p999,write_p50,write_p99,write_p999,t_visibility_999_ms,t_ms,p_consistent,down_for_reads,down_for_writes\n",
    );
    for x in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            x.r,
            x.w,
            x.strict,
            x.read_ms.p50,
            x.read_ms.p99,
            x.read_ms.p999,
            x.write_ms.p50,
            x.write_ms.p99,
            x.write_ms.p999,
            x.t_visibility_999_ms,
            x.t_ms,
            x.p_consistent,
            x.down_for_reads,
            x.down_for_writes
        );
    }
    out
}

/// The JSON summary.
pub fn json(command: &str, n: usize, source: Source, load: &str, rows: &[Row]) -> String {
    #[derive(Serialize)]
    struct J<'a> {
        command: &'a str,
        n: usize,
        source: Source,
        load: &'a str,
        rows: &'a [Row],
    }
    let mut s = serde_json::to_string_pretty(&J {
        command,
        n,
        source,
        load,
        rows,
    })
    .unwrap_or_default();
    s.push('\n');
    s
}

/// The Markdown report.
pub fn markdown(command: &str, source: Source, load: &str, rows: &[Row]) -> String {
    let t = table(source, rows);
    let mut out = String::from("# The R/W matrix\n\n");
    let _ = writeln!(
        out,
        "Made by `qkv exp matrix` (docs/EXPERIMENTS.md, \"The matrix\"):\n\n```sh\n{command}\n```\n"
    );
    if !load.is_empty() {
        let _ = writeln!(out, "Load average: {load}\n");
    }
    let _ = writeln!(out, "## {}\n", t.title);
    let _ = writeln!(out, "| {} |", t.header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(t.header.len()));
    for row in &t.rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use quorumkv_faults::Preset;

    use super::*;
    use crate::exp::predict::{Config, Model, predict};

    #[test]
    fn a_simulated_n3_matrix_has_every_pair_and_strict_quorums_are_visible_at_once() {
        let cfg = Config {
            n: 3,
            rs: vec![1, 2, 3],
            ws: vec![1, 2, 3],
            delays: Preset::LnkdDisk.delays(),
            model: Model::Wars,
            ts: vec![0.0],
            ps: vec![0.999],
            max_k: 1,
            trials: 20_000,
            seed: 1,
        };
        let rows = predicted(&predict(&cfg, 1).expect("predict"));
        assert_eq!(rows.len(), 9);
        for x in &rows {
            assert_eq!(x.strict, x.r + x.w > 3);
            if x.strict {
                assert_eq!((x.t_visibility_999_ms, x.p_consistent), (0.0, 1.0), "{x:?}");
            }
            assert_eq!((x.down_for_reads, x.down_for_writes), (3 - x.r, 3 - x.w));
        }
        let weak = rows.iter().find(|x| (x.r, x.w) == (1, 1)).expect("R=W=1");
        assert!(weak.p_consistent < 1.0 && weak.t_visibility_999_ms > 0.0);
        // Waiting for more replicas costs latency.
        let all = rows.iter().find(|x| (x.r, x.w) == (3, 3)).expect("R=W=3");
        assert!(all.write_ms.p50 > weak.write_ms.p50 && all.read_ms.p50 > weak.read_ms.p50);
        let t = table(Source::Predicted, &rows);
        assert_eq!(t.rows.len(), 9);
        assert_eq!(&t.rows[0][..3], ["1", "1", "no"]);
        assert_eq!(csv(&rows).lines().count(), 10);
    }

    proptest! {
        #[test]
        fn a_quorum_survives_exactly_the_replicas_it_does_not_need(n in 1usize..20, q in 1usize..20) {
            prop_assume!(q <= n);
            let down = tolerated(n, q);
            // Up replicas n - down still make the quorum; one more down does not.
            prop_assert!(n - down >= q);
            prop_assert!(down == n || n - down - 1 < q);
        }
    }
}
