//! `file` with `fragments` on the real filesystem: build errors, canonical form and equality,
//! concatenation order, directories of fragments (what they include and skip), in-sync and
//! rewrite, mode kept, missing fragments, and the watch re-applying after a fragment changes.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Watching, apply, build, check};
use resource::Outcome::{Changed, InSync, WouldChange};
use resource::{Meta, same_resource};
use serde_json::{Value, json};

fn build_err(params: Value) -> String {
    resources::registry()
        .build("file", "x", params, Meta::default())
        .expect_err("build should fail")
        .to_string()
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

fn dir_frag(path: &Path) -> String {
    format!("{}/", path.display())
}

#[test]
fn build_errors_name_the_fields() {
    let e = build_err(json!({"path": "/tmp/x", "fragments": ["/a"], "content": "c"}));
    assert!(
        e.contains("`fragments`") && e.contains("`content`") && e.contains("`source`"),
        "{e}"
    );
    let e = build_err(json!({"path": "/tmp/x", "fragments": ["/a"], "source": "/b"}));
    assert!(e.contains("`fragments`") && e.contains("`source`"), "{e}");
    let e = build_err(json!({"path": "/tmp/d/", "fragments": ["/a"]}));
    assert!(e.contains("/tmp/d/") && e.contains("directory"), "{e}");
    let e = build_err(json!({"path": "/tmp/x", "fragments": ["/a"], "state": "absent"}));
    assert!(e.contains("absent") && e.contains("`fragments`"), "{e}");
    let e = build_err(json!({"path": "/tmp/x", "fragments": []}));
    assert!(e.contains("empty"), "{e}");
    let e = build_err(json!({"path": "/tmp/x", "fragments": ["a/b"]}));
    assert!(e.contains("`a/b` is not an absolute path"), "{e}");
    let e = build_err(json!({"path": "/tmp/x", "fragments": ["/tmp/"]}));
    assert!(
        e.contains("/tmp/ would include the file /tmp/x itself"),
        "{e}"
    );
    let e = build_err(json!({"path": "/tmp/x", "fragments": ["/a", "/tmp/./x"]}));
    assert!(e.contains("/tmp/x would include"), "{e}");
}

#[test]
fn canonical_form_equality_and_auto_edges() {
    let res = build(
        "file",
        "f",
        json!({"path": "/srv/all", "fragments": ["/etc//a.d/", "/etc/x/../b"]}),
    );
    assert_eq!(
        res.params(),
        json!({"path": "/srv/all", "fragments": ["/etc/a.d/", "/etc/b"], "state": "exists",
               "recurse": false, "force": false})
    );
    let same = build(
        "file",
        "f",
        json!({"path": "/srv/all", "fragments": ["/etc/a.d/", "/etc/b"]}),
    );
    assert!(same_resource(res.as_ref(), same.as_ref()));
    // A graph swap must replace the vertex when the fragments change, their order included.
    for other in [
        json!(["/etc/b", "/etc/a.d/"]),
        json!(["/etc/a.d/"]),
        json!(["/etc/a.d", "/etc/b"]),
    ] {
        let changed = build("file", "f", json!({"path": "/srv/all", "fragments": other}));
        assert!(
            !same_resource(res.as_ref(), changed.as_ref()),
            "{other} should differ"
        );
    }
    let edges: Vec<String> = res.auto_edges().into_iter().map(|u| u.key).collect();
    assert_eq!(edges, ["/srv", "/", "/etc/a.d", "/etc/b"]);
}

#[tokio::test]
async fn concatenates_in_list_order_with_directories_sorted_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, last) = (tmp.path().join("first"), tmp.path().join("last"));
    write(&first, "first\n");
    write(&last, "last, without a newline");
    let d = tmp.path().join("d");
    fs::create_dir(&d).unwrap();
    // Byte order: digits before upper case before lower case; "10" before "9".
    for name in ["b", "a", "B", "9", "10"] {
        write(&d.join(name), &format!("{name}\n"));
    }
    // Skipped: dotfiles (an atomic writer's temp file), subdirectories, dangling symlinks.
    write(&d.join(".a.tmp"), "half written\n");
    fs::create_dir(d.join("c-sub")).unwrap();
    write(&d.join("c-sub/inner"), "inner\n");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), d.join("dangling")).unwrap();
    // Included: a symlink to a regular file, as the file's content.
    std::os::unix::fs::symlink(&first, d.join("link")).unwrap();

    let path = tmp.path().join("all");
    let res = build(
        "file",
        "all",
        json!({"path": path, "fragments": [first, dir_frag(&d), last]}),
    );
    assert_eq!(check(&res).await.unwrap(), WouldChange);
    assert!(!path.exists(), "check mode writes nothing");
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "first\n10\n9\nB\na\nb\nfirst\nlast, without a newline"
    );
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(apply(&res).await.unwrap(), InSync);
    assert_eq!(check(&res).await.unwrap(), InSync);
}

#[tokio::test]
async fn in_sync_file_is_not_rewritten_and_drift_is_fixed_keeping_the_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write(&a, "one\n");
    write(&b, "two\n");
    let path = tmp.path().join("all");
    write(&path, "one\ntwo\n");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();
    let res = build("file", "all", json!({"path": path, "fragments": [a, b]}));
    assert_eq!(apply(&res).await.unwrap(), InSync);
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "not rewritten");

    // Same size, other bytes: compared by content.
    write(&path, "one\ntwO\n");
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    assert_eq!(
        fs::metadata(&path).unwrap().mode() & 0o7777,
        0o600,
        "a rewritten file keeps its mode"
    );
    // Another size.
    write(&b, "two, longer\n");
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo, longer\n");

    // A mode given is applied, and an in-sync content with a wrong mode only gets its mode.
    let with_mode = build(
        "file",
        "all",
        json!({"path": path, "fragments": [a, b], "mode": "0640"}),
    );
    let inode = fs::metadata(&path).unwrap().ino();
    assert_eq!(apply(&with_mode).await.unwrap(), Changed);
    let m = fs::metadata(&path).unwrap();
    assert_eq!((m.mode() & 0o7777, m.ino()), (0o640, inode));
}

#[tokio::test]
async fn missing_fragments_are_errors_and_an_empty_directory_adds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("all");
    let missing = tmp.path().join("missing");
    let res = build("file", "all", json!({"path": path, "fragments": [missing]}));
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert!(!path.exists(), "nothing written on error");

    let res = build(
        "file",
        "all",
        json!({"path": path, "fragments": [dir_frag(&missing)]}),
    );
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");

    // A directory named without the trailing `/`, and a file named with it.
    let d = tmp.path().join("d");
    fs::create_dir(&d).unwrap();
    let res = build("file", "all", json!({"path": path, "fragments": [d]}));
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(e.contains("is a directory") && e.contains("`/`"), "{e}");
    let f = tmp.path().join("f");
    write(&f, "x");
    let res = build(
        "file",
        "all",
        json!({"path": path, "fragments": [dir_frag(&f)]}),
    );
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(e.contains("is a file") && e.contains("directory"), "{e}");

    let res = build(
        "file",
        "all",
        json!({"path": path, "fragments": [dir_frag(&d)]}),
    );
    write(&path, "stale\n");
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "");
    assert_eq!(apply(&res).await.unwrap(), InSync);
}

#[tokio::test]
async fn a_fragment_that_is_the_file_itself_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("all");
    write(&path, "x\n");
    // Reached through a symlinked directory: no lexical check can see it.
    let alias = tmp.path().join("alias");
    std::os::unix::fs::symlink(tmp.path(), &alias).unwrap();
    let res = build(
        "file",
        "all",
        json!({"path": path, "fragments": [dir_frag(&alias)]}),
    );
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(e.contains("itself"), "{e}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "x\n");
}

#[tokio::test]
async fn the_watch_re_applies_after_a_fragment_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let single = tmp.path().join("single");
    write(&single, "single\n");
    let d = tmp.path().join("d");
    fs::create_dir(&d).unwrap();
    write(&d.join("a"), "a\n");
    let path = tmp.path().join("out/all");
    fs::create_dir(tmp.path().join("out")).unwrap();
    let res = build(
        "file",
        "all",
        json!({"path": path, "fragments": [single, dir_frag(&d)]}),
    );
    assert_eq!(apply(&res).await.unwrap(), Changed);

    // Each change gets a fresh watch, so its event can only come from that change; then the
    // check_apply the event leads to brings the file up to date.
    let changes: [(&dyn Fn(), &str); 5] = [
        (&|| write(&single, "edited\n"), "edited\na\n"),
        (&|| write(&d.join("b"), "b\n"), "edited\na\nb\n"),
        (&|| fs::remove_file(d.join("a")).unwrap(), "edited\nb\n"),
        (
            // An atomic writer: temp file, then rename into place.
            &|| {
                write(&d.join(".c.tmp"), "c\n");
                fs::rename(d.join(".c.tmp"), d.join("c")).unwrap();
            },
            "edited\nb\nc\n",
        ),
        (&|| fs::write(d.join("b"), "B\n").unwrap(), "edited\nB\nc\n"),
    ];
    for (change, want) in changes {
        let mut w = Watching::start(&res).await;
        change();
        w.next_event().await;
        assert_eq!(apply(&res).await.unwrap(), Changed, "want {want:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), want);
        w.stop().await.unwrap();
    }
}

#[tokio::test]
async fn the_watch_sees_a_missing_fragment_directory_appear() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("later/d");
    let path = tmp.path().join("all");
    let res = build(
        "file",
        "all",
        json!({"path": path, "fragments": [dir_frag(&d)]}),
    );
    assert!(apply(&res).await.is_err());
    let mut w = Watching::start(&res).await;
    fs::create_dir(tmp.path().join("later")).unwrap();
    w.next_event().await;
    fs::create_dir(&d).unwrap();
    w.next_event().await;
    // The watch has moved down into the new directory: a file written there is seen.
    write(&d.join("x"), "x\n");
    w.next_event().await;
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(fs::read_to_string(&path).unwrap(), "x\n");
    w.stop().await.unwrap();
}
