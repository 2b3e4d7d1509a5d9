use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use resource::{EventSink, Meta, Mode, Outcome, Resource, WatchCtx};
use serde_json::json;

use super::table::{self, FstabEntry, MountInfo};
use super::*;

fn spec(params: Value) -> Result<MountSpec, String> {
    MountSpec::from_params("/mnt/data", params).map_err(|e| e.message)
}

#[test]
fn escapes_round_trip() {
    assert_eq!(table::escape("/mnt/my disk\\x"), "/mnt/my\\040disk\\134x");
    assert_eq!(
        table::unescape(b"/mnt/my\\040disk\\134x\\011\\9"),
        b"/mnt/my disk\\x\t\\9"
    );
}

const MOUNTINFO: &[u8] = b"22 27 0:21 / /proc rw,relatime - proc proc rw\n\
101 27 7:3 / /mnt/my\\040data rw,nodev,noatime shared:1 - ext4 /dev/loop3 rw,errors=remount-ro,commit=30\n\
102 101 0:50 / /mnt/my\\040data rw - tmpfs tmpfs rw,size=1024k\n";

#[test]
fn mountinfo_parses_with_escapes_and_the_top_mount_wins() {
    let t = table::parse_mountinfo(MOUNTINFO);
    assert_eq!(t.len(), 3);
    assert_eq!(t[1].id, 101);
    assert_eq!(t[1].dev, (7, 3));
    assert_eq!(t[1].mount_point, "/mnt/my data");
    assert_eq!(t[1].fstype, "ext4");
    assert_eq!(t[1].source, "/dev/loop3");
    assert_eq!(t[1].super_options, ["rw", "errors=remount-ro", "commit=30"]);
    assert_eq!(table::mounted_at(&t, "/mnt/my data").unwrap().id, 102);
}

fn opts(list: &[&str]) -> Vec<Opt> {
    parse_options(Some(json!(list))).unwrap()
}

#[test]
fn options_compare_with_defaults_filled_in_and_order_ignored() {
    let t = table::parse_mountinfo(MOUNTINFO);
    let m = &t[1];
    // The kernel's defaults (rw, suid, exec, relatime) are implied; userspace options ignored.
    assert!(table::options_differ(&opts(&["nodev", "noatime"]), m).is_empty());
    assert!(
        table::options_differ(
            &opts(&["noatime", "defaults", "nodev", "nofail", "x-a.b"]),
            m
        )
        .is_empty()
    );
    assert!(table::options_differ(&opts(&["noatime", "nodev", "commit=30"]), m).is_empty());
    // A hidden filesystem option is taken as in effect; a shown one with another value is not.
    assert!(table::options_differ(&opts(&["noatime", "nodev", "data=ordered"]), m).is_empty());
    assert_eq!(
        table::options_differ(&opts(&["noatime", "nodev", "commit=5"]), m),
        ["commit=5"]
    );
    assert_eq!(table::options_differ(&opts(&["nodev"]), m), ["relatime"]);
    assert_eq!(
        table::options_differ(&opts(&["noatime", "nodev", "ro", "noexec"]), m),
        ["ro", "noexec"]
    );
    // `user` implies nosuid,nodev,noexec.
    assert_eq!(
        table::options_differ(&opts(&["user", "noatime"]), m),
        ["nosuid", "noexec"]
    );
}

const FSTAB: &[u8] = b"# /etc/fstab: static file system information.\r\n\
UUID=abc  /          ext4  errors=remount-ro  0  1\n\
\n\
/dev/sdb1 /mnt/data ext4 noatime,nodev 0 2 # old\n\
tmpfs /tmp tmpfs size=10M 0 0\n\
/dev/sdc1 /mnt/data xfs defaults 0 0\n\
#/dev/sdd /mnt/data ext4 defaults 0 0";

fn entry(options: &[&str]) -> FstabEntry {
    FstabEntry {
        device: "/dev/sdb1".into(),
        dir: "/mnt/data".into(),
        fstype: "ext4".into(),
        options: opts(options),
        freq: 0,
        passno: 2,
    }
}

#[test]
fn fstab_edit_touches_only_its_line() {
    // Same entry (options in another order): that line is kept; the duplicate goes.
    let out = table::edit_fstab(FSTAB, "/mnt/data", Some(&entry(&["nodev", "noatime"]))).unwrap();
    let want = String::from_utf8_lossy(FSTAB).replace("/dev/sdc1 /mnt/data xfs defaults 0 0\n", "");
    assert_eq!(String::from_utf8_lossy(&out), want);
    let once = out;
    assert_eq!(
        table::edit_fstab(&once, "/mnt/data", Some(&entry(&["nodev", "noatime"]))),
        None
    );
    // Changed options: the line is rewritten where it is.
    let out = table::edit_fstab(&once, "/mnt/data", Some(&entry(&["ro"]))).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&once).replace(
            "/dev/sdb1 /mnt/data ext4 noatime,nodev 0 2 # old",
            "/dev/sdb1 /mnt/data ext4 ro 0 2"
        )
    );
    // Absent: the line goes, every other byte stays (the commented one too).
    let out = table::edit_fstab(&once, "/mnt/data", None).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&once)
            .replace("/dev/sdb1 /mnt/data ext4 noatime,nodev 0 2 # old\n", "")
    );
    // New: appended after a last line without a newline; spaces escaped.
    let mut e = entry(&[]);
    e.dir = "/mnt/my data".into();
    let out = table::edit_fstab(b"a b c", "/mnt/my data", Some(&e)).unwrap();
    assert_eq!(
        out,
        b"a b c\n/dev/sdb1 /mnt/my\\040data ext4 defaults 0 2\n"
    );
    assert!(table::fstab_entry(&out, "/mnt/my data").unwrap().same(&e));
}

#[test]
fn params_parse_and_round_trip() {
    let s = spec(json!({"device": "UUID=1234-ab", "type": "ext4",
        "options": {"noatime": "", "commit": "30"}, "passno": 2}))
    .unwrap();
    assert_eq!(s.state, State::Mounted);
    assert_eq!(
        s.options.iter().map(Opt::text).collect::<Vec<_>>(),
        ["commit=30", "noatime"]
    );
    let again = spec(Value::Object(s.to_params())).unwrap();
    assert_eq!(again, s);
    // mgmt's state name; `defaults` alone is none.
    let s = spec(
        json!({"state": "exists", "device": "LABEL=my data", "type": "ext4",
        "options": ["defaults"]}),
    )
    .unwrap();
    assert_eq!((s.state, s.options.len()), (State::Mounted, 0));
    assert!(spec(json!({"state": "absent"})).is_ok());
}

#[test]
fn bad_params_are_errors_at_the_field() {
    for (params, why) in [
        (
            json!({"type": "ext4"}),
            "`device`: a device is needed (unless `state: absent`)",
        ),
        (
            json!({"device": "/dev/sdb1"}),
            "`type`: a filesystem type is needed (unless `state: absent`)",
        ),
        (
            json!({"device": "sdb1/x", "type": "ext4"}),
            "`device`: device \"sdb1/x\": write an absolute path, UUID=, LABEL=, or a plain word for a virtual filesystem (`tmpfs`)",
        ),
        (
            json!({"device": "/dev/sdb1\n/x", "type": "ext4"}),
            "`device`: device \"/dev/sdb1\\n/x\" must not contain newlines or control characters",
        ),
        (
            json!({"device": "FOO=x", "type": "ext4"}),
            "`device`: device `FOO=x`: write a path, UUID=, LABEL=, PARTUUID= or PARTLABEL=",
        ),
        (
            json!({"device": "/dev/sdb1", "type": "ext 4"}),
            "`type`: type \"ext 4\" must be a simple word such as `ext4` (letters, digits, `_.+-`)",
        ),
        (
            json!({"device": "/dev/sdb1", "type": "ext4", "options": ["size=1 0"]}),
            "`options`: option \"size=1 0\": the value must be non-empty, without whitespace or commas",
        ),
        (
            json!({"device": "/dev/sdb1", "type": "ext4", "options": {"a,b": ""}}),
            "`options`: option \"a,b\": the name must be letters, digits and `_.+-:@`",
        ),
        (
            json!({"device": "/dev/sdb1", "type": "ext4", "options": ["remount"]}),
            "`options`: option `remount` is not supported (mount manages one mounted filesystem)",
        ),
        (
            json!({"device": "/dev/sdb1", "type": "ext4", "options": "noatime"}),
            "`options`: expected a map (`{noatime: \"\"}`) or a list (`[noatime]`)",
        ),
        (
            json!({"state": "up"}),
            "`state`: unknown state `up` (mounted, unmounted or absent)",
        ),
    ] {
        assert_eq!(spec(params.clone()).unwrap_err(), why, "{params}");
    }
    for name in ["mnt", "/mnt/../etc", "/mnt//x", "/"] {
        assert!(
            MountSpec::from_params(name, json!({"state": "absent"})).is_err(),
            "{name}"
        );
    }
    assert_eq!(
        MountSpec::from_params("/mnt/x/", json!({"state": "absent"}))
            .unwrap()
            .mount_point,
        "/mnt/x"
    );
}

#[test]
fn uids_order_files_under_the_mount_after_it_and_its_directory_before() {
    let r = new(
        "/mnt/data",
        json!({"device": "/srv/disk.img", "type": "ext4"}),
        Meta::default(),
    )
    .unwrap();
    let keys = |u: Vec<Uid>| {
        u.into_iter()
            .map(|u| format!("{}:{}", u.kind, u.key))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(r.uids()), ["file:/mnt/data"]);
    assert_eq!(
        keys(r.auto_edges()),
        [
            "file:/mnt/data",
            "file:/mnt",
            "file:/",
            "file:/srv/disk.img"
        ]
    );
}

/// Runs `program`, panicking with its stderr when it fails; its stdout.
fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The real mount test runs in a private mount namespace (`unshare -m`), re-running this test
/// binary there; nothing it mounts is visible outside.
#[test]
fn real_loop_mount_in_private_namespace() {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("skipped: needs root and loop devices");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "--"])
        .arg(exe)
        .args([
            "--exact",
            "mount::tests::inner_private_namespace",
            "--ignored",
            "--nocapture",
        ])
        .env("MGMT_MOUNT_PRIVATE_NS", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(text.contains("1 passed"), "the inner test did not run");
}

/// Detaches the loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.0)
            .output();
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

fn mount_id(env: &Env, mp: &str) -> Option<MountInfo> {
    table::mounted_at(&ops::read_mountinfo(env).unwrap(), mp).cloned()
}

#[tokio::test]
#[ignore = "run by real_loop_mount_in_private_namespace inside unshare -m"]
async fn inner_private_namespace() {
    if std::env::var("MGMT_MOUNT_PRIVATE_NS").as_deref() != Ok("1") {
        eprintln!("skipped: runs only inside real_loop_mount_in_private_namespace's namespace");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 0]).unwrap();
    sh("truncate", &["-s", "16M", img.to_str().unwrap()]);
    sh("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]);
    let dev = Loop(sh("losetup", &["--find", "--show", img.to_str().unwrap()]));
    let uuid = sh(
        "blkid",
        &["-c", "/dev/null", "-s", "UUID", "-o", "value", &dev.0],
    );
    let mp = dir.path().join("mnt data");
    let mps = mp.to_str().unwrap().to_string();
    let env = Env {
        fstab: dir.path().join("fstab"),
        systemd_marker: dir.path().join("no-systemd"),
        ..Env::default()
    };
    let other = b"# keep me\r\nUUID=x / ext4 defaults 0 1\n\n#tabs\there\n";
    std::fs::write(&env.fstab, other).unwrap();
    let res = |state: &str, options: Value| {
        new(
            &mps,
            json!({"state": state, "device": format!("UUID={uuid}"), "type": "ext4",
            "options": options, "passno": 2}),
            Meta::default(),
        )
        .unwrap()
        .with_env(env.clone())
    };
    let ctx = ApplyCtx {
        refresh: false,
        hostname: "h".into(),
        cancel: Default::default(),
    };
    // Watch: every mount change is an event (the kernel's POLLPRI on mountinfo).
    let (events, mut rx) = EventSink::channel();
    let cancel = resource::CancellationToken::new();
    let watcher = res("mounted", json!([]));
    let wctx = WatchCtx {
        events,
        cancel: cancel.clone(),
        hostname: "h".into(),
    };
    let watch = tokio::spawn(async move { watcher.watch(wctx).await });
    rx.recv().await.unwrap(); // running

    // --noop: nothing changes.
    let r = res("mounted", json!(["noatime"]));
    assert_eq!(
        r.check_apply(&ctx, Mode::Check).await.unwrap(),
        Outcome::WouldChange
    );
    assert_eq!(std::fs::read(&env.fstab).unwrap(), other);
    assert!(mount_id(&env, &mps).is_none());
    // Mount.
    assert_eq!(
        r.check_apply(&ctx, Mode::Apply).await.unwrap(),
        Outcome::Changed
    );
    let m = mount_id(&env, &mps).expect("mounted");
    assert!(m.mount_options.contains(&"noatime".to_string()), "{m:?}");
    let line = format!("UUID={uuid} {} ext4 noatime 0 2\n", table::escape(&mps));
    assert_eq!(
        std::fs::read(&env.fstab).unwrap(),
        [&other[..], line.as_bytes()].concat()
    );
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.check_apply(&ctx, Mode::Apply).await.unwrap(),
        Outcome::InSync
    );
    // Changed options: a remount (same mount id), a file kept open stays usable.
    let kept = std::fs::File::create(mp.join("open")).unwrap();
    let r = res(
        "mounted",
        json!({"noatime": "", "nodev": "", "commit": "30"}),
    );
    assert_eq!(
        r.check_apply(&ctx, Mode::Apply).await.unwrap(),
        Outcome::Changed
    );
    let m2 = mount_id(&env, &mps).unwrap();
    assert_eq!(m2.id, m.id, "remounted in place");
    assert!(m2.mount_options.contains(&"nodev".to_string()), "{m2:?}");
    assert!(
        m2.super_options.contains(&"commit=30".to_string()),
        "{m2:?}"
    );
    kept.sync_all().unwrap();
    drop(kept);
    assert_eq!(
        r.check_apply(&ctx, Mode::Apply).await.unwrap(),
        Outcome::InSync
    );
    // Drift: unmounted by hand; the watch hears it, check_apply mounts again.
    while rx.try_recv().is_ok() {}
    let t = Instant::now();
    sh("umount", &[&mps]);
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.check_apply(&ctx, Mode::Apply).await.unwrap(),
        Outcome::Changed
    );
    assert!(mount_id(&env, &mps).is_some());
    eprintln!(
        "MEASURED mount private-ns drift (umount) to remounted: {:?}",
        t.elapsed()
    );
    // Unmounted keeps the line; absent removes it, the rest byte for byte.
    let r = res(
        "unmounted",
        json!({"noatime": "", "nodev": "", "commit": "30"}),
    );
    assert_eq!(
        r.check_apply(&ctx, Mode::Apply).await.unwrap(),
        Outcome::Changed
    );
    assert!(mount_id(&env, &mps).is_none());
    assert!(table::fstab_entry(&std::fs::read(&env.fstab).unwrap(), &mps).is_some());
    let r = res("absent", json!([]));
    assert_eq!(
        r.check_apply(&ctx, Mode::Apply).await.unwrap(),
        Outcome::Changed
    );
    assert_eq!(std::fs::read(&env.fstab).unwrap(), other);
    assert_eq!(
        r.check_apply(&ctx, Mode::Apply).await.unwrap(),
        Outcome::InSync
    );
    cancel.cancel();
    watch.await.unwrap().unwrap();
}
