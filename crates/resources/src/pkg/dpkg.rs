//! What dpkg has installed, read from its database ourselves: `/var/lib/dpkg/status` and the
//! journal in `updates/` that dpkg folds into it at its next checkpoint (present after an
//! interrupted run). Only `Package`, `Architecture`, `Status` and `Version` are read. Parsing is
//! pure; `read` is the only IO, and it only reads.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::version;

/// One package instance as the database records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub arch: Option<String>,
    /// The third word of `Status` (`installed`, `config-files`, `half-installed`...).
    pub status: String,
    /// The second word of `Status` (`ok` or `reinstreq`).
    pub eflag: String,
    pub version: Option<String>,
}

/// What a package is on this machine, as far as the pkg states care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Not known to dpkg, or `not-installed`.
    Absent,
    /// Removed, its configuration files left (`deinstall ok config-files`): not installed, but
    /// not purged either.
    ConfigFiles,
    /// Properly installed (`installed`, or only waiting for triggers) in this version.
    Installed(String),
    /// Present but not properly installed (unpacked, half-configured, needing a reinstall...):
    /// an install repairs it, a removal removes it.
    Broken(String),
}

/// The database: every instance of every package, by package name.
#[derive(Debug, Default)]
pub(crate) struct Db {
    packages: HashMap<String, Vec<Record>>,
}

impl Db {
    /// Adds the stanzas of `text` (the status file's format); a stanza for a package instance
    /// already known replaces it, as dpkg's journal entries replace status entries.
    pub(crate) fn add(&mut self, text: &str) {
        for stanza in text.split("\n\n") {
            let mut package = None;
            let mut arch = None;
            let mut status = None;
            let mut version = None;
            for line in stanza.lines() {
                if line.starts_with([' ', '\t']) {
                    continue;
                }
                let Some((field, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match field.to_ascii_lowercase().as_str() {
                    "package" => package = Some(value),
                    "architecture" => arch = Some(value),
                    "status" => status = Some(value),
                    "version" => version = Some(value),
                    _ => {}
                }
            }
            let (Some(package), Some(status)) = (package, status) else {
                continue;
            };
            let mut words = status.split_whitespace().skip(1);
            let (Some(eflag), Some(status)) = (words.next(), words.next()) else {
                continue;
            };
            let record = Record {
                arch: arch.map(String::from),
                status: status.to_string(),
                eflag: eflag.to_string(),
                version: version.map(String::from),
            };
            let instances = self.packages.entry(package.to_string()).or_default();
            match instances.iter_mut().find(|r| r.arch == record.arch) {
                Some(old) => *old = record,
                None => instances.push(record),
            }
        }
    }

    /// `name` is a package, or `package:arch` for one instance. Of several instances (a
    /// multi-arch library), the most installed one counts.
    pub(crate) fn presence(&self, name: &str) -> Presence {
        let (package, arch) = match name.split_once(':') {
            Some((package, arch)) => (package, Some(arch)),
            None => (name, None),
        };
        let Some(instances) = self.packages.get(package) else {
            return Presence::Absent;
        };
        instances
            .iter()
            .filter(|r| arch.is_none() || r.arch.as_deref() == arch)
            .map(presence_of)
            .max_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| newer(a, b)))
            .unwrap_or(Presence::Absent)
    }
}

fn presence_of(r: &Record) -> Presence {
    let version = r.version.clone().unwrap_or_default();
    match r.status.as_str() {
        "not-installed" => Presence::Absent,
        "config-files" => Presence::ConfigFiles,
        "installed" | "triggers-pending" | "triggers-awaited" if r.eflag == "ok" => {
            Presence::Installed(version)
        }
        _ => Presence::Broken(version),
    }
}

fn rank(p: &Presence) -> u8 {
    match p {
        Presence::Absent => 0,
        Presence::ConfigFiles => 1,
        Presence::Broken(_) => 2,
        Presence::Installed(_) => 3,
    }
}

fn newer(a: &Presence, b: &Presence) -> Ordering {
    match (a, b) {
        (Presence::Installed(a), Presence::Installed(b)) => version::compare(a, b),
        _ => Ordering::Equal,
    }
}

/// Reads `dir/status` and then the journal `dir/updates/NNNN` in order.
pub(crate) fn read(dir: &Path) -> io::Result<Db> {
    let mut db = Db::default();
    let status = dir.join("status");
    let text = std::fs::read_to_string(&status)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", status.display())))?;
    db.add(&text);
    let mut journal: Vec<_> = match std::fs::read_dir(dir.join("updates")) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| {
                let n = n.as_encoded_bytes();
                !n.is_empty() && n.iter().all(u8::is_ascii_digit)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    journal.sort();
    for name in journal {
        // An entry dpkg is writing right now is folded in by its next checkpoint; we look
        // again after that (the watch waits for the lock to be released).
        if let Ok(text) = std::fs::read_to_string(dir.join("updates").join(name)) {
            db.add(&text);
        }
    }
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: cowsay
Status: install ok installed
Priority: optional
Section: games
Installed-Size: 93
Maintainer: Someone <someone@example.org>
Architecture: all
Version: 3.03+dfsg2-8
Depends: perl
Description: configurable talking cow
 Cowsay (or cowthink) will turn text into happy ASCII cows, with
 speech (or thought) balloons.
 .
 Status: this continuation line is not a field

Package: pkgconf
Status: deinstall ok config-files
Priority: optional
Architecture: all
Version: 1.0
Conffiles:
 /etc/pkgconf/pkgconf.conf 0123456789abcdef0123456789abcdef

Package: gone
Status: purge ok not-installed
Architecture: amd64

Package: halfway
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0-1

Package: unpacked
Status: install ok unpacked
Architecture: amd64
Version: 1

Package: triggered
Status: install ok triggers-pending
Architecture: amd64
Version: 5

Package: libfoo1
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 1.2-1

Package: libfoo1
Status: deinstall ok config-files
Architecture: i386
Multi-Arch: same
Version: 1.1-1

Package: held
Status: hold ok installed
Architecture: amd64
Version: 7
";

    fn db(texts: &[&str]) -> Db {
        let mut db = Db::default();
        for t in texts {
            db.add(t);
        }
        db
    }

    #[test]
    fn status_stanzas_say_what_is_installed() {
        let db = db(&[STATUS]);
        let installed = |v: &str| Presence::Installed(v.to_string());
        for (name, want) in [
            ("cowsay", installed("3.03+dfsg2-8")),
            // Removed with its configuration left: not installed, not purged.
            ("pkgconf", Presence::ConfigFiles),
            ("gone", Presence::Absent),
            ("never-heard-of", Presence::Absent),
            ("halfway", Presence::Broken("2.0-1".into())),
            ("unpacked", Presence::Broken("1".into())),
            ("triggered", installed("5")),
            ("held", installed("7")),
            // The most installed instance counts; an architecture picks one.
            ("libfoo1", installed("1.2-1")),
            ("libfoo1:amd64", installed("1.2-1")),
            ("libfoo1:i386", Presence::ConfigFiles),
            ("libfoo1:arm64", Presence::Absent),
        ] {
            assert_eq!(db.presence(name), want, "{name}");
        }
    }

    #[test]
    fn journal_entries_replace_status_entries() {
        let journal = "Package: cowsay\nStatus: install ok half-configured\nArchitecture: all\nVersion: 3.04\n";
        let db = db(&[STATUS, journal]);
        assert_eq!(db.presence("cowsay"), Presence::Broken("3.04".into()));
        // Other instances of the same package stay.
        let db2 = db_with_i386_install();
        assert_eq!(
            db2.presence("libfoo1:amd64"),
            Presence::Installed("1.2-1".into())
        );
        assert_eq!(
            db2.presence("libfoo1:i386"),
            Presence::Installed("1.2-1".into())
        );
    }

    fn db_with_i386_install() -> Db {
        db(&[
            STATUS,
            "Package: libfoo1\nStatus: install ok installed\nArchitecture: i386\nVersion: 1.2-1\n",
        ])
    }

    #[test]
    fn read_folds_the_journal_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("status"), STATUS).unwrap();
        std::fs::create_dir(dir.path().join("updates")).unwrap();
        let entry = |v: &str| {
            format!(
                "Package: cowsay\nStatus: install ok installed\nArchitecture: all\nVersion: {v}\n"
            )
        };
        std::fs::write(dir.path().join("updates/0001"), entry("2")).unwrap();
        std::fs::write(dir.path().join("updates/0000"), entry("1")).unwrap();
        // Not a journal entry (dpkg's temporary name).
        std::fs::write(dir.path().join("updates/tmp.i"), entry("9")).unwrap();
        let db = read(dir.path()).unwrap();
        assert_eq!(db.presence("cowsay"), Presence::Installed("2".into()));

        let missing = read(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope/status"), "{missing}");
    }
}
