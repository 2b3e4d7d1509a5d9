//! mgmt's pkg graphs (examples/yaml/pkg1.yaml, pkg2.yaml, autogroup1.yaml, autogroup2.yaml,
//! unchanged) load with the real `pkg` kind and group as mgmt groups them.

use resource::ResGraph;

fn load(text: &str) -> ResGraph {
    match yamlgraph::parse("graph.yaml", text, &resources::registry()) {
        Ok(spec) => spec.local_graph(),
        Err(d) => panic!("expected a graph, got:\n{d}"),
    }
}

/// The vertices the engine would run: each id with its params.
fn grouped(text: &str) -> Vec<String> {
    resource::autogroup(load(text))
        .vertices
        .iter()
        .map(|r| format!("{} {}", r.id(), r.params()))
        .collect()
}

#[test]
fn mgmts_pkg_examples_load() {
    let pkg1 = "---
graph: mygraph
resources:
  pkg:
  - name: powertop
    state: installed
edges: []
";
    assert_eq!(grouped(pkg1), [r#"pkg[powertop] {"state":"installed"}"#]);
    let pkg2 = "---
graph: mygraph
resources:
  pkg:
  - name: powertop
    state: uninstalled
edges: []
";
    assert_eq!(grouped(pkg2), [r#"pkg[powertop] {"state":"uninstalled"}"#]);
}

#[test]
fn mgmts_autogroup_examples_group_the_pkgs_that_allow_it() {
    let autogroup1 = "---
graph: mygraph
resources:
  pkg:
  - name: drbd-utils
    meta:
      autogroup: false
    state: installed
  - name: powertop
    meta:
      autogroup: true
    state: installed
  - name: sl
    meta:
      autogroup: true
    state: installed
  - name: cowsay
    meta:
      autogroup: true
    state: installed
edges: []
";
    assert_eq!(
        grouped(autogroup1),
        [
            r#"pkg[drbd-utils] {"state":"installed"}"#,
            concat!(
                r#"pkg[cowsay,powertop,sl] {"members":[{"name":"cowsay","state":"installed"},"#,
                r#"{"name":"powertop","state":"installed"},{"name":"sl","state":"installed"}]}"#
            ),
        ]
    );
    let autogroup2 = "---
graph: mygraph
resources:
  pkg:
  - name: powertop
    meta:
      autogroup: true
    state: installed
  - name: sl
    meta:
      autogroup: true
    state: installed
  - name: cowsay
    meta:
      autogroup: true
    state: installed
edges: []
";
    let g = grouped(autogroup2);
    assert_eq!(g.len(), 1);
    assert!(g[0].starts_with("pkg[cowsay,powertop,sl] "), "{g:?}");
}

#[test]
fn pkg_errors_point_at_their_fields() {
    let text = "\
graph: g
resources:
  pkg:
  - name: cowsay
    state: latest
  - name: Big
";
    let err = yamlgraph::parse("g.yaml", text, &resources::registry()).expect_err("bad graph");
    let found: Vec<(usize, String)> = err.0.iter().map(|d| (d.line, d.message.clone())).collect();
    assert_eq!(found.len(), 2, "{err}");
    assert_eq!(found[0].0, 5, "{err}");
    assert!(found[0].1.contains("did you mean `newest`?"), "{err}");
    assert_eq!(found[1].0, 6, "{err}");
    assert!(
        found[1].1.contains("`Big` is not a Debian package name"),
        "{err}"
    );
}
