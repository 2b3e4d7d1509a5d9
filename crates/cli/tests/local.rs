//! End-to-end tests of `mgmt run --yaml` on this machine: the real binary, real files, real
//! processes. Synchronisation is by the binary's own JSON events (`--json`), never by sleeping.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use support::{Running, examples, run_to_end, write};

fn file_graph(dir: &std::path::Path, files: &[(&str, &str)]) -> String {
    let mut y = String::from("graph: g\nresources:\n  file:\n");
    for (name, content) in files {
        y.push_str(&format!(
            "  - name: {name}\n    path: {}/{name}\n    content: {content:?}\n",
            dir.display()
        ));
    }
    y
}

#[test]
fn converged_timeout_zero_applies_a_chain_and_exits() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(d.join("old"), "remove me").unwrap();
    let g = d.join("g.yaml");
    write(
        &g,
        &format!(
            "graph: chain\nresources:\n  file:\n  - name: a\n    path: {d}/a\n    content: \"a\\n\"\n    mode: \"0600\"\n  - name: b\n    path: {d}/b\n    content: \"b\\n\"\n  - name: old\n    path: {d}/old\n    state: absent\nedges:\n- name: e1\n  from: {{kind: file, name: a}}\n  to: {{kind: file, name: b}}\n",
            d = d.display()
        ),
    );
    let (st, out, err) = run_to_end(&[
        "--no-server",
        "--converged-timeout",
        "0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert!(st.success(), "exit {st:?}\n{err}");
    assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "a\n");
    assert_eq!(
        fs::metadata(d.join("a")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read_to_string(d.join("b")).unwrap(), "b\n");
    assert!(!d.join("old").exists());
    // Graph order: a was applied before b.
    let pos = |id: &str| {
        out.find(&format!("\"id\":\"{id}\""))
            .unwrap_or_else(|| panic!("no event for {id} in {out}"))
    };
    assert!(pos("file[a]") < pos("file[b]"), "{out}");
    assert!(out.contains("\"reason\":\"converged\""), "{out}");
}

#[test]
fn a_bad_graph_names_file_line_and_column_and_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let g = d.join("bad.yaml");
    write(
        &g,
        &format!(
            "graph: bad\nresources:\n  file:\n  - name: ok\n    path: {d}/ok\n    content: x\n  - name: typo\n    path: {d}/typo\n    contnet: x\n  fiel:\n  - name: nope\n",
            d = d.display()
        ),
    );
    let (st, _out, err) = run_to_end(&[
        "--no-server",
        "--converged-timeout",
        "0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("bad.yaml:9:5"), "{err}");
    assert!(err.contains("did you mean `content`?"), "{err}");
    assert!(err.contains("bad.yaml:10:3"), "{err}");
    assert!(err.contains("did you mean `file`?"), "{err}");
    assert!(!d.join("ok").exists(), "a bad graph must change nothing");
}

#[test]
fn check_subcommand_reports_without_running() {
    let t = tempfile::tempdir().unwrap();
    let g = t.path().join("cyc.yaml");
    write(
        &g,
        "graph: c\nresources:\n  noop:\n  - name: a\n  - name: b\nedges:\n- name: e1\n  from: {kind: noop, name: a}\n  to: {kind: noop, name: b}\n- name: e2\n  from: {kind: noop, name: b}\n  to: {kind: noop, name: a}\n",
    );
    let out = support::mgmt().arg("check").arg(&g).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("noop[a] -> noop[b] -> noop[a]"), "{err}");
}

#[test]
fn live_edit_swaps_the_difference_and_a_broken_edit_keeps_the_running_graph() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let g = d.join("g.yaml");
    write(&g, &file_graph(d, &[("f1", "one\n"), ("f2", "two\n")]));
    let mut r = Running::start(&["--no-server", "--yaml", g.to_str().unwrap()]);
    r.wait_applied("file[f1]", "changed");
    r.wait_applied("file[f2]", "changed");

    // f1 unchanged, f2 changed, f3 new.
    r.mark();
    write(
        &g,
        &file_graph(
            d,
            &[("f1", "one\n"), ("f2", "two, edited\n"), ("f3", "three\n")],
        ),
    );
    let swapped = r.wait_event("swap keeping f1", |v| {
        v["event"] == "swapped" && v["kept"].to_string().contains("file[f1]")
    });
    assert!(
        swapped["added"].to_string().contains("file[f3]"),
        "{swapped}"
    );
    assert!(
        swapped["added"].to_string().contains("file[f2]"),
        "{swapped}"
    );
    r.wait_applied("file[f2]", "changed");
    r.wait_applied("file[f3]", "changed");
    assert_eq!(fs::read_to_string(d.join("f2")).unwrap(), "two, edited\n");
    assert_eq!(fs::read_to_string(d.join("f3")).unwrap(), "three\n");
    // Its watch may report spurious events (siblings change in the same directory), which cost
    // an in-sync check; a re-apply would be a second `changed`. (The engine's own tests count
    // check_apply calls and watch starts exactly.)
    let f1_changes = r
        .seen
        .iter()
        .filter(|v| v["event"] == "applied" && v["id"] == "file[f1]" && v["outcome"] == "changed")
        .count();
    assert_eq!(
        f1_changes, 1,
        "an unchanged vertex must not be re-applied by a swap: {:#?}",
        r.seen
    );

    // A version that does not parse: reported, and the running graph stays (and keeps
    // repairing drift).
    r.mark();
    write(
        &g,
        "graph: g\nresources:\n  file:\n  - name: f1\n    bogus: 1\n",
    );
    r.wait_event("graph_invalid", |v| v["event"] == "graph_invalid");
    r.mark();
    fs::write(d.join("f3"), "drifted\n").unwrap();
    r.wait_event("f3 repaired", |v| {
        v["event"] == "applied" && v["id"] == "file[f3]" && v["outcome"] == "changed"
    });
    assert_eq!(fs::read_to_string(d.join("f3")).unwrap(), "three\n");

    let (st, err) = r.interrupt();
    assert!(st.success(), "{err}");
    // Every event of the run (start, applied, swapped, converged, graph_invalid, exit) fits
    // the published schema.
    support::assert_schema(&r.seen);
    for kind in ["applied", "swapped", "converged", "graph_invalid", "exit"] {
        assert!(r.seen.iter().any(|v| v["event"] == kind), "no {kind} event");
    }
}

#[test]
fn drift_is_repaired_by_the_watcher_without_a_rerun() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let g = d.join("g.yaml");
    write(&g, &file_graph(d, &[("f", "keep me\n")]));
    let mut r = Running::start(&["--no-server", "--yaml", g.to_str().unwrap()]);
    r.wait_applied("file[f]", "changed");
    r.mark();
    fs::write(d.join("f"), "tampered\n").unwrap();
    r.wait_event("repair", |v| {
        v["event"] == "applied" && v["id"] == "file[f]" && v["outcome"] == "changed"
    });
    assert_eq!(fs::read_to_string(d.join("f")).unwrap(), "keep me\n");
    r.mark();
    fs::remove_file(d.join("f")).unwrap();
    r.wait_event("recreate", |v| {
        v["event"] == "applied" && v["id"] == "file[f]" && v["outcome"] == "changed"
    });
    assert_eq!(fs::read_to_string(d.join("f")).unwrap(), "keep me\n");
    let (st, err) = r.interrupt();
    assert!(st.success(), "{err}");
    assert!(
        r.seen
            .iter()
            .any(|v| v["event"] == "exit" && v["reason"] == "interrupted")
    );
}

#[test]
fn noop_reports_what_would_change_and_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let g = d.join("g.yaml");
    write(
        &g,
        &format!(
            "graph: g\nresources:\n  file:\n  - name: f\n    path: {d}/f\n    content: x\n  exec:\n  - name: e\n    cmd: touch {d}/ran\n    shell: /bin/sh\n",
            d = d.display()
        ),
    );
    let (st, out, err) = run_to_end(&[
        "--no-server",
        "--noop",
        "--converged-timeout",
        "0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert!(st.success(), "{err}");
    assert!(
        out.contains("\"id\":\"file[f]\"") && out.contains("would_change"),
        "{out}"
    );
    assert!(!d.join("f").exists());
    assert!(!d.join("ran").exists());
}

#[test]
fn graphviz_file_shows_the_resolved_graph() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let dot = d.join("g.dot");
    let ex = examples().join("exec1.yaml");
    let (st, _out, err) = run_to_end(&[
        "--no-server",
        "--noop",
        "--converged-timeout",
        "0",
        "--graphviz",
        dot.to_str().unwrap(),
        "--yaml",
        ex.to_str().unwrap(),
    ]);
    assert!(st.success(), "{err}");
    let text = fs::read_to_string(&dot).unwrap();
    assert!(text.starts_with("digraph"), "{text}");
    assert!(text.contains("->"), "{text}");
}

#[test]
fn a_failing_resource_gives_exit_code_one_and_others_still_converge() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let g = d.join("g.yaml");
    write(
        &g,
        &format!(
            "graph: g\nresources:\n  exec:\n  - name: bad\n    cmd: exit 3\n    shell: /bin/sh\n  file:\n  - name: good\n    path: {d}/good\n    content: fine\n",
            d = d.display()
        ),
    );
    let (st, out, err) = run_to_end(&[
        "--no-server",
        "--converged-timeout",
        "0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(out.contains("\"event\":\"failed\""), "{out}");
    assert_eq!(fs::read_to_string(d.join("good")).unwrap(), "fine");
}

#[test]
fn max_runtime_ends_a_run_that_never_converges() {
    let t = tempfile::tempdir().unwrap();
    let g = t.path().join("g.yaml");
    write(
        &g,
        "graph: g\nresources:\n  timer:\n  - name: t\n    interval: 1\n",
    );
    let (st, out, err) = run_to_end(&[
        "--no-server",
        "--max-runtime",
        "1",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert!(st.success(), "{err}");
    assert!(out.contains("\"reason\":\"maxruntime\""), "{out}");
}

#[test]
fn the_local_examples_converge() {
    for ex in ["hello.yaml", "file1.yaml", "exec1.yaml", "noop1.yaml"] {
        let path = examples().join(ex);
        let (st, _out, err) = run_to_end(&[
            "--no-server",
            "--converged-timeout",
            "0",
            "--yaml",
            path.to_str().unwrap(),
        ]);
        assert!(st.success(), "{ex}: {err}");
    }
}

#[test]
fn reading_the_graph_file_is_not_an_edit() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let g = d.join("g.yaml");
    write(&g, &file_graph(d, &[("f", "one\n")]));
    let mut r = Running::start(&["--no-server", "--yaml", g.to_str().unwrap()]);
    r.wait_applied("file[f]", "changed");
    r.mark();
    let from = r.seen.len();
    // Someone reads the file (and so does every reload); then a real edit follows.
    fs::read_to_string(&g).unwrap();
    write(&g, &file_graph(d, &[("f", "one\n"), ("g", "two\n")]));
    r.wait_applied("file[g]", "changed");
    let swaps: Vec<_> = r.seen[from..]
        .iter()
        .filter(|v| v["event"] == "swapped")
        .collect();
    assert_eq!(swaps.len(), 1, "only the edit swaps: {swaps:#?}");
    let (st, err) = r.interrupt();
    assert!(st.success(), "{err}");
}

/// A slow writer (issue 11, point 3): the graph file is truncated and a first part written, a
/// part that is a valid graph of its own with a resource (`file[m]` at `mark`) that the whole
/// graph does not have; the file is held open. mgmt must say it waits for the close
/// (`graph_writing`) and take nothing, then apply the whole graph once the file is closed.
/// Faulty code reads the half and applies it (`mark` would be created): the first wait tells
/// the two apart, so this fails with "half-written graph applied" instead of timing out.
#[test]
fn a_graph_file_is_taken_when_its_writer_closes_it_never_half_written() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let g = d.join("g.yaml");
    let keep = format!(
        "graph: g\nresources:\n  file:\n  - name: keep\n    path: {}/keep\n    content: \"k\\n\"\n",
        d.display()
    );
    write(&g, &keep);
    let mut r = Running::start(&["--no-server", "--yaml", g.to_str().unwrap()]);
    r.wait_applied("file[keep]", "changed");

    let whole = format!(
        "{keep}  - name: m\n    state: exists\n    path: {}/marker\n    content: \"whole\\n\"\n",
        d.display()
    );
    // Cut in the middle of the path: `.../mark` is a graph of its own.
    let cut = whole.find("/marker").unwrap() + "/mark".len();
    r.mark();
    let mut f = fs::File::create(&g).unwrap();
    f.write_all(&whole.as_bytes()[..cut]).unwrap();
    f.flush().unwrap();
    let seen = r.wait_event("graph_writing (or the half applied)", |v| {
        v["event"] == "graph_writing" || (v["event"] == "applied" && v["id"] == "file[m]")
    });
    assert_eq!(
        seen["event"], "graph_writing",
        "half-written graph applied: {seen}"
    );
    assert_eq!(seen["file"], g.to_str().unwrap(), "{seen}");
    f.write_all(&whole.as_bytes()[cut..]).unwrap();
    drop(f);
    r.wait_applied("file[m]", "changed");
    assert_eq!(fs::read_to_string(d.join("marker")).unwrap(), "whole\n");
    assert!(!d.join("mark").exists(), "the half's resource was applied");
    let at = r.seen.iter().position(|v| v == &seen).unwrap();
    let after = &r.seen[at..];
    let swaps: Vec<_> = after.iter().filter(|v| v["event"] == "swapped").collect();
    assert_eq!(swaps.len(), 1, "one version taken: {swaps:#?}");
    assert!(
        swaps[0]["kept"].to_string().contains("file[keep]"),
        "{swaps:#?}"
    );
    assert!(
        !after.iter().any(|v| v["event"] == "graph_invalid"),
        "nothing half-written (nor the empty file) was read: {after:#?}"
    );
    let (st, err) = r.interrupt();
    assert!(st.success(), "{err}");
    support::assert_schema(&r.seen);
}

/// A new version renamed into place is taken once, and a rename is never "being written".
/// The second edit is the barrier: its swap comes after anything the first one caused.
#[test]
fn a_graph_file_renamed_into_place_is_taken_once() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let g = d.join("g.yaml");
    write(&g, &file_graph(d, &[("a", "a\n")]));
    let mut r = Running::start(&["--no-server", "--yaml", g.to_str().unwrap()]);
    r.wait_applied("file[a]", "changed");
    r.mark();
    let from = r.seen.len();
    write(&g, &file_graph(d, &[("a", "a\n"), ("b", "b\n")]));
    r.wait_applied("file[b]", "changed");
    write(
        &g,
        &file_graph(d, &[("a", "a\n"), ("b", "b\n"), ("c", "c\n")]),
    );
    r.wait_applied("file[c]", "changed");
    let events = |kind: &str| {
        r.seen[from..]
            .iter()
            .filter(|v| v["event"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    let swaps = events("swapped");
    assert_eq!(swaps.len(), 2, "one swap per rename: {swaps:#?}");
    assert!(
        swaps[0]["added"].to_string().contains("file[b]"),
        "{swaps:#?}"
    );
    assert!(events("graph_writing").is_empty(), "{:#?}", r.seen);
    let (st, err) = r.interrupt();
    assert!(st.success(), "{err}");
}
