//! `file` watch with real inotify: external modification, attribute change, deletion,
//! rename-over, creation of a missing file (also below missing directories), directories,
//! and a prompt return after cancel.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Watching, apply, build};
use resource::Outcome::{Changed, InSync};
use serde_json::json;

/// Start watching an existing, converged file, make one external change, expect an event.
/// Nothing else happens between the start of the watch and the change, so the event can only
/// come from the change.
async fn event_after(change: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, "wanted\n").unwrap();
    fs::write(dir.path().join("other"), "renamed over\n").unwrap();
    let res = build("file", "f", json!({"path": path, "content": "wanted\n"}));
    let mut w = Watching::start(&res).await;
    change(&path);
    w.next_event().await;
    w.stop().await.unwrap();
}

#[tokio::test]
async fn reports_an_external_modification() {
    event_after(|path| fs::write(path, "tampered\n").unwrap()).await;
}

#[tokio::test]
async fn reports_an_attribute_change() {
    event_after(|path| fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap()).await;
}

#[tokio::test]
async fn reports_a_deletion() {
    event_after(|path| fs::remove_file(path).unwrap()).await;
}

#[tokio::test]
async fn reports_a_rename_over_the_file() {
    event_after(|path| fs::rename(path.with_file_name("other"), path).unwrap()).await;
}

#[tokio::test]
async fn reports_creation_of_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let res = build("file", "f", json!({"path": path, "content": "x"}));
    let mut w = Watching::start(&res).await;
    fs::write(&path, "made by someone else\n").unwrap();
    w.next_event().await;
    assert_eq!(apply(&res).await.unwrap(), Changed);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn ignores_siblings_and_its_own_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let res = build("file", "f", json!({"path": path, "content": "wanted\n"}));
    assert_eq!(apply(&res).await.unwrap(), Changed);
    let mut w = Watching::start(&res).await;
    w.drain();
    // A read-only check (it opens and reads the file) and sibling traffic are not changes.
    assert_eq!(apply(&res).await.unwrap(), InSync);
    fs::write(dir.path().join("sibling"), "x").unwrap();
    // Then a real change: the first event must be about it. Nothing spurious is queued before.
    assert!(
        w.events.try_recv().is_err(),
        "no event for reads or siblings"
    );
    fs::write(&path, "tampered\n").unwrap();
    w.next_event().await;
    w.stop().await.unwrap();
}

#[tokio::test]
async fn reports_creation_of_a_missing_file_below_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("a/b");
    let path = parent.join("f");
    let res = build("file", "f", json!({"path": path, "content": "x"}));
    let mut w = Watching::start(&res).await;

    fs::create_dir(dir.path().join("a")).unwrap();
    w.next_event().await;
    fs::create_dir(&parent).unwrap();
    w.next_event().await;
    // The watch has moved down to the new parent: creating the file itself is reported.
    fs::write(&path, "made by someone else\n").unwrap();
    w.next_event().await;
    w.stop().await.unwrap();
}

#[tokio::test]
async fn reports_changes_inside_a_recursive_directory_and_of_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let dst = dir.path().join("dst");
    let res = build(
        "file",
        "dst",
        json!({"path": format!("{}/", dst.display()), "source": src, "recurse": true}),
    );
    assert_eq!(apply(&res).await.unwrap(), Changed);

    // Each change gets a fresh watch, so the event can only come from that change.
    let mut w = Watching::start(&res).await;
    fs::write(dst.join("sub/new"), "x").unwrap();
    w.next_event().await;
    w.stop().await.unwrap();

    let mut w = Watching::start(&res).await;
    fs::write(src.join("sub/from-source"), "y").unwrap();
    w.next_event().await;
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(
        fs::read_to_string(dst.join("sub/from-source")).unwrap(),
        "y"
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn returns_after_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let res = build("file", "f", json!({"path": dir.path().join("f")}));
    let w = Watching::start(&res).await;
    w.stop().await.unwrap();
}

#[tokio::test]
async fn follows_a_parent_directory_that_is_removed_and_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("a");
    fs::create_dir(&parent).unwrap();
    let path = parent.join("f");
    let res = build("file", "f", json!({"path": path, "content": "x"}));
    let mut w = Watching::start(&res).await;
    fs::remove_dir(&parent).unwrap();
    w.next_event().await;
    fs::create_dir(&parent).unwrap();
    w.next_event().await;
    w.drain();
    fs::write(&path, "made in the new directory\n").unwrap();
    w.next_event().await;
    w.stop().await.unwrap();
}

#[tokio::test]
async fn rewatches_a_parent_recreated_before_the_watch_notices() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("a");
    fs::create_dir(&parent).unwrap();
    let path = parent.join("f");
    let res = build("file", "f", json!({"path": path, "content": "x"}));
    let mut w = Watching::start(&res).await;
    // Both happen before the watcher looks: the old watch now points at a dead inode.
    fs::remove_dir(&parent).unwrap();
    fs::create_dir(&parent).unwrap();
    w.next_event().await;
    // Whatever the deletion reported has been handled once this check_apply's view is
    // consistent; what counts is that a change in the new directory is still seen.
    assert_eq!(apply(&res).await.unwrap(), Changed);
    w.drain();
    fs::remove_file(&path).unwrap();
    w.next_event().await;
    w.stop().await.unwrap();
}

#[tokio::test]
async fn a_plain_directory_ignores_its_entries_but_not_its_own_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let res = build(
        "file",
        "d",
        json!({"path": format!("{}/", path.display()), "mode": "0755"}),
    );
    assert_eq!(apply(&res).await.unwrap(), Changed);
    let mut w = Watching::start(&res).await;
    w.drain();
    // A sentinel in another directory: the hub dispatches in order, so once its event is
    // here every wake caused by the writes before it has been delivered.
    let elsewhere = tempfile::tempdir().unwrap();
    let sentinel_path = elsewhere.path().join("s");
    let sentinel = build("file", "s", json!({"path": sentinel_path}));
    let mut s = Watching::start(&sentinel).await;

    // What the directory holds is not the directory resource's business.
    fs::write(path.join("inside"), "x").unwrap();
    fs::rename(path.join("inside"), path.join("moved")).unwrap();
    fs::write(&sentinel_path, "y").unwrap();
    s.next_event().await;
    assert!(
        w.events.try_recv().is_err(),
        "woken by traffic inside the directory"
    );

    // Its own mode is, and so is its removal.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    w.next_event().await;
    assert_eq!(apply(&res).await.unwrap(), Changed);
    w.drain();
    fs::remove_file(path.join("moved")).unwrap();
    fs::remove_dir(&path).unwrap();
    w.next_event().await;
    w.stop().await.unwrap();
    s.stop().await.unwrap();
}

/// `line` edits part of a file that people edit too: a hand edit still being written (its
/// writer has not closed the file) is not reported, so no check reads it half-written and
/// renames a copy over it without the writer's later writes; its close is reported. A
/// `file` resource (which owns the whole content) hears the write at once.
#[tokio::test]
async fn a_line_hears_a_hand_edit_once_its_writer_closes_the_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sshd_config");
    fs::write(&path, "Port 22\nPermitRootLogin no\n").unwrap();
    let line = build(
        "line",
        "root",
        json!({"path": path, "line": "PermitRootLogin no"}),
    );
    let file = build("file", "f", json!({"path": path}));
    let mut lw = Watching::start(&line).await;
    let mut fw = Watching::start(&file).await;
    let mut editor = fs::OpenOptions::new().append(true).open(&path).unwrap();
    editor.write_all(b"# being typed").unwrap();
    // The file watch hears the write: the hub has dispatched it to both subscribers.
    fw.next_event().await;
    let short = std::time::Duration::from_millis(300);
    assert!(
        tokio::time::timeout(short, lw.events.recv()).await.is_err(),
        "a file still being written was reported to line"
    );
    editor.write_all(b" and finished\n").unwrap();
    drop(editor);
    lw.next_event().await;
    assert_eq!(apply(&line).await.unwrap(), InSync);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "Port 22\nPermitRootLogin no\n# being typed and finished\n"
    );
    lw.stop().await.unwrap();
    fw.stop().await.unwrap();
}
