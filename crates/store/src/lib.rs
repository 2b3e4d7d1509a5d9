//! mgmt's store: the etcd v3 API, both sides of it.
//!
//! - [`serve`] starts the embedded single-node server (`mgmt run`'s default) that speaks the
//!   etcd v3 gRPC subset mgmt uses, well enough for the real `etcdctl` and any etcd v3 gRPC
//!   client: KV (range, put, delete, txn, compact), Watch, Lease, Auth, Maintenance `Status`,
//!   Cluster `MemberList`. Its state lives in memory for one run (no persistence: a restarted
//!   `mgmt run` starts from an empty store, and every host re-publishes).
//! - [`Store`] is the one client path for everything that crosses hosts, against our server or a
//!   real etcd cluster alike: exported resources, convergence flags, host liveness.
//!
//! Layout: `mvcc` and `auth` are sans-IO cores (no sockets, no clock, no tasks); `server` is the
//! tonic layer around them; `conn` is one connection on the generated gRPC clients (endpoints,
//! auth token), and `client` is mgmt's key layout on top of it. Both sides use the same code,
//! generated at build time from the vendored `.proto` files by pure Rust (no `protoc`). This
//! crate is the only one that knows protobuf: apart from [`pb`] (for tests and tools), its
//! public API speaks plain Rust and `serde_json` values.

mod auth;
mod client;
mod conn;
mod error;
mod mvcc;
mod server;
mod url;

/// The etcd v3 API's messages and gRPC clients and servers, generated at build time from the
/// vendored `.proto` files (see `proto/README.md`). Public for tests, benchmarks and tools that
/// speak the raw API; mgmt's own code goes through [`Store`].
#[allow(clippy::all, missing_docs, dead_code)]
pub mod pb {
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

pub use client::{ExportedResource, HostLease, SnapshotWatch, Store, WarnInvalid, keys};
pub use conn::{ConnectError, prefix_end};
pub use error::{EtcdError, StoreError};
pub use mvcc::{MemoryUsage, Quota};
pub use server::{
    API_VERSION, DEFAULT_HISTORY_BYTES, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_QUOTA_BACKEND_BYTES,
    ServerConfig, ServerHandle, serve,
};
pub use url::{StoreUrl, UrlError};
