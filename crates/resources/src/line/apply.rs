//! Editing a file in place for `line` and `authorized_key`: read it (bounded), compute the new
//! content with a pure edit, and replace it atomically (`file`'s writer: temp file in the same
//! directory, fsync, rename, fsync of the directory) keeping its mode and owner unless told
//! otherwise. Blocking; run on a blocking thread.
//!
//! Symlinks are not followed: the path itself must be a regular file (or missing). Following
//! one would let whoever owns the link's directory aim a root-run edit at any file (a user's
//! `~/.ssh/authorized_keys` -> `/etc/shadow`). A file with more than one hard link is refused
//! too: a rename would silently split it from its other names. Edits of this process are made
//! one at a time, so that two resources editing one file never lose each other's change.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

use resource::ResourceError;

use crate::file::ops::write_atomic;

/// The largest file this reads: these kinds edit configuration files, not logs.
pub(crate) const MAX_SIZE: u64 = 16 << 20;

/// Mode and ownership; `None` ids keep (or, for a created file, take this process's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attrs {
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// How a file may be treated besides its content.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rules {
    /// A missing file may be created with these; `None`: a missing file that needs a change is
    /// an error.
    pub create: Option<Attrs>,
    /// Mode and owner the file must have; `None` keeps what it has.
    pub enforce: Option<Attrs>,
}

/// An edit: the new content, or `None` when the given content needs no change.
pub(crate) type Edit<'a> = &'a (dyn Fn(&[u8]) -> Result<Option<Vec<u8>>, ResourceError> + Sync);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn err(op: &str, path: &Path) -> impl FnOnce(io::Error) -> ResourceError {
    let context = format!("{op} {}", path.display());
    move |e| ResourceError::failed(format!("{context}: {e}"))
}

/// Opens `path` for reading without following a symlink (and without blocking on a FIFO).
/// `None`: there is nothing there.
fn open(path: &Path) -> Result<Option<File>, ResourceError> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            Err(ResourceError::failed(format!(
                "{} is a symlink; symlinks are not followed (name the file it points to)",
                path.display()
            )))
        }
        Err(e) => Err(err("opening", path)(e)),
    }
}

/// Reads all of `file` (the regular file at `path`), at most [`MAX_SIZE`] bytes.
fn read_bounded(file: &File, path: &Path) -> Result<(Vec<u8>, fs::Metadata), ResourceError> {
    let m = file.metadata().map_err(err("inspecting", path))?;
    if !m.is_file() {
        return Err(ResourceError::failed(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if m.nlink() > 1 {
        return Err(ResourceError::failed(format!(
            "{} has {} hard links; rewriting it would split them (edit it as one file)",
            path.display(),
            m.nlink()
        )));
    }
    let too_big = |size: u64| {
        ResourceError::failed(format!(
            "{} is {size} bytes, more than the {MAX_SIZE} bytes this reads",
            path.display()
        ))
    };
    if m.len() > MAX_SIZE {
        return Err(too_big(m.len()));
    }
    let mut data = Vec::with_capacity(m.len() as usize);
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(err("reading", path))?;
    if data.len() as u64 > MAX_SIZE {
        return Err(too_big(data.len() as u64));
    }
    Ok((data, m))
}

/// Converge `path` (with `dry`, only look). Returns whether something changed (would change).
pub(crate) fn converge(
    path: &Path,
    rules: &Rules,
    edit: Edit<'_>,
    dry: bool,
) -> Result<bool, ResourceError> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(file) = open(path)? else {
        let Some(new) = edit(b"")? else {
            return Ok(false);
        };
        let Some(create) = rules.create else {
            return Err(ResourceError::failed(format!(
                "{} does not exist (set `create: true` to create it)",
                path.display()
            )));
        };
        if let Some(dir) = path.parent()
            && !dir.is_dir()
        {
            return Err(ResourceError::failed(format!(
                "cannot create {}: directory {} does not exist",
                path.display(),
                dir.display()
            )));
        }
        if dry {
            return Ok(true);
        }
        write_atomic(path, &mut &new[..], create.mode, create.uid, create.gid)?;
        return Ok(true);
    };
    let (data, m) = read_bounded(&file, path)?;
    let new = edit(&data)?;
    let have = Attrs {
        mode: m.mode() & 0o7777,
        uid: Some(m.uid()),
        gid: Some(m.gid()),
    };
    let want = match rules.enforce {
        None => have,
        Some(e) => Attrs {
            mode: e.mode,
            uid: e.uid.or(have.uid),
            gid: e.gid.or(have.gid),
        },
    };
    if new.is_none() && want == have {
        return Ok(false);
    }
    if dry {
        return Ok(true);
    }
    match new {
        Some(new) => {
            // Only root gives a file away; as anyone else, pass on only what differs from the
            // new file's own ids (and fail clearly when that is not ours to give).
            let root = nix::unistd::geteuid().is_root();
            let uid = want
                .uid
                .filter(|&u| root || u != nix::unistd::geteuid().as_raw());
            let gid = want
                .gid
                .filter(|&g| root || g != nix::unistd::getegid().as_raw());
            write_atomic(path, &mut &new[..], want.mode, uid, gid)?;
        }
        None => {
            // Through the descriptor we read: the file we looked at, not whatever is there now.
            if want.uid != have.uid || want.gid != have.gid {
                std::os::unix::fs::fchown(&file, want.uid, want.gid)
                    .map_err(err("changing owner of", path))?;
            }
            file.set_permissions(fs::Permissions::from_mode(want.mode))
                .map_err(err("setting mode of", path))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(line: &'static [u8]) -> impl Fn(&[u8]) -> Result<Option<Vec<u8>>, ResourceError> {
        move |data: &[u8]| {
            Ok((!data.ends_with(line)).then(|| {
                let mut v = data.to_vec();
                v.extend_from_slice(line);
                v
            }))
        }
    }

    #[test]
    fn edits_in_place_keeping_mode_and_inode_when_in_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "a\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let edit = append(b"b\n");
        let rules = Rules::default();
        assert!(converge(&path, &rules, &edit, true).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"a\n", "dry changes nothing");
        assert!(converge(&path, &rules, &edit, false).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"a\nb\n");
        let m = fs::metadata(&path).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert!(!converge(&path, &rules, &edit, false).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().ino(), m.ino(), "not rewritten");
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_file_is_created_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new");
        let edit = append(b"x\n");
        let err = converge(&path, &Rules::default(), &edit, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not exist (set `create: true`"),
            "{err}"
        );
        let rules = Rules {
            create: Some(Attrs {
                mode: 0o600,
                uid: None,
                gid: None,
            }),
            enforce: None,
        };
        assert!(converge(&path, &rules, &edit, true).unwrap());
        assert!(!path.exists());
        assert!(converge(&path, &rules, &edit, false).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"x\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        // Nothing to remove from a missing file: in sync, not an error.
        let none = |_: &[u8]| Ok(None);
        assert!(!converge(&dir.path().join("gone"), &Rules::default(), &none, false).unwrap());
        let err = converge(&dir.path().join("no/such"), &rules, &edit, false).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn symlinks_hard_links_and_huge_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "secret\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let edit = append(b"x\n");
        let err = converge(&link, &Rules::default(), &edit, false).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        let hard = dir.path().join("hard");
        fs::hard_link(&target, &hard).unwrap();
        let err = converge(&hard, &Rules::default(), &edit, false).unwrap_err();
        assert!(err.to_string().contains("2 hard links"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"secret\n");
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(MAX_SIZE + 1).unwrap();
        let err = converge(&big, &Rules::default(), &edit, false).unwrap_err();
        assert!(err.to_string().contains("more than the"), "{err}");
    }

    #[test]
    fn enforced_modes_are_fixed_without_rewriting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "x\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let ino = fs::metadata(&path).unwrap().ino();
        let rules = Rules {
            create: None,
            enforce: Some(Attrs {
                mode: 0o600,
                uid: None,
                gid: None,
            }),
        };
        let edit = append(b"x\n");
        assert!(converge(&path, &rules, &edit, true).unwrap());
        assert!(converge(&path, &rules, &edit, false).unwrap());
        let m = fs::metadata(&path).unwrap();
        assert_eq!((m.mode() & 0o7777, m.ino()), (0o600, ino));
        assert!(!converge(&path, &rules, &edit, false).unwrap());
    }
}
