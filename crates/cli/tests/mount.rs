//! `mount` on a booted host: a real ext4 image on a loop device of the machine (attached here,
//! bound into the container with the test bed's `device_binds`), mounted at /mnt/data by
//! `mgmt run --remote` as a sudo user, its fstab line kept in sync.
//!
//! What is measured is printed as `MEASURED` lines (run with `--no-capture`); the assertions
//! are about what happened, never about how fast.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use support::bed::{Bed, applied_line, exit_reason, summary};
use testbed::{EXTRA_USER, Host, TestbedConfig};

const MP: &str = "/mnt/data";
const ID: &str = "mount[/mnt/data]";

/// How many times systemd has reloaded its units this boot (its `Reloading.` journal lines):
/// a changed fstab must be followed by a `daemon-reload`, an unchanged one must not. (What the
/// generator makes of the entry cannot be read here: in a container, systemd-fstab-generator
/// ignores fstab entries of block devices.)
fn reloads(bed: &Bed, h: &Host) -> usize {
    bed.sh(
        h,
        "journalctl -b _PID=1 -o cat --no-pager | grep -c '^Reloading' || true",
    )
    .trim()
    .parse()
    .unwrap()
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A loop device of the machine backed by a fresh ext4 image; detached when dropped.
struct LoopImage {
    dev: String,
    uuid: String,
    _dir: tempfile::TempDir,
}

impl LoopImage {
    fn new() -> LoopImage {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("data.img");
        let img = img.to_str().unwrap();
        sh("truncate", &["-s", "32M", img]);
        sh("mkfs.ext4", &["-q", "-F", img]);
        let dev = sh("losetup", &["--find", "--show", img]);
        let uuid = sh(
            "blkid",
            &["-c", "/dev/null", "-s", "UUID", "-o", "value", &dev],
        );
        LoopImage {
            dev,
            uuid,
            _dir: dir,
        }
    }
}

impl Drop for LoopImage {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

fn graph(h: &Host, uuid: &str, state: &str, options: &str) -> String {
    format!(
        "graph: mount\nremote: ssh://{EXTRA_USER}@{}:{}\nsudo: true\nresources:
  mount:
  - name: {MP}
    state: {state}
    device: UUID={uuid}
    type: ext4
    options: {options}
    passno: 2
",
        h.addr, h.port
    )
}

/// The mount at /mnt/data in the host's /proc/self/mountinfo: its id and options.
fn mountinfo(bed: &Bed, h: &Host) -> Option<(String, String)> {
    let out = bed.sh(
        h,
        &format!("awk '$5 == \"{MP}\" {{ print $1, $6 }}' /proc/self/mountinfo | tail -n 1"),
    );
    let (id, opts) = out.trim().split_once(' ')?;
    Some((id.to_string(), opts.to_string()))
}

fn proc_mounts(bed: &Bed, h: &Host) -> String {
    bed.sh(h, "cat /proc/mounts")
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(MP))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_once(bed: &Bed, g: &Path, extra: &[&str]) -> support::Running {
    let mut args = vec!["--converged-timeout", "1"];
    args.extend_from_slice(extra);
    let mut r = bed.start(&[g], &args);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "converged");
    r
}

#[test]
fn an_ext4_image_is_mounted_remounted_in_place_put_back_after_umount_and_removed_from_fstab() {
    let image = LoopImage::new();
    let bed = Bed::up(TestbedConfig {
        booted: true,
        device_binds: vec![image.dev.clone().into()],
        ..TestbedConfig::hosts(1)
    });
    let h = bed.h(1);
    let host = bed.name(h);
    let fstab0 = bed.read(h, "/etc/fstab");
    let changed = |r: &support::Running| summary(&r.seen, &host)["changed"].as_u64().unwrap_or(0);

    // --noop: nothing mounted, fstab untouched.
    let g = bed.graph("m1.yaml", &graph(h, &image.uuid, "mounted", "[noatime]"));
    run_once(&bed, &g, &["--noop"]);
    assert_eq!(mountinfo(&bed, h), None);
    assert_eq!(bed.read(h, "/etc/fstab"), fstab0);

    // Create: mounted with the options, the fstab line appended.
    let reloads0 = reloads(&bed, h);
    let t = Instant::now();
    let r = run_once(&bed, &g, &[]);
    println!("MEASURED mount create run: {:.2?}", t.elapsed());
    assert!(changed(&r) >= 1);
    let live = proc_mounts(&bed, h);
    assert!(
        live.contains(" ext4 ") && live.contains("noatime"),
        "{live}"
    );
    let line = format!("UUID={} {MP} ext4 noatime 0 2\n", image.uuid);
    let sep = if fstab0.is_empty() || fstab0.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    assert_eq!(bed.read(h, "/etc/fstab"), format!("{fstab0}{sep}{line}"));
    // systemd was told: a daemon-reload after the fstab change.
    assert!(
        reloads(&bed, h) > reloads0,
        "no daemon-reload after fstab changed"
    );
    let (id1, _) = mountinfo(&bed, h).unwrap();
    bed.sh(h, &format!("echo kept > {MP}/kept"));

    // No change: a second run changes nothing, and does not reload systemd.
    let before = reloads(&bed, h);
    let r = run_once(&bed, &g, &[]);
    assert_eq!(changed(&r), 0, "second run changed something");
    assert_eq!(reloads(&bed, h), before, "a daemon-reload without a change");

    // Changed options: a remount, the same mount (its id), the file still there.
    let g = bed.graph(
        "m2.yaml",
        &graph(h, &image.uuid, "mounted", "[noatime, nodev]"),
    );
    run_once(&bed, &g, &[]);
    let (id2, opts) = mountinfo(&bed, h).unwrap();
    assert_eq!(id2, id1, "remounted in place, not mounted again");
    assert!(opts.contains("nodev") && opts.contains("noatime"), "{opts}");
    assert_eq!(bed.read(h, &format!("{MP}/kept")), "kept\n");
    let line = format!("UUID={} {MP} ext4 noatime,nodev 0 2\n", image.uuid);
    assert_eq!(bed.read(h, "/etc/fstab"), format!("{fstab0}{sep}{line}"));

    // Drift: unmounted by hand; a live run mounts it again (its watch hears the kernel).
    let mut r = bed.start(&[&g], &[]);
    r.wait_event("the child converged", |v| {
        v["event"] == "host_converged" && v["converged"] == true
    });
    r.mark();
    bed.sh(h, &format!("umount {MP}"));
    let t = Instant::now();
    loop {
        if mountinfo(&bed, h).is_some() {
            break;
        }
        r.mark();
        r.wait_event(&format!("{host} applies {ID}"), |v| {
            applied_line(v, &host, ID)
        });
    }
    println!(
        "MEASURED `umount {MP}` by hand undone (mounted again) {:.2?} after umount returned",
        t.elapsed()
    );
    assert!(proc_mounts(&bed, h).contains("nodev"));
    r.interrupt();

    // Unmounted: not mounted, the fstab line kept.
    let g = bed.graph(
        "m3.yaml",
        &graph(h, &image.uuid, "unmounted", "[noatime, nodev]"),
    );
    run_once(&bed, &g, &[]);
    assert_eq!(mountinfo(&bed, h), None);
    assert_eq!(bed.read(h, "/etc/fstab"), format!("{fstab0}{sep}{line}"));

    // Absent: the line gone, the other lines byte for byte, systemd reloaded.
    let reloads1 = reloads(&bed, h);
    let g = bed.graph("m4.yaml", &graph(h, &image.uuid, "absent", "[]"));
    run_once(&bed, &g, &[]);
    assert_eq!(mountinfo(&bed, h), None);
    assert_eq!(bed.read(h, "/etc/fstab"), format!("{fstab0}{sep}"));
    assert!(
        reloads(&bed, h) > reloads1,
        "no daemon-reload after the entry was removed"
    );
    let r = run_once(&bed, &g, &[]);
    assert_eq!(changed(&r), 0);
}
