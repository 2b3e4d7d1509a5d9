//! Helpers for the remote tests: small shell-script "binaries" (unique per test, so the hash
//! cache of one test never serves another), fleet configs pointing at a test bed, and a runner
//! that collects events. Must never synchronise with sleeps: everything waits on events.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use remote::{
    ChildArg, Credentials, FleetConfig, FleetReport, HostOutcome, LocalEnv, RemoteEvent, RemoteUrl,
    Target, TargetExtras, run_fleet_with, sha256_file,
};
use testbed::{Host, Testbed};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous bound so a broken test fails instead of hanging CI.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Writes an executable script that the fleet uploads as the remote "mgmt".
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let unique = format!(
        "{}-{}-{:?}",
        name,
        std::process::id(),
        std::time::SystemTime::now()
    );
    let text = if body.starts_with("#!") {
        let (shebang, rest) = body.split_once('\n').unwrap();
        format!("{shebang}\n# {unique}\n{rest}")
    } else {
        format!("#!/bin/sh\n# {unique}\n{body}")
    };
    std::fs::write(&path, text).unwrap();
    path
}

/// Parses the child's arguments into shell variables: $yaml, $cred, $seeds, $host, $depth.
pub const PARSE_ARGS: &str = r#"
args="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --yaml) yaml=$2; shift;;
    --store-credentials) cred=$2; shift;;
    --seeds) seeds=$2; shift;;
    --hostname) host=$2; shift;;
    --depth) depth=$2; shift;;
  esac
  shift
done
"#;

/// The name of the credentials file `run` puts in every run dir.
pub const CRED: &str = "store.cred";

/// The child's command line as mgmt's initiator builds it (the scripts read it with
/// `PARSE_ARGS`); this crate does not know the flags, its caller does.
pub fn child_args() -> Vec<ChildArg> {
    let lit = ChildArg::lit;
    vec![
        lit("run"),
        lit("--hostname"),
        ChildArg::Hostname,
        lit("--no-server"),
        lit("--seeds"),
        ChildArg::StoreUrl,
        lit("--store-credentials"),
        ChildArg::RunDirFile(CRED.to_string()),
        lit("--yaml"),
        ChildArg::Graph,
        lit("--depth"),
        lit("1"),
    ]
}

/// A config for `bed`: only the test bed's client key, its known_hosts and ssh_config.
pub fn config(bed: &Testbed, binary: &Path) -> FleetConfig {
    let hash = sha256_file(binary).unwrap();
    let local = LocalEnv {
        user: "root".to_string(),
        home: None,
        agent_socket: None,
    };
    let mut cfg = FleetConfig::new(
        binary.to_path_buf(),
        hash,
        "127.0.0.1:9".parse::<SocketAddr>().unwrap(),
        local,
    );
    cfg.child_args = child_args();
    cfg.identities = vec![bed.client_key()];
    cfg.known_hosts = Some(bed.known_hosts());
    cfg.ssh_config = Some(bed.ssh_config());
    cfg.agent_socket = None;
    cfg.default_identities = false;
    cfg.grace = Duration::from_secs(2);
    cfg.connect_timeout = Duration::from_secs(10);
    cfg
}

pub fn target(host: &str, url: &str, graph: &str) -> Target {
    Target {
        file: PathBuf::from(format!("/initiator/graphs/{host}.yaml")),
        graph: graph.as_bytes().to_vec(),
        url: RemoteUrl::parse(url).unwrap(),
        hostname: host.to_string(),
        updates: None,
    }
}

/// The target with its store credentials (`mgmt-<host>`, `s3cret-token`) as `CRED`.
pub fn with_cred(t: Target) -> (Target, TargetExtras) {
    let cred = Credentials::new(format!("mgmt-{}", t.hostname), "s3cret-token").unwrap();
    let extras = TargetExtras {
        files: vec![cred.file(CRED)],
        ..TargetExtras::default()
    };
    (t, extras)
}

/// Alias target for a test bed host: `h1` resolved through the generated ssh_config.
pub fn alias(h: &Host) -> Target {
    target(&h.name, &h.name, "graph: g\n")
}

/// Runs the fleet to the end (each target with its credentials), collecting every event.
pub async fn run(cfg: FleetConfig, targets: Vec<Target>) -> (FleetReport, Vec<RemoteEvent>) {
    let (tx, mut rx) = mpsc::channel(64);
    let targets = targets.into_iter().map(with_cred).collect();
    let fleet = tokio::spawn(run_fleet_with(cfg, targets, CancellationToken::new(), tx));
    let mut events = Vec::new();
    let collect = async {
        while let Some(ev) = rx.recv().await {
            events.push(ev);
        }
    };
    tokio::time::timeout(DEADLINE, collect)
        .await
        .expect("fleet did not finish");
    (fleet.await.unwrap(), events)
}

pub fn outputs(events: &[RemoteEvent], host: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RemoteEvent::Output { host: h, line } if h == host => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// The value of `key=...` in the host's output.
pub fn field(events: &[RemoteEvent], host: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    outputs(events, host)
        .iter()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

pub fn assert_done(report: &FleetReport) {
    for h in &report.hosts {
        assert!(
            matches!(h.outcome, HostOutcome::Done),
            "{} did not finish cleanly: {:?}",
            h.host,
            h.outcome
        );
    }
}

pub fn failure(report: &FleetReport, host: &str) -> (remote::Step, String) {
    let h = report.hosts.iter().find(|h| h.host == host).unwrap();
    match &h.outcome {
        HostOutcome::Failed { step, error } => (*step, error.to_string()),
        other => panic!("{host} should have failed, got {other:?}"),
    }
}

/// `sha256sum` of a file as the host sees it.
pub fn remote_sha256(bed: &Testbed, h: &Host, path: &str) -> String {
    let out = bed.exec(h, &format!("sha256sum {path}")).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn remote_stat(bed: &Testbed, h: &Host, path: &str) -> String {
    let out = bed.exec(h, &format!("stat -c %a {path}")).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether a (global) pid is a live process; a zombie is dead, only not yet reaped (pid 1 here
/// may never reap it).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or 10 s pass (for state that has no event to wait on).
pub fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
