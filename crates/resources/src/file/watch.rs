//! Watching a `file` resource with inotify (through `notify`).
//!
//! A file is watched through its parent directory, which reports creation, deletion,
//! rename-over, content and attribute changes of its children; a directory is watched itself
//! too (recursively with `recurse`). When the parent does not exist yet the nearest existing
//! ancestor is watched instead, and the watches move down as directories appear. The same holds
//! for `source`. A spurious event is harmless, a missed one is a bug: anything ambiguous (a
//! queue overflow, a watcher error) is reported as an event. This must never change the
//! filesystem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use resource::{ResourceError, WatchCtx};
use tokio::sync::mpsc;

use super::FileSpec;

/// A path we care about and whether changes deep below it matter.
struct Target<'a> {
    path: &'a Path,
    recursive: bool,
}

pub(super) async fn watch(spec: &FileSpec, ctx: WatchCtx) -> Result<(), ResourceError> {
    let mut targets = vec![Target {
        path: &spec.path,
        recursive: spec.recurse,
    }];
    if let Some(source) = &spec.source {
        targets.push(Target {
            path: source,
            recursive: spec.recurse,
        });
    }
    // notify calls us from its own thread; unbounded because dropping an event could drop the
    // only news of a change (the consumer below never blocks for long).
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = RecommendedWatcher::new(
        move |event| {
            let _ = tx.send(event);
        },
        notify::Config::default(),
    )
    .map_err(|e| ResourceError::failed(format!("starting a file watcher: {e}")))?;
    let mut watched = BTreeMap::new();
    rewatch(&mut watcher, &mut watched, &targets)?;
    ctx.running();
    loop {
        let event = tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            event = rx.recv() => event,
        };
        let relevant = match event {
            None => return Err(ResourceError::failed("the file watcher stopped")),
            Some(Err(e)) => {
                tracing::warn!(path = %spec.path.display(), "file watcher error: {e}");
                forget(&mut watcher, &mut watched, None);
                true
            }
            Some(Ok(event)) if event.need_rescan() => {
                forget(&mut watcher, &mut watched, None);
                true
            }
            Some(Ok(event)) => {
                let relevant = is_relevant(&event, &targets);
                if relevant {
                    // An event about a watched directory itself (deleted, moved) may leave its
                    // watch on a dead inode: drop it so `rewatch` sets it up afresh.
                    forget(&mut watcher, &mut watched, Some(&event.paths));
                }
                relevant
            }
        };
        if relevant {
            rewatch(&mut watcher, &mut watched, &targets)?;
            ctx.event();
        }
    }
}

fn is_relevant(event: &Event, targets: &[Target]) -> bool {
    // Reading (our own check_apply reads the file) changes nothing; closing after a write does.
    if let EventKind::Access(kind) = event.kind
        && kind != AccessKind::Close(AccessMode::Write)
    {
        return false;
    }
    if event.need_rescan() || event.paths.is_empty() {
        return true;
    }
    event.paths.iter().any(|changed| {
        targets.iter().any(|t| {
            // An ancestor on the way to the target (created, removed, renamed), the target
            // itself, or something inside a watched directory.
            t.path.starts_with(changed) || changed.starts_with(t.path)
        })
    })
}

/// Drop the watches on `paths` (all of them with `None`).
fn forget(
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeMap<PathBuf, bool>,
    paths: Option<&[PathBuf]>,
) {
    watched.retain(|path, _| {
        let keep = paths.is_some_and(|paths| !paths.contains(path));
        if !keep {
            // The watch may already be gone with its directory.
            let _ = watcher.unwatch(path);
        }
        keep
    });
}

/// What should be watched now: for each target, its nearest existing ancestor directory, and
/// the target itself when it is an existing directory.
fn wanted(targets: &[Target]) -> BTreeMap<PathBuf, bool> {
    let mut wanted = BTreeMap::new();
    for t in targets {
        if let Some(anchor) = t.path.ancestors().skip(1).find(|p| p.is_dir()) {
            wanted.entry(anchor.to_path_buf()).or_insert(false);
        }
        if t.path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            let recursive = wanted.entry(t.path.to_path_buf()).or_insert(false);
            *recursive |= t.recursive;
        }
    }
    wanted
}

/// Move the watches to where they are needed now. A directory may vanish between looking and
/// watching; then look again (bounded: each retry means the tree changed under us, and the
/// event that follows such a change will bring us back here).
fn rewatch(
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeMap<PathBuf, bool>,
    targets: &[Target],
) -> Result<(), ResourceError> {
    let mut last_error = None;
    for _ in 0..8 {
        let wanted = wanted(targets);
        for (path, recursive) in watched.clone() {
            if wanted.get(&path) != Some(&recursive) {
                // The watch may already be gone with its directory.
                let _ = watcher.unwatch(&path);
                watched.remove(&path);
            }
        }
        last_error = None;
        for (path, recursive) in &wanted {
            if watched.contains_key(path) {
                continue;
            }
            let mode = if *recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match watcher.watch(path, mode) {
                Ok(()) => {
                    watched.insert(path.clone(), *recursive);
                }
                Err(e) => last_error = Some(format!("watching {}: {e}", path.display())),
            }
        }
        if last_error.is_none() {
            return Ok(());
        }
    }
    Err(ResourceError::failed(last_error.unwrap_or_default()))
}
