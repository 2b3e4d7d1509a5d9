//! `exec`: run a command (mgmt's exec resource).
//!
//! Semantics kept from mgmt: the command runs once on the first check_apply (subject to the
//! `ifcmd` and `creates` guards) and is then in sync until a refresh (a `notify` parent changed)
//! or an event of the `watchcmd` (one per stdout line) asks for another run. A non-zero exit is
//! an error. Each command runs in its own process group so a timeout or a cancellation kills
//! everything it started. Errors never include the command text (it may carry secrets); the
//! resource id is added by the engine.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use resource::{
    ApplyCtx, BuildError, CancellationToken, KindInfo, Meta, Mode, Outcome, ResId, Resource,
    ResourceError, WatchCtx,
};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::ident;
use crate::params::{Params, bad, invalid_to_build, put_opt};
use crate::shellwords;

pub const FIELDS: &[&str] = &[
    "cmd",
    "args",
    "shell",
    "cwd",
    "env",
    "timeout",
    "ifcmd",
    "ifshell",
    "ifcwd",
    "watchcmd",
    "watchshell",
    "watchcwd",
    "state",
    "pollint",
    "user",
    "group",
    "creates",
];

pub const KIND: KindInfo = KindInfo {
    kind: "exec",
    fields: FIELDS,
    build,
};

/// How many trailing stderr lines an error message carries.
const STDERR_TAIL_LINES: usize = 10;

/// The longest output line kept, in bytes: the rest of a longer one is read and dropped, so a
/// command printing megabytes without a newline costs us no more than this.
const MAX_LINE: usize = 16 * 1024;

/// What is appended to a line cut at `MAX_LINE`.
const CUT_MARK: &str = " [line cut]";

/// After a kill, how long to wait for the pipes to close before giving up on them (a process
/// that escaped the group may hold them open forever).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The parameters, canonical (empty strings already turned into `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecSpec {
    pub cmd: String,
    pub args: Option<Vec<String>>,
    pub shell: Option<String>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Written in whole seconds; `None` (0 in the YAML) = no timeout.
    pub timeout: Option<Duration>,
    pub ifcmd: Option<String>,
    pub ifshell: Option<String>,
    pub ifcwd: Option<String>,
    pub watchcmd: Option<String>,
    pub watchshell: Option<String>,
    pub watchcwd: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Extension (Ansible's `creates`): skip the run when this path exists.
    pub creates: Option<String>,
}

impl ExecSpec {
    fn from_params(params: Value) -> Result<Self, BuildError> {
        let mut p = Params::new("exec", params, FIELDS)?;
        let spec = ExecSpec {
            cmd: p
                .string("cmd")?
                .ok_or_else(|| bad("cmd", "an exec needs a command"))?,
            args: p.list("args")?,
            shell: p.string("shell")?,
            cwd: p.string("cwd")?,
            env: p.map("env")?,
            timeout: p
                .uint("timeout")?
                .filter(|t| *t != 0)
                .map(Duration::from_secs),
            ifcmd: p.string("ifcmd")?,
            ifshell: p.string("ifshell")?,
            ifcwd: p.string("ifcwd")?,
            watchcmd: p.string("watchcmd")?,
            watchshell: p.string("watchshell")?,
            watchcwd: p.string("watchcwd")?,
            user: p.ident("user")?,
            group: p.ident("group")?,
            creates: p.string("creates")?,
        };
        // mgmt 0.0.x wrote `state: present`; exec has no other state.
        match p.string("state")?.as_deref() {
            None | Some("present") | Some("exists") => {}
            Some(other) => {
                return Err(bad(
                    "state",
                    format!("exec has no state `{other}` (use `present` or leave it out)"),
                ));
            }
        }
        // Deprecated in mgmt (polling is `meta: poll` now): accepted, ignored.
        p.ignore("pollint");
        Ok(spec)
    }

    /// Checks the parameters and splits the command lines, once: a bad one is a build error,
    /// and a built `Exec` runs what this returns.
    fn commands(&self) -> Result<Commands, ResourceError> {
        if self.args.is_some() && self.shell.is_some() {
            return Err(ResourceError::invalid(
                "args",
                "cannot be combined with `shell` (put the arguments in `cmd`)",
            ));
        }
        let commands = Commands {
            cmd: Argv::new(
                "cmd",
                &self.cmd,
                self.args.as_deref(),
                self.shell.as_deref(),
            )?,
            ifcmd: self
                .ifcmd
                .as_deref()
                .map(|c| Argv::new("ifcmd", c, None, self.ifshell.as_deref()))
                .transpose()?,
            watchcmd: self
                .watchcmd
                .as_deref()
                .map(|c| Argv::new("watchcmd", c, None, self.watchshell.as_deref()))
                .transpose()?,
        };
        if let Some(creates) = &self.creates
            && !creates.starts_with('/')
        {
            return Err(ResourceError::invalid(
                "creates",
                format!("`{creates}` is not an absolute path"),
            ));
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(ResourceError::invalid(
                    "env",
                    format!("`{key}` is not a valid variable name"),
                ));
            }
        }
        Ok(commands)
    }

    fn to_params(&self) -> Value {
        let mut map = Map::new();
        map.insert("cmd".into(), self.cmd.clone().into());
        if let Some(args) = &self.args {
            map.insert("args".into(), args.clone().into());
        }
        put_opt(&mut map, "shell", &self.shell);
        put_opt(&mut map, "cwd", &self.cwd);
        if !self.env.is_empty() {
            map.insert(
                "env".into(),
                serde_json::to_value(&self.env).unwrap_or_default(),
            );
        }
        put_opt(&mut map, "timeout", &self.timeout.map(|t| t.as_secs()));
        put_opt(&mut map, "ifcmd", &self.ifcmd);
        put_opt(&mut map, "ifshell", &self.ifshell);
        put_opt(&mut map, "ifcwd", &self.ifcwd);
        put_opt(&mut map, "watchcmd", &self.watchcmd);
        put_opt(&mut map, "watchshell", &self.watchshell);
        put_opt(&mut map, "watchcwd", &self.watchcwd);
        put_opt(&mut map, "user", &self.user);
        put_opt(&mut map, "group", &self.group);
        put_opt(&mut map, "creates", &self.creates);
        Value::Object(map)
    }
}

/// A command ready to run: a program (never empty) and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Argv {
    program: String,
    args: Vec<String>,
}

impl Argv {
    /// `shell -c cmd`, `cmd args...`, or `cmd` split into words; an empty command or one that
    /// does not split (unbalanced quotes) is an error naming `field`.
    fn new(
        field: &str,
        cmd: &str,
        args: Option<&[String]>,
        shell: Option<&str>,
    ) -> Result<Argv, ResourceError> {
        let mut words = match (shell, args) {
            (Some(shell), _) => vec![shell.to_string(), "-c".to_string(), cmd.to_string()],
            (None, Some(args)) => std::iter::once(cmd.to_string())
                .chain(args.iter().cloned())
                .collect(),
            (None, None) => {
                shellwords::split(cmd).map_err(|e| ResourceError::invalid(field, e.to_string()))?
            }
        }
        .into_iter();
        match words.next() {
            Some(program) if !program.is_empty() => Ok(Argv {
                program,
                args: words.collect(),
            }),
            _ => Err(ResourceError::invalid(field, "the command is empty")),
        }
    }
}

/// The commands of one exec, split when it is built.
#[derive(Debug)]
struct Commands {
    cmd: Argv,
    ifcmd: Option<Argv>,
    watchcmd: Option<Argv>,
}

#[derive(Debug)]
pub struct Exec {
    name: String,
    meta: Meta,
    spec: ExecSpec,
    commands: Commands,
    /// Bumped by the watchcmd on every line: each bump asks for another run.
    generation: AtomicU64,
    /// The generation at which cmd last ran successfully (`None`: never, or refreshed since).
    ran_at: Mutex<Option<u64>>,
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    let spec = ExecSpec::from_params(params)?;
    let commands = spec.commands().map_err(invalid_to_build)?;
    Ok(Arc::new(Exec {
        name: name.to_string(),
        meta,
        spec,
        commands,
        generation: AtomicU64::new(0),
        ran_at: Mutex::new(None),
    }))
}

/// How a finished command ended.
struct Finished {
    status: ExitStatus,
    stderr_tail: VecDeque<String>,
}

/// Why a command did not finish by itself.
enum Stopped {
    Timeout(Duration),
    Cancelled,
}

impl Exec {
    pub fn spec(&self) -> &ExecSpec {
        &self.spec
    }

    fn command(&self, argv: &Argv, cwd: Option<&str>) -> Result<Command, ResourceError> {
        let mut cmd = Command::new(&argv.program);
        cmd.args(&argv.args)
            .envs(&self.spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a kill reaches everything the command started.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let gid = match (&self.spec.group, &self.spec.user) {
            (Some(group), _) => Some(ident::gid(group)?),
            (None, Some(user)) => ident::primary_gid(user)?,
            (None, None) => None,
        };
        // std drops root's supplementary groups when it changes the uid.
        if let Some(gid) = gid {
            cmd.gid(gid);
        }
        if let Some(user) = &self.spec.user {
            cmd.uid(ident::uid(user)?);
        }
        Ok(cmd)
    }

    /// Run a command to its end, logging its output; `Err(Stopped)` when the timeout or the
    /// cancellation killed its process group.
    async fn run(
        &self,
        what: &str,
        argv: &Argv,
        cwd: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Result<Finished, Stopped>, ResourceError> {
        let id = self.id();
        let mut child = self
            .command(argv, cwd)?
            .spawn()
            .map_err(|e| spawn_error(what, &argv.program, e))?;
        let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let work = async {
            let (_, stderr_tail, status) = tokio::join!(
                drain(stdout, &id, "stdout"),
                drain(stderr, &id, "stderr"),
                child.wait()
            );
            (stderr_tail, status)
        };
        tokio::pin!(work);
        let deadline = async {
            match self.spec.timeout {
                Some(timeout) => tokio::time::sleep(timeout).await,
                None => std::future::pending().await,
            }
        };
        let stopped = tokio::select! {
            (stderr_tail, status) = &mut work => {
                let status = status.map_err(|e| ResourceError::failed(format!("waiting for {what}: {e}")))?;
                return Ok(Ok(Finished { status, stderr_tail }));
            }
            _ = deadline => Stopped::Timeout(self.spec.timeout.unwrap_or_default()),
            _ = cancel.cancelled() => Stopped::Cancelled,
        };
        if let Some(pgid) = pgid {
            // ESRCH: the group is already gone, which is what we want.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        // Reap the killed child; `kill_on_drop` covers a child whose pipes never close.
        let _ = tokio::time::timeout(KILL_GRACE, &mut work).await;
        Ok(Err(stopped))
    }

    /// Run `ifcmd`; true when it allows the main command to run.
    async fn guard_allows(&self, cancel: &CancellationToken) -> Result<bool, ResourceError> {
        let Some(argv) = &self.commands.ifcmd else {
            return Ok(true);
        };
        match self
            .run("ifcmd", argv, self.spec.ifcwd.as_deref(), cancel)
            .await?
        {
            Ok(done) => {
                tracing::debug!(resource = %self.id(), status = %done.status, "ifcmd finished");
                Ok(done.status.success())
            }
            Err(stopped) => Err(stopped_error("ifcmd", stopped)),
        }
    }
}

fn spawn_error(what: &str, program: &str, e: std::io::Error) -> ResourceError {
    ResourceError::failed(format!("cannot start {what} (`{program}`): {e}"))
}

fn stopped_error(what: &str, stopped: Stopped) -> ResourceError {
    match stopped {
        Stopped::Timeout(after) => ResourceError::failed(format!(
            "{what} timed out after {}s; its process group was killed",
            after.as_secs()
        )),
        Stopped::Cancelled => {
            ResourceError::failed(format!("{what} cancelled; its process group was killed"))
        }
    }
}

fn exit_error(what: &str, done: &Finished) -> ResourceError {
    use std::os::unix::process::ExitStatusExt;
    let how = match (done.status.code(), done.status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("failed ({})", done.status),
    };
    if done.stderr_tail.is_empty() {
        ResourceError::failed(format!("{what} {how}"))
    } else {
        let tail: Vec<&str> = done.stderr_tail.iter().map(String::as_str).collect();
        ResourceError::failed(format!("{what} {how}; stderr: {}", tail.join("\n")))
    }
}

/// Reads one line into `buf` (without its newline), keeping at most `MAX_LINE` bytes of it and
/// consuming the rest. `Ok(None)` at the end of the stream; `Ok(Some(cut))` says whether the
/// line was cut.
async fn read_line_capped(
    r: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut cut = false;
    let mut any = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(any.then_some(cut));
        }
        any = true;
        let (part, used, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = MAX_LINE - buf.len();
        cut |= part.len() > room;
        buf.extend_from_slice(&part[..part.len().min(room)]);
        r.consume(used);
        if done {
            return Ok(Some(cut));
        }
    }
}

/// A line as text: lossy UTF-8, without a trailing `\r`, marked when cut.
fn line_text(buf: &[u8], cut: bool) -> String {
    let mut line = String::from_utf8_lossy(buf)
        .trim_end_matches('\r')
        .to_string();
    if cut {
        line.push_str(CUT_MARK);
    }
    line
}

/// Read a pipe to its end, logging each line; returns the last lines.
async fn drain(
    pipe: Option<impl AsyncRead + Unpin>,
    id: &ResId,
    stream: &'static str,
) -> VecDeque<String> {
    let mut tail = VecDeque::new();
    let Some(pipe) = pipe else { return tail };
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        match read_line_capped(&mut reader, &mut buf).await {
            Ok(None) | Err(_) => return tail,
            Ok(Some(cut)) => {
                let line = line_text(&buf, cut);
                tracing::debug!(resource = %id, stream, "{line}");
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    }
}

#[async_trait]
impl Resource for Exec {
    fn kind(&self) -> &'static str {
        "exec"
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    /// Everything was checked when it was built (`ExecSpec::commands`), and it never changes.
    fn validate(&self) -> Result<(), ResourceError> {
        Ok(())
    }
    fn params(&self) -> Value {
        self.spec.to_params()
    }

    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        let Some(argv) = &self.commands.watchcmd else {
            ctx.running();
            ctx.cancel.cancelled().await;
            return Ok(());
        };
        let mut child = self
            .command(argv, self.spec.watchcwd.as_deref())?
            .spawn()
            .map_err(|e| spawn_error("watchcmd", &argv.program, e))?;
        let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        ctx.running();
        let id = self.id();
        let lines = async {
            let Some(stdout) = stdout else { return };
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                match read_line_capped(&mut reader, &mut buf).await {
                    Ok(None) | Err(_) => return,
                    Ok(Some(cut)) => {
                        tracing::debug!(resource = %id, line = %line_text(&buf, cut), "watchcmd event");
                        self.generation.fetch_add(1, Ordering::SeqCst);
                        ctx.event();
                    }
                }
            }
        };
        let output = async { tokio::join!(lines, drain(stderr, &id, "watchcmd stderr")).1 };
        let outcome = tokio::select! {
            _ = ctx.cancel.cancelled() => None,
            stderr_tail = output => Some(stderr_tail),
        };
        let kill = || {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        };
        let Some(stderr_tail) = outcome else {
            kill();
            let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
            return Ok(());
        };
        // It closed its output, so it is ending by itself: let it exit before forcing it.
        let status = match tokio::time::timeout(KILL_GRACE, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                kill();
                child.wait().await
            }
        }
        .map_err(|e| ResourceError::failed(format!("waiting for watchcmd: {e}")))?;
        Err(exit_error(
            "watchcmd",
            &Finished {
                status,
                stderr_tail,
            },
        ))
    }

    async fn check_apply(&self, ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let ran_at = *self.ran_at.lock().unwrap_or_else(|e| e.into_inner());
        if !ctx.refresh && ran_at == Some(generation) {
            return Ok(Outcome::InSync);
        }
        if let Some(creates) = &self.spec.creates
            && Path::new(creates).exists()
        {
            tracing::debug!(resource = %self.id(), creates, "skipped: path exists");
            return Ok(Outcome::InSync);
        }
        // ifcmd is a read-only guard by contract, so it runs in Check mode too.
        if !self.guard_allows(&ctx.cancel).await? {
            tracing::debug!(resource = %self.id(), "skipped: ifcmd did not succeed");
            return Ok(Outcome::InSync);
        }
        if mode == Mode::Check {
            return Ok(Outcome::WouldChange);
        }
        let done = match self
            .run(
                "cmd",
                &self.commands.cmd,
                self.spec.cwd.as_deref(),
                &ctx.cancel,
            )
            .await?
        {
            Ok(done) => done,
            Err(stopped) => return Err(stopped_error("cmd", stopped)),
        };
        if !done.status.success() {
            return Err(exit_error("cmd", &done));
        }
        *self.ran_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(generation);
        Ok(Outcome::Changed)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn commands(params: Value) -> Result<Commands, BuildError> {
        ExecSpec::from_params(params)?
            .commands()
            .map_err(invalid_to_build)
    }

    fn argv(program: &str, args: &[&str]) -> Argv {
        Argv {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn command_lines_are_split_once_when_built() {
        let c = commands(json!({
            "cmd": "printf '%s\\n' \"a b\" c",
            "ifcmd": "test -e /x",
            "ifshell": "/bin/sh",
            "watchcmd": "tail -F /log",
        }))
        .unwrap();
        assert_eq!(c.cmd, argv("printf", &["%s\\n", "a b", "c"]));
        assert_eq!(c.ifcmd, Some(argv("/bin/sh", &["-c", "test -e /x"])));
        assert_eq!(c.watchcmd, Some(argv("tail", &["-F", "/log"])));
        let c = commands(json!({"cmd": "echo", "args": ["a b", "c"]})).unwrap();
        assert_eq!(c.cmd, argv("echo", &["a b", "c"]));
        assert_eq!((c.ifcmd, c.watchcmd), (None, None));
    }

    #[test]
    fn a_bad_command_line_is_a_build_error() {
        for (params, field, message) in [
            (
                json!({"cmd": "echo 'oops"}),
                "cmd",
                "unterminated single quote",
            ),
            (json!({"cmd": "''"}), "cmd", "the command is empty"),
            (
                json!({"cmd": "x", "ifcmd": "a\\"}),
                "ifcmd",
                "trailing backslash",
            ),
            (
                json!({"cmd": "x", "watchcmd": "\"open"}),
                "watchcmd",
                "unterminated double quote",
            ),
        ] {
            let e = build("e", params.clone(), Meta::default()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{params}");
            assert!(e.message.contains(message), "{params}: {e}");
        }
    }
}
