//! `file` check_apply on the real filesystem: create, fix drift, absent, mode and owner,
//! directories and tree copies, force, Check mode, atomic replacement.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{apply, build, check};
use resource::Outcome::{Changed, InSync, WouldChange};
use serde_json::json;

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[tokio::test]
async fn creates_a_file_then_stays_in_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let res = build("file", "f", json!({"path": path, "content": "hello\n"}));
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
    assert_eq!(
        mode_of(&path),
        0o644,
        "new files get 0644 when no mode is given"
    );
    assert_eq!(apply(&res).await.unwrap(), InSync);
}

#[tokio::test]
async fn path_defaults_to_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("named");
    let res = build("file", path.to_str().unwrap(), json!({"content": "x"}));
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "x");
}

#[tokio::test]
async fn fixes_drifted_content_and_keeps_mode_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, "drifted, and longer than wanted\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let res = build("file", "f", json!({"path": path, "content": "wanted\n"}));
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "wanted\n");
    let m = fs::metadata(&path).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600, "a rewritten file keeps its mode");
    assert_eq!(
        (m.uid(), m.gid()),
        (65534, 65534),
        "a rewritten file keeps its owner"
    );
    // Same length, different bytes: compared by content, not size.
    fs::write(&path, "WANTED\n").unwrap();
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "wanted\n");
    assert_eq!(apply(&res).await.unwrap(), InSync);
}

#[tokio::test]
async fn unset_content_leaves_content_alone_but_empty_content_empties() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, "mine\n").unwrap();
    let untouched = build("file", "f", json!({"path": path, "mode": "0640"}));
    assert_eq!(apply(&untouched).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "mine\n");
    assert_eq!(mode_of(&path), 0o640);

    let emptied = build("file", "f", json!({"path": path, "content": ""}));
    assert_eq!(apply(&emptied).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "");

    let missing = dir.path().join("touched");
    let touch = build("file", "t", json!({"path": missing}));
    assert_eq!(apply(&touch).await.unwrap(), Changed);
    assert_eq!(
        fs::read_to_string(&missing).unwrap(),
        "",
        "a file without content is created empty"
    );
}

#[tokio::test]
async fn absent_removes_files_and_only_empty_dirs_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, "x").unwrap();
    let res = build("file", "f", json!({"path": file, "state": "absent"}));
    assert_eq!(check(&res).await.unwrap(), WouldChange);
    assert!(file.exists(), "check mode removes nothing");
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert!(!file.exists());
    assert_eq!(apply(&res).await.unwrap(), InSync);

    let sub = dir.path().join("d");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("inner"), "x").unwrap();
    let plain = build(
        "file",
        "d",
        json!({"path": format!("{}/", sub.display()), "state": "absent"}),
    );
    let e = apply(&plain).await.unwrap_err().to_string();
    assert!(
        e.contains("non-empty directory") && e.contains("recurse"),
        "{e}"
    );
    assert!(sub.join("inner").exists());
    let forced = build(
        "file",
        "d",
        json!({"path": sub, "state": "absent", "recurse": true, "force": true}),
    );
    assert_eq!(apply(&forced).await.unwrap(), Changed);
    assert!(!sub.exists());

    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let res = build("file", "e", json!({"path": empty, "state": "absent"}));
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert!(!empty.exists());
}

#[tokio::test]
async fn changes_mode_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, "same\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let res = build(
        "file",
        "f",
        json!({"path": path, "content": "same\n", "mode": 600, "owner": "nobody", "group": 65534}),
    );
    assert_eq!(check(&res).await.unwrap(), WouldChange);
    assert_eq!(mode_of(&path), 0o644);
    assert_eq!(fs::metadata(&path).unwrap().uid(), 0);
    let inode = fs::metadata(&path).unwrap().ino();
    assert_eq!(apply(&res).await.unwrap(), Changed);
    let m = fs::metadata(&path).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    assert_eq!(
        m.ino(),
        inode,
        "content was in sync: the file was not rewritten"
    );
    assert_eq!(apply(&res).await.unwrap(), InSync);
}

#[tokio::test]
async fn unknown_owner_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let res = build(
        "file",
        "f",
        json!({"path": dir.path().join("f"), "owner": "no-such-user-here"}),
    );
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(e.contains("no-such-user-here"), "{e}");
}

#[tokio::test]
async fn creates_directories_even_with_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/");
    let res = build(
        "file",
        "d",
        json!({"path": format!("{}/", path.display()), "content": "ignored", "mode": "0750"}),
    );
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert!(path.is_dir());
    assert_eq!(mode_of(&path), 0o750);
    assert_eq!(apply(&res).await.unwrap(), InSync);
}

#[tokio::test]
async fn copies_a_source_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::write(&src, "from source\n").unwrap();
    let dst = dir.path().join("dst");
    let res = build("file", "dst", json!({"path": dst, "source": src}));
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&dst).unwrap(), "from source\n");
    assert_eq!(apply(&res).await.unwrap(), InSync);
    fs::write(&src, "source changed\n").unwrap();
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&dst).unwrap(), "source changed\n");
}

#[tokio::test]
async fn copies_a_source_tree_with_recurse_and_prunes_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("top"), "top\n").unwrap();
    fs::write(src.join("sub/deeper/leaf"), "leaf\n").unwrap();
    fs::set_permissions(src.join("top"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("top", src.join("link")).unwrap();
    let dst = dir.path().join("dst");

    let no_recurse = build(
        "file",
        "dst",
        json!({"path": format!("{}/", dst.display()), "source": src}),
    );
    let e = apply(&no_recurse).await.unwrap_err().to_string();
    assert!(e.contains("recurse"), "{e}");

    let res = build(
        "file",
        "dst",
        json!({"path": format!("{}/", dst.display()), "source": src, "recurse": true}),
    );
    assert_eq!(check(&res).await.unwrap(), WouldChange);
    assert!(!dst.exists(), "check mode creates nothing");
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(dst.join("top")).unwrap(), "top\n");
    assert_eq!(mode_of(&dst.join("top")), 0o755);
    assert_eq!(
        fs::read_to_string(dst.join("sub/deeper/leaf")).unwrap(),
        "leaf\n"
    );
    assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("top"));
    assert_eq!(apply(&res).await.unwrap(), InSync);

    // Drift inside the tree is fixed; extra files stay without force.
    fs::write(dst.join("sub/deeper/leaf"), "drift\n").unwrap();
    fs::write(dst.join("extra"), "extra\n").unwrap();
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(
        fs::read_to_string(dst.join("sub/deeper/leaf")).unwrap(),
        "leaf\n"
    );
    assert!(dst.join("extra").exists());

    let forced = build(
        "file",
        "dst",
        json!({"path": format!("{}/", dst.display()), "source": src, "recurse": true, "force": true}),
    );
    assert_eq!(apply(&forced).await.unwrap(), Changed);
    assert!(
        !dst.join("extra").exists(),
        "force removes what the source does not have"
    );
    assert_eq!(apply(&forced).await.unwrap(), InSync);
}

#[tokio::test]
async fn force_replaces_a_file_by_a_directory_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    fs::write(&path, "a file\n").unwrap();
    let as_dir = format!("{}/", path.display());

    let refused = build("file", "x", json!({"path": as_dir}));
    let e = apply(&refused).await.unwrap_err().to_string();
    assert!(e.contains("force"), "{e}");
    assert!(path.is_file());

    let dir_forced = build("file", "x", json!({"path": as_dir, "force": true}));
    assert_eq!(apply(&dir_forced).await.unwrap(), Changed);
    assert!(path.is_dir());
    fs::write(path.join("inside"), "x").unwrap();

    let refused = build(
        "file",
        "x",
        json!({"path": path, "content": "file again\n"}),
    );
    let e = apply(&refused).await.unwrap_err().to_string();
    assert!(e.contains("force"), "{e}");
    assert!(path.is_dir());

    let file_forced = build(
        "file",
        "x",
        json!({"path": path, "content": "file again\n", "force": true}),
    );
    assert_eq!(check(&file_forced).await.unwrap(), WouldChange);
    assert!(path.is_dir());
    assert_eq!(apply(&file_forced).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "file again\n");
}

#[tokio::test]
async fn check_mode_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, "old\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let before = fs::metadata(&path).unwrap();
    let res = build(
        "file",
        "f",
        json!({"path": path, "content": "new\n", "mode": "0644"}),
    );
    assert_eq!(check(&res).await.unwrap(), WouldChange);
    let after = fs::metadata(&path).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "old\n");
    assert_eq!(
        (after.ino(), after.mode(), after.mtime_nsec()),
        (before.ino(), before.mode(), before.mtime_nsec())
    );
    let missing = build(
        "file",
        "m",
        json!({"path": dir.path().join("missing"), "content": "x"}),
    );
    assert_eq!(check(&missing).await.unwrap(), WouldChange);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no file (or temp file) was created"
    );
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(check(&res).await.unwrap(), InSync);
}

#[tokio::test]
async fn writes_are_atomic_renames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, "old\n").unwrap();
    let inode = fs::metadata(&path).unwrap().ino();
    let res = build("file", "f", json!({"path": path, "content": "new\n"}));
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_ne!(
        fs::metadata(&path).unwrap().ino(),
        inode,
        "content is replaced by rename, not rewritten in place"
    );
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"], "no temporary file is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_reader_never_sees_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    // Large enough that an in-place write would be observable half done.
    let a = "a".repeat(1 << 20);
    let b = "b".repeat(1 << 19);
    let res_a = build("file", "f", json!({"path": path, "content": a}));
    let res_b = build("file", "f", json!({"path": path, "content": b}));
    assert_eq!(apply(&res_a).await.unwrap(), Changed);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, path, a, b) = (stop.clone(), path.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let seen = fs::read_to_string(&path).expect("the file always exists");
                assert!(
                    seen == a || seen == b,
                    "partial file seen: {} bytes",
                    seen.len()
                );
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..20 {
        assert_eq!(apply(&res_b).await.unwrap(), Changed);
        assert_eq!(apply(&res_a).await.unwrap(), Changed);
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("reader saw a partial file");
    assert!(reads > 0);
}

#[tokio::test]
async fn a_missing_parent_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/f");
    let res = build("file", "f", json!({"path": path, "content": "x"}));
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(e.contains("no/such/dir"), "{e}");
}
