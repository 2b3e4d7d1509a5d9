//! Test beds side by side and in layers: the leaf network is reachable only through an
//! intermediate, two test beds never collide, a crashed run's leftovers are removed by the next
//! one, and 50 hosts come up. Never waits with a sleep.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{Testbed, TestbedConfig};

fn ssh_ok(bed: &Testbed, name: &str, cmd: &str) -> String {
    let out = Command::new("ssh")
        .arg("-F")
        .arg(bed.ssh_config())
        .arg(name)
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn leaves_are_reachable_only_through_an_intermediate() {
    let cfg = TestbedConfig {
        hosts: 2,
        leaves: 2,
        intermediates: vec![0],
        ..Default::default()
    };
    let bed = Testbed::up(cfg).expect("up");
    let [h1, h2, h3, h4] = bed.hosts() else {
        panic!("four hosts expected")
    };
    assert!(h1.leaf_addr.is_some() && h2.leaf_addr.is_none());
    assert!(!h3.reachable_from_root && !h4.reachable_from_root);
    assert_eq!(h3.via.as_deref(), Some("h1"));

    // From the root namespace there is no route: refused at once, never sent elsewhere.
    let err = TcpStream::connect_timeout(&SocketAddr::new(h3.addr, 22), Duration::from_secs(5))
        .expect_err("leaf reachable from the root namespace");
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH)
        ),
        "{err}"
    );

    // No root-side link of the leaf network has any address, IPv6 link-local included.
    let slot = &h1.netns["mgmt-tb".len()..][..3];
    for link in [
        format!("mt{slot}l"),
        format!("mt{slot}w3"),
        format!("mt{slot}w4"),
    ] {
        let out = Command::new("ip")
            .args(["-o", "addr", "show", "dev", &link])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{link}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "{link}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // From the intermediate's namespace, with the real client and the generated files.
    let out = Command::new("ip")
        .args(["netns", "exec", &h1.netns, "ssh", "-i"])
        .arg(bed.client_key())
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            bed.known_hosts().display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .arg(format!("root@{}", h3.addr))
        .arg("hostname")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "h3");

    // A host that is not an intermediate has no way in either.
    let out = Command::new("ip")
        .args(["netns", "exec", &h2.netns, "ssh", "-o", "BatchMode=yes"])
        .arg(format!("root@{}", h4.addr))
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));

    // The ssh_config jumps through the intermediate; the intermediate has its own ~/.ssh.
    assert_eq!(ssh_ok(&bed, "h4", "hostname"), "h4");
    let inner = bed.exec(h1, "ssh h3 hostname").unwrap();
    assert!(
        inner.status.success(),
        "{}",
        String::from_utf8_lossy(&inner.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&inner.stdout).trim(), "h3");
    bed.down().expect("down");
}

#[test]
fn two_test_beds_at_once_do_not_collide() {
    let up = || std::thread::spawn(|| Testbed::up(TestbedConfig::hosts(2)).expect("up"));
    let (a, b) = (up(), up());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    for (x, y) in a.hosts().iter().zip(b.hosts()) {
        assert_eq!(x.name, y.name);
        assert_ne!(x.addr, y.addr);
        assert_ne!(x.netns, y.netns);
    }
    assert_ne!(a.dir(), b.dir());
    let marker = format!("/tmp/from-a-{}", std::process::id());
    ssh_ok(&a, "h1", &format!("touch {marker}"));
    assert!(!b.exists(&b.hosts()[0], &marker));
    a.down().expect("down a");
    // b is untouched by a's teardown.
    assert_eq!(ssh_ok(&b, "h2", "hostname"), "h2");
    b.down().expect("down b");
}

/// Whether a process runs (a zombie waiting to be reaped does not count).
fn live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn the_next_run_removes_what_a_crashed_run_left() {
    // `testbed hold` keeps its test bed only while it lives; SIGKILL makes it a crash.
    let mut holder = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["hold", "1"])
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
    // A namespace is known by its inode: a later test bed may reuse the same name.
    let ns_inode = |p: &str| std::fs::metadata(p).ok().map(|m| m.ino());
    // Held open so its inode number cannot be given to a new namespace of the same name.
    let held = std::fs::File::open(format!("/run/netns/{netns}")).expect("netns exists");
    let crashed_ns = held.metadata().unwrap().ino();
    let sshd_pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| ns_inode(&format!("/proc/{pid}/ns/net")) == Some(crashed_ns))
        .collect();
    assert!(!sshd_pids.is_empty());
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(dir.exists());

    let bed = Testbed::up(TestbedConfig::hosts(1)).expect("up");
    assert!(!dir.exists(), "crashed run's directory left");
    assert_ne!(
        ns_inode(&format!("/run/netns/{netns}")),
        Some(crashed_ns),
        "crashed run's netns left"
    );
    // Killed orphans are reaped by init, not by us: wait for that, under a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sshd_pids.iter().any(|p| live(*p)) {
        assert!(Instant::now() < deadline, "crashed run's processes left");
        std::thread::sleep(Duration::from_millis(10));
    }
    bed.down().expect("down");
}

#[test]
fn fifty_hosts_come_up() {
    let bed = Testbed::up(TestbedConfig::hosts(50)).expect("up");
    assert_eq!(bed.hosts().len(), 50);
    for name in ["h1", "h25", "h50"] {
        assert_eq!(ssh_ok(&bed, name, "hostname"), name);
    }
    bed.down().expect("down");
}

#[test]
fn without_root_it_refuses_before_touching_anything() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_testbed"))
        .args(["up", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root") && err.contains("uid 65534"),
        "{err}"
    );
}
