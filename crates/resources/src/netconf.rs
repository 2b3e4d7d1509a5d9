//! The kernel's change signal for the network sysctls that have one: an `RTM_NEWNETCONF`
//! message on the rtnetlink groups `RTNLGRP_IPV4_NETCONF` and `RTNLGRP_IPV6_NETCONF`.
//!
//! The kernel sends one when a write *changes* `forwarding` (also through `net.ipv4.ip_forward`),
//! `rp_filter`, `proxy_arp`, `bc_forwarding` or `ignore_routes_with_linkdown` of an IPv4
//! device configuration (`net.ipv4.conf.<dev|all|default>.*`), and `forwarding`, `proxy_ndp`
//! or `ignore_routes_with_linkdown` of an IPv6 one, in the network namespace of the socket
//! (the one whose `/proc/sys/net` this process sees). Subscribing needs no privilege. Every
//! message (or a lost one: the socket's buffer overran) is one wake: the caller re-reads its
//! value, so a message about another key costs one compare.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;
use resource::ResourceError;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Whether a change of the key (its components below `/proc/sys`) is announced by the kernel.
pub(crate) fn signalled(key: &[String]) -> bool {
    let k: Vec<&str> = key.iter().map(String::as_str).collect();
    match k.as_slice() {
        ["net", "ipv4", "ip_forward"] => true,
        ["net", "ipv4", "conf", _, leaf] => matches!(
            *leaf,
            "forwarding"
                | "rp_filter"
                | "proxy_arp"
                | "bc_forwarding"
                | "ignore_routes_with_linkdown"
        ),
        ["net", "ipv6", "conf", _, leaf] => {
            matches!(
                *leaf,
                "forwarding" | "proxy_ndp" | "ignore_routes_with_linkdown"
            )
        }
        _ => false,
    }
}

/// A subscription to the netconf groups of this network namespace.
pub(crate) struct Netconf {
    fd: AsyncFd<OwnedFd>,
}

fn failed(what: &str) -> impl FnOnce(io::Error) -> ResourceError + '_ {
    move |e| ResourceError::failed(format!("{what} (rtnetlink netconf): {e}"))
}

impl Netconf {
    /// Subscribes now: no change after this returns is missed.
    pub(crate) fn subscribe() -> Result<Netconf, ResourceError> {
        // SAFETY: plain system calls; the descriptor is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(failed("opening a socket")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups =
            (1 << (libc::RTNLGRP_IPV4_NETCONF - 1)) | (1 << (libc::RTNLGRP_IPV6_NETCONF - 1));
        // SAFETY: a valid address of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(failed("joining the netconf groups")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: the AsyncFd owns the descriptor (an OwnedFd) for its whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| ResourceError::failed(format!("registering the rtnetlink socket: {e}")))?;
        Ok(Netconf { fd })
    }

    /// Returns after the next message (all that arrived are read: one wake for a burst).
    pub(crate) async fn changed(&self) -> Result<(), ResourceError> {
        let mut buf = [0u8; 8192];
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(failed("waiting on the socket"))?;
            let mut got = false;
            loop {
                // SAFETY: reads into a buffer of the length given.
                let n = unsafe {
                    libc::recv(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    got = true;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Messages were dropped: something changed, re-read.
                    Some(libc::ENOBUFS) => got = true,
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    _ => return Err(failed("reading the socket")(e)),
                }
            }
            if got {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Vec<String> {
        k.split('.').map(str::to_string).collect()
    }

    #[test]
    fn the_signalled_keys_are_those_the_kernel_announces() {
        for k in [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.forwarding",
            "net.ipv4.conf.default.rp_filter",
            "net.ipv4.conf.eth0.proxy_arp",
            "net.ipv6.conf.all.forwarding",
            "net.ipv6.conf.lo.proxy_ndp",
        ] {
            assert!(signalled(&key(k)), "{k}");
        }
        for k in [
            "net.core.somaxconn",
            "net.ipv4.conf.all.accept_redirects",
            "net.ipv6.conf.all.disable_ipv6",
            "kernel.hostname",
            "net.ipv4.conf.forwarding",
        ] {
            assert!(!signalled(&key(k)), "{k}");
        }
    }

    /// A real `rp_filter` write heard through the socket, in a network namespace of one
    /// thread (this machine's own settings are never touched).
    #[test]
    fn a_change_of_rp_filter_is_announced_and_no_change_is_quiet() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for a private network namespace");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: a plain syscall; it moves this thread only.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let path = "/proc/sys/net/ipv4/conf/lo/rp_filter";
                let n = Netconf::subscribe().unwrap();
                let short = std::time::Duration::from_millis(100);
                // Writing the value it already has is no change: no message.
                let now = std::fs::read_to_string(path).unwrap();
                std::fs::write(path, &now).unwrap();
                let quiet = tokio::time::timeout(short, n.changed()).await;
                assert!(quiet.is_err(), "a message without a change");
                let other = if now.trim() == "2" { "1" } else { "2" };
                std::fs::write(path, other).unwrap();
                let heard = tokio::time::timeout(std::time::Duration::from_secs(10), n.changed());
                heard
                    .await
                    .expect("RTM_NEWNETCONF after the change")
                    .unwrap();
                let quiet = tokio::time::timeout(short, n.changed()).await;
                assert!(quiet.is_err(), "one change, one wake");
            });
        })
        .join()
        .unwrap();
    }
}
