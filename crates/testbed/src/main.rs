//! `testbed`: the test bed for people (scripts/testbed calls it). `up` builds hosts and keeps
//! them running after it exits; `hold` keeps them only until its stdin ends; `down` removes
//! them. It never prints the generated password.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use testbed::{Testbed, TestbedConfig};

#[derive(Parser)]
#[command(about = "real sshd hosts in network namespaces, for trying mgmt's remote mode")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build N hosts reachable from here and keep them running after this command exits.
    Up(Shape),
    /// Build N hosts, print the directory, and remove everything on Enter, ^D or ^C.
    Hold(Shape),
    /// Remove the test bed in DIR, or without DIR every kept one and any crashed leftovers.
    Down { dir: Option<PathBuf> },
    /// Build an apt repository in DIR holding the test service package `mgmt-testd` (for
    /// `up --booted --apt-repo DIR`: the demo and the benchmarks use it).
    Repo { dir: PathBuf },
}

#[derive(Args)]
struct Shape {
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
    /// Booted Debian 12 hosts (systemd-nspawn, PID 1 systemd) instead of plain sshd ones.
    /// The first run builds their root with mmdebstrap (about 30 s, needs the network).
    #[arg(long)]
    booted: bool,
    /// With --booted: an apt repository directory mounted read-only at /srv/mgmt-repo in every
    /// host as apt's only source.
    #[arg(long, requires = "booted")]
    apt_repo: Option<PathBuf>,
}

impl Shape {
    fn config(self) -> Result<TestbedConfig, String> {
        let indexes =
            |names: &[String]| names.iter().map(|n| index_of(n)).collect::<Result<_, _>>();
        Ok(TestbedConfig {
            hosts: self.hosts,
            leaves: self.leaves,
            intermediates: indexes(&self.intermediates)?,
            no_sftp: indexes(&self.no_sftp)?,
            password_auth: self.password_auth,
            extra_user: true,
            dir: self.dir.map(|d| std::path::absolute(&d).unwrap_or(d)),
            sshd_options: Vec::new(),
            booted: self.booted,
            apt_repo: self.apt_repo.map(|d| std::path::absolute(&d).unwrap_or(d)),
            device_binds: Vec::new(),
        })
    }
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
        Cmd::Up(shape) => {
            let bed = start(shape)?;
            let text = describe(&bed);
            // Kept before printing: a closed stdout must not take the hosts down with it.
            let dir = bed.keep().map_err(|e| e.to_string())?;
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{text}");
            let _ = writeln!(out, "remove with: scripts/testbed down {}", dir.display());
            Ok(())
        }
        Cmd::Hold(shape) => {
            let stop = stop_requests();
            let bed = start(shape)?;
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{}", describe(&bed));
            let _ = writeln!(out, "press Enter, ^D or ^C to remove it");
            let _ = out.flush();
            drop(out);
            let _ = stop.recv();
            bed.down().map_err(|e| e.to_string())
        }
        Cmd::Repo { dir } => {
            let repo = testbed::AptRepo::build(&dir, &[testbed::testd_deb("1.0")])
                .map_err(|e| e.to_string())?;
            println!("repo {}", repo.dir().display());
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

/// A channel that receives once stdin has a line or ends, or SIGINT/SIGTERM/SIGHUP arrives.
/// Must be called before any other thread exists: the signals are blocked in every thread and
/// taken by `sigwait` in one, so ^C tears the test bed down instead of leaving it behind.
fn stop_requests() -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    // SAFETY: plain signal-set manipulation on a local, zero-initialised sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let on_signal = tx.clone();
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid signal set; sigwait writes the signal number into `sig`.
        unsafe { libc::sigwait(&set, &mut sig) };
        let _ = on_signal.send(());
    });
    std::thread::spawn(move || {
        let _ = std::io::stdin().lock().read_line(&mut String::new());
        let _ = tx.send(());
    });
    rx
}

fn start(shape: Shape) -> Result<Testbed, String> {
    Testbed::up(shape.config()?).map_err(|e| e.to_string())
}

/// How to reach each host; the first line is `dir DIR`, which scripts can parse.
fn describe(bed: &Testbed) -> String {
    let config = bed.ssh_config();
    let mut s = format!("dir {}\n", bed.dir().display());
    for h in bed.hosts() {
        let mut notes = Vec::new();
        if let Some(via) = &h.via {
            notes.push(format!("leaf, reached through {via}"));
        }
        if let Some(leaf) = h.leaf_addr {
            notes.push(format!("intermediate, leaf network address {leaf}"));
        }
        if !h.sftp {
            notes.push("no sftp".to_string());
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        s.push_str(&format!(
            "  ssh -F {} {:<4}  # {} in netns {}{notes}\n",
            config.display(),
            h.name,
            h.addr,
            h.netns
        ));
    }
    s.push_str(&format!(
        "  user {0} too: ssh -F {1} -l {0} h1\n",
        testbed::EXTRA_USER,
        config.display()
    ));
    if bed.is_booted() {
        s.push_str(&format!(
            "  booted (systemd-nspawn, PID 1 systemd); {0}'s sudo needs no password, {1}'s needs the password; consoles in {2}/hN/console.log\n",
            testbed::EXTRA_USER,
            testbed::PASSWORD_USER,
            bed.dir().display()
        ));
        s.push_str(&format!(
            "  password ({}'s sudo; root's and {}'s login with --password-auth): in {}\n",
            testbed::PASSWORD_USER,
            testbed::EXTRA_USER,
            bed.dir().join("password").display()
        ));
    } else if bed.password().is_some() {
        s.push_str(&format!(
            "  password (root and {}): in {}\n",
            testbed::EXTRA_USER,
            bed.dir().join("password").display()
        ));
    }
    s
}
