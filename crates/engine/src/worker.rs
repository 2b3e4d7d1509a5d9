//! One vertex's worker and its watch: the per-vertex state machine described in the crate docs.
//!
//! A worker only ever locks its own status or one other vertex's status at a time (never two,
//! never across an `.await`), and reads parents and children from the engine's *current* graph
//! every time, so a swap may rewire a running vertex. It must never call another vertex's
//! check_apply or wait for another worker: coordination is by status flags and pokes.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use resource::{
    ApplyCtx, CancellationToken, EventSink, Meta, Mode, Outcome, ResId, Resource, ResourceError,
    WatchCtx,
};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, sleep, sleep_until};

use crate::converger::ConvergerHandle;
use crate::engine::Shared;
use crate::event::EngineEvent;

/// How long a failed watch waits before it is restarted when `meta.delay` is 0: long enough
/// not to spin on a persistent error, short enough to pick up a repaired one.
const WATCH_RETRY_DEFAULT: Duration = Duration::from_secs(1);

/// How long a cancelled check_apply or watch may take to wind down before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

pub(crate) struct Vertex {
    pub id: ResId,
    pub res: Arc<dyn Resource>,
    pub cancel: CancellationToken,
    status: Mutex<Status>,
    poke: Notify,
    converger: ConvergerHandle,
    /// `meta.sema`: a permit of each is held for the whole of every check_apply.
    semas: Vec<Arc<Semaphore>>,
}

/// The flags of the state machine (see the crate docs for the states they encode).
#[derive(Debug, Default)]
struct Status {
    /// The watch called `running()` (or polling started): check_apply may run.
    started: bool,
    /// Needs a check_apply.
    dirty: bool,
    /// A check_apply is in progress.
    running: bool,
    /// The last check_apply failed and retries are exhausted: children must not run.
    failed: bool,
    /// Dirty, but an ancestor failed: waiting without being busy.
    blocked: bool,
    /// A notify parent changed since the last successful check_apply.
    refresh: bool,
    /// Failed attempts since the last success or event.
    failures: u32,
    /// No check_apply before this instant (retry delay).
    retry_at: Option<Instant>,
}

/// How a vertex looks to its children.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum AsParent {
    Clean,
    Pending,
    Blocked,
}

impl Status {
    fn as_parent(&self) -> AsParent {
        if !self.started || self.running || (self.dirty && !self.blocked) {
            AsParent::Pending
        } else if self.failed || self.blocked {
            AsParent::Blocked
        } else {
            AsParent::Clean
        }
    }

    fn busy(&self) -> bool {
        !self.started || self.running || (self.dirty && !self.blocked)
    }
}

/// What the worker should do after looking at its state.
enum Next {
    Wait,
    WakeAt(Instant),
    Run { refresh: bool },
}

impl Vertex {
    pub fn new(
        id: ResId,
        res: Arc<dyn Resource>,
        cancel: CancellationToken,
        converger: ConvergerHandle,
        semas: Vec<Arc<Semaphore>>,
    ) -> Self {
        Vertex {
            id,
            res,
            cancel,
            status: Mutex::default(),
            poke: Notify::new(),
            converger,
            semas,
        }
    }

    /// Re-evaluate soon (a parent finished, or the graph changed).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Runs `f` on the status and republishes busy/idle; returns what `f` returned.
    fn with_status<T>(&self, f: impl FnOnce(&mut Status) -> T) -> T {
        let mut st: MutexGuard<'_, Status> = self.status.lock().expect("vertex status lock");
        let out = f(&mut st);
        self.converger.set_busy(st.busy());
        out
    }

    fn as_parent(&self) -> AsParent {
        self.status.lock().expect("vertex status lock").as_parent()
    }

    /// An event from the watch (or poll timer): the state may have changed. Starts over after
    /// a failure.
    fn on_event(&self) {
        self.with_status(|st| {
            st.started = true;
            st.dirty = true;
            st.failures = 0;
        });
    }

    /// A parent changed something.
    fn mark_dirty(&self, refresh: bool) {
        self.with_status(|st| {
            st.dirty = true;
            st.refresh |= refresh;
            st.failures = 0;
        });
    }

    fn next(&self, shared: &Shared, limiter: &mut Option<Limiter>) -> (Next, bool) {
        // Parent states first, each under its own lock only.
        let links = shared.links_of(&self.id);
        let worst = links
            .parents
            .iter()
            .map(|p| p.as_parent())
            .max()
            .unwrap_or(AsParent::Clean);
        self.with_status(|st| {
            if !st.started || !st.dirty || st.running {
                return (Next::Wait, false);
            }
            match worst {
                AsParent::Blocked => {
                    let newly = !st.blocked;
                    st.blocked = true;
                    (Next::Wait, newly)
                }
                AsParent::Pending => {
                    st.blocked = false;
                    (Next::Wait, false)
                }
                AsParent::Clean => {
                    st.blocked = false;
                    let now = Instant::now();
                    if let Some(at) = st.retry_at {
                        if now < at {
                            return (Next::WakeAt(at), false);
                        }
                        st.retry_at = None;
                    }
                    if let Some(l) = limiter
                        && let Err(at) = l.take(now)
                    {
                        return (Next::WakeAt(at), false);
                    }
                    st.dirty = false;
                    st.running = true;
                    (
                        Next::Run {
                            refresh: std::mem::take(&mut st.refresh),
                        },
                        false,
                    )
                }
            }
        })
    }

    fn poke_children(&self, shared: &Shared) {
        for (child, _) in &shared.links_of(&self.id).children {
            child.poke();
        }
    }

    /// One check_apply and its consequences. Returns false when cancelled.
    async fn run_once(&self, shared: &Shared, refresh: bool) -> bool {
        let meta = self.res.meta();
        let mode = if shared.noop || meta.noop {
            Mode::Check
        } else {
            Mode::Apply
        };
        let ctx = ApplyCtx {
            refresh,
            hostname: shared.hostname.clone(),
            cancel: self.cancel.clone(),
        };
        let work = async {
            // In the order `meta.sema` keeps them (sorted by name), the same for every vertex.
            let mut permits = Vec::with_capacity(self.semas.len());
            for s in &self.semas {
                permits.push(
                    s.acquire()
                        .await
                        .expect("engine semaphores are never closed"),
                );
            }
            let start = Instant::now();
            let result = self.res.check_apply(&ctx, mode).await;
            drop(permits);
            result.map(|outcome| (outcome, start.elapsed()))
        };
        let (result, ms) = match until_cancelled(work, &self.cancel).await {
            Some(Ok((outcome, took))) => (
                Ok(outcome),
                u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            ),
            Some(Err(e)) => (Err(e), 0),
            None => return false,
        };
        if result.is_err() && self.cancel.is_cancelled() {
            // The resource saw the shutdown (or its removal) first and gave up (an exec whose
            // process group was killed): that is the cancellation, not a failure to report.
            return false;
        }
        match result {
            Ok(outcome) => {
                tracing::debug!(?outcome, refresh, ms, "check_apply done");
                if outcome != Outcome::InSync {
                    // Children are marked before this vertex turns clean, so no child can slip
                    // through between the two.
                    for (child, notify) in &shared.links_of(&self.id).children {
                        child.mark_dirty(*notify);
                    }
                }
                self.with_status(|st| {
                    st.running = false;
                    st.failed = false;
                    st.failures = 0;
                });
                // Reported once the vertex is clean: an observer of the event sees it idle.
                shared.emit(EngineEvent::Applied {
                    id: self.id.clone(),
                    outcome,
                    refresh,
                    ms,
                });
            }
            Err(e) => {
                let (attempt, will_retry) = self.with_status(|st| {
                    st.running = false;
                    st.refresh |= refresh;
                    st.failures = st.failures.saturating_add(1);
                    let retries_left = meta.retry.allows(st.failures);
                    st.retry_at = Some(Instant::now() + meta.delay);
                    if retries_left {
                        st.dirty = true;
                    } else {
                        st.failed = true;
                    }
                    // `dirty` may also have been set by an event during the run: that starts over.
                    (st.failures, st.dirty)
                });
                // Reported by the event (the binary prints it): logged here at debug only, or a
                // failure would be printed twice.
                tracing::debug!(error = %e, attempt, will_retry, "check_apply failed");
                shared.emit(EngineEvent::Failed {
                    id: self.id.clone(),
                    error: e.to_string(),
                    attempt,
                    will_retry,
                });
            }
        }
        self.poke_children(shared);
        true
    }
}

/// The task of one vertex: its watch and its check_apply loop, joined in one task (one spawn
/// and one task allocation per vertex, not two); returns when both have ended.
pub(crate) async fn run(v: Arc<Vertex>, shared: Arc<Shared>) {
    let (sink, mut events) = EventSink::channel();
    let watch = watch_loop(v.clone(), shared.clone(), sink);
    let work = async {
        let mut limiter = Limiter::new(v.res.meta());
        // Each round: run check_apply for as long as the vertex is eligible, then sleep until
        // an event, a poke, or the instant a delay or the rate limit allows the next attempt.
        while let Some(wake) = settle(&v, &shared, &mut limiter).await {
            tokio::select! {
                biased;
                _ = v.cancel.cancelled() => break,
                Some(()) = events.recv() => v.on_event(),
                _ = v.poke.notified() => {}
                _ = async { sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {}
            }
        }
        // Ends the watch too.
        v.cancel.cancel();
    };
    tokio::join!(watch, work);
    // A removed vertex must not hold convergence back while its Arc lingers.
    v.converger.set_busy(false);
}

/// Runs check_apply while the vertex may; returns when to wake up by itself (if ever), or
/// `None` when cancelled.
async fn settle(
    v: &Vertex,
    shared: &Shared,
    limiter: &mut Option<Limiter>,
) -> Option<Option<Instant>> {
    loop {
        let (next, newly_blocked) = v.next(shared, limiter);
        if newly_blocked {
            // Let descendants know they are blocked too (and therefore idle).
            v.poke_children(shared);
        }
        match next {
            Next::Wait => return Some(None),
            Next::WakeAt(at) => return Some(Some(at)),
            Next::Run { refresh } => {
                if !v.run_once(shared, refresh).await {
                    return None;
                }
            }
        }
    }
}

/// Runs the resource's watch (or the poll timer) until cancelled, restarting a failed watch.
async fn watch_loop(v: Arc<Vertex>, shared: Arc<Shared>, sink: EventSink) {
    let meta = v.res.meta();
    let ctx = WatchCtx {
        events: sink,
        cancel: v.cancel.clone(),
        hostname: shared.hostname.clone(),
    };
    if let Some(every) = meta.poll {
        poll(&ctx, every).await;
        return;
    }
    let pause = if meta.delay.is_zero() {
        WATCH_RETRY_DEFAULT
    } else {
        meta.delay
    };
    loop {
        let Some(result) = until_cancelled(v.res.watch(ctx.clone()), &ctx.cancel).await else {
            return;
        };
        match result {
            Ok(()) => {
                tracing::debug!("watch ended");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch failed");
                shared.emit(EngineEvent::WatchFailed {
                    id: v.id.clone(),
                    error: e.to_string(),
                });
                // Changes may go unseen while the watch is down, so check now and after each
                // failed restart (a poll at the retry pace). This also lets a vertex whose
                // watch never comes up be checked and become idle instead of staying busy.
                ctx.event();
                tokio::select! {
                    _ = sleep(pause) => {}
                    _ = ctx.cancel.cancelled() => return,
                }
            }
        }
    }
}

/// Awaits a resource's `fut`; once `cancel` fires, gives it `CANCEL_GRACE` to notice and finish
/// (an exec killing its child, a watch closing its handle) and then drops it, so a resource
/// that ignores cancellation cannot hang a swap or shutdown. `None` means cancelled. A panic
/// in the resource becomes its error: one broken resource must not take its worker down (a
/// dead worker would stay busy forever and block its children).
async fn until_cancelled<T>(
    fut: impl Future<Output = Result<T, ResourceError>>,
    cancel: &CancellationToken,
) -> Option<Result<T, ResourceError>> {
    let fut = AssertUnwindSafe(fut).catch_unwind();
    tokio::pin!(fut);
    let caught = tokio::select! {
        r = &mut fut => r,
        _ = cancel.cancelled() => {
            let _ = tokio::time::timeout(CANCEL_GRACE, fut).await;
            return None;
        }
    };
    Some(caught.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(ResourceError::failed(format!("panicked: {msg}")))
    }))
}

/// `meta.poll`: an event right away and then every `every`, instead of a watch.
async fn poll(ctx: &WatchCtx, every: Duration) {
    ctx.running();
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => ctx.event(),
            _ = ctx.cancel.cancelled() => return,
        }
    }
}

/// Token bucket for `meta.limit` (check_applies per second) and `meta.burst` (bucket size,
/// at least 1). Starts full.
struct Limiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Limiter {
    fn new(meta: &Meta) -> Option<Limiter> {
        let rate = meta.limit?.get();
        let burst = f64::from(meta.burst.max(1));
        Some(Limiter {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        })
    }

    /// Takes a token, or says when one will be there.
    fn take(&mut self, now: Instant) -> Result<(), Instant> {
        self.tokens = (self.tokens + (now - self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        // The epsilon absorbs float error so waking at the computed instant always succeeds.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}
