//! CPU pinning and CPU accounting.
//!
//! Pinning uses `sched_setaffinity`, so that on a small machine the
//! load generator and the server under test do not take turns on the same
//! core (which would measure the scheduler, not the server).
//!
//! `sched_setaffinity(0, ...)` pins the CALLING thread; threads it creates
//! afterwards inherit the mask. So pin before building a runtime, and every
//! worker thread of that runtime stays on the core.

use std::io;
use std::time::Duration;

/// The CPUs this thread may run on now.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads within `set` for cpu < max.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Pins the calling thread (and the threads it will create) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpu >= max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is out of range"),
        ));
    }
    // SAFETY: as above; CPU_SET writes within `set` for cpu < max.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the pointer and size describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot pin to cpu {cpu}: {e}"),
        ));
    }
    Ok(())
}

/// A CPU other than `not`, among `allowed`: where the ceiling server runs
/// when only the generator's CPU was given.
pub fn other_cpu(allowed: &[usize], not: usize) -> Option<usize> {
    allowed.iter().copied().find(|&c| c != not)
}

fn timespec(ts: &libc::timespec) -> Duration {
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// CPU time (user + system) used so far by the whole process.
pub fn process_cpu() -> Duration {
    // SAFETY: plain data, written by the kernel.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to `ts`.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    timespec(&ts)
}

/// The CPU-time clock of another thread of this process, to subtract an
/// in-process server's CPU from the generator's.
pub fn thread_cpu_clock<T>(handle: &std::thread::JoinHandle<T>) -> Option<libc::clockid_t> {
    use std::os::unix::thread::JoinHandleExt as _;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the pthread is alive while `handle` is not joined.
    let rc = unsafe {
        libc::pthread_getcpuclockid(handle.as_pthread_t() as libc::pthread_t, &mut clock)
    };
    (rc == 0).then_some(clock)
}

/// The time of a CPU-time clock (zero if it cannot be read).
pub fn clock_cpu(clock: libc::clockid_t) -> Duration {
    // SAFETY: as in process_cpu.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    timespec(&ts)
}

/// CPU time (user + system) used so far by another process, from
/// `/proc/PID/stat`; `None` if it cannot be read (gone, no `/proc`).
pub fn pid_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    let ticks = utime + stime;
    Some(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
}

/// Where the CPU time of the generator and of the server under test come
/// from, sampled at the start and end of the measured window.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuProbe {
    /// The server runs inside this process: `Some(clock)` of its thread,
    /// `Some(None)` when its CPU cannot be separated from the generator's.
    pub in_process_server: Option<Option<libc::clockid_t>>,
    /// The server is this process (e.g. a qkvd given by `--server-pid`).
    pub server_pid: Option<u32>,
}

impl CpuProbe {
    /// (generator CPU so far, server CPU so far), each when known.
    pub fn sample(&self) -> (Option<Duration>, Option<Duration>) {
        let own = process_cpu();
        match self.in_process_server {
            Some(Some(clock)) => {
                let server = clock_cpu(clock);
                (Some(own.saturating_sub(server)), Some(server))
            }
            Some(None) => (None, None),
            None => (Some(own), self.server_pid.and_then(pid_cpu)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_has_some_cpu() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
    }

    #[test]
    fn pinning_a_fresh_thread_restricts_it_to_that_cpu() {
        let cpu = allowed_cpus().unwrap()[0];
        let got = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            allowed_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(got, vec![cpu]);
    }

    #[test]
    fn busy_threads_show_up_in_cpu_clocks() {
        let before = process_cpu();
        let t = std::thread::spawn(|| {
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(50) {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            x
        });
        let clock = thread_cpu_clock(&t);
        std::thread::sleep(Duration::from_millis(20));
        let thread_cpu = clock.map(clock_cpu);
        t.join().unwrap();
        assert!(process_cpu() > before);
        assert!(thread_cpu.is_some_and(|c| c > Duration::ZERO));
    }

    #[test]
    fn this_process_cpu_is_readable_from_proc() {
        assert!(pid_cpu(std::process::id()).is_some());
        assert_eq!(pid_cpu(u32::MAX), None);
    }

    #[test]
    fn other_cpu_skips_the_given_one() {
        assert_eq!(other_cpu(&[0, 1], 0), Some(1));
        assert_eq!(other_cpu(&[0, 1], 1), Some(0));
        assert_eq!(other_cpu(&[0], 0), None);
    }
}
