//! Dev-only test bed: real OpenSSH sshd "hosts" on this machine, reachable with a generated
//! client key, known_hosts and ssh_config; plus a real etcd on loopback ([`Etcd`]). Tests, the
//! demo and the benchmarks of the remote mode use it.
//!
//! Each host has its own network namespace (own address, port 22, own ed25519 host key), UTS
//! namespace (hostname = its alias `hN`) and mount namespace, in which /tmp and /run are fresh
//! tmpfs, /root and /home are the host's own directories (so `~/.cache/mgmt` is never shared),
//! and /etc/passwd, group and shadow are copies with the extra user. Everything else (/etc,
//! /var, /usr, /opt) is the machine's own: tests should write under /tmp or a home.
//!
//! It must never leave anything behind (namespaces, links, processes, directories) once a
//! [`Testbed`] is dropped or taken `down`, and never send traffic anywhere but loopback and its
//! own namespaces: its subnets live in 10.213.0.0/16, nothing is forwarded or NATed, root-side
//! links carry no IPv6 address, and the leaf network gets an `unreachable` route in the root
//! namespace so it cannot leak via the default route (the one exception: the first booted test
//! bed on a machine downloads Debian packages once, to build the cached root). It needs root; it
//! never installs anything (scripts/testbed does).
//!
//! ```no_run
//! use testbed::{Testbed, TestbedConfig};
//!
//! let bed = Testbed::up(TestbedConfig { hosts: 3, no_sftp: vec![2], ..Default::default() })?;
//! let h1 = &bed.hosts()[0];
//! // Point the client at bed.ssh_config() (aliases h1..), bed.known_hosts(), bed.client_key().
//! let out = std::process::Command::new("ssh").arg("-F").arg(bed.ssh_config()).args(["h1", "true"]).output();
//! assert!(bed.exists(h1, "/tmp"));                       // the host's own /tmp
//! let out = bed.exec(h1, "ls /root/.cache/mgmt")?;       // inside the host's namespaces
//! bed.down()?;                                           // or just drop it
//! # Ok::<(), testbed::TestbedError>(())
//! ```
//!
//! Booted hosts (`booted: true`) are whole Debian 12 machines instead: each boots its own disk
//! (an overlay over a root built once with mmdebstrap and cached in
//! /var/cache/mgmt-testbed/booted-KEY) with `systemd-nspawn -b` in its network namespace, so
//! PID 1 is systemd, sshd is Debian's ssh.service, and users, sudo, D-Bus and apt are real (see
//! `booted`). They are reached exactly like plain hosts (same addresses, aliases, keys); a local
//! apt repository ([`AptRepo`], [`TestbedConfig::apt_repo`]) makes apt work offline.
//!
//! ```no_run
//! use testbed::{Testbed, TestbedConfig};
//!
//! let bed = Testbed::up(TestbedConfig { booted: true, ..TestbedConfig::hosts(2) })?;
//! let h1 = &bed.hosts()[0];
//! let out = bed.exec(h1, "systemctl is-system-running")?;   // "running"
//! # Ok::<(), testbed::TestbedError>(())
//! ```
//!
//! Several test beds may run at once, from any number of processes: each claims a slot (see
//! `slots`) that fixes its names and subnets. A run that crashed is cleaned up by the next
//! `Testbed::up` on the machine, or by `scripts/testbed down`.

mod aptrepo;
mod booted;
mod error;
mod etcd;
mod launch;
mod procs;
mod slots;
mod sshd;
mod util;

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub use aptrepo::{AptRepo, Deb, DebFile, DebUnit, TESTD, TESTD_PORT, testd_deb};
pub use booted::REPO_MOUNT;
pub use error::TestbedError;
pub use etcd::Etcd;
pub use sshd::{EXTRA_USER, PASSWORD_USER};

use slots::{Claim, Names, Owner};
use sshd::{EtcOverlay, HostFiles, SshdOptions};
use util::{find_program, mkdir, read_to_string, run, wait_until, write_file};

/// The SSH port of every host.
pub const SSH_PORT: u16 = 22;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// A booted host boots in about a second here; a loaded machine may take much longer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// The largest host number whose address still fits a /24 next to the bridge's `.1`.
const MAX_HOSTS: usize = 250;

/// What to build. Host indexes (`no_sftp`, `intermediates`) are 0-based positions in
/// [`Testbed::hosts`]: index 0 is `h1`.
#[derive(Clone, Debug)]
pub struct TestbedConfig {
    /// Hosts on the network the root namespace reaches: `h1..=hN`.
    pub hosts: usize,
    /// Hosts only on the leaf network, unreachable from the root namespace: `h(N+1)..`.
    pub leaves: usize,
    /// Which of the first `hosts` are also on the leaf network (needed when `leaves > 0`).
    /// Each gets its own `/root/.ssh` (`id_ed25519` = the client key, `known_hosts`, and a
    /// `config` with the `hN` aliases of the leaf network) so it can reach the leaves itself.
    pub intermediates: Vec<usize>,
    /// Hosts whose sshd has no sftp subsystem.
    pub no_sftp: Vec<usize>,
    /// Password login for root and the extra user (see [`Testbed::password`]); root may then
    /// log in with a password (`PermitRootLogin yes`).
    pub password_auth: bool,
    /// Every host has the unprivileged user [`EXTRA_USER`] with its own home, authorized with
    /// the same client key.
    pub extra_user: bool,
    /// Where the keys, configs, logs and host homes go (must not exist or be empty, and must not
    /// be under /tmp, /run, /root or /home, which hosts overlay). Default:
    /// /var/tmp/mgmt-testbed-SSS-XXXXXX.
    pub dir: Option<PathBuf>,
    /// Lines put first in every host's sshd_config (e.g. `"ClientAliveInterval 1"`). sshd takes
    /// the first value of a keyword, so these override the test bed's own settings (on booted
    /// hosts: first in a drop-in of /etc/ssh/sshd_config.d, which comes before Debian's
    /// settings).
    pub sshd_options: Vec<String>,
    /// Booted hosts: every host is a Debian 12 container booted with systemd-nspawn (PID 1
    /// systemd, Debian's ssh.service) on its own overlay of a cached root, instead of the
    /// machine's sshd in namespaces. Needs systemd-nspawn (systemd-container), and mmdebstrap
    /// plus network access the first time, to build the root (about 30 s). With `extra_user`,
    /// hosts also have [`PASSWORD_USER`], and the test bed always has a password.
    pub booted: bool,
    /// Booted hosts only: an apt repository directory (see [`AptRepo`]) bind-mounted read-only
    /// at [`REPO_MOUNT`] into every host, which apt then uses as its only source (`apt-get
    /// update` has run once the test bed is up). Rebuilding it is seen by the hosts at once.
    pub apt_repo: Option<PathBuf>,
    /// Booted hosts only: block device nodes of the machine (e.g. a loop device from
    /// `losetup --find --show IMAGE`, which the caller attaches and detaches) bind-mounted at
    /// the same path into every host, so that a host can mount them. Empty by default.
    pub device_binds: Vec<PathBuf>,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        TestbedConfig {
            hosts: 1,
            leaves: 0,
            intermediates: Vec::new(),
            no_sftp: Vec::new(),
            password_auth: false,
            extra_user: true,
            dir: None,
            sshd_options: Vec::new(),
            booted: false,
            apt_repo: None,
            device_binds: Vec::new(),
        }
    }
}

impl TestbedConfig {
    /// `n` plain hosts, everything else default.
    pub fn hosts(n: usize) -> Self {
        TestbedConfig {
            hosts: n,
            ..Default::default()
        }
    }
}

/// One sshd host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Alias in the generated ssh_config: `h1`, `h2`, ...
    pub name: String,
    /// The address sshd listens on (for leaves, an address on the leaf network).
    pub addr: IpAddr,
    pub port: u16,
    /// Its network namespace (`ip netns exec NAME ...`).
    pub netns: String,
    pub reachable_from_root: bool,
    /// Intermediates only: their address on the leaf network.
    pub leaf_addr: Option<IpAddr>,
    /// Leaves only: the intermediate (its name) the ssh_config jumps through to reach it.
    pub via: Option<String>,
    pub sftp: bool,
    index: usize,
}

/// A process running inside a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostProcess {
    pub pid: u32,
    pub cmdline: Vec<String>,
}

/// A running test bed. Dropping it (or [`Testbed::down`]) removes everything it made.
pub struct Testbed {
    names: Names,
    dir: PathBuf,
    hosts: Vec<Host>,
    /// Per host: its sshd, or for booted hosts its systemd-nspawn.
    children: Vec<Child>,
    booted: Option<Booted>,
    password: Option<String>,
    /// False once torn down or kept, so Drop does nothing.
    owned: bool,
}

impl std::fmt::Debug for Testbed {
    // By hand: the password must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("slot", &self.names.slot)
            .field("dir", &self.dir)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// What a booted test bed keeps about its hosts.
struct Booted {
    /// The cached root: every host's lower layer.
    root: PathBuf,
    apt_repo: Option<PathBuf>,
    device_binds: Vec<PathBuf>,
    nspawn: PathBuf,
    /// Per host: the container's init (PID 1 inside); replaced by a restart.
    leaders: Vec<u32>,
}

/// The programs the test bed runs, found once.
struct Tools {
    ip: PathBuf,
    /// Plain hosts: the machine's sshd. Booted: systemd-nspawn.
    daemon: PathBuf,
    keygen: PathBuf,
}

impl Tools {
    fn find(booted: bool) -> Result<Tools, TestbedError> {
        // Checked up front so a missing package is named before anything is built
        // (`exec` needs nsenter later).
        find_program("nsenter", "util-linux")?;
        Ok(Tools {
            ip: find_program("ip", "iproute2")?,
            daemon: if booted {
                find_program("systemd-nspawn", "systemd-container")?
            } else {
                find_program("sshd", "openssh-server")?
            },
            keygen: find_program("ssh-keygen", "openssh-client")?,
        })
    }
}

/// The cached root of booted hosts (a directory; never write to it), built first when it is
/// missing: mmdebstrap, about 30 s and network access, once per machine and recipe. Testbed::up
/// calls it; call it first to keep the build out of a measurement.
pub fn build_booted_root() -> Result<PathBuf, TestbedError> {
    booted::root()
}

impl Testbed {
    /// Builds the hosts and waits until every sshd accepts connections.
    pub fn up(cfg: TestbedConfig) -> Result<Testbed, TestbedError> {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(TestbedError::NotRoot { uid });
        }
        validate(&cfg)?;
        let tools = Tools::find(cfg.booted)?;
        let openssl = if cfg.password_auth || cfg.booted {
            Some(find_program("openssl", "openssl")?)
        } else {
            None
        };
        // Before claiming a slot: the first build takes half a minute and may fail.
        let booted_root = if cfg.booted {
            Some(booted::root()?)
        } else {
            None
        };
        let wanted_dir = cfg.dir.clone();
        let claim = slots::claim(Owner::me(), |slot| {
            wanted_dir.unwrap_or_else(|| {
                let suffix =
                    util::random_token(6).unwrap_or_else(|_| std::process::id().to_string());
                PathBuf::from(format!("/var/tmp/mgmt-testbed-{slot:03}-{suffix}"))
            })
        })?;
        let mut bed = Testbed {
            names: Names { slot: claim.slot },
            dir: claim.dir,
            hosts: Vec::new(),
            children: Vec::new(),
            booted: booted_root.map(|root| Booted {
                root,
                apt_repo: cfg.apt_repo.clone(),
                device_binds: cfg.device_binds.clone(),
                nspawn: tools.daemon.clone(),
                leaders: Vec::new(),
            }),
            password: None,
            owned: true,
        };
        // On any error below, dropping `bed` removes what was built so far.
        bed.build(&cfg, &tools, openssl.as_deref())?;
        Ok(bed)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host with alias `name` (`h1`...).
    pub fn host(&self, name: &str) -> Result<&Host, TestbedError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| TestbedError::UnknownHost(name.to_string()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The ed25519 client private key (mode 0600), authorized for root and [`EXTRA_USER`].
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }
    /// Every host's key under every address it has, in plain `addr key` form.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    /// The same entries, hashed (`|1|salt|hash key`), as `HashKnownHosts yes` writes them.
    pub fn known_hosts_hashed(&self) -> PathBuf {
        self.dir.join("known_hosts.hashed")
    }
    /// `Host hN` aliases (User root, IdentityFile, UserKnownHostsFile, StrictHostKeyChecking
    /// yes; leaves with ProxyJump through their intermediate): `ssh -F this h1`.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }
    /// The password of root and [`EXTRA_USER`] when `password_auth` is on (also in
    /// `dir()/password`, mode 0600). Booted test beds always have one: it is what
    /// [`PASSWORD_USER`]'s sudo asks for (root's and [`EXTRA_USER`]'s only with
    /// `password_auth`). Never print it.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
    /// The sshd log of a host. Booted hosts: the console log (systemd-nspawn's output; sshd
    /// logs to the host's journal, `journalctl -u ssh`).
    pub fn sshd_log(&self, host: &Host) -> PathBuf {
        if self.booted.is_some() {
            self.files(host).console_log()
        } else {
            self.files(host).log()
        }
    }
    /// Pid of the host's sshd listener. On a plain host every process of the host descends
    /// from it. On a booted host it is ssh.service's main process (SIGTERM stops sshd, and
    /// systemd leaves it stopped), or the container's init when sshd does not run.
    pub fn sshd_pid(&self, host: &Host) -> u32 {
        match &self.booted {
            None => self.children[host.index].id(),
            Some(b) => {
                let leader = b.leaders[host.index];
                procs::children(leader)
                    .into_iter()
                    .find(|p| procs::comm(*p).as_deref() == Some("sshd"))
                    .unwrap_or(leader)
            }
        }
    }

    /// Whether the hosts are booted containers (see [`TestbedConfig::booted`]).
    pub fn is_booted(&self) -> bool {
        self.booted.is_some()
    }

    /// Booted hosts: pid (in the root namespace) of the container's init, systemd: `nsenter -t
    /// PID -m -u -i -n -p` enters the host, `/proc/PID/root` is its filesystem. None on plain
    /// hosts.
    pub fn leader_pid(&self, host: &Host) -> Option<u32> {
        self.booted.as_ref().map(|b| b.leaders[host.index])
    }

    /// Booted test beds: the cached root every host's disk is an overlay of (never written).
    pub fn booted_root(&self) -> Option<&Path> {
        self.booted.as_ref().map(|b| b.root.as_path())
    }

    /// Booted test beds: the apt repository mounted at [`REPO_MOUNT`] in every host.
    pub fn apt_repo(&self) -> Option<&Path> {
        self.booted.as_ref()?.apt_repo.as_deref()
    }

    /// The pid whose namespaces (and /proc/PID/root) are the host's.
    fn ns_pid(&self, host: &Host) -> u32 {
        match &self.booted {
            None => self.children[host.index].id(),
            Some(b) => b.leaders[host.index],
        }
    }

    /// Runs `sh -c cmd` as root inside the host's network, mount and UTS namespaces (its private
    /// /tmp and homes, its hostname); on a booted host inside all of the container's namespaces
    /// (IPC, PID, cgroup as well), with a clean environment (PATH, HOME). A non-zero exit is not
    /// an error here: look at the returned status.
    pub fn exec(&self, host: &Host, cmd: &str) -> Result<Output, TestbedError> {
        let mut command = if self.booted.is_some() {
            booted::nsenter(self.ns_pid(host))?
        } else {
            let mut c = Command::new(find_program("nsenter", "util-linux")?);
            c.args(["-t", &self.ns_pid(host).to_string(), "-m", "-n", "-u", "--"])
                .current_dir("/")
                .env("HOME", "/root");
            c
        };
        command
            .args(["/bin/sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TestbedError::Spawn {
                program: "nsenter".to_string(),
                source,
            })
    }

    /// Reads a file as the host sees it (`path` absolute, e.g. `/tmp/x` is the host's /tmp).
    pub fn read_file(&self, host: &Host, path: impl AsRef<Path>) -> Result<Vec<u8>, TestbedError> {
        let full = self.host_path(host, path.as_ref());
        fs::read(&full).map_err(|e| TestbedError::io("read", full, e))
    }

    /// Writes a file as the host sees it (parent directories must exist).
    pub fn write_file(
        &self,
        host: &Host,
        path: impl AsRef<Path>,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), TestbedError> {
        write_file(&self.host_path(host, path.as_ref()), contents, mode)
    }

    /// Whether a path exists as the host sees it.
    pub fn exists(&self, host: &Host, path: impl AsRef<Path>) -> bool {
        self.host_path(host, path.as_ref()).exists()
    }

    /// The path through which the root namespace sees `path` inside the host: /proc/PID/root
    /// resolves in the host's mount namespace.
    fn host_path(&self, host: &Host, path: &Path) -> PathBuf {
        let rel = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.ns_pid(host))).join(rel)
    }

    /// Every process inside the host (its network or mount namespace), sshd included; on a
    /// booted host the container's, and processes started by [`exec`](Self::exec).
    pub fn processes(&self, host: &Host) -> Vec<HostProcess> {
        let base = PathBuf::from(format!("/proc/{}/ns", self.ns_pid(host)));
        let (net, mnt) = (
            procs::ns_id(&base.join("net")),
            procs::ns_id(&base.join("mnt")),
        );
        procs::all_with_ns()
            .into_iter()
            .filter(|(_, n, m)| (n.is_some() && *n == net) || (m.is_some() && *m == mnt))
            .map(|(pid, _, _)| HostProcess {
                pid,
                cmdline: procs::cmdline(pid),
            })
            .collect()
    }

    /// Cuts the host off, as a pulled cable does: every link of the host to a bridge (its veth
    /// pairs' outer ends) goes down, so packets to and from it are dropped without a word (no
    /// RST, no ICMP). Its processes keep running. [`restore`](Self::restore) undoes it.
    pub fn cut(&self, host: &Host) -> Result<(), TestbedError> {
        self.set_links(host, "down")
    }

    /// Brings a [`cut`](Self::cut) host's links back up.
    pub fn restore(&self, host: &Host) -> Result<(), TestbedError> {
        self.set_links(host, "up")
    }

    fn set_links(&self, host: &Host, state: &str) -> Result<(), TestbedError> {
        let ip = find_program("ip", "iproute2")?;
        let num = host.index + 1;
        let mut links = Vec::new();
        if host.reachable_from_root {
            links.push(self.names.veth(num));
        }
        if host.leaf_addr.is_some() || !host.reachable_from_root {
            links.push(self.names.leaf_veth(num));
        }
        for link in links {
            run(Command::new(&ip).args(["link", "set", &link, state]), None)?;
        }
        Ok(())
    }

    /// Gives the host a new host key and makes its sshd use it (SIGHUP: same pid, same private
    /// /tmp; booted hosts: `systemctl reload ssh`). known_hosts is left alone, so clients now
    /// see a changed key. Returns the new public key (`ssh-ed25519 AAAA...`).
    pub fn replace_host_key(&self, host: &Host) -> Result<String, TestbedError> {
        if self.booted.is_some() {
            return self.replace_booted_host_key(host);
        }
        let keygen = find_program("ssh-keygen", "openssh-client")?;
        let files = self.files(host);
        let fresh = files.dir.join("ssh_host_ed25519_key.new");
        let _ = fs::remove_file(&fresh);
        run(&mut keygen_cmd(&keygen, &fresh, &host.name), None)?;
        for (from, to) in [
            (
                fresh.with_extension("new.pub"),
                files.host_key().with_extension("pub"),
            ),
            (fresh.clone(), files.host_key()),
        ] {
            fs::rename(&from, &to).map_err(|e| TestbedError::io("rename", &from, e))?;
        }
        let listening = || {
            fs::read_to_string(files.log())
                .map(|log| log.matches("Server listening on").count())
                .unwrap_or(0)
        };
        let before = listening();
        procs::kill(self.sshd_pid(host), libc::SIGHUP);
        // The re-executed sshd logs again once it listens with the new key.
        if !wait_until(READY_TIMEOUT, || listening() > before) {
            return Err(TestbedError::Timeout {
                what: format!("sshd of {} after host key change", host.name),
                timeout: READY_TIMEOUT,
            });
        }
        public_key(&files.host_key().with_extension("pub"))
    }

    fn replace_booted_host_key(&self, host: &Host) -> Result<String, TestbedError> {
        let keygen = find_program("ssh-keygen", "openssh-client")?;
        let files = self.files(host);
        let fresh = files.dir.join("ssh_host_ed25519_key.new");
        let _ = fs::remove_file(&fresh);
        let _ = fs::remove_file(fresh.with_extension("new.pub"));
        run(&mut keygen_cmd(&keygen, &fresh, &host.name), None)?;
        let public = public_key(&fresh.with_extension("new.pub"))?;
        for (from, inside, mode) in [
            (
                fresh.with_extension("new.pub"),
                "ssh_host_ed25519_key.pub",
                0o644,
            ),
            (fresh.clone(), "ssh_host_ed25519_key", 0o600),
        ] {
            let bytes = fs::read(&from).map_err(|e| TestbedError::io("read", &from, e))?;
            self.write_file(host, Path::new("/etc/ssh").join(inside), &bytes, mode)?;
            let mine = files.dir.join(inside);
            fs::rename(&from, &mine).map_err(|e| TestbedError::io("rename", &mine, e))?;
        }
        let out = self.exec(host, "systemctl reload ssh")?;
        if !out.status.success() {
            return Err(TestbedError::Command {
                command: format!("systemctl reload ssh (in {})", host.name),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        // The re-executed sshd offers the new key once it listens again.
        let keyscan = find_program("ssh-keyscan", "openssh-client")?;
        let nsenter = find_program("nsenter", "util-linux")?;
        let leader = self.ns_pid(host).to_string();
        let offered = || {
            Command::new(&nsenter)
                .args(["-t", &leader, "-n", "--"])
                .arg(&keyscan)
                .args(["-T", "2", "-t", "ed25519"])
                .arg(host.addr.to_string())
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&public))
        };
        if !wait_until(READY_TIMEOUT, offered) {
            return Err(TestbedError::Timeout {
                what: format!("sshd of {} after host key change", host.name),
                timeout: READY_TIMEOUT,
            });
        }
        Ok(public)
    }

    /// Booted hosts: halts the host (as `poweroff` would, SIGKILL after a while) and boots it
    /// again on the same disk, then waits until it is ready as [`up`](Self::up) does. Its
    /// files survive; its processes, /run and /tmp (a tmpfs) do not. Plain hosts: an error.
    pub fn restart(&mut self, host: &Host) -> Result<(), TestbedError> {
        let Some(b) = &self.booted else {
            return Err(TestbedError::Config(
                "restart needs a booted test bed".to_string(),
            ));
        };
        let files = self.files(host);
        let (root, nspawn, repo) = (b.root.clone(), b.nspawn.clone(), b.apt_repo.clone());
        let devices = b.device_binds.clone();
        booted::stop(&mut [&mut self.children[host.index]]);
        self.children[host.index] = booted::spawn(&booted::Boot {
            nspawn: &nspawn,
            root: &root,
            files: &files,
            machine: &host.netns,
            netns: &host.netns,
            hostname: &host.name,
            apt_repo: repo.as_deref(),
            devices: &devices,
        })?;
        let leader = self.wait_booted(host)?;
        if let Some(b) = &mut self.booted {
            b.leaders[host.index] = leader;
        }
        Ok(())
    }

    fn wait_booted(&mut self, host: &Host) -> Result<u32, TestbedError> {
        let netns =
            (!host.reachable_from_root).then(|| PathBuf::from("/run/netns").join(&host.netns));
        let files = self.files(host);
        booted::wait_booted(
            &mut self.children[host.index],
            &host.name,
            &files,
            SocketAddr::new(host.addr, host.port),
            netns.as_deref(),
            BOOT_TIMEOUT,
        )
    }

    /// Tears everything down and reports what could not be removed.
    pub fn down(mut self) -> Result<(), TestbedError> {
        self.teardown()
    }

    /// Leaves the test bed running after this value is gone (the `testbed up` script): its claim
    /// becomes persistent, and only [`Testbed::down_dir`] or [`Testbed::down_kept`] remove it.
    pub fn keep(mut self) -> Result<PathBuf, TestbedError> {
        Claim {
            slot: self.names.slot,
            owner: Owner::Persistent,
            dir: self.dir.clone(),
        }
        .write()?;
        self.owned = false;
        Ok(self.dir.clone())
    }

    /// Tears down the test bed whose directory is `dir` (made by `up` and kept).
    pub fn down_dir(dir: &Path) -> Result<(), TestbedError> {
        let marker = dir.join(slots::MARKER);
        let text = fs::read_to_string(&marker).map_err(|_| TestbedError::NotATestbed {
            path: dir.to_path_buf(),
        })?;
        let slot = text
            .lines()
            .find_map(|l| l.strip_prefix("slot ")?.trim().parse().ok())
            .ok_or_else(|| TestbedError::NotATestbed {
                path: dir.to_path_buf(),
            })?;
        slots::teardown(Names { slot }, Some(dir))
    }

    /// Tears down every kept test bed and every leftover of a crashed run; running test beds
    /// of live processes are not touched. Returns the directories removed.
    pub fn down_kept() -> Result<Vec<PathBuf>, TestbedError> {
        let removed = slots::teardown_where(|c| c.owner == Owner::Persistent)?;
        Ok(removed.into_iter().map(|c| c.dir).collect())
    }

    fn teardown(&mut self) -> Result<(), TestbedError> {
        if !self.owned {
            return Ok(());
        }
        self.owned = false;
        if self.booted.is_some() {
            // Halted in parallel, before their namespaces go.
            booted::stop(&mut self.children.iter_mut().collect::<Vec<_>>());
        }
        let result = slots::teardown(self.names, Some(&self.dir));
        for child in &mut self.children {
            // Killed by the teardown already (or on its way out): reap it. A child reaped
            // before (a halted container) is not signalled: its pid may belong to another.
            if matches!(child.try_wait(), Ok(None)) {
                procs::kill(child.id(), libc::SIGKILL);
            }
            let _ = child.wait();
        }
        result
    }

    fn files(&self, host: &Host) -> HostFiles {
        HostFiles {
            dir: self.dir.join(&host.name),
        }
    }

    fn build(
        &mut self,
        cfg: &TestbedConfig,
        tools: &Tools,
        openssl: Option<&Path>,
    ) -> Result<(), TestbedError> {
        prepare_dir(&self.dir)?;
        write_file(
            &self.dir.join(slots::MARKER),
            format!("slot {}\n", self.names.slot).as_bytes(),
            0o644,
        )?;
        self.hosts = plan(self.names, cfg);

        // Keys first, all in parallel: ssh-keygen is the slowest per-host step.
        let mut keygens = Vec::new();
        let client_key = self.client_key();
        keygens.push(util::spawn(
            &mut keygen_cmd(&tools.keygen, &client_key, "mgmt-testbed-client"),
            false,
        )?);
        for host in &self.hosts {
            let files = self.files(host);
            mkdir(&files.dir, 0o755)?;
            mkdir(&files.root_home(), 0o700)?;
            mkdir(&files.homes(), 0o755)?;
            keygens.push(util::spawn(
                &mut keygen_cmd(&tools.keygen, &files.host_key(), &host.name),
                false,
            )?);
        }
        for child in keygens {
            util::finish(&Command::new(&tools.keygen), child, None)?;
        }
        let authorized = self.dir.join("authorized_keys");
        let client_pub = public_key(&client_key.with_extension("pub"))?;
        write_file(&authorized, format!("{client_pub}\n").as_bytes(), 0o644)?;

        let etc = if self.booted.is_some() {
            self.prepare_booted(cfg, &client_pub, openssl)?;
            None
        } else {
            let etc = self.users(cfg, openssl)?;
            for host in &self.hosts {
                let files = self.files(host);
                let config = sshd::render_config(
                    &files,
                    &SshdOptions {
                        listen: host.addr,
                        authorized_keys: &authorized,
                        password_auth: cfg.password_auth,
                        sftp: host.sftp,
                        extra: &cfg.sshd_options,
                    },
                );
                write_file(&files.config(), config.as_bytes(), 0o644)?;
            }
            etc
        };

        self.network(tools)?;
        // Before the hosts start: a booted host's disk must not change behind its back.
        self.write_client_files()?;
        for host in &self.hosts {
            let files = self.files(host);
            let child = match &self.booted {
                None => launch::spawn_sshd(
                    &tools.daemon,
                    &host.netns,
                    &host.name,
                    &files,
                    etc.as_ref(),
                )?,
                Some(b) => booted::spawn(&booted::Boot {
                    nspawn: &tools.daemon,
                    root: &b.root,
                    files: &files,
                    machine: &host.netns,
                    netns: &host.netns,
                    hostname: &host.name,
                    apt_repo: b.apt_repo.as_deref(),
                    devices: &b.device_binds,
                })?,
            };
            self.children.push(child);
        }
        if self.booted.is_none() {
            return self.wait_ready();
        }
        for host in self.hosts.clone() {
            let leader = self.wait_booted(&host)?;
            if let Some(b) = &mut self.booted {
                b.leaders.push(leader);
            }
        }
        if self.apt_repo().is_some() {
            self.apt_update_all()?;
        }
        Ok(())
    }

    /// Booted hosts: the password (always), and each host's own files on its disk.
    fn prepare_booted(
        &mut self,
        cfg: &TestbedConfig,
        client_pub: &str,
        openssl: Option<&Path>,
    ) -> Result<(), TestbedError> {
        let openssl = openssl.ok_or(TestbedError::MissingBinary {
            name: "openssl",
            package: "openssl",
        })?;
        let password = util::random_token(20)?;
        write_file(&self.dir.join("password"), password.as_bytes(), 0o600)?;
        // The password goes through stdin, never argv.
        let out = run(
            Command::new(openssl).args(["passwd", "-6", "-stdin"]),
            Some(format!("{password}\n").as_bytes()),
        )?;
        self.password = Some(password);
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let login_hash = cfg.password_auth.then_some(hash.as_str());
        let accounts = if cfg.extra_user {
            vec![
                booted::Account {
                    name: EXTRA_USER,
                    hash: login_hash,
                },
                booted::Account {
                    name: PASSWORD_USER,
                    hash: Some(&hash),
                },
            ]
        } else {
            Vec::new()
        };
        let b = self.booted.as_ref().expect("a booted test bed");
        for host in &self.hosts {
            booted::prepare(&booted::HostSetup {
                root: &b.root,
                files: &self.files(host),
                name: &host.name,
                listen: host.addr,
                sftp: host.sftp,
                password_auth: cfg.password_auth,
                sshd_options: &cfg.sshd_options,
                client_key: client_pub,
                root_hash: login_hash,
                accounts: &accounts,
                apt_repo: b.apt_repo.is_some(),
            })?;
        }
        Ok(())
    }

    /// `apt-get update` in every booted host at once, so apt knows the repository's packages.
    fn apt_update_all(&self) -> Result<(), TestbedError> {
        let mut running = Vec::new();
        for host in &self.hosts {
            let mut cmd = booted::nsenter(self.ns_pid(host))?;
            cmd.args(["apt-get", "update", "-qq"]);
            let child = util::spawn(&mut cmd, false)?;
            running.push((cmd, child));
        }
        for (cmd, child) in running {
            util::finish(&cmd, child, None)?;
        }
        Ok(())
    }

    /// Generates the users files (when needed) and the extra user's homes.
    fn users(
        &mut self,
        cfg: &TestbedConfig,
        openssl: Option<&Path>,
    ) -> Result<Option<EtcOverlay>, TestbedError> {
        if !cfg.extra_user && !cfg.password_auth {
            return Ok(None);
        }
        let hash = match openssl {
            Some(openssl) => {
                let password = util::random_token(20)?;
                write_file(&self.dir.join("password"), password.as_bytes(), 0o600)?;
                // The password goes through stdin, never argv.
                let out = run(
                    Command::new(openssl).args(["passwd", "-6", "-stdin"]),
                    Some(format!("{password}\n").as_bytes()),
                )?;
                self.password = Some(password);
                Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            None => None,
        };
        let passwd = read_to_string(Path::new("/etc/passwd"))?;
        let extra = if cfg.extra_user {
            let id = free_id(&passwd, &read_to_string(Path::new("/etc/group"))?);
            for host in &self.hosts {
                let home = self.files(host).homes().join(EXTRA_USER);
                mkdir(&home, 0o700)?;
                std::os::unix::fs::chown(&home, Some(id), Some(id))
                    .map_err(|e| TestbedError::io("chown", &home, e))?;
            }
            Some((id, "/home"))
        } else {
            None
        };
        let (p, g, s) = sshd::users_files(
            &passwd,
            &read_to_string(Path::new("/etc/group"))?,
            &read_to_string(Path::new("/etc/shadow"))?,
            extra,
            hash.as_deref(),
        );
        let etc_dir = self.dir.join("etc");
        mkdir(&etc_dir, 0o755)?;
        let overlay = EtcOverlay {
            passwd: etc_dir.join("passwd"),
            group: etc_dir.join("group"),
            shadow: etc_dir.join("shadow"),
        };
        write_file(&overlay.passwd, p.as_bytes(), 0o644)?;
        write_file(&overlay.group, g.as_bytes(), 0o644)?;
        write_file(&overlay.shadow, s.as_bytes(), 0o600)?;
        Ok(Some(overlay))
    }

    /// Namespaces, bridges, veth pairs and addresses: one `ip -batch` in the root namespace,
    /// then one per host namespace, in parallel.
    fn network(&self, tools: &Tools) -> Result<(), TestbedError> {
        let n = self.names;
        let has_leaf_net = self.hosts.iter().any(|h| !h.reachable_from_root);
        let mut root = String::new();
        for h in &self.hosts {
            root.push_str(&format!("netns add {}\n", h.netns));
        }
        // `addrgenmode none` before `up`: no IPv6 link-local address on any root-side link,
        // so the root namespace has no IPv6 path either (in particular into the leaf network).
        root.push_str(&format!("link add {} type bridge\n", n.bridge()));
        root.push_str(&format!("link set {} addrgenmode none\n", n.bridge()));
        root.push_str(&format!(
            "addr add {}/24 dev {}\n",
            n.main_addr(1),
            n.bridge()
        ));
        root.push_str(&format!("link set {} up\n", n.bridge()));
        if has_leaf_net {
            // No address on this bridge: the root namespace has no way into the leaf network.
            root.push_str(&format!("link add {} type bridge\n", n.leaf_bridge()));
            root.push_str(&format!("link set {} addrgenmode none\n", n.leaf_bridge()));
            root.push_str(&format!("link set {} up\n", n.leaf_bridge()));
            // Without this, packets for the leaf subnet would follow the default route out.
            root.push_str(&format!("route replace unreachable {}\n", n.leaf_subnet()));
        }
        let mut per_host = Vec::new();
        for h in &self.hosts {
            let num = h.index + 1;
            let mut inner = String::from("link set lo up\n");
            let mut ifaces = Vec::new();
            if h.reachable_from_root {
                ifaces.push((n.veth(num), n.bridge(), h.addr));
            }
            if let Some(leaf) = h.leaf_addr.or((!h.reachable_from_root).then_some(h.addr)) {
                ifaces.push((n.leaf_veth(num), n.leaf_bridge(), leaf));
            }
            for (i, (outer, bridge, addr)) in ifaces.into_iter().enumerate() {
                root.push_str(&format!(
                    "link add {outer} type veth peer name eth{i} netns {}\n",
                    h.netns
                ));
                root.push_str(&format!("link set {outer} addrgenmode none\n"));
                root.push_str(&format!("link set {outer} master {bridge} up\n"));
                inner.push_str(&format!(
                    "addr add {addr}/24 dev eth{i}\nlink set eth{i} up\n"
                ));
            }
            per_host.push((h.netns.clone(), inner));
        }
        run(
            Command::new(&tools.ip).args(["-batch", "-"]),
            Some(root.as_bytes()),
        )?;
        let mut children = Vec::new();
        for (ns, batch) in &per_host {
            let mut cmd = Command::new(&tools.ip);
            cmd.args(["-n", ns, "-batch", "-"]);
            let child = util::spawn(&mut cmd, true)?;
            children.push((cmd, child, batch));
        }
        for (cmd, child, batch) in children {
            util::finish(&cmd, child, Some(batch.as_bytes()))?;
        }
        Ok(())
    }

    /// known_hosts (plain and hashed), ssh_config, and the intermediates' own ~/.ssh so they
    /// can reach the leaves with the same key.
    fn write_client_files(&self) -> Result<(), TestbedError> {
        let mut known = String::new();
        for h in &self.hosts {
            let key = public_key(&self.files(h).host_key().with_extension("pub"))?;
            for addr in std::iter::once(h.addr).chain(h.leaf_addr) {
                known.push_str(&format!("{addr} {key}\n"));
            }
        }
        write_file(&self.known_hosts(), known.as_bytes(), 0o644)?;
        let hashed = self.known_hosts_hashed();
        write_file(&hashed, known.as_bytes(), 0o644)?;
        let keygen = find_program("ssh-keygen", "openssh-client")?;
        run(Command::new(keygen).arg("-H").arg("-f").arg(&hashed), None)?;
        let _ = fs::remove_file(hashed.with_extension("hashed.old"));

        let config = render_ssh_config(&self.hosts, &self.client_key(), &self.known_hosts(), false);
        write_file(&self.ssh_config(), config.as_bytes(), 0o644)?;

        let client_key = fs::read(self.client_key())
            .map_err(|e| TestbedError::io("read", self.client_key(), e))?;
        let inner_config = render_ssh_config(
            &self.hosts,
            Path::new("/root/.ssh/id_ed25519"),
            Path::new("/root/.ssh/known_hosts"),
            true,
        );
        for h in self.hosts.iter().filter(|h| h.leaf_addr.is_some()) {
            let ssh_dir = match &self.booted {
                None => {
                    let dir = self.files(h).root_home().join(".ssh");
                    mkdir(&dir, 0o700)?;
                    dir
                }
                Some(b) => booted::upper_dir(&b.root, &self.files(h), "root/.ssh", 0o700)?,
            };
            write_file(&ssh_dir.join("id_ed25519"), &client_key, 0o600)?;
            write_file(&ssh_dir.join("known_hosts"), known.as_bytes(), 0o644)?;
            write_file(&ssh_dir.join("config"), inner_config.as_bytes(), 0o644)?;
        }
        Ok(())
    }

    /// Waits until every sshd accepts TCP connections: from the root namespace when the host is
    /// reachable from it, else from inside the host's own namespace.
    fn wait_ready(&mut self) -> Result<(), TestbedError> {
        for i in 0..self.hosts.len() {
            let host = self.hosts[i].clone();
            let target = SocketAddr::new(host.addr, host.port);
            let netns =
                (!host.reachable_from_root).then(|| PathBuf::from("/run/netns").join(&host.netns));
            let mut died = None;
            let child = &mut self.children[i];
            let ready = wait_until(READY_TIMEOUT, || {
                if let Ok(Some(status)) = child.try_wait() {
                    died = Some(status);
                    return true;
                }
                tcp_accepts(netns.as_deref(), target)
            });
            let files = self.files(&host);
            if let Some(status) = died {
                return Err(TestbedError::SshdDied {
                    host: host.name,
                    status,
                    log: files.log(),
                    tail: util::tail(&files.log(), 5),
                });
            }
            if !ready {
                return Err(TestbedError::Timeout {
                    what: format!("sshd of {} on {target}", host.name),
                    timeout: READY_TIMEOUT,
                });
            }
        }
        Ok(())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("testbed: teardown of {}: {e}", self.dir.display());
        }
    }
}

fn validate(cfg: &TestbedConfig) -> Result<(), TestbedError> {
    let bad = |m: String| Err(TestbedError::Config(m));
    let total = cfg.hosts + cfg.leaves;
    if cfg.hosts == 0 {
        return bad("at least one host reachable from the root namespace is needed".into());
    }
    if total > MAX_HOSTS {
        return bad(format!("{total} hosts requested, at most {MAX_HOSTS}"));
    }
    if cfg.leaves > 0 && cfg.intermediates.is_empty() {
        return bad("leaves need at least one intermediate".into());
    }
    if let Some(i) = cfg.intermediates.iter().find(|i| **i >= cfg.hosts) {
        return bad(format!(
            "intermediate index {i} is not among the {} hosts",
            cfg.hosts
        ));
    }
    if let Some(i) = cfg.no_sftp.iter().find(|i| **i >= total) {
        return bad(format!("no_sftp index {i} is beyond the {total} hosts"));
    }
    if let Some(line) = cfg.sshd_options.iter().find(|l| l.contains('\n')) {
        return bad(format!("sshd option {line:?} spans several lines"));
    }
    if !cfg.device_binds.is_empty() && !cfg.booted {
        return bad("device_binds needs booted hosts".into());
    }
    for dev in &cfg.device_binds {
        use std::os::unix::fs::FileTypeExt;
        if !dev.is_absolute() || !fs::metadata(dev).is_ok_and(|m| m.file_type().is_block_device()) {
            return bad(format!(
                "device bind {} must be an absolute path to a block device",
                dev.display()
            ));
        }
    }
    if let Some(repo) = &cfg.apt_repo {
        if !cfg.booted {
            return bad("apt_repo needs booted hosts".into());
        }
        if !repo.is_absolute() || !repo.is_dir() {
            return bad(format!(
                "apt repo {} must be an absolute path to a directory",
                repo.display()
            ));
        }
    }
    if let Some(dir) = &cfg.dir {
        if !dir.is_absolute() {
            return bad(format!("dir {} must be absolute", dir.display()));
        }
        for overlaid in ["/tmp", "/run", "/var/run", "/root", "/home"] {
            if dir.starts_with(overlaid) {
                return bad(format!(
                    "dir {} is under {overlaid}, which every host overlays with its own",
                    dir.display()
                ));
            }
        }
    }
    Ok(())
}

/// Names and addresses of every host.
fn plan(n: Names, cfg: &TestbedConfig) -> Vec<Host> {
    let total = cfg.hosts + cfg.leaves;
    (0..total)
        .map(|i| {
            let num = i + 1;
            let last = (num + 1) as u8;
            let leaf = i >= cfg.hosts;
            let via = leaf.then(|| {
                let k = (i - cfg.hosts) % cfg.intermediates.len();
                format!("h{}", cfg.intermediates[k] + 1)
            });
            Host {
                name: format!("h{num}"),
                addr: if leaf {
                    n.leaf_addr(last)
                } else {
                    n.main_addr(last)
                }
                .into(),
                port: SSH_PORT,
                netns: n.netns(num),
                reachable_from_root: !leaf,
                leaf_addr: cfg
                    .intermediates
                    .contains(&i)
                    .then(|| n.leaf_addr(last).into()),
                via,
                sftp: !cfg.no_sftp.contains(&i),
                index: i,
            }
        })
        .collect()
}

fn prepare_dir(dir: &Path) -> Result<(), TestbedError> {
    if let Ok(mut entries) = fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(TestbedError::Config(format!(
            "dir {} exists and is not empty",
            dir.display()
        )));
    }
    // 0755: sshd reads authorized_keys as the logging-in user, the extra user included.
    mkdir(dir, 0o755)
}

fn keygen_cmd(keygen: &Path, path: &Path, comment: &str) -> Command {
    let mut cmd = Command::new(keygen);
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path);
    cmd
}

/// `type base64` of a .pub file, without its comment.
fn public_key(path: &Path) -> Result<String, TestbedError> {
    let text = read_to_string(path)?;
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

/// A uid/gid free in both files, starting at 4242.
fn free_id(passwd: &str, group: &str) -> u32 {
    let used = |text: &str, id: u32| {
        text.lines()
            .any(|l| l.split(':').nth(2).and_then(|f| f.parse::<u32>().ok()) == Some(id))
    };
    (4242..)
        .find(|id| !used(passwd, *id) && !used(group, *id))
        .unwrap_or(4242)
}

/// ssh_config text. `inside` renders the copy given to intermediates: leaves by their leaf
/// address, no jumps, and only hosts reachable from the leaf network.
fn render_ssh_config(hosts: &[Host], key: &Path, known: &Path, inside: bool) -> String {
    let mut c = String::from("# generated by the mgmt-rs test bed\n");
    for h in hosts {
        let addr = if inside {
            match (h.reachable_from_root, h.leaf_addr) {
                (false, _) => h.addr,
                (true, Some(leaf)) => leaf,
                (true, None) => continue,
            }
        } else {
            h.addr
        };
        c.push_str(&format!(
            "\nHost {}\n  HostName {addr}\n  Port {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
            h.name,
            h.port,
            config_path(key),
            config_path(known)
        ));
        if !inside && let Some(via) = &h.via {
            c.push_str(&format!("  ProxyJump {via}\n"));
        }
    }
    c
}

/// A path as an ssh_config value: quoted only when it must be (not every parser unquotes).
fn config_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains(char::is_whitespace) {
        format!("\"{text}\"")
    } else {
        text
    }
}

/// Whether a TCP connection to `target` succeeds, made from inside the network namespace at
/// `netns` when given (on a short-lived thread, so the caller's namespace never changes).
pub(crate) fn tcp_accepts(netns: Option<&Path>, target: SocketAddr) -> bool {
    let attempt = || TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok();
    match netns {
        None => attempt(),
        Some(path) => std::thread::scope(|s| {
            s.spawn(|| {
                let Ok(ns) = fs::File::open(path) else {
                    return false;
                };
                // SAFETY: setns on an fd we own; it changes only this thread's namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return false;
                }
                attempt()
            })
            .join()
            .unwrap_or(false)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_places_leaves_behind_intermediates() {
        let cfg = TestbedConfig {
            hosts: 2,
            leaves: 3,
            intermediates: vec![0, 1],
            no_sftp: vec![4],
            ..Default::default()
        };
        let hosts = plan(Names { slot: 3 }, &cfg);
        let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["h1", "h2", "h3", "h4", "h5"]);
        assert_eq!(hosts[0].addr, "10.213.6.2".parse::<IpAddr>().unwrap());
        assert_eq!(hosts[0].leaf_addr, Some("10.213.7.2".parse().unwrap()));
        assert_eq!(hosts[2].addr, "10.213.7.4".parse::<IpAddr>().unwrap());
        assert!(!hosts[2].reachable_from_root);
        assert_eq!(hosts[2].via.as_deref(), Some("h1"));
        assert_eq!(hosts[3].via.as_deref(), Some("h2"));
        assert!(!hosts[4].sftp && hosts[3].sftp);
        assert_eq!(hosts[4].netns, "mgmt-tb003-h5");
    }

    #[test]
    fn config_errors_are_returned() {
        let leaves_alone = TestbedConfig {
            leaves: 1,
            ..Default::default()
        };
        assert!(matches!(
            validate(&leaves_alone),
            Err(TestbedError::Config(_))
        ));
        let in_tmp = TestbedConfig {
            dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        assert!(validate(&in_tmp).unwrap_err().to_string().contains("/tmp"));
        assert!(validate(&TestbedConfig::hosts(251)).is_err());
    }
}
