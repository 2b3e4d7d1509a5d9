//! The resource kinds this binary implements (`file`, `exec`, `noop`, `msg`, `timer`) and the
//! registry that builds them from their YAML parameters.
//!
//! Each kind lives in its own module and sees the machine only through its own parameters and
//! the contexts of the `resource` contract. This crate must never depend on the engine, and a
//! kind's `build` must never do IO.

pub mod exec;
pub mod file;
mod ident;
mod inotify;
pub mod msg;
pub mod noop;
mod params;
pub mod pkg;
mod shellwords;
pub mod svc;
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
    "cron",
    "deploy:tar",
    "dhcp:host",
    "dhcp:range",
    "dhcp:server",
    "docker:container",
    "docker:image",
    "firewalld",
    "group",
    "gzip",
    "hetzner:vm",
    "hostname",
    "http:server",
    "http:server:file",
    "http:server:flag",
    "http:server:ui",
    "kv",
    "mount",
    "net",
    "nspawn",
    "password",
    "pippet",
    "print",
    "tar",
    "test",
    "tftp:file",
    "tftp:server",
    "user",
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
    registry.register(timer::KIND);
    registry.register(pkg::KIND);
    registry.register(svc::KIND);
    for kind in UNIMPLEMENTED {
        registry.register_unimplemented(kind);
    }
    registry
}
