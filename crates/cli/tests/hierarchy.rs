//! End-to-end tests of hierarchical remote runs: graphs whose `remotes:` name further graphs,
//! run through intermediate hosts on a test bed where the leaves sit on a network only the
//! intermediates reach (the initiator has no route there). Every host's filesystem and
//! processes are checked from inside its namespaces; synchronisation is by the initiator's JSON
//! events and its exit, never by sleeping.

mod support;

use serde_json::Value;
use support::bed::{Bed, FLEET_DEADLINE, binary_sha, cached_binary, exit_reason, summary};
use support::{mgmt, write};
use testbed::{Host, TestbedConfig};

/// Size of the binary under test: what crosses a link when a host has no cached copy.
fn binary_len() -> u64 {
    std::fs::metadata(env!("CARGO_BIN_EXE_mgmt")).unwrap().len()
}

/// A graph for `remote` that writes its own file, exports one (when `export`), collects every
/// export into /tmp/, and names `remotes`.
fn graph(name: &str, remote: &str, own: &str, export: bool, remotes: &[&str]) -> String {
    let mut y = format!(
        "graph: {name}\nremote: {remote}\nresources:\n  file:\n  - name: own\n    path: /tmp/hier-own\n    content: {own:?}\n    state: exists\n"
    );
    if export {
        y.push_str(&format!(
            "  - name: \"@@{name}\"\n    path: /tmp/hier-{name}\n    content: \"exported by {name}\\n\"\n    state: exists\n"
        ));
    }
    y.push_str("collect:\n- kind: file\n  pattern: /tmp/\n");
    if !remotes.is_empty() {
        y.push_str("remotes:\n");
        for r in remotes {
            y.push_str(&format!("- {r}\n"));
        }
    }
    y
}

fn own_text(name: &str) -> String {
    format!("i am {name}\n")
}

/// Leaves are named by their alias (`ssh://hN`), which only the intermediate's own
/// ~/.ssh/config resolves: the second hop uses the intermediate's credentials.
fn leaf_url(h: &Host) -> String {
    format!("ssh://{}", h.name)
}

/// Waits for the run's `exit` event (a fleet with uploads takes longer than one process), then
/// for the process; returns the exit code.
fn finish(r: &mut support::Running) -> Option<i32> {
    r.wait_event_within(FLEET_DEADLINE, "exit", |v| v["event"] == "exit");
    let (st, err) = r.wait();
    eprintln!("{err}");
    st.code()
}

fn states_of<'a>(seen: &'a [Value], host: &str) -> Vec<&'a str> {
    seen.iter()
        .filter(|v| v["event"] == "host_state" && v["host"] == host)
        .filter_map(|v| v["state"].as_str())
        .collect()
}

/// root -> h1, h2 -> three leaves each. The first run converges and ends by itself; the second
/// (binary cached everywhere now) gets a live edit of a leaf file and then ^C.
#[test]
fn two_intermediates_three_leaves_each() {
    let bed = Bed::up(TestbedConfig {
        hosts: 2,
        leaves: 6,
        intermediates: vec![0, 1],
        ..Default::default()
    });
    let (i1, i2) = (bed.h(1), bed.h(2));
    let leaves: Vec<&Host> = (3..=8).map(|n| bed.h(n)).collect();
    assert!(leaves.iter().all(|l| !l.reachable_from_root));
    // h3, h5, h7 under h1; h4, h6, h8 under h2.
    let mut under: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (k, l) in leaves.iter().enumerate() {
        bed.graph(
            &format!("leaves/{}.yaml", l.name),
            &graph(&l.name, &leaf_url(l), &own_text(&l.name), true, &[]),
        );
        under[k % 2].push(format!("leaves/{}.yaml", l.name));
    }
    let a = bed.graph(
        "i1.yaml",
        &graph(
            "i1",
            &bed.url(i1),
            &own_text("i1"),
            false,
            &under[0].iter().map(String::as_str).collect::<Vec<_>>(),
        ),
    );
    let b = bed.graph(
        "i2.yaml",
        &graph(
            "i2",
            &bed.url(i2),
            &own_text("i2"),
            false,
            &under[1].iter().map(String::as_str).collect::<Vec<_>>(),
        ),
    );

    // Run 1: converges on all 8 hosts and ends by itself.
    let mut r = bed.start(&[&a, &b], &["--converged-timeout", "1"]);
    assert_eq!(finish(&mut r), Some(0));
    assert_eq!(exit_reason(&r.seen), "converged");
    // Events about hosts run by intermediates (`via`) fit the schema as well.
    support::assert_schema(&r.seen);
    let all: Vec<&Host> = [i1, i2].into_iter().chain(leaves.iter().copied()).collect();
    for h in &all {
        let name = if h.reachable_from_root {
            bed.name(h)
        } else {
            h.name.clone()
        };
        assert!(states_of(&r.seen, &name).contains(&"running"), "{name}");
        for l in &leaves {
            assert_eq!(
                bed.read(h, &format!("/tmp/hier-{}", l.name)),
                format!("exported by {}\n", l.name),
                "{} collects {}",
                h.name,
                l.name
            );
        }
        bed.assert_clean(h);
        assert!(
            bed.tb.exists(h, cached_binary("/root")),
            "{}: no binary",
            h.name
        );
    }
    assert_eq!(bed.read(i1, "/tmp/hier-own"), own_text("i1"));
    for l in &leaves {
        assert_eq!(bed.read(l, "/tmp/hier-own"), own_text(&l.name));
    }

    // The binary crossed the initiator's link once per intermediate, and each leaf got it
    // from its intermediate.
    let bin = binary_len();
    let mut root_bytes = 0;
    for (i, h) in [i1, i2].into_iter().enumerate() {
        let s = summary(&r.seen, &bed.name(h));
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["cache"], "copied", "{s}");
        assert!(s.get("via").is_none(), "{s}");
        let sent = s["bytes_sent"].as_u64().unwrap();
        assert!(sent >= bin && sent < bin + 64 * 1024, "{s} vs binary {bin}");
        root_bytes += sent;
        for leaf in &under[i] {
            let leaf = leaf.trim_start_matches("leaves/").trim_end_matches(".yaml");
            let s = summary(&r.seen, leaf);
            assert_eq!(s["via"], bed.name(h), "{s}");
            assert_eq!(s["status"], "ok", "{s}");
            // Counted from the leaf's own `applied` events, relayed by its intermediate.
            assert!(s["changed"].as_u64().unwrap() > 0, "{s}");
            assert_eq!(s["cache"], "copied", "{s}");
            assert!(s["bytes_sent"].as_u64().unwrap() >= bin, "{s}");
        }
    }
    assert!(
        root_bytes < 3 * bin,
        "the initiator sent {root_bytes} bytes"
    );
    eprintln!(
        "bytes sent by the initiator: {root_bytes} for 8 hosts (binary: {bin}, sha {})",
        binary_sha()
    );

    // Run 2: everything is cached; a live edit of a leaf file travels root -> h1 -> h3; ^C
    // stops all 8 hosts.
    let mut r = bed.start(&[&a, &b], &[]);
    for h in &all {
        let name = if h.reachable_from_root {
            bed.name(h)
        } else {
            h.name.clone()
        };
        r.wait_event_within(FLEET_DEADLINE, &format!("{name} running"), |v| {
            v["event"] == "host_state" && v["host"] == name.as_str() && v["state"] == "running"
        });
    }
    let h3 = leaves[0];
    // Once h3 has swapped its first graph in, it watches its graph file.
    r.wait_event_within(FLEET_DEADLINE, "h3 runs its graph", |v| {
        v["event"] == "host_output"
            && v["host"] == "h3"
            && v["line"]
                .as_str()
                .is_some_and(|l| l.contains("graph swapped"))
    });
    r.mark();
    let edited = graph(&h3.name, &leaf_url(h3), "edited live\n", true, &[]);
    write(&bed.dir.path().join("leaves/h3.yaml"), &edited);
    // The new version lands in h1's run dir, then in h3's (reported by h1, `via` h1).
    r.wait_event_within(FLEET_DEADLINE, "the edit copied to h3", |v| {
        v["event"] == "graph_copied" && v["host"] == "h3" && v["via"] == bed.name(i1).as_str()
    });
    r.wait_event_within(FLEET_DEADLINE, "h3 loads the edit", |v| {
        v["event"] == "host_output"
            && v["host"] == "h3"
            && v["line"]
                .as_str()
                .is_some_and(|l| l.contains("loaded new version"))
    });
    r.wait_event_within(FLEET_DEADLINE, "h3 rewrites its file", |v| {
        v["event"] == "host_output"
            && v["host"] == "h3"
            && v["line"]
                .as_str()
                .is_some_and(|l| l.ends_with("file[own]: applied"))
    });
    assert_eq!(bed.read(h3, "/tmp/hier-own"), "edited live\n");
    let (st, err) = r.interrupt();
    assert!(st.code().is_some(), "{err}");
    assert_eq!(exit_reason(&r.seen), "interrupted");
    for h in &all {
        bed.assert_clean(h);
    }
    let s = summary(&r.seen, &bed.name(i1));
    assert_eq!(s["cache"], "cached", "{s}");
    assert!(s["bytes_sent"].as_u64().unwrap() < 64 * 1024, "{s}");
}

/// root -> h1 -> h2 -> h3: an intermediate of an intermediate.
#[test]
fn depth_three() {
    let bed = Bed::up(TestbedConfig {
        hosts: 2,
        leaves: 1,
        intermediates: vec![0, 1],
        ..Default::default()
    });
    let (h1, h2, h3) = (bed.h(1), bed.h(2), bed.h(3));
    bed.graph(
        "c.yaml",
        &graph("c", &leaf_url(h3), &own_text("c"), true, &[]),
    );
    // h1 reaches h2 by its address (with h1's own key and known_hosts), h2 reaches h3 by the
    // alias in h2's own ssh_config.
    bed.graph(
        "sub/b.yaml",
        &graph("b", &bed.url(h2), &own_text("b"), true, &["../c.yaml"]),
    );
    let a = bed.graph(
        "a.yaml",
        &graph("a", &bed.url(h1), &own_text("a"), true, &["sub/b.yaml"]),
    );
    let mut r = bed.start(&[&a], &["--converged-timeout", "1"]);
    assert_eq!(finish(&mut r), Some(0));
    assert_eq!(exit_reason(&r.seen), "converged");
    for (h, own) in [(h1, "a"), (h2, "b"), (h3, "c")] {
        assert_eq!(bed.read(h, "/tmp/hier-own"), own_text(own));
        for from in ["a", "b", "c"] {
            assert_eq!(
                bed.read(h, &format!("/tmp/hier-{from}")),
                format!("exported by {from}\n")
            );
        }
        bed.assert_clean(h);
    }
    assert_eq!(summary(&r.seen, &bed.name(h2))["via"], bed.name(h1));
    assert_eq!(summary(&r.seen, "h3")["via"], bed.name(h2));
    assert_eq!(summary(&r.seen, "h3")["status"], "ok");

    // A host two levels down that cannot be reached: reported up through both intermediates,
    // the rest of the cluster still converges, and the run says it failed.
    bed.graph(
        "c.yaml",
        &graph("c", "ssh://root@127.0.0.1:9", &own_text("c"), true, &[]),
    );
    let mut r = bed.start(&[&a], &["--converged-timeout", "1"]);
    assert_eq!(finish(&mut r), Some(1));
    assert_eq!(exit_reason(&r.seen), "converged");
    let failed: Vec<&Value> = r
        .seen
        .iter()
        .filter(|v| v["event"] == "host_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["host"], "127.0.0.1");
    assert_eq!(failed[0]["via"], bed.name(h2));
    assert_eq!(failed[0]["step"], "connect");
    for h in [h1, h2, h3] {
        bed.assert_clean(h);
    }
}

/// Writes graph files into a temp dir; returns it.
fn files(list: &[(&str, String)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in list {
        write(&d.path().join(name), text);
    }
    d
}

/// Runs `mgmt run --json --remote <dir>/<top>` with nothing to reach (port 9 of loopback);
/// returns (exit code, events, stderr).
fn run_bad(dir: &std::path::Path, top: &str) -> (Option<i32>, Vec<Value>, String) {
    let out = mgmt()
        .args([
            "run",
            "--json",
            "--client-urls",
            "http://127.0.0.1:0",
            "--remote",
        ])
        .arg(dir.join(top))
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code(),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const NOWHERE: &str = "ssh://root@127.0.0.1:9";

#[test]
fn bad_file_deep_in_the_tree_stops_the_run_before_any_host() {
    let d = files(&[
        ("a.yaml", graph("a", NOWHERE, "a", false, &["b/b.yaml"])),
        ("b/b.yaml", graph("b", "ssh://b", "b", false, &["c.yaml"])),
        (
            "b/c.yaml",
            "graph: c\nremote: ssh://c\nresources:\n  fil: []\n".to_string(),
        ),
    ]);
    let (code, events, err) = run_bad(d.path(), "a.yaml");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("c.yaml"), "{err}");
    // The event names where, as fields: `fil` on line 4, column 3 of c.yaml.
    let invalid = events
        .iter()
        .find(|v| v["event"] == "graph_invalid")
        .unwrap_or_else(|| panic!("no graph_invalid: {events:?}"));
    let e = &invalid["errors"][0];
    assert!(e["file"].as_str().unwrap().ends_with("c.yaml"), "{invalid}");
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(4), Some(3)),
        "{invalid}"
    );
    assert!(
        !events.iter().any(|v| v["event"] == "host_state"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|v| v["event"] == "store_listening"),
        "{events:?}"
    );
}

#[test]
fn cycle_of_files_is_an_error() {
    let d = files(&[
        ("a.yaml", graph("a", NOWHERE, "a", false, &["b.yaml"])),
        ("b.yaml", graph("b", "ssh://b", "b", false, &["./a.yaml"])),
    ]);
    let (code, _, err) = run_bad(d.path(), "a.yaml");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cycle of `remotes:` files"), "{err}");
}

#[test]
fn same_host_twice_in_the_tree_is_an_error() {
    let d = files(&[
        ("a.yaml", graph("a", NOWHERE, "a", false, &["b.yaml"])),
        ("b.yaml", graph("b", NOWHERE, "b", false, &[])),
    ]);
    let (code, _, err) = run_bad(d.path(), "a.yaml");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("host 127.0.0.1 is already the target"),
        "{err}"
    );
}
