//! The results of a fault experiment (pure): one row per level, built from
//! the checker's verdict on the history, the availability while a quorum
//! was reachable and the time each level's replicas took to converge after
//! the last heal; as JSON (`results.json`) and as a text table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::availability::Availability;
use crate::exp::check::{BucketVerdict, Counts, Verdict};

/// One level's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelResult {
    /// The level as given (`sloppy:r=2,w=2`).
    pub level: String,
    pub bucket: String,
    /// Whether the store promises this level no anomaly.
    pub strict: bool,
    /// Client operations by outcome, final reads included (the checker's
    /// totals).
    pub ops: Counts,
    pub availability: Availability,
    /// ok / reachable, when any operation had its quorum reachable.
    pub availability_ratio: Option<f64>,
    pub lost: usize,
    pub lost_unseen: usize,
    pub stale: usize,
    pub non_monotonic: usize,
    pub unexpected: usize,
    /// Keys the final read could not check.
    pub unchecked_keys: usize,
    /// Seconds from the last heal until every replica of every key of the
    /// bucket agreed; `None` when they did not within the wait.
    pub convergence_secs: Option<f64>,
}

impl LevelResult {
    /// The strict anomalies of this level: lost writes, stale and
    /// non-monotonic reads, unexpected values.
    pub fn anomalies(&self) -> usize {
        self.lost + self.stale + self.non_monotonic + self.unexpected
    }
}

fn sum(b: &BucketVerdict) -> Counts {
    b.totals.values().fold(Counts::default(), |acc, c| Counts {
        ok: acc.ok + c.ok,
        fail: acc.fail + c.fail,
        info: acc.info + c.info,
    })
}

/// The rows, one per `(level, bucket)` in the order given; a bucket the
/// verdict does not know (no operation ran in it) gets zeros.
pub fn results(
    levels: &[(String, String)],
    verdict: &Verdict,
    availability: &BTreeMap<String, Availability>,
    convergence: &BTreeMap<String, Option<f64>>,
) -> Vec<LevelResult> {
    levels
        .iter()
        .map(|(level, bucket)| {
            let v = verdict.buckets.iter().find(|b| &b.bucket == bucket);
            let a = availability.get(bucket).copied().unwrap_or_default();
            LevelResult {
                level: level.clone(),
                bucket: bucket.clone(),
                strict: v.is_some_and(|b| b.settings.strict),
                ops: v.map(sum).unwrap_or_default(),
                availability: a,
                availability_ratio: a.ratio(),
                lost: v.map_or(0, |b| b.lost.count),
                lost_unseen: v.map_or(0, |b| b.lost_unseen.count),
                stale: v.map_or(0, |b| b.stale_reads.count),
                non_monotonic: v.map_or(0, |b| b.non_monotonic_reads.count),
                unexpected: v.map_or(0, |b| b.unexpected_values.count),
                unchecked_keys: v.map_or(0, |b| b.unchecked_keys.len()),
                convergence_secs: convergence.get(bucket).copied().flatten(),
            }
        })
        .collect()
}

/// The table printed on stdout and in the report.
pub fn table(rows: &[LevelResult]) -> String {
    let head = [
        "LEVEL",
        "BUCKET",
        "EXPECT",
        "OK",
        "FAIL",
        "INFO",
        "AVAIL",
        "LOST",
        "UNSEEN",
        "STALE",
        "NON-MONO",
        "UNEXPECTED",
        "UNCHECKED",
        "CONVERGED",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.level.clone(),
                r.bucket.clone(),
                if r.strict { "strict" } else { "weak" }.to_string(),
                r.ops.ok.to_string(),
                r.ops.fail.to_string(),
                r.ops.info.to_string(),
                match r.availability_ratio {
                    Some(p) => format!(
                        "{:.2}% ({}/{})",
                        100.0 * p,
                        r.availability.ok,
                        r.availability.reachable
                    ),
                    None => "-".into(),
                },
                r.lost.to_string(),
                r.lost_unseen.to_string(),
                r.stale.to_string(),
                r.non_monotonic.to_string(),
                r.unexpected.to_string(),
                r.unchecked_keys.to_string(),
                match r.convergence_secs {
                    Some(s) => format!("{s:.1} s"),
                    None => "no".into(),
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let n = cells.len();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            out.push_str(&cell);
            if i + 1 < n {
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(head.iter().map(|h| h.to_string()).collect());
    for row in body {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exp::check::{CheckOptions, check};
    use crate::exp::history::History;

    const HISTORY: &str = r#"
{"process":1,"type":"invoke","f":"write","key":"k","value":1,"w":2,"bucket":"exp-r2w2"}
{"process":1,"type":"ok","f":"write","key":"k","value":1,"w":2,"bucket":"exp-r2w2"}
{"process":2,"type":"invoke","f":"write","key":"k","value":2,"w":1,"bucket":"exp-r1w1"}
{"process":2,"type":"ok","f":"write","key":"k","value":2,"w":1,"bucket":"exp-r1w1"}
{"process":3,"type":"invoke","f":"read","key":"k","r":1,"bucket":"exp-r1w1"}
{"process":3,"type":"ok","f":"read","key":"k","value":[],"r":1,"bucket":"exp-r1w1"}
{"process":4,"type":"invoke","f":"write","key":"k","value":3,"w":2,"bucket":"exp-r2w2"}
{"process":4,"type":"info","f":"write","key":"k","value":3,"w":2,"bucket":"exp-r2w2"}
{"process":9,"type":"invoke","f":"read","key":"k","r":"all","bucket":"exp-r2w2","final":true}
{"process":9,"type":"ok","f":"read","key":"k","value":[1],"r":"all","bucket":"exp-r2w2","final":true}
{"process":9,"type":"invoke","f":"read","key":"k","r":"all","bucket":"exp-r1w1","final":true}
{"process":9,"type":"ok","f":"read","key":"k","value":[],"r":"all","bucket":"exp-r1w1","final":true}
"#;

    fn rows() -> Vec<LevelResult> {
        let h = History::read(HISTORY.trim().as_bytes()).expect("parses");
        let v = check(&h, &CheckOptions::default());
        let mut avail = BTreeMap::new();
        avail.insert(
            "exp-r2w2".to_string(),
            Availability {
                reachable: 4,
                ok: 3,
            },
        );
        let mut conv = BTreeMap::new();
        conv.insert("exp-r2w2".to_string(), Some(1.26));
        conv.insert("exp-r1w1".to_string(), None);
        let levels = [
            ("r=2,w=2".to_string(), "exp-r2w2".to_string()),
            ("r=1,w=1".to_string(), "exp-r1w1".to_string()),
            ("r=3,w=3".to_string(), "exp-r3w3".to_string()),
        ];
        results(&levels, &v, &avail, &conv)
    }

    #[test]
    fn each_level_takes_its_buckets_figures_from_the_verdict() {
        let r = rows();
        assert_eq!(r.len(), 3);
        let strict = &r[0];
        assert!(strict.strict);
        assert_eq!((strict.ops.ok, strict.ops.fail, strict.ops.info), (2, 0, 1));
        assert_eq!(strict.anomalies(), 0);
        assert_eq!(strict.availability_ratio, Some(0.75));
        assert_eq!(strict.convergence_secs, Some(1.26));
        let weak = &r[1];
        assert!(!weak.strict);
        assert_eq!((weak.lost, weak.lost_unseen, weak.stale), (1, 1, 1));
        assert_eq!(weak.anomalies(), 2);
        assert_eq!(weak.availability_ratio, None);
        assert_eq!(weak.convergence_secs, None);
        let unused = &r[2];
        assert_eq!((unused.ops.ok, unused.anomalies()), (0, 0));
    }

    #[test]
    fn the_table_shows_one_aligned_row_per_level() {
        let t = table(&rows());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("LEVEL    BUCKET    EXPECT"), "{t}");
        assert!(
            lines[1].contains("75.00% (3/4)") && lines[1].contains("1.3 s"),
            "{t}"
        );
        assert!(lines[2].starts_with("r=1,w=1  exp-r1w1  weak"), "{t}");
        assert!(lines[2].trim_end().ends_with("no"), "{t}");
        let col = lines[0].find("LOST").expect("LOST column");
        assert_eq!(&lines[2][col..col + 1], "1", "{t}");
    }
}
