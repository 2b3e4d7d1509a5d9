//! `testbed`: the test bed for people (scripts/testbed calls it). `up` builds hosts and keeps
//! them running after it exits; `down` removes them. It never prints the generated password.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use testbed::{Testbed, TestbedConfig};

#[derive(Parser)]
#[command(about = "real sshd hosts in network namespaces, for trying mgmt's remote mode")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build N hosts reachable from here and keep them running.
    Up {
        hosts: usize,
        /// Directory for keys, configs and logs (default /var/tmp/mgmt-testbed-SSS-XXXXXX).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Hosts only on a second network the root namespace cannot reach.
        #[arg(long, default_value_t = 0)]
        leaves: usize,
        /// Hosts (h1, h2, ...) that are on both networks.
        #[arg(long, value_delimiter = ',')]
        intermediates: Vec<String>,
        /// Hosts (h1, h2, ...) without an sftp subsystem.
        #[arg(long, value_delimiter = ',')]
        no_sftp: Vec<String>,
        /// Allow password login (the password is written to DIR/password, mode 0600).
        #[arg(long)]
        password_auth: bool,
    },
    /// Remove the test bed in DIR, or without DIR every kept one and any crashed leftovers.
    Down { dir: Option<PathBuf> },
}

fn index_of(name: &str) -> Result<usize, String> {
    name.strip_prefix('h')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .map(|n| n - 1)
        .ok_or_else(|| format!("bad host name {name:?} (expected h1, h2, ...)"))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testbed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    match Cli::parse().cmd {
        Cmd::Up {
            hosts,
            dir,
            leaves,
            intermediates,
            no_sftp,
            password_auth,
        } => {
            let dir = dir.map(|d| std::path::absolute(&d).unwrap_or(d));
            let cfg = TestbedConfig {
                hosts,
                leaves,
                intermediates: intermediates
                    .iter()
                    .map(|n| index_of(n))
                    .collect::<Result<_, _>>()?,
                no_sftp: no_sftp
                    .iter()
                    .map(|n| index_of(n))
                    .collect::<Result<_, _>>()?,
                password_auth,
                extra_user: true,
                dir,
            };
            let started = std::time::Instant::now();
            let bed = Testbed::up(cfg).map_err(|e| e.to_string())?;
            let elapsed = started.elapsed();
            let config = bed.ssh_config();
            println!("test bed up in {elapsed:.2?}: {}", bed.dir().display());
            for h in bed.hosts() {
                let mut notes = Vec::new();
                if !h.reachable_from_root {
                    notes.push(format!("leaf, via {}", h.via.as_deref().unwrap_or("?")));
                }
                if let Some(leaf) = h.leaf_addr {
                    notes.push(format!("intermediate, leaf net {leaf}"));
                }
                if !h.sftp {
                    notes.push("no sftp".to_string());
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", notes.join("; "))
                };
                println!(
                    "  ssh -F {} {:<4} # {} netns {}{notes}",
                    config.display(),
                    h.name,
                    h.addr,
                    h.netns
                );
            }
            println!(
                "  user {} works too: ssh -F {} -l {} h1",
                testbed::EXTRA_USER,
                config.display(),
                testbed::EXTRA_USER
            );
            if bed.password().is_some() {
                println!("  password: in {}", bed.dir().join("password").display());
            }
            let dir = bed.keep().map_err(|e| e.to_string())?;
            println!("remove with: scripts/testbed down {}", dir.display());
            Ok(())
        }
        Cmd::Down { dir: Some(dir) } => Testbed::down_dir(&dir).map_err(|e| e.to_string()),
        Cmd::Down { dir: None } => {
            for dir in Testbed::down_kept().map_err(|e| e.to_string())? {
                println!("removed {}", dir.display());
            }
            Ok(())
        }
    }
}
