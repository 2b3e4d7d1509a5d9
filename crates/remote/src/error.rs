//! Errors of remote execution: one enum, context as data (host, file, line, step).
//!
//! No variant may carry a password or the store secret.

use std::path::PathBuf;

use thiserror::Error;

use crate::ssh_config::ConfigError;
use crate::url::UrlError;

/// The step of a host's run an error or a state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Config,
    Connect,
    Auth,
    Probe,
    Upload,
    RunDir,
    Tunnel,
    Exec,
    /// sudo, between the exec and the child running as root.
    Sudo,
    Run,
    Update,
    Cleanup,
}

crate::words::words!(Step, "step", {
    Config => "config",
    Connect => "connect",
    Auth => "auth",
    Probe => "probe",
    Upload => "upload",
    RunDir => "run_dir",
    Tunnel => "tunnel",
    Exec => "exec",
    Sudo => "sudo",
    Run => "run",
    Update => "update",
    Cleanup => "cleanup",
});

/// In messages: "during run dir".
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Config => "config",
            Step::Connect => "connect",
            Step::Auth => "auth",
            Step::Probe => "probe",
            Step::Upload => "upload",
            Step::RunDir => "run dir",
            Step::Tunnel => "tunnel",
            Step::Exec => "exec",
            Step::Sudo => "sudo",
            Step::Run => "run",
            Step::Update => "update",
            Step::Cleanup => "cleanup",
        })
    }
}

/// How the remote child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildExit {
    Code(u32),
    Signal(String),
    /// The channel closed without an exit status (connection lost).
    Unknown,
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildExit::Code(c) => write!(f, "exit code {c}"),
            ChildExit::Signal(s) => write!(f, "signal {s}"),
            ChildExit::Unknown => f.write_str("no exit status"),
        }
    }
}

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid ProxyJump {spec:?} for {host}: {source}")]
    ProxyJump {
        host: String,
        spec: String,
        source: UrlError,
    },
    #[error("cannot connect to {host} ({addr}): {source}")]
    Connect {
        host: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {host} ({addr}): timed out after {secs}s")]
    ConnectTimeout {
        host: String,
        addr: String,
        secs: u64,
    },
    #[error("ssh error with {host} during {step}: {source}")]
    Ssh {
        host: String,
        step: Step,
        source: russh::Error,
    },
    #[error(
        "host key for {host} is not in {} (use --accept-new-host-keys to trust it on first use)",
        file.display()
    )]
    UnknownHostKey { host: String, file: PathBuf },
    #[error(
        "host key for {host} has changed: it does not match {}:{line}; if the change is expected, delete that line (the host now offers {fingerprint})",
        file.display()
    )]
    ChangedHostKey {
        host: String,
        file: PathBuf,
        line: usize,
        fingerprint: String,
    },
    #[error("host key for {host} is revoked in {}:{line}", file.display())]
    RevokedHostKey {
        host: String,
        file: PathBuf,
        line: usize,
    },
    #[error("host {host} presented a host certificate; only plain host keys are supported")]
    HostCertificate { host: String },
    #[error("cannot use known_hosts file {}: {source}", file.display())]
    KnownHosts {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("authentication as {user} on {host} failed; tried: {}", tried.join(", "))]
    AuthFailed {
        host: String,
        user: String,
        tried: Vec<String>,
    },
    #[error("sftp with {host}: {source}")]
    Sftp {
        host: String,
        source: russh_sftp::client::error::Error,
    },
    #[error("{what} on {host} failed ({status}): {stderr}")]
    Remote {
        host: String,
        what: &'static str,
        status: ChildExit,
        stderr: String,
    },
    #[error("unexpected reply from {host} during {step}: {message}")]
    Protocol {
        host: String,
        step: Step,
        message: String,
    },
    #[error("cannot copy the binary to {host}:{dir}: {reason}")]
    Upload {
        host: String,
        dir: String,
        reason: String,
    },
    /// The connection was given up: nothing came back from the host for `secs`.
    #[error("no answer from {host} for {secs} s")]
    Silent { host: String, secs: u64 },
    /// sudo would not start the child as root: its own reason, as it said it.
    #[error("sudo as {user} on {host}: {message}")]
    Sudo {
        host: String,
        user: String,
        message: String,
    },
    /// sudo asked for the password again: the one given was wrong (it is sent once only).
    #[error("sudo refused the password for {user} on {host}")]
    SudoRefused { host: String, user: String },
    #[error("remote mgmt on {host} ended with {exit}")]
    ChildFailed { host: String, exit: ChildExit },
    #[error("graph file name {file:?} cannot be used on the remote host: {reason}")]
    GraphName { file: PathBuf, reason: &'static str },
    #[error("cannot read binary {}: {source}", path.display())]
    Binary {
        path: PathBuf,
        source: std::sync::Arc<std::io::Error>,
    },
}

impl Error {
    pub(crate) fn ssh(host: &str, step: Step) -> impl FnOnce(russh::Error) -> Error + '_ {
        move |source| Error::Ssh {
            host: host.to_string(),
            step,
            source,
        }
    }
}
