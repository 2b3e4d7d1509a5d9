//! The one client path for everything that crosses hosts, against our embedded server or a real
//! etcd cluster: exported resources, convergence flags and host liveness, under `/_mgmt/`.
//!
//! It speaks only plain Rust and `serde_json` values to its callers (no engine, resource or
//! protobuf types) and never logs credentials. Watches are pull-based ([`SnapshotWatch::next`])
//! and own no task; the only task here is a [`HostLease`]'s keepalive, owned by that handle.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::conn::{Conn, prefix_end};
use crate::error::StoreError;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse, compare,
    request_op, watch_request,
};
use crate::pb::mvccpb::event::EventType;

/// mgmt's key layout.
pub mod keys {
    /// Every key mgmt writes starts with this.
    pub const ROOT: &str = "/_mgmt/";
    /// `/_mgmt/exported/<host>/resources/<kind>/<name>`: one exported resource (JSON).
    pub const EXPORTED: &str = "/_mgmt/exported/";
    /// `/_mgmt/converged/<host>`: `"true"` or `"false"`.
    pub const CONVERGED: &str = "/_mgmt/converged/";
    /// `/_mgmt/hosts/<host>`: present while the host is alive (under a lease).
    pub const HOSTS: &str = "/_mgmt/hosts/";

    pub fn exported_host(host: &str) -> String {
        format!("{EXPORTED}{host}/resources/")
    }

    pub fn exported(host: &str, kind: &str, name: &str) -> String {
        format!("{EXPORTED}{host}/resources/{kind}/{name}")
    }

    pub fn converged(host: &str) -> String {
        format!("{CONVERGED}{host}")
    }

    pub fn host(host: &str) -> String {
        format!("{HOSTS}{host}")
    }
}

/// A resource one host exports for others (and itself) to collect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedResource {
    /// The exporting host (taken from the key; not stored in the value).
    pub host: String,
    pub kind: String,
    pub name: String,
    pub meta: serde_json::Value,
    pub params: serde_json::Value,
}

/// The value stored under an export's key, readable with `etcdctl get`.
#[derive(Serialize, Deserialize)]
struct ExportValue {
    kind: String,
    name: String,
    #[serde(default)]
    meta: serde_json::Value,
    #[serde(default)]
    params: serde_json::Value,
}

pub(crate) fn check_segment(what: &'static str, value: &str) -> Result<(), StoreError> {
    let reason = if value.is_empty() {
        "it is empty"
    } else if value.contains('/') {
        "it contains '/'"
    } else if value.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidName {
        what,
        value: value.to_string(),
        reason,
    })
}

/// A connection to an etcd v3 API endpoint (ours or a real cluster).
#[derive(Clone)]
pub struct Store {
    conn: Conn,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn request_error(op: &'static str, key: &str) -> impl FnOnce(Status) -> StoreError {
    let key = key.to_string();
    move |source| StoreError::Request { op, key, source }
}

impl Store {
    /// Connects (and authenticates, with `creds` = user and password) to the first reachable of
    /// `endpoints` (`http://host:port` or `host:port`), and checks that it answers.
    pub async fn connect(
        endpoints: &[crate::StoreUrl],
        creds: Option<(String, String)>,
    ) -> Result<Store, StoreError> {
        match Conn::connect(endpoints, creds).await {
            Ok(conn) => Ok(Store { conn }),
            Err(source) => Err(StoreError::Connect {
                endpoints: endpoints
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                source,
            }),
        }
    }

    /// Replaces all of `host`'s exports with `exports` in one transaction (one revision, one
    /// watch event batch for collectors); does nothing when they are unchanged. Every export's
    /// `host` field is ignored in favour of `host`. Against a real etcd, at most 128 changed keys
    /// fit in one transaction (its `--max-txn-ops`).
    pub async fn publish_exports(
        &self,
        host: &str,
        exports: Vec<ExportedResource>,
    ) -> Result<(), StoreError> {
        check_segment("host name", host)?;
        let prefix = keys::exported_host(host);
        let mut desired = BTreeMap::new();
        for e in exports {
            check_segment("resource kind", &e.kind)?;
            if e.name.is_empty() {
                return Err(StoreError::InvalidName {
                    what: "resource name",
                    value: e.name,
                    reason: "it is empty",
                });
            }
            let key = keys::exported(host, &e.kind, &e.name);
            let value = serde_json::to_vec(&ExportValue {
                kind: e.kind.clone(),
                name: e.name.clone(),
                meta: e.meta,
                params: e.params,
            })
            .map_err(|source| StoreError::Encode {
                kind: e.kind,
                name: e.name,
                source,
            })?;
            desired.insert(key.into_bytes(), value);
        }
        loop {
            let resp = self
                .conn
                .range(range_prefix(&prefix))
                .await
                .map_err(request_error("get", &prefix))?;
            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
            let current: BTreeMap<&[u8], &[u8]> = resp
                .kvs
                .iter()
                .map(|kv| (kv.key.as_slice(), kv.value.as_slice()))
                .collect();
            let mut ops = Vec::new();
            for (key, value) in &desired {
                if current.get(key.as_slice()) != Some(&value.as_slice()) {
                    ops.push(RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: key.clone(),
                            value: value.clone(),
                            ..Default::default()
                        })),
                    });
                }
            }
            for key in current.keys() {
                if !desired.contains_key(*key) {
                    ops.push(RequestOp {
                        request: Some(request_op::Request::RequestDeleteRange(
                            DeleteRangeRequest {
                                key: key.to_vec(),
                                ..Default::default()
                            },
                        )),
                    });
                }
            }
            if ops.is_empty() {
                return Ok(());
            }
            // Applies only if nobody touched the host's exports since we read them.
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: compare::CompareResult::Less as i32,
                    target: compare::CompareTarget::Mod as i32,
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    target_union: Some(compare::TargetUnion::ModRevision(rev + 1)),
                }],
                success: ops,
                failure: vec![],
            };
            let done = self
                .conn
                .txn(txn)
                .await
                .map_err(request_error("txn", &prefix))?;
            if done.succeeded {
                return Ok(());
            }
        }
    }

    /// Every export of every host, right now.
    pub async fn exports_snapshot(&self) -> Result<Vec<ExportedResource>, StoreError> {
        let (entries, _) = list(&self.conn, keys::EXPORTED).await?;
        Ok(decode_exports(&entries, &mut Reported::default()))
    }

    /// Full snapshots of all exports: the current one first, then one after each change.
    /// Invalid exports are warned about once per change of them, all of them.
    pub async fn watch_exports(&self) -> Result<SnapshotWatch<Vec<ExportedResource>>, StoreError> {
        self.watch_exports_warning(WarnInvalid::All).await
    }

    /// [`watch_exports`](Self::watch_exports), warning only about the invalid exports `warn`
    /// names (the others are logged at debug level): in a remote run the initiator warns about
    /// every host's, each child only about its own, so one bad key is one warning for the
    /// fleet instead of one per host.
    pub async fn watch_exports_warning(
        &self,
        warn: WarnInvalid,
    ) -> Result<SnapshotWatch<Vec<ExportedResource>>, StoreError> {
        let mut w = SnapshotWatch::start(&self.conn, keys::EXPORTED, decode_exports).await?;
        w.reported.warn = warn;
        Ok(w)
    }

    /// Records whether `host` is converged.
    pub async fn set_converged(&self, host: &str, converged: bool) -> Result<(), StoreError> {
        check_segment("host name", host)?;
        let key = keys::converged(host);
        let value = if converged { "true" } else { "false" };
        self.put(&key, value).await
    }

    /// Every host's convergence flag, right now.
    pub async fn converged(&self) -> Result<BTreeMap<String, bool>, StoreError> {
        let (entries, _) = list(&self.conn, keys::CONVERGED).await?;
        Ok(decode_converged(&entries, &mut Reported::default()))
    }

    /// Snapshots of every host's convergence flag: the current one, then one per change.
    pub async fn watch_converged(
        &self,
    ) -> Result<SnapshotWatch<BTreeMap<String, bool>>, StoreError> {
        SnapshotWatch::start(&self.conn, keys::CONVERGED, decode_converged).await
    }

    /// Marks `host` alive under a lease of `ttl` kept alive by the returned handle; when the
    /// handle is closed or dropped the lease is revoked, and if the process dies it expires.
    pub async fn register_host(&self, host: &str, ttl: Duration) -> Result<HostLease, StoreError> {
        self.register_host_watched(host, ttl, None).await
    }

    /// [`register_host`](Self::register_host), and with `lost_after`: the lease's
    /// [`lost`](HostLease::lost) token is cancelled once no renewal has succeeded for that
    /// long (the store, or the way to it, is gone).
    pub async fn register_host_watched(
        &self,
        host: &str,
        ttl: Duration,
        lost_after: Option<Duration>,
    ) -> Result<HostLease, StoreError> {
        check_segment("host name", host)?;
        let ttl = ttl.as_secs().max(1) as i64;
        let key = keys::host(host);
        let conn = self.conn.clone();
        let id = grant_and_put(&conn, &key, ttl).await?;
        let cancel = CancellationToken::new();
        let lost = CancellationToken::new();
        let task = tokio::spawn(keep_host_alive(
            conn,
            key,
            ttl,
            id,
            cancel.clone(),
            lost_after.map(|d| (d, lost.clone())),
        ));
        Ok(HostLease {
            cancel,
            lost,
            task: Some(task),
        })
    }

    /// The hosts whose liveness key exists.
    pub async fn live_hosts(&self) -> Result<BTreeSet<String>, StoreError> {
        let (entries, _) = list(&self.conn, keys::HOSTS).await?;
        Ok(decode_hosts(&entries, &mut Reported::default()))
    }

    /// Snapshots of the live hosts: the current set, then one per change.
    pub async fn watch_live_hosts(&self) -> Result<SnapshotWatch<BTreeSet<String>>, StoreError> {
        SnapshotWatch::start(&self.conn, keys::HOSTS, decode_hosts).await
    }

    /// Reads one key (for resources that keep their own values in the store).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let req = RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let resp = self
            .conn
            .range(req)
            .await
            .map_err(request_error("get", key))?;
        Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Writes one key.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), StoreError> {
        let req = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.into(),
            ..Default::default()
        };
        self.conn
            .put(req)
            .await
            .map_err(request_error("put", key))?;
        Ok(())
    }

    /// Deletes one key.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let req = DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        self.conn
            .delete(req)
            .await
            .map_err(request_error("delete", key))?;
        Ok(())
    }
}

/// The keys under `prefix` (with the prefix cut off) and the revision they were read at.
type Entries = BTreeMap<String, Entry>;

/// One key's value and the revision it was last written at.
#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    mod_rev: i64,
}

/// Most invalid records listed one by one; more are counted in one line.
const MAX_REPORTED: usize = 256;

/// The invalid records (exports that do not decode) already logged, by key and mod revision,
/// so each is logged once per change of it instead of on every snapshot (any host's change
/// makes one). It keeps only what the last decode found invalid, at most [`MAX_REPORTED`] of
/// them; the rest are counted in one line, logged when their number changes.
#[derive(Debug, Default)]
struct Reported {
    last: HashSet<(String, i64)>,
    unlisted: usize,
    warn: WarnInvalid,
}

/// Which invalid exports a watch warns about (the rest are logged at debug level).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WarnInvalid {
    /// Every host's.
    #[default]
    All,
    /// Only those under this host's own prefix.
    Host(String),
}

impl WarnInvalid {
    /// Whether the export at `key` (under `/_mgmt/exported/`) is one to warn about.
    fn covers(&self, key: &str) -> bool {
        match self {
            WarnInvalid::All => true,
            WarnInvalid::Host(host) => key
                .strip_prefix(keys::EXPORTED)
                .and_then(|rest| rest.strip_prefix(host.as_str()))
                .is_some_and(|rest| rest.starts_with('/')),
        }
    }
}

/// One record that does not decode: its key, revision and why.
struct Invalid {
    key: String,
    mod_rev: i64,
    why: String,
}

impl Reported {
    /// Logs the records of one decode that were not already logged at their revision.
    fn report(&mut self, invalid: Vec<Invalid>) {
        for (line, warn) in self.fresh(invalid) {
            if warn {
                tracing::warn!("{line}");
            } else {
                tracing::debug!("{line}");
            }
        }
    }

    /// The lines to log for one decode's invalid records (none when nothing changed), each
    /// with whether it is a warning (see [`WarnInvalid`]).
    fn fresh(&mut self, invalid: Vec<Invalid>) -> Vec<(String, bool)> {
        let mut now = HashSet::new();
        let mut lines = Vec::new();
        let mut unlisted = 0;
        for i in invalid {
            if now.len() >= MAX_REPORTED {
                unlisted += 1;
                continue;
            }
            let id = (i.key, i.mod_rev);
            if !self.last.contains(&id) {
                let warn = self.warn.covers(&id.0);
                let line = format!(
                    "skipping the export {} (revision {}): {}",
                    id.0, id.1, i.why
                );
                lines.push((line, warn));
            }
            now.insert(id);
        }
        if unlisted > 0 && unlisted != self.unlisted {
            lines.push((
                format!(
                    "skipping {unlisted} more invalid exports (only the first {MAX_REPORTED} are listed)"
                ),
                self.warn == WarnInvalid::All,
            ));
        }
        self.last = now;
        self.unlisted = unlisted;
        lines
    }
}

fn range_prefix(prefix: &str) -> RangeRequest {
    RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        ..Default::default()
    }
}

async fn list(conn: &Conn, prefix: &str) -> Result<(Entries, i64), StoreError> {
    let resp = conn
        .range(range_prefix(prefix))
        .await
        .map_err(request_error("get", prefix))?;
    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
    let entries = resp
        .kvs
        .into_iter()
        .filter_map(|kv| {
            let key = std::str::from_utf8(&kv.key).ok()?;
            let entry = Entry {
                value: kv.value,
                mod_rev: kv.mod_revision,
            };
            Some((key.strip_prefix(prefix)?.to_string(), entry))
        })
        .collect();
    Ok((entries, rev))
}

/// Every valid export; the invalid ones are logged once per change (see [`Reported`]).
fn decode_exports(entries: &Entries, reported: &mut Reported) -> Vec<ExportedResource> {
    let mut invalid = Vec::new();
    let mut skip = |rest: &str, entry: &Entry, why: String| {
        invalid.push(Invalid {
            key: format!("{}{rest}", keys::EXPORTED),
            mod_rev: entry.mod_rev,
            why,
        });
        None
    };
    let exports = entries
        .iter()
        .filter_map(|(rest, entry)| {
            // `<host>/resources/<kind>/<name>`; names may contain '/' themselves.
            let Some((host, kind, name)) = rest.split_once('/').and_then(|(host, r)| {
                let (kind, name) = r.strip_prefix("resources/")?.split_once('/')?;
                Some((host, kind, name))
            }) else {
                return skip(
                    rest,
                    entry,
                    "its key is not <host>/resources/<kind>/<name>".into(),
                );
            };
            match serde_json::from_slice::<ExportValue>(&entry.value) {
                Ok(v) if v.kind == kind && v.name == name => Some(ExportedResource {
                    host: host.to_string(),
                    kind: v.kind,
                    name: v.name,
                    meta: v.meta,
                    params: v.params,
                }),
                Ok(v) => skip(
                    rest,
                    entry,
                    format!("its value names another resource, {}[{}]", v.kind, v.name),
                ),
                Err(error) => skip(rest, entry, format!("its value is not valid JSON: {error}")),
            }
        })
        .collect();
    reported.report(invalid);
    exports
}

fn decode_converged(entries: &Entries, _: &mut Reported) -> BTreeMap<String, bool> {
    entries
        .iter()
        .map(|(host, e)| (host.clone(), e.value.as_slice() == b"true"))
        .collect()
}

fn decode_hosts(entries: &Entries, _: &mut Reported) -> BTreeSet<String> {
    entries.keys().cloned().collect()
}

/// A live view of every key under a prefix, decoded into a `T` snapshot.
///
/// [`next`](Self::next) returns the current snapshot first, then waits for the next change that
/// alters the decoded value. It owns no task: the watch advances only while `next` is awaited
/// (events queue in the stream meanwhile), so dropping it ends everything.
pub struct SnapshotWatch<T> {
    conn: Conn,
    prefix: &'static str,
    entries: Entries,
    /// Kept so the request half of the stream stays open (closing it ends the watch).
    _requests: mpsc::Sender<WatchRequest>,
    stream: Streaming<WatchResponse>,
    decode: fn(&Entries, &mut Reported) -> T,
    /// What `decode` already logged as invalid.
    reported: Reported,
    last: Option<T>,
}

type WatchHalves = (
    Entries,
    mpsc::Sender<WatchRequest>,
    Streaming<WatchResponse>,
);

impl<T: PartialEq + Clone> SnapshotWatch<T> {
    async fn start(
        conn: &Conn,
        prefix: &'static str,
        decode: fn(&Entries, &mut Reported) -> T,
    ) -> Result<Self, StoreError> {
        let (entries, requests, stream) = Self::subscribe(conn, prefix).await?;
        Ok(Self {
            conn: conn.clone(),
            prefix,
            entries,
            _requests: requests,
            stream,
            decode,
            reported: Reported::default(),
            last: None,
        })
    }

    /// Lists the prefix, then watches it from the next revision: nothing is missed in between.
    async fn subscribe(conn: &Conn, prefix: &'static str) -> Result<WatchHalves, StoreError> {
        let (entries, rev) = list(conn, prefix).await?;
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    start_revision: rev + 1,
                    ..Default::default()
                },
            )),
        };
        let (requests, stream) = conn
            .watch(create)
            .await
            .map_err(request_error("watch", prefix))?;
        Ok((entries, requests, stream))
    }

    fn ended(&self, reason: String) -> StoreError {
        StoreError::WatchEnded {
            prefix: self.prefix.to_string(),
            reason,
        }
    }

    /// Like [`next`](Self::next), but a watch that ends (a restarted server, a lost
    /// connection) is subscribed again, after a pause that grows from 200 ms to 5 s while the
    /// store stays away, from a fresh listing: nothing is missed, and the next snapshot that
    /// differs from the last one returned is what comes back. Never fails; cancel it by
    /// dropping the future (it is cancel-safe: state changes only once a step completes).
    pub async fn follow(&mut self) -> T {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.next().await {
                Ok(snapshot) => return snapshot,
                Err(error) => {
                    tracing::warn!(prefix = self.prefix, %error, "store watch ended; subscribing again");
                }
            }
            loop {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                match Self::subscribe(&self.conn, self.prefix).await {
                    Ok((entries, requests, stream)) => {
                        self.entries = entries;
                        self._requests = requests;
                        self.stream = stream;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(prefix = self.prefix, %error, "cannot watch the store; retrying");
                    }
                }
            }
        }
    }

    /// The next snapshot that differs from the last one returned.
    pub async fn next(&mut self) -> Result<T, StoreError> {
        loop {
            let snapshot = (self.decode)(&self.entries, &mut self.reported);
            if self.last.as_ref() != Some(&snapshot) {
                self.last = Some(snapshot.clone());
                return Ok(snapshot);
            }
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(self.ended("the server closed the stream".to_string())),
                Err(e) => return Err(self.ended(e.message().to_string())),
            };
            if resp.canceled {
                if resp.compact_revision > 0 {
                    // We fell behind a compaction: start over from a fresh listing.
                    let (entries, requests, stream) =
                        Self::subscribe(&self.conn, self.prefix).await?;
                    self.entries = entries;
                    self._requests = requests;
                    self.stream = stream;
                    continue;
                }
                return Err(self.ended(format!("canceled by the server: {}", resp.cancel_reason)));
            }
            for ev in resp.events {
                let Some(kv) = ev.kv else { continue };
                let Some(rest) = std::str::from_utf8(&kv.key)
                    .ok()
                    .and_then(|k| k.strip_prefix(self.prefix))
                else {
                    continue;
                };
                match EventType::try_from(ev.r#type) {
                    Ok(EventType::Put) => {
                        let entry = Entry {
                            value: kv.value,
                            mod_rev: kv.mod_revision,
                        };
                        self.entries.insert(rest.to_string(), entry);
                    }
                    Ok(EventType::Delete) => {
                        self.entries.remove(rest);
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// Keeps a host's liveness key alive; revokes it when closed or dropped.
///
/// Shutdown: [`close`](Self::close) revokes and waits; dropping only signals the keepalive task,
/// which revokes the lease by itself and ends.
pub struct HostLease {
    cancel: CancellationToken,
    lost: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl HostLease {
    /// Cancelled when the lease was registered with a `lost_after` and no renewal has
    /// succeeded for that long; never otherwise.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Revokes the lease (the host's key disappears at once) and waits for the keepalive task.
    pub async fn close(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "host keepalive task failed");
        }
    }
}

impl Drop for HostLease {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn grant_and_put(conn: &Conn, key: &str, ttl: i64) -> Result<i64, StoreError> {
    let lease = conn
        .lease_grant(ttl)
        .await
        .map_err(request_error("lease grant", key))?;
    let id = lease.id;
    let put = PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"alive".to_vec(),
        lease: id,
        ..Default::default()
    };
    if let Err(source) = conn.put(put).await {
        // Do not leave an unused lease behind (it would expire anyway).
        let _ = conn.lease_revoke(id).await;
        return Err(request_error("put", key)(source));
    }
    Ok(id)
}

type Keeper = (
    mpsc::Sender<LeaseKeepAliveRequest>,
    Streaming<LeaseKeepAliveResponse>,
);

/// Renews the lease every third of its TTL. If the lease is lost (expired during a network
/// outage, or revoked by someone), the host registers again with a new one. With `watch`,
/// its token is cancelled once no renewal has succeeded for its duration.
async fn keep_host_alive(
    conn: Conn,
    key: String,
    ttl: i64,
    mut id: i64,
    cancel: CancellationToken,
    watch: Option<(Duration, CancellationToken)>,
) {
    let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(200));
    let mut keeper: Option<Keeper> = None;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        let lost_at = watch
            .as_ref()
            .filter(|(_, lost)| !lost.is_cancelled())
            .map(|(d, _)| last_ok + *d);
        let lost_wait = async {
            match lost_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = lost_wait => {
                if let Some((d, lost)) = &watch {
                    tracing::warn!(key, "the store has not answered for {}s", d.as_secs());
                    lost.cancel();
                }
                keeper = None;
            }
            ok = renew(&conn, &key, ttl, &mut id, &mut keeper, period) => {
                if ok {
                    last_ok = tokio::time::Instant::now();
                }
            }
        }
    }
    if let Err(error) = conn.lease_revoke(id).await {
        tracing::debug!(
            key,
            error = error.message(),
            "revoking the host lease failed (it will expire)"
        );
    }
}

/// One renewal after `period`: whether it succeeded (a lost lease registered again counts).
async fn renew(
    conn: &Conn,
    key: &str,
    ttl: i64,
    id: &mut i64,
    keeper: &mut Option<Keeper>,
    period: Duration,
) -> bool {
    tokio::time::sleep(period).await;
    let fresh = keeper.is_none();
    if fresh {
        // Opening the stream sends the first renewal.
        match tokio::time::timeout(period, conn.keep_alive(*id)).await {
            Ok(Ok(k)) => *keeper = Some(k),
            Ok(Err(error)) => {
                tracing::warn!(
                    key,
                    error = error.message(),
                    "cannot open the host keepalive stream"
                );
                return false;
            }
            Err(_) => {
                tracing::warn!(key, "no answer opening the host keepalive stream");
                return false;
            }
        }
    }
    let id_now = *id;
    {
        let Some((requests, responses)) = keeper.as_mut() else {
            return false;
        };
        let renewed = async {
            if !fresh {
                requests
                    .send(LeaseKeepAliveRequest { id: id_now })
                    .await
                    .map_err(|_| Status::cancelled("keepalive stream closed"))?;
            }
            responses.message().await
        };
        match tokio::time::timeout(period, renewed).await {
            Ok(Ok(Some(r))) if r.ttl > 0 => return true,
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                tracing::warn!(key, "host keepalive failed; retrying");
                *keeper = None;
                return false;
            }
        }
    }
    tracing::warn!(key, "host lease was lost; registering again");
    *keeper = None;
    match tokio::time::timeout(period, grant_and_put(conn, key, ttl)).await {
        Ok(Ok(new_id)) => {
            *id = new_id;
            true
        }
        Ok(Err(error)) => {
            tracing::warn!(key, %error, "cannot register the host again");
            false
        }
        Err(_) => {
            tracing::warn!(key, "no answer registering the host again");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &str, mod_rev: i64) -> Entry {
        Entry {
            value: value.as_bytes().to_vec(),
            mod_rev,
        }
    }

    #[test]
    fn invalid_exports_are_reported_once_per_change() {
        let value = |name: &str| format!(r#"{{"kind":"file","name":"{name}"}}"#);
        let mut entries: Entries = [
            ("h1/resources/file//a".to_string(), entry(&value("/a"), 2)),
            ("h1/resources/file/x".to_string(), entry("junk", 3)),
            ("h1/resources/file/y".to_string(), entry(&value("/a"), 4)),
            ("h1/resources/junk".to_string(), entry("{}", 5)),
        ]
        .into();
        let mut reported = Reported::default();
        assert_eq!(decode_exports(&entries, &mut reported).len(), 1);
        assert_eq!(reported.last.len(), 3);
        let lines = |reported: &mut Reported, entries: &Entries| {
            let invalid = reported
                .last
                .iter()
                .map(|(key, mod_rev)| (key.clone(), *mod_rev))
                .collect::<HashSet<_>>();
            let mut fresh = Reported::default();
            decode_exports(entries, &mut fresh);
            let new: Vec<_> = fresh.last.difference(&invalid).cloned().collect();
            *reported = fresh;
            new
        };
        // The same records again (another host's change makes a new snapshot): nothing new.
        assert!(lines(&mut reported, &entries).is_empty());
        // One of them changes: that one only.
        entries.insert("h1/resources/file/x".to_string(), entry("junk2", 9));
        assert_eq!(
            lines(&mut reported, &entries),
            vec![("/_mgmt/exported/h1/resources/file/x".to_string(), 9)]
        );
        // Fixed: forgotten; only what is invalid now is remembered.
        entries.insert("h1/resources/file/x".to_string(), entry(&value("x"), 10));
        assert!(lines(&mut reported, &entries).is_empty());
        assert_eq!(reported.last.len(), 2);
        // And the lines themselves: one per record not logged at its revision.
        let mut r = Reported::default();
        let invalid = |rev| {
            vec![Invalid {
                key: "k".into(),
                mod_rev: rev,
                why: "bad".into(),
            }]
        };
        assert_eq!(
            r.fresh(invalid(1)),
            vec![("skipping the export k (revision 1): bad".to_string(), true)]
        );
        assert!(r.fresh(invalid(1)).is_empty());
        assert_eq!(r.fresh(invalid(2)).len(), 1);
    }

    #[test]
    fn a_child_warns_only_about_its_own_invalid_exports() {
        let invalid = |key: &str| Invalid {
            key: format!("{}{key}", keys::EXPORTED),
            mod_rev: 1,
            why: "bad".into(),
        };
        let mut r = Reported {
            warn: WarnInvalid::Host("h1".into()),
            ..Default::default()
        };
        let lines = r.fresh(vec![
            invalid("h1/resources/file/x"),
            invalid("h10/resources/file/x"),
            invalid("h2/resources/file/x"),
            invalid("h1"),
        ]);
        let warned: Vec<bool> = lines.iter().map(|(_, warn)| *warn).collect();
        // h1's own key warns; h10 (a longer name with h1 as its prefix), h2 and a key
        // that is not under h1/ are for the initiator to warn about.
        assert_eq!(warned, [true, false, false, false]);
        assert!(WarnInvalid::All.covers("/_mgmt/exported/h2/resources/file/x"));
    }

    #[test]
    fn reporting_is_bounded() {
        let many = |n: usize, rev: i64| {
            (0..n)
                .map(|i| Invalid {
                    key: format!("k{i}"),
                    mod_rev: rev,
                    why: "bad".into(),
                })
                .collect::<Vec<_>>()
        };
        let mut r = Reported::default();
        let lines = r.fresh(many(MAX_REPORTED + 10, 1));
        assert_eq!(lines.len(), MAX_REPORTED + 1);
        assert!(lines[MAX_REPORTED].0.starts_with("skipping 10 more"));
        assert_eq!(r.last.len(), MAX_REPORTED);
        assert!(r.fresh(many(MAX_REPORTED + 10, 1)).is_empty());
        assert_eq!(r.fresh(many(MAX_REPORTED + 11, 1)).len(), 1);
    }
}
