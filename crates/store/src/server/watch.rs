//! The Watch service: one session per gRPC stream, holding that stream's watchers.
//!
//! A session is a plain stream (no task of its own) driven by tonic as the client reads: it
//! multiplexes the client's requests, the server's news of new revisions, and the progress
//! ticker. Each watcher knows the next revision it is due; the session reads the oldest commit
//! any of its watchers is due from the core's event log, one commit per step and only once the
//! client has taken the responses of the last, so it never holds more than one commit's events
//! however slow its client: history from a past start revision and live commits take the same
//! path, in order, nothing missed or repeated. A watcher due a revision that was compacted
//! meanwhile (history has a byte budget) is cancelled with the compaction revision, as etcd
//! does.
//!
//! A non-root user's streams and watchers count against its caps while they last (the session
//! gives its share back when it ends): one stream too many is refused, one watcher too many is
//! answered created and cancelled, with `etcdserver: too many requests` in both cases.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::auth::Caller;
use crate::mvcc::{Commit, KeyRange};
use crate::pb::etcdserverpb::{
    WatchCreateRequest, WatchRequest, WatchResponse, watch_create_request::FilterType,
    watch_request::RequestUnion, watch_server::Watch,
};
use crate::pb::mvccpb::{Event, event::EventType};

pub(crate) struct WatchService(pub(crate) Arc<Shared>);

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = self.0.caller(&req)?;
        let user = self.0.limited_user(&caller);
        if let Some(u) = &user {
            self.0.open_watch_stream(u)?;
        }
        let session = Session::new(self.0.clone(), caller, user, req.into_inner());
        let stream = futures::stream::unfold(session, |mut s| async move {
            s.next().await.map(|resp| (Ok(resp), s))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

struct Watcher {
    key: Vec<u8>,
    end: Vec<u8>,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    /// The next revision this watcher is due: every commit below it was sent, or predates it.
    next_rev: i64,
    /// Whether events went out since the last progress tick.
    busy: bool,
}

impl Watcher {
    fn filter(&self, commit: &Commit) -> Vec<Event> {
        let range = KeyRange::new(&self.key, &self.end);
        commit
            .events
            .iter()
            .filter(|ev| {
                let key = ev.kv.as_ref().map_or(&[][..], |kv| &kv.key[..]);
                let put = ev.r#type == EventType::Put as i32;
                range.contains(key) && if put { !self.no_put } else { !self.no_delete }
            })
            .map(|ev| Event {
                r#type: ev.r#type,
                kv: ev.kv.clone(),
                prev_kv: if self.prev_kv {
                    ev.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect()
    }
}

struct Session {
    shared: Arc<Shared>,
    caller: Caller,
    /// The caller when it is held to the per-user caps: this session counts as one of its
    /// streams, and each of `watchers` as one of its watchers.
    user: Option<String>,
    requests: Streaming<WatchRequest>,
    /// The store's latest revision: changes wake the session up.
    latest: watch::Receiver<i64>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    pending: VecDeque<WatchResponse>,
    ticker: tokio::time::Interval,
}

impl Session {
    /// A session whose stream was counted already (for a limited `user`).
    fn new(
        shared: Arc<Shared>,
        caller: Caller,
        user: Option<String>,
        requests: Streaming<WatchRequest>,
    ) -> Self {
        shared.metrics.streams.fetch_add(1, Ordering::Relaxed);
        let latest = shared.latest.subscribe();
        let period = shared.progress_interval.max(Duration::from_millis(10));
        let ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        Self {
            shared,
            caller,
            user,
            requests,
            latest,
            watchers: BTreeMap::new(),
            next_id: 0,
            pending: VecDeque::new(),
            ticker,
        }
    }

    async fn next(&mut self) -> Option<WatchResponse> {
        loop {
            if let Some(resp) = self.pending.pop_front() {
                return Some(resp);
            }
            // Seen before the core is read: a commit after this wakes `changed` below.
            self.latest.borrow_and_update();
            if self.step() {
                // A long replay of commits this session does not want must not hog the thread.
                tokio::task::consume_budget().await;
                continue;
            }
            tokio::select! {
                _ = self.shared.cancel.cancelled() => return None,
                req = self.requests.next() => match req {
                    Some(Ok(req)) => self.handle(req),
                    // The client closed its side, or sent something we cannot decode.
                    Some(Err(_)) | None => return None,
                },
                changed = self.latest.changed() => if changed.is_err() {
                    return None;
                },
                _ = self.ticker.tick() => self.progress(),
            }
        }
    }

    fn response(&self, rev: i64, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: self.shared.header(rev),
            watch_id,
            ..Default::default()
        }
    }

    fn handle(&mut self, req: WatchRequest) {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c),
            // An unknown id is ignored, as etcd does.
            Some(RequestUnion::CancelRequest(c)) if self.watchers.remove(&c.watch_id).is_some() => {
                self.release(1);
                let rev = self.shared.core().rev();
                let mut resp = self.response(rev, c.watch_id);
                resp.canceled = true;
                self.pending.push_back(resp);
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Every event up to the revision in the header has been sent: the store's,
                // or what the watcher furthest behind has had so far.
                let rev = self.shared.core().rev();
                let rev = self
                    .watchers
                    .values()
                    .map(|w| w.next_rev - 1)
                    .fold(rev, i64::min);
                // Not tied to one watcher: etcd answers with watch id -1.
                self.pending.push_back(self.response(rev, -1));
            }
            Some(RequestUnion::CancelRequest(_)) | None => {}
        }
    }

    fn create(&mut self, c: WatchCreateRequest) {
        let denied = self
            .shared
            .auth()
            .check(&self.caller, &c.key, &c.range_end, false)
            .err();
        let id = if let Some(e) = denied {
            // etcd puts the gRPC error's Go rendering here.
            Err(format!("rpc error: code = {:?} desc = {e}", e.code()))
        } else if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                Err("mvcc: duplicate watch ID provided on the WatchStream".to_string())
            } else {
                Ok(c.watch_id)
            }
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            Ok(self.next_id)
        };
        // Counted last: a refused create takes no place.
        let id = match (id, &self.user) {
            (Ok(id), Some(u)) => match self.shared.add_watcher(u) {
                Ok(()) => Ok(id),
                Err(e) => Err(format!("rpc error: code = {:?} desc = {e}", e.code())),
            },
            (id, _) => id,
        };
        let rev = self.shared.core().rev();
        let id = match id {
            Ok(id) => id,
            Err(reason) => {
                let mut resp = self.response(rev, if c.watch_id != 0 { c.watch_id } else { -1 });
                resp.created = true;
                resp.canceled = true;
                resp.cancel_reason = reason;
                self.pending.push_back(resp);
                return;
            }
        };
        let watcher = Watcher {
            key: c.key,
            end: c.range_end,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify,
            // From a past revision: its history comes from the log, step by step.
            next_rev: if c.start_revision > 0 {
                c.start_revision
            } else {
                rev + 1
            },
            busy: false,
        };
        let mut created = self.response(rev, id);
        created.created = true;
        self.pending.push_back(created);
        self.watchers.insert(id, watcher);
        self.shared.metrics.watchers.fetch_add(1, Ordering::Relaxed);
    }

    /// Delivers the oldest commit that a watcher is due, or cancels the watchers due a
    /// compacted revision. False when every watcher is up to date.
    fn step(&mut self) -> bool {
        let Some(due) = self.watchers.values().map(|w| w.next_rev).min() else {
            return false;
        };
        let shared = self.shared.clone();
        let core = shared.core();
        let rev = core.rev();
        if due > rev {
            return false;
        }
        match core.commit_from(due) {
            Ok(Some(commit)) => {
                drop(core);
                self.deliver(&commit);
                true
            }
            Ok(None) => false,
            Err(compact_rev) => {
                drop(core);
                let behind: Vec<i64> = self
                    .watchers
                    .iter()
                    .filter(|(_, w)| w.next_rev < compact_rev)
                    .map(|(id, _)| *id)
                    .collect();
                for id in behind {
                    self.watchers.remove(&id);
                    self.release(1);
                    let mut resp = self.response(rev, id);
                    resp.canceled = true;
                    resp.compact_revision = compact_rev;
                    self.pending.push_back(resp);
                }
                true
            }
        }
    }

    /// `commit` to every watcher due it: the oldest any is due, so none skips a revision.
    fn deliver(&mut self, commit: &Commit) {
        let mut watchers = std::mem::take(&mut self.watchers);
        for (id, w) in watchers.iter_mut() {
            if w.next_rev > commit.rev {
                continue;
            }
            w.next_rev = commit.rev + 1;
            let events = w.filter(commit);
            if !events.is_empty() {
                w.busy = true;
                let mut resp = self.response(commit.rev, *id);
                resp.events = events;
                self.pending.push_back(resp);
            }
        }
        self.watchers = watchers;
    }

    /// Gives back the places of `watchers` watchers that ended.
    fn release(&self, watchers: usize) {
        self.shared
            .metrics
            .watchers
            .fetch_sub(watchers as u64, Ordering::Relaxed);
        if let Some(u) = &self.user {
            self.shared.release_watches(u, false, watchers);
        }
    }

    fn progress(&mut self) {
        let rev = self.shared.core().rev();
        let mut quiet = Vec::new();
        for (id, w) in self.watchers.iter_mut() {
            // Only a watcher that has had everything up to `rev` may be told so.
            if w.progress_notify && !w.busy && w.next_rev > rev {
                quiet.push(*id);
            }
            w.busy = false;
        }
        for id in quiet {
            self.pending.push_back(self.response(rev, id));
        }
    }
}

impl Drop for Session {
    /// The stream and its remaining watchers give their places back.
    fn drop(&mut self) {
        let m = &self.shared.metrics;
        m.streams.fetch_sub(1, Ordering::Relaxed);
        m.watchers
            .fetch_sub(self.watchers.len() as u64, Ordering::Relaxed);
        if let Some(u) = &self.user {
            self.shared.release_watches(u, true, self.watchers.len());
        }
    }
}
