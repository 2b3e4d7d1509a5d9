//! Loading a graph file and watching it for new versions.
//!
//! Every path reads a graph file with [`read`] (`yamlgraph::read_file`: at most 16 MiB, UTF-8,
//! read again when it changed while being read; bad bytes are diagnostics with a position).
//! Watching is done on the file's directory (editors replace files by rename, which a watch on
//! the file itself would lose), through the process's one inotify hub, and only complete
//! versions are taken: a file is read once its writer has closed it or renamed it into place,
//! never while it is still being written (that is reported apart, once per burst of writes).
//! Identical text is ignored by the caller, so spurious events are harmless.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

/// Read a graph file, as every path does; the diagnostics name the path (and the position of
/// bytes that are no graph text).
pub fn read(path: &Path) -> Result<String, yamlgraph::Diagnostics> {
    yamlgraph::read_file(path)
}

/// Read diagnostics for people: a file that cannot be read is one line, like every other
/// error before a run starts; bytes at a position get the caret art.
pub fn render(d: &yamlgraph::Diagnostics) -> String {
    match d.unreadable() {
        Some(message) => format!("error: {message}"),
        None => d.to_string(),
    }
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

/// Logs what a loaded graph has that is ignored (mgmt's graphs load, with a warning each),
/// one line per warning with its file:line:col.
pub fn log_warnings(spec: &yamlgraph::GraphSpec) {
    for w in &spec.warnings {
        tracing::warn!("{}", w.one_line());
    }
}

/// What a [`FileWatch`] tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEvent {
    /// One of the files may have a new complete version (closed after writing, renamed into
    /// place, deleted): read them.
    Complete,
    /// This file is being written (written, not closed yet): it is not read until it is
    /// closed or renamed into place. Once per burst of writes.
    Writing(PathBuf),
}

/// Watches graph files on the process-wide inotify hub (`resources::watch`, complete versions
/// only) and sends what it sees. Reads do not count: every reload reads the file, and must not
/// feed the next one. Dropping it stops the watch.
pub struct FileWatch {
    task: tokio::task::JoinHandle<()>,
}

impl FileWatch {
    pub fn new(files: &[PathBuf], tx: mpsc::Sender<FileEvent>) -> Result<FileWatch> {
        let watch = resources::watch::FilesWatch::complete_versions(files).with_context(|| {
            let names: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
            format!("cannot watch {}", names.join(", "))
        })?;
        let task = tokio::spawn(async move {
            loop {
                // Waiting for room is fine: the hub keeps what happens meanwhile.
                match watch.next().await {
                    Ok(change) => {
                        for file in change.writing {
                            if tx.send(FileEvent::Writing(file)).await.is_err() {
                                return;
                            }
                        }
                        if !change.complete.is_empty()
                            && tx.send(FileEvent::Complete).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        // Whatever happened last is read once more.
                        let _ = tx.send(FileEvent::Complete).await;
                        tracing::warn!("{e}; live edits of the graph are no longer seen");
                        return;
                    }
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
