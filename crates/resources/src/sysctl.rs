//! `sysctl`: one kernel parameter, at run time (`/proc/sys/<key>`) and persistently (its own
//! file under `/etc/sysctl.d/`, which systemd-sysctl or `sysctl --system` applies at boot).
//!
//! The name is the key, dotted (`net.ipv4.ip_forward`) or slashed (`net/ipv4/conf/eth0.1/
//! forwarding`, where a component may hold a dot). Values are compared with runs of blanks
//! folded into one space, as the kernel prints `4096\t87380\t6291456` for `4096 87380 6291456`.
//! The persistent file (default `/etc/sysctl.d/99-mgmt-<key>.conf`) is this resource's alone:
//! written whole, atomically, mode 0644; `state: absent` removes it and leaves the running
//! value as it is (there is no "default" to go back to).
//!
//! Watching: the file is watched through inotify. `/proc/sys` files deliver no inotify events,
//! so the running value is heard through the kernel's own signal where it has one:
//! `POLLPRI|POLLERR` from `poll()` for the keys with a poll table (`kernel.hostname`,
//! `kernel.domainname`), an rtnetlink `RTM_NEWNETCONF` message for the network device
//! settings it announces (`net.ipv4.ip_forward`, `conf.*.forwarding`, `rp_filter`... see
//! [`netconf`]). Every other key has no signal at all; its value is read every [`REREAD`]
//! (one small read) and only a difference wakes the engine. Building must never do IO.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, Uid, WatchCtx,
};
use serde_json::{Map, Value};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::file;
use crate::line::{self, apply};
use crate::netconf::{self, Netconf};
use crate::params::{Params, bad};

pub const FIELDS: &[&str] = &["value", "file", "state"];

pub const KIND: KindInfo = KindInfo {
    kind: "sysctl",
    fields: FIELDS,
    build,
};

/// Where the kernel's parameters are.
pub(crate) const PROC_SYS: &str = "/proc/sys";

/// The directory of the default persistent files.
pub const SYSCTL_D: &str = "/etc/sysctl.d";

/// Keys whose `/proc/sys` file signals a change with `POLLPRI` (the kernel's `uts_kern_table`).
pub const POLLABLE: &[&str] = &["kernel.hostname", "kernel.domainname"];

/// A sysctl key as its path components below `/proc/sys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(Vec<String>);

impl Key {
    /// Dotted or (when it holds a `/`) slashed; each component must be a plain name.
    pub fn parse(raw: &str) -> Result<Key, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("a sysctl key is required (e.g. `net.ipv4.ip_forward`)".into());
        }
        let parts: Vec<&str> = if raw.contains('/') {
            raw.split('/').collect()
        } else {
            raw.split('.').collect()
        };
        for p in &parts {
            if p.is_empty() || *p == "." || *p == ".." {
                return Err(format!(
                    "`{raw}` is not a sysctl key: empty, `.` or `..` component (write it as \
                     `net.ipv4.ip_forward` or `net/ipv4/ip_forward`)"
                ));
            }
            if p.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '=')
            {
                return Err(format!(
                    "`{raw}` is not a sysctl key: blanks, control characters and `=` are not \
                     allowed"
                ));
            }
        }
        Ok(Key(parts.into_iter().map(str::to_string).collect()))
    }

    /// As `sysctl` writes it: dotted, or slashed when a component holds a dot.
    pub fn written(&self) -> String {
        if self.0.iter().any(|p| p.contains('.')) {
            self.0.join("/")
        } else {
            self.0.join(".")
        }
    }

    /// Its file below `root` (`/proc/sys`).
    pub fn path_in(&self, root: &Path) -> PathBuf {
        self.0.iter().fold(root.to_path_buf(), |p, c| p.join(c))
    }
}

/// Blanks folded: how the kernel's answer and the wanted value are compared.
pub fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn err(op: &str, path: &Path) -> impl FnOnce(io::Error) -> ResourceError {
    let context = format!("{op} {}", path.display());
    move |e| ResourceError::failed(format!("{context}: {e}"))
}

/// The running value of the parameter at `path` (blanks folded). A missing file is a clear
/// error naming the key.
pub(crate) fn read_runtime(key: &str, path: &Path) -> Result<String, ResourceError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(normalise(&s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ResourceError::failed(format!(
            "no sysctl `{key}` on this host ({} does not exist)",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Err(ResourceError::failed(format!(
                "sysctl `{key}` cannot be read ({}: {e}); a write-only key cannot be checked",
                path.display()
            )))
        }
        Err(e) => Err(err("reading", path)(e)),
    }
}

/// Sets the running value with one write, as the kernel wants it.
pub(crate) fn write_runtime(key: &str, path: &Path, value: &str) -> Result<(), ResourceError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(err(&format!("opening sysctl `{key}` at"), path))?;
    f.write_all(format!("{value}\n").as_bytes()).map_err(err(
        &format!("setting sysctl `{key}` to `{value}` in"),
        path,
    ))
}

/// Mode 0644, owned by root when we are root (otherwise by us: tests).
pub(crate) fn root_attrs() -> apply::Attrs {
    let root = nix::unistd::geteuid().is_root().then_some(0);
    apply::Attrs {
        mode: 0o644,
        uid: root,
        gid: root,
    }
}

/// Makes `path` hold exactly `content` (atomically, 0644 root), or reports that it would.
pub(crate) fn converge_whole(path: &Path, content: &str, dry: bool) -> Result<bool, ResourceError> {
    let attrs = root_attrs();
    let rules = apply::Rules {
        create: Some(attrs),
        enforce: Some(attrs),
    };
    let edit = |d: &[u8]| Ok((d != content.as_bytes()).then(|| content.as_bytes().to_vec()));
    apply::converge(path, &rules, &edit, dry)
}

/// Removes `path` if it is there (a symlink is removed, not followed).
pub(crate) fn remove(path: &Path, dry: bool) -> Result<bool, ResourceError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(err("inspecting", path)(e)),
        Ok(m) if m.is_dir() => Err(ResourceError::failed(format!(
            "{} is a directory, not a file",
            path.display()
        ))),
        Ok(_) if dry => Ok(true),
        Ok(_) => {
            fs::remove_file(path).map_err(err("removing", path))?;
            if let Some(dir) = path.parent() {
                file::ops::sync_dir(dir)?;
            }
            Ok(true)
        }
    }
}

/// Waits for `POLLPRI` on an open `/proc/sys` file: the kernel's change signal.
pub(crate) struct ProcPoll {
    fd: AsyncFd<OwnedFd>,
}

impl ProcPoll {
    /// Registers now, so no change after this returns is missed.
    pub(crate) fn open(path: &Path) -> Result<ProcPoll, ResourceError> {
        let f = fs::File::open(path).map_err(err("opening", path))?;
        // SAFETY: the AsyncFd owns the descriptor (an OwnedFd) for its whole life.
        let fd =
            unsafe { AsyncFd::register_with_interest(OwnedFd::from(f), Interest::PRIORITY) }
                .map_err(|e| ResourceError::failed(format!("polling {}: {}", path.display(), e)))?;
        Ok(ProcPoll { fd })
    }

    /// Returns after the next change.
    pub(crate) async fn changed(&self) -> Result<(), ResourceError> {
        let mut guard = self
            .fd
            .ready(Interest::PRIORITY)
            .await
            .map_err(|e| ResourceError::failed(format!("polling a /proc/sys file: {e}")))?;
        // Consume the event so the kernel's edge is re-armed for the next change.
        let mut p = nix::libc::pollfd {
            fd: self.fd.get_ref().as_raw_fd(),
            events: nix::libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { nix::libc::poll(&mut p, 1, 0) };
        guard.clear_ready();
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct SysctlSpec {
    key: Key,
    value: Option<String>,
    file: PathBuf,
    exists: bool,
    /// `/proc/sys` (elsewhere in tests).
    proc_root: PathBuf,
}

impl SysctlSpec {
    fn from_params(name: &str, params: Value) -> Result<SysctlSpec, BuildError> {
        let key = Key::parse(name).map_err(|m| BuildError {
            field: Some("name".into()),
            message: format!("`name`: {m}"),
        })?;
        let mut p = Params::new("sysctl", params, FIELDS)?;
        let exists = line::parse_state(&mut p)?;
        let value = p.text("value")?;
        match &value {
            None if exists => {
                return Err(bad("value", "the value to set is required"));
            }
            Some(v) if v.contains(['\n', '\r', '\0']) => {
                return Err(bad("value", "must be one line"));
            }
            Some(v) if normalise(v).is_empty() => {
                return Err(bad("value", "must not be empty"));
            }
            _ => {}
        }
        let file = match p.string("file")? {
            None => PathBuf::from(SYSCTL_D).join(format!("99-mgmt-{}.conf", key.0.join("."))),
            Some(raw) => {
                let (path, is_dir) = file::normalise(&raw).map_err(|m| bad("file", m))?;
                if is_dir || !path.to_string_lossy().ends_with(".conf") {
                    return Err(bad(
                        "file",
                        format!(
                            "`{raw}` must name a `.conf` file (systemd-sysctl reads only those)"
                        ),
                    ));
                }
                path
            }
        };
        Ok(SysctlSpec {
            key,
            value,
            file,
            exists,
            proc_root: PathBuf::from(PROC_SYS),
        })
    }

    fn to_params(&self) -> Value {
        let mut map = Map::new();
        if let Some(v) = &self.value {
            map.insert("value".into(), v.clone().into());
        }
        map.insert("file".into(), self.file.to_string_lossy().into());
        let state = if self.exists { "exists" } else { "absent" };
        map.insert("state".into(), state.into());
        Value::Object(map)
    }

    fn content(&self, value: &str) -> String {
        format!(
            "# Managed by mgmt: sysctl[{}]\n{} = {}\n",
            self.key.written(),
            self.key.written(),
            normalise(value)
        )
    }

    fn converge(&self, dry: bool) -> Result<bool, ResourceError> {
        let Some(value) = self.value.as_deref().filter(|_| self.exists) else {
            return remove(&self.file, dry);
        };
        let key = self.key.written();
        let proc = self.key.path_in(&self.proc_root);
        // The key must exist before anything is written: never half-applied.
        let running = read_runtime(&key, &proc)?;
        let mut changed = converge_whole(&self.file, &self.content(value), dry)?;
        if running != normalise(value) {
            if !dry {
                write_runtime(&key, &proc, value)?;
                let now = read_runtime(&key, &proc)?;
                if now != normalise(value) {
                    return Err(ResourceError::failed(format!(
                        "sysctl `{key}` was set to `{value}` but reads `{now}` (the kernel \
                         adjusted or refused the value)"
                    )));
                }
            }
            changed = true;
        }
        Ok(changed)
    }
}

#[derive(Debug)]
pub struct Sysctl {
    name: String,
    meta: Meta,
    spec: Arc<SysctlSpec>,
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    Ok(Arc::new(Sysctl {
        name: name.to_string(),
        meta,
        spec: Arc::new(SysctlSpec::from_params(name, params)?),
    }))
}

#[async_trait]
impl Resource for Sysctl {
    fn kind(&self) -> &'static str {
        "sysctl"
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn validate(&self) -> Result<(), ResourceError> {
        Ok(())
    }
    fn params(&self) -> Value {
        self.spec.to_params()
    }
    /// The key (dotted `net.ipv4.ip_forward` and slashed `net/ipv4/ip_forward` are one).
    fn uids(&self) -> Vec<Uid> {
        vec![Uid {
            kind: "sysctl",
            key: self.spec.key.0.join("/"),
        }]
    }
    /// A `file` resource of the persistent file or a directory above it (`/etc/sysctl.d`).
    fn auto_edges(&self) -> Vec<Uid> {
        line::file_edges(&self.spec.file)
    }
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        let signal = Signal::for_key(&self.spec.key, &self.spec.proc_root)?;
        watch_with_signal(&self.spec.file, &[], Some(signal), ctx).await
    }
    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let spec = self.spec.clone();
        let changed = line::blocking(move || spec.converge(mode == Mode::Check)).await?;
        Ok(line::outcome(changed, mode))
    }
}

/// How often the running value of a key without a change signal is read.
pub const REREAD: std::time::Duration = std::time::Duration::from_millis(250);

/// How a change of a running value is heard.
pub(crate) enum Signal {
    /// `POLLPRI` of its `/proc/sys` file (`kernel.hostname`, `kernel.domainname`).
    Poll(ProcPoll),
    /// An rtnetlink netconf message (`forwarding`, `rp_filter`... see [`netconf`]).
    Netconf(Netconf),
    /// No signal exists (most keys: `/proc/sys` gives inotify nothing): the value is read
    /// every [`REREAD`] and a wake is reported only when it differs from the last read, so a
    /// quiet key never wakes the engine.
    Reread { path: PathBuf, last: Option<String> },
}

impl Signal {
    /// Subscribed (or first read) now: no change after this returns is missed.
    pub(crate) fn for_key(key: &Key, proc_root: &Path) -> Result<Signal, ResourceError> {
        let path = key.path_in(proc_root);
        let written = key.0.join(".");
        if POLLABLE.contains(&written.as_str())
            && let Ok(p) = ProcPoll::open(&path)
        {
            return Ok(Signal::Poll(p));
        }
        if proc_root == Path::new(PROC_SYS) && netconf::signalled(&key.0) {
            return Ok(Signal::Netconf(Netconf::subscribe()?));
        }
        let last = fs::read_to_string(&path).ok().map(|v| normalise(&v));
        Ok(Signal::Reread { path, last })
    }

    /// Returns after the next change.
    async fn changed(&mut self) -> Result<(), ResourceError> {
        match self {
            Signal::Poll(p) => p.changed().await,
            Signal::Netconf(n) => n.changed().await,
            Signal::Reread { path, last } => loop {
                tokio::time::sleep(REREAD).await;
                let now = fs::read_to_string(&*path).ok().map(|v| normalise(&v));
                if now != *last {
                    *last = now;
                    return Ok(());
                }
            },
        }
    }
}

/// `file`'s inotify watch of `path` (and `also`), plus the kernel's change signal of a
/// running value when there is one.
pub(crate) async fn watch_with_signal(
    path: &Path,
    also: &[&Path],
    signal: Option<Signal>,
    ctx: WatchCtx,
) -> Result<(), ResourceError> {
    let spec = line::watch_spec(path, also);
    let files = file::watch::watch_versions(&spec, ctx.clone());
    let Some(mut signal) = signal else {
        return files.await;
    };
    tokio::pin!(files);
    loop {
        tokio::select! {
            done = &mut files => return done,
            changed = signal.changed() => {
                changed?;
                ctx.event();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use serde_json::json;

    use super::*;

    fn spec(name: &str, v: Value) -> Result<SysctlSpec, String> {
        SysctlSpec::from_params(name, v).map_err(|e| e.message)
    }

    #[test]
    fn keys_are_dotted_or_slashed_and_checked() {
        let k = Key::parse("net.ipv4.ip_forward").unwrap();
        assert_eq!(k, Key::parse("net/ipv4/ip_forward").unwrap());
        assert_eq!(k.written(), "net.ipv4.ip_forward");
        let vlan = Key::parse("net/ipv4/conf/eth0.1/forwarding").unwrap();
        assert_eq!(vlan.written(), "net/ipv4/conf/eth0.1/forwarding");
        assert_eq!(
            vlan.path_in(Path::new("/proc/sys")),
            Path::new("/proc/sys/net/ipv4/conf/eth0.1/forwarding")
        );
        for bad in [
            "",
            "net..ipv4",
            "net/../etc",
            "/etc/passwd",
            "net.",
            "a b",
            "a=b",
            "x/./y",
        ] {
            assert!(Key::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_are_canonical_and_bad_values_name_their_field() {
        let s = spec("net.core.somaxconn", json!({"value": 4096})).unwrap();
        assert_eq!(
            s.to_params(),
            json!({"value": "4096", "file": "/etc/sysctl.d/99-mgmt-net.core.somaxconn.conf",
                   "state": "exists"})
        );
        let again = spec("net.core.somaxconn", s.to_params()).unwrap();
        assert_eq!(again.to_params(), s.to_params());
        for (name, v, why) in [
            ("a.b", json!({}), "`value`: the value to set is required"),
            ("a.b", json!({"value": "1\n2"}), "`value`: must be one line"),
            ("a.b", json!({"value": " \t"}), "`value`: must not be empty"),
            (
                "a.b",
                json!({"value": 1, "file": "/etc/sysctl.d/x"}),
                "`file`: `/etc/sysctl.d/x` must name a `.conf` file",
            ),
            (
                "a.b",
                json!({"value": 1, "file": "x.conf"}),
                "`file`: `x.conf` is not an absolute path",
            ),
            (
                "a..b",
                json!({"value": 1}),
                "`name`: `a..b` is not a sysctl key",
            ),
            (
                "a.b",
                json!({"value": 1, "state": "gone"}),
                "`state`: unknown state",
            ),
        ] {
            let e = spec(name, v.clone()).unwrap_err();
            assert!(e.starts_with(why), "{v}: {e}");
        }
        assert!(spec("a.b", json!({"state": "absent"})).is_ok());
    }

    /// A fake /proc/sys and sysctl.d in a temp dir.
    fn fake(value: &str, want: Value) -> (tempfile::TempDir, SysctlSpec, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc/net/ipv4");
        fs::create_dir_all(&proc).unwrap();
        fs::write(proc.join("ip_local_port_range"), value).unwrap();
        fs::create_dir(dir.path().join("sysctl.d")).unwrap();
        let mut want = want;
        let file = dir.path().join("sysctl.d/50-ports.conf");
        want["file"] = file.to_string_lossy().into_owned().into();
        let mut s = spec("net.ipv4.ip_local_port_range", want).unwrap();
        s.proc_root = dir.path().join("proc");
        let proc = s.key.path_in(&s.proc_root);
        (dir, s, proc)
    }

    #[test]
    fn converges_runtime_and_file_comparing_blanks_folded() {
        let (_dir, s, proc) = fake("32768\t60999\n", json!({"value": "1024  65000"}));
        assert!(s.converge(true).unwrap());
        assert!(!s.file.exists(), "check changes nothing");
        assert_eq!(fs::read_to_string(&proc).unwrap(), "32768\t60999\n");
        assert!(s.converge(false).unwrap());
        assert_eq!(fs::read_to_string(&proc).unwrap(), "1024  65000\n");
        assert_eq!(
            fs::read_to_string(&s.file).unwrap(),
            "# Managed by mgmt: sysctl[net.ipv4.ip_local_port_range]\n\
             net.ipv4.ip_local_port_range = 1024 65000\n"
        );
        assert_eq!(fs::metadata(&s.file).unwrap().mode() & 0o7777, 0o644);
        // The kernel's tabs are the same value.
        fs::write(&proc, "1024\t65000\n").unwrap();
        assert!(!s.converge(false).unwrap());
        // Drift of either is undone.
        fs::write(&proc, "1\t2\n").unwrap();
        fs::set_permissions(&s.file, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(s.converge(false).unwrap());
        assert_eq!(normalise(&fs::read_to_string(&proc).unwrap()), "1024 65000");
        assert_eq!(fs::metadata(&s.file).unwrap().mode() & 0o7777, 0o644);
        // Absent removes the file and leaves the running value.
        let mut gone = s.clone();
        gone.exists = false;
        assert!(gone.converge(true).unwrap());
        assert!(s.file.exists());
        assert!(gone.converge(false).unwrap());
        assert!(!s.file.exists());
        assert!(!gone.converge(false).unwrap());
        assert_eq!(normalise(&fs::read_to_string(&proc).unwrap()), "1024 65000");
    }

    #[test]
    fn a_missing_key_is_a_clear_error_and_nothing_is_written() {
        let (_dir, mut s, proc) = fake("1 2\n", json!({"value": "3 4"}));
        fs::remove_file(&proc).unwrap();
        s.key = Key::parse("net.ipv4.ip_local_port_range").unwrap();
        let e = s.converge(false).unwrap_err().to_string();
        assert!(
            e.starts_with("no sysctl `net.ipv4.ip_local_port_range` on this host"),
            "{e}"
        );
        assert!(!s.file.exists());
    }

    #[test]
    fn edges_and_uids() {
        let r = build("net/ipv4/ip_forward", json!({"value": 1}), Meta::default()).unwrap();
        assert_eq!(r.uids()[0].key, "net/ipv4/ip_forward");
        let keys: Vec<String> = r.auto_edges().into_iter().map(|u| u.key).collect();
        assert_eq!(
            keys,
            [
                "/etc/sysctl.d/99-mgmt-net.ipv4.ip_forward.conf",
                "/etc/sysctl.d",
                "/etc",
                "/"
            ]
        );
    }

    /// The kernel's POLLPRI for `kernel.hostname`, heard through tokio. The name is changed
    /// only in a private UTS namespace of one thread (the signal is global to all namespaces):
    /// this machine's own name is never touched.
    #[tokio::test]
    async fn pollpri_reports_a_hostname_change() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for a private UTS namespace");
            return;
        }
        let path = Path::new("/proc/sys/kernel/hostname");
        let ours = fs::read_to_string(path).unwrap();
        let poll = ProcPoll::open(path).unwrap();
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(100), poll.changed());
        assert!(quiet.await.is_err(), "no event without a change");
        std::thread::spawn(|| {
            // SAFETY: plain syscalls on this thread only.
            unsafe {
                assert_eq!(nix::libc::unshare(nix::libc::CLONE_NEWUTS), 0);
                let name = b"mgmt-poll-test";
                assert_eq!(nix::libc::sethostname(name.as_ptr().cast(), name.len()), 0);
            }
        })
        .join()
        .unwrap();
        let heard = tokio::time::timeout(std::time::Duration::from_secs(10), poll.changed());
        heard.await.expect("POLLPRI after the change").unwrap();
        assert_eq!(
            fs::read_to_string(path).unwrap(),
            ours,
            "our own name is unchanged"
        );
    }

    /// A key without a kernel signal: its value is re-read, and only a difference (blanks
    /// folded) wakes.
    #[tokio::test]
    async fn a_key_without_a_signal_wakes_only_when_its_value_differs() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::parse("net.core.somaxconn").unwrap();
        let path = key.path_in(dir.path());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "4096\n").unwrap();
        let mut s = Signal::for_key(&key, dir.path()).unwrap();
        assert!(matches!(s, Signal::Reread { .. }));
        let twice = REREAD * 2;
        // The same value rewritten with other blanks is no change.
        fs::write(&path, " 4096 \n").unwrap();
        assert!(tokio::time::timeout(twice, s.changed()).await.is_err());
        fs::write(&path, "128\n").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.changed())
            .await
            .expect("a wake after the change")
            .unwrap();
        assert!(tokio::time::timeout(twice, s.changed()).await.is_err());
        // A network key with a kernel signal uses it (only under the real /proc/sys).
        let fwd = Key::parse("net.ipv4.ip_forward").unwrap();
        assert!(matches!(
            Signal::for_key(&fwd, Path::new(PROC_SYS)).unwrap(),
            Signal::Netconf(_)
        ));
    }
}
