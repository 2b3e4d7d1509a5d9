//! Watching named files for new versions on the process-wide inotify hub, for callers outside
//! the resources (the graph files of `mgmt run`). One hub serves the whole process: no other
//! inotify instance or file-watching library is used anywhere.
//!
//! A file is watched through its directory (editors save by renaming a new file over the old
//! one, which a watch on the file itself would lose), for the entry's name only: a sibling's
//! changes never wake it, and neither do reads of the file.
//!
//! [`FilesWatch::complete_versions`] reports only versions that are complete: a file is taken
//! once its writer has closed it (`IN_CLOSE_WRITE`) or renamed it into place (`IN_MOVED_TO`),
//! or when it is deleted, renamed away or its directory replaced; a file that was written but
//! not closed yet (`IN_MODIFY` last), or freshly created and still open, is reported as being
//! written instead, once per burst of writes. inotify cannot tell that a file is open for
//! writing before its first write: a writer that opened it and has not written yet is not seen,
//! and neither is one that already had it open when the watch started. The rule is therefore
//! "taken at close or rename", not "taken when nobody has it open".

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::inotify::AddWatchFlags;

use crate::inotify::{self, Interest, Seen, Subscription};

/// Why a watch could not be set up or kept.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct WatchError(#[from] inotify::WatchError);

/// A watch on a set of files; [`changed`](Self::changed) returns after any of them may have
/// changed (for [`complete_versions`](Self::complete_versions): may have a new complete
/// version; see the module doc). Spurious wake-ups are possible (a queue overflow wakes every
/// watcher): compare contents if it matters.
pub struct FilesWatch {
    files: Vec<Watched>,
    complete_only: bool,
}

/// One file: its own subscription (all of them share one wake-up), so that what happened to
/// it is told apart from what happened to the others.
struct Watched {
    file: PathBuf,
    wanted: BTreeSet<Interest>,
    sub: Subscription,
    /// Reported as being written, and not closed or renamed into place since.
    writing: AtomicBool,
}

/// What [`FilesWatch::next`] saw; at least one list is not empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Files that may have a new (complete) version: read them.
    pub complete: Vec<PathBuf>,
    /// Files that started being written (with `complete_versions`): not closed yet, so not to
    /// be read; they come up in `complete` once closed or renamed into place.
    pub writing: Vec<PathBuf>,
}

impl std::fmt::Debug for FilesWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesWatch")
            .field("files", &self.files.len())
            .field("complete_only", &self.complete_only)
            .finish_non_exhaustive()
    }
}

fn interest(file: &Path) -> Interest {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    Interest {
        dir: file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/")),
        name: file.file_name().map(|n| n.to_os_string()),
    }
}

/// Events after which a file's version is complete, or anything may have happened: closed
/// after writing, renamed into place or away, deleted, its watch lost (its directory deleted,
/// moved, unmounted), the queue overflowed.
const COMPLETE: AddWatchFlags = AddWatchFlags::IN_CLOSE_WRITE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_UNMOUNT)
    .union(AddWatchFlags::IN_IGNORED)
    .union(AddWatchFlags::IN_Q_OVERFLOW);

/// What to make of one file's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A new complete version may be there.
    Take,
    /// Written (or created) and not closed yet: wait for the close or a rename.
    Writing,
    /// Nothing to do (no event, or attributes changed while a write is under way).
    Nothing,
}

/// The verdict on `seen` for a file that was (`writing`) or was not being written.
/// `fresh_file` says whether the entry is now a plain file made by `open(O_CREAT)` (one link,
/// not a symlink): its creator is still writing it, while a hard link or a symlink made there
/// is complete. The last event decides when it is a write; otherwise any completion does.
pub(crate) fn verdict(seen: Seen, writing: bool, fresh_file: impl FnOnce() -> bool) -> Verdict {
    use AddWatchFlags as F;
    let (mut fresh_file, mut known) = (Some(fresh_file), None);
    let mut fresh = || *known.get_or_insert_with(|| fresh_file.take().is_some_and(|f| f()));
    if seen.is_empty() {
        Verdict::Nothing
    } else if seen.last.contains(F::IN_MODIFY) || (seen.last.contains(F::IN_CREATE) && fresh()) {
        Verdict::Writing
    } else if seen.all.intersects(COMPLETE) {
        Verdict::Take
    } else if seen.all.contains(F::IN_MODIFY) {
        // Written, then only its attributes changed: still not closed.
        Verdict::Writing
    } else if seen.all.contains(F::IN_CREATE) {
        if fresh() {
            Verdict::Writing
        } else {
            Verdict::Take
        }
    } else if writing {
        // Attributes only, while a write is under way (an editor's fchmod before its close).
        Verdict::Nothing
    } else {
        // Attributes only (a file made readable, say): read it again, it costs a compare.
        Verdict::Take
    }
}

/// Whether `path` is a plain file with one link (what `open(O_CREAT)` makes).
pub(crate) fn fresh_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.nlink() == 1)
}

impl FilesWatch {
    /// Watches `files` for any change (relative paths are taken from the current directory
    /// now). Their directories must exist.
    pub fn new(files: &[PathBuf]) -> Result<FilesWatch, WatchError> {
        FilesWatch::start(files, false)
    }

    /// Watches `files` for complete new versions: a file is reported once it was closed after
    /// writing or renamed into place (or deleted, or its directory replaced), never while it
    /// is still being written; that is reported apart, once per burst of writes.
    pub fn complete_versions(files: &[PathBuf]) -> Result<FilesWatch, WatchError> {
        FilesWatch::start(files, true)
    }

    fn start(files: &[PathBuf], complete_only: bool) -> Result<FilesWatch, WatchError> {
        let mut seen = BTreeSet::new();
        let mut watched: Vec<Watched> = Vec::new();
        for file in files {
            let wanted = BTreeSet::from([interest(file)]);
            if !seen.insert(wanted.clone()) {
                continue;
            }
            let sub = match watched.first() {
                Some(first) => first.sub.sibling(),
                None => inotify::subscribe()?,
            };
            sub.set(&wanted)?;
            watched.push(Watched {
                file: file.clone(),
                wanted,
                sub,
                writing: AtomicBool::new(false),
            });
        }
        Ok(FilesWatch {
            files: watched,
            complete_only,
        })
    }

    /// Waits for the next possible change of any file. A directory that was replaced is
    /// watched again before this returns; one that is gone for good is an error.
    pub async fn changed(&self) -> Result<(), WatchError> {
        loop {
            if !self.next().await?.complete.is_empty() {
                return Ok(());
            }
        }
    }

    /// Waits for the next change: files that may have a new version, and (with
    /// `complete_versions`) files that started being written. Like `changed`, watches a
    /// replaced directory again before it returns.
    pub async fn next(&self) -> Result<Change, WatchError> {
        let Some(first) = self.files.first() else {
            return std::future::pending().await;
        };
        loop {
            first.sub.changed().await?;
            let mut change = Change::default();
            for w in &self.files {
                w.sub.set(&w.wanted)?;
                let seen = w.sub.take_seen();
                let v = if self.complete_only {
                    verdict(seen, w.writing.load(Ordering::Relaxed), || {
                        fresh_file(&w.file)
                    })
                } else if seen.is_empty() {
                    Verdict::Nothing
                } else {
                    Verdict::Take
                };
                match v {
                    Verdict::Take => {
                        w.writing.store(false, Ordering::Relaxed);
                        change.complete.push(w.file.clone());
                    }
                    Verdict::Writing => {
                        if !w.writing.swap(true, Ordering::Relaxed) {
                            change.writing.push(w.file.clone());
                        }
                    }
                    Verdict::Nothing => {}
                }
            }
            if !change.complete.is_empty() || !change.writing.is_empty() {
                return Ok(change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);

    async fn next(w: &FilesWatch) -> Change {
        tokio::time::timeout(WAIT, w.next())
            .await
            .expect("a change before the deadline")
            .unwrap()
    }

    /// The next change that is more than `file` being written: a one-shot write (open, write,
    /// close) is reported as being written first when the watch wakes between its write and
    /// its close (a loaded machine), then as complete.
    async fn next_complete(w: &FilesWatch, file: &Path) -> Change {
        loop {
            let c = next(w).await;
            if c != writing(&[file]) {
                return c;
            }
        }
    }

    /// A second watch on a sibling is the barrier: once it has woken, the hub has dispatched
    /// every earlier event of the directory, and `w` would hold a wake-up if it had been sent
    /// one. Then `w` must have nothing to report.
    async fn assert_quiet(w: &FilesWatch, dir: &Path, why: &str) {
        let other = dir.join("barrier");
        let barrier = FilesWatch::new(std::slice::from_ref(&other)).unwrap();
        std::fs::write(&other, "x").unwrap();
        tokio::time::timeout(WAIT, barrier.changed())
            .await
            .expect("the sibling's watch wakes")
            .unwrap();
        tokio::select! {
            biased;
            c = w.next() => panic!("{why}: {c:?}"),
            _ = std::future::ready(()) => {}
        }
    }

    fn complete(files: &[&Path]) -> Change {
        Change {
            complete: files.iter().map(|f| f.to_path_buf()).collect(),
            writing: Vec::new(),
        }
    }

    fn writing(files: &[&Path]) -> Change {
        Change {
            complete: Vec::new(),
            writing: files.iter().map(|f| f.to_path_buf()).collect(),
        }
    }

    #[test]
    fn the_last_write_or_any_completion_decides() {
        use AddWatchFlags as F;
        let seen = |all: AddWatchFlags, last: AddWatchFlags| Seen { all, last };
        let v = |s: Seen, writing: bool, fresh: bool| verdict(s, writing, || fresh);
        assert_eq!(v(Seen::default(), false, false), Verdict::Nothing);
        // Written, not closed: however it ends, the last write wins over an earlier close.
        let w = F::IN_MODIFY;
        assert_eq!(v(seen(w, w), false, false), Verdict::Writing);
        let closed_then_written = F::IN_CLOSE_WRITE | F::IN_MODIFY;
        assert_eq!(
            v(seen(closed_then_written, w), false, false),
            Verdict::Writing
        );
        // Closed, renamed into place or away, deleted, the watch lost: taken.
        for last in [
            F::IN_CLOSE_WRITE,
            F::IN_MOVED_TO,
            F::IN_MOVED_FROM,
            F::IN_DELETE,
            F::IN_IGNORED,
            F::IN_Q_OVERFLOW,
        ] {
            assert_eq!(
                v(seen(w | last, last), true, true),
                Verdict::Take,
                "{last:?}"
            );
        }
        // An editor's chmod after its close is still a complete version; one before it is not.
        let a = F::IN_ATTRIB;
        assert_eq!(
            v(seen(w | F::IN_CLOSE_WRITE | a, a), true, false),
            Verdict::Take
        );
        assert_eq!(v(seen(w | a, a), false, false), Verdict::Writing);
        assert_eq!(v(seen(a, a), true, false), Verdict::Nothing);
        assert_eq!(v(seen(a, a), false, false), Verdict::Take);
        // Created: by open(O_CREAT), being written; a hard link or a symlink is complete.
        let c = F::IN_CREATE;
        assert_eq!(v(seen(c, c), false, true), Verdict::Writing);
        assert_eq!(v(seen(c | a, a), false, true), Verdict::Writing);
        assert_eq!(v(seen(c, c), false, false), Verdict::Take);
        assert_eq!(
            v(seen(c | F::IN_CLOSE_WRITE, F::IN_CLOSE_WRITE), false, true),
            Verdict::Take
        );
    }

    #[tokio::test]
    async fn a_rename_over_the_file_wakes_and_a_sibling_or_a_read_does_not() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("g.yaml");
        std::fs::write(&g, "one").unwrap();
        for make in [FilesWatch::new, FilesWatch::complete_versions] {
            let w = make(std::slice::from_ref(&g)).unwrap();
            std::fs::read_to_string(&g).unwrap();
            assert_quiet(&w, d.path(), "a read or a sibling's write woke the watch").await;
            // An editor's save: a new file renamed over the old one.
            let tmp = g.with_extension("tmp~");
            std::fs::write(&tmp, "two").unwrap();
            std::fs::rename(&tmp, &g).unwrap();
            assert_eq!(next(&w).await, complete(&[&g]), "{w:?}");
            assert_quiet(&w, d.path(), "one rename, one version").await;
        }
    }

    #[tokio::test]
    async fn a_file_being_written_is_taken_when_closed_and_reported_once_before() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("g.yaml");
        std::fs::write(&g, "one").unwrap();
        let w = FilesWatch::complete_versions(std::slice::from_ref(&g)).unwrap();
        let mut f = std::fs::File::create(&g).unwrap();
        f.write_all(b"graph: half").unwrap();
        assert_eq!(next(&w).await, writing(&[&g]));
        f.write_all(b" and more").unwrap();
        assert_quiet(
            &w,
            d.path(),
            "one report per burst of writes, and no version",
        )
        .await;
        drop(f);
        assert_eq!(next(&w).await, complete(&[&g]));
        assert_quiet(&w, d.path(), "taken once").await;

        // A new file: created, written, still open; then closed.
        std::fs::remove_file(&g).unwrap();
        assert_eq!(next(&w).await, complete(&[&g]), "a deletion is taken");
        let mut f = std::fs::File::create_new(&g).unwrap();
        f.write_all(b"graph: new").unwrap();
        assert_eq!(next(&w).await, writing(&[&g]));
        drop(f);
        assert_eq!(next(&w).await, complete(&[&g]));

        // A hard link into place is complete as it is.
        let other = d.path().join("other.yaml");
        std::fs::write(&other, "graph: linked").unwrap();
        std::fs::remove_file(&g).unwrap();
        assert_eq!(next(&w).await, complete(&[&g]));
        std::fs::hard_link(&other, &g).unwrap();
        assert_eq!(next(&w).await, complete(&[&g]));
    }

    #[tokio::test]
    async fn every_write_wakes_a_plain_watch_and_files_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, "1").unwrap();
        let any = FilesWatch::new(std::slice::from_ref(&a)).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        f.write_all(b"2").unwrap();
        assert_eq!(next(&any).await, complete(&[&a]), "a write, not closed yet");
        drop(f);
        next(&any).await;

        let both = FilesWatch::complete_versions(&[a.clone(), b.clone()]).unwrap();
        std::fs::write(&b, "x").unwrap();
        assert_eq!(next_complete(&both, &b).await, complete(&[&b]));
        let f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        (&f).write_all(b"3").unwrap();
        assert_eq!(next(&both).await, writing(&[&a]));
        std::fs::write(&b, "y").unwrap();
        assert_eq!(
            next_complete(&both, &b).await,
            complete(&[&b]),
            "a is still being written"
        );
        drop(f);
        assert_eq!(next(&both).await, complete(&[&a]));
    }
}
