//! One authenticated SSH connection to a host (possibly through ProxyJump hops), its host key
//! check, the reverse tunnel to the store, and small exec helpers used by every step.
//!
//! It knows nothing of what runs on the host. It must never accept an unverified host key
//! unless asked to learn new ones, never log secrets, and never leave tunnel tasks unowned.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, KeyboardInteractiveAuthResponse};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, MethodKind};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{ChildExit, Error, Step};
use crate::known_hosts::{self, HostKeyStatus};
use crate::prompt;
use crate::ssh_config::{SshConfig, StrictHostKeys};
use crate::url::{RemoteUrl, split_host_port};

/// What every connection needs to know, independent of the host.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    pub known_hosts: Option<PathBuf>,
    pub accept_new_host_keys: bool,
    pub ssh_config: Option<Arc<SshConfig>>,
    pub identities: Vec<PathBuf>,
    pub agent_socket: Option<PathBuf>,
    pub default_identities: bool,
    /// The login name when neither the address nor ssh_config names one.
    pub local_user: String,
    /// `~`: the default known_hosts and identities.
    pub home: Option<PathBuf>,
    pub allow_interactive: bool,
    pub connect_timeout: Duration,
}

/// A fully resolved hop: where to connect, as whom, and how to check its key.
#[derive(Clone)]
struct Endpoint {
    /// The name the user wrote (used in messages).
    label: String,
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    identity_files: Vec<PathBuf>,
    known_hosts: PathBuf,
    accept_new: bool,
    proxy_jump: Option<String>,
}

fn resolve(
    label: &str,
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    password: Option<&str>,
    opts: &ConnectOptions,
) -> Endpoint {
    let params = opts
        .ssh_config
        .as_ref()
        .map(|c| c.resolve(host))
        .unwrap_or_default();
    let known_hosts = opts
        .known_hosts
        .clone()
        .or(params.user_known_hosts_file.clone())
        .unwrap_or_else(|| {
            opts.home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".ssh/known_hosts")
        });
    Endpoint {
        label: label.to_string(),
        host: params.hostname.clone().unwrap_or_else(|| host.to_string()),
        port: port.or(params.port).unwrap_or(22),
        user: user
            .map(str::to_string)
            .or(params.user.clone())
            .unwrap_or_else(|| opts.local_user.clone()),
        password: password.map(str::to_string),
        identity_files: params.identity_files.clone(),
        known_hosts,
        accept_new: opts.accept_new_host_keys
            || params.strict_host_key_checking == Some(StrictHostKeys::AcceptNew),
        proxy_jump: params.proxy_jump.clone(),
    }
}

/// Parses one ProxyJump hop: `[user@]host[:port]` or `ssh://...`.
fn jump_endpoint(label: &str, spec: &str, opts: &ConnectOptions) -> Result<Endpoint, Error> {
    let bad = |source| Error::ProxyJump {
        host: label.to_string(),
        spec: spec.to_string(),
        source,
    };
    if spec.starts_with("ssh://") {
        let u = RemoteUrl::parse(spec).map_err(bad)?;
        return Ok(resolve(
            u.host(),
            u.user(),
            u.host(),
            u.port(),
            u.password(),
            opts,
        ));
    }
    let (user, hostport) = match spec.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, spec),
    };
    let (host, port) = split_host_port(spec, hostport).map_err(bad)?;
    if host.is_empty() {
        return Err(bad(crate::url::UrlError::NoHost {
            input: spec.to_string(),
        }));
    }
    Ok(resolve(host, user, host, port, None, opts))
}

/// Where forwarded connections from the host go.
#[derive(Clone)]
struct Forward {
    store: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The russh event handler of one connection.
pub(crate) struct Client {
    label: String,
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_new: bool,
    problem: Arc<Mutex<Option<Error>>>,
    forward: Option<Forward>,
    /// Set when the connection ended because the host stopped answering keepalives.
    silent: Arc<AtomicBool>,
}

/// How often a quiet connection asks the host for a sign of life, and how many unanswered
/// asks end it: a host that says nothing for [`SILENCE`] (a cut link, a frozen machine) is
/// reported as such instead of holding the run until TCP gives up.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_MAX: usize = 2;
/// The silence after which a connection is given up: the keepalive that goes unanswered
/// `KEEPALIVE_MAX + 1` times in a row.
pub const SILENCE: Duration = Duration::from_secs(5 * (KEEPALIVE_MAX as u64 + 1));

impl client::Handler for Client {
    type Error = russh::Error;

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(e) => {
                if matches!(e, russh::Error::KeepaliveTimeout) {
                    self.silent.store(true, Ordering::SeqCst);
                    tracing::debug!(host = %self.label, "no answer to keepalives for {SILENCE:?}");
                }
                Err(e)
            }
        }
    }

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = self.verify(server_public_key);
        let ok = verdict.is_ok();
        if let Err(e) = verdict {
            *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
        Ok(ok)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let Some(fwd) = self.forward.clone() else {
            // Nothing asked for a forward on this connection (a jump host): refuse.
            drop(reply);
            return Ok(());
        };
        reply.accept().await;
        let label = self.label.clone();
        fwd.tasks.spawn(async move {
            let pipe = async {
                let mut tcp = TcpStream::connect(fwd.store).await?;
                tcp.set_nodelay(true)?;
                let mut ch = channel.into_stream();
                tokio::io::copy_bidirectional(&mut ch, &mut tcp).await
            };
            tokio::select! {
                r = pipe => if let Err(e) = r {
                    tracing::debug!(host = %label, error = %e, "tunnelled connection ended");
                },
                _ = fwd.cancel.cancelled() => {}
            }
        });
        Ok(())
    }
}

impl Client {
    fn verify(&self, key: &PublicKeyOrCertificate) -> Result<(), Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Err(Error::HostCertificate {
                host: self.label.clone(),
            });
        };
        let kh_err = |source| Error::KnownHosts {
            file: self.known_hosts.clone(),
            source,
        };
        match known_hosts::check(&self.known_hosts, &self.host, self.port, key).map_err(kh_err)? {
            HostKeyStatus::Known => Ok(()),
            HostKeyStatus::Unknown if self.accept_new => {
                known_hosts::learn(&self.known_hosts, &self.host, self.port, key)
                    .map_err(kh_err)?;
                tracing::warn!(host = %self.label, file = %self.known_hosts.display(),
                    "learned new host key {}", key.fingerprint(HashAlg::Sha256));
                Ok(())
            }
            HostKeyStatus::Unknown => Err(Error::UnknownHostKey {
                host: self.label.clone(),
                file: self.known_hosts.clone(),
            }),
            HostKeyStatus::Changed { line } => Err(Error::ChangedHostKey {
                host: self.label.clone(),
                file: self.known_hosts.clone(),
                line,
                fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            }),
            HostKeyStatus::Revoked { line } => Err(Error::RevokedHostKey {
                host: self.label.clone(),
                file: self.known_hosts.clone(),
                line,
            }),
        }
    }
}

/// An authenticated connection; jump hosts are kept alive as long as it lives.
pub(crate) struct Session {
    pub handle: client::Handle<Client>,
    jumps: Vec<client::Handle<Client>>,
    pub label: String,
    /// The login user on the host (the last hop's).
    pub user: String,
    tunnel_cancel: CancellationToken,
    tunnel_tasks: TaskTracker,
    /// Shared by every hop's handler: set when one of them stopped answering.
    silent: Arc<AtomicBool>,
}

fn same_family(a: &russh::keys::Algorithm, b: &russh::keys::Algorithm) -> bool {
    use russh::keys::Algorithm::Rsa;
    matches!((a, b), (Rsa { .. }, Rsa { .. })) || a == b
}

fn client_config(ep: &Endpoint) -> Arc<client::Config> {
    let mut preferred = russh::Preferred::default();
    // Ask for a host key type we have on record, as OpenSSH does, so a host with several keys
    // is verified against the one we know instead of being reported as unknown.
    let recorded = known_hosts::recorded_algorithms(&ep.known_hosts, &ep.host, ep.port);
    if !recorded.is_empty() {
        let mut keys = preferred.key.to_vec();
        keys.sort_by_key(|a| !recorded.iter().any(|r| same_family(a, r)));
        preferred.key = keys.into();
    }
    Arc::new(client::Config {
        preferred,
        nodelay: true,
        inactivity_timeout: None,
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        ..Default::default()
    })
}

async fn handshake<S>(
    stream: S,
    ep: &Endpoint,
    forward: Option<Forward>,
    silent: &Arc<AtomicBool>,
) -> Result<client::Handle<Client>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let problem = Arc::new(Mutex::new(None));
    let handler = Client {
        label: ep.label.clone(),
        host: ep.host.clone(),
        port: ep.port,
        known_hosts: ep.known_hosts.clone(),
        accept_new: ep.accept_new,
        problem: problem.clone(),
        forward,
        silent: silent.clone(),
    };
    match client::connect_stream(client_config(ep), stream, handler).await {
        Ok(h) => Ok(h),
        Err(source) => {
            if let Some(e) = problem.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(e);
            }
            Err(Error::Ssh {
                host: ep.label.clone(),
                step: Step::Connect,
                source,
            })
        }
    }
}

impl Session {
    /// Connects to `url` (through its ProxyJump hops), verifies host keys and authenticates.
    /// Forwarded connections are piped to `store` when given.
    pub async fn connect(
        label: &str,
        url: &RemoteUrl,
        opts: &ConnectOptions,
        store: Option<SocketAddr>,
    ) -> Result<Session, Error> {
        let target = resolve(
            label,
            url.user(),
            url.host(),
            url.port(),
            url.password(),
            opts,
        );
        let mut hops = Vec::new();
        if let Some(spec) = &target.proxy_jump {
            for hop in spec.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                hops.push(jump_endpoint(label, hop, opts)?);
            }
        }
        let user = target.user.clone();
        hops.push(target);
        let tunnel_cancel = CancellationToken::new();
        let tunnel_tasks = TaskTracker::new();
        let forward = store.map(|store| Forward {
            store,
            cancel: tunnel_cancel.clone(),
            tasks: tunnel_tasks.clone(),
        });

        let first = &hops[0];
        let addr = format!("{}:{}", first.host, first.port);
        let tcp = match tokio::time::timeout(
            opts.connect_timeout,
            TcpStream::connect((first.host.as_str(), first.port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    host: first.label.clone(),
                    addr,
                    source,
                });
            }
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    host: first.label.clone(),
                    addr,
                    secs: opts.connect_timeout.as_secs(),
                });
            }
        };
        let _ = tcp.set_nodelay(true);
        let last = hops.len() - 1;
        let silent = Arc::new(AtomicBool::new(false));
        let mut handle = handshake(
            tcp,
            first,
            (last == 0).then(|| forward.clone()).flatten(),
            &silent,
        )
        .await?;
        authenticate(&mut handle, first, opts).await?;
        let mut jumps = Vec::new();
        for (i, next) in hops.iter().enumerate().skip(1) {
            let ch = handle
                .channel_open_direct_tcpip(next.host.clone(), next.port as u32, "127.0.0.1", 0)
                .await
                .map_err(Error::ssh(&hops[i - 1].label, Step::Connect))?;
            let fwd = (i == last).then(|| forward.clone()).flatten();
            let mut h = handshake(ch.into_stream(), next, fwd, &silent).await?;
            authenticate(&mut h, next, opts).await?;
            jumps.push(std::mem::replace(&mut handle, h));
        }
        Ok(Session {
            handle,
            jumps,
            label: label.to_string(),
            user,
            tunnel_cancel,
            tunnel_tasks,
            silent,
        })
    }

    /// Whether the connection was given up because the host (or a jump host on the way)
    /// answered nothing for [`SILENCE`].
    pub fn went_silent(&self) -> bool {
        self.silent.load(Ordering::SeqCst)
    }

    /// `e`, or the plain "no answer" when the connection died of silence (whatever step
    /// noticed it first, its error is only a consequence).
    pub fn explain(&self, e: Error) -> Error {
        if self.went_silent() && !matches!(e, Error::Silent { .. }) {
            Error::Silent {
                host: self.label.clone(),
                secs: SILENCE.as_secs(),
            }
        } else {
            e
        }
    }

    /// Asks sshd to listen on the host's loopback (port chosen by sshd) and forward to us.
    pub async fn reverse_tunnel(&self) -> Result<u32, Error> {
        self.handle
            .tcpip_forward("127.0.0.1", 0)
            .await
            .map_err(Error::ssh(&self.label, Step::Tunnel))
    }

    /// Runs `cmd` through the login shell, feeding `stdin`, and collects everything it prints.
    pub async fn run(&self, cmd: &str, stdin: Option<&[u8]>, step: Step) -> Result<Output, Error> {
        let mut ch = self
            .handle
            .channel_open_session()
            .await
            .map_err(Error::ssh(&self.label, step))?;
        ch.exec(true, cmd)
            .await
            .map_err(Error::ssh(&self.label, step))?;
        if let Some(data) = stdin {
            ch.data(data).await.map_err(Error::ssh(&self.label, step))?;
        }
        ch.eof().await.map_err(Error::ssh(&self.label, step))?;
        let mut out = Output {
            status: ChildExit::Unknown,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.status = ChildExit::Code(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    out.status = ChildExit::Signal(format!("{signal_name:?}"))
                }
                ChannelMsg::Failure => {
                    return Err(Error::Protocol {
                        host: self.label.clone(),
                        step,
                        message: "the server refused to run a command".to_string(),
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Like `run`, but a non-zero exit is an error carrying what the command printed on stderr.
    pub async fn run_ok(
        &self,
        what: &'static str,
        cmd: &str,
        stdin: Option<&[u8]>,
        step: Step,
    ) -> Result<Vec<u8>, Error> {
        let out = self.run(cmd, stdin, step).await?;
        if out.status != ChildExit::Code(0) {
            return Err(Error::Remote {
                host: self.label.clone(),
                what,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// Closes the connection (and its hops) and waits for the tunnel tasks it owns.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        self.tunnel_cancel.cancel();
        self.tunnel_tasks.close();
        self.tunnel_tasks.wait().await;
        for j in self.jumps.into_iter().rev() {
            let _ = j
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }
}

pub(crate) struct Output {
    pub status: ChildExit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

fn accepts(remaining: &russh::MethodSet, kind: MethodKind) -> bool {
    remaining.is_empty() || remaining.contains(&kind)
}

async fn authenticate(
    handle: &mut client::Handle<Client>,
    ep: &Endpoint,
    opts: &ConnectOptions,
) -> Result<(), Error> {
    let user = ep.user.as_str();
    let mut tried: Vec<String> = Vec::new();
    let ssh = |step| Error::ssh(&ep.label, step);
    let mut publickey_ok = true;
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(ssh(Step::Auth))?
        .flatten();

    if let Some(sock) = &opts.agent_socket {
        match russh::keys::agent::client::AgentClient::connect_uds(sock).await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    if !publickey_ok {
                        break;
                    }
                    let key = id.public_key().into_owned();
                    let hash = matches!(key.algorithm(), russh::keys::Algorithm::Rsa { .. })
                        .then_some(rsa_hash)
                        .flatten();
                    tried.push(format!("agent key {}", key.fingerprint(HashAlg::Sha256)));
                    match handle
                        .authenticate_publickey_with(user, key, hash, &mut agent)
                        .await
                    {
                        Ok(AuthResult::Success) => return Ok(()),
                        Ok(AuthResult::Failure {
                            remaining_methods, ..
                        }) => publickey_ok = accepts(&remaining_methods, MethodKind::PublicKey),
                        Err(e) => {
                            if let Some(last) = tried.last_mut() {
                                last.push_str(&format!(" (agent error: {e})"));
                            }
                        }
                    }
                }
            }
            Err(e) => tried.push(format!("ssh-agent (unavailable: {e})")),
        }
    }

    let mut files: Vec<PathBuf> = opts.identities.clone();
    files.extend(ep.identity_files.iter().cloned());
    if opts.default_identities
        && let Some(home) = &opts.home
    {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            files.push(home.join(".ssh").join(name));
        }
    }
    let mut seen = Vec::new();
    for path in files {
        if !publickey_ok {
            break;
        }
        if seen.contains(&path) || !path.exists() {
            continue;
        }
        seen.push(path.clone());
        let Some(key) = load_key(&path, opts, &mut tried).await else {
            continue;
        };
        let hash = matches!(key.algorithm(), russh::keys::Algorithm::Rsa { .. })
            .then_some(rsa_hash)
            .flatten();
        tried.push(format!("key {}", path.display()));
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        match handle
            .authenticate_publickey(user, key)
            .await
            .map_err(ssh(Step::Auth))?
        {
            AuthResult::Success => return Ok(()),
            AuthResult::Failure {
                remaining_methods, ..
            } => publickey_ok = accepts(&remaining_methods, MethodKind::PublicKey),
        }
    }

    if let Some(pw) = &ep.password {
        tried.push("password from the url".to_string());
        if let AuthResult::Success = handle
            .authenticate_password(user, pw.clone())
            .await
            .map_err(ssh(Step::Auth))?
        {
            return Ok(());
        }
    }

    if opts.allow_interactive && prompt::stdin_is_tty() {
        tried.push("keyboard-interactive".to_string());
        let mut reply = handle
            .authenticate_keyboard_interactive_start(user, None)
            .await
            .map_err(ssh(Step::Auth))?;
        loop {
            match reply {
                KeyboardInteractiveAuthResponse::Success => return Ok(()),
                KeyboardInteractiveAuthResponse::Failure { .. } => break,
                KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                    let mut answers = Vec::new();
                    for p in prompts {
                        let text = format!("{}@{} {}", user, ep.label, p.prompt);
                        answers.push(prompt::ask(text, p.echo).await.unwrap_or_default());
                    }
                    reply = handle
                        .authenticate_keyboard_interactive_respond(answers)
                        .await
                        .map_err(ssh(Step::Auth))?;
                }
            }
        }
        tried.push("password prompt".to_string());
        if let Some(pw) = prompt::ask(format!("{user}@{}'s password: ", ep.label), false).await
            && let AuthResult::Success = handle
                .authenticate_password(user, pw)
                .await
                .map_err(ssh(Step::Auth))?
        {
            return Ok(());
        }
    }

    if tried.is_empty() {
        tried.push("nothing (no agent, no identity file, no password)".to_string());
    }
    Err(Error::AuthFailed {
        host: ep.label.clone(),
        user: user.to_string(),
        tried,
    })
}

async fn load_key(
    path: &Path,
    opts: &ConnectOptions,
    tried: &mut Vec<String>,
) -> Option<russh::keys::PrivateKey> {
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Some(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            if !(opts.allow_interactive && prompt::stdin_is_tty()) {
                tried.push(format!(
                    "key {} (encrypted; needs --allow-interactive on a terminal)",
                    path.display()
                ));
                return None;
            }
            let pass = prompt::ask(
                format!("Enter passphrase for key {}: ", path.display()),
                false,
            )
            .await?;
            match russh::keys::load_secret_key(path, Some(&pass)) {
                Ok(k) => Some(k),
                Err(e) => {
                    tried.push(format!("key {} ({e})", path.display()));
                    None
                }
            }
        }
        Err(e) => {
            tried.push(format!("key {} (unreadable: {e})", path.display()));
            None
        }
    }
}
