//! The pure part of the staleness experiment: the version codec, how far
//! behind a read is, the measured curve and its RMSE against a
//! prediction, and the configurations refused.

use proptest::prelude::*;
use quorumkv_faults::{Delays, Legs, Preset};

use super::*;

fn sample(seq: u64, t: f64, seen: Option<u64>) -> Sample {
    Sample {
        key: 0,
        seq,
        t_ms: t,
        waited_ms: t + 0.5,
        write_node: 0,
        read_node: 1,
        write_ms: 1.0,
        read_ms: 2.0,
        seen,
        values: usize::from(seen.is_some()),
    }
}

fn config() -> Config {
    Config {
        n: 3,
        pairs: vec![(1, 1)],
        ts: vec![0.0, 5.0],
        writes: 10,
        concurrency: 2,
        read_coordinator: ReadCoordinator::Other,
        delays: Preset::LnkdSsd.delays(),
        read_repair: "off".into(),
        speculative_retry: "off".into(),
        seed: 1,
        trials: 1000,
        timeout_ms: 1000,
        calibrate: false,
        slow: None,
    }
}

/// Per-trial values that make P(consistent at t) = 0 below 1 ms, 1 from
/// 1 ms on.
fn step_at_1ms() -> Samples {
    Samples {
        stale_until: vec![1.0; 4],
        read: vec![0.0; 4],
        write: vec![0.0; 4],
    }
}

fn latency() -> predict::Latency {
    let p = Percentiles {
        p50: 0.0,
        p99: 0.0,
        p999: 0.0,
    };
    predict::Latency { read: p, write: p }
}

#[test]
fn a_read_of_an_older_version_or_of_nothing_is_stale_by_the_versions_it_missed() {
    for (seq, seen, behind) in [
        (5, Some(5), 0),
        (5, Some(4), 1),
        (5, Some(2), 3),
        (5, None, 5),
        (1, None, 1),
    ] {
        assert_eq!(sample(seq, 0.0, seen).behind(), behind, "{seq} {seen:?}");
    }
}

#[test]
fn stale_reads_are_counted_per_t_and_by_versions_behind() {
    let run = PairRun {
        r: 1,
        w: 1,
        bucket: "b".into(),
        samples: vec![
            sample(1, 0.0, None),
            sample(2, 0.0, Some(1)),
            sample(3, 0.0, Some(3)),
            sample(3, 0.0, Some(1)),
            sample(1, 5.0, Some(1)),
            sample(2, 5.0, Some(2)),
        ],
        write_ms: vec![1.0, 1.0, 1.0],
        failures: Failures::default(),
        overshoot_ms: [0.0; 4],
    };
    let s = summarize(
        &run,
        3,
        &[0.0, 5.0],
        &step_at_1ms(),
        &step_at_1ms(),
        latency(),
        1.0,
    );
    assert!(!s.strict);
    assert_eq!((s.writes, s.reads, s.stale_reads), (3, 6, 3));
    assert_eq!(s.behind, BTreeMap::from([(1, 2), (2, 1)]));
    assert_eq!((s.points[0].reads, s.points[0].consistent), (4, 1));
    assert_eq!(s.points[0].p_measured, 0.25);
    assert_eq!(s.points[1].p_measured, 1.0);
    // Waits of 0.5 ms are still before the step, 5.5 ms after it.
    assert_eq!(
        (s.points[0].p_predicted, s.points[1].p_predicted),
        (0.0, 1.0)
    );
    assert_eq!(s.points[0].mean_waited_ms, 0.5);
    // Only t = 0 is off, by 0.25: sqrt(0.25^2 / 2).
    assert!((s.rmse - (0.0625f64 / 2.0).sqrt()).abs() < 1e-12);
}

#[test]
fn the_prediction_is_taken_at_the_waits_that_actually_passed() {
    // Asked for t = 0 but the timer ran 1.5 ms late: the prediction at
    // the real wait (1) is what these reads should show, not at t (0).
    let mut late = sample(1, 0.0, Some(1));
    late.waited_ms = 1.5;
    let run = PairRun {
        r: 1,
        w: 1,
        samples: vec![late],
        write_ms: vec![1.0],
        ..PairRun::default()
    };
    let s = summarize(
        &run,
        3,
        &[0.0],
        &step_at_1ms(),
        &step_at_1ms(),
        latency(),
        1.0,
    );
    assert_eq!(s.points[0].p_predicted, 1.0);
    assert_eq!(s.points[0].p_predicted_at_t, 0.0);
    assert_eq!((s.rmse, s.rmse_at_t), (0.0, 1.0));
}

#[test]
fn configurations_that_cannot_be_measured_are_refused() {
    let ok = config();
    assert_eq!(ok.validate(3), Ok(()));
    let cases: Vec<(Config, usize, &str)> = vec![
        (ok.clone(), 2, "n=3: N must be 1..=2"),
        (
            Config {
                pairs: vec![(1, 4)],
                ..ok.clone()
            },
            3,
            "w=4 with n=3",
        ),
        (
            Config {
                pairs: vec![],
                ..ok.clone()
            },
            3,
            "no R/W",
        ),
        (
            Config {
                ts: vec![f64::NAN],
                ..ok.clone()
            },
            3,
            "waits must be finite",
        ),
        (
            Config {
                writes: 0,
                ..ok.clone()
            },
            3,
            "writes must be at least 1",
        ),
        (
            Config {
                delays: Preset::Wan { remote_ms: 75.0 }.delays(),
                ..ok.clone()
            },
            3,
            "wan's remote delay",
        ),
        (Config { n: 1, ..ok.clone() }, 1, "at least 2 nodes"),
        (
            Config {
                speculative_retry: "soon".into(),
                ..ok.clone()
            },
            3,
            "speculative retry \"soon\"",
        ),
    ];
    for (cfg, nodes, want) in cases {
        let err = cfg.validate(nodes).expect_err(want).to_string();
        assert!(err.contains(want), "{err} / {want}");
    }
}

#[test]
fn the_report_s_tables_are_rectangular_and_it_names_each_calibrated_predict_command() {
    let cfg = Config {
        delays: Delays {
            legs: Legs::every("exp:2".parse().expect("dist")),
            remote_ms: None,
        },
        ..config()
    };
    let mut run = PairRun {
        r: 1,
        w: 1,
        samples: vec![sample(1, 0.0, Some(1)), sample(2, 5.0, Some(1))],
        write_ms: vec![1.0, 1.0],
        ..PairRun::default()
    };
    run.overshoot_ms = [0.5, 0.25, 0.125, 1.0];
    let runs = [run];
    let summary = summarize(
        &runs[0],
        3,
        &cfg.ts,
        &step_at_1ms(),
        &step_at_1ms(),
        latency(),
        1.0,
    );
    let report = report::StalenessReport {
        config: &cfg,
        nodes: vec!["n1".into(), "n2".into(), "n3".into()],
        runs: &runs,
        summaries: vec![summary],
        predicted: vec![step_at_1ms()],
        command: "qkv exp staleness".into(),
        spec: None,
        load: "0 (start), 0 (end)".into(),
        costs: Costs {
            hop_ms: 0.25,
            client_ms: 0.5,
            overshoot_ms: [0.0; 4],
        },
    };
    for t in report.tables() {
        for row in &t.rows {
            assert_eq!(row.len(), t.header.len(), "{}: {row:?}", t.title);
        }
    }
    let want = "qkv exp predict --model quorumkv --n 3 --r 1 --w 1 --w-delay 'exp:2' --a-delay 'exp:2' --r-delay 'exp:2' --s-delay 'exp:2' \\\n    --nodes 3 --local-delays --read-coordinator other --speculate-ms off \\\n    --hop-ms 0.250 --client-ms 0.500 --overshoot-ms 0.500,0.250,0.125,1.000 --t 0,5 --trials 1000 --seed 1";
    assert_eq!(report.predict_command(&report.summaries[0]), want);
    assert!(report.markdown().contains(want));
    assert!(report.json().contains("predict_commands"));
}

#[test]
fn the_comparison_uses_the_quorumkv_model_with_local_delays_and_the_bucket_s_speculation() {
    let cfg = Config {
        delays: Delays {
            legs: Legs::every("exp:2".parse().expect("dist")),
            remote_ms: None,
        },
        speculative_retry: "40ms".into(),
        ..config()
    };
    let costs = Costs {
        hop_ms: 0.25,
        client_ms: 0.5,
        overshoot_ms: [0.0; 4],
    };
    let p = cfg.prediction(5, 2, 1, costs);
    assert_eq!((p.n, p.rs.clone(), p.ws.clone()), (3, vec![2], vec![1]));
    assert_eq!(
        p.model,
        Model::Quorumkv(QuorumkvModel {
            nodes: 5,
            speculate_ms: 40.0,
            local_delays: true,
            read_coordinator: ReadCoordinator::Other,
            hop_ms: 0.25,
            client_ms: 0.5,
            overshoot_ms: [0.0; 4],
        })
    );
    let d = &cfg.delays;
    let none = Costs::default();
    assert_eq!(speculate_ms("off", d, none, 1), Ok(f64::INFINITY));
    assert_eq!(speculate_ms("40ms", d, none, 1), Ok(40.0));
    assert!(speculate_ms("-1ms", d, none, 1).is_err());
    let auto = speculate_ms("auto", d, none, 1).expect("auto is valid");
    assert!((1.0..100.0).contains(&auto), "{auto}");
}

#[test]
fn the_overshoot_of_each_leg_comes_from_the_nodes_delay_histograms() {
    let text = "# TYPE qkv_fault_delay_seconds histogram\n\
        qkv_fault_delay_seconds_bucket{leg=\"w\",le=\"0.01\"} 3\n\
        qkv_fault_delay_seconds_sum{leg=\"w\"} 0.1\n\
        qkv_fault_delay_seconds_count{leg=\"w\"} 9\n\
        qkv_fault_delay_seconds_sum{leg=\"s\"} 0.05\n\
        qkv_fault_delay_seconds_count{leg=\"s\"} 10\n";
    let t = delay_totals(text);
    assert_eq!(t[0], (0.1, 9));
    assert_eq!((t[1], t[2]), ((0.0, 0), (0.0, 0)));
    assert_eq!(t[3], (0.05, 10));
    // Since `before`: 10 W delays of 110 ms in all against a mean of 10
    // (1 ms late each); no A or R delays; S delays as drawn.
    let before = [(0.0, 0); 4];
    let after = [(0.110, 10), (0.0, 0), (0.0, 0), (0.02, 10)];
    let o = overshoot(&before, &after, [Some(10.0), Some(1.0), None, Some(2.0)]);
    assert!((o[0] - 1.0).abs() < 1e-9, "{o:?}");
    assert_eq!(&o[1..], &[0.0, 0.0, 0.0]);
}

#[test]
fn the_fixed_costs_are_half_the_calibration_round_trips() {
    // A client round trip of 0.8 ms (median); W=2 writes 1.2 ms slower
    // than W=1 writes at the median: one internode round trip.
    let c = costs(
        &[0.7, 0.8, 5.0],
        &[1.0, 1.1, 1.0, 9.0],
        &[2.2, 2.3, 2.2, 2.2],
    );
    assert!((c.client_ms - 0.4).abs() < 1e-12, "{c:?}");
    assert!((c.hop_ms - (2.2 - 1.05) / 2.0).abs() < 1e-12, "{c:?}");
    // No calibration, or a W=2 write no slower: no cost.
    assert_eq!(costs(&[], &[], &[]), Costs::default());
    assert_eq!(costs(&[1.0], &[3.0], &[2.0]).hop_ms, 0.0);
    assert!(median(&[]).is_nan());
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
}

proptest! {
    #[test]
    fn every_version_reads_back_from_its_value(seq in any::<u64>()) {
        prop_assert_eq!(decode(&encode(seq)), Some(seq));
    }

    #[test]
    fn a_value_of_another_writer_is_no_version(v in proptest::collection::vec(any::<u8>(), 0..40)) {
        prop_assume!(!v.starts_with(b"qkv-staleness seq="));
        prop_assert_eq!(decode(&v), None);
    }

    #[test]
    fn the_rmse_is_zero_for_equal_curves_and_bounded_by_the_largest_gap(
        a in proptest::collection::vec(0.0f64..1.0, 1..20),
        d in proptest::collection::vec(-0.2f64..0.2, 20),
    ) {
        prop_assert_eq!(rmse(&a, &a), 0.0);
        let b: Vec<f64> = a.iter().zip(&d).map(|(x, y)| x + y).collect();
        let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        let e = rmse(&a, &b);
        prop_assert!(e <= max + 1e-12 && e >= 0.0);
        prop_assert!((e - rmse(&b, &a)).abs() < 1e-12);
    }

    #[test]
    fn the_counts_add_up_to_the_reads(
        reads in proptest::collection::vec((1u64..6, 0u64..6, 0usize..3), 0..60),
    ) {
        let ts = [0.0, 1.0, 2.0];
        let samples: Vec<Sample> = reads
            .iter()
            .map(|&(seq, seen, t)| sample(seq, ts[t], (seen > 0).then_some(seen.min(seq))))
            .collect();
        let run = PairRun { r: 2, w: 2, samples, ..PairRun::default() };
        let s = summarize(&run, 3, &ts, &step_at_1ms(), &step_at_1ms(), latency(), 1.0);
        prop_assert!(s.strict);
        prop_assert_eq!(s.points.iter().map(|p| p.reads).sum::<u64>(), s.reads);
        let consistent: u64 = s.points.iter().map(|p| p.consistent).sum();
        prop_assert_eq!(consistent + s.stale_reads, s.reads);
        for p in s.points.iter().filter(|p| p.reads > 0) {
            prop_assert!((0.0..=1.0).contains(&p.p_measured));
        }
    }
}
