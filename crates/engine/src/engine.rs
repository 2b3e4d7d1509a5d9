//! The engine: owns the running graph, the workers and their tasks; swaps graphs and shuts down.
//!
//! Swaps are serialised by one async lock and validate before touching anything. The graph
//! lock (`Shared::live`) is a std mutex held only for short, await-free sections; it must never
//! be held while locking a vertex's status (workers lock the other way round: never both).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use resource::{ResGraph, ResId, same_resource};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::converger::{Converger, ConvergerHandle};
use crate::event::EngineEvent;
use crate::validate::{EngineError, plan};
use crate::worker::{self, Vertex};

/// What the CLI hands the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub hostname: Arc<str>,
    /// Engine-wide noop: every check_apply runs in `Mode::Check`.
    pub noop: bool,
    pub events: UnboundedSender<EngineEvent>,
    pub converger: Converger,
}

/// Which vertices a swap started, stopped and left alone (sorted by id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwapReport {
    pub added: Vec<ResId>,
    pub removed: Vec<ResId>,
    pub kept: Vec<ResId>,
}

/// Cheap to clone; every clone drives the same engine. Dropping the last clone without
/// `shutdown` cancels the workers but cannot await them: call `shutdown`.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    control: Arc<tokio::sync::Mutex<Control>>,
    _cancel_on_drop: Arc<DropGuard>,
}

/// State shared with the workers.
pub(crate) struct Shared {
    pub hostname: Arc<str>,
    pub noop: bool,
    events: UnboundedSender<EngineEvent>,
    converger: Converger,
    pub tracker: TaskTracker,
    root: CancellationToken,
    live: Mutex<Live>,
    /// `meta.sema` semaphores by id, created at the count of the first vertex naming one.
    semas: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The running graph: the vertices and their links, always replaced together.
#[derive(Default)]
struct Live {
    vertices: BTreeMap<ResId, Arc<Vertex>>,
    /// Every vertex's parents and children, resolved once per swap: workers ask for them on
    /// every wake, and a directory with 10,000 files asks for all its children each time.
    links: HashMap<ResId, Arc<Links>>,
}

/// A vertex's neighbours in the running graph.
#[derive(Default)]
pub(crate) struct Links {
    pub parents: Vec<Arc<Vertex>>,
    /// With whether the edge to the child is a notify edge.
    pub children: Vec<(Arc<Vertex>, bool)>,
}

/// Held (async lock) by a swap or shutdown for their whole duration.
struct Control {
    tasks: BTreeMap<ResId, JoinHandle<()>>,
    shut_down: bool,
    /// Busy while a swap is in progress, so a half-installed graph never looks converged.
    participant: ConvergerHandle,
}

impl Shared {
    pub fn emit(&self, e: EngineEvent) {
        // Nobody listening is fine: events are reports, not requests.
        let _ = self.events.send(e);
    }

    /// The semaphores `meta` names, in acquiring order (`Semaphores` keeps them sorted).
    fn semaphores(&self, meta: &resource::Meta) -> Vec<Arc<Semaphore>> {
        let mut semas = self.semas.lock().expect("sema lock");
        meta.sema
            .iter()
            .map(|sema| {
                semas
                    .entry(sema.name().to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(sema.count() as usize)))
                    .clone()
            })
            .collect()
    }

    /// `id`'s parents and children in the current graph (none for a vertex no longer in it).
    pub fn links_of(&self, id: &ResId) -> Arc<Links> {
        let live = self.live.lock().expect("graph lock");
        live.links.get(id).cloned().unwrap_or_default()
    }
}

/// Every vertex's links in `dag`, with the running vertices.
fn links(
    dag: &graph::Dag<ResId>,
    notify: &std::collections::BTreeSet<(ResId, ResId)>,
    vertices: &BTreeMap<ResId, Arc<Vertex>>,
) -> HashMap<ResId, Arc<Links>> {
    let notify: HashSet<(&ResId, &ResId)> = notify.iter().map(|(f, t)| (f, t)).collect();
    let mut links: HashMap<&ResId, Links> =
        vertices.keys().map(|id| (id, Links::default())).collect();
    for (from, to) in dag.edges() {
        let (Some(f), Some(t)) = (vertices.get(from), vertices.get(to)) else {
            continue;
        };
        let is_notify = notify.contains(&(from, to));
        if let Some(l) = links.get_mut(from) {
            l.children.push((t.clone(), is_notify));
        }
        if let Some(l) = links.get_mut(to) {
            l.parents.push(f.clone());
        }
    }
    links
        .into_iter()
        .map(|(id, l)| (id.clone(), Arc::new(l)))
        .collect()
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vertices = self.shared.live.lock().expect("graph lock").vertices.len();
        f.debug_struct("Engine")
            .field("hostname", &self.shared.hostname)
            .field("vertices", &vertices)
            .finish()
    }
}

impl Engine {
    /// An engine running the empty graph. Until the first swap returns, the engine's own
    /// converger participant is busy.
    pub fn new(cfg: EngineConfig) -> Engine {
        let root = CancellationToken::new();
        let participant = cfg.converger.register("engine");
        let shared = Arc::new(Shared {
            hostname: cfg.hostname,
            noop: cfg.noop,
            events: cfg.events,
            converger: cfg.converger,
            tracker: TaskTracker::new(),
            root: root.clone(),
            live: Mutex::default(),
            semas: Mutex::default(),
        });
        let control = Control {
            tasks: BTreeMap::new(),
            shut_down: false,
            participant,
        };
        Engine {
            shared,
            control: Arc::new(tokio::sync::Mutex::new(control)),
            _cancel_on_drop: Arc::new(root.drop_guard()),
        }
    }

    /// Replaces the running graph by `g`. `g` is checked completely first; on error nothing
    /// changed. Equal vertices keep running untouched, removed ones are stopped and awaited
    /// before added ones start (a changed vertex is both), and every vertex re-evaluates
    /// against the new edges.
    pub async fn swap(&self, g: ResGraph) -> Result<SwapReport, EngineError> {
        let mut ctl = self.control.lock().await;
        if ctl.shut_down {
            return Err(EngineError::Shutdown);
        }
        ctl.participant.set_busy(true);
        let result = self.swap_locked(&mut ctl, g).await;
        ctl.participant.set_busy(false);
        result
    }

    async fn swap_locked(&self, ctl: &mut Control, g: ResGraph) -> Result<SwapReport, EngineError> {
        let plan = plan(g)?;
        let shared = &self.shared;
        let mut report = SwapReport::default();
        let (stopped, started, everyone) = {
            let mut live = shared.live.lock().expect("graph lock");
            let mut fresh = Vec::new();
            for (id, res) in &plan.vertices {
                match live.vertices.get(id) {
                    Some(old) if same_resource(&*old.res, &**res) => report.kept.push(id.clone()),
                    _ => fresh.push((id.clone(), res.clone())),
                }
            }
            let changed: HashSet<&ResId> = fresh.iter().map(|(id, _)| id).collect();
            report.removed = live
                .vertices
                .keys()
                .filter(|id| !plan.vertices.contains_key(*id) || changed.contains(id))
                .cloned()
                .collect();
            let stopped: Vec<Arc<Vertex>> = report
                .removed
                .iter()
                .filter_map(|id| live.vertices.remove(id))
                .collect();
            let mut started = Vec::new();
            for (id, res) in fresh {
                let handle = shared.converger.register(&id.to_string());
                let semas = shared.semaphores(res.meta());
                let v = Arc::new(Vertex::new(
                    id.clone(),
                    res,
                    shared.root.child_token(),
                    handle,
                    semas,
                ));
                live.vertices.insert(id.clone(), v.clone());
                report.added.push(id);
                started.push(v);
            }
            live.links = links(&plan.dag, &plan.notify, &live.vertices);
            let everyone: Vec<Arc<Vertex>> = live.vertices.values().cloned().collect();
            (stopped, started, everyone)
        };

        for v in &stopped {
            v.cancel.cancel();
        }
        for v in &stopped {
            if let Some(task) = ctl.tasks.remove(&v.id)
                && let Err(e) = task.await
            {
                tracing::error!(id = %v.id, error = %e, "worker task failed");
            }
        }
        // Before any new worker runs: a swap's event always comes before what its vertices do.
        tracing::debug!(
            added = report.added.len(),
            removed = report.removed.len(),
            kept = report.kept.len(),
            "graph swapped"
        );
        shared.emit(EngineEvent::Swapped {
            added: report.added.clone(),
            removed: report.removed.clone(),
            kept: report.kept.clone(),
        });
        for v in started {
            let span = tracing::info_span!("resource", id = %v.id);
            let task = shared
                .tracker
                .spawn(worker::run(v.clone(), shared.clone()).instrument(span));
            ctl.tasks.insert(v.id.clone(), task);
        }
        for v in everyone {
            v.poke();
        }
        Ok(report)
    }

    /// Cancels every worker and watch and awaits them all. Later swaps fail with `Shutdown`.
    pub async fn shutdown(&self) {
        let mut ctl = self.control.lock().await;
        ctl.shut_down = true;
        self.shared.root.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        ctl.tasks.clear();
        self.shared
            .live
            .lock()
            .expect("graph lock")
            .vertices
            .clear();
        ctl.participant.set_busy(false);
    }
}
