//! Dependency order, notify/refresh and parallel branches.

use std::sync::Arc;

use engine::EngineEvent;
use resource::Outcome;
use tokio::sync::Barrier;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_run_before_children_and_events_coalesce() {
    let lab = Lab::new();
    // Declared children first, so the natural start order is the wrong one.
    let vs = ["d", "c", "b", "a"]
        .map(|n| Probe::new(&lab, n).arc())
        .to_vec();
    let edges = [
        ("a", "b", false),
        ("a", "c", false),
        ("b", "d", false),
        ("c", "d", false),
    ];
    let mut rig = rig(false);
    rig.engine.swap(graph(vs, &edges)).await.unwrap();
    rig.events.applied(&pid("d")).await;
    rig.converged().await;
    for (p, c, _) in edges {
        assert!(
            lab.index_of(p, false, 0) < lab.index_of(c, true, 0),
            "{p} must finish before {c} starts: {:#?}",
            lab.read(|s| s.log.clone())
        );
    }
    // Every vertex was dirty from its first event and again from its parents: still one run.
    for n in ["a", "b", "c", "d"] {
        assert_eq!(lab.applies(n), 1, "{n}");
    }
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_follows_notify_edges_after_a_change_only() {
    let lab = Lab::new();
    let once_changed = || {
        let s = Script {
            default: Some(Outcome::InSync),
            ..Script::default()
        };
        s.push(Ok(Outcome::Changed));
        s
    };
    let p = Probe::new(&lab, "p").script(once_changed());
    let q = Probe::new(&lab, "q").script(Script {
        default: Some(Outcome::InSync),
        ..Script::default()
    });
    let vs = vec![
        p.arc(),
        q.arc(),
        Probe::new(&lab, "a").arc(),
        Probe::new(&lab, "b").arc(),
        Probe::new(&lab, "c").arc(),
    ];
    let mut rig = rig(false);
    rig.engine
        .swap(graph(
            vs,
            &[("p", "a", true), ("p", "b", false), ("q", "c", true)],
        ))
        .await
        .unwrap();
    let a = rig.events.applied(&pid("a")).await;
    assert!(
        matches!(a, EngineEvent::Applied { refresh: true, .. }),
        "{a:?}"
    );
    rig.converged().await;
    assert_eq!(
        lab.refreshes("a"),
        [true],
        "notify edge from a parent that changed"
    );
    assert_eq!(lab.refreshes("b"), [false], "plain edge");
    assert_eq!(
        lab.refreshes("c"),
        [false],
        "notify edge from a parent in sync"
    );

    // The refresh was consumed: a's own event runs it without.
    lab.trigger("a");
    rig.events.applied(&pid("a")).await;
    assert_eq!(lab.refreshes("a"), [true, false]);

    // p in sync now: children are poked but neither re-run nor refreshed.
    lab.trigger("p");
    rig.events.applied(&pid("p")).await;
    rig.converged().await;
    assert_eq!(lab.refreshes("a"), [true, false]);
    assert_eq!(lab.applies("b"), 1);
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_branches_run_at_the_same_time() {
    let lab = Lab::new();
    // Each branch's check_apply waits for the other's: only possible if both run at once.
    let barrier = Arc::new(Barrier::new(2));
    let branch = |n: &str| {
        Probe::new(&lab, n)
            .script(Script {
                default: Some(Outcome::Changed),
                barrier: Some(barrier.clone()),
                ..Script::default()
            })
            .arc()
    };
    let vs = vec![Probe::new(&lab, "root").arc(), branch("x"), branch("y")];
    let mut rig = rig(false);
    rig.engine
        .swap(graph(vs, &[("root", "x", false), ("root", "y", false)]))
        .await
        .unwrap();
    rig.converged().await;
    rig.events.drain();
    let failures: Vec<_> = rig
        .events
        .seen
        .iter()
        .filter(|e| matches!(e, EngineEvent::Failed { .. }))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!((lab.applies("x"), lab.applies("y")), (1, 1));
    rig.engine.shutdown().await;
}
