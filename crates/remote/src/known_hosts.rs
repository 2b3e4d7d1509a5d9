//! known_hosts lookup and learning, with the details OpenSSH users rely on: `[host]:port`
//! entries, hashed (`|1|salt|hash`) names, comma lists, `*`/`?` and `!` patterns, `@revoked`
//! markers, and exact line numbers for the error that tells the user which line to fix.
//!
//! It never trusts a key it has not seen: learning is only done when the caller asks.

use std::io::Write;
use std::path::Path;

use data_encoding::BASE64;
use hmac::{KeyInit, Mac};
use russh::keys::ssh_key::PublicKey;

/// What the known_hosts file says about a server key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    Known,
    /// No entry for this host with this key type.
    Unknown,
    /// An entry of the same key type holds another key: possible man-in-the-middle.
    Changed {
        line: usize,
    },
    /// The key is listed under `@revoked`.
    Revoked {
        line: usize,
    },
}

/// The name under which a host is recorded: `host` on port 22, `[host]:port` otherwise.
pub fn host_entry_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `key` for `host:port` against the file; a missing file means every key is unknown.
pub fn check(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> std::io::Result<HostKeyStatus> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostKeyStatus::Unknown),
        Err(e) => return Err(e),
    };
    let name = host_entry_name(host, port).to_ascii_lowercase();
    let mut changed = None;
    let mut known = false;
    for (i, line) in text.lines().enumerate() {
        let Some(entry) = parse_line(line) else {
            continue;
        };
        if !hosts_match(entry.hosts, &name) {
            continue;
        }
        let Ok(recorded) = russh::keys::parse_public_key_base64(entry.key_b64) else {
            continue;
        };
        let same = recorded.key_data() == key.key_data();
        match entry.marker {
            Some("@revoked") if same => return Ok(HostKeyStatus::Revoked { line: i + 1 }),
            Some(_) => {}
            None if same => known = true,
            None if recorded.algorithm() == key.algorithm() && changed.is_none() => {
                changed = Some(i + 1)
            }
            None => {}
        }
    }
    Ok(match (known, changed) {
        (true, _) => HostKeyStatus::Known,
        (false, Some(line)) => HostKeyStatus::Changed { line },
        (false, None) => HostKeyStatus::Unknown,
    })
}

/// Key algorithms recorded for this host, so the client can prefer a key type it can verify.
pub fn recorded_algorithms(path: &Path, host: &str, port: u16) -> Vec<russh::keys::Algorithm> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let name = host_entry_name(host, port).to_ascii_lowercase();
    let mut algs = Vec::new();
    for entry in text.lines().filter_map(parse_line) {
        if entry.marker.is_none()
            && hosts_match(entry.hosts, &name)
            && let Ok(k) = russh::keys::parse_public_key_base64(entry.key_b64)
            && !algs.contains(&k.algorithm())
        {
            algs.push(k.algorithm());
        }
    }
    algs
}

/// Appends `key` for `host:port`, creating the file (0600) and its directory (0700) if needed.
pub fn learn(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut key = key.clone();
    key.set_comment("");
    let encoded = key
        .to_openssh()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let needs_newline = std::fs::read(path)
        .map(|b| b.last().is_some_and(|c| *c != b'\n'))
        .unwrap_or(false);
    let mut line = String::new();
    if needs_newline {
        line.push('\n');
    }
    line.push_str(&host_entry_name(host, port));
    line.push(' ');
    line.push_str(encoded.trim());
    line.push('\n');
    // One write of the whole line with O_APPEND: concurrent learners do not interleave.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(line.as_bytes())
}

struct Line<'a> {
    marker: Option<&'a str>,
    hosts: &'a str,
    key_b64: &'a str,
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let marker = if first.starts_with('@') {
        let m = first;
        first = fields.next()?;
        Some(m)
    } else {
        None
    };
    let _key_type = fields.next()?;
    let key_b64 = fields.next()?;
    Some(Line {
        marker,
        hosts: first,
        key_b64,
    })
}

fn hosts_match(hosts: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in hosts.split(',') {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            if hashed_matches(hashed, name) {
                matched = true;
            }
            continue;
        }
        let (pattern, negated) = match pattern.strip_prefix('!') {
            Some(p) => (p, true),
            None => (pattern, false),
        };
        if crate::ssh_config::glob(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn hashed(name: &str) -> String {
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(name.as_bytes());
        let hash = mac.finalize().into_bytes();
        format!("|1|{}|{}", BASE64.encode(&salt), BASE64.encode(&hash))
    }

    #[test]
    fn lookups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kh");
        let text = format!(
            "# comment\n\n[10.0.0.1]:2222 ssh-ed25519 {K1}\n\
             other,10.0.0.2 ssh-ed25519 {K2}\n\
             {} ssh-ed25519 {K1}\n\
             *.lan,!evil.lan ssh-ed25519 {K1}\n\
             @revoked rev ssh-ed25519 {K2}\n\
             @cert-authority *.lan ssh-ed25519 {K2}\n",
            hashed("[hashed]:2200")
        );
        std::fs::write(&path, text).unwrap();
        let c = |h: &str, p: u16, k: &str| check(&path, h, p, &key(k)).unwrap();
        assert_eq!(c("10.0.0.1", 2222, K1), HostKeyStatus::Known);
        assert_eq!(c("10.0.0.1", 2222, K2), HostKeyStatus::Changed { line: 3 });
        assert_eq!(c("10.0.0.1", 22, K1), HostKeyStatus::Unknown);
        assert_eq!(c("10.0.0.2", 22, K1), HostKeyStatus::Changed { line: 4 });
        assert_eq!(c("hashed", 2200, K1), HostKeyStatus::Known);
        assert_eq!(c("hashed", 2200, K2), HostKeyStatus::Changed { line: 5 });
        assert_eq!(c("a.LAN", 22, K1), HostKeyStatus::Known);
        assert_eq!(c("evil.lan", 22, K1), HostKeyStatus::Unknown);
        assert_eq!(c("rev", 22, K2), HostKeyStatus::Revoked { line: 7 });
        let missing = dir.path().join("none");
        assert_eq!(
            check(&missing, "x", 22, &key(K1)).unwrap(),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn learn_appends_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kh");
        learn(&path, "h", 2222, &key(K1)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"x ssh-ed25519 AAAA")
            .unwrap();
        learn(&path, "g", 22, &key(K2)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("[h]:2222 ssh-ed25519 {K1}\nx ssh-ed25519 AAAA\ng ssh-ed25519 {K2}\n")
        );
        assert_eq!(
            check(&path, "h", 2222, &key(K1)).unwrap(),
            HostKeyStatus::Known
        );
    }
}
