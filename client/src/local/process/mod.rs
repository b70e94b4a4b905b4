//! One `qkvd` process: [`NodeProcess`] starts it from a [`Launch`] (stdin
//! closed, stdout and stderr appended to its log), waits until `/health`
//! answers, and applies every process fault — SIGTERM-then-SIGKILL stop,
//! kill -9, pause (SIGSTOP) and resume (SIGCONT), losing the disk — and
//! starts it again with the same arguments.
//!
//! A process is either our child (started here: its pid cannot be
//! recycled before we reap it) or adopted by pid from a record (another
//! `qkv` invocation started it): an adopted pid is signalled only while
//! `/proc` says it still is that qkvd ([`super::procfs::probe`]).
//!
//! [`Ownership`] says what dropping the handle does: tests own their nodes
//! (killed on drop, and in the test's process group so a Ctrl-C stops them
//! too); `qkv local` detaches them (own process group, left running).
//! Waits poll every 20 ms against a deadline.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Error;
use super::layout::NodeArgs;
use super::procfs::{self, ProcState};

/// How often waits look again.
const POLL: Duration = Duration::from_millis(20);
/// How long a signal's effect may take to show (gone after SIGKILL, paused
/// after SIGSTOP).
const SIGNAL_DEADLINE: Duration = Duration::from_secs(5);

/// Everything needed to start one node, and to start it again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launch {
    /// Node id, for messages.
    pub id: String,
    /// The qkvd binary.
    pub bin: PathBuf,
    /// Its arguments (without the program name).
    pub args: Vec<String>,
    /// HTTP address `/health` is polled at, `host:port`.
    pub http: String,
    /// Gossip/internode address, `host:port`.
    pub listen: String,
    /// Data directory (created before a start, deleted by a wipe).
    pub data_dir: PathBuf,
    /// Where stdout and stderr are appended.
    pub log: PathBuf,
    /// Variables set for the process.
    pub env: Vec<(String, String)>,
    /// When set, each start first appends `=== {header}: BIN ARGS` to the
    /// log.
    pub header: Option<String>,
}

impl Launch {
    /// The launch of `node` with binary `bin`, logging to `log`.
    pub fn new(bin: &Path, node: &NodeArgs, log: PathBuf) -> Launch {
        Launch {
            id: node.id.clone(),
            bin: bin.to_path_buf(),
            args: node.to_args(),
            http: node.http.clone(),
            listen: node.listen.clone(),
            data_dir: node.data_dir.clone(),
            log,
            env: Vec::new(),
            header: None,
        }
    }

    /// Heads the log at each start with `=== {header}: ...`.
    pub fn header(mut self, header: &str) -> Launch {
        self.header = Some(header.to_string());
        self
    }

    /// Sets a variable for the process.
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// What dropping a [`NodeProcess`] does to a process it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// SIGKILL on drop; the process stays in the caller's process group,
    /// so a Ctrl-C in the terminal reaches it too.
    Owned,
    /// Left running on drop, in its own process group so that it outlives
    /// the caller and a Ctrl-C in its terminal.
    Detached,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// There was no process to stop.
    NotRunning,
    /// Our child exited after SIGTERM, with this code (`None`: a signal).
    Exited(Option<i32>),
    /// An adopted process went away after SIGTERM (its code is its
    /// parent's to read).
    Gone,
    /// It did not exit in time and was killed with SIGKILL.
    Killed,
}

enum Handle {
    /// Never started, or stopped by us.
    None,
    /// Our child, not known to have ended.
    Child(Child),
    /// Ended on its own: our child's status, or `None` for an adopted
    /// process (whose status is its parent's to read).
    Exited(Option<std::process::ExitStatus>),
    /// Started by another program; found by pid.
    Adopted(u32),
}

/// One node's process, started or adopted; see the module doc.
pub struct NodeProcess {
    /// What the next start runs.
    pub launch: Launch,
    ownership: Ownership,
    handle: Handle,
}

impl NodeProcess {
    /// A handle with no process yet; [`start`](Self::start) starts one.
    pub fn new(launch: Launch, ownership: Ownership) -> NodeProcess {
        NodeProcess {
            launch,
            ownership,
            handle: Handle::None,
        }
    }

    /// A handle on a process another program started (`qkv local up`),
    /// found by pid: signalled only while it still is a qkvd with
    /// `launch.args` (any arguments, when none are known), and never
    /// killed on drop. A later start makes a detached child.
    pub fn adopt(launch: Launch, pid: u32) -> NodeProcess {
        NodeProcess {
            launch,
            ownership: Ownership::Detached,
            handle: Handle::Adopted(pid),
        }
    }

    /// The pid, while there may be a process.
    pub fn pid(&self) -> Option<u32> {
        match &self.handle {
            Handle::None | Handle::Exited(_) => None,
            Handle::Child(c) => Some(c.id()),
            Handle::Adopted(pid) => Some(*pid),
        }
    }

    /// Running, paused or stopped. A child that ended is reaped here.
    pub fn state(&mut self) -> ProcState {
        let (state, ended) = match &mut self.handle {
            Handle::None | Handle::Exited(_) => (ProcState::Stopped, None),
            // Our unreaped child: its pid is ours, only the letter matters.
            Handle::Child(c) => match c.try_wait() {
                Ok(None) => match letter_state(c.id()) {
                    // Exited since try_wait looked: reap it now (a zombie's
                    // wait returns at once) to keep its status.
                    ProcState::Stopped => (ProcState::Stopped, Some(c.wait().ok())),
                    s => (s, None),
                },
                Ok(Some(status)) => (ProcState::Stopped, Some(Some(status))),
                Err(_) => (ProcState::Stopped, Some(None)),
            },
            Handle::Adopted(pid) => match procfs::probe(*pid, &self.launch.args) {
                ProcState::Stopped => (ProcState::Stopped, Some(None)),
                s => (s, None),
            },
        };
        if let Some(status) = ended {
            self.handle = Handle::Exited(status);
        }
        state
    }

    /// `Some(how it ended)` once there is no process; `None` while it runs
    /// or is paused.
    pub fn exit_status(&mut self) -> Option<String> {
        if self.state() != ProcState::Stopped {
            return None;
        }
        Some(match &self.handle {
            Handle::Exited(Some(status)) => status.to_string(),
            Handle::Exited(None) => "an unknown status (not our child)".to_string(),
            _ => "no process (not started, or stopped)".to_string(),
        })
    }

    fn running_pid(&mut self) -> Result<u32, Error> {
        let pid = self.pid();
        match (self.state(), pid) {
            (ProcState::Stopped, _) | (_, None) => Err(Error::NotRunning {
                id: self.launch.id.clone(),
                pid,
            }),
            (_, Some(pid)) => Ok(pid),
        }
    }

    /// Starts the process without waiting for it to serve; returns its pid.
    /// Refused while a process runs (or is paused).
    pub fn spawn(&mut self) -> Result<u32, Error> {
        use std::os::unix::process::CommandExt as _;
        if let Ok(pid) = self.running_pid() {
            return Err(Error::AlreadyRunning {
                id: self.launch.id.clone(),
                pid,
            });
        }
        let l = &self.launch;
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { what, path, source }
        };
        std::fs::create_dir_all(&l.data_dir).map_err(io("cannot create", &l.data_dir))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&l.log)
            .map_err(io("cannot open", &l.log))?;
        if let Some(header) = &l.header {
            writeln!(
                log,
                "=== {header}: {} {}",
                l.bin.display(),
                l.args.join(" ")
            )
            .map_err(io("cannot write", &l.log))?;
        }
        let err = log.try_clone().map_err(io("cannot open", &l.log))?;
        let mut cmd = Command::new(&l.bin);
        cmd.args(&l.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // qkv's own variables are not qkvd's settings.
            .env_remove("QKV_NODE")
            .env_remove("QKV_TOKEN")
            .envs(l.env.iter().map(|(k, v)| (k, v)));
        if self.ownership == Ownership::Detached {
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            bin: l.bin.clone(),
            source,
        })?;
        let pid = child.id();
        self.handle = Handle::Child(child);
        Ok(pid)
    }

    /// Polls `/health` until it answers 200, the process ends, or `within`
    /// passes.
    pub fn wait_healthy(&mut self, within: Duration) -> Result<(), Error> {
        wait_all_healthy(std::slice::from_mut(self), within).map_err(|(_, e)| e)
    }

    /// [`spawn`](Self::spawn), then [`wait_healthy`](Self::wait_healthy);
    /// returns the pid. A process that does not come up is left as it is.
    pub fn start(&mut self, within: Duration) -> Result<u32, Error> {
        let pid = self.spawn()?;
        self.wait_healthy(within)?;
        Ok(pid)
    }

    /// Sends `signal` to the process, if there still is one: our child
    /// (not reaped, so its pid is still ours) or an adopted pid that is
    /// still the recorded qkvd.
    pub fn signal(&self, signal: i32) -> Result<(), Error> {
        let pid = match &self.handle {
            Handle::Child(c) => Some(c.id()),
            Handle::Adopted(pid) => {
                (procfs::probe(*pid, &self.launch.args) != ProcState::Stopped).then_some(*pid)
            }
            Handle::None | Handle::Exited(_) => None,
        };
        match pid {
            Some(pid) => send(pid, signal),
            None => Err(Error::NotRunning {
                id: self.launch.id.clone(),
                pid: self.pid(),
            }),
        }
    }

    /// SIGKILL, and waits until the process is gone (reaped, when ours).
    /// Nothing to do when there is no process.
    pub fn kill9(&mut self) -> Result<(), Error> {
        if let Handle::Child(c) = &mut self.handle {
            let pid = c.id();
            let fail = |source| Error::Signal {
                pid,
                signal: libc::SIGKILL,
                source,
            };
            c.kill().map_err(fail)?;
            c.wait().map_err(fail)?;
            self.handle = Handle::None;
            return Ok(());
        }
        let Ok(pid) = self.running_pid() else {
            return Ok(());
        };
        send(pid, libc::SIGKILL)?;
        self.wait_for(pid, ProcState::Stopped, SIGNAL_DEADLINE)
    }

    /// SIGTERM (and SIGCONT, so that a paused process can act on it),
    /// then SIGKILL if it has not exited within `within`.
    pub fn stop(&mut self, within: Duration) -> StopOutcome {
        stop_all(std::slice::from_mut(self), within)[0]
    }

    /// SIGSTOP: the process stays alive but answers nothing.
    pub fn pause(&mut self) -> Result<(), Error> {
        let pid = self.running_pid()?;
        if self.state() == ProcState::Paused {
            return Err(Error::AlreadyPaused {
                id: self.launch.id.clone(),
                pid,
            });
        }
        send(pid, libc::SIGSTOP)?;
        self.wait_for(pid, ProcState::Paused, SIGNAL_DEADLINE)
    }

    /// SIGCONT to a paused process.
    pub fn resume(&mut self) -> Result<(), Error> {
        let pid = self.running_pid()?;
        if self.state() != ProcState::Paused {
            return Err(Error::NotPaused {
                id: self.launch.id.clone(),
                pid,
            });
        }
        send(pid, libc::SIGCONT)?;
        self.wait_for(pid, ProcState::Running, SIGNAL_DEADLINE)
    }

    /// Loses the disk: kill -9 (if running), deletes the data directory,
    /// and starts again with the same arguments; returns the new pid.
    pub fn wipe(&mut self, within: Duration) -> Result<u32, Error> {
        self.kill9()?;
        remove_data_dir(&self.launch.data_dir)?;
        self.start(within)
    }

    fn wait_for(&mut self, pid: u32, want: ProcState, within: Duration) -> Result<(), Error> {
        let until = Instant::now() + within;
        while self.state() != want {
            if Instant::now() >= until {
                return Err(Error::StateTimeout {
                    id: self.launch.id.clone(),
                    pid,
                    want,
                    within,
                });
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }
}

/// The state letter of a live pid of ours (running when `/proc` cannot
/// tell).
fn letter_state(pid: u32) -> ProcState {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| procfs::stat_state(&s))
        .map_or(ProcState::Running, procfs::state_of_letter)
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.ownership == Ownership::Owned
            && let Handle::Child(c) = &mut self.handle
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Deletes a data directory and all in it (nothing to do when it is not
/// there).
pub fn remove_data_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            what: "cannot remove",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn send(pid: u32, signal: i32) -> Result<(), Error> {
    let fail = |source| Error::Signal {
        pid,
        signal,
        source,
    };
    let p = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| fail(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    // SAFETY: kill(2) on a positive pid that is our child or was just
    // checked to be the recorded qkvd; it touches no memory of ours.
    if unsafe { libc::kill(p, signal) } != 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Waits until every process answers `/health`, in order, within one
/// shared deadline; fails at once when any of them ends. The error names
/// the index of the process it is about.
pub fn wait_all_healthy(procs: &mut [NodeProcess], within: Duration) -> Result<(), (usize, Error)> {
    let until = Instant::now() + within;
    for i in 0..procs.len() {
        loop {
            for (j, p) in procs.iter_mut().enumerate() {
                if let Some(status) = p.exit_status() {
                    let id = p.launch.id.clone();
                    return Err((j, Error::Exited { id, status }));
                }
            }
            let launch = &procs[i].launch;
            let probe = if super::tls::serves_https(&launch.args) {
                super::tls::probe_health_tls(&launch.http)
            } else {
                probe_health(&launch.http)
            };
            let last = match probe {
                Ok(()) => break,
                Err(e) => e,
            };
            if Instant::now() >= until {
                let id = procs[i].launch.id.clone();
                return Err((i, Error::NotHealthy { id, within, last }));
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// [`NodeProcess::stop`] for several processes at once: SIGTERM to all,
/// one shared deadline, then SIGKILL to those left.
pub fn stop_all(procs: &mut [NodeProcess], within: Duration) -> Vec<StopOutcome> {
    // How a process that is not running (any more) counts.
    fn ended(p: &NodeProcess, signalled: bool) -> StopOutcome {
        match (&p.handle, signalled) {
            (Handle::Exited(Some(status)), _) => StopOutcome::Exited(status.code()),
            (_, true) => StopOutcome::Gone,
            (_, false) => StopOutcome::NotRunning,
        }
    }
    let mut outcomes: Vec<Option<StopOutcome>> = Vec::with_capacity(procs.len());
    for p in procs.iter_mut() {
        outcomes.push(match p.running_pid() {
            Ok(pid) => {
                for sig in [libc::SIGTERM, libc::SIGCONT] {
                    // A failure shows as a process that does not exit.
                    let _ = send(pid, sig);
                }
                None
            }
            Err(_) => Some(ended(p, false)),
        });
    }
    let until = Instant::now() + within;
    loop {
        let mut waiting = false;
        for (p, out) in procs.iter_mut().zip(outcomes.iter_mut()) {
            if out.is_none() {
                if p.state() == ProcState::Stopped {
                    *out = Some(ended(p, true));
                } else {
                    waiting = true;
                }
            }
        }
        if !waiting || Instant::now() >= until {
            break;
        }
        std::thread::sleep(POLL);
    }
    procs
        .iter_mut()
        .zip(outcomes)
        .map(|(p, out)| {
            out.unwrap_or_else(|| {
                // SIGKILL cannot be refused; a failure means it is gone.
                let _ = p.kill9();
                StopOutcome::Killed
            })
        })
        .collect()
}

/// One `GET /health`: `Ok` on a 200 answer, else why not. `/health` never
/// needs a token.
pub fn probe_health(addr: &str) -> Result<(), String> {
    let mut s = connect_for_probe(addr)?;
    health_exchange(&mut s, addr, "")
}

/// Resolves `addr` and connects to it with the `/health` probe's timeouts
/// (200 ms to connect, 500 ms per read or write).
pub(crate) fn connect_for_probe(addr: &str) -> Result<TcpStream, String> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let s = TcpStream::connect_timeout(&sock, Duration::from_millis(200))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    Ok(s)
}

/// Sends `GET /health` to `addr` on `s` and reads the answer to its end:
/// `Ok` on a 200, else why not. `over` (e.g. `" over TLS"`) follows the
/// address in messages about the transport.
pub(crate) fn health_exchange(
    s: &mut (impl Read + Write),
    addr: &str,
    over: &str,
) -> Result<(), String> {
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("cannot send to {addr}{over}: {e}"))?;
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf);
    if buf.starts_with(b"HTTP/1.1 200") {
        return Ok(());
    }
    match (buf.is_empty(), read) {
        (true, Err(e)) => Err(format!("no answer from {addr}{over}: {e}")),
        (true, Ok(_)) => Err(format!(
            "{addr} closed the connection{over} without answering"
        )),
        (false, _) => {
            let text = String::from_utf8_lossy(&buf);
            Err(format!(
                "{addr} answered {}",
                text.lines().next().unwrap_or_default()
            ))
        }
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests;
