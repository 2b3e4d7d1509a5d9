//! One host's life: wait for a setup slot, connect, probe the cache and seed the run dir,
//! upload, open the tunnel, start the child (then give the slot away), supervise it, clean up.
//!
//! Shutdown order per host: close the child's stdin, wait `grace` for it to exit, kill it by
//! its recorded pid (TERM, then KILL), remove the run dir, close the connection. A `force`
//! cancel skips the grace period.
//!
//! A host with `sudo` runs only its child as root: the probe, the upload and the run dir are
//! the login user's, as without it. Once the child may run as root, the kill and the cleanup
//! run as root too (a root child cannot be signalled by the user, nor its files removed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::schedule::{Shared, warn};
use super::scripts::{self, PID_FILE, Pid, WRAPPER_PREFIX};
use super::supervise::supervise;
use super::types::{
    CacheUse, ChildContext, HostOutcome, HostReport, HostState, RemoteEvent, Target, TargetExtras,
};
use crate::error::{ChildExit, Error, Step};
use crate::session::Session;
use crate::sudo::{self, Early, NotStarted, Sudo};
use crate::upload::{self, SeedFile, sh};

/// What a host has on the remote side so far, so cleanup knows what to undo.
pub(super) struct Progress {
    pub bytes_sent: u64,
    pub cache: CacheUse,
    pub run_dir: Option<String>,
    /// The child may run as root (sudo was run and did not refuse): stop and clean up as root.
    pub as_root: bool,
}

/// A step interrupted by cancellation.
enum Stop {
    Cancelled,
    Failed(Step, Error),
}

fn step_of(e: &Error, default: Step) -> Step {
    match e {
        Error::AuthFailed { .. } => Step::Auth,
        Error::Ssh { step, .. } | Error::Protocol { step, .. } => *step,
        Error::Config(_) => Step::Config,
        _ => default,
    }
}

async fn cancellable<T>(
    cancel: &CancellationToken,
    step: Step,
    f: impl Future<Output = Result<T, Error>>,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        r = f => r.map_err(|e| Stop::Failed(step_of(&e, step), e)),
    }
}

/// The graph's name in the run dir: its file name, unless that is hidden, reserved (the
/// binary, the pid file) or has a line break.
pub(super) fn remote_name(file: &Path) -> Result<String, Error> {
    let bad = |reason| Error::GraphName {
        file: file.to_path_buf(),
        reason,
    };
    let name = file
        .file_name()
        .ok_or_else(|| bad("it has no file name"))?
        .to_str()
        .ok_or_else(|| bad("it is not valid UTF-8"))?;
    if name.starts_with('.') {
        return Err(bad("hidden names are reserved for temporary files"));
    }
    if matches!(name, "mgmt" | PID_FILE) {
        return Err(bad("the name is reserved for the binary and its pid file"));
    }
    if name.contains(['\n', '\r']) {
        return Err(bad("it contains a line break"));
    }
    Ok(name.to_string())
}

/// Checks a name the caller gives for a file in the run dir (an extra file, a file the child's
/// command line names): what `remote_name` asks of a graph's, and a plain name (no `/`).
pub(super) fn plain_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.contains('/') || name == ".." {
        return Err(Error::GraphName {
            file: PathBuf::from(name),
            reason: "a file in the run dir needs a plain file name",
        });
    }
    remote_name(Path::new(name)).map(|_| ())
}

/// Checks an extra file's name: a plain name, and not the graph's own.
fn extra_name(name: &str, graph: &str) -> Result<(), Error> {
    if name == graph {
        return Err(Error::GraphName {
            file: PathBuf::from(name),
            reason: "an extra file cannot have the graph's name",
        });
    }
    plain_name(name)
}

pub(super) async fn run_host(
    shared: Arc<Shared>,
    mut t: Target,
    mut extras: TargetExtras,
    cancel: CancellationToken,
) -> HostReport {
    let start = Instant::now();
    let mut p = Progress {
        bytes_sent: 0,
        cache: CacheUse::Unknown,
        run_dir: None,
        as_root: false,
    };
    let span = tracing::info_span!("remote", host = %t.hostname);
    let (outcome, exit, ran) = tracing::Instrument::instrument(
        host_main(&shared, &mut t, &mut extras, &cancel, &mut p),
        span,
    )
    .await;
    let host = t.hostname.clone();
    if let HostOutcome::Failed { step, error } = &outcome {
        shared
            .emit(RemoteEvent::Failed {
                host: host.clone(),
                step: *step,
                error: error.clone(),
            })
            .await;
    }
    // A setup failure already announced its state while holding the setup slot.
    let state = match &outcome {
        HostOutcome::Failed { .. } if ran => Some(HostState::Failed),
        HostOutcome::Failed { .. } => None,
        _ => Some(HostState::Done),
    };
    if let Some(state) = state {
        shared
            .emit(RemoteEvent::State {
                host: host.clone(),
                state,
            })
            .await;
    }
    HostReport {
        host,
        outcome,
        exit,
        bytes_sent: p.bytes_sent,
        cache: p.cache,
        duration: start.elapsed(),
        run_dir: p.run_dir,
    }
}

async fn host_main(
    shared: &Shared,
    t: &mut Target,
    extras: &mut TargetExtras,
    cancel: &CancellationToken,
    p: &mut Progress,
) -> (HostOutcome, Option<ChildExit>, bool) {
    let permit = tokio::select! {
        // A run cancelled before its turn must not start connecting.
        biased;
        _ = cancel.cancelled() => return (HostOutcome::Cancelled, None, false),
        p = shared.setup.acquire() => match p {
            Ok(p) => p,
            Err(_) => return (HostOutcome::Cancelled, None, false),
        },
    };
    let host = t.hostname.clone();
    shared
        .emit(RemoteEvent::State {
            host: host.clone(),
            state: HostState::Connecting,
        })
        .await;
    if t.url.has_password() {
        let message = format!(
            "the address of {host} ({}) contains a password; prefer keys or an ssh-agent",
            t.url
        );
        // The event carries it to the user; a log line as well would print it twice.
        tracing::debug!("{message}");
        shared
            .emit(RemoteEvent::Warning {
                host: host.clone(),
                message,
            })
            .await;
    }
    let session = match cancellable(
        cancel,
        Step::Connect,
        Session::connect(&host, &t.url, &shared.opts, Some(shared.cfg.store_addr)),
    )
    .await
    {
        Ok(s) => s,
        Err(stop) => {
            return finish_setup_failure(shared, &host, stop, permit).await;
        }
    };
    // Fresh markers per host; the password (if any) is the run's.
    let sudo = extras
        .sudo
        .then(|| Sudo::new(shared.cfg.sudo_password.clone()));
    let started = setup(shared, &session, t, extras, cancel, p, sudo.as_ref()).await;
    let running = match started {
        Ok(r) => r,
        Err(stop) => {
            let stop = match stop {
                Stop::Failed(step, e) => Stop::Failed(step, session.explain(e)),
                other => other,
            };
            if let Err(e) = cleanup(&session, p, None, true, sudo.as_ref()).await {
                warn(shared, &host, format!("cleanup failed too: {e}")).await;
            }
            session.close().await;
            return finish_setup_failure(shared, &host, stop, permit).await;
        }
    };
    // Announce Running before giving the setup slot away, so an observer counting states
    // never sees more than `cconns` hosts in setup.
    shared
        .emit(RemoteEvent::State {
            host: host.clone(),
            state: HostState::Running,
        })
        .await;
    drop(permit);
    let (outcome, exit, pid) = supervise(
        shared,
        &session,
        t,
        extras,
        cancel,
        p,
        running,
        sudo.as_ref(),
    )
    .await;
    // Whatever the child's channel made of it (no exit status, a stop that got no answer),
    // a connection that died of silence is what happened to this host.
    let outcome = if session.went_silent() {
        HostOutcome::Failed {
            step: match outcome {
                HostOutcome::Failed { step, .. } => step,
                _ => Step::Run,
            },
            error: Arc::new(Error::Silent {
                host: host.clone(),
                secs: crate::session::SILENCE.as_secs(),
            }),
        }
    } else {
        outcome
    };
    let cleaned = cleanup(
        &session,
        p,
        pid,
        shared.cfg.force.is_cancelled(),
        sudo.as_ref(),
    )
    .await;
    let outcome = with_cleanup(shared, &host, outcome, cleaned).await;
    session.close().await;
    (outcome, exit, true)
}

async fn finish_setup_failure(
    shared: &Shared,
    host: &str,
    stop: Stop,
    permit: tokio::sync::SemaphorePermit<'_>,
) -> (HostOutcome, Option<ChildExit>, bool) {
    let outcome = match stop {
        Stop::Cancelled => HostOutcome::Cancelled,
        Stop::Failed(step, e) => HostOutcome::Failed {
            step,
            error: Arc::new(e),
        },
    };
    if matches!(outcome, HostOutcome::Failed { .. }) {
        shared
            .emit(RemoteEvent::State {
                host: host.to_string(),
                state: HostState::Failed,
            })
            .await;
    }
    drop(permit);
    (outcome, None, false)
}

/// The running child: its channel and where its files are.
pub(super) struct Running {
    pub channel: russh::Channel<russh::client::Msg>,
    pub run_dir: String,
    /// The graph's name in the run dir.
    pub name: String,
    /// What came on the channel while sudo was starting the child (empty without sudo).
    pub early: Early,
}

async fn setup(
    shared: &Shared,
    s: &Session,
    t: &Target,
    extras: &TargetExtras,
    cancel: &CancellationToken,
    p: &mut Progress,
    sudo: Option<&Sudo>,
) -> Result<Running, Stop> {
    let cfg = &shared.cfg;
    let fail = |step| move |e| Stop::Failed(step, e);
    let name = remote_name(&t.file).map_err(fail(Step::RunDir))?;
    let mut extra_names = std::collections::BTreeSet::new();
    for f in &extras.files {
        extra_name(&f.name, &name).map_err(fail(Step::RunDir))?;
        if !extra_names.insert(f.name.as_str()) {
            return Err(Stop::Failed(
                Step::RunDir,
                Error::GraphName {
                    file: PathBuf::from(&f.name),
                    reason: "two extra files have this name",
                },
            ));
        }
    }
    shared
        .emit(RemoteEvent::State {
            host: t.hostname.clone(),
            state: HostState::Copying,
        })
        .await;
    // The graph and every extra file go with the probe: one exec.
    let seed: Vec<SeedFile<'_>> = std::iter::once(SeedFile {
        name: &name,
        bytes: &t.graph,
        mode: 0o600,
    })
    .chain(extras.files.iter().map(|f| SeedFile {
        name: &f.name,
        bytes: &f.bytes,
        mode: f.mode,
    }))
    .collect();
    let probe = cancellable(
        cancel,
        Step::Probe,
        upload::probe(s, &cfg.binary_hash, cfg.caching, &cfg.tmp_prefix, &seed),
    )
    .await?;
    p.bytes_sent += seed.iter().map(|f| f.bytes.len() as u64).sum::<u64>();
    p.run_dir = Some(probe.run_dir.clone());
    if probe.swept > 0 {
        tracing::info!(
            "removed {} stale run dir(s) or upload temp file(s) left by earlier runs",
            probe.swept
        );
    }
    p.cache = match (cfg.caching, probe.hit) {
        (false, _) => CacheUse::Disabled,
        (true, true) => CacheUse::Hit,
        (true, false) => CacheUse::Miss,
    };
    if !probe.hit {
        let bytes = shared.binary().await.map_err(fail(Step::Upload))?;
        let copied = cancellable(
            cancel,
            Step::Upload,
            upload::upload_binary(s, &probe.bin_dir, &probe.conn, &bytes, &cfg.binary_hash),
        )
        .await;
        match copied {
            Ok(n) => p.bytes_sent += n,
            Err(e) => {
                p.cache = CacheUse::CopyFailed;
                return Err(e);
            }
        }
    }
    let port = cancellable(cancel, Step::Tunnel, s.reverse_tunnel()).await?;
    let stamp = cfg.caching.then(|| upload::stamp_path(&probe.bin_dir));
    let cx = ChildContext {
        hostname: &t.hostname,
        run_dir: &probe.run_dir,
        graph: &name,
        store_port: port,
    };
    let argv: Vec<String> = cfg.child_args.iter().map(|a| a.resolve(&cx)).collect();
    let cmd = scripts::child_command(
        &format!("{}/mgmt", probe.bin_dir),
        stamp.as_deref(),
        &cfg.binary_hash,
        &probe.run_dir,
        &argv,
        sudo.map(Sudo::words).as_deref(),
    );
    let mut channel = cancellable(cancel, Step::Exec, async {
        let ch = s
            .handle
            .channel_open_session()
            .await
            .map_err(Error::ssh(&s.label, Step::Exec))?;
        ch.exec(true, sh(&cmd))
            .await
            .map_err(Error::ssh(&s.label, Step::Exec))?;
        Ok(ch)
    })
    .await?;
    let early = match sudo {
        None => Early::default(),
        Some(sudo) => {
            p.as_root = true;
            let started =
                cancellable(cancel, Step::Sudo, start_as_root(s, &mut channel, sudo)).await;
            if let Err(Stop::Failed(..)) = &started {
                // It never started: nothing runs as root.
                p.as_root = false;
                let _ = channel.close().await;
            }
            started?
        }
    };
    Ok(Running {
        channel,
        run_dir: probe.run_dir,
        name,
        early,
    })
}

/// Sees the child through sudo (see `sudo.rs` for the protocol): the password written once
/// after sudo's prompt, nothing else until sudo has started the child. Fails at `Step::Sudo`
/// when sudo refuses, or ends without starting it; at `Step::Exec` when the wrapper refused
/// the binary before sudo ran.
async fn start_as_root(
    s: &Session,
    ch: &mut russh::Channel<russh::client::Msg>,
    sudo: &Sudo,
) -> Result<Early, Error> {
    match sudo::start(s, ch, sudo).await {
        Ok(early) => Ok(early),
        Err(NotStarted::Failed(e)) => Err(e),
        Err(NotStarted::Ended {
            early,
            pending,
            status,
        }) => {
            // The wrapper's own refusal of the binary comes before sudo (see `child_command`).
            let refusal = early
                .said
                .iter()
                .find_map(|l| l.strip_prefix(WRAPPER_PREFIX));
            match (&status, refusal) {
                (Some(ChildExit::Code(126)), Some(said)) => Err(Error::Protocol {
                    host: s.label.clone(),
                    step: Step::Exec,
                    message: format!("refused to start: {said}; it was not run"),
                }),
                _ => Err(sudo::failure(s, &early.said, &pending, status.as_ref())),
            }
        }
    }
}

/// Stops a child that may still run (a no-op when it is gone) and removes the run dir (with
/// an uncached binary), in one exec: as root when the child may run as root. A host that went
/// silent is not asked (its child ends by itself once its store is gone, and the next run
/// sweeps its dir).
async fn cleanup(
    s: &Session,
    p: &Progress,
    pid: Option<Pid>,
    force: bool,
    sudo: Option<&Sudo>,
) -> Result<(), Error> {
    let Some(dir) = &p.run_dir else {
        return Ok(());
    };
    if s.went_silent() {
        return Ok(());
    }
    let script = scripts::cleanup_script(pid.as_ref(), dir, force);
    let what = "cleanup (stopping the child, removing the run dir)";
    let user_cmd = sh(&script);
    let as_user = || s.run_ok(what, &user_cmd, None, Step::Cleanup);
    let done = match sudo.filter(|_| p.as_root) {
        Some(sudo) => {
            match sudo::run_ok_as_root(s, sudo, what, &script, Step::Cleanup).await {
                // sudo itself failed: what the login user can remove still goes; the error
                // stays (a root child or root's files may be left).
                Err(e @ (Error::Sudo { .. } | Error::SudoRefused { .. })) => {
                    let _ = as_user().await;
                    Err(e)
                }
                r => r,
            }
        }
        None => as_user().await,
    };
    done.map(|_| ()).map_err(|e| s.explain(e))
}

/// The host's outcome once its cleanup is known: a run that ended well but could not clean up
/// failed (at cleanup); an earlier failure stays the outcome and the cleanup's is a warning.
async fn with_cleanup(
    shared: &Shared,
    host: &str,
    outcome: HostOutcome,
    cleaned: Result<(), Error>,
) -> HostOutcome {
    match (cleaned, outcome) {
        (Ok(()), o) => o,
        (Err(e), HostOutcome::Failed { step, error }) => {
            warn(shared, host, format!("cleanup failed too: {e}")).await;
            HostOutcome::Failed { step, error }
        }
        (Err(e), _) => HostOutcome::Failed {
            step: Step::Cleanup,
            error: Arc::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_names() {
        assert_eq!(remote_name(Path::new("/a/b.yaml")).unwrap(), "b.yaml");
        assert_eq!(remote_name(Path::new("store.cred")).unwrap(), "store.cred");
        assert!(remote_name(Path::new("/a/.b")).is_err());
        assert!(remote_name(Path::new("mgmt.pid")).is_err());
        assert!(remote_name(Path::new("/x/mgmt")).is_err());
        assert!(remote_name(Path::new("/")).is_err());
    }

    #[test]
    fn extra_names() {
        assert!(extra_name("sub-1-l.yaml", "g.yaml").is_ok());
        assert!(extra_name("store.cred", "g.yaml").is_ok());
        assert!(extra_name("g.yaml", "g.yaml").is_err());
        assert!(extra_name("a/b", "g.yaml").is_err());
        assert!(extra_name("mgmt.pid", "g.yaml").is_err());
        assert!(extra_name(".x", "g.yaml").is_err());
        assert!(extra_name("..", "g.yaml").is_err());
        assert!(extra_name("", "g.yaml").is_err());
    }
}
