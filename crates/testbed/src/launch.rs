//! Starting a host's sshd directly inside its namespaces: between fork and exec the child joins
//! the host's network namespace, takes a fresh mount and UTS namespace, sets the hostname, mounts
//! a private /tmp and /run and binds the host's homes (and users files) over /root, /home and
//! /etc. The same as `ip netns exec NS unshare --mount --uts sh -c 'mount ...; exec sshd'`, but
//! without the eight helper processes per host, which made `up(50)` slow on a loaded machine.
//!
//! The code between fork and exec must only make raw system calls on memory prepared before
//! the fork: no allocation, no locks. It never changes the mounts of the root namespace
//! (everything happens after `unshare` and a recursive `MS_PRIVATE`).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::TestbedError;
use crate::sshd::{EtcOverlay, HostFiles};

fn cstr(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("paths without NUL")
}

fn cpath(p: &Path) -> CString {
    cstr(p.as_os_str().as_bytes())
}

/// One mount done in the child: (source, target, fstype, flags, data, what to report).
struct MountOp {
    source: CString,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
    data: Option<CString>,
    label: &'static [u8],
}

/// Everything the child needs, allocated before the fork.
struct Plan {
    netns: File,
    hostname: CString,
    root: CString,
    sys: CString,
    sysfs: CString,
    run_sshd: CString,
    mounts: Vec<MountOp>,
}

pub(crate) fn spawn_sshd(
    sshd: &Path,
    netns: &str,
    hostname: &str,
    files: &HostFiles,
    etc: Option<&EtcOverlay>,
) -> Result<Child, TestbedError> {
    let ns_path = Path::new("/run/netns").join(netns);
    let netns = File::open(&ns_path).map_err(|e| TestbedError::io("open", &ns_path, e))?;
    let bind = |source: &Path, target: &str, label: &'static [u8]| MountOp {
        source: cpath(source),
        target: cstr(target.as_bytes()),
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
        label,
    };
    let tmpfs = |target: &str, mode: &str, label: &'static [u8]| MountOp {
        source: cstr(b"testbed"),
        target: cstr(target.as_bytes()),
        fstype: Some(cstr(b"tmpfs")),
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some(cstr(format!("mode={mode}").as_bytes())),
        label,
    };
    let mut mounts = vec![
        tmpfs("/tmp", "1777", b"testbed: mount tmpfs on /tmp failed\n"),
        tmpfs("/run", "0755", b"testbed: mount tmpfs on /run failed\n"),
        bind(&files.root_home(), "/root", b"testbed: bind /root failed\n"),
        bind(&files.homes(), "/home", b"testbed: bind /home failed\n"),
    ];
    if let Some(etc) = etc {
        mounts.push(bind(
            &etc.passwd,
            "/etc/passwd",
            b"testbed: bind /etc/passwd failed\n",
        ));
        mounts.push(bind(
            &etc.group,
            "/etc/group",
            b"testbed: bind /etc/group failed\n",
        ));
        mounts.push(bind(
            &etc.shadow,
            "/etc/shadow",
            b"testbed: bind /etc/shadow failed\n",
        ));
    }
    let plan = Plan {
        netns,
        hostname: cstr(hostname.as_bytes()),
        root: cstr(b"/"),
        sys: cstr(b"/sys"),
        sysfs: cstr(b"sysfs"),
        run_sshd: cstr(b"/run/sshd"),
        mounts,
    };
    let log = File::create(files.log()).map_err(|e| TestbedError::io("create", files.log(), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| TestbedError::io("dup", files.log(), e))?;
    let mut cmd = Command::new(sshd);
    cmd.arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(files.config())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: the closure only makes system calls on memory owned by `plan`, which was built
    // before the fork and lives in the closure; nothing allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || enter(&plan));
    }
    cmd.spawn().map_err(|source| TestbedError::Spawn {
        program: format!("{} (in netns {})", sshd.display(), ns_path.display()),
        source,
    })
}

/// Runs in the forked child. On failure it writes the step to stderr (the host's log).
fn enter(plan: &Plan) -> io::Result<()> {
    let fail = |label: &[u8]| {
        let err = io::Error::last_os_error();
        // SAFETY: write(2) from a valid buffer to fd 2.
        unsafe { libc::write(2, label.as_ptr().cast(), label.len()) };
        Err(err)
    };
    // SAFETY: raw system calls on NUL-terminated strings and an open fd owned by
    // `plan`; they affect only this child process.
    unsafe {
        if libc::setns(plan.netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            return fail(b"testbed: setns failed\n");
        }
        if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
            return fail(b"testbed: unshare failed\n");
        }
        // Nothing mounted from here on may propagate back to the root namespace.
        let none = std::ptr::null();
        if libc::mount(
            none,
            plan.root.as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            none.cast(),
        ) != 0
        {
            return fail(b"testbed: making / private failed\n");
        }
        let name = plan.hostname.as_bytes();
        if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
            return fail(b"testbed: sethostname failed\n");
        }
        // A sysfs of the host's own network namespace, as `ip netns exec` gives; best effort.
        if libc::umount2(plan.sys.as_ptr(), libc::MNT_DETACH) == 0 {
            libc::mount(
                plan.sysfs.as_ptr(),
                plan.sys.as_ptr(),
                plan.sysfs.as_ptr(),
                0,
                none.cast(),
            );
        }
        for m in &plan.mounts {
            let fstype = m.fstype.as_ref().map_or(none, |f| f.as_ptr());
            let data = m.data.as_ref().map_or(none, |d| d.as_ptr());
            if libc::mount(
                m.source.as_ptr(),
                m.target.as_ptr(),
                fstype,
                m.flags,
                data.cast(),
            ) != 0
            {
                return fail(m.label);
            }
        }
        // sshd's privilege separation directory, in the fresh /run.
        if libc::mkdir(plan.run_sshd.as_ptr(), 0o755) != 0 {
            return fail(b"testbed: mkdir /run/sshd failed\n");
        }
    }
    Ok(())
}
