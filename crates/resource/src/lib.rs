//! The contract between the engine and every resource kind.
//!
//! A resource is a value (its parameters) plus three behaviours: `validate` (pure), `watch`
//! (long-running, emits an event whenever the resource's state *may* have changed) and
//! `check_apply` (converge in one call, or say what would change). The engine owns scheduling;
//! a resource sees the world only through the contexts handed to it here.
//!
//! This crate must never know about YAML, etcd, SSH or the engine's internals.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
pub use tokio_util::sync::CancellationToken;

/// `kind[name]`: the identity of a resource within one graph.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct ResId {
    pub kind: String,
    pub name: String,
}

impl ResId {
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        ResId {
            kind: kind.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ResId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.kind, self.name)
    }
}

/// What a resource *is* on the machine, independent of its name: used for automatic edges
/// (a file depends on the file resource that manages its parent directory).
/// `key` is kind-specific and normalised (for files: the absolute path without trailing `/`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Uid {
    pub kind: &'static str,
    pub key: String,
}

/// Whether `check_apply` may change the machine.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Only look: report `InSync` or `WouldChange`, never change anything.
    Check,
    /// Converge: report `InSync` or `Changed`.
    Apply,
}

/// The result of one `check_apply`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InSync,
    Changed,
    WouldChange,
}

/// Per-resource meta parameters (mgmt's `meta:`). Units follow mgmt: `delay` in milliseconds,
/// `poll` in seconds, `limit` in events per second (0 = unlimited).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Meta {
    /// Number of retries after a failed check_apply; -1 retries forever.
    pub retry: i64,
    /// Milliseconds to wait between retries.
    pub delay: u64,
    /// Seconds between polls; 0 means "use watch".
    pub poll: u64,
    /// Maximum check_apply rate in events per second; 0 means unlimited.
    pub limit: f64,
    /// Token bucket size for `limit`.
    pub burst: u32,
    /// Never change anything for this resource (like `--noop`, for one vertex).
    pub noop: bool,
    /// Add automatic edges (file -> parent directory).
    pub autoedge: bool,
    /// Accepted for compatibility with mgmt graphs; grouping is not implemented and has no effect.
    pub autogroup: bool,
    /// Named semaphores, as mgmt has them: `lock` or `lock:count` (a number after the last
    /// `:`, 1 when there is none); a check_apply runs only while it holds a permit of each, and
    /// vertices naming the same string share it (see `semaphores`).
    pub sema: Vec<String>,
}

impl Meta {
    /// `sema` parsed: (id, count) sorted by id, so that every vertex acquires in the same order
    /// and two vertices holding one each can never wait for each other. As in mgmt the whole
    /// string is the id (`lock:1` and `lock:2` are two semaphores) and the count is the number
    /// after its last `:`, or 1 when what follows is not a number (`db:primary`). An empty id,
    /// a count of 0 or below, or an id given twice is an error.
    pub fn semaphores(&self) -> Result<Vec<(String, u32)>, String> {
        let mut out: Vec<(String, u32)> = Vec::with_capacity(self.sema.len());
        for id in &self.sema {
            let count = match id.rsplit_once(':').map(|(_, n)| n.parse::<i64>()) {
                Some(Ok(n)) if n < 1 => {
                    return Err(format!("sema `{id}`: the count must be at least 1"));
                }
                Some(Ok(n)) => u32::try_from(n).unwrap_or(u32::MAX),
                _ => 1,
            };
            if id.is_empty() {
                return Err("a sema id must not be empty".to_string());
            }
            if out.iter().any(|(seen, _)| seen == id) {
                return Err(format!("sema `{id}` is given twice"));
            }
            out.push((id.clone(), count));
        }
        out.sort();
        Ok(out)
    }
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            retry: 0,
            delay: 0,
            poll: 0,
            limit: 0.0,
            burst: 0,
            noop: false,
            autoedge: true,
            autogroup: true,
            sema: Vec::new(),
        }
    }
}

/// An error from a resource: what went wrong, as text meant for people.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ResourceError {
    #[error("invalid parameter `{field}`: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Failed(String),
}

impl ResourceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ResourceError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn failed(message: impl fmt::Display) -> Self {
        ResourceError::Failed(message.to_string())
    }
}

/// Where a watcher reports. Events coalesce: many events before the engine looks are one.
///
/// A flag and a `Notify` rather than a channel: there is one per vertex, and a bounded tokio
/// channel (with its cache-padded halves) was 500 bytes of a 10,000-vertex graph's each.
#[derive(Debug)]
pub struct EventSink {
    flag: Arc<EventFlag>,
}

#[derive(Debug, Default)]
struct EventFlag {
    pending: AtomicBool,
    /// Live sinks: the receiver ends (`None`) once the last one is gone.
    sinks: AtomicUsize,
    notify: Notify,
}

/// `EventReceiver::try_recv` found nothing pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoEvent;

/// The engine's end of an `EventSink`.
#[derive(Debug)]
pub struct EventReceiver {
    flag: Arc<EventFlag>,
}

impl EventSink {
    /// A sink and the receiving end the engine listens on.
    pub fn channel() -> (EventSink, EventReceiver) {
        let flag = Arc::new(EventFlag {
            sinks: AtomicUsize::new(1),
            ..EventFlag::default()
        });
        (EventSink { flag: flag.clone() }, EventReceiver { flag })
    }

    /// The state may have changed. Never blocks; a pending event already covers this one.
    pub fn event(&self) {
        if !self.flag.pending.swap(true, Ordering::AcqRel) {
            self.flag.notify.notify_one();
        }
    }
}

impl Clone for EventSink {
    fn clone(&self) -> Self {
        self.flag.sinks.fetch_add(1, Ordering::AcqRel);
        EventSink {
            flag: self.flag.clone(),
        }
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        if self.flag.sinks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.flag.notify.notify_one();
        }
    }
}

impl EventReceiver {
    /// Takes a pending event without waiting.
    pub fn try_recv(&mut self) -> Result<(), NoEvent> {
        if self.flag.pending.swap(false, Ordering::AcqRel) {
            Ok(())
        } else {
            Err(NoEvent)
        }
    }

    /// Waits for the next (coalesced) event; `None` once every sink is dropped and no event is
    /// pending. Cancel-safe: an event is only taken when this returns it.
    pub async fn recv(&mut self) -> Option<()> {
        loop {
            if self.flag.pending.swap(false, Ordering::AcqRel) {
                return Some(());
            }
            if self.flag.sinks.load(Ordering::Acquire) == 0 {
                return None;
            }
            // `notify_one` keeps a permit when nobody waits, so an event (or the last drop)
            // between the checks above and this wait is not lost.
            self.flag.notify.notified().await;
        }
    }
}

/// Handed to `watch`. A watcher must call `running()` once its watch is established (the
/// engine's first check_apply waits for it, so no change between the first check and the
/// start of the watch can be missed), then `event()` on every possible change, and return
/// promptly once `cancel` fires.
#[derive(Clone, Debug)]
pub struct WatchCtx {
    pub events: EventSink,
    pub cancel: CancellationToken,
    pub hostname: Arc<str>,
}

impl WatchCtx {
    /// The watch is established; this also counts as the first event.
    pub fn running(&self) {
        self.events.event();
    }
    pub fn event(&self) {
        self.events.event();
    }
}

/// Handed to `check_apply`.
#[derive(Clone, Debug)]
pub struct ApplyCtx {
    /// A `notify` parent changed since the last check_apply: exec reruns, svc reloads.
    pub refresh: bool,
    pub hostname: Arc<str>,
    /// Cancelled when the resource is removed from the graph or the engine stops; a long
    /// check_apply (an exec) should give up when it fires.
    pub cancel: CancellationToken,
}

/// One resource kind's behaviour. Values are immutable once built; any state a kind needs
/// between calls lives behind its own lock.
#[async_trait]
pub trait Resource: Send + Sync + fmt::Debug + 'static {
    fn kind(&self) -> &'static str;
    fn name(&self) -> &str;
    fn meta(&self) -> &Meta;

    fn id(&self) -> ResId {
        ResId::new(self.kind(), self.name())
    }

    /// Pure checks of the parameters; no IO.
    fn validate(&self) -> Result<(), ResourceError>;

    /// The canonical parameters, named as in the YAML graph (without `name` and `meta`).
    /// Two resources of one kind with equal `name`, `meta` and `params` are the same resource:
    /// a graph swap leaves such a vertex running untouched. Exports publish this value, and
    /// `KindInfo::build` must rebuild an equal resource from it.
    fn params(&self) -> serde_json::Value;

    /// What this resource manages, for automatic edges.
    fn uids(&self) -> Vec<Uid> {
        Vec::new()
    }

    /// What this resource would depend on automatically if some resource in the graph
    /// manages it (see `uids`).
    fn auto_edges(&self) -> Vec<Uid> {
        Vec::new()
    }

    /// Long-running: report possible changes until `ctx.cancel` fires. The default is a
    /// resource with nothing to watch: it reports running once and waits.
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        ctx.running();
        ctx.cancel.cancelled().await;
        Ok(())
    }

    /// Converge in one call (`Mode::Apply`) or report what would change (`Mode::Check`).
    async fn check_apply(&self, ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError>;
}

/// Structural equality used by graph swaps.
pub fn same_resource(a: &dyn Resource, b: &dyn Resource) -> bool {
    a.kind() == b.kind() && a.name() == b.name() && a.meta() == b.meta() && a.params() == b.params()
}

/// A build failure, pointing at the offending field when there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    pub field: Option<String>,
    pub message: String,
}

/// How to build one kind from its parameters.
#[derive(Clone, Copy)]
pub struct KindInfo {
    pub kind: &'static str,
    /// Every parameter name the kind accepts (besides `name` and `meta`).
    pub fields: &'static [&'static str],
    /// Build from `params` (a JSON object with fields named as in YAML). Must not do IO.
    pub build: BuildFn,
}

/// Builds one resource of a kind: its name, its parameters (a JSON object), its meta.
pub type BuildFn =
    fn(name: &str, params: serde_json::Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError>;

impl fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindInfo")
            .field("kind", &self.kind)
            .field("fields", &self.fields)
            .finish()
    }
}

/// All kinds known to this binary, plus kinds recognised as mgmt's but not implemented yet
/// (so a graph using them gets a clear error naming the kind rather than "unknown kind").
#[derive(Debug, Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, KindInfo>,
    unimplemented: Vec<&'static str>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn register(&mut self, info: KindInfo) {
        self.kinds.insert(info.kind, info);
    }
    pub fn register_unimplemented(&mut self, kind: &'static str) {
        self.unimplemented.push(kind);
    }
    pub fn get(&self, kind: &str) -> Option<&KindInfo> {
        self.kinds.get(kind)
    }
    pub fn is_unimplemented(&self, kind: &str) -> bool {
        self.unimplemented.contains(&kind)
    }
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
    pub fn build(
        &self,
        kind: &str,
        name: &str,
        params: serde_json::Value,
        meta: Meta,
    ) -> Result<Arc<dyn Resource>, BuildError> {
        match self.kinds.get(kind) {
            Some(info) => (info.build)(name, params, meta),
            None => Err(BuildError {
                field: None,
                message: format!("unknown resource kind `{kind}`"),
            }),
        }
    }
}

/// A resolved graph: what the engine runs. Vertices are unique by id; edges go parent -> child.
#[derive(Debug, Clone, Default)]
pub struct ResGraph {
    pub vertices: Vec<Arc<dyn Resource>>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Edge {
    pub from: ResId,
    pub to: ResId,
    /// A change in `from` refreshes `to`.
    pub notify: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sema(list: &[&str]) -> Result<Vec<(String, u32)>, String> {
        Meta {
            sema: list.iter().map(|s| s.to_string()).collect(),
            ..Meta::default()
        }
        .semaphores()
    }

    #[test]
    fn semaphores_parse_sorted_with_default_count() {
        assert_eq!(
            sema(&["z:3", "a", "host:db:2", "db:primary"]).unwrap(),
            vec![
                ("a".to_string(), 1),
                ("db:primary".to_string(), 1),
                ("host:db:2".to_string(), 2),
                ("z:3".to_string(), 3)
            ]
        );
        assert!(sema(&[]).unwrap().is_empty());
    }

    #[test]
    fn bad_semaphores_are_errors() {
        for bad in [&["a:0"][..], &["a:-1"], &[""], &["a", "a"]] {
            assert!(sema(bad).is_err(), "{bad:?}");
        }
    }
}
