//! Graphs written for mgmt 0.0.x load, and what they say arrives intact in the `GraphSpec`:
//! leading `---`, empty string = unset, `timeout: 0`, exec `state: present` and `pollint`, msg
//! fields, directory paths, `dirname`/`basename`, every meta field, nested edges, exports and
//! collect rules.

mod common;

use std::time::Duration;

use resource::{Meta, Rate, ResId, Retry, Semaphores};
use serde_json::json;

fn ok(text: &str) -> yamlgraph::GraphSpec {
    match yamlgraph::parse("graph.yaml", text, &common::registry()) {
        Ok(spec) => spec,
        Err(d) => panic!("expected a graph, got:\n{d}"),
    }
}

fn params(spec: &yamlgraph::GraphSpec, kind: &str, name: &str) -> serde_json::Value {
    let r = spec
        .resources
        .iter()
        .find(|r| r.resource.kind() == kind && r.resource.name() == name);
    r.unwrap_or_else(|| panic!("no {kind}[{name}]"))
        .resource
        .params()
}

const REMOTE2A: &str = r#"---
graph: mygraph
comment: remote noop example
resources:
  file:
  - name: file1a
    path: "/tmp/file1a"
    content: |
      i am file1a
    state: exists
  - name: "@@file2a"
    path: "/tmp/file2a"
    content: |
      i am file2a, exported from host a
    state: exists
collect:
- kind: file
  pattern: "/tmp/"
edges: []
remote: ssh://root:vagrant@192.168.121.201:22
"#;

#[test]
fn seed_remote_graph_loads_with_export_and_collect() {
    let spec = ok(REMOTE2A);
    assert_eq!(spec.graph, "mygraph");
    assert_eq!(spec.comment.as_deref(), Some("remote noop example"));
    assert_eq!(
        spec.remote.as_deref(),
        Some("ssh://root:vagrant@192.168.121.201:22")
    );
    let summary: Vec<(String, bool, usize)> = spec
        .resources
        .iter()
        .map(|r| (r.resource.id().to_string(), r.exported, r.span.line))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("file[file1a]".to_string(), false, 6),
            ("file[file2a]".to_string(), true, 11)
        ]
    );
    assert_eq!(
        params(&spec, "file", "file2a")["content"],
        "i am file2a, exported from host a\n"
    );
    assert_eq!(spec.collect.len(), 1);
    assert_eq!(
        (
            spec.collect[0].kind.as_str(),
            spec.collect[0].pattern.as_str()
        ),
        ("file", "/tmp/")
    );
    assert!(spec.edges.is_empty());

    let local = spec.local_graph();
    let ids: Vec<String> = local.vertices.iter().map(|r| r.id().to_string()).collect();
    assert_eq!(ids, vec!["file[file1a]"]);
    let exported: Vec<String> = spec.exported().map(|r| r.id().to_string()).collect();
    assert_eq!(exported, vec!["file[file2a]"]);
}

#[test]
fn exec_with_empty_strings_zero_timeout_state_present_and_pollint() {
    let spec = ok("---
graph: mygraph
resources:
  exec:
  - name: exec1
    cmd: sleep 10s
    shell: ''
    timeout: 0
    watchcmd: ''
    watchshell: ''
    ifcmd: ''
    ifshell: ''
    pollint: 0
    state: present
  - name: exec2
    cmd: echo hi
    shell:
edges:
- name: e1
  from:
    kind: exec
    name: exec1
  to:
    kind: exec
    name: exec2
  notify: true
");
    // Empty strings go through for the kind to read as unset; an empty value is left out.
    assert_eq!(
        params(&spec, "exec", "exec1"),
        json!({"cmd": "sleep 10s", "shell": "", "timeout": 0, "watchcmd": "", "watchshell": "",
               "ifcmd": "", "ifshell": "", "pollint": 0, "state": "present"})
    );
    assert_eq!(params(&spec, "exec", "exec2"), json!({"cmd": "echo hi"}));
    assert_eq!(spec.edges.len(), 1);
    let e = &spec.edges[0];
    assert_eq!(
        (e.name.as_str(), &e.from, &e.to, e.notify),
        (
            "e1",
            &ResId::new("exec", "exec1"),
            &ResId::new("exec", "exec2"),
            true
        )
    );
    assert_eq!((e.span.line, e.span.col), (19, 3));
    let g = spec.local_graph();
    assert_eq!(
        g.edges,
        vec![resource::Edge {
            from: ResId::new("exec", "exec1"),
            to: ResId::new("exec", "exec2"),
            notify: true
        }]
    );
}

#[test]
fn msg_fields_pass_through() {
    let spec = ok("---
graph: mygraph
resources:
  msg:
  - name: msg1
    body: mgmt logged this message
    priority: Info
    fields:
      foo: bar
      answer: 42
    journal: true
    syslog: false
");
    assert_eq!(
        params(&spec, "msg", "msg1"),
        json!({"body": "mgmt logged this message", "priority": "Info",
               "fields": {"foo": "bar", "answer": 42}, "journal": true, "syslog": false})
    );
}

#[test]
fn file_directory_paths_dirname_basename_and_octal_looking_modes() {
    let spec = ok("---
graph: mygraph
resources:
  file:
  - name: dir
    path: /tmp/mgmt/
    content: ignored for a directory
    state: exists
  - name: split
    dirname: /tmp/mgmt/
    basename: f1
    mode: 0644
    recurse: false
    force: false
  - name: numeric-content
    path: /tmp/mgmt/n
    content: 42
");
    assert_eq!(params(&spec, "file", "dir")["path"], "/tmp/mgmt/");
    assert_eq!(
        params(&spec, "file", "split"),
        json!({"dirname": "/tmp/mgmt/", "basename": "f1", "mode": "0644", "recurse": false, "force": false})
    );
    // mgmt read a plain `42` into a string field as its text.
    assert_eq!(params(&spec, "file", "numeric-content")["content"], "42");
}

#[test]
fn every_meta_field() {
    let spec = ok("---
graph: mygraph
resources:
  noop:
  - name: n1
    meta:
      autoedge: false
      autogroup: false
      noop: true
      retry: -1
      delay: 500
      poll: 5
      limit: .inf
      burst: 0
      sema: ['mylock:1', 'otherlock:42']
  - name: n2
    meta:
      limit: 2.5
      burst: 3
  - name: n3
");
    let meta = |name: &str| {
        spec.resources
            .iter()
            .find(|r| r.resource.name() == name)
            .expect("resource")
            .resource
            .meta()
            .clone()
    };
    assert_eq!(
        meta("n1"),
        Meta {
            retry: Retry::Forever,
            delay: Duration::from_millis(500),
            poll: Some(Duration::from_secs(5)),
            // `.inf` is no limit.
            limit: None,
            burst: 0,
            noop: true,
            autoedge: false,
            autogroup: false,
            sema: Semaphores::parse(["mylock:1", "otherlock:42"]).unwrap(),
        }
    );
    assert_eq!(
        (meta("n2").limit.map(Rate::get), meta("n2").burst),
        (Some(2.5), 3)
    );
    assert_eq!(meta("n3"), Meta::default());
}

#[test]
fn empty_sections_and_capitalised_edge_kinds() {
    let spec = ok("---
graph: mygraph
resources:
  noop:
  - name: a
  - name: b
  file:
edges:
- name: e1
  from: {kind: Noop, name: a}
  to: {kind: NOOP, name: b}
collect:
");
    assert_eq!(spec.resources.len(), 2);
    assert_eq!(spec.edges[0].from, ResId::new("noop", "a"));
    assert_eq!(spec.edges[0].to, ResId::new("noop", "b"));
    assert!(!spec.edges[0].notify);
    assert!(spec.collect.is_empty());
}

#[test]
fn remotes_list_and_non_string_names() {
    let spec = ok(
        "graph: g\nremotes:\n- child1.yaml\n- sub/child2.yaml\nresources:\n  noop:\n  - name: 1\n",
    );
    assert_eq!(spec.remotes, vec!["child1.yaml", "sub/child2.yaml"]);
    assert_eq!(spec.resources[0].resource.name(), "1");
    assert!(spec.remote.is_none());
}

#[test]
fn sudo_is_a_boolean_next_to_remote() {
    let spec = ok("graph: g\nremote: ssh://u@h\nsudo: true\n");
    assert_eq!(spec.sudo, Some(true));
    assert_eq!(ok("graph: g\nsudo: false\n").sudo, Some(false));
    assert_eq!(ok("graph: g\n").sudo, None);
    let err = yamlgraph::parse(
        "g.yaml",
        "graph: g\nsudo: yes please\n",
        &common::registry(),
    )
    .expect_err("not a boolean");
    assert!(
        err.0[0].message.contains("`sudo` must be true or false"),
        "{err}"
    );
    assert_eq!((err.0[0].line, err.0[0].col), (2, 7));
}

#[test]
fn parse_file_reads_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("yamlgraph-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("g.yaml");
    std::fs::write(&path, "graph: g\nbogus: 1\n").expect("write");
    let err = yamlgraph::parse_file(&path, &common::registry()).expect_err("unknown key");
    assert_eq!(err.0[0].file, path.display().to_string());
    assert_eq!((err.0[0].line, err.0[0].col), (2, 1));
    std::fs::remove_dir_all(&dir).expect("cleanup");

    let missing = yamlgraph::parse_file(dir.join("nope.yaml"), &common::registry())
        .expect_err("missing file");
    assert!(
        missing.to_string().starts_with("error: cannot read `"),
        "{missing}"
    );
}

#[test]
fn deeply_nested_values_are_an_error_not_a_crash() {
    let depth = 100_000;
    let text = format!(
        "graph: g\nresources:\n  msg:\n  - name: m\n    fields: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let err = yamlgraph::parse("g.yaml", &text, &common::registry()).expect_err("too deep");
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].message, "invalid YAML: recursion limit exceeded");
}

#[test]
fn first_release_spellings_types_res_and_type() {
    // mgmt's earliest graphs: `types:` for resources, `res:`/`type:` for kinds.
    let spec = ok("---
graph: mygraph
types:
  noop:
  - name: noop1
  file:
  - name: file1
    path: /tmp/mgmt/f1
  - name: \"@@file2\"
    path: /tmp/mgmt/f2
collect:
- type: file
  pattern: /tmp/mgmt/
edges:
- name: e1
  from:
    res: noop
    name: noop1
  to:
    type: file
    name: file1
");
    assert_eq!(spec.resources.len(), 3);
    assert_eq!(spec.edges[0].from, ResId::new("noop", "noop1"));
    assert_eq!(spec.edges[0].to, ResId::new("file", "file1"));
    assert_eq!(spec.collect[0].kind, "file");
}

#[test]
fn retrying_fields_as_text_keeps_every_other_field() {
    // Two string fields written as a number and a boolean: each retried as its text in turn,
    // while the typed fields and the other strings go to every attempt unchanged.
    let spec = ok("graph: g
resources:
  file:
  - name: f
    path: /tmp/mgmt/f
    content: 42
    owner: true
    recurse: true
    mode: 0644
");
    assert_eq!(
        params(&spec, "file", "f"),
        json!({"path": "/tmp/mgmt/f", "content": "42", "owner": "true", "recurse": true, "mode": "0644"})
    );
}
