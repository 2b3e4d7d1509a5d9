//! Command-line arguments. Flag names follow mgmt's `run` so its users feel at home; additions
//! are marked in the help text. Only this crate knows argv.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mgmt",
    version = crate::VERSION,
    about = "Event-driven configuration management, with agentless remote execution over SSH"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply a resource graph here (--yaml) or on remote hosts over SSH (--remote), and keep it applied.
    Run(Box<RunArgs>),
    /// Check graph files and print their problems, changing nothing.
    Check {
        /// Graph files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a shell completion script on stdout (e.g. `mgmt completions bash > /etc/bash_completion.d/mgmt`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout (e.g. `mgmt man | man -l -`).
    Man,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The YAML graph to apply on this machine.
    #[arg(
        long = "yaml",
        visible_alias = "file",
        short = 'f',
        value_name = "FILE"
    )]
    pub yaml: Option<PathBuf>,

    /// A YAML graph to run on the host named by its `remote:` field (repeatable).
    #[arg(long, value_name = "FILE", conflicts_with = "yaml")]
    pub remote: Vec<PathBuf>,

    /// The name this host publishes its exports and convergence under.
    #[arg(long)]
    pub hostname: Option<String>,

    /// Show what would change, change nothing (and export nothing).
    #[arg(long)]
    pub noop: bool,

    /// Apply once per graph load; do not watch resources or the graph file for changes.
    #[arg(long)]
    pub no_watch: bool,

    /// Exit after everything has been converged for N seconds (-1: never, 0: as soon as converged).
    #[arg(long, default_value = "-1", allow_negative_numbers = true, value_name = "N", value_parser = Timeout::parse_converged)]
    pub converged_timeout: Timeout,

    /// Exit after N seconds whatever the state (0: no limit).
    #[arg(long, default_value = "0", value_name = "N", value_parser = Timeout::parse_max_runtime)]
    pub max_runtime: Timeout,

    /// Write the resolved graph in DOT format to FILE on every graph swap.
    #[arg(long, value_name = "FILE")]
    pub graphviz: Option<PathBuf>,

    /// Working directory for state (accepted for compatibility; mgmt-rs keeps its state in the store).
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,

    /// Where remote hosts get their private run directory.
    #[arg(long, default_value = "/tmp", value_name = "DIR")]
    pub tmp_prefix: String,

    /// Comma-separated etcd client URLs to use instead of (or besides) the embedded server.
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub seeds: Vec<store::StoreUrl>,

    /// Do not start the embedded store server (use --seeds).
    #[arg(long)]
    pub no_server: bool,

    /// Where the embedded store listens (loopback by default; port 0 picks a free port).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        value_name = "URLS"
    )]
    pub client_urls: Vec<store::StoreUrl>,

    /// + Largest request the embedded store accepts, in bytes (etcd's flag and default: 1.5 MiB).
    #[arg(long, default_value_t = store::DEFAULT_MAX_REQUEST_BYTES, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_request_bytes: u64,

    /// + The embedded store's total quota, in bytes of memory (etcd's flag; default 256 MiB; 0: the default; negative: none).
    #[arg(long, default_value_t = store::DEFAULT_QUOTA_BACKEND_BYTES as i64, value_name = "BYTES",
          allow_negative_numbers = true)]
    pub quota_backend_bytes: i64,

    /// + Most keys each remote host may keep in the embedded store (default 1000).
    #[arg(long, default_value_t = store::Quota::HOST.max_keys, value_name = "N")]
    pub store_host_max_keys: u64,

    /// + Most bytes (keys and values) each remote host may keep in the embedded store (default 16 MiB).
    #[arg(long, default_value_t = store::Quota::HOST.max_bytes, value_name = "BYTES")]
    pub store_host_max_bytes: u64,

    /// Maximum number of hosts being connected to and set up at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub cconns: usize,

    /// Upload the binary on every run into the run dir instead of using the per-user cache.
    #[arg(long)]
    pub no_caching: bool,

    /// Allow interactive password prompts for SSH logins (only on a terminal).
    #[arg(long)]
    pub allow_interactive: bool,

    /// SSH private key to authenticate with (mgmt's name; any key type works).
    #[arg(long = "ssh-priv-id-rsa", value_name = "PATH")]
    pub ssh_priv_id_rsa: Option<PathBuf>,

    /// + SSH private key to authenticate with (repeatable, any key type).
    #[arg(long = "ssh-identity", value_name = "PATH")]
    pub ssh_identity: Vec<PathBuf>,

    /// + ssh_config file for Host aliases, User, Port, IdentityFile, ProxyJump (default ~/.ssh/config).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// + known_hosts file to verify host keys against (default ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// + Trust and record host keys seen for the first time (off: unknown keys are an error).
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// + Run every remote child as root through sudo, logged in as an ordinary user (the cached binary and run dir stay the login user's). `sudo -n` (never prompts) unless --ask-sudo-pass. A graph's top-level `sudo: true|false` decides for its own host instead.
    #[arg(long)]
    pub sudo: bool,

    /// + Ask once on the terminal (no echo) for the sudo password of the remote login users; it goes to `sudo -S` on each host's stdin after sudo's prompt (never in argv, the environment, files or logs). Hosts run by intermediates get no password (`sudo -n`).
    #[arg(long)]
    pub ask_sudo_pass: bool,

    /// + Print one JSON event per line on stdout (human logs stay on stderr).
    #[arg(long)]
    pub json: bool,

    /// Internal: remote nesting depth (0 on the initiator).
    #[arg(long, default_value_t = 0, hide = true)]
    pub depth: u32,

    /// Internal: file holding the store's `user=` and `password=` lines (remote children).
    #[arg(long, value_name = "FILE", hide = true)]
    pub store_credentials: Option<PathBuf>,

    /// Internal (remote children): the run dir the initiator made for this process. It is
    /// removed when the process ends, so a child whose initiator is gone leaves nothing behind.
    #[arg(long, value_name = "DIR", hide = true)]
    pub run_dir: Option<PathBuf>,

    /// Internal (remote children): end when the store has not answered for this many seconds
    /// (the initiator or the tunnel to it is gone). 0: never.
    #[arg(long, default_value = "0", value_name = "SECS", value_parser = Timeout::parse_max_runtime, hide = true)]
    pub store_lost_timeout: Timeout,
}

/// A whole number of seconds where mgmt spells "never" as a number (`-1` for
/// `--converged-timeout`, `0` for `--max-runtime`), parsed once: `None` is never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub Option<std::time::Duration>);

impl Timeout {
    /// `-1` never; `0` and up: that many seconds.
    fn parse_converged(s: &str) -> Result<Timeout, String> {
        match s.trim().parse::<i64>() {
            Ok(-1) => Ok(Timeout(None)),
            Ok(n) if n >= 0 => Ok(Timeout(Some(std::time::Duration::from_secs(n as u64)))),
            _ => Err(format!("{s:?}: expected -1 (never) or a number of seconds")),
        }
    }

    /// `0` never; more: that many seconds.
    fn parse_max_runtime(s: &str) -> Result<Timeout, String> {
        match s.trim().parse::<u64>() {
            Ok(0) => Ok(Timeout(None)),
            Ok(n) => Ok(Timeout(Some(std::time::Duration::from_secs(n)))),
            Err(_) => Err(format!(
                "{s:?}: expected 0 (no limit) or a number of seconds"
            )),
        }
    }

    /// The seconds, for messages and the child's command line.
    pub fn secs(self) -> Option<u64> {
        self.0.map(|d| d.as_secs())
    }
}

#[cfg(test)]
mod timeout_tests {
    use std::time::Duration;

    use super::Timeout;

    #[test]
    fn never_is_spelled_as_mgmt_spells_it_and_nothing_else_slips_through() {
        assert_eq!(Timeout::parse_converged("-1"), Ok(Timeout(None)));
        assert_eq!(
            Timeout::parse_converged("0"),
            Ok(Timeout(Some(Duration::ZERO)))
        );
        assert_eq!(
            Timeout::parse_converged("5"),
            Ok(Timeout(Some(Duration::from_secs(5))))
        );
        for bad in ["-2", "1.5", "x", ""] {
            assert!(Timeout::parse_converged(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Timeout::parse_max_runtime("0"), Ok(Timeout(None)));
        assert_eq!(Timeout::parse_max_runtime("7").unwrap().secs(), Some(7));
        assert!(Timeout::parse_max_runtime("-1").is_err());
    }
}
