//! Watching a `file` resource through the process-wide inotify hub (`crate::inotify`).
//!
//! A file is watched through its parent directory, hearing only about its own name there
//! (creation, deletion, rename-over, content and attribute changes; for a directory too, as
//! inotify reports a subdirectory's attribute changes to its parent). A directory whose entries
//! matter (one copied from a `source`, and that source) is watched itself too, its
//! subdirectories as well with `recurse`; a plain directory is not, so that writing thousands
//! of files into it does not wake it thousands of times. When the parent does not exist yet
//! the nearest existing ancestor is watched instead, for the name leading towards the file, and
//! the watch moves down as directories appear. The same holds for `source` and for each of
//! `fragments`; a directory of fragments is watched itself too (through a symlink as well), as
//! adding, removing or editing an entry changes the content. A fragment that is a symlink to a
//! file is watched as the link, not its target. A spurious event is harmless, a missed one is
//! a bug: anything ambiguous (a queue overflow, a watched directory deleted or moved) is
//! reported as an event. This must never change the filesystem.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use resource::{ResourceError, WatchCtx};

use super::FileSpec;
use crate::inotify::{self, Interest, Subscription};
use crate::watch::Verdict;

/// How often `follow` looks again when directories vanish between looking and watching.
const FOLLOW_TRIES: usize = 8;

/// A path we care about, whether the entries of a directory there matter, and whether changes
/// deep below it matter.
struct Target<'a> {
    path: &'a Path,
    entries: bool,
    recursive: bool,
}

pub(crate) async fn watch(spec: &FileSpec, ctx: WatchCtx) -> Result<(), ResourceError> {
    watch_with(spec, ctx, false).await
}

/// As [`watch`], but a change of a file that is still being written (its last event a write,
/// or created by `open(O_CREAT)` and not closed yet) is reported only once its writer closes
/// it (or renames it into place), with the rule of [`crate::watch`]. For the kinds that edit
/// part of a file the user also edits (`line` and those built on it): a check then never reads
/// a half-written file and writes it back without the writer's later writes.
pub(crate) async fn watch_versions(spec: &FileSpec, ctx: WatchCtx) -> Result<(), ResourceError> {
    watch_with(spec, ctx, true).await
}

async fn watch_with(
    spec: &FileSpec,
    ctx: WatchCtx,
    complete_only: bool,
) -> Result<(), ResourceError> {
    // Only a copy of a source tree depends on what a directory contains.
    let copies = spec.source.is_some();
    let mut targets = vec![Target {
        path: &spec.path,
        entries: copies,
        recursive: copies && spec.recurse,
    }];
    if let Some(source) = &spec.source {
        targets.push(Target {
            path: source,
            entries: true,
            recursive: spec.recurse,
        });
    }
    targets.extend(spec.fragments.iter().map(|f| Target {
        path: &f.path,
        entries: f.is_dir,
        recursive: false,
    }));
    let sub = inotify::subscribe().map_err(ResourceError::failed)?;
    follow(&sub, &targets)?;
    ctx.running();
    let mut writing = false;
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            changed = sub.changed() => changed.map_err(ResourceError::failed)?,
        }
        // Directories may have appeared, vanished or been replaced: watch what is there now,
        // before the check_apply this event leads to looks.
        follow(&sub, &targets)?;
        let seen = sub.take_seen();
        // A wake without an event of ours (a watch lost and set again) is reported: a spurious
        // event is harmless.
        if complete_only && !seen.is_empty() {
            match crate::watch::verdict(seen, writing, || crate::watch::fresh_file(&spec.path)) {
                Verdict::Writing => {
                    writing = true;
                    continue;
                }
                Verdict::Nothing => continue,
                Verdict::Take => writing = false,
            }
        }
        ctx.event();
    }
}

/// What should be watched now: for each target, its name in its nearest existing ancestor
/// directory, and the target itself (with its subdirectories when recursive) when it is an
/// existing directory whose entries matter, or `/` (which has no parent to watch it through).
fn wanted(targets: &[Target<'_>]) -> BTreeSet<Interest> {
    let mut wanted = BTreeSet::new();
    for t in targets {
        let mut anchored = false;
        if let Some(anchor) = t.path.ancestors().skip(1).find(|p| p.is_dir())
            && let Ok(rest) = t.path.strip_prefix(anchor)
            && let Some(Component::Normal(name)) = rest.components().next()
        {
            wanted.insert(Interest {
                dir: anchor.to_path_buf(),
                name: Some(name.to_os_string()),
            });
            anchored = true;
        }
        // Entries are read through a symlinked directory, so they are watched through it too.
        let is_dir = if t.entries {
            t.path.metadata()
        } else {
            t.path.symlink_metadata()
        };
        if (t.entries || !anchored) && is_dir.is_ok_and(|m| m.is_dir()) {
            wanted.insert(Interest {
                dir: t.path.to_path_buf(),
                name: None,
            });
            if t.recursive {
                subdirectories(t.path, &mut wanted);
            }
        }
    }
    wanted
}

/// Every directory below `dir` (symlinks not followed). One vanishing meanwhile is skipped:
/// its removal is an event that brings us back here.
fn subdirectories(dir: &Path, wanted: &mut BTreeSet<Interest>) {
    let Ok(entries) = dir.read_dir() else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let path = entry.path();
            subdirectories(&path, wanted);
            wanted.insert(Interest {
                dir: path,
                name: None,
            });
        }
    }
}

/// Move the watches to where they are needed now. A directory may vanish between looking and
/// watching; then look again (bounded: each retry means the tree changed under us, and the
/// event that follows such a change will bring us back here).
fn follow(sub: &Subscription, targets: &[Target<'_>]) -> Result<(), ResourceError> {
    let mut last_error = None;
    for _ in 0..FOLLOW_TRIES {
        match sub.set(&wanted(targets)) {
            Ok(()) => return Ok(()),
            Err(e) => last_error = Some(e),
        }
    }
    Err(ResourceError::failed(
        last_error.map(|e| e.to_string()).unwrap_or_default(),
    ))
}
