//! Exported and collected resources: turning a graph's `@@` resources into store records, and
//! the store's records back into vertices of this host's graph according to its `collect:`.
//!
//! Semantics (mgmt's): every host collects matching exports from all hosts, its own included.
//! For `file`, the pattern is a directory: the collected file lands there under its basename.
//! For other kinds, a non-empty pattern must be a prefix of the resource name. A resource is
//! collected by the first rule that matches it and gets a notify edge to each of that rule's
//! `notify` targets (local resources, checked by yamlgraph), so they refresh whenever a
//! collected resource changes. Automatic edges (a collected file under the directory a local
//! file resource manages) are the engine's, as for any vertex.

use std::collections::BTreeSet;
use std::path::Path;

use resource::{Edge, Registry, ResGraph, ResId};
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

/// This host's graph: its own (non-exported) resources and edges, plus every collected export
/// with the notify edges of the rule that collected it. Problems with single exports (a name clash, a record that does not build) are returned as
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
        graph.edges.extend(c.notify.iter().map(|to| Edge {
            from: res.id(),
            to: to.clone(),
            notify: true,
        }));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use engine::{Converger, Engine, EngineConfig, EngineEvent};
    use resource::Outcome;
    use tokio::sync::mpsc;

    use super::*;

    fn spec(dir: &Path) -> GraphSpec {
        let d = dir.display();
        let text = format!(
            "graph: g
resources:
  file:
  - name: lines
    path: {d}/lines/
  exec:
  - name: concat
    cmd: cat {d}/lines/* > {d}/all
    shell: /bin/sh
  msg:
  - name: said
edges:
- name: lines-concat
  from: {{kind: file, name: lines}}
  to: {{kind: exec, name: concat}}
collect:
- kind: file
  pattern: {d}/lines/
  notify:
  - {{kind: exec, name: concat}}
- kind: msg
  pattern: hello-
"
        );
        yamlgraph::parse("g.yaml", &text, &resources::registry()).expect("valid graph")
    }

    fn exported_file(host: &str, content: &str) -> ExportedResource {
        ExportedResource {
            host: host.to_string(),
            kind: "file".into(),
            name: format!("line-{host}"),
            meta: serde_json::to_value(resource::Meta::default()).expect("meta"),
            params: serde_json::json!({"path": format!("/elsewhere/{host}"), "content": content}),
        }
    }

    fn exported_msg(name: &str) -> ExportedResource {
        ExportedResource {
            host: "a".into(),
            kind: "msg".into(),
            name: name.into(),
            meta: serde_json::to_value(resource::Meta::default()).expect("meta"),
            params: serde_json::json!({}),
        }
    }

    #[test]
    fn collected_resources_notify_the_targets_of_their_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let collected = [
            exported_file("a", "line a\n"),
            exported_file("b", "line b\n"),
            exported_msg("hello-there"),
        ];
        let (graph, warnings) = assemble(&spec(dir.path()), &collected, &resources::registry());
        assert!(warnings.is_empty(), "{warnings:?}");
        let edges: Vec<String> = graph
            .edges
            .iter()
            .map(|e| format!("{} -> {} notify={}", e.from, e.to, e.notify))
            .collect();
        assert_eq!(
            edges,
            [
                "file[lines] -> exec[concat] notify=false",
                "file[line-a] -> exec[concat] notify=true",
                "file[line-b] -> exec[concat] notify=true",
            ],
            "the msg rule has no notify: its collected msg gets no edge"
        );
        let ids: Vec<String> = graph.vertices.iter().map(|v| v.id().to_string()).collect();
        assert_eq!(
            ids,
            [
                "file[lines]",
                "exec[concat]",
                "msg[said]",
                "file[line-a]",
                "file[line-b]",
                "msg[hello-there]"
            ]
        );
    }

    #[test]
    fn a_clashing_export_adds_neither_vertex_nor_edges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut clash = exported_file("a", "x\n");
        clash.name = "lines".into();
        let (graph, warnings) = assemble(&spec(dir.path()), &[clash], &resources::registry());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(graph.vertices.len(), 3);
        assert_eq!(graph.edges.len(), 1);
    }

    /// A collected record's meta goes through the same parser as the YAML's: a bad `sema` (or
    /// an out-of-range `retry`) is refused with its reason, never run without it.
    #[test]
    fn an_export_with_a_bad_meta_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bad_sema = exported_file("a", "x\n");
        bad_sema.meta["sema"] = serde_json::json!(["lock:0"]);
        let mut bad_retry = exported_file("b", "x\n");
        bad_retry.meta["retry"] = serde_json::json!(-2);
        let mut good = exported_file("c", "x\n");
        good.meta["sema"] = serde_json::json!(["lock:2"]);
        let (graph, warnings) = assemble(
            &spec(dir.path()),
            &[bad_sema, bad_retry, good],
            &resources::registry(),
        );
        assert_eq!(
            warnings,
            [
                "cannot collect file[line-a] from host a: bad meta: `sema`: sema `lock:0`: the count must be at least 1",
                "cannot collect file[line-b] from host b: bad meta: `retry`: -2 is out of range: write -1 to retry forever or a count from 0 to 4294967295",
            ]
        );
        let collected = graph
            .vertices
            .iter()
            .find(|v| v.name() == "line-c")
            .expect("the good export is collected");
        let sema: Vec<(&str, u32)> = collected
            .meta()
            .sema
            .iter()
            .map(|s| (s.name(), s.count()))
            .collect();
        assert_eq!(sema, [("lock:2", 2)]);
    }

    /// Runs assembled graphs in the real engine: collected files wait for the local resource
    /// that makes their directory (automatic edges), and a change of one refreshes the exec.
    #[tokio::test]
    async fn the_engine_orders_collected_files_after_their_directory_and_refreshes_the_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path());
        let registry = resources::registry();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let converger = Converger::new();
        let engine = Engine::new(EngineConfig {
            hostname: "test".into(),
            noop: false,
            events: tx,
            converger: converger.clone(),
        });
        let all = dir.path().join("all");

        let first = [
            exported_file("a", "line a\n"),
            exported_file("b", "line b\n"),
        ];
        let (graph, _) = assemble(&spec, &first, &registry);
        engine.swap(graph).await.expect("graph accepted");
        let mut order = Vec::new();
        let deadline = Duration::from_secs(30);
        tokio::time::timeout(deadline, async {
            while std::fs::read_to_string(&all).ok().as_deref() != Some("line a\nline b\n") {
                match rx.recv().await.expect("engine events") {
                    EngineEvent::Applied { id, .. } => order.push(id.to_string()),
                    EngineEvent::Failed { id, error, .. } => panic!("{id} failed: {error}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("the exec concatenated both collected files");
        let pos = |id: &str| order.iter().position(|o| o == id).expect(id);
        assert!(pos("file[lines]") < pos("file[line-a]"), "{order:?}");
        assert!(pos("file[lines]") < pos("file[line-b]"), "{order:?}");

        // Host b's export changes: the exec reruns, asked by its notify parent.
        let second = [
            exported_file("a", "line a\n"),
            exported_file("b", "line b2\n"),
        ];
        let (graph, _) = assemble(&spec, &second, &registry);
        engine.swap(graph).await.expect("graph accepted");
        tokio::time::timeout(deadline, async {
            loop {
                match rx.recv().await.expect("engine events") {
                    EngineEvent::Applied {
                        id,
                        outcome: Outcome::Changed,
                        refresh: true,
                        ..
                    } if id.to_string() == "exec[concat]"
                        && std::fs::read_to_string(&all).ok().as_deref()
                            == Some("line a\nline b2\n") =>
                    {
                        break;
                    }
                    EngineEvent::Failed { id, error, .. } => panic!("{id} failed: {error}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("the exec was refreshed with the new line");
        engine.shutdown().await;
    }
}
