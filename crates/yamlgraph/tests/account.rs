//! `user` and `group` graphs: mgmt's field names load, bad values are reported at their place
//! (file:line:col), params round-trip through the registry (what exports publish), and a user
//! comes after the group resources it names.

mod real;

use real::{errors, find, ok};
use resource::Meta;
use serde_json::json;

const GRAPH: &str = r#"---
graph: accounts
resources:
  group:
  - name: web
    state: exists
    gid: 1500
  - name: ops
    members: [alice]
  user:
  - name: alice
    state: exists
    uid: 1200
    group: web
    groups: [ops, audio]
    homedir: /home/alice/
    shell: /bin/bash
    comment: "Alice A,,,"
    password: "$y$j9T$abcdefghijklmnop$0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg"
  - name: old
    state: absent
edges: []
"#;

#[test]
fn mgmt_names_load_and_params_round_trip_through_the_registry() {
    let spec = ok(GRAPH);
    let alice = find(&spec, "user", "alice");
    assert_eq!(
        alice.params(),
        json!({"state": "exists", "uid": 1200, "group": "web", "groups": ["audio", "ops"],
               "homedir": "/home/alice", "shell": "/bin/bash", "comment": "Alice A,,,",
               "password": "$y$j9T$abcdefghijklmnop$0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg"})
    );
    assert_eq!(
        find(&spec, "user", "old").params(),
        json!({"state": "absent"})
    );
    assert_eq!(
        find(&spec, "group", "ops").params(),
        json!({"state": "exists", "members": ["alice"]})
    );
    let registry = resources::registry();
    for r in &spec.resources {
        let r = r.resource.as_ref();
        let again = registry
            .build(r.kind(), r.name(), r.params(), Meta::default())
            .unwrap();
        assert_eq!(again.params(), r.params(), "{}", r.id());
    }
}

#[test]
fn a_user_comes_after_the_groups_it_names() {
    let spec = ok(GRAPH);
    let mut edges = real::edges(&spec);
    edges.sort();
    assert_eq!(
        edges,
        ["group[ops] -> user[alice]", "group[web] -> user[alice]"]
    );
}

#[test]
fn bad_values_are_reported_where_they_are() {
    let e = errors("graph: g\nresources:\n  user:\n  - name: alice\n    shell: bin/bash\n");
    assert!(e.contains("graph.yaml:5:12"), "{e}");
    assert!(e.contains("`bin/bash` is not an absolute path"), "{e}");
    let e = errors("graph: g\nresources:\n  user:\n  - name: -oroot\n");
    assert!(e.contains("graph.yaml:4:11"), "{e}");
    assert!(e.contains("must not start with `-`"), "{e}");
    let e = errors("graph: g\nresources:\n  user:\n  - name: alice\n    password: hunter2\n");
    assert!(e.contains("graph.yaml:5:15"), "{e}");
    assert!(e.contains("already-crypted hash"), "{e}");
    // The message never repeats the value (the snippet of the file may show it).
    let e = errors("graph: g\nresources:\n  group:\n  - name: web\n    state: present\n");
    assert!(e.contains("graph.yaml:5:12"), "{e}");
    assert!(e.contains("expected `exists` or `absent`"), "{e}");
    let e = errors("graph: g\nresources:\n  group:\n  - name: web\n    member: [a]\n");
    assert!(e.contains("unknown field `member`"), "{e}");
    assert!(e.contains("members"), "{e}");
}
