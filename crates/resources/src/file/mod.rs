//! `file`: a file or directory with its content, mode and ownership (mgmt's file resource).
//!
//! This module holds the parameters (parsing, canonical form, identity); `ops` converges the
//! filesystem and `watch` reports changes. Parameters follow mgmt 0.0.x: `path` defaults to the
//! name, a trailing `/` makes a directory (its `content`, if any, is ignored), `dirname` +
//! `basename` are an alternative spelling of `path`, `""` means unset. `fragments` (as in
//! mgmt) builds a file's content from other files; unlike mgmt, the watch follows them too.
//! Building must never touch the filesystem.

pub(crate) mod ops;
mod pool;
pub(crate) mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, BuildWarning, KindInfo, Meta, Mode, Outcome, Resource, ResourceError,
    Uid, WatchCtx,
};
use serde_json::{Map, Value};

use crate::params::{Params, bad, invalid_to_build, put_opt};

pub const FIELDS: &[&str] = &[
    "path",
    "dirname",
    "basename",
    "content",
    "source",
    "fragments",
    "state",
    "mode",
    "owner",
    "group",
    "recurse",
    "force",
];

pub const KIND: KindInfo = KindInfo {
    kind: "file",
    fields: FIELDS,
    build,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Exists,
    Absent,
}

/// One entry of `fragments`: a file, or (written with a trailing `/`) a directory whose
/// entries are the fragments.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    /// Absolute and normalised, without a trailing `/`.
    pub path: PathBuf,
    pub is_dir: bool,
}

impl Fragment {
    fn display_path(&self) -> String {
        display(&self.path, self.is_dir)
    }
}

/// The parameters, canonical.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSpec {
    /// Absolute and normalised, without a trailing `/` (except the root itself).
    pub path: PathBuf,
    /// The path was written with a trailing `/`.
    pub is_dir: bool,
    /// `None` leaves an existing file's content alone; `Some("")` empties it.
    pub content: Option<String>,
    /// A local file (or, for a directory with `recurse`, a tree) to copy.
    pub source: Option<PathBuf>,
    /// The content is these files concatenated (empty: not built from fragments).
    pub fragments: Vec<Fragment>,
    pub state: State,
    /// Permission bits (at most 0o7777).
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub recurse: bool,
    pub force: bool,
}

impl FileSpec {
    fn from_params(name: &str, params: Value) -> Result<Self, BuildError> {
        Self::from_params_warned(name, params).map(|(spec, _)| spec)
    }

    /// [`FileSpec::from_params`] and what it accepted but ignores: mgmt takes an absent file
    /// with `content` (and ignores the content), so its graphs load here too, with a warning.
    fn from_params_warned(
        name: &str,
        params: Value,
    ) -> Result<(Self, Vec<BuildWarning>), BuildError> {
        let mut p = Params::new("file", params, FIELDS)?;
        let path = p.string("path")?;
        let dirname = p.string("dirname")?;
        let basename = p.string("basename")?;
        let (field, joined) = join_path(name, path, dirname, basename)?;
        let (path, is_dir) = normalise(&joined).map_err(|m| bad(field, m))?;
        let source = match p.string("source")? {
            None => None,
            Some(source) => Some(normalise(&source).map_err(|m| bad("source", m))?.0),
        };
        let fragments = parse_fragments(p.take("fragments"))?;
        let state = match p.string("state")?.as_deref() {
            None | Some("exists") => State::Exists,
            Some("absent") => State::Absent,
            Some(other) => {
                return Err(bad(
                    "state",
                    format!("unknown state `{other}` (exists or absent)"),
                ));
            }
        };
        // `content: ""` is content (an empty file), unlike every other field's "".
        let mut content = p.text("content")?;
        let mut warnings = Vec::new();
        if state == State::Absent && content.take().is_some() {
            warnings.push(BuildWarning {
                field: "content",
                message: "`content` of an absent file is ignored (the file is removed)".to_string(),
            });
        }
        let spec = FileSpec {
            path,
            is_dir,
            content,
            source,
            fragments,
            state,
            mode: parse_mode(p.take("mode"))?,
            owner: p.ident("owner")?,
            group: p.ident("group")?,
            recurse: p.boolean("recurse")?,
            force: p.boolean("force")?,
        };
        spec.validate().map_err(invalid_to_build)?;
        Ok((spec, warnings))
    }

    fn validate(&self) -> Result<(), ResourceError> {
        if self.content.is_some() && self.source.is_some() {
            return Err(ResourceError::invalid(
                "source",
                "`content` and `source` cannot both be set",
            ));
        }
        if !self.fragments.is_empty() {
            self.validate_fragments()?;
        }
        if self.state == State::Absent {
            if self.content.is_some() || self.source.is_some() {
                return Err(ResourceError::invalid(
                    "state",
                    "an absent file cannot have `content` or `source`",
                ));
            }
            if self.path == Path::new("/") {
                return Err(ResourceError::invalid("path", "refusing to remove `/`"));
            }
        }
        if let Some(mode) = self.mode
            && mode > 0o7777
        {
            return Err(ResourceError::invalid(
                "mode",
                format!("{mode:o} is not a valid mode"),
            ));
        }
        Ok(())
    }

    fn validate_fragments(&self) -> Result<(), ResourceError> {
        if self.content.is_some() || self.source.is_some() {
            return Err(ResourceError::invalid(
                "fragments",
                "`fragments` cannot be combined with `content` or `source`",
            ));
        }
        if self.is_dir {
            return Err(ResourceError::invalid(
                "fragments",
                format!(
                    "{} is a directory (its path ends with `/`): only a file can have `fragments`",
                    self.display_path()
                ),
            ));
        }
        if self.state == State::Absent {
            return Err(ResourceError::invalid(
                "state",
                "an absent file cannot have `fragments`",
            ));
        }
        // The file inside its own content would grow on every check and never converge.
        let parent = self.path.parent();
        if let Some(f) = self.fragments.iter().find(|f| {
            if f.is_dir {
                Some(f.path.as_path()) == parent
            } else {
                f.path == self.path
            }
        }) {
            return Err(ResourceError::invalid(
                "fragments",
                format!(
                    "fragment {} would include the file {} itself",
                    f.display_path(),
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// The path as written canonically: with a trailing `/` for a directory.
    pub fn display_path(&self) -> String {
        display(&self.path, self.is_dir)
    }

    fn to_params(&self) -> Value {
        let mut map = Map::new();
        map.insert("path".into(), self.display_path().into());
        put_opt(&mut map, "content", &self.content);
        put_opt(
            &mut map,
            "source",
            &self
                .source
                .as_ref()
                .map(|s| s.to_string_lossy().into_owned()),
        );
        if !self.fragments.is_empty() {
            let list: Vec<Value> = self
                .fragments
                .iter()
                .map(|f| f.display_path().into())
                .collect();
            map.insert("fragments".into(), list.into());
        }
        let state = match self.state {
            State::Exists => "exists",
            State::Absent => "absent",
        };
        map.insert("state".into(), state.into());
        put_opt(&mut map, "mode", &self.mode.map(|m| format!("{m:04o}")));
        put_opt(&mut map, "owner", &self.owner);
        put_opt(&mut map, "group", &self.group);
        map.insert("recurse".into(), self.recurse.into());
        map.insert("force".into(), self.force.into());
        Value::Object(map)
    }
}

/// A normalised path as written, with a trailing `/` for a directory (but `/` itself).
fn display(path: &Path, is_dir: bool) -> String {
    let text = path.to_string_lossy();
    if is_dir && text != "/" {
        format!("{text}/")
    } else {
        text.into_owned()
    }
}

/// `fragments`: a non-empty list of absolute paths. An empty list is refused rather than taken
/// as unset: a file meant to be built from nothing would otherwise silently keep whatever
/// content it has.
fn parse_fragments(raw: Option<Value>) -> Result<Vec<Fragment>, BuildError> {
    let items = match raw {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(bad(
                "fragments",
                "expected a list of absolute paths (a directory's ends with `/`)",
            ));
        }
    };
    if items.is_empty() {
        return Err(bad(
            "fragments",
            "the list is empty; leave the field out or name at least one path",
        ));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::String(raw) => {
                let (path, is_dir) = normalise(&raw).map_err(|m| bad("fragments", m))?;
                Ok(Fragment { path, is_dir })
            }
            other => Err(bad(
                "fragments",
                format!("expected a path, found `{other}`"),
            )),
        })
        .collect()
}

/// mgmt's path rules: `path` (default: the name), optionally overridden piecewise by `dirname`
/// (must end in `/`) and `basename` (must not contain `/` except a trailing one).
/// Returns the field to blame for a bad result and the joined path.
fn join_path(
    name: &str,
    path: Option<String>,
    dirname: Option<String>,
    basename: Option<String>,
) -> Result<(&'static str, String), BuildError> {
    let (field, base) = match path {
        Some(path) => ("path", path),
        None => ("path", name.to_string()),
    };
    if let Some(d) = &dirname
        && !d.ends_with('/')
    {
        return Err(bad("dirname", format!("`{d}` must end with `/`")));
    }
    if let Some(b) = &basename
        && (b.starts_with('/') || b.trim_end_matches('/').contains('/'))
    {
        return Err(bad(
            "basename",
            format!("`{b}` must be a single path component"),
        ));
    }
    // Split `base` into its directory (with trailing /) and last component (keeping a trailing /).
    let trimmed = base.trim_end_matches('/');
    let cut = trimmed.rfind('/').map_or(0, |i| i + 1);
    let (base_dir, base_name) = (&base[..cut], &base[cut..]);
    Ok(match (dirname, basename) {
        (None, None) => (field, base),
        (Some(d), None) => ("dirname", format!("{d}{base_name}")),
        (None, Some(b)) => ("basename", format!("{base_dir}{b}")),
        (Some(d), Some(b)) => ("dirname", format!("{d}{b}")),
    })
}

/// Absolute, lexically normalised path and whether it was written as a directory.
pub(crate) fn normalise(raw: &str) -> Result<(PathBuf, bool), String> {
    if !raw.starts_with('/') {
        return Err(format!("`{raw}` is not an absolute path"));
    }
    if raw.contains('\0') {
        return Err("a path cannot contain a NUL byte".to_string());
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let is_dir = raw.ends_with('/') || raw.ends_with("/.") || raw.ends_with("/..");
    Ok((PathBuf::from(format!("/{}", parts.join("/"))), is_dir))
}

/// `"0644"`, `"644"` and the integer `644` all mean rw-r--r--: digits are octal, as in mgmt.
pub(crate) fn parse_mode(raw: Option<Value>) -> Result<Option<u32>, BuildError> {
    let text = match raw {
        None => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(other) => {
            return Err(bad(
                "mode",
                format!("expected an octal mode such as \"0644\", found `{other}`"),
            ));
        }
    };
    let digits = text.strip_prefix("0o").unwrap_or(&text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(Some(mode)),
        _ => Err(bad(
            "mode",
            format!("`{text}` is not an octal mode such as \"0644\""),
        )),
    }
}

#[derive(Debug)]
pub struct File {
    name: String,
    meta: Meta,
    spec: Arc<FileSpec>,
    warnings: Vec<BuildWarning>,
}

/// The parameters as `build` reads them (every check included), without building: for a caller
/// that must judge a file resource before it runs, such as the cli deciding whether to collect
/// another host's export. Pure, like `build`.
pub fn parse_spec(name: &str, params: Value) -> Result<FileSpec, BuildError> {
    FileSpec::from_params(name, params)
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    let (spec, warnings) = FileSpec::from_params_warned(name, params)?;
    Ok(Arc::new(File {
        name: name.to_string(),
        meta,
        spec: Arc::new(spec),
        warnings,
    }))
}

impl File {
    pub fn spec(&self) -> &FileSpec {
        &self.spec
    }
}

#[async_trait]
impl Resource for File {
    fn kind(&self) -> &'static str {
        "file"
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn validate(&self) -> Result<(), ResourceError> {
        self.spec.validate()
    }
    fn params(&self) -> Value {
        self.spec.to_params()
    }
    fn build_warnings(&self) -> Vec<BuildWarning> {
        self.warnings.clone()
    }
    fn uids(&self) -> Vec<Uid> {
        vec![Uid {
            kind: "file",
            key: self.spec.path.to_string_lossy().into_owned(),
        }]
    }
    /// The file resources managing its parent directories, and its fragments (a file, or a
    /// directory of fragments): those are in place before the content is built from them.
    fn auto_edges(&self) -> Vec<Uid> {
        let fragments = self.spec.fragments.iter().map(|f| f.path.as_path());
        self.spec
            .path
            .ancestors()
            .skip(1)
            .chain(fragments)
            .map(|p| Uid {
                kind: "file",
                key: p.to_string_lossy().into_owned(),
            })
            .collect()
    }
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        watch::watch(&self.spec, ctx).await
    }
    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let dry = mode == Mode::Check;
        // Most checks find the file in sync (every one after the first). When looking is as
        // cheap as the stats the watch makes on this thread anyway, look here: handing each
        // of 10,000 checks to a blocking thread cost more than the check. A change to make,
        // or an error, goes to the pool, which looks again.
        if ops::quick_to_check(&self.spec) {
            match ops::converge(&self.spec, true) {
                Ok(false) => return Ok(Outcome::InSync),
                Ok(true) if dry => return Ok(Outcome::WouldChange),
                _ => {}
            }
        }
        let spec = self.spec.clone();
        // Changes (fsync) and slow looks block; keep them off the async workers (see `pool`).
        let changed = pool::run(move || ops::converge(&spec, dry))
            .await
            .map_err(|e| ResourceError::failed(format!("file worker failed: {e}")))??;
        Ok(match (changed, mode) {
            (false, _) => Outcome::InSync,
            (true, Mode::Check) => Outcome::WouldChange,
            (true, Mode::Apply) => Outcome::Changed,
        })
    }
}
