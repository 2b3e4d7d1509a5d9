//! The resource kinds this binary implements (`file`, `exec`, `noop`, `msg`, `timer`, `pkg`,
//! `svc`, `user`, `group`, `mount`, `line`, `authorized_key`, `sysctl`, `hostname`, `cron`)
//! and the registry that builds them from their YAML parameters.
//!
//! Each kind lives in its own module and sees the machine only through its own parameters and
//! the contexts of the `resource` contract. This crate must never depend on the engine, and a
//! kind's `build` must never do IO.

pub mod account;
pub mod authorized_key;
pub mod cron;
pub mod exec;
pub mod file;
pub mod hostname;
mod ident;
mod inotify;
pub mod line;
pub mod mount;
pub mod msg;
mod netconf;
pub mod noop;
mod params;
pub mod pkg;
mod shellwords;
pub mod svc;
pub mod sysctl;
pub mod timer;
pub mod watch;

use resource::Registry;

/// mgmt's kinds that graphs may name but this binary does not implement yet: using one is a
/// clear "not implemented yet" error rather than "unknown kind".
pub const UNIMPLEMENTED: &[&str] = &[
    "augeas",
    "aws:ec2",
    "bmc:power",
    "config:etcd",
    "consul:kv",
    "deploy:tar",
    "dhcp:host",
    "dhcp:range",
    "dhcp:server",
    "docker:container",
    "docker:image",
    "firewalld",
    "gzip",
    "hetzner:vm",
    "http:server",
    "http:server:file",
    "http:server:flag",
    "http:server:ui",
    "kv",
    "net",
    "nspawn",
    "password",
    "pippet",
    "print",
    "tar",
    "test",
    "tftp:file",
    "tftp:server",
    "value",
    "virt",
    "virt:builder",
];

/// Every implemented kind, plus mgmt's other kinds registered as unimplemented.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(file::KIND);
    registry.register(exec::KIND);
    registry.register(noop::KIND);
    registry.register(msg::KIND);
    registry.register(mount::KIND);
    registry.register(timer::KIND);
    registry.register(pkg::KIND);
    registry.register(svc::KIND);
    registry.register(line::KIND);
    registry.register(authorized_key::KIND);
    registry.register(account::user::KIND);
    registry.register(account::group::KIND);
    registry.register(sysctl::KIND);
    registry.register(hostname::KIND);
    registry.register(cron::KIND);
    for kind in UNIMPLEMENTED {
        registry.register_unimplemented(kind);
    }
    registry
}
