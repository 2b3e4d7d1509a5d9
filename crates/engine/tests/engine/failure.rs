//! Failures: retry with delay, giving up, blocked children, watch errors.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use engine::EngineEvent;
use resource::Outcome;

use crate::common::*;

fn failed(e: &EngineEvent) -> Option<(u32, bool)> {
    match e {
        EngineEvent::Failed {
            attempt,
            will_retry,
            ..
        } => Some((*attempt, *will_retry)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_after_the_delay() {
    let lab = Lab::new();
    let script = Script {
        default: Some(Outcome::Changed),
        ..Script::default()
    };
    script.push(Err("first".into()));
    script.push(Err("second".into()));
    let f = Probe::new(&lab, "f").script(script).meta(|m| {
        m.retry = resource::Retry::Times(3);
        m.delay = Duration::from_millis(30);
    });
    let mut rig = rig(false);
    rig.engine
        .swap(graph(
            vec![f.arc(), Probe::new(&lab, "g").arc()],
            &[("f", "g", false)],
        ))
        .await
        .unwrap();
    rig.events.applied(&pid("g")).await;
    let fails: Vec<_> = rig.events.seen.iter().filter_map(failed).collect();
    assert_eq!(fails, [(1, true), (2, true)]);
    assert!(
        rig.events
            .seen
            .iter()
            .any(|e| matches!(e, EngineEvent::Failed { error, .. } if error == "second"))
    );
    assert_eq!((lab.applies("f"), lab.applies("g")), (3, 1));
    assert!(
        lab.index_of("f", false, 2) < lab.index_of("g", true, 0),
        "g ran only after f succeeded"
    );
    // Sleeps never end early, so this is a guarantee, not a timing assumption.
    let at: Vec<_> = lab
        .starts("f")
        .into_iter()
        .map(|r| {
            if let Rec::Start { at, .. } = r {
                at
            } else {
                unreachable!()
            }
        })
        .collect();
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(30),
            "retry came before the delay: {:?}",
            w[1] - w[0]
        );
    }
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_vertex_blocks_its_descendants_until_an_event() {
    let lab = Lab::new();
    let script = Script {
        default: Some(Outcome::Changed),
        ..Script::default()
    };
    for n in 1..=3 {
        script.push(Err(format!("failure {n}")));
    }
    let f = Probe::new(&lab, "f")
        .script(script)
        .meta(|m| m.retry = resource::Retry::Times(1));
    let vs = vec![
        f.arc(),
        Probe::new(&lab, "g").arc(),
        Probe::new(&lab, "h").arc(),
        Probe::new(&lab, "other").arc(),
    ];
    let mut rig = rig(false);
    rig.engine
        .swap(graph(vs, &[("f", "g", false), ("g", "h", false)]))
        .await
        .unwrap();
    rig.events
        .wait_for("f gives up", |e| failed(e) == Some((2, false)))
        .await;
    // Blocked descendants are idle, so a failure does not keep the process from converging.
    rig.converged().await;
    assert_eq!(
        (lab.applies("g"), lab.applies("h"), lab.applies("other")),
        (0, 0, 1)
    );

    // A new event starts over: attempt 1 fails (the script's last error), attempt 2 succeeds.
    lab.trigger("f");
    rig.events.applied(&pid("h")).await;
    let fails: Vec<_> = rig.events.seen.iter().filter_map(failed).collect();
    assert_eq!(fails, [(1, true), (2, false), (1, true)]);
    assert_eq!(
        (lab.applies("f"), lab.applies("g"), lab.applies("h")),
        (4, 1, 1)
    );
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_watch_is_reported_and_restarted() {
    let lab = Lab::new();
    let script = Script {
        default: Some(Outcome::Changed),
        watch_failures: AtomicU32::new(1),
        ..Script::default()
    };
    let w = Probe::new(&lab, "w")
        .script(script)
        .meta(|m| m.delay = Duration::from_millis(10));
    let mut rig = rig(false);
    rig.engine.swap(graph(vec![w.arc()], &[])).await.unwrap();
    let e = rig
        .events
        .wait_for("watch failed", |e| {
            matches!(e, EngineEvent::WatchFailed { .. })
        })
        .await;
    assert_eq!(
        e,
        EngineEvent::WatchFailed {
            id: pid("w"),
            error: "watch broke".into()
        }
    );
    // The failure counts as an event: the vertex is checked even before the watch is back.
    rig.events.applied(&pid("w")).await;
    lab.wait_until("watch restarted", |s| {
        s.watch_starts.get("w") == Some(&2) && s.watches_active.get("w") == Some(&1)
    })
    .await;
    lab.trigger("w");
    rig.events.applied(&pid("w")).await;
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_never_comes_up_is_still_checked_and_converges() {
    let lab = Lab::new();
    let script = Script {
        default: Some(Outcome::Changed),
        watch_failures: AtomicU32::new(u32::MAX),
        ..Script::default()
    };
    let w = Probe::new(&lab, "w")
        .script(script)
        .meta(|m| m.delay = Duration::from_millis(10));
    let mut rig = rig(false);
    rig.engine
        .swap(graph(
            vec![w.arc(), Probe::new(&lab, "child").arc()],
            &[("w", "child", false)],
        ))
        .await
        .unwrap();
    rig.events.applied(&pid("child")).await;
    // Checked again at the watch's retry pace.
    rig.events.applied(&pid("w")).await;
    rig.events.applied(&pid("w")).await;
    rig.converged().await;
    rig.engine.shutdown().await;
    assert_eq!(lab.watches_active(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_check_apply_is_a_failure_not_a_dead_worker() {
    let lab = Lab::new();
    let p = Probe::new(&lab, "p").meta(|m| m.retry = resource::Retry::Times(1));
    p.script.push(Err("panic".into()));
    let mut rig = rig(false);
    rig.engine
        .swap(graph(
            vec![p.arc(), Probe::new(&lab, "child").arc()],
            &[("p", "child", false)],
        ))
        .await
        .unwrap();
    let e = rig
        .events
        .wait_for("p failed", |e| failed(e).is_some())
        .await;
    assert_eq!(
        e,
        EngineEvent::Failed {
            id: pid("p"),
            error: "panicked: probe told to panic".into(),
            attempt: 1,
            will_retry: true
        }
    );
    // The worker lives on: the retry succeeds and the child runs.
    rig.events.applied(&pid("child")).await;
    rig.converged().await;
    rig.engine.shutdown().await;
}
