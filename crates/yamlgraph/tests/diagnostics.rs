//! Snapshots of the rendered diagnostics for bad graphs: each must name the file, line and
//! column, show the line with a caret under the culprit, and help where it can.

mod common;

use expect_test::expect;

/// The rendered diagnostics of a graph that must fail.
fn errors(text: &str) -> String {
    match yamlgraph::parse("graph.yaml", text, &common::registry()) {
        Ok(spec) => panic!("expected errors, got a graph: {spec:?}"),
        Err(d) => d.to_string(),
    }
}

#[test]
fn yaml_syntax_error() {
    let text = "graph: g\nresources:\n  file:\n  - name: a\n    path: [unclosed\n";
    expect![[r#"
        error: invalid YAML: while parsing a flow sequence, expected ',' or ']'
         --> graph.yaml:5:20
          |
        5 |     path: [unclosed
          |                    ^
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn duplicate_yaml_key_is_a_syntax_error() {
    let text = "graph: g\ngraph: h\n";
    expect![[r#"
        error: invalid YAML: duplicated key in mapping
         --> graph.yaml:2:1
          |
        2 | graph: h
          | ^
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn empty_file() {
    expect![[r#"
        error: missing `graph`: the file is empty
         --> graph.yaml:1:1
          |
        1 | # nothing here
          | ^
          |
          = help: start the file with `graph: NAME`
    "#]]
    .assert_eq(&errors("# nothing here\n"));
}

#[test]
fn missing_graph() {
    let text = "---\ncomment: no name\nresources:\n  noop:\n  - name: n1\n";
    expect![[r#"
        error: missing `graph`
         --> graph.yaml:2:1
          |
        2 | comment: no name
          | ^
          |
          = help: add `graph: NAME` at the top level
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn empty_graph_name() {
    expect![[r#"
        error: `graph` must not be empty
         --> graph.yaml:1:8
          |
        1 | graph: ''
          |        ^^
          |
          = help: name the graph: `graph: mygraph`
    "#]]
    .assert_eq(&errors("graph: ''\n"));
    expect![[r#"
        error: `graph` must not be empty
         --> graph.yaml:1:1
          |
        1 | graph:
          | ^^^^^
          |
          = help: name the graph: `graph: mygraph`
    "#]]
    .assert_eq(&errors("graph:\n"));
}

#[test]
fn top_level_must_be_a_mapping() {
    expect![[r#"
        error: expected a mapping at the top level, found a list
         --> graph.yaml:1:1
          |
        1 | - graph: g
          | ^
          |
          = help: start the file with `graph: NAME`
    "#]]
    .assert_eq(&errors("- graph: g\n"));
}

#[test]
fn unknown_top_level_key() {
    let text = "graph: g\nresource:\n  noop: []\n";
    expect![[r#"
        error: unknown top-level key `resource`
         --> graph.yaml:2:1
          |
        2 | resource:
          | ^^^^^^^^
          |
          = help: did you mean `resources`?
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn unknown_kind_with_suggestion() {
    let text = "graph: g\nresources:\n  fiel:\n  - name: f1\n    path: /tmp/f1\n";
    expect![[r#"
        error: unknown resource kind `fiel`
         --> graph.yaml:3:3
          |
        3 |   fiel:
          |   ^^^^
          |
          = help: did you mean `file`?
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn unknown_kind_without_suggestion_lists_kinds() {
    let text = "graph: g\nresources:\n  frobnicator:\n  - name: x\n";
    expect![[r#"
        error: unknown resource kind `frobnicator`
         --> graph.yaml:3:3
          |
        3 |   frobnicator:
          |   ^^^^^^^^^^^
          |
          = help: valid kinds: `exec`, `file`, `msg`, `noop`, `timer`
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn unimplemented_kind() {
    let text = "graph: g\nresources:\n  svc:\n  - name: sshd\n    state: running\n";
    expect![[r#"
        error: resource kind `svc` is not implemented yet
         --> graph.yaml:3:3
          |
        3 |   svc:
          |   ^^^
          |
          = help: implemented kinds: `exec`, `file`, `msg`, `noop`, `timer`
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn unknown_field_with_suggestion() {
    let text =
        "graph: g\nresources:\n  file:\n  - name: f1\n    path: /tmp/f1\n    contnet: hello\n";
    expect![[r#"
        error: unknown field `contnet` for resource kind `file`
         --> graph.yaml:6:5
          |
        6 |     contnet: hello
          |     ^^^^^^^
          |
          = help: did you mean `content`?
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn wrong_value_type() {
    let text =
        "graph: g\nresources:\n  exec:\n  - name: e1\n    cmd: echo hi\n    timeout: [1, 2]\n";
    expect![[r#"
        error: invalid `exec[e1]`: `timeout`: expected a non-negative integer, found `[1,2]`
         --> graph.yaml:6:14
          |
        6 |     timeout: [1, 2]
          |              ^
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn wrong_value_type_in_a_string_field_is_not_rescued_when_not_plain() {
    let text = "graph: g\nresources:\n  file:\n  - name: f1\n    content: {a: b}\n";
    expect![[r#"
        error: invalid `file[f1]`: `content`: expected a string, found `{"a":"b"}`
         --> graph.yaml:5:14
          |
        5 |     content: {a: b}
          |              ^
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn missing_required_field_points_at_the_name() {
    let text = "graph: g\nresources:\n  exec:\n  - name: e1\n    shell: /bin/sh\n";
    expect![[r#"
        error: invalid `exec[e1]`: `cmd`: missing
         --> graph.yaml:4:11
          |
        4 |   - name: e1
          |           ^^
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn resource_without_name() {
    let text = "graph: g\nresources:\n  file:\n  - path: /tmp/f1\n";
    expect![[r#"
        error: `file` resource has no `name`
         --> graph.yaml:4:5
          |
        4 |   - path: /tmp/f1
          |     ^
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn duplicate_resource() {
    let text = "graph: g\nresources:\n  file:\n  - name: f1\n    path: /tmp/a\n  - name: f1\n    path: /tmp/b\n";
    expect![[r#"
        error: duplicate resource `file[f1]`
         --> graph.yaml:6:11
          |
        6 |   - name: f1
          |           ^^
          |
          = help: `file[f1]` is first defined on line 4
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn exported_and_local_resource_of_one_name_collide() {
    let text = "graph: g\nresources:\n  file:\n  - name: f1\n  - name: \"@@f1\"\n";
    expect![[r#"
        error: duplicate resource `file[f1]`
         --> graph.yaml:5:11
          |
        5 |   - name: "@@f1"
          |           ^^^^^^
          |
          = help: `file[f1]` is first defined on line 4
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn bad_meta() {
    let text = "graph: g\nresources:\n  noop:\n  - name: n1\n    meta:\n      retyr: 3\n      delay: soon\n      noop: maybe\n      sema: [db, 'lock:0']\n";
    expect![[r#"
        error: unknown meta field `retyr`
         --> graph.yaml:6:7
          |
        6 |       retyr: 3
          |       ^^^^^
          |
          = help: did you mean `retry`?

        error: invalid value for `meta.delay`: invalid type: string "soon", expected u64
         --> graph.yaml:7:14
          |
        7 |       delay: soon
          |              ^^^^

        error: invalid value for `meta.noop`: invalid type: string "maybe", expected a boolean
         --> graph.yaml:8:13
          |
        8 |       noop: maybe
          |             ^^^^^

        error: invalid value for `meta.sema`: sema `lock:0`: the count must be at least 1
         --> graph.yaml:9:13
          |
        9 |       sema: [db, 'lock:0']
          |             ^

        error: could not load `graph.yaml` due to 4 previous errors
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn edge_to_unknown_vertex_with_suggestion() {
    let text = "\
graph: g
resources:
  file:
  - name: file1
  - name: file2
edges:
- name: e1
  from:
    kind: file
    name: file1
  to:
    kind: file
    name: fiel2
";
    expect![[r#"
        error: edge `e1`: no resource `file[fiel2]` in this graph
          --> graph.yaml:13:11
           |
        13 |     name: fiel2
           |           ^^^^^
           |
           = help: did you mean `file[file2]`?
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn edge_shape_errors() {
    let text = "\
graph: g
resources:
  noop:
  - name: n1
edges:
- name: e1
  from: noop1
  to: {kind: noop}
  notify: yes
- name: e2
  from: {kind: noop, name: n1}
  form: {kind: noop, name: n1}
";
    expect![[r#"
        error: `from` must be a mapping with `kind` and `name`, found a string
         --> graph.yaml:7:9
          |
        7 |   from: noop1
          |         ^^^^^
          |
          = help: write `from: {kind: KIND, name: NAME}`

        error: `to` has no `name`
         --> graph.yaml:8:7
          |
        8 |   to: {kind: noop}
          |       ^
          |
          = help: write `to: {kind: KIND, name: NAME}`

        error: `notify` must be true or false, found a string
         --> graph.yaml:9:11
          |
        9 |   notify: yes
          |           ^^^
          |
          = help: write `notify: true` or `notify: false`

        error: edge `e2` has no `to`
          --> graph.yaml:10:3
           |
        10 | - name: e2
           |   ^
           |
           = help: write `to: {kind: KIND, name: NAME}`

        error: unknown edge field `form`
          --> graph.yaml:12:3
           |
        12 |   form: {kind: noop, name: n1}
           |   ^^^^
           |
           = help: did you mean `from`?

        error: could not load `graph.yaml` due to 5 previous errors
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn exported_resource_as_edge_endpoint() {
    let text = "\
graph: g
resources:
  file:
  - name: file1a
  - name: \"@@file2a\"
edges:
- name: e1
  from: {kind: file, name: file1a}
  to: {kind: file, name: \"@@file2a\"}
- name: e2
  from: {kind: file, name: file2a}
  to: {kind: file, name: file1a}
";
    expect![[r#"
        error: edge `e1`: exported resource `file[file2a]` cannot be an edge endpoint
         --> graph.yaml:9:26
          |
        9 |   to: {kind: file, name: "@@file2a"}
          |                          ^^^^^^^^^^
          |
          = help: exported (`@@`) resources are applied by the hosts that collect them, not in this graph

        error: edge `e2`: exported resource `file[file2a]` cannot be an edge endpoint
          --> graph.yaml:11:28
           |
        11 |   from: {kind: file, name: file2a}
           |                            ^^^^^^
           |
           = help: exported (`@@`) resources are applied by the hosts that collect them, not in this graph

        error: could not load `graph.yaml` due to 2 previous errors
    "#]].assert_eq(&errors(text));
}

#[test]
fn cycle_names_its_vertices_in_order() {
    let text = "\
graph: g
resources:
  exec:
  - name: a
    cmd: 'true'
  - name: b
    cmd: 'true'
  - name: c
    cmd: 'true'
edges:
- name: e1
  from: {kind: exec, name: a}
  to: {kind: exec, name: b}
- name: e2
  from: {kind: exec, name: b}
  to: {kind: exec, name: c}
- name: e3
  from: {kind: exec, name: c}
  to: {kind: exec, name: b}
";
    expect![[r#"
        error: the edges form a cycle: exec[b] -> exec[c] -> exec[b]
          --> graph.yaml:14:3
           |
        14 | - name: e2
           |   ^
           |
           = help: a graph must be acyclic: remove or reverse one of these edges
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn collect_needs_kind_and_pattern() {
    let text = "\
graph: g
collect:
- kind: file
- pattern: /tmp/
- kind: fiel
  pattern: /tmp/
- kind: file
  patern: /tmp/
";
    expect![[r#"
        error: collect rule has no `pattern`
         --> graph.yaml:3:3
          |
        3 | - kind: file
          |   ^
          |
          = help: write `- kind: file` and `pattern: /tmp/`

        error: collect rule has no `kind`
         --> graph.yaml:4:3
          |
        4 | - pattern: /tmp/
          |   ^
          |
          = help: write `- kind: file` and `pattern: /tmp/`

        error: unknown resource kind `fiel`
         --> graph.yaml:5:9
          |
        5 | - kind: fiel
          |         ^^^^
          |
          = help: did you mean `file`?

        error: collect rule has no `pattern`
         --> graph.yaml:7:3
          |
        7 | - kind: file
          |   ^
          |
          = help: write `- kind: file` and `pattern: /tmp/`

        error: unknown collect field `patern`
         --> graph.yaml:8:3
          |
        8 |   patern: /tmp/
          |   ^^^^^^
          |
          = help: did you mean `pattern`?

        error: could not load `graph.yaml` due to 5 previous errors
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn collect_notify_targets_must_be_local_resources() {
    let text = "\
graph: g
resources:
  exec:
  - name: concat
    cmd: 'true'
  - name: \"@@shared\"
    cmd: 'true'
collect:
- kind: file
  pattern: /tmp/lines/
  notify:
  - {kind: exec, name: conact}
  - {kind: exec, name: shared}
  - {kind: exec, name: \"@@shared\"}
  - {kind: exec}
  - {kind: exec, name: concat, notify: true}
- kind: file
  pattern: /tmp/other/
  notify: {kind: exec, name: concat}
";
    expect![[r#"
        error: `notify` of a collect rule: no resource `exec[conact]` in this graph
          --> graph.yaml:12:24
           |
        12 |   - {kind: exec, name: conact}
           |                        ^^^^^^
           |
           = help: did you mean `exec[concat]`?

        error: `notify` of a collect rule: exported resource `exec[shared]` cannot be an edge endpoint
          --> graph.yaml:13:24
           |
        13 |   - {kind: exec, name: shared}
           |                        ^^^^^^
           |
           = help: exported (`@@`) resources are applied by the hosts that collect them, not in this graph

        error: `notify` of a collect rule: exported resource `exec[shared]` cannot be an edge endpoint
          --> graph.yaml:14:24
           |
        14 |   - {kind: exec, name: "@@shared"}
           |                        ^^^^^^^^^^
           |
           = help: exported (`@@`) resources are applied by the hosts that collect them, not in this graph

        error: `notify` has no `name`
          --> graph.yaml:15:5
           |
        15 |   - {kind: exec}
           |     ^
           |
           = help: write `notify: [{kind: KIND, name: NAME}]`

        error: unknown field `notify` in `notify`
          --> graph.yaml:16:32
           |
        16 |   - {kind: exec, name: concat, notify: true}
           |                                ^^^^^^
           |
           = help: valid fields: `kind`, `name`

        error: `notify` of a collect rule must be a list of resources, found a mapping
          --> graph.yaml:19:11
           |
        19 |   notify: {kind: exec, name: concat}
           |           ^
           |
           = help: write `notify: [{kind: KIND, name: NAME}]`

        error: could not load `graph.yaml` due to 6 previous errors
    "#]].assert_eq(&errors(text));
}

#[test]
fn many_errors_in_one_file_are_reported_together() {
    let text = "\
---
graph: g
comment: everything wrong at once
resources:
  file:
  - name: f1
    path: /tmp/f1
    contnet: hi
  - name: f1
  fiel:
  - name: x
  svc:
  - name: sshd
  exec:
  - name: e1
    cmd: echo
    timeout: [0]
edges:
- name: e1
  from: {kind: file, name: f1}
  to: {kind: exec, name: e2}
colect: []
";
    expect![[r#"
        error: unknown field `contnet` for resource kind `file`
         --> graph.yaml:8:5
          |
        8 |     contnet: hi
          |     ^^^^^^^
          |
          = help: did you mean `content`?

        error: duplicate resource `file[f1]`
         --> graph.yaml:9:11
          |
        9 |   - name: f1
          |           ^^
          |
          = help: `file[f1]` is first defined on line 6

        error: unknown resource kind `fiel`
          --> graph.yaml:10:3
           |
        10 |   fiel:
           |   ^^^^
           |
           = help: did you mean `file`?

        error: resource kind `svc` is not implemented yet
          --> graph.yaml:12:3
           |
        12 |   svc:
           |   ^^^
           |
           = help: implemented kinds: `exec`, `file`, `msg`, `noop`, `timer`

        error: invalid `exec[e1]`: `timeout`: expected a non-negative integer, found `[0]`
          --> graph.yaml:17:14
           |
        17 |     timeout: [0]
           |              ^

        error: edge `e1`: no resource `exec[e2]` in this graph
          --> graph.yaml:21:26
           |
        21 |   to: {kind: exec, name: e2}
           |                          ^^
           |
           = help: did you mean `exec[e1]`?

        error: unknown top-level key `colect`
          --> graph.yaml:22:1
           |
        22 | colect: []
           | ^^^^^^
           |
           = help: did you mean `collect`?

        error: could not load `graph.yaml` due to 7 previous errors
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn unsupported_tag_and_infinite_number() {
    // `.inf` reads as text in a string field (as in mgmt), and is rejected by a numeric one.
    let text = "graph: g\nresources:\n  file:\n  - name: f1\n    content: !secret abc\n  - name: f2\n    content: .inf\n  exec:\n  - name: e1\n    cmd: x\n    timeout: .inf\n";
    expect![[r#"
        error: invalid value for `content` of `file[f1]`: YAML tag `!secret` is not supported here
         --> graph.yaml:5:14
          |
        5 |     content: !secret abc
          |              ^^^^^^^^^^^

        error: invalid `exec[e1]`: `timeout`: expected a non-negative integer, found `".inf"`
          --> graph.yaml:11:14
           |
        11 |     timeout: .inf
           |              ^^^^

        error: could not load `graph.yaml` due to 2 previous errors
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn second_document() {
    let text = "---\ngraph: a\n---\ngraph: b\n";
    expect![[r#"
        error: a graph file holds one YAML document, this one has 2
         --> graph.yaml:4:1
          |
        4 | graph: b
          | ^
          |
          = help: split the documents into separate graph files
    "#]]
    .assert_eq(&errors(text));
}

#[test]
fn out_of_range_meta_values() {
    let text = "graph: g\nresources:\n  noop:\n  - name: n1\n    meta:\n      retry: -2\n      limit: -.inf\n      poll: -1\n";
    expect![[r#"
        error: invalid value for `meta.retry`: -2 is out of range: write -1 to retry forever or a count from 0 to 4294967295
         --> graph.yaml:6:14
          |
        6 |       retry: -2
          |              ^^

        error: invalid value for `meta.limit`: -inf is out of range: write a rate above 0 (0 or .inf: no limit)
         --> graph.yaml:7:14
          |
        7 |       limit: -.inf
          |              ^^^^^

        error: invalid value for `meta.poll`: invalid value: integer `-1`, expected u64
         --> graph.yaml:8:13
          |
        8 |       poll: -1
          |             ^^

        error: could not load `graph.yaml` due to 3 previous errors
    "#]].assert_eq(&errors(text));
}

#[test]
fn collect_allow_values_are_checked() {
    let text = "\
graph: g
collect:
- kind: file
  pattern: /tmp/c/
  allow: [mode, ownr, 3, [x]]
- kind: file
  pattern: \"\"
- kind: file
  pattern: /tmp/d/
  allow: [path]
- kind: exec
  pattern: \"\"
  allow: [meta, owner]
- kind: file
  pattern: /tmp/e/
  allow: mode
";
    expect![[r#"
        error: unknown `allow` value `ownr`
         --> graph.yaml:5:17
          |
        5 |   allow: [mode, ownr, 3, [x]]
          |                 ^^^^
          |
          = help: did you mean `owner`?

        error: unknown `allow` value `3`
         --> graph.yaml:5:23
          |
        5 |   allow: [mode, ownr, 3, [x]]
          |                       ^
          |
          = help: valid `allow` values: `path`, `mode`, `owner`, `group`, `source`, `fragments`, `force`, `meta`

        error: an `allow` value must be a name, found a list
         --> graph.yaml:5:26
          |
        5 |   allow: [mode, ownr, 3, [x]]
          |                          ^
          |
          = help: write e.g. `allow: [mode, owner]`; valid values: `path`, `mode`, `owner`, `group`, `source`, `fragments`, `force`, `meta`

        error: a `file` collect rule with an empty `pattern` would let every exporting host choose any path on this host
         --> graph.yaml:7:12
          |
        7 |   pattern: ""
          |            ^^
          |
          = help: give the directory collected files land in (`pattern: /tmp/collected/`), or write `allow: [path]` to accept the exporters' own paths

        error: `allow: path` applies only to a `file` rule with an empty `pattern`
          --> graph.yaml:10:11
           |
        10 |   allow: [path]
           |           ^^^^
           |
           = help: collected files always land in `/tmp/d/`: drop `path` from `allow`

        error: `allow: owner` applies only to `file` collect rules, not `exec`
          --> graph.yaml:13:17
           |
        13 |   allow: [meta, owner]
           |                 ^^^^^
           |
           = help: only `meta` can be allowed for other kinds (and `path` for `authorized_key`)

        error: `allow` of a collect rule must be a list, found a string
          --> graph.yaml:16:10
           |
        16 |   allow: mode
           |          ^^^^
           |
           = help: write e.g. `allow: [mode, owner]`; valid values: `path`, `mode`, `owner`, `group`, `source`, `fragments`, `force`, `meta`

        error: could not load `graph.yaml` due to 7 previous errors
    "#]].assert_eq(&errors(text));
}

#[test]
fn collect_allow_is_parsed() {
    let spec = yamlgraph::parse(
        "graph.yaml",
        "graph: g\ncollect:\n- kind: file\n  pattern: \"\"\n  allow: [owner, path, mode, owner]\n- kind: msg\n  pattern: \"\"\n  allow: [meta]\n- kind: file\n  pattern: /tmp/\n  allow:\n",
        &common::registry(),
    )
    .expect("valid");
    use yamlgraph::Allow;
    let allowed: Vec<Vec<Allow>> = spec
        .collect
        .iter()
        .map(|c| c.allow.iter().copied().collect())
        .collect();
    assert_eq!(
        allowed,
        [
            vec![Allow::Path, Allow::Mode, Allow::Owner],
            vec![Allow::Meta],
            vec![]
        ]
    );
}
