//! `cron`: one job as a file of `/etc/cron.d` (the system crontab directory that cron reads,
//! with a user column). The resource's name is the file name; cron (Debian's run-parts rule)
//! silently ignores names with a dot or other characters outside `[A-Za-z0-9_-]`, so those are
//! refused. mgmt's own `cron` kind manages systemd timers instead; this one follows the issue
//! (see the README).
//!
//! The schedule is `minute hour day month weekday` (each `*` by default), or `schedule` (those
//! five, or `@reboot`, `@daily` ...). Every field is checked as cron reads it: numbers in range,
//! `a-b` ranges, `/step`s, comma lists, and month and weekday names (`jan`, `mon`) alone. The
//! file holds `env` lines and the job line, ends with a newline (cron ignores a last line
//! without one), and is written atomically with mode 0644 owned by root (cron ignores files
//! writable by others). `state: absent` removes it. Watched with inotify (its name in
//! `/etc/cron.d`). Building must never do IO.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, Uid, WatchCtx,
};
use serde_json::{Map, Value};

use crate::file;
use crate::line;
use crate::params::{Params, bad};
use crate::sysctl;

pub const FIELDS: &[&str] = &[
    "minute", "hour", "day", "month", "weekday", "schedule", "user", "command", "env", "state",
];

pub const KIND: KindInfo = KindInfo {
    kind: "cron",
    fields: FIELDS,
    build,
};

/// The directory of system cron jobs.
pub const CRON_D: &str = "/etc/cron.d";

/// cron's `@` schedules.
pub const KEYWORDS: &[&str] = &[
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The five fields: name, lowest, highest, names (the first is the lowest number).
const SLOTS: [(&str, u32, u32, &[&str]); 5] = [
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day", 1, 31, &[]),
    ("month", 1, 12, MONTHS),
    ("weekday", 0, 7, DAYS),
];

/// A file name cron reads.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "`{name}` cannot be a file of /etc/cron.d: cron ignores names with characters \
             other than letters, digits, `_` and `-` (no dots)"
        ));
    }
    Ok(())
}

/// One schedule field (`*/15`, `1-5`, `0,30`, `mon`), checked as cron reads it.
pub fn check_field(slot: usize, text: &str) -> Result<(), String> {
    let (what, lo, hi, names) = SLOTS[slot];
    let number = |s: &str| -> Result<u32, String> {
        let n: u32 = s
            .parse()
            .map_err(|_| format!("`{s}` is not a number (in {what} `{text}`)"))?;
        if n < lo || n > hi {
            return Err(format!(
                "{n} is out of range for {what} ({lo}-{hi}) in `{text}`"
            ));
        }
        Ok(n)
    };
    if text.is_empty() {
        return Err(format!("the {what} must not be empty"));
    }
    if names.contains(&text.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    for item in text.split(',') {
        if item.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            return Err(if names.is_empty() {
                format!("`{item}` is not a number (in {what} `{text}`)")
            } else {
                format!(
                    "`{item}` in {what} `{text}`: a name ({}) must stand alone, not in a list or \
                     range (crontab(5)); write numbers",
                    names.join(", ")
                )
            });
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        match range.split_once('-') {
            _ if range == "*" => {}
            Some((a, b)) => {
                if number(a)? > number(b)? {
                    return Err(format!("`{range}` is a backwards range in {what} `{text}`"));
                }
            }
            None if step.is_some() => {
                return Err(format!(
                    "`{item}` in {what} `{text}`: a step goes after `*` or a range (`*/{s}`)",
                    s = step.unwrap_or_default()
                ));
            }
            None => {
                number(range)?;
            }
        }
        if let Some(s) = step {
            match s.parse::<u32>() {
                Ok(n) if n >= 1 && n <= hi.max(1) => {}
                _ => return Err(format!("`/{s}` is not a valid step in {what} `{text}`")),
            }
        }
    }
    Ok(())
}

/// A whole schedule: the five fields or an `@` keyword.
pub fn check_schedule(s: &str) -> Result<(), String> {
    if s.starts_with('@') {
        if KEYWORDS.contains(&s) {
            return Ok(());
        }
        return Err(format!(
            "`{s}` is not one of cron's schedules ({})",
            KEYWORDS.join(", ")
        ));
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "`{s}` has {} fields; a schedule is `minute hour day month weekday` or one of {}",
            fields.len(),
            KEYWORDS.join(", ")
        ));
    }
    fields
        .iter()
        .enumerate()
        .try_for_each(|(i, f)| check_field(i, f))
}

#[derive(Debug, Clone)]
pub struct CronSpec {
    name: String,
    schedule: String,
    user: String,
    command: Option<String>,
    env: BTreeMap<String, String>,
    exists: bool,
    dir: PathBuf,
}

impl CronSpec {
    fn from_params(name: &str, params: Value) -> Result<CronSpec, BuildError> {
        check_name(name).map_err(|m| bad("name", m))?;
        let mut p = Params::new("cron", params, FIELDS)?;
        let exists = line::parse_state(&mut p)?;
        let mut fields = Vec::new();
        for (i, (slot, ..)) in SLOTS.iter().enumerate() {
            if let Some(v) = p.string(slot)? {
                let v = v.trim().to_string();
                check_field(i, &v).map_err(|m| bad(slot, m))?;
                fields.push((*slot, v));
            }
        }
        let schedule = match p.string("schedule")? {
            Some(s) => {
                if let Some((slot, _)) = fields.first() {
                    return Err(bad(
                        slot,
                        "give `schedule` or the five fields (`minute` ...), not both",
                    ));
                }
                let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
                check_schedule(&s).map_err(|m| bad("schedule", m))?;
                s
            }
            None => SLOTS
                .iter()
                .map(|(slot, ..)| {
                    fields
                        .iter()
                        .find(|(f, _)| f == slot)
                        .map_or("*", |(_, v)| v.as_str())
                })
                .collect::<Vec<_>>()
                .join(" "),
        };
        let user = p.ident("user")?.unwrap_or_else(|| "root".into());
        if user.starts_with('-')
            || user.len() > 32
            || !user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(bad("user", format!("`{user}` is not a user name")));
        }
        let command = p.string("command")?;
        match &command {
            None if exists => return Err(bad("command", "the command to run is required")),
            Some(c) if c.contains(['\n', '\r', '\0']) => {
                return Err(bad(
                    "command",
                    "must be one line (cron reads one job per line)",
                ));
            }
            _ => {}
        }
        let env = p.map("env")?;
        for (k, v) in &env {
            let good_key = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !good_key {
                return Err(bad("env", format!("`{k}` is not a variable name")));
            }
            if v.contains(['\n', '\r', '\0']) {
                return Err(bad("env", format!("the value of `{k}` must be one line")));
            }
        }
        Ok(CronSpec {
            name: name.to_string(),
            schedule,
            user,
            command,
            env,
            exists,
            dir: PathBuf::from(CRON_D),
        })
    }

    fn to_params(&self) -> Value {
        let mut map = Map::new();
        map.insert("schedule".into(), self.schedule.clone().into());
        map.insert("user".into(), self.user.clone().into());
        if let Some(c) = &self.command {
            map.insert("command".into(), c.clone().into());
        }
        if !self.env.is_empty() {
            let env: Map<String, Value> = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            map.insert("env".into(), env.into());
        }
        let state = if self.exists { "exists" } else { "absent" };
        map.insert("state".into(), state.into());
        Value::Object(map)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The whole file, ending with a newline.
    fn content(&self, command: &str) -> String {
        let mut s = format!("# Managed by mgmt: cron[{}]\n", self.name);
        for (k, v) in &self.env {
            s.push_str(&format!("{k}={v}\n"));
        }
        s.push_str(&format!("{} {} {command}\n", self.schedule, self.user));
        s
    }

    fn converge(&self, dry: bool) -> Result<bool, ResourceError> {
        match self.command.as_deref().filter(|_| self.exists) {
            Some(command) => {
                if !self.dir.is_dir() {
                    return Err(ResourceError::failed(format!(
                        "{} does not exist: is cron installed?",
                        self.dir.display()
                    )));
                }
                sysctl::converge_whole(&self.path(), &self.content(command), dry)
            }
            None => sysctl::remove(&self.path(), dry),
        }
    }
}

#[derive(Debug)]
pub struct Cron {
    name: String,
    meta: Meta,
    spec: Arc<CronSpec>,
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    Ok(Arc::new(Cron {
        name: name.to_string(),
        meta,
        spec: Arc::new(CronSpec::from_params(name, params)?),
    }))
}

#[async_trait]
impl Resource for Cron {
    fn kind(&self) -> &'static str {
        "cron"
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
    fn uids(&self) -> Vec<Uid> {
        vec![Uid {
            kind: "cron",
            key: self.spec.path().to_string_lossy().into_owned(),
        }]
    }
    /// A `file` resource of its file or of `/etc/cron.d` (or above), and its user.
    fn auto_edges(&self) -> Vec<Uid> {
        let mut edges = line::file_edges(&self.spec.path());
        edges.push(Uid {
            kind: "user",
            key: self.spec.user.clone(),
        });
        edges
    }
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        file::watch::watch(&line::watch_spec(&self.spec.path(), &[]), ctx).await
    }
    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let spec = self.spec.clone();
        let changed = line::blocking(move || spec.converge(mode == Mode::Check)).await?;
        Ok(line::outcome(changed, mode))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use serde_json::json;

    use super::*;

    fn spec(name: &str, v: Value) -> Result<CronSpec, String> {
        CronSpec::from_params(name, v).map_err(|e| e.message)
    }

    #[test]
    fn schedule_fields_are_checked_as_cron_reads_them() {
        for (slot, good) in [
            (0, "*"),
            (0, "*/15"),
            (0, "0,30"),
            (0, "0-59/5"),
            (1, "9-17"),
            (2, "1,15,31"),
            (3, "JAN"),
            (3, "1-12/3"),
            (4, "mon"),
            (4, "7"),
            (4, "1-5"),
        ] {
            assert!(check_field(slot, good).is_ok(), "{good}");
        }
        for (slot, bad, why) in [
            (0, "60", "60 is out of range for minute (0-59)"),
            (1, "24", "24 is out of range for hour"),
            (2, "0", "0 is out of range for day (1-31)"),
            (3, "13", "13 is out of range for month"),
            (4, "8", "8 is out of range for weekday (0-7)"),
            (0, "5-1", "`5-1` is a backwards range"),
            (0, "*/0", "`/0` is not a valid step"),
            (0, "5/2", "`5/2` in minute `5/2`: a step goes after"),
            (0, "x", "`x` is not a number"),
            (3, "jan-mar", "`jan-mar` in month `jan-mar`: a name"),
            (4, "mon,tue", "`mon` in weekday `mon,tue`: a name"),
            (0, "1,,2", "`` is not a number"),
            (0, "", "the minute must not be empty"),
        ] {
            let e = check_field(slot, bad).unwrap_err();
            assert!(e.starts_with(why), "{bad}: {e}");
        }
        assert!(check_schedule("@daily").is_ok());
        assert!(check_schedule("*/5 * * * 1-5").is_ok());
        assert!(check_schedule("@often").unwrap_err().contains("not one of"));
        assert!(
            check_schedule("* * *")
                .unwrap_err()
                .contains("has 3 fields")
        );
    }

    #[test]
    fn params_are_canonical_and_bad_values_name_their_field() {
        let s = spec(
            "backup",
            json!({"minute": "30", "hour": 2, "command": "/usr/local/bin/backup",
                   "env": {"MAILTO": "ops@example.com"}}),
        )
        .unwrap();
        assert_eq!(
            s.to_params(),
            json!({"schedule": "30 2 * * *", "user": "root", "command": "/usr/local/bin/backup",
                   "env": {"MAILTO": "ops@example.com"}, "state": "exists"})
        );
        assert_eq!(
            spec("backup", s.to_params()).unwrap().to_params(),
            s.to_params()
        );
        for (name, v, why) in [
            (
                "my.job",
                json!({"command": "x"}),
                "`name`: `my.job` cannot be a file of /etc/cron.d",
            ),
            (
                "job",
                json!({}),
                "`command`: the command to run is required",
            ),
            (
                "job",
                json!({"command": "a\nb"}),
                "`command`: must be one line",
            ),
            (
                "job",
                json!({"command": "x", "hour": "25"}),
                "`hour`: 25 is out of range",
            ),
            (
                "job",
                json!({"command": "x", "hour": "1", "schedule": "@daily"}),
                "`hour`: give `schedule` or the five fields",
            ),
            (
                "job",
                json!({"command": "x", "schedule": "@sometimes"}),
                "`schedule`: `@sometimes` is not one of",
            ),
            (
                "job",
                json!({"command": "x", "user": "-r"}),
                "`user`: `-r` is not a user name",
            ),
            (
                "job",
                json!({"command": "x", "env": {"A B": "1"}}),
                "`env`: `A B` is not a variable name",
            ),
            (
                "job",
                json!({"command": "x", "env": {"A": "1\n* * * * * root evil"}}),
                "`env`: the value of `A` must be one line",
            ),
        ] {
            let e = spec(name, v.clone()).unwrap_err();
            assert!(e.starts_with(why), "{v}: {e}");
        }
        assert!(spec("job", json!({"state": "absent"})).is_ok());
    }

    #[test]
    fn writes_the_file_whole_with_a_final_newline_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(
            "job",
            json!({"schedule": "@reboot", "user": "nobody", "command": "echo hi",
                   "env": {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}}),
        )
        .unwrap();
        s.dir = dir.path().to_path_buf();
        assert!(s.converge(true).unwrap());
        assert!(!s.path().exists());
        assert!(s.converge(false).unwrap());
        let text = fs::read_to_string(s.path()).unwrap();
        assert_eq!(
            text,
            "# Managed by mgmt: cron[job]\nPATH=/usr/bin:/bin\nSHELL=/bin/sh\n\
             @reboot nobody echo hi\n"
        );
        let m = fs::metadata(s.path()).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o644);
        assert!(!s.converge(false).unwrap());
        // Drift: content and mode.
        fs::write(s.path(), "* * * * * root evil\n").unwrap();
        fs::set_permissions(s.path(), fs::Permissions::from_mode(0o666)).unwrap();
        assert!(s.converge(false).unwrap());
        assert_eq!(fs::read_to_string(s.path()).unwrap(), text);
        assert_eq!(fs::metadata(s.path()).unwrap().mode() & 0o7777, 0o644);
        let mut gone = s.clone();
        gone.exists = false;
        assert!(gone.converge(true).unwrap());
        assert!(s.path().exists());
        assert!(gone.converge(false).unwrap());
        assert!(!s.path().exists());
        assert!(!gone.converge(false).unwrap());
        // No cron.d: a clear error.
        s.dir = dir.path().join("missing");
        let e = s.converge(false).unwrap_err().to_string();
        assert!(e.contains("is cron installed?"), "{e}");
    }
}
