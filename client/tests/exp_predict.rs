//! `qkv exp predict` end to end: the built binary's JSON, its determinism,
//! the files of `--out`, and its one-line errors (exit 1).

use std::process::{Command, Output};

use serde_json::Value;

fn qkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .env_remove("QKV_NODE")
        .env_remove("QKV_TOKEN")
        .output()
        .expect("qkv runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(args: &[&str]) -> Value {
    let out = qkv(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

const BASE: &[&str] = &[
    "exp", "predict", "--n", "3", "--delays", "lnkd-ssd", "--t", "0,1,5,10", "--trials", "20000",
    "--seed", "7", "--json",
];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    BASE.iter().chain(extra).copied().collect()
}

#[test]
fn predict_prints_one_json_object_with_the_asked_figures_and_what_made_them() {
    let v = json(&with(&["--r", "1", "--w", "1"]));
    let ts: Vec<f64> = v["t_visibility"]
        .as_array()
        .expect("t_visibility")
        .iter()
        .map(|x| x["t_ms"].as_f64().expect("t_ms"))
        .collect();
    assert_eq!(ts, [0.0, 1.0, 5.0, 10.0]);
    let p0 = v["t_visibility"][0]["p_consistent"].as_f64().expect("p");
    assert!((0.9..1.0).contains(&p0), "{p0}");
    assert!(v["t_at"]["0.999"].as_f64().expect("t at 99.9%") > 0.0);
    for op in ["read", "write"] {
        for p in ["p50", "p99", "p999"] {
            assert!(
                v["latency_ms"][op][p].as_f64().expect("percentile") > 0.0,
                "{op} {p}"
            );
        }
    }
    let ks = v["k_staleness"].as_array().expect("k_staleness");
    assert_eq!(ks.len(), 10);
    assert_eq!(ks[0]["k"], 1);
    assert!((ks[0]["closed_form"].as_f64().expect("closed form") - 1.0 / 3.0).abs() < 1e-12);
    assert!(ks[0]["simulated"].as_f64().is_some());
    // Self-describing.
    assert_eq!(
        (v["n"].as_u64(), v["r"].as_u64(), v["w"].as_u64()),
        (Some(3), Some(1), Some(1))
    );
    assert_eq!(
        (v["trials"].as_u64(), v["seed"].as_u64()),
        (Some(20000), Some(7))
    );
    assert_eq!(v["model"], "wars");
    assert_eq!(v["delays"]["spec"], "lnkd-ssd");
    assert!(
        v["delays"]["w"]
            .as_str()
            .expect("w")
            .starts_with("mix:0.9122*pareto:0.235,10+")
    );
    assert!(
        v["command"]
            .as_str()
            .expect("command")
            .starts_with("qkv exp predict --model wars --n 3")
    );
}

#[test]
fn the_same_seed_prints_the_same_bytes_whatever_the_threads_and_the_echoed_command_reproduces_them()
{
    let one = qkv(&with(&["--r", "1,2", "--threads", "1"]));
    let two = qkv(&with(&["--r", "1,2", "--threads", "2"]));
    assert!(one.status.success(), "{}", text(&one.stderr));
    assert_eq!(text(&one.stdout), text(&two.stdout));
    let v: Value = serde_json::from_slice(&one.stdout).expect("json");
    let command = v["command"].as_str().expect("command").to_string();
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    assert_eq!(text(&qkv(&args).stdout), text(&one.stdout), "{command}");
    let other = qkv(&BASE
        .iter()
        .map(|a| if *a == "7" { "8" } else { a })
        .collect::<Vec<_>>());
    assert_ne!(text(&other.stdout), text(&one.stdout));
}

#[test]
fn several_r_and_w_give_one_object_per_pair_in_configs() {
    let v = json(&with(&["--r", "1,2", "--w", "1,2,3"]));
    let configs = v["configs"].as_array().expect("configs");
    let pairs: Vec<(u64, u64)> = configs
        .iter()
        .map(|c| (c["r"].as_u64().expect("r"), c["w"].as_u64().expect("w")))
        .collect();
    assert_eq!(pairs, [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]);
    assert_eq!(v["r"], serde_json::json!([1, 2]));
    // R + W > N: consistent at once.
    assert_eq!(
        configs[4]["t_visibility"][0]["p_consistent"].as_f64(),
        Some(1.0)
    );
}

#[test]
fn the_quorumkv_model_and_per_leg_delays_are_echoed() {
    let v = json(&[
        "exp",
        "predict",
        "--model",
        "quorumkv",
        "--nodes",
        "5",
        "--delays",
        "ymmr",
        "--w-delay",
        "mix:0.5*exp:1+0.5*const:2",
        "--trials",
        "5000",
        "--json",
    ]);
    assert_eq!(v["model"], "quorumkv");
    assert_eq!(v["quorumkv"]["nodes"], 5);
    // `auto`: the p99 of a read call's two `ymmr` legs (about 61 ms), not
    // the ceiling.
    let speculate = v["quorumkv"]["speculate_ms"].as_f64().expect("a delay");
    assert!((55.0..70.0).contains(&speculate), "{speculate}");
    assert_eq!(v["delays"]["spec"], "ymmr:alpha=3.5");
    assert_eq!(v["delays"]["w"], "mix:0.5*exp:1+0.5*const:2");
    assert!(
        v["delays"]["a"]
            .as_str()
            .expect("a")
            .contains("pareto:1.5,3.8")
    );
    let command = v["command"].as_str().expect("command");
    assert!(
        command.contains("--w-delay 'mix:0.5*exp:1+0.5*const:2'"),
        "{command}"
    );
    assert!(
        command.contains(&format!("--nodes 5 --speculate-ms {speculate} ")),
        "{command}"
    );
}

#[test]
fn bad_distributions_and_impossible_quorums_are_one_line_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--w-delay", "pareto:0,1"],
            "Error: --w-delay \"pareto:0,1\": `0` in `pareto:0,1`: the scale x_m must be > 0",
        ),
        (
            &["--a-delay", "gauss:1"],
            "`gauss` in `gauss:1` is not a kind of distribution",
        ),
        (&["--r", "0"], "Error: r=0 with n=3: r must be 1..=n"),
        (&["--w", "4"], "w=4 with n=3: w must be 1..=n"),
        (&["--n", "0"], "n=0: N must be 1..=128"),
        (&["--delays", "fast"], "`fast` is neither a preset"),
        (
            &["--delays", "ymmr:beta=1"],
            "`beta=1` is not a parameter of the preset ymmr",
        ),
        (&["--nodes", "5"], "apply to --model quorumkv only"),
        (
            &["--delays", "empirical:/nonexistent/x"],
            "empirical:/nonexistent/x: ",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["exp", "predict", "--trials", "100"];
        if !extra.contains(&"--delays") {
            args.extend(["--delays", "lnkd-ssd"]);
        }
        args.extend(*extra);
        let out = qkv(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = qkv(&["exp", "predict", "--trials", "100"]);
    assert!(
        text(&out.stderr).contains("give --delays"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn out_writes_the_summary_curves_plot_and_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("run");
    let path = out_dir.to_str().expect("utf-8");
    let out = qkv(&[BASE, &["--r", "1,2", "--out", path]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).expect(name);
    assert_eq!(read("summary.json"), text(&out.stdout));
    assert!(read("t_visibility.csv").starts_with("r,w,t_ms,p_consistent\n1,1,0,"));
    assert!(read("latency.csv").starts_with("op,quorum,quantile,ms\nread,1,0.005,"));
    let svg = read("plot.svg");
    assert!(svg.starts_with("<svg") && svg.contains(">R=2 W=1</text>"));
    let md = read("report.md");
    assert!(
        md.contains("| seed | 7 |") && md.contains("qkv exp predict --model wars --n 3 --r 1,2")
    );
    assert!(text(&out.stderr).contains("wrote summary.json"));
}

#[test]
fn without_json_the_figures_are_tables() {
    let out = qkv(&[
        "exp",
        "predict",
        "--delays",
        "lnkd-disk",
        "--r",
        "1,2",
        "--trials",
        "20000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for want in [
        "WARS model, N=3, 20000 trials, seed 1; delays lnkd-disk",
        "R  W  t=0ms",
        "read repair",
        "read p99.9",
        "closed form  simulated",
    ] {
        assert!(s.contains(want), "{want}:\n{s}");
    }
}
