//! The test bed against the real OpenSSH client: hosts are reachable with the generated files,
//! each has its own hostname, /tmp and homes, sftp is there or really absent, the extra user and
//! password login work, a replaced host key is noticed, and nothing is left after `down`.
//! Must never depend on the order tests run in or on another test's test bed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testbed::{EXTRA_USER, Host, Testbed, TestbedConfig};

fn ssh_with(bed: &Testbed, host: &Host, opts: &[&str], cmd: &str) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(bed.ssh_config())
        .args(opts)
        .arg(&host.name)
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

fn ssh(bed: &Testbed, host: &Host, cmd: &str) -> String {
    let out = ssh_with(bed, host, &[], cmd);
    assert!(
        out.status.success(),
        "ssh {} {cmd:?}: {}",
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn unique(tag: &str) -> String {
    format!("testbed-{tag}-{}", std::process::id())
}

#[test]
fn ssh_reaches_every_host_with_strict_host_key_checking() {
    let bed = Testbed::up(TestbedConfig::hosts(3)).expect("up");
    assert_eq!(bed.hosts().len(), 3);
    for host in bed.hosts() {
        assert!(host.reachable_from_root);
        assert_eq!(ssh(&bed, host, "hostname"), host.name);
        assert_eq!(ssh(&bed, host, "id -un"), "root");
    }
    let config = std::fs::read_to_string(bed.ssh_config()).unwrap();
    assert_eq!(config.matches("StrictHostKeyChecking yes").count(), 3);
    // The hashed known_hosts is accepted as well.
    let hashed = bed.known_hosts_hashed();
    assert!(std::fs::read_to_string(&hashed).unwrap().starts_with("|1|"));
    let known = format!("UserKnownHostsFile={}", hashed.display());
    let out = ssh_with(&bed, &bed.hosts()[1], &["-o", &known], "true");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bed.down().expect("down");
}

#[test]
fn every_host_has_its_own_tmp_and_homes() {
    let bed = Testbed::up(TestbedConfig::hosts(2)).expect("up");
    let (h1, h2) = (&bed.hosts()[0], &bed.hosts()[1]);
    let name = unique("tmp");
    ssh(&bed, h1, &format!("echo one > /tmp/{name}"));
    assert_eq!(bed.read_file(h1, format!("/tmp/{name}")).unwrap(), b"one\n");
    assert!(!bed.exists(h2, format!("/tmp/{name}")));
    assert!(
        !Path::new("/tmp").join(&name).exists(),
        "leaked into the root's /tmp"
    );
    let seen = bed
        .exec(h2, &format!("test -e /tmp/{name} && echo yes || echo no"))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&seen.stdout).trim(), "no");

    // The remote mode caches its binary under ~/.cache/mgmt: never shared.
    let cache = format!(".cache/mgmt/{name}");
    ssh(
        &bed,
        h1,
        &format!("mkdir -p ~/.cache/mgmt && echo h1 > ~/{cache}"),
    );
    assert_eq!(ssh(&bed, h1, "echo $HOME"), "/root");
    assert!(bed.exists(h1, format!("/root/{cache}")));
    assert!(!bed.exists(h2, format!("/root/{cache}")));
    assert!(
        !Path::new("/root").join(&cache).exists(),
        "leaked into the root's home"
    );
    bed.down().expect("down");
}

#[test]
fn extra_user_logs_in_with_the_client_key_into_its_own_home() {
    let bed = Testbed::up(TestbedConfig::hosts(2)).expect("up");
    let (h1, h2) = (&bed.hosts()[0], &bed.hosts()[1]);
    let as_user = ["-l", EXTRA_USER];
    let out = ssh_with(
        &bed,
        h1,
        &as_user,
        "id -un; echo $HOME; touch ~/mine; ls -ld ~",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], EXTRA_USER);
    assert_eq!(lines[1], format!("/home/{EXTRA_USER}"));
    assert!(lines[2].starts_with("drwx------"), "{}", lines[2]);
    assert!(bed.exists(h1, format!("/home/{EXTRA_USER}/mine")));
    assert!(!bed.exists(h2, format!("/home/{EXTRA_USER}/mine")));
    // The user exists only inside the hosts.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        !passwd
            .lines()
            .any(|l| l.starts_with(&format!("{EXTRA_USER}:")))
    );
    bed.down().expect("down");
}

#[test]
fn a_host_without_sftp_refuses_the_subsystem() {
    let cfg = TestbedConfig {
        hosts: 2,
        no_sftp: vec![1],
        ..Default::default()
    };
    let bed = Testbed::up(cfg).expect("up");
    let (h1, h2) = (&bed.hosts()[0], &bed.hosts()[1]);
    assert!(h1.sftp && !h2.sftp);
    let sftp = |host: &Host| {
        let mut child = Command::new("sftp")
            .arg("-F")
            .arg(bed.ssh_config())
            .args(["-b", "-"])
            .arg(&host.name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sftp");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"ls /etc/hostname\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = sftp(h1);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = sftp(h2);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("subsystem request failed"), "{err}");
    // Plain exec still works there: the remote mode's `cat > file` fallback has a way in.
    assert_eq!(ssh(&bed, h2, "echo fallback"), "fallback");
    bed.down().expect("down");
}

/// An SSH_ASKPASS program that prints the test bed's password file (the password never
/// appears in argv or output).
fn askpass(bed: &Testbed) -> PathBuf {
    let path = bed.dir().join("askpass.sh");
    let script = format!(
        "#!/bin/sh\ncat '{}'\n",
        bed.dir().join("password").display()
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path
}

fn password_login(bed: &Testbed, host: &Host, user: &str) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(bed.ssh_config())
        .args(["-o", "BatchMode=no", "-o", "PubkeyAuthentication=no"])
        .args(["-o", "PreferredAuthentications=password", "-l", user])
        .arg(&host.name)
        .arg("id -un")
        .env("SSH_ASKPASS", askpass(bed))
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", "testbed")
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

#[test]
fn password_login_works_only_when_enabled() {
    let cfg = TestbedConfig {
        hosts: 1,
        password_auth: true,
        ..Default::default()
    };
    let bed = Testbed::up(cfg).expect("up");
    let h1 = &bed.hosts()[0];
    let password = bed.password().expect("a password").to_string();
    assert!(password.len() >= 16);
    for user in [EXTRA_USER, "root"] {
        let out = password_login(&bed, h1, user);
        assert!(
            out.status.success(),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);
    }
    let log = std::fs::read_to_string(bed.sshd_log(h1)).unwrap();
    assert!(log.contains("Accepted password for"));
    assert!(!log.contains(&password), "password in the sshd log");
    assert!(!format!("{bed:?}").contains(&password), "password in Debug");

    let plain = Testbed::up(TestbedConfig::hosts(1)).expect("up");
    assert!(plain.password().is_none());
    let out = ssh_with(
        &plain,
        &plain.hosts()[0],
        &["-o", "PubkeyAuthentication=no", "-l", EXTRA_USER],
        "true",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    plain.down().expect("down");
    bed.down().expect("down");
}

#[test]
fn a_replaced_host_key_is_refused_and_the_host_keeps_its_state() {
    let bed = Testbed::up(TestbedConfig::hosts(2)).expect("up");
    let (h1, h2) = (&bed.hosts()[0], &bed.hosts()[1]);
    let pid = bed.sshd_pid(h1);
    ssh(&bed, h1, "echo kept > /tmp/state");
    let old = std::fs::read_to_string(bed.known_hosts()).unwrap();
    let new_key = bed.replace_host_key(h1).expect("replace");
    assert!(new_key.starts_with("ssh-ed25519 "));
    assert!(!old.contains(&new_key));
    assert_eq!(std::fs::read_to_string(bed.known_hosts()).unwrap(), old);

    let out = ssh_with(&bed, h1, &[], "true");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
    // Same sshd (SIGHUP re-exec), same private /tmp; the other host is untouched.
    assert_eq!(bed.sshd_pid(h1), pid);
    assert_eq!(bed.read_file(h1, "/tmp/state").unwrap(), b"kept\n");
    assert_eq!(ssh(&bed, h2, "hostname"), "h2");
    // Trusting the new key lets the client in again.
    let fixed = bed.dir().join("known_hosts.fixed");
    std::fs::write(&fixed, format!("{} {new_key}\n", h1.addr)).unwrap();
    let opt = format!("UserKnownHostsFile={}", fixed.display());
    let out = ssh_with(&bed, h1, &["-o", &opt], "cat /tmp/state");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bed.down().expect("down");
}

#[test]
fn down_leaves_nothing_behind() {
    let bed = Testbed::up(TestbedConfig::hosts(2)).expect("up");
    let dir = bed.dir().to_path_buf();
    let (h1, h2) = (&bed.hosts()[0], &bed.hosts()[1]);
    // A process that outlives its session, as a remote child could.
    let out = bed.exec(h1, "sleep 600 >/dev/null 2>&1 & echo $!").unwrap();
    let stray: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let in_h1: Vec<u32> = bed.processes(h1).iter().map(|p| p.pid).collect();
    assert!(in_h1.contains(&stray) && in_h1.contains(&bed.sshd_pid(h1)));
    assert!(!bed.processes(h2).iter().any(|p| p.pid == stray));

    let namespaces: Vec<String> = bed.hosts().iter().map(|h| h.netns.clone()).collect();
    let mut pids: Vec<u32> = Vec::new();
    for host in bed.hosts() {
        pids.extend(bed.processes(host).iter().map(|p| p.pid));
    }
    // Namespaces are mgmt-tbSSS-hN, links mtSSS*.
    let link_prefix = format!("mt{}", &namespaces[0]["mgmt-tb".len()..][..3]);
    bed.down().expect("down");

    assert!(!dir.exists());
    for ns in namespaces {
        assert!(!Path::new("/run/netns").join(&ns).exists(), "{ns} left");
    }
    let links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !links.iter().any(|l| l.starts_with(&link_prefix)),
        "links left: {links:?}"
    );
    for pid in pids {
        assert!(!live(pid), "pid {pid} left");
    }
}

/// Whether a process runs (a zombie waiting for init to reap it does not count).
fn live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn sshd_options_override_the_test_bed_defaults() {
    let cfg = TestbedConfig {
        hosts: 1,
        sshd_options: vec!["PermitRootLogin no".to_string()],
        ..Default::default()
    };
    let bed = Testbed::up(cfg).expect("up");
    let h1 = &bed.hosts()[0];
    let root = ssh_with(&bed, h1, &[], "true");
    assert!(!root.status.success());
    assert!(String::from_utf8_lossy(&root.stderr).contains("Permission denied"));
    let user = ssh_with(&bed, h1, &["-l", EXTRA_USER], "id -un");
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), EXTRA_USER);
    bed.down().expect("down");
}
