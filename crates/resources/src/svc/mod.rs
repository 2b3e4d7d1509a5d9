//! `svc`: a systemd unit, running or stopped, enabled or disabled (mgmt's svc resource).
//!
//! Parameters as in mgmt: the name is the unit (`.service` is appended unless it ends in a
//! unit type's suffix), `state: running | stopped`, `startup: enabled | disabled` (unset or
//! `""`: left alone), `session: true` for the user's manager (`systemctl --user`). New here:
//! `refresh: restart | reload | none` says what a refresh (a notify parent changed) does to a
//! running service; mgmt always restarted (`restart`, the default).
//!
//! Everything goes over D-Bus to systemd's manager (`bus`), never through `systemctl`: a job
//! (start, stop, restart) is waited for until systemd reports its end, and a failure says the
//! unit's state, how its main process ended and its last log lines. The watch (`watch`) is
//! driven by systemd's signals only, never a poll, and does not report the echo of our own
//! actions (`echo`: a failing start would otherwise retry itself forever). Deciding what to do
//! is pure (`plan`), and so are unit names (`unit`).
//! Building never does IO.

mod bus;
mod echo;
mod plan;
mod unit;
mod watch;

use std::sync::Arc;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, Uid, WatchCtx,
};
use serde_json::{Map, Value};

use zbus::message::Sequence;

use crate::params::{Params, bad};
use bus::{Aliases, Bus, Systemd};
use echo::{Echo, Seen};
use plan::{Install, Job, Plan, Status};
pub use unit::UnitName;

pub const FIELDS: &[&str] = &["state", "startup", "session", "refresh"];

pub const KIND: KindInfo = KindInfo {
    kind: "svc",
    fields: FIELDS,
    build,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    Enabled,
    Disabled,
}

/// What a refresh does to a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refresh {
    /// Restart it (mgmt's behaviour).
    #[default]
    Restart,
    /// Reload it when it can be (`ExecReload=`), else restart it.
    Reload,
    /// Nothing.
    None,
}

/// The parameters, canonical (unset = `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcSpec {
    pub state: Option<State>,
    pub startup: Option<Startup>,
    /// The user's session bus and systemd user manager instead of the system's.
    pub session: bool,
    pub refresh: Refresh,
}

impl SvcSpec {
    fn from_params(params: Value) -> Result<Self, BuildError> {
        let mut p = Params::new("svc", params, FIELDS)?;
        let state = match p.string("state")?.as_deref() {
            None => None,
            Some("running") => Some(State::Running),
            Some("stopped") => Some(State::Stopped),
            Some(other) => return Err(bad("state", one_of(other, &["running", "stopped"]))),
        };
        let startup = match p.string("startup")?.as_deref() {
            None => None,
            Some("enabled") => Some(Startup::Enabled),
            Some("disabled") => Some(Startup::Disabled),
            Some(other) => return Err(bad("startup", one_of(other, &["enabled", "disabled"]))),
        };
        let session = p.boolean("session")?;
        let refresh = match p.string("refresh")?.as_deref() {
            None | Some("restart") => Refresh::Restart,
            Some("reload") => Refresh::Reload,
            Some("none") => Refresh::None,
            Some(other) => {
                return Err(bad(
                    "refresh",
                    one_of(other, &["restart", "reload", "none"]),
                ));
            }
        };
        Ok(SvcSpec {
            state,
            startup,
            session,
            refresh,
        })
    }

    fn to_params(&self) -> Value {
        let mut map = Map::new();
        if let Some(state) = self.state {
            let s = match state {
                State::Running => "running",
                State::Stopped => "stopped",
            };
            map.insert("state".into(), s.into());
        }
        if let Some(startup) = self.startup {
            let s = match startup {
                Startup::Enabled => "enabled",
                Startup::Disabled => "disabled",
            };
            map.insert("startup".into(), s.into());
        }
        if self.session {
            map.insert("session".into(), true.into());
        }
        match self.refresh {
            Refresh::Restart => {}
            Refresh::Reload => {
                map.insert("refresh".into(), "reload".into());
            }
            Refresh::None => {
                map.insert("refresh".into(), "none".into());
            }
        }
        Value::Object(map)
    }

    fn bus(&self) -> Bus {
        if self.session {
            Bus::Session
        } else {
            Bus::System
        }
    }
}

/// "unknown value `x` (expected a or b)", with a hint for a near miss.
fn one_of(value: &str, valid: &[&str]) -> String {
    let list = match valid {
        [a, b] => format!("`{a}` or `{b}`"),
        _ => {
            let quoted: Vec<String> = valid.iter().map(|v| format!("`{v}`")).collect();
            format!("one of {}", quoted.join(", "))
        }
    };
    let lower = value.trim().to_ascii_lowercase();
    let hint = match lower.as_str() {
        v if valid.contains(&v) => format!(" (write it in lower case: `{v}`)"),
        "started" | "start" | "active" | "up" | "on" if valid.contains(&"running") => {
            " (did you mean `running`?)".to_string()
        }
        "stop" | "inactive" | "dead" | "down" | "off" if valid.contains(&"stopped") => {
            " (did you mean `stopped`?)".to_string()
        }
        "enable" | "true" | "yes" | "on" if valid.contains(&"enabled") => {
            " (did you mean `enabled`?)".to_string()
        }
        "disable" | "false" | "no" | "off" if valid.contains(&"disabled") => {
            " (did you mean `disabled`?)".to_string()
        }
        _ => String::new(),
    };
    format!("unknown value `{value}`, expected {list}{hint}")
}

#[derive(Debug)]
pub struct Svc {
    name: String,
    meta: Meta,
    unit: UnitName,
    spec: SvcSpec,
    /// What our own check_apply did or read, for the watch not to report it back.
    echo: Echo<Sequence>,
    aliases: Aliases,
}

/// The last read of the unit a check_apply judged (see `echo`).
type LastRead = Option<Seen<Sequence>>;

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    let spec = SvcSpec::from_params(params)?;
    let unit = UnitName::parse(name).map_err(|message| BuildError {
        field: None,
        message: format!("`name`: {message}"),
    })?;
    Ok(Arc::new(Svc {
        name: name.to_string(),
        meta,
        unit,
        spec,
        echo: Echo::default(),
        aliases: Aliases::default(),
    }))
}

impl Svc {
    pub fn spec(&self) -> &SvcSpec {
        &self.spec
    }

    pub fn unit(&self) -> &UnitName {
        &self.unit
    }

    /// A job, waited for; any end but `done` is an error carrying the unit's state and log.
    async fn job(
        &self,
        systemd: &Systemd,
        target: &UnitName,
        job: Job,
        ctx: &ApplyCtx,
        last: &mut LastRead,
    ) -> Result<(), ResourceError> {
        tracing::debug!(unit = %target, "{}", job.doing());
        let result = systemd.run_job(job, target, &ctx.cancel).await?;
        if result == "done" {
            return Ok(());
        }
        let what = format!(
            "{} {} failed (job result `{result}`{})",
            job.doing(),
            target,
            job_result_meaning(&result)
        );
        Err(self.failure(systemd, target, &what, last).await)
    }

    /// The error for a unit that failed or did not end up as asked: `what` and the unit's
    /// state now, how its main process ended, its last log lines.
    async fn failure(
        &self,
        systemd: &Systemd,
        target: &UnitName,
        what: &str,
        last: &mut LastRead,
    ) -> ResourceError {
        let read = match systemd.read(target).await {
            Ok(read) => read,
            Err(e) => return ResourceError::failed(format!("{what} (and then: {e})")),
        };
        *last = Some(read.seen);
        let service = systemd.service_result(read.path.as_str()).await;
        let log = systemd
            .log_tail(&read.status.id_or(target), &read.status.invocation)
            .await;
        ResourceError::failed(plan::failure(what, &read.status, service.as_ref(), &log))
    }

    /// Carries out `plan` (made from `status`), then reads the unit once more to check that
    /// it is now as asked. Everything acts on the unit itself, not on an alias of it: systemd
    /// refuses to enable or disable an alias name, and disabling a unit removes the aliases
    /// its `[Install]` section made (Debian's `sshd` for `ssh`).
    async fn apply(
        &self,
        systemd: &Systemd,
        plan: Plan,
        status: &Status,
        ctx: &ApplyCtx,
        last: &mut LastRead,
    ) -> Result<(), ResourceError> {
        let unit = self.unit.as_str();
        let own = status.id_or(&self.unit);
        let target = UnitName::parse(&own).unwrap_or_else(|_| self.unit.clone());
        if let Some(install) = plan.install {
            let changes = match install {
                Install::Enable => systemd.enable(&own).await?,
                Install::Disable { runtime } => systemd.disable(&own, runtime).await?,
            };
            for (kind, link, target) in &changes {
                if target.is_empty() {
                    tracing::info!("{kind} {link}");
                } else {
                    tracing::info!("{kind} {link} -> {target}");
                }
            }
            // As `systemctl enable` does: the manager sees the new links (and dependencies).
            systemd.daemon_reload().await?;
        }
        if let Some(job) = plan.state {
            self.job(systemd, &target, job, ctx, last).await?;
        }
        if let Some(job) = plan.refresh {
            if matches!(job, Job::ReloadOrRestart | Job::ReloadOrTryRestart) && !status.can_reload {
                tracing::info!("{unit} cannot reload (no ExecReload=): restarting it instead");
            }
            self.job(systemd, &target, job, ctx, last).await?;
        }
        // One more read judges it all: what is still to do now is what did not work.
        let after = systemd.read(&target).await?;
        *last = Some(after.seen.clone());
        let left =
            plan::plan(&self.spec, unit, &after.status, false).map_err(ResourceError::failed)?;
        if let Some(install) = left.install {
            return Err(ResourceError::failed(format!(
                "{} {own} changed nothing: its UnitFileState is {}",
                match install {
                    Install::Enable => "enabling",
                    Install::Disable { .. } => "disabling",
                },
                after.status.unit_file_state
            )));
        }
        if let Some(job) = left.state {
            let what = match job {
                Job::Stop => format!("{unit} did not stop"),
                _ if plan.state.is_none() => {
                    format!("{unit} is not running after its refresh")
                }
                _ => format!(
                    "{unit} is not running after it was started (a oneshot service without \
                     RemainAfterExit=yes, an unmet condition, or it exited at once)"
                ),
            };
            return Err(self.failure(systemd, &target, &what, last).await);
        }
        Ok(())
    }

    /// check_apply's work; `last` is set to each read of the unit as it is judged.
    async fn converge(
        &self,
        ctx: &ApplyCtx,
        mode: Mode,
        last: &mut LastRead,
    ) -> Result<Outcome, ResourceError> {
        let systemd = Systemd::get(self.spec.bus()).await?;
        let unit = self.unit.as_str();
        let mut read = self.aliases.read(&systemd, &self.unit).await?;
        *last = Some(read.seen.clone());
        let mut planned = plan::plan(&self.spec, unit, &read.status, ctx.refresh);
        // A unit file changed on disk since systemd read it: act on the new one.
        if read.status.need_daemon_reload
            && mode == Mode::Apply
            && planned.as_ref().map_or(true, |p| !p.is_empty())
        {
            tracing::info!("{unit} changed on disk: reloading systemd");
            systemd.daemon_reload().await?;
            read = self.aliases.read(&systemd, &self.unit).await?;
            *last = Some(read.seen.clone());
            planned = plan::plan(&self.spec, unit, &read.status, ctx.refresh);
        }
        let plan = planned.map_err(ResourceError::failed)?;
        if plan.is_empty() {
            return Ok(Outcome::InSync);
        }
        if mode == Mode::Check {
            tracing::info!("would {plan}");
            return Ok(Outcome::WouldChange);
        }
        tracing::info!("{plan}");
        self.apply(&systemd, plan, &read.status, ctx, last).await?;
        Ok(Outcome::Changed)
    }
}

impl Status {
    /// The unit's own name, or `unit` when systemd did not say.
    fn id_or(&self, unit: &UnitName) -> String {
        if self.id.is_empty() {
            unit.as_str().to_string()
        } else {
            self.id.clone()
        }
    }
}

fn job_result_meaning(result: &str) -> &'static str {
    match result {
        "canceled" => ": another job replaced it",
        "timeout" => ": it timed out",
        "dependency" => ": a unit it requires failed",
        "skipped" => ": it did not apply to the unit's state",
        "assert" => ": an Assert… setting of the unit failed",
        "unsupported" => ": the unit type does not support it",
        "invalid" => ": it is not valid for this unit",
        _ => "",
    }
}

#[async_trait]
impl Resource for Svc {
    fn kind(&self) -> &'static str {
        "svc"
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    /// Everything was checked when it was built, and it never changes.
    fn validate(&self) -> Result<(), ResourceError> {
        Ok(())
    }
    fn params(&self) -> Value {
        self.spec.to_params()
    }

    fn uids(&self) -> Vec<Uid> {
        vec![Uid {
            kind: "svc",
            key: format!(
                "{}:{}",
                if self.spec.session {
                    "session"
                } else {
                    "system"
                },
                self.unit
            ),
        }]
    }

    /// The file resources of the unit's files (where an admin or a package puts them, and
    /// its drop-in directory): those are written before the unit is started.
    fn auto_edges(&self) -> Vec<Uid> {
        let dirs: Vec<String> = if self.spec.session {
            let mut dirs: Vec<String> = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| {
                    format!(
                        "{}/.config/systemd/user",
                        h.to_string_lossy().trim_end_matches('/')
                    )
                })
                .into_iter()
                .collect();
            dirs.extend(["/etc/systemd/user".into(), "/usr/lib/systemd/user".into()]);
            dirs
        } else {
            [
                "/etc/systemd/system",
                "/usr/lib/systemd/system",
                "/lib/systemd/system",
            ]
            .map(String::from)
            .to_vec()
        };
        let mut out = Vec::new();
        for dir in &dirs {
            out.push(Uid {
                kind: "file",
                key: format!("{dir}/{}", self.unit),
            });
        }
        out.push(Uid {
            kind: "file",
            key: format!("{}/{}.d", dirs[0], self.unit),
        });
        out
    }

    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        watch::watch(&self.unit, self.spec.bus(), &self.echo, &self.aliases, ctx).await
    }

    async fn check_apply(&self, ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let acting = self.echo.begin();
        let mut last = None;
        let outcome = self.converge(ctx, mode, &mut last).await;
        acting.finish(last);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(params: Value) -> Result<SvcSpec, String> {
        SvcSpec::from_params(params).map_err(|e| e.message)
    }

    #[test]
    fn mgmt_fields() {
        assert_eq!(
            spec(json!({"state": "running", "startup": "enabled"})).unwrap(),
            SvcSpec {
                state: Some(State::Running),
                startup: Some(Startup::Enabled),
                session: false,
                refresh: Refresh::Restart,
            }
        );
        assert_eq!(
            spec(json!({"state": "stopped", "startup": "disabled", "session": true, "refresh": "reload"}))
                .unwrap(),
            SvcSpec {
                state: Some(State::Stopped),
                startup: Some(Startup::Disabled),
                session: true,
                refresh: Refresh::Reload,
            }
        );
        // mgmt 0.0.x: empty strings are unset, booleans may be strings.
        assert_eq!(
            spec(json!({"state": "", "startup": "", "session": "false", "refresh": ""})).unwrap(),
            SvcSpec {
                state: None,
                startup: None,
                session: false,
                refresh: Refresh::Restart,
            }
        );
        assert_eq!(spec(json!(null)).unwrap(), spec(json!({})).unwrap());
        assert_eq!(
            spec(json!({"refresh": "none"})).unwrap().refresh,
            Refresh::None
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        for (params, why) in [
            (
                json!({"state": "started"}),
                "`state`: unknown value `started`, expected `running` or `stopped` (did you mean `running`?)",
            ),
            (
                json!({"state": "Running"}),
                "`state`: unknown value `Running`, expected `running` or `stopped` (write it in lower case: `running`)",
            ),
            (
                json!({"state": "absent"}),
                "`state`: unknown value `absent`, expected `running` or `stopped`",
            ),
            (
                json!({"startup": "true"}),
                "`startup`: unknown value `true`, expected `enabled` or `disabled` (did you mean `enabled`?)",
            ),
            (
                json!({"refresh": "restarted"}),
                "`refresh`: unknown value `restarted`, expected one of `restart`, `reload`, `none`",
            ),
            (
                json!({"session": "maybe"}),
                "`session`: expected true or false, found `maybe`",
            ),
            (
                json!({"state": ["running"]}),
                "`state`: expected a string, found a list",
            ),
            (
                json!({"enabled": true}),
                "`enabled`: unknown field for kind `svc`",
            ),
        ] {
            assert_eq!(spec(params.clone()).unwrap_err(), why, "{params}");
        }
    }

    #[test]
    fn params_round_trip_and_defaults_are_left_out() {
        for params in [
            json!({}),
            json!({"state": "running", "startup": "enabled"}),
            json!({"state": "stopped", "session": true, "refresh": "none"}),
            json!({"startup": "disabled", "refresh": "reload"}),
        ] {
            assert_eq!(spec(params.clone()).unwrap().to_params(), params);
        }
        // `refresh: restart` is the default: the same resource as without it.
        assert_eq!(
            spec(json!({"state": "running", "refresh": "restart", "session": false}))
                .unwrap()
                .to_params(),
            json!({"state": "running"})
        );
    }

    #[test]
    fn the_name_is_the_unit() {
        let r = build("purpleidea", json!({"state": "running"}), Meta::default()).unwrap();
        assert_eq!(r.params(), json!({"state": "running"}));
        assert_eq!(
            r.uids(),
            [Uid {
                kind: "svc",
                key: "system:purpleidea.service".into()
            }]
        );
        let keys: Vec<String> = r.auto_edges().into_iter().map(|u| u.key).collect();
        assert_eq!(
            keys,
            [
                "/etc/systemd/system/purpleidea.service",
                "/usr/lib/systemd/system/purpleidea.service",
                "/lib/systemd/system/purpleidea.service",
                "/etc/systemd/system/purpleidea.service.d",
            ]
        );
        let e = build("my app", json!({}), Meta::default()).unwrap_err();
        assert_eq!(e.field, None);
        assert!(
            e.message
                .starts_with("`name`: `my app` is not a valid unit name: a space is not allowed"),
            "{}",
            e.message
        );
        let e = build("getty@", json!({}), Meta::default()).unwrap_err();
        assert!(e.message.contains("is a template"), "{}", e.message);
    }
}
