//! The verdict as text for people: one summary row per bucket, then for
//! each bucket its totals and the operations behind each anomaly (the first
//! few; `--json` lists them all).

use std::fmt::{Display, Write as _};

use super::{BucketVerdict, Listed, Verdict};

/// How many operations of one anomaly the text lists.
const SHOWN: usize = 10;

/// The verdict as a summary table followed by per-bucket details.
pub fn text(v: &Verdict) -> String {
    let mut out = format!(
        "{} events, {} operations, {} nemesis events; {} anomalies in buckets with strict expectations\n\n",
        v.events,
        v.operations,
        v.nemesis.len(),
        v.strict_anomalies
    );
    let header = [
        "BUCKET",
        "EXPECT",
        "KEYS",
        "OK",
        "FAIL",
        "INFO",
        "LOST",
        "UNSEEN",
        "STALE",
        "NON-MONO",
        "UNEXPECTED",
        "SIBLINGS",
        "RESOLVED",
        "UNKNOWN",
        "VISIBLE",
        "UNCHECKED",
    ];
    let rows: Vec<Vec<String>> = v
        .buckets
        .iter()
        .map(|b| {
            let (ok, fail, info) = b
                .totals
                .values()
                .fold((0, 0, 0), |(o, f, i), c| (o + c.ok, f + c.fail, i + c.info));
            let expect = if b.settings.strict { "strict" } else { "weak" };
            [
                b.bucket.clone(),
                expect.into(),
                b.keys.to_string(),
                ok.to_string(),
                fail.to_string(),
                info.to_string(),
                b.lost.count.to_string(),
                b.lost_unseen.count.to_string(),
                b.stale_reads.count.to_string(),
                b.non_monotonic_reads.count.to_string(),
                b.unexpected_values.count.to_string(),
                b.siblings.reads.to_string(),
                b.siblings.resolved.to_string(),
                b.unknown.count.to_string(),
                b.unknown.visible_later.to_string(),
                b.unchecked_keys.len().to_string(),
            ]
            .into()
        })
        .collect();
    out.push_str(&table(&header, &rows));
    for b in &v.buckets {
        out.push('\n');
        details(b, &mut out);
    }
    out
}

fn details(b: &BucketVerdict, out: &mut String) {
    let s = &b.settings;
    let level = |l: Option<u32>| l.map_or("?".to_string(), |n| n.to_string());
    let _ = writeln!(
        out,
        "{}: {}, {} quorums, r={} w={} n={}: {} expectations",
        b.bucket,
        s.conflicts,
        if s.sloppy { "sloppy" } else { "strict" },
        level(s.r),
        level(s.w),
        s.n,
        if s.strict { "strict" } else { "weak" },
    );
    let totals: Vec<String> = b
        .totals
        .iter()
        .map(|(f, c)| {
            let f = format!("{f:?}").to_lowercase();
            format!("{f} {} ok, {} fail, {} info", c.ok, c.fail, c.info)
        })
        .collect();
    let _ = writeln!(out, "  {}", totals.join("; "));
    list(out, "lost", &b.lost, |i| i.to_string());
    list(out, "lost, never read", &b.lost_unseen, |i| i.to_string());
    list(out, "stale reads", &b.stale_reads, |s| {
        format!("{} missed {}", s.read, s.missed)
    });
    list(out, "non-monotonic reads", &b.non_monotonic_reads, |n| {
        format!("{} after {} lost {}", n.read, n.previous, n.value)
    });
    list(out, "unexpected values", &b.unexpected_values, |u| {
        format!("{} returned {}", u.read, u.value)
    });
    if b.siblings.reads + b.siblings.resolved > 0 {
        let _ = writeln!(
            out,
            "  siblings: {} reads returned some (at most {}), {} writes resolved some",
            b.siblings.reads, b.siblings.max, b.siblings.resolved
        );
    }
    if b.unknown.count > 0 {
        let _ = writeln!(
            out,
            "  unknown outcomes: {}, of which visible later {}: {}",
            b.unknown.count,
            b.unknown.visible_later,
            shown(&b.unknown.visible, |i| i.to_string())
        );
    }
    list(
        out,
        "contexts no read returned",
        &b.unmatched_contexts,
        |i| i.to_string(),
    );
    list(out, "duplicate values", &b.duplicate_values, |i| {
        i.to_string()
    });
    if !b.unchecked_keys.is_empty() {
        let _ = writeln!(
            out,
            "  unchecked (no final read): {} keys, {} acknowledged writes: {}",
            b.unchecked_keys.len(),
            b.unchecked_writes,
            shown(&b.unchecked_keys, |k| format!("{k:?}"))
        );
    }
}

fn list<T>(out: &mut String, what: &str, l: &Listed<T>, show: impl Fn(&T) -> String) {
    if l.count > 0 {
        let _ = writeln!(out, "  {what} ({}): {}", l.count, shown(&l.ops, show));
    }
}

fn shown<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let mut s: Vec<String> = items.iter().take(SHOWN).map(show).collect();
    if items.len() > SHOWN {
        s.push(format!("… and {} more", items.len() - SHOWN));
    }
    s.join(", ")
}

/// Columns padded to their widest cell, two spaces apart.
fn table(header: &[impl Display], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(ToString::to_string).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
