//! Many `file` watches at once, as in a graph of thousands of files in one directory: more
//! watches than the kernel allows inotify instances, each woken only by its own file, and
//! watches that come and go (graph swaps) without disturbing the ones that stay.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::{Watching, build};
use resource::Resource;
use serde_json::json;

/// More watches than inotify instances a user may have (so one instance per watch cannot
/// work), and at least 2,000.
fn many() -> usize {
    let instances: usize = fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .expect("inotify limits readable")
        .trim()
        .parse()
        .expect("a number");
    (instances + 1).clamp(2_000, 20_000)
}

fn file(dir: &Path, name: &str) -> Arc<dyn Resource> {
    build(
        "file",
        name,
        json!({"path": dir.join(name), "content": "x"}),
    )
}

/// Watch `n` files `f0..` of `dir`, each running (its first event consumed).
async fn watch_all(dir: &Path, n: usize) -> Vec<Watching> {
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        all.push(Watching::start(&file(dir, &format!("f{i}"))).await);
    }
    all
}

async fn stop_all(all: Vec<Watching>) {
    for w in all {
        w.stop().await.unwrap();
    }
}

/// Write the sentinel and wait for its event. The hub reads one inotify queue and dispatches
/// in order, so every wake caused by an earlier change has been delivered (and its watch task
/// scheduled ahead of the sentinel's) by then. The sentinel lives in another directory so that
/// a wake meant for the first directory cannot reach it early.
async fn round_trip(sentinel: &mut Watching, path: &Path) {
    fs::write(path, "y").unwrap();
    sentinel.next_event().await;
}

#[tokio::test]
async fn more_files_than_inotify_instances_are_all_watched() {
    let dir = tempfile::tempdir().unwrap();
    let n = many();
    // `Watching::start` returns only once the watch reported running.
    let all = watch_all(dir.path(), n).await;
    assert_eq!(all.len(), n);
    stop_all(all).await;
}

#[tokio::test]
async fn a_write_wakes_only_the_written_files_watch() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = watch_all(dir.path(), many()).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let mut sentinel = Watching::start(&file(elsewhere.path(), "sentinel")).await;
    let sentinel_path = elsewhere.path().join("sentinel");

    let target = 1234;
    fs::write(dir.path().join(format!("f{target}")), "tampered\n").unwrap();
    all[target].next_event().await;
    round_trip(&mut sentinel, &sentinel_path).await;
    let woken: Vec<usize> = (0..all.len())
        .filter(|i| *i != target && all[*i].events.try_recv().is_ok())
        .collect();
    assert!(woken.is_empty(), "woken by a sibling's write: {woken:?}");
    // The write's later events (modify, close) may have woken the target again.
    all[target].drain();

    // Creating and deleting an unwatched sibling wakes nobody either.
    fs::write(dir.path().join("unwatched"), "z").unwrap();
    fs::remove_file(dir.path().join("unwatched")).unwrap();
    round_trip(&mut sentinel, &sentinel_path).await;
    let woken: Vec<usize> = (0..all.len())
        .filter(|i| all[*i].events.try_recv().is_ok())
        .collect();
    assert!(woken.is_empty(), "woken by an unwatched sibling: {woken:?}");

    stop_all(all).await;
    sentinel.stop().await.unwrap();
}

#[tokio::test]
async fn watches_that_leave_do_not_disturb_those_that_stay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared");
    // Two resources on one file share the kernel's watch of the directory.
    let res = build("file", "shared", json!({"path": path}));
    let mut stays = Watching::start(&res).await;
    for _ in 0..3 {
        // A graph swap: a batch of watches in the same directory comes and goes.
        let leaving = Watching::start(&res).await;
        let batch = watch_all(dir.path(), 200).await;
        leaving.stop().await.unwrap();
        stop_all(batch).await;
        stays.drain();
        fs::write(&path, "changed\n").unwrap();
        stays.next_event().await;
    }
    stays.stop().await.unwrap();
}
