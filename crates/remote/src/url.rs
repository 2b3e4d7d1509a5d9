//! `RemoteUrl`: where a remote graph runs, parsed once from the graph's `remote:` field.
//!
//! Accepted forms: `ssh://user[:password]@host[:port]` (IPv6 literals in brackets) and a bare
//! ssh_config alias `host` / `user@host`. A password is kept but never printed: `Debug` and
//! `Display` redact it. This module must never log or format the password.

use std::fmt;

use thiserror::Error;

/// Why a `remote:` value is not a usable address.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UrlError {
    #[error("remote address is empty")]
    Empty,
    #[error("unsupported scheme {scheme:?} in remote address (only ssh:// is supported)")]
    Scheme { scheme: String },
    #[error("remote address {input:?} has no host")]
    NoHost { input: String },
    #[error("remote address {input:?} has an empty user name")]
    EmptyUser { input: String },
    #[error("remote address {input:?} has an invalid port {port:?} (expected 1-65535)")]
    Port { input: String, port: String },
    #[error("remote address {input:?}: unterminated IPv6 literal (missing ']')")]
    Ipv6 { input: String },
    #[error(
        "remote address {input:?}: a bare host cannot carry a port or password, write ssh://user@host:port"
    )]
    BareWithPort { input: String },
    #[error(
        "remote address {input:?} contains a path {path:?}; only ssh://user@host:port is allowed"
    )]
    Path { input: String, path: String },
    #[error("remote address {input:?}: invalid percent-encoding")]
    Percent { input: String },
    #[error("remote address {input:?}: host contains invalid character {ch:?}")]
    HostChar { input: String, ch: char },
}

/// A parsed remote address. The password, if any, never leaves this type in a printable form.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    /// Written as `host` / `user@host` (an ssh_config alias), not as `ssh://...`.
    alias: bool,
}

impl RemoteUrl {
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let s = raw.trim();
        // Errors quote the address: never with its password.
        let shown = redacted(raw);
        let input = shown.as_str();
        if s.is_empty() {
            return Err(UrlError::Empty);
        }
        if let Some(rest) = s.strip_prefix("ssh://") {
            return parse_url(input, rest);
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(UrlError::Scheme {
                scheme: scheme.to_string(),
            });
        }
        let (user, host) = match s.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, s),
        };
        if host.contains(':') || user.is_some_and(|u| u.contains(':')) {
            return Err(UrlError::BareWithPort {
                input: input.to_string(),
            });
        }
        let user = match user {
            Some("") => {
                return Err(UrlError::EmptyUser {
                    input: input.to_string(),
                });
            }
            u => u.map(str::to_string),
        };
        check_host(input, host)?;
        Ok(RemoteUrl {
            user,
            password: None,
            host: host.to_string(),
            port: None,
            alias: true,
        })
    }

    /// The user name given in the address, if any (ssh_config or the local user fill it in).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The host as written: a name, an IP literal (without brackets) or an ssh_config alias.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// True when the address embeds a password, which callers should warn about.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

/// `input` as an error may quote it: a password (after `user:`, before the last `@`) is `***`.
fn redacted(input: &str) -> String {
    let (scheme, rest) = match input.trim_start().strip_prefix("ssh://") {
        Some(rest) => ("ssh://", rest),
        None => ("", input),
    };
    match rest
        .rfind('@')
        .map(|at| (rest[..at].split_once(':'), &rest[at..]))
    {
        Some((Some((user, _)), host)) => format!("{scheme}{user}:***{host}"),
        _ => input.to_string(),
    }
}

/// `input` is the redacted address, for errors only; `rest` is the real text after `ssh://`.
fn parse_url(input: &str, rest: &str) -> Result<RemoteUrl, UrlError> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (userinfo, hostport) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    if let Some(i) = hostport.find('/') {
        return Err(UrlError::Path {
            input: input.to_string(),
            path: hostport[i..].to_string(),
        });
    }
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if u.is_empty() {
                return Err(UrlError::EmptyUser {
                    input: input.to_string(),
                });
            }
            let u = percent_decode(input, u)?;
            let p = p.map(|p| percent_decode(input, p)).transpose()?;
            (Some(u), p)
        }
    };
    let (host, port) = split_host_port(input, hostport)?;
    check_host(input, host)?;
    Ok(RemoteUrl {
        user,
        password,
        host: host.to_string(),
        port,
        alias: false,
    })
}

/// Splits `host[:port]` or `[v6][:port]`; used by ProxyJump hops too.
pub(crate) fn split_host_port<'a>(
    input: &str,
    hostport: &'a str,
) -> Result<(&'a str, Option<u16>), UrlError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(UrlError::Ipv6 {
                input: input.to_string(),
            });
        };
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => {
                    return Err(UrlError::Port {
                        input: input.to_string(),
                        port: p.to_string(),
                    });
                }
            },
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(UrlError::Port {
                    input: input.to_string(),
                    port: p.to_string(),
                });
            }
        },
    };
    Ok((host, port))
}

fn check_host(input: &str, host: &str) -> Result<(), UrlError> {
    if host.is_empty() {
        return Err(UrlError::NoHost {
            input: input.to_string(),
        });
    }
    if let Some(ch) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '\'' | '"'))
    {
        return Err(UrlError::HostChar {
            input: input.to_string(),
            ch,
        });
    }
    Ok(())
}

fn percent_decode(input: &str, s: &str) -> Result<String, UrlError> {
    let bad = || UrlError::Percent {
        input: input.to_string(),
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

impl std::str::FromStr for RemoteUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RemoteUrl::parse(s)
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.alias {
            f.write_str("ssh://")?;
        }
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if self.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let u = RemoteUrl::parse("ssh://root@192.168.121.201:22").unwrap();
        assert_eq!(u.user(), Some("root"));
        assert_eq!(u.host(), "192.168.121.201");
        assert_eq!(u.port(), Some(22));
        assert!(!u.has_password());
        assert_eq!(u.to_string(), "ssh://root@192.168.121.201:22");
    }

    #[test]
    fn password_is_redacted() {
        let u = RemoteUrl::parse("ssh://bob:s3cr%40t@h:2222").unwrap();
        assert_eq!(u.password(), Some("s3cr@t"));
        assert_eq!(u.to_string(), "ssh://bob:***@h:2222");
        assert_eq!(format!("{u:?}"), "RemoteUrl(ssh://bob:***@h:2222)");
        assert!(!format!("{u:?}{u}").contains("s3cr"));
    }

    #[test]
    fn ipv6() {
        let u = RemoteUrl::parse("ssh://[::1]:2200").unwrap();
        assert_eq!(u.host(), "::1");
        assert_eq!(u.port(), Some(2200));
        assert_eq!(u.user(), None);
        assert_eq!(u.to_string(), "ssh://[::1]:2200");
        let u = RemoteUrl::parse("ssh://a@[fe80::1]").unwrap();
        assert_eq!(u.host(), "fe80::1");
        assert_eq!(u.port(), None);
    }

    #[test]
    fn aliases() {
        let u = RemoteUrl::parse("h1").unwrap();
        assert_eq!((u.user(), u.host(), u.port()), (None, "h1", None));
        let u = RemoteUrl::parse("me@h1").unwrap();
        assert_eq!((u.user(), u.host()), (Some("me"), "h1"));
        assert_eq!(u.to_string(), "me@h1");
    }

    #[test]
    fn errors() {
        let e = |s: &str| RemoteUrl::parse(s).unwrap_err().to_string();
        assert_eq!(e(""), "remote address is empty");
        assert_eq!(
            e("http://x"),
            "unsupported scheme \"http\" in remote address (only ssh:// is supported)"
        );
        assert_eq!(
            e("ssh://root@"),
            "remote address \"ssh://root@\" has no host"
        );
        assert_eq!(
            e("ssh://h:99999"),
            "remote address \"ssh://h:99999\" has an invalid port \"99999\" (expected 1-65535)"
        );
        assert_eq!(
            e("ssh://h:0"),
            "remote address \"ssh://h:0\" has an invalid port \"0\" (expected 1-65535)"
        );
        assert!(e("ssh://[::1").contains("missing ']'"));
        assert!(e("h1:22").contains("write ssh://user@host:port"));
        assert!(e("ssh://h/tmp").contains("contains a path \"/tmp\""));
        assert!(e("ssh://@h").contains("empty user name"));
        assert!(e("ssh://u:%zz@h").contains("percent-encoding"));
    }

    #[test]
    fn errors_never_quote_the_password() {
        let e = |s: &str| RemoteUrl::parse(s).unwrap_err().to_string();
        for bad in [
            "ssh://bob:pw1@h:0",
            "ssh://bob:pw1@h/srv",
            "ssh://bob:pw1%zz@h",
            "ssh://bob:pw1@",
            "bob:pw1@h",
            " ssh://bob:pw1@h:x",
        ] {
            let msg = e(bad);
            assert!(!msg.contains("pw1"), "{bad}: {msg}");
            assert!(msg.contains("bob:***@"), "{bad}: {msg}");
        }
    }
}
