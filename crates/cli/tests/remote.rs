//! End-to-end tests of `mgmt run --remote`: the real binary against real sshd hosts in network
//! namespaces (the test bed), checking each host's filesystem and processes from inside its
//! namespaces. Synchronisation is by the initiator's JSON events and its exit, never by sleeping.

mod support;

use support::bed::{
    Bed, FLEET_DEADLINE, applied_line, cached_binary, exit_reason, host_events, seed_graph, summary,
};
use testbed::TestbedConfig;

const FILE2A: &str = "i am file2a, exported from host a\n";
const FILE2B: &str = "i am file2b, exported from host b\n";

#[test]
fn seed_scenario_converges_on_two_hosts_and_leaves_only_the_cache() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let a = bed.graph("a.yaml", &seed_graph("a", &bed.url(h1)));
    let b = bed.graph("b.yaml", &seed_graph("b", &bed.url(h2)));
    let mut r = bed.start(&[&a, &b], &["--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "converged");
    support::assert_schema(&r.seen);

    assert_eq!(bed.read(h1, "/tmp/file1a"), "i am file1a\n");
    assert_eq!(bed.read(h2, "/tmp/file1b"), "i am file1b\n");
    assert!(!bed.tb.exists(h1, "/tmp/file1b") && !bed.tb.exists(h2, "/tmp/file1a"));
    for h in [h1, h2] {
        assert_eq!(bed.read(h, "/tmp/file2a"), FILE2A, "{}", h.name);
        assert_eq!(bed.read(h, "/tmp/file2b"), FILE2B, "{}", h.name);
        bed.assert_clean(h);
        assert!(
            bed.tb.exists(h, cached_binary("/root")),
            "{}: no cached binary",
            h.name
        );
        let s = summary(&r.seen, &bed.name(h));
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["cache"], "copied", "{s}");
        // Counted from the child's own `applied` events: its file1, file2a and file2b.
        assert_eq!(s["changed"], 3, "{s}");
    }
}

/// Hosts in setup (connecting or copying) at the worst moment, from the host_state events in
/// the order the initiator emitted them.
fn max_in_setup(seen: &[serde_json::Value]) -> usize {
    let mut state = std::collections::BTreeMap::new();
    let mut max = 0;
    for v in seen.iter().filter(|v| v["event"] == "host_state") {
        state.insert(
            v["host"].as_str().unwrap().to_string(),
            v["state"].as_str().unwrap().to_string(),
        );
        let n = state
            .values()
            .filter(|s| *s == "connecting" || *s == "copying")
            .count();
        max = max.max(n);
    }
    max
}

#[test]
fn ten_hosts_with_three_connections_at_a_time_all_converge() {
    let n = 10;
    let bed = Bed::up(TestbedConfig::hosts(n));
    // Every host writes its own file and exports one that every other host collects.
    let files: Vec<_> = (1..=n)
        .map(|i| {
            let h = bed.h(i);
            bed.graph(
                &format!("g{i}.yaml"),
                &format!(
                    "graph: g{i}\nresources:\n  file:\n  - name: mine\n    path: /tmp/mine\n    content: \"h{i}\\n\"\n    state: exists\n  - name: \"@@from-h{i}\"\n    path: /tmp/from/h{i}\n    content: \"from h{i}\\n\"\n    state: exists\ncollect:\n- kind: file\n  pattern: /tmp/from/\nremote: {}\n",
                    bed.url(h)
                ),
            )
        })
        .collect();
    for i in 1..=n {
        bed.sh(bed.h(i), "mkdir -p /tmp/from");
    }
    let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let mut r = bed.start(&refs, &["--cconns", "3", "--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "converged");
    assert_eq!(
        max_in_setup(&r.seen),
        3,
        "setup concurrency: {:#?}",
        r.seen
            .iter()
            .filter(|v| v["event"] == "host_state")
            .collect::<Vec<_>>()
    );
    for i in 1..=n {
        let h = bed.h(i);
        assert_eq!(bed.read(h, "/tmp/mine"), format!("h{i}\n"));
        for j in 1..=n {
            assert_eq!(
                bed.read(h, &format!("/tmp/from/h{j}")),
                format!("from h{j}\n"),
                "h{i} has h{j}'s export"
            );
        }
        bed.assert_clean(h);
        assert_eq!(summary(&r.seen, &bed.name(h))["status"], "ok");
    }
}

#[test]
fn a_second_run_uses_the_cached_binary_and_no_caching_leaves_no_copy() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let bin_size = std::fs::metadata(env!("CARGO_BIN_EXE_mgmt")).unwrap().len();
    let g1 = bed.graph(
        "g1.yaml",
        &support::bed::files_graph(&bed.url(h1), &[("/tmp/f", "one\n")]),
    );

    let mut first = bed.start(&[&g1], &["--converged-timeout", "1"]);
    let (st, err) = first.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    let s = summary(&first.seen, &bed.name(h1));
    assert_eq!(s["cache"], "copied", "{s}");
    assert!(s["bytes_sent"].as_u64().unwrap() >= bin_size, "{s}");

    bed.sh(h1, "rm /tmp/f");
    let mut second = bed.start(&[&g1], &["--converged-timeout", "1"]);
    let (st, err) = second.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    let s = summary(&second.seen, &bed.name(h1));
    assert_eq!(s["cache"], "cached", "{s}");
    assert_eq!(s["status"], "ok", "{s}");
    // The graph and the credentials only.
    assert!(s["bytes_sent"].as_u64().unwrap() < 4096, "{s}");
    assert_eq!(bed.read(h1, "/tmp/f"), "one\n");
    assert!(bed.tb.exists(h1, cached_binary("/root")));
    bed.assert_clean(h1);

    // Without caching the binary goes into the run dir, runs from there and goes with it.
    let g2 = bed.graph(
        "g2.yaml",
        &support::bed::files_graph(&bed.url(h2), &[("/tmp/f", "two\n")]),
    );
    let mut r = bed.start(&[&g2], &["--no-caching"]);
    let host = bed.name(h2);
    r.wait_event("h2 applied", |v| applied_line(v, &host, "file[f0]"));
    let running = bed.mgmt_processes(h2);
    assert!(
        running.len() == 1
            && running[0][0].starts_with("/tmp/mgmt.")
            && running[0][0].ends_with("/mgmt"),
        "the child runs the binary in its run dir: {running:?}"
    );
    let (st, err) = r.interrupt();
    assert_eq!(st.code(), Some(0), "{err}");
    let s = summary(&r.seen, &host);
    assert_eq!(s["cache"], "no-cache", "{s}");
    assert!(s["bytes_sent"].as_u64().unwrap() >= bin_size, "{s}");
    assert_eq!(bed.read(h2, "/tmp/f"), "two\n");
    bed.assert_clean(h2);
    assert!(
        !bed.tb.exists(h2, "/root/.cache/mgmt"),
        "--no-caching must not fill the cache"
    );
}

#[test]
fn an_edited_graph_reaches_the_running_host() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let host = bed.name(h1);
    let g = bed.graph(
        "live.yaml",
        &support::bed::files_graph(&bed.url(h1), &[("/tmp/live", "v1\n")]),
    );
    let mut r = bed.start(&[&g], &[]);
    r.wait_event("v1 applied", |v| applied_line(v, &host, "file[f0]"));
    assert_eq!(bed.read(h1, "/tmp/live"), "v1\n");

    r.mark();
    let v2 = support::bed::files_graph(
        &bed.url(h1),
        &[("/tmp/live", "v2\n"), ("/tmp/new", "new\n")],
    );
    support::write(&g, &v2);
    let copied = r.wait_event("graph_copied", |v| {
        v["event"] == "graph_copied" && v["host"] == host
    });
    assert_eq!(copied["file"], g.to_str().unwrap());
    // The host's copy of the graph is the new version...
    let dirs = bed.run_dirs(h1);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(bed.read(h1, &format!("{}/live.yaml", dirs[0])), v2);
    // ...and the child swapped it in.
    r.wait_event("new applied", |v| applied_line(v, &host, "file[f1]"));
    assert_eq!(bed.read(h1, "/tmp/new"), "new\n");
    bed.wait_file(&mut r, h1, &host, "file[f0]", "/tmp/live", "v2\n");

    // A version that does not parse is reported and not copied: the host keeps the last one.
    r.mark();
    support::write(
        &g,
        "graph: g\nresources:\n  file:\n  - name: f0\n    bogus: 1\n",
    );
    let invalid = r.wait_event("graph_invalid", |v| v["event"] == "graph_invalid");
    assert_eq!(invalid["host"], host, "{invalid}");
    // The valid edit after it is copied, so the broken one was skipped, not queued.
    let v3 = support::bed::files_graph(&bed.url(h1), &[("/tmp/live", "v3\n")]);
    support::write(&g, &v3);
    r.wait_event("v3 copied", |v| {
        v["event"] == "graph_copied" && v["host"] == host
    });
    let copies = r.seen[..]
        .iter()
        .filter(|v| v["event"] == "graph_copied")
        .count();
    assert_eq!(copies, 2, "v2 and v3 only: {:#?}", r.seen);
    bed.wait_file(&mut r, h1, &host, "file[f0]", "/tmp/live", "v3\n");
    assert_eq!(bed.read(h1, &format!("{}/live.yaml", dirs[0])), v3);

    let (st, err) = r.interrupt();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "interrupted");
    bed.assert_clean(h1);
}

#[test]
fn an_edited_remote_field_moves_the_graph_to_the_new_host() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let (n1, n2) = (bed.name(h1), bed.name(h2));
    let g = bed.graph(
        "mover.yaml",
        &support::bed::files_graph(&bed.url(h1), &[("/tmp/mover", "here\n")]),
    );
    let mut r = bed.start(&[&g], &[]);
    r.wait_event("applied on h1", |v| applied_line(v, &n1, "file[f0]"));
    assert_eq!(bed.read(h1, "/tmp/mover"), "here\n");

    // The same graph, now naming h2: it starts there and stops on h1 (its run dir removed).
    r.mark();
    let moved = support::bed::files_graph(&bed.url(h2), &[("/tmp/mover", "moved\n")]);
    support::write(&g, &moved);
    let ev = r.wait_event("graph_moved", |v| v["event"] == "graph_moved");
    assert_eq!(
        (ev["from"].as_str(), ev["to"].as_str()),
        (Some(n1.as_str()), Some(n2.as_str()))
    );
    r.wait_event("applied on h2", |v| applied_line(v, &n2, "file[f0]"));
    assert_eq!(bed.read(h2, "/tmp/mover"), "moved\n");
    r.wait_event("h1 done", |v| {
        v["event"] == "host_state" && v["host"] == n1 && v["state"] == "done"
    });
    bed.assert_clean(h1);
    // Not copied to the old host: it keeps what it had.
    assert_eq!(bed.read(h1, "/tmp/mover"), "here\n");
    assert!(
        !r.seen.iter().any(|v| v["event"] == "graph_copied"),
        "the edit went to the old host: {:#?}",
        r.seen
    );

    // Later edits follow the graph to its new host.
    r.mark();
    support::write(
        &g,
        &support::bed::files_graph(&bed.url(h2), &[("/tmp/mover", "again\n")]),
    );
    r.wait_event("graph_copied to h2", |v| {
        v["event"] == "graph_copied" && v["host"] == n2
    });
    bed.wait_file(&mut r, h2, &n2, "file[f0]", "/tmp/mover", "again\n");

    let (st, err) = r.interrupt();
    assert_eq!(st.code(), Some(0), "{err}");
    bed.assert_clean(h2);
    assert_eq!(summary(&r.seen, &n1)["status"], "ok");
    assert_eq!(summary(&r.seen, &n2)["status"], "ok");
    support::assert_schema(&r.seen);
}

#[test]
fn an_export_edited_on_one_host_reaches_the_other_live() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let (na, nb) = (bed.name(h1), bed.name(h2));
    let a_text = seed_graph("a", &bed.url(h1));
    let a = bed.graph("a.yaml", &a_text);
    let b = bed.graph("b.yaml", &seed_graph("b", &bed.url(h2)));
    let mut r = bed.start(&[&a, &b], &[]);
    r.wait_event("b collected file2a", |v| {
        applied_line(v, &nb, "file[file2a]")
    });
    r.wait_event("a collected file2b", |v| {
        applied_line(v, &na, "file[file2b]")
    });
    assert_eq!(bed.read(h2, "/tmp/file2a"), FILE2A);

    r.mark();
    let edited = "i am file2a, edited on host a\n";
    assert!(a_text.contains(FILE2A.trim_end()));
    support::write(&a, &a_text.replace(FILE2A.trim_end(), edited.trim_end()));
    r.wait_event("a's graph copied", |v| {
        v["event"] == "graph_copied" && v["host"] == na
    });
    // Host a applies its new file2a, and host b once the new export reaches it.
    bed.wait_file(&mut r, h1, &na, "file[file2a]", "/tmp/file2a", edited);
    bed.wait_file(&mut r, h2, &nb, "file[file2a]", "/tmp/file2a", edited);
    assert_eq!(bed.read(h2, "/tmp/file2b"), FILE2B);

    let (st, err) = r.interrupt();
    assert_eq!(st.code(), Some(0), "{err}");
    for h in [h1, h2] {
        bed.assert_clean(h);
    }
}

#[test]
fn interrupt_stops_every_host_and_leaves_nothing_running() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let (na, nb) = (bed.name(h1), bed.name(h2));
    let a = bed.graph("a.yaml", &seed_graph("a", &bed.url(h1)));
    // Host b is never idle: it is interrupted in the middle of its work.
    let b = bed.graph(
        "b.yaml",
        &seed_graph("b", &bed.url(h2)).replace(
            "collect:",
            "  timer:\n  - name: t\n    interval: 1\ncollect:",
        ),
    );
    let mut r = bed.start(&[&a, &b], &["--converged-timeout", "2"]);
    r.wait_event("a applied", |v| applied_line(v, &na, "file[file2b]"));
    r.wait_event("b ticks", |v| applied_line(v, &nb, "timer[t]"));
    for h in [h1, h2] {
        assert_eq!(
            bed.mgmt_processes(h).len(),
            1,
            "{}: one child while running",
            h.name
        );
        assert_eq!(
            bed.run_dirs(h).len(),
            1,
            "{}: one run dir while running",
            h.name
        );
    }
    let (st, err) = r.interrupt();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "interrupted");
    for h in [h1, h2] {
        let name = bed.name(h);
        // The child saw its lifeline go and exited by itself, with status 0.
        assert!(
            host_events(&r.seen, "host_output", &name)
                .iter()
                .any(|v| v["line"]
                    .as_str()
                    .unwrap()
                    .ends_with("lifeline to the initiator closed, exiting")),
            "{name}: {:#?}",
            r.seen
        );
        assert_eq!(summary(&r.seen, &name)["status"], "ok");
        bed.assert_clean(h);
    }
}

/// The one `host_failed` of a host: (step, error).
fn failure(seen: &[serde_json::Value], host: &str) -> (String, String) {
    let f = host_events(seen, "host_failed", host);
    assert_eq!(f.len(), 1, "one failure for {host}: {seen:#?}");
    (
        f[0]["step"].as_str().unwrap().to_string(),
        f[0]["error"].as_str().unwrap().to_string(),
    )
}

#[test]
fn unreachable_hosts_and_changed_host_keys_fail_alone() {
    let bed = Bed::up(TestbedConfig::hosts(3));
    let (h1, h2, h3) = (bed.h(1), bed.h(2), bed.h(3));
    let good = bed.graph(
        "good.yaml",
        &support::bed::files_graph(&bed.url(h1), &[("/tmp/ok", "ok\n")]),
    );
    // An address on the test bed's network where no host answers.
    let nobody = match h1.addr {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            std::net::Ipv4Addr::new(o[0], o[1], o[2], 254)
        }
        other => panic!("the test bed uses IPv4, not {other}"),
    };
    let gone = bed.graph(
        "gone.yaml",
        &support::bed::files_graph(&format!("ssh://root@{nobody}:22"), &[("/tmp/x", "x\n")]),
    );
    let rekeyed = bed.graph(
        "rekeyed.yaml",
        &support::bed::files_graph(&bed.url(h2), &[("/tmp/x", "x\n")]),
    );
    bed.tb.replace_host_key(h2).unwrap();
    // A host whose sshd is stopped: its address answers, its port refuses.
    let stopped = bed.graph(
        "stopped.yaml",
        &support::bed::files_graph(&bed.url(h3), &[("/tmp/x", "x\n")]),
    );
    // SAFETY: kill(2) on the test bed's own sshd listener of h3 (the test bed reaps it).
    let killed = unsafe { libc::kill(bed.tb.sshd_pid(h3) as i32, libc::SIGTERM) };
    assert_eq!(killed, 0);
    assert!(support::bed::wait_until(FLEET_DEADLINE, || {
        std::net::TcpStream::connect((h3.addr, h3.port)).is_err()
    }));

    let mut r = bed.start(
        &[&good, &gone, &rekeyed, &stopped],
        &["--converged-timeout", "1"],
    );
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(1), "{err}");
    // The hosts that could not start do not hold up the cluster-wide convergence.
    assert_eq!(exit_reason(&r.seen), "converged");

    let (step, error) = failure(&r.seen, &nobody.to_string());
    assert_eq!(step, "connect");
    assert!(
        error.starts_with(&format!("cannot connect to {nobody} ({nobody}:22): ")),
        "{error}"
    );

    let (step, error) = failure(&r.seen, &bed.name(h3));
    assert_eq!(step, "connect");
    assert_eq!(
        error,
        format!(
            "cannot connect to {a} ({a}:22): Connection refused (os error 111)",
            a = h3.addr
        )
    );

    let (step, error) = failure(&r.seen, &bed.name(h2));
    assert_eq!(step, "connect");
    let kh = bed.tb.known_hosts();
    // h2 is the second line of the test bed's known_hosts.
    assert!(
        error.contains(&format!(
            "host key for {} has changed: it does not match {}:2",
            h2.addr,
            kh.display()
        )),
        "{error}"
    );
    assert!(
        error.contains("SHA256:"),
        "the new fingerprint is named: {error}"
    );
    assert!(
        !bed.tb.exists(h2, "/tmp/x"),
        "nothing may run on a host with a changed key"
    );
    assert!(
        !bed.tb.exists(h2, "/root/.cache/mgmt"),
        "nothing may be copied to it either"
    );

    // The good host ran to the end regardless, and the summary says who failed where.
    assert_eq!(bed.read(h1, "/tmp/ok"), "ok\n");
    assert_eq!(summary(&r.seen, &bed.name(h1))["status"], "ok");
    assert_eq!(
        summary(&r.seen, &nobody.to_string())["status"],
        "failed:connect"
    );
    assert_eq!(summary(&r.seen, &bed.name(h2))["status"], "failed:connect");
    assert!(err.contains("failed:connect"), "{err}");
    for h in [h1, h2] {
        bed.assert_clean(h);
    }
}

#[test]
fn a_wrong_client_key_fails_authentication_on_that_host_only() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let wrong = bed.dir.path().join("wrong_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong)
        .status()
        .unwrap();
    assert!(st.success());
    // Per-host keys come from an ssh_config: the right one for `good`, a stranger for `bad`.
    let config = bed.dir.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host good\n  HostName {}\n  User root\n  IdentityFile {}\nHost bad\n  HostName {}\n  User root\n  IdentityFile {}\n",
            h1.addr,
            bed.tb.client_key().display(),
            h2.addr,
            wrong.display()
        ),
    )
    .unwrap();
    let g_good = bed.graph(
        "good.yaml",
        &support::bed::files_graph("good", &[("/tmp/ok", "ok\n")]),
    );
    let g_bad = bed.graph(
        "bad.yaml",
        &support::bed::files_graph("bad", &[("/tmp/x", "x\n")]),
    );
    let kh = bed.tb.known_hosts();
    let mut r = bed.start_bare(
        &[&g_good, &g_bad],
        &[
            "--ssh-config",
            config.to_str().unwrap(),
            "--known-hosts",
            kh.to_str().unwrap(),
            "--converged-timeout",
            "1",
        ],
    );
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(1), "{err}");
    let (step, error) = failure(&r.seen, "bad");
    assert_eq!(step, "auth");
    assert_eq!(
        error,
        format!(
            "authentication as root on bad failed; tried: key {}",
            wrong.display()
        )
    );
    assert_eq!(bed.read(h1, "/tmp/ok"), "ok\n");
    assert_eq!(summary(&r.seen, "good")["status"], "ok");
    assert!(!bed.tb.exists(h2, "/tmp/x"));
    for h in [h1, h2] {
        bed.assert_clean(h);
    }
}

#[test]
fn a_host_without_sftp_gets_the_binary_over_exec() {
    let bed = Bed::up(TestbedConfig {
        hosts: 2,
        no_sftp: vec![1],
        ..Default::default()
    });
    let (h1, h2) = (bed.h(1), bed.h(2));
    assert!(!h2.sftp);
    let a = bed.graph("a.yaml", &seed_graph("a", &bed.url(h1)));
    let b = bed.graph("b.yaml", &seed_graph("b", &bed.url(h2)));
    let mut r = bed.start(&[&a, &b], &["--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "converged");
    assert!(
        err.contains("no sftp subsystem, streaming the binary over exec"),
        "{err}"
    );
    let bin_size = std::fs::metadata(env!("CARGO_BIN_EXE_mgmt")).unwrap().len();
    for h in [h1, h2] {
        assert_eq!(bed.read(h, "/tmp/file2a"), FILE2A);
        assert_eq!(bed.read(h, "/tmp/file2b"), FILE2B);
        let s = summary(&r.seen, &bed.name(h));
        assert_eq!(s["status"], "ok", "{s}");
        assert!(s["bytes_sent"].as_u64().unwrap() >= bin_size, "{s}");
        // The streamed copy is as good as the sftp one: the same hash, in the cache.
        let sum = bed.sh(h, &format!("sha256sum {}", cached_binary("/root")));
        assert!(
            sum.starts_with(support::bed::binary_sha()),
            "{}: {sum}",
            h.name
        );
        bed.assert_clean(h);
    }
}

#[test]
fn ssh_config_alias_password_and_unprivileged_user() {
    let bed = Bed::up(TestbedConfig {
        hosts: 3,
        password_auth: true,
        ..Default::default()
    });
    let (h1, h2, h3) = (bed.h(1), bed.h(2), bed.h(3));
    let password = bed.tb.password().unwrap().to_string();
    // h1 by its alias (address, user, key and known_hosts from the ssh_config), h2 with a
    // password in the url (no key is offered: no identity, no agent, an empty HOME), h3 as
    // the unprivileged test user, by alias too.
    let g1 = bed.graph(
        "g1.yaml",
        &support::bed::files_graph("h1", &[("/tmp/by-alias", "alias\n")]),
    );
    let g2 = bed.graph(
        "g2.yaml",
        &support::bed::files_graph(
            &format!("ssh://root:{password}@{}:22", h2.addr),
            &[("/tmp/by-password", "password\n")],
        ),
    );
    let user = testbed::EXTRA_USER;
    let g3 = bed.graph(
        "g3.yaml",
        &support::bed::files_graph(&format!("{user}@h3"), &[("/tmp/by-user", "user\n")]),
    );
    let config = bed.tb.ssh_config();
    let kh = bed.tb.known_hosts();
    let mut r = bed.start_bare(
        &[&g1, &g2, &g3],
        &[
            "--ssh-config",
            config.to_str().unwrap(),
            "--known-hosts",
            kh.to_str().unwrap(),
            "--converged-timeout",
            "1",
        ],
    );
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "converged");

    assert_eq!(bed.read(h1, "/tmp/by-alias"), "alias\n");
    assert_eq!(summary(&r.seen, "h1")["status"], "ok");

    let n2 = bed.name(h2);
    assert_eq!(bed.read(h2, "/tmp/by-password"), "password\n");
    assert_eq!(summary(&r.seen, &n2)["status"], "ok");
    let warnings = host_events(&r.seen, "host_warning", &n2);
    assert!(
        warnings.iter().any(|w| w["message"]
            .as_str()
            .unwrap()
            .contains("contains a password")),
        "{warnings:?}"
    );
    let stdout: String = r.seen.iter().map(|v| v.to_string() + "\n").collect();
    assert!(!stdout.contains(&password), "the password leaked to stdout");
    assert!(!err.contains(&password), "the password leaked to stderr");
    assert!(
        err.contains("root:***@"),
        "the url is shown redacted: {err}"
    );

    assert_eq!(bed.read(h3, "/tmp/by-user"), "user\n");
    assert_eq!(summary(&r.seen, "h3")["status"], "ok");
    assert_eq!(bed.sh(h3, "stat -c %U /tmp/by-user").trim(), user);
    let home = format!("/home/{user}");
    assert!(
        bed.tb.exists(h3, cached_binary(&home)),
        "{user}'s own cache"
    );
    assert!(
        !bed.tb.exists(h3, "/root/.cache/mgmt"),
        "nothing in root's home"
    );

    for h in [h1, h2, h3] {
        bed.assert_clean(h);
    }
}

#[test]
fn a_bad_remote_address_is_reported_without_its_password() {
    let t = tempfile::tempdir().unwrap();
    let secret = "Sup3rS3cretPw";
    let mut files = Vec::new();
    // Port 0, a path, and a bare alias with a password: each is an input error that names the
    // address, which must not carry the password along.
    for (i, remote) in [
        format!("ssh://root:{secret}@10.213.250.9:0"),
        format!("ssh://root:{secret}@10.213.250.9/srv"),
        format!("root:{secret}@h1"),
    ]
    .iter()
    .enumerate()
    {
        let g = t.path().join(format!("g{i}.yaml"));
        support::write(&g, &support::bed::files_graph(remote, &[("/tmp/x", "x\n")]));
        files.push(g);
    }
    let mut args = vec!["--client-urls", "http://127.0.0.1:0"];
    for f in &files {
        args.extend(["--remote", f.to_str().unwrap()]);
    }
    let (st, out, err) = support::run_to_end(&args);
    assert_eq!(st.code(), Some(2), "{err}");
    assert_eq!(err.matches("bad `remote:`").count(), 3, "{err}");
    assert!(err.contains("root:***@"), "{err}");
    assert!(
        !err.contains(secret),
        "the password leaked to stderr: {err}"
    );
    assert!(
        !out.contains(secret),
        "the password leaked to stdout: {out}"
    );
}

#[test]
fn a_child_killed_on_its_host_fails_that_host_only() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let (na, nb) = (bed.name(h1), bed.name(h2));
    let a = bed.graph("a.yaml", &seed_graph("a", &bed.url(h1)));
    let b = bed.graph("b.yaml", &seed_graph("b", &bed.url(h2)));
    let mut r = bed.start(&[&a, &b], &[]);
    r.wait_event("a applied", |v| applied_line(v, &na, "file[file2b]"));
    r.wait_event("b applied", |v| applied_line(v, &nb, "file[file2a]"));
    let pids = bed.mgmt_pids(h2);
    assert_eq!(pids.len(), 1, "one child on h2");
    // SAFETY: kill(2) on the pid of the child found inside the test bed host.
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
    let failed = r.wait_event("h2 failed", |v| {
        v["event"] == "host_failed" && v["host"] == nb
    });
    assert_eq!(failed["step"], "run", "{failed}");
    assert_eq!(
        failed["error"],
        format!("remote mgmt on {nb} ended with signal KILL"),
        "{failed}"
    );
    // Its run dir is cleaned up right away; host a carries on.
    r.wait_event("h2 failed state", |v| {
        v["event"] == "host_state" && v["host"] == nb && v["state"] == "failed"
    });
    bed.assert_clean(h2);
    assert_eq!(bed.mgmt_processes(h1).len(), 1, "h1 still runs");
    r.mark();
    bed.sh(h1, "rm /tmp/file1a");
    bed.wait_file(
        &mut r,
        h1,
        &na,
        "file[file1a]",
        "/tmp/file1a",
        "i am file1a\n",
    );

    let (st, err) = r.interrupt();
    assert_eq!(st.code(), Some(1), "a failed host fails the run: {err}");
    assert_eq!(summary(&r.seen, &na)["status"], "ok");
    assert_eq!(summary(&r.seen, &nb)["status"], "failed:run");
    bed.assert_clean(h1);
}

#[test]
fn children_exit_by_themselves_when_the_initiator_dies() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let (na, nb) = (bed.name(h1), bed.name(h2));
    let a = bed.graph("a.yaml", &seed_graph("a", &bed.url(h1)));
    let b = bed.graph("b.yaml", &seed_graph("b", &bed.url(h2)));
    let mut r = bed.start(&[&a, &b], &[]);
    r.wait_event("a applied", |v| applied_line(v, &na, "file[file2b]"));
    r.wait_event("b applied", |v| applied_line(v, &nb, "file[file2a]"));
    // No cleanup can happen from here: the connections just drop. Each child sees its
    // lifeline go (stdin at EOF), exits and removes its own run dir (store.cred included).
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(r.pid, libc::SIGKILL) }, 0);
    let (st, _) = r.wait();
    assert_eq!(st.code(), None, "killed");
    for h in [h1, h2] {
        assert!(
            support::bed::wait_until(FLEET_DEADLINE, || bed.mgmt_processes(h).is_empty()),
            "{}: mgmt still running after its initiator died: {:?}",
            h.name,
            bed.mgmt_processes(h)
        );
        bed.assert_clean(h);
    }
}

#[test]
fn noop_changes_nothing_and_tmp_prefix_places_the_run_dir() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let host = bed.name(h1);
    bed.sh(h1, "mkdir -m 0700 /root/runs");
    let g = bed.graph(
        "g.yaml",
        &support::bed::files_graph(&bed.url(h1), &[("/tmp/untouched", "x\n")]),
    );
    let mut r = bed.start(&[&g], &["--noop", "--tmp-prefix", "/root/runs"]);
    r.wait_event("would change", |v| {
        v["event"] == "host_output"
            && v["host"] == host
            && v["line"]
                .as_str()
                .unwrap()
                .ends_with("file[f0]: would change (noop)")
    });
    let dirs = bed.sh(h1, "ls /root/runs");
    assert_eq!(dirs.lines().count(), 1, "{dirs}");
    assert!(dirs.starts_with("mgmt."), "{dirs}");
    assert!(bed.run_dirs(h1).is_empty(), "nothing in /tmp");
    // SIGTERM (a service manager stopping the initiator) means the same as ^C.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(r.pid, libc::SIGTERM) }, 0);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "interrupted");
    assert!(!bed.tb.exists(h1, "/tmp/untouched"));
    assert_eq!(bed.sh(h1, "ls -A /root/runs"), "");
    assert!(bed.mgmt_processes(h1).is_empty());
}

#[test]
fn sighup_stops_every_host_and_removes_its_run_dir_like_sigterm() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let host = bed.name(h1);
    let g = bed.graph(
        "g.yaml",
        &support::bed::files_graph(&bed.url(h1), &[("/tmp/hup", "x\n")]),
    );
    let mut r = bed.start(&[&g], &[]);
    r.wait_event("applied", |v| applied_line(v, &host, "file[f0]"));
    assert_eq!(bed.mgmt_processes(h1).len(), 1, "one child while running");
    assert_eq!(bed.run_dirs(h1).len(), 1, "one run dir while running");
    // The terminal went away (or `kill -HUP`): the same clean stop as ^C and SIGTERM.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(r.pid, libc::SIGHUP) }, 0);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "interrupted");
    let exit = r.seen.iter().find(|v| v["event"] == "exit").unwrap();
    assert_eq!(exit["signal"], "SIGHUP", "{exit}");
    assert!(
        host_events(&r.seen, "host_output", &host)
            .iter()
            .any(|v| v["line"]
                .as_str()
                .unwrap()
                .ends_with("lifeline to the initiator closed, exiting")),
        "the child stopped by itself: {:#?}",
        r.seen
    );
    assert_eq!(summary(&r.seen, &host)["status"], "ok");
    bed.assert_clean(h1);
}

#[test]
fn two_runs_at_once_share_the_host_cache_safely() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    // Two initiators (two users, say) target the same host with an empty cache: both upload,
    // each to its own temp name, and the renames leave one good binary.
    let g1 = bed.graph(
        "one.yaml",
        &support::bed::files_graph(&bed.url(h1), &[("/tmp/one", "1\n")]),
    );
    let g2 = bed.graph(
        "two.yaml",
        &support::bed::files_graph(&bed.url(h1), &[("/tmp/two", "2\n")]),
    );
    let mut r1 = bed.start(&[&g1], &["--converged-timeout", "1"]);
    let mut r2 = bed.start(&[&g2], &["--converged-timeout", "1"]);
    let (st1, err1) = r1.wait();
    let (st2, err2) = r2.wait();
    assert_eq!(st1.code(), Some(0), "{err1}");
    assert_eq!(st2.code(), Some(0), "{err2}");
    let host = bed.name(h1);
    let caches = [&r1, &r2].map(|r| summary(&r.seen, &host)["cache"].clone());
    assert!(caches.contains(&"copied".into()), "{caches:?}");
    assert_eq!(bed.read(h1, "/tmp/one"), "1\n");
    assert_eq!(bed.read(h1, "/tmp/two"), "2\n");
    let bin = cached_binary("/root");
    let dir = std::path::Path::new(&bin)
        .parent()
        .unwrap()
        .display()
        .to_string();
    assert_eq!(
        bed.sh(h1, &format!("ls -A {dir}")),
        "mgmt\n",
        "no temp file left"
    );
    let sum = bed.sh(h1, &format!("sha256sum {bin}"));
    assert!(sum.starts_with(support::bed::binary_sha()), "{sum}");
    bed.assert_clean(h1);
}

#[test]
fn interrupt_during_a_long_command_stops_the_command_too() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    // The command runs in its own process group on the host, so stopping mgmt alone would
    // orphan it: the child must cancel it on its way out.
    let g = bed.graph(
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  exec:\n  - name: long\n    cmd: sleep 7313\n    shell: /bin/sh\nremote: {}\n",
            bed.url(h1)
        ),
    );
    let mut r = bed.start(&[&g], &[]);
    let sleeping = || {
        bed.tb
            .processes(h1)
            .iter()
            .any(|p| p.cmdline.join(" ").contains("sleep 7313"))
    };
    r.wait_event("running", |v| {
        v["event"] == "host_state" && v["state"] == "running"
    });
    assert!(
        support::bed::wait_until(FLEET_DEADLINE, sleeping),
        "the command never started"
    );
    let (st, err) = r.interrupt();
    // A command cancelled on the way out is not a failed resource: the run ends cleanly.
    assert_eq!(st.code(), Some(0), "{err}");

    assert!(!sleeping(), "the command outlived the run");
    bed.assert_clean(h1);
}

#[test]
fn a_run_whose_hosts_all_fail_ends_with_them_not_as_converged() {
    let t = tempfile::tempdir().unwrap();
    let g = t.path().join("g.yaml");
    // Nothing listens on port 1 of loopback: the host fails at once.
    support::write(
        &g,
        &support::bed::files_graph("ssh://root@127.0.0.1:1", &[("/tmp/x", "x\n")]),
    );
    // The failure and the end of the fleet race with the convergence wait: try a few times.
    for _ in 0..3 {
        let mut cmd = support::mgmt();
        cmd.env("HOME", t.path()).env_remove("SSH_AUTH_SOCK");
        let mut r = support::Running::start_cmd(
            cmd,
            &[
                "--client-urls",
                "http://127.0.0.1:0",
                "--converged-timeout",
                "1",
                "--remote",
                g.to_str().unwrap(),
            ],
        );
        let (st, err) = r.wait();
        assert_eq!(st.code(), Some(1), "{err}");
        assert_eq!(exit_reason(&r.seen), "hosts_done", "{err}");
        assert!(!err.contains("the cluster has converged"), "{err}");
        // Nor is the store going away with the run worth a warning.
        assert!(!err.contains("cannot watch convergence"), "{err}");
        let (step, error) = failure(&r.seen, "127.0.0.1");
        assert_eq!(step, "connect");
        assert!(error.contains("Connection refused"), "{error}");
    }
}

#[test]
fn max_runtime_ends_a_remote_run_that_never_converges() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let g = bed.graph(
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  timer:\n  - name: t\n    interval: 1\nremote: {}\n",
            bed.url(h1)
        ),
    );
    // Whatever phase the host is in when the time is up, the run ends cleanly, with the same
    // reason a local run gives.
    let mut r = bed.start(&[&g], &["--max-runtime", "2"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "maxruntime");
    bed.assert_clean(h1);
}

/// Starts a one-host run and stops (SIGSTOP) its child on the host once it has applied its
/// graph: a child that cannot react to its lifeline any more.
fn run_with_a_frozen_child(bed: &Bed) -> support::Running {
    let h1 = bed.h(1);
    let host = bed.name(h1);
    let g = bed.graph(
        "g.yaml",
        &support::bed::files_graph(&bed.url(h1), &[("/tmp/f", "f\n")]),
    );
    let mut r = bed.start(&[&g], &[]);
    r.wait_event("applied", |v| applied_line(v, &host, "file[f0]"));
    let pids = bed.mgmt_pids(h1);
    assert_eq!(pids.len(), 1);
    // SAFETY: kill(2) on the child found inside the test bed host.
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGSTOP) }, 0);
    r
}

#[test]
fn a_child_that_ignores_its_lifeline_is_killed_by_pid() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let mut r = run_with_a_frozen_child(&bed);
    // The child cannot see its stdin close: after the grace period it is stopped by its
    // recorded pid, and its run dir goes. A host that had to be killed fails the run.
    let (st, err) = r.interrupt();
    assert_eq!(st.code(), Some(1), "{err}");
    assert_eq!(
        summary(&r.seen, &bed.name(h1))["status"],
        "signal KILL",
        "{err}"
    );
    bed.assert_clean(h1);
}

#[test]
fn a_second_interrupt_forces_every_host_down() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let mut r = run_with_a_frozen_child(&bed);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(r.pid, libc::SIGINT) }, 0);
    r.wait_event("exit", |v| v["event"] == "exit");
    let (st, err) = r.interrupt();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("second interrupt: forcing every host down now"),
        "{err}"
    );
    assert_eq!(summary(&r.seen, &bed.name(h1))["status"], "signal KILL");
    bed.assert_clean(h1);
}

#[test]
fn a_forced_stop_leaves_no_command_of_the_child_behind() {
    let bed = Bed::up(TestbedConfig::hosts(1));
    let h1 = bed.h(1);
    let g = bed.graph(
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  exec:\n  - name: long\n    cmd: sleep 7314\n    shell: /bin/sh\nremote: {}\n",
            bed.url(h1)
        ),
    );
    let mut r = bed.start(&[&g], &[]);
    let sleeping = || {
        bed.tb
            .processes(h1)
            .iter()
            .any(|p| p.cmdline.join(" ").contains("sleep 7314"))
    };
    assert!(
        support::bed::wait_until(FLEET_DEADLINE, sleeping),
        "the command never started"
    );
    // A frozen child cannot cancel its command; killing the child (its process group) alone
    // would leave the command, which runs in a group of its own, running on the host.
    let pids = bed.mgmt_pids(h1);
    assert_eq!(pids.len(), 1);
    // SAFETY: kill(2) on the child found inside the test bed host, then on our own child.
    unsafe {
        assert_eq!(libc::kill(pids[0] as i32, libc::SIGSTOP), 0);
        assert_eq!(libc::kill(r.pid, libc::SIGINT), 0);
    }
    r.wait_event("exit", |v| v["event"] == "exit");
    let (_, err) = r.interrupt();
    assert!(err.contains("second interrupt"), "{err}");
    assert!(!sleeping(), "the child's command outlived it");
    bed.assert_clean(h1);
}
