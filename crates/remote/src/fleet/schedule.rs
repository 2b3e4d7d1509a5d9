//! Scheduling a fleet: one task per host, at most `cconns` of them in the setup phase at once
//! (the setup semaphore), the binary read once for all of them, and events and reports
//! gathered. One failing host never stops the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OnceCell, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::host::{plain_name, run_host};
use super::types::{
    CacheUse, ChildArg, FleetConfig, FleetReport, HostOutcome, HostReport, RemoteEvent, Target,
    TargetExtras, sha256_file,
};
use crate::error::{Error, Step};
use crate::session::ConnectOptions;
use crate::ssh_config::SshConfig;

/// What every host task of a fleet shares.
pub(super) struct Shared {
    pub cfg: FleetConfig,
    pub opts: ConnectOptions,
    /// One permit per host in the setup phase: `cconns` of them.
    pub setup: Semaphore,
    binary: OnceCell<Result<Arc<Vec<u8>>, Arc<std::io::Error>>>,
    events: mpsc::Sender<RemoteEvent>,
}

impl Shared {
    pub async fn emit(&self, ev: RemoteEvent) {
        // A caller that stopped listening must not stop the run.
        let _ = self.events.send(ev).await;
    }

    /// The binary's bytes, read on first use (only a cache miss needs them).
    pub async fn binary(&self) -> Result<Arc<Vec<u8>>, Error> {
        let path = self.cfg.binary.clone();
        self.binary
            .get_or_init(
                || async move { tokio::fs::read(&path).await.map(Arc::new).map_err(Arc::new) },
            )
            .await
            .clone()
            .map_err(|source| Error::Binary {
                path: self.cfg.binary.clone(),
                source,
            })
    }
}

/// A warning about a host, for the user: as an event only (the binary prints events; a log
/// line as well would print it twice).
pub(super) async fn warn(shared: &Shared, host: &str, message: String) {
    tracing::debug!("{message}");
    shared
        .emit(RemoteEvent::Warning {
            host: host.to_string(),
            message,
        })
        .await;
}

/// Runs every target until its child ends or `cancel` fires, and reports per host.
pub async fn run_fleet(
    cfg: FleetConfig,
    targets: Vec<Target>,
    cancel: CancellationToken,
    events: mpsc::Sender<RemoteEvent>,
) -> FleetReport {
    let targets = targets
        .into_iter()
        .map(|t| (t, TargetExtras::default()))
        .collect();
    run_fleet_with(cfg, targets, cancel, events).await
}

/// `run_fleet` where each target also gets extra files in its run dir (and updates of them).
pub async fn run_fleet_with(
    cfg: FleetConfig,
    targets: Vec<(Target, TargetExtras)>,
    cancel: CancellationToken,
    events: mpsc::Sender<RemoteEvent>,
) -> FleetReport {
    let (_none, late) = mpsc::channel(1);
    run_fleet_dynamic(cfg, targets, late, cancel, events).await
}

/// `run_fleet_with` that also takes targets while it runs (`late`; they share the setup
/// limit and the report). It ends when no host is left, whether or not `late` is still open.
pub async fn run_fleet_dynamic(
    mut cfg: FleetConfig,
    targets: Vec<(Target, TargetExtras)>,
    late: mpsc::Receiver<(Target, TargetExtras)>,
    cancel: CancellationToken,
    events: mpsc::Sender<RemoteEvent>,
) -> FleetReport {
    for a in &cfg.child_args {
        if let ChildArg::RunDirFile(name) = a
            && let Err(e) = plain_name(name)
        {
            return fail_all(targets, Step::Config, e, &events).await;
        }
    }
    let config = match &cfg.ssh_config {
        Some(p) => match SshConfig::load(p) {
            Ok(c) => Some(Arc::new(c.with_home(cfg.home.clone()))),
            Err(e) => return fail_all(targets, Step::Config, Error::from(e), &events).await,
        },
        None => None,
    };
    if cfg.binary_hash.is_empty() {
        let path = cfg.binary.clone();
        match tokio::task::spawn_blocking(move || sha256_file(&path)).await {
            Ok(Ok(h)) => cfg.binary_hash = h,
            Ok(Err(e)) => {
                let e = Error::Binary {
                    path: cfg.binary.clone(),
                    source: Arc::new(e),
                };
                return fail_all(targets, Step::Upload, e, &events).await;
            }
            Err(e) => {
                let e = Error::Binary {
                    path: cfg.binary.clone(),
                    source: Arc::new(std::io::Error::other(e.to_string())),
                };
                return fail_all(targets, Step::Upload, e, &events).await;
            }
        }
    }
    let opts = ConnectOptions {
        known_hosts: cfg.known_hosts.clone(),
        accept_new_host_keys: cfg.accept_new_host_keys,
        ssh_config: config,
        identities: cfg.identities.clone(),
        agent_socket: cfg.agent_socket.clone(),
        default_identities: cfg.default_identities,
        local_user: cfg.local_user.clone(),
        home: cfg.home.clone(),
        allow_interactive: cfg.allow_interactive,
        connect_timeout: cfg.connect_timeout,
    };
    let shared = Arc::new(Shared {
        setup: Semaphore::new(cfg.cconns.max(1)),
        cfg,
        opts,
        binary: OnceCell::new(),
        events,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut reports: Vec<Option<HostReport>> = Vec::new();
    let spawn = |tasks: &mut tokio::task::JoinSet<_>,
                 reports: &mut Vec<Option<HostReport>>,
                 t: Target,
                 mut extras: TargetExtras| {
        let i = reports.len();
        reports.push(None);
        let shared = shared.clone();
        let host_cancel = cancel.child_token();
        if let Some(stop) = extras.stop.take() {
            let hc = host_cancel.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => hc.cancel(),
                    _ = hc.cancelled() => {}
                }
                None
            });
        }
        tasks.spawn(async move {
            let report = run_host(shared, t, extras, host_cancel.clone()).await;
            // Ends the host's stop watcher (the token is this host's alone).
            host_cancel.cancel();
            Some((i, report))
        });
    };
    for (t, extras) in targets {
        spawn(&mut tasks, &mut reports, t, extras);
    }
    let mut late = Some(late);
    loop {
        let next_late = async {
            match late.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = tasks.join_next() => match r {
                None => break,
                Some(Ok(Some((i, rep)))) => reports[i] = Some(rep),
                // A stop watcher ended.
                Some(Ok(None)) => {}
                // A panicking host task is a bug; its slot stays empty and is reported below.
                Some(Err(e)) => tracing::error!("remote host task failed: {e}"),
            },
            t = next_late => match t {
                Some((t, extras)) if !cancel.is_cancelled() => {
                    spawn(&mut tasks, &mut reports, t, extras);
                }
                Some(_) => {}
                None => late = None,
            },
        }
    }
    FleetReport {
        hosts: reports.into_iter().flatten().collect(),
    }
}

async fn fail_all(
    targets: Vec<(Target, TargetExtras)>,
    step: Step,
    error: Error,
    events: &mpsc::Sender<RemoteEvent>,
) -> FleetReport {
    let error = Arc::new(error);
    let mut hosts = Vec::new();
    for (t, _) in targets {
        let _ = events
            .send(RemoteEvent::Failed {
                host: t.hostname.clone(),
                step,
                error: error.clone(),
            })
            .await;
        hosts.push(HostReport {
            host: t.hostname,
            outcome: HostOutcome::Failed {
                step,
                error: error.clone(),
            },
            exit: None,
            bytes_sent: 0,
            cache: CacheUse::Unknown,
            duration: Duration::ZERO,
            run_dir: None,
        });
    }
    FleetReport { hosts }
}
