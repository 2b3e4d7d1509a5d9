//! The event-driven engine: one worker per vertex, watches that mark vertices dirty,
//! check_apply in dependency order with notify/refresh, graph swaps that keep equal vertices
//! running, and convergence tracking.
//!
//! It knows nothing of YAML, etcd, SSH, argv or exit codes: it takes a [`resource::ResGraph`]
//! and reports [`EngineEvent`]s. Every task it spawns is owned by its `TaskTracker` and awaited
//! by [`Engine::shutdown`]; no lock is held across an `.await`.
//!
//! # A vertex's worker
//!
//! Each vertex is one task: its watch and its worker loop, joined (one spawn per vertex). The watch
//! runs `Resource::watch`; with `meta.poll` set a timer replaces it (an event at once, then one
//! every `poll`). A failed watch is reported (`WatchFailed`) and restarted after
//! `meta.delay` (1 s when that is zero); the worker keeps running meanwhile, and each failure
//! counts as an event (the state may have changed unseen), so a vertex whose watch cannot be
//! established is still checked, at the retry pace. Watch events are coalesced: they set a
//! flag, they are not queued.
//!
//! The worker's status is a handful of flags; the states they encode:
//!
//! | state    | meaning                                               | busy | to children |
//! |----------|-------------------------------------------------------|------|-------------|
//! | Starting | watch has not called `running()` yet                  | yes  | pending     |
//! | Clean    | last check_apply succeeded, nothing new since         | no   | clean       |
//! | Dirty    | needs a check_apply, waiting for parents/delay/tokens | yes  | pending     |
//! | Blocked  | dirty, but a parent is Failed or Blocked              | no   | blocked     |
//! | Running  | check_apply in progress                               | yes  | pending     |
//! | Failed   | check_apply failed and retries are exhausted          | no   | blocked     |
//!
//! Transitions:
//!
//! - Starting → Dirty: the first event (`WatchCtx::running()` is one). So the first
//!   check_apply happens only once the watch is established and no change can be missed.
//! - any → Dirty: a watch event; also resets the failure count ("a new event starts over").
//!   A parent that returned `Changed` (or `WouldChange` in noop) marks its children Dirty, and
//!   sets their pending `refresh` when the edge is a notify edge.
//! - Dirty → Running: when every parent is clean (Failed and Blocked parents make it Blocked
//!   instead), the retry delay has passed, and the `meta.limit`/`meta.burst` token bucket has a
//!   token (otherwise the worker sleeps until then). The pending refresh is handed to
//!   `ApplyCtx::refresh` and cleared.
//! - Running → Clean on success (or → Dirty again if an event arrived meanwhile). Children
//!   are marked first, then the vertex turns clean, then `Applied` is reported, then all
//!   children are poked to re-evaluate, so a child can never run between its parent's change
//!   and being marked, and whoever sees `Applied` sees the vertex idle.
//! - Running → Dirty on failure while `meta.retry` allows (`Retry::Forever` or a count), not
//!   before `meta.delay`; → Failed after the last retry (the refresh is kept for the next try).
//!   Both emit `Failed { attempt, will_retry }`. A panic in check_apply is such a failure
//!   (`panicked: ...`), never a dead worker.
//! - Blocked → Dirty when poked and no parent is Failed/Blocked any more.
//!
//! Parents and children are read from the engine's current graph each time, so a swap can
//! rewire a kept vertex; after a swap every vertex is poked to re-evaluate. Noop (engine-wide or
//! `meta.noop`) runs check_apply in `Mode::Check`.
//!
//! A vertex reports busy to the [`Converger`] in Starting, Dirty and Running; the engine holds
//! a participant of its own that is busy during a swap (and until the first one).
//!
//! # Swap
//!
//! [`Engine::swap`] validates the whole graph first (resource `validate`, unique ids, edge
//! ends exist, automatic edges from `Resource::uids`/`auto_edges` for vertices with
//! `meta.autoedge`, acyclic), then merges groupable vertices (`resource::autogroup`: kinds
//! with a `group_key`, `meta.autogroup`, equal meta, neither reachable from the other; a group
//! is one vertex named `kind[a,b,c]`, with one worker and one watch, and it is what events and
//! the converger count). Only then: equal vertices (`resource::same_resource`) are kept
//! untouched (no new watch, no new check_apply); removed and changed ones are cancelled and
//! awaited before added and changed ones get new workers (a changed vertex is reported both
//! removed and added). Startup is a swap from the empty graph.
//!
//! # Shutdown order
//!
//! `shutdown` waits for a swap in progress, cancels the root token (every worker, watch and
//! running check_apply sees it; a watch or check_apply that ignores it is dropped after a 5 s
//! grace), then awaits every task. Swaps after that fail with `EngineError::Shutdown`.

mod converger;
mod engine;
mod event;
mod validate;
mod worker;

pub use converger::{ConvergedState, Converger, ConvergerHandle};
pub use engine::{Engine, EngineConfig, SwapReport};
pub use event::EngineEvent;
pub use validate::EngineError;
