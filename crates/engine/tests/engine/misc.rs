//! Watch-driven repair on a real file, poll, rate limit, noop, convergence and shutdown.

use std::sync::Arc;
use std::time::Duration;

use engine::{EngineError, EngineEvent};
use resource::{Mode, Outcome, ResGraph, Resource};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::common::*;

fn file_graph(vertices: Vec<Arc<dyn Resource>>) -> ResGraph {
    ResGraph {
        vertices,
        edges: vec![],
    }
}

fn outcome_of(e: &EngineEvent) -> Outcome {
    match e {
        EngineEvent::Applied { outcome, .. } => *outcome,
        other => panic!("not applied: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_event_repairs_drift_without_a_swap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let res = FileRes::new(path.clone(), "hello\n");
    let id = res.id();
    let mut rig = rig(false);
    rig.engine
        .swap(file_graph(vec![Arc::new(res)]))
        .await
        .unwrap();
    let changed = |e: &EngineEvent| {
        matches!(
            e,
            EngineEvent::Applied {
                outcome: Outcome::Changed,
                ..
            }
        )
    };
    rig.events.wait_for("file written", changed).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");

    std::fs::write(&path, "tampered\n").unwrap();
    rig.events.wait_for("file repaired", changed).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
    assert!(
        rig.events
            .seen
            .iter()
            .all(|e| !matches!(e, EngineEvent::Applied { id: i, .. } if *i != id))
    );
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_replaces_the_watch() {
    let lab = Lab::new();
    let p = Probe::new(&lab, "p").meta(|m| m.poll = Some(Duration::from_secs(1)));
    let mut rig = rig(false);
    rig.engine.swap(graph(vec![p.arc()], &[])).await.unwrap();
    rig.events.applied(&pid("p")).await;
    rig.events.applied(&pid("p")).await;
    assert_eq!(lab.watch_starts("p"), 0);
    rig.engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_spaces_check_applies() {
    let lab = Lab::new();
    let p = Probe::new(&lab, "p").meta(|m| {
        m.limit = resource::Rate::per_second(2.0);
        m.burst = 1;
    });
    let mut rig = rig(false);
    rig.engine.swap(graph(vec![p.arc()], &[])).await.unwrap();
    rig.events.applied(&pid("p")).await;
    for _ in 0..3 {
        lab.trigger("p");
        rig.events.applied(&pid("p")).await;
    }
    let at: Vec<_> = lab
        .starts("p")
        .into_iter()
        .map(|r| {
            if let Rec::Start { at, .. } = r {
                at
            } else {
                unreachable!()
            }
        })
        .collect();
    assert_eq!(at.len(), 4);
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(500),
            "{:?}",
            w[1] - w[0]
        );
    }
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_changes_nothing_and_reports_what_would_change() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    let file = FileRes::new(dir.path().join("f"), "x\n");
    let mut rig = rig(true);
    rig.engine
        .swap(file_graph(vec![
            Arc::new(file.clone()),
            Probe::new(&lab, "p").arc(),
        ]))
        .await
        .unwrap();
    let e = rig
        .events
        .wait_for(
            "file checked",
            |e| matches!(e, EngineEvent::Applied { id, .. } if id.kind == "file"),
        )
        .await;
    assert_eq!(outcome_of(&e), Outcome::WouldChange);
    assert_eq!(
        outcome_of(&rig.events.applied(&pid("p")).await),
        Outcome::WouldChange
    );
    rig.converged().await;
    assert!(!file.path.exists());
    assert!(matches!(
        lab.starts("p")[..],
        [Rec::Start {
            mode: Mode::Check,
            ..
        }]
    ));
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_noop_spares_only_its_own_vertex() {
    let dir = tempfile::tempdir().unwrap();
    let mut spared = FileRes::new(dir.path().join("spared"), "x\n");
    spared.meta.noop = true;
    let written = FileRes::new(dir.path().join("written"), "x\n");
    let mut rig = rig(false);
    rig.engine
        .swap(file_graph(vec![
            Arc::new(spared.clone()),
            Arc::new(written.clone()),
        ]))
        .await
        .unwrap();
    assert_eq!(
        outcome_of(&rig.events.applied(&spared.id()).await),
        Outcome::WouldChange
    );
    rig.converged().await;
    assert!(!spared.path.exists());
    assert_eq!(std::fs::read_to_string(&written.path).unwrap(), "x\n");
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converged_only_once_every_vertex_is_idle() {
    let lab = Lab::new();
    let gate = Arc::new(Semaphore::new(0));
    let slow = Probe::new(&lab, "slow").script(Script {
        default: Some(Outcome::Changed),
        gate: Some(gate.clone()),
        ..Script::default()
    });
    let mut rig = rig(false);
    // Before the first swap the engine itself is busy: nothing is converged yet.
    assert!(!rig.converger.state().converged);
    rig.engine
        .swap(graph(
            vec![slow.arc(), Probe::new(&lab, "quick").arc()],
            &[],
        ))
        .await
        .unwrap();
    lab.wait_until("slow running", |s| s.applies.get("slow") == Some(&1))
        .await;
    rig.events.applied(&pid("quick")).await;
    assert!(!rig.converger.state().converged);
    assert_eq!(rig.converger.busy(), ["probe[slow]"]);
    let waiter = tokio::spawn({
        let c = rig.converger.clone();
        async move { c.converged_for(Duration::from_millis(50)).await }
    });
    assert!(
        !rig.converger.state().converged,
        "still busy while its check_apply runs"
    );
    gate.add_permits(1);
    timeout(LIMIT, waiter)
        .await
        .expect("converged after release")
        .unwrap();
    assert!(rig.converger.state().converged);

    // An event makes the vertex busy again until its check_apply is done.
    lab.trigger("slow");
    lab.wait_until("slow running again", |s| s.applies.get("slow") == Some(&2))
        .await;
    assert!(!rig.converger.state().converged);
    gate.add_permits(1);
    rig.converged().await;
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_and_awaits_everything() {
    let lab = Lab::new();
    let stuck = Probe::new(&lab, "stuck").script(Script {
        gate: Some(Arc::new(Semaphore::new(0))),
        ..Script::default()
    });
    let vs = vec![
        stuck.arc(),
        Probe::new(&lab, "a").arc(),
        Probe::new(&lab, "b").arc(),
    ];
    let rig = rig(false);
    rig.engine
        .swap(graph(vs, &[("a", "b", false)]))
        .await
        .unwrap();
    lab.wait_until("three watches and stuck running", |s| {
        s.applies.get("stuck") == Some(&1) && s.watches_active.values().sum::<i32>() == 3
    })
    .await;
    timeout(LIMIT, rig.engine.shutdown())
        .await
        .expect("shutdown finished");
    assert_eq!(lab.watches_active(), 0);
    assert!(lab.read(|s| {
        s.log
            .iter()
            .any(|r| matches!(r, Rec::Cancelled { name } if name == "stuck"))
    }));
    assert_eq!(
        rig.engine.swap(ResGraph::default()).await.unwrap_err(),
        EngineError::Shutdown
    );
}

/// The most check_applies inside at once, from the lab's log.
fn most_at_once(s: &LabState) -> usize {
    let (mut inside, mut most) = (0usize, 0usize);
    for r in &s.log {
        match r {
            Rec::Start { .. } => {
                inside += 1;
                most = most.max(inside);
            }
            Rec::End { .. } | Rec::Cancelled { .. } => inside -= 1,
        }
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sema_bounds_how_many_check_applies_run_at_once() {
    // Three independent vertices share a semaphore; each check_apply waits at a gate the test
    // opens one permit at a time. Without `sema` all three would be inside at once.
    for (sema, most) in [("lock", 1), ("pair:2", 2)] {
        let lab = Lab::new();
        let gate = Arc::new(Semaphore::new(0));
        let vs: Vec<Arc<dyn Resource>> = (0..3)
            .map(|i| {
                Probe::new(&lab, &format!("p{i}"))
                    .meta(|m| m.sema = resource::Semaphores::parse([sema]).unwrap())
                    .script(Script {
                        gate: Some(gate.clone()),
                        ..Script::default()
                    })
                    .arc()
            })
            .collect();
        let rig = rig(false);
        rig.engine.swap(graph(vs, &[])).await.unwrap();
        lab.wait_until("the first holders inside", |s| {
            s.applies.values().sum::<u32>() == most as u32
        })
        .await;
        for done in 1..=3usize {
            gate.add_permits(1);
            lab.wait_until("one more done", |s| {
                s.log
                    .iter()
                    .filter(|r| matches!(r, Rec::End { .. }))
                    .count()
                    == done
            })
            .await;
        }
        rig.converged().await;
        assert_eq!(lab.read(most_at_once), most, "{sema}");
        rig.engine.shutdown().await;
    }
}
