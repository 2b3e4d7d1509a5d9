//! A small ssh_config(5) reader: the keywords remote execution needs, with OpenSSH's rules
//! (first value wins, IdentityFile accumulates, `Host` patterns with `*`, `?` and `!`).
//!
//! We parse ourselves instead of using russh-config because that crate rejects the global
//! options many real configs start with and does not accept `Key=Value`. Unknown keywords are
//! ignored (OpenSSH has hundreds); `Match` blocks are skipped. This module never does IO
//! beyond reading the one file it is given, and knows `~` only as it is told
//! ([`SshConfig::with_home`]).

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read ssh config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// How unknown host keys are treated (StrictHostKeyChecking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeys {
    /// `yes` / `ask`: unknown keys are refused.
    Yes,
    /// `accept-new`, `no`, `off`: unknown keys are learned. A changed key is still refused.
    AcceptNew,
}

/// The settings that apply to one host after matching every `Host` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostParams {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    /// Raw ProxyJump value (`none` is already turned into `None`).
    pub proxy_jump: Option<String>,
    pub user_known_hosts_file: Option<PathBuf>,
    pub strict_host_key_checking: Option<StrictHostKeys>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// (pattern, negated); empty for a `Match` block, which never matches.
    patterns: Vec<(String, bool)>,
    options: Vec<(String, String, usize)>,
}

/// A parsed config file.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    path: PathBuf,
    entries: Vec<Entry>,
    /// What `~/` and `%d/` in paths stand for; without it they stay as written.
    home: Option<PathBuf>,
}

impl SshConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut entries = vec![Entry {
            patterns: vec![("*".to_string(), false)],
            options: Vec::new(),
        }];
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let split = line
                .find(|c: char| c.is_whitespace() || c == '=')
                .unwrap_or(line.len());
            let key = line[..split].to_ascii_lowercase();
            let mut value = line[split..].trim_start();
            if let Some(v) = value.strip_prefix('=') {
                value = v.trim_start();
            }
            let value = value.trim_end();
            let syntax = |message: String| ConfigError::Syntax {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            match key.as_str() {
                "host" => {
                    let patterns: Vec<(String, bool)> = value
                        .split_whitespace()
                        .map(|p| match p.strip_prefix('!') {
                            Some(p) => (p.to_ascii_lowercase(), true),
                            None => (p.to_ascii_lowercase(), false),
                        })
                        .collect();
                    if patterns.is_empty() {
                        return Err(syntax("Host needs at least one pattern".to_string()));
                    }
                    entries.push(Entry {
                        patterns,
                        options: Vec::new(),
                    });
                }
                "match" => entries.push(Entry {
                    patterns: Vec::new(),
                    options: Vec::new(),
                }),
                _ => {
                    if value.is_empty() {
                        return Err(syntax(format!("{key} needs a value")));
                    }
                    let value = unquote(value).to_string();
                    if key == "port" && !matches!(value.parse::<u16>(), Ok(p) if p > 0) {
                        return Err(syntax(format!("invalid port {value:?}")));
                    }
                    if let Some(e) = entries.last_mut() {
                        e.options.push((key, value, i + 1));
                    }
                }
            }
        }
        Ok(SshConfig {
            path: path.to_path_buf(),
            entries,
            home: None,
        })
    }

    /// The home directory `~/` (and `%d/`) in paths expand to.
    pub fn with_home(mut self, home: Option<PathBuf>) -> Self {
        self.home = home;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parameters for `host` as typed by the user (an alias or a real name).
    pub fn resolve(&self, host: &str) -> HostParams {
        let host_lc = host.to_ascii_lowercase();
        let mut p = HostParams::default();
        for e in self.entries.iter().filter(|e| entry_matches(e, &host_lc)) {
            for (key, value, _line) in &e.options {
                match key.as_str() {
                    "hostname" => set_once(&mut p.hostname, || value.replace("%h", host)),
                    "user" => set_once(&mut p.user, || value.clone()),
                    "port" => set_once(&mut p.port, || value.parse().unwrap_or(22)),
                    "identityfile" => p.identity_files.push(self.expand_tilde(value)),
                    "proxyjump" if p.proxy_jump.is_none() => {
                        p.proxy_jump = Some(value.clone());
                    }
                    "userknownhostsfile" => set_once(&mut p.user_known_hosts_file, || {
                        // Several files may be listed; the first is the one we read and learn to.
                        self.expand_tilde(value.split_whitespace().next().unwrap_or(value))
                    }),
                    "stricthostkeychecking" => set_once(&mut p.strict_host_key_checking, || {
                        match value.to_ascii_lowercase().as_str() {
                            "accept-new" | "no" | "off" => StrictHostKeys::AcceptNew,
                            _ => StrictHostKeys::Yes,
                        }
                    }),
                    _ => {}
                }
            }
        }
        if p.proxy_jump
            .as_deref()
            .is_some_and(|j| j.eq_ignore_ascii_case("none"))
        {
            p.proxy_jump = None;
        }
        p
    }

    fn expand_tilde(&self, p: &str) -> PathBuf {
        let rest = p.strip_prefix("~/").or_else(|| p.strip_prefix("%d/"));
        match (rest, &self.home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(p),
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: impl FnOnce() -> T) {
    if slot.is_none() {
        *slot = Some(value());
    }
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn entry_matches(e: &Entry, host: &str) -> bool {
    let mut matched = false;
    for (pattern, negated) in &e.patterns {
        if glob(pattern.as_bytes(), host.as_bytes()) {
            if *negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `*` and `?` globbing as used by ssh_config and known_hosts patterns.
pub(crate) fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> SshConfig {
        SshConfig::parse(Path::new("cfg"), text).unwrap()
    }

    #[test]
    fn first_value_wins_and_identities_accumulate() {
        let c = cfg("User global\n\
             Host h1 web*\n  HostName 10.0.0.1\n  Port=2222\n  IdentityFile /k1\n\
             Host *\n  User other\n  Port 22\n  IdentityFile \"/k2\"\n  ProxyJump none\n");
        let p = c.resolve("h1");
        assert_eq!(p.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(p.user.as_deref(), Some("global"));
        assert_eq!(p.port, Some(2222));
        assert_eq!(
            p.identity_files,
            vec![PathBuf::from("/k1"), PathBuf::from("/k2")]
        );
        assert_eq!(p.proxy_jump, None);
        assert_eq!(c.resolve("webby").hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(c.resolve("other").hostname, None);
    }

    #[test]
    fn negation_and_wildcards() {
        let c =
            cfg("Host *.lan !bad.lan\n  User lan\nHost h?\n  StrictHostKeyChecking accept-new\n");
        assert_eq!(c.resolve("a.LAN").user.as_deref(), Some("lan"));
        assert_eq!(c.resolve("bad.lan").user, None);
        assert_eq!(
            c.resolve("h2").strict_host_key_checking,
            Some(StrictHostKeys::AcceptNew)
        );
        assert_eq!(c.resolve("h22").strict_host_key_checking, None);
    }

    #[test]
    fn tilde_is_the_home_it_is_given() {
        let text = "Host a\n  IdentityFile ~/.ssh/k\n  UserKnownHostsFile %d/kh other\n";
        let c = cfg(text).with_home(Some(PathBuf::from("/home/u")));
        let p = c.resolve("a");
        assert_eq!(p.identity_files, vec![PathBuf::from("/home/u/.ssh/k")]);
        assert_eq!(p.user_known_hosts_file, Some(PathBuf::from("/home/u/kh")));
        let p = cfg(text).resolve("a");
        assert_eq!(p.identity_files, vec![PathBuf::from("~/.ssh/k")]);
    }

    #[test]
    fn match_blocks_are_skipped() {
        let c = cfg("Match user x\n  User m\nHost a\n  User a\n");
        assert_eq!(c.resolve("a").user.as_deref(), Some("a"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = SshConfig::parse(Path::new("f"), "Host a\n  Port many\n").unwrap_err();
        assert_eq!(e.to_string(), "f:2: invalid port \"many\"");
        let e = SshConfig::parse(Path::new("f"), "Host\n").unwrap_err();
        assert_eq!(e.to_string(), "f:1: Host needs at least one pattern");
    }
}
