//! The whole remote run against real sshd hosts: upload and cache, run dir and credentials,
//! reverse tunnel, output streaming, live updates, cleanup. Script "binaries" stand in for mgmt
//! and print what they see, so every check looks at the host itself.

mod common;

use std::collections::HashSet;

use common::*;
use remote::{CacheUse, ChildExit, HostOutcome, HostState, RemoteEvent, run_fleet};
use testbed::{Testbed, TestbedConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const REPORT: &str = r#"
echo "host=$host"
echo "depth=$depth"
echo "rundir=$(dirname "$yaml")"
echo "rundir-mode=$(stat -c %a "$(dirname "$yaml")")"
echo "cred-mode=$(stat -c %a "$cred")"
echo "cred=$(tr '\n' ' ' < "$cred")"
echo "graph=$(cat "$yaml")"
echo "args=$args"
echo "self=$0"
echo "user=$(id -un)"
echo oops >&2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_child_then_second_run_hits_the_cache() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "report", &format!("{PARSE_ARGS}{REPORT}"));
    let binary_len = std::fs::metadata(&bin).unwrap().len();
    let cfg = config(&bed, &bin);
    let hash = cfg.binary_hash.clone();

    let (report, events) = run(cfg.clone(), vec![alias(h)]).await;
    assert_done(&report);
    let r = &report.hosts[0];
    assert_eq!(r.cache, CacheUse::Miss);
    assert_eq!(r.exit, Some(ChildExit::Code(0)));
    assert!(
        r.bytes_sent >= binary_len,
        "{} < {binary_len}",
        r.bytes_sent
    );
    let e = |k| field(&events, "h1", k).unwrap_or_else(|| panic!("no {k} in {events:#?}"));
    assert_eq!(e("host"), "h1");
    assert_eq!(e("depth"), "1");
    assert_eq!(e("rundir-mode"), "700");
    assert_eq!(e("cred-mode"), "600");
    assert_eq!(e("cred"), "user=mgmt-h1 password=s3cret-token ");
    assert_eq!(e("graph"), "graph: g");
    assert_eq!(e("user"), "root");
    assert!(
        !e("args").contains("s3cret"),
        "secret in argv: {}",
        e("args")
    );
    assert!(e("args").contains("--no-server --seeds http://127.0.0.1:"));
    assert_eq!(e("self"), format!("/root/.cache/mgmt/bin/{hash}/mgmt"));
    assert!(outputs(&events, "h1").contains(&"oops".to_string()));
    let rundir = e("rundir");
    assert!(rundir.starts_with("/tmp/mgmt."), "{rundir}");
    assert_eq!(r.run_dir.as_deref(), Some(rundir.as_str()));
    assert!(!bed.exists(h, &rundir), "run dir {rundir} left behind");
    let cached = format!("/root/.cache/mgmt/bin/{hash}/mgmt");
    assert_eq!(remote_sha256(&bed, h, &cached), hash);
    assert_eq!(remote_stat(&bed, h, &cached), "755");
    assert_eq!(
        remote_stat(&bed, h, &format!("/root/.cache/mgmt/bin/{hash}")),
        "700"
    );
    let states: Vec<HostState> = events
        .iter()
        .filter_map(|e| match e {
            RemoteEvent::State { state, .. } => Some(*state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![
            HostState::Connecting,
            HostState::Copying,
            HostState::Running,
            HostState::Done
        ]
    );

    // Second run: the probe finds the binary, nothing but the graph and credentials is sent.
    let (report, events) = run(cfg, vec![alias(h)]).await;
    assert_done(&report);
    let r = &report.hosts[0];
    assert_eq!(r.cache, CacheUse::Hit);
    assert!(
        r.bytes_sent < 200,
        "sent {} bytes on a cache hit",
        r.bytes_sent
    );
    assert_eq!(field(&events, "h1", "graph").as_deref(), Some("graph: g"));
    let left = bed
        .exec(h, &format!("ls -A /root/.cache/mgmt/bin/{hash}"))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "mgmt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_cache_entry_is_replaced() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "plain", "echo ran\n");
    let cfg = config(&bed, &bin);
    let dir = format!("/root/.cache/mgmt/bin/{}", cfg.binary_hash);
    let out = bed
        .exec(h, &format!("mkdir -p {dir} && printf '#!/bin/sh\\necho evil\\n' > {dir}/mgmt && chmod 755 {dir}/mgmt"))
        .unwrap();
    assert!(out.status.success());
    let (report, events) = run(cfg.clone(), vec![alias(h)]).await;
    assert_done(&report);
    assert_eq!(report.hosts[0].cache, CacheUse::Miss);
    assert_eq!(outputs(&events, "h1"), vec!["ran".to_string()]);
    assert_eq!(
        remote_sha256(&bed, h, &format!("{dir}/mgmt")),
        cfg.binary_hash
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_one_binary_do_not_corrupt_it() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    // A few MB so the two uploads overlap on the wire.
    let padding: String = (0..60_000).map(|i| format!("# pad {i:020}\n")).collect();
    let bin = script(tmp.path(), "big", &format!("echo ran\nexit 0\n{padding}"));
    let cfg = config(&bed, &bin);
    let (a, b) = tokio::join!(
        run(cfg.clone(), vec![alias(h)]),
        run(cfg.clone(), vec![alias(h)])
    );
    for (report, events) in [&a, &b] {
        assert_done(report);
        assert_eq!(outputs(events, "h1"), vec!["ran".to_string()]);
    }
    let dir = format!("/root/.cache/mgmt/bin/{}", cfg.binary_hash);
    assert_eq!(
        remote_sha256(&bed, h, &format!("{dir}/mgmt")),
        cfg.binary_hash
    );
    let left = bed.exec(h, &format!("ls -A {dir}")).unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "mgmt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_sftp_gets_the_binary_over_exec() {
    let bed = Testbed::up(TestbedConfig {
        hosts: 1,
        no_sftp: vec![0],
        ..Default::default()
    })
    .unwrap();
    let h = &bed.hosts()[0];
    assert!(!h.sftp);
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "nosftp", "echo ran\n");
    let cfg = config(&bed, &bin);
    let (report, events) = run(cfg.clone(), vec![alias(h)]).await;
    assert_done(&report);
    assert_eq!(report.hosts[0].cache, CacheUse::Miss);
    assert_eq!(outputs(&events, "h1"), vec!["ran".to_string()]);
    let cached = format!("/root/.cache/mgmt/bin/{}/mgmt", cfg.binary_hash);
    assert_eq!(remote_sha256(&bed, h, &cached), cfg.binary_hash);
    assert_eq!(remote_stat(&bed, h, &cached), "755");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_caching_the_binary_lives_in_the_run_dir_and_goes_with_it() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "nocache", "echo \"self=$0\"\n");
    let mut cfg = config(&bed, &bin);
    cfg.caching = false;
    let (report, events) = run(cfg.clone(), vec![alias(h)]).await;
    assert_done(&report);
    assert_eq!(report.hosts[0].cache, CacheUse::Disabled);
    let me = field(&events, "h1", "self").unwrap();
    let rundir = report.hosts[0].run_dir.clone().unwrap();
    assert_eq!(me, format!("{rundir}/mgmt"));
    assert!(!bed.exists(h, &rundir));
    assert!(!bed.exists(h, format!("/root/.cache/mgmt/bin/{}", cfg.binary_hash)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reverse_tunnel_reaches_the_store_address() {
    let bed = Testbed::up(TestbedConfig::hosts(2)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // A real TCP echo server standing in for the store.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = listener.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let mut served = 0;
        while served < 2 {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => s.write_all(&buf[..n]).await.unwrap(),
                    }
                }
            });
            served += 1;
        }
    });
    let body = format!(
        "#!/bin/bash\n{PARSE_ARGS}\nport=${{seeds##*:}}\n\
         exec 3<>/dev/tcp/127.0.0.1/$port\necho \"ping-$host\" >&3\nread -r line <&3\necho \"echo=$line\"\n"
    );
    let bin = script(tmp.path(), "tunnel", &body);
    let mut cfg = config(&bed, &bin);
    cfg.store_addr = store;
    let targets = bed.hosts().iter().map(alias).collect();
    let (report, events) = run(cfg, targets).await;
    assert_done(&report);
    for h in bed.hosts() {
        assert_eq!(
            field(&events, &h.name, "echo"),
            Some(format!("ping-{}", h.name))
        );
    }
    echo.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_closes_stdin_and_live_updates_are_copied() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "{PARSE_ARGS}\necho \"yaml=$yaml\"\necho ready\ncat > /dev/null\necho \"final=$(cat \"$yaml\")\"\n"
    );
    let bin = script(tmp.path(), "stdin", &body);
    let cfg = config(&bed, &bin);
    let (utx, urx) = mpsc::channel(4);
    let mut t = alias(h);
    t.updates = Some(urx);
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let fleet = tokio::spawn(run_fleet(cfg, vec![t], cancel.clone(), tx));
    let mut lines = Vec::new();
    let mut copied = false;
    let watch = async {
        while let Some(ev) = rx.recv().await {
            match ev {
                RemoteEvent::Output { line, .. } => {
                    if line == "ready" {
                        utx.send(b"graph: edited\n".to_vec()).await.unwrap();
                    }
                    lines.push(line);
                }
                RemoteEvent::GraphCopied { file, .. } => {
                    assert_eq!(file, std::path::Path::new("/initiator/graphs/h1.yaml"));
                    let yaml = lines.iter().find_map(|l| l.strip_prefix("yaml=")).unwrap();
                    assert_eq!(bed.read_file(h, yaml).unwrap(), b"graph: edited\n");
                    copied = true;
                    cancel.cancel();
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, watch).await.unwrap();
    assert!(copied);
    let report = fleet.await.unwrap();
    assert_done(&report);
    // The child saw its stdin close and exited by itself, with the edited graph in place.
    assert_eq!(report.hosts[0].exit, Some(ChildExit::Code(0)));
    assert!(
        lines.contains(&"final=graph: edited".to_string()),
        "{lines:?}"
    );
    assert!(!bed.exists(h, report.hosts[0].run_dir.as_ref().unwrap()));
}

/// Starts a child that ignores stdin EOF and SIGTERM, cancels, and checks nothing is left.
async fn kill_test(force: bool) {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let body = "trap '' TERM\necho \"pid=$$\"\nsleep 1000 &\necho \"sleeper=$!\"\nwhile :; do wait; done\n";
    let bin = script(tmp.path(), if force { "force" } else { "stubborn" }, body);
    let mut cfg = config(&bed, &bin);
    if force {
        // Only the forced cancel can end this run in time.
        cfg.grace = std::time::Duration::from_secs(3600);
    }
    let force_token = cfg.force.clone();
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let fleet = tokio::spawn(run_fleet(cfg, vec![alias(h)], cancel.clone(), tx));
    let mut pids = HashSet::new();
    let watch = async {
        while let Some(ev) = rx.recv().await {
            if let RemoteEvent::Output { line, .. } = ev {
                if let Some((_, pid)) = line.split_once('=') {
                    pids.insert(pid.parse::<u32>().unwrap());
                }
                if line.starts_with("sleeper=") {
                    cancel.cancel();
                    if force {
                        force_token.cancel();
                    }
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, watch).await.unwrap();
    let report = fleet.await.unwrap();
    assert_done(&report);
    assert_eq!(
        report.hosts[0].exit,
        Some(ChildExit::Signal("KILL".to_string()))
    );
    assert_eq!(pids.len(), 2);
    // The test bed shares our pid namespace: the pids are global.
    for pid in pids {
        assert!(wait_until(|| !alive(pid)), "pid {pid} still running");
    }
    assert!(!bed.exists(h, report.hosts[0].run_dir.as_ref().unwrap()));
    assert!(
        !bed.processes(h)
            .iter()
            .any(|p| p.cmdline.iter().any(|a| a == "1000"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_a_stubborn_child_by_pid() {
    kill_test(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_cancel_skips_the_grace_period() {
    kill_test(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_child_fails_only_its_host() {
    let bed = Testbed::up(TestbedConfig::hosts(2)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let body = format!("{PARSE_ARGS}\n[ \"$host\" = h2 ] && exit 3\necho fine\n");
    let bin = script(tmp.path(), "crash", &body);
    let cfg = config(&bed, &bin);
    let targets = bed.hosts().iter().map(alias).collect();
    let (report, events) = run(cfg, targets).await;
    assert!(matches!(report.hosts[0].outcome, HostOutcome::Done));
    let (step, error) = failure(&report, "h2");
    assert_eq!(step, remote::Step::Run);
    assert_eq!(error, "remote mgmt on h2 ended with exit code 3");
    assert!(events.iter().any(|e| matches!(e,
        RemoteEvent::Failed { host, step: remote::Step::Run, .. } if host == "h2")));
    assert_eq!(outputs(&events, "h1"), vec!["fine".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_before_it_starts_touches_no_host() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "never", "echo ran\n");
    let cfg = config(&bed, &bin);
    let hash = cfg.binary_hash.clone();
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let report = run_fleet(cfg, vec![alias(h)], cancel, tx).await;
    assert!(matches!(report.hosts[0].outcome, HostOutcome::Cancelled));
    assert_eq!(report.hosts[0].bytes_sent, 0);
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    assert!(
        !events.iter().any(|e| matches!(
            e,
            RemoteEvent::State {
                state: HostState::Connecting,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(!bed.exists(h, format!("/root/.cache/mgmt/bin/{hash}")));
}
