//! Real servers: booted Debian hosts (systemd as PID 1 in `systemd-nspawn`, see the `testbed`
//! crate), logged into as an ordinary user who becomes root through sudo, with packages from a
//! local apt repository the test builds (offline) and services driven over D-Bus.
//!
//! What is measured here is printed as `MEASURED` lines (run with `--no-capture`); the
//! assertions are about what happened, never about how fast.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::bed::{Bed, exit_reason, summary};
use testbed::{AptRepo, Deb, EXTRA_USER, Host, PASSWORD_USER, TESTD, TestbedConfig, testd_deb};

/// How many tiny packages the one-transaction test installs.
const MANY: usize = 20;

fn tiny(i: usize) -> Deb {
    Deb::new(format!("mgmt-t{i:02}"), "1.0").file(
        format!("/usr/share/mgmt-t{i:02}/README"),
        format!("package {i}\n"),
        0o644,
    )
}

/// A booted test bed of `n` hosts whose apt source is a repository of `debs`.
fn booted(n: usize, debs: &[Deb]) -> (Bed, tempfile::TempDir) {
    let repo = tempfile::tempdir().unwrap();
    AptRepo::build(repo.path(), debs).expect("build the apt repository");
    let bed = Bed::up(TestbedConfig {
        booted: true,
        apt_repo: Some(repo.path().to_path_buf()),
        ..TestbedConfig::hosts(n)
    });
    (bed, repo)
}

fn url(user: &str, h: &Host) -> String {
    format!("ssh://{user}@{}:{}", h.addr, h.port)
}

/// Start-Date lines of apt's history log: one per apt transaction.
fn apt_transactions(bed: &Bed, h: &Host) -> usize {
    bed.tb
        .read_file(h, "/var/log/apt/history.log")
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| l.starts_with("Start-Date:"))
                .count()
        })
        .unwrap_or(0)
}

/// dpkg's own word on a package: `ii` installed, `rc` removed with its config, `un` unknown.
fn dpkg_state(bed: &Bed, h: &Host, pkg: &str) -> String {
    let out = bed
        .tb
        .exec(
            h,
            &format!("dpkg-query -W -f='${{db:Status-Abbrev}}' {pkg} 2>/dev/null"),
        )
        .expect("dpkg-query");
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if s.is_empty() { "un".to_string() } else { s }
}

fn changed(seen: &[serde_json::Value], host: &str) -> u64 {
    summary(seen, host)["changed"].as_u64().unwrap_or(0)
}

#[test]
fn twenty_packages_install_in_one_apt_transaction_as_a_sudo_user_and_a_second_run_changes_nothing()
{
    let debs: Vec<Deb> = (1..=MANY).map(tiny).collect();
    let (bed, _repo) = booted(1, &debs);
    let h = bed.h(1);
    let mut g = format!(
        "graph: many\nremote: {}\nsudo: true\nresources:\n  pkg:\n",
        url(EXTRA_USER, h)
    );
    for d in &debs {
        g.push_str(&format!("  - name: {}\n    state: installed\n", d.name));
    }
    let g = bed.graph("many.yaml", &g);
    let host = bed.name(h);

    // --noop first: says what it would do, does nothing (no apt run at all, not even update).
    let mut r = bed.start(&[&g], &["--noop", "--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(apt_transactions(&bed, h), 0, "--noop ran apt");
    assert!(debs.iter().all(|d| dpkg_state(&bed, h, &d.name) == "un"));
    assert!(
        err.contains("would"),
        "--noop said nothing about what it would do:\n{err}"
    );

    let t = Instant::now();
    let mut r = bed.start(&[&g], &["--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "converged");
    println!(
        "MEASURED {MANY} packages installed by a cold run: {:.2?} (incl. 1 s converged timeout)",
        t.elapsed()
    );
    for d in &debs {
        assert_eq!(dpkg_state(&bed, h, &d.name), "ii", "{}", d.name);
    }
    assert_eq!(
        apt_transactions(&bed, h),
        1,
        "one apt transaction for {MANY} packages"
    );
    let history = bed.read(h, "/var/log/apt/history.log");
    let install = history
        .lines()
        .find(|l| l.starts_with("Install:"))
        .unwrap_or_default();
    assert_eq!(install.matches("mgmt-t").count(), MANY, "{history}");
    // The apt run was root's, asked for by the login user through sudo.
    assert!(
        history.contains(&format!("Requested-By: {EXTRA_USER}"))
            || history.contains("Commandline: apt-get"),
        "{history}"
    );

    let mut r = bed.start(&[&g], &["--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(
        changed(&r.seen, &host),
        0,
        "a second run changed something:\n{err}"
    );
    assert_eq!(apt_transactions(&bed, h), 1, "a second run ran apt");
    bed.assert_clean(h);
}

/// The classic graph on one host: the package, its config file, its service, with a restart
/// on config change.
fn classic(remote: &str, port: u16) -> String {
    format!(
        "graph: classic\nremote: {remote}\nsudo: true\nresources:
  pkg:
  - name: {TESTD}
    state: installed
  file:
  - name: conf
    path: /etc/{TESTD}.conf
    content: \"PORT={port}\\n\"
    mode: \"0644\"
  svc:
  - name: {TESTD}
    state: running
    startup: enabled
edges:
- name: pkg-conf
  from: {{kind: pkg, name: {TESTD}}}
  to: {{kind: file, name: conf}}
- name: conf-svc
  from: {{kind: file, name: conf}}
  to: {{kind: svc, name: {TESTD}}}
  notify: true
"
    )
}

/// How often systemd started the service so far (its own journal lines).
fn starts(bed: &Bed, h: &Host) -> usize {
    let out = bed
        .tb
        .exec(
            h,
            &format!("journalctl -q -o cat -u {TESTD}.service --no-pager"),
        )
        .expect("journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("Started "))
        .count()
}

/// `systemctl is-active` of the service.
fn is_active(bed: &Bed, h: &Host) -> String {
    let out = bed
        .tb
        .exec(h, &format!("systemctl is-active {TESTD}"))
        .expect("systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What mgmt-testd says about itself (`port=`, `pid=`...).
fn testd_state(bed: &Bed, h: &Host, key: &str) -> Option<String> {
    let state = String::from_utf8(bed.tb.read_file(h, "/run/mgmt-testd/state").ok()?).ok()?;
    state
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

/// Waits for the host's child to say it turned converged (again, after `r.mark()`).
fn wait_converged(r: &mut support::Running) {
    r.wait_event("the child converged", |v| {
        v["event"] == "host_converged" && v["converged"] == true
    });
}

/// D-Bus messages sent by or addressed to the mgmt child on `h` during `window`, counted by
/// `dbus-monitor` on the host's system bus (signals systemd broadcasts are not addressed to
/// anyone and do not count: what is counted is what mgmt asks).
fn mgmt_bus_messages(bed: &Bed, h: &Host, window: Duration) -> (usize, String) {
    let names = bed.sh(h, "busctl --system list --no-legend --no-pager");
    let unique: Vec<&str> = names
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[0].starts_with(':') && f[2] == "mgmt").then_some(f[0])
        })
        .collect();
    assert_eq!(unique.len(), 1, "mgmt's bus connection:\n{names}");
    let n = unique[0];
    let out = bed
        .tb
        .exec(
            h,
            &format!(
                "timeout {} dbus-monitor --system \"sender='{n}'\" \"destination='{n}'\"; true",
                window.as_secs()
            ),
        )
        .expect("dbus-monitor");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let count = text
        .lines()
        .filter(|l| {
            ["method call", "method return", "signal", "error"]
                .iter()
                .any(|k| l.starts_with(k))
                && (l.contains(&format!("sender={n} ")) || l.contains(&format!("destination={n} ")))
        })
        .count();
    (count, text)
}

/// Opens of dpkg's status database (a package resource that polled would read it) during
/// `window`, seen by inotify on the host's /var/lib/dpkg.
fn dpkg_status_opens(dir: &Path, window: Duration) -> usize {
    use std::ffi::CString;
    // SAFETY: plain inotify syscalls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK);
        assert!(fd >= 0);
        let p = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        assert!(libc::inotify_add_watch(fd, p.as_ptr(), libc::IN_OPEN) >= 0);
        let end = Instant::now() + window;
        let mut opens = 0;
        let mut buf = [0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, left.as_millis() as i32) <= 0 {
                continue;
            }
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            let mut off = 0;
            while n > 0 && off < n as usize {
                let ev = &*(buf.as_ptr().add(off) as *const libc::inotify_event);
                let name = &buf[off + 16..off + 16 + ev.len as usize];
                let name = name.split(|b| *b == 0).next().unwrap_or_default();
                if name == b"status" {
                    opens += 1;
                }
                off += 16 + ev.len as usize;
            }
        }
        libc::close(fd);
        opens
    }
}

#[test]
fn a_live_run_puts_back_a_removed_package_and_a_stopped_service_without_polling_and_a_config_edit_restarts_once()
 {
    let (bed, _repo) = booted(1, &[testd_deb("1.0")]);
    let h = bed.h(1);
    let remote = url(EXTRA_USER, h);
    let g = bed.graph("classic.yaml", &classic(&remote, 8081));
    let mut r = bed.start(&[&g], &[]);
    wait_converged(&mut r);
    assert_eq!(dpkg_state(&bed, h, TESTD), "ii");
    assert_eq!(testd_state(&bed, h, "port").as_deref(), Some("8081"));
    assert_eq!(
        bed.sh(h, &format!("systemctl is-enabled {TESTD}")).trim(),
        "enabled"
    );

    // A quiet period: nothing drifts, so a watcher that waits for events asks nothing.
    let window = Duration::from_secs(10);
    let dpkg_dir = PathBuf::from(format!(
        "/proc/{}/root/var/lib/dpkg",
        bed.tb.leader_pid(h).unwrap()
    ));
    let opens = std::thread::spawn(move || dpkg_status_opens(&dpkg_dir, window));
    let (bus, monitor) = mgmt_bus_messages(&bed, h, window);
    let opens = opens.join().unwrap();
    println!(
        "MEASURED quiet {window:?} of a live classic graph: {bus} D-Bus messages from or to mgmt, {opens} opens of dpkg's status"
    );
    assert_eq!(
        bus, 0,
        "mgmt talked on the bus with nothing to do:\n{monitor}"
    );
    assert_eq!(opens, 0, "dpkg's status was read with nothing to do");

    // A package removed by hand comes back, its service with it. The child's log lines and
    // its events come on two streams, so what is waited for is the host's own state (no event
    // says when systemd is done: the package's postinst may restart the service too), then
    // the child's word that it is converged.
    r.mark();
    bed.sh(
        h,
        &format!("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q {TESTD} >/dev/null"),
    );
    let t = Instant::now();
    assert!(
        support::bed::wait_until(support::DEADLINE, || dpkg_state(&bed, h, TESTD) == "ii"
            && is_active(&bed, h) == "active"),
        "not put back: {} {}",
        dpkg_state(&bed, h, TESTD),
        is_active(&bed, h)
    );
    println!(
        "MEASURED `apt-get remove` by hand undone (installed, service active) {:.2?} after apt-get returned",
        t.elapsed()
    );
    wait_converged(&mut r);

    // A service stopped by hand is started again.
    r.mark();
    // mgmt may see the unit deactivating and queue its start before the stop job ends: then
    // systemd cancels the stop job ("Job ... canceled") and systemctl fails; that is still a
    // hand stop undone, so it is accepted.
    let out = bed
        .tb
        .exec(h, &format!("systemctl stop {TESTD}"))
        .expect("exec");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("canceled"),
        "systemctl stop: {err}"
    );
    let t = Instant::now();
    assert!(
        support::bed::wait_until(support::DEADLINE, || is_active(&bed, h) == "active"),
        "not started again: {}",
        is_active(&bed, h)
    );
    println!(
        "MEASURED `systemctl stop` by hand undone (active again) {:.2?} after it returned",
        t.elapsed()
    );
    wait_converged(&mut r);

    // A config edit by hand is undone, and the service restarts exactly once.
    let before = starts(&bed, h);
    let pid = testd_state(&bed, h, "pid");
    r.mark();
    bed.tb
        .write_file(h, format!("/etc/{TESTD}.conf"), b"PORT=9999\n", 0o644)
        .expect("edit the config");
    let conf = format!("/etc/{TESTD}.conf");
    assert!(
        support::bed::wait_until(support::DEADLINE, || bed.read(h, &conf) == "PORT=8081\n"
            && starts(&bed, h) > before
            && is_active(&bed, h) == "active"),
        "the edit was not undone with a restart"
    );
    wait_converged(&mut r);
    assert_eq!(
        starts(&bed, h),
        before + 1,
        "one restart for one config edit"
    );
    assert_ne!(testd_state(&bed, h, "pid"), pid);

    // A config change in the graph, live: the new port, one restart.
    let before = starts(&bed, h);
    r.mark();
    support::write(&g, &classic(&remote, 8082));
    assert!(
        support::bed::wait_until(support::DEADLINE, || testd_state(&bed, h, "port")
            .as_deref()
            == Some("8082")),
        "the new port was not taken"
    );
    wait_converged(&mut r);
    assert_eq!(testd_state(&bed, h, "port").as_deref(), Some("8082"));
    assert_eq!(
        starts(&bed, h),
        before + 1,
        "one restart for one graph edit"
    );

    let (st, err) = r.interrupt();
    assert!(st.code().is_some(), "{err}");
    bed.assert_clean(h);
}

/// The initiator on a real terminal (util-linux `script`), answering the sudo prompt with
/// `password` when it appears; returns (exit code, everything it printed).
fn run_on_a_tty(bed: &Bed, args: &str, password: &str) -> (Option<i32>, String) {
    let cmd = format!(
        "{} run --client-urls http://127.0.0.1:0 --known-hosts {} --ssh-identity {} {args}",
        env!("CARGO_BIN_EXE_mgmt"),
        bed.tb.known_hosts().display(),
        bed.tb.client_key().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("HOME", bed.dir.path().join("home"))
        .env_remove("SSH_AUTH_SOCK")
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script");
    let out = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // The prompt has no newline: read what is there up to ':'.
            match r.read_until(b':', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&buf).into_owned();
                    let mut all = sink.lock().unwrap();
                    all.push_str(&s);
                    if all.contains("sudo password for") {
                        let _ = tx.send(());
                    }
                }
            }
        }
    });
    rx.recv_timeout(support::bed::FLEET_DEADLINE)
        .unwrap_or_else(|_| panic!("no sudo prompt:\n{}", out.lock().unwrap()));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    let status = child.wait().expect("wait");
    drop(stdin);
    reader.join().unwrap();
    let text = out.lock().unwrap().clone();
    (status.code(), text)
}

#[test]
fn a_wrong_sudo_password_fails_that_host_only_and_the_password_is_nowhere() {
    let (bed, _repo) = booted(2, &[]);
    let (h1, h2) = (bed.h(1), bed.h(2));
    let password = bed
        .tb
        .password()
        .expect("booted test beds have a password")
        .to_string();
    // h1: the password user; h2: the NOPASSWD user. Each writes who it is as root.
    let graph = |name: &str, user: &str, h: &Host| {
        bed.graph(
            &format!("{name}.yaml"),
            &format!(
                "graph: {name}\nremote: {}\nsudo: true\nresources:\n  exec:\n  - name: whoami\n    cmd: sh -c 'id -un > /root/whoami; cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ > /root/procs 2>/dev/null; true'\n    creates: /root/whoami\n",
                url(user, h)
            ),
        )
    };
    let a = graph("a", PASSWORD_USER, h1);
    let b = graph("b", EXTRA_USER, h2);
    let files = format!(
        "--remote {} --remote {} --ask-sudo-pass --converged-timeout 1",
        a.display(),
        b.display()
    );

    let t = Instant::now();
    let (code, out) = run_on_a_tty(&bed, &files, "not-the-password");
    println!(
        "MEASURED a run with a wrong sudo password on one of 2 hosts: {:.2?}",
        t.elapsed()
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("sudo refused the password for {PASSWORD_USER}")),
        "{out}"
    );
    assert!(
        !bed.tb.exists(h1, "/root/whoami"),
        "h1 ran with a refused password"
    );
    assert_eq!(
        bed.read(h2, "/root/whoami"),
        "root\n",
        "h2 did not carry on:\n{out}"
    );
    bed.assert_clean(h1);

    let (code, out) = run_on_a_tty(&bed, &files, &password);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(bed.read(h1, "/root/whoami"), "root\n");
    // Every process's argv and environment, read as root while the root child ran under
    // sudo (the exec above): the password is in none of them.
    let procs = bed.tb.read_file(h1, "/root/procs").unwrap();
    assert!(procs.len() > 100, "no process table was read");
    assert!(
        !String::from_utf8_lossy(&procs).contains(&password),
        "the password is in a process's argv or environment"
    );

    // The password is in no host's files (tmpfs /run and /tmp included) and in nothing the
    // initiator printed or kept.
    for h in [h1, h2] {
        let hits = bed
            .tb
            .exec(
                h,
                &format!("grep -rlsF -e '{password}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev; true"),
            )
            .unwrap();
        let hits = String::from_utf8_lossy(&hits.stdout).into_owned();
        assert!(
            hits.trim().is_empty(),
            "{}: the password is in {hits}",
            h.name
        );
        bed.assert_clean(h);
    }
    assert!(
        !out.contains(&password),
        "the initiator printed the password"
    );
    let home = bed.dir.path().to_path_buf();
    let hits = Command::new("grep")
        .args(["-rlsF", "-e", &password])
        .arg(&home)
        .output()
        .unwrap();
    assert!(
        hits.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&hits.stdout)
    );
}
