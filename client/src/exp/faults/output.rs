//! The files of a fault experiment beside `history.jsonl`: `results.json`
//! (the [`Outcome`]), `timeline.svg` (operations per second of each level
//! by outcome, the faults shaded) and `report.md` (the seed, the exact
//! command, the schedule and the table).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::availability::intervals;
use super::results::table;
use super::run::Outcome;
use crate::exp::history::{History, Outcome as OpOutcome};
use crate::exp::svg::{Axis, Band, Mark, Plot, Scale, Series, render_shaded};

/// Operations completed per second, per bucket and outcome: for each
/// bucket, `[ok, fail, info]` counts per whole second since the start
/// (final reads aside; an operation counts when it completed, or when it
/// was invoked if it never did).
pub fn per_second(history: &History) -> BTreeMap<String, [Vec<u64>; 3]> {
    let mut out: BTreeMap<String, [Vec<u64>; 3]> = BTreeMap::new();
    for op in history.ops.iter().filter(|o| !o.final_read) {
        let Some(t) = op.complete_time_ns.or(op.invoke_time_ns) else {
            continue;
        };
        let sec = usize::try_from(t / 1_000_000_000).unwrap_or(usize::MAX);
        if sec > 24 * 3600 {
            continue;
        }
        let i = match op.outcome {
            OpOutcome::Ok => 0,
            OpOutcome::Fail => 1,
            OpOutcome::Info => 2,
        };
        let row = &mut out.entry(op.bucket.clone()).or_default()[i];
        if row.len() <= sec {
            row.resize(sec + 1, 0);
        }
        row[sec] += 1;
    }
    out
}

/// The timeline: one panel per level, the fault intervals shaded.
pub fn timeline(history: &History, outcome: &Outcome) -> String {
    let counts = per_second(history);
    let span = outcome.duration_secs.max(1.0);
    let bands: Vec<Band> = intervals(&history.nemesis)
        .iter()
        .map(|i| Band {
            from: i.start_ns as f64 / 1e9,
            to: if i.end_ns == u64::MAX {
                span
            } else {
                i.end_ns as f64 / 1e9
            },
        })
        .collect();
    let plots: Vec<Plot> = outcome
        .levels
        .iter()
        .map(|l| {
            let rows = counts.get(&l.bucket);
            let max = rows
                .map(|r| r.iter().flatten().copied().max().unwrap_or(0))
                .unwrap_or(0)
                .max(1);
            let series = ["ok", "fail", "info"]
                .iter()
                .enumerate()
                .map(|(i, name)| Series {
                    label: (*name).to_string(),
                    points: rows
                        .map(|r| {
                            r[i].iter()
                                .enumerate()
                                .filter(|(s, _)| (*s as f64) < span)
                                .map(|(s, c)| (s as f64 + 0.5, *c as f64))
                                .collect()
                        })
                        .unwrap_or_default(),
                    mark: Mark::Line,
                    color: i,
                })
                .collect();
            Plot {
                title: format!("{} ({})", l.level, l.bucket),
                x: Axis {
                    label: "seconds (faults shaded)".into(),
                    min: 0.0,
                    max: span,
                    scale: Scale::Linear,
                },
                y: Axis {
                    label: "operations per second".into(),
                    min: 0.0,
                    max: max as f64 * 1.1,
                    scale: Scale::Linear,
                },
                series,
            }
        })
        .collect();
    render_shaded(&plots, &bands)
}

/// The Markdown report.
pub fn report(outcome: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Fault experiment\n");
    let _ = writeln!(s, "```sh\n{}\n```\n", outcome.command);
    let _ = writeln!(
        s,
        "Seed {}; nodes {}; N={}; {} clients for {:.0} s; workloads {}; faults {}; a fault counts {:.0} s past its end for availability.\n",
        outcome.seed,
        outcome.nodes.join(", "),
        outcome.n,
        outcome.clients,
        outcome.duration_secs,
        outcome
            .workloads
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join(", "),
        if outcome.nemesis.is_empty() {
            "none".to_string()
        } else {
            outcome
                .nemesis
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        },
        outcome.settle_secs
    );
    let _ = writeln!(s, "## Results\n\n```\n{}```\n", table(&outcome.levels));
    let _ = writeln!(
        s,
        "Strict anomalies: {} (as `qkv exp check history.jsonl` counts them). Healed at {:.1} s; CONVERGED is the time from then until every replica of every key agreed.\n",
        outcome.strict_anomalies, outcome.healed_at_secs
    );
    let _ = writeln!(
        s,
        "## Schedule\n\n| start (s) | end (s) | fault |\n|---|---|---|"
    );
    for w in &outcome.schedule {
        let _ = writeln!(
            s,
            "| {:.1} | {:.1} | {} |",
            w.start_secs,
            w.end_secs,
            w.fault.describe().replace('|', "\\|")
        );
    }
    if !outcome.nemesis_errors.is_empty() {
        let _ = writeln!(s, "\n## Faults that could not be carried out\n");
        for e in &outcome.nemesis_errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    let _ = writeln!(
        s,
        "\n![operations per second by outcome, faults shaded](timeline.svg)"
    );
    s
}

/// Writes `results.json`, `timeline.svg` and `report.md` into `dir`.
pub fn write_all(dir: &Path, history: &History, outcome: &Outcome) -> Result<(), String> {
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    let json = serde_json::to_string_pretty(outcome).map_err(|e| e.to_string())?;
    write("results.json", json + "\n")?;
    write("timeline.svg", timeline(history, outcome))?;
    write("report.md", report(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_counted_per_second_by_bucket_and_outcome() {
        let text = r#"
{"process":1,"type":"invoke","f":"read","key":"k","bucket":"b","time_ns":100}
{"process":1,"type":"ok","f":"read","key":"k","bucket":"b","value":[],"time_ns":200}
{"process":1,"type":"invoke","f":"read","key":"k","bucket":"b","time_ns":1500000000}
{"process":1,"type":"info","f":"read","key":"k","bucket":"b","time_ns":2500000000}
{"process":2,"type":"invoke","f":"write","key":"k","bucket":"b","value":1,"time_ns":300}
{"process":2,"type":"fail","f":"write","key":"k","bucket":"b","value":1,"time_ns":400}
{"process":3,"type":"invoke","f":"read","key":"k","bucket":"b","final":true,"time_ns":500}
{"process":3,"type":"ok","f":"read","key":"k","bucket":"b","final":true,"value":[],"time_ns":600}
"#;
        let h = History::read(text.trim().as_bytes()).expect("parses");
        let c = per_second(&h);
        assert_eq!(c["b"], [vec![1], vec![1], vec![0, 0, 1]]);
    }
}
