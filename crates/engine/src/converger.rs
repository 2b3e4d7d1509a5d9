//! Convergence tracking: a set of participants (resource workers, the engine's swap, and any
//! watcher the CLI adds) that each say busy or idle; the whole is converged while all are idle.
//!
//! This module only keeps state and publishes it; it must never decide what to do when
//! converged (exiting is the CLI's business) and never holds its lock across an `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// The published state. `since` is when the last participant became idle (tokio's clock, so
/// tests with a paused clock see consistent values); it is `None` while anyone is busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvergedState {
    pub converged: bool,
    pub since: Option<Instant>,
}

/// Shared registry of participants. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Converger {
    inner: Arc<Inner>,
}

/// A participant's flag is its own atomic and the busy ones are counted in another: a vertex
/// changes its flag several times per check, so a flip is two atomic operations, and only a
/// change of the count to or from zero takes the lock (to publish). The names are only for
/// diagnostics, touched when participants come and go.
/// A participant's name and its "converged" flag.
type Participant = (Arc<str>, Arc<AtomicBool>);

#[derive(Debug)]
struct Inner {
    busy: AtomicUsize,
    next: AtomicU64,
    names: Mutex<BTreeMap<u64, Participant>>,
    /// Publishing happens under this lock, reading the count afresh, so that two publishes
    /// racing (one participant turning idle as another turns busy) end on the latest count.
    publish: Mutex<()>,
    tx: watch::Sender<ConvergedState>,
}

/// One participant. It starts busy; dropping it unregisters it.
#[derive(Debug)]
pub struct ConvergerHandle {
    id: u64,
    busy: Arc<AtomicBool>,
    inner: Arc<Inner>,
}

impl Default for Converger {
    fn default() -> Self {
        Self::new()
    }
}

impl Converger {
    /// With no participants the state is converged from now on.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(ConvergedState {
            converged: true,
            since: Some(Instant::now()),
        });
        Converger {
            inner: Arc::new(Inner {
                busy: AtomicUsize::new(0),
                next: AtomicU64::new(0),
                names: Mutex::default(),
                publish: Mutex::default(),
                tx,
            }),
        }
    }

    /// Adds a participant, busy until it says otherwise.
    pub fn register(&self, name: &str) -> ConvergerHandle {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicBool::new(true));
        self.inner
            .names
            .lock()
            .expect("converger lock")
            .insert(id, (Arc::from(name), busy.clone()));
        if self.inner.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            self.inner.publish();
        }
        ConvergerHandle {
            id,
            busy,
            inner: self.inner.clone(),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<ConvergedState> {
        self.inner.tx.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> ConvergedState {
        *self.inner.tx.borrow()
    }

    /// Names of the participants that are busy right now (for diagnostics).
    pub fn busy(&self) -> Vec<String> {
        let names = self.inner.names.lock().expect("converger lock");
        names
            .values()
            .filter(|(_, busy)| busy.load(Ordering::Acquire))
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Returns once every participant has been idle, without interruption, for `d`
    /// (`d == 0`: as soon as all are idle). A participant that turns busy restarts the wait.
    pub async fn converged_for(&self, d: Duration) {
        let mut rx = self.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            match s.since {
                Some(since) if s.converged => {
                    tokio::select! {
                        _ = sleep_until(since + d) => return,
                        _ = rx.changed() => {}
                    }
                }
                // The sender lives in `self`, so `changed` cannot fail while we are borrowed.
                _ => {
                    let _ = rx.changed().await;
                }
            }
        }
    }
}

impl Inner {
    /// Republishes the state if converged-ness differs from the count now.
    fn publish(&self) {
        let _order = self.publish.lock().expect("converger lock");
        let all_idle = self.busy.load(Ordering::Acquire) == 0;
        self.tx.send_if_modified(|s| {
            if s.converged == all_idle {
                return false;
            }
            *s = ConvergedState {
                converged: all_idle,
                since: all_idle.then(Instant::now),
            };
            true
        });
    }

    /// Counts a flip of one participant's flag; publishes when the count leaves or reaches 0.
    fn flipped(&self, busy: bool) {
        let edge = if busy {
            self.busy.fetch_add(1, Ordering::AcqRel) == 0
        } else {
            self.busy.fetch_sub(1, Ordering::AcqRel) == 1
        };
        if edge {
            self.publish();
        }
    }
}

impl ConvergerHandle {
    pub fn set_busy(&self, busy: bool) {
        if self.busy.swap(busy, Ordering::AcqRel) != busy {
            self.inner.flipped(busy);
        }
    }
}

impl Drop for ConvergerHandle {
    fn drop(&mut self) {
        self.set_busy(false);
        self.inner
            .names
            .lock()
            .expect("converger lock")
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_participants_converge_after_the_timeout() {
        let c = Converger::new();
        let a = c.register("a");
        let b = c.register("b");
        assert!(!c.state().converged);
        a.set_busy(false);
        assert!(!c.state().converged, "b is still busy");
        assert_eq!(c.busy(), vec!["b".to_string()]);
        let start = Instant::now();
        b.set_busy(false);
        assert!(c.state().converged);
        c.converged_for(Duration::from_secs(5)).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_participant_restarts_the_wait() {
        let c = Converger::new();
        let a = c.register("a");
        a.set_busy(false);
        let start = Instant::now();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.converged_for(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(6)).await;
        a.set_busy(true);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!waiter.is_finished());
        a.set_busy(false);
        waiter.await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(22));
    }

    #[test]
    fn racing_flips_end_on_the_final_count() {
        // Threads flip their own participants concurrently; whatever the interleaving of the
        // publishes, the published state must match the flags at the end.
        let c = Converger::new();
        let stay_busy = c.register("last");
        std::thread::scope(|s| {
            for t in 0..8 {
                let c = c.clone();
                s.spawn(move || {
                    let h = c.register(&format!("t{t}"));
                    for i in 0..2000 {
                        h.set_busy(i % 2 == 0);
                    }
                    h.set_busy(false);
                });
            }
        });
        assert!(!c.state().converged, "`last` is still busy");
        assert_eq!(c.busy(), vec!["last".to_string()]);
        stay_busy.set_busy(false);
        assert!(c.state().converged);
    }

    #[tokio::test]
    async fn dropping_a_busy_participant_unregisters_it() {
        let c = Converger::new();
        let a = c.register("a");
        assert!(!c.state().converged);
        drop(a);
        c.converged_for(Duration::ZERO).await;
        assert!(c.busy().is_empty());
    }
}
