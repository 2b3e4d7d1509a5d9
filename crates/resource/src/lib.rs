//! The contract between the engine and every resource kind.
//!
//! A resource is a value (its parameters) plus three behaviours: `validate` (pure), `watch`
//! (long-running, emits an event whenever the resource's state *may* have changed) and
//! `check_apply` (converge in one call, or say what would change). The engine owns scheduling;
//! a resource sees the world only through the contexts handed to it here.
//!
//! This crate must never know about YAML, etcd, SSH or the engine's internals.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
pub use tokio_util::sync::CancellationToken;

mod group;
pub use group::{GROUP_NAMES_SHOWN, autogroup, group_name, may_group};

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

/// `meta.retry`: how often a failed check_apply is tried again. mgmt writes -1 for "forever".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Retry {
    Forever,
    Times(u32),
}

impl Default for Retry {
    fn default() -> Self {
        Retry::Times(0)
    }
}

impl Retry {
    /// mgmt's number: -1 retries forever, 0 or more is a count; anything else is an error.
    pub fn from_mgmt(n: i64) -> Result<Retry, String> {
        match n {
            -1 => Ok(Retry::Forever),
            n => u32::try_from(n).map(Retry::Times).map_err(|_| {
                format!(
                    "{n} is out of range: write -1 to retry forever or a count from 0 to {}",
                    u32::MAX
                )
            }),
        }
    }

    /// The number mgmt writes: -1 for forever.
    pub fn to_mgmt(self) -> i64 {
        match self {
            Retry::Forever => -1,
            Retry::Times(n) => i64::from(n),
        }
    }

    /// Whether a check_apply that has now failed `failures` times in a row is tried again.
    pub fn allows(self, failures: u32) -> bool {
        match self {
            Retry::Forever => true,
            Retry::Times(n) => failures <= n,
        }
    }
}

/// `meta.limit`: check_applies per second, finite and above zero (no limit is `None`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Rate(f64);

impl Rate {
    /// `per_second` as a rate; `None` unless it is finite and above zero.
    pub fn per_second(per_second: f64) -> Option<Rate> {
        (per_second.is_finite() && per_second > 0.0).then_some(Rate(per_second))
    }

    /// mgmt's `limit`: 0 and `.inf` mean no limit (`None`); a negative number or NaN is an
    /// error.
    pub fn limit(per_second: f64) -> Result<Option<Rate>, String> {
        if per_second == 0.0 || per_second == f64::INFINITY {
            return Ok(None);
        }
        Rate::per_second(per_second).map(Some).ok_or_else(|| {
            format!("{per_second} is out of range: write a rate above 0 (0 or .inf: no limit)")
        })
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// One named semaphore of `meta.sema`, as mgmt has them: `lock` or `lock:count`. As in mgmt the
/// whole string is the name (`lock:1` and `lock:2` are two semaphores) and the count is the
/// number after its last `:`, or 1 when what follows is not a number (`db:primary`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Sema {
    name: String,
    count: u32,
}

impl Sema {
    /// An empty name or a count of 0 or below is an error.
    pub fn parse(text: &str) -> Result<Sema, String> {
        let count = match text.rsplit_once(':').map(|(_, n)| n.parse::<i64>()) {
            Some(Ok(n)) if n < 1 => {
                return Err(format!("sema `{text}`: the count must be at least 1"));
            }
            Some(Ok(n)) => u32::try_from(n).unwrap_or(u32::MAX),
            _ => 1,
        };
        if text.is_empty() {
            return Err("a sema id must not be empty".to_string());
        }
        Ok(Sema {
            name: text.to_string(),
            count,
        })
    }

    /// The whole string as written: vertices naming the same one share the semaphore.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many check_applies may hold it at once (at least 1).
    pub fn count(&self) -> u32 {
        self.count
    }
}

/// `meta.sema`: sorted by name, each name once, so that every vertex acquires in the same order
/// and two vertices holding one each can never wait for each other.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Semaphores(Vec<Sema>);

impl Semaphores {
    /// Each entry parsed with [`Sema::parse`]; a name given twice is an error.
    pub fn parse<S: AsRef<str>>(list: impl IntoIterator<Item = S>) -> Result<Semaphores, String> {
        let mut out: Vec<Sema> = Vec::new();
        for text in list {
            let sema = Sema::parse(text.as_ref())?;
            if out.iter().any(|seen| seen.name == sema.name) {
                return Err(format!("sema `{}` is given twice", sema.name));
            }
            out.push(sema);
        }
        out.sort();
        Ok(Semaphores(out))
    }

    /// In acquiring order (sorted by name).
    pub fn iter(&self) -> std::slice::Iter<'_, Sema> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Semaphores {
    type Item = &'a Sema;
    type IntoIter = std::slice::Iter<'a, Sema>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Per-resource meta parameters (mgmt's `meta:`), parsed: every value here is in range.
///
/// Written (YAML, and the JSON of exported resources in the store) with mgmt's names and units:
/// The longest `delay` or `poll`: a year. Longer waits mean nothing to a running engine, and an
/// unbounded one would overflow the clock it is added to.
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// `retry` a count or -1 (forever), `delay` in milliseconds, `poll` in seconds (0: watch),
/// `limit` in check_applies per second (0 or `.inf`: no limit), `burst`, `noop`, `autoedge`,
/// `autogroup`, `sema` a list of strings. [`Meta::set`] is the one parser of those values
/// (yamlgraph uses it field by field, `Deserialize` for a whole JSON object).
#[derive(Clone, PartialEq, Debug)]
pub struct Meta {
    /// Retries after a failed check_apply.
    pub retry: Retry,
    /// The wait between retries (and between restarts of a failed watch, 1 s when zero).
    pub delay: Duration,
    /// Poll this often instead of watching; `None`: use the watch.
    pub poll: Option<Duration>,
    /// The most check_applies per second; `None`: no limit.
    pub limit: Option<Rate>,
    /// Token bucket size for `limit` (at least 1 is used).
    pub burst: u32,
    /// Never change anything for this resource (like `--noop`, for one vertex).
    pub noop: bool,
    /// Add automatic edges (file -> parent directory).
    pub autoedge: bool,
    /// May be merged with other vertices of its kind into one vertex (mgmt's automatic
    /// grouping: all `pkg` resources become one apt transaction). Only kinds that offer a
    /// [`Resource::group_key`] are ever grouped; see [`autogroup`] for the rule.
    pub autogroup: bool,
    /// Named semaphores: a check_apply runs only while it holds a permit of each, and vertices
    /// naming the same string share it.
    pub sema: Semaphores,
}

impl Meta {
    /// Every field `meta:` accepts, as written.
    pub const FIELDS: &'static [&'static str] = &[
        "retry",
        "delay",
        "poll",
        "limit",
        "burst",
        "noop",
        "autoedge",
        "autogroup",
        "sema",
    ];

    /// Sets field `key` from its written value; the error says what is wrong with the value
    /// (or that there is no such field). `.inf`, which JSON cannot hold, is
    /// [`Rate::limit`]'s to read.
    pub fn set(&mut self, key: &str, value: &serde_json::Value) -> Result<(), String> {
        fn typed<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, String> {
            T::deserialize(v).map_err(|e| e.to_string())
        }
        match key {
            "retry" => self.retry = Retry::from_mgmt(typed(value)?)?,
            "delay" => {
                let ms: u64 = typed(value)?;
                if ms > MAX_WAIT.as_millis() as u64 {
                    return Err(format!(
                        "{ms} is out of range: at most {} (a year, in milliseconds)",
                        MAX_WAIT.as_millis()
                    ));
                }
                self.delay = Duration::from_millis(ms);
            }
            "poll" => {
                let secs: u64 = typed(value)?;
                if secs > MAX_WAIT.as_secs() {
                    return Err(format!(
                        "{secs} is out of range: at most {} (a year, in seconds)",
                        MAX_WAIT.as_secs()
                    ));
                }
                self.poll = Some(Duration::from_secs(secs)).filter(|p| !p.is_zero());
            }
            "limit" => self.limit = Rate::limit(typed(value)?)?,
            "burst" => self.burst = typed(value)?,
            "noop" => self.noop = typed(value)?,
            "autoedge" => self.autoedge = typed(value)?,
            "autogroup" => self.autogroup = typed(value)?,
            "sema" => self.sema = Semaphores::parse(typed::<Vec<String>>(value)?)?,
            other => {
                let list: Vec<String> = Meta::FIELDS.iter().map(|f| format!("`{f}`")).collect();
                return Err(format!(
                    "unknown field `{other}`, expected one of {}",
                    list.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// A whole `meta` object: the defaults, then each field given set with [`Meta::set`].
    pub fn from_json(fields: &serde_json::Map<String, serde_json::Value>) -> Result<Meta, String> {
        let mut meta = Meta::default();
        for (key, value) in fields {
            meta.set(key, value).map_err(|e| {
                if Meta::FIELDS.contains(&key.as_str()) {
                    format!("`{key}`: {e}")
                } else {
                    e
                }
            })?;
        }
        Ok(meta)
    }
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            retry: Retry::default(),
            delay: Duration::ZERO,
            poll: None,
            limit: None,
            burst: 0,
            noop: false,
            autoedge: true,
            autogroup: true,
            sema: Semaphores::default(),
        }
    }
}

/// The written form of [`Meta`], field for field.
#[derive(Serialize)]
struct MetaJson<'a> {
    retry: i64,
    delay: u64,
    poll: u64,
    limit: f64,
    burst: u32,
    noop: bool,
    autoedge: bool,
    autogroup: bool,
    sema: Vec<&'a str>,
}

impl Serialize for Meta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MetaJson {
            retry: self.retry.to_mgmt(),
            delay: u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX),
            poll: self.poll.map_or(0, |p| p.as_secs()),
            limit: self.limit.map_or(0.0, Rate::get),
            burst: self.burst,
            noop: self.noop,
            autoedge: self.autoedge,
            autogroup: self.autogroup,
            sema: self.sema.iter().map(Sema::name).collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Meta, D::Error> {
        let fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        Meta::from_json(&fields).map_err(serde::de::Error::custom)
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
/// between calls lives behind its own lock. (`Any`: a kind's [`Resource::group`] downcasts
/// its members, `&**member as &dyn Any`.)
#[async_trait]
pub trait Resource: Any + Send + Sync + fmt::Debug + 'static {
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

    /// What the build accepted but ignores (see [`BuildWarning`]); most kinds have none.
    fn build_warnings(&self) -> Vec<BuildWarning> {
        Vec::new()
    }

    /// What this resource manages, for automatic edges.
    fn uids(&self) -> Vec<Uid> {
        Vec::new()
    }

    /// What this resource would depend on automatically if some resource in the graph
    /// manages it (see `uids`).
    fn auto_edges(&self) -> Vec<Uid> {
        Vec::new()
    }

    /// Automatic grouping: vertices of this kind with equal keys (and equal `meta`, all with
    /// `meta.autogroup`) may be merged into one vertex built by [`Resource::group`]. `None`,
    /// the default, is never grouped (and so is a vertex that already is a group).
    fn group_key(&self) -> Option<String> {
        None
    }

    /// One vertex that does the work of all `members` (this resource first among them; all of
    /// this kind, with its key and meta, in id order), named [`group_name`] of theirs, with
    /// their meta, and with params that list the members' params in order (so that equal
    /// members make equal groups). `None` leaves them apart. Must not do IO.
    fn group(&self, _members: &[Arc<dyn Resource>]) -> Option<Arc<dyn Resource>> {
        None
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

/// Something a kind accepted but ignores or reads differently from what the graph seems to
/// say (mgmt accepted it, so refusing it would break mgmt's graphs): the loader reports it at
/// the field, as a warning, and goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildWarning {
    pub field: &'static str,
    pub message: String,
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

/// The automatic-edge rule: a vertex with `meta.autoedge` depends on every other vertex that
/// manages (`Resource::uids`) something it asks for (`Resource::auto_edges`), e.g. a file on
/// the file resource of its parent directory. Returns `(parent, child)` pairs, by child in the
/// order of `vertices`; the ids are the caller's (they need not be the resources' own).
pub fn auto_edges<'a>(vertices: &[(&'a ResId, &'a dyn Resource)]) -> Vec<(&'a ResId, &'a ResId)> {
    // Hashed: every file asks for each of its ancestors, so this is looked up a lot.
    let mut providers: HashMap<Uid, Vec<&ResId>> = HashMap::new();
    for &(id, r) in vertices {
        for uid in r.uids() {
            providers.entry(uid).or_default().push(id);
        }
    }
    let mut edges = Vec::new();
    for &(id, r) in vertices {
        if !r.meta().autoedge {
            continue;
        }
        for want in r.auto_edges() {
            for &parent in providers.get(&want).into_iter().flatten() {
                if parent != id {
                    edges.push((parent, id));
                }
            }
        }
    }
    edges
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sema(list: &[&str]) -> Result<Vec<(String, u32)>, String> {
        Semaphores::parse(list).map(|s| {
            s.iter()
                .map(|s| (s.name().to_string(), s.count()))
                .collect()
        })
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
        for (bad, why) in [
            (&["a:0"][..], "sema `a:0`: the count must be at least 1"),
            (&["a:-1"], "sema `a:-1`: the count must be at least 1"),
            (&[""], "a sema id must not be empty"),
            (&["a", "a"], "sema `a` is given twice"),
        ] {
            assert_eq!(sema(bad).unwrap_err(), why, "{bad:?}");
        }
    }

    fn meta(v: serde_json::Value) -> Result<Meta, String> {
        serde_json::from_value::<Meta>(v).map_err(|e| e.to_string())
    }

    #[test]
    fn meta_values_become_types() {
        let m = meta(json!({
            "retry": -1, "delay": 500, "poll": 5, "limit": 2.5, "burst": 3,
            "noop": true, "autoedge": false, "autogroup": false, "sema": ["b:2", "a"],
        }))
        .unwrap();
        assert_eq!(m.retry, Retry::Forever);
        assert_eq!(m.delay, Duration::from_millis(500));
        assert_eq!(m.poll, Some(Duration::from_secs(5)));
        assert_eq!(m.limit.map(Rate::get), Some(2.5));
        assert_eq!(
            (m.burst, m.noop, m.autoedge, m.autogroup),
            (3, true, false, false)
        );
        assert_eq!(
            m.sema
                .iter()
                .map(|s| (s.name(), s.count()))
                .collect::<Vec<_>>(),
            [("a", 1), ("b:2", 2)]
        );
        // The sentinels of the written form: 0 = none.
        let m = meta(json!({"retry": 4, "poll": 0, "limit": 0})).unwrap();
        assert_eq!((m.retry, m.poll, m.limit), (Retry::Times(4), None, None));
        assert_eq!(meta(json!({})).unwrap(), Meta::default());
        // `.inf` (YAML only: JSON has no infinity) is no limit too.
        assert_eq!(Rate::limit(f64::INFINITY), Ok(None));
    }

    #[test]
    fn meta_round_trips_through_its_written_form() {
        let written = json!({
            "retry": -1, "delay": 500, "poll": 5, "limit": 2.5, "burst": 3,
            "noop": true, "autoedge": false, "autogroup": false, "sema": ["a", "b:2"],
        });
        let m = meta(written.clone()).unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap(), written);
        assert_eq!(
            serde_json::to_value(Meta::default()).unwrap(),
            json!({
                "retry": 0, "delay": 0, "poll": 0, "limit": 0.0, "burst": 0,
                "noop": false, "autoedge": true, "autogroup": true, "sema": [],
            })
        );
    }

    #[test]
    fn out_of_range_meta_values_are_errors() {
        for (bad, why) in [
            (
                json!({"retry": -2}),
                "`retry`: -2 is out of range: write -1 to retry forever or a count from 0 to 4294967295",
            ),
            (
                json!({"retry": 5_000_000_000_i64}),
                "`retry`: 5000000000 is out of range: write -1 to retry forever or a count from 0 to 4294967295",
            ),
            (
                json!({"limit": -1.0}),
                "`limit`: -1 is out of range: write a rate above 0 (0 or .inf: no limit)",
            ),
            (
                json!({"delay": "soon"}),
                "`delay`: invalid type: string \"soon\", expected u64",
            ),
            (
                json!({"poll": -1}),
                "`poll`: invalid value: integer `-1`, expected u64",
            ),
            (
                json!({"poll": 9223372036854775807u64}),
                "`poll`: 9223372036854775807 is out of range: at most 31536000 (a year, in seconds)",
            ),
            (
                json!({"delay": 18446744073709551615u64}),
                "`delay`: 18446744073709551615 is out of range: at most 31536000000 (a year, in milliseconds)",
            ),
            (
                json!({"sema": ["lock:0"]}),
                "`sema`: sema `lock:0`: the count must be at least 1",
            ),
            (
                json!({"bogus": 1}),
                "unknown field `bogus`, expected one of `retry`, `delay`, `poll`, `limit`, `burst`, `noop`, `autoedge`, `autogroup`, `sema`",
            ),
        ] {
            assert_eq!(meta(bad.clone()).unwrap_err(), why, "{bad}");
        }
        assert!(Rate::limit(f64::NAN).is_err());
        assert!(Rate::limit(f64::NEG_INFINITY).is_err());
    }

    #[test]
    fn retry_counts_failures() {
        assert!(Retry::Times(0).allows(0));
        assert!(!Retry::Times(0).allows(1));
        assert!(Retry::Times(2).allows(2));
        assert!(!Retry::Times(2).allows(3));
        assert!(Retry::Forever.allows(u32::MAX));
    }

    /// A resource that manages `path` and wants each ancestor of it.
    #[derive(Debug)]
    struct Path {
        path: &'static str,
        meta: Meta,
    }

    #[async_trait]
    impl Resource for Path {
        fn kind(&self) -> &'static str {
            "path"
        }
        fn name(&self) -> &str {
            self.path
        }
        fn meta(&self) -> &Meta {
            &self.meta
        }
        fn validate(&self) -> Result<(), ResourceError> {
            Ok(())
        }
        fn params(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn uids(&self) -> Vec<Uid> {
            vec![Uid {
                kind: "path",
                key: self.path.to_string(),
            }]
        }
        fn auto_edges(&self) -> Vec<Uid> {
            let mut out = Vec::new();
            let mut p = self.path;
            while let Some((parent, _)) = p.rsplit_once('/') {
                if !parent.is_empty() {
                    out.push(Uid {
                        kind: "path",
                        key: parent.to_string(),
                    });
                }
                p = parent;
            }
            out
        }
        async fn check_apply(&self, _: &ApplyCtx, _: Mode) -> Result<Outcome, ResourceError> {
            Ok(Outcome::InSync)
        }
    }

    #[test]
    fn auto_edges_join_each_vertex_to_whoever_manages_what_it_wants() {
        let path = |path, autoedge| Path {
            path,
            meta: Meta {
                autoedge,
                ..Meta::default()
            },
        };
        let rs = [
            path("/a/b/c", true),
            path("/a", true),
            path("/a/b", true),
            path("/a/x", false),
            path("/z", true),
        ];
        let ids: Vec<ResId> = rs.iter().map(|r| r.id()).collect();
        // Two vertices managing the same thing are both parents; the caller's ids are used.
        let twin = ResId::new("path", "twin of /a");
        let mut vertices: Vec<(&ResId, &dyn Resource)> = ids
            .iter()
            .zip(&rs)
            .map(|(id, r)| (id, r as &dyn Resource))
            .collect();
        vertices.push((&twin, &rs[1]));
        let edges: Vec<String> = auto_edges(&vertices)
            .into_iter()
            .map(|(from, to)| format!("{} -> {}", from.name, to.name))
            .collect();
        assert_eq!(
            edges,
            [
                "/a/b -> /a/b/c",
                "/a -> /a/b/c",
                "twin of /a -> /a/b/c",
                "/a -> /a/b",
                "twin of /a -> /a/b",
            ]
        );
    }
}
