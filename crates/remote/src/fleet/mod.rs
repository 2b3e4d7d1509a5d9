//! Running mgmt on a fleet of hosts: per host one SSH connection carrying connect, cache
//! probe, upload, run dir, tunnel, exec, live graph updates and cleanup; at most `cconns` hosts
//! in the setup phase at once; one failing host never stops the others.
//!
//! - `types`: the public types (config, targets, events, reports, host states);
//! - `schedule`: the setup semaphore, one task per host, the reports gathered;
//! - `host`: one host's life from connect to cleanup;
//! - `supervise`: the running child (output, live updates, stop);
//! - `scripts`: the shell run on the host for the child's wrapper, its stop and the cleanup.
//!
//! This module knows nothing of graphs, the store or the child's flags: graph files are bytes,
//! the store is an address, the child's command line and its credentials file come from the
//! caller. It never puts the store secret in argv or logs, and never reads the environment.

mod host;
mod schedule;
pub(crate) mod scripts;
mod supervise;
mod types;

pub use schedule::{run_fleet, run_fleet_dynamic, run_fleet_with};
pub use types::{
    CacheUse, ChildArg, ChildContext, ExtraFile, FleetConfig, FleetReport, HostOutcome, HostReport,
    HostState, LocalEnv, RemoteEvent, Target, TargetExtras, sha256_file,
};
