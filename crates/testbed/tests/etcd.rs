//! The etcd launcher against the real etcdctl: it serves on loopback, and stopping it leaves
//! neither the process nor its data behind.

use std::process::Command;

use testbed::Etcd;

fn etcdctl(etcd: &Etcd, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.client_url()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn etcd_serves_on_loopback_and_stops_cleanly() {
    let etcd = Etcd::start().expect("start etcd");
    assert!(etcd.client_addr().ip().is_loopback());
    assert_eq!(etcdctl(&etcd, &["put", "/k", "v"]), "OK");
    assert_eq!(etcdctl(&etcd, &["get", "/k", "--print-value-only"]), "v");
    let other = Etcd::start().expect("a second etcd");
    assert_ne!(other.client_addr(), etcd.client_addr());
    assert_eq!(etcdctl(&other, &["get", "/k", "--print-value-only"]), "");

    let (pid, dir) = (etcd.pid(), etcd.data_dir().to_path_buf());
    assert!(dir.exists());
    etcd.stop();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
}
