//! The counter arithmetic of [`Dvvs`]: no input — a stored record, a
//! peer's state, a client's context — makes a counter wrap, saturate into
//! a dot that already names another write, or panic. Table tests for the
//! edges, properties for the rest.

use proptest::prelude::*;

use super::*;

fn put(data: &str) -> Value {
    Value::live(data.as_bytes(), "text/plain", Timestamp::new(1, 0))
}

/// A set with one entry of replica `a` at `counter`, holding `dots`.
fn at(counter: u64, dots: &[u64]) -> Dvvs {
    Dvvs {
        entries: vec![Entry {
            id: "a".to_owned(),
            counter,
            values: dots.iter().map(|d| (*d, put(&d.to_string()))).collect(),
        }],
    }
}

/// The bytes a peer or a disk could hand over for `at(counter, dots)`,
/// whether or not they are valid.
fn bytes_of(counter: u64, dots: &[u64]) -> Vec<u8> {
    at(counter, dots).encode()
}

#[test]
fn a_counter_at_u64_max_from_a_peer_or_a_disk_is_a_clear_error() {
    for (counter, dots) in [
        (u64::MAX, vec![]),
        (u64::MAX, vec![u64::MAX]),
        (u64::MAX, vec![u64::MAX, 1]),
        (MAX_COUNTER + 1, vec![1]),
    ] {
        match Dvvs::decode(&bytes_of(counter, &dots)) {
            Err(VersionError::Invalid(why)) => assert!(why.contains("counter"), "{why}"),
            other => panic!("counter {counter} with dots {dots:?}: {other:?}"),
        }
    }
}

#[test]
fn decoding_checks_the_dots_against_the_counter_at_the_edges() {
    let cases: [(u64, &[u64], bool); 7] = [
        (MAX_COUNTER, &[MAX_COUNTER], true),
        (MAX_COUNTER, &[MAX_COUNTER, MAX_COUNTER - 1, 1], true),
        (MAX_COUNTER, &[MAX_COUNTER, MAX_COUNTER], false),
        (5, &[6], false),
        (5, &[5, 0], false),
        (5, &[3, 4], false),
        (1, &[], true),
    ];
    for (counter, dots, ok) in cases {
        assert_eq!(
            Dvvs::decode(&bytes_of(counter, dots)).is_ok(),
            ok,
            "counter {counter}, dots {dots:?}"
        );
    }
}

#[test]
fn a_replica_at_the_largest_counter_refuses_to_mint_and_changes_nothing() {
    let mut d = Dvvs::decode(&bytes_of(MAX_COUNTER, &[MAX_COUNTER])).expect("valid");
    let before = d.clone();
    assert_eq!(
        d.update(&Context::new(), "a", put("next")),
        Err(VersionError::CounterExhausted("a".into()))
    );
    assert_eq!(d, before);
    // Another replica still mints.
    d.update(&Context::new(), "b", put("other"))
        .expect("b has dots left");
    assert_eq!(d.context().get("b"), 1);
    // One below the largest: the last dot is minted, once.
    let mut d = at(MAX_COUNTER - 1, &[]);
    d.update(&Context::new(), "a", put("last"))
        .expect("one dot left");
    assert_eq!(d.context().get("a"), MAX_COUNTER);
    assert!(d.update(&Context::new(), "a", put("more")).is_err());
}

proptest! {
    /// A write's dot is one past everything the replica and the client
    /// have seen, unless that passes the largest counter: then an error
    /// and no change. Never a repeated dot.
    #[test]
    fn a_write_mints_one_past_what_was_seen_or_fails_unchanged(
        counter in prop_oneof![1u64..100, (MAX_COUNTER - 100)..=MAX_COUNTER],
        seen in prop_oneof![0u64..200, any::<u64>(), Just(u64::MAX)],
        held in 0usize..3,
    ) {
        let dots: Vec<u64> = (0..held as u64).map(|i| counter - i).filter(|d| *d >= 1).collect();
        let mut d = at(counter, &dots);
        let ctx: Context = [("a".to_owned(), seen)].into_iter().collect();
        let ctx = Context::decode(&ctx.encode()).unwrap_or_default();
        let before = d.clone();
        let expected = counter.max(seen.min(MAX_CONTEXT_COUNTER)) + 1;
        match d.update(&ctx, "a", put("w")) {
            Ok(()) => {
                prop_assert!(expected <= MAX_COUNTER);
                prop_assert_eq!(d.context().get("a"), expected);
                let mine: Vec<u64> = d.versions().filter(|(r, _, _)| *r == "a").map(|(_, k, _)| k).collect();
                prop_assert_eq!(mine[0], expected);
                prop_assert!(mine.iter().filter(|k| **k == expected).count() == 1);
                prop_assert_eq!(Dvvs::decode(&d.encode()), Ok(d.clone()));
            }
            Err(e) => {
                prop_assert_eq!(e, VersionError::CounterExhausted("a".into()));
                prop_assert!(expected > MAX_COUNTER);
                prop_assert_eq!(d, before);
            }
        }
    }

    /// Any counter and dots a peer sends decode to a valid state or to an
    /// error, never a panic; what decodes syncs with a valid state to a
    /// state that encodes and decodes again.
    #[test]
    fn any_counter_and_dots_decode_or_fail_without_panicking(
        counter in prop_oneof![any::<u64>(), Just(u64::MAX), Just(MAX_COUNTER), Just(0u64)],
        dots in proptest::collection::vec(prop_oneof![any::<u64>(), Just(u64::MAX), 0u64..4], 0..4),
        other in 1u64..10,
    ) {
        let bytes = bytes_of(counter, &dots);
        let descending = dots.windows(2).all(|w| w[0] > w[1]);
        let valid = (1..=MAX_COUNTER).contains(&counter)
            && descending
            && dots.iter().all(|k| (1..=counter).contains(k));
        match Dvvs::decode(&bytes) {
            Ok(d) => {
                prop_assert!(valid);
                let merged = d.sync(&at(other, &[other]));
                prop_assert!(merged.context().get("a") <= MAX_COUNTER);
                prop_assert_eq!(Dvvs::decode(&merged.encode()), Ok(merged.clone()));
            }
            Err(_) => prop_assert!(!valid),
        }
    }
}
