//! `hostname`: the host's names, with mgmt's fields. `hostname` (default: the resource's name)
//! is the fallback of the three others; a field given as `""` is not managed.
//!
//! - `transient_hostname`: the kernel's (sethostname(2); `/proc/sys/kernel/hostname` of this
//!   UTS namespace).
//! - `static_hostname`: `/etc/hostname`, and the `127.0.1.1` line of `/etc/hosts` (Debian's
//!   convention; only that line is rewritten, the rest is kept byte for byte, and one is added
//!   after the `127.0.0.1` line when there is none).
//! - `pretty_hostname`: `PRETTY_HOSTNAME=` of `/etc/machine-info` (its other lines kept).
//!
//! These are the files and the call systemd-hostnamed itself uses, written directly (and
//! atomically, through `line`'s editor) whether or not hostnamed runs: hostnamed reads them
//! afresh when asked, so both agree. Watched: `POLLPRI` of `/proc/sys/kernel/hostname` (the
//! kernel's signal that a hostname changed, in any UTS namespace: a spurious event costs one
//! compare) and inotify on the three files. Building must never do IO.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use regex::bytes::Regex;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, Uid, WatchCtx,
};
use serde_json::{Map, Value};

use crate::line::{self, apply, text};
use crate::params::{Params, bad};
use crate::sysctl::{self, ProcPoll, Signal};

pub const FIELDS: &[&str] = &[
    "hostname",
    "pretty_hostname",
    "static_hostname",
    "transient_hostname",
];

pub const KIND: KindInfo = KindInfo {
    kind: "hostname",
    fields: FIELDS,
    build,
};

/// The kernel's longest host name (HOST_NAME_MAX).
pub const MAX_LEN: usize = 64;

/// An RFC 1123 host name: dot-separated labels of letters, digits and `-` (not first or
/// last), each 1 to 63 long, at most [`MAX_LEN`] in all.
pub fn check_hostname(name: &str) -> Result<(), String> {
    if name.len() > MAX_LEN {
        return Err(format!(
            "`{name}` is {} characters long; the kernel allows at most {MAX_LEN}",
            name.len()
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "`{name}` is not a valid host name (RFC 1123: dot-separated labels of 1 to 63 \
                 letters, digits and `-`, not starting or ending with `-`)"
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct HostnameSpec {
    hostname: String,
    /// `None`: not managed.
    pretty: Option<String>,
    static_: Option<String>,
    transient: Option<String>,
    /// `/` (elsewhere in tests): where `etc/` and `proc/sys/` are.
    root: PathBuf,
}

impl HostnameSpec {
    fn from_params(name: &str, params: Value) -> Result<HostnameSpec, BuildError> {
        let mut p = Params::new("hostname", params, FIELDS)?;
        let (hostname, source) = match p.string("hostname")? {
            Some(h) => (h, "hostname"),
            None => (name.to_string(), "name"),
        };
        // A field given as "" is unmanaged; an absent one takes `hostname`.
        let mut field = |f: &str| -> Result<(Option<String>, bool), BuildError> {
            Ok(match p.text(f)? {
                Some(v) if v.is_empty() => (None, false),
                Some(v) => (Some(v), false),
                None => (Some(hostname.clone()).filter(|h| !h.is_empty()), true),
            })
        };
        let (pretty, _) = field("pretty_hostname")?;
        let (static_, static_fallback) = field("static_hostname")?;
        let (transient, transient_fallback) = field("transient_hostname")?;
        for (f, value, fallback) in [
            ("static_hostname", &static_, static_fallback),
            ("transient_hostname", &transient, transient_fallback),
        ] {
            if let Some(v) = value {
                let at = if fallback { source } else { f };
                check_hostname(v).map_err(|m| bad(at, m))?;
            }
        }
        if let Some(v) = &pretty
            && (v.contains(['\n', '\r', '\0']) || v.len() > 255)
        {
            return Err(bad(
                "pretty_hostname",
                "must be one line of at most 255 bytes",
            ));
        }
        if pretty.is_none() && static_.is_none() && transient.is_none() {
            return Err(bad(
                "hostname",
                "nothing to manage: give a hostname (or leave one of the three fields unset)",
            ));
        }
        Ok(HostnameSpec {
            hostname,
            pretty,
            static_,
            transient,
            root: PathBuf::from("/"),
        })
    }

    fn to_params(&self) -> Value {
        let mut map = Map::new();
        let text = |v: &Option<String>| Value::from(v.clone().unwrap_or_default());
        map.insert("hostname".into(), self.hostname.clone().into());
        map.insert("pretty_hostname".into(), text(&self.pretty));
        map.insert("static_hostname".into(), text(&self.static_));
        map.insert("transient_hostname".into(), text(&self.transient));
        Value::Object(map)
    }

    fn etc(&self, name: &str) -> PathBuf {
        self.root.join("etc").join(name)
    }

    fn proc(&self) -> PathBuf {
        self.root.join("proc/sys/kernel/hostname")
    }

    fn converge(&self, dry: bool) -> Result<bool, ResourceError> {
        let attrs = sysctl::root_attrs();
        let rules = apply::Rules {
            create: Some(attrs),
            enforce: None,
        };
        let mut changed = false;
        if let Some(name) = &self.static_ {
            let edit = |d: &[u8]| Ok(edit_etc_hostname(d, name));
            changed |= apply::converge(&self.etc("hostname"), &rules, &edit, dry)?;
            let edit = |d: &[u8]| Ok(edit_hosts(d, name));
            changed |= apply::converge(&self.etc("hosts"), &rules, &edit, dry)?;
        }
        if let Some(pretty) = &self.pretty {
            let edit = |d: &[u8]| Ok(edit_machine_info(d, pretty));
            changed |= apply::converge(&self.etc("machine-info"), &rules, &edit, dry)?;
        }
        if let Some(name) = &self.transient {
            let key = "kernel.hostname";
            if sysctl::read_runtime(key, &self.proc())? != *name {
                if !dry {
                    self.set_kernel_hostname(name)?;
                }
                changed = true;
            }
        }
        Ok(changed)
    }
}

impl HostnameSpec {
    /// sethostname(2): it works where `/proc/sys` is mounted read-only (containers). Under a
    /// test root, the fake `/proc/sys` file is written instead.
    fn set_kernel_hostname(&self, name: &str) -> Result<(), ResourceError> {
        if self.root != Path::new("/") {
            return sysctl::write_runtime("kernel.hostname", &self.proc(), name);
        }
        // SAFETY: a valid pointer and length; the kernel copies the bytes.
        let rc = unsafe { nix::libc::sethostname(name.as_ptr().cast(), name.len()) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(ResourceError::failed(format!(
                "setting the kernel's host name to `{name}`: {e}"
            )));
        }
        Ok(())
    }
}

/// `/etc/hostname`: the name on its first line that is not a comment.
fn edit_etc_hostname(data: &[u8], name: &str) -> Option<Vec<u8>> {
    let have = String::from_utf8_lossy(data);
    let first = have
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    (first != Some(name)).then(|| format!("{name}\n").into_bytes())
}

/// The names the `127.0.1.1` line gives: the name, and its first label when it has dots.
fn hosts_names(name: &str) -> Vec<&str> {
    match name.split_once('.') {
        Some((short, _)) => vec![name, short],
        None => vec![name],
    }
}

/// `/etc/hosts` with its first `127.0.1.1` line naming `name` (added after `127.0.0.1`).
fn edit_hosts(data: &[u8], name: &str) -> Option<Vec<u8>> {
    let want = hosts_names(name);
    let wanted = format!("127.0.1.1\t{}", want.join("\t"));
    let mut lines = text::split(data);
    let ours = lines.iter().position(|l| {
        let body = String::from_utf8_lossy(&l.body);
        body.split_whitespace().next() == Some("127.0.1.1")
    });
    match ours {
        Some(i) => {
            let body = String::from_utf8_lossy(&lines[i].body).into_owned();
            let names: Vec<&str> = body
                .split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .skip(1)
                .collect();
            if names == want {
                return None;
            }
            lines[i].body = wanted.into_bytes();
            Some(text::join(&lines))
        }
        None => {
            let after = Regex::new(r"^\s*127\.0\.0\.1\s").expect("a valid regex");
            text::ensure_line(data, wanted.as_bytes(), None, &text::Anchor::After(after))
        }
    }
}

/// `PRETTY_HOSTNAME=` as a shell-quoted value, and read back.
fn quote(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return inner.to_string();
    }
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    let mut out = String::new();
    let mut esc = false;
    for c in inner.chars() {
        if esc || c != '\\' {
            out.push(c);
            esc = false;
        } else {
            esc = true;
        }
    }
    out
}

fn edit_machine_info(data: &[u8], pretty: &str) -> Option<Vec<u8>> {
    let re = Regex::new(r"^\s*PRETTY_HOSTNAME=").expect("a valid regex");
    let mut lines = text::split(data);
    if let Some(i) = lines.iter().rposition(|l| re.is_match(&l.body)) {
        let body = String::from_utf8_lossy(&lines[i].body).into_owned();
        let (_, value) = body.split_once('=').unwrap_or_default();
        if unquote(value) == pretty {
            return None;
        }
        lines[i].body = format!("PRETTY_HOSTNAME={}", quote(pretty)).into_bytes();
        return Some(text::join(&lines));
    }
    let line = format!("PRETTY_HOSTNAME={}", quote(pretty));
    text::ensure_line(data, line.as_bytes(), None, &text::Anchor::Eof)
}

#[derive(Debug)]
pub struct Hostname {
    name: String,
    meta: Meta,
    spec: Arc<HostnameSpec>,
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    Ok(Arc::new(Hostname {
        name: name.to_string(),
        meta,
        spec: Arc::new(HostnameSpec::from_params(name, params)?),
    }))
}

#[async_trait]
impl Resource for Hostname {
    fn kind(&self) -> &'static str {
        "hostname"
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
    /// The host's name: one per host.
    fn uids(&self) -> Vec<Uid> {
        vec![Uid {
            kind: "hostname",
            key: String::new(),
        }]
    }
    /// `file` resources of the files it edits or of `/etc` come first.
    fn auto_edges(&self) -> Vec<Uid> {
        let mut edges = line::file_edges(&self.spec.etc("hostname"));
        for f in ["hosts", "machine-info"] {
            edges.extend(line::file_edges(&self.spec.etc(f)).into_iter().take(1));
        }
        edges
    }
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        let poll = ProcPoll::open(&self.spec.proc())?;
        let (hosts, info) = (self.spec.etc("hosts"), self.spec.etc("machine-info"));
        sysctl::watch_with_signal(
            &self.spec.etc("hostname"),
            &[&hosts, &info],
            Some(Signal::Poll(poll)),
            ctx,
        )
        .await
    }
    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let spec = self.spec.clone();
        let changed = line::blocking(move || spec.converge(mode == Mode::Check)).await?;
        Ok(line::outcome(changed, mode))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::*;

    fn spec(name: &str, v: Value) -> Result<HostnameSpec, String> {
        HostnameSpec::from_params(name, v).map_err(|e| e.message)
    }

    #[test]
    fn host_names_follow_rfc_1123() {
        for good in ["a", "web-1", "web1.example.com", "1x", &"a".repeat(63)] {
            assert!(check_hostname(good).is_ok(), "{good}");
        }
        let long = format!("{}.{}", "a".repeat(40), "b".repeat(30));
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "a b",
            "ä",
            "a.",
            &long,
            &"a".repeat(64),
        ] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fields_fall_back_to_hostname_and_empty_is_unmanaged() {
        let s = spec("web1", json!({})).unwrap();
        assert_eq!(
            s.to_params(),
            json!({"hostname": "web1", "pretty_hostname": "web1", "static_hostname": "web1",
                   "transient_hostname": "web1"})
        );
        let s = spec(
            "x",
            json!({"hostname": "db", "pretty_hostname": "", "transient_hostname": "db-t"}),
        )
        .unwrap();
        assert_eq!(s.pretty, None);
        assert_eq!(s.static_.as_deref(), Some("db"));
        assert_eq!(spec("x", s.to_params()).unwrap().to_params(), s.to_params());
        for (name, v, why) in [
            (
                "bad name",
                json!({}),
                "`name`: `bad name` is not a valid host name",
            ),
            ("x", json!({"hostname": "a_b"}), "`hostname`: `a_b` is not"),
            (
                "x",
                json!({"static_hostname": "-x"}),
                "`static_hostname`: `-x` is not",
            ),
            (
                "x",
                json!({"pretty_hostname": "a\nb"}),
                "`pretty_hostname`: must be one line",
            ),
            (
                "x",
                json!({"pretty_hostname": "", "static_hostname": "", "transient_hostname": ""}),
                "`hostname`: nothing to manage",
            ),
        ] {
            let e = spec(name, v.clone()).unwrap_err();
            assert!(e.starts_with(why), "{v}: {e}");
        }
        // A pretty name is free-form when the others are not taken from it.
        assert!(
            spec(
                "x",
                json!({"hostname": "Joe's Laptop", "static_hostname": "joe",
                       "transient_hostname": "joe"})
            )
            .is_ok()
        );
    }

    #[test]
    fn hosts_keeps_every_other_line_byte_for_byte() {
        let hosts = b"127.0.0.1\tlocalhost\r\n127.0.1.1\told.example old # me\n::1 ip6\n";
        assert_eq!(
            edit_hosts(hosts, "new.example").unwrap(),
            b"127.0.0.1\tlocalhost\r\n127.0.1.1\tnew.example\tnew\n::1 ip6\n"
        );
        assert_eq!(
            edit_hosts(b"127.0.1.1 web  # c\n", "web"),
            None,
            "same names, other spacing: in sync"
        );
        assert_eq!(
            edit_hosts(b"127.0.0.1 localhost\n::1 x", "web").unwrap(),
            b"127.0.0.1 localhost\n127.0.1.1\tweb\n::1 x"
        );
        assert_eq!(edit_etc_hostname(b"# c\nweb\n", "web"), None);
        assert_eq!(edit_etc_hostname(b"old\n", "web").unwrap(), b"web\n");
        let info = b"CHASSIS=vm\nPRETTY_HOSTNAME='Old'\n";
        assert_eq!(
            edit_machine_info(info, "Joe's \"box\"").unwrap(),
            b"CHASSIS=vm\nPRETTY_HOSTNAME=\"Joe's \\\"box\\\"\"\n"
        );
        let new = edit_machine_info(info, "Joe's \"box\"").unwrap();
        assert_eq!(edit_machine_info(&new, "Joe's \"box\""), None);
    }

    #[test]
    fn converges_files_and_kernel_name_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        fs::write(dir.path().join("proc/sys/kernel/hostname"), "old\n").unwrap();
        fs::write(dir.path().join("etc/hostname"), "old\n").unwrap();
        let hosts = "127.0.0.1 localhost\n127.0.1.1 old\n";
        fs::write(dir.path().join("etc/hosts"), hosts).unwrap();
        let mut s = spec("web1", json!({"pretty_hostname": "Web One"})).unwrap();
        s.root = dir.path().to_path_buf();
        assert!(s.converge(true).unwrap());
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/hosts")).unwrap(),
            hosts
        );
        assert!(!dir.path().join("etc/machine-info").exists());
        assert!(s.converge(false).unwrap());
        let read = |p: &str| fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("etc/hostname"), "web1\n");
        assert_eq!(read("etc/hosts"), "127.0.0.1 localhost\n127.0.1.1\tweb1\n");
        assert_eq!(read("etc/machine-info"), "PRETTY_HOSTNAME=\"Web One\"\n");
        assert_eq!(read("proc/sys/kernel/hostname"), "web1\n");
        assert!(!s.converge(false).unwrap());
        assert!(!s.converge(true).unwrap());
        // Kernel drift alone is undone.
        fs::write(dir.path().join("proc/sys/kernel/hostname"), "x\n").unwrap();
        assert!(s.converge(false).unwrap());
        assert_eq!(read("proc/sys/kernel/hostname"), "web1\n");
    }
}
