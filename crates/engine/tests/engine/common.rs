//! Test resource kinds and helpers for the engine tests.
//!
//! `Probe` is a resource whose check_apply follows a script and records what the engine asked
//! of it (order, refresh, mode, time) in a shared `Lab`; `FileRes` manages a real file and
//! watches it with inotify. Helpers never sleep to synchronise: they wait for a recorded fact
//! or an engine event, bounded by `LIMIT`.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine::{Converger, Engine, EngineConfig, EngineEvent};
use resource::{
    ApplyCtx, Edge, EventSink, Meta, Mode, Outcome, ResGraph, ResId, Resource, ResourceError, Uid,
    WatchCtx,
};
use tokio::sync::{Barrier, Semaphore, mpsc, watch};
use tokio::time::{Instant, timeout};

/// Upper bound for any wait in these tests: only reached when something is broken.
pub const LIMIT: Duration = Duration::from_secs(20);

/// One thing a probe saw.
#[derive(Clone, Debug)]
pub enum Rec {
    Start {
        name: String,
        tag: String,
        refresh: bool,
        mode: Mode,
        at: Instant,
    },
    End {
        name: String,
    },
    Cancelled {
        name: String,
    },
}

#[derive(Default, Debug)]
pub struct LabState {
    pub log: Vec<Rec>,
    pub applies: BTreeMap<String, u32>,
    pub watch_starts: BTreeMap<String, u32>,
    pub watches_active: BTreeMap<String, i32>,
    sinks: BTreeMap<String, EventSink>,
}

/// Shared record of what every probe saw, with a change signal to wait on.
#[derive(Debug)]
pub struct Lab {
    state: Mutex<LabState>,
    version: watch::Sender<u64>,
}

impl Lab {
    pub fn new() -> Arc<Lab> {
        Arc::new(Lab {
            state: Mutex::default(),
            version: watch::channel(0).0,
        })
    }

    fn record(&self, f: impl FnOnce(&mut LabState)) {
        f(&mut self.state.lock().unwrap());
        self.version.send_modify(|v| *v += 1);
    }

    pub fn read<T>(&self, f: impl FnOnce(&LabState) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    pub fn applies(&self, name: &str) -> u32 {
        self.read(|s| s.applies.get(name).copied().unwrap_or(0))
    }

    pub fn watch_starts(&self, name: &str) -> u32 {
        self.read(|s| s.watch_starts.get(name).copied().unwrap_or(0))
    }

    pub fn watches_active(&self) -> i32 {
        self.read(|s| s.watches_active.values().sum())
    }

    /// The refresh flag of every check_apply of `name`, in order.
    pub fn refreshes(&self, name: &str) -> Vec<bool> {
        self.read(|s| {
            s.log
                .iter()
                .filter_map(|r| match r {
                    Rec::Start {
                        name: n, refresh, ..
                    } if n == name => Some(*refresh),
                    _ => None,
                })
                .collect()
        })
    }

    /// Starts of `name`, in order.
    pub fn starts(&self, name: &str) -> Vec<Rec> {
        self.read(|s| {
            s.log
                .iter()
                .filter(|r| matches!(r, Rec::Start { name: n, .. } if n == name))
                .cloned()
                .collect()
        })
    }

    /// Index in the log of the `nth` (0-based) start / end of `name`.
    pub fn index_of(&self, name: &str, start: bool, nth: usize) -> usize {
        self.read(|s| {
            s.log
                .iter()
                .enumerate()
                .filter(|(_, r)| match r {
                    Rec::Start { name: n, .. } => start && n == name,
                    Rec::End { name: n } => !start && n == name,
                    Rec::Cancelled { .. } => false,
                })
                .nth(nth)
                .map(|(i, _)| i)
                .unwrap_or_else(|| {
                    panic!(
                        "no {} #{nth} of {name} in {:#?}",
                        if start { "start" } else { "end" },
                        s.log
                    )
                })
        })
    }

    /// An event from `name`'s current watch, as if its state had changed.
    pub fn trigger(&self, name: &str) {
        self.read(|s| {
            s.sinks
                .get(name)
                .unwrap_or_else(|| panic!("{name} has no watch"))
                .event()
        });
    }

    /// Waits until `cond` holds on the recorded state.
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&LabState) -> bool) {
        let mut rx = self.version.subscribe();
        let waited = timeout(LIMIT, async {
            loop {
                if self.read(&cond) {
                    return;
                }
                rx.changed().await.unwrap();
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "timed out waiting for {what}: {:#?}",
                self.state.lock().unwrap()
            );
        }
    }
}

/// A probe's behaviour, shared between equal instances and the test.
#[derive(Debug, Default)]
pub struct Script {
    /// Results of the next check_applies; `default` once empty. `Err("panic")` panics.
    pub next: Mutex<VecDeque<Result<Outcome, String>>>,
    pub default: Option<Outcome>,
    /// Every check_apply waits here with the other holders (proves overlap).
    pub barrier: Option<Arc<Barrier>>,
    /// Every check_apply takes a permit first (lets a test hold a vertex in Running).
    pub gate: Option<Arc<Semaphore>>,
    /// The first this many watches fail at once.
    pub watch_failures: AtomicU32,
}

impl Script {
    pub fn push(&self, r: Result<Outcome, String>) {
        self.next.lock().unwrap().push_back(r);
    }
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub meta: Meta,
    /// Part of the parameters: a different tag is a different resource.
    pub tag: String,
    pub provides: Option<String>,
    pub wants: Option<String>,
    pub script: Arc<Script>,
    pub lab: Arc<Lab>,
}

impl Probe {
    pub fn new(lab: &Arc<Lab>, name: &str) -> Probe {
        Probe {
            name: name.into(),
            meta: Meta::default(),
            tag: "1".into(),
            provides: None,
            wants: None,
            script: Arc::new(Script {
                default: Some(Outcome::Changed),
                ..Script::default()
            }),
            lab: lab.clone(),
        }
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.into();
        self
    }

    pub fn meta(mut self, f: impl FnOnce(&mut Meta)) -> Self {
        f(&mut self.meta);
        self
    }

    pub fn script(mut self, s: Script) -> Self {
        self.script = Arc::new(s);
        self
    }

    pub fn arc(self) -> Arc<dyn Resource> {
        Arc::new(self)
    }
}

/// Decrements the active-watch count however the watch ends (returned or dropped).
struct ActiveWatch(Arc<Lab>, String);

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        self.0
            .record(|s| *s.watches_active.entry(self.1.clone()).or_default() -= 1);
    }
}

#[async_trait]
impl Resource for Probe {
    fn kind(&self) -> &'static str {
        "probe"
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn validate(&self) -> Result<(), ResourceError> {
        if self.tag.is_empty() {
            return Err(ResourceError::invalid("tag", "must not be empty"));
        }
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "tag": self.tag, "provides": self.provides, "wants": self.wants })
    }
    fn uids(&self) -> Vec<Uid> {
        self.provides
            .iter()
            .map(|k| Uid {
                kind: "probe",
                key: k.clone(),
            })
            .collect()
    }
    fn auto_edges(&self) -> Vec<Uid> {
        self.wants
            .iter()
            .map(|k| Uid {
                kind: "probe",
                key: k.clone(),
            })
            .collect()
    }

    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        let name = self.name.clone();
        self.lab.record(|s| {
            *s.watch_starts.entry(name.clone()).or_default() += 1;
            *s.watches_active.entry(name.clone()).or_default() += 1;
            s.sinks.insert(name.clone(), ctx.events.clone());
        });
        let _active = ActiveWatch(self.lab.clone(), name);
        let fail =
            self.script
                .watch_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if fail.is_ok() {
            return Err(ResourceError::failed("watch broke"));
        }
        ctx.running();
        ctx.cancel.cancelled().await;
        Ok(())
    }

    async fn check_apply(&self, ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let name = self.name.clone();
        self.lab.record(|s| {
            *s.applies.entry(name.clone()).or_default() += 1;
            s.log.push(Rec::Start {
                name: name.clone(),
                tag: self.tag.clone(),
                refresh: ctx.refresh,
                mode,
                at: Instant::now(),
            });
        });
        // Let other tasks run in between, so an engine that got the order wrong would show it.
        tokio::task::yield_now().await;
        if let Some(gate) = &self.script.gate {
            tokio::select! {
                permit = gate.acquire() => permit.unwrap().forget(),
                _ = ctx.cancel.cancelled() => {
                    self.lab.record(|s| s.log.push(Rec::Cancelled { name: name.clone() }));
                    return Err(ResourceError::failed("cancelled"));
                }
            }
        }
        if let Some(barrier) = &self.script.barrier
            && timeout(LIMIT, barrier.wait()).await.is_err()
        {
            return Err(ResourceError::failed(
                "the other branch never ran at the same time",
            ));
        }
        let next = self.script.next.lock().unwrap().pop_front();
        let result = match next {
            Some(Err(e)) if e == "panic" => panic!("probe told to panic"),
            Some(r) => r.map_err(ResourceError::failed),
            None => Ok(self.script.default.unwrap_or(Outcome::InSync)),
        };
        self.lab.record(|s| s.log.push(Rec::End { name }));
        match (result, mode) {
            (Ok(Outcome::Changed), Mode::Check) => Ok(Outcome::WouldChange),
            (r, _) => r,
        }
    }
}

/// A file with fixed content, watched with inotify on its directory.
#[derive(Debug, Clone)]
pub struct FileRes {
    pub name: String,
    pub path: PathBuf,
    pub content: String,
    pub meta: Meta,
}

impl FileRes {
    pub fn new(path: PathBuf, content: &str) -> FileRes {
        FileRes {
            name: path.display().to_string(),
            path,
            content: content.into(),
            meta: Meta::default(),
        }
    }
}

#[async_trait]
impl Resource for FileRes {
    fn kind(&self) -> &'static str {
        "file"
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn validate(&self) -> Result<(), ResourceError> {
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "path": self.path, "content": self.content })
    }

    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        let watch = resources::watch::FilesWatch::new(std::slice::from_ref(&self.path))
            .map_err(ResourceError::failed)?;
        ctx.running();
        loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(()),
                r = watch.changed() => match r {
                    Ok(()) => ctx.event(),
                    Err(e) => return Err(ResourceError::failed(e)),
                },
            }
        }
    }

    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        match tokio::fs::read_to_string(&self.path).await {
            Ok(s) if s == self.content => return Ok(Outcome::InSync),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ResourceError::failed(format!(
                    "{}: {e}",
                    self.path.display()
                )));
            }
        }
        if mode == Mode::Check {
            return Ok(Outcome::WouldChange);
        }
        tokio::fs::write(&self.path, &self.content)
            .await
            .map_err(|e| ResourceError::failed(format!("{}: {e}", self.path.display())))?;
        Ok(Outcome::Changed)
    }
}

pub fn pid(name: &str) -> ResId {
    ResId::new("probe", name)
}

/// A graph of `vertices` with probe edges `(from, to, notify)`.
pub fn graph(vertices: Vec<Arc<dyn Resource>>, edges: &[(&str, &str, bool)]) -> ResGraph {
    ResGraph {
        vertices,
        edges: edges
            .iter()
            .map(|(f, t, n)| Edge {
                from: pid(f),
                to: pid(t),
                notify: *n,
            })
            .collect(),
    }
}

/// An engine with its event stream and converger.
pub struct Rig {
    pub engine: Engine,
    pub events: Events,
    pub converger: Converger,
}

pub fn rig(noop: bool) -> Rig {
    let (tx, rx) = mpsc::unbounded_channel();
    let converger = Converger::new();
    let engine = Engine::new(EngineConfig {
        hostname: "h1".into(),
        noop,
        events: tx,
        converger: converger.clone(),
    });
    Rig {
        engine,
        events: Events {
            rx,
            seen: Vec::new(),
            taken: Vec::new(),
        },
        converger,
    }
}

impl Rig {
    pub async fn converged(&self) {
        if timeout(LIMIT, self.converger.converged_for(Duration::ZERO))
            .await
            .is_err()
        {
            panic!("never converged; busy: {:?}", self.converger.busy());
        }
    }
}

/// The engine's events, kept as they arrive. Each `wait_for` takes the first event it matches
/// that no earlier `wait_for` took, whether it arrived already or arrives later.
pub struct Events {
    rx: mpsc::UnboundedReceiver<EngineEvent>,
    pub seen: Vec<EngineEvent>,
    taken: Vec<bool>,
}

impl Events {
    pub async fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&EngineEvent) -> bool,
    ) -> EngineEvent {
        if let Some(i) = (0..self.seen.len()).find(|&i| !self.taken[i] && pred(&self.seen[i])) {
            self.taken[i] = true;
            return self.seen[i].clone();
        }
        let found = timeout(LIMIT, async {
            loop {
                let e = self
                    .rx
                    .recv()
                    .await
                    .expect("engine dropped its event sender");
                self.seen.push(e.clone());
                let hit = pred(&e);
                self.taken.push(hit);
                if hit {
                    return e;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("timed out waiting for {what}; seen: {:#?}", self.seen))
    }

    pub async fn applied(&mut self, id: &ResId) -> EngineEvent {
        self.wait_for(
            &format!("{id} applied"),
            |e| matches!(e, EngineEvent::Applied { id: i, .. } if i == id),
        )
        .await
    }

    /// Takes whatever arrived already without waiting.
    pub fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
            self.taken.push(false);
        }
    }
}
