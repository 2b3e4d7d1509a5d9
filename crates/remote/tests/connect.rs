//! Connecting and authenticating against real sshd hosts: host key verification (known,
//! unknown, changed, hashed, learned), auth methods and their failures, ssh_config aliases and
//! ProxyJump, unreachable hosts, and the cconns limit on concurrent setups.

mod common;

use std::collections::HashSet;

use common::*;
use remote::{HostOutcome, HostState, RemoteEvent, Step};
use testbed::{EXTRA_USER, Testbed, TestbedConfig};

fn explicit_url(h: &testbed::Host) -> String {
    format!("ssh://root@{}:{}", h.addr, h.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_are_verified_against_known_hosts() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "keys", "echo ran\n");
    let url = explicit_url(h);

    // Known key, explicit URL without ssh_config, hashed known_hosts.
    let mut cfg = config(&bed, &bin);
    cfg.ssh_config = None;
    cfg.known_hosts = Some(bed.known_hosts_hashed());
    let (report, events) = run(cfg.clone(), vec![target("h1", &url, "g")]).await;
    assert_done(&report);
    assert_eq!(outputs(&events, "h1"), vec!["ran".to_string()]);

    // Unknown key: a clear per-host error, nothing learned.
    let empty = tmp.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    cfg.known_hosts = Some(empty.clone());
    let (report, _) = run(cfg.clone(), vec![target("h1", &url, "g")]).await;
    let (step, error) = failure(&report, "h1");
    assert_eq!(step, Step::Connect);
    assert_eq!(
        error,
        format!(
            "host key for h1 is not in {} (use --accept-new-host-keys to trust it on first use)",
            empty.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");

    // accept_new learns it (in `[addr]:port` form unless the port is 22) and then it is known.
    cfg.accept_new_host_keys = true;
    let (report, _) = run(cfg.clone(), vec![target("h1", &url, "g")]).await;
    assert_done(&report);
    let learned = std::fs::read_to_string(&empty).unwrap();
    let name = if h.port == 22 {
        h.addr.to_string()
    } else {
        format!("[{}]:{}", h.addr, h.port)
    };
    assert!(
        learned.starts_with(&format!("{name} ssh-ed25519 ")),
        "{learned}"
    );
    assert_eq!(learned.lines().count(), 1);
    cfg.accept_new_host_keys = false;
    let (report, _) = run(cfg.clone(), vec![target("h1", &url, "g")]).await;
    assert_done(&report);

    // Changed key: hard error naming the file and line, even with accept_new.
    let kh = tmp.path().join("kh2");
    let mut text = String::from("# a comment line\n\n");
    text.push_str(&std::fs::read_to_string(bed.known_hosts()).unwrap());
    std::fs::write(&kh, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap()
        + 1;
    bed.replace_host_key(h).unwrap();
    cfg.known_hosts = Some(kh.clone());
    cfg.accept_new_host_keys = true;
    let (report, _) = run(cfg, vec![target("h1", &url, "g")]).await;
    let (step, error) = failure(&report, "h1");
    assert_eq!(step, Step::Connect);
    assert!(
        error.starts_with(&format!(
            "host key for h1 has changed: it does not match {}:{line}; if the change is expected, delete that line",
            kh.display()
        )),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_fails_alone() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "unreach", "echo ran\n");
    let cfg = config(&bed, &bin);
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let targets = vec![target("gone", "ssh://root@127.0.0.1:1", "g"), alias(h)];
    let (report, events) = run(cfg, targets).await;
    assert!(matches!(report.hosts[1].outcome, HostOutcome::Done));
    assert_eq!(outputs(&events, "h1"), vec!["ran".to_string()]);
    let (step, error) = failure(&report, "gone");
    assert_eq!(step, Step::Connect);
    assert!(
        error.starts_with("cannot connect to gone (127.0.0.1:1): "),
        "{error}"
    );
    assert!(events.iter().any(|e| matches!(e,
        RemoteEvent::Failed { host, step: Step::Connect, .. } if host == "gone")));
    assert!(events.iter().any(|e| matches!(e,
        RemoteEvent::State { host, state: HostState::Failed } if host == "gone")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_a_clear_auth_failure() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "wrongkey", "echo ran\n");
    let key = tmp.path().join("other_key");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let missing = tmp.path().join("missing_key");
    let mut cfg = config(&bed, &bin);
    cfg.ssh_config = None;
    cfg.identities = vec![missing, key.clone()];
    let (report, _) = run(cfg, vec![target("h1", &explicit_url(h), "g")]).await;
    let (step, error) = failure(&report, "h1");
    assert_eq!(step, Step::Auth);
    assert_eq!(
        error,
        format!(
            "authentication as root on h1 failed; tried: key {}",
            key.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auth_from_the_url_warns_without_leaking_it() {
    let bed = Testbed::up(TestbedConfig {
        hosts: 1,
        password_auth: true,
        ..Default::default()
    })
    .unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "password", "echo \"user=$(id -un)\"\n");
    let password = bed.password().unwrap().to_string();
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mut cfg = config(&bed, &bin);
    cfg.ssh_config = None;
    cfg.identities = Vec::new();
    let url = format!("ssh://root:{encoded}@{}:{}", h.addr, h.port);
    let (report, events) = run(cfg.clone(), vec![target("h1", &url, "g")]).await;
    assert_done(&report);
    assert_eq!(field(&events, "h1", "user").as_deref(), Some("root"));
    let warning = events
        .iter()
        .find_map(|e| match e {
            RemoteEvent::Warning { message, .. } => Some(message.clone()),
            _ => None,
        })
        .expect("a warning about the password");
    assert!(warning.contains("contains a password"), "{warning}");
    let everything = format!("{events:?}{report:?}");
    assert!(!everything.contains(&password), "password leaked");

    // A wrong password fails with the methods tried.
    let url = format!("ssh://root:wrong@{}:{}", h.addr, h.port);
    let (report, _) = run(cfg, vec![target("h1", &url, "g")]).await;
    assert_eq!(
        failure(&report, "h1"),
        (
            Step::Auth,
            "authentication as root on h1 failed; tried: password from the url".to_string()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_user_gets_its_own_cache_and_run_dir() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "{PARSE_ARGS}\necho \"user=$(id -un)\"\necho \"self=$0\"\necho \"owner=$(stat -c %U \"$(dirname \"$yaml\")\")\"\n"
    );
    let bin = script(tmp.path(), "nonroot", &body);
    let cfg = config(&bed, &bin);
    // The alias still comes from ssh_config; the user in the address wins over its `User root`.
    let t = target("h1", &format!("{EXTRA_USER}@h1"), "g");
    let (report, events) = run(cfg.clone(), vec![t]).await;
    assert_done(&report);
    assert_eq!(field(&events, "h1", "user").as_deref(), Some(EXTRA_USER));
    assert_eq!(field(&events, "h1", "owner").as_deref(), Some(EXTRA_USER));
    let me = field(&events, "h1", "self").unwrap();
    assert!(
        me.ends_with(&format!(
            "/{EXTRA_USER}/.cache/mgmt/bin/{}/mgmt",
            cfg.binary_hash
        )),
        "{me}"
    );
    assert_eq!(remote_sha256(&bed, h, &me), cfg.binary_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump_reaches_a_leaf_through_its_intermediate() {
    let bed = Testbed::up(TestbedConfig {
        hosts: 1,
        leaves: 1,
        intermediates: vec![0],
        ..Default::default()
    })
    .unwrap();
    let leaf = bed.hosts().iter().find(|h| !h.reachable_from_root).unwrap();
    assert_eq!(leaf.via.as_deref(), Some("h1"));
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "jump", "echo \"on=$(hostname)\"\n");
    let mut cfg = config(&bed, &bin);
    // Everything comes from ssh_config: IdentityFile, UserKnownHostsFile, ProxyJump.
    cfg.identities = Vec::new();
    cfg.known_hosts = None;
    let (report, events) = run(cfg.clone(), vec![alias(leaf)]).await;
    assert_done(&report);
    assert_eq!(field(&events, &leaf.name, "on"), Some(leaf.name.clone()));
    let cached = format!("/root/.cache/mgmt/bin/{}/mgmt", cfg.binary_hash);
    assert_eq!(remote_sha256(&bed, leaf, &cached), cfg.binary_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_cconns_hosts_are_in_setup_at_once() {
    let bed = Testbed::up(TestbedConfig::hosts(4)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "cconns", "echo ran\n");
    let mut cfg = config(&bed, &bin);
    cfg.cconns = 2;
    let targets = bed.hosts().iter().map(alias).collect();
    let (report, events) = run(cfg, targets).await;
    assert_done(&report);
    let mut setup = HashSet::new();
    let mut max = 0;
    for e in &events {
        if let RemoteEvent::State { host, state } = e {
            match state {
                HostState::Connecting | HostState::Copying => {
                    setup.insert(host.clone());
                }
                _ => {
                    setup.remove(host);
                }
            }
            max = max.max(setup.len());
        }
    }
    assert!((1..=2).contains(&max), "{max} hosts in setup at once");
    for h in bed.hosts() {
        assert_eq!(outputs(&events, &h.name), vec!["ran".to_string()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_an_ssh_agent_are_tried_first() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "agent", "echo ran\n");
    let sock = tmp.path().join("agent.sock");
    // A real ssh-agent of our own, holding the test bed's client key.
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(|| sock.exists()), "ssh-agent did not start");
    let added = std::process::Command::new("ssh-add")
        .arg(bed.client_key())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(added.status.success());
    let mut cfg = config(&bed, &bin);
    cfg.ssh_config = None;
    cfg.identities = Vec::new();
    cfg.agent_socket = Some(sock.clone());
    let (report, events) = run(cfg.clone(), vec![target("h1", &explicit_url(h), "g")]).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_done(&report);
    assert_eq!(outputs(&events, "h1"), vec!["ran".to_string()]);

    // With the agent gone, the failure says what was tried.
    let (report, _) = run(cfg, vec![target("h1", &explicit_url(h), "g")]).await;
    let (step, error) = failure(&report, "h1");
    assert_eq!(step, Step::Auth);
    assert!(
        error.starts_with("authentication as root on h1 failed; tried: ssh-agent (unavailable: "),
        "{error}"
    );
}
