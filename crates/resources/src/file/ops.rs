//! Converging the filesystem for a `file` resource: blocking calls, run on a blocking thread.
//!
//! Every step first looks and only then acts, so an in-sync file is never rewritten; with
//! `dry` nothing is changed and the first needed change ends the walk ("would change").
//! Content is only ever replaced atomically (temp file in the same directory, fsync, rename,
//! fsync of the directory): no reader may ever see a partial file. Nothing here removes a
//! non-empty directory or replaces one type by another without `force`, and nothing here ever
//! writes to a fragment or a source.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use resource::ResourceError;

use super::{FileSpec, Fragment, State};
use crate::ident;

/// Modes for things we create when the graph names none (what umask 022 would give).
const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

/// Content up to this size is compared by `quick_to_check` specs on an async worker.
const QUICK_READ: usize = 64 * 1024;

/// Whether looking (`converge(spec, true)`) is as cheap as the watch's own stats: a few
/// `lstat`s and at most one read of `QUICK_READ` bytes. Not so with a `source` (a file or a
/// whole tree to read), large content, or an owner or group given by name (the user database
/// may be a network service), nor with `fragments` (directories to list, files to read).
pub(super) fn quick_to_check(spec: &FileSpec) -> bool {
    let numeric = |id: &Option<String>| id.as_deref().is_none_or(|i| i.parse::<u32>().is_ok());
    spec.source.is_none()
        && spec.fragments.is_empty()
        && spec.content.as_ref().is_none_or(|c| c.len() <= QUICK_READ)
        && numeric(&spec.owner)
        && numeric(&spec.group)
}

/// Converge (or with `dry`, only look). Returns whether something changed (would change).
pub(super) fn converge(spec: &FileSpec, dry: bool) -> Result<bool, ResourceError> {
    match (spec.state, spec.is_dir) {
        (State::Absent, _) => remove(spec, dry),
        (State::Exists, true) => ensure_dir(spec, dry),
        (State::Exists, false) => ensure_file(spec, dry),
    }
}

fn err(op: &str, path: &Path) -> impl FnOnce(io::Error) -> ResourceError {
    let context = format!("{op} {}", path.display());
    move |e| ResourceError::failed(format!("{context}: {e}"))
}

fn lstat(path: &Path) -> Result<Option<Metadata>, ResourceError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err("inspecting", path)(e)),
    }
}

fn kind_of(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

fn need_force(path: &Path, found: &Metadata, wanted: &str) -> ResourceError {
    ResourceError::failed(format!(
        "{} is {} but should be {wanted}; set `force` to replace it",
        path.display(),
        kind_of(found)
    ))
}

/// Remove whatever is at `path` (a directory with all its content).
fn remove_any(path: &Path, m: &Metadata) -> Result<(), ResourceError> {
    if m.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(err("removing", path))
}

fn remove(spec: &FileSpec, dry: bool) -> Result<bool, ResourceError> {
    let path = &spec.path;
    let Some(m) = lstat(path)? else {
        return Ok(false);
    };
    if dry {
        return Ok(true);
    }
    if !m.is_dir() {
        fs::remove_file(path).map_err(err("removing", path))?;
    } else if spec.recurse && spec.force {
        fs::remove_dir_all(path).map_err(err("removing", path))?;
    } else {
        fs::remove_dir(path).map_err(|e| match e.kind() {
            io::ErrorKind::DirectoryNotEmpty => ResourceError::failed(format!(
                "{} is a non-empty directory; set `recurse` and `force` to remove it",
                path.display()
            )),
            _ => err("removing", path)(e),
        })?;
    }
    sync_parent(path)?;
    Ok(true)
}

/// Where a file's content comes from.
enum Content<'a> {
    Text(&'a [u8]),
    Copy(&'a Path),
    /// These files concatenated, with their total size when listed.
    Concat(Vec<PathBuf>, u64),
}

/// The files `fragments` stand for, in order, and their total size. A file fragment must be a
/// regular file (a symlink to one will do). A directory fragment stands for its entries that
/// are regular files (or symlinks to them), sorted by name bytewise, not recursively; names
/// starting with `.` are skipped, so atomic writers' temp files are never picked up, and so are
/// subdirectories and special files. A missing fragment (file or directory) is an error, as in
/// mgmt: a typo must not silently drop content; an empty directory adds nothing. A fragment
/// that is the target itself (through a symlink or a hard link) is an error too.
fn list_fragments(path: &Path, fragments: &[Fragment]) -> Result<Content<'static>, ResourceError> {
    let target = fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let is_target = |m: &Metadata| target == Some((m.dev(), m.ino()));
    let mut files = Vec::new();
    let mut total = 0;
    for f in fragments {
        let m = fs::metadata(&f.path).map_err(err("reading fragment", &f.path))?;
        if !f.is_dir {
            if !m.is_file() {
                return Err(ResourceError::failed(format!(
                    "fragment {} is {} but should be a file (end it with `/` for a directory                      of fragments)",
                    f.path.display(),
                    kind_of(&m)
                )));
            }
            if is_target(&m) {
                return Err(is_itself(&f.path, path));
            }
            total += m.len();
            files.push(f.path.clone());
            continue;
        }
        if !m.is_dir() {
            return Err(ResourceError::failed(format!(
                "fragment {}/ is {} but should be a directory",
                f.path.display(),
                kind_of(&m)
            )));
        }
        let mut names: Vec<_> = fs::read_dir(&f.path)
            .map_err(err("reading fragment directory", &f.path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(err("reading fragment directory", &f.path))?;
        // OsString orders by bytes on unix: the order `ls` gives with LC_ALL=C.
        names.sort();
        for name in names {
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let entry = f.path.join(&name);
            // Gone since listing, or a dangling symlink: not a file of this directory now.
            let Ok(m) = fs::metadata(&entry) else {
                continue;
            };
            if !m.is_file() {
                continue;
            }
            if is_target(&m) {
                return Err(is_itself(&entry, path));
            }
            total += m.len();
            files.push(entry);
        }
    }
    Ok(Content::Concat(files, total))
}

fn is_itself(fragment: &Path, path: &Path) -> ResourceError {
    ResourceError::failed(format!(
        "fragment {} is the file {} itself",
        fragment.display(),
        path.display()
    ))
}

/// Reads a list of files as one stream, opening each only when the previous one is done (a
/// directory of thousands of fragments must not hold thousands of descriptors). Errors name
/// the file.
struct Concat<'a> {
    files: std::slice::Iter<'a, PathBuf>,
    current: Option<File>,
}

impl<'a> Concat<'a> {
    fn new(files: &'a [PathBuf]) -> Self {
        Concat {
            files: files.iter(),
            current: None,
        }
    }
}

impl Read for Concat<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(file) = &mut self.current {
                match file.read(buf)? {
                    0 => self.current = None,
                    n => return Ok(n),
                }
            }
            let Some(path) = self.files.next() else {
                return Ok(0);
            };
            let file = File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("fragment {}: {e}", path.display()))
            })?;
            self.current = Some(file);
        }
    }
}

fn ensure_file(spec: &FileSpec, dry: bool) -> Result<bool, ResourceError> {
    let path = &spec.path;
    let content = match (&spec.content, &spec.source) {
        (Some(text), _) => Some(Content::Text(text.as_bytes())),
        (None, Some(source)) => {
            let m = fs::metadata(source).map_err(err("reading source", source))?;
            if !m.is_file() {
                return Err(ResourceError::failed(format!(
                    "source {} is {} but path {} is a file (end the path with `/` for a directory)",
                    source.display(),
                    kind_of(&m),
                    path.display()
                )));
            }
            Some(Content::Copy(source))
        }
        (None, None) if !spec.fragments.is_empty() => Some(list_fragments(path, &spec.fragments)?),
        (None, None) => None,
    };
    let mut existing = lstat(path)?;
    if let Some(m) = &existing
        && !m.is_file()
    {
        if !spec.force {
            return Err(need_force(path, m, "a file"));
        }
        if dry {
            return Ok(true);
        }
        remove_any(path, m)?;
        existing = None;
    }
    let (uid, gid) = wanted_ids(spec)?;
    let mut changed = false;
    let differs = match (&existing, &content) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(m), Some(content)) => !same_content(path, m, content)?,
    };
    if differs {
        if dry {
            return Ok(true);
        }
        // A replaced file keeps the mode and owner it had unless the graph says otherwise.
        let mode = spec
            .mode
            .or(existing.as_ref().map(|m| m.mode() & 0o7777))
            .unwrap_or(DEFAULT_FILE_MODE);
        let uid = uid.or(existing.as_ref().map(|m| m.uid()));
        let gid = gid.or(existing.as_ref().map(|m| m.gid()));
        match content {
            Some(Content::Text(text)) => write_atomic(path, &mut &text[..], mode, uid, gid)?,
            Some(Content::Copy(source)) => {
                let mut from = File::open(source).map_err(err("reading source", source))?;
                write_atomic(path, &mut from, mode, uid, gid)?;
            }
            Some(Content::Concat(files, _)) => {
                write_atomic(path, &mut Concat::new(&files), mode, uid, gid)?
            }
            None => write_atomic(path, &mut io::empty(), mode, uid, gid)?,
        }
        changed = true;
    }
    // Unless it was just replaced, `existing` is what is there now.
    let known = if changed { None } else { existing };
    Ok(ensure_attrs(path, known, spec.mode, uid, gid, dry)? || changed)
}

fn ensure_dir(spec: &FileSpec, dry: bool) -> Result<bool, ResourceError> {
    let path = &spec.path;
    let source = match &spec.source {
        None => None,
        Some(source) => {
            let m = fs::metadata(source).map_err(err("reading source", source))?;
            if !m.is_dir() {
                return Err(ResourceError::failed(format!(
                    "source {} is {} but path {} is a directory",
                    source.display(),
                    kind_of(&m),
                    path.display()
                )));
            }
            if !spec.recurse {
                return Err(ResourceError::failed(format!(
                    "copying the directory {} needs `recurse: true`",
                    source.display()
                )));
            }
            Some(source)
        }
    };
    let mut changed = false;
    // The directory's metadata when it was already there (then nothing has changed it since).
    let known = match lstat(path)? {
        Some(m) if m.is_dir() => Some(m),
        found => {
            if let Some(m) = &found {
                if !spec.force {
                    return Err(need_force(path, m, "a directory"));
                }
                if dry {
                    return Ok(true);
                }
                remove_any(path, m)?;
            }
            if dry {
                return Ok(true);
            }
            fs::create_dir_all(path).map_err(err("creating directory", path))?;
            let mode = spec.mode.unwrap_or(DEFAULT_DIR_MODE);
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(err("setting mode of", path))?;
            sync_parent(path)?;
            changed = true;
            None
        }
    };
    let (uid, gid) = wanted_ids(spec)?;
    changed |= ensure_attrs(path, known, spec.mode, uid, gid, dry)?;
    if dry && changed {
        return Ok(true);
    }
    if let Some(source) = source {
        changed |= sync_tree(source, path, spec.force, dry)?;
    }
    Ok(changed)
}

fn wanted_ids(spec: &FileSpec) -> Result<(Option<u32>, Option<u32>), ResourceError> {
    let uid = spec.owner.as_deref().map(ident::uid).transpose()?;
    let gid = spec.group.as_deref().map(ident::gid).transpose()?;
    Ok((uid, gid))
}

/// Fix mode and ownership of an existing `path` (never following a symlink).
/// `known` is `path`'s metadata when the caller has just read it and changed nothing since
/// (saves a stat per in-sync file); `None` looks again.
fn ensure_attrs(
    path: &Path,
    known: Option<Metadata>,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    dry: bool,
) -> Result<bool, ResourceError> {
    let m = match known {
        Some(m) => m,
        None => match lstat(path)? {
            Some(m) => m,
            None => return Ok(false),
        },
    };
    let mut changed = false;
    if let Some(mode) = mode
        && m.mode() & 0o7777 != mode
        && !m.file_type().is_symlink()
    {
        if dry {
            return Ok(true);
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(err("setting mode of", path))?;
        changed = true;
    }
    let uid = uid.filter(|u| *u != m.uid());
    let gid = gid.filter(|g| *g != m.gid());
    if uid.is_some() || gid.is_some() {
        if dry {
            return Ok(true);
        }
        std::os::unix::fs::lchown(path, uid, gid).map_err(err("changing owner of", path))?;
        // chown clears setuid/setgid bits: put the wanted mode back.
        if let Some(mode) = mode
            && !m.file_type().is_symlink()
        {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(err("setting mode of", path))?;
        }
        changed = true;
    }
    Ok(changed)
}

/// Whether the regular file at `path` (metadata `m`) already holds `content`.
fn same_content(path: &Path, m: &Metadata, content: &Content<'_>) -> Result<bool, ResourceError> {
    match content {
        Content::Text(text) => {
            if m.len() != text.len() as u64 {
                return Ok(false);
            }
            let mut current = File::open(path).map_err(err("reading", path))?;
            same_as(&mut current, text).map_err(err("reading", path))
        }
        Content::Copy(source) => {
            let sm = fs::metadata(source).map_err(err("reading source", source))?;
            if m.len() != sm.len() {
                return Ok(false);
            }
            let mut current = File::open(path).map_err(err("reading", path))?;
            let mut wanted = File::open(source).map_err(err("reading source", source))?;
            same_stream(&mut current, &mut wanted).map_err(err("comparing with source", path))
        }
        Content::Concat(files, total) => {
            // Sizes differ in most changes (a line added or removed): no need to read then.
            if m.len() != *total {
                return Ok(false);
            }
            let mut current = File::open(path).map_err(err("reading", path))?;
            same_stream(&mut current, &mut Concat::new(files))
                .map_err(err("comparing with fragments", path))
        }
    }
}

/// How much of a file is compared at a time.
const CHUNK: usize = 64 * 1024;

/// Whether `r` holds exactly `want`. The buffer is sized to `want` (up to `CHUNK`): zeroing
/// two 64 KiB buffers per check was most of the cost of checking thousands of small files.
fn same_as(r: &mut impl Read, mut want: &[u8]) -> io::Result<bool> {
    let mut buf = vec![0u8; want.len().clamp(1, CHUNK)];
    while !want.is_empty() {
        let n = want.len().min(buf.len());
        if read_full(r, &mut buf[..n])? != n || buf[..n] != want[..n] {
            return Ok(false);
        }
        want = &want[n..];
    }
    // Longer than wanted?
    Ok(read_full(r, &mut buf[..1])? == 0)
}

/// Compare two streams chunk by chunk, without loading either whole.
fn same_stream(a: &mut impl Read, b: &mut impl Read) -> io::Result<bool> {
    let (mut abuf, mut bbuf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let n = read_full(a, &mut abuf)?;
        let m = read_full(b, &mut bbuf)?;
        if abuf[..n] != bbuf[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A temp name next to `path`, unique within this process and unlikely to collide with others
/// (creation uses O_EXCL anyway).
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{base}.mgmt-{}-{n}.tmp", std::process::id()))
}

/// Replace `path` atomically with `data`: readers see the old file or the new one, never a
/// mix, and after a crash the file is one of the two.
pub(crate) fn write_atomic(
    path: &Path,
    data: &mut dyn Read,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), ResourceError> {
    let tmp = loop {
        let tmp = temp_path(path);
        // 0600 while being written: content meant to be private is never exposed.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err("creating a temporary file for", path)(e)),
        }
    };
    let (tmp_path, mut file) = tmp;
    let result = (|| {
        io::copy(data, &mut file).map_err(err("writing", &tmp_path))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&file, uid, gid)
                .map_err(err("changing owner of", &tmp_path))?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err("setting mode of", &tmp_path))?;
        file.sync_all().map_err(err("syncing", &tmp_path))?;
        fs::rename(&tmp_path, path).map_err(err("renaming into", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result?;
    sync_parent(path)
}

/// Make a rename, creation or removal of `path` durable.
fn sync_parent(path: &Path) -> Result<(), ResourceError> {
    path.parent().map_or(Ok(()), sync_dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), ResourceError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("syncing directory", dir))
}

/// Make the tree under `dst` a copy of the tree under `src`: files by content and mode,
/// symlinks by target, directories recursively. Entries only in `dst` are removed with `force`.
fn sync_tree(src: &Path, dst: &Path, force: bool, dry: bool) -> Result<bool, ResourceError> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(err("reading directory", src))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(err("reading directory", src))?;
    entries.sort();
    let mut changed = false;
    for name in &entries {
        let (s, d) = (src.join(name), dst.join(name));
        let Some(sm) = lstat(&s)? else { continue };
        let dm = lstat(&d)?;
        let t = sm.file_type();
        if t.is_dir() {
            match &dm {
                Some(m) if m.is_dir() => {}
                found => {
                    if let Some(m) = found {
                        if !force {
                            return Err(need_force(&d, m, "a directory"));
                        }
                        if !dry {
                            remove_any(&d, m)?;
                        }
                    }
                    if dry {
                        return Ok(true);
                    }
                    fs::create_dir(&d).map_err(err("creating directory", &d))?;
                    changed = true;
                }
            }
            changed |= ensure_attrs(&d, None, Some(sm.mode() & 0o7777), None, None, dry)?;
            changed |= sync_tree(&s, &d, force, dry)?;
        } else if t.is_file() {
            let content = Content::Copy(&s);
            let same = match &dm {
                Some(m) if m.is_file() => same_content(&d, m, &content)?,
                Some(m) if !force => return Err(need_force(&d, m, "a file")),
                _ => false,
            };
            if !same {
                if dry {
                    return Ok(true);
                }
                if let Some(m) = dm.as_ref().filter(|m| m.is_dir()) {
                    remove_any(&d, m)?;
                }
                let mut from = File::open(&s).map_err(err("reading source", &s))?;
                write_atomic(&d, &mut from, sm.mode() & 0o7777, None, None)?;
                changed = true;
            }
            changed |= ensure_attrs(&d, None, Some(sm.mode() & 0o7777), None, None, dry)?;
        } else if t.is_symlink() {
            let target = fs::read_link(&s).map_err(err("reading link", &s))?;
            let same = match &dm {
                Some(m) if m.file_type().is_symlink() => {
                    fs::read_link(&d).ok().as_ref() == Some(&target)
                }
                Some(m) if !force => return Err(need_force(&d, m, "a symlink")),
                _ => false,
            };
            if !same {
                if dry {
                    return Ok(true);
                }
                if let Some(m) = dm.as_ref().filter(|m| m.is_dir()) {
                    remove_any(&d, m)?;
                }
                // Create aside and rename over, so the name never disappears.
                let tmp = temp_path(&d);
                std::os::unix::fs::symlink(&target, &tmp).map_err(err("creating link", &tmp))?;
                fs::rename(&tmp, &d).map_err(err("renaming into", &d))?;
                changed = true;
            }
        } else {
            tracing::debug!(path = %s.display(), "not copying a special file");
        }
    }
    if force {
        for entry in fs::read_dir(dst).map_err(err("reading directory", dst))? {
            let entry = entry.map_err(err("reading directory", dst))?;
            if entries.contains(&entry.file_name()) {
                continue;
            }
            if dry {
                return Ok(true);
            }
            let path = entry.path();
            let m = fs::symlink_metadata(&path).map_err(err("inspecting", &path))?;
            remove_any(&path, &m)?;
            changed = true;
        }
    }
    if changed && !dry {
        sync_dir(dst)?;
    }
    Ok(changed)
}
