//! Loading a graph file and watching it for new versions.
//!
//! Watching is done on the file's directory (editors replace files by rename, which a watch on
//! the file itself would lose), through the process's one inotify hub, and every event re-reads
//! the file; identical text is ignored by the caller, so spurious events are harmless.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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
    parse_diagnostics(path, text, registry).map_err(|d| d.to_string())
}

/// [`parse`] with the diagnostics kept as data: `Display` renders them for people (the caret
/// art), `Serialize` gives `[{file, line, column, message}]` for `--json`.
pub fn parse_diagnostics(
    path: &Path,
    text: &str,
    registry: &resource::Registry,
) -> Result<yamlgraph::GraphSpec, yamlgraph::Diagnostics> {
    yamlgraph::parse(&path.display().to_string(), text, registry)
}

/// Watches graph files on the process-wide inotify hub (`resources::watch`); sends a unit on
/// every possible change of one of them (create, write, rename over, delete). Reads do not
/// count: every reload reads the file, and must not feed the next one. Dropping it stops the
/// watch.
pub struct FileWatch {
    task: tokio::task::JoinHandle<()>,
}

impl FileWatch {
    pub fn new(files: &[PathBuf], tx: mpsc::Sender<()>) -> Result<FileWatch> {
        let watch = resources::watch::FilesWatch::new(files).with_context(|| {
            let names: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
            format!("cannot watch {}", names.join(", "))
        })?;
        let task = tokio::spawn(async move {
            loop {
                let changed = watch.changed().await;
                // A full queue means nobody has read the last one yet: this one adds nothing.
                let _ = tx.try_send(());
                if let Err(e) = changed {
                    tracing::warn!("{e}; live edits of the graph are no longer seen");
                    return;
                }
            }
        });
        Ok(FileWatch { task })
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
