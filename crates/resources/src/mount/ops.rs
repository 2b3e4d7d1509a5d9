//! Converging a mount: the fstab entry first (rewriting only its line, atomically, through
//! `line`'s editor), then the live mount, then `systemctl daemon-reload` when the fstab
//! changed and systemd runs (so its mount units follow; nothing here needs systemd).
//!
//! Mounting goes through mount(8) and umount(8), not the syscalls: fstab's option language is
//! mount(8)'s (it turns `noatime,user,nofail,errors=remount-ro` into flags plus a data string,
//! sets up a loop device for an image file, runs `mount.<type>` helpers and records
//! userspace options), and doing the same by syscall would reimplement util-linux. Their
//! stderr is the error. Blocking; run on a blocking thread.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

use resource::ResourceError;

use super::table::{self, Flags, MountInfo};
use super::{Env, MountSpec, State};
use crate::line::apply::{self, Attrs, Rules};

/// Runs a tool; its stderr (or stdout) is the error when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), ResourceError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| ResourceError::failed(format!("running {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    })
    .trim()
    .to_string();
    Err(ResourceError::failed(format!(
        "{program} {} failed ({}): {text}",
        args.join(" "),
        out.status
    )))
}

pub(crate) fn read_mountinfo(env: &Env) -> Result<Vec<MountInfo>, ResourceError> {
    let data = fs::read(&env.mountinfo)
        .map_err(|e| ResourceError::failed(format!("reading {}: {e}", env.mountinfo.display())))?;
    Ok(table::parse_mountinfo(&data))
}

/// The block device (or image file) a `UUID=`/`LABEL=`/... device names, through
/// `/dev/disk/by-*` (udev's links), else blkid's probe. `None`: no such device here.
pub(crate) fn resolve(device: &str) -> Option<String> {
    let Some((tag, value)) = device.split_once('=').filter(|_| !device.starts_with('/')) else {
        return Some(device.to_string());
    };
    let dir = match tag {
        "UUID" => "by-uuid",
        "LABEL" => "by-label",
        "PARTUUID" => "by-partuuid",
        "PARTLABEL" => "by-partlabel",
        _ => return None,
    };
    if !value.contains('/')
        && let Ok(p) = fs::canonicalize(Path::new("/dev/disk").join(dir).join(value))
    {
        return Some(p.to_string_lossy().into_owned());
    }
    let out = Command::new("blkid")
        .args(["-c", "/dev/null", "-l", "-o", "device", "-t", device])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Whether mount `m` is of `device` (resolved): the same block device (its `major:minor`,
/// or the source's path), the loop device of the same image file, or the same word.
fn same_device(device: &str, m: &MountInfo) -> bool {
    if !device.starts_with('/') {
        return device == m.source;
    }
    let canon = |p: &str| fs::canonicalize(p).ok();
    let Ok(meta) = fs::metadata(device) else {
        return false;
    };
    if meta.file_type().is_block_device() {
        let rdev = meta.rdev();
        let (ma, mi) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        return (ma as u32, mi as u32) == m.dev || canon(device) == canon(&m.source);
    }
    if meta.is_file() {
        let backing = format!("/sys/dev/block/{}:{}/loop/backing_file", m.dev.0, m.dev.1);
        let Ok(b) = fs::read_to_string(backing) else {
            return false;
        };
        return canon(device).map(|p| p.to_string_lossy().into_owned())
            == Some(b.trim().to_string());
    }
    canon(device) == canon(&m.source)
}

/// What a mount of `spec` needs to be the mount at its point.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LiveChange {
    None,
    Mount,
    Unmount,
    /// Another device or type is mounted there: unmount, then mount.
    Replace,
    /// The options differ (the ones named): `mount -o remount`.
    Remount(Vec<String>),
}

pub(crate) fn live_change(
    spec: &MountSpec,
    device: Option<&str>,
    live: Option<&MountInfo>,
) -> LiveChange {
    match (spec.state, live) {
        (State::Mounted, None) => LiveChange::Mount,
        (State::Mounted, Some(m)) => {
            let same_type = spec.fstype == "auto" || spec.fstype == m.fstype;
            if !same_type || !device.is_some_and(|d| same_device(d, m)) {
                return LiveChange::Replace;
            }
            let differ = table::options_differ(&spec.options, m);
            if differ.is_empty() {
                LiveChange::None
            } else {
                LiveChange::Remount(differ)
            }
        }
        (_, Some(_)) => LiveChange::Unmount,
        (_, None) => LiveChange::None,
    }
}

fn mount(spec: &MountSpec, device: &str) -> Result<(), ResourceError> {
    let mp = Path::new(&spec.mount_point);
    if !mp.exists() {
        fs::create_dir_all(mp).map_err(|e| {
            ResourceError::failed(format!("creating mount point {}: {e}", mp.display()))
        })?;
    }
    let opts = table::options_text(&spec.options);
    run(
        "mount",
        &[
            "-t",
            &spec.fstype,
            "-o",
            &opts,
            "--",
            device,
            &spec.mount_point,
        ],
    )
}

/// `mount -o remount` with every flag stated and the filesystem's own options.
fn remount(spec: &MountSpec, device: &str) -> Result<(), ResourceError> {
    let mut opts = vec!["remount".to_string()];
    opts.extend(
        Flags::wanted(&spec.options)
            .options()
            .into_iter()
            .map(str::to_string),
    );
    opts.extend(
        spec.options
            .iter()
            .filter(|o| o.value.is_some() || !table::is_generic(&o.key))
            .filter(|o| !table::userspace_only(&o.key))
            .map(super::Opt::text),
    );
    run(
        "mount",
        &["-o", &opts.join(","), "--", device, &spec.mount_point],
    )
}

fn umount(mount_point: &str) -> Result<(), ResourceError> {
    run("umount", &["--", mount_point])
}

/// Converge `spec` (with `dry`, only look). Returns whether something changed (would change).
pub(crate) fn converge(spec: &MountSpec, env: &Env, dry: bool) -> Result<bool, ResourceError> {
    let want = spec.fstab_entry();
    let edit = |data: &[u8]| Ok(table::edit_fstab(data, &spec.mount_point, want.as_ref()));
    let rules = Rules {
        create: Some(Attrs {
            mode: 0o644,
            uid: None,
            gid: None,
        }),
        enforce: None,
    };
    let fstab_changed = apply::converge(&env.fstab, &rules, &edit, dry)?;

    let table = read_mountinfo(env)?;
    let live = table::mounted_at(&table, &spec.mount_point);
    let device = if spec.state == State::Mounted {
        resolve(&spec.device)
    } else {
        None
    };
    let change = live_change(spec, device.as_deref(), live);
    let live_changed = change != LiveChange::None;
    if !dry && live_changed {
        let device = || {
            device.clone().ok_or_else(|| {
                ResourceError::failed(format!("no device {} found on this host", spec.device))
            })
        };
        match change {
            LiveChange::None => {}
            LiveChange::Mount => mount(spec, &device()?)?,
            LiveChange::Unmount => umount(&spec.mount_point)?,
            LiveChange::Replace => {
                let device = device()?;
                umount(&spec.mount_point)?;
                mount(spec, &device)?;
            }
            LiveChange::Remount(_) => remount(spec, &device()?)?,
        }
    }
    if !dry && fstab_changed && env.systemd_marker.is_dir() {
        run("systemctl", &["daemon-reload"])?;
    }
    Ok(fstab_changed || live_changed)
}
