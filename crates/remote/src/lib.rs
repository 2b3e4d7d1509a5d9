//! Agentless remote execution: run mgmt on hosts over SSH, the way mgmt's `--remote` does.
//!
//! Per host one SSH connection (native Rust client, host keys checked against known_hosts)
//! carries the cache probe, the binary upload, the run dir, a reverse tunnel to the
//! initiator's store, the child process (as root through sudo if asked), live graph updates
//! and the cleanup.
//!
//! This crate must never know about the engine, YAML or etcd: graph files are opaque bytes and
//! the store is a TCP address. It never shells out to `ssh`, never logs secrets and never reads
//! the environment (the caller hands in what it needs: [`LocalEnv`]).

mod credentials;
mod error;
mod fleet;
pub mod known_hosts;
mod prompt;
mod session;
pub mod ssh_config;
mod sudo;
mod upload;
mod url;
mod words;

pub use credentials::{Credentials, CredentialsError};
pub use error::{ChildExit, Error, Step};
pub use fleet::{
    CacheUse, ChildArg, ChildContext, ExtraFile, FleetConfig, FleetReport, HostOutcome, HostReport,
    HostState, LocalEnv, RemoteEvent, Target, TargetExtras, run_fleet, run_fleet_dynamic,
    run_fleet_with, sha256_file,
};
pub use session::SILENCE;
pub use sudo::{SudoPassword, ask_sudo_password};
pub use upload::sha256_is;
pub use url::{RemoteUrl, UrlError};
pub use words::UnknownWord;
