//! Booted hosts: a Debian 12 root built once with mmdebstrap and cached under
//! /var/cache/mgmt-testbed/booted-KEY/, and per host an overlay over it (the host's own disk)
//! booted with `systemd-nspawn -b` inside the host's network namespace: PID 1 is systemd, sshd
//! is Debian's ssh.service, users, sudo, apt and D-Bus are real.
//!
//! It must never change the cached root once it is in place (it is every overlay's lower
//! layer; a new recipe gets a new KEY), never mount anything in the machine's mount namespace
//! (the overlay is mounted in a private mount namespace that only systemd-nspawn and the
//! container share, so it goes away with them, even after a crash), and never stop a
//! systemd-nspawn it did not find through a test bed's own network namespaces.

use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::sshd::{EXTRA_USER, HostFiles, PASSWORD_USER};
use crate::util::{self, find_program, mkdir, read_to_string, run, wait_until, write_file};
use crate::{TestbedError, procs};

/// Where the roots are cached (shared by every test bed on the machine).
pub(crate) const CACHE_DIR: &str = "/var/cache/mgmt-testbed";
/// Where [`crate::TestbedConfig::apt_repo`] appears inside every booted host (read-only).
pub const REPO_MOUNT: &str = "/srv/mgmt-repo";
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
// python3-apt: Ansible's apt module needs it on the host (the benchmark runs Ansible here).
const INCLUDE: &str =
    "systemd,systemd-sysv,dbus,openssh-server,sudo,python3,python3-apt,libpam-systemd";
/// Part of the cache key: change it whenever [`customize`] changes, so old roots are not reused.
const CUSTOMIZE_VERSION: &str = "customize-2";
/// systemd-nspawn's per-machine directory in the root namespace; left behind when it is killed.
const PROPAGATE_DIR: &str = "/run/systemd/nspawn/propagate";
/// How long a halting container may take before it is killed (it takes about 2 s here).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The PATH of commands run inside a host.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Units that would do background work (apt, man-db, fstrim...) in the middle of a test, or
/// only slow the boot down (a getty on a console nobody reads).
const MASKED: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "systemd-tmpfiles-clean.timer",
    "console-getty.service",
    "getty@tty1.service",
    // nspawn has mounted everything already; remounting the overlay root is refused on some
    // kernels, and then the host boots "degraded" for nothing (seen once on CI).
    "systemd-remount-fs.service",
];

const APT_CONF: &str = "// mgmt-rs test bed: the host is offline, apt knows only the test bed's repository.\n\
Acquire::Languages \"none\";\n\
Dpkg::Use-Pty \"0\";\n";

fn sudoers() -> String {
    format!(
        "# mgmt-rs test bed: {EXTRA_USER} may do anything without a password; {PASSWORD_USER}\n\
         # must give the test bed's password every time (no cached credentials).\n\
         {EXTRA_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n\
         Defaults:{PASSWORD_USER} timestamp_timeout=0, !lecture\n\
         {PASSWORD_USER} ALL=(ALL:ALL) ALL\n"
    )
}

fn mmdebstrap_args() -> Vec<String> {
    vec![
        "--variant=apt".to_string(),
        format!("--include={INCLUDE}"),
        SUITE.to_string(),
    ]
}

/// The cache directory name: a short hash of everything that decides the root's contents.
fn cache_key(args: &[String]) -> String {
    let mut parts: Vec<&str> = args.iter().map(String::as_str).collect();
    parts.extend([MIRROR, CUSTOMIZE_VERSION]);
    format!("booted-{:012x}", util::fnv1a(&parts) >> 16)
}

/// The cached root, built first when it is missing. Parallel callers (any process) wait for
/// one build under a lock; a root is renamed into place only once complete.
pub(crate) fn root() -> Result<PathBuf, TestbedError> {
    let args = mmdebstrap_args();
    let key = cache_key(&args);
    let cache = Path::new(CACHE_DIR);
    let root = cache.join(&key).join("root");
    if root.is_dir() {
        return Ok(root);
    }
    fs::create_dir_all(cache).map_err(|e| TestbedError::io("create", cache, e))?;
    let _lock = util::lock_exclusive(&cache.join(format!("{key}.lock")))?;
    if !root.is_dir() {
        build(cache, &key, &args)?;
    }
    Ok(root)
}

fn build(cache: &Path, key: &str, args: &[String]) -> Result<(), TestbedError> {
    let mmdebstrap = find_program("mmdebstrap", "mmdebstrap")?;
    let tar = find_program("tar", "tar")?;
    let chroot = find_program("chroot", "coreutils")?;
    // Leftovers of an interrupted build: nobody else builds KEY while we hold the lock, and
    // they hold only files (mmdebstrap writes a tarball, so nothing is ever mounted in them).
    let prefix = format!("{key}.tmp-");
    for name in list_dir(cache) {
        if name.starts_with(&prefix) {
            let stale = cache.join(&name);
            fs::remove_dir_all(&stale).map_err(|e| TestbedError::io("remove", &stale, e))?;
        }
    }
    let tmp = cache.join(format!("{prefix}{}", std::process::id()));
    mkdir(&tmp, 0o755)?;
    let log = tmp.join("build.log");
    let tarball = tmp.join("root.tar");
    let out = fs::File::create(&log).map_err(|e| TestbedError::io("create", &log, e))?;
    let err = out
        .try_clone()
        .map_err(|e| TestbedError::io("dup", &log, e))?;
    eprintln!(
        "testbed: building the booted hosts' root {} once (mmdebstrap, about 30 s)",
        cache.join(key).display()
    );
    let status = Command::new(&mmdebstrap)
        .args(args)
        .arg(&tarball)
        .arg(MIRROR)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|source| TestbedError::Spawn {
            program: mmdebstrap.display().to_string(),
            source,
        })?;
    if !status.success() {
        return Err(TestbedError::RootBuild {
            status,
            tail: util::tail(&log, 5),
            log,
        });
    }
    let root = tmp.join("root");
    mkdir(&root, 0o755)?;
    run(
        Command::new(tar)
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&root),
        None,
    )?;
    fs::remove_file(&tarball).map_err(|e| TestbedError::io("remove", &tarball, e))?;
    customize(&root, &chroot)?;
    let recipe = format!(
        "mmdebstrap {} OUT.tar {MIRROR}\n{CUSTOMIZE_VERSION}\n",
        args.join(" ")
    );
    write_file(&tmp.join("recipe"), recipe.as_bytes(), 0o644)?;
    let done = cache.join(key);
    fs::rename(&tmp, &done).map_err(|e| TestbedError::io("rename", &done, e))
}

/// Makes a fresh root fit for tests: offline apt, no background timers, ssh enabled, no host
/// keys (each host gets its own), the test users' sudo rules.
fn customize(root: &Path, chroot: &Path) -> Result<(), TestbedError> {
    for rel in [
        "etc/apt/sources.list",
        "etc/apt/sources.list.d/debian.sources",
    ] {
        remove_if_exists(&root.join(rel))?;
    }
    let system = root.join("etc/systemd/system");
    for unit in MASKED {
        let link = system.join(unit);
        remove_if_exists(&link)?;
        symlink("/dev/null", &link).map_err(|e| TestbedError::io("symlink", &link, e))?;
    }
    let wants = system.join("multi-user.target.wants");
    mkdir(&wants, 0o755)?;
    let ssh = wants.join("ssh.service");
    if fs::symlink_metadata(&ssh).is_err() {
        symlink("/lib/systemd/system/ssh.service", &ssh)
            .map_err(|e| TestbedError::io("symlink", &ssh, e))?;
    }
    let ssh_dir = root.join("etc/ssh");
    for name in list_dir(&ssh_dir) {
        if name.starts_with("ssh_host_") {
            remove_if_exists(&ssh_dir.join(name))?;
        }
    }
    write_file(&root.join("etc/hostname"), b"localhost\n", 0o644)?;
    write_file(
        &root.join("etc/apt/apt.conf.d/90mgmt-testbed"),
        APT_CONF.as_bytes(),
        0o644,
    )?;
    write_file(
        &root.join("etc/sudoers.d/mgmt-testbed"),
        sudoers().as_bytes(),
        0o440,
    )?;
    run(
        Command::new(chroot).arg(root).args([
            "/usr/sbin/visudo",
            "-cf",
            "/etc/sudoers.d/mgmt-testbed",
        ]),
        None,
    )?;
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), TestbedError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(TestbedError::io("remove", path, e)),
        _ => Ok(()),
    }
}

fn list_dir(path: &Path) -> Vec<String> {
    fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The two layers of a host's disk, for writing its own files before it boots (the upper
/// layer must not be changed behind a mounted overlay's back).
struct Layers<'a> {
    lower: &'a Path,
    upper: PathBuf,
}

impl Layers<'_> {
    /// `rel` as a directory of the upper layer. Missing components are created with the
    /// lower layer's mode and owner where it has them (an upper directory hides the lower
    /// one's attributes), else with `mode` and `owner`.
    fn dir(&self, rel: &str, mode: u32, owner: (u32, u32)) -> Result<PathBuf, TestbedError> {
        let mut up = self.upper.clone();
        let mut low = self.lower.to_path_buf();
        for comp in Path::new(rel).components() {
            let Component::Normal(comp) = comp else {
                return Err(TestbedError::Config(format!("bad host path {rel:?}")));
            };
            up.push(comp);
            low.push(comp);
            if up.is_dir() {
                continue;
            }
            let (m, uid, gid) = match fs::symlink_metadata(&low) {
                Ok(meta) if meta.is_dir() => (meta.mode() & 0o7777, meta.uid(), meta.gid()),
                // A directory here would hide the lower layer's link (/lib -> usr/lib).
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(TestbedError::Config(format!(
                        "{} is a symlink in the booted root",
                        low.display()
                    )));
                }
                _ => (mode, owner.0, owner.1),
            };
            fs::create_dir(&up).map_err(|e| TestbedError::io("create directory", &up, e))?;
            fs::set_permissions(&up, fs::Permissions::from_mode(m))
                .map_err(|e| TestbedError::io("chmod", &up, e))?;
            chown(&up, Some(uid), Some(gid)).map_err(|e| TestbedError::io("chown", &up, e))?;
        }
        Ok(up)
    }

    fn file(
        &self,
        rel: &str,
        contents: &[u8],
        mode: u32,
        owner: (u32, u32),
    ) -> Result<(), TestbedError> {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let path = self.dir(parent, 0o755, (0, 0))?.join(name);
        write_file(&path, contents, mode)?;
        chown(&path, Some(owner.0), Some(owner.1)).map_err(|e| TestbedError::io("chown", &path, e))
    }

    /// Replaces a file of the lower layer, keeping its mode and owner.
    fn replace(&self, rel: &str, contents: &[u8]) -> Result<(), TestbedError> {
        let low = self.lower.join(rel);
        let meta = fs::metadata(&low).map_err(|e| TestbedError::io("stat", &low, e))?;
        self.file(
            rel,
            contents,
            meta.mode() & 0o7777,
            (meta.uid(), meta.gid()),
        )
    }

    fn read(&self, rel: &str) -> Result<String, TestbedError> {
        read_to_string(&self.lower.join(rel))
    }
}

/// An unprivileged user of a booted host; `hash` is its password's crypt hash (else `*`: key
/// login only).
pub(crate) struct Account<'a> {
    pub name: &'a str,
    pub hash: Option<&'a str>,
}

/// Everything one booted host's disk gets before its first boot.
pub(crate) struct HostSetup<'a> {
    pub root: &'a Path,
    pub files: &'a HostFiles,
    pub name: &'a str,
    pub listen: IpAddr,
    pub sftp: bool,
    pub password_auth: bool,
    pub sshd_options: &'a [String],
    /// `type base64` of the client key, authorized for root and every account.
    pub client_key: &'a str,
    pub root_hash: Option<&'a str>,
    pub accounts: &'a [Account<'a>],
    pub apt_repo: bool,
}

/// Writes the host's own files into its upper layer: hostname, hosts, host key, sshd drop-in,
/// root's authorized key, the accounts (passwd, group, shadow, gshadow, homes), apt source.
pub(crate) fn prepare(s: &HostSetup<'_>) -> Result<(), TestbedError> {
    let f = s.files;
    for dir in [f.upper(), f.work(), f.merged()] {
        mkdir(&dir, 0o755)?;
    }
    let layers = Layers {
        lower: s.root,
        upper: f.upper(),
    };
    let root = (0, 0);
    layers.file(
        "etc/hostname",
        format!("{}\n", s.name).as_bytes(),
        0o644,
        root,
    )?;
    layers.file("etc/hosts", hosts_file(s.name).as_bytes(), 0o644, root)?;
    let key = f.host_key();
    let private = fs::read(&key).map_err(|e| TestbedError::io("read", &key, e))?;
    let public = read_to_string(&key.with_extension("pub"))?;
    layers.file("etc/ssh/ssh_host_ed25519_key", &private, 0o600, root)?;
    layers.file(
        "etc/ssh/ssh_host_ed25519_key.pub",
        public.as_bytes(),
        0o644,
        root,
    )?;
    let dropin = render_sshd_dropin(s.listen, s.password_auth, s.sshd_options);
    layers.file(
        "etc/ssh/sshd_config.d/00-mgmt-testbed.conf",
        dropin.as_bytes(),
        0o644,
        root,
    )?;
    if !s.sftp {
        let main = layers.read("etc/ssh/sshd_config")?;
        layers.replace("etc/ssh/sshd_config", without_sftp(&main).as_bytes())?;
    }
    let authorized = format!("{}\n", s.client_key);
    layers.dir("root/.ssh", 0o700, root)?;
    layers.file(
        "root/.ssh/authorized_keys",
        authorized.as_bytes(),
        0o600,
        root,
    )?;

    let users = add_accounts(
        &Users {
            passwd: layers.read("etc/passwd")?,
            group: layers.read("etc/group")?,
            shadow: layers.read("etc/shadow")?,
            gshadow: layers.read("etc/gshadow")?,
        },
        s.accounts,
        s.root_hash,
    );
    layers.replace("etc/passwd", users.files.passwd.as_bytes())?;
    layers.replace("etc/group", users.files.group.as_bytes())?;
    layers.replace("etc/shadow", users.files.shadow.as_bytes())?;
    layers.replace("etc/gshadow", users.files.gshadow.as_bytes())?;
    let skel = s.root.join("etc/skel");
    for (account, uid) in s.accounts.iter().zip(users.uids) {
        let owner = (uid, uid);
        let home = format!("home/{}", account.name);
        layers.dir(&home, 0o700, owner)?;
        // What `useradd -m` copies (.bashrc, .profile...).
        for name in list_dir(&skel) {
            let from = skel.join(&name);
            if fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
                let text = fs::read(&from).map_err(|e| TestbedError::io("read", &from, e))?;
                layers.file(&format!("{home}/{name}"), &text, 0o644, owner)?;
            }
        }
        layers.dir(&format!("{home}/.ssh"), 0o700, owner)?;
        layers.file(
            &format!("{home}/.ssh/authorized_keys"),
            authorized.as_bytes(),
            0o600,
            owner,
        )?;
    }
    if s.apt_repo {
        layers.file(
            "etc/apt/sources.list.d/mgmt-test.list",
            format!("deb [trusted=yes] file:{REPO_MOUNT} ./\n").as_bytes(),
            0o644,
            root,
        )?;
    }
    Ok(())
}

/// The directory of the host's disk where `rel` (a directory, e.g. `root/.ssh`) is written
/// before boot.
pub(crate) fn upper_dir(
    root: &Path,
    files: &HostFiles,
    rel: &str,
    mode: u32,
) -> Result<PathBuf, TestbedError> {
    Layers {
        lower: root,
        upper: files.upper(),
    }
    .dir(rel, mode, (0, 0))
}

fn hosts_file(name: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

/// The test bed's sshd settings, as a drop-in that Debian's sshd_config includes first (sshd
/// keeps the first value of a keyword, so these win over Debian's, and `extra` over these).
fn render_sshd_dropin(listen: IpAddr, password_auth: bool, extra: &[String]) -> String {
    let mut c = String::from("# generated by the mgmt-rs test bed\n");
    for line in extra {
        let _ = writeln!(c, "{line}");
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(c, "ListenAddress {listen}:22");
    c.push_str("HostKey /etc/ssh/ssh_host_ed25519_key\n");
    let _ = writeln!(
        c,
        "PermitRootLogin {}",
        if password_auth {
            "yes"
        } else {
            "prohibit-password"
        }
    );
    let _ = writeln!(c, "PasswordAuthentication {}", yes_no(password_auth));
    c.push_str(
        "PubkeyAuthentication yes\n\
         KbdInteractiveAuthentication no\n\
         PermitEmptyPasswords no\n\
         AllowTcpForwarding yes\n\
         AllowStreamLocalForwarding yes\n\
         GatewayPorts no\n\
         X11Forwarding no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         LogLevel VERBOSE\n\
         MaxSessions 100\n\
         MaxStartups 200\n\
         MaxAuthTries 20\n\
         LoginGraceTime 30\n",
    );
    c
}

/// Debian's sshd_config without its sftp subsystem (a second `Subsystem sftp` line would be
/// an error, so a drop-in cannot turn it off).
fn without_sftp(main: &str) -> String {
    main.lines()
        .map(|l| {
            if l.trim_start().to_ascii_lowercase().starts_with("subsystem") {
                format!("# disabled by the mgmt-rs test bed: {l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

struct Users {
    passwd: String,
    group: String,
    shadow: String,
    gshadow: String,
}

struct Added {
    files: Users,
    uids: Vec<u32>,
}

/// The users files with the accounts added (uid = gid, from 4242 up, free in both files) and
/// root's password hash set when given.
fn add_accounts(base: &Users, accounts: &[Account<'_>], root_hash: Option<&str>) -> Added {
    let mut shadow = String::new();
    for line in base.shadow.lines() {
        match (line.split_once(':'), root_hash) {
            (Some(("root", rest)), Some(hash)) => {
                let after = rest.split_once(':').map_or("", |(_, a)| a);
                let _ = writeln!(shadow, "root:{hash}:{after}");
            }
            _ => {
                shadow.push_str(line);
                shadow.push('\n');
            }
        }
    }
    let mut out = Users {
        passwd: base.passwd.clone(),
        group: base.group.clone(),
        shadow,
        gshadow: base.gshadow.clone(),
    };
    let used = |text: &str, id: u32| {
        text.lines()
            .any(|l| l.split(':').nth(2).and_then(|f| f.parse::<u32>().ok()) == Some(id))
    };
    let mut uids = Vec::new();
    for account in accounts {
        let id = (4242..)
            .find(|id| !used(&out.passwd, *id) && !used(&out.group, *id))
            .unwrap_or(4242);
        let name = account.name;
        let _ = writeln!(
            out.passwd,
            "{name}:x:{id}:{id}:mgmt test user:/home/{name}:/bin/sh"
        );
        let _ = writeln!(out.group, "{name}:x:{id}:");
        let _ = writeln!(
            out.shadow,
            "{name}:{}:19000:0:99999:7:::",
            account.hash.unwrap_or("*")
        );
        let _ = writeln!(out.gshadow, "{name}:!::");
        uids.push(id);
    }
    Added { files: out, uids }
}

fn cstr(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("paths without NUL")
}

/// One booted host, as systemd-nspawn starts it.
pub(crate) struct Boot<'a> {
    pub nspawn: &'a Path,
    pub root: &'a Path,
    pub files: &'a HostFiles,
    /// systemd-nspawn's machine name (the netns name: unique on the machine, and the overlay's
    /// mount source, so a leftover is recognisable).
    pub machine: &'a str,
    pub netns: &'a str,
    pub hostname: &'a str,
    pub apt_repo: Option<&'a Path>,
    /// Block devices bound into the host at their own path.
    pub devices: &'a [PathBuf],
}

/// Memory prepared before the fork for the child's mounts.
struct MountPlan {
    root: CString,
    source: CString,
    target: CString,
    fstype: CString,
    data: CString,
}

/// Characters that overlayfs' or systemd-nspawn's option syntax would split a path on.
fn check_path(what: &str, path: &Path) -> Result<(), TestbedError> {
    let text = path.to_string_lossy();
    if text.contains([',', ':', '\\', '\n']) || !path.is_absolute() {
        return Err(TestbedError::Config(format!(
            "{what} {} must be absolute and free of ',', ':' and '\\' (overlay and systemd-nspawn options)",
            path.display()
        )));
    }
    Ok(())
}

/// Starts systemd-nspawn for the host: in a new session and a private mount namespace in
/// which it first mounts the overlay. Its output and the console go to the console log.
pub(crate) fn spawn(b: &Boot<'_>) -> Result<Child, TestbedError> {
    let f = b.files;
    for (what, path) in [
        ("booted root", b.root.to_path_buf()),
        ("test bed dir", f.dir.clone()),
    ]
    .into_iter()
    .chain(b.apt_repo.map(|r| ("apt repo", r.to_path_buf())))
    .chain(b.devices.iter().map(|d| ("device bind", d.clone())))
    {
        check_path(what, &path)?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        b.root.display(),
        f.upper().display(),
        f.work().display()
    );
    let plan = MountPlan {
        root: cstr(b"/"),
        source: cstr(b.machine.as_bytes()),
        target: cstr(f.merged().as_os_str().as_bytes()),
        fstype: cstr(b"overlay"),
        data: cstr(data.as_bytes()),
    };
    let log_path = f.console_log();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| TestbedError::io("create", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| TestbedError::io("dup", &log_path, e))?;
    let mut cmd = Command::new(b.nspawn);
    cmd.args([
        "-q",
        "-b",
        "--register=no",
        "--keep-unit",
        "--console=read-only",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
    ])
    .arg(format!("--machine={}", b.machine))
    .arg("-D")
    .arg(f.merged())
    .arg(format!("--network-namespace-path=/run/netns/{}", b.netns))
    .arg(format!("--hostname={}", b.hostname))
    // No colour codes in the console log.
    .arg("--setenv=SYSTEMD_COLORS=0");
    if let Some(repo) = b.apt_repo {
        cmd.arg(format!("--bind-ro={}:{REPO_MOUNT}", repo.display()));
    }
    for dev in b.devices {
        cmd.arg(format!("--bind={}", dev.display()));
    }
    // The host's network namespace is its own, as a real server's is, and its root must be
    // able to set its own `net.*` sysctls (`sysctl` resources, tested on booted hosts). With
    // --network-namespace-path (unlike --private-network) systemd-nspawn mounts /proc/sys/net
    // read-only (writes failed with EROFS) and grants CAP_NET_ADMIN only for a private network:
    // "network" makes only /proc/sys/net writable (the rest of /proc/sys stays read-only: the
    // machine's kernel.*, vm.* are never the host's to change), and the capability is a real
    // root's.
    cmd.arg("--capability=CAP_NET_ADMIN");
    cmd.env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: the closure only makes system calls on memory owned by `plan`, built before the
    // fork; nothing allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || enter(&plan));
    }
    cmd.spawn().map_err(|source| TestbedError::Spawn {
        program: format!("{} (host {})", b.nspawn.display(), b.hostname),
        source,
    })
}

/// Runs in the forked child, before exec'ing systemd-nspawn.
fn enter(plan: &MountPlan) -> io::Result<()> {
    let fail = |label: &[u8]| {
        let err = io::Error::last_os_error();
        // SAFETY: write(2) from a valid buffer to fd 2 (the console log).
        unsafe { libc::write(2, label.as_ptr().cast(), label.len()) };
        Err(err)
    };
    let none = std::ptr::null();
    // SAFETY: raw system calls on NUL-terminated strings owned by `plan`; they affect only
    // this child (its session and its new mount namespace).
    unsafe {
        // Its own session: a terminal's hangup or ^C does not reach the container.
        if libc::setsid() < 0 {
            return fail(b"testbed: setsid failed\n");
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return fail(b"testbed: unshare failed\n");
        }
        // Nothing mounted from here on may propagate back to the root namespace.
        if libc::mount(
            none,
            plan.root.as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            none.cast(),
        ) != 0
        {
            return fail(b"testbed: making / private failed\n");
        }
        if libc::mount(
            plan.source.as_ptr(),
            plan.target.as_ptr(),
            plan.fstype.as_ptr(),
            0,
            plan.data.as_ptr().cast(),
        ) != 0
        {
            return fail(b"testbed: mounting the overlay failed\n");
        }
    }
    Ok(())
}

/// The container's init (PID 1 inside, systemd) of a systemd-nspawn: its only child, once it
/// has exec'd systemd.
pub(crate) fn leader_of(nspawn: u32) -> Option<u32> {
    procs::children(nspawn)
        .into_iter()
        .find(|c| procs::inner_pid(*c) == Some(1) && procs::comm(*c).as_deref() == Some("systemd"))
}

/// `nsenter` into every namespace of the container whose init is `leader`, with a clean
/// environment; append the command.
pub(crate) fn nsenter(leader: u32) -> Result<Command, TestbedError> {
    let mut cmd = Command::new(find_program("nsenter", "util-linux")?);
    cmd.args([
        "-t",
        &leader.to_string(),
        "-m",
        "-u",
        "-i",
        "-n",
        "-p",
        "-C",
        "--",
    ])
    .current_dir("/")
    .env_clear()
    .env("PATH", PATH)
    .env("HOME", "/root");
    Ok(cmd)
}

/// Waits until the container has booted (`systemctl is-system-running` says running, or
/// degraded: then the failed units are reported on stderr) and its sshd accepts on `ssh`.
/// Returns the container's init.
pub(crate) fn wait_booted(
    child: &mut Child,
    host: &str,
    files: &HostFiles,
    ssh: SocketAddr,
    netns: Option<&Path>,
    timeout: Duration,
) -> Result<u32, TestbedError> {
    let mut leader = None;
    let mut probe: Option<Child> = None;
    let mut state: Option<String> = None;
    let mut died = None;
    let mut failure: Option<TestbedError> = None;
    let ready = wait_until(timeout, || {
        if let Ok(Some(status)) = child.try_wait() {
            died = Some(status);
            return true;
        }
        let Some(pid) = leader.or_else(|| leader_of(child.id())) else {
            return false;
        };
        leader = Some(pid);
        if state.is_none() {
            let exited = match probe.as_mut().map(Child::try_wait) {
                None => {
                    // `--wait` blocks until the boot is over; before systemd listens on its
                    // socket it fails at once and is asked again.
                    let started = nsenter(pid).and_then(|mut cmd| {
                        cmd.args(["systemctl", "is-system-running", "--wait"])
                            .stdin(Stdio::null())
                            .stdout(Stdio::piped())
                            .stderr(Stdio::null());
                        cmd.spawn().map_err(|source| TestbedError::Spawn {
                            program: "nsenter".to_string(),
                            source,
                        })
                    });
                    match started {
                        Ok(p) => probe = Some(p),
                        Err(e) => {
                            failure = Some(e);
                            return true;
                        }
                    }
                    false
                }
                Some(Ok(None)) => false,
                Some(_) => true,
            };
            if exited && let Some(p) = probe.take() {
                let said = p
                    .wait_with_output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default();
                match said.as_str() {
                    "running" | "degraded" => state = Some(said),
                    "maintenance" | "stopping" => {
                        failure = Some(TestbedError::BootFailed {
                            host: host.to_string(),
                            state: said,
                            log: files.console_log(),
                        });
                        return true;
                    }
                    _ => {}
                }
            }
            if state.is_none() {
                return false;
            }
        }
        crate::tcp_accepts(netns, ssh)
    });
    if let Some(mut p) = probe {
        let _ = p.kill();
        let _ = p.wait();
    }
    if let Some(status) = died {
        return Err(TestbedError::ContainerDied {
            host: host.to_string(),
            status,
            log: files.console_log(),
            tail: util::tail(&files.console_log(), 5),
        });
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let Some(leader) = leader.filter(|_| ready) else {
        return Err(TestbedError::Timeout {
            what: format!(
                "boot of {host} (state {}, sshd on {ssh}; console {})",
                state.as_deref().unwrap_or("unknown"),
                files.console_log().display()
            ),
            timeout,
        });
    };
    if state.as_deref() == Some("degraded") {
        let failed = nsenter(leader)
            .and_then(|mut cmd| {
                run(
                    cmd.args(["systemctl", "--failed", "--plain", "--no-legend"]),
                    None,
                )
            })
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .replace('\n', "; ")
            })
            .unwrap_or_else(|e| e.to_string());
        let journal = nsenter(leader)
            .and_then(|mut cmd| {
                run(
                    cmd.args([
                        "journalctl",
                        "-b",
                        "-p",
                        "err",
                        "--no-pager",
                        "-n",
                        "20",
                        "-o",
                        "cat",
                    ]),
                    None,
                )
            })
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .replace('\n', "; ")
            })
            .unwrap_or_else(|e| e.to_string());
        // A unit that failed at boot is started once more: on a cgroup-v1 machine systemd in
        // the container sometimes fails a spawn with 219/CGROUP, and a failed
        // systemd-user-sessions leaves /run/nologin behind, which refuses every login but
        // root's (pam_nologin).
        let units: Vec<String> = failed
            .split("; ")
            .filter_map(|l| l.split_whitespace().next())
            .filter(|u| u.contains('.'))
            .map(str::to_string)
            .collect();
        let again = if units.is_empty() {
            String::new()
        } else {
            let _ = nsenter(leader)
                .and_then(|mut cmd| run(cmd.args(["systemctl", "reset-failed"]), None));
            let started = nsenter(leader)
                .and_then(|mut cmd| run(cmd.args(["systemctl", "start"]).args(&units), None));
            match started {
                Ok(_) => format!("; started again: {}", units.join(" ")),
                Err(e) => format!("; starting them again failed: {e}"),
            }
        };
        eprintln!(
            "testbed: {host} booted degraded; failed units: {failed}; errors: {journal}{again}"
        );
    }
    Ok(leader)
}

/// Halts the containers: SIGTERM to systemd-nspawn (it halts the container cleanly), then
/// SIGKILL to those still running after a while; reaps them.
pub(crate) fn stop(children: &mut [&mut Child]) {
    let mut running = Vec::new();
    for child in children.iter_mut() {
        // Not yet reaped, so its pid is still its own.
        if matches!(child.try_wait(), Ok(None)) {
            running.push(child.id());
        }
    }
    procs::terminate(&running, libc::SIGTERM, STOP_TIMEOUT);
    for child in children {
        let _ = child.wait();
    }
}

/// Halts the systemd-nspawn processes whose containers live in these network namespaces (a
/// crashed or kept run's). They are found through their containers: the container's init is
/// in the namespace, systemd-nspawn (its parent) is not.
pub(crate) fn stop_in(ids: &[procs::NsId]) -> Result<(), TestbedError> {
    let inside = procs::pids_in(ids);
    let mut nspawns: Vec<u32> = inside
        .iter()
        .filter_map(|p| procs::ppid(*p))
        .filter(|pp| {
            !inside.contains(pp) && procs::exe_name(*pp).as_deref() == Some("systemd-nspawn")
        })
        .collect();
    nspawns.sort_unstable();
    nspawns.dedup();
    let left = procs::terminate(&nspawns, libc::SIGTERM, STOP_TIMEOUT);
    if left.is_empty() {
        Ok(())
    } else {
        Err(TestbedError::Timeout {
            what: format!("exit of systemd-nspawn {left:?}"),
            timeout: STOP_TIMEOUT,
        })
    }
}

/// Removes the per-machine directories a killed systemd-nspawn of these machines (names
/// starting with `prefix`) left in the root namespace. Best effort: they are empty.
pub(crate) fn remove_leftovers(prefix: &str) {
    let dir = Path::new(PROPAGATE_DIR);
    for name in list_dir(dir) {
        if name.starts_with(prefix) {
            let _ = fs::remove_dir(dir.join(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_follows_the_recipe() {
        let args = mmdebstrap_args();
        let key = cache_key(&args);
        assert_eq!(key.len(), "booted-".len() + 12);
        let mut other = args.clone();
        other.push("--include=iproute2".to_string());
        assert_ne!(cache_key(&other), key);
    }

    #[test]
    fn accounts_get_free_ids_and_root_its_hash() {
        let base = Users {
            passwd: "root:x:0:0:root:/root:/bin/bash\nx:x:4242:4242::/:/bin/sh\n".to_string(),
            group: "root:x:0:\n".to_string(),
            shadow: "root:*:19000:0:99999:7:::\n".to_string(),
            gshadow: "root:*::\n".to_string(),
        };
        let accounts = [
            Account {
                name: "mgmttest",
                hash: None,
            },
            Account {
                name: "mgmtpass",
                hash: Some("$6$s$h"),
            },
        ];
        let added = add_accounts(&base, &accounts, Some("$6$r$h"));
        assert_eq!(added.uids, [4243, 4244]);
        let f = &added.files;
        assert!(
            f.passwd
                .ends_with("mgmtpass:x:4244:4244:mgmt test user:/home/mgmtpass:/bin/sh\n")
        );
        assert!(f.group.ends_with("mgmttest:x:4243:\nmgmtpass:x:4244:\n"));
        assert_eq!(
            f.shadow,
            "root:$6$r$h:19000:0:99999:7:::\nmgmttest:*:19000:0:99999:7:::\nmgmtpass:$6$s$h:19000:0:99999:7:::\n"
        );
        assert!(f.gshadow.ends_with("mgmtpass:!::\n"));
    }

    #[test]
    fn sshd_settings_put_the_callers_lines_first_and_sftp_can_go() {
        let c = render_sshd_dropin(
            "10.213.0.2".parse().unwrap(),
            false,
            &["MaxStartups 7".to_string()],
        );
        assert!(c.find("MaxStartups 7").unwrap() < c.find("MaxStartups 200").unwrap());
        assert!(c.contains("ListenAddress 10.213.0.2:22\n"));
        assert!(c.contains("PermitRootLogin prohibit-password\n"));
        assert!(!c.contains("Subsystem"));
        let main = "Include /etc/ssh/sshd_config.d/*.conf\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n";
        let off = without_sftp(main);
        assert!(off.starts_with("Include"));
        assert!(!off.lines().any(|l| l.starts_with("Subsystem")));
    }

    #[test]
    fn option_breaking_paths_are_refused() {
        assert!(check_path("dir", Path::new("/var/tmp/a,b")).is_err());
        assert!(check_path("dir", Path::new("/var/tmp/a:b")).is_err());
        assert!(check_path("dir", Path::new("rel")).is_err());
        assert!(check_path("dir", Path::new("/var/tmp/mgmt-testbed-001-x")).is_ok());
    }
}
