//! `mgmt`: the binary. Glue only: argv, logging, the runtime, wiring of the library crates,
//! and exit codes. Only this crate knows argv, the environment and exit codes, and only it
//! uses `anyhow`.

mod args;
mod cluster;
mod collect;
mod graphfile;
mod graphviz;
mod hier;
mod output;
mod progress;
mod remote_run;
mod run;
mod storelink;

use std::io::Read;
use std::process::ExitCode;

use anyhow::Result;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use args::{Cli, Command, RunArgs};
use output::Events;

/// Documented exit codes (README "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Converged, or stopped cleanly.
    Ok = 0,
    /// A resource or a host failed (or an error prevented the run).
    Failed = 1,
    /// Bad input: a graph that does not parse, bad flags.
    BadInput = 2,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::BadInput as u8
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let exit = match cli.command {
        Command::Run(args) => run_command(*args),
        Command::Check { files } => check(&files),
    };
    ExitCode::from(exit as u8)
}

fn run_command(args: RunArgs) -> Exit {
    output::init_tracing(if args.depth > 0 { Some("child") } else { None });
    let events = Events::new(args.json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::Failed;
        }
    };
    // The run is a task on the runtime, not the future `block_on` polls on this thread: every
    // engine event wakes it, and waking a task is cheap where waking a parked thread is a
    // futex call and a context switch (10,000 of them for a 10,000-resource graph).
    let result: Result<Exit> = rt.block_on(async move {
        let run = tokio::spawn(async move {
            if args.remote.is_empty() {
                run::run_local(args, events).await
            } else {
                remote_run::run_remote(args, events).await
            }
        });
        run.await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the run panicked: {e}")))
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(exit) => exit,
        Err(e) => {
            tracing::error!("{e:#}");
            Exit::Failed
        }
    }
}

/// `mgmt check FILE...`: parse only.
fn check(files: &[std::path::PathBuf]) -> Exit {
    let registry = resources::registry();
    let mut exit = Exit::Ok;
    for f in files {
        match graphfile::read(f).map(|t| graphfile::parse(f, &t, &registry)) {
            Ok(Ok(spec)) => println!(
                "{}: ok (graph {}, {} resources)",
                f.display(),
                spec.graph,
                spec.resources.len()
            ),
            Ok(Err(diags)) => {
                eprintln!("{diags}");
                exit = Exit::BadInput;
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                exit = Exit::BadInput;
            }
        }
    }
    exit
}

/// The name this host goes by: `--hostname`, else the kernel's.
pub fn hostname(args: &RunArgs) -> Result<String> {
    if let Some(h) = &args.hostname {
        if h.is_empty() || h.contains('/') {
            anyhow::bail!("--hostname must be non-empty and must not contain `/`");
        }
        return Ok(h.clone());
    }
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(h.trim().to_string())
}

/// A fresh random secret (hex of 24 bytes from the kernel's CSPRNG), for store users.
pub fn secret() -> Result<String> {
    let mut buf = [0u8; 24];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A remote child's lifeline: the initiator holds our stdin open; EOF means it is gone (or
/// wants us gone), and we shut down on our own. Runs on a plain thread because stdin reads
/// block.
pub fn spawn_stdin_lifeline(cancel: CancellationToken) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        cancel.cancel();
    })
}
