//! The embedded single-node etcd v3 server: the tonic services around the sans-IO cores
//! (`mvcc`, `auth`), the lease expiry task, and the in-process admin API.
//!
//! Concurrency: one std `Mutex` around the MVCC core and one `RwLock` around auth, each held
//! only for a synchronous section, never across an `.await`. Commits are broadcast to watch
//! streams while the core lock is held, so every watcher sees revisions in order without gaps;
//! a watcher that falls behind catches up from the core's event log.
//!
//! Shutdown: cancelling the token stops accepting, ends every watch and keepalive stream, lets
//! tonic drain the connections, and stops the expiry task; `ServerHandle::shutdown` awaits both.
//!
//! It must never listen beyond loopback unless configured to, and never log a password or token.

mod auth;
mod kv;
mod lease;
mod watch;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::auth::{Auth, Caller, ROOT};
use crate::client::keys;
use crate::error::{EtcdError, StoreError};
use crate::mvcc::{Commit, Mvcc};
use crate::pb::authpb::{Permission, permission};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};

/// The etcd API version we answer to (`Status.version`): the 3.4 subset, served by mgmt.
pub const API_VERSION: &str = "3.4.0";

/// How the embedded server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free one. Default `127.0.0.1:2379`.
    pub listen: SocketAddr,
    /// The member name shown by `etcdctl member list`.
    pub name: String,
    /// Automatic compaction: keep at least this many past revisions (`None`: keep all, which
    /// is etcd's default). Watches from, and ranges at, older revisions get `ErrCompacted`.
    pub retention: Option<u64>,
    /// How often a watcher created with `progress_notify` hears of a quiet stream (etcd: 10 min).
    pub progress_notify_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 2379)),
            name: "mgmt".to_string(),
            retention: Some(10_000),
            progress_notify_interval: Duration::from_secs(600),
        }
    }
}

/// State shared by every service of one server.
pub(crate) struct Shared {
    core: Mutex<Mvcc>,
    auth: RwLock<Auth>,
    commits: broadcast::Sender<Arc<Commit>>,
    /// Poked whenever a lease is granted or renewed, so the expiry task re-reads its deadline.
    lease_changed: Notify,
    cluster_id: u64,
    member_id: u64,
    name: String,
    client_url: String,
    /// Counts write requests: our "raft index".
    applied: AtomicU64,
    progress_interval: Duration,
    cancel: CancellationToken,
}

impl Shared {
    /// The core, even if a panic poisoned its lock: its state stays consistent because every
    /// request is checked before it is applied.
    pub(crate) fn core(&self) -> MutexGuard<'_, Mvcc> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn auth(&self) -> RwLockReadGuard<'_, Auth> {
        self.auth.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn auth_mut(&self) -> RwLockWriteGuard<'_, Auth> {
        self.auth.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn header(&self, rev: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: rev,
            raft_term: 2,
        })
    }

    /// Broadcasts a commit; called with the core lock held, so commits go out in order.
    pub(crate) fn publish(&self, commit: Option<Arc<Commit>>) {
        self.applied.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = commit {
            // No receiver is fine: nobody watches.
            let _ = self.commits.send(c);
        }
    }

    /// Who sent this request (gRPC metadata `token`, as etcd clients send it).
    pub(crate) fn caller<T>(&self, req: &tonic::Request<T>) -> Result<Caller, EtcdError> {
        let token = req.metadata().get("token").and_then(|v| v.to_str().ok());
        self.auth().caller(token)
    }
}

/// A running embedded server.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    expiry: JoinHandle<()>,
}

/// Starts the embedded etcd server; it runs until `cancel` fires (or `shutdown`).
pub async fn serve(
    cfg: ServerConfig,
    cancel: CancellationToken,
) -> Result<ServerHandle, StoreError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StoreError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StoreError::Bind {
        addr: cfg.listen,
        source,
    })?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "store listens beyond loopback, as configured");
    }
    let cancel = cancel.child_token();
    let (commits, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        core: Mutex::new(Mvcc::new(cfg.retention)),
        auth: RwLock::new(Auth::default()),
        commits,
        lease_changed: Notify::new(),
        cluster_id: rand::random::<u64>() >> 1,
        member_id: rand::random::<u64>() >> 1,
        name: cfg.name.clone(),
        client_url: format!("http://{addr}"),
        applied: AtomicU64::new(1),
        progress_interval: cfg.progress_notify_interval,
        cancel: cancel.clone(),
    });
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = tonic::transport::Server::builder()
        .add_service(KvServer::new(kv::KvService(shared.clone())))
        .add_service(WatchServer::new(watch::WatchService(shared.clone())))
        .add_service(LeaseServer::new(lease::LeaseService(shared.clone())))
        .add_service(AuthServer::new(auth::AuthService(shared.clone())))
        .add_service(MaintenanceServer::new(kv::MaintenanceService(
            shared.clone(),
        )))
        .add_service(ClusterServer::new(kv::ClusterService(shared.clone())));
    let stop = cancel.clone();
    let server = tokio::spawn(
        router.serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
    );
    let expiry = tokio::spawn(expire_leases(shared.clone()));
    tracing::info!(%addr, "embedded etcd server listening");
    Ok(ServerHandle {
        addr,
        shared,
        cancel,
        server,
        expiry,
    })
}

/// Revokes leases when their deadline passes. Sleeps until the earliest deadline, or until a
/// lease changes.
async fn expire_leases(shared: Arc<Shared>) {
    loop {
        let changed = shared.lease_changed.notified();
        tokio::pin!(changed);
        // Register interest before reading the deadline, so no change is missed in between.
        changed.as_mut().enable();
        let deadline = shared.core().next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = changed => continue,
            _ = sleep => {}
        }
        let mut core = shared.core();
        for commit in core.expire(Instant::now()) {
            shared.publish(Some(commit));
        }
    }
}

impl ServerHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, for clients.
    pub fn client_url(&self) -> String {
        self.shared.client_url.clone()
    }

    /// [`client_url`](Self::client_url) as the endpoint `Store::connect` takes.
    pub fn url(&self) -> crate::StoreUrl {
        crate::StoreUrl::from(self.local_addr())
    }

    /// Creates `user` with `password` and a role of the same name allowed to read and write
    /// every key starting with `prefix` (and nothing else). Works whether auth is on or not.
    pub fn add_prefix_user(
        &self,
        user: &str,
        password: &str,
        prefix: &str,
    ) -> Result<(), StoreError> {
        let admin = |op, source| StoreError::Admin {
            op,
            user: user.to_string(),
            source,
        };
        let mut auth = self.shared.auth_mut();
        auth.user_add(user, password)
            .map_err(|e| admin("user add", e))?;
        auth.role_add(user).map_err(|e| admin("role add", e))?;
        let perm = Permission {
            perm_type: permission::Type::Readwrite as i32,
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
        };
        auth.role_grant(user, perm)
            .map_err(|e| admin("role grant-permission", e))?;
        auth.user_grant_role(user, user)
            .map_err(|e| admin("user grant-role", e))?;
        Ok(())
    }

    /// Creates the user a mgmt host (named `host`, which is also the user name) connects as:
    /// it may read everything under `/_mgmt/` (to collect exports and follow convergence) but
    /// write only its own keys: `/_mgmt/exported/<host>/...`, `/_mgmt/converged/<host>` and
    /// `/_mgmt/hosts/<host>`. The remote mode creates one per host with a per-run secret.
    pub fn add_host_user(&self, host: &str, password: &str) -> Result<(), StoreError> {
        crate::client::check_segment("host name", host)?;
        let admin = |op, source| StoreError::Admin {
            op,
            user: host.to_string(),
            source,
        };
        if host == ROOT {
            return Err(admin("user add", EtcdError::InvalidAuthMgmt));
        }
        let perm = |perm_type: permission::Type, key: String, range_end: Vec<u8>| Permission {
            perm_type: perm_type as i32,
            key: key.into_bytes(),
            range_end,
        };
        let own = keys::exported_host(host);
        let own_end = prefix_end(own.as_bytes());
        let mut auth = self.shared.auth_mut();
        auth.user_add(host, password)
            .map_err(|e| admin("user add", e))?;
        auth.role_add(host).map_err(|e| admin("role add", e))?;
        let root_end = prefix_end(keys::ROOT.as_bytes());
        for p in [
            perm(permission::Type::Read, keys::ROOT.to_string(), root_end),
            perm(permission::Type::Readwrite, own, own_end),
            perm(
                permission::Type::Readwrite,
                keys::converged(host),
                Vec::new(),
            ),
            perm(permission::Type::Readwrite, keys::host(host), Vec::new()),
        ] {
            auth.role_grant(host, p)
                .map_err(|e| admin("role grant-permission", e))?;
        }
        auth.user_grant_role(host, host)
            .map_err(|e| admin("user grant-role", e))?;
        Ok(())
    }

    /// Creates the `root` user (all access) with `root_password`, and turns auth on: from then on
    /// every request needs a token.
    pub fn enable_auth(&self, root_password: &str) -> Result<(), StoreError> {
        let admin = |op, source| StoreError::Admin {
            op,
            user: ROOT.to_string(),
            source,
        };
        let mut auth = self.shared.auth_mut();
        auth.user_add(ROOT, root_password)
            .map_err(|e| admin("user add", e))?;
        auth.user_grant_role(ROOT, ROOT)
            .map_err(|e| admin("user grant-role", e))?;
        auth.enable().map_err(|e| admin("auth enable", e))
    }

    /// Stops the server and waits for its tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.wait().await;
    }

    /// Waits until the server stops (its cancellation token fired).
    pub async fn wait(self) {
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "embedded etcd server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "embedded etcd server task failed"),
        }
        self.cancel.cancel();
        if let Err(e) = self.expiry.await {
            tracing::warn!(error = %e, "lease expiry task failed");
        }
    }
}

pub(crate) use crate::conn::prefix_end;
