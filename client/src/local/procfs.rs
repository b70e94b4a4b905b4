//! What Linux's `/proc` says about a pid: running, paused (stopped by
//! SIGSTOP) or gone, and whether the pid still is the `qkvd` we started —
//! a pid recorded in `cluster.json` may have been recycled for another
//! program, which must never be signalled.
//!
//! The parsing is pure ([`stat_state`], [`state_of_letter`],
//! [`cmdline_is_qkvd`]); [`probe`] is the thin reader on top. Without
//! `/proc` (not Linux) a live pid counts as a running qkvd.

use std::path::Path;

use serde::Serialize;

/// A node process's state, as supervising sees it; shown (and serialised)
/// as `running`, `paused` or `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Alive and scheduled.
    Running,
    /// Stopped by a signal (SIGSTOP): alive but answering nothing.
    Paused,
    /// Exited, killed, a zombie, or the pid now belongs to another program.
    Stopped,
}

impl ProcState {
    /// `running`, `paused` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Running => "running",
            ProcState::Paused => "paused",
            ProcState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for ProcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ProcState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The state letter of a `/proc/PID/stat` line (`pid (comm) S ...`): the
/// first field after the last `)`, since the command name may itself hold
/// spaces and parentheses.
pub fn stat_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// What a state letter means here: `T` (stopped by a signal) and `t`
/// (stopped under a tracer) are paused, `Z` (zombie) and `X` (dead) are
/// stopped, anything else (`R`, `S`, `D`, `I`, ...) is running.
pub fn state_of_letter(letter: char) -> ProcState {
    match letter {
        'T' | 't' => ProcState::Paused,
        'Z' | 'X' | 'x' => ProcState::Stopped,
        _ => ProcState::Running,
    }
}

/// Whether a `/proc/PID/cmdline` (argv, each argument ending in NUL) is a
/// qkvd: the file name of argv\[0\] contains `qkvd`, and when `args` is
/// given, the arguments after it are exactly those.
pub fn cmdline_is_qkvd(cmdline: &[u8], args: Option<&[String]>) -> bool {
    let body = cmdline.strip_suffix(&[0]).unwrap_or(cmdline);
    if body.is_empty() {
        return false;
    }
    let mut argv = body.split(|b| *b == 0);
    let argv0 = String::from_utf8_lossy(argv.next().unwrap_or_default());
    let name = argv0.rsplit('/').next().unwrap_or_default();
    if !name.contains("qkvd") {
        return false;
    }
    match args {
        None => true,
        Some(want) => {
            let rest: Vec<&[u8]> = argv.collect();
            rest.len() == want.len() && rest.iter().zip(want).all(|(a, w)| *a == w.as_bytes())
        }
    }
}

/// The state of `pid`, counting it as [`ProcState::Stopped`] unless it is
/// a qkvd with exactly `args` (with any arguments when `args` is empty:
/// records written before arguments were kept). Pid 0 is never a process
/// here: kill(2) would read it as "my process group".
pub fn probe(pid: u32, args: &[String]) -> ProcState {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return ProcState::Stopped;
    };
    if pid_t <= 0 {
        return ProcState::Stopped;
    }
    // SAFETY: signal 0 only asks whether the process exists.
    let exists = unsafe { libc::kill(pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return ProcState::Stopped;
    }
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_state(&s))
        .map_or(ProcState::Running, state_of_letter);
    if state == ProcState::Stopped {
        return state;
    }
    let ours = match read_cmdline(pid) {
        Ok(cmdline) => cmdline_is_qkvd(&cmdline, Some(args).filter(|a| !a.is_empty())),
        // Gone in between, or a system without /proc (where we cannot tell).
        Err(_) => !Path::new("/proc/self").exists(),
    };
    if ours { state } else { ProcState::Stopped }
}

/// `/proc/PID/cmdline`, read again for up to 100 ms while it is empty: a
/// process caught inside execve(2) — which a start just returned from may
/// still be — has no arguments yet. (A kernel thread's stays empty.)
fn read_cmdline(pid: u32) -> std::io::Result<Vec<u8>> {
    let path = format!("/proc/{pid}/cmdline");
    for _ in 0..50 {
        let cmdline = std::fs::read(&path)?;
        if !cmdline.is_empty() {
            return Ok(cmdline);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::fs::read(&path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn argv(parts: &[&str]) -> Vec<u8> {
        parts
            .iter()
            .flat_map(|p| [p.as_bytes(), b"\0"].concat())
            .collect()
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn stat_lines_give_their_state_letter() {
        for (line, want) in [
            ("12 (qkvd) S 1 12 12 0 -1", Some('S')),
            ("12 (qkvd) T 1 12 12 0 -1", Some('T')),
            ("12 (a) b) (c) Z 1 2", Some('Z')),
            ("12 (with space) R 1", Some('R')),
            ("12 qkvd S 1", None),
            ("", None),
        ] {
            assert_eq!(stat_state(line), want, "{line:?}");
        }
    }

    #[test]
    fn stopped_by_a_signal_is_paused_and_a_zombie_is_stopped() {
        for (letter, want) in [
            ('R', ProcState::Running),
            ('S', ProcState::Running),
            ('D', ProcState::Running),
            ('I', ProcState::Running),
            ('T', ProcState::Paused),
            ('t', ProcState::Paused),
            ('Z', ProcState::Stopped),
            ('X', ProcState::Stopped),
        ] {
            assert_eq!(state_of_letter(letter), want, "{letter}");
        }
    }

    #[test]
    fn a_cmdline_is_our_qkvd_only_by_name_and_when_asked_by_its_arguments() {
        let args = strings(&["--id", "n1", "--data-dir", "/d/n1"]);
        let ours = argv(&["/x/target/debug/qkvd", "--id", "n1", "--data-dir", "/d/n1"]);
        assert!(cmdline_is_qkvd(&ours, None));
        assert!(cmdline_is_qkvd(&ours, Some(&args)));
        for (cmdline, with_args, want) in [
            (argv(&["qkvd"]), None, true),
            (argv(&["/usr/bin/sleep", "100"]), None, false),
            // A directory named qkvd does not make the program one.
            (argv(&["/qkvd/bin/sh"]), None, false),
            (Vec::new(), None, false),
            // Another cluster's node: a qkvd, but not ours.
            (
                argv(&["/x/qkvd", "--id", "n1", "--data-dir", "/e/n1"]),
                Some(&args),
                false,
            ),
            (argv(&["/x/qkvd", "--id", "n1"]), Some(&args), false),
            // cmdline without the final NUL (a process that rewrote it).
            (b"qkvd\0--id".to_vec(), Some(&strings(&["--id"])), true),
        ] {
            assert_eq!(
                cmdline_is_qkvd(&cmdline, with_args.map(Vec::as_slice)),
                want,
                "{:?}",
                String::from_utf8_lossy(&cmdline)
            );
        }
    }

    #[test]
    fn pids_that_are_not_a_live_qkvd_probe_as_stopped() {
        assert_eq!(probe(u32::MAX, &[]), ProcState::Stopped);
        assert_eq!(probe(0, &[]), ProcState::Stopped);
        // This test process is alive but is not a qkvd.
        assert_eq!(probe(std::process::id(), &[]), ProcState::Stopped);
    }

    proptest! {
        #[test]
        fn the_state_letter_is_found_whatever_the_command_name(
            pid in 1u32..4_000_000,
            comm in "[ -~]{0,16}",
            letter in proptest::sample::select(vec!['R', 'S', 'D', 'T', 't', 'Z', 'X', 'I']),
        ) {
            let line = format!("{pid} ({comm}) {letter} 1 {pid} {pid} 0 -1 4194560 123 0 0");
            prop_assert_eq!(stat_state(&line), Some(letter));
        }

        #[test]
        fn a_qkvd_matches_its_own_arguments_and_no_others(
            dir in "(/[a-z]{1,6}){0,3}",
            args in proptest::collection::vec("[ -~]{0,10}", 0..6),
            other in proptest::collection::vec("[ -~]{0,10}", 0..6),
        ) {
            let mut parts = vec![format!("{dir}/qkvd")];
            parts.extend(args.iter().cloned());
            let cmdline: Vec<u8> = parts.iter().flat_map(|p| [p.as_bytes(), b"\0"].concat()).collect();
            prop_assert!(cmdline_is_qkvd(&cmdline, Some(&args)));
            prop_assert_eq!(cmdline_is_qkvd(&cmdline, Some(&other)), other == args);
        }
    }
}
