//! `pkg`: a Debian package, installed, removed, purged, at its newest or at a version, through
//! dpkg and apt (mgmt's pkg resource, whose field names it keeps; mgmt goes through
//! PackageKit, this talks to apt directly).
//!
//! All pkg vertices with `meta.autogroup` (the default) and equal meta are grouped into one
//! vertex (`pkg[a,b,c]`, see `resource::autogroup`): one check reads dpkg's database once, one
//! apt transaction brings every member to its state, one watch serves them all. A vertex
//! reachable from another through the graph stays apart, so an explicit order between packages
//! is kept.
//!
//! - check: `/var/lib/dpkg/status` (and dpkg's journal) parsed here, no process, except
//!   `apt-cache policy` for `newest` (the candidate) and, when something is to be installed,
//!   for the candidate and known versions. `Mode::Check` runs nothing else: no `apt-get
//!   update` either, so noop never touches apt's lists.
//! - apply: one `apt-get install` (`name`, `name=version`, `name-`, with `--purge` when every
//!   removal is a purge; a mix of plain removals and purges needs a second command, `apt-get
//!   purge`), non-interactive, keeping changed configuration files, waiting up to 60 s for
//!   dpkg's lock. `apt-get update` runs first only when a package or version to install is
//!   unknown to apt. What apt still cannot find is left out of the transaction (the rest is
//!   applied) and reported with apt's own message. Our own transactions run one at a time.
//! - watch: see `watch.rs` (inotify on dpkg's database, settled on its locks).
//!
//! `build` and `validate` do no IO.

mod apt;
mod dpkg;
mod version;
mod watch;

use std::any::Any;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, WatchCtx,
    group_name,
};
use serde_json::{Map, Value};

use self::apt::{Flags, Op, Policy};
use self::dpkg::Presence;
use crate::params::{Params, bad, invalid_to_build};

pub const FIELDS: &[&str] = &[
    "state",
    "allowdowngrade",
    "allowuntrusted",
    "allownonfree",
    "allowunsupported",
];

pub const KIND: KindInfo = KindInfo {
    kind: "pkg",
    fields: FIELDS,
    build,
};

const DPKG_DIR: &str = "/var/lib/dpkg";
const LISTS_DIR: &str = "/var/lib/apt/lists";

/// Our apt transactions, one at a time (two groups would only wait for each other's dpkg
/// lock, and could run out of apt's lock timeout doing so).
static APT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a package should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Installed, in whatever version (the default).
    Installed,
    /// Not installed; configuration files may stay (`uninstalled`, mgmt's word, or `removed`).
    Uninstalled,
    /// Not installed and no configuration files left.
    Purged,
    /// Installed in the candidate version apt offers (or newer).
    Newest,
    /// Installed in exactly this version.
    Version(String),
}

impl State {
    fn parse(text: Option<&str>) -> Result<State, String> {
        Ok(match text {
            None | Some("installed") => State::Installed,
            Some("uninstalled" | "removed") => State::Uninstalled,
            Some("purged") => State::Purged,
            Some("newest") => State::Newest,
            Some("latest") => return Err("`latest` is not a state: did you mean `newest`?".into()),
            Some(v) => {
                version::check(v).map_err(|e| {
                    format!(
                        "`{v}` is not a state (installed, uninstalled, removed, purged, newest) \
                         nor a version: {e}"
                    )
                })?;
                State::Version(v.to_string())
            }
        })
    }

    /// The canonical word (`removed` is written `uninstalled`).
    pub fn as_str(&self) -> &str {
        match self {
            State::Installed => "installed",
            State::Uninstalled => "uninstalled",
            State::Purged => "purged",
            State::Newest => "newest",
            State::Version(v) => v,
        }
    }
}

/// One package's parameters, canonical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkgSpec {
    /// The package: the resource's name, optionally `name:arch`.
    pub package: String,
    pub state: State,
    /// A pinned version may be older than the installed one (`--allow-downgrades`).
    pub allowdowngrade: bool,
    /// Packages from sources apt cannot authenticate may be installed
    /// (`--allow-unauthenticated`; grouped only with others that allow it too).
    pub allowuntrusted: bool,
    /// Accepted for mgmt's graphs; apt has no such filter (it installs what its sources
    /// offer), so this has no effect.
    pub allownonfree: bool,
    /// Accepted for mgmt's graphs; no effect, as `allownonfree`.
    pub allowunsupported: bool,
}

impl PkgSpec {
    fn from_params(name: &str, params: Value) -> Result<PkgSpec, BuildError> {
        let mut p = Params::new("pkg", params, FIELDS)?;
        let state = State::parse(p.string("state")?.as_deref()).map_err(|e| bad("state", e))?;
        let spec = PkgSpec {
            package: name.to_string(),
            state,
            allowdowngrade: p.boolean("allowdowngrade")?,
            allowuntrusted: p.boolean("allowuntrusted")?,
            allownonfree: p.boolean("allownonfree")?,
            allowunsupported: p.boolean("allowunsupported")?,
        };
        spec.validate().map_err(invalid_to_build)?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), ResourceError> {
        check_name(&self.package).map_err(|e| ResourceError::invalid("name", e))?;
        if let State::Version(v) = &self.state {
            version::check(v).map_err(|e| ResourceError::invalid("state", e))?;
        }
        Ok(())
    }

    fn to_params(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("state".into(), self.state.as_str().into());
        for (field, set) in [
            ("allowdowngrade", self.allowdowngrade),
            ("allowuntrusted", self.allowuntrusted),
            ("allownonfree", self.allownonfree),
            ("allowunsupported", self.allowunsupported),
        ] {
            if set {
                map.insert(field.into(), true.into());
            }
        }
        map
    }
}

/// Debian's rule for package names (policy 5.6.1): at least two characters of lowercase
/// letters, digits, `+`, `-` and `.`, starting with a letter or digit; optionally `:arch`.
pub fn check_name(name: &str) -> Result<(), String> {
    let (package, arch) = match name.split_once(':') {
        Some((p, a)) => (p, Some(a)),
        None => (name, None),
    };
    let valid = package.len() >= 2
        && package.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && package
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !valid {
        return Err(format!(
            "`{package}` is not a Debian package name (at least two of a-z, 0-9, `+`, `-`, `.`, \
             starting with a letter or digit)"
        ));
    }
    if let Some(arch) = arch {
        let valid = !arch.is_empty()
            && arch.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && arch
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(format!(
                "`{arch}` in `{name}` is not an architecture (a-z, 0-9 and `-`)"
            ));
        }
    }
    Ok(())
}

/// One pkg vertex: a package, or a group of them (the result of automatic grouping).
#[derive(Debug)]
pub struct Pkg {
    name: String,
    meta: Meta,
    /// In name order; one for a vertex that is not a group.
    members: Vec<PkgSpec>,
    grouped: bool,
    /// apt's lists as our last `apt-get update` left them, and when (see `may_update`).
    updated: Mutex<Option<(ListsState, Instant)>>,
}

/// What apt's lists hold: each list's name, size and modification time, through symlinks (a
/// `file:` source is a symlink apt makes anew at every update).
type ListsState = Vec<(OsString, u64, Option<SystemTime>)>;

fn lists_state(dir: &Path) -> ListsState {
    let mut state: ListsState = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| {
                !matches!(
                    e.file_name().to_str(),
                    Some("lock" | "partial" | "auxfiles")
                )
            })
            .map(|e| {
                let meta = std::fs::metadata(e.path()).ok();
                (
                    e.file_name(),
                    meta.as_ref().map_or(0, |m| m.len()),
                    meta.and_then(|m| m.modified().ok()),
                )
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    state.sort();
    state
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    let spec = PkgSpec::from_params(name, params)?;
    Ok(Arc::new(Pkg {
        name: name.to_string(),
        meta,
        members: vec![spec],
        grouped: false,
        updated: Mutex::default(),
    }))
}

impl Pkg {
    pub fn members(&self) -> &[PkgSpec] {
        &self.members
    }

    fn dirs(&self) -> watch::Dirs {
        let newest = self.members.iter().any(|m| m.state == State::Newest);
        watch::Dirs {
            dpkg: DPKG_DIR.into(),
            lists: newest.then(|| LISTS_DIR.into()),
        }
    }
}

/// What one member needs, and why (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Todo<'a> {
    spec: &'a PkgSpec,
    op: Op,
    why: String,
}

/// What brings each member to its state, given what dpkg has installed and (for `newest`)
/// what apt offers. Pure.
fn plan<'a>(
    members: impl IntoIterator<Item = &'a PkgSpec>,
    db: &dpkg::Db,
    policy: &HashMap<String, Policy>,
) -> Vec<Todo<'a>> {
    let mut todo = Vec::new();
    for spec in members {
        let now = db.presence(&spec.package);
        let need = |op: Op, why: String| Todo { spec, op, why };
        let step = match (&spec.state, &now) {
            (State::Installed, Presence::Installed(_)) => None,
            (State::Installed | State::Newest, Presence::Broken(v)) => {
                Some(need(Op::Install, format!("{v} is not properly installed")))
            }
            (State::Installed | State::Newest, Presence::Absent) => {
                Some(need(Op::Install, "not installed".into()))
            }
            (State::Installed | State::Newest, Presence::ConfigFiles) => Some(need(
                Op::Install,
                "removed, its configuration files left".into(),
            )),
            (State::Newest, Presence::Installed(v)) => {
                let candidate = apt::policy_of(policy, &spec.package)
                    .and_then(|p| p.candidate.as_deref())
                    .filter(|c| version::compare(c, v).is_gt());
                candidate.map(|c| need(Op::Install, format!("{v} installed, {c} available")))
            }
            (State::Version(want), Presence::Installed(v)) if version::compare(v, want).is_eq() => {
                None
            }
            (State::Version(want), Presence::Installed(v) | Presence::Broken(v)) => Some(need(
                Op::Version(want.clone()),
                format!("{v} installed, {want} wanted"),
            )),
            (State::Version(want), Presence::Absent | Presence::ConfigFiles) => {
                Some(need(Op::Version(want.clone()), "not installed".into()))
            }
            (State::Uninstalled, Presence::Absent | Presence::ConfigFiles) => None,
            (State::Uninstalled, Presence::Installed(v) | Presence::Broken(v)) => {
                Some(need(Op::Remove, format!("{v} installed")))
            }
            (State::Purged, Presence::Absent) => None,
            (State::Purged, Presence::ConfigFiles) => {
                Some(need(Op::Purge, "its configuration files are left".into()))
            }
            (State::Purged, Presence::Installed(v) | Presence::Broken(v)) => {
                Some(need(Op::Purge, format!("{v} installed")))
            }
        };
        todo.extend(step);
    }
    todo
}

/// `a (not installed), b=2.0 (1.0 installed, 2.0 wanted), c- (...)`: what a plan does.
fn describe(todo: &[Todo<'_>]) -> String {
    todo.iter()
        .map(|t| {
            let arg = match &t.op {
                Op::Install => format!("install {}", t.spec.package),
                Op::Version(v) => format!("install {}={v}", t.spec.package),
                Op::Remove => format!("remove {}", t.spec.package),
                Op::Purge => format!("purge {}", t.spec.package),
            };
            format!("{arg} ({})", t.why)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn read_db() -> Result<dpkg::Db, ResourceError> {
    tokio::task::spawn_blocking(|| dpkg::read(Path::new(DPKG_DIR)))
        .await
        .map_err(|e| ResourceError::failed(format!("reading dpkg's database: {e}")))?
        .map_err(|e| ResourceError::failed(format!("{e} (pkg needs dpkg and apt)")))
}

/// `apt-cache policy` for `names` (none: no process).
async fn policy(names: &[&str]) -> Result<HashMap<String, Policy>, ResourceError> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let out = apt::run(&apt::policy_command(names)).await?;
    if !out.success {
        return Err(ResourceError::failed(format!(
            "apt-cache policy failed: {}",
            apt::apt_message(&out)
        )));
    }
    Ok(apt::parse_policy(&out.stdout))
}

/// Whether apt knows what `todo` installs (a candidate, or the pinned version); removals
/// need nothing from apt's lists.
fn unknown_to_apt(todo: &Todo<'_>, policy: &HashMap<String, Policy>) -> bool {
    let known = apt::policy_of(policy, &todo.spec.package);
    match &todo.op {
        Op::Install => known.and_then(|p| p.candidate.as_ref()).is_none(),
        Op::Version(v) => known.and_then(|p| apt::known_version(p, v)).is_none(),
        Op::Remove | Op::Purge => false,
    }
}

/// Runs one apt command; its failure is apt's own message.
async fn run_apt(argv: &[String]) -> Result<(), ResourceError> {
    tracing::info!("running {}", argv.join(" "));
    let out = apt::run(argv).await?;
    for line in out.stdout.lines() {
        tracing::debug!("apt: {line}");
    }
    if out.success {
        return Ok(());
    }
    Err(ResourceError::failed(format!(
        "`{}` failed (exit {}): {}",
        argv[..2].join(" "),
        out.code.map_or("by a signal".into(), |c| c.to_string()),
        apt::apt_message(&out)
    )))
}

impl Pkg {
    /// Whether `apt-get update` may run: not when apt's lists are as our last update left
    /// them, or every event that update causes (and the failure that follows when the package
    /// is still missing) would lead to another update, forever. A retry after `meta.delay`
    /// may update again; so may anything after someone else changed the lists.
    fn may_update(&self) -> bool {
        let memo = self.updated.lock().expect("pkg update memo");
        match &*memo {
            None => true,
            Some((state, at)) => {
                *state != lists_state(Path::new(LISTS_DIR))
                    || (!self.meta.delay.is_zero() && at.elapsed() >= self.meta.delay)
            }
        }
    }

    /// Brings the members in `todo` to their states: one transaction (two with purges and
    /// plain removals mixed); what apt cannot install is left out and reported.
    async fn apply(
        &self,
        todo: Vec<Todo<'_>>,
        mut known: HashMap<String, Policy>,
    ) -> Result<Outcome, ResourceError> {
        let installs = |todo: &[Todo<'_>], known: &HashMap<String, Policy>| -> Vec<String> {
            todo.iter()
                .filter(|t| matches!(t.op, Op::Install | Op::Version(_)))
                .map(|t| t.spec.package.clone())
                .filter(|p| !known.contains_key(p))
                .collect()
        };
        let missing = installs(&todo, &known);
        known.extend(policy(&missing.iter().map(String::as_str).collect::<Vec<_>>()).await?);
        if todo.iter().any(|t| unknown_to_apt(t, &known)) && self.may_update() {
            // Only now: apt's lists may be older than the package or version wanted.
            let result = run_apt(&apt::update_command()).await;
            *self.updated.lock().expect("pkg update memo") =
                Some((lists_state(Path::new(LISTS_DIR)), Instant::now()));
            result?;
            let all: Vec<String> = todo
                .iter()
                .filter(|t| matches!(t.op, Op::Install | Op::Version(_)))
                .map(|t| t.spec.package.clone())
                .collect();
            known.extend(policy(&all.iter().map(String::as_str).collect::<Vec<_>>()).await?);
        }

        let mut problems = Vec::new();
        let mut unknown = Vec::new();
        let mut ops = Vec::new();
        let mut flags = Flags {
            allow_unauthenticated: self.members.iter().any(|m| m.allowuntrusted),
            allow_downgrades: false,
        };
        let mut applied = Vec::new();
        for t in &todo {
            let package = &t.spec.package;
            match &t.op {
                Op::Install if unknown_to_apt(t, &known) => unknown.push(package.clone()),
                Op::Version(v) if unknown_to_apt(t, &known) => {
                    unknown.push(format!("{package}={v}"))
                }
                Op::Version(v) => {
                    let policy = apt::policy_of(&known, package);
                    let exact = policy
                        .and_then(|p| apt::known_version(p, v))
                        .unwrap_or(v)
                        .to_string();
                    let installed = policy.and_then(|p| p.installed.as_deref());
                    if let Some(installed) = installed
                        && version::compare(&exact, installed).is_lt()
                    {
                        if !t.spec.allowdowngrade {
                            problems.push(format!(
                                "{package}: {exact} is older than the installed {installed} \
                                 (set `allowdowngrade: true` to downgrade)"
                            ));
                            continue;
                        }
                        flags.allow_downgrades = true;
                    }
                    ops.push((package.clone(), Op::Version(exact)));
                    applied.push(t.spec);
                }
                op => {
                    ops.push((package.clone(), op.clone()));
                    applied.push(t.spec);
                }
            }
        }
        if !unknown.is_empty() {
            // apt's own words for what it cannot find (a dry run, changing nothing).
            let out = apt::run(&apt::simulate_command(&unknown)).await?;
            let why = if out.success {
                "apt has no candidate to install".to_string()
            } else {
                apt::apt_message(&out)
            };
            problems.push(format!("cannot install {}: {why}", unknown.join(" ")));
        }

        let changed = !ops.is_empty();
        let result = async {
            for argv in apt::commands(&ops, flags) {
                run_apt(&argv).await?;
            }
            // apt succeeding is not enough: each member must now be where it should.
            let db = read_db().await?;
            let left = plan(applied, &db, &known);
            if !left.is_empty() {
                return Err(ResourceError::failed(format!(
                    "apt succeeded but these are still to do: {}",
                    describe(&left)
                )));
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            problems.insert(0, e.to_string());
        }
        match (problems.is_empty(), changed) {
            (true, true) => Ok(Outcome::Changed),
            (true, false) => Ok(Outcome::InSync),
            (false, _) => Err(ResourceError::failed(problems.join("; "))),
        }
    }
}

#[async_trait]
impl Resource for Pkg {
    fn kind(&self) -> &'static str {
        "pkg"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn validate(&self) -> Result<(), ResourceError> {
        self.members.iter().try_for_each(PkgSpec::validate)
    }

    fn params(&self) -> Value {
        if !self.grouped {
            return Value::Object(self.members[0].to_params());
        }
        let members = self
            .members
            .iter()
            .map(|m| {
                let mut map = Map::new();
                map.insert("name".into(), m.package.clone().into());
                map.extend(m.to_params());
                Value::Object(map)
            })
            .collect();
        serde_json::json!({ "members": Value::Array(members) })
    }

    /// Every pkg groups with every other, except that untrusted sources are allowed for a
    /// whole transaction: those that allow them group apart.
    fn group_key(&self) -> Option<String> {
        if self.grouped {
            return None;
        }
        Some(if self.members[0].allowuntrusted {
            "pkg allowuntrusted".into()
        } else {
            "pkg".into()
        })
    }

    fn group(&self, members: &[Arc<dyn Resource>]) -> Option<Arc<dyn Resource>> {
        let mut specs = Vec::new();
        for m in members {
            let pkg = (&**m as &dyn Any).downcast_ref::<Pkg>()?;
            specs.extend(pkg.members.iter().cloned());
        }
        Some(Arc::new(Pkg {
            name: group_name(members.iter().map(|m| m.name())),
            meta: self.meta.clone(),
            members: specs,
            grouped: true,
            updated: Mutex::default(),
        }))
    }

    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        watch::watch(&self.dirs(), ctx, |_| {}).await
    }

    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        // Held for the whole apply, so the database read below is not overtaken by another
        // group's transaction.
        let _turn = match mode {
            Mode::Apply => Some(APT.lock().await),
            Mode::Check => None,
        };
        let db = read_db().await?;
        let newest: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.state == State::Newest)
            .map(|m| m.package.as_str())
            .collect();
        let known = policy(&newest).await?;
        let todo = plan(&self.members, &db, &known);
        if todo.is_empty() {
            return Ok(Outcome::InSync);
        }
        if mode == Mode::Check {
            tracing::info!("would {}", describe(&todo));
            return Ok(Outcome::WouldChange);
        }
        tracing::info!("{}", describe(&todo));
        self.apply(todo, known).await
    }
}

#[cfg(test)]
mod tests;
