//! The fleet's public types: its configuration, what it is given per host, what it reports
//! while it runs, and what it reports at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{ChildExit, Error, Step};
use crate::sudo::SudoPassword;
use crate::url::RemoteUrl;

/// One word of the child's command line (after the binary), as the caller builds it: a
/// literal, or a value only the run knows. This crate knows none of the child's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildArg {
    Lit(String),
    /// The target's `hostname`.
    Hostname,
    /// The graph file's absolute path on the host.
    Graph,
    /// The absolute path on the host of a file in the run dir (an extra file's name).
    RunDirFile(String),
    /// `http://127.0.0.1:<port>`: the initiator's store, through the host's reverse tunnel.
    StoreUrl,
    /// The run dir's absolute path on the host.
    RunDir,
}

/// What a [`ChildArg`] is resolved against: known once the run dir and the tunnel exist.
#[derive(Debug, Clone, Copy)]
pub struct ChildContext<'a> {
    pub hostname: &'a str,
    pub run_dir: &'a str,
    /// The graph's file name in the run dir.
    pub graph: &'a str,
    pub store_port: u32,
}

impl ChildArg {
    pub fn lit(s: impl Into<String>) -> ChildArg {
        ChildArg::Lit(s.into())
    }

    /// The word as the child sees it in its argv.
    pub fn resolve(&self, cx: &ChildContext<'_>) -> String {
        match self {
            ChildArg::Lit(s) => s.clone(),
            ChildArg::Hostname => cx.hostname.to_string(),
            ChildArg::Graph => format!("{}/{}", cx.run_dir, cx.graph),
            ChildArg::RunDirFile(name) => format!("{}/{name}", cx.run_dir),
            ChildArg::StoreUrl => format!("http://127.0.0.1:{}", cx.store_port),
            ChildArg::RunDir => cx.run_dir.to_string(),
        }
    }
}

/// What OpenSSH takes from the initiator's environment and passwd entry. The caller reads
/// them and hands them in: this crate never reads the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalEnv {
    /// The login name when neither the address nor ssh_config names one.
    pub user: String,
    /// `~` in ssh_config; `~/.ssh/config`, `~/.ssh/known_hosts` and the default identities.
    pub home: Option<PathBuf>,
    /// The ssh-agent socket (SSH_AUTH_SOCK).
    pub agent_socket: Option<PathBuf>,
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
    /// The child's command line after the binary, the same for every host (placeholders are
    /// resolved per host). Files it names in the run dir come as extra files.
    pub child_args: Vec<ChildArg>,
    /// Overrides UserKnownHostsFile and `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    pub accept_new_host_keys: bool,
    pub ssh_config: Option<PathBuf>,
    /// Identity files tried before the ssh_config ones and the defaults.
    pub identities: Vec<PathBuf>,
    /// The ssh-agent socket whose keys are tried first.
    pub agent_socket: Option<PathBuf>,
    /// Try `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.
    pub default_identities: bool,
    /// The login name when neither the address nor ssh_config names one.
    pub local_user: String,
    /// The initiator's home directory (`~`), if it has one.
    pub home: Option<PathBuf>,
    pub allow_interactive: bool,
    /// The initiator's store; forwarded connections from every host go there.
    pub store_addr: SocketAddr,
    pub connect_timeout: Duration,
    /// How long a child may take to exit after its stdin is closed before it is killed.
    pub grace: Duration,
    /// Cancelled on the second ^C: skip the grace period.
    pub force: CancellationToken,
    /// The password for `sudo -S` on the hosts that run their child as root
    /// ([`TargetExtras::sudo`]); without one, `sudo -n` (which never asks).
    pub sudo_password: Option<SudoPassword>,
}

impl FleetConfig {
    /// Defaults as the CLI wants them: caching on, `/tmp`, `~/.ssh/config` if it exists, the
    /// ssh-agent of `local`. The child's command line is the caller's to set.
    pub fn new(
        binary: PathBuf,
        binary_hash: String,
        store_addr: SocketAddr,
        local: LocalEnv,
    ) -> Self {
        let ssh_config = local
            .home
            .as_ref()
            .map(|h| h.join(".ssh/config"))
            .filter(|p| p.exists());
        FleetConfig {
            cconns: 8,
            caching: true,
            tmp_prefix: "/tmp".to_string(),
            binary,
            binary_hash,
            child_args: Vec::new(),
            known_hosts: None,
            accept_new_host_keys: false,
            ssh_config,
            identities: Vec::new(),
            agent_socket: local.agent_socket,
            default_identities: true,
            local_user: local.user,
            home: local.home,
            allow_interactive: false,
            store_addr,
            connect_timeout: Duration::from_secs(15),
            grace: Duration::from_secs(5),
            force: CancellationToken::new(),
            sudo_password: None,
        }
    }
}

/// One host to run a graph on.
pub struct Target {
    /// The graph file on the initiator; its file name is kept on the host.
    pub file: PathBuf,
    pub graph: Vec<u8>,
    pub url: RemoteUrl,
    /// The mgmt hostname of the child (`ChildArg::Hostname`); also the host's name in events.
    pub hostname: String,
    /// New contents of the graph file; each one is copied over and announced.
    pub updates: Option<mpsc::Receiver<Vec<u8>>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("file", &self.file)
            .field("url", &self.url)
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// A file put next to the graph in a host's run dir: the child's store credentials, and the
/// graph files and credentials that the host hands on to hosts of its own (hierarchical runs).
/// To this crate it is only a name and bytes; the bytes travel on stdin, never in argv.
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

/// What a target carries besides its graph (see [`run_fleet_with`](super::run_fleet_with)).
#[derive(Debug, Default)]
pub struct TargetExtras {
    /// Written into the run dir before the child starts.
    pub files: Vec<ExtraFile>,
    /// New versions of extra files (by name), copied over while the child runs.
    pub updates: Option<mpsc::Receiver<ExtraFile>>,
    /// Stops this host alone (its child stopped, its run dir removed), as cancelling the
    /// fleet stops every host: a graph moved to another host leaves this one.
    pub stop: Option<tokio_util::sync::CancellationToken>,
    /// Run the child as root through sudo (the login user still owns the cached binary and
    /// the run dir; the child's stop and the cleanup go through sudo too).
    pub sudo: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Connecting,
    Copying,
    Running,
    Done,
    Failed,
}

crate::words::words!(HostState, "host state", {
    Connecting => "connecting",
    Copying => "copying",
    Running => "running",
    Done => "done",
    Failed => "failed",
});

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
    /// It had to be copied, and the copy failed.
    CopyFailed,
    /// The run ended before the probe.
    Unknown,
}

// The words of the run summary: what happened to the binary.
crate::words::words!(CacheUse, "cache use", {
    Hit => "cached",
    Miss => "copied",
    Disabled => "no-cache",
    CopyFailed => "copy-failed",
    Unknown => "-",
});

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_errors() {
        for s in HostState::ALL {
            assert_eq!(s.as_str().parse::<HostState>(), Ok(*s));
        }
        for c in CacheUse::ALL {
            assert_eq!(c.as_str().parse::<CacheUse>(), Ok(*c));
        }
        for s in Step::ALL {
            assert_eq!(s.as_str().parse::<Step>(), Ok(*s));
        }
        assert_eq!(HostState::ALL.len(), 5);
        assert_eq!(CacheUse::ALL.len(), 5);
        assert_eq!(Step::ALL.len(), 12);
        for bad in ["converged", "Failed", "", " done", "done\n"] {
            let e = bad.parse::<HostState>().unwrap_err();
            assert_eq!((e.what, e.word.as_str()), ("host state", bad));
        }
        assert_eq!("rundir".parse::<Step>().unwrap_err().word, "rundir");
        assert_eq!("hit".parse::<CacheUse>().unwrap_err().what, "cache use");
        let e = "converged".parse::<HostState>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown host state \"converged\" (expected one of: connecting, copying, running, done, failed)"
        );
        assert_eq!(Step::RunDir.as_str(), "run_dir");
        assert_eq!(Step::RunDir.to_string(), "run dir");
    }

    #[test]
    fn child_args_resolve_against_the_run() {
        let cx = ChildContext {
            hostname: "h1",
            run_dir: "/tmp/mgmt.X",
            graph: "g.yaml",
            store_port: 4000,
        };
        let words: Vec<String> = [
            ChildArg::lit("--hostname"),
            ChildArg::Hostname,
            ChildArg::Graph,
            ChildArg::RunDirFile("store.cred".into()),
            ChildArg::StoreUrl,
        ]
        .iter()
        .map(|a| a.resolve(&cx))
        .collect();
        assert_eq!(
            words,
            [
                "--hostname",
                "h1",
                "/tmp/mgmt.X/g.yaml",
                "/tmp/mgmt.X/store.cred",
                "http://127.0.0.1:4000"
            ]
        );
    }
}
