//! The supervisor's own tests: stand-ins for qkvd (sleep and sh, linked
//! under the name `qkvd`) started, paused, resumed, stopped, killed,
//! adopted and wiped, with no node involved.

use super::*;

/// A stand-in for qkvd: `program` (e.g. /bin/sleep) linked under the
/// name `qkvd` into `dir`, so that the pid guard takes it for one (a
/// link, not a copy: a copy being written while another test's child
/// forks could not be executed, ETXTBSY).
fn fake_qkvd(dir: &Path, program: &str, args: &[&str]) -> Launch {
    let bin = dir.join("qkvd");
    std::os::unix::fs::symlink(program, &bin).expect("link the stand-in");
    Launch {
        id: "n1".into(),
        bin,
        args: args.iter().map(|a| a.to_string()).collect(),
        // Nothing listens here: no stand-in ever answers /health.
        http: "127.0.0.1:1".into(),
        data_dir: dir.join("n1"),
        log: dir.join("n1.log"),
        header: Some("test".into()),
        ..Launch::default()
    }
}

#[test]
fn a_child_is_paused_resumed_and_stopped_by_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = NodeProcess::new(
        fake_qkvd(dir.path(), "/bin/sleep", &["30"]),
        Ownership::Owned,
    );
    let pid = p.spawn().expect("spawn");
    assert_eq!(p.state(), ProcState::Running);
    assert!(matches!(p.spawn(), Err(Error::AlreadyRunning { .. })));
    assert!(matches!(p.resume(), Err(Error::NotPaused { .. })));
    p.pause().expect("pause");
    assert_eq!(p.state(), ProcState::Paused);
    assert!(matches!(p.pause(), Err(Error::AlreadyPaused { .. })));
    p.resume().expect("resume");
    assert_eq!(p.state(), ProcState::Running);
    // Paused, SIGTERM alone would wait for a SIGCONT.
    p.pause().expect("pause");
    assert_eq!(p.stop(Duration::from_secs(5)), StopOutcome::Exited(None));
    assert_eq!(p.state(), ProcState::Stopped);
    assert_eq!(procfs::probe(pid, &[]), ProcState::Stopped, "reaped");
    assert!(matches!(p.pause(), Err(Error::NotRunning { .. })));
    let log = std::fs::read_to_string(dir.path().join("n1.log")).expect("log");
    assert!(log.starts_with("=== test: "), "{log}");
    assert!(dir.path().join("n1").is_dir(), "the data dir is made");
}

#[test]
fn a_process_that_ignores_sigterm_is_killed_after_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let script = format!(
        "trap '' TERM; : > {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut p = NodeProcess::new(
        fake_qkvd(dir.path(), "/bin/sh", &["-c", &script]),
        Ownership::Owned,
    );
    p.spawn().expect("spawn");
    // SIGTERM before the trap is set would end it at once.
    while !ready.exists() {
        std::thread::sleep(POLL);
    }
    let began = Instant::now();
    assert_eq!(p.stop(Duration::from_millis(300)), StopOutcome::Killed);
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(p.state(), ProcState::Stopped);
}

#[test]
fn a_process_that_exits_before_serving_is_reported_with_its_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = NodeProcess::new(
        fake_qkvd(dir.path(), "/bin/sh", &["-c", "exit 3"]),
        Ownership::Owned,
    );
    let err = p.start(Duration::from_secs(10)).expect_err("it exits");
    assert_eq!(
        err.to_string(),
        "qkvd n1 exited with exit status: 3 before serving"
    );
}

#[test]
fn health_that_never_answers_fails_at_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = NodeProcess::new(
        fake_qkvd(dir.path(), "/bin/sleep", &["30"]),
        Ownership::Owned,
    );
    let began = Instant::now();
    let err = p.start(Duration::from_millis(300)).expect_err("no /health");
    assert!(matches!(err, Error::NotHealthy { .. }), "{err}");
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(p.state(), ProcState::Running, "left as it is");
}

#[test]
fn an_owned_process_dies_with_its_handle_and_a_detached_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let launch = fake_qkvd(dir.path(), "/bin/sleep", &["30"]);
    let mut owned = NodeProcess::new(launch.clone(), Ownership::Owned);
    let pid = owned.spawn().expect("spawn");
    drop(owned);
    assert_eq!(procfs::probe(pid, &launch.args), ProcState::Stopped);

    let mut detached = NodeProcess::new(launch.clone(), Ownership::Detached);
    let pid = detached.spawn().expect("spawn");
    drop(detached);
    let mut adopted = NodeProcess::adopt(launch, pid);
    assert_eq!(adopted.state(), ProcState::Running, "left running");
    adopted.kill9().expect("kill -9");
    assert_eq!(adopted.state(), ProcState::Stopped);
}

#[test]
fn an_adopted_pid_is_signalled_only_while_it_runs_the_recorded_arguments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let launch = fake_qkvd(dir.path(), "/bin/sleep", &["30"]);
    let mut ours = NodeProcess::new(launch.clone(), Ownership::Owned);
    let pid = ours.spawn().expect("spawn");
    // The same pid recorded with other arguments: another program now.
    let other = Launch {
        args: vec!["31".into()],
        ..launch.clone()
    };
    let mut stranger = NodeProcess::adopt(other, pid);
    assert_eq!(stranger.state(), ProcState::Stopped);
    assert!(matches!(
        stranger.signal(libc::SIGKILL),
        Err(Error::NotRunning { .. })
    ));
    assert_eq!(ours.state(), ProcState::Running, "not signalled");
    let mut adopted = NodeProcess::adopt(launch, pid);
    adopted.pause().expect("pause");
    assert_eq!(ours.state(), ProcState::Paused);
    adopted.resume().expect("resume");
    assert_eq!(ours.state(), ProcState::Running);
}

#[test]
fn a_wipe_deletes_the_data_dir_and_starts_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = NodeProcess::new(
        fake_qkvd(dir.path(), "/bin/sleep", &["30"]),
        Ownership::Owned,
    );
    let old = p.spawn().expect("spawn");
    let marker = dir.path().join("n1").join("marker");
    std::fs::write(&marker, b"x").expect("write");
    // The stand-in never serves /health, so the restart times out; the
    // kill and the deletion have happened by then.
    let err = p.wipe(Duration::from_millis(100)).expect_err("no /health");
    assert!(matches!(err, Error::NotHealthy { .. }), "{err}");
    assert!(!marker.exists());
    assert_ne!(p.pid(), Some(old));
    assert_eq!(procfs::probe(old, &[]), ProcState::Stopped);
}

#[test]
fn log_tail_keeps_the_last_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("l");
    std::fs::write(&p, "a\nb\nc\n").expect("write");
    assert_eq!(log_tail(&p, 2), "b\nc");
    assert_eq!(log_tail(&p, 5), "a\nb\nc");
    assert!(log_tail(&dir.path().join("none"), 2).starts_with("(cannot read "));
}

#[test]
fn a_port_nobody_listens_on_is_not_healthy() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let err = probe_health(&addr).expect_err("nothing listens");
    assert!(err.contains("cannot connect"), "{err}");
}
