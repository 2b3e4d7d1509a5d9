//! The sans-IO heart of the embedded etcd server: a multi-version key-value store with etcd's
//! revision semantics, its event log (for watches from past revisions), compaction, and the lease
//! table. Requests and replies are the etcd protobuf messages, which are plain data here.
//!
//! It must never do IO, spawn, sleep or read the clock: time is passed in (`now`), and the
//! caller publishes the commits it returns. Everything lives in memory for one `mgmt run`.
//!
//! Revisions follow etcd: the store starts at revision 1; every write request that changes
//! something (a put, a delete that deletes, a txn with such ops, a lease revoke that deletes keys)
//! produces exactly one new revision, shared by all its changes; reads never do.
//!
//! Memory is bounded, since everything lives in RAM: live data by quotas (the total, etcd's
//! `--quota-backend-bytes`, and each user's own [`Quota`]), checked before a write is applied,
//! so a refused write changes nothing; history (superseded values, deletions and the event log
//! that watchers replay) by a byte budget: past it, the oldest revisions are compacted, and a
//! watcher that still needed them gets etcd's compacted response.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::EtcdError;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse, compare, range_request,
    request_op, response_op,
};
use crate::pb::mvccpb::{Event, KeyValue, event::EventType};

/// etcd's default `--max-txn-ops`.
pub(crate) const MAX_TXN_OPS: usize = 128;
/// etcd's smallest lease TTL with its default heartbeat/election settings (1.5 s, rounded up).
pub(crate) const MIN_LEASE_TTL: i64 = 2;
/// etcd's `MaxLeaseTTL`.
pub(crate) const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Bytes counted for each version, lease or event beside its keys and values (the map entry,
/// the revisions, the allocation headers).
const OVERHEAD: usize = 48;
/// Bytes counted for one lease.
const LEASE_BYTES: u64 = 64;

/// The changes of one revision, in the order they were made.
#[derive(Debug)]
pub(crate) struct Commit {
    pub(crate) rev: i64,
    /// Every event carries its `prev_kv` (when there was one); watchers strip it if unwanted.
    pub(crate) events: Vec<Event>,
    /// What this commit holds while it is in the event log.
    log_bytes: i64,
    /// The versions a compaction at or after this revision may drop because of it: the values
    /// it replaced or deleted, and its own deletion markers.
    frees: i64,
}

/// What one store user may keep under the keys it may write: mgmt's own limit (etcd has no
/// per-user quota), so that one host cannot fill the initiator's memory. Counted over live keys
/// only; history has the server's byte budget instead. A write that would take the user past
/// either limit fails with etcd's quota error (`etcdserver: mvcc: database space exceeded`,
/// `ResourceExhausted`) and changes nothing; writes that do not grow what is over the limit
/// (overwrites with smaller values, deletions) always pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Live keys.
    pub max_keys: u64,
    /// Live bytes: every key's length plus its value's.
    pub max_bytes: u64,
}

impl Quota {
    /// No limit: the root user, and users made through etcd's Auth API.
    pub const UNLIMITED: Quota = Quota {
        max_keys: u64::MAX,
        max_bytes: u64::MAX,
    };

    /// A mgmt host's: 1000 keys and 16 MiB, far above what a graph's exports need (one key per
    /// exported resource, a few hundred bytes of JSON each, more for a file's content), and
    /// small enough that a fleet of them fits the default total quota.
    pub const HOST: Quota = Quota {
        max_keys: 1000,
        max_bytes: 16 << 20,
    };
}

impl Default for Quota {
    fn default() -> Self {
        Self::HOST
    }
}

/// A key interval: from `.0` (included) to `.1` (excluded; `None`: every key after).
pub(crate) type Span = (Vec<u8>, Option<Vec<u8>>);

/// A user's quota with the keys it covers: every interval the user may write, merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserQuota {
    pub(crate) spans: Vec<Span>,
    pub(crate) quota: Quota,
}

impl UserQuota {
    fn covers(&self, key: &[u8]) -> bool {
        self.spans
            .iter()
            .any(|(lo, hi)| key >= lo.as_slice() && hi.as_ref().is_none_or(|h| key < h.as_slice()))
    }
}

/// The memory the store accounts for (keys and values with a per-entry overhead; the
/// allocator's own overhead comes on top).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// The current value of every key.
    pub live_bytes: u64,
    /// Superseded values, deletions, and the event log that watchers from past revisions
    /// replay: bounded by the history budget.
    pub history_bytes: u64,
    /// The lease table.
    pub lease_bytes: u64,
}

impl MemoryUsage {
    pub fn total(&self) -> u64 {
        self.live_bytes + self.history_bytes + self.lease_bytes
    }
}

/// The store's memory limits.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// Keep at most this many past revisions (automatic compaction); `None` = keep all.
    pub(crate) retention: Option<u64>,
    /// Compact the oldest revisions whenever history takes more than this many bytes.
    pub(crate) history_bytes: Option<u64>,
    /// Refuse writes (and lease grants) that would take the store past this many bytes.
    pub(crate) backend_bytes: Option<u64>,
    /// Refuse a lease grant by a limited user (see [`Writer::user`]) that already holds this
    /// many live leases; `None`: no cap.
    pub(crate) user_leases: Option<usize>,
}

/// Who writes, for the checks that depend on it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Writer<'a> {
    /// The quota it writes under; `None`: unlimited.
    pub(crate) quota: Option<&'a UserQuota>,
    /// The user limited to its own leases (a non-root user with auth on): it may attach keys
    /// to, renew, revoke, read and list only the leases it granted, and any other lease is to
    /// it as one that does not exist. `None`: every lease (auth off, or root).
    pub(crate) user: Option<&'a str>,
}

/// What a write would change, worked out before it is applied, for the quota checks.
#[derive(Debug, Default)]
struct Footprint {
    /// The value length each key written would end with (`None`: deleted).
    after: BTreeMap<Vec<u8>, Option<usize>>,
    /// Bytes the new versions add, with their copies in the event log.
    cost: u64,
}

/// One entry of a key's history: the value written at `mod_rev`, or a deletion.
#[derive(Debug, Clone)]
struct Version {
    mod_rev: i64,
    kv: Option<KeyValue>,
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
    /// The limited user that granted it; `None`: an unlimited caller (auth off, or root), and
    /// then only unlimited callers may use it.
    owner: Option<String>,
}

impl Lease {
    /// Whether `user` (see [`Writer::user`]) may use this lease.
    fn usable_by(&self, user: Option<&str>) -> bool {
        user.is_none_or(|u| self.owner.as_deref() == Some(u))
    }
}

/// Remaining life of a lease, for `LeaseTimeToLive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseInfo {
    pub(crate) remaining: i64,
    pub(crate) granted: i64,
    pub(crate) keys: Vec<Vec<u8>>,
}

/// A key range as etcd spells it: `end` empty = the single `key`; `end` = `\0` = every key from
/// `key` on; otherwise `[key, end)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyRange<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) end: &'a [u8],
}

impl<'a> KeyRange<'a> {
    pub(crate) fn new(key: &'a [u8], end: &'a [u8]) -> Self {
        Self { key, end }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            k == self.key
        } else if self.end == [0] {
            k >= self.key
        } else {
            k >= self.key && k < self.end
        }
    }

    /// Bounds for `BTreeMap::range`, or `None` when the range is empty (`range` would panic).
    fn bounds(&self) -> Option<KeyBounds<'a>> {
        if self.end.is_empty() {
            Some((Bound::Included(self.key), Bound::Included(self.key)))
        } else if self.end == [0] {
            Some((Bound::Included(self.key), Bound::Unbounded))
        } else if self.end > self.key {
            Some((Bound::Included(self.key), Bound::Excluded(self.end)))
        } else {
            None
        }
    }
}

/// Bounds for `BTreeMap::range` over byte-string keys.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The write in progress: every change shares `rev`; it becomes the store's revision only if
/// something changed.
struct Tx {
    rev: i64,
    events: Vec<Event>,
}

#[derive(Debug)]
pub(crate) struct Mvcc {
    rev: i64,
    compact_rev: i64,
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// One commit per revision in `[log_from.., rev]`, oldest first.
    log: VecDeque<Arc<Commit>>,
    /// The oldest revision the log can replay: `compact_rev`, or the next revision when the
    /// total quota needed the whole log dropped.
    log_from: i64,
    leases: HashMap<i64, Lease>,
    /// How many of `leases` each limited user owns (users with none are absent).
    user_leases: HashMap<String, usize>,
    /// Keep at most this many past revisions (automatic compaction); `None` = keep all.
    retention: Option<i64>,
    limits: Limits,
    /// Bytes of every version held (live and past), counted by `version_size`.
    bytes: i64,
    /// Of those, the bytes of the current values.
    live_bytes: i64,
    /// Bytes of the commits in `log`.
    log_bytes: i64,
}

impl Mvcc {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            rev: 1,
            compact_rev: 0,
            keys: BTreeMap::new(),
            log: VecDeque::new(),
            log_from: 0,
            leases: HashMap::new(),
            user_leases: HashMap::new(),
            retention: limits.retention.map(|r| r.max(1) as i64),
            limits,
            bytes: 0,
            live_bytes: 0,
            log_bytes: 0,
        }
    }

    pub(crate) fn rev(&self) -> i64 {
        self.rev
    }

    /// For `Status.db_size`: the memory accounted for.
    pub(crate) fn db_size(&self) -> i64 {
        self.memory().total() as i64
    }

    /// How many keys exist now (deleted ones not counted).
    pub(crate) fn live_keys(&self) -> usize {
        self.keys
            .values()
            .filter(|v| v.last().is_some_and(|v| v.kv.is_some()))
            .count()
    }

    /// The leases each limited user holds.
    pub(crate) fn user_lease_counts(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = self
            .user_leases
            .iter()
            .map(|(u, n)| (u.clone(), *n))
            .collect();
        out.sort();
        out
    }

    pub(crate) fn memory(&self) -> MemoryUsage {
        MemoryUsage {
            live_bytes: self.live_bytes as u64,
            history_bytes: (self.bytes - self.live_bytes + self.log_bytes) as u64,
            lease_bytes: self.leases.len() as u64 * LEASE_BYTES,
        }
    }

    // ---------------------------------------------------------------- reads

    /// `Range` at the store's current revision.
    pub(crate) fn range(&self, r: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        check_range(r)?;
        self.check_rev(r.revision, self.rev)?;
        Ok(self.range_at(r, self.rev))
    }

    fn check_rev(&self, rev: i64, current: i64) -> Result<(), EtcdError> {
        if rev > current {
            return Err(EtcdError::FutureRev);
        }
        if rev > 0 && rev < self.compact_rev {
            return Err(EtcdError::Compacted);
        }
        Ok(())
    }

    fn kv_at(versions: &[Version], rev: i64) -> Option<&KeyValue> {
        let idx = versions.partition_point(|v| v.mod_rev <= rev);
        if idx == 0 {
            None
        } else {
            versions[idx - 1].kv.as_ref()
        }
    }

    fn live_in(&self, range: KeyRange<'_>, rev: i64) -> impl Iterator<Item = &KeyValue> {
        range
            .bounds()
            .map(|b| self.keys.range::<[u8], _>(b))
            .into_iter()
            .flatten()
            .filter_map(move |(_, versions)| Self::kv_at(versions, rev))
    }

    /// `current` is the revision reads see: the store's, or the txn's once it has written.
    /// The request was checked already.
    fn range_at(&self, r: &RangeRequest, current: i64) -> RangeResponse {
        use range_request::{SortOrder, SortTarget};
        let rev = if r.revision > 0 { r.revision } else { current };
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        // Like etcd: everything is fetched when sorting or filtering, and `limit + 1` otherwise
        // so that `more` can be told.
        let fetch = if r.sort_order != SortOrder::None as i32 || filtered || r.limit <= 0 {
            usize::MAX
        } else {
            r.limit as usize + 1
        };
        let mut count = 0i64;
        let mut kvs = Vec::new();
        for kv in self.live_in(KeyRange::new(&r.key, &r.range_end), rev) {
            count += 1;
            if !r.count_only && kvs.len() < fetch {
                kvs.push(kv);
            }
        }
        let mut kvs: Vec<&KeyValue> = kvs
            .into_iter()
            .filter(|kv| {
                (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                    && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                    && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                    && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            })
            .collect();
        let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
        let mut order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
        if order == SortOrder::None && target != SortTarget::Key {
            order = SortOrder::Ascend;
        }
        if order != SortOrder::None {
            kvs.sort_by(|a, b| {
                let o = match target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                if order == SortOrder::Descend {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        let kvs = kvs
            .into_iter()
            .map(|kv| {
                if r.keys_only {
                    KeyValue {
                        value: Vec::new(),
                        ..kv.clone()
                    }
                } else {
                    kv.clone()
                }
            })
            .collect();
        RangeResponse {
            header: None,
            kvs,
            more,
            count,
        }
    }

    /// Commits since `start` (inclusive) up to now, or the compaction revision when `start` is
    /// too old.
    #[cfg(test)]
    pub(crate) fn commits_since(&self, start: i64) -> Result<Vec<Arc<Commit>>, i64> {
        if start < self.log_from {
            return Err(self.log_from);
        }
        let idx = self.log.partition_point(|c| c.rev < start);
        Ok(self.log.iter().skip(idx).cloned().collect())
    }

    /// The first commit at or after `start` (`None` when there is none yet), or the compaction
    /// revision when `start` is too old.
    pub(crate) fn commit_from(&self, start: i64) -> Result<Option<Arc<Commit>>, i64> {
        if start < self.log_from {
            return Err(self.log_from);
        }
        let idx = self.log.partition_point(|c| c.rev < start);
        Ok(self.log.get(idx).cloned())
    }

    // ---------------------------------------------------------------- writes

    /// A put by `writer`.
    pub(crate) fn put(
        &mut self,
        r: &PutRequest,
        writer: Writer<'_>,
    ) -> Result<(PutResponse, Option<Arc<Commit>>), EtcdError> {
        check_put(r)?;
        self.check_put_state(r, writer.user)?;
        let mut footprint = Footprint::default();
        self.footprint_put(&mut footprint, r);
        self.admit(&footprint, writer.quota)?;
        let mut tx = self.begin();
        let resp = self.apply_put(&mut tx, r);
        Ok((resp, self.commit(tx)))
    }

    pub(crate) fn delete_range(
        &mut self,
        r: &DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, Option<Arc<Commit>>), EtcdError> {
        if r.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        let mut tx = self.begin();
        let resp = self.apply_delete(&mut tx, r);
        Ok((resp, self.commit(tx)))
    }

    /// A txn by `writer`.
    pub(crate) fn txn(
        &mut self,
        r: &TxnRequest,
        writer: Writer<'_>,
    ) -> Result<(TxnResponse, Option<Arc<Commit>>), EtcdError> {
        check_txn(r)?;
        // Like etcd, every compare along the chosen path is evaluated against the state before
        // the txn, and every request on it is checked, before anything is applied: a txn
        // applies completely or not at all. The quotas are checked on all its writes together.
        let mut path = Vec::new();
        self.choose_path(r, &mut path);
        let mut cursor = 0;
        self.check_path(r, &path, &mut cursor, writer.user)?;
        let mut footprint = Footprint::default();
        let mut cursor = 0;
        self.footprint_txn(&mut footprint, r, &path, &mut cursor);
        self.admit(&footprint, writer.quota)?;
        let mut tx = self.begin();
        let mut cursor = 0;
        let resp = self.apply_txn(&mut tx, r, &path, &mut cursor);
        Ok((resp, self.commit(tx)))
    }

    pub(crate) fn compact(&mut self, rev: i64) -> Result<(), EtcdError> {
        if rev <= self.compact_rev {
            return Err(EtcdError::Compacted);
        }
        if rev > self.rev {
            return Err(EtcdError::FutureRev);
        }
        let mut freed = 0i64;
        self.keys.retain(|key, versions| {
            let upto = versions.partition_point(|v| v.mod_rev <= rev);
            if upto > 0 {
                // The newest version at or before `rev` survives if it is a value: a range at
                // `rev` must still see it.
                let drop = if versions[upto - 1].kv.is_some() {
                    upto - 1
                } else {
                    upto
                };
                for v in versions.drain(..drop) {
                    freed += version_size(key, &v);
                }
            }
            !versions.is_empty()
        });
        while self.log.front().is_some_and(|c| c.rev < rev) {
            if let Some(c) = self.log.pop_front() {
                self.log_bytes -= c.log_bytes;
            }
        }
        self.bytes -= freed;
        self.compact_rev = rev;
        self.log_from = self.log_from.max(rev);
        Ok(())
    }

    fn begin(&self) -> Tx {
        Tx {
            rev: self.rev + 1,
            events: Vec::new(),
        }
    }

    fn commit(&mut self, tx: Tx) -> Option<Arc<Commit>> {
        if tx.events.is_empty() {
            return None;
        }
        self.rev = tx.rev;
        let mut log_bytes = 0;
        let mut frees = 0;
        for ev in &tx.events {
            log_bytes += (OVERHEAD
                + ev.kv.as_ref().map_or(0, kv_bytes)
                + ev.prev_kv.as_ref().map_or(0, kv_bytes)) as i64;
            if let Some(prev) = &ev.prev_kv {
                frees += value_size(prev);
            }
            if ev.r#type == EventType::Delete as i32
                && let Some(kv) = &ev.kv
            {
                frees += tombstone_size(&kv.key);
            }
        }
        let commit = Arc::new(Commit {
            rev: tx.rev,
            events: tx.events,
            log_bytes,
            frees,
        });
        self.log_bytes += log_bytes;
        self.log.push_back(commit.clone());
        if let Some(keep) = self.retention
            && self.rev - self.compact_rev.max(1) >= 2 * keep
        {
            // Amortised: compacting is a full pass, so do it once per `keep` revisions.
            let _ = self.compact(self.rev - keep);
        }
        if let Some(budget) = self.limits.history_bytes
            && self.memory().history_bytes > budget
        {
            // Amortised too: down to half the budget, so the next pass is budget/2 bytes away.
            let rev = self.compaction_point(budget / 2);
            let _ = self.compact(rev);
        }
        Some(commit)
    }

    /// The oldest revision whose compaction brings history down to `target` bytes (the
    /// current one when nothing older does).
    fn compaction_point(&self, target: u64) -> i64 {
        let excess = self.memory().history_bytes.saturating_sub(target) as i64;
        // Compacting at a commit's revision drops the commits before it from the log, and
        // every version that it or an earlier commit superseded.
        let mut freed = 0;
        for c in &self.log {
            if c.rev > self.compact_rev {
                freed += c.frees;
            }
            if freed >= excess {
                return c.rev;
            }
            freed += c.log_bytes;
        }
        self.rev
    }

    // ---------------------------------------------------------------- quotas

    fn footprint_put(&self, f: &mut Footprint, p: &PutRequest) {
        let prev = match f.after.get(&p.key) {
            Some(after) => *after,
            None => self.latest(&p.key).map(|kv| kv.value.len()),
        };
        let len = if p.ignore_value {
            prev.unwrap_or(0)
        } else {
            p.value.len()
        };
        f.after.insert(p.key.clone(), Some(len));
        // The version (`value_size`), and its event in the log as `commit` counts it: the
        // event's own overhead, the new value, and the value it replaces (its `prev_kv`).
        let key = p.key.len();
        let version = 2 * key + len + OVERHEAD;
        let event = OVERHEAD + (key + len + OVERHEAD) + prev.map_or(0, |p| key + p + OVERHEAD);
        f.cost += (version + event) as u64;
    }

    fn footprint_delete(&self, f: &mut Footprint, d: &DeleteRangeRequest) {
        let range = KeyRange::new(&d.key, &d.range_end);
        let doomed: Vec<Vec<u8>> = self
            .live_in(range, self.rev)
            .filter(|kv| !f.after.contains_key(&kv.key))
            .map(|kv| kv.key.clone())
            .chain(
                f.after
                    .iter()
                    .filter(|(k, after)| after.is_some() && range.contains(k))
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        for key in doomed {
            f.after.insert(key, None);
        }
    }

    /// The writes on the chosen path of a txn (checked already), in order.
    fn footprint_txn(&self, f: &mut Footprint, r: &TxnRequest, path: &[bool], cursor: &mut usize) {
        let ok = path[*cursor];
        *cursor += 1;
        for op in if ok { &r.success } else { &r.failure } {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => self.footprint_put(f, p),
                Some(request_op::Request::RequestDeleteRange(d)) => self.footprint_delete(f, d),
                Some(request_op::Request::RequestTxn(t)) => self.footprint_txn(f, t, path, cursor),
                Some(request_op::Request::RequestRange(_)) | None => {}
            }
        }
    }

    /// Live keys and bytes (key and value lengths) in `spans`.
    fn usage(&self, spans: &[Span]) -> (u64, u64) {
        let mut keys = 0;
        let mut bytes = 0;
        for (lo, hi) in spans {
            let upper = match hi {
                Some(h) if h.as_slice() <= lo.as_slice() => continue,
                Some(h) => Bound::Excluded(h.as_slice()),
                None => Bound::Unbounded,
            };
            for (key, versions) in self
                .keys
                .range::<[u8], _>((Bound::Included(lo.as_slice()), upper))
            {
                if let Some(kv) = versions.last().and_then(|v| v.kv.as_ref()) {
                    keys += 1;
                    bytes += (key.len() + kv.value.len()) as u64;
                }
            }
        }
        (keys, bytes)
    }

    /// Checks a write's footprint against the total quota (making room by compacting history
    /// first, as history is ours to drop) and the caller's own.
    fn admit(&mut self, f: &Footprint, quota: Option<&UserQuota>) -> Result<(), EtcdError> {
        if f.cost > 0 {
            self.make_room(f.cost)?;
        }
        let Some(q) = quota else {
            return Ok(());
        };
        let (mut keys, mut bytes) = (0i64, 0i64);
        for (key, after) in &f.after {
            if !q.covers(key) {
                continue;
            }
            let size = |len: Option<usize>| len.map_or((0, 0), |l| (1, (key.len() + l) as i64));
            let (k0, b0) = size(self.latest(key).map(|kv| kv.value.len()));
            let (k1, b1) = size(*after);
            keys += k1 - k0;
            bytes += b1 - b0;
        }
        if keys <= 0 && bytes <= 0 {
            return Ok(());
        }
        let (used_keys, used_bytes) = self.usage(&q.spans);
        let over =
            |used: u64, delta: i64, max: u64| delta > 0 && used.saturating_add_signed(delta) > max;
        if over(used_keys, keys, q.quota.max_keys) || over(used_bytes, bytes, q.quota.max_bytes) {
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    /// Whether `cost` more bytes fit the total quota, compacting all history if that helps.
    fn make_room(&mut self, cost: u64) -> Result<(), EtcdError> {
        let Some(max) = self.limits.backend_bytes else {
            return Ok(());
        };
        if self.memory().total().saturating_add(cost) <= max {
            return Ok(());
        }
        if self.rev > self.compact_rev {
            let _ = self.compact(self.rev);
        }
        if self.memory().total().saturating_add(cost) > max && !self.log.is_empty() {
            // The latest commit too (a big delete holds every value it deleted): watchers
            // resume from the next revision, told of the compaction.
            self.log.clear();
            self.log_bytes = 0;
            self.log_from = self.rev + 1;
        }
        if self.memory().total().saturating_add(cost) <= max {
            Ok(())
        } else {
            Err(EtcdError::NoSpace)
        }
    }

    /// The revision reads inside `tx` see.
    fn current(&self, tx: &Tx) -> i64 {
        if tx.events.is_empty() {
            self.rev
        } else {
            tx.rev
        }
    }

    fn latest(&self, key: &[u8]) -> Option<&KeyValue> {
        self.keys
            .get(key)
            .and_then(|v| v.last())
            .and_then(|v| v.kv.as_ref())
    }

    /// `user` as in [`Writer::user`]: another user's lease is one that does not exist.
    fn check_put_state(&self, r: &PutRequest, user: Option<&str>) -> Result<(), EtcdError> {
        if (r.ignore_value || r.ignore_lease) && self.latest(&r.key).is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        if r.lease != 0 && self.lease(r.lease, user).is_none() {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(())
    }

    fn apply_put(&mut self, tx: &mut Tx, r: &PutRequest) -> PutResponse {
        let prev = self.latest(&r.key).cloned();
        let value = if r.ignore_value {
            prev.as_ref().map(|p| p.value.clone()).unwrap_or_default()
        } else {
            r.value.clone()
        };
        let lease = if r.ignore_lease {
            prev.as_ref().map_or(0, |p| p.lease)
        } else {
            r.lease
        };
        let kv = KeyValue {
            key: r.key.clone(),
            create_revision: prev.as_ref().map_or(tx.rev, |p| p.create_revision),
            mod_revision: tx.rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        if old_lease != lease
            && let Some(l) = self.leases.get_mut(&old_lease)
        {
            l.keys.remove(&r.key);
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(r.key.clone());
        }
        let version = Version {
            mod_rev: tx.rev,
            kv: Some(kv.clone()),
        };
        self.bytes += version_size(&r.key, &version);
        self.live_bytes += value_size(&kv) - prev.as_ref().map_or(0, value_size);
        self.keys.entry(r.key.clone()).or_default().push(version);
        tx.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        PutResponse {
            header: None,
            prev_kv: if r.prev_kv { prev } else { None },
        }
    }

    fn apply_delete(&mut self, tx: &mut Tx, r: &DeleteRangeRequest) -> DeleteRangeResponse {
        let current = self.current(tx);
        let doomed: Vec<KeyValue> = self
            .live_in(KeyRange::new(&r.key, &r.range_end), current)
            .cloned()
            .collect();
        for prev in &doomed {
            if let Some(l) = self.leases.get_mut(&prev.lease) {
                l.keys.remove(&prev.key);
            }
            let tomb = Version {
                mod_rev: tx.rev,
                kv: None,
            };
            self.bytes += version_size(&prev.key, &tomb);
            self.live_bytes -= value_size(prev);
            self.keys.entry(prev.key.clone()).or_default().push(tomb);
            tx.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: prev.key.clone(),
                    mod_revision: tx.rev,
                    ..KeyValue::default()
                }),
                prev_kv: Some(prev.clone()),
            });
        }
        DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs: if r.prev_kv { doomed } else { Vec::new() },
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        use compare::{CompareResult, CompareTarget, TargetUnion};
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        let kvs: Vec<&KeyValue> = self
            .live_in(KeyRange::new(&c.key, &c.range_end), self.rev)
            .collect();
        let empty = KeyValue::default();
        let kvs = if kvs.is_empty() {
            // A value cannot be compared with a missing key (etcd: "nil == empty string in
            // grpc; no way to represent missing value"); other targets compare with zero.
            if target == CompareTarget::Value {
                return false;
            }
            vec![&empty]
        } else {
            kvs
        };
        let result = CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal);
        kvs.into_iter().all(|kv| {
            let ord = match (&c.target_union, target) {
                (Some(TargetUnion::Value(v)), CompareTarget::Value) => kv.value.as_slice().cmp(v),
                (Some(TargetUnion::Version(v)), CompareTarget::Version) => kv.version.cmp(v),
                (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create) => {
                    kv.create_revision.cmp(v)
                }
                (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod) => kv.mod_revision.cmp(v),
                (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => kv.lease.cmp(v),
                // A target without its value compares with the zero value, as in Go.
                (_, CompareTarget::Value) => kv.value.as_slice().cmp(&[][..]),
                (_, CompareTarget::Version) => kv.version.cmp(&0),
                (_, CompareTarget::Create) => kv.create_revision.cmp(&0),
                (_, CompareTarget::Mod) => kv.mod_revision.cmp(&0),
                (_, CompareTarget::Lease) => kv.lease.cmp(&0),
            };
            match result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        })
    }

    /// Depth-first: one bool per txn (outer first) on the chosen path.
    fn choose_path(&self, r: &TxnRequest, path: &mut Vec<bool>) {
        let ok = r.compare.iter().all(|c| self.compare(c));
        path.push(ok);
        for op in if ok { &r.success } else { &r.failure } {
            if let Some(request_op::Request::RequestTxn(t)) = &op.request {
                self.choose_path(t, path);
            }
        }
    }

    fn check_path(
        &self,
        r: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
        user: Option<&str>,
    ) -> Result<(), EtcdError> {
        let ok = path[*cursor];
        *cursor += 1;
        for op in if ok { &r.success } else { &r.failure } {
            match &op.request {
                Some(request_op::Request::RequestRange(q)) => {
                    self.check_rev(q.revision, self.rev)?
                }
                Some(request_op::Request::RequestPut(p)) => self.check_put_state(p, user)?,
                Some(request_op::Request::RequestTxn(t)) => {
                    self.check_path(t, path, cursor, user)?
                }
                Some(request_op::Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn apply_txn(
        &mut self,
        tx: &mut Tx,
        r: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> TxnResponse {
        let ok = path[*cursor];
        *cursor += 1;
        let mut responses = Vec::new();
        for op in if ok { &r.success } else { &r.failure } {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(q)) => {
                    let current = self.current(tx);
                    response_op::Response::ResponseRange(self.range_at(q, current))
                }
                Some(request_op::Request::RequestPut(p)) => {
                    response_op::Response::ResponsePut(self.apply_put(tx, p))
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    response_op::Response::ResponseDeleteRange(self.apply_delete(tx, d))
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    response_op::Response::ResponseTxn(self.apply_txn(tx, t, path, cursor))
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        }
    }

    // ---------------------------------------------------------------- leases

    /// Grants a lease to `user` (as in [`Writer::user`]); `id` 0 picks one. Returns the id and
    /// the TTL granted. A limited user may not pick the id (whether one is taken would tell it
    /// of other users' leases: `etcdserver: permission denied`), and may hold at most
    /// [`Limits::user_leases`] at once (`etcdserver: too many requests`).
    pub(crate) fn lease_grant(
        &mut self,
        id: i64,
        ttl: i64,
        user: Option<&str>,
        now: Instant,
    ) -> Result<(i64, i64), EtcdError> {
        if ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        if let Some(u) = user {
            if id != 0 {
                return Err(EtcdError::PermissionDenied);
            }
            let held = self.user_leases.get(u).copied().unwrap_or(0);
            if self.limits.user_leases.is_some_and(|max| held >= max) {
                return Err(EtcdError::TooManyRequests);
            }
        }
        self.make_room(LEASE_BYTES)?;
        let id = if id == 0 {
            loop {
                let candidate = rand::random::<i64>() & i64::MAX;
                if candidate != 0 && !self.leases.contains_key(&candidate) {
                    break candidate;
                }
            }
        } else if self.leases.contains_key(&id) {
            return Err(EtcdError::LeaseExists);
        } else {
            id
        };
        let ttl = ttl.max(MIN_LEASE_TTL);
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline: now + Duration::from_secs(ttl as u64),
                keys: BTreeSet::new(),
                owner: user.map(str::to_string),
            },
        );
        if let Some(u) = user {
            *self.user_leases.entry(u.to_string()).or_default() += 1;
        }
        Ok((id, ttl))
    }

    /// Lease `id`, if it exists and `user` (as in [`Writer::user`]) may use it.
    fn lease(&self, id: i64, user: Option<&str>) -> Option<&Lease> {
        self.leases.get(&id).filter(|l| l.usable_by(user))
    }

    /// Revokes a lease `user` may use, deleting its keys in one revision.
    pub(crate) fn lease_revoke(
        &mut self,
        id: i64,
        user: Option<&str>,
    ) -> Result<Option<Arc<Commit>>, EtcdError> {
        if self.lease(id, user).is_none() {
            return Err(EtcdError::LeaseNotFound);
        }
        let lease = self.leases.remove(&id).ok_or(EtcdError::LeaseNotFound)?;
        if let Some(owner) = &lease.owner
            && let Some(held) = self.user_leases.get_mut(owner)
        {
            *held -= 1;
            if *held == 0 {
                self.user_leases.remove(owner);
            }
        }
        let mut tx = self.begin();
        for key in lease.keys {
            self.apply_delete(
                &mut tx,
                &DeleteRangeRequest {
                    key,
                    ..Default::default()
                },
            );
        }
        Ok(self.commit(tx))
    }

    /// Keys attached to a lease `user` may use (for permission checks before a revoke).
    pub(crate) fn lease_keys(&self, id: i64, user: Option<&str>) -> Option<Vec<Vec<u8>>> {
        self.lease(id, user)
            .map(|l| l.keys.iter().cloned().collect())
    }

    /// Renews a live lease `user` may use; returns its TTL, or `None` when it is unknown (to
    /// `user`) or already expired.
    pub(crate) fn lease_renew(&mut self, id: i64, user: Option<&str>, now: Instant) -> Option<i64> {
        let lease = self.leases.get_mut(&id).filter(|l| l.usable_by(user))?;
        if lease.deadline <= now {
            return None;
        }
        lease.deadline = now + Duration::from_secs(lease.ttl as u64);
        Some(lease.ttl)
    }

    pub(crate) fn lease_info(
        &self,
        id: i64,
        user: Option<&str>,
        now: Instant,
    ) -> Option<LeaseInfo> {
        let lease = self.lease(id, user)?;
        Some(LeaseInfo {
            remaining: lease.deadline.saturating_duration_since(now).as_secs() as i64,
            granted: lease.ttl,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    /// The leases `user` may use, sorted.
    pub(crate) fn lease_ids(&self, user: Option<&str>) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.usable_by(user))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// When the next lease expires, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }

    /// Revokes every lease whose deadline has passed; one commit per lease that had keys.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Arc<Commit>> {
        let mut due: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        due.into_iter()
            .filter_map(|id| self.lease_revoke(id, None).ok().flatten())
            .collect()
    }
}

fn version_size(key: &[u8], v: &Version) -> i64 {
    match &v.kv {
        Some(kv) => value_size(kv),
        None => tombstone_size(key),
    }
}

/// A value version: its key in the map, and the key and value in the `KeyValue`.
fn value_size(kv: &KeyValue) -> i64 {
    (kv.key.len() + kv_bytes(kv)) as i64
}

fn tombstone_size(key: &[u8]) -> i64 {
    (key.len() + OVERHEAD) as i64
}

fn kv_bytes(kv: &KeyValue) -> usize {
    kv.key.len() + kv.value.len() + OVERHEAD
}

fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// The shape checks etcd makes before a txn reaches the store: op counts, empty keys, and no
/// key written twice (or both put and deleted) on one path.
fn check_txn(r: &TxnRequest) -> Result<(), EtcdError> {
    check_txn_ops(r)?;
    for branch in [&r.success, &r.failure] {
        let mut puts = BTreeSet::new();
        let mut dels = Vec::new();
        collect_writes(branch, &mut puts, &mut dels)?;
        for (key, end) in &dels {
            let range = KeyRange::new(key, end);
            if puts.iter().any(|p: &Vec<u8>| range.contains(p)) {
                return Err(EtcdError::DuplicateKey);
            }
        }
    }
    Ok(())
}

fn check_txn_ops(r: &TxnRequest) -> Result<(), EtcdError> {
    if r.compare.len() > MAX_TXN_OPS
        || r.success.len() > MAX_TXN_OPS
        || r.failure.len() > MAX_TXN_OPS
    {
        return Err(EtcdError::TooManyOps);
    }
    for c in &r.compare {
        if c.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(q)) => check_range(q)?,
            Some(request_op::Request::RequestPut(p)) => check_put(p)?,
            Some(request_op::Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(EtcdError::EmptyKey);
            }
            Some(request_op::Request::RequestTxn(t)) => check_txn_ops(t)?,
            _ => {}
        }
    }
    Ok(())
}

type Interval = (Vec<u8>, Vec<u8>);

fn collect_writes(
    ops: &[RequestOp],
    puts: &mut BTreeSet<Vec<u8>>,
    dels: &mut Vec<Interval>,
) -> Result<(), EtcdError> {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                if !puts.insert(p.key.clone()) {
                    return Err(EtcdError::DuplicateKey);
                }
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                dels.push((d.key.clone(), d.range_end.clone()));
            }
            Some(request_op::Request::RequestTxn(t)) => {
                // The two branches of a nested txn exclude each other: each may write what the
                // other writes, but neither may write what the enclosing branch writes.
                let mut merged = BTreeSet::new();
                for branch in [&t.success, &t.failure] {
                    let mut inner = BTreeSet::new();
                    collect_writes(branch, &mut inner, dels)?;
                    merged.extend(inner);
                }
                for key in merged {
                    if !puts.insert(key) {
                        return Err(EtcdError::DuplicateKey);
                    }
                }
            }
            Some(request_op::Request::RequestRange(_)) | None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(m: &mut Mvcc, k: &str, v: &str) -> i64 {
        let (_, c) = m
            .put(
                &PutRequest {
                    key: k.into(),
                    value: v.into(),
                    ..Default::default()
                },
                Writer::default(),
            )
            .unwrap();
        c.unwrap().rev
    }

    fn get(m: &Mvcc, k: &str, end: &str, rev: i64) -> Result<Vec<(String, String)>, EtcdError> {
        let r = m.range(&RangeRequest {
            key: k.into(),
            range_end: end.into(),
            revision: rev,
            ..Default::default()
        })?;
        Ok(r.kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key).unwrap(),
                    String::from_utf8(kv.value).unwrap(),
                )
            })
            .collect())
    }

    #[test]
    fn revisions_history_and_compaction() {
        let mut m = Mvcc::new(Limits::default());
        assert_eq!(m.rev(), 1);
        assert_eq!(put(&mut m, "a", "1"), 2);
        assert_eq!(put(&mut m, "a", "2"), 3);
        assert_eq!(put(&mut m, "b", "x"), 4);
        let (resp, c) = m
            .delete_range(&DeleteRangeRequest {
                key: "zz".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!((resp.deleted, c.is_none(), m.rev()), (0, true, 4));
        assert_eq!(get(&m, "a", "", 2).unwrap(), vec![("a".into(), "1".into())]);
        assert_eq!(get(&m, "a", "\0", 0).unwrap().len(), 2);
        assert_eq!(get(&m, "a", "", 9), Err(EtcdError::FutureRev));
        m.compact(3).unwrap();
        assert_eq!(get(&m, "a", "", 2), Err(EtcdError::Compacted));
        assert_eq!(get(&m, "a", "", 3).unwrap(), vec![("a".into(), "2".into())]);
        assert_eq!(m.compact(3), Err(EtcdError::Compacted));
        assert_eq!(m.commits_since(2).unwrap_err(), 3);
        assert_eq!(m.commits_since(3).unwrap().len(), 2);
    }

    #[test]
    fn txn_rejects_put_inside_deleted_range() {
        let mut m = Mvcc::new(Limits::default());
        let txn = TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key: "p/".into(),
                            range_end: "p0".into(),
                            ..Default::default()
                        },
                    )),
                },
                RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: "p/x".into(),
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            m.txn(&txn, Writer::default()).unwrap_err(),
            EtcdError::DuplicateKey
        );
    }

    #[test]
    fn lease_expiry_deletes_keys_in_one_revision() {
        let mut m = Mvcc::new(Limits::default());
        let t0 = Instant::now();
        let (id, ttl) = m.lease_grant(0, 1, None, t0).unwrap();
        assert_eq!(ttl, MIN_LEASE_TTL);
        for k in ["h/1", "h/2"] {
            m.put(
                &PutRequest {
                    key: k.into(),
                    lease: id,
                    ..Default::default()
                },
                Writer::default(),
            )
            .unwrap();
        }
        assert!(m.expire(t0 + Duration::from_secs(1)).is_empty());
        let commits = m.expire(t0 + Duration::from_secs(2));
        assert_eq!(commits.len(), 1);
        assert_eq!(commits[0].events.len(), 2);
        assert!(m.lease_renew(id, None, t0).is_none());
        assert!(get(&m, "h/", "h0", 0).unwrap().is_empty());
    }

    #[test]
    fn a_limited_user_sees_only_its_own_leases_within_its_cap() {
        let mut m = Mvcc::new(Limits {
            user_leases: Some(2),
            ..Limits::default()
        });
        let now = Instant::now();
        let (a, _) = m.lease_grant(0, 10, Some("a"), now).unwrap();
        let (root, _) = m.lease_grant(0, 10, None, now).unwrap();
        // Another user's lease, or root's, is one that does not exist.
        for id in [a, root] {
            assert_eq!(m.lease_renew(id, Some("b"), now), None);
            assert_eq!(m.lease_info(id, Some("b"), now), None);
            assert_eq!(m.lease_keys(id, Some("b")), None);
            assert_eq!(
                m.lease_revoke(id, Some("b")).unwrap_err(),
                EtcdError::LeaseNotFound
            );
            let put = PutRequest {
                key: "b/k".into(),
                lease: id,
                ..Default::default()
            };
            let b = Writer {
                user: Some("b"),
                ..Writer::default()
            };
            assert_eq!(m.put(&put, b).unwrap_err(), EtcdError::LeaseNotFound);
            let txn = txn_of(vec![request_op::Request::RequestPut(put)]);
            assert_eq!(m.txn(&txn, b).unwrap_err(), EtcdError::LeaseNotFound);
        }
        assert_eq!(m.lease_ids(Some("b")), Vec::<i64>::new());
        assert_eq!(m.lease_ids(Some("a")), vec![a]);
        assert_eq!(m.lease_ids(None).len(), 2);
        assert_eq!(m.lease_renew(a, Some("a"), now), Some(10));
        // A limited user may not pick an id (taken or not), and holds at most two leases.
        assert_eq!(
            m.lease_grant(root, 10, Some("a"), now),
            Err(EtcdError::PermissionDenied)
        );
        let (a2, _) = m.lease_grant(0, 10, Some("a"), now).unwrap();
        assert_eq!(
            m.lease_grant(0, 10, Some("a"), now),
            Err(EtcdError::TooManyRequests)
        );
        m.lease_grant(0, 10, Some("b"), now).unwrap();
        m.lease_grant(0, 10, None, now).unwrap();
        // Revoked or expired, a lease frees its place.
        m.lease_revoke(a2, Some("a")).unwrap();
        let (a3, _) = m.lease_grant(0, 2, Some("a"), now).unwrap();
        assert!(m.expire(now + Duration::from_secs(2)).is_empty());
        assert!(!m.lease_ids(Some("a")).contains(&a3));
        m.lease_grant(0, 10, Some("a"), now).unwrap();
    }

    fn quota(prefix: &str, max_keys: u64, max_bytes: u64) -> UserQuota {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        UserQuota {
            spans: vec![(prefix.as_bytes().to_vec(), Some(end))],
            quota: Quota {
                max_keys,
                max_bytes,
            },
        }
    }

    fn put_req(k: &str, v: &[u8]) -> PutRequest {
        PutRequest {
            key: k.into(),
            value: v.to_vec(),
            ..Default::default()
        }
    }

    fn txn_of(ops: Vec<request_op::Request>) -> TxnRequest {
        TxnRequest {
            success: ops
                .into_iter()
                .map(|r| RequestOp { request: Some(r) })
                .collect(),
            ..Default::default()
        }
    }

    /// What `memory()` says, recomputed from scratch: the accounting never drifts.
    fn recount(m: &Mvcc) -> (i64, i64, i64) {
        let mut bytes = 0;
        let mut live = 0;
        for (key, versions) in &m.keys {
            for v in versions {
                bytes += version_size(key, v);
            }
            if let Some(kv) = versions.last().and_then(|v| v.kv.as_ref()) {
                live += value_size(kv);
            }
        }
        let log = m.log.iter().map(|c| c.log_bytes).sum();
        (bytes, live, log)
    }

    #[test]
    fn user_quota_counts_keys_and_bytes_and_a_refusal_changes_nothing() {
        let mut m = Mvcc::new(Limits::default());
        let q = quota("h/", 2, 100);
        let w = Writer {
            quota: Some(&q),
            ..Writer::default()
        };
        m.put(&put_req("h/a", &[b'x'; 40]), w).unwrap();
        m.put(&put_req("h/b", &[b'x'; 40]), w).unwrap();
        // A third key: over max_keys.
        assert_eq!(
            m.put(&put_req("h/c", b"1"), w).unwrap_err(),
            EtcdError::NoSpace
        );
        // Growing a value past max_bytes (2 × 43 now; +20 makes 106).
        assert_eq!(
            m.put(&put_req("h/a", &[b'x'; 60]), w).unwrap_err(),
            EtcdError::NoSpace
        );
        assert_eq!(m.rev(), 3, "refused writes make no revision");
        // Shrinking, and keys outside the quota's spans, always pass.
        m.put(&put_req("h/a", b"small"), w).unwrap();
        m.put(&put_req("other", &[b'x'; 500]), w).unwrap();
        // A txn is counted whole: replacing a key (delete one, put another) fits...
        let replace = txn_of(vec![
            request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: "h/b".into(),
                ..Default::default()
            }),
            request_op::Request::RequestPut(put_req("h/c", b"new")),
        ]);
        m.txn(&replace, w).unwrap();
        // ...two new keys do not, and neither is written.
        let grow = txn_of(vec![
            request_op::Request::RequestPut(put_req("h/d", b"1")),
            request_op::Request::RequestPut(put_req("h/e", b"2")),
        ]);
        let before = m.rev();
        assert_eq!(m.txn(&grow, w).unwrap_err(), EtcdError::NoSpace);
        assert_eq!(m.rev(), before);
        assert!(get(&m, "h/d", "", 0).unwrap().is_empty());
        assert_eq!(m.usage(&q.spans), (2, 3 + 5 + 3 + 3));
        // Without a quota (root, auth off) only the total counts.
        m.txn(&grow, Writer::default()).unwrap();
        let (bytes, live, log) = recount(&m);
        assert_eq!((m.bytes, m.live_bytes, m.log_bytes), (bytes, live, log));
    }

    #[test]
    fn history_budget_compacts_the_oldest_revisions() {
        let budget = 64 * 1024;
        let mut m = Mvcc::new(Limits {
            history_bytes: Some(budget),
            ..Limits::default()
        });
        let value = vec![b'v'; 4096];
        for i in 0..200 {
            m.put(&put_req(&format!("k{}", i % 3), &value), Writer::default())
                .unwrap();
            assert!(m.memory().history_bytes <= budget, "after put {i}");
            let (bytes, live, log) = recount(&m);
            assert_eq!((m.bytes, m.live_bytes, m.log_bytes), (bytes, live, log));
        }
        let mem = m.memory();
        assert_eq!(mem.live_bytes, 3 * (2 * 2 + 4096 + OVERHEAD) as u64);
        // The current values are all there; old revisions are gone, as etcd says.
        assert_eq!(get(&m, "k", "l", 0).unwrap().len(), 3);
        assert!(m.compact_rev > 100);
        assert_eq!(get(&m, "k0", "", 2), Err(EtcdError::Compacted));
        assert_eq!(m.commit_from(2).unwrap_err(), m.compact_rev);
        assert_eq!(m.commit_from(m.rev()).unwrap().unwrap().rev, m.rev());
    }

    #[test]
    fn total_quota_compacts_history_before_refusing() {
        let mut m = Mvcc::new(Limits {
            backend_bytes: Some(64 * 1024),
            ..Limits::default()
        });
        let value = vec![b'v'; 8192];
        // Overwrites fit: their history is dropped to make room.
        for _ in 0..50 {
            m.put(&put_req("same", &value), Writer::default()).unwrap();
        }
        assert!(m.memory().total() <= 64 * 1024);
        // New keys fill it up, then fail; a delete still works and makes room again.
        let mut stored = 1;
        let refused = loop {
            match m.put(&put_req(&format!("k{stored}"), &value), Writer::default()) {
                Ok(_) => stored += 1,
                Err(e) => break e,
            }
            assert!(stored < 10, "the quota refuses at some point");
        };
        assert_eq!(refused, EtcdError::NoSpace);
        assert!(m.memory().total() <= 64 * 1024);
        m.delete_range(&DeleteRangeRequest {
            key: "k".into(),
            range_end: "l".into(),
            ..Default::default()
        })
        .unwrap();
        m.put(&put_req("k1", &value), Writer::default()).unwrap();
        // Leases count too: granting them fills the rest.
        let now = Instant::now();
        let granted = (0..2000)
            .take_while(|_| m.lease_grant(0, 10, None, now).is_ok())
            .count();
        assert!(granted < 2000);
        assert_eq!(
            m.lease_grant(0, 10, None, now).unwrap_err(),
            EtcdError::NoSpace
        );
        assert!(m.memory().total() <= 64 * 1024);
    }
}
