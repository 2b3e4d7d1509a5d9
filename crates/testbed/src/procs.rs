//! Finding processes by the namespaces they live in (through /proc), and killing them by pid.
//! Never kills by name: only pids found inside a test bed's own namespaces.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A namespace identity: (device, inode) of its nsfs file.
pub(crate) type NsId = (u64, u64);

pub(crate) fn ns_id(path: &Path) -> Option<NsId> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Every live (non-zombie) pid with its network and mount namespace ids.
pub(crate) fn all_with_ns() -> Vec<(u32, Option<NsId>, Option<NsId>)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let base = Path::new("/proc").join(pid.to_string()).join("ns");
            let net = ns_id(&base.join("net"));
            let mnt = ns_id(&base.join("mnt"));
            // Zombies have no namespaces left; they are gone for our purposes.
            (net.is_some() || mnt.is_some()).then_some((pid, net, mnt))
        })
        .collect()
}

pub(crate) fn pids_in(net: &[NsId]) -> Vec<u32> {
    all_with_ns()
        .into_iter()
        .filter(|(_, n, _)| n.is_some_and(|n| net.contains(&n)))
        .map(|(pid, _, _)| pid)
        .collect()
}

pub(crate) fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The start time (clock ticks since boot) of a process: with the pid it names one process,
/// even after pid reuse.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (comm) may contain spaces and parentheses: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn alive(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

pub(crate) fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The fields of /proc/PID/stat after the command name (state is the first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The parent pid of a process.
pub(crate) fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Whether a process runs: a zombie waiting to be reaped does not count.
pub(crate) fn running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// The live children of a process.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| ppid(*child) == Some(pid) && running(*child))
        .collect()
}

/// The file name of a process's executable (`systemd-nspawn`), if it can be read.
pub(crate) fn exe_name(pid: u32) -> Option<String> {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(exe.file_name()?.to_string_lossy().into_owned())
}

/// The short command name (`comm`) of a process.
pub(crate) fn comm(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end().to_string())
}

/// The pid a process has in its own (innermost) pid namespace: 1 for a container's init.
pub(crate) fn inner_pid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Sends `signal` to each pid, waits until none runs (zombies count as gone) under `timeout`,
/// then SIGKILLs the rest and waits for them as well. Returns the pids still running.
pub(crate) fn terminate(pids: &[u32], signal: i32, timeout: std::time::Duration) -> Vec<u32> {
    for pid in pids {
        kill(*pid, signal);
    }
    if crate::util::wait_until(timeout, || !pids.iter().any(|p| running(*p))) {
        return Vec::new();
    }
    for pid in pids.iter().filter(|p| running(**p)) {
        kill(*pid, libc::SIGKILL);
    }
    crate::util::wait_until(std::time::Duration::from_secs(5), || {
        !pids.iter().any(|p| running(*p))
    });
    pids.iter().copied().filter(|p| running(*p)).collect()
}
