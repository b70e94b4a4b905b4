//! Hand-made histories, one per anomaly kind and one per thing that must
//! not be mistaken for an anomaly. Each history is written in a terse line
//! form (see [`hist`]); an event's index is its line number from 0.

use super::*;
use crate::exp::history::{History, Level};

/// Parses lines `PROCESS TYPE F KEY [VALUE] [ctx=C] [b=BUCKET] [final]`
/// (VALUE is JSON without spaces) into a history; the bucket defaults to
/// `exp-r2w2` (strict). Nemesis lines are `nemesis info F`.
fn hist(lines: &[&str]) -> History {
    let mut jsonl = String::new();
    for (index, line) in lines.iter().enumerate() {
        let mut t = line.split_whitespace();
        let process = t.next().expect("process");
        let mut e = serde_json::json!({
            "index": index,
            "type": t.next().expect("type"),
            "f": t.next().expect("f"),
            "time_ns": index * 1000,
        });
        if process == "nemesis" {
            e["process"] = process.into();
        } else {
            e["process"] = process.parse::<u64>().expect("process number").into();
            e["key"] = t.next().expect("key").into();
            e["bucket"] = "exp-r2w2".into();
        }
        for tok in t {
            if let Some(c) = tok.strip_prefix("ctx=") {
                e["context"] = c.into();
            } else if let Some(b) = tok.strip_prefix("b=") {
                e["bucket"] = b.into();
            } else if tok == "final" {
                e["final"] = true.into();
            } else {
                e["value"] = serde_json::from_str(tok).expect("JSON value");
            }
        }
        jsonl.push_str(&e.to_string());
        jsonl.push('\n');
    }
    History::read(jsonl.as_bytes()).expect("a valid history")
}

fn verdict(lines: &[&str]) -> Verdict {
    check(&hist(lines), &CheckOptions::default())
}

/// The only bucket's verdict.
fn only(lines: &[&str]) -> BucketVerdict {
    let mut v = verdict(lines);
    assert_eq!(v.buckets.len(), 1);
    v.buckets.remove(0)
}

fn stale(read: u64, missed: u64) -> StaleRead {
    StaleRead { read, missed }
}

#[test]
fn a_correct_history_with_siblings_kept_and_resolved_passes_with_all_zeros() {
    let v = verdict(&[
        "1 invoke write k 1",           // 0
        "2 invoke write k 2",           // 1
        "1 ok write k 1",               // 2
        "2 ok write k 2",               // 3
        "nemesis info partition",       // 4
        "3 invoke read k",              // 5
        "3 ok read k [1,2] ctx=c1",     // 6: concurrent writes kept as siblings
        "3 invoke write k 3 ctx=c1",    // 7: resolves them
        "3 ok write k 3",               // 8
        "1 invoke read k",              // 9
        "1 ok read k [3] ctx=c2",       // 10
        "9 invoke read k final",        // 11
        "9 ok read k [3] ctx=c2 final", // 12
    ]);
    assert_eq!((v.events, v.operations, v.nemesis.len()), (13, 6, 1));
    assert_eq!(v.strict_anomalies, 0);
    let b = &v.buckets[0];
    assert!(b.settings.strict);
    assert_eq!(b.anomalies(), 0);
    assert_eq!(b.lost_unseen.count, 0);
    assert_eq!(b.unmatched_contexts.count, 0);
    assert_eq!(b.unknown.count, 0);
    assert!(b.unchecked_keys.is_empty());
    assert_eq!(
        b.siblings,
        Siblings {
            reads: 1,
            max: 2,
            resolved: 1
        }
    );
    let ok = |n| Counts {
        ok: n,
        fail: 0,
        info: 0,
    };
    assert_eq!(b.totals[&OpKind::Read], ok(3));
    assert_eq!(b.totals[&OpKind::Write], ok(3));
}

#[test]
fn an_acknowledged_write_missing_from_the_final_read_is_lost() {
    let b = only(&[
        "1 invoke write k 1",
        "1 ok write k 1",
        "2 invoke write k 2",
        "2 ok write k 2",
        "9 invoke read k final",
        "9 ok read k [2] ctx=c final",
    ]);
    assert_eq!(
        b.lost,
        Listed {
            count: 1,
            ops: vec![0]
        }
    );
    assert_eq!(
        b.lost_unseen,
        Listed {
            count: 1,
            ops: vec![0]
        }
    );
    assert_eq!(b.anomalies(), 1);
}

#[test]
fn values_superseded_transitively_by_the_final_value_are_not_lost() {
    let b = only(&[
        "1 invoke write k 1",          // 0
        "1 ok write k 1",              // 1
        "1 invoke read k",             // 2
        "1 ok read k [1] ctx=a",       // 3
        "1 invoke write k 2 ctx=a",    // 4
        "1 ok write k 2",              // 5
        "2 invoke read k",             // 6
        "2 ok read k [2] ctx=b",       // 7
        "2 invoke write k 3 ctx=b",    // 8
        "2 ok write k 3",              // 9
        "9 invoke read k final",       // 10
        "9 ok read k [3] ctx=c final", // 11
    ]);
    assert_eq!(b.anomalies(), 0, "{b:?}");
}

#[test]
fn a_key_without_a_final_read_is_unchecked_rather_than_lost() {
    let b = only(&[
        "1 invoke write k 1",
        "1 ok write k 1",
        "1 invoke write j 2",
        "1 ok write j 2",
        "9 invoke read j final",
        "9 fail read j final",
    ]);
    assert_eq!(b.lost.count, 0);
    assert_eq!(b.unchecked_keys, vec!["j".to_string(), "k".to_string()]);
    assert_eq!(b.unchecked_writes, 2);
}

#[test]
fn a_stale_read_is_reported_when_it_misses_a_write_acknowledged_before_it_began() {
    let b = only(&[
        "1 invoke write k 1",    // 0
        "1 ok write k 1",        // 1
        "2 invoke read k",       // 2
        "2 ok read k [] ctx=a",  // 3: misses 0
        "3 invoke read k",       // 4
        "3 ok read k [1] ctx=b", // 5
    ]);
    assert_eq!(
        b.stale_reads,
        Listed {
            count: 1,
            ops: vec![stale(2, 0)]
        }
    );
    assert_eq!(b.anomalies(), 1);
}

#[test]
fn a_read_that_began_before_a_write_was_acknowledged_may_miss_it() {
    let b = only(&[
        "1 invoke write k 1",
        "2 invoke read k",
        "1 ok write k 1",
        "2 ok read k [] ctx=a",
    ]);
    assert_eq!(b.stale_reads.count, 0);
}

#[test]
fn a_causally_overwritten_value_missing_from_a_later_read_is_neither_stale_nor_lost() {
    let b = only(&[
        "1 invoke write k 1",       // 0
        "1 ok write k 1",           // 1
        "1 invoke read k",          // 2
        "1 ok read k [1] ctx=a",    // 3
        "1 invoke write k 2 ctx=a", // 4: supersedes 1
        "2 invoke read k",          // 5: 2 is in flight, 1 acknowledged
        "2 ok read k [2] ctx=b",    // 6
        "1 ok write k 2",           // 7
        "2 invoke read k",          // 8
        "2 ok read k [2] ctx=b",    // 9
        "9 invoke read k final",
        "9 ok read k [2] ctx=b final",
    ]);
    assert_eq!(b.anomalies(), 0, "{b:?}");
}

#[test]
fn an_info_write_does_not_make_reads_stale_and_is_counted_when_it_becomes_visible() {
    let b = only(&[
        "1 invoke write k 1",    // 0
        "1 info write k 1",      // 1: unknown outcome
        "2 invoke read k",       // 2
        "2 ok read k [] ctx=a",  // 3: not stale
        "3 invoke write k 2",    // 4: never completed: unknown too
        "2 invoke read k",       // 5
        "2 ok read k [1] ctx=b", // 6: 1 became visible
    ]);
    assert_eq!(b.anomalies(), 0, "{b:?}");
    assert_eq!(b.unknown.count, 2);
    assert_eq!(b.unknown.ops, vec![0, 4]);
    assert_eq!(
        (b.unknown.visible_later, b.unknown.visible.clone()),
        (1, vec![0])
    );
    assert_eq!(
        b.totals[&OpKind::Write],
        Counts {
            ok: 0,
            fail: 0,
            info: 2
        }
    );
}

#[test]
fn a_non_monotonic_read_is_reported_when_a_process_reads_an_older_state() {
    let b = only(&[
        "1 invoke write k 1",    // 0
        "2 invoke read k",       // 1
        "2 ok read k [1] ctx=a", // 2: sees the write in flight
        "2 invoke read k",       // 3
        "2 ok read k [] ctx=z",  // 4: and then no longer
        "3 invoke read k",       // 5: another process's first read
        "3 ok read k [] ctx=z",  // 6
        "1 info write k 1",      // 7
    ]);
    assert_eq!(
        b.non_monotonic_reads,
        Listed {
            count: 1,
            ops: vec![NonMonotonic {
                read: 3,
                previous: 1,
                value: 1.into()
            }]
        }
    );
    assert_eq!(b.stale_reads.count, 0, "the write was never acknowledged");
}

#[test]
fn a_later_read_of_a_superseding_value_is_monotonic() {
    let b = only(&[
        "1 invoke write k 1",
        "1 ok write k 1",
        "2 invoke read k",
        "2 ok read k [1] ctx=a",
        "2 invoke write k 2 ctx=a",
        "2 ok write k 2",
        "2 invoke read k",
        "2 ok read k [2] ctx=b",
    ]);
    assert_eq!(b.non_monotonic_reads.count, 0);
}

#[test]
fn values_never_written_or_whose_write_failed_are_unexpected() {
    let b = only(&[
        "1 invoke write k 1",
        "1 fail write k 1",
        "2 invoke read k",
        "2 ok read k [1,\"ghost\"] ctx=a",
    ]);
    assert_eq!(
        b.unexpected_values.ops,
        vec![
            Unexpected {
                read: 2,
                value: 1.into()
            },
            Unexpected {
                read: 2,
                value: "ghost".into()
            },
        ]
    );
    assert_eq!(b.totals[&OpKind::Write].fail, 1);
}

#[test]
fn a_context_no_read_returned_is_counted_and_supersedes_nothing() {
    let b = only(&[
        "1 invoke write k 1",
        "1 ok write k 1",
        "1 invoke write k 2 ctx=nowhere", // 2
        "1 ok write k 2",
        "9 invoke read k final",
        "9 ok read k [2] ctx=a final",
    ]);
    assert_eq!(
        b.unmatched_contexts,
        Listed {
            count: 1,
            ops: vec![2]
        }
    );
    assert_eq!(b.lost.ops, vec![0]);
}

#[test]
fn a_write_value_repeated_is_reported_as_a_duplicate() {
    let b = only(&[
        "1 invoke write k 1",
        "1 ok write k 1",
        "2 invoke write k 1",
        "2 ok write k 1",
    ]);
    assert_eq!(b.duplicate_values.ops, vec![2]);
}

#[test]
fn lww_buckets_count_acknowledged_writes_no_read_saw_and_expect_little() {
    let lww = "b=exp-lww-r2w2";
    let lines: Vec<String> = [
        "1 invoke write k 1",    // 0
        "1 ok write k 1",        // 1
        "2 invoke read k",       // 2
        "2 ok read k [1] ctx=a", // 3
        "2 invoke write k 2",    // 4: no context; 1 is dropped by lww
        "2 ok write k 2",        // 5
        "3 invoke write k 3",    // 6: dropped unseen
        "3 ok write k 3",        // 7
        "4 invoke write k 4",    // 8
        "4 ok write k 4",        // 9
        "9 invoke read k final",
        "9 ok read k [4] ctx=b final",
    ]
    .iter()
    .map(|l| format!("{l} {lww}"))
    .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let v = verdict(&lines);
    let b = &v.buckets[0];
    assert_eq!(b.settings.conflicts, "lww");
    assert!(!b.settings.strict);
    assert_eq!(b.lost.ops, vec![0, 4, 6]);
    assert_eq!(b.lost_unseen.ops, vec![4, 6]);
    assert_eq!(v.strict_anomalies, 0, "lww promises no such thing");
}

#[test]
fn a_correct_set_history_passes_and_an_info_add_may_become_visible() {
    let b = only(&[
        "1 invoke read s",                           // 0
        "1 ok read s [] ctx=a",                      // 1
        "1 invoke add s \"x\" ctx=a",                // 2
        "1 ok add s \"x\"",                          // 3
        "1 invoke read s",                           // 4
        "1 ok read s [[\"x\"]] ctx=b",               // 5
        "1 invoke add s \"y\" ctx=b",                // 6
        "1 info add s \"y\"",                        // 7
        "1 invoke add s \"z\"",                      // 8: no context: a sibling
        "1 ok add s \"z\"",                          // 9
        "1 invoke read s",                           // 10
        "1 ok read s [[\"x\",\"y\"],[\"z\"]] ctx=c", // 11
        "1 invoke add s \"w\" ctx=c",                // 12: resolves
        "1 ok add s \"w\"",                          // 13
        "9 invoke read s final",
        "9 ok read s [[\"w\",\"x\",\"y\",\"z\"]] ctx=d final",
    ]);
    assert_eq!(b.anomalies(), 0, "{b:?}");
    assert_eq!(
        b.siblings,
        Siblings {
            reads: 1,
            max: 2,
            resolved: 1
        }
    );
    assert_eq!((b.unknown.count, b.unknown.visible_later), (1, 1));
    assert_eq!(
        b.totals[&OpKind::Add],
        Counts {
            ok: 3,
            fail: 0,
            info: 1
        }
    );
}

#[test]
fn set_adds_missing_from_reads_are_lost_stale_and_non_monotonic() {
    let b = only(&[
        "1 invoke add s \"x\"",              // 0
        "1 ok add s \"x\"",                  // 1
        "1 invoke add s \"y\"",              // 2
        "1 ok add s \"y\"",                  // 3
        "2 invoke read s",                   // 4
        "2 ok read s [[\"x\",\"y\"]] ctx=a", // 5
        "2 invoke read s",                   // 6: y dropped: stale, non-monotonic
        "2 ok read s [[\"x\"]] ctx=b",       // 7
        "9 invoke read s final",             // 8
        "9 ok read s [[\"x\"]] ctx=b final", // 9: y lost
    ]);
    assert_eq!(
        b.lost,
        Listed {
            count: 1,
            ops: vec![2]
        }
    );
    assert_eq!(b.lost_unseen.count, 0, "a read saw it");
    assert_eq!(
        b.stale_reads,
        Listed {
            count: 1,
            ops: vec![stale(6, 2)]
        }
    );
    assert_eq!(
        b.non_monotonic_reads.ops,
        vec![NonMonotonic {
            read: 6,
            previous: 4,
            value: "y".into()
        }]
    );
    assert_eq!(b.anomalies(), 3);
}

#[test]
fn a_set_read_holding_an_add_in_flight_is_still_stale_when_it_misses_an_acknowledged_one() {
    let b = only(&[
        "1 invoke add s \"x\"",                // 0
        "1 ok add s \"x\"",                    // 1
        "2 invoke add s \"y\"",                // 2
        "2 ok add s \"y\"",                    // 3
        "3 invoke add s \"z\"",                // 4: in flight
        "4 invoke read s",                     // 5
        "4 ok read s [[\"x\"],[\"z\"]] ctx=a", // 6: misses y
        "3 ok add s \"z\"",                    // 7
    ]);
    assert_eq!(
        b.stale_reads,
        Listed {
            count: 1,
            ops: vec![stale(5, 2)]
        }
    );
}

#[test]
fn settings_come_from_the_bucket_name_and_the_levels_recorded() {
    let s = |name: &str| settings(name, std::iter::empty(), 3);
    let t = s("exp-r2w2");
    assert_eq!(
        (t.conflicts, t.sloppy, t.r, t.w, t.strict),
        ("siblings", false, Some(2), Some(2), true)
    );
    assert!(!s("exp-r1w2").strict, "r + w = n");
    assert!(!s("exp-sloppy-r2w2").strict);
    assert!(s("exp-sloppy-r2w2").sloppy);
    assert_eq!(s("exp-lww-r2w2").conflicts, "lww");
    assert!(!s("exp-lww-r2w2").strict);
    assert_eq!(
        (s("exp-rtwowtwo").r, s("exp-rtwowtwo").w),
        (Some(2), Some(2))
    );
    assert_eq!(
        (s("exp-rquorumwall").r, s("exp-rquorumwall").w),
        (Some(2), Some(3))
    );
    assert!(!s("default").strict, "no levels known");
    // Recorded levels win over the name; final reads do not count.
    let h = hist(&[
        "1 invoke read k",
        "1 ok read k []",
        "9 invoke read k final",
        "9 ok read k [] final",
    ]);
    let mut ops = h.ops.clone();
    ops[0].r = Some(Level::Count(1));
    ops[1].r = Some(Level::Named("all".into()));
    let t = settings("exp-r2w2", ops.iter(), 3);
    assert_eq!((t.r, t.w, t.strict), (Some(1), Some(2), false));
}

#[test]
fn only_buckets_with_strict_expectations_add_to_strict_anomalies() {
    let v = verdict(&[
        "1 invoke write k 1 b=exp-r1w1",
        "1 ok write k 1 b=exp-r1w1",
        "2 invoke read k b=exp-r1w1",
        "2 ok read k [] b=exp-r1w1",
        "1 invoke write k 1",
        "1 ok write k 1",
        "2 invoke read k",
        "2 ok read k []",
    ]);
    let names: Vec<&str> = v.buckets.iter().map(|b| b.bucket.as_str()).collect();
    assert_eq!(names, ["exp-r1w1", "exp-r2w2"]);
    assert_eq!(v.buckets[0].stale_reads.count, 1);
    assert_eq!(v.buckets[1].stale_reads.count, 1);
    assert_eq!(v.strict_anomalies, 1);
}

#[test]
fn the_text_verdict_names_buckets_and_the_operations_behind_anomalies() {
    let v = verdict(&[
        "1 invoke write k 1",
        "1 ok write k 1",
        "2 invoke read k",
        "2 ok read k [] ctx=a",
    ]);
    let text = render::text(&v);
    assert!(
        text.starts_with("4 events, 2 operations, 0 nemesis events; 1 anomalies"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("exp-r2w2  "))
        .expect("a summary row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..10],
        ["exp-r2w2", "strict", "1", "2", "0", "0", "0", "0", "1", "0"]
    );
    assert!(text.contains("  stale reads (1): 2 missed 0\n"), "{text}");
    assert!(
        text.contains("unchecked (no final read): 1 keys, 1 acknowledged writes: \"k\""),
        "{text}"
    );
}

#[test]
fn the_json_verdict_has_the_documented_shape() {
    let v = verdict(&[
        "1 invoke write k 1",
        "1 ok write k 1",
        "2 invoke read k",
        "2 ok read k [] ctx=a",
    ]);
    let j = serde_json::to_value(&v).expect("serialises");
    assert_eq!(j["strict_anomalies"], 1);
    let b = &j["buckets"][0];
    assert_eq!(b["bucket"], "exp-r2w2");
    assert_eq!(b["settings"]["strict"], true);
    assert_eq!(b["totals"]["write"]["ok"], 1);
    assert_eq!(
        b["stale_reads"],
        serde_json::json!({"count": 1, "ops": [{"read": 2, "missed": 0}]})
    );
    for field in [
        "lost",
        "lost_unseen",
        "non_monotonic_reads",
        "unexpected_values",
        "unmatched_contexts",
        "duplicate_values",
    ] {
        assert_eq!(b[field]["count"], 0, "{field}");
    }
    assert_eq!(
        b["siblings"],
        serde_json::json!({"reads": 0, "max": 0, "resolved": 0})
    );
    assert_eq!(b["unknown"]["visible_later"], 0);
    assert_eq!(b["unchecked_keys"], serde_json::json!(["k"]));
}
