//! The pure part of `mount`: `/proc/self/mountinfo` and `/etc/fstab` as data, mount options
//! and the rule that compares them, and the edit of one fstab entry. No IO here.
//!
//! Both files escape a space, tab, newline and backslash inside a field as `\040`, `\011`,
//! `\012` and `\134` (three octal digits); [`unescape`] reads any such escape, [`escape`]
//! writes those four.
//!
//! Options are compared as mount(8) reads them, not as written: order does not matter, and
//! each flag the kernel keeps for a mount (`ro`/`rw`, `nosuid`, `nodev`, `noexec`, the atime
//! mode, `nodiratime`, `sync`, `dirsync`, `lazytime`) is compared with its default filled in
//! (`rw`, `suid`, `dev`, `exec`, `relatime`, `async`; `defaults` sets those; `user`, `users`,
//! `owner` and `group` imply `nosuid,nodev,noexec` as in mount(8); a later option wins).
//! Options only mount(8) reads (`auto`, `noauto`, `nofail`, `_netdev`, `loop`, `x-*`, ...)
//! never show in mountinfo and are not compared with it. A filesystem's own `key=value` or
//! `key` option is out of sync only when mountinfo shows the same key with another value: the
//! kernel hides its defaults, so a key it does not show is taken as in effect.

use std::collections::BTreeSet;

use super::Opt;
use crate::line::text::{self, Line};

/// Undoes the octal escapes of mountinfo and fstab fields.
pub(crate) fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 4 <= field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let n = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |n, b| n * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(n) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Escapes a field for fstab: space, tab, newline and backslash as octal.
pub(crate) fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

fn fields(line: &[u8]) -> Vec<&[u8]> {
    line.split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty())
        .collect()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(b)).into_owned()
}

/// One line of mountinfo, the fields `mount` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    /// The mount's unique id (field 1): a remount keeps it, a new mount gets a new one.
    pub id: u64,
    /// `major:minor` of the filesystem (`st_dev` of its files).
    pub dev: (u32, u32),
    pub mount_point: String,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub mount_options: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Superblock options (`rw,errors=remount-ro`).
    pub super_options: Vec<String>,
}

/// Parses mountinfo; lines that do not parse are skipped (the kernel writes none).
pub(crate) fn parse_mountinfo(data: &[u8]) -> Vec<MountInfo> {
    data.split(|b| *b == b'\n')
        .filter_map(|line| {
            let f: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
            let sep = f.iter().position(|x| *x == b"-")?;
            if sep < 6 || f.len() < sep + 4 {
                return None;
            }
            let id = std::str::from_utf8(f[0]).ok()?.parse().ok()?;
            let (ma, mi) = std::str::from_utf8(f[2]).ok()?.split_once(':')?;
            let opts = |b: &[u8]| lossy(b).split(',').map(str::to_string).collect();
            Some(MountInfo {
                id,
                dev: (ma.parse().ok()?, mi.parse().ok()?),
                mount_point: lossy(f[4]),
                mount_options: opts(f[5]),
                fstype: lossy(f[sep + 1]),
                source: lossy(f[sep + 2]),
                super_options: opts(f[sep + 3]),
            })
        })
        .collect()
}

/// The mount visible at `mount_point`: the last (topmost) of those stacked there.
pub(crate) fn mounted_at<'a>(table: &'a [MountInfo], mount_point: &str) -> Option<&'a MountInfo> {
    table.iter().rev().find(|m| m.mount_point == mount_point)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Atime {
    Relatime,
    Noatime,
    Strictatime,
}

/// The flags the kernel keeps per mount or per superblock that options set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flags {
    pub ro: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub atime: Atime,
    pub nodiratime: bool,
    pub sync: bool,
    pub dirsync: bool,
    pub lazytime: bool,
}

impl Default for Flags {
    fn default() -> Flags {
        Flags {
            ro: false,
            nosuid: false,
            nodev: false,
            noexec: false,
            atime: Atime::Relatime,
            nodiratime: false,
            sync: false,
            dirsync: false,
            lazytime: false,
        }
    }
}

/// Options that only mount(8) (or a helper) reads: never in mountinfo.
pub(crate) fn userspace_only(key: &str) -> bool {
    matches!(
        key,
        "defaults"
            | "auto"
            | "noauto"
            | "nouser"
            | "user"
            | "users"
            | "owner"
            | "group"
            | "nofail"
            | "_netdev"
            | "loop"
            | "offset"
            | "sizelimit"
            | "encryption"
            | "comment"
    ) || key.starts_with("x-")
        || key.starts_with("X-")
}

impl Flags {
    /// Applies one option; `false` when it is not one of these flags.
    fn apply(&mut self, key: &str) -> bool {
        match key {
            "ro" => self.ro = true,
            "rw" => self.ro = false,
            "nosuid" => self.nosuid = true,
            "suid" => self.nosuid = false,
            "nodev" => self.nodev = true,
            "dev" => self.nodev = false,
            "noexec" => self.noexec = true,
            "exec" => self.noexec = false,
            "noatime" => self.atime = Atime::Noatime,
            "relatime" | "atime" | "nostrictatime" => self.atime = Atime::Relatime,
            "strictatime" | "norelatime" => self.atime = Atime::Strictatime,
            "nodiratime" => self.nodiratime = true,
            "diratime" => self.nodiratime = false,
            "sync" => self.sync = true,
            "async" => self.sync = false,
            "dirsync" => self.dirsync = true,
            "lazytime" => self.lazytime = true,
            "nolazytime" => self.lazytime = false,
            "defaults" => {
                self.ro = false;
                self.nosuid = false;
                self.nodev = false;
                self.noexec = false;
                self.sync = false;
            }
            "user" | "users" | "owner" | "group" => {
                self.nosuid = true;
                self.nodev = true;
                self.noexec = true;
            }
            _ => return false,
        }
        true
    }

    /// What options ask for, from the defaults.
    pub(crate) fn wanted(opts: &[Opt]) -> Flags {
        let mut f = Flags::default();
        for o in opts.iter().filter(|o| o.value.is_none()) {
            f.apply(&o.key);
        }
        f
    }

    /// What a mount has: no atime option shown is strictatime.
    pub(crate) fn live(m: &MountInfo) -> Flags {
        let mut f = Flags {
            atime: Atime::Strictatime,
            ..Flags::default()
        };
        for o in &m.mount_options {
            f.apply(o);
        }
        for o in &m.super_options {
            if matches!(o.as_str(), "sync" | "dirsync" | "lazytime") {
                f.apply(o);
            }
        }
        f
    }

    /// The flags as options, each stated (for a remount: nothing is left to the kernel).
    pub(crate) fn options(&self) -> Vec<&'static str> {
        let pick = |on: bool, yes: &'static str, no: &'static str| if on { yes } else { no };
        let mut out = vec![
            pick(self.ro, "ro", "rw"),
            pick(self.nosuid, "nosuid", "suid"),
            pick(self.nodev, "nodev", "dev"),
            pick(self.noexec, "noexec", "exec"),
            match self.atime {
                Atime::Relatime => "relatime",
                Atime::Noatime => "noatime",
                Atime::Strictatime => "strictatime",
            },
            pick(self.nodiratime, "nodiratime", "diratime"),
            pick(self.sync, "sync", "async"),
            pick(self.lazytime, "lazytime", "nolazytime"),
        ];
        if self.dirsync {
            out.push("dirsync");
        }
        out
    }
}

/// Whether a filesystem's own option is a flag or userspace option (not compared as its own).
pub(crate) fn is_generic(key: &str) -> bool {
    userspace_only(key) || Flags::default().apply(key)
}

/// The options of `want` that `m` does not have (see the module doc for the rule), as written.
pub(crate) fn options_differ(want: &[Opt], m: &MountInfo) -> Vec<String> {
    let mut out = Vec::new();
    let (w, l) = (Flags::wanted(want), Flags::live(m));
    if w != l {
        let have: BTreeSet<&str> = l.options().into_iter().collect();
        out.extend(
            w.options()
                .into_iter()
                .filter(|o| !have.contains(o))
                .map(str::to_string),
        );
        if w.dirsync != l.dirsync && !w.dirsync {
            out.push("-dirsync".to_string());
        }
    }
    for o in want
        .iter()
        .filter(|o| !is_generic(&o.key) || o.value.is_some())
    {
        if userspace_only(&o.key) {
            continue;
        }
        let shown = m
            .super_options
            .iter()
            .chain(&m.mount_options)
            .find_map(|s| {
                let (k, v) = s
                    .split_once('=')
                    .map_or((s.as_str(), None), |(k, v)| (k, Some(v)));
                (k == o.key).then_some(v)
            });
        if let Some(v) = shown
            && v != o.value.as_deref()
        {
            out.push(o.text());
        }
    }
    out
}

/// The options written in an fstab entry.
pub(crate) fn options_text(opts: &[Opt]) -> String {
    if opts.is_empty() {
        return "defaults".to_string();
    }
    opts.iter().map(Opt::text).collect::<Vec<_>>().join(",")
}

fn parse_options(text: &str) -> Vec<Opt> {
    text.split(',')
        .filter(|o| !o.is_empty())
        .map(|o| match o.split_once('=') {
            Some((k, v)) => Opt {
                key: k.to_string(),
                value: Some(v.to_string()),
            },
            None => Opt {
                key: o.to_string(),
                value: None,
            },
        })
        .collect()
}

/// One fstab entry, fields unescaped (missing freq and passno are 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FstabEntry {
    pub device: String,
    pub dir: String,
    pub fstype: String,
    pub options: Vec<Opt>,
    pub freq: u32,
    pub passno: u32,
}

impl FstabEntry {
    /// An entry line; `None` for comments, blank lines and lines that are not entries.
    pub(crate) fn parse(line: &[u8]) -> Option<FstabEntry> {
        let f = fields(line);
        if f.len() < 3 || f[0].starts_with(b"#") {
            return None;
        }
        let num = |i: usize| -> Option<u32> {
            f.get(i)
                .map_or(Some(0), |x| std::str::from_utf8(x).ok()?.parse().ok())
        };
        Some(FstabEntry {
            device: lossy(f[0]),
            dir: lossy(f[1]),
            fstype: lossy(f[2]),
            options: f.get(3).map_or_else(Vec::new, |o| parse_options(&lossy(o))),
            freq: num(4)?,
            passno: num(5)?,
        })
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            escape(&self.device),
            escape(&self.dir),
            escape(&self.fstype),
            escape(&options_text(&self.options)),
            self.freq,
            self.passno
        )
    }

    /// Equal as mount(8) would read them: options as a set, `defaults` for none.
    pub(crate) fn same(&self, other: &FstabEntry) -> bool {
        let set = |o: &[Opt]| -> BTreeSet<String> {
            let mut s: BTreeSet<String> = o.iter().map(Opt::text).collect();
            if s.is_empty() {
                s.insert("defaults".to_string());
            }
            s
        };
        self.device == other.device
            && self.dir == other.dir
            && self.fstype == other.fstype
            && self.freq == other.freq
            && self.passno == other.passno
            && set(&self.options) == set(&other.options)
    }
}

/// The entry of fstab `data` for mount point `dir` (the first, if several).
#[cfg(test)]
pub(crate) fn fstab_entry(data: &[u8], dir: &str) -> Option<FstabEntry> {
    text::split(data)
        .iter()
        .filter_map(|l| FstabEntry::parse(&l.body))
        .find(|e| e.dir == dir)
}

/// Fstab `data` with the entry for `dir` made `want` (`None`: no entry): the first entry for
/// `dir` is replaced where it is (kept byte for byte when it already says the same), any other
/// for `dir` removed, a new one appended; every other line is kept byte for byte. `None` when
/// nothing changes.
pub(crate) fn edit_fstab(data: &[u8], dir: &str, want: Option<&FstabEntry>) -> Option<Vec<u8>> {
    let mut lines = text::split(data);
    let mut changed = false;
    let mut placed = false;
    lines.retain_mut(|l| {
        let Some(have) = FstabEntry::parse(&l.body).filter(|e| e.dir == dir) else {
            return true;
        };
        match want {
            Some(want) if !placed => {
                placed = true;
                if !have.same(want) {
                    l.body = want.line().into_bytes();
                    changed = true;
                }
                true
            }
            _ => {
                changed = true;
                false
            }
        }
    });
    if let Some(want) = want
        && !placed
    {
        if let Some(last) = lines.last_mut()
            && last.end.is_empty()
        {
            last.end = b"\n";
        }
        lines.push(Line::new(want.line().as_bytes()));
        changed = true;
    }
    changed.then(|| text::join(&lines))
}
