//! Hint store and replayer tests. Most run on a manual clock: expiry is
//! hours and throttling seconds of virtual time, and a sleep on that clock
//! advances it, so the time a replay waited is exactly measurable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::layout::{self, decode_record, encode_record, hint_key, parse_key};
use super::throttle::manual::ManualClock;
use super::*;
use crate::storage::SyncMode;
use crate::version::{Context, Timestamp, Value};

/// 2023-11-14T22:13:20Z: any fixed wall time will do.
const T0: u64 = 1_700_000_000_000;
const HOUR: Duration = Duration::from_secs(3600);

fn obj(text: &str) -> Dvvs {
    let mut d = Dvvs::new();
    d.update(
        &Context::new(),
        "coord",
        Value::live(text.as_bytes(), "text/plain", Timestamp::new(T0, 0)),
    )
    .expect("a fresh dot");
    d
}

fn config() -> HintConfig {
    HintConfig {
        replay_bytes_per_sec: 0,
        ..HintConfig::default()
    }
}

fn open(store: &Store, config: HintConfig, clock: &ManualClock) -> Hints {
    Hints::open_with_clock(store.clone(), config, Arc::new(clock.clone())).unwrap()
}

fn stored(store: &Store) -> usize {
    store
        .raw_scan(Partition::Hints, &[], None, usize::MAX)
        .unwrap()
        .len()
}

/// Replays `target`, delivering successfully; returns the report and the
/// hints in delivery order.
async fn replay_all(h: &Hints, target: &str) -> (ReplayReport, Vec<Hint>) {
    let mut got = Vec::new();
    let report = h
        .replay(target, |hint| {
            got.push(hint);
            async { Ok(()) }
        })
        .await
        .unwrap();
    (report, got)
}

fn texts(hints: &[Hint]) -> Vec<String> {
    hints
        .iter()
        .map(|h| String::from_utf8(h.object.values()[0].data.clone()).unwrap())
        .collect()
}

/// Polls `cond` until it holds; fails after 10 s of real time.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------- layout

#[test]
fn key_layout_round_trips_and_sorts_by_time() {
    let k = hint_key("node-1", 42, 7);
    let p = parse_key(&k).unwrap();
    assert_eq!((p.target, p.created_ms, p.seq), ("node-1", 42, 7));
    assert!(
        hint_key("n", 1, 999) < hint_key("n", 2, 0),
        "time before seq"
    );
    assert!(hint_key("n", 5, 1) < hint_key("n", 5, 2));
    assert!(hint_key("n", 255, 0) < hint_key("n", 256, 0), "big endian");
    for bad in [
        &b""[..],
        b"n",
        b"n\0short",
        b"\0aaaaaaaabbbbbbbb",
        b"\xff\0aaaaaaaabbbbbbbb",
    ] {
        assert_eq!(parse_key(bad), None, "{bad:?}");
    }
    let mut long = hint_key("n", 1, 1);
    long.push(0);
    assert_eq!(parse_key(&long), None);
}

#[test]
fn target_ranges_hold_exactly_their_targets_keys() {
    let ids = ["a", "ab", "a\u{1}", "b", "a\u{1}b", "aa"];
    for t in ids {
        let (start, end) = (layout::target_start(t), layout::target_end(t));
        for other in ids {
            for (ms, seq) in [(0, 0), (u64::MAX, u64::MAX), (7, 3)] {
                let k = hint_key(other, ms, seq);
                let inside = start <= k && k < end;
                assert_eq!(inside, t == other, "key of {other:?} vs range of {t:?}");
            }
        }
    }
}

#[test]
fn record_round_trips_and_damage_is_an_error() {
    let o = obj("v");
    let bytes = encode_record("bkt", b"key\0\xff", &o).unwrap();
    let (b, k, d) = decode_record(&bytes).unwrap();
    assert_eq!(
        (b.as_str(), k.as_slice(), &d),
        ("bkt", &b"key\0\xff"[..], &o)
    );
    assert!(decode_record(&[]).is_err());
    assert!(decode_record(&[9, 1, 2]).is_err(), "unknown format");
    assert!(
        decode_record(&bytes[..bytes.len() - 1]).is_err(),
        "truncated"
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(decode_record(&trailing).is_err(), "trailing");
}

// ---------------------------------------------------------------- add and replay

#[tokio::test]
async fn replay_delivers_each_hint_once_oldest_first() {
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let h = open(&store, config(), &clock);
    // Two in the same millisecond (seq orders them), then later ones.
    for (i, text) in ["b1", "b2", "b3", "b4"].iter().enumerate() {
        if i >= 2 {
            clock.advance(Duration::from_millis(5));
        }
        let out = h.add("b", "bkt", text.as_bytes(), &obj(text)).await;
        assert_eq!(out.unwrap(), HintOutcome::Stored);
        h.add("c", "bkt", b"k", &obj("c")).await.unwrap();
    }
    assert_eq!(h.pending_for("b"), 4);
    assert_eq!(h.pending_for("c"), 4);

    let (report, got) = replay_all(&h, "b").await;
    assert_eq!(texts(&got), ["b1", "b2", "b3", "b4"]);
    assert!(got.iter().all(|g| g.target == "b" && g.bucket == "bkt"));
    assert_eq!(got[3].key, b"b4");
    assert_eq!(got[0].created_ms, T0);
    assert_eq!(got[3].created_ms, T0 + 10);
    assert_eq!(report.delivered, 4);
    assert_eq!(report.failure, None);
    assert_eq!(h.pending_for("b"), 0);
    assert_eq!(h.pending(), BTreeMap::from([("c".to_owned(), 4)]));
    assert_eq!(stored(&store), 4, "c's hints untouched");

    let (again, none) = replay_all(&h, "b").await;
    assert!(none.is_empty(), "delivered twice: {none:?}");
    assert_eq!(again, ReplayReport::default());
    let s = h.stats();
    assert_eq!((s.written, s.delivered), (8, 4));
}

#[tokio::test]
async fn hints_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // The same wall millisecond in both lives: only seq keeps keys apart.
    let clock = ManualClock::at(T0);
    {
        let store = Store::open(dir.path(), SyncMode::Always).unwrap();
        let h = open(&store, config(), &clock);
        h.add("b", "bkt", b"1", &obj("one")).await.unwrap();
        h.add("b", "bkt", b"2", &obj("two")).await.unwrap();
        h.add("c", "bkt", b"3", &obj("three")).await.unwrap();
        store.close().await.unwrap();
    }
    let store = Store::open(dir.path(), SyncMode::Always).unwrap();
    let h = open(&store, config(), &clock);
    let seeded = BTreeMap::from([("b".to_owned(), 2), ("c".to_owned(), 1)]);
    assert_eq!(h.pending(), seeded);

    let out = h.add("b", "bkt", b"4", &obj("four")).await.unwrap();
    assert_eq!(out, HintOutcome::Stored);
    assert_eq!(stored(&store), 4, "a new hint overwrote an old one");
    let (report, got) = replay_all(&h, "b").await;
    assert_eq!(texts(&got), ["one", "two", "four"]);
    assert_eq!(report.delivered, 3);
    assert_eq!(h.pending(), BTreeMap::from([("c".to_owned(), 1)]));
    store.close().await.unwrap();
}

#[tokio::test]
async fn full_target_refuses_and_others_accept() {
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let cfg = HintConfig {
        max_per_target: 3,
        ..config()
    };
    let h = open(&store, cfg, &clock);
    for _ in 0..3 {
        let out = h.add("b", "bkt", b"k", &obj("v")).await.unwrap();
        assert_eq!(out, HintOutcome::Stored);
    }
    let out = h.add("b", "bkt", b"k", &obj("v")).await.unwrap();
    assert_eq!(out, HintOutcome::Full);
    assert_eq!(h.stats().dropped_full, 1);
    assert_eq!(h.pending_for("b"), 3);
    assert_eq!(stored(&store), 3);

    let out = h.add("c", "bkt", b"k", &obj("v")).await.unwrap();
    assert_eq!(out, HintOutcome::Stored);

    // Delivered hints make room again.
    replay_all(&h, "b").await;
    let out = h.add("b", "bkt", b"k", &obj("v")).await.unwrap();
    assert_eq!(out, HintOutcome::Stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_keep_the_bound() {
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let cfg = HintConfig {
        max_per_target: 5,
        ..config()
    };
    let h = Arc::new(open(&store, cfg, &clock));
    let mut adds = JoinSet::new();
    for i in 0..40u32 {
        let h = h.clone();
        adds.spawn(async move { h.add("b", "bkt", &i.to_be_bytes(), &obj("v")).await });
    }
    let mut stored_n = 0;
    while let Some(out) = adds.join_next().await {
        if out.unwrap().unwrap() == HintOutcome::Stored {
            stored_n += 1;
        }
    }
    assert_eq!(stored_n, 5);
    assert_eq!(h.pending_for("b"), 5);
    assert_eq!(stored(&store), 5);
    assert_eq!(h.stats().dropped_full, 35);
}

#[tokio::test]
async fn disabled_stores_nothing() {
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let cfg = HintConfig {
        enabled: false,
        ..config()
    };
    let h = open(&store, cfg, &clock);
    let out = h.add("b", "bkt", b"k", &obj("v")).await.unwrap();
    assert_eq!(out, HintOutcome::Disabled);
    assert_eq!(stored(&store), 0);
    assert!(h.pending().is_empty());
    let s = h.stats();
    assert_eq!((s.dropped_disabled, s.written), (1, 0));
}

#[tokio::test]
async fn invalid_targets_are_refused() {
    let h = open(&Store::memory(), config(), &ManualClock::at(T0));
    for bad in ["", "a\0b"] {
        let err = h.add(bad, "bkt", b"k", &obj("v")).await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidKey(_)), "{bad:?}: {err}");
    }
    assert!(h.pending().is_empty());
}

// ---------------------------------------------------------------- expiry

#[tokio::test]
async fn expired_hints_are_deleted_not_delivered() {
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let cfg = HintConfig {
        window: HOUR,
        ..config()
    };
    let h = open(&store, cfg, &clock);
    h.add("b", "bkt", b"k", &obj("old1")).await.unwrap();
    h.add("b", "bkt", b"k", &obj("old2")).await.unwrap();
    clock.advance(HOUR);
    // Exactly the window old is not yet expired.
    h.add("b", "bkt", b"k", &obj("edge")).await.unwrap();
    clock.advance(Duration::from_millis(1));
    h.add("b", "bkt", b"k", &obj("new")).await.unwrap();

    let (report, got) = replay_all(&h, "b").await;
    assert_eq!(texts(&got), ["edge", "new"]);
    assert_eq!((report.expired, report.delivered), (2, 2));
    assert_eq!(h.stats().expired, 2);
    assert_eq!(h.pending_for("b"), 0);
    assert_eq!(stored(&store), 0);
}

#[tokio::test]
async fn expire_deletes_old_hints_of_every_target() {
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let cfg = HintConfig {
        window: HOUR,
        ..config()
    };
    let h = open(&store, cfg, &clock);
    for t in ["a", "b", "c"] {
        for _ in 0..3 {
            h.add(t, "bkt", b"k", &obj("old")).await.unwrap();
        }
    }
    clock.advance(2 * HOUR);
    h.add("b", "bkt", b"k", &obj("young")).await.unwrap();

    // A target being replayed is left to its replay.
    let c = h.target("c");
    let held = c.lock.lock().await;
    assert_eq!(h.expire().await.unwrap(), 6);
    drop(held);
    let pending = BTreeMap::from([("b".to_owned(), 1), ("c".to_owned(), 3)]);
    assert_eq!(h.pending(), pending);

    assert_eq!(h.expire().await.unwrap(), 3);
    assert_eq!(h.pending(), BTreeMap::from([("b".to_owned(), 1)]));
    assert_eq!(stored(&store), 1);
    assert_eq!(h.stats().expired, 9);
    let (_, got) = replay_all(&h, "b").await;
    assert_eq!(texts(&got), ["young"]);
}

#[tokio::test]
async fn corrupt_hints_are_deleted_and_counted() {
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let put = |key: Vec<u8>, value: &[u8]| Op::Put {
        partition: Partition::Hints,
        key,
        value: value.to_vec(),
    };
    store
        .write(vec![
            put(hint_key("b", T0, 1), b"\x01not msgpack"),
            put(
                hint_key("b", T0, 2),
                &encode_record("bkt", b"k", &obj("ok")).unwrap(),
            ),
            put(b"no-layout".to_vec(), b"x"),
        ])
        .await
        .unwrap();
    let h = open(&store, config(), &clock);
    assert_eq!(h.pending(), BTreeMap::from([("b".to_owned(), 2)]));

    let (report, got) = replay_all(&h, "b").await;
    assert_eq!(texts(&got), ["ok"]);
    assert_eq!((report.corrupt, report.delivered), (1, 1));
    assert_eq!(h.pending_for("b"), 0);

    assert_eq!(h.expire().await.unwrap(), 0);
    assert_eq!(stored(&store), 0, "the key outside the layout is gone");
    assert_eq!(h.stats().corrupt, 2);
}

// ---------------------------------------------------------------- failures

#[tokio::test]
async fn failed_delivery_stops_and_keeps_the_hint() {
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let h = open(&store, config(), &clock);
    for text in ["one", "two", "three"] {
        h.add("b", "bkt", b"k", &obj(text)).await.unwrap();
    }
    let mut calls = 0;
    let report = h
        .replay("b", |_| {
            calls += 1;
            let fail = calls == 2;
            async move {
                if fail {
                    Err("b is down".to_owned())
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(calls, 2, "kept going after a failure");
    assert_eq!(report.delivered, 1);
    assert_eq!(report.failure.as_deref(), Some("b is down"));
    assert_eq!(h.pending_for("b"), 2);
    assert_eq!(h.stats().replay_failures, 1);

    let (report, got) = replay_all(&h, "b").await;
    assert_eq!(texts(&got), ["two", "three"]);
    assert_eq!(report.failure, None);
    assert_eq!(h.pending_for("b"), 0);
}

// ---------------------------------------------------------------- throttle

/// Sizes the throttle counts (key plus value) of `target`'s stored hints,
/// oldest first.
fn sizes(store: &Store, target: &str) -> Vec<u64> {
    let (start, end) = (layout::target_start(target), layout::target_end(target));
    store
        .raw_scan(Partition::Hints, &start, Some(&end), usize::MAX)
        .unwrap()
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .collect()
}

/// Replays `target`, noting the clock at each delivery.
async fn replay_timed(h: &Hints, clock: &ManualClock, target: &str) -> Vec<Duration> {
    let mut at = Vec::new();
    let report = h
        .replay(target, |_| {
            at.push(clock.elapsed());
            async { Ok(()) }
        })
        .await
        .unwrap();
    assert_eq!(report.failure, None);
    at
}

#[tokio::test]
async fn replay_is_throttled() {
    const RATE: u64 = 1000;
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let cfg = HintConfig {
        replay_bytes_per_sec: RATE,
        ..config()
    };
    let h = open(&store, cfg, &clock);
    let payload = "x".repeat(400);
    for _ in 0..10 {
        h.add("b", "bkt", b"k", &obj(&payload)).await.unwrap();
    }
    let sizes = sizes(&store, "b");
    assert!(sizes.iter().all(|&s| s > 400), "{sizes:?}");

    let at = replay_timed(&h, &clock, "b").await;
    assert_eq!(at.len(), 10);
    // Hint i may go once the bytes before it have been paid for.
    let mut before = 0;
    for (i, (t, size)) in at.iter().zip(&sizes).enumerate() {
        let due = Duration::from_nanos(before * 1_000_000_000 / RATE);
        assert!(*t >= due, "hint {i} went at {t:?}, due {due:?}");
        assert!(
            *t < due + Duration::from_millis(5),
            "hint {i} held back: {t:?} vs {due:?}"
        );
        before += size;
    }
    // About 4.5 KB at 1 KB/s.
    assert!(
        clock.elapsed() >= Duration::from_secs(4),
        "{:?}",
        clock.elapsed()
    );
}

#[tokio::test]
async fn oversized_hint_goes_then_waits() {
    const RATE: u64 = 1000;
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let cfg = HintConfig {
        replay_bytes_per_sec: RATE,
        ..config()
    };
    let h = open(&store, cfg, &clock);
    h.add("b", "bkt", b"k", &obj(&"x".repeat(3000)))
        .await
        .unwrap();
    h.add("b", "bkt", b"k", &obj("small")).await.unwrap();
    let big = sizes(&store, "b")[0];
    assert!(big > 3 * RATE);

    let at = replay_timed(&h, &clock, "b").await;
    assert_eq!(
        at[0],
        Duration::ZERO,
        "a hint over a second's budget still goes"
    );
    assert!(
        at[1] >= Duration::from_millis(big),
        "then it waits: {:?}",
        at[1]
    );
}

// ---------------------------------------------------------------- replayer

fn counting_deliver(delivered: Arc<AtomicU64>) -> DeliverFn {
    Arc::new(move |_hint| {
        let delivered = delivered.clone();
        Box::pin(async move {
            delivered.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    })
}

#[tokio::test]
async fn replayer_delivers_once_the_target_is_up_and_stops() {
    let store = Store::memory();
    let cfg = HintConfig {
        check_every: Duration::from_millis(5),
        ..config()
    };
    let h = Arc::new(Hints::open(store.clone(), cfg).unwrap());
    h.add("b", "bkt", b"k1", &obj("one")).await.unwrap();
    h.add("b", "bkt", b"k2", &obj("two")).await.unwrap();

    let up = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicU64::new(0));
    let is_up: IsUpFn = {
        let (up, asked) = (up.clone(), asked.clone());
        Arc::new(move |node: &str| {
            assert_eq!(node, "b");
            asked.fetch_add(1, Ordering::SeqCst);
            up.load(Ordering::SeqCst)
        })
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let replayer = tokio::spawn(h.clone().run_replayer(
        is_up,
        counting_deliver(delivered.clone()),
        stop.clone(),
    ));

    eventually("replayer checks b", || asked.load(Ordering::SeqCst) >= 3).await;
    assert_eq!(
        delivered.load(Ordering::SeqCst),
        0,
        "delivered to a down node"
    );
    assert_eq!(h.pending_for("b"), 2);

    up.store(true, Ordering::SeqCst);
    eventually("hints delivered", || h.pending_for("b") == 0).await;
    assert_eq!(delivered.load(Ordering::SeqCst), 2);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), replayer)
        .await
        .expect("replayer did not stop")
        .unwrap();
}

#[tokio::test]
async fn stop_cuts_a_hanging_delivery_and_keeps_the_hint() {
    let store = Store::memory();
    let cfg = HintConfig {
        check_every: Duration::from_millis(5),
        ..config()
    };
    let h = Arc::new(Hints::open(store.clone(), cfg).unwrap());
    h.add("b", "bkt", b"k", &obj("v")).await.unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let deliver: DeliverFn = {
        let started = started.clone();
        Arc::new(move |_| {
            started.store(true, Ordering::SeqCst);
            Box::pin(std::future::pending())
        })
    };
    let stop = CancellationToken::new();
    let replayer = tokio::spawn(h.clone().run_replayer(
        Arc::new(|_: &str| true),
        deliver,
        stop.clone(),
    ));
    eventually("delivery started", || started.load(Ordering::SeqCst)).await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), replayer)
        .await
        .expect("replayer did not stop")
        .unwrap();
    assert_eq!(h.pending_for("b"), 1);
    assert_eq!(stored(&store), 1);
    assert_eq!(h.stats().replay_failures, 0, "a stop is not a failure");
}

/// Hints hold whole objects: a replay page stops at `REPLAY_PAGE_BYTES`
/// of them, and a page cut by bytes is not the last one.
#[tokio::test]
async fn large_hints_are_replayed_in_pages_cut_by_bytes_and_every_one_delivered() {
    let store = Store::memory();
    let clock = ManualClock::at(T0);
    let h = open(&store, config(), &clock);
    // Three of these pass a page's byte budget.
    let big = "x".repeat(REPLAY_PAGE_BYTES / 3 + 1);
    for i in 0..7 {
        let out = h
            .add(
                "b",
                "bkt",
                format!("k{i}").as_bytes(),
                &obj(&format!("{i}{big}")),
            )
            .await;
        assert_eq!(out.expect("add"), HintOutcome::Stored);
    }
    let (report, got) = replay_all(&h, "b").await;
    assert_eq!(report.delivered, 7, "{report:?}");
    let keys: Vec<&[u8]> = got.iter().map(|g| g.key.as_slice()).collect();
    assert_eq!(keys, [b"k0", b"k1", b"k2", b"k3", b"k4", b"k5", b"k6"]);
    assert_eq!(stored(&store), 0);
}
