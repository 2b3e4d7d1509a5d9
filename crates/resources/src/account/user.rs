//! `user`: a local user account (mgmt's user resource and its field names, plus `comment`,
//! `password`, `system`, `append` and `remove`).
//!
//! - check: `/etc/passwd` and `/etc/group` (and `/etc/shadow` when `password` is managed)
//!   parsed in-process; only the fields given are compared.
//! - apply: a missing user is made with one `useradd` (home created from `/etc/skel` with
//!   `-m`, except for a system user without `homedir`); an existing one gets one `usermod`
//!   with every flag that differs; `userdel` removes one (its home stays unless `remove:
//!   true`). The password hash goes through `chpasswd -e` on its stdin, never on a command
//!   line, and is never logged. Groups named are checked to exist before anything runs.
//! - watch: `watch.rs`.

use std::sync::Arc;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, Uid, WatchCtx,
};
use serde_json::{Map, Value};

use super::db::{Db, etc};
use super::{State, TOOLS, check_name, check_path, check_text, names, read_db, run, watch};
use crate::params::{Params, bad, invalid_to_build, put_opt};

pub const FIELDS: &[&str] = &[
    "state",
    "uid",
    "gid",
    "group",
    "groups",
    "append",
    "homedir",
    "home",
    "shell",
    "comment",
    "password",
    "system",
    "allowduplicateuid",
    "remove",
];

pub const KIND: KindInfo = KindInfo {
    kind: "user",
    fields: FIELDS,
    build,
};

/// The primary group: by number or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Primary {
    Gid(u32),
    Name(String),
}

/// An already-crypted password hash; shown as `<hash>` by `Debug`, so that no log has it.
#[derive(Clone, PartialEq, Eq)]
pub struct Hash(String);

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hash>")
    }
}

impl Hash {
    /// A crypt(3) hash (`$id$...`, or the 13 characters of DES), possibly locked with leading
    /// `!`, or a bare `!`/`*` (no password login). The error never repeats the value: it may be
    /// a password typed where its hash belongs.
    fn parse(text: &str) -> Result<Hash, String> {
        let alphabet = |c: char| c.is_ascii_alphanumeric() || "./".contains(c);
        let body = text.trim_start_matches('!');
        let valid = body.is_empty()
            || body == "*"
            || (body.starts_with('$')
                && body.len() > 3
                && body.chars().all(|c| alphabet(c) || "$=,+-".contains(c)))
            || (body.len() == 13 && body.chars().all(alphabet));
        if valid {
            Ok(Hash(text.to_string()))
        } else {
            Err(
                "expected an already-crypted hash (`$y$...`, `$6$...`, as `mkpasswd` or \
                 `openssl passwd -6` make), or `!` to lock the password; the value is not \
                 shown"
                    .into(),
            )
        }
    }
}

/// One user's parameters, canonical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub state: State,
    pub uid: Option<u32>,
    pub primary: Option<Primary>,
    /// Supplementary groups, sorted; `None`: not managed.
    pub groups: Option<Vec<String>>,
    /// Only make sure of membership in `groups`, leaving other groups alone.
    pub append: bool,
    pub homedir: Option<String>,
    pub shell: Option<String>,
    pub comment: Option<String>,
    pub password: Option<Hash>,
    /// Made as a system account (only when created).
    pub system: bool,
    pub allowduplicateuid: bool,
    /// `state: absent` removes the home directory and mail spool too (`userdel -r`).
    pub remove: bool,
}

impl UserSpec {
    pub fn from_params(name: &str, params: Value) -> Result<UserSpec, BuildError> {
        let mut p = Params::new("user", params, FIELDS)?;
        let state = State::parse("state", p.string("state")?.as_deref())?;
        let uid = id(&mut p, "uid")?;
        let gid = id(&mut p, "gid")?;
        let group = p.ident("group")?;
        let primary = match (gid, group) {
            (Some(_), Some(_)) => {
                return Err(bad("group", "give either `gid` or `group`, not both"));
            }
            (Some(gid), None) => Some(Primary::Gid(gid)),
            (None, Some(g)) => Some(match g.parse::<u32>() {
                Ok(gid) => Primary::Gid(gid),
                Err(_) => Primary::Name(g),
            }),
            (None, None) => None,
        };
        let groups = names("groups", "group", p.take("groups"))?;
        let append = p.boolean("append")?;
        if append && groups.is_none() {
            return Err(bad("append", "`append` needs `groups`"));
        }
        let homedir = match (p.string("homedir")?, p.string("home")?) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "home",
                    "`home` is another name for `homedir`: give one",
                ));
            }
            (Some(h), None) => Some(check_path("home", &h).map_err(|e| bad("homedir", e))?),
            (None, Some(h)) => Some(check_path("home", &h).map_err(|e| bad("home", e))?),
            (None, None) => None,
        };
        let password = p
            .string("password")?
            .map(|h| Hash::parse(&h).map_err(|e| bad("password", e)))
            .transpose()?;
        let spec = UserSpec {
            name: name.to_string(),
            state,
            uid,
            primary,
            groups,
            append,
            homedir,
            shell: p.string("shell")?,
            comment: p.text("comment")?,
            password,
            system: p.boolean("system")?,
            allowduplicateuid: p.boolean("allowduplicateuid")?,
            remove: p.boolean("remove")?,
        };
        spec.validate().map_err(invalid_to_build)?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), ResourceError> {
        check_name("user", &self.name).map_err(|e| ResourceError::invalid("name", e))?;
        if let Some(Primary::Name(g)) = &self.primary {
            check_name("group", g).map_err(|e| ResourceError::invalid("group", e))?;
            if self.groups.as_ref().is_some_and(|gs| gs.contains(g)) {
                return Err(ResourceError::invalid(
                    "groups",
                    format!("the primary group `{g}` must not be listed in `groups` too"),
                ));
            }
        }
        for g in self.groups.iter().flatten() {
            check_name("group", g).map_err(|e| ResourceError::invalid("groups", e))?;
        }
        if let Some(shell) = &self.shell {
            check_path("shell", shell).map_err(|e| ResourceError::invalid("shell", e))?;
        }
        if let Some(c) = &self.comment {
            check_text("comment", c).map_err(|e| ResourceError::invalid("comment", e))?;
        }
        Ok(())
    }

    pub fn to_params(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("state".into(), self.state.as_str().into());
        put_opt(&mut map, "uid", &self.uid);
        match &self.primary {
            Some(Primary::Gid(gid)) => {
                map.insert("gid".into(), (*gid).into());
            }
            Some(Primary::Name(g)) => {
                map.insert("group".into(), g.clone().into());
            }
            None => {}
        }
        put_opt(&mut map, "groups", &self.groups);
        put_opt(&mut map, "homedir", &self.homedir);
        put_opt(&mut map, "shell", &self.shell);
        put_opt(&mut map, "comment", &self.comment);
        put_opt(
            &mut map,
            "password",
            &self.password.as_ref().map(|h| h.0.clone()),
        );
        for (field, set) in [
            ("append", self.append),
            ("system", self.system),
            ("allowduplicateuid", self.allowduplicateuid),
            ("remove", self.remove),
        ] {
            if set {
                map.insert(field.into(), true.into());
            }
        }
        map
    }
}

/// A numeric id (a number or a numeric string), at most `u32::MAX`.
fn id(p: &mut Params, field: &str) -> Result<Option<u32>, BuildError> {
    p.uint(field)?
        .map(|n| u32::try_from(n).map_err(|_| bad(field, format!("{n} is not a valid id"))))
        .transpose()
}

/// What brings the user to its state. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The one account command (useradd, usermod or userdel), if any.
    pub argv: Option<Vec<String>>,
    /// Whether the password hash is to be set (with `chpasswd -e`).
    pub password: bool,
    /// What differs, for the log (never the hash).
    pub why: Vec<String>,
    /// Groups named that do not exist (nothing may run while there are any).
    pub missing_groups: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.argv.is_none() && !self.password
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn plan(spec: &UserSpec, db: &Db) -> Result<Plan, String> {
    let now = db.user(&spec.name);
    let mut plan = Plan {
        argv: None,
        password: false,
        why: Vec::new(),
        missing_groups: Vec::new(),
    };
    if spec.state == State::Absent {
        if now.is_some() {
            let mut argv = strings(&["userdel"]);
            if spec.remove {
                argv.push("--remove".into());
            }
            argv.extend(strings(&["--", &spec.name]));
            plan.argv = Some(argv);
            plan.why.push("exists".into());
        }
        return Ok(plan);
    }
    if let Some(uid) = spec.uid
        && !spec.allowduplicateuid
        && let Some(other) = db.user_by_uid(uid).filter(|u| u.name != spec.name)
    {
        return Err(format!(
            "uid {uid} belongs to `{}` (set `allowduplicateuid: true` to share it)",
            other.name
        ));
    }
    for g in spec.groups.iter().flatten().chain(match &spec.primary {
        Some(Primary::Name(g)) => Some(g),
        _ => None,
    }) {
        if db.group(g).is_none() {
            plan.missing_groups.push(g.clone());
        }
    }
    let mut flags: Vec<String> = Vec::new();
    let mut flag = |f: &str, v: String| {
        flags.push(f.into());
        flags.push(v);
    };
    let hash_now = db.hash(&spec.name);
    match now {
        None => {
            plan.why.push("does not exist".into());
            if let Some(uid) = spec.uid {
                flag("--uid", uid.to_string());
            }
            match &spec.primary {
                Some(Primary::Gid(gid)) => flag("--gid", gid.to_string()),
                Some(Primary::Name(g)) => flag("--gid", g.clone()),
                None => {}
            }
            if let Some(gs) = spec.groups.as_ref().filter(|gs| !gs.is_empty()) {
                flag("--groups", gs.join(","));
            }
            if let Some(h) = &spec.homedir {
                flag("--home-dir", h.clone());
            }
            if let Some(s) = &spec.shell {
                flag("--shell", s.clone());
            }
            if let Some(c) = &spec.comment {
                flag("--comment", c.clone());
            }
            let mut argv = strings(&["useradd"]);
            argv.append(&mut flags);
            if spec.allowduplicateuid && spec.uid.is_some() {
                argv.push("--non-unique".into());
            }
            if spec.system {
                argv.push("--system".into());
            }
            if !spec.system || spec.homedir.is_some() {
                argv.push("--create-home".into());
            }
            argv.extend(strings(&["--", &spec.name]));
            plan.argv = Some(argv);
            plan.password = spec.password.is_some();
        }
        Some(u) => {
            if let Some(uid) = spec.uid.filter(|uid| *uid != u.uid) {
                plan.why.push(format!("uid {} -> {uid}", u.uid));
                flag("--uid", uid.to_string());
            }
            match &spec.primary {
                Some(Primary::Gid(gid)) if *gid != u.gid => {
                    plan.why.push(format!("gid {} -> {gid}", u.gid));
                    flag("--gid", gid.to_string());
                }
                Some(Primary::Name(g)) if db.group(g).is_none_or(|e| e.gid != u.gid) => {
                    plan.why.push(format!("group gid {} -> {g}", u.gid));
                    flag("--gid", g.clone());
                }
                _ => {}
            }
            if let Some(want) = &spec.groups {
                let primary = db.group_by_gid(u.gid).map(|g| g.name.as_str());
                let have: Vec<String> = db
                    .member_of(&spec.name)
                    .into_iter()
                    .filter(|g| Some(g.as_str()) != primary)
                    .collect();
                if spec.append {
                    let missing: Vec<String> =
                        want.iter().filter(|g| !have.contains(g)).cloned().collect();
                    if !missing.is_empty() {
                        plan.why
                            .push(format!("not in groups {}", missing.join(",")));
                        flags.push("--append".into());
                        flags.push("--groups".into());
                        flags.push(missing.join(","));
                    }
                } else if *want != have {
                    plan.why.push(format!(
                        "groups [{}] -> [{}]",
                        have.join(","),
                        want.join(",")
                    ));
                    flags.push("--groups".into());
                    flags.push(want.join(","));
                }
            }
            let mut field = |what: &str, f: &str, want: &Option<String>, have: &str| {
                if let Some(want) = want.as_ref().filter(|w| *w != have) {
                    plan.why.push(format!("{what} {have:?} -> {want:?}"));
                    flags.push(f.into());
                    flags.push(want.clone());
                }
            };
            let home = check_path("home", &u.home).unwrap_or_else(|_| u.home.clone());
            field("homedir", "--home", &spec.homedir, &home);
            field("shell", "--shell", &spec.shell, &u.shell);
            field("comment", "--comment", &spec.comment, &u.gecos);
            if !flags.is_empty() {
                let mut argv = strings(&["usermod"]);
                if spec.allowduplicateuid && flags.iter().any(|f| f == "--uid") {
                    argv.push("--non-unique".into());
                }
                argv.append(&mut flags);
                argv.extend(strings(&["--", &spec.name]));
                plan.argv = Some(argv);
            }
            if let Some(want) = &spec.password
                && hash_now != Some(want.0.as_str())
            {
                plan.why.push("password hash".into());
                plan.password = true;
            }
        }
    }
    Ok(plan)
}

/// One user vertex.
#[derive(Debug)]
pub struct User {
    meta: Meta,
    spec: UserSpec,
}

impl User {
    pub fn spec(&self) -> &UserSpec {
        &self.spec
    }
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    let spec = UserSpec::from_params(name, params)?;
    Ok(Arc::new(User { meta, spec }))
}

impl User {
    async fn plan(&self) -> Result<Plan, ResourceError> {
        let with_shadow = self.spec.password.is_some() && self.spec.state == State::Exists;
        let db = read_db(with_shadow).await?;
        plan(&self.spec, &db).map_err(ResourceError::failed)
    }
}

#[async_trait]
impl Resource for User {
    fn kind(&self) -> &'static str {
        "user"
    }

    fn name(&self) -> &str {
        &self.spec.name
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

    /// The user by name (and uid); a user being removed also stands for its membership of
    /// each group it names, so that a group being removed waits for it.
    fn uids(&self) -> Vec<Uid> {
        let mut uids = vec![Uid {
            kind: "user",
            key: self.spec.name.clone(),
        }];
        if let Some(uid) = self.spec.uid {
            uids.push(Uid {
                kind: "user",
                key: format!("uid:{uid}"),
            });
        }
        if self.spec.state == State::Absent {
            let primary = match &self.spec.primary {
                Some(Primary::Name(g)) => Some(g),
                _ => None,
            };
            for g in self.spec.groups.iter().flatten().chain(primary) {
                uids.push(Uid {
                    kind: "user",
                    key: format!("member:{g}"),
                });
            }
        }
        uids
    }

    /// An existing user depends on the group resources of the groups it names.
    fn auto_edges(&self) -> Vec<Uid> {
        if self.spec.state == State::Absent {
            return Vec::new();
        }
        let mut out: Vec<Uid> = match &self.spec.primary {
            Some(Primary::Gid(gid)) => vec![Uid {
                kind: "group",
                key: format!("gid:{gid}"),
            }],
            Some(Primary::Name(g)) => vec![Uid {
                kind: "group",
                key: g.clone(),
            }],
            None => Vec::new(),
        };
        out.extend(self.spec.groups.iter().flatten().map(|g| Uid {
            kind: "group",
            key: g.clone(),
        }));
        out
    }

    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        watch::watch(&etc(), ctx, |_| {}).await
    }

    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let _turn = match mode {
            Mode::Apply => Some(TOOLS.lock().await),
            Mode::Check => None,
        };
        let todo = self.plan().await?;
        if todo.is_empty() {
            return Ok(Outcome::InSync);
        }
        let why = todo.why.join(", ");
        if mode == Mode::Check {
            tracing::info!("would change user {}: {why}", self.spec.name);
            return Ok(Outcome::WouldChange);
        }
        if !todo.missing_groups.is_empty() {
            return Err(ResourceError::failed(format!(
                "user {}: no such group: {} (nothing changed; a `group` resource for it is \
                 ordered before this user)",
                self.spec.name,
                todo.missing_groups.join(", ")
            )));
        }
        tracing::info!("user {}: {why}", self.spec.name);
        if let Some(argv) = &todo.argv {
            run(argv, None).await?;
        }
        if todo.password
            && let Some(hash) = &self.spec.password
        {
            let line = format!("{}:{}\n", self.spec.name, hash.0);
            run(&strings(&["chpasswd", "--encrypted"]), Some(&line)).await?;
        }
        let left = self.plan().await?;
        if !left.is_empty() {
            return Err(ResourceError::failed(format!(
                "user {}: the tools succeeded but this still differs: {}",
                self.spec.name,
                left.why.join(", ")
            )));
        }
        Ok(Outcome::Changed)
    }
}

#[cfg(test)]
mod tests;
