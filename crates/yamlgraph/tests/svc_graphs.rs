//! mgmt's svc graphs (examples/yaml/svc1.yaml, svc2.yaml and the svc of autoedges3.yaml) load
//! unchanged with the real `svc` kind, bad values are reported at their place, and a svc
//! depends on the file resource of its unit file.

mod real;

use real::{errors, ok};
use resource::{ResId, Resource};
use serde_json::json;

fn svc<'a>(spec: &'a yamlgraph::GraphSpec, name: &str) -> &'a dyn Resource {
    real::find(spec, "svc", name)
}

/// mgmt's examples/yaml/svc1.yaml, as it is.
const SVC1: &str = r#"---
graph: mygraph
resources:
  noop:
  - name: noop1
  file:
  - name: file1
    path: "/tmp/mgmt/f1"
    content: |
      i am f1
    state: exists
  svc:
  - name: purpleidea
    state: running
    startup: enabled
edges:
- name: e1
  from:
    kind: noop
    name: noop1
  to:
    kind: file
    name: file1
- name: e2
  from:
    kind: file
    name: file1
  to:
    kind: svc
    name: purpleidea
"#;

/// mgmt's examples/yaml/svc2.yaml, as it is.
const SVC2: &str = r#"---
graph: mygraph
resources:
  svc:
  - name: purpleidea
    state: running
    session: true
edges: []
"#;

#[test]
fn mgmt_svc_examples_load() {
    let spec = ok(SVC1);
    assert_eq!(
        svc(&spec, "purpleidea").params(),
        json!({"state": "running", "startup": "enabled"})
    );
    let e2 = spec.edges.iter().find(|e| e.name == "e2").expect("edge e2");
    assert_eq!(e2.to, ResId::new("svc", "purpleidea"));
    let spec = ok(SVC2);
    assert_eq!(
        svc(&spec, "purpleidea").params(),
        json!({"state": "running", "session": true})
    );
}

#[test]
fn mgmt_autoedges3_svc_loads() {
    // The svc of mgmt's examples/yaml/autoedges3.yaml (its pkg is another kind's business).
    let spec = ok(r#"---
graph: mygraph
resources:
  svc:
  - name: drbd
    meta:
      autoedge: true
      noop: true
    state: stopped
edges: []
"#);
    let r = svc(&spec, "drbd");
    assert_eq!(r.params(), json!({"state": "stopped"}));
    assert!(r.meta().noop && r.meta().autoedge);
}

#[test]
fn empty_values_are_unset_and_refresh_is_accepted() {
    let spec = ok(r#"
graph: g
resources:
  svc:
  - name: sshd.service
    state: ""
    startup: ""
    session: false
  - name: nginx
    state: running
    refresh: reload
"#);
    assert_eq!(svc(&spec, "sshd.service").params(), json!({}));
    assert_eq!(
        svc(&spec, "nginx").params(),
        json!({"state": "running", "refresh": "reload"})
    );
}

#[test]
fn bad_values_and_names_are_reported_where_they_are() {
    let text = "graph: g\nresources:\n  svc:\n  - name: sshd\n    state: started\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:5:12"), "{e}");
    assert!(
        e.contains("`state`: unknown value `started`, expected `running` or `stopped` (did you mean `running`?)"),
        "{e}"
    );
    let text = "graph: g\nresources:\n  svc:\n  - name: my app\n    state: running\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:4:11"), "{e}");
    assert!(e.contains("`my app` is not a valid unit name"), "{e}");
    let text = "graph: g\nresources:\n  svc:\n  - name: sshd\n    startup: yes\n";
    let e = errors(text);
    assert!(e.contains("unknown value `yes`"), "{e}");
    let text = "graph: g\nresources:\n  svc:\n  - name: sshd\n    enabled: true\n";
    let e = errors(text);
    assert!(
        e.contains("unknown field `enabled` for resource kind `svc`"),
        "{e}"
    );
}

#[test]
fn a_unit_file_resource_comes_before_its_svc() {
    let spec = ok(r#"
graph: g
resources:
  file:
  - name: unit
    path: /etc/systemd/system/x.service
    content: "[Service]\nExecStart=/bin/sleep infinity\n"
  svc:
  - name: x
    state: running
"#);
    let edges = real::edges(&spec);
    assert_eq!(edges, ["file[unit] -> svc[x]"]);
}
