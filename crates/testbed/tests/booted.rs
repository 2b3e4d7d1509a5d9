//! Booted hosts for real: systemd-nspawn containers whose PID 1 is systemd, reached with the
//! OpenSSH client as root and as the test users, with real sudo, offline apt from a local
//! repository (a service package installed, started, reloaded and upgraded), a disk of their
//! own that survives a restart, and nothing left after `down` or after a crash.
//! One test bed serves the whole first test (a boot costs about a second, a halt two).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testbed::{
    AptRepo, EXTRA_USER, Host, PASSWORD_USER, TESTD, TESTD_PORT, Testbed, TestbedConfig, testd_deb,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn ssh_as(bed: &Testbed, host: &Host, user: &str, cmd: &str, stdin: &[u8]) -> Output {
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg(bed.ssh_config())
        .args(["-l", user])
        .arg(&host.name)
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn ssh(bed: &Testbed, host: &Host, user: &str, cmd: &str) -> String {
    let out = ssh_as(bed, host, user, cmd, b"");
    assert!(
        out.status.success(),
        "ssh {user}@{} {cmd:?}: {}",
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `cmd` inside the host as root; must succeed; trimmed stdout.
fn sh(bed: &Testbed, host: &Host, cmd: &str) -> String {
    let out = bed.exec(host, cmd).expect("exec");
    assert!(
        out.status.success(),
        "{} {cmd:?}: {}",
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `cond` until it holds, under [`DEADLINE`].
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Body of `GET /` from mgmt-testd on the host, if it answers.
fn testd_get(host: &Host) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&(host.addr, TESTD_PORT).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split("\r\n\r\n").nth(1)?.trim().to_string())
}

/// Whether a process runs (a zombie waiting to be reaped does not count).
fn live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn ppid(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s[s.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// (RSS, PSS) in KiB summed over the host's processes.
fn memory_kib(bed: &Testbed, host: &Host) -> (u64, u64) {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let mut total = (0, 0);
    for p in bed.processes(host) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{}/smaps_rollup", p.pid)).unwrap_or_default();
        total.0 += field(&status, "VmRSS:");
        total.1 += field(&rollup, "Pss:");
    }
    total
}

/// Removes the repository directory however the test ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mounts_mentioning(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = dir.display().to_string();
    text.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn booted_hosts_are_whole_debian_machines() {
    let started = Instant::now();
    let root = testbed::build_booted_root().expect("booted root");
    println!(
        "MEASURED booted root ready in {:.1} s (cached after the first build)",
        started.elapsed().as_secs_f64()
    );
    let repo_dir = PathBuf::from(format!("/var/tmp/mgmt-testbed-repo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&repo_dir);
    let _cleanup = RemoveOnDrop(repo_dir.clone());
    let repo = AptRepo::build(&repo_dir, &[testd_deb("1.0")]).expect("build repo");
    assert!(repo.deb_path(&testd_deb("1.0")).is_file());

    let started = Instant::now();
    let mut bed = Testbed::up(TestbedConfig {
        booted: true,
        apt_repo: Some(repo_dir.clone()),
        ..TestbedConfig::hosts(2)
    })
    .expect("up");
    println!(
        "MEASURED 2 booted hosts up (booted, sshd ready, apt-get update) in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(bed.is_booted());
    assert_eq!(bed.booted_root(), Some(root.as_path()));
    let (h1, h2) = (bed.hosts()[0].clone(), bed.hosts()[1].clone());
    let password = bed
        .password()
        .expect("booted beds have a password")
        .to_string();

    for host in [&h1, &h2] {
        let leader = bed.leader_pid(host).expect("a container init");
        assert_eq!(
            std::fs::read_to_string(format!("/proc/{leader}/comm")).unwrap(),
            "systemd\n"
        );
        assert_eq!(sh(&bed, host, "cat /proc/1/comm"), "systemd");
        assert_eq!(sh(&bed, host, "systemctl is-system-running"), "running");
        assert_eq!(sh(&bed, host, "hostname"), host.name);
        // The real OpenSSH client, strict host key checking, the generated files.
        assert_eq!(
            ssh(
                &bed,
                host,
                "root",
                "id -un; hostname; systemctl is-system-running; ps -o comm= -p 1"
            ),
            format!("root\n{}\nrunning\nsystemd", host.name)
        );
        assert_eq!(
            ssh(&bed, host, "root", "systemctl is-active ssh dbus"),
            "active\nactive"
        );
        assert_eq!(
            ssh(&bed, host, EXTRA_USER, "id -un; echo $HOME"),
            format!("{EXTRA_USER}\n/home/{EXTRA_USER}")
        );
        let sshd = bed.sshd_pid(host);
        assert_ne!(sshd, leader);
        assert_eq!(
            ppid(sshd),
            leader,
            "ssh.service's sshd is a child of systemd"
        );
        let pids: Vec<u32> = bed.processes(host).iter().map(|p| p.pid).collect();
        assert!(pids.contains(&leader) && pids.contains(&sshd));
    }
    let in_h2: Vec<u32> = bed.processes(&h2).iter().map(|p| p.pid).collect();
    assert!(!in_h2.contains(&bed.leader_pid(&h1).unwrap()));

    // sudo: none needed for mgmttest; mgmtpass needs the password, given on stdin only.
    assert_eq!(ssh(&bed, &h1, EXTRA_USER, "sudo -n id -un"), "root");
    let refused = ssh_as(&bed, &h1, PASSWORD_USER, "sudo -n true", b"");
    assert!(
        !refused.status.success(),
        "sudo -n worked for {PASSWORD_USER}"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("password is required"));
    let with_password = ssh_as(
        &bed,
        &h1,
        PASSWORD_USER,
        "sudo -S -p '' id -un",
        format!("{password}\n").as_bytes(),
    );
    assert!(
        with_password.status.success(),
        "{}",
        String::from_utf8_lossy(&with_password.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&with_password.stdout).trim(),
        "root"
    );
    let wrong = ssh_as(&bed, &h1, PASSWORD_USER, "sudo -S -p '' true", b"wrong\n");
    assert!(!wrong.status.success());

    // apt, offline, from the test repository only; the service is installed stopped.
    let install = bed
        .exec(&h1, &format!("apt-get install -y {TESTD}"))
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stdout)
    );
    assert_eq!(
        sh(
            &bed,
            &h1,
            &format!("dpkg-query -W -f '${{Status}} ${{Version}}' {TESTD}")
        ),
        "install ok installed 1.0"
    );
    let unit = format!("{TESTD}.service");
    let state = |host: &Host| {
        let out = bed
            .exec(
                host,
                &format!("systemctl is-active {unit}; systemctl is-enabled {unit}"),
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(state(&h1), "inactive\ndisabled");
    assert!(
        !bed.exists(&h2, "/usr/bin/mgmt-testd"),
        "installed on h2 as well"
    );
    assert!(
        !root.join("usr/bin/mgmt-testd").exists(),
        "installed into the cached root"
    );
    let lists = sh(&bed, &h1, "apt-get indextargets --format '$(URI)'");
    assert!(
        lists.lines().all(|l| l.starts_with("file:/srv/mgmt-repo")),
        "apt has other sources: {lists}"
    );

    sh(&bed, &h1, &format!("systemctl start {unit}"));
    assert_eq!(testd_get(&h1).as_deref(), Some("mgmt-testd 1.0 reloads=0"));
    sh(&bed, &h1, &format!("systemctl reload {unit}"));
    wait_for("the reload", || {
        testd_get(&h1).as_deref() == Some("mgmt-testd 1.0 reloads=1")
    });
    let state_file =
        String::from_utf8(bed.read_file(&h1, "/run/mgmt-testd/state").unwrap()).unwrap();
    assert!(state_file.contains("reloads=1\n"), "{state_file}");

    // A rebuilt repository is seen at once (a bind mount); a running service is restarted
    // by the upgrade.
    AptRepo::build(&repo_dir, &[testd_deb("2.0")]).expect("rebuild repo");
    sh(
        &bed,
        &h1,
        &format!("apt-get update -qq && apt-get install -y {TESTD}"),
    );
    wait_for("the upgraded service", || {
        testd_get(&h1).as_deref() == Some("mgmt-testd 2.0 reloads=0")
    });

    // Each host has its own disk.
    ssh(&bed, &h1, "root", "echo one > /etc/mgmt-marker");
    assert_eq!(bed.read_file(&h1, "/etc/mgmt-marker").unwrap(), b"one\n");
    assert!(!bed.exists(&h2, "/etc/mgmt-marker"));
    assert!(
        !root.join("etc/mgmt-marker").exists(),
        "leaked into the cached root"
    );
    assert_eq!(
        sh(&bed, &h2, "test -e /etc/mgmt-marker && echo yes || echo no"),
        "no"
    );
    bed.write_file(&h2, "/root/kept", b"kept\n", 0o600).unwrap();

    for host in [&h1, &h2] {
        let (rss, pss) = memory_kib(&bed, host);
        println!(
            "MEASURED {} memory: {} processes, RSS {:.1} MiB, PSS {:.1} MiB",
            host.name,
            bed.processes(host).len(),
            rss as f64 / 1024.0,
            pss as f64 / 1024.0
        );
    }

    // A restart boots the same disk again.
    let old_leader = bed.leader_pid(&h2).unwrap();
    let started = Instant::now();
    bed.restart(&h2).expect("restart");
    println!(
        "MEASURED restart of a booted host (halt + boot) in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(!live(old_leader));
    assert_ne!(bed.leader_pid(&h2), Some(old_leader));
    assert_eq!(bed.read_file(&h2, "/root/kept").unwrap(), b"kept\n");
    assert_eq!(
        ssh(&bed, &h2, "root", "systemctl is-system-running; hostname"),
        "running\nh2"
    );

    // A new host key is offered at once, and refused by a client that knew the old one.
    bed.replace_host_key(&h2).expect("replace host key");
    let changed = ssh_as(&bed, &h2, "root", "true", b"");
    assert!(!changed.status.success());
    assert!(
        String::from_utf8_lossy(&changed.stderr).contains("IDENTIFICATION HAS CHANGED"),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );

    // Nothing is left after down: no systemd-nspawn, no container process, no overlay, no
    // namespace, no directory.
    let dir = bed.dir().to_path_buf();
    let namespaces: Vec<String> = bed.hosts().iter().map(|h| h.netns.clone()).collect();
    let mut pids: Vec<u32> = Vec::new();
    for host in bed.hosts() {
        let leader = bed.leader_pid(host).unwrap();
        pids.push(ppid(leader));
        pids.extend(bed.processes(host).iter().map(|p| p.pid));
    }
    let started = Instant::now();
    bed.down().expect("down");
    println!(
        "MEASURED down of 2 booted hosts in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    for pid in pids {
        assert!(!live(pid), "pid {pid} left");
    }
    assert!(!dir.exists(), "{} left", dir.display());
    assert_eq!(mounts_mentioning(&dir), Vec::<String>::new());
    for ns in namespaces {
        assert!(!Path::new("/run/netns").join(&ns).exists(), "{ns} left");
        assert!(
            !Path::new("/run/systemd/nspawn/propagate")
                .join(&ns)
                .exists(),
            "nspawn's directory of {ns} left"
        );
    }
}

#[test]
fn the_next_run_removes_a_crashed_run_s_containers() {
    testbed::build_booted_root().expect("booted root");
    // `testbed hold` keeps its test bed only while it lives; SIGKILL makes it a crash.
    let mut holder = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["hold", "1", "--booted"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    let dir = PathBuf::from(first.strip_prefix("dir ").expect("dir line"));
    let ns_line = lines.next().unwrap().unwrap();
    let netns = ns_line
        .split("in netns ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // Held open so its inode cannot be given to a new namespace of the same name.
    let held = std::fs::File::open(format!("/run/netns/{netns}")).expect("netns exists");
    let crashed_ns = held.metadata().unwrap().ino();
    let ns_inode = |p: &str| std::fs::metadata(p).ok().map(|m| m.ino());
    let inside: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| ns_inode(&format!("/proc/{pid}/ns/net")) == Some(crashed_ns))
        .collect();
    let nspawn: Vec<u32> = inside
        .iter()
        .map(|p| ppid(*p))
        .filter(|p| !inside.contains(p))
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|e| e.ends_with("systemd-nspawn"))
        })
        .collect();
    assert_eq!(nspawn.len(), 1, "one systemd-nspawn for the one host");
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        dir.exists() && live(nspawn[0]),
        "the container outlives its crashed owner"
    );

    let bed = Testbed::up(TestbedConfig::hosts(1)).expect("up");
    assert!(!dir.exists(), "crashed run's directory left");
    assert_ne!(
        ns_inode(&format!("/run/netns/{netns}")),
        Some(crashed_ns),
        "crashed run's netns left"
    );
    // Orphans are reaped by init, not by us: wait for that, under a deadline.
    wait_for("the crashed run's processes to go", || {
        !nspawn.iter().chain(&inside).any(|p| live(*p))
    });
    assert!(
        !Path::new("/run/systemd/nspawn/propagate")
            .join(&netns)
            .exists()
    );
    bed.down().expect("down");
}
