//! Shared pieces of the benchmark programs: running a child process while measuring its wall
//! time and peak RSS (from `wait4`'s rusage, so the numbers are the kernel's), and tables.

use std::process::Command;
use std::time::{Duration, Instant};

/// What one measured run of a program cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub wall: Duration,
    pub peak_rss_kib: u64,
    pub user: Duration,
    pub sys: Duration,
}

/// Run `cmd` to completion, measuring it. Fails when it exits non-zero.
pub fn measure(cmd: &mut Command) -> Result<Cost, String> {
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes; `pid` is our own child.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if r < 0 {
        return Err(format!("wait4 failed: {}", std::io::Error::last_os_error()));
    }
    std::mem::forget(child); // already reaped by wait4
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{cmd:?} failed with status {status}"));
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(Cost {
        wall,
        peak_rss_kib: usage.ru_maxrss as u64,
        user: tv(usage.ru_utime),
        sys: tv(usage.ru_stime),
    })
}

/// The median by wall time of several runs.
pub fn median(mut runs: Vec<Cost>) -> Cost {
    runs.sort_by_key(|c| c.wall);
    runs[runs.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}
