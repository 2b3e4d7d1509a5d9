//! What a `svc` resource must do, decided from what systemd reports about the unit: pure, so
//! that every combination of states is tested without a running systemd.

use std::fmt;

use super::{Refresh, Startup, State, SvcSpec};

/// What systemd says about a unit (properties of `org.freedesktop.systemd1.Unit`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The unit's own name: differs from the one asked for when that is an alias.
    pub id: String,
    pub load_state: String,
    /// `LoadError`'s message, when loading failed.
    pub load_error: Option<String>,
    pub active_state: String,
    pub sub_state: String,
    pub unit_file_state: String,
    pub need_daemon_reload: bool,
    pub can_reload: bool,
    /// `StateChangeTimestampMonotonic`: when the unit last changed state (for `echo`).
    pub state_change: u64,
    /// `InvocationID` in hex: the unit's current (or last) run, empty before its first.
    pub invocation: String,
}

impl Status {
    /// Active, or reloading while active: the service runs.
    pub fn is_running(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "reloading")
    }

    /// Inactive, or failed (which is inactive with a failure recorded): nothing runs.
    pub fn is_stopped(&self) -> bool {
        matches!(self.active_state.as_str(), "inactive" | "failed")
    }
}

/// A job asked of systemd's manager; each is the method of that name with mode `replace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Start,
    Stop,
    Restart,
    /// Restart only if it runs (for a refresh of a resource without `state`).
    TryRestart,
    /// Reload if the unit can (`ExecReload=`), restart otherwise.
    ReloadOrRestart,
    ReloadOrTryRestart,
}

impl Job {
    pub fn method(self) -> &'static str {
        match self {
            Job::Start => "StartUnit",
            Job::Stop => "StopUnit",
            Job::Restart => "RestartUnit",
            Job::TryRestart => "TryRestartUnit",
            Job::ReloadOrRestart => "ReloadOrRestartUnit",
            Job::ReloadOrTryRestart => "ReloadOrTryRestartUnit",
        }
    }

    /// "starting", "stopping", ... for messages.
    pub fn doing(self) -> &'static str {
        match self {
            Job::Start => "starting",
            Job::Stop => "stopping",
            Job::Restart | Job::TryRestart => "restarting",
            Job::ReloadOrRestart | Job::ReloadOrTryRestart => "reloading",
        }
    }
}

/// A change of the unit's install state (its `[Install]` symlinks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    Enable,
    /// `runtime`: the links are in /run (enabled with `--runtime`), not /etc.
    Disable {
        runtime: bool,
    },
}

/// What to do, in this order: install state (then a daemon reload), run state, refresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub install: Option<Install>,
    pub state: Option<Job>,
    pub refresh: Option<Job>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match self.install {
            Some(Install::Enable) => parts.push("enable"),
            Some(Install::Disable { .. }) => parts.push("disable"),
            None => {}
        }
        if let Some(job) = self.state {
            parts.push(match job {
                Job::Stop => "stop",
                _ => "start",
            });
        }
        if let Some(job) = self.refresh {
            parts.push(match job {
                Job::ReloadOrRestart | Job::ReloadOrTryRestart => "reload (refresh)",
                _ => "restart (refresh)",
            });
        }
        f.write_str(&parts.join(", "))
    }
}

/// What must change for `unit` (as named in the graph) to match `spec`, given its `status`;
/// `refresh`: a notify parent changed. An error is a state no action of ours can fix (the unit
/// does not exist, is masked, cannot be enabled...), said so that the user can.
pub fn plan(spec: &SvcSpec, unit: &str, status: &Status, refresh: bool) -> Result<Plan, String> {
    let named = named(unit, status);
    match status.load_state.as_str() {
        "loaded" => {}
        "not-found" => {
            return Err(format!(
                "{named} does not exist (systemd found no unit file for it: LoadState not-found)"
            ));
        }
        "masked" => {
            if spec.state == Some(State::Running) || spec.startup == Some(Startup::Enabled) {
                return Err(masked(&named));
            }
        }
        "error" | "bad-setting" => {
            return Err(format!(
                "{named} failed to load (LoadState {}){}",
                status.load_state,
                status
                    .load_error
                    .as_deref()
                    .filter(|e| !e.is_empty())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        other => return Err(format!("{named} is not loaded (LoadState `{other}`)")),
    }
    let install = match spec.startup {
        None => None,
        Some(startup) => install_change(startup, &named, &status.unit_file_state)?,
    };
    let state = match spec.state {
        Some(State::Running) if !status.is_running() => Some(Job::Start),
        Some(State::Stopped) if !status.is_stopped() => Some(Job::Stop),
        _ => None,
    };
    let refresh = match (refresh, spec.refresh, spec.state) {
        (false, _, _) | (_, Refresh::None, _) | (_, _, Some(State::Stopped)) => None,
        // A start now runs it with what the refresh is about: once is enough.
        _ if state == Some(Job::Start) => None,
        (true, Refresh::Restart, Some(State::Running)) => Some(Job::Restart),
        (true, Refresh::Reload, Some(State::Running)) => Some(Job::ReloadOrRestart),
        // No `state`: refresh it only if it runs.
        (true, _, None) if !status.is_running() => None,
        (true, Refresh::Restart, None) => Some(Job::TryRestart),
        (true, Refresh::Reload, None) => Some(Job::ReloadOrTryRestart),
    };
    Ok(Plan {
        install,
        state,
        refresh,
    })
}

/// `unit`, and the unit it is an alias of when it is one.
fn named(unit: &str, status: &Status) -> String {
    if status.id.is_empty() || status.id == unit {
        unit.to_string()
    } else {
        format!("{unit} (an alias of {})", status.id)
    }
}

fn masked(named: &str) -> String {
    format!("{named} is masked: it cannot be started or enabled until it is unmasked")
}

/// The install change `startup` asks for, given `UnitFileState`.
fn install_change(
    startup: Startup,
    named: &str,
    file_state: &str,
) -> Result<Option<Install>, String> {
    let cannot = |why: &str| {
        Err(format!(
            "{named} cannot be {}: {why} (UnitFileState {file_state})",
            match startup {
                Startup::Enabled => "enabled",
                Startup::Disabled => "disabled",
            }
        ))
    };
    match (startup, file_state) {
        (Startup::Enabled, "enabled") => Ok(None),
        (
            Startup::Enabled,
            "disabled" | "enabled-runtime" | "linked" | "linked-runtime" | "indirect",
        ) => Ok(Some(Install::Enable)),
        (Startup::Enabled, "static") => cannot(
            "its unit file has no [Install] section, so it only starts when another unit or \
             socket pulls it in",
        ),
        (Startup::Enabled, "masked" | "masked-runtime") => Err(masked(named)),
        // Nothing of its own is enabled: with no [Install] section, or enabled only through
        // `Also=` or a template's instance.
        (Startup::Disabled, "disabled" | "static" | "indirect" | "masked" | "masked-runtime") => {
            Ok(None)
        }
        (Startup::Disabled, "enabled" | "linked") => Ok(Some(Install::Disable { runtime: false })),
        (Startup::Disabled, "enabled-runtime" | "linked-runtime") => {
            Ok(Some(Install::Disable { runtime: true }))
        }
        (_, "generated") => {
            cannot("it is made at boot by a systemd generator (from /etc/fstab, an init script...)")
        }
        (_, "transient") => cannot("it is transient (made at run time, with no unit file)"),
        (_, "" | "bad" | "invalid") => cannot("it has no usable unit file"),
        (_, other) => cannot(&format!(
            "systemd reports an unknown install state `{other}`"
        )),
    }
}

/// What systemd's `org.freedesktop.systemd1.Service` interface says about a service's main
/// process, for failure messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceResult {
    /// `success`, `exit-code`, `signal`, `timeout`, `start-limit-hit`, ...
    pub result: String,
    /// `CLD_EXITED` (1), `CLD_KILLED` (2), `CLD_DUMPED` (3), or 0 when it never ran.
    pub exec_main_code: i32,
    pub exec_main_status: i32,
}

/// A failed job or a unit that did not end up as asked: the message carries the unit's states,
/// the main process's end and the unit's last log lines.
pub fn failure(
    what: &str,
    status: &Status,
    service: Option<&ServiceResult>,
    log: &[String],
) -> String {
    let mut msg = format!(
        "{what}: ActiveState {} (SubState {})",
        status.active_state, status.sub_state
    );
    if let Some(s) = service {
        if !s.result.is_empty() {
            msg.push_str(&format!(", Result {}", s.result));
        }
        match s.exec_main_code {
            1 => msg.push_str(&format!(
                ", main process exited with status {}",
                s.exec_main_status
            )),
            2 => msg.push_str(&format!(
                ", main process was killed by signal {}",
                s.exec_main_status
            )),
            3 => msg.push_str(&format!(
                ", main process dumped core (signal {})",
                s.exec_main_status
            )),
            _ => {}
        }
    }
    if !log.is_empty() {
        msg.push_str("; last log lines:");
        for line in log {
            msg.push_str("\n  ");
            msg.push_str(line);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(state: Option<State>, startup: Option<Startup>, refresh: Refresh) -> SvcSpec {
        SvcSpec {
            state,
            startup,
            session: false,
            refresh,
        }
    }

    fn status(active: &str, file: &str) -> Status {
        Status {
            id: "x.service".into(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "whatever".into(),
            unit_file_state: file.into(),
            ..Status::default()
        }
    }

    fn run(s: &SvcSpec, st: &Status, refresh: bool) -> Result<Plan, String> {
        plan(s, "x.service", st, refresh)
    }

    const RUNNING: Option<State> = Some(State::Running);
    const STOPPED: Option<State> = Some(State::Stopped);
    const ENABLED: Option<Startup> = Some(Startup::Enabled);
    const DISABLED: Option<Startup> = Some(Startup::Disabled);

    #[test]
    fn run_state() {
        let want = |state, active| {
            run(
                &spec(state, None, Refresh::Restart),
                &status(active, "enabled"),
                false,
            )
            .unwrap()
            .state
        };
        assert_eq!(want(RUNNING, "active"), None);
        assert_eq!(want(RUNNING, "reloading"), None);
        for active in ["inactive", "failed", "activating", "deactivating"] {
            assert_eq!(want(RUNNING, active), Some(Job::Start), "{active}");
        }
        for active in ["inactive", "failed"] {
            assert_eq!(want(STOPPED, active), None, "{active}");
        }
        for active in ["active", "reloading", "activating", "deactivating"] {
            assert_eq!(want(STOPPED, active), Some(Job::Stop), "{active}");
        }
        // No state: left alone.
        assert_eq!(want(None, "failed"), None);
        assert!(
            run(
                &spec(None, None, Refresh::Restart),
                &status("failed", "bad"),
                false
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn install_state() {
        let want = |startup, file| {
            run(
                &spec(None, startup, Refresh::Restart),
                &status("active", file),
                false,
            )
            .map(|p| p.install)
        };
        assert_eq!(want(ENABLED, "enabled"), Ok(None));
        for file in [
            "disabled",
            "enabled-runtime",
            "linked",
            "linked-runtime",
            "indirect",
        ] {
            assert_eq!(want(ENABLED, file), Ok(Some(Install::Enable)), "{file}");
        }
        for file in ["disabled", "static", "indirect", "masked", "masked-runtime"] {
            assert_eq!(want(DISABLED, file), Ok(None), "{file}");
        }
        assert_eq!(
            want(DISABLED, "enabled"),
            Ok(Some(Install::Disable { runtime: false }))
        );
        assert_eq!(
            want(DISABLED, "linked"),
            Ok(Some(Install::Disable { runtime: false }))
        );
        assert_eq!(
            want(DISABLED, "enabled-runtime"),
            Ok(Some(Install::Disable { runtime: true }))
        );
        assert_eq!(
            want(ENABLED, "static").unwrap_err(),
            "x.service cannot be enabled: its unit file has no [Install] section, so it only \
             starts when another unit or socket pulls it in (UnitFileState static)"
        );
        assert_eq!(
            want(ENABLED, "masked").unwrap_err(),
            "x.service is masked: it cannot be started or enabled until it is unmasked"
        );
        assert_eq!(
            want(DISABLED, "generated").unwrap_err(),
            "x.service cannot be disabled: it is made at boot by a systemd generator (from \
             /etc/fstab, an init script...) (UnitFileState generated)"
        );
        assert!(
            want(ENABLED, "transient")
                .unwrap_err()
                .contains("transient")
        );
        assert!(
            want(ENABLED, "")
                .unwrap_err()
                .contains("no usable unit file")
        );
        assert!(
            want(DISABLED, "bad")
                .unwrap_err()
                .contains("no usable unit file")
        );
        assert!(
            want(ENABLED, "frobbed")
                .unwrap_err()
                .contains("unknown install state `frobbed`")
        );
        // No startup: whatever the file state.
        assert_eq!(want(None, "generated"), Ok(None));
    }

    #[test]
    fn load_states() {
        let mut st = status("inactive", "");
        st.load_state = "not-found".into();
        let err = run(&spec(STOPPED, None, Refresh::Restart), &st, false).unwrap_err();
        assert_eq!(
            err,
            "x.service does not exist (systemd found no unit file for it: LoadState not-found)"
        );
        st.load_state = "masked".into();
        st.unit_file_state = "masked".into();
        // Masked is stopped and disabled, and can be nothing else.
        assert!(
            run(&spec(STOPPED, DISABLED, Refresh::Restart), &st, false)
                .unwrap()
                .is_empty()
        );
        assert!(
            run(&spec(RUNNING, None, Refresh::Restart), &st, false)
                .unwrap_err()
                .contains("is masked")
        );
        assert!(
            run(&spec(None, ENABLED, Refresh::Restart), &st, false)
                .unwrap_err()
                .contains("is masked")
        );
        st.load_state = "bad-setting".into();
        st.load_error = Some("Unit x.service has a bad unit file setting.".into());
        assert_eq!(
            run(&spec(RUNNING, None, Refresh::Restart), &st, false).unwrap_err(),
            "x.service failed to load (LoadState bad-setting): Unit x.service has a bad unit file setting."
        );
        st.load_state = "stub".into();
        assert_eq!(
            run(&spec(RUNNING, None, Refresh::Restart), &st, false).unwrap_err(),
            "x.service is not loaded (LoadState `stub`)"
        );
        // An alias is named with its unit.
        let mut st = status("inactive", "");
        st.load_state = "not-found".into();
        st.id = "ssh.service".into();
        assert!(
            plan(
                &spec(RUNNING, None, Refresh::Restart),
                "sshd.service",
                &st,
                false
            )
            .unwrap_err()
            .starts_with("sshd.service (an alias of ssh.service) does not exist")
        );
    }

    #[test]
    fn refresh_restarts_or_reloads_once() {
        let refresh = |state, kind, active| {
            run(&spec(state, None, kind), &status(active, "enabled"), true).unwrap()
        };
        assert_eq!(
            refresh(RUNNING, Refresh::Restart, "active").refresh,
            Some(Job::Restart)
        );
        assert_eq!(
            refresh(RUNNING, Refresh::Reload, "active").refresh,
            Some(Job::ReloadOrRestart)
        );
        assert_eq!(refresh(RUNNING, Refresh::None, "active").refresh, None);
        // Started now: that start is the refresh.
        let p = refresh(RUNNING, Refresh::Restart, "inactive");
        assert_eq!((p.state, p.refresh), (Some(Job::Start), None));
        // Stopped: nothing to refresh.
        assert_eq!(refresh(STOPPED, Refresh::Restart, "inactive").refresh, None);
        let p = refresh(STOPPED, Refresh::Restart, "active");
        assert_eq!((p.state, p.refresh), (Some(Job::Stop), None));
        // No state: only a running service is refreshed.
        assert_eq!(
            refresh(None, Refresh::Restart, "active").refresh,
            Some(Job::TryRestart)
        );
        assert_eq!(
            refresh(None, Refresh::Reload, "active").refresh,
            Some(Job::ReloadOrTryRestart)
        );
        assert_eq!(refresh(None, Refresh::Restart, "inactive").refresh, None);
        // Without a refresh there is nothing to do for a running service.
        assert!(
            run(
                &spec(RUNNING, None, Refresh::Restart),
                &status("active", "enabled"),
                false
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn plans_read_as_actions() {
        let p = Plan {
            install: Some(Install::Enable),
            state: Some(Job::Start),
            refresh: None,
        };
        assert_eq!(p.to_string(), "enable, start");
        let p = Plan {
            install: Some(Install::Disable { runtime: false }),
            state: Some(Job::Stop),
            refresh: None,
        };
        assert_eq!(p.to_string(), "disable, stop");
        let p = Plan {
            refresh: Some(Job::ReloadOrRestart),
            ..Plan::default()
        };
        assert_eq!(p.to_string(), "reload (refresh)");
    }

    #[test]
    fn failures_carry_state_exit_and_log() {
        let mut st = status("failed", "enabled");
        st.sub_state = "failed".into();
        let svc = ServiceResult {
            result: "exit-code".into(),
            exec_main_code: 1,
            exec_main_status: 3,
        };
        assert_eq!(
            failure(
                "starting x.service failed (job result `failed`)",
                &st,
                Some(&svc),
                &[
                    "boom".to_string(),
                    "x.service: Main process exited".to_string()
                ]
            ),
            "starting x.service failed (job result `failed`): ActiveState failed (SubState \
             failed), Result exit-code, main process exited with status 3; last log lines:\n  \
             boom\n  x.service: Main process exited"
        );
        let killed = ServiceResult {
            result: "signal".into(),
            exec_main_code: 2,
            exec_main_status: 9,
        };
        assert!(
            failure("x", &st, Some(&killed), &[])
                .ends_with("Result signal, main process was killed by signal 9")
        );
        assert_eq!(
            failure("x", &st, None, &[]),
            "x: ActiveState failed (SubState failed)"
        );
    }
}
