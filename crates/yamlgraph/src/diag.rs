//! Diagnostics: what went wrong in a graph file, where, and how to fix it, rendered the way
//! rustc renders its errors (source line, caret under the offending token, help note).
//!
//! Pure data and formatting; never reads files (the source line is captured when a diagnostic
//! is made).
//!
//! Two forms of the same data: `Display` for people (the caret art), `Serialize` for programs
//! (`{"file", "line", "column", "message"}` per diagnostic, a list for [`Diagnostics`]), so a
//! caller's JSON never carries the rendering.

use std::fmt;

use serde::Serialize;

/// One problem in a graph file. `line` and `col` are 1-based; `line == 0` means the problem
/// has no position (the file could not be read at all).
///
/// Serialises as its fields `file`, `line`, `column` and `message` (the `--json` schema's
/// diagnostic); `help` and what only the rendering needs (`source_line`, `width`) are for
/// people and not serialised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    #[serde(rename = "column")]
    pub col: usize,
    pub message: String,
    #[serde(skip)]
    pub help: Option<String>,
    /// The text of line `line`, shown under the message.
    #[serde(skip)]
    pub source_line: String,
    /// How many characters the caret underlines (at least 1).
    #[serde(skip)]
    pub width: usize,
}

impl Diagnostic {
    /// A problem with the file as a whole (it cannot be read): no position, no source line.
    pub fn whole_file(file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            line: 0,
            col: 0,
            message: message.into(),
            help: None,
            source_line: String::new(),
            width: 1,
        }
    }
}

/// Every problem found in one graph file, in source order. `Display` renders all of them;
/// `Serialize` gives the list of [`Diagnostic`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl std::error::Error for Diagnostics {}

impl Diagnostic {
    /// The same rendering as `Display`, labelled `warning:` (what loads but is ignored).
    pub fn warning(&self) -> String {
        let mut out = String::new();
        let _ = self.render(&mut out, "warning");
        out
    }

    /// `file:line:col: message` on one line, for logs.
    pub fn one_line(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file, self.message)
        } else {
            format!("{}:{}:{}: {}", self.file, self.line, self.col, self.message)
        }
    }

    fn render(&self, f: &mut dyn fmt::Write, label: &str) -> fmt::Result {
        writeln!(f, "{label}: {}", self.message)?;
        if self.line == 0 {
            writeln!(f, " --> {}", self.file)?;
        } else {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            writeln!(f, "{pad}--> {}:{}:{}", self.file, self.line, self.col)?;
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {}", self.source_line)?;
            // Mirror tabs so the caret lines up however the terminal expands them.
            let lead: String = self
                .source_line
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {lead}{}", "^".repeat(self.width.max(1)))?;
            if self.help.is_some() {
                writeln!(f, "{pad} |")?;
            }
        }
        if let Some(help) = &self.help {
            let pad = " ".repeat(if self.line == 0 {
                1
            } else {
                self.line.to_string().len() + 1
            });
            writeln!(f, "{pad}= help: {help}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(f, "error")
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            let file = &self.0[0].file;
            writeln!(f)?;
            writeln!(
                f,
                "error: could not load `{file}` due to {} previous errors",
                self.0.len()
            )?;
        }
        Ok(())
    }
}

/// The closest candidate to `word`, if one is close enough to be a plausible typo
/// (case-insensitive optimal string alignment distance of at most a third of the word).
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "did you mean `x`?" when something is close, else the full list of valid names.
pub(crate) fn help_for(word: &str, what: &str, candidates: &[&str]) -> String {
    match suggest(word, candidates.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => {
            let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
            format!("valid {what}: {}", list.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos_and_case() {
        assert_eq!(suggest("fiel", ["exec", "file", "msg"]), Some("file"));
        assert_eq!(suggest("contnet", ["content", "path"]), Some("content"));
        assert_eq!(suggest("File", ["file"]), Some("file"));
        assert_eq!(suggest("zzz", ["file", "exec"]), None);
    }

    #[test]
    fn renders_without_position() {
        let d = Diagnostic::whole_file("g.yaml", "cannot read `g.yaml`: no such file");
        assert_eq!(
            d.to_string(),
            "error: cannot read `g.yaml`: no such file\n --> g.yaml\n"
        );
    }

    #[test]
    fn serialises_as_fields_without_the_rendering() {
        let d = Diagnostics(vec![
            Diagnostic {
                file: "g.yaml".into(),
                line: 6,
                col: 5,
                message: "unknown field `contnet` for resource kind `file`".into(),
                help: Some("did you mean `content`?".into()),
                source_line: "    contnet: hello".into(),
                width: 7,
            },
            Diagnostic::whole_file("h.yaml", "cannot read `h.yaml`: no such file"),
        ]);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!([
                {
                    "file": "g.yaml",
                    "line": 6,
                    "column": 5,
                    "message": "unknown field `contnet` for resource kind `file`",
                },
                {
                    "file": "h.yaml",
                    "line": 0,
                    "column": 0,
                    "message": "cannot read `h.yaml`: no such file",
                },
            ])
        );
    }
}
