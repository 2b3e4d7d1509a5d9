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
async fn a_file_waits_for_its_directory_and_refreshes_its_exec() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let file = dir.join("f");
    let log = tmp.path().join("log");
    // Declared children first; only the automatic edge d -> f orders the two files.
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
            from: f,
            to: e.clone(),
            notify: true,
        }],
    };
    let mut rig = rig(false);
    rig.engine.swap(g).await.unwrap();
    let first = rig.events.applied(&e).await;
    assert!(
        matches!(first, EngineEvent::Applied { refresh: true, .. }),
        "{first:?}"
    );
    rig.converged().await;
    // Writing f into a missing directory would have failed.
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
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_of_a_real_file_is_repaired_and_refreshes_its_exec() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    let log = tmp.path().join("log");
    let vertices = vec![
        build(
            "file",
            "f",
            json!({ "path": file, "content": "hello\n", "state": "exists" }),
        ),
        build(
            "exec",
            "e",
            json!({ "cmd": format!("echo ran >> {}", log.display()), "shell": "/bin/sh" }),
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
    let changed = |id: &ResId| {
        let id = id.clone();
        move |ev: &EngineEvent| matches!(ev, EngineEvent::Applied { id: i, outcome: Outcome::Changed, .. } if *i == id)
    };
    rig.events.wait_for("file written", changed(&f)).await;
    rig.events.wait_for("exec ran", changed(&e)).await;
    rig.converged().await;

    // The file's own watch notices, the file is repaired and the exec refreshed: no swap.
    std::fs::write(&file, "tampered\n").unwrap();
    rig.events.wait_for("file repaired", changed(&f)).await;
    let refreshed = rig.events.wait_for("exec refreshed", changed(&e)).await;
    assert!(
        matches!(refreshed, EngineEvent::Applied { refresh: true, .. }),
        "{refreshed:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello\n");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\nran\n");
    rig.engine.shutdown().await;
}
