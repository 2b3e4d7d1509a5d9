//! A local apt repository for tests, fully offline: packages described in code, built with
//! `dpkg-deb`, indexed with `dpkg-scanpackages` into a flat repository that booted hosts see at
//! [`REPO_MOUNT`](crate::REPO_MOUNT) (`deb [trusted=yes] file:/srv/mgmt-repo ./`).
//!
//! ```no_run
//! use testbed::{AptRepo, Deb, Testbed, TestbedConfig};
//!
//! let repo = AptRepo::build("/var/tmp/my-repo", &[testbed::testd_deb("1.0")])?;
//! let bed = Testbed::up(TestbedConfig {
//!     booted: true,
//!     apt_repo: Some(repo.dir().to_path_buf()),
//!     ..TestbedConfig::hosts(2)
//! })?;
//! bed.exec(&bed.hosts()[0], "apt-get install -y mgmt-testd")?;
//! // New versions: build again into the same directory, then `apt-get update` in the hosts.
//! AptRepo::build(repo.dir(), &[testbed::testd_deb("2.0")])?;
//! # Ok::<(), testbed::TestbedError>(())
//! ```
//!
//! A rebuild changes the files inside the directory and never replaces the directory itself:
//! hosts bind-mount it, and see a rebuild at once. It never touches anything outside `dir`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::TestbedError;
use crate::util::{find_program, mkdir, run, write_file};

const MAINTAINER: &str = "mgmt-rs test bed <mgmt-testbed@localhost.invalid>";
/// Where the built packages go, inside the repository.
const POOL: &str = "pool";

/// One file a package ships.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebFile {
    /// Absolute path on the host (`/usr/bin/x`). Files under /etc are conffiles.
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// A systemd unit a package ships in /lib/systemd/system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebUnit {
    /// `mgmt-testd.service`
    pub name: String,
    pub text: String,
}

/// A package to build: `Architecture: all`, owned by root.
///
/// With a [`unit`](Deb::unit) and no script of its own, the package behaves as tests want it
/// to (and unlike Debian's deb-systemd-helper, which enables and starts a service): install
/// leaves the service disabled and stopped (postinst only runs `systemctl daemon-reload`), an
/// upgrade restarts it only if it runs (`try-restart`), remove stops it (prerm) and reloads
/// systemd (postrm). A script given here replaces the generated one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deb {
    pub name: String,
    pub version: String,
    /// `Depends:` entries (`python3`, `foo (>= 1.0)`).
    pub depends: Vec<String>,
    /// One line; default `mgmt test package NAME`.
    pub description: Option<String>,
    pub files: Vec<DebFile>,
    /// Maintainer scripts (shell, without the `#!/bin/sh` line and `set -e`, which are added).
    pub postinst: Option<String>,
    pub prerm: Option<String>,
    pub postrm: Option<String>,
    pub unit: Option<DebUnit>,
}

impl Deb {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Deb {
        Deb {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        }
    }

    /// Adds a file.
    pub fn file(
        mut self,
        path: impl Into<PathBuf>,
        contents: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Deb {
        self.files.push(DebFile {
            path: path.into(),
            contents: contents.into(),
            mode,
        });
        self
    }

    /// Adds a `Depends:` entry.
    pub fn depends(mut self, dep: impl Into<String>) -> Deb {
        self.depends.push(dep.into());
        self
    }

    /// Ships a systemd unit (see the type's docs for what install and removal do with it).
    pub fn unit(mut self, name: impl Into<String>, text: impl Into<String>) -> Deb {
        self.unit = Some(DebUnit {
            name: name.into(),
            text: text.into(),
        });
        self
    }

    /// The file name in the pool: `NAME_VERSION_all.deb`, without an epoch.
    pub fn file_name(&self) -> String {
        let version = self
            .version
            .split_once(':')
            .map_or(self.version.as_str(), |(_, v)| v);
        format!("{}_{version}_all.deb", self.name)
    }

    fn validate(&self) -> Result<(), TestbedError> {
        let bad = |reason: String| {
            Err(TestbedError::BadPackage {
                package: format!("{} {}", self.name, self.version),
                reason,
            })
        };
        let name_ok = self.name.len() >= 2
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
            && self.name.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            return bad("package names are [a-z0-9][a-z0-9+.-]+".to_string());
        }
        let version_ok = !self.version.is_empty()
            && self.version.as_bytes()[0].is_ascii_digit()
            && self
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+-~:".contains(&b));
        if !version_ok {
            return bad("a version starts with a digit and has only [A-Za-z0-9.+-~:]".to_string());
        }
        for text in self
            .depends
            .iter()
            .chain(&self.description)
            .chain(self.unit.as_ref().map(|u| &u.name))
        {
            if text.contains('\n') || text.is_empty() {
                return bad(format!("{text:?} must be one non-empty line"));
            }
        }
        for f in &self.files {
            if !f.path.is_absolute()
                || f.path
                    .components()
                    .skip(1)
                    .any(|c| !matches!(c, Component::Normal(_)))
                || f.path.starts_with("/DEBIAN")
            {
                return bad(format!(
                    "file path {} must be absolute, without ..",
                    f.path.display()
                ));
            }
        }
        if let Some(unit) = &self.unit
            && (unit.name.contains('/') || !unit.name.contains('.'))
        {
            return bad(format!(
                "unit name {:?} must be like NAME.service",
                unit.name
            ));
        }
        Ok(())
    }

    fn control(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "Package: {}", self.name);
        let _ = writeln!(c, "Version: {}", self.version);
        c.push_str("Architecture: all\n");
        let _ = writeln!(c, "Maintainer: {MAINTAINER}");
        if !self.depends.is_empty() {
            let _ = writeln!(c, "Depends: {}", self.depends.join(", "));
        }
        c.push_str("Section: misc\nPriority: optional\n");
        let description = self
            .description
            .clone()
            .unwrap_or_else(|| format!("mgmt test package {}", self.name));
        let _ = writeln!(c, "Description: {description}");
        c
    }

    /// The maintainer scripts to ship: the caller's, else the generated unit handling.
    fn scripts(&self) -> Vec<(&'static str, String)> {
        let unit = self.unit.as_ref().map(|u| u.name.as_str());
        let generated = |which: &str| -> Option<String> {
            let unit = unit?;
            // Only when systemd runs (not in a chroot or a plain container).
            Some(match which {
                "postinst" => format!(
                    "if [ -d /run/systemd/system ]; then\n  systemctl daemon-reload\n  \
                     if [ \"$1\" = configure ] && [ -n \"$2\" ]; then systemctl try-restart {unit} || true; fi\nfi\n"
                ),
                "prerm" => format!(
                    "if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then\n  systemctl stop {unit} || true\nfi\n"
                ),
                _ => "if [ -d /run/systemd/system ]; then\n  systemctl daemon-reload || true\nfi\n"
                    .to_string(),
            })
        };
        [
            ("postinst", &self.postinst),
            ("prerm", &self.prerm),
            ("postrm", &self.postrm),
        ]
        .into_iter()
        .filter_map(|(which, given)| {
            let body = given.clone().or_else(|| generated(which))?;
            Some((which, format!("#!/bin/sh\nset -e\n{body}")))
        })
        .collect()
    }

    /// Lays the package out under `stage` and builds `out` from it.
    fn build(&self, dpkg_deb: &Path, stage: &Path, out: &Path) -> Result<(), TestbedError> {
        let _ = fs::remove_dir_all(stage);
        mkdir(stage, 0o755)?;
        let control_dir = stage.join("DEBIAN");
        mkdir(&control_dir, 0o755)?;
        write_file(
            &control_dir.join("control"),
            self.control().as_bytes(),
            0o644,
        )?;
        for (which, text) in self.scripts() {
            write_file(&control_dir.join(which), text.as_bytes(), 0o755)?;
        }
        let mut files = self.files.clone();
        if let Some(unit) = &self.unit {
            files.push(DebFile {
                path: Path::new("/lib/systemd/system").join(&unit.name),
                contents: unit.text.clone().into_bytes(),
                mode: 0o644,
            });
        }
        let mut conffiles = String::new();
        for f in &files {
            let rel = f.path.strip_prefix("/").unwrap_or(&f.path);
            let path = stage.join(rel);
            let mut parent = stage.to_path_buf();
            for comp in rel.parent().into_iter().flat_map(Path::components) {
                parent.push(comp);
                // 0755 exactly: dpkg-deb copies the staging directories' modes.
                mkdir(&parent, 0o755)?;
            }
            write_file(&path, &f.contents, f.mode)?;
            if f.path.starts_with("/etc") {
                let _ = writeln!(conffiles, "{}", f.path.display());
            }
        }
        if !conffiles.is_empty() {
            write_file(&control_dir.join("conffiles"), conffiles.as_bytes(), 0o644)?;
        }
        run(
            Command::new(dpkg_deb)
                .args(["--root-owner-group", "-Zgzip", "--build"])
                .arg(stage)
                .arg(out),
            None,
        )?;
        Ok(())
    }
}

/// A built repository (see the module docs).
#[derive(Clone, Debug)]
pub struct AptRepo {
    dir: PathBuf,
}

impl AptRepo {
    /// Builds the repository in `dir` (created if needed) with exactly these packages: a
    /// rebuild drops the packages no longer listed. `dir` must be absolute.
    pub fn build(dir: impl AsRef<Path>, debs: &[Deb]) -> Result<AptRepo, TestbedError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_absolute() {
            return Err(TestbedError::Config(format!(
                "apt repo dir {} must be absolute",
                dir.display()
            )));
        }
        for deb in debs {
            deb.validate()?;
        }
        let dpkg_deb = find_program("dpkg-deb", "dpkg")?;
        let scan = find_program("dpkg-scanpackages", "dpkg-dev")?;
        // World-readable: apt reads it as its sandbox user _apt.
        mkdir(&dir, 0o755)?;
        let pool = dir.join(POOL);
        mkdir(&pool, 0o755)?;
        let stage_root = dir.join(format!(".build-{}", std::process::id()));
        let built = (|| {
            let mut names = Vec::new();
            for deb in debs {
                let name = deb.file_name();
                let tmp = pool.join(format!(".{name}.tmp"));
                deb.build(&dpkg_deb, &stage_root.join(&deb.name), &tmp)?;
                let path = pool.join(&name);
                fs::rename(&tmp, &path).map_err(|e| TestbedError::io("rename", &path, e))?;
                names.push(name);
            }
            Ok::<_, TestbedError>(names)
        })();
        let _ = fs::remove_dir_all(&stage_root);
        let names = built?;
        for entry in fs::read_dir(&pool).map_err(|e| TestbedError::io("read", &pool, e))? {
            let entry = entry.map_err(|e| TestbedError::io("read", &pool, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !names.contains(&name) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|e| TestbedError::io("remove", &path, e))?;
            }
        }
        let index = run(
            Command::new(scan)
                .args(["--multiversion", POOL, "/dev/null"])
                .current_dir(&dir),
            None,
        )?;
        // Renamed into place: a host running apt never reads half an index.
        let tmp = dir.join(".Packages.tmp");
        write_file(&tmp, &index.stdout, 0o644)?;
        let packages = dir.join("Packages");
        fs::rename(&tmp, &packages).map_err(|e| TestbedError::io("rename", &packages, e))?;
        Ok(AptRepo { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The built .deb of a package (to `dpkg -i` it by hand, or inspect it).
    pub fn deb_path(&self, deb: &Deb) -> PathBuf {
        self.dir.join(POOL).join(deb.file_name())
    }
}

/// Name of the service package [`testd_deb`] builds.
pub const TESTD: &str = "mgmt-testd";
/// The port `mgmt-testd` listens on unless its /etc/mgmt-testd.conf says otherwise.
pub const TESTD_PORT: u16 = 8080;

const TESTD_PROGRAM: &str = r##"#!/usr/bin/python3
# mgmt-testd @VERSION@: a tiny service for mgmt's tests (built by the mgmt-rs test bed).
# Serves GET / on the PORT of /etc/mgmt-testd.conf with its version and reload count;
# SIGHUP (systemctl reload) counts a reload and re-reads the config into the state file.
# Tells systemd it is ready (Type=notify) only once it listens.
import http.server, os, signal, socket

VERSION = "@VERSION@"
STATE = "/run/mgmt-testd/state"
reloads = 0

def config():
    conf = {"PORT": "@PORT@"}
    try:
        for line in open("/etc/mgmt-testd.conf"):
            key, _, value = line.strip().partition("=")
            if key and not key.startswith("#"):
                conf[key.strip()] = value.strip()
    except FileNotFoundError:
        pass
    return conf

def write_state():
    conf = config()
    with open(STATE + ".tmp", "w") as f:
        f.write("version=%s\nreloads=%d\nport=%s\npid=%d\n" % (VERSION, reloads, conf["PORT"], os.getpid()))
    os.replace(STATE + ".tmp", STATE)

def notify(message):
    addr = os.environ.get("NOTIFY_SOCKET")
    if addr:
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode(), addr)

def on_hup(signum, frame):
    global reloads
    reloads += 1
    write_state()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("mgmt-testd %s reloads=%d\n" % (VERSION, reloads)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

signal.signal(signal.SIGHUP, on_hup)
os.makedirs(os.path.dirname(STATE), exist_ok=True)
server = http.server.HTTPServer(("0.0.0.0", int(config()["PORT"])), Handler)
write_state()
notify("READY=1")
server.serve_forever()
"##;

/// `mgmt-testd` VERSION: a package shipping a systemd service for tests of services and
/// packages. `/usr/bin/mgmt-testd` (python3, which every booted host has) serves
/// `mgmt-testd VERSION reloads=N` over HTTP on the port of its conffile /etc/mgmt-testd.conf
/// (`PORT=8080`, [`TESTD_PORT`]), is `Type=notify` (active = listening), and on `systemctl
/// reload` (SIGHUP) counts a reload; /run/mgmt-testd/state has `version=`, `reloads=`, `port=`
/// and `pid=` lines. Installing it leaves `mgmt-testd.service` disabled and stopped (see
/// [`Deb`]).
pub fn testd_deb(version: &str) -> Deb {
    let program = TESTD_PROGRAM
        .replace("@VERSION@", version)
        .replace("@PORT@", &TESTD_PORT.to_string());
    let unit = format!(
        "[Unit]\nDescription=mgmt test daemon {version}\n\n\
         [Service]\nType=notify\nExecStart=/usr/bin/mgmt-testd\nExecReload=/bin/kill -HUP $MAINPID\n\
         RuntimeDirectory=mgmt-testd\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    Deb::new(TESTD, version)
        .depends("python3")
        .file("/usr/bin/mgmt-testd", program, 0o755)
        .file(
            "/etc/mgmt-testd.conf",
            format!("# mgmt-testd's port\nPORT={TESTD_PORT}\n"),
            0o644,
        )
        .unit(format!("{TESTD}.service"), unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_scripts_of_a_service_package() {
        let deb = testd_deb("1.2-3");
        assert_eq!(deb.file_name(), "mgmt-testd_1.2-3_all.deb");
        let control = deb.control();
        assert!(control.contains("Package: mgmt-testd\nVersion: 1.2-3\nArchitecture: all\n"));
        assert!(control.contains("Depends: python3\n"));
        assert!(control.contains("Maintainer: "));
        let scripts = deb.scripts();
        let names: Vec<_> = scripts.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["postinst", "prerm", "postrm"]);
        let postinst = &scripts[0].1;
        assert!(postinst.starts_with("#!/bin/sh\nset -e\n"));
        assert!(postinst.contains("daemon-reload") && !postinst.contains("enable"));
        assert!(!postinst.contains("systemctl start"));
        assert!(scripts[1].1.contains("systemctl stop mgmt-testd.service"));
    }

    #[test]
    fn a_plain_package_has_no_scripts_and_bad_ones_are_refused() {
        let deb = Deb::new("hello", "1:2.0").file("/usr/share/hello", "hi\n", 0o644);
        assert!(deb.scripts().is_empty());
        assert_eq!(deb.file_name(), "hello_2.0_all.deb");
        assert!(deb.validate().is_ok());
        assert!(Deb::new("Hello", "1").validate().is_err());
        assert!(Deb::new("hello", "x1").validate().is_err());
        let escaping = Deb::new("hello", "1").file("/usr/../etc/x", "", 0o644);
        assert!(escaping.validate().is_err());
        assert!(
            Deb::new("hello", "1")
                .file("rel", "", 0o644)
                .validate()
                .is_err()
        );
    }
}
