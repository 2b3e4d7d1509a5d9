//! `mount`: a filesystem mounted (or not) at a mount point, and its `/etc/fstab` entry kept in
//! sync (mgmt's mount resource: the name is the mount point; `state`, `device`, `type`,
//! `options`, `freq`, `passno`).
//!
//! `state` is `mounted` (mgmt's `exists` is the same), `unmounted` (the fstab entry is kept,
//! the filesystem is not mounted) or `absent` (not mounted and no fstab entry). This module
//! holds the parameters; `table` parses mountinfo and fstab and compares options, `ops`
//! converges, `watch` reports changes. Building never does IO.

pub(crate) mod ops;
pub(crate) mod table;
mod watch;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, Uid, WatchCtx,
};
use serde_json::{Map, Value};

use crate::params::{Params, bad, invalid_to_build};

pub const FIELDS: &[&str] = &["state", "device", "type", "options", "freq", "passno"];

pub const KIND: KindInfo = KindInfo {
    kind: "mount",
    fields: FIELDS,
    build,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Mounted,
    Unmounted,
    Absent,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Mounted => "mounted",
            State::Unmounted => "unmounted",
            State::Absent => "absent",
        }
    }
}

/// One mount option: `key`, or `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Opt {
    pub key: String,
    pub value: Option<String>,
}

impl Opt {
    pub fn text(&self) -> String {
        match &self.value {
            Some(v) => format!("{}={v}", self.key),
            None => self.key.clone(),
        }
    }
}

/// The parameters, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct MountSpec {
    /// Absolute, without a trailing `/`, `.` or `..`.
    pub mount_point: String,
    pub state: State,
    /// A path, `UUID=`, `LABEL=`, `PARTUUID=`, `PARTLABEL=`, or a word (`tmpfs`); set unless
    /// `absent`.
    pub device: String,
    /// Set unless `absent`.
    pub fstype: String,
    /// In the order written (a map in key order); empty: `defaults`.
    pub options: Vec<Opt>,
    pub freq: u32,
    pub passno: u32,
}

/// Options mount(8) takes that are not a filesystem to keep mounted.
const REFUSED: &[&str] = &[
    "remount",
    "bind",
    "rbind",
    "move",
    "make-private",
    "make-shared",
];

fn check_path(what: &str, path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{what} `{path}` must be an absolute path"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!(
            "{what} {path:?} must not contain newlines or control characters"
        ));
    }
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    if trimmed
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{what} `{path}` must be normalised (no `//`, `.` or `..`)"
        ));
    }
    Ok(trimmed.to_string())
}

fn check_device(device: &str) -> Result<(), String> {
    if device.starts_with('/') {
        return check_path("device", device).map(|_| ());
    }
    if let Some((tag, value)) = device.split_once('=') {
        if !matches!(tag, "UUID" | "LABEL" | "PARTUUID" | "PARTLABEL") {
            return Err(format!(
                "device `{device}`: write a path, UUID=, LABEL=, PARTUUID= or PARTLABEL="
            ));
        }
        if value.is_empty() || value.chars().any(|c| c.is_control() || c == ',') {
            return Err(format!(
                "device {device:?}: the {tag} must be non-empty, without commas or control characters"
            ));
        }
        return Ok(());
    }
    if device.is_empty()
        || !device
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(format!(
            "device {device:?}: write an absolute path, UUID=, LABEL=, or a plain word for a virtual filesystem (`tmpfs`)"
        ));
    }
    Ok(())
}

fn check_type(fstype: &str) -> Result<(), String> {
    let ok = fstype.len() <= 64
        && fstype.starts_with(|c: char| c.is_ascii_alphanumeric())
        && fstype
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "type {fstype:?} must be a simple word such as `ext4` (letters, digits, `_.+-`)"
        ))
    }
}

fn check_option(o: &Opt) -> Result<(), String> {
    let key_ok = !o.key.is_empty()
        && o.key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-:@".contains(c));
    if !key_ok {
        return Err(format!(
            "option {:?}: the name must be letters, digits and `_.+-:@`",
            o.key
        ));
    }
    if let Some(v) = &o.value
        && (v.is_empty()
            || v.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ','))
    {
        return Err(format!(
            "option {:?}: the value must be non-empty, without whitespace or commas",
            o.text()
        ));
    }
    if REFUSED.contains(&o.key.as_str()) {
        return Err(format!(
            "option `{}` is not supported (mount manages one mounted filesystem)",
            o.key
        ));
    }
    Ok(())
}

/// `options`: mgmt's map (`{noatime: "", commit: "30"}`), or a list (`[noatime, commit=30]`).
fn parse_options(v: Option<Value>) -> Result<Vec<Opt>, BuildError> {
    let scalar = |v: Value| match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    };
    let opts: Vec<Opt> = match v {
        None => Vec::new(),
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(key, v)| {
                let v = scalar(v).ok_or_else(|| {
                    bad("options", format!("the value of `{key}` must be a string"))
                })?;
                Ok(Opt {
                    key,
                    value: Some(v).filter(|v| !v.is_empty()),
                })
            })
            .collect::<Result<_, BuildError>>()?,
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| {
                let s = scalar(v).ok_or_else(|| bad("options", "expected a list of strings"))?;
                Ok(match s.split_once('=') {
                    Some((k, v)) => Opt {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                    },
                    None => Opt {
                        key: s,
                        value: None,
                    },
                })
            })
            .collect::<Result<_, BuildError>>()?,
        Some(_) => {
            return Err(bad(
                "options",
                "expected a map (`{noatime: \"\"}`) or a list (`[noatime]`)",
            ));
        }
    };
    for o in &opts {
        check_option(o).map_err(|m| bad("options", m))?;
    }
    // `defaults` alone is no options (fstab writes it for none).
    Ok(
        if opts.len() == 1 && opts[0].key == "defaults" && opts[0].value.is_none() {
            Vec::new()
        } else {
            opts
        },
    )
}

impl MountSpec {
    pub fn from_params(name: &str, params: Value) -> Result<MountSpec, BuildError> {
        let mut p = Params::new("mount", params, FIELDS)?;
        let mount_point = check_path("mount point", name).map_err(|m| BuildError {
            field: None,
            message: format!("the name of a mount is its mount point: {m}"),
        })?;
        if mount_point == "/" {
            return Err(BuildError {
                field: None,
                message: "the name of a mount is its mount point: `/` cannot be managed".into(),
            });
        }
        let state = match p.string("state")?.as_deref() {
            None | Some("mounted") | Some("exists") => State::Mounted,
            Some("unmounted") => State::Unmounted,
            Some("absent") => State::Absent,
            Some(other) => {
                return Err(bad(
                    "state",
                    format!("unknown state `{other}` (mounted, unmounted or absent)"),
                ));
            }
        };
        let device = p.string("device")?.unwrap_or_default();
        let fstype = p.string("type")?.unwrap_or_default();
        let options = parse_options(p.take("options"))?;
        let num = |p: &mut Params, f: &str| -> Result<u32, BuildError> {
            let n = p.uint(f)?.unwrap_or(0);
            u32::try_from(n).map_err(|_| bad(f, format!("{n} is out of range")))
        };
        let freq = num(&mut p, "freq")?;
        let passno = num(&mut p, "passno")?;
        let spec = MountSpec {
            mount_point,
            state,
            device,
            fstype,
            options,
            freq,
            passno,
        };
        spec.validate().map_err(invalid_to_build)?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), ResourceError> {
        if self.state != State::Absent {
            if self.device.is_empty() {
                return Err(ResourceError::invalid(
                    "device",
                    "a device is needed (unless `state: absent`)",
                ));
            }
            if self.fstype.is_empty() {
                return Err(ResourceError::invalid(
                    "type",
                    "a filesystem type is needed (unless `state: absent`)",
                ));
            }
        }
        if !self.device.is_empty() {
            check_device(&self.device).map_err(|m| ResourceError::invalid("device", m))?;
        }
        if !self.fstype.is_empty() {
            check_type(&self.fstype).map_err(|m| ResourceError::invalid("type", m))?;
        }
        for o in &self.options {
            check_option(o).map_err(|m| ResourceError::invalid("options", m))?;
        }
        Ok(())
    }

    pub fn to_params(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("state".into(), self.state.as_str().into());
        if !self.device.is_empty() {
            m.insert("device".into(), self.device.clone().into());
        }
        if !self.fstype.is_empty() {
            m.insert("type".into(), self.fstype.clone().into());
        }
        m.insert(
            "options".into(),
            self.options
                .iter()
                .map(Opt::text)
                .collect::<Vec<_>>()
                .into(),
        );
        m.insert("freq".into(), self.freq.into());
        m.insert("passno".into(), self.passno.into());
        m
    }

    /// The fstab entry this asks for (`None`: none, for `absent`).
    pub(crate) fn fstab_entry(&self) -> Option<table::FstabEntry> {
        (self.state != State::Absent).then(|| table::FstabEntry {
            device: self.device.clone(),
            dir: self.mount_point.clone(),
            fstype: self.fstype.clone(),
            options: self.options.clone(),
            freq: self.freq,
            passno: self.passno,
        })
    }
}

/// Where the machine's state is: the real files, or a test's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Env {
    pub fstab: PathBuf,
    pub mountinfo: PathBuf,
    /// Present while systemd runs (`systemctl daemon-reload` after an fstab change).
    pub systemd_marker: PathBuf,
}

impl Default for Env {
    fn default() -> Env {
        Env {
            fstab: PathBuf::from("/etc/fstab"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            systemd_marker: PathBuf::from("/run/systemd/system"),
        }
    }
}

#[derive(Debug)]
pub struct MountRes {
    name: String,
    meta: Meta,
    spec: Arc<MountSpec>,
    env: Arc<Env>,
}

impl MountRes {
    pub fn spec(&self) -> &MountSpec {
        &self.spec
    }

    #[cfg(test)]
    pub(crate) fn with_env(mut self, env: Env) -> MountRes {
        self.env = Arc::new(env);
        self
    }
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    Ok(Arc::new(new(name, params, meta)?))
}

pub(crate) fn new(name: &str, params: Value, meta: Meta) -> Result<MountRes, BuildError> {
    Ok(MountRes {
        name: name.to_string(),
        meta,
        spec: Arc::new(MountSpec::from_params(name, params)?),
        env: Arc::new(Env::default()),
    })
}

fn file_uid(path: &Path) -> Uid {
    Uid {
        kind: "file",
        key: path.to_string_lossy().into_owned(),
    }
}

#[async_trait]
impl Resource for MountRes {
    fn kind(&self) -> &'static str {
        "mount"
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
        Value::Object(self.spec.to_params())
    }
    /// The mount point, as `file` names it: files under it order after the mount.
    fn uids(&self) -> Vec<Uid> {
        vec![file_uid(Path::new(&self.spec.mount_point))]
    }
    /// The `file` resources of the mount point directory and those above it, and of an image
    /// file (or device node) named by path: those are in place first.
    fn auto_edges(&self) -> Vec<Uid> {
        let mut out: Vec<Uid> = Path::new(&self.spec.mount_point)
            .ancestors()
            .map(file_uid)
            .collect();
        if self.spec.device.starts_with('/') {
            out.push(file_uid(Path::new(&self.spec.device)));
        }
        out
    }
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        watch::watch(&self.env, ctx).await
    }
    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let (spec, env) = (self.spec.clone(), self.env.clone());
        let changed =
            crate::line::blocking(move || ops::converge(&spec, &env, mode == Mode::Check)).await?;
        Ok(crate::line::outcome(changed, mode))
    }
}
