//! The embedded single-node etcd v3 server: the tonic services around the sans-IO cores
//! (`mvcc`, `auth`), the lease expiry task, and the in-process admin API.
//!
//! Concurrency: one std `Mutex` around the MVCC core and one `RwLock` around auth, each held
//! only for a synchronous section, never across an `.await`. Watch streams are told of each new
//! revision (a `watch` channel of the latest one, set while the core lock is held) and read the
//! commits themselves from the core's event log, one at a time as their clients take them: every
//! watcher sees revisions in order without gaps, and no commit is held for a slow reader beyond
//! the log, whose bytes are bounded (a reader that falls behind its compaction gets etcd's
//! compacted response).
//!
//! Limits (all in [`ServerConfig`]): requests are refused past etcd's `--max-request-bytes`
//! (gRPC frames past it plus etcd's 512 KiB allowance are refused by tonic as soon as their
//! length is read, before their body is buffered); writes past the total quota (etcd's
//! `--quota-backend-bytes`) or the caller's own [`Quota`] fail with etcd's quota error; history
//! past its byte budget is compacted; a non-root user may hold only so many leases, watch
//! streams and watchers at once (etcd's `too many requests` past them).
//!
//! Leases belong to the user that granted them: with auth on, a non-root user may renew,
//! revoke, read, list, and attach keys to its own leases only; any other lease is to it as one
//! that does not exist, so a host cannot keep another host's liveness key alive, or probe its
//! lease ids.
//!
//! Shutdown: cancelling the token stops accepting, ends every watch and keepalive stream, lets
//! tonic drain the connections, and stops the expiry task; `ServerHandle::shutdown` awaits both.
//!
//! It must never listen beyond loopback unless configured to, and never log a password or token.

mod auth;
mod http;
mod kv;
mod lease;
mod watch;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch as latest};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::auth::{Auth, Caller, ROOT};
use crate::client::keys;
use crate::error::{EtcdError, StoreError};
use crate::mvcc::{Commit, Limits, MemoryUsage, Mvcc, Quota};
use crate::pb::authpb::{Permission, permission};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};

/// The etcd API version we answer to (`Status.version`): the 3.4 subset, served by mgmt.
pub const API_VERSION: &str = "3.4.0";

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1536 * 1024;
/// The default total quota, our `--quota-backend-bytes` (etcd's is 2 GiB on disk; ours is
/// memory): 256 MiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 256 << 20;
/// The default history budget: 32 MiB.
pub const DEFAULT_HISTORY_BYTES: u64 = 32 << 20;
/// What etcd's gRPC server accepts beyond `--max-request-bytes` (its `grpcOverheadBytes`).
const GRPC_OVERHEAD_BYTES: u64 = 512 * 1024;
/// The default caps of a non-root user: a mgmt host holds one lease, and three or four watch
/// streams of one watcher each.
const DEFAULT_MAX_USER_LEASES: usize = 64;
const DEFAULT_MAX_USER_WATCH_STREAMS: usize = 32;
const DEFAULT_MAX_USER_WATCHERS: usize = 256;

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
    /// Automatic compaction by size: when history (superseded values, deletions, and the event
    /// log that watchers from past revisions replay) takes more than this many bytes, the
    /// oldest revisions are compacted, down to half of it. `None`: no byte budget.
    pub history_bytes: Option<u64>,
    /// etcd's `--max-request-bytes`: larger requests fail with `etcdserver: request is too
    /// large` (`InvalidArgument`); gRPC messages larger by more than 512 KiB are refused by the
    /// transport (`OutOfRange`) before they are read.
    pub max_request_bytes: u64,
    /// etcd's `--quota-backend-bytes`, over the memory the store accounts for (live values,
    /// history, leases): a put, txn or lease grant past it fails with `etcdserver: mvcc:
    /// database space exceeded` (`ResourceExhausted`), after history was compacted to make
    /// room. `None`: no total quota.
    pub quota_backend_bytes: Option<u64>,
    /// The quota of each user made by [`ServerHandle::add_host_user`] and
    /// [`ServerHandle::add_prefix_user`] ([`ServerHandle::set_quota`] changes one).
    pub host_quota: Quota,
    /// How often a watcher created with `progress_notify` hears of a quiet stream (etcd: 10 min).
    pub progress_notify_interval: Duration,
    /// The live leases each non-root user may hold (with auth on; root and auth off are not
    /// capped): one more grant fails with `etcdserver: too many requests`
    /// (`ResourceExhausted`) until one is revoked or expires. Default 64.
    pub max_user_leases: usize,
    /// The watch streams each non-root user may have open at once: one more `Watch` call fails
    /// with `etcdserver: too many requests` (`ResourceExhausted`). Default 32.
    pub max_user_watch_streams: usize,
    /// The watchers each non-root user may have at once, over all its streams: one more create
    /// is answered created and cancelled at once, its `cancel_reason` the error (as etcd
    /// answers a watch it refuses). Default 256.
    pub max_user_watchers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 2379)),
            name: "mgmt".to_string(),
            retention: Some(10_000),
            history_bytes: Some(DEFAULT_HISTORY_BYTES),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            quota_backend_bytes: Some(DEFAULT_QUOTA_BACKEND_BYTES),
            host_quota: Quota::HOST,
            progress_notify_interval: Duration::from_secs(600),
            max_user_leases: DEFAULT_MAX_USER_LEASES,
            max_user_watch_streams: DEFAULT_MAX_USER_WATCH_STREAMS,
            max_user_watchers: DEFAULT_MAX_USER_WATCHERS,
        }
    }
}

/// State shared by every service of one server.
pub(crate) struct Shared {
    core: Mutex<Mvcc>,
    auth: RwLock<Auth>,
    /// The latest revision, for watch streams to wake up on (they read commits from the log).
    latest: latest::Sender<i64>,
    /// Poked whenever a lease is granted or renewed, so the expiry task re-reads its deadline.
    lease_changed: Notify,
    cluster_id: u64,
    member_id: u64,
    name: String,
    client_url: String,
    /// Counts write requests: our "raft index".
    applied: AtomicU64,
    progress_interval: Duration,
    max_request_bytes: usize,
    host_quota: Quota,
    max_user_watch_streams: usize,
    max_user_watchers: usize,
    /// The watch streams and watchers each limited user has open (users with none are absent).
    watches: Mutex<HashMap<String, WatchCount>>,
    /// What `/metrics` counts.
    metrics: http::Metrics,
    cancel: CancellationToken,
}

/// One limited user's open watch streams and watchers.
#[derive(Debug, Default)]
struct WatchCount {
    streams: usize,
    watchers: usize,
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

    /// Tells watch streams of a commit; called with the core lock held, so revisions go out
    /// in order.
    pub(crate) fn publish(&self, commit: Option<Arc<Commit>>) {
        self.applied.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = commit {
            self.latest.send_replace(c.rev);
        }
    }

    /// etcd's `--max-request-bytes`, on the encoded request.
    pub(crate) fn check_size(&self, req: &impl prost::Message) -> Result<(), EtcdError> {
        if req.encoded_len() > self.max_request_bytes {
            Err(EtcdError::RequestTooLarge)
        } else {
            Ok(())
        }
    }

    /// Who sent this request (gRPC metadata `token`, as etcd clients send it).
    pub(crate) fn caller<T>(&self, req: &tonic::Request<T>) -> Result<Caller, EtcdError> {
        let token = req.metadata().get("token").and_then(|v| v.to_str().ok());
        self.auth().caller(token)
    }

    /// The user `caller` is when it is limited to its own leases and capped; `None`: auth off,
    /// or root.
    pub(crate) fn limited_user(&self, caller: &Caller) -> Option<String> {
        self.auth().limited_user(caller)
    }

    fn watches(&self) -> MutexGuard<'_, HashMap<String, WatchCount>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new watch stream of limited `user`, or refuses it past the cap.
    pub(crate) fn open_watch_stream(&self, user: &str) -> Result<(), EtcdError> {
        let mut watches = self.watches();
        if watches.get(user).map_or(0, |c| c.streams) >= self.max_user_watch_streams {
            return Err(EtcdError::TooManyRequests);
        }
        watches.entry(user.to_string()).or_default().streams += 1;
        Ok(())
    }

    /// Counts a new watcher of limited `user`, or refuses it past the cap.
    pub(crate) fn add_watcher(&self, user: &str) -> Result<(), EtcdError> {
        let mut watches = self.watches();
        match watches.get_mut(user) {
            Some(count) if count.watchers < self.max_user_watchers => {
                count.watchers += 1;
                Ok(())
            }
            _ => Err(EtcdError::TooManyRequests),
        }
    }

    /// Forgets `watchers` watchers of limited `user`, and one stream with `stream`.
    pub(crate) fn release_watches(&self, user: &str, stream: bool, watchers: usize) {
        let mut watches = self.watches();
        if let Some(count) = watches.get_mut(user) {
            count.watchers = count.watchers.saturating_sub(watchers);
            if stream {
                count.streams = count.streams.saturating_sub(1);
            }
            if count.streams == 0 && count.watchers == 0 {
                watches.remove(user);
            }
        }
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
    let (latest, _) = latest::channel(1);
    let limits = Limits {
        retention: cfg.retention,
        history_bytes: cfg.history_bytes,
        backend_bytes: cfg.quota_backend_bytes,
        user_leases: Some(cfg.max_user_leases),
    };
    let shared = Arc::new(Shared {
        core: Mutex::new(Mvcc::new(limits)),
        auth: RwLock::new(Auth::default()),
        latest,
        lease_changed: Notify::new(),
        cluster_id: rand::random::<u64>() >> 1,
        member_id: rand::random::<u64>() >> 1,
        name: cfg.name.clone(),
        client_url: format!("http://{addr}"),
        applied: AtomicU64::new(1),
        progress_interval: cfg.progress_notify_interval,
        max_request_bytes: usize::try_from(cfg.max_request_bytes).unwrap_or(usize::MAX),
        host_quota: cfg.host_quota,
        max_user_watch_streams: cfg.max_user_watch_streams,
        max_user_watchers: cfg.max_user_watchers,
        watches: Mutex::new(HashMap::new()),
        metrics: http::Metrics::default(),
        cancel: cancel.clone(),
    });
    // Like etcd's gRPC server: a message past this is refused once its length prefix is read.
    let frame = usize::try_from(cfg.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES))
        .unwrap_or(usize::MAX);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let grpc = tonic::service::Routes::new(
        KvServer::new(kv::KvService(shared.clone())).max_decoding_message_size(frame),
    )
    .add_service(
        WatchServer::new(watch::WatchService(shared.clone())).max_decoding_message_size(frame),
    )
    .add_service(
        LeaseServer::new(lease::LeaseService(shared.clone())).max_decoding_message_size(frame),
    )
    .add_service(
        AuthServer::new(auth::AuthService(shared.clone())).max_decoding_message_size(frame),
    )
    .add_service(
        MaintenanceServer::new(kv::MaintenanceService(shared.clone()))
            .max_decoding_message_size(frame),
    )
    .add_service(
        ClusterServer::new(kv::ClusterService(shared.clone())).max_decoding_message_size(frame),
    );
    // /health, /version and /metrics beside gRPC, over HTTP/1.1 too (curl, scrapers).
    let routes =
        tonic::service::Routes::from(http::routes(grpc.into_axum_router(), shared.clone()));
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes);
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

    /// The memory the store accounts for right now (live values, history, leases): bounded by
    /// the total quota, and for what one host user writes by its [`Quota`].
    pub fn memory(&self) -> MemoryUsage {
        self.shared.core().memory()
    }

    /// Changes the quota of `user` (one made by [`add_host_user`](Self::add_host_user) or
    /// [`add_prefix_user`](Self::add_prefix_user) has the configured `host_quota`; others have
    /// none): [`Quota::UNLIMITED`] lifts it. It applies from the next write on.
    pub fn set_quota(&self, user: &str, quota: Quota) -> Result<(), StoreError> {
        self.shared
            .auth_mut()
            .set_quota(user, quota)
            .map_err(|source| StoreError::Admin {
                op: "set quota",
                user: user.to_string(),
                source,
            })
    }

    /// Creates `user` with `password` and a role of the same name allowed to read and write
    /// every key starting with `prefix` (and nothing else), within the configured
    /// `host_quota`. Works whether auth is on or not.
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
        auth.set_quota(user, self.shared.host_quota)
            .map_err(|e| admin("set quota", e))?;
        Ok(())
    }

    /// Creates the user a mgmt host (named `host`, which is also the user name) connects as:
    /// it may read everything under `/_mgmt/` (to collect exports and follow convergence) but
    /// write only its own keys: `/_mgmt/exported/<host>/...`, `/_mgmt/converged/<host>` and
    /// `/_mgmt/hosts/<host>`, within the configured `host_quota` (over all three together). The
    /// remote mode creates one per host with a per-run secret.
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
        auth.set_quota(host, self.shared.host_quota)
            .map_err(|e| admin("set quota", e))?;
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
