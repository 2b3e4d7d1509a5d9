//! Helpers of the tests that load graphs with the real kinds (`resources::registry()`): a
//! graph that must load, one that must not (its report as text), each resource's parameters
//! and the automatic edges, as text. Each test file uses what it needs.
#![allow(dead_code)]

use resource::{ResId, Resource};

/// `text` as `graph.yaml`, loaded; panics with the report when it does not load.
pub fn ok(text: &str) -> yamlgraph::GraphSpec {
    match yamlgraph::parse("graph.yaml", text, &resources::registry()) {
        Ok(spec) => spec,
        Err(d) => panic!("expected a graph, got:\n{d}"),
    }
}

/// The report of `text` as `graph.yaml`; panics when it loads.
pub fn errors(text: &str) -> String {
    match yamlgraph::parse("graph.yaml", text, &resources::registry()) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.to_string(),
    }
}

/// `kind[name] {params}` of each resource, in file order.
pub fn params(spec: &yamlgraph::GraphSpec) -> Vec<String> {
    spec.resources
        .iter()
        .map(|r| format!("{} {}", r.resource.id(), r.resource.params()))
        .collect()
}

/// The automatic edges between the graph's resources, `from -> to`.
pub fn edges(spec: &yamlgraph::GraphSpec) -> Vec<String> {
    let ids: Vec<ResId> = spec.resources.iter().map(|r| r.resource.id()).collect();
    let vertices: Vec<(&ResId, &dyn Resource)> = ids
        .iter()
        .zip(&spec.resources)
        .map(|(id, r)| (id, r.resource.as_ref()))
        .collect();
    resource::auto_edges(&vertices)
        .into_iter()
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect()
}

/// The resource `kind[name]` of the graph; panics when there is none.
pub fn find<'a>(spec: &'a yamlgraph::GraphSpec, kind: &str, name: &str) -> &'a dyn Resource {
    spec.resources
        .iter()
        .find(|r| r.resource.kind() == kind && r.resource.name() == name)
        .unwrap_or_else(|| panic!("no {kind}[{name}]"))
        .resource
        .as_ref()
}
