//! Watching costs no OS thread per resource: thousands of `file` watches, and many `timer` and
//! `exec` watchcmd watches, leave the process's thread count where one watch put it. Alone in
//! its test binary, on a current-thread runtime, so no other test's threads are counted.

mod common;

use std::fs;

use common::{Watching, build};
use serde_json::json;

/// The `Threads:` line of /proc/self/status.
fn threads() -> usize {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .expect("a Threads line")
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn watching_many_resources_adds_no_threads() {
    let dir = tempfile::tempdir().unwrap();
    let watch_file = |i: usize| {
        build(
            "file",
            &format!("f{i}"),
            json!({"path": dir.path().join(format!("f{i}"))}),
        )
    };
    // The first file watch starts the inotify hub and its reader thread.
    let mut all = vec![Watching::start(&watch_file(0)).await];
    let before = threads();

    for i in 1..2_000 {
        all.push(Watching::start(&watch_file(i)).await);
    }
    for i in 0..50 {
        let timer = build("timer", &format!("t{i}"), json!({"interval": 3600}));
        all.push(Watching::start(&timer).await);
        let exec = build(
            "exec",
            &format!("e{i}"),
            json!({"cmd": "true", "watchcmd": "sleep 3600"}),
        );
        all.push(Watching::start(&exec).await);
    }
    assert_eq!(threads(), before, "threads grew with the number of watches");

    for w in all {
        w.stop().await.unwrap();
    }
}
