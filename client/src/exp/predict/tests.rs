//! The predictor against what can be worked out by hand: the closed form,
//! analytic t-visibility of simple distributions, strict quorums, and
//! determinism.

use quorumkv_faults::{Delays, Dist, Legs, Preset};

use super::*;

fn dist(s: &str) -> Dist {
    s.parse().expect(s)
}

fn config(n: usize, rs: &[usize], ws: &[usize], delays: Delays, trials: u64) -> Config {
    Config {
        n,
        rs: rs.to_vec(),
        ws: ws.to_vec(),
        delays,
        model: Model::Wars,
        ts: vec![0.0, 1.0, 5.0, 10.0],
        ps: vec![0.999],
        max_k: 10,
        trials,
        seed: 7,
    }
}

fn run(cfg: &Config) -> Prediction {
    predict(cfg, 2).expect("valid config")
}

/// W uniform on 0..10 ms, the other legs 0: with N=2 and R=W=1 the
/// commit is the earlier arrival and the read asks replica 0 (ties keep
/// preference order), so it is stale iff W_0 > W_1 + t, which has
/// probability (10 - t)^2 / 200.
fn race() -> Delays {
    Delays {
        legs: Legs {
            w: dist("uniform:0..10"),
            ..Legs::every(dist("const:0"))
        },
        remote_ms: None,
    }
}

#[test]
fn t_visibility_matches_the_analytic_race_of_two_uniform_writes() {
    let cfg = Config {
        ts: vec![0.0, 2.5, 5.0, 10.0],
        ..config(2, &[1], &[1], race(), 100_000)
    };
    let p = run(&cfg);
    let pair = &p.pairs[0];
    for v in &pair.t_visibility {
        let want = 1.0 - (10.0 - v.t_ms).powi(2) / 200.0;
        // 5 standard errors of a proportion over 100 000 trials.
        assert!(
            (v.p_consistent - want).abs() < 0.008,
            "t={}: {} vs {want}",
            v.t_ms,
            v.p_consistent
        );
        assert_eq!(v.p_repair, 0.0, "one answer never disagrees");
    }
    // (10 - t)^2 / 200 = 0.001 at t = 10 - sqrt(0.2); the quantile's
    // standard error there is about 0.02 ms.
    let t = pair.t_at["0.999"];
    assert!((t - (10.0 - 0.2f64.sqrt())).abs() < 0.1, "{t}");
    // The write waits for the earlier of two uniform arrivals: median
    // 10 (1 - 1/sqrt 2).
    let median = pair.latency_ms.write.p50;
    assert!(
        (median - 10.0 * (1.0 - 0.5f64.sqrt())).abs() < 0.1,
        "{median}"
    );
    assert_eq!(pair.latency_ms.read.p999, 0.0);
}

#[test]
fn strict_quorums_are_always_consistent_and_intersect() {
    let delays = Preset::LnkdDisk.delays();
    let p = run(&config(3, &[1, 2, 3], &[1, 2, 3], delays, 20_000));
    for pair in &p.pairs {
        let strict = pair.r + pair.w > 3;
        let at0 = pair.t_visibility[0].p_consistent;
        assert_eq!(strict, at0 == 1.0, "R={} W={}: {at0}", pair.r, pair.w);
        if strict {
            assert_eq!(pair.t_at["0.999"], 0.0);
            assert!(
                pair.k_staleness
                    .iter()
                    .all(|k| k.simulated == 1.0 && k.closed_form == 1.0)
            );
        }
        // Consistency never falls as t grows.
        let ps: Vec<f64> = pair.t_visibility.iter().map(|v| v.p_consistent).collect();
        assert!(ps.windows(2).all(|w| w[0] <= w[1]), "{ps:?}");
        assert!(pair.latency_ms.read.p50 <= pair.latency_ms.read.p99);
    }
    // Waiting for more replicas costs latency.
    let lat = |r: usize, w: usize| {
        let pair = p.pairs.iter().find(|x| (x.r, x.w) == (r, w)).expect("pair");
        (pair.latency_ms.read.p99, pair.latency_ms.write.p99)
    };
    assert!(lat(1, 1).0 < lat(2, 1).0 && lat(2, 1).0 < lat(3, 1).0);
    assert!(lat(1, 1).1 < lat(1, 2).1 && lat(1, 2).1 < lat(1, 3).1);
}

#[test]
fn the_simulated_k_staleness_agrees_with_the_closed_form_for_n3_r1_w1() {
    // 400 000 trials: the standard error of a proportion is at most
    // 0.079 percentage points, so 0.3 points is about 4 standard errors.
    let p = run(&config(3, &[1], &[1], Preset::LnkdSsd.delays(), 400_000));
    let ks = &p.pairs[0].k_staleness;
    assert_eq!(ks.len(), 10);
    for k in ks {
        let closed = 1.0 - (2.0f64 / 3.0).powi(k.k as i32);
        assert!((k.closed_form - closed).abs() < 1e-12);
        assert!(
            (k.simulated - k.closed_form).abs() < 0.003,
            "k={}: simulated {} vs closed form {}",
            k.k,
            k.simulated,
            k.closed_form
        );
    }
}

#[test]
fn a_hundred_replicas_with_quorums_of_thirty_miss_with_probability_1_88e_6() {
    let miss = miss_probability(100, 30, 30);
    assert!((miss - 1.88e-6).abs() < 0.005e-6, "{miss:e}");
    let p = run(&config(100, &[30], &[30], Preset::LnkdSsd.delays(), 1_000));
    let k1 = &p.pairs[0].k_staleness[0];
    assert!(
        (1.0 - k1.closed_form - 1.88e-6).abs() < 0.005e-6,
        "{}",
        k1.closed_form
    );
    assert_eq!(miss_probability(3, 2, 2), 0.0);
    assert_eq!(miss_probability(3, 1, 1), 2.0 / 3.0);
}

#[test]
fn the_same_seed_gives_the_same_prediction_whatever_the_thread_count() {
    let cfg = config(
        3,
        &[1, 2],
        &[1],
        Preset::Ymmr { alpha: 3.5 }.delays(),
        3 * CHUNK as u64 + 17,
    );
    let figures = |p: &Prediction| serde_json::to_string(&p.pairs).expect("serialises");
    let one = predict(&cfg, 1).expect("valid");
    let three = predict(&cfg, 3).expect("valid");
    assert_eq!(figures(&one), figures(&three));
    assert_eq!(
        one.pairs[0].samples.stale_until,
        three.pairs[0].samples.stale_until
    );
    let other = predict(&Config { seed: 8, ..cfg }, 3).expect("valid");
    assert_ne!(figures(&one), figures(&other));
}

#[test]
fn wan_reads_rarely_see_a_write_before_the_remote_delay_has_passed() {
    let p = run(&config(
        3,
        &[1],
        &[1],
        Preset::Wan { remote_ms: 75.0 }.delays(),
        50_000,
    ));
    let pair = &p.pairs[0];
    // Consistent at once only when the read's local replica is the
    // write's (1/3), or a remote read overtakes a remote write.
    let at0 = pair.t_visibility[0].p_consistent;
    assert!((0.3..0.4).contains(&at0), "{at0}");
    // One replica is local to each operation, so R=W=1 never waits for
    // the remote delay; but the write needs it to reach the others.
    assert!(pair.latency_ms.write.p50 < 75.0 && pair.latency_ms.read.p999 < 75.0);
    assert!(pair.t_at["0.999"] > 75.0, "{:?}", pair.t_at);
}

#[test]
fn through_quorumkv_a_read_is_stale_only_on_a_replica_the_write_has_not_reached() {
    // Every write leg takes exactly 5 ms, every other leg nothing.
    let delays = Delays {
        legs: Legs {
            w: dist("const:5"),
            ..Legs::every(dist("const:0"))
        },
        remote_ms: None,
    };
    let quorumkv = Model::Quorumkv(QuorumkvModel {
        nodes: 3,
        speculate_ms: 100.0,
        local_delays: false,
        read_coordinator: ReadCoordinator::Any,
        hop_ms: 0.0,
        client_ms: 0.0,
        overshoot_ms: [0.0; 4],
    });
    let cfg = Config {
        model: quorumkv,
        ts: vec![0.0, 4.9, 5.0],
        ..config(3, &[1], &[1], delays.clone(), 60_000)
    };
    let pair = &run(&cfg).pairs[0];
    // The read's coordinator reads its own copy: fresh when it minted the
    // write (1 in 3), else only once the write arrives 5 ms later.
    for v in &pair.t_visibility[..2] {
        assert!((v.p_consistent - 1.0 / 3.0).abs() < 0.01, "{v:?}");
    }
    assert_eq!(pair.t_visibility[2].p_consistent, 1.0);
    assert_eq!(
        pair.latency_ms.write.p999, 0.0,
        "W=1 commits on the coordinator"
    );
    // WARS with the same delays: the commit waits for a 5 ms write leg,
    // by which time every replica has it.
    let wars = run(&Config {
        model: Model::Wars,
        ..cfg
    });
    assert_eq!(wars.pairs[0].t_visibility[0].p_consistent, 1.0);
    assert_eq!(wars.pairs[0].latency_ms.write.p50, 5.0);
}

#[test]
fn the_read_s_coordinator_decides_whether_it_reads_the_writer_s_fresh_copy() {
    // Every write leg takes exactly 5 ms, every other leg nothing; with
    // R = W = 1 a read is fresh at t < 5 only through the node that
    // minted the write (every node is a replica: nodes = N = 3).
    let delays = Delays {
        legs: Legs {
            w: dist("const:5"),
            ..Legs::every(dist("const:0"))
        },
        remote_ms: None,
    };
    for (read_coordinator, want) in [
        (ReadCoordinator::Same, 1.0),
        (ReadCoordinator::Other, 0.0),
        (ReadCoordinator::Any, 1.0 / 3.0),
    ] {
        let cfg = Config {
            model: Model::Quorumkv(QuorumkvModel {
                nodes: 3,
                speculate_ms: f64::INFINITY,
                local_delays: false,
                read_coordinator,
                hop_ms: 0.0,
                client_ms: 0.0,
                overshoot_ms: [0.0; 4],
            }),
            ts: vec![0.0, 5.0],
            ..config(3, &[1], &[1], delays.clone(), 30_000)
        };
        let pair = &run(&cfg).pairs[0];
        let at0 = pair.t_visibility[0].p_consistent;
        assert!((at0 - want).abs() < 0.01, "{read_coordinator:?}: {at0}");
        assert_eq!(pair.t_visibility[1].p_consistent, 1.0);
    }
}

#[test]
fn configurations_that_cannot_work_are_refused() {
    let ok = config(3, &[1], &[1], race(), 10);
    let cases: Vec<(Config, &str)> = vec![
        (Config { n: 0, ..ok.clone() }, "n=0: N must be 1..=128"),
        (
            Config {
                rs: vec![0],
                ..ok.clone()
            },
            "r=0 with n=3: r must be 1..=n",
        ),
        (
            Config {
                ws: vec![1, 4],
                ..ok.clone()
            },
            "w=4 with n=3: w must be 1..=n",
        ),
        (
            Config {
                rs: vec![],
                ..ok.clone()
            },
            "no r given",
        ),
        (
            Config {
                trials: 0,
                ..ok.clone()
            },
            "trials must be at least 1",
        ),
        (
            Config {
                trials: 200_000_000,
                ..ok.clone()
            },
            "200000000 trials x 3 values per trial is more than 500000000 values",
        ),
        (
            Config {
                ts: vec![-1.0],
                ..ok.clone()
            },
            "t=-1: times must be finite and >= 0 ms",
        ),
        (
            Config {
                ps: vec![0.0],
                ..ok.clone()
            },
            "p=0: probabilities must be in (0, 1]",
        ),
        (
            Config {
                max_k: 0,
                ..ok.clone()
            },
            "k=0",
        ),
        (
            Config {
                model: Model::Quorumkv(QuorumkvModel {
                    nodes: 2,
                    speculate_ms: 100.0,
                    local_delays: false,
                    read_coordinator: ReadCoordinator::Any,
                    hop_ms: 0.0,
                    client_ms: 0.0,
                    overshoot_ms: [0.0; 4],
                }),
                ..ok.clone()
            },
            "nodes=2 with n=3: the cluster needs at least N nodes",
        ),
        (
            Config {
                model: Model::Quorumkv(QuorumkvModel {
                    nodes: 1,
                    speculate_ms: f64::INFINITY,
                    local_delays: false,
                    read_coordinator: ReadCoordinator::Other,
                    hop_ms: 0.0,
                    client_ms: 0.0,
                    overshoot_ms: [0.0; 4],
                }),
                ..config(1, &[1], &[1], race(), 10)
            },
            "nodes=1: reading through another coordinator than the write's needs at least 2 nodes",
        ),
        (
            Config {
                model: Model::Quorumkv(QuorumkvModel {
                    nodes: 3,
                    speculate_ms: f64::NAN,
                    local_delays: false,
                    read_coordinator: ReadCoordinator::Any,
                    hop_ms: 0.0,
                    client_ms: 0.0,
                    overshoot_ms: [0.0; 4],
                }),
                ..ok.clone()
            },
            "speculate_ms=NaN: must be >= 0",
        ),
    ];
    for (cfg, want) in cases {
        let err = predict(&cfg, 1).expect_err(want).to_string();
        assert!(err.contains(want), "{err} / {want}");
    }
}

#[test]
fn every_combination_of_r_and_w_is_predicted_once() {
    let cfg = config(3, &[1, 2, 1], &[3, 1], race(), 10);
    assert_eq!(cfg.pairs(), vec![(1, 3), (1, 1), (2, 3), (2, 1)]);
}

#[test]
fn trials_in_different_chunks_draw_different_delays() {
    let p = run(&config(
        3,
        &[1],
        &[1],
        Preset::LnkdSsd.delays(),
        2 * CHUNK as u64,
    ));
    let read = &p.pairs[0].samples.read;
    // Continuous delays rarely tie (f32 rounding aside); chunks that
    // repeated each other's draws would pair up every value.
    let ties = read.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(ties < read.len() / 10, "{ties} ties in {}", read.len());
}

#[test]
fn nearest_rank_quantiles() {
    let v: Vec<f32> = (1..=1000).map(|x| x as f32).collect();
    assert_eq!(quantile(&v, 0.5), 500.0);
    assert_eq!(quantile(&v, 0.999), 999.0);
    assert_eq!(quantile(&v, 1.0), 1000.0);
    assert_eq!(quantile(&v, 1e-9), 1.0);
}
