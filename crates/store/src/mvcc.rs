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

/// The changes of one revision, in the order they were made.
#[derive(Debug)]
pub(crate) struct Commit {
    pub(crate) rev: i64,
    /// Every event carries its `prev_kv` (when there was one); watchers strip it if unwanted.
    pub(crate) events: Vec<Event>,
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
    /// One commit per revision in `(compact_rev.., rev]`, oldest first.
    log: VecDeque<Arc<Commit>>,
    leases: HashMap<i64, Lease>,
    /// Keep at most this many past revisions (automatic compaction); `None` = keep all.
    retention: Option<i64>,
    /// Approximate bytes held, for `Status.db_size`.
    bytes: i64,
}

impl Mvcc {
    pub(crate) fn new(retention: Option<u64>) -> Self {
        Self {
            rev: 1,
            compact_rev: 0,
            keys: BTreeMap::new(),
            log: VecDeque::new(),
            leases: HashMap::new(),
            retention: retention.map(|r| r.max(1) as i64),
            bytes: 0,
        }
    }

    pub(crate) fn rev(&self) -> i64 {
        self.rev
    }

    pub(crate) fn db_size(&self) -> i64 {
        self.bytes
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
    pub(crate) fn commits_since(&self, start: i64) -> Result<Vec<Arc<Commit>>, i64> {
        if start < self.compact_rev {
            return Err(self.compact_rev);
        }
        let idx = self.log.partition_point(|c| c.rev < start);
        Ok(self.log.iter().skip(idx).cloned().collect())
    }

    // ---------------------------------------------------------------- writes

    pub(crate) fn put(
        &mut self,
        r: &PutRequest,
    ) -> Result<(PutResponse, Option<Arc<Commit>>), EtcdError> {
        check_put(r)?;
        self.check_put_state(r)?;
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

    pub(crate) fn txn(
        &mut self,
        r: &TxnRequest,
    ) -> Result<(TxnResponse, Option<Arc<Commit>>), EtcdError> {
        check_txn(r)?;
        // Like etcd, every compare along the chosen path is evaluated against the state before
        // the txn, and every request on it is checked, before anything is applied: a txn
        // applies completely or not at all.
        let mut path = Vec::new();
        self.choose_path(r, &mut path);
        let mut cursor = 0;
        self.check_path(r, &path, &mut cursor)?;
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
            self.log.pop_front();
        }
        self.bytes -= freed;
        self.compact_rev = rev;
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
        let commit = Arc::new(Commit {
            rev: tx.rev,
            events: tx.events,
        });
        self.log.push_back(commit.clone());
        if let Some(keep) = self.retention
            && self.rev - self.compact_rev.max(1) >= 2 * keep
        {
            // Amortised: compacting is a full pass, so do it once per `keep` revisions.
            let _ = self.compact(self.rev - keep);
        }
        Some(commit)
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

    fn check_put_state(&self, r: &PutRequest) -> Result<(), EtcdError> {
        if (r.ignore_value || r.ignore_lease) && self.latest(&r.key).is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        if r.lease != 0 && !self.leases.contains_key(&r.lease) {
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
    ) -> Result<(), EtcdError> {
        let ok = path[*cursor];
        *cursor += 1;
        for op in if ok { &r.success } else { &r.failure } {
            match &op.request {
                Some(request_op::Request::RequestRange(q)) => {
                    self.check_rev(q.revision, self.rev)?
                }
                Some(request_op::Request::RequestPut(p)) => self.check_put_state(p)?,
                Some(request_op::Request::RequestTxn(t)) => self.check_path(t, path, cursor)?,
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

    /// Grants a lease; `id` 0 picks one. Returns the id and the TTL granted.
    pub(crate) fn lease_grant(
        &mut self,
        id: i64,
        ttl: i64,
        now: Instant,
    ) -> Result<(i64, i64), EtcdError> {
        if ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
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
            },
        );
        Ok((id, ttl))
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub(crate) fn lease_revoke(&mut self, id: i64) -> Result<Option<Arc<Commit>>, EtcdError> {
        let lease = self.leases.remove(&id).ok_or(EtcdError::LeaseNotFound)?;
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

    /// Keys attached to a lease (for permission checks before a revoke).
    pub(crate) fn lease_keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
    }

    /// Renews a live lease; returns its TTL, or `None` when it is unknown or already expired.
    pub(crate) fn lease_renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        if lease.deadline <= now {
            return None;
        }
        lease.deadline = now + Duration::from_secs(lease.ttl as u64);
        Some(lease.ttl)
    }

    pub(crate) fn lease_info(&self, id: i64, now: Instant) -> Option<LeaseInfo> {
        let lease = self.leases.get(&id)?;
        Some(LeaseInfo {
            remaining: lease.deadline.saturating_duration_since(now).as_secs() as i64,
            granted: lease.ttl,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    pub(crate) fn lease_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
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
            .filter_map(|id| self.lease_revoke(id).ok().flatten())
            .collect()
    }
}

fn version_size(key: &[u8], v: &Version) -> i64 {
    (key.len() + v.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len()) + 48) as i64
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
            .put(&PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })
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
        let mut m = Mvcc::new(None);
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
        let mut m = Mvcc::new(None);
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
        assert_eq!(m.txn(&txn).unwrap_err(), EtcdError::DuplicateKey);
    }

    #[test]
    fn lease_expiry_deletes_keys_in_one_revision() {
        let mut m = Mvcc::new(None);
        let t0 = Instant::now();
        let (id, ttl) = m.lease_grant(0, 1, t0).unwrap();
        assert_eq!(ttl, MIN_LEASE_TTL);
        for k in ["h/1", "h/2"] {
            m.put(&PutRequest {
                key: k.into(),
                lease: id,
                ..Default::default()
            })
            .unwrap();
        }
        assert!(m.expire(t0 + Duration::from_secs(1)).is_empty());
        let commits = m.expire(t0 + Duration::from_secs(2));
        assert_eq!(commits.len(), 1);
        assert_eq!(commits[0].events.len(), 2);
        assert!(m.lease_renew(id, t0).is_none());
        assert!(get(&m, "h/", "h0", 0).unwrap().is_empty());
    }
}
