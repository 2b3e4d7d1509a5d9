//! What a fleet gets from this process: the remote child's command line, built here only and
//! from the flag names of `args.rs` (looked up in the clap definitions, so a renamed flag
//! follows, and a test parses what is built with the child's own parser), and what SSH takes
//! from the local environment, read here once (the `remote` crate never reads it).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args as _;
use remote::{ChildArg, LocalEnv};

use crate::args::RunArgs;

/// The name of the child's store credentials file in its run dir.
pub use fleet::tree::CRED_FILE;

/// How long a child keeps running while our store does not answer: a little more than the
/// silence after which we give its connection up (`remote::SILENCE`), since its tunnel goes
/// with that connection.
pub const STORE_LOST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The `mgmt` subcommand a child runs.
const RUN: &str = "run";

/// The child's command line (after the binary) for a fleet run by a process with `args`: it
/// runs its graph with the flags it shares with us (`--noop`, `--no-watch`,
/// `--converged-timeout`, `--sudo`), one level deeper, as its target's hostname, against our store
/// through its tunnel, authenticated by [`CRED_FILE`], reporting with `--json`.
pub fn child_args(args: &RunArgs) -> Result<Vec<ChildArg>> {
    let cmd = RunArgs::augment_args(clap::Command::new(RUN));
    // `--<long>` of the field `id` of `RunArgs`.
    let flag = |id: &str| -> Result<ChildArg> {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_long())
            .map(|long| ChildArg::Lit(format!("--{long}")))
            .with_context(|| format!("internal: `mgmt {RUN}` has no flag for {id}"))
    };
    let mut v = vec![
        ChildArg::lit(RUN),
        flag("hostname")?,
        ChildArg::Hostname,
        flag("no_server")?,
        flag("seeds")?,
        ChildArg::StoreUrl,
        flag("store_credentials")?,
        ChildArg::RunDirFile(CRED_FILE.to_string()),
        flag("yaml")?,
        ChildArg::Graph,
        flag("depth")?,
        ChildArg::lit((args.depth + 1).to_string()),
        // Its events on stdout are its reports to us (`fleet::Event`, parsed, never scraped
        // from log lines); its human log goes to stderr.
        flag("json")?,
        // It removes its run dir when it ends, and ends by itself once our store has not
        // answered for a while: a cut link or a killed initiator leaves nothing running.
        flag("run_dir")?,
        ChildArg::RunDir,
        flag("store_lost_timeout")?,
        ChildArg::lit(STORE_LOST_TIMEOUT.as_secs().to_string()),
    ];
    if args.noop {
        v.push(flag("noop")?);
    }
    if args.no_watch {
        v.push(flag("no_watch")?);
    }
    // An intermediate runs its own remotes through sudo as we do ours (`sudo -n`: the
    // password, if we have one, never leaves this process).
    if args.sudo {
        v.push(flag("sudo")?);
    }
    if let Some(secs) = args.converged_timeout.secs() {
        v.push(flag("converged_timeout")?);
        v.push(ChildArg::lit(secs.to_string()));
    }
    Ok(v)
}

/// What SSH takes from this process's environment, as OpenSSH does: the login name (the
/// passwd entry's, else `USER`, else root), the home directory (`HOME`, else the passwd
/// entry's) and the ssh-agent (`SSH_AUTH_SOCK`).
pub fn local_env() -> LocalEnv {
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten();
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| me.as_ref().map(|u| u.dir.clone()));
    let user = me
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".to_string());
    let agent_socket = std::env::var_os("SSH_AUTH_SOCK")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    LocalEnv {
        user,
        home,
        agent_socket,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;
    use remote::ChildContext;

    use super::*;
    use crate::args::{Cli, Command};

    fn run_args(argv: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["mgmt", "run"].iter().chain(argv)).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not a run")
        };
        *args
    }

    /// What the child parses from the command line built for `args`, resolved as the fleet
    /// resolves it.
    fn child_of(args: &RunArgs) -> RunArgs {
        let cx = ChildContext {
            hostname: "h 1",
            run_dir: "/tmp/mgmt.X",
            graph: "g.yaml",
            store_port: 4000,
        };
        let words: Vec<String> = child_args(args)
            .unwrap()
            .iter()
            .map(|a| a.resolve(&cx))
            .collect();
        let cli = Cli::try_parse_from(std::iter::once("mgmt".to_string()).chain(words))
            .unwrap_or_else(|e| panic!("the child cannot parse its command line: {e}"));
        let Command::Run(child) = cli.command else {
            panic!("the child does not run")
        };
        *child
    }

    fn assert_wiring(child: &RunArgs, depth: u32) {
        assert_eq!(child.hostname.as_deref(), Some("h 1"));
        assert!(child.no_server);
        assert_eq!(child.seeds, ["http://127.0.0.1:4000".parse().unwrap()]);
        assert_eq!(
            child.store_credentials.as_deref(),
            Some(Path::new("/tmp/mgmt.X/store.cred"))
        );
        assert_eq!(child.yaml.as_deref(), Some(Path::new("/tmp/mgmt.X/g.yaml")));
        assert!(child.remote.is_empty());
        assert_eq!(child.depth, depth);
        assert!(child.json, "the child reports with --json");
    }

    #[test]
    fn the_child_parses_what_is_built_for_it() {
        let args = run_args(&[
            "--remote",
            "a.yaml",
            "--noop",
            "--no-watch",
            "--converged-timeout",
            "5",
        ]);
        let child = child_of(&args);
        assert_wiring(&child, 1);
        assert!(child.noop && child.no_watch);
        assert_eq!(child.converged_timeout.secs(), Some(5));
        assert!(!child.sudo && !child.ask_sudo_pass);

        // `--sudo` goes down (an intermediate's remotes); the password prompt never does.
        let args = run_args(&["--remote", "a.yaml", "--sudo", "--ask-sudo-pass"]);
        let child = child_of(&args);
        assert!(child.sudo && !child.ask_sudo_pass);

        // An intermediate's children are one level deeper still; the defaults stay defaults.
        let args = run_args(&["--yaml", "g.yaml", "--depth", "2"]);
        let child = child_of(&args);
        assert_wiring(&child, 3);
        assert!(!child.noop && !child.no_watch);
        assert_eq!(child.converged_timeout.secs(), None);

        let args = run_args(&["--remote", "a.yaml", "--converged-timeout=0"]);
        assert_eq!(child_of(&args).converged_timeout.secs(), Some(0));
    }
}
