//! `mgmt`: the binary. Glue only: argv, logging, the runtime, wiring of the library crates,
//! and exit codes. Only this crate knows argv, the environment and exit codes, and only it
//! uses `anyhow`.

mod args;
mod child;
mod cluster;
mod collect;
mod graphfile;
mod graphviz;
mod hier;
mod output;
mod progress;
mod remote_run;
mod run;
mod signals;
mod storelink;

use std::io::Read;
use std::process::ExitCode;

use anyhow::Result;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{ColorChoice, CommandFactory, FromArgMatches};
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

/// `mgmt --version`: the crate's version and the commit it was built from (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("MGMT_GIT_COMMIT"),
    ")"
);

/// <https://no-color.org>: `NO_COLOR` set and non-empty turns every colour off.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

fn main() -> ExitCode {
    // clap colours its help and errors only on a terminal; NO_COLOR turns them off there too.
    let mut cmd = Cli::command();
    if no_color() {
        cmd = cmd.color(ColorChoice::Never);
    }
    let parsed = cmd
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd)));
    let cli = match parsed {
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
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "mgmt", &mut buf);
            print_stdout(&buf)
        }
        Command::Man => match manpage(&cmd) {
            Ok(buf) => print_stdout(&buf),
            Err(e) => {
                eprintln!("error: cannot render the manual page: {e}");
                Exit::Failed
            }
        },
    };
    ExitCode::from(exit as u8)
}

/// Writes generated text to stdout; a closed pipe (`mgmt man | head`) is not an error.
fn print_stdout(buf: &[u8]) -> Exit {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(buf).and_then(|()| out.flush()) {
        Ok(()) => Exit::Ok,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {e}");
            Exit::Failed
        }
    }
}

/// One manual page for the whole program: mgmt's own sections, then one section per
/// subcommand with its synopsis, description and options (`mgmt run`'s flags are the point).
fn manpage(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let mut cmd = cmd.clone();
    // Built, a subcommand's bin name is `mgmt run` (what its synopsis shows).
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut subs = Vec::new();
    man.render_subcommands_section(&mut subs)?;
    let mut subs = String::from_utf8_lossy(&subs).into_owned();
    let shown: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    // The list names pages of their own (`mgmt-run(1)`); here they are sections below.
    for sub in cmd.get_subcommands() {
        let n = sub.get_name();
        subs = subs.replace(&format!("mgmt\\-{n}(1)"), &format!("\\fBmgmt {n}\\fR"));
    }
    out.extend_from_slice(subs.as_bytes());
    for sub in shown {
        let name = sub
            .get_bin_name()
            .map_or_else(|| format!("mgmt {}", sub.get_name()), str::to_string);
        let page = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        page.render_synopsis_section(&mut part)?;
        page.render_description_section(&mut part)?;
        page.render_options_section(&mut part)?;
        out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        // The sub page's sections become subsections of this one.
        for line in String::from_utf8_lossy(&part).lines() {
            let line = match line.strip_prefix(".SH ") {
                Some(rest) => format!(".SS {rest}"),
                None => line.to_string(),
            };
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    man.render_version_section(&mut out)?;
    Ok(out)
}

fn run_command(args: RunArgs) -> Exit {
    // Bad input is one plain line, like clap's own errors: nothing has started yet.
    if args.yaml.is_none() && args.remote.is_empty() {
        eprintln!(
            "error: `mgmt run` needs a graph: --yaml FILE (this machine) or --remote FILE (over SSH)"
        );
        return Exit::BadInput;
    }
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
    // Everything the run spawned was awaited by it; a forced exit must not wait on stragglers.
    rt.shutdown_timeout(std::time::Duration::from_millis(300));
    match result {
        Ok(exit) => exit,
        Err(e) => {
            // The one place a run's error is printed (callers return it, never log it too).
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
            Ok(Ok(spec)) => {
                for w in &spec.warnings {
                    eprint!("{}", w.warning());
                }
                println!(
                    "{}: ok (graph {}, {} resources)",
                    f.display(),
                    spec.graph,
                    spec.resources.len()
                )
            }
            Ok(Err(diags)) => {
                eprintln!("{diags}");
                exit = Exit::BadInput;
            }
            Err(diags) => {
                eprintln!("{}", graphfile::render(&diags));
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
