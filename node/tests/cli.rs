//! `qkvd` as a command: its help, and its refusals to start.
//!
//! (This file also makes `cargo test --workspace` build the `qkvd` binary
//! that the cluster tests in `tests/` start.)

use std::process::Command;

fn qkvd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qkvd"))
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let out = qkvd().arg("--help").output().expect("qkvd runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--id",
        "--http",
        "--listen",
        "--seeds",
        "--data-dir",
        "--config",
        "--cluster-name",
        "--cluster-secret-file",
        "--vnodes",
        "--token-allocation",
        "--rack",
        "--default-n",
        "--sync",
        "--max-value-bytes",
        "--join",
        "--fault-injection",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    for default in [
        "[default: 16]",
        "[default: 3]",
        "[default: always]",
        "[default: 1048576]",
        "[default: balanced]",
    ] {
        assert!(help.contains(default), "{default} missing from --help");
    }
}

fn refuses(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let mut cmd = qkvd();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("qkvd runs");
    assert!(
        !out.status.success(),
        "qkvd {args:?} should refuse to start"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // Our own refusals are one `qkvd: ...` line; clap's usage errors name
    // the flag on their first line.
    assert!(
        err.lines()
            .any(|l| l.contains(needle) && (l.starts_with("qkvd: ") || l.starts_with("error: "))),
        "expected one line naming {needle:?} in:\n{err}"
    );
}

#[test]
fn a_node_reachable_from_other_machines_without_a_lock_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d").display().to_string();
    let empty = dir.path().join("tokens");
    std::fs::write(&empty, "# nobody yet\n").expect("write");
    let d = ["--data-dir", data.as_str()];
    refuses(
        &[&d[..], &["--listen", "0.0.0.0:0"]].concat(),
        &[],
        "--cluster-secret-file",
    );
    refuses(
        &[&d[..], &["--http", "0.0.0.0:0"]].concat(),
        &[],
        "--client-tokens-file",
    );
    refuses(
        &[&d[..], &["--http", "0.0.0.0:0"]].concat(),
        &[],
        "--insecure",
    );
    refuses(
        &["--client-tokens-file", &empty.display().to_string()],
        &[],
        "holds no token",
    );
}

#[test]
fn bad_values_unusable_dirs_and_busy_ports_are_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").expect("write");
    let file_s = file.display().to_string();
    refuses(&["--default-n", "0"], &[], "--default-n");
    refuses(&["--vnodes", "x"], &[], "--vnodes");
    refuses(&[], &[("QKV_DEFAULT_N", "99")], "--default-n");
    refuses(
        &[
            "--data-dir",
            &file_s,
            "--http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        "data dir",
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let data = dir.path().join("d").display().to_string();
    refuses(
        &[
            "--data-dir",
            &data,
            "--http",
            &busy_addr,
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        &busy_addr,
    );
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "vnodes = \"many\"\n").expect("write");
    refuses(
        &["--config", &cfg.display().to_string()],
        &[],
        "bad config file",
    );
}

#[test]
fn flag_beats_variable_beats_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("qkvd.toml");
    // Each source holds a different invalid vnodes value: the error names
    // the value that won.
    std::fs::write(&cfg, "vnodes = 5000\n").expect("write");
    let cfg_s = cfg.display().to_string();
    refuses(&["--config", &cfg_s], &[], "5000");
    refuses(&["--config", &cfg_s], &[("QKV_VNODES", "9999")], "9999");
    refuses(
        &["--config", &cfg_s, "--vnodes", "7777"],
        &[("QKV_VNODES", "9999")],
        "7777",
    );
}
