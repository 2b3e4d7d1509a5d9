//! Running mgmt on a fleet of hosts: per host one SSH connection carrying connect, cache
//! probe, upload, run dir, tunnel, exec, live graph updates and cleanup; at most `cconns` hosts
//! in the setup phase at once; one failing host never stops the others.
//!
//! Shutdown order per host: close the child's stdin, wait `grace` for it to exit, kill it by
//! its recorded pid (TERM, then KILL), remove the run dir, close the connection. A `force`
//! cancel skips the grace period. This module knows nothing of graphs or the store: graph files
//! are bytes, the store is an address. It never puts the store secret in argv or logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use tokio::sync::{OnceCell, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::{ChildExit, Error, Step};
use crate::session::{ConnectOptions, Session};
use crate::ssh_config::{self, SshConfig};
use crate::upload::{self, quote, sh};
use crate::url::RemoteUrl;

/// Flags passed on to the remote `mgmt run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildArgs {
    pub noop: bool,
    pub no_watch: bool,
    /// `--converged-timeout=T` when set.
    pub converged_timeout: Option<i64>,
    /// The initiator's depth; the child gets `depth + 1`.
    pub depth: u32,
}

/// Settings shared by every host of a run.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Hosts in the setup phase (connect, copy, tunnel, exec) at once; at least 1.
    pub cconns: usize,
    /// Keep the binary in `~/.cache/mgmt/bin/<sha256>/` on the host.
    pub caching: bool,
    /// Remote directory in which `mgmt.XXXXXXXX` run dirs are made.
    pub tmp_prefix: String,
    /// The executable to run remotely (normally the initiator's own static binary).
    pub binary: PathBuf,
    /// Lowercase hex sha256 of `binary`; empty means compute it.
    pub binary_hash: String,
    /// Overrides UserKnownHostsFile and `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    pub accept_new_host_keys: bool,
    pub ssh_config: Option<PathBuf>,
    /// Identity files tried before the ssh_config ones and the defaults.
    pub identities: Vec<PathBuf>,
    /// The ssh-agent socket whose keys are tried first (`new` takes SSH_AUTH_SOCK).
    pub agent_socket: Option<PathBuf>,
    /// Try `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.
    pub default_identities: bool,
    pub allow_interactive: bool,
    pub child: ChildArgs,
    /// The initiator's store; forwarded connections from every host go there.
    pub store_addr: SocketAddr,
    pub connect_timeout: Duration,
    /// How long a child may take to exit after its stdin is closed before it is killed.
    pub grace: Duration,
    /// Cancelled on the second ^C: skip the grace period.
    pub force: CancellationToken,
}

impl FleetConfig {
    /// Defaults as the CLI wants them: caching on, `/tmp`, `~/.ssh/config` if it exists, the
    /// ssh-agent at SSH_AUTH_SOCK.
    pub fn new(binary: PathBuf, binary_hash: String, store_addr: SocketAddr) -> Self {
        let ssh_config = ssh_config::home_dir()
            .map(|h| h.join(".ssh/config"))
            .filter(|p| p.exists());
        FleetConfig {
            cconns: 8,
            caching: true,
            tmp_prefix: "/tmp".to_string(),
            binary,
            binary_hash,
            known_hosts: None,
            accept_new_host_keys: false,
            ssh_config,
            identities: Vec::new(),
            agent_socket: std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            default_identities: true,
            allow_interactive: false,
            child: ChildArgs::default(),
            store_addr,
            connect_timeout: Duration::from_secs(15),
            grace: Duration::from_secs(5),
            force: CancellationToken::new(),
        }
    }
}

/// One host to run a graph on.
pub struct Target {
    /// The graph file on the initiator; its file name is kept on the host.
    pub file: PathBuf,
    pub graph: Vec<u8>,
    pub url: RemoteUrl,
    /// The mgmt hostname of the child (`--hostname`); also the host's name in events.
    pub hostname: String,
    /// The child's store credentials, written to `<rundir>/store.cred` (mode 0600) as
    /// `user=<store_user>\npassword=<store_secret>\n` and named by `--store-credentials`;
    /// never on a command line. Neither may contain a line break.
    pub store_user: String,
    pub store_secret: String,
    /// New contents of the graph file; each one is copied over and announced.
    pub updates: Option<mpsc::Receiver<Vec<u8>>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("file", &self.file)
            .field("url", &self.url)
            .field("hostname", &self.hostname)
            .field("store_user", &self.store_user)
            .field("store_secret", &"***")
            .finish_non_exhaustive()
    }
}

/// A file put next to the graph in a host's run dir: more graph files and credentials that the
/// host hands on to hosts of its own (hierarchical runs). To this crate it is only a name and
/// bytes; the bytes travel on stdin, never in argv.
#[derive(Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// A plain file name (no `/`), distinct from the graph's and from the reserved names.
    pub name: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for ExtraFile {
    // By hand: extra files may hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraFile")
            .field("name", &self.name)
            .field("len", &self.bytes.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// What a target carries besides its graph (see [`run_fleet_with`]).
#[derive(Debug, Default)]
pub struct TargetExtras {
    /// Written into the run dir before the child starts.
    pub files: Vec<ExtraFile>,
    /// New versions of extra files (by name), copied over while the child runs.
    pub updates: Option<mpsc::Receiver<ExtraFile>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Connecting,
    Copying,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
pub enum RemoteEvent {
    State {
        host: String,
        state: HostState,
    },
    /// One line the child printed (stdout or stderr), without the line break.
    Output {
        host: String,
        line: String,
    },
    /// A live update was copied: "copied new graph definition: FILE".
    GraphCopied {
        host: String,
        file: PathBuf,
    },
    /// Something the user should know that does not fail the host (a password in a url, a
    /// failed live update, a run dir that could not be removed).
    Warning {
        host: String,
        message: String,
    },
    Failed {
        host: String,
        step: Step,
        error: Arc<Error>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
    /// `caching = false`: uploaded into the run dir.
    Disabled,
    /// The run ended before the probe.
    Unknown,
}

#[derive(Debug, Clone)]
pub enum HostOutcome {
    /// The child ran and ended (by itself with status 0, or because we stopped it).
    Done,
    /// Cancelled before the child started; nothing is left on the host.
    Cancelled,
    Failed {
        step: Step,
        error: Arc<Error>,
    },
}

#[derive(Debug, Clone)]
pub struct HostReport {
    pub host: String,
    pub outcome: HostOutcome,
    pub exit: Option<ChildExit>,
    pub bytes_sent: u64,
    pub cache: CacheUse,
    pub duration: Duration,
    /// The run dir on the host, once made (it is removed at the end).
    pub run_dir: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// In the order of the targets.
    pub hosts: Vec<HostReport>,
}

impl FleetReport {
    pub fn all_ok(&self) -> bool {
        self.hosts
            .iter()
            .all(|h| !matches!(h.outcome, HostOutcome::Failed { .. }))
    }
}

/// Lowercase hex sha256 of a file, as `FleetConfig::binary_hash` wants it.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf)? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Ok(hex::encode(h.finalize()))
}

struct Shared {
    cfg: FleetConfig,
    opts: ConnectOptions,
    setup: Semaphore,
    binary: OnceCell<Result<Arc<Vec<u8>>, Arc<std::io::Error>>>,
    events: mpsc::Sender<RemoteEvent>,
}

impl Shared {
    async fn emit(&self, ev: RemoteEvent) {
        // A caller that stopped listening must not stop the run.
        let _ = self.events.send(ev).await;
    }

    async fn binary(&self) -> Result<Arc<Vec<u8>>, Error> {
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
    mut cfg: FleetConfig,
    targets: Vec<(Target, TargetExtras)>,
    cancel: CancellationToken,
    events: mpsc::Sender<RemoteEvent>,
) -> FleetReport {
    let config = match &cfg.ssh_config {
        Some(p) => match SshConfig::load(p) {
            Ok(c) => Some(Arc::new(c)),
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
    let n = targets.len();
    for (i, (t, extras)) in targets.into_iter().enumerate() {
        let shared = shared.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move { (i, run_host(shared, t, extras, cancel).await) });
    }
    let mut reports: Vec<Option<HostReport>> = vec![None; n];
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((i, rep)) => reports[i] = Some(rep),
            // A panicking host task is a bug; its slot stays empty and is reported below.
            Err(e) => tracing::error!("remote host task failed: {e}"),
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

/// What a host has on the remote side so far, so cleanup knows what to undo.
struct Progress {
    host: String,
    bytes_sent: u64,
    cache: CacheUse,
    run_dir: Option<String>,
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

fn remote_name(file: &Path) -> Result<String, Error> {
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
    if matches!(name, "mgmt" | "store.cred" | "mgmt.pid") {
        return Err(bad(
            "the name is reserved for the binary and the credentials",
        ));
    }
    if name.contains(['\n', '\r']) {
        return Err(bad("it contains a line break"));
    }
    Ok(name.to_string())
}

async fn run_host(
    shared: Arc<Shared>,
    mut t: Target,
    mut extras: TargetExtras,
    cancel: CancellationToken,
) -> HostReport {
    let start = Instant::now();
    let mut p = Progress {
        host: t.hostname.clone(),
        bytes_sent: 0,
        cache: CacheUse::Unknown,
        run_dir: None,
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
    let started = setup(shared, &session, t, extras, cancel, p).await;
    let running = match started {
        Ok(r) => r,
        Err(stop) => {
            cleanup(shared, &session, p, None, true).await;
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
    let (outcome, exit, pid) = supervise(shared, &session, t, extras, cancel, p, running).await;
    cleanup(shared, &session, p, pid, shared.cfg.force.is_cancelled()).await;
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

/// Checks an extra file's name: what `remote_name` asks of a graph's, a plain name (no `/`),
/// and not the graph's own.
fn extra_name(name: &str, graph: &str) -> Result<(), Error> {
    let bad = |reason| Error::GraphName {
        file: PathBuf::from(name),
        reason,
    };
    if name.is_empty() || name.contains('/') || name == ".." {
        return Err(bad("an extra file needs a plain file name"));
    }
    if name == graph {
        return Err(bad("an extra file cannot have the graph's name"));
    }
    remote_name(Path::new(name)).map(|_| ())
}

/// The running child: its channel and where its files are.
struct Running {
    channel: russh::Channel<russh::client::Msg>,
    run_dir: String,
    name: String,
}

async fn setup(
    shared: &Shared,
    s: &Session,
    t: &Target,
    extras: &TargetExtras,
    cancel: &CancellationToken,
    p: &mut Progress,
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
    if t.store_user.contains(['\n', '\r']) || t.store_secret.contains(['\n', '\r']) {
        return Err(Stop::Failed(
            Step::RunDir,
            Error::Credentials {
                host: t.hostname.clone(),
            },
        ));
    }
    shared
        .emit(RemoteEvent::State {
            host: t.hostname.clone(),
            state: HostState::Copying,
        })
        .await;
    let cred = format!("user={}\npassword={}\n", t.store_user, t.store_secret);
    let seed = upload::Seed {
        graph_name: &name,
        graph: &t.graph,
        cred: cred.as_bytes(),
    };
    let probe = cancellable(
        cancel,
        Step::Probe,
        upload::probe(s, &cfg.binary_hash, cfg.caching, &cfg.tmp_prefix, &seed),
    )
    .await?;
    p.bytes_sent += (t.graph.len() + cred.len()) as u64;
    p.run_dir = Some(probe.run_dir.clone());
    p.cache = match (cfg.caching, probe.hit) {
        (false, _) => CacheUse::Disabled,
        (true, true) => CacheUse::Hit,
        (true, false) => CacheUse::Miss,
    };
    if !probe.hit {
        let bytes = shared.binary().await.map_err(fail(Step::Upload))?;
        p.bytes_sent += cancellable(
            cancel,
            Step::Upload,
            upload::upload_binary(s, &probe.bin_dir, &bytes, &cfg.binary_hash),
        )
        .await?;
    }
    for f in &extras.files {
        cancellable(
            cancel,
            Step::RunDir,
            upload::write_file(s, &probe.run_dir, &f.name, &f.bytes, f.mode, Step::RunDir),
        )
        .await?;
        p.bytes_sent += f.bytes.len() as u64;
    }
    let port = cancellable(cancel, Step::Tunnel, s.reverse_tunnel()).await?;
    let stamp = cfg.caching.then(|| upload::stamp_path(&probe.bin_dir));
    let cmd = child_command(
        &format!("{}/mgmt", probe.bin_dir),
        stamp.as_deref(),
        &cfg.binary_hash,
        &probe.run_dir,
        &name,
        &t.hostname,
        port,
        &cfg.child,
    );
    let channel = cancellable(cancel, Step::Exec, async {
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
    Ok(Running {
        channel,
        run_dir: probe.run_dir,
        name,
    })
}

/// How the child's wrapper starts what it says about the binary it refuses to start.
const WRAPPER_PREFIX: &str = "mgmt-remote: ";

/// The remote command line. The wrapper prints the pid (and its start time, so a recycled pid
/// is never killed) before anything else, and refuses a binary whose hash is wrong: this is the
/// check every start goes through. With `stamp` (the cache's, see `upload::stamp_path`) it then
/// records which file it verified, taken before hashing so a change during the hash shows, and
/// written only when it differs (a temp file and a rename; failures are ignored: the stamp only
/// saves the next probe a hash); a binary that fails the check loses its stamp.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; each is a distinct piece of the command line"
)]
fn child_command(
    bin: &str,
    stamp: Option<&str>,
    hash: &str,
    run_dir: &str,
    name: &str,
    hostname: &str,
    port: u32,
    child: &ChildArgs,
) -> String {
    let mut args = vec![
        "run".to_string(),
        "--hostname".to_string(),
        quote(hostname),
        "--no-server".to_string(),
        "--seeds".to_string(),
        format!("http://127.0.0.1:{port}"),
        "--store-credentials".to_string(),
        quote(&format!("{run_dir}/store.cred")),
        "--yaml".to_string(),
        quote(&format!("{run_dir}/{name}")),
        "--depth".to_string(),
        (child.depth + 1).to_string(),
    ];
    if child.noop {
        args.push("--noop".to_string());
    }
    if child.no_watch {
        args.push("--no-watch".to_string());
    }
    if let Some(t) = child.converged_timeout {
        args.push(format!("--converged-timeout={t}"));
    }
    let bin_q = quote(bin);
    let pid_file = quote(&format!("{run_dir}/mgmt.pid"));
    let (stat, forget, record) = match stamp {
        Some(stamp) => {
            let stamp = quote(stamp);
            let stat_id = upload::STAT_ID;
            (
                format!("v=$({stat_id} {bin_q} 2>/dev/null) || v=; "),
                // A wrong binary must not keep a stamp: the next probe hashes it and replaces it.
                format!("rm -f {stamp}; "),
                format!(
                    "if [ -n \"$v\" ]; then w=; if [ -f {stamp} ]; then read -r w < {stamp} || w=; fi; \
                     [ \"$v\" = \"$w\" ] || {{ printf '%s\\n' \"$v\" > {stamp}.$$ && mv -f {stamp}.$$ {stamp}; }} 2>/dev/null; fi; "
                ),
            )
        }
        None => (String::new(), String::new(), String::new()),
    };
    format!(
        "st=$(sed 's/^.*) //' /proc/$$/stat | cut -d' ' -f20); echo \"$$ $st\" > {pid_file}; \
         echo \"mgmt-pid: $$ $st\"; {stat}\
         if ! {check}; then \
         echo \"{WRAPPER_PREFIX}\"{bin_q}\" does not match sha256 {hash}\" >&2; {forget}exit 126; fi; {record}\
         exec {bin_q} {}",
        args.join(" "),
        check = upload::sha256_is(&bin_q, hash),
    )
}

/// Splits channel bytes into lines; keeps the unfinished tail.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..i]);
            lines.push(line.trim_end_matches('\r').to_string());
        }
        lines
    }

    fn rest(&mut self) -> Option<String> {
        (!self.buf.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned())
    }
}

/// The recorded child: pid and its start time from /proc.
type Pid = (u32, String);

fn parse_pid(line: &str) -> Option<Pid> {
    let rest = line.strip_prefix("mgmt-pid: ")?;
    let mut it = rest.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?;
    start
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| (pid, start.to_string()))
}

async fn supervise(
    shared: &Shared,
    s: &Session,
    t: &mut Target,
    extras: &mut TargetExtras,
    cancel: &CancellationToken,
    p: &mut Progress,
    mut r: Running,
) -> (HostOutcome, Option<ChildExit>, Option<Pid>) {
    let host = t.hostname.clone();
    let force = shared.cfg.force.clone();
    let mut out = Lines::default();
    let mut err = Lines::default();
    let mut pid: Option<Pid> = None;
    let mut first_line = true;
    let mut exit: Option<ChildExit> = None;
    let mut stopping = false;
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut deadline = far;
    let mut updates = t.updates.take();
    let mut extra_updates = extras.updates.take();
    let mut exec_refused = false;
    // What the wrapper said when it refused to start the binary (see `child_command`).
    let mut wrapper_refusal: Option<String> = None;
    loop {
        tokio::select! {
            msg = r.channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    for line in out.push(&data) {
                        if first_line {
                            first_line = false;
                            if let Some(found) = parse_pid(&line) {
                                pid = Some(found);
                                continue;
                            }
                        }
                        shared.emit(RemoteEvent::Output { host: host.clone(), line }).await;
                    }
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    for line in err.push(&data) {
                        if pid.is_some() && wrapper_refusal.is_none()
                            && let Some(said) = line.strip_prefix(WRAPPER_PREFIX)
                        {
                            wrapper_refusal = Some(said.to_string());
                        }
                        shared.emit(RemoteEvent::Output { host: host.clone(), line }).await;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(ChildExit::Code(exit_status)),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit = Some(ChildExit::Signal(format!("{signal_name:?}")))
                }
                Some(ChannelMsg::Failure) => { exec_refused = true; break; }
                Some(_) => {}
                None => break,
            },
            _ = cancel.cancelled(), if !stopping => {
                stopping = true;
                // The child watches its stdin: EOF is its cue to shut down cleanly.
                let _ = r.channel.eof().await;
                let grace = if force.is_cancelled() { Duration::ZERO } else { shared.cfg.grace };
                deadline = tokio::time::Instant::now() + grace;
            }
            _ = force.cancelled(), if stopping && deadline > tokio::time::Instant::now() => {
                deadline = tokio::time::Instant::now();
            }
            _ = tokio::time::sleep_until(deadline), if stopping => {
                if let Err(e) = kill(s, pid.as_ref(), &r.run_dir, force.is_cancelled()).await {
                    warn(shared, &host, format!("cannot stop the child on {host}: {e}")).await;
                }
                // If the channel still does not close (lost connection), give up on it.
                tokio::select! {
                    _ = drain(&mut r.channel, &mut exit) => {}
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                break;
            }
            u = recv_update(&mut updates) => match u {
                Some(bytes) => {
                    match upload::write_file(s, &r.run_dir, &r.name, &bytes, 0o600, Step::Update).await {
                        Ok(()) => {
                            p.bytes_sent += bytes.len() as u64;
                            tracing::debug!("copied new graph definition: {}", t.file.display());
                            shared.emit(RemoteEvent::GraphCopied { host: host.clone(), file: t.file.clone() }).await;
                        }
                        Err(e) => warn(shared, &host, format!("cannot copy new graph definition {}: {e}", t.file.display())).await,
                    }
                }
                None => updates = None,
            },
            u = recv_update(&mut extra_updates) => match u {
                Some(f) => {
                    match upload::write_file(s, &r.run_dir, &f.name, &f.bytes, f.mode, Step::Update).await {
                        Ok(()) => {
                            p.bytes_sent += f.bytes.len() as u64;
                            tracing::debug!("copied new version of {}", f.name);
                            shared.emit(RemoteEvent::GraphCopied { host: host.clone(), file: PathBuf::from(&f.name) }).await;
                        }
                        Err(e) => warn(shared, &host, format!("cannot copy new version of {}: {e}", f.name)).await,
                    }
                }
                None => extra_updates = None,
            },
        }
    }
    for line in [out.rest(), err.rest()].into_iter().flatten() {
        shared
            .emit(RemoteEvent::Output {
                host: host.clone(),
                line,
            })
            .await;
    }
    let outcome = if exec_refused {
        HostOutcome::Failed {
            step: Step::Exec,
            error: Arc::new(Error::Protocol {
                host: host.clone(),
                step: Step::Exec,
                message: "the server refused to run the child".to_string(),
            }),
        }
    } else if stopping || exit == Some(ChildExit::Code(0)) {
        HostOutcome::Done
    } else if let (Some(ChildExit::Code(126)), Some(said)) = (&exit, wrapper_refusal) {
        HostOutcome::Failed {
            step: Step::Exec,
            error: Arc::new(Error::Protocol {
                host: host.clone(),
                step: Step::Exec,
                message: format!("refused to start: {said}; it was not run"),
            }),
        }
    } else {
        HostOutcome::Failed {
            step: Step::Run,
            error: Arc::new(Error::ChildFailed {
                host: host.clone(),
                exit: exit.clone().unwrap_or(ChildExit::Unknown),
            }),
        }
    };
    (outcome, exit, pid)
}

async fn recv_update<T>(updates: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match updates {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn drain(ch: &mut russh::Channel<russh::client::Msg>, exit: &mut Option<ChildExit>) {
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::ExitStatus { exit_status } => *exit = Some(ChildExit::Code(exit_status)),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                *exit = Some(ChildExit::Signal(format!("{signal_name:?}")))
            }
            _ => {}
        }
    }
}

/// A warning about a host, for the user: as an event only (the binary prints events; a log
/// line as well would print it twice).
async fn warn(shared: &Shared, host: &str, message: String) {
    tracing::debug!("{message}");
    shared
        .emit(RemoteEvent::Warning {
            host: host.to_string(),
            message,
        })
        .await;
}

/// Shell that stops the child: TERM then KILL its process group, but only if the pid still
/// belongs to the process we started (same start time), since pids get recycled. Without a pid
/// from the output (cancelled right after exec), the pid file in the run dir is used.
///
/// The child's own commands (exec resources) run in process groups of their own, which a child
/// that had to be killed could not stop: when the child leads its session (sshd makes one per
/// exec channel), every process left in that session is killed too. While any of them lives,
/// the kernel cannot hand the session's id to a new process, so this never hits a stranger.
fn stop_script(pid: Option<&Pid>, run_dir: &str, force: bool) -> String {
    let tries = if force { 0 } else { 30 };
    let load = match pid {
        Some((p, st)) => format!("p={p}; st={st}"),
        None => format!(
            "p=; st=; {{ read -r p st < {}; }} 2>/dev/null; \
             case \"$p$st\" in *[!0-9]*) p= ;; esac",
            quote(&format!("{run_dir}/mgmt.pid"))
        ),
    };
    format!(
        "{load}; \
         alive() {{ f=$(sed 's/^.*) //' /proc/$p/stat 2>/dev/null) || return 1; set -- $f; \
         sid=$4; [ \"$1\" != Z ] && [ \"${{20}}\" = \"$st\" ]; }}; \
         if [ -n \"$p\" ] && alive; then \
           lead=$sid; \
           kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; \
           i=0; while [ $i -lt {tries} ] && alive; do sleep 0.1; i=$((i+1)); done; \
           if alive; then kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null; fi; \
           if [ \"$lead\" = \"$p\" ]; then \
             for f in /proc/[0-9]*/stat; do \
               g=$(sed 's/^.*) //' \"$f\" 2>/dev/null) || continue; set -- $g; \
               if [ \"$4\" = \"$p\" ]; then q=${{f#/proc/}}; kill -KILL \"${{q%/stat}}\" 2>/dev/null; fi; \
             done; \
           fi; \
         fi"
    )
}

async fn kill(s: &Session, pid: Option<&Pid>, run_dir: &str, force: bool) -> Result<(), Error> {
    let script = format!("{}; exit 0", stop_script(pid, run_dir, force));
    s.run_ok("stopping the child", &sh(&script), None, Step::Cleanup)
        .await?;
    Ok(())
}

/// Stops a child that may still run (a no-op when it is gone) and removes the run dir (with
/// an uncached binary), in one exec. Failures are warnings.
async fn cleanup(shared: &Shared, s: &Session, p: &Progress, pid: Option<Pid>, force: bool) {
    let Some(dir) = &p.run_dir else {
        return;
    };
    let script = format!(
        "{}; rm -rf -- {}",
        stop_script(pid.as_ref(), dir, force),
        quote(dir)
    );
    if let Err(e) = s
        .run_ok("run dir removal", &sh(&script), None, Step::Cleanup)
        .await
    {
        warn(shared, &p.host, format!("cannot remove {dir}: {e}")).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_keep_tail() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"a\r\nb"), vec!["a".to_string()]);
        assert_eq!(l.push(b"c\n\n"), vec!["bc".to_string(), String::new()]);
        assert_eq!(l.push(b"tail"), Vec::<String>::new());
        assert_eq!(l.rest().as_deref(), Some("tail"));
        assert_eq!(l.rest(), None);
    }

    #[test]
    fn pid_line() {
        assert_eq!(
            parse_pid("mgmt-pid: 42 1234"),
            Some((42, "1234".to_string()))
        );
        assert_eq!(parse_pid("mgmt-pid: 42"), None);
        assert_eq!(parse_pid("mgmt-pid: x 1"), None);
        assert_eq!(parse_pid("hello"), None);
    }

    #[test]
    fn graph_names() {
        assert_eq!(remote_name(Path::new("/a/b.yaml")).unwrap(), "b.yaml");
        assert!(remote_name(Path::new("/a/.b")).is_err());
        assert!(remote_name(Path::new("store.cred")).is_err());
        assert!(remote_name(Path::new("/")).is_err());
    }

    #[test]
    fn extra_names() {
        assert!(extra_name("sub-1-l.yaml", "g.yaml").is_ok());
        assert!(extra_name("g.yaml", "g.yaml").is_err());
        assert!(extra_name("a/b", "g.yaml").is_err());
        assert!(extra_name("store.cred", "g.yaml").is_err());
        assert!(extra_name(".x", "g.yaml").is_err());
        assert!(extra_name("", "g.yaml").is_err());
    }

    #[test]
    fn command_line() {
        let c = child_command(
            "/c/mgmt",
            Some("/c.verified"),
            "ab",
            "/tmp/mgmt.X",
            "g.yaml",
            "h1",
            4000,
            &ChildArgs {
                noop: true,
                no_watch: false,
                converged_timeout: Some(5),
                depth: 0,
            },
        );
        assert!(c.ends_with(
            "exec '/c/mgmt' run --hostname 'h1' --no-server --seeds http://127.0.0.1:4000 \
             --store-credentials '/tmp/mgmt.X/store.cred' --yaml '/tmp/mgmt.X/g.yaml' \
             --depth 1 --noop --converged-timeout=5"
        ));
    }
}
