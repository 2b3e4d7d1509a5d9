//! `collect:` with `notify:`: three `mgmt run` processes (different `--hostname`s, one store)
//! each export one small file and collect everyone's into a directory; every collected file
//! notifies one local exec that concatenates the directory into one file. The exec reruns,
//! live, on every host when one host's export changes. Synchronisation is by each process's
//! JSON events; the files are read once an event says they were written.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::{Running, write};

const HOSTS: [&str; 3] = ["a", "b", "c"];

fn graph_text(dir: &Path, host: &str, version: &str) -> String {
    let d = dir.join(host);
    let d = d.display();
    format!(
        r#"graph: lines-{host}
resources:
  file:
  - name: lines-dir
    path: {d}/lines/
  - name: "@@line-{host}"
    path: /nowhere/line-{host}
    content: "{host} {version}\n"
  exec:
  - name: concat
    cmd: cat {d}/lines/* > {d}/.all.tmp && mv {d}/.all.tmp {d}/all
    shell: /bin/sh
edges:
- name: dir-before-concat
  from: {{kind: file, name: lines-dir}}
  to: {{kind: exec, name: concat}}
collect:
- kind: file
  pattern: {d}/lines/
  notify:
  - {{kind: exec, name: concat}}
"#
    )
}

fn graph(dir: &Path, host: &str, version: &str) -> PathBuf {
    let path = dir.join(format!("{host}.yaml"));
    write(&path, &graph_text(dir, host, version));
    path
}

fn all_of(dir: &Path, host: &str) -> Option<String> {
    fs::read_to_string(dir.join(host).join("all")).ok()
}

/// Waits until `host`'s exec has rewritten its file to `want`; `refresh` also requires that
/// run to have been asked for by a notify parent.
fn wait_concat(r: &mut Running, dir: &Path, host: &str, want: &str, refresh: bool) {
    r.wait_event(&format!("{host}: exec[concat] wrote {want:?}"), |v| {
        v["event"] == "applied"
            && v["id"] == "exec[concat]"
            && v["outcome"] == "changed"
            && (!refresh || v["refresh"] == true)
            && all_of(dir, host).as_deref() == Some(want)
    });
}

#[test]
fn collected_files_notify_one_exec_that_concatenates_them() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut running: Vec<Running> = Vec::new();
    let mut url: Option<String> = None;
    for host in HOSTS {
        let g = graph(dir, host, "v1");
        let g = g.to_str().unwrap();
        let mut args = vec!["--hostname", host, "--yaml", g];
        let seeds;
        match &url {
            Some(u) => {
                seeds = u.clone();
                args.extend(["--no-server", "--seeds", &seeds]);
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

    let v1 = "a v1\nb v1\nc v1\n";
    for (r, host) in running.iter_mut().zip(HOSTS) {
        wait_concat(r, dir, host, v1, false);
        // Each collected file landed in the directory the host manages, under its basename.
        for from in HOSTS {
            let got = fs::read_to_string(dir.join(host).join("lines").join(format!("line-{from}")));
            assert_eq!(
                got.unwrap(),
                format!("{from} v1\n"),
                "{host} collects {from}"
            );
        }
    }

    // b edits its export: every host's exec reruns, refreshed by the changed collected file.
    for r in running.iter_mut() {
        r.mark();
    }
    graph(dir, "b", "v2");
    let v2 = "a v1\nb v2\nc v1\n";
    for (r, host) in running.iter_mut().zip(HOSTS) {
        r.wait_applied("file[line-b]", "changed");
        wait_concat(r, dir, host, v2, true);
    }

    for r in running.iter_mut().rev() {
        let (st, err) = r.interrupt();
        assert!(st.success(), "{err}");
    }
}

#[test]
fn a_notify_target_that_is_exported_is_rejected_with_its_position() {
    let t = tempfile::tempdir().unwrap();
    let text = graph_text(t.path(), "a", "v1").replace(
        "  - {kind: exec, name: concat}",
        "  - {kind: file, name: line-a}",
    );
    let g = t.path().join("a.yaml");
    write(&g, &text);
    let (st, out, err) = support::run_to_end(&[
        "--hostname",
        "a",
        "--client-urls",
        "http://127.0.0.1:0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(out.contains("graph_invalid"), "{out}");
    assert!(
        err.contains("`notify` of a collect rule: exported resource `file[line-a]` cannot be an edge endpoint")
            && err.contains(&format!("{}:21:", g.display())),
        "{err}"
    );
}
