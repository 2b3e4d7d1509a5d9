//! The test bed against the real OpenSSH client: hosts are reachable with the generated files,
//! each has its own /tmp and home, and nothing is left after `down`. Must never depend on the
//! order tests run in or on another test's test bed.

use std::path::Path;
use std::process::{Command, Output};

use testbed::{Host, Testbed, TestbedConfig};

fn ssh(bed: &Testbed, host: &Host, args: &[&str]) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(bed.ssh_config())
        .arg(&host.name)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ssh")
}

#[test]
fn ssh_reaches_every_host_with_strict_host_key_checking() {
    let bed = Testbed::up(TestbedConfig::hosts(3)).expect("up");
    assert_eq!(bed.hosts().len(), 3);
    for host in bed.hosts() {
        let out = ssh(&bed, host, &["hostname"]);
        assert!(
            out.status.success(),
            "{}: {}",
            host.name,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), host.name);
    }
    let config = std::fs::read_to_string(bed.ssh_config()).unwrap();
    assert!(config.contains("StrictHostKeyChecking yes"));
    bed.down().expect("down");
}

#[test]
fn down_leaves_nothing_behind() {
    let bed = Testbed::up(TestbedConfig::hosts(2)).expect("up");
    let dir = bed.dir().to_path_buf();
    let namespaces: Vec<String> = bed.hosts().iter().map(|h| h.netns.clone()).collect();
    let mut pids: Vec<u32> = Vec::new();
    for host in bed.hosts() {
        pids.extend(bed.processes(host).iter().map(|p| p.pid));
    }
    assert!(!pids.is_empty());
    bed.down().expect("down");
    assert!(!dir.exists());
    for ns in namespaces {
        assert!(!Path::new("/run/netns").join(&ns).exists(), "{ns} left");
    }
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} left"
        );
    }
}
