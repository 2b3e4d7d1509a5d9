//! Reading a graph file: the one function every path uses (run, check, remote files, live
//! edits), so that every input limit and every diagnostic is the same everywhere.
//!
//! At most [`MAX_FILE_BYTES`] are taken (one byte more is read to tell, never the rest of a
//! huge file), the text must be UTF-8, and a regular file that changed while it was read (its
//! device, inode, size, mtime or ctime moved, or the path now names another file) is read
//! again, a few times at most. (A rewrite in place of the same size within one tick of the
//! filesystem's clock looks unchanged; the watch's event at its close brings it in.) Too large
//! and not UTF-8 are diagnostics at the file, line and column where the limit is crossed or
//! the first invalid byte is.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{Diagnostic, Diagnostics};

/// The largest graph file read, in bytes (16 MiB). A graph of 10,000 resources is about 1 MiB.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// How often a file that keeps changing while it is read is read again before giving up.
const READ_TRIES: usize = 4;

/// How much of a long line a diagnostic shows before its caret.
const SHOWN_CHARS: usize = 60;

/// What identifies one version of a file, as far as `stat` can tell.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl Diagnostics {
    /// The message, when these diagnostics say that a file cannot be read at all (one
    /// diagnostic without a position, as [`read_file`] gives for a missing file, say) rather
    /// than where its text is wrong.
    pub fn unreadable(&self) -> Option<&str> {
        match self.0.as_slice() {
            [one] if one.line == 0 => Some(&one.message),
            _ => None,
        }
    }
}

/// Reads the graph file `path`, naming it as given in diagnostics. A file that cannot be read
/// is one diagnostic without a position (`line` 0).
pub fn read_file(path: impl AsRef<Path>) -> Result<String, Diagnostics> {
    read_with(path.as_ref(), &mut |_| {})
}

/// [`read_file`], calling `between(try)` after each read and before looking whether the file
/// changed meanwhile (tests change it there).
fn read_with(path: &Path, between: &mut dyn FnMut(usize)) -> Result<String, Diagnostics> {
    let file = path.display().to_string();
    let whole = |message: String| Diagnostics(vec![Diagnostic::whole_file(&file, message)]);
    let cannot = |e: std::io::Error| whole(format!("cannot read `{file}`: {e}"));
    for attempt in 0..READ_TRIES {
        let mut f = std::fs::File::open(path).map_err(cannot)?;
        let before = f.metadata().map_err(cannot)?;
        let limit = MAX_FILE_BYTES as u64 + 1;
        let mut bytes = Vec::with_capacity(before.len().min(limit) as usize);
        (&mut f)
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        between(attempt);
        // Pipes and devices have no versions to compare: what was read is what there is.
        if before.is_file() {
            let after = Stamp::of(&f.metadata().map_err(cannot)?);
            let now = std::fs::metadata(path).map(|m| Stamp::of(&m));
            let whole_read = bytes.len() as u64 == after.size.min(limit);
            if Stamp::of(&before) != after || now.ok().as_ref() != Some(&after) || !whole_read {
                continue;
            }
        }
        return text(&file, bytes).map_err(|d| Diagnostics(vec![d]));
    }
    Err(whole(format!(
        "`{file}` changed every time it was read ({READ_TRIES} times); waiting for its next version"
    )))
}

/// `bytes` (of `file`, at most one byte over the limit) as text, or the diagnostic at the first
/// invalid byte or where the size limit is crossed.
pub(crate) fn text(file: &str, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    let kept = &bytes[..bytes.len().min(MAX_FILE_BYTES)];
    let valid = match std::str::from_utf8(kept) {
        Ok(_) => kept.len(),
        // A character cut by the limit is no error of the file: the limit is.
        Err(e) if e.error_len().is_none() && kept.len() < bytes.len() => e.valid_up_to(),
        Err(e) => {
            let at = e.valid_up_to();
            return Err(at_offset(
                file,
                &bytes,
                at,
                format!(
                    "graph files are UTF-8 text, and byte 0x{:02x} (at offset {at}) is not valid UTF-8",
                    bytes[at]
                ),
                Some("convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)".into()),
            ));
        }
    };
    if bytes.len() > MAX_FILE_BYTES {
        return Err(at_offset(
            file,
            &bytes,
            valid,
            format!(
                "graph file is larger than the limit of {} MiB ({MAX_FILE_BYTES} bytes); it is crossed here",
                MAX_FILE_BYTES >> 20
            ),
            None,
        ));
    }
    let mut bytes = bytes;
    bytes.truncate(valid);
    // Valid, as checked above: nothing is replaced.
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
}

/// A diagnostic at byte `at` of `bytes`, everything before which is valid UTF-8: its line, its
/// column in characters, and the line up to there (only the end of a long one).
fn at_offset(
    file: &str,
    bytes: &[u8],
    at: usize,
    message: String,
    help: Option<String>,
) -> Diagnostic {
    let before = &bytes[..at];
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line_before = String::from_utf8_lossy(&before[start..]);
    let col = line_before.chars().count() + 1;
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let source_line = if col - 1 > SHOWN_CHARS + 20 {
        // The caret goes right after what is shown: where `at` is.
        let tail: Vec<char> = line_before.chars().rev().take(SHOWN_CHARS).collect();
        std::iter::once('…').chain(tail.into_iter().rev()).collect()
    } else {
        // The rest of the line too, as far as it is text.
        let end = bytes[at..]
            .iter()
            .take(SHOWN_CHARS)
            .position(|b| *b == b'\n')
            .map_or((at + SHOWN_CHARS).min(bytes.len()), |i| at + i);
        String::from_utf8_lossy(&bytes[start..end]).into_owned()
    };
    Diagnostic {
        file: file.to_string(),
        line,
        col,
        message,
        help,
        source_line,
        width: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_named_at_its_line_and_column() {
        let d = text(
            "g.yaml",
            b"graph: g\nresources:\n  n\xc3\xa9: \xff\xfe\n".to_vec(),
        )
        .expect_err("not UTF-8");
        assert_eq!((d.line, d.col), (3, 7), "{d}");
        assert!(d.message.contains("0xff"), "{}", d.message);
        assert!(d.message.contains("offset 27"), "{}", d.message);
        let shown = d.to_string();
        assert!(shown.contains("g.yaml:3:7"), "{shown}");
        assert!(
            shown.contains("3 |   né: \u{fffd}\u{fffd}\n  |       ^\n"),
            "{shown}"
        );
        // A character cut short at the end of the file is invalid too.
        let d = text("g.yaml", b"graph: \xc3".to_vec()).expect_err("cut");
        assert_eq!((d.line, d.col), (1, 8));
    }

    #[test]
    fn a_long_line_shows_only_its_end_before_the_caret() {
        let mut bytes = b"graph: g\n# ".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 10_000));
        bytes.push(0x80);
        let d = text("g.yaml", bytes).expect_err("not UTF-8");
        assert_eq!((d.line, d.col), (2, 10_003));
        assert_eq!(d.source_line.chars().count(), SHOWN_CHARS + 1);
        let shown = d.to_string();
        let caret = shown.lines().find(|l| l.contains('^')).unwrap();
        let source = shown.lines().find(|l| l.contains('…')).unwrap();
        assert_eq!(caret.chars().count(), source.chars().count() + 1, "{shown}");
    }

    #[test]
    fn the_size_limit_is_named_where_it_is_crossed() {
        let mut bytes = b"graph: g\n".to_vec();
        bytes.extend(b"# comment\n".repeat(MAX_FILE_BYTES / 10));
        bytes.truncate(MAX_FILE_BYTES);
        assert!(
            text("g.yaml", bytes.clone()).is_ok(),
            "the limit itself is fine"
        );
        bytes.push(b'#');
        let d = text("g.yaml", bytes.clone()).expect_err("over");
        // A first line of 9 bytes, then lines of 10.
        let (full, rest) = ((MAX_FILE_BYTES - 9) / 10, (MAX_FILE_BYTES - 9) % 10);
        assert_eq!((d.line, d.col), (2 + full, rest + 1));
        assert!(d.message.contains("16 MiB"), "{}", d.message);
        // A multi-byte character across the limit: still the limit, not bad UTF-8.
        bytes.truncate(MAX_FILE_BYTES - 1);
        bytes.extend("é".as_bytes());
        let d = text("g.yaml", bytes).expect_err("over");
        assert!(d.message.contains("larger than"), "{}", d.message);
    }

    #[test]
    fn a_file_that_changes_while_it_is_read_is_read_again() {
        let dir = std::env::temp_dir().join(format!("yamlgraph-reread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = dir.join("g.yaml");
        std::fs::write(&g, "graph: half").unwrap();
        // Written on in place, then replaced by rename: each is seen and read again.
        let text = read_with(&g, &mut |attempt| match attempt {
            0 => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&g).unwrap();
                f.write_all(b"\n# and the rest").unwrap();
            }
            1 => {
                std::fs::write(dir.join("new"), "graph: new\n").unwrap();
                std::fs::rename(dir.join("new"), &g).unwrap();
            }
            _ => {}
        })
        .unwrap();
        assert_eq!(text, "graph: new\n");
        // One that never holds still is given up on, without a position.
        let d = read_with(&g, &mut |attempt| {
            // A size of its own each time: two writes within one clock tick have one mtime.
            std::fs::write(&g, format!("graph: v{}\n", "x".repeat(attempt))).unwrap()
        })
        .expect_err("never the same");
        assert_eq!(d.0[0].line, 0);
        assert!(
            d.0[0].message.contains("changed every time"),
            "{}",
            d.0[0].message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_file_takes_no_more_than_the_limit_and_names_unreadable_files() {
        let dir = std::env::temp_dir().join(format!("yamlgraph-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = dir.join("huge.yaml");
        // Sparse: a 1 GiB file costs nothing, and reading it whole would take seconds.
        let f = std::fs::File::create(&g).unwrap();
        f.set_len(1 << 30).unwrap();
        drop(f);
        let d = read_file(&g).expect_err("over the limit");
        assert_eq!(d.0.len(), 1);
        // NUL bytes are valid UTF-8: the limit is what stops it.
        assert!(d.0[0].message.contains("larger than"), "{}", d.0[0].message);
        assert_eq!((d.0[0].line, d.0[0].col), (1, MAX_FILE_BYTES + 1));
        std::fs::write(&g, "graph: g\n").unwrap();
        assert_eq!(read_file(&g).unwrap(), "graph: g\n");
        std::fs::remove_file(&g).unwrap();
        let d = read_file(&g).expect_err("missing");
        assert_eq!(d.0[0].line, 0);
        assert!(
            d.0[0].message.starts_with("cannot read `"),
            "{}",
            d.0[0].message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
