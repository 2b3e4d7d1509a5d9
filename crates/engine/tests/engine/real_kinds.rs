//! The engine driving the real `file` and `exec` kinds: automatic edges from a file to its
//! directory, drift repaired by the file's inotify watch, and a notify edge re-running an exec.

use std::sync::Arc;

use engine::EngineEvent;
use resource::{Edge, Meta, Outcome, ResGraph, ResId, Resource};
use serde_json::json;

use crate::common::*;

fn build(kind: &str, name: &str, params: serde_json::Value) -> Arc<dyn Resource> {
    resources::registry()
        .build(kind, name, params, Meta::default())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_exec_converge_and_refresh() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let file = dir.join("f");
    let log = tmp.path().join("log");
    let vertices = vec![
        build(
            "exec",
            "e",
            json!({ "cmd": format!("echo ran >> {}", log.display()), "shell": "/bin/sh" }),
        ),
        build(
            "file",
            "f",
            json!({ "path": file, "content": "hello\n", "state": "exists" }),
        ),
        build(
            "file",
            "d",
            json!({ "path": format!("{}/", dir.display()), "state": "exists" }),
        ),
    ];
    let (e, f) = (ResId::new("exec", "e"), ResId::new("file", "f"));
    let g = ResGraph {
        vertices,
        edges: vec![Edge {
            from: f.clone(),
            to: e.clone(),
            notify: true,
        }],
    };
    let mut rig = rig(false);
    rig.engine.swap(g).await.unwrap();
    // Without the automatic edge d -> f, writing f into a missing directory would fail.
    rig.events.applied(&e).await;
    rig.converged().await;
    assert!(
        !rig.events
            .seen
            .iter()
            .any(|e| matches!(e, EngineEvent::Failed { .. })),
        "{:#?}",
        rig.events.seen
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello\n");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n");

    // Drift: the file's own watch notices, the file is repaired and the exec refreshed.
    std::fs::write(&file, "tampered\n").unwrap();
    let repaired = |ev: &EngineEvent| matches!(ev, EngineEvent::Applied { id, outcome: Outcome::Changed, .. } if *id == f);
    rig.events.wait_for("file repaired", repaired).await;
    let refreshed =
        |ev: &EngineEvent| matches!(ev, EngineEvent::Applied { id, refresh: true, .. } if *id == e);
    rig.events.wait_for("exec refreshed", refreshed).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello\n");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\nran\n");
    rig.engine.shutdown().await;
}
