//! Hosts exchanging exported resources through the store: several `mgmt run` processes with
//! different `--hostname`s on this machine, running mgmt's etcd1 examples (paths moved into a
//! temp dir, nothing else changed), first through the embedded server of the first process,
//! then through a real etcd server. Synchronisation is by each process's JSON events.

mod support;

use std::fs;
use std::path::Path;

use support::{Running, examples, write};

const HOSTS: [&str; 3] = ["a", "b", "c"];

/// The etcd1 example of `host`, with `/tmp/mgmt/` moved to `dir`.
fn graph(dir: &Path, host: &str) -> std::path::PathBuf {
    let text = fs::read_to_string(examples().join(format!("etcd1{host}.yaml"))).unwrap();
    let path = dir.join(format!("etcd1{host}.yaml"));
    write(
        &path,
        &text.replace("/tmp/mgmt/", &format!("{}/", dir.display())),
    );
    path
}

fn exported_by(host: &str) -> String {
    format!("file[file2{host}]")
}

/// Start the three hosts: `a` first, then the others pointed at `seeds` (or at a's embedded
/// server when `seeds` is None).
fn start(dir: &Path, seeds: Option<&str>) -> Vec<Running> {
    let mut running = Vec::new();
    let mut url = seeds.map(str::to_string);
    for host in HOSTS {
        let g = graph(dir, host);
        let mut args = vec!["--hostname", host, "--yaml", g.to_str().unwrap()];
        let seeds_arg;
        match &url {
            Some(u) => {
                seeds_arg = u.clone();
                args.extend(["--no-server", "--seeds", &seeds_arg]);
            }
            None => args.extend(["--client-urls", "http://127.0.0.1:0"]),
        }
        let mut r = Running::start(&args);
        if url.is_none() {
            let ev = r.wait_event("store_listening", |v| v["event"] == "store_listening");
            url = Some(ev["url"].as_str().unwrap().to_string());
        }
        running.push(r);
    }
    running
}

/// Every host collects every export, its own included, into its own directory.
fn check_exchange(dir: &Path, running: &mut [Running]) {
    for (i, host) in HOSTS.iter().enumerate() {
        for from in HOSTS {
            running[i].wait_applied(&exported_by(from), "changed");
        }
        for from in HOSTS {
            let got = fs::read_to_string(dir.join(host).join(format!("f2{from}"))).unwrap();
            assert_eq!(
                got,
                format!("i am f2{from}, exported from host {from}\n"),
                "{host} collects {from}"
            );
        }
    }
}

/// Change a's export: b and c update their collected copy without a restart.
fn check_live_update(dir: &Path, running: &mut [Running]) {
    for r in running.iter_mut() {
        r.mark();
    }
    let g = dir.join("etcd1a.yaml");
    let text = fs::read_to_string(&g).unwrap();
    write(
        &g,
        &text.replace(
            "i am f2a, exported from host a",
            "i am f2a, edited on host a",
        ),
    );
    for (i, host) in HOSTS.iter().enumerate() {
        running[i].wait_applied(&exported_by("a"), "changed");
        let got = fs::read_to_string(dir.join(host).join("f2a")).unwrap();
        assert_eq!(got, "i am f2a, edited on host a\n", "{host}");
    }
    for r in running.iter_mut().rev() {
        let (st, err) = r.interrupt();
        assert!(st.success(), "{err}");
    }
}

#[test]
fn three_hosts_exchange_through_the_embedded_store() {
    let t = tempfile::tempdir().unwrap();
    let mut running = start(t.path(), None);
    check_exchange(t.path(), &mut running);
    check_live_update(t.path(), &mut running);
}

#[test]
fn three_hosts_exchange_through_a_real_etcd() {
    let etcd = testbed::Etcd::start().expect("start etcd");
    let t = tempfile::tempdir().unwrap();
    let url = etcd.client_url();
    let mut running = start(t.path(), Some(&url));
    check_exchange(t.path(), &mut running);
    // Liveness (leased) and convergence flags, per host, readable with etcdctl.
    let hosts = etcdctl(&url, &["get", "--prefix", "--keys-only", "/_mgmt/hosts/"]);
    for h in HOSTS {
        assert!(hosts.contains(&format!("/_mgmt/hosts/{h}")), "{hosts}");
    }
    let conv = etcdctl(
        &url,
        &["get", "--prefix", "--keys-only", "/_mgmt/converged/"],
    );
    for h in HOSTS {
        assert!(conv.contains(&format!("/_mgmt/converged/{h}")), "{conv}");
    }
    check_live_update(t.path(), &mut running);
    // Interrupted hosts revoke their liveness lease.
    let hosts = etcdctl(&url, &["get", "--prefix", "--keys-only", "/_mgmt/hosts/"]);
    assert!(hosts.trim().is_empty(), "{hosts}");
    // What the hosts left in etcd is readable with etcdctl: mgmt's key layout.
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &url,
            "get",
            "--prefix",
            "--keys-only",
            "/_mgmt/exported/",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&out.stdout);
    // The hosts are gone (interrupted), but exports are not leased: they stay for collectors.
    assert!(
        keys.contains("/_mgmt/exported/a/resources/file/file2a"),
        "{keys}"
    );
}

#[test]
fn noop_exports_nothing() {
    let etcd = testbed::Etcd::start().expect("start etcd");
    let t = tempfile::tempdir().unwrap();
    let url = etcd.client_url();
    let g = graph(t.path(), "a");
    let (st, _out, err) = support::run_to_end(&[
        "--hostname",
        "a",
        "--noop",
        "--no-server",
        "--seeds",
        &url,
        "--converged-timeout",
        "0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert!(st.success(), "{err}");
    let keys = etcdctl(
        &url,
        &["get", "--prefix", "--keys-only", "/_mgmt/exported/"],
    );
    assert!(keys.trim().is_empty(), "--noop must export nothing: {keys}");
    assert!(!t.path().join("a").exists(), "--noop must change nothing");
}

fn etcdctl(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(url)
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
