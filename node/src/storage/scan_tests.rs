//! The bounded scans, on both engines: pages of whole objects cut at a
//! byte budget ([`Engine::scan_within`]) and pages of keys alone
//! ([`Engine::scan_keys`]), for callers that hold objects as large as
//! `--max-key-bytes` (hints). With the disk engine, what a page allocates
//! is measured ([`crate::alloc_probe`]).

use super::*;
use crate::alloc_probe::peak_bytes;

fn put(p: Partition, k: &[u8], v: Vec<u8>) -> Op {
    Op::Put {
        partition: p,
        key: k.to_vec(),
        value: v,
    }
}

fn keys(rows: KvPairs) -> Vec<Vec<u8>> {
    rows.into_iter().map(|(k, _)| k).collect()
}

fn bounded_scans_suite(e: &dyn Engine) {
    use Partition::Hints;
    // Values of 10, 20, 30, 40 and 50 bytes: 10, 30, 60, 100, 150 in all.
    e.apply(
        (1u8..=5)
            .map(|i| put(Hints, &[b'k', i], vec![i; 10 * usize::from(i)]))
            .collect(),
    )
    .expect("apply");
    e.apply(vec![put(Partition::Data, b"k", vec![0; 99])])
        .expect("apply");
    for (budget, entries) in [
        (0, 1),
        (1, 1),
        (10, 1),
        (11, 2),
        (30, 2),
        (31, 3),
        (149, 5),
        (150, 5),
        (usize::MAX, 5),
    ] {
        assert_eq!(
            e.scan_within(Hints, b"k", None, 100, budget).expect("scan"),
            e.scan(Hints, b"k", None, entries).expect("scan"),
            "budget {budget}"
        );
    }
    // The entry limit and the bounds still hold; the partition is its own.
    assert_eq!(
        keys(
            e.scan_within(Hints, b"", None, 2, usize::MAX)
                .expect("scan")
        ),
        [[b'k', 1], [b'k', 2]]
    );
    assert_eq!(
        keys(
            e.scan_within(Hints, &[b'k', 2], Some(&[b'k', 4]), 100, 45)
                .expect("scan")
        ),
        [[b'k', 2], [b'k', 3]]
    );
    assert!(
        e.scan_within(Hints, b"k", None, 0, 100)
            .expect("scan")
            .is_empty()
    );
    assert!(
        e.scan_within(Hints, b"z", Some(b"a"), 10, 100)
            .expect("scan")
            .is_empty()
    );

    // Keys alone: the keys of the same scan.
    for (start, end, limit) in [
        (&b""[..], None, 100),
        (&[b'k', 2][..], Some(&[b'k', 4][..]), 100),
        (&b"k"[..], None, 3),
        (&b"k"[..], None, 0),
        (&b"z"[..], Some(&b"a"[..]), 10),
    ] {
        assert_eq!(
            e.scan_keys(Hints, start, end, limit).expect("keys"),
            keys(e.scan(Hints, start, end, limit).expect("scan")),
            "{start:?}..{end:?} limit {limit}"
        );
    }

    e.close().expect("close");
    assert_eq!(
        e.scan_within(Hints, b"", None, 1, 1),
        Err(StorageError::Closed)
    );
    assert_eq!(e.scan_keys(Hints, b"", None, 1), Err(StorageError::Closed));
}

#[test]
fn memory_engine_cuts_pages_by_bytes_and_scans_keys_alone() {
    bounded_scans_suite(&MemoryEngine::new());
}

#[test]
fn fjall_engine_cuts_pages_by_bytes_and_scans_keys_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    bounded_scans_suite(&FjallEngine::open(dir.path()).expect("open"));
}

#[test]
fn the_disk_engine_reads_nothing_past_a_pages_budget_and_no_value_for_keys() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = FjallEngine::open(dir.path()).expect("open");
    e.apply(
        (0u8..16)
            .map(|i| put(Partition::Hints, &[b'h', i], vec![i; MIB]))
            .collect(),
    )
    .expect("apply");
    let (_, full) = peak_bytes(|| drop(e.scan(Partition::Hints, b"h", None, 64)));
    assert!(
        full >= 16 * MIB,
        "the probe sees a whole page: {full} bytes"
    );
    let (_, within) = peak_bytes(|| drop(e.scan_within(Partition::Hints, b"h", None, 64, 2 * MIB)));
    assert!(within < 4 * MIB, "a 2 MiB page took {within} bytes");
    let (_, only_keys) = peak_bytes(|| drop(e.scan_keys(Partition::Hints, b"h", None, 1024)));
    assert!(only_keys < MIB, "16 keys took {only_keys} bytes");
}
