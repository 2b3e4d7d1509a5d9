//! Watching named files for new versions on the process-wide inotify hub, for callers outside
//! the resources (the graph files of `mgmt run`). One hub serves the whole process: no other
//! inotify instance or file-watching library is used anywhere.
//!
//! A file is watched through its directory (editors save by renaming a new file over the old
//! one, which a watch on the file itself would lose), for the entry's name only: a sibling's
//! changes never wake it, and neither do reads of the file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::inotify::{self, Interest, Subscription};

/// Why a watch could not be set up or kept.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct WatchError(#[from] inotify::WatchError);

/// A watch on a set of files; [`changed`](Self::changed) returns after any of them may have
/// changed (created, written, renamed over, deleted, or its directory replaced). Spurious
/// wake-ups are possible (a queue overflow wakes every watcher): compare contents if it matters.
pub struct FilesWatch {
    sub: Subscription,
    wanted: BTreeSet<Interest>,
}

impl std::fmt::Debug for FilesWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesWatch")
            .field("files", &self.wanted.len())
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

impl FilesWatch {
    /// Watches `files` (relative paths are taken from the current directory now). Their
    /// directories must exist.
    pub fn new(files: &[PathBuf]) -> Result<FilesWatch, WatchError> {
        let wanted: BTreeSet<Interest> = files.iter().map(|f| interest(f)).collect();
        let sub = inotify::subscribe()?;
        sub.set(&wanted)?;
        Ok(FilesWatch { sub, wanted })
    }

    /// Waits for the next possible change. A directory that was replaced is watched again
    /// before this returns; one that is gone for good is an error.
    pub async fn changed(&self) -> Result<(), WatchError> {
        self.sub.changed().await?;
        self.sub.set(&self.wanted)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_rename_over_the_file_wakes_and_a_sibling_or_a_read_does_not() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("g.yaml");
        let other = d.path().join("other");
        std::fs::write(&g, "one").unwrap();
        let w = FilesWatch::new(std::slice::from_ref(&g)).unwrap();
        // A second watch on the sibling is the barrier: once it has woken, the hub has
        // dispatched the sibling's events, and `w` would hold a wake-up if it had been sent one.
        let barrier = FilesWatch::new(std::slice::from_ref(&other)).unwrap();
        std::fs::read_to_string(&g).unwrap();
        std::fs::write(&other, "x").unwrap();
        tokio::time::timeout(WAIT, barrier.changed())
            .await
            .expect("the sibling's watch wakes")
            .unwrap();
        tokio::select! {
            biased;
            _ = w.changed() => panic!("a read or a sibling's write woke the watch"),
            _ = std::future::ready(()) => {}
        }
        // An editor's save: a new file renamed over the old one.
        let tmp = g.with_extension("tmp~");
        std::fs::write(&tmp, "two").unwrap();
        std::fs::rename(&tmp, &g).unwrap();
        tokio::time::timeout(WAIT, w.changed())
            .await
            .expect("the save wakes the watch")
            .unwrap();
    }
}
