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
