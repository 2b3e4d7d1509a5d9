//! `line`: one line, or one block between markers, present in (or absent from) a file that is
//! otherwise left alone, like Ansible's `lineinfile` and `blockinfile` (mgmt has no such kind;
//! fields are named in mgmt's style).
//!
//! A line: with `regexp`, the last line it matches becomes `line`; otherwise (and when it
//! matches nothing) `line` is inserted at `insertafter`/`insertbefore` unless already present.
//! Absent: every line `regexp` matches (without one, every line equal to `line`) is removed. A
//! block: `block`'s lines between the markers `marker` makes with `{mark}` as BEGIN and END.
//! The rest of the file is kept byte for byte (`text`); the file is replaced atomically keeping
//! its mode and owner, never through a symlink (`apply`). Building must never do IO.

pub(crate) mod apply;
pub(crate) mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use regex::bytes::Regex;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, Uid, WatchCtx,
};
use serde_json::{Map, Value};

use crate::file::{self, FileSpec};
use crate::params::{Params, bad, put_opt};
use text::Anchor;

pub const FIELDS: &[&str] = &[
    "path",
    "line",
    "regexp",
    "insertafter",
    "insertbefore",
    "block",
    "marker",
    "state",
    "create",
    "mode",
];

pub const KIND: KindInfo = KindInfo {
    kind: "line",
    fields: FIELDS,
    build,
};

/// The marker when none is given; `{name}` is the resource's name.
pub const DEFAULT_MARKER: &str = "# {mark} MANAGED BY MGMT {name}";

/// Mode of a file `create` makes when `mode` names none.
const DEFAULT_MODE: u32 = 0o644;

/// `state`, as mgmt spells it.
pub(crate) fn parse_state(p: &mut Params) -> Result<bool, BuildError> {
    match p.string("state")?.as_deref() {
        None | Some("exists") => Ok(true),
        Some("absent") => Ok(false),
        Some(other) => Err(bad(
            "state",
            format!("unknown state `{other}` (exists or absent)"),
        )),
    }
}

/// An absolute path, normalised as `file` does.
pub(crate) fn parse_path(p: &mut Params) -> Result<Option<PathBuf>, BuildError> {
    let Some(raw) = p.string("path")? else {
        return Ok(None);
    };
    let (path, is_dir) = file::normalise(&raw).map_err(|m| bad("path", m))?;
    if is_dir || path == Path::new("/") {
        return Err(bad(
            "path",
            format!("`{raw}` names a directory, not a file"),
        ));
    }
    Ok(Some(path))
}

/// What is managed.
#[derive(Debug, Clone)]
enum What {
    Line {
        line: String,
        regexp: Option<Regex>,
    },
    Block {
        /// The lines between the markers.
        lines: Vec<String>,
        /// As given (with `{mark}`).
        marker: String,
    },
}

#[derive(Debug, Clone)]
pub struct LineSpec {
    path: PathBuf,
    what: What,
    anchor: Anchor,
    exists: bool,
    /// Mode of a file this may create; `None`: a missing file is an error.
    create: Option<u32>,
}

fn no_newline(field: &str, s: &str) -> Result<(), BuildError> {
    if s.contains(['\n', '\r']) {
        return Err(bad(
            field,
            "must be one line (no newline or carriage return)",
        ));
    }
    Ok(())
}

fn regex(field: &str, s: &str) -> Result<Regex, BuildError> {
    Regex::new(s).map_err(|e| bad(field, format!("not a valid regular expression: {e}")))
}

impl LineSpec {
    fn from_params(name: &str, params: Value) -> Result<LineSpec, BuildError> {
        let mut p = Params::new("line", params, FIELDS)?;
        let path =
            parse_path(&mut p)?.ok_or_else(|| bad("path", "the file to edit is required"))?;
        let exists = parse_state(&mut p)?;
        let line = p.text("line")?;
        let regexp = p.string("regexp")?;
        let block = p.text("block")?;
        let marker = p.string("marker")?;
        let after = p.string("insertafter")?;
        let before = p.string("insertbefore")?;
        let create = p.boolean("create")?;
        let mode = file::parse_mode(p.take("mode"))?;
        let anchor = match (after, before) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "insertbefore",
                    "give `insertafter` or `insertbefore`, not both",
                ));
            }
            (Some(a), None) if a == "EOF" => Anchor::Eof,
            (Some(a), None) => Anchor::After(regex("insertafter", &a)?),
            (None, Some(b)) if b == "BOF" => Anchor::Bof,
            (None, Some(b)) => Anchor::Before(regex("insertbefore", &b)?),
            (None, None) => Anchor::Eof,
        };
        if mode.is_some() && !create {
            return Err(bad(
                "mode",
                "`mode` is the mode of a file this creates: set `create: true` (an existing \
                 file keeps its mode)",
            ));
        }
        let what = if block.is_some() || marker.is_some() {
            if line.is_some() {
                return Err(bad("line", "give `line` or `block`, not both"));
            }
            if regexp.is_some() {
                return Err(bad(
                    "regexp",
                    "a block is found by its markers, not a `regexp`",
                ));
            }
            let marker = marker.unwrap_or_else(|| DEFAULT_MARKER.replace("{name}", name));
            no_newline("marker", &marker)?;
            if !marker.contains("{mark}") {
                return Err(bad(
                    "marker",
                    "must contain `{mark}` (replaced by BEGIN and END)",
                ));
            }
            let block = block.unwrap_or_default();
            let body = block.strip_suffix('\n').unwrap_or(&block);
            if body.contains('\r') {
                return Err(bad("block", "must not contain a carriage return"));
            }
            if exists && body.is_empty() {
                return Err(bad(
                    "block",
                    "an empty block: give its lines, or `state: absent` to remove it",
                ));
            }
            let lines: Vec<String> = if body.is_empty() {
                Vec::new()
            } else {
                body.split('\n').map(str::to_string).collect()
            };
            let (begin, end) = markers(&marker);
            if lines.iter().any(|l| *l == begin || *l == end) {
                return Err(bad("block", "a line of the block is one of its markers"));
            }
            What::Block { lines, marker }
        } else {
            let regexp = regexp.map(|r| regex("regexp", &r)).transpose()?;
            match &line {
                Some(l) => no_newline("line", l)?,
                None if exists => {
                    return Err(bad("line", "the line to put in the file is required"));
                }
                None if regexp.is_none() => {
                    return Err(bad("line", "give the `line` (or a `regexp`) to remove"));
                }
                None => {}
            }
            What::Line {
                line: line.unwrap_or_default(),
                regexp,
            }
        };
        Ok(LineSpec {
            path,
            what,
            anchor,
            exists,
            create: create.then_some(mode.unwrap_or(DEFAULT_MODE)),
        })
    }

    fn to_params(&self) -> Value {
        let mut map = Map::new();
        map.insert(
            "path".into(),
            self.path.to_string_lossy().into_owned().into(),
        );
        match &self.what {
            What::Line { line, regexp } => {
                if self.exists || !line.is_empty() {
                    map.insert("line".into(), line.clone().into());
                }
                put_opt(
                    &mut map,
                    "regexp",
                    &regexp.as_ref().map(|r| r.as_str().to_string()),
                );
            }
            What::Block { lines, marker } => {
                if !lines.is_empty() {
                    map.insert("block".into(), format!("{}\n", lines.join("\n")).into());
                }
                map.insert("marker".into(), marker.clone().into());
            }
        }
        match &self.anchor {
            Anchor::Eof => {}
            Anchor::Bof => {
                map.insert("insertbefore".into(), "BOF".into());
            }
            Anchor::After(re) => {
                map.insert("insertafter".into(), re.as_str().into());
            }
            Anchor::Before(re) => {
                map.insert("insertbefore".into(), re.as_str().into());
            }
        }
        let state = if self.exists { "exists" } else { "absent" };
        map.insert("state".into(), state.into());
        map.insert("create".into(), self.create.is_some().into());
        put_opt(&mut map, "mode", &self.create.map(|m| format!("{m:04o}")));
        Value::Object(map)
    }

    /// The new content for `data`, or `None` when it is as wanted.
    fn edit(&self, data: &[u8]) -> Result<Option<Vec<u8>>, ResourceError> {
        match &self.what {
            What::Line { line, regexp } => Ok(if self.exists {
                text::ensure_line(data, line.as_bytes(), regexp.as_ref(), &self.anchor)
            } else {
                text::remove_lines(data, line.as_bytes(), regexp.as_ref())
            }),
            What::Block { lines, marker } => {
                let (begin, end) = markers(marker);
                let done = if self.exists {
                    text::ensure_block(data, begin.as_bytes(), end.as_bytes(), lines, &self.anchor)
                } else {
                    text::remove_block(data, begin.as_bytes(), end.as_bytes())
                };
                done.map_err(|e| ResourceError::failed(format!("{}: {e}", self.path.display())))
            }
        }
    }

    fn converge(&self, dry: bool) -> Result<bool, ResourceError> {
        let rules = apply::Rules {
            create: self.create.map(|mode| apply::Attrs {
                mode,
                uid: None,
                gid: None,
            }),
            enforce: None,
        };
        apply::converge(&self.path, &rules, &|d| self.edit(d), dry)
    }
}

fn markers(marker: &str) -> (String, String) {
    (
        marker.replace("{mark}", "BEGIN"),
        marker.replace("{mark}", "END"),
    )
}

/// What `file`'s watch watches for one file at `path` (and, as fragments, `also`): its name
/// in its directory (or in the nearest existing ancestor while the directory is missing).
pub(crate) fn watch_spec(path: &Path, also: &[&Path]) -> FileSpec {
    FileSpec {
        path: path.to_path_buf(),
        is_dir: false,
        content: None,
        source: None,
        fragments: also
            .iter()
            .map(|p| file::Fragment {
                path: p.to_path_buf(),
                is_dir: false,
            })
            .collect(),
        state: file::State::Exists,
        mode: None,
        owner: None,
        group: None,
        recurse: false,
        force: false,
    }
}

/// The file resources of `path` and of each directory above it.
pub(crate) fn file_edges(path: &Path) -> Vec<Uid> {
    path.ancestors()
        .map(|p| Uid {
            kind: "file",
            key: p.to_string_lossy().into_owned(),
        })
        .collect()
}

/// Runs `f` on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ResourceError> + Send + 'static,
) -> Result<T, ResourceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ResourceError::failed(format!("worker failed: {e}")))?
}

/// From a converge's "changed" to the outcome of `mode`.
pub(crate) fn outcome(changed: bool, mode: Mode) -> Outcome {
    match (changed, mode) {
        (false, _) => Outcome::InSync,
        (true, Mode::Check) => Outcome::WouldChange,
        (true, Mode::Apply) => Outcome::Changed,
    }
}

#[derive(Debug)]
pub struct LineRes {
    name: String,
    meta: Meta,
    spec: Arc<LineSpec>,
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    Ok(Arc::new(LineRes {
        name: name.to_string(),
        meta,
        spec: Arc::new(LineSpec::from_params(name, params)?),
    }))
}

#[async_trait]
impl Resource for LineRes {
    fn kind(&self) -> &'static str {
        "line"
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn validate(&self) -> Result<(), ResourceError> {
        Ok(())
    }
    fn params(&self) -> Value {
        self.spec.to_params()
    }
    /// The file it edits (several lines may edit one file: none depends on another).
    fn uids(&self) -> Vec<Uid> {
        vec![Uid {
            kind: "line",
            key: self.spec.path.to_string_lossy().into_owned(),
        }]
    }
    /// A `file` resource of the file itself or of a directory above it comes first.
    fn auto_edges(&self) -> Vec<Uid> {
        file_edges(&self.spec.path)
    }
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        file::watch::watch_versions(&watch_spec(&self.spec.path, &[]), ctx).await
    }
    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let spec = self.spec.clone();
        let changed = blocking(move || spec.converge(mode == Mode::Check)).await?;
        Ok(outcome(changed, mode))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use serde_json::json;

    use super::*;

    fn spec(v: Value) -> Result<LineSpec, String> {
        LineSpec::from_params("t", v).map_err(|e| e.message)
    }

    #[test]
    fn params_are_canonical_and_rebuild_the_same() {
        for v in [
            json!({"path": "/etc//x/../f", "line": "a=1", "regexp": "^a=", "insertafter": "^\\[s\\]"}),
            json!({"path": "/f", "block": "x\ny\n", "insertbefore": "BOF", "create": true}),
            json!({"path": "/f", "line": "a", "state": "absent"}),
            json!({"path": "/f", "regexp": "^a", "state": "absent"}),
            json!({"path": "/f", "marker": "; {mark} m", "state": "absent"}),
            json!({"path": "/f", "line": "a", "create": true, "mode": "0600"}),
        ] {
            let once = spec(v.clone()).unwrap().to_params();
            let twice = spec(once.clone()).unwrap().to_params();
            assert_eq!(once, twice, "{v}");
        }
        let p = spec(json!({"path": "/etc//x/../f", "block": "x\n"}))
            .unwrap()
            .to_params();
        assert_eq!(p["path"], "/etc/f");
        assert_eq!(p["marker"], "# {mark} MANAGED BY MGMT t");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (v, why) in [
            (json!({"line": "a"}), "`path`: the file to edit is required"),
            (
                json!({"path": "rel", "line": "a"}),
                "`path`: `rel` is not an absolute path",
            ),
            (
                json!({"path": "/d/", "line": "a"}),
                "`path`: `/d/` names a directory, not a file",
            ),
            (
                json!({"path": "/f"}),
                "`line`: the line to put in the file is required",
            ),
            (
                json!({"path": "/f", "line": "a\nb"}),
                "`line`: must be one line (no newline or carriage return)",
            ),
            (
                json!({"path": "/f", "line": "a", "regexp": "("}),
                "`regexp`: not a valid regular expression",
            ),
            (
                json!({"path": "/f", "line": "a", "insertafter": "x", "insertbefore": "y"}),
                "`insertbefore`: give",
            ),
            (
                json!({"path": "/f", "line": "a", "block": "b"}),
                "`line`: give `line` or `block`, not both",
            ),
            (
                json!({"path": "/f", "block": "b", "regexp": "x"}),
                "`regexp`: a block is found by its markers",
            ),
            (
                json!({"path": "/f", "block": "b", "marker": "# mgmt"}),
                "`marker`: must contain `{mark}`",
            ),
            (
                json!({"path": "/f", "block": ""}),
                "`block`: an empty block",
            ),
            (
                json!({"path": "/f", "line": "a", "mode": "0600"}),
                "`mode`: `mode` is the mode of a file this creates",
            ),
            (
                json!({"path": "/f", "line": "a", "state": "present"}),
                "`state`: unknown state `present` (exists or absent)",
            ),
            (
                json!({"path": "/f", "state": "absent"}),
                "`line`: give the `line` (or a `regexp`) to remove",
            ),
            (
                json!({"path": "/f", "line": "a", "bogus": 1}),
                "`bogus`: unknown field for kind `line`",
            ),
        ] {
            let err = spec(v.clone()).unwrap_err();
            assert!(err.starts_with(why), "{v}: {err}");
        }
    }

    #[test]
    fn converges_a_real_file_keeping_the_rest_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sshd_config");
        let original = "# comment\r\nPort 22\n#PermitRootLogin yes\nUsePAM yes";
        fs::write(&path, original).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let p = path.to_str().unwrap();
        let line =
            spec(json!({"path": p, "line": "PermitRootLogin no", "regexp": "^#?PermitRootLogin"}))
                .unwrap();
        assert!(line.converge(true).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), original);
        assert!(line.converge(false).unwrap());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# comment\r\nPort 22\nPermitRootLogin no\nUsePAM yes"
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert!(!line.converge(false).unwrap());
        let block =
            spec(json!({"path": p, "block": "Match User x\n  X11Forwarding no\n"})).unwrap();
        assert!(block.converge(false).unwrap());
        assert!(!block.converge(false).unwrap());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# comment\r\nPort 22\nPermitRootLogin no\nUsePAM yes\n# BEGIN MANAGED BY MGMT t\n\
             Match User x\n  X11Forwarding no\n# END MANAGED BY MGMT t\n"
        );
        let gone =
            spec(json!({"path": p, "marker": "# {mark} MANAGED BY MGMT t", "state": "absent"}))
                .unwrap();
        assert!(gone.converge(false).unwrap());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# comment\r\nPort 22\nPermitRootLogin no\nUsePAM yes\n"
        );
        // A missing file: an error without `create`, made with it.
        let new = dir.path().join("new.conf");
        let n = new.to_str().unwrap();
        let err = spec(json!({"path": n, "line": "a"}))
            .unwrap()
            .converge(false)
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let made = spec(json!({"path": n, "line": "a", "create": true, "mode": "0640"})).unwrap();
        assert!(made.converge(false).unwrap());
        assert_eq!(fs::read_to_string(&new).unwrap(), "a\n");
        assert_eq!(fs::metadata(&new).unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn edges_go_to_the_file_and_its_directories() {
        let r = build(
            "t",
            json!({"path": "/etc/ssh/sshd_config", "line": "a"}),
            Meta::default(),
        )
        .unwrap();
        let keys: Vec<String> = r.auto_edges().into_iter().map(|u| u.key).collect();
        assert_eq!(keys, ["/etc/ssh/sshd_config", "/etc/ssh", "/etc", "/"]);
        assert_eq!(r.uids()[0].kind, "line");
    }
}
