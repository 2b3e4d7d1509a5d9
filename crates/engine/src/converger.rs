//! Convergence tracking: a set of participants (resource workers, the engine's swap, and any
//! watcher the CLI adds) that each say busy or idle; the whole is converged while all are idle.
//!
//! This module only keeps state and publishes it; it must never decide what to do when
//! converged (exiting is the CLI's business) and never holds its lock across an `.await`.

use std::collections::BTreeMap;
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

#[derive(Debug)]
struct Inner {
    participants: Mutex<Participants>,
    tx: watch::Sender<ConvergedState>,
}

#[derive(Debug, Default)]
struct Participants {
    next: u64,
    /// id -> (name, busy)
    all: BTreeMap<u64, (Arc<str>, bool)>,
    /// How many in `all` are busy (kept so an update is O(log n), not a scan).
    busy: usize,
}

impl Participants {
    /// Sets (or, with `None`, removes) participant `id`'s busy flag, keeping the count.
    fn set(&mut self, id: u64, busy: Option<bool>) {
        let was = match busy {
            Some(b) => self
                .all
                .get_mut(&id)
                .map(|e| std::mem::replace(&mut e.1, b)),
            None => self.all.remove(&id).map(|e| e.1),
        };
        if was == Some(true) {
            self.busy -= 1;
        }
        if busy == Some(true) && was.is_some() {
            self.busy += 1;
        }
    }
}

/// One participant. It starts busy; dropping it unregisters it.
#[derive(Debug)]
pub struct ConvergerHandle {
    id: u64,
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
                participants: Mutex::default(),
                tx,
            }),
        }
    }

    /// Adds a participant, busy until it says otherwise.
    pub fn register(&self, name: &str) -> ConvergerHandle {
        let mut id = 0;
        self.inner.update(|p| {
            id = p.next;
            p.next += 1;
            p.all.insert(id, (Arc::from(name), true));
            p.busy += 1;
        });
        ConvergerHandle {
            id,
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
        let p = self.inner.participants.lock().expect("converger lock");
        p.all
            .values()
            .filter(|(_, busy)| *busy)
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
    /// Applies `f` and republishes the state if converged-ness flipped.
    fn update(&self, f: impl FnOnce(&mut Participants)) {
        let mut p = self.participants.lock().expect("converger lock");
        f(&mut p);
        let all_idle = p.busy == 0;
        // Publishing under the lock keeps updates from two participants in order.
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
}

impl ConvergerHandle {
    pub fn set_busy(&self, busy: bool) {
        self.inner.update(|p| p.set(self.id, Some(busy)));
    }
}

impl Drop for ConvergerHandle {
    fn drop(&mut self) {
        self.inner.update(|p| p.set(self.id, None));
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
