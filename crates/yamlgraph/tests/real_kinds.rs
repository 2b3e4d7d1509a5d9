//! The front end against the real kinds of `resources::registry()`: every shipped example
//! loads, and mgmt 0.0.x graphs build with the kinds that will run them.

use std::path::PathBuf;

use resource::ResId;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn ok(text: &str) -> yamlgraph::GraphSpec {
    match yamlgraph::parse("graph.yaml", text, &resources::registry()) {
        Ok(spec) => spec,
        Err(d) => panic!("expected a graph, got:\n{d}"),
    }
}

#[test]
fn every_example_parses() {
    let registry = resources::registry();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).expect("examples directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        if let Err(d) = yamlgraph::parse_file(&path, &registry) {
            panic!("{} does not load:\n{d}", path.display());
        }
        names.push(
            path.file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    // The set the docs and demos refer to; a new example is welcome, a missing one is a bug.
    for wanted in [
        "etcd1a.yaml",
        "etcd1b.yaml",
        "etcd1c.yaml",
        "exec1.yaml",
        "file1.yaml",
        "hello.yaml",
        "noop1.yaml",
        "remote2a.yaml",
        "remote2b.yaml",
        "timer1.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "examples/{wanted} is missing (found {names:?})"
        );
    }
}

#[test]
fn seed_remote_examples_export_and_collect() {
    for (host, ip) in [("a", 201), ("b", 202)] {
        let path = examples_dir().join(format!("remote2{host}.yaml"));
        let spec = yamlgraph::parse_file(&path, &resources::registry()).expect("loads");
        assert_eq!(
            spec.remote.as_deref(),
            Some(format!("ssh://root@192.168.121.{ip}:22").as_str())
        );
        let local: Vec<String> = spec
            .local_graph()
            .vertices
            .iter()
            .map(|r| r.id().to_string())
            .collect();
        assert_eq!(local, vec![format!("file[file1{host}]")]);
        let exported: Vec<_> = spec.exported().collect();
        assert_eq!(exported.len(), 1);
        assert_eq!(exported[0].id(), ResId::new("file", format!("file2{host}")));
        let params = exported[0].params();
        assert_eq!(
            params["content"],
            format!("i am file2{host}, exported from host {host}\n")
        );
        assert_eq!(params["path"], format!("/tmp/file2{host}"));
        assert_eq!(
            (
                spec.collect[0].kind.as_str(),
                spec.collect[0].pattern.as_str()
            ),
            ("file", "/tmp/")
        );
    }
}

#[test]
fn timer_example_notifies_the_exec() {
    let spec = yamlgraph::parse_file(examples_dir().join("timer1.yaml"), &resources::registry())
        .expect("loads");
    let e = &spec.local_graph().edges[0];
    assert_eq!(
        (&e.from, &e.to, e.notify),
        (
            &ResId::new("timer", "timer1"),
            &ResId::new("exec", "exec1"),
            true
        )
    );
}

#[test]
fn mgmt_0_0_graphs_build_with_the_real_kinds() {
    let spec = ok(r#"---
graph: mygraph
comment: every form mgmt 0.0.x graphs use
resources:
  exec:
  - name: exec1
    meta:
      sema: ['mylock:1', 'otherlock:42']
      retry: -1
      delay: 500
    cmd: sleep 10s
    shell: ''
    timeout: 0
    watchcmd: ''
    watchshell: ''
    ifcmd: ''
    ifshell: ''
    pollint: 0
    state: present
  msg:
  - name: msg1
    body: mgmt logged this message
    priority: Info
    fields:
      foo: bar
    journal: true
    syslog: false
  timer:
  - name: timer1
    interval: 30
  noop:
  - name: noop1
    meta:
      noop: true
      autoedge: true
      autogroup: false
      poll: 0
      limit: .inf
      burst: 0
  file:
  - name: dir1
    path: "/tmp/mgmt/"
    content: |
      a directory ignores content
    state: exists
  - name: file1
    dirname: "/tmp/mgmt/"
    basename: f1
    content: |
      i am f1
    mode: 0644
    state: exists
  - name: file2
    path: "/tmp/mgmt/f2"
    state: absent
  - name: copy1
    path: "/tmp/mgmt/copy/"
    source: "/tmp/mgmt-source/"
    recurse: true
    force: true
edges:
- name: e1
  from:
    kind: timer
    name: timer1
  to:
    kind: exec
    name: exec1
  notify: true
- name: e2
  from:
    kind: noop
    name: noop1
  to:
    kind: msg
    name: msg1
"#);
    assert_eq!(spec.resources.len(), 8);
    assert_eq!(spec.edges.len(), 2);
    assert_eq!(
        spec.resources[0].resource.meta().retry,
        resource::Retry::Forever
    );
}

#[test]
fn mgmt_seed_remote_graph_loads_unchanged() {
    // mgmt's own remote2b, password in the URL and all: it is the `remote` crate that warns.
    let spec = ok(r#"---
graph: mygraph
comment: remote noop example
resources:
  file:
  - name: file1b
    path: "/tmp/file1b"
    content: |
      i am file1b
    state: exists
  - name: "@@file2b"
    path: "/tmp/file2b"
    content: |
      i am file2b, exported from host b
    state: exists
collect:
- kind: file
  pattern: "/tmp/"
edges: []
remote: ssh://root:vagrant@192.168.121.202:22
"#);
    assert_eq!(spec.exported().count(), 1);
}

#[test]
fn unimplemented_kind_is_named() {
    let err = yamlgraph::parse(
        "g.yaml",
        "graph: g\nresources:\n  virt:\n  - name: vm1\n",
        &resources::registry(),
    )
    .expect_err("virt is not implemented");
    assert_eq!(err.0.len(), 1);
    assert_eq!(
        err.0[0].message,
        "resource kind `virt` is not implemented yet"
    );
}

#[test]
fn real_kind_errors_point_at_their_fields() {
    let text = "\
graph: g
resources:
  file:
  - name: f1
    path: relative/path
    stat: exists
  exec:
  - name: e1
    cmd: echo
    timeout: soon
  msg:
  - name: m1
    priority: Loud
";
    let err = yamlgraph::parse("g.yaml", text, &resources::registry()).expect_err("bad graph");
    expect_test::expect![[r#"
        error: unknown field `stat` for resource kind `file`
         --> g.yaml:6:5
          |
        6 |     stat: exists
          |     ^^^^
          |
          = help: did you mean `state`?

        error: invalid `exec[e1]`: `timeout`: expected a non-negative integer, found `soon`
          --> g.yaml:10:14
           |
        10 |     timeout: soon
           |              ^^^^

        error: invalid `msg[m1]`: `priority`: unknown priority `Loud` (one of Emerg, Alert, Crit, Err, Warning, Notice, Info, Debug)
          --> g.yaml:13:15
           |
        13 |     priority: Loud
           |               ^^^^

        error: could not load `g.yaml` due to 3 previous errors
    "#]].assert_eq(&err.to_string());
}

#[test]
fn collect_notify_names_local_resources() {
    let spec = ok(r#"
graph: g
resources:
  file:
  - name: lines-dir
    path: /tmp/lines/
  exec:
  - name: concat
    cmd: cat /tmp/lines/* > /tmp/all
    shell: /bin/sh
  msg:
  - name: tell
edges:
- name: dir-concat
  from: {kind: file, name: lines-dir}
  to: {kind: exec, name: concat}
collect:
- kind: file
  pattern: /tmp/lines/
  notify:
  - {kind: exec, name: concat}
  - {kind: msg, name: tell}
  - {kind: EXEC, name: concat}
- kind: msg
  pattern: ""
"#);
    assert_eq!(
        spec.collect[0].notify,
        vec![ResId::new("exec", "concat"), ResId::new("msg", "tell")],
        "kinds are matched case-insensitively and a repeated target counts once"
    );
    assert!(spec.collect[1].notify.is_empty());
}

#[test]
fn collect_notify_that_leads_back_to_the_collect_directory_is_a_cycle() {
    // Collected files depend on the file resource managing their directory (automatic edge);
    // notifying it, or anything that leads to it, closes a cycle the engine would reject on
    // every swap.
    let text = "\
graph: g
resources:
  file:
  - name: lines-dir
    path: /tmp/lines/
  - name: top
    path: /tmp/
  exec:
  - name: concat
    cmd: 'true'
  - name: before
    cmd: 'true'
edges:
- name: before-top
  from: {kind: exec, name: before}
  to: {kind: file, name: top}
collect:
- kind: file
  pattern: /tmp/lines/
  notify:
  - {kind: exec, name: concat}
  - {kind: exec, name: before}
";
    let err = yamlgraph::parse("graph.yaml", text, &resources::registry())
        .expect_err("the notify edge closes a cycle");
    expect_test::expect![[r#"
        error: `notify` of a collect rule closes a cycle: exec[before] -> file[top] -> file[lines-dir] -> file[<collected>] -> exec[before]
          --> graph.yaml:22:24
           |
        22 |   - {kind: exec, name: before}
           |                        ^^^^^^
           |
           = help: collected resources depend on whatever manages where they land (automatic edges): notify a resource that does not lead back to them
    "#]].assert_eq(&err.to_string());
}

#[test]
fn an_absent_file_with_content_loads_with_a_warning_at_the_content() {
    // mgmt ignores the content of an absent file; refusing it would refuse mgmt's graphs.
    let spec = ok("graph: g
resources:
  file:
  - name: gone
    path: /tmp/mgmt/gone
    content: |
      ignored
    state: absent
");
    assert_eq!(
        spec.resources[0].resource.params(),
        serde_json::json!({"path": "/tmp/mgmt/gone", "state": "absent", "force": false, "recurse": false})
    );
    let warnings: Vec<String> = spec.warnings.iter().map(|w| w.one_line()).collect();
    assert_eq!(
        warnings,
        [
            "graph.yaml:6:5: `file[gone]`: `content` of an absent file is ignored (the file is removed)"
        ]
    );
    assert!(
        spec.warnings[0]
            .warning()
            .starts_with("warning: `file[gone]`")
    );
}
