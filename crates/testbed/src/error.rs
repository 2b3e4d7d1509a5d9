//! The one error type of the test bed: every failure names what it was doing (program, path,
//! host) as data. It must never carry a secret (the generated password never reaches it).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error(
        "required program `{name}` not found in PATH, /usr/sbin or /sbin (install {package}; scripts/testbed does it)"
    )]
    MissingBinary {
        name: &'static str,
        package: &'static str,
    },
    #[error("the test bed needs root (network namespaces, mounts); running as uid {uid}")]
    NotRoot { uid: u32 },
    #[error("bad test bed config: {0}")]
    Config(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("all {slots} test bed slots are in use (see /run/mgmt-testbed)")]
    NoFreeSlot { slots: u16 },
    #[error("sshd of host {host} exited during startup ({status}); log {log}: {tail}")]
    SshdDied {
        host: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} not ready after {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("unknown host {0}")]
    UnknownHost(String),
    #[error("{path} is not a test bed directory (no testbed.state)")]
    NotATestbed { path: PathBuf },
    #[error(
        "booted host {host} (systemd-nspawn) exited during boot ({status}); console {log}: {tail}"
    )]
    ContainerDied {
        host: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("booted host {host} did not come up: systemd says {state}; console {log}")]
    BootFailed {
        host: String,
        state: String,
        log: PathBuf,
    },
    #[error("building the booted hosts' root failed ({status}); log {log}: {tail}")]
    RootBuild {
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("bad package {package}: {reason}")]
    BadPackage { package: String, reason: String },
    #[error("etcd exited during startup ({status}); log {log}: {tail}")]
    EtcdDied {
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
}

impl TestbedError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        TestbedError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
