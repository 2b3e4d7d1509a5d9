//! Loading a graph file and watching it for new versions.
//!
//! Watching is done on the file's directory (editors replace files by rename, which a watch on
//! the file itself would lose) and every event re-reads the file; identical text is ignored by
//! the caller, so spurious events are harmless.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Read a graph file; the error names the path.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read graph file {}", path.display()))
}

/// Parse a graph file's text, rendering every diagnostic at once on failure.
pub fn parse(
    path: &Path,
    text: &str,
    registry: &resource::Registry,
) -> Result<yamlgraph::GraphSpec, String> {
    yamlgraph::parse(&path.display().to_string(), text, registry).map_err(|d| d.to_string())
}

/// Watches one file; sends a unit on every change of it (create, write, rename over, delete).
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

impl FileWatch {
    pub fn new(path: &Path, tx: mpsc::Sender<()>) -> Result<FileWatch> {
        let path: PathBuf = std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let name = path.file_name().map(|n| n.to_os_string());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else {
                let _ = tx.try_send(());
                return;
            };
            // Reading the file (as every reload does) is an event too: without this, one read
            // would feed the next forever.
            if is_read_only(&ev.kind) {
                return;
            }
            if ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            {
                let _ = tx.try_send(());
            }
        })
        .context("cannot start the graph file watcher")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        Ok(FileWatch { _watcher: watcher })
    }
}

/// Events that only say someone read a file (open, read, close without writing).
pub fn is_read_only(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    )
}
