//! Error types: `StoreError` is what callers of this crate see; `EtcdError` is an etcd v3 API
//! error with etcd's exact gRPC code and message (clients such as etcdctl match on the text).
//! Neither ever carries a password or token.

use std::net::SocketAddr;

/// An error of the store: the embedded server or the client path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to the store at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        source: crate::conn::ConnectError,
    },
    #[error("store request {op} on {key:?} failed: {}", status_text(.source))]
    Request {
        op: &'static str,
        key: String,
        source: tonic::Status,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cannot encode the exported resource {kind}[{name}]: {source}")]
    Encode {
        kind: String,
        name: String,
        source: serde_json::Error,
    },
    #[error("the watch on {prefix:?} ended: {reason}")]
    WatchEnded { prefix: String, reason: String },
    #[error("store admin operation {op} for user {user:?} failed: {source}")]
    Admin {
        op: &'static str,
        user: String,
        source: EtcdError,
    },
}

/// A gRPC status as one line: the server's message, or the code when it sent none.
pub(crate) fn status_text(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{} ({:?})", s.message(), s.code())
    }
}

/// An etcd v3 API error, with etcd's own message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A request larger than `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A write beyond a quota: the server's total (`--quota-backend-bytes`) or the caller's own
    /// keys or bytes (a host user's [`Quota`](crate::Quota)).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A non-root user past one of its caps: live leases, watch streams, or watchers (etcd's
    /// `ErrGRPCTooManyRequests`, which etcd itself sends when its apply falls behind).
    #[error("etcdserver: too many requests")]
    TooManyRequests,
}

impl EtcdError {
    /// The gRPC status code etcd uses for this error.
    pub(crate) fn code(&self) -> tonic::Code {
        use EtcdError::*;
        use tonic::Code;
        match self {
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | DuplicateKey | TooManyOps
            | UserEmpty | RoleEmpty | AuthFailed | InvalidAuthMgmt | RequestTooLarge => {
                Code::InvalidArgument
            }
            LeaseNotFound => Code::NotFound,
            LeaseExists | RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
            | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted
            | AuthNotEnabled => Code::FailedPrecondition,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            NoSpace | TooManyRequests => Code::ResourceExhausted,
        }
    }
}

impl From<EtcdError> for tonic::Status {
    fn from(e: EtcdError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}
