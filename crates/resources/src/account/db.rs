//! The account database as shadow's tools leave it: `passwd`, `group` and (when a password is
//! managed) `shadow` under one directory (`/etc`), parsed here, in-process.
//!
//! As the shadow suite does, blank lines, comment lines (`#`) and NIS compat entries (`+`/`-`
//! first) are passed over; any other line that is not well formed is an error naming the file
//! and line. Each file is read up to [`MAX_SIZE`]. This only ever reads.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The most of one file that is read: far beyond any real account database.
pub(crate) const MAX_SIZE: u64 = 64 << 20;

/// One line of `passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// One line of `group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// What is known of the accounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Db {
    pub passwd: Vec<PasswdEntry>,
    pub group: Vec<GroupEntry>,
    /// `(name, hash)` of `shadow`, when it was read.
    pub shadow: Option<Vec<(String, String)>>,
}

impl Db {
    /// Reads `passwd` and `group` of `dir`, and `shadow` when `with_shadow`.
    pub fn read(dir: &Path, with_shadow: bool) -> Result<Db, String> {
        let passwd = parse_passwd(&dir.join("passwd"), &read_limited(&dir.join("passwd"))?)?;
        let group = parse_group(&dir.join("group"), &read_limited(&dir.join("group"))?)?;
        let shadow = if with_shadow {
            let path = dir.join("shadow");
            Some(parse_shadow(&path, &read_limited(&path)?)?)
        } else {
            None
        };
        Ok(Db {
            passwd,
            group,
            shadow,
        })
    }

    pub fn user(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|u| u.name == name)
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|u| u.uid == uid)
    }

    pub fn group(&self, name: &str) -> Option<&GroupEntry> {
        self.group.iter().find(|g| g.name == name)
    }

    pub fn group_by_gid(&self, gid: u32) -> Option<&GroupEntry> {
        self.group.iter().find(|g| g.gid == gid)
    }

    /// The groups that list `user` as a member, by name, sorted (its supplementary groups).
    pub fn member_of(&self, user: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .group
            .iter()
            .filter(|g| g.members.iter().any(|m| m == user))
            .map(|g| g.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The hash of `user` in `shadow` (`None` without an entry, or when it was not read).
    pub fn hash(&self, user: &str) -> Option<&str> {
        self.shadow
            .as_ref()?
            .iter()
            .find(|(n, _)| n == user)
            .map(|(_, h)| h.as_str())
    }
}

/// A file's text, refusing one larger than [`MAX_SIZE`] or not UTF-8.
fn read_limited(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("reading {shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(format!(
            "{shown} is larger than {} MiB: not an account database",
            MAX_SIZE >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("{shown} is not UTF-8: {e}"))
}

/// The lines that hold entries, numbered from 1, each split at `:` into `fields` fields
/// (`shadow` may have fewer trailing ones: `min` is the least).
fn entries<'a>(
    path: &'a Path,
    text: &'a str,
    min: usize,
    max: usize,
) -> impl Iterator<Item = Result<(usize, Vec<&'a str>), String>> + 'a {
    text.lines().enumerate().filter_map(move |(i, line)| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with(['+', '-']) {
            return None;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < min || fields.len() > max {
            let want = if min == max {
                min.to_string()
            } else {
                format!("{min} to {max}")
            };
            return Some(Err(format!(
                "{}:{}: malformed entry: {want} fields separated by `:` expected, found {}",
                path.display(),
                i + 1,
                fields.len()
            )));
        }
        if fields[0].is_empty() {
            return Some(Err(format!(
                "{}:{}: malformed entry: the name is empty",
                path.display(),
                i + 1
            )));
        }
        Some(Ok((i + 1, fields)))
    })
}

fn id(path: &Path, line: usize, what: &str, text: &str) -> Result<u32, String> {
    text.parse::<u32>().map_err(|_| {
        format!(
            "{}:{line}: malformed entry: the {what} `{text}` is not a number",
            path.display()
        )
    })
}

pub(crate) fn parse_passwd(path: &Path, text: &str) -> Result<Vec<PasswdEntry>, String> {
    entries(path, text, 7, 7)
        .map(|e| {
            let (line, f) = e?;
            Ok(PasswdEntry {
                name: f[0].to_string(),
                uid: id(path, line, "uid", f[2])?,
                gid: id(path, line, "gid", f[3])?,
                gecos: f[4].to_string(),
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

pub(crate) fn parse_group(path: &Path, text: &str) -> Result<Vec<GroupEntry>, String> {
    entries(path, text, 4, 4)
        .map(|e| {
            let (line, f) = e?;
            Ok(GroupEntry {
                name: f[0].to_string(),
                gid: id(path, line, "gid", f[2])?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

pub(crate) fn parse_shadow(path: &Path, text: &str) -> Result<Vec<(String, String)>, String> {
    entries(path, text, 2, 9)
        .map(|e| {
            let (_, f) = e?;
            Ok((f[0].to_string(), f[1].to_string()))
        })
        .collect()
}

/// The directory of the account database on this machine.
pub(crate) fn etc() -> PathBuf {
    PathBuf::from("/etc")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment

+nis
alice:x:1000:1000:Alice A,,,:/home/alice:/bin/bash
";
    const GROUP: &str = "\
root:x:0:
alice:x:1000:
staff:x:50:alice,bob
audio:x:29:bob, alice
";
    const SHADOW: &str = "root:*:19000:0:99999:7:::\nalice:$y$j9T$salt$hash:19000::::::\n";

    fn dir(passwd: &str, group: &str, shadow: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("passwd"), passwd).unwrap();
        std::fs::write(d.path().join("group"), group).unwrap();
        std::fs::write(d.path().join("shadow"), shadow).unwrap();
        d
    }

    #[test]
    fn reads_entries_passing_over_comments_blank_lines_and_nis_entries() {
        let d = dir(PASSWD, GROUP, SHADOW);
        let db = Db::read(d.path(), true).unwrap();
        assert_eq!(db.passwd.len(), 2);
        let alice = db.user("alice").unwrap();
        assert_eq!(
            (
                alice.uid,
                alice.gid,
                alice.gecos.as_str(),
                alice.home.as_str()
            ),
            (1000, 1000, "Alice A,,,", "/home/alice")
        );
        assert_eq!(alice.shell, "/bin/bash");
        assert_eq!(db.member_of("alice"), ["audio", "staff"]);
        assert_eq!(db.member_of("root"), Vec::<String>::new());
        assert_eq!(db.group_by_gid(50).unwrap().name, "staff");
        assert_eq!(db.hash("alice"), Some("$y$j9T$salt$hash"));
        assert_eq!(db.hash("nobody"), None);
        assert_eq!(Db::read(d.path(), false).unwrap().hash("alice"), None);
    }

    #[test]
    fn malformed_lines_are_errors_naming_file_and_line() {
        let d = dir("root:x:0:0:root:/root:/bin/bash\nbad:x:1\n", GROUP, SHADOW);
        let e = Db::read(d.path(), false).unwrap_err();
        assert!(
            e.ends_with("passwd:2: malformed entry: 7 fields separated by `:` expected, found 3"),
            "{e}"
        );
        let d = dir(PASSWD, "g:x:abc:\n", SHADOW);
        let e = Db::read(d.path(), false).unwrap_err();
        assert!(
            e.ends_with("group:1: malformed entry: the gid `abc` is not a number"),
            "{e}"
        );
        let d = dir(PASSWD, GROUP, "justaname\n");
        let e = Db::read(d.path(), true).unwrap_err();
        assert!(
            e.ends_with(
                "shadow:1: malformed entry: 2 to 9 fields separated by `:` expected, found 1"
            ),
            "{e}"
        );
        let d = dir(":x:0:0::/:/bin/sh\n", GROUP, SHADOW);
        let e = Db::read(d.path(), false).unwrap_err();
        assert!(
            e.ends_with("passwd:1: malformed entry: the name is empty"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_or_one_too_large_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let e = Db::read(d.path(), false).unwrap_err();
        assert!(e.contains("passwd: No such file"), "{e}");
        let f = std::fs::File::create(d.path().join("passwd")).unwrap();
        f.set_len(MAX_SIZE + 1).unwrap();
        let e = read_limited(&d.path().join("passwd")).unwrap_err();
        assert!(
            e.ends_with("is larger than 64 MiB: not an account database"),
            "{e}"
        );
    }
}
