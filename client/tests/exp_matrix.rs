//! `qkv exp matrix --simulate` end to end (no cluster), and the one-line
//! errors of `qkv exp staleness` and `qkv exp matrix` before anything is
//! written to a cluster.

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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const LEGS: &[&str] = &[
    "--w-delay",
    "exp:10",
    "--a-delay",
    "exp:3",
    "--r-delay",
    "exp:2",
    "--s-delay",
    "exp:4",
];

#[test]
fn a_simulated_matrix_has_a_row_per_r_and_w_with_what_each_tolerates() {
    let mut args = vec![
        "exp",
        "matrix",
        "--n",
        "3",
        "--simulate",
        "--trials",
        "20000",
        "--json",
    ];
    args.extend(LEGS);
    let out = qkv(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["source"], "predicted");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 9);
    for row in rows {
        let (r, w) = (row["r"].as_u64().expect("r"), row["w"].as_u64().expect("w"));
        assert_eq!(row["strict"], r + w > 3, "{row}");
        assert_eq!(row["down_for_reads"], 3 - r);
        assert_eq!(row["down_for_writes"], 3 - w);
        let t999 = row["t_visibility_999_ms"].as_f64().expect("t");
        if r + w > 3 {
            assert_eq!(
                (t999, row["p_consistent"].as_f64()),
                (0.0, Some(1.0)),
                "{row}"
            );
        } else {
            assert!(t999 > 0.0, "{row}");
        }
    }
    assert!(
        v["command"]
            .as_str()
            .is_some_and(|c| c.contains("--simulate") && c.contains("--w-delay exp:10")),
        "{}",
        v["command"]
    );
}

#[test]
fn staleness_and_matrix_refuse_what_cannot_run_with_one_line() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["exp", "staleness", "--w-delay", "exp:x"], "--w-delay"),
        (
            vec![
                "--node",
                "http://127.0.0.1:9",
                "exp",
                "staleness",
                "--delays",
                "exp:1",
                "--speculative-retry",
                "soon",
            ],
            "speculative retry \"soon\"",
        ),
        // No cluster at this address: nothing is measured.
        (
            vec![
                "--node",
                "http://127.0.0.1:9",
                "exp",
                "staleness",
                "--delays",
                "exp:1",
            ],
            "listing the cluster's members",
        ),
        (
            vec!["exp", "matrix", "--delays", "exp:1", "--nodes", "5"],
            "--nodes applies to --simulate only",
        ),
    ];
    for (args, want) in cases {
        let out = qkv(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with("Error: ") && err.contains(want),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}
