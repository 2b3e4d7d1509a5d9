//! `authorized_key`: one OpenSSH public key in a user's `authorized_keys` (like Ansible's
//! `authorized_key`), built on `line`'s editing (bounded read, byte-for-byte rest, atomic
//! replace, no symlinks followed).
//!
//! The key is validated by parsing: a known key type (plain, `sk-` and certificate types),
//! base64 that decodes, and a decoded blob whose own type string is the type written. A line
//! of the file holds this key when its type and base64 are the same (options and comment are
//! not compared), so a changed `options` or comment replaces that line; later lines with the
//! same key are removed (sshd uses the first). The default file is `~user/.ssh/authorized_keys`,
//! the home directory read from the user database (/etc/passwd) when applying, never from
//! `$HOME`. When present, `~/.ssh` is made a directory of mode 0700 and the file 0600, both
//! owned by the user and its primary group. Building must never do IO.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, EventSink, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, Uid,
    WatchCtx,
};
use serde_json::{Map, Value};

use crate::file;
use crate::line::{self, apply, text};
use crate::params::{Params, bad, put_opt};

pub const FIELDS: &[&str] = &["user", "key", "options", "state", "path"];

pub const KIND: KindInfo = KindInfo {
    kind: "authorized_key",
    fields: FIELDS,
    build,
};

/// Where the user database lives; its changes may move the default file.
const PASSWD: &str = "/etc/passwd";

/// Every key type OpenSSH accepts in `authorized_keys`.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
];

/// Standard base64 with padding, strictly: `None` for anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let chunks = b.len() / 4;
    for (i, c) in b.chunks(4).enumerate() {
        let pad = c.iter().rev().take_while(|&&x| x == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &x in &c[..4 - pad] {
            n = n << 6 | val(x)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// A public key: its type, its base64 and its comment (maybe empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: String,
    pub base64: String,
    pub comment: String,
}

/// `type base64 [comment]`, checked as described in the module doc.
pub fn parse_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    if text.contains(['\n', '\r', '\0']) {
        return Err("must be one line".to_string());
    }
    let mut parts = text.splitn(3, [' ', '\t']);
    let kind = parts.next().unwrap_or_default();
    if !KEY_TYPES.contains(&kind) {
        let later_type = text
            .split([' ', '\t'])
            .skip(1)
            .any(|t| KEY_TYPES.contains(&t));
        let hint = if later_type || kind.contains('=') {
            " (options such as `from=` go in `options`)"
        } else {
            ""
        };
        return Err(format!(
            "`{kind}` is not an OpenSSH key type{hint}; expected `type base64 [comment]` with a \
             type such as ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256 or sk-ssh-ed25519@openssh.com"
        ));
    }
    let base64 = parts.next().unwrap_or_default().trim();
    let blob = base64_decode(base64)
        .ok_or_else(|| format!("the key data after `{kind}` is not valid base64"))?;
    let inner = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if inner != Some(kind.as_bytes()) {
        return Err(format!(
            "the key data is not a `{kind}` key (its embedded type is `{}`)",
            inner.map_or("missing".into(), String::from_utf8_lossy)
        ));
    }
    Ok(PublicKey {
        kind: kind.to_string(),
        base64: base64.to_string(),
        comment: parts.next().unwrap_or_default().trim().to_string(),
    })
}

/// `options`: one field without unquoted blanks, quotes balanced (as sshd reads them).
fn check_options(s: &str) -> Result<(), String> {
    if s.contains(['\n', '\r', '\0']) {
        return Err("must be one line".to_string());
    }
    if split_options(s).is_none_or(|(opts, rest)| opts.len() != s.len() || !rest.is_empty()) {
        return Err(
            "must be comma-separated options without unquoted spaces and with balanced quotes, \
             e.g. `from=\"10.0.0.0/8\",no-pty`"
                .to_string(),
        );
    }
    Ok(())
}

/// Splits a line into its leading options (up to the first unquoted blank) and the rest.
/// `None`: a quote is left open.
fn split_options(s: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Some((&s[..i], s[i..].trim_start())),
            _ => {}
        }
    }
    (!quoted).then_some((s, ""))
}

/// The key type and base64 of an `authorized_keys` line, if it holds a key.
fn line_key(body: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(body).ok()?.trim_start();
    if s.is_empty() || s.starts_with('#') {
        return None;
    }
    let first = s.split([' ', '\t']).next()?;
    let rest = if KEY_TYPES.contains(&first) {
        s
    } else {
        split_options(s)?.1
    };
    let mut it = rest.split([' ', '\t']).filter(|t| !t.is_empty());
    Some((it.next()?, it.next()?))
}

#[derive(Debug, Clone)]
pub struct KeySpec {
    user: String,
    key: PublicKey,
    options: Option<String>,
    exists: bool,
    path: Option<PathBuf>,
}

impl KeySpec {
    fn from_params(params: Value) -> Result<KeySpec, BuildError> {
        let mut p = Params::new("authorized_key", params, FIELDS)?;
        let user = p
            .ident("user")?
            .ok_or_else(|| bad("user", "the user whose key this is is required"))?;
        if user.starts_with('-') || user.contains(['/', ':', '\n', '\0', ' ']) {
            return Err(bad("user", format!("`{user}` is not a user name")));
        }
        let key = p.string("key")?.ok_or_else(|| {
            bad(
                "key",
                "the public key (`type base64 [comment]`) is required",
            )
        })?;
        let key = parse_key(&key).map_err(|m| bad("key", m))?;
        let options = p.string("options")?;
        if let Some(o) = &options {
            check_options(o).map_err(|m| bad("options", m))?;
        }
        let exists = line::parse_state(&mut p)?;
        let path = line::parse_path(&mut p)?;
        Ok(KeySpec {
            user,
            key,
            options,
            exists,
            path,
        })
    }

    fn to_params(&self) -> Value {
        let mut map = Map::new();
        map.insert("user".into(), self.user.clone().into());
        let mut key = format!("{} {}", self.key.kind, self.key.base64);
        if !self.key.comment.is_empty() {
            key = format!("{key} {}", self.key.comment);
        }
        map.insert("key".into(), key.into());
        put_opt(&mut map, "options", &self.options);
        let state = if self.exists { "exists" } else { "absent" };
        map.insert("state".into(), state.into());
        put_opt(
            &mut map,
            "path",
            &self.path.as_ref().map(|p| p.to_string_lossy().into_owned()),
        );
        Value::Object(map)
    }

    /// The line as it must appear.
    fn wanted(&self) -> String {
        let mut s = String::new();
        if let Some(o) = &self.options {
            s.push_str(o);
            s.push(' ');
        }
        s.push_str(&self.key.kind);
        s.push(' ');
        s.push_str(&self.key.base64);
        if !self.key.comment.is_empty() {
            s.push(' ');
            s.push_str(&self.key.comment);
        }
        s
    }

    /// The new content for `data`, or `None` when it is as wanted.
    fn edit(&self, data: &[u8]) -> Option<Vec<u8>> {
        let wanted = self.wanted();
        let mut lines = text::split(data);
        let ours = |l: &text::Line| {
            line_key(&l.body) == Some((self.key.kind.as_str(), self.key.base64.as_str()))
        };
        let first = lines.iter().position(ours);
        let mut changed = false;
        let mut kept = false;
        lines.retain(|l| {
            let keep = !ours(l) || (self.exists && !kept);
            kept |= keep && ours(l);
            changed |= !keep;
            keep
        });
        if self.exists {
            match first {
                Some(i) => {
                    if lines[i].body != wanted.as_bytes() {
                        lines[i].body = wanted.into_bytes();
                        changed = true;
                    }
                }
                None => {
                    return text::ensure_line(data, wanted.as_bytes(), None, &text::Anchor::Eof);
                }
            }
        }
        changed.then(|| text::join(&lines))
    }

    /// The file and, when it is the default one, the `.ssh` directory; `None` when the user
    /// is not in the user database (yet).
    fn resolve(&self) -> Result<Option<(Account, PathBuf, Option<PathBuf>)>, ResourceError> {
        let found = nix::unistd::User::from_name(&self.user)
            .map_err(|e| ResourceError::failed(format!("looking up user `{}`: {e}", self.user)))?;
        let Some(u) = found else {
            return Ok(None);
        };
        let account = Account {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        };
        Ok(Some(match &self.path {
            Some(p) => (account, p.clone(), None),
            None => {
                let ssh = u.dir.join(".ssh");
                (account, ssh.join("authorized_keys"), Some(ssh))
            }
        }))
    }

    fn converge(&self, dry: bool) -> Result<bool, ResourceError> {
        let Some((account, path, ssh_dir)) = self.resolve()? else {
            if !self.exists {
                return Ok(false);
            }
            return Err(ResourceError::failed(format!(
                "user `{}` does not exist",
                self.user
            )));
        };
        let attrs = apply::Attrs {
            mode: 0o600,
            uid: Some(account.uid),
            gid: Some(account.gid),
        };
        let mut changed = false;
        if let Some(dir) = &ssh_dir {
            if !self.exists && !dir.exists() {
                return Ok(false);
            }
            if self.exists {
                changed = ensure_ssh_dir(dir, account, dry)?;
                if changed && dry {
                    return Ok(true);
                }
            }
        }
        let rules = apply::Rules {
            create: Some(attrs),
            enforce: self.exists.then_some(attrs),
        };
        let edit = |d: &[u8]| Ok(self.edit(d));
        Ok(apply::converge(&path, &rules, &edit, dry)? || changed)
    }
}

#[derive(Debug, Clone, Copy)]
struct Account {
    uid: u32,
    gid: u32,
}

/// `~/.ssh`: a directory (not a symlink), mode 0700, owned by the user.
fn ensure_ssh_dir(dir: &Path, account: Account, dry: bool) -> Result<bool, ResourceError> {
    let fail = |op: &str| {
        let context = format!("{op} {}", dir.display());
        move |e: io::Error| ResourceError::failed(format!("{context}: {e}"))
    };
    let m = match fs::symlink_metadata(dir) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail("inspecting")(e)),
    };
    let m = match m {
        Some(m) if m.file_type().is_symlink() => {
            return Err(ResourceError::failed(format!(
                "{} is a symlink; symlinks are not followed (give `path`)",
                dir.display()
            )));
        }
        Some(m) if !m.is_dir() => {
            return Err(ResourceError::failed(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Some(m) => m,
        None => {
            let home = dir.parent().unwrap_or(Path::new("/"));
            if !home.is_dir() {
                return Err(ResourceError::failed(format!(
                    "the home directory {} does not exist",
                    home.display()
                )));
            }
            if dry {
                return Ok(true);
            }
            fs::create_dir(dir).map_err(fail("creating"))?;
            std::os::unix::fs::lchown(dir, Some(account.uid), Some(account.gid))
                .map_err(fail("changing owner of"))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(fail("setting mode of"))?;
            file::ops::sync_dir(home)?;
            return Ok(true);
        }
    };
    let mut changed = false;
    if m.uid() != account.uid || m.gid() != account.gid {
        if dry {
            return Ok(true);
        }
        std::os::unix::fs::lchown(dir, Some(account.uid), Some(account.gid))
            .map_err(fail("changing owner of"))?;
        changed = true;
    }
    if m.mode() & 0o7777 != 0o700 {
        if dry {
            return Ok(true);
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(fail("setting mode of"))?;
        changed = true;
    }
    Ok(changed)
}

#[derive(Debug)]
pub struct AuthorizedKey {
    name: String,
    meta: Meta,
    spec: Arc<KeySpec>,
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    Ok(Arc::new(AuthorizedKey {
        name: name.to_string(),
        meta,
        spec: Arc::new(KeySpec::from_params(params)?),
    }))
}

#[async_trait]
impl Resource for AuthorizedKey {
    fn kind(&self) -> &'static str {
        "authorized_key"
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
    fn uids(&self) -> Vec<Uid> {
        let file = self.spec.path.as_ref().map_or_else(
            || format!("~{}", self.spec.user),
            |p| p.to_string_lossy().into_owned(),
        );
        vec![Uid {
            kind: "authorized_key",
            key: format!("{file} {} {}", self.spec.key.kind, self.spec.key.base64),
        }]
    }
    /// The user first; with a `path`, also the file resources of it and its directories (the
    /// default file's home is only known when applying).
    fn auto_edges(&self) -> Vec<Uid> {
        let mut edges = vec![Uid {
            kind: "user",
            key: self.spec.user.clone(),
        }];
        if let Some(p) = &self.spec.path {
            edges.extend(line::file_edges(p));
        }
        edges
    }
    /// The file (and `~/.ssh` in the home) as `file` watches them, plus /etc/passwd: when the
    /// user appears or its home moves, the watch moves to the new file.
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        let mut running = false;
        loop {
            let spec = self.spec.clone();
            let resolved = line::blocking(move || spec.resolve()).await?;
            let (path, ssh) = match resolved {
                Some((_, path, ssh)) => (path, ssh),
                None => (PathBuf::from(PASSWD), None),
            };
            let mut also = vec![Path::new(PASSWD)];
            if let Some(s) = &ssh {
                also.push(s);
            }
            let watched = line::watch_spec(&path, &also);
            let (events, mut heard) = EventSink::channel();
            let inner = WatchCtx {
                events,
                cancel: ctx.cancel.child_token(),
                hostname: ctx.hostname.clone(),
            };
            let stop = inner.cancel.clone();
            let watching = file::watch::watch_versions(&watched, inner);
            tokio::pin!(watching);
            let moved = loop {
                tokio::select! {
                    done = &mut watching => return done,
                    got = heard.recv() => {
                        if got.is_none() {
                            break false;
                        }
                        if !running {
                            running = true;
                            ctx.running();
                            continue;
                        }
                        ctx.event();
                        let spec = self.spec.clone();
                        let now = line::blocking(move || spec.resolve()).await?;
                        let now_path = now.map(|(_, p, _)| p).unwrap_or_else(|| PASSWD.into());
                        if now_path != path {
                            break true;
                        }
                    }
                }
            };
            stop.cancel();
            let _ = watching.await;
            if !moved {
                return Ok(());
            }
        }
    }
    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let spec = self.spec.clone();
        let changed = line::blocking(move || spec.converge(mode == Mode::Check)).await?;
        Ok(line::outcome(changed, mode))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Public halves made by ssh-keygen for these tests (the sk- one assembled by hand).
    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEduq7xSTlLHoKBUptdFFe0tqfCd/zkag1H3cMuSd4Js alice@laptop";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP0OoAzkIIqlHmZI8cQDBEVFJ+b3QdzypcDeMFO65CF8 bob";
    const SK: &str = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fAAAABHNzaDo= yk";

    fn spec(v: Value) -> Result<KeySpec, String> {
        KeySpec::from_params(v).map_err(|e| e.message)
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        for bad in ["", "aGk", "a=Gk", "aG!k", "YQ==YQ==", "Y==="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_parsed_and_checked() {
        let k = parse_key(ED).unwrap();
        assert_eq!(
            (k.kind.as_str(), k.comment.as_str()),
            ("ssh-ed25519", "alice@laptop")
        );
        assert_eq!(parse_key(SK).unwrap().kind, "sk-ssh-ed25519@openssh.com");
        assert_eq!(parse_key(&ED2.replace(" bob", "")).unwrap().comment, "");
        let err = parse_key(&ED.replace("ssh-ed25519 ", "ssh-rsa ")).unwrap_err();
        assert_eq!(
            err,
            "the key data is not a `ssh-rsa` key (its embedded type is `ssh-ed25519`)"
        );
        assert!(
            parse_key("ssh-ed25519 !!!!")
                .unwrap_err()
                .contains("not valid base64")
        );
        assert!(
            parse_key("ssh-foo AAAA")
                .unwrap_err()
                .contains("not an OpenSSH key type")
        );
        assert!(
            parse_key(&format!("no-pty {ED}"))
                .unwrap_err()
                .contains("go in `options`")
        );
        assert!(
            parse_key("ssh-ed25519 aGk=")
                .unwrap_err()
                .contains("embedded type is `missing`")
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        for (v, why) in [
            (json!({"key": ED}), "`user`: the user whose key"),
            (
                json!({"user": "a/b", "key": ED}),
                "`user`: `a/b` is not a user name",
            ),
            (json!({"user": "a"}), "`key`: the public key"),
            (
                json!({"user": "a", "key": "ssh-rsa AAAA"}),
                "`key`: the key data is not",
            ),
            (
                json!({"user": "a", "key": ED, "options": "from=\"x"}),
                "`options`: must be",
            ),
            (
                json!({"user": "a", "key": ED, "options": "no-pty x"}),
                "`options`: must be",
            ),
            (
                json!({"user": "a", "key": ED, "state": "gone"}),
                "`state`: unknown state",
            ),
            (
                json!({"user": "a", "key": ED, "path": "k"}),
                "`path`: `k` is not an absolute path",
            ),
        ] {
            let err = spec(v.clone()).unwrap_err();
            assert!(err.starts_with(why), "{v}: {err}");
        }
        let ok = spec(json!({"user": "a", "key": ED, "options": "from=\"10.0.0.0/8,::1\",command=\"echo a b\",no-pty"}))
            .unwrap();
        assert_eq!(spec(ok.to_params()).unwrap().to_params(), ok.to_params());
    }

    #[test]
    fn the_key_is_matched_by_type_and_data_not_options_or_comment() {
        let s = spec(json!({"user": "a", "key": ED, "options": "no-pty"})).unwrap();
        let other = format!("# keys\r\n{ED2}\n");
        // Appended.
        let added = String::from_utf8(s.edit(other.as_bytes()).unwrap()).unwrap();
        assert_eq!(added, format!("# keys\r\n{ED2}\nno-pty {ED}\n"));
        assert_eq!(s.edit(added.as_bytes()), None);
        // Other options and comment: replaced in place; a later duplicate removed.
        let old_key = ED.replace("alice@laptop", "old");
        let before = format!("from=\"1.2.3.4\" {old_key}\n{ED2}\n{ED}");
        let after = String::from_utf8(s.edit(before.as_bytes()).unwrap()).unwrap();
        assert_eq!(after, format!("no-pty {ED}\n{ED2}\n"));
        // Absent: every line with the key goes, whatever its options.
        let gone = spec(json!({"user": "a", "key": ED, "state": "absent"})).unwrap();
        assert_eq!(
            String::from_utf8(gone.edit(before.as_bytes()).unwrap()).unwrap(),
            format!("{ED2}\n")
        );
        assert_eq!(gone.edit(other.as_bytes()), None);
    }

    #[test]
    fn an_explicit_path_is_converged_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        fs::write(&path, format!("{ED2}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap();
        let s = spec(json!({"user": me.name, "key": ED, "path": path.to_str().unwrap()})).unwrap();
        assert!(s.converge(true).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{ED2}\n"));
        assert!(s.converge(false).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{ED2}\n{ED}\n"));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert!(!s.converge(false).unwrap());
        let r = build("k", s.to_params(), Meta::default()).unwrap();
        let edges: Vec<(&str, String)> = r
            .auto_edges()
            .into_iter()
            .map(|u| (u.kind, u.key))
            .collect();
        assert_eq!(edges[0], ("user", me.name.clone()));
        assert_eq!(edges[1], ("file", path.to_string_lossy().into_owned()));
    }
}
