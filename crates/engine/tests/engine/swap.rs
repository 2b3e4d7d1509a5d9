//! Graph swaps: kept vertices stay untouched, changed ones are replaced, bad graphs change
//! nothing, kept vertices follow new edges.

use std::sync::Arc;

use engine::{EngineError, EngineEvent, SwapReport};
use resource::{Edge, Outcome, ResGraph};
use tokio::sync::Semaphore;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_vertices_keep_running_untouched() {
    let lab = Lab::new();
    let mut rig = rig(false);
    let g1 = graph(
        vec![Probe::new(&lab, "a").arc(), Probe::new(&lab, "b").arc()],
        &[("a", "b", true)],
    );
    rig.engine.swap(g1).await.unwrap();
    rig.events.applied(&pid("b")).await;
    rig.converged().await;

    // New instances: `a` equal, `b` with other parameters, `c` new.
    let g2 = graph(
        vec![
            Probe::new(&lab, "a").arc(),
            Probe::new(&lab, "b").tag("2").arc(),
            Probe::new(&lab, "c").arc(),
        ],
        &[("a", "b", true), ("b", "c", false)],
    );
    let report = rig.engine.swap(g2).await.unwrap();
    assert_eq!(
        report,
        SwapReport {
            added: vec![pid("b"), pid("c")],
            removed: vec![pid("b")],
            kept: vec![pid("a")]
        }
    );
    rig.events
        .wait_for("swapped", |e| matches!(e, EngineEvent::Swapped { .. }))
        .await;
    rig.events.applied(&pid("c")).await;
    rig.converged().await;

    assert_eq!(
        (lab.applies("a"), lab.watch_starts("a")),
        (1, 1),
        "a untouched"
    );
    assert_eq!(
        (lab.applies("b"), lab.watch_starts("b")),
        (2, 2),
        "b replaced"
    );
    let tags: Vec<_> = lab
        .starts("b")
        .into_iter()
        .map(|r| {
            if let Rec::Start { tag, .. } = r {
                tag
            } else {
                unreachable!()
            }
        })
        .collect();
    assert_eq!(tags, ["1", "2"]);
    assert_eq!(
        lab.read(|s| s.watches_active.get("b").copied()),
        Some(1),
        "old watch of b stopped"
    );
    // Not refreshed: its notify parent did not change since.
    assert_eq!(lab.refreshes("b"), [true, false]);

    // Removing everything stops every watch.
    let report = rig.engine.swap(ResGraph::default()).await.unwrap();
    assert_eq!(report.removed, [pid("a"), pid("b"), pid("c")]);
    assert_eq!(lab.watches_active(), 0);
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_vertices_follow_new_edges() {
    let lab = Lab::new();
    let mut rig = rig(false);
    rig.engine
        .swap(graph(vec![Probe::new(&lab, "a").arc()], &[]))
        .await
        .unwrap();
    rig.events.applied(&pid("a")).await;

    // A new parent of the kept `a` that stays running until released.
    let gate = Arc::new(Semaphore::new(0));
    let parent = Probe::new(&lab, "gate").script(Script {
        default: Some(Outcome::InSync),
        gate: Some(gate.clone()),
        ..Script::default()
    });
    let report = rig
        .engine
        .swap(graph(
            vec![parent.arc(), Probe::new(&lab, "a").arc()],
            &[("gate", "a", false)],
        ))
        .await
        .unwrap();
    assert_eq!(report.kept, [pid("a")]);
    lab.wait_until("gate running", |s| s.applies.get("gate") == Some(&1))
        .await;
    lab.trigger("a");
    gate.add_permits(1);
    rig.events.applied(&pid("a")).await;
    assert!(
        lab.index_of("gate", false, 0) < lab.index_of("a", true, 1),
        "a waited for its new parent"
    );
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_graphs_change_nothing() {
    let lab = Lab::new();
    let mut rig = rig(false);
    rig.engine
        .swap(graph(
            vec![Probe::new(&lab, "a").arc(), Probe::new(&lab, "b").arc()],
            &[("a", "b", false)],
        ))
        .await
        .unwrap();
    rig.events.applied(&pid("b")).await;
    rig.converged().await;

    let with_cycle = graph(
        vec![
            Probe::new(&lab, "a").tag("2").arc(),
            Probe::new(&lab, "x").arc(),
            Probe::new(&lab, "y").arc(),
        ],
        &[("x", "y", false), ("y", "x", false)],
    );
    let err = rig.engine.swap(with_cycle).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Cycle(c) if c.vertices == [pid("x"), pid("y")]),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the graph has a cycle: probe[x] -> probe[y] -> probe[x]"
    );

    let dup = graph(
        vec![
            Probe::new(&lab, "a").arc(),
            Probe::new(&lab, "a").tag("2").arc(),
        ],
        &[],
    );
    assert_eq!(
        rig.engine.swap(dup).await.unwrap_err(),
        EngineError::Duplicate { id: pid("a") }
    );

    let dangling = graph(vec![Probe::new(&lab, "a").arc()], &[("a", "zz", false)]);
    let err = rig.engine.swap(dangling).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "edge probe[a] -> probe[zz] names probe[zz], which is not in the graph"
    );

    let invalid = graph(vec![Probe::new(&lab, "a").tag("").arc()], &[]);
    let err = rig.engine.swap(invalid).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid resource probe[a]: invalid parameter `tag`: must not be empty"
    );

    assert_eq!((lab.applies("a"), lab.watch_starts("a")), (1, 1));
    assert_eq!((lab.applies("b"), lab.watch_starts("b")), (1, 1));
    assert_eq!((lab.watch_starts("x"), lab.watch_starts("y")), (0, 0));
    // Still running the old graph: an event re-runs the old `a`, then `b` after it.
    lab.trigger("a");
    rig.events.applied(&pid("b")).await;
    assert!(matches!(&lab.starts("a")[1], Rec::Start { tag, .. } if tag == "1"));
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_edges_order_vertices_and_can_be_turned_off() {
    let lab = Lab::new();
    let dir = |lab| Probe {
        provides: Some("/d".into()),
        ..Probe::new(lab, "dir")
    };
    let file = |lab| Probe {
        wants: Some("/d".into()),
        ..Probe::new(lab, "file")
    };
    let mut rig = rig(false);
    rig.engine
        .swap(graph(vec![file(&lab).arc(), dir(&lab).arc()], &[]))
        .await
        .unwrap();
    rig.events.applied(&pid("file")).await;
    assert!(lab.index_of("dir", false, 0) < lab.index_of("file", true, 0));

    // An explicit edge the other way round closes a cycle through the automatic one...
    let backwards = |file: Probe| ResGraph {
        vertices: vec![file.arc(), dir(&lab).arc()],
        edges: vec![Edge {
            from: pid("file"),
            to: pid("dir"),
            notify: false,
        }],
    };
    let err = rig.engine.swap(backwards(file(&lab))).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Cycle(c) if c.vertices == [pid("dir"), pid("file")]),
        "{err:?}"
    );
    // ...unless the dependent opts out of automatic edges.
    let report = rig
        .engine
        .swap(backwards(file(&lab).meta(|m| m.autoedge = false)))
        .await
        .unwrap();
    assert_eq!(report.kept, [pid("dir")]);
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_running_vertex_cancels_and_awaits_it() {
    let lab = Lab::new();
    let stuck = Probe::new(&lab, "stuck").script(Script {
        gate: Some(Arc::new(Semaphore::new(0))),
        ..Script::default()
    });
    let rig = rig(false);
    rig.engine
        .swap(graph(
            vec![stuck.arc(), Probe::new(&lab, "other").arc()],
            &[],
        ))
        .await
        .unwrap();
    lab.wait_until("stuck running", |s| {
        s.applies.get("stuck") == Some(&1) && s.watches_active.get("stuck") == Some(&1)
    })
    .await;
    let report = rig
        .engine
        .swap(graph(vec![Probe::new(&lab, "other").arc()], &[]))
        .await
        .unwrap();
    assert_eq!(report.removed, [pid("stuck")]);
    // By the time swap returns, the removed worker and its watch are gone.
    assert!(lab.read(|s| {
        s.log
            .iter()
            .any(|r| matches!(r, Rec::Cancelled { name } if name == "stuck"))
    }));
    assert_eq!(
        lab.read(|s| s.watches_active.get("stuck").copied()),
        Some(0)
    );
    rig.converged().await;
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_failed_parent_unblocks_its_child() {
    let lab = Lab::new();
    let broken = Probe::new(&lab, "broken").script(Script::default());
    broken.script.push(Err("always".into()));
    let mut rig = rig(false);
    rig.engine
        .swap(graph(
            vec![broken.arc(), Probe::new(&lab, "child").arc()],
            &[("broken", "child", false)],
        ))
        .await
        .unwrap();
    rig.events
        .wait_for("broken failed", |e| {
            matches!(
                e,
                EngineEvent::Failed {
                    will_retry: false,
                    ..
                }
            )
        })
        .await;
    rig.converged().await;
    assert_eq!(lab.applies("child"), 0);
    let report = rig
        .engine
        .swap(graph(vec![Probe::new(&lab, "child").arc()], &[]))
        .await
        .unwrap();
    assert_eq!(report.kept, [pid("child")]);
    rig.events.applied(&pid("child")).await;
    rig.engine.shutdown().await;
}
