//! A store endpoint, parsed once: `http://host:port` (or `host:port`), as etcd's client URLs
//! are written. TLS endpoints are refused with a reason (mgmt reaches a remote store through
//! an SSH tunnel or over loopback).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An etcd v3 endpoint: a host (a name or an IP address) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreUrl {
    host: String,
    port: u16,
}

/// Why a text is not a store URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store url {url:?}: {why}")]
pub struct UrlError {
    pub url: String,
    pub why: &'static str,
}

impl StoreUrl {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address, when the host is an IP address (what a server can listen on).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

impl From<SocketAddr> for StoreUrl {
    fn from(a: SocketAddr) -> StoreUrl {
        StoreUrl {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<StoreUrl, UrlError> {
        let err = |why| UrlError {
            url: text.to_string(),
            why,
        };
        let s = text.trim();
        let rest = match s.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https" | "unixs", _)) => {
                return Err(err(
                    "TLS endpoints are not supported: reach the store over an SSH tunnel or loopback with http://",
                ));
            }
            Some(_) => return Err(err("the scheme must be http://")),
            None => s,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err(err("expected host:port, without a path, user or query"));
        }
        let (host, port) = match rest.strip_prefix('[') {
            // [v6]:port
            Some(v6) => {
                let (h, p) = v6
                    .split_once("]:")
                    .ok_or_else(|| err("expected [address]:port"))?;
                h.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| err("not an IPv6 address in brackets"))?;
                (h, p)
            }
            None => rest
                .rsplit_once(':')
                .ok_or_else(|| err("a port is needed"))?,
        };
        if host.is_empty() || host.contains(':') && !rest.starts_with('[') {
            return Err(err("expected host:port (an IPv6 address goes in brackets)"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("the host contains a space or a control character"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| err("the port must be a number up to 65535"))?;
        Ok(StoreUrl {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_once_and_printed_as_etcd_writes_them() {
        for (text, shown) in [
            ("http://127.0.0.1:2379", "http://127.0.0.1:2379"),
            ("127.0.0.1:2379", "http://127.0.0.1:2379"),
            ("http://etcd1:2379/", "http://etcd1:2379"),
            ("http://[::1]:0", "http://[::1]:0"),
        ] {
            let u: StoreUrl = text.parse().unwrap();
            assert_eq!(u.to_string(), shown);
        }
        let u: StoreUrl = "http://127.0.0.1:0".parse().unwrap();
        assert_eq!(u.socket_addr(), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!("etcd1:1".parse::<StoreUrl>().unwrap().socket_addr(), None);
    }

    #[test]
    fn bad_urls_say_why() {
        for bad in [
            "https://etcd:2379",
            "unix://x",
            "http://etcd",
            "http://etcd:99999",
            "http://etcd:2379/path",
            "http://u@etcd:2379",
            "::1:2379",
            "",
            "http://:2379",
        ] {
            let e = bad.parse::<StoreUrl>().unwrap_err();
            assert_eq!(e.url, bad);
        }
        assert!(
            "https://e:1"
                .parse::<StoreUrl>()
                .unwrap_err()
                .to_string()
                .contains("TLS")
        );
    }
}
