//! Exported and collected resources: turning a graph's `@@` resources into store records, and
//! the store's records back into vertices of this host's graph according to its `collect:`.
//!
//! Semantics (mgmt's): every host collects matching exports from all hosts, its own included.
//! For `file`, the pattern is a directory: the collected file lands there under its basename.
//! For other kinds, a non-empty pattern must be a prefix of the resource name.

use std::collections::BTreeSet;
use std::path::Path;

use resource::{Registry, ResGraph, ResId};
use store::ExportedResource;
use yamlgraph::{CollectSpec, GraphSpec};

/// The records this graph publishes under its host.
pub fn exports_of(spec: &GraphSpec, host: &str) -> Vec<ExportedResource> {
    spec.resources
        .iter()
        .filter(|r| r.exported)
        .map(|r| ExportedResource {
            host: host.to_string(),
            kind: r.resource.kind().to_string(),
            name: r.resource.name().to_string(),
            meta: serde_json::to_value(r.resource.meta()).unwrap_or_default(),
            params: r.resource.params(),
        })
        .collect()
}

/// This host's graph: its own (non-exported) resources and edges, plus every collected export.
/// Problems with single exports (a name clash, a record that does not build) are returned as
/// warnings: one bad export from another host must not stop this host.
pub fn assemble(
    spec: &GraphSpec,
    collected: &[ExportedResource],
    registry: &Registry,
) -> (ResGraph, Vec<String>) {
    let mut graph = spec.local_graph();
    let mut warnings = Vec::new();
    let mut ids: BTreeSet<ResId> = graph.vertices.iter().map(|v| v.id()).collect();
    for rec in collected {
        let Some(c) = spec.collect.iter().find(|c| matches(c, rec)) else {
            continue;
        };
        let res = match rebuild(c, rec, registry) {
            Ok(res) => res,
            Err(e) => {
                warnings.push(format!(
                    "cannot collect {}[{}] from host {}: {e}",
                    rec.kind, rec.name, rec.host
                ));
                continue;
            }
        };
        if !ids.insert(res.id()) {
            warnings.push(format!(
                "not collecting {} from host {}: a resource with that id is already in the graph",
                res.id(),
                rec.host
            ));
            continue;
        }
        graph.vertices.push(res);
    }
    (graph, warnings)
}

fn matches(c: &CollectSpec, rec: &ExportedResource) -> bool {
    if c.kind != rec.kind {
        return false;
    }
    rec.kind == "file" || c.pattern.is_empty() || rec.name.starts_with(&c.pattern)
}

fn rebuild(
    c: &CollectSpec,
    rec: &ExportedResource,
    registry: &Registry,
) -> Result<std::sync::Arc<dyn resource::Resource>, String> {
    let meta: resource::Meta =
        serde_json::from_value(rec.meta.clone()).map_err(|e| format!("bad meta: {e}"))?;
    let mut params = rec.params.clone();
    if rec.kind == "file" && !c.pattern.is_empty() {
        let old = params
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or(&rec.name)
            .to_string();
        let is_dir = old.ends_with('/');
        let base = Path::new(old.trim_end_matches('/'))
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .ok_or_else(|| format!("exported path {old:?} has no file name"))?;
        let mut path = Path::new(&c.pattern)
            .join(base)
            .to_string_lossy()
            .into_owned();
        if is_dir {
            path.push('/');
        }
        if let Some(obj) = params.as_object_mut() {
            obj.insert("path".into(), serde_json::Value::String(path));
            // dirname/basename would override path; the collected location wins.
            obj.remove("dirname");
            obj.remove("basename");
        }
    }
    registry
        .build(&rec.kind, &rec.name, params, meta)
        .map_err(|e| e.to_string())
}
