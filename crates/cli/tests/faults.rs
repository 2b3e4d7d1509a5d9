//! Fault injection against the test bed (issue 11, points 4 and 6): a host's link cut, a
//! second ^C while a host is cut off, a run killed with -9 (its leftovers swept by the next
//! run, a live run's left alone), a cleanup that fails, a full disk on a host. Every wait is
//! for an event, a process exit (pidfd) or a file under a deadline; the times measured are
//! printed as `MEASURED ...` lines for the README's failure table.

mod support;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bed::{Bed, FLEET_DEADLINE, applied_line, files_graph, summary};
use testbed::{Host, TestbedConfig};

/// Waits for process `pid` to exit (a pidfd turning readable), at most `within`. `None`: it did
/// not. A pid already gone counts as exited at once.
fn wait_exit(pid: u32, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Some(Duration::ZERO);
    }
    // SAFETY: the fd was just returned to us by the kernel and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let left = within.saturating_sub(start.elapsed());
        // SAFETY: one valid pollfd, its length 1.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
        if n > 0 {
            return Some(start.elapsed());
        }
        if n == 0 || start.elapsed() >= within {
            return None;
        }
    }
}

/// The pid of the child `mgmt run` on a host (the one process whose argv runs a graph), once
/// it runs.
fn child_pids(bed: &Bed, h: &Host) -> Vec<u32> {
    bed.tb
        .processes(h)
        .into_iter()
        .filter(|p| {
            p.cmdline.first().is_some_and(|a| a.ends_with("/mgmt"))
                && p.cmdline.iter().any(|a| a == "run")
        })
        .map(|p| p.pid)
        .collect()
}

fn host_failed(v: &Value, host: &str) -> bool {
    v["event"] == "host_failed" && v["host"] == host
}

fn stop(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(pid, sig) };
}

/// A host whose link is cut is reported within the silence bound in plain words, stops
/// holding the cluster's convergence (the other host converges and the run ends), and its
/// child, which can no longer reach the store, ends by itself and removes its run dir, with the
/// link still down.
#[test]
fn a_cut_host_is_reported_within_bounds_and_its_child_ends_by_itself() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let (n1, n2) = (bed.name(h1), bed.name(h2));
    // h1 never converges (a timer wakes it every second): only its failure lets the cluster
    // converge on h2 alone.
    let busy = bed.graph(
        "busy.yaml",
        &format!(
            "graph: busy\nremote: {}\nresources:\n  timer:\n  - name: tick\n    interval: 1\n  file:\n  - name: f\n    path: /tmp/cut-f\n    content: \"x\\n\"\n",
            bed.url(h1)
        ),
    );
    let calm = bed.graph(
        "calm.yaml",
        &files_graph(&bed.url(h2), &[("/tmp/calm", "y\n")]),
    );
    let mut r = bed.start(&[&busy, &calm], &["--converged-timeout", "3"]);
    r.wait_event("h1 applies its file", |v| applied_line(v, &n1, "file[f]"));
    r.wait_event("h2 applies its file", |v| applied_line(v, &n2, "file[f0]"));
    let pids = child_pids(&bed, h1);
    assert_eq!(pids.len(), 1, "one child on h1: {pids:?}");
    let dirs = bed.run_dirs(h1);
    assert_eq!(dirs.len(), 1, "{dirs:?}");

    bed.tb.cut(h1).expect("cut h1");
    let cut = Instant::now();
    let failed = r.wait_event_within(Duration::from_secs(40), "h1 reported silent", |v| {
        host_failed(v, &n1)
    });
    let reported = cut.elapsed();
    let error = failed["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(error, format!("no answer from {n1} for 15 s"), "{failed}");
    let (st, err) = r.wait();
    let ended = cut.elapsed();
    assert_eq!(
        st.code(),
        Some(1),
        "the run ends (cluster converged on h2) and says h1 failed\n{err}"
    );
    assert_eq!(support::bed::exit_reason(&r.seen), "converged", "{err}");
    assert_eq!(summary(&r.seen, &n2)["status"], "ok");

    let child_gone = wait_exit(pids[0], Duration::from_secs(60))
        .map(|_| cut.elapsed())
        .expect("the cut child ended by itself");
    let left = bed.run_dirs(h1);
    assert!(left.is_empty(), "the child removed its run dir: {left:?}");
    bed.tb.restore(h1).expect("restore h1");
    eprintln!(
        "MEASURED link cut: reported after {:.1}s, run ended after {:.1}s, child gone after {:.1}s",
        reported.as_secs_f64(),
        ended.as_secs_f64(),
        child_gone.as_secs_f64()
    );
    assert!(
        reported < Duration::from_secs(25),
        "reported after {reported:?}"
    );
    for h in [h1, h2] {
        bed.assert_clean(h);
    }
}

/// A second ^C ends the initiator within 2 s even while a host is cut off (the first ^C's
/// orderly stop would wait for it); the cut child ends by itself once the link is back.
#[test]
fn a_second_interrupt_ends_the_initiator_within_two_seconds_with_a_host_cut_off() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let n1 = bed.name(h1);
    let g = bed.graph("g.yaml", &files_graph(&bed.url(h1), &[("/tmp/int", "z\n")]));
    let mut r = bed.start(&[&g], &[]);
    r.wait_event("h1 applies", |v| applied_line(v, &n1, "file[f0]"));
    let pids = child_pids(&bed, h1);
    assert_eq!(pids.len(), 1, "{pids:?}");
    bed.tb.cut(h1).expect("cut h1");
    stop(r.pid, libc::SIGINT);
    r.wait_event("the first interrupt is taken", |v| {
        v["event"] == "exit" && v["reason"] == "interrupted"
    });
    let second = Instant::now();
    stop(r.pid, libc::SIGINT);
    r.deadline = Duration::from_secs(10);
    let (st, err) = r.wait();
    let took = second.elapsed();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("forced exit"), "{err}");

    bed.tb.restore(h1).expect("restore h1");
    let restored = Instant::now();
    wait_exit(pids[0], FLEET_DEADLINE).expect("the child ended by itself");
    eprintln!(
        "MEASURED second ^C with a host cut: initiator gone after {:.2}s; child gone {:.1}s after the link came back",
        took.as_secs_f64(),
        restored.elapsed().as_secs_f64()
    );
    assert!(took < Duration::from_secs(2), "the second ^C took {took:?}");
    bed.assert_clean(h1);
}

/// After a run is killed with -9 (its initiator and its child: nothing could clean up), the
/// next run to the host removes the dead run's dir and the upload temp files whose connection
/// is gone, and leaves a live run's dir, child and temp file alone.
#[test]
fn the_next_run_sweeps_what_a_killed_run_left_and_never_a_live_one() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let n1 = bed.name(h1);
    let g = bed.graph(
        "g.yaml",
        &files_graph(&bed.url(h1), &[("/tmp/sweep", "s\n")]),
    );
    // The live run.
    let mut live = bed.start(&[&g], &[]);
    live.wait_event("the live run applies", |v| applied_line(v, &n1, "file[f0]"));
    let live_dirs = bed.run_dirs(h1);
    assert_eq!(live_dirs.len(), 1);
    let live_child = child_pids(&bed, h1);
    assert_eq!(live_child.len(), 1);

    // The run that dies: its child frozen so it cannot clean up when its stdin closes, then
    // both killed.
    let doomed = bed.graph(
        "doomed.yaml",
        &files_graph(&bed.url(h1), &[("/tmp/doomed", "d\n")]),
    );
    let mut dead = bed.start(&[&doomed], &[]);
    dead.wait_event("the doomed run applies", |v| {
        applied_line(v, &n1, "file[f0]")
    });
    let dead_child: Vec<u32> = child_pids(&bed, h1)
        .into_iter()
        .filter(|p| !live_child.contains(p))
        .collect();
    assert_eq!(dead_child.len(), 1);
    let dead_dir: Vec<String> = bed
        .run_dirs(h1)
        .into_iter()
        .filter(|d| !live_dirs.contains(d))
        .collect();
    assert_eq!(dead_dir.len(), 1);
    let dead_dir = dead_dir[0].clone();
    let owner = bed.read(h1, &format!("{dead_dir}/owner"));
    let owner_pid: u32 = owner.split_whitespace().next().unwrap().parse().unwrap();
    stop(dead_child[0] as i32, libc::SIGSTOP);
    stop(dead.pid, libc::SIGKILL);
    stop(dead_child[0] as i32, libc::SIGKILL);
    dead.wait();
    assert!(wait_exit(dead_child[0], FLEET_DEADLINE).is_some());
    assert!(
        wait_exit(owner_pid, FLEET_DEADLINE).is_some(),
        "the dead run's sshd connection ends"
    );
    assert!(bed.tb.exists(h1, &dead_dir), "the killed run left its dir");

    // Upload temp files: one of the dead connection, one of an older version left for hours,
    // one of the live run's connection (an upload in flight), one recent without an owner.
    let live_owner = bed.read(h1, &format!("{}/owner", live_dirs[0]));
    let live_conn = live_owner.split_whitespace().collect::<Vec<_>>().join("-");
    let dead_conn = owner.split_whitespace().collect::<Vec<_>>().join("-");
    let cache = format!("/root/.cache/mgmt/bin/{}", support::bed::binary_sha());
    bed.sh(
        h1,
        &format!(
            "cd {cache} && echo x > .mgmt.{dead_conn}.aa.tmp && echo x > .mgmt.{live_conn}.bb.tmp \
             && echo x > .mgmt.0123abcd.tmp && touch -d '3 hours ago' .mgmt.0123abcd.tmp \
             && echo x > .mgmt.fresh.tmp"
        ),
    );

    let next = bed.graph(
        "next.yaml",
        &files_graph(&bed.url(h1), &[("/tmp/next", "n\n")]),
    );
    let mut r = bed.start(&[&next], &["--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(
        err.contains("removed 3 stale run dir(s) or upload temp file(s)"),
        "the dead run's dir, its connection's temp file and the old one: {err}"
    );
    assert!(!bed.tb.exists(h1, &dead_dir), "the dead run's dir is swept");
    let left = bed.sh(
        h1,
        &format!("cd {cache} && ls -A | grep '^\\.mgmt' || true"),
    );
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    let mut want = vec![
        format!(".mgmt.{live_conn}.bb.tmp"),
        ".mgmt.fresh.tmp".to_string(),
    ];
    want.sort();
    assert_eq!(
        left, want,
        "only the live and the recent temp files are left"
    );
    assert_eq!(
        bed.run_dirs(h1),
        live_dirs,
        "the live run's dir is untouched"
    );
    assert_eq!(
        child_pids(&bed, h1),
        live_child,
        "the live child still runs"
    );

    let (st, err) = live.interrupt();
    assert_eq!(st.code(), Some(0), "{err}");
    bed.sh(h1, &format!("rm -f {cache}/.mgmt.*"));
    bed.assert_clean(h1);
}

/// A run dir that cannot be removed (a mount inside it: EBUSY) makes the host's cleanup fail:
/// reported for that host, with the reason, and the run's exit code is 1.
#[test]
fn a_cleanup_that_fails_is_reported_and_fails_the_run() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let n1 = bed.name(h1);
    let g = bed.graph(
        "g.yaml",
        &files_graph(&bed.url(h1), &[("/tmp/clean", "c\n")]),
    );
    let mut r = bed.start(&[&g], &[]);
    r.wait_event("h1 applies", |v| applied_line(v, &n1, "file[f0]"));
    let dirs = bed.run_dirs(h1);
    assert_eq!(dirs.len(), 1);
    let busy = format!("{}/busy", dirs[0]);
    bed.sh(
        h1,
        &format!("mkdir {busy} && mount -t tmpfs -o size=1m none {busy}"),
    );
    let (st, err) = r.interrupt();
    assert_eq!(st.code(), Some(1), "a failed cleanup fails the run\n{err}");
    let failed = r
        .seen
        .iter()
        .find(|v| host_failed(v, &n1))
        .unwrap_or_else(|| panic!("h1 failed: {:#?}", r.seen))
        .clone();
    assert_eq!(failed["step"], "cleanup", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Device or resource busy") || error.contains("is still there"),
        "{error}"
    );
    assert_ne!(summary(&r.seen, &n1)["status"], "ok");
    bed.sh(h1, &format!("umount {busy} && rm -rf {}", dirs[0]));
    bed.assert_clean(h1);
}

/// A host whose disk is full when the binary is copied says so in those words (OpenSSH's SFTP
/// server can only send "Failure"), and its summary does not claim the binary was copied.
#[test]
fn a_full_disk_is_named_and_the_summary_says_the_copy_failed() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let n1 = bed.name(h1);
    bed.sh(
        h1,
        "mkdir -p /root/.cache/mgmt/bin && mount -t tmpfs -o size=1m none /root/.cache/mgmt/bin",
    );
    let g = bed.graph(
        "g.yaml",
        &files_graph(&bed.url(h1), &[("/tmp/full", "f\n")]),
    );
    let mut r = bed.start(&[&g], &["--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(1), "{err}");
    let failed = r
        .seen
        .iter()
        .find(|v| host_failed(v, &n1))
        .unwrap_or_else(|| panic!("h1 failed: {:#?}", r.seen))
        .clone();
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no space left on device ("),
        "the disk is named full: {error}"
    );
    assert_eq!(summary(&r.seen, &n1)["cache"], "copy-failed");
    let left = bed.sh(h1, "ls -A /root/.cache/mgmt/bin/*/ 2>/dev/null || true");
    assert!(
        left.trim().is_empty(),
        "no temp file is left in the cache: {left}"
    );
    bed.sh(h1, "umount /root/.cache/mgmt/bin");
    bed.assert_clean(h1);
}
