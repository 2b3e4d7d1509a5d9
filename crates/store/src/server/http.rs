//! The plain HTTP endpoints etcd serves on its client port beside gRPC, for the tools that
//! expect them: `GET /health` and `GET /version` (etcd's JSON), and `GET /metrics` in the
//! Prometheus text format (etcd's own metric names where etcd has the metric, `mgmt_store_*`
//! for the per-user ones). HTTP/1.1 and h2c both work (curl, Prometheus, load balancers).
//!
//! Every gRPC request is counted by method on its way in (`grpc_server_started_total`); only
//! the methods of etcd's API have a counter, anything else counts as `unknown`, so a client
//! naming made-up methods cannot grow the table. A scrape takes the core lock once, for a count
//! of the live keys (linear in the keys: a scrape of 100,000 keys takes about a millisecond).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{API_VERSION, Shared};

/// etcd's gRPC services and their methods, as `/etcdserverpb.<Service>/<Method>`.
const METHODS: &[(&str, &[&str])] = &[
    ("KV", &["Range", "Put", "DeleteRange", "Txn", "Compact"]),
    ("Watch", &["Watch"]),
    (
        "Lease",
        &[
            "LeaseGrant",
            "LeaseRevoke",
            "LeaseKeepAlive",
            "LeaseTimeToLive",
            "LeaseLeases",
        ],
    ),
    (
        "Cluster",
        &[
            "MemberAdd",
            "MemberRemove",
            "MemberUpdate",
            "MemberList",
            "MemberPromote",
        ],
    ),
    (
        "Maintenance",
        &[
            "Alarm",
            "Status",
            "Defragment",
            "Hash",
            "HashKV",
            "Snapshot",
            "MoveLeader",
            "Downgrade",
        ],
    ),
    (
        "Auth",
        &[
            "AuthEnable",
            "AuthDisable",
            "AuthStatus",
            "Authenticate",
            "UserAdd",
            "UserGet",
            "UserList",
            "UserDelete",
            "UserChangePassword",
            "UserGrantRole",
            "UserRevokeRole",
            "RoleAdd",
            "RoleGet",
            "RoleList",
            "RoleDelete",
            "RoleGrantPermission",
            "RoleRevokePermission",
        ],
    ),
];

/// The server's counters (the gauges are read from the state at each scrape).
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Open watch streams and watchers, of every caller.
    pub(crate) streams: AtomicU64,
    pub(crate) watchers: AtomicU64,
    /// Requests started, by the index of their method in [`METHODS`] (flattened); the last is
    /// `unknown`.
    started: Vec<AtomicU64>,
    /// Requests to the HTTP endpoints.
    http: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let n = METHODS.iter().map(|(_, m)| m.len()).sum::<usize>() + 1;
        Metrics {
            streams: AtomicU64::new(0),
            watchers: AtomicU64::new(0),
            started: (0..n).map(|_| AtomicU64::new(0)).collect(),
            http: AtomicU64::new(0),
        }
    }
}

/// The counter index of a request path.
fn method_index(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("/etcdserverpb.")?;
    let (service, method) = rest.split_once('/')?;
    let mut i = 0;
    for (s, methods) in METHODS {
        if *s == service {
            return methods.iter().position(|m| *m == method).map(|p| i + p);
        }
        i += methods.len();
    }
    None
}

/// Every method's (service, method) in counter order.
fn all_methods() -> impl Iterator<Item = (&'static str, &'static str)> {
    METHODS
        .iter()
        .flat_map(|(s, ms)| ms.iter().map(move |m| (*s, *m)))
}

impl Metrics {
    fn count(&self, path: &str) {
        if matches!(path, "/health" | "/version" | "/metrics") {
            self.http.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let i = method_index(path).unwrap_or(self.started.len() - 1);
        self.started[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The routes, and the counting of every request (gRPC ones included) on the way in.
pub(crate) fn routes(grpc: axum::Router, shared: Arc<Shared>) -> axum::Router {
    let http = axum::Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(shared.clone());
    grpc.merge(http)
        .layer(axum::middleware::from_fn_with_state(shared, count))
}

async fn count(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    shared.metrics.count(req.uri().path());
    next.run(req).await
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// etcd's answer: healthy while the server serves (a single member is its own leader).
async fn health(State(shared): State<Arc<Shared>>) -> Response {
    if shared.cancel.is_cancelled() {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false","reason":"server is stopping"}"#.to_string(),
        )
    } else {
        json(
            StatusCode::OK,
            r#"{"health":"true","reason":""}"#.to_string(),
        )
    }
}

async fn version() -> Response {
    json(
        StatusCode::OK,
        format!(r#"{{"etcdserver":"{API_VERSION}","etcdcluster":"{API_VERSION}"}}"#),
    )
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let (keys, memory, rev, leases) = {
        let core = shared.core();
        (
            core.live_keys(),
            core.memory(),
            core.rev(),
            core.user_lease_counts(),
        )
    };
    let users: Vec<(String, usize, usize)> = {
        let w = shared.watches();
        let mut v: Vec<_> = w
            .iter()
            .map(|(u, c)| (u.clone(), c.streams, c.watchers))
            .collect();
        v.sort();
        v
    };
    let m = &shared.metrics;
    let mut out = String::new();
    family(
        &mut out,
        "etcd_server_has_leader",
        "gauge",
        "Whether a leader exists (1: yes; a single member leads itself).",
    );
    out.push_str("etcd_server_has_leader 1\n");
    family(
        &mut out,
        "etcd_server_is_leader",
        "gauge",
        "Whether this member is the leader.",
    );
    out.push_str("etcd_server_is_leader 1\n");
    family(
        &mut out,
        "etcd_debugging_mvcc_keys_total",
        "gauge",
        "Keys that exist now.",
    );
    let _ = writeln!(out, "etcd_debugging_mvcc_keys_total {keys}");
    family(
        &mut out,
        "etcd_debugging_mvcc_current_revision",
        "gauge",
        "The store's revision.",
    );
    let _ = writeln!(out, "etcd_debugging_mvcc_current_revision {rev}");
    family(
        &mut out,
        "etcd_mvcc_db_total_size_in_bytes",
        "gauge",
        "Bytes the store accounts for (current values, history, leases; in memory).",
    );
    let _ = writeln!(out, "etcd_mvcc_db_total_size_in_bytes {}", memory.total());
    family(
        &mut out,
        "mgmt_store_bytes",
        "gauge",
        "The store's bytes by part.",
    );
    let _ = writeln!(
        out,
        "mgmt_store_bytes{{part=\"live\"}} {}",
        memory.live_bytes
    );
    let _ = writeln!(
        out,
        "mgmt_store_bytes{{part=\"history\"}} {}",
        memory.history_bytes
    );
    let _ = writeln!(
        out,
        "mgmt_store_bytes{{part=\"leases\"}} {}",
        memory.lease_bytes
    );
    family(
        &mut out,
        "etcd_debugging_mvcc_watch_stream_total",
        "gauge",
        "Open watch streams.",
    );
    let _ = writeln!(
        out,
        "etcd_debugging_mvcc_watch_stream_total {}",
        m.streams.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "etcd_debugging_mvcc_watcher_total",
        "gauge",
        "Open watchers.",
    );
    let _ = writeln!(
        out,
        "etcd_debugging_mvcc_watcher_total {}",
        m.watchers.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "grpc_server_started_total",
        "counter",
        "gRPC requests started, by method.",
    );
    for (i, (service, method)) in all_methods().enumerate() {
        let _ = writeln!(
            out,
            "grpc_server_started_total{{grpc_service=\"etcdserverpb.{service}\",grpc_method=\"{method}\"}} {}",
            m.started[i].load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "grpc_server_started_total{{grpc_service=\"unknown\",grpc_method=\"unknown\"}} {}",
        m.started[m.started.len() - 1].load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "mgmt_store_http_requests_total",
        "counter",
        "Requests to /health, /version and /metrics.",
    );
    let _ = writeln!(
        out,
        "mgmt_store_http_requests_total {}",
        m.http.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "mgmt_store_user_watch_streams",
        "gauge",
        "Open watch streams of each limited user (a host).",
    );
    for (u, streams, _) in &users {
        let _ = writeln!(
            out,
            "mgmt_store_user_watch_streams{{user=\"{}\"}} {streams}",
            label(u)
        );
    }
    family(
        &mut out,
        "mgmt_store_user_watchers",
        "gauge",
        "Open watchers of each limited user (a host).",
    );
    for (u, _, watchers) in &users {
        let _ = writeln!(
            out,
            "mgmt_store_user_watchers{{user=\"{}\"}} {watchers}",
            label(u)
        );
    }
    family(
        &mut out,
        "mgmt_store_user_leases",
        "gauge",
        "Leases held by each limited user (a host).",
    );
    for (u, n) in &leases {
        let _ = writeln!(out, "mgmt_store_user_leases{{user=\"{}\"}} {n}", label(u));
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_etcds_methods_have_a_counter() {
        assert_eq!(method_index("/etcdserverpb.KV/Range"), Some(0));
        assert_eq!(method_index("/etcdserverpb.Watch/Watch"), Some(5));
        assert_eq!(method_index("/etcdserverpb.KV/Made-up"), None);
        assert_eq!(method_index("/other.KV/Range"), None);
        let m = Metrics::default();
        m.count("/etcdserverpb.KV/Range");
        m.count("/etcdserverpb.KV/Nope");
        m.count("/anything/else");
        m.count("/health");
        assert_eq!(m.started[0].load(Ordering::Relaxed), 1);
        assert_eq!(m.started[m.started.len() - 1].load(Ordering::Relaxed), 2);
        assert_eq!(m.http.load(Ordering::Relaxed), 1);
        assert_eq!(m.started.len(), all_methods().count() + 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
