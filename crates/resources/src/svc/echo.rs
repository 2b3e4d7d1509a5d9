//! Telling the echo of our own actions from news, so that a svc's watch does not report what
//! its own check_apply did or already saw.
//!
//! Why: the engine takes every watch event as news, and news resets the failure count. A start
//! that fails makes systemd send signals (activating, failed, the job's end); reported as
//! events they would start the service again at once, fail again, and so on without end, and
//! `meta.retry` would never run out. So while a check_apply runs, the watch holds what it hears;
//! when the check_apply is done it says what state it last read (and judged), and a held or
//! later signal is reported only if it is newer than that read:
//! - by position: the signal reached our connection before the reply to that read (systemd
//!   sent it before it answered, so the read already shows its change). This covers the
//!   manager's signals, which systemd sends while handling the call that causes them.
//! - by content: a unit's `PropertiesChanged` carries `StateChangeTimestampMonotonic`; one not
//!   newer than the state read (and with the same LoadState) describes a state already seen.
//!   systemd queues these signals, so one may arrive after a read that already shows it.
//!
//! A spurious event costs one check_apply that finds nothing to do; a missed one is a bug: so
//! anything unclear (no read yet, another connection, a check_apply that did not finish) is
//! reported. Pure: positions are any ordered type (zbus's receive sequence in use).

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// The last state a check_apply read and judged: where its reply was on the connection, and
/// what it said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen<P> {
    /// Our unique name on the bus: positions compare only within one connection.
    pub conn: String,
    pub position: P,
    pub state_change: u64,
    pub load_state: String,
}

/// A signal the watch heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard<P> {
    pub conn: String,
    pub position: P,
    /// For a unit's `PropertiesChanged`: its `StateChangeTimestampMonotonic` and `LoadState`,
    /// when it carries them.
    pub state_change: Option<u64>,
    pub load_state: Option<String>,
}

impl<P: Ord> Heard<P> {
    fn covered_by(&self, seen: &Seen<P>) -> bool {
        if self.conn != seen.conn {
            return false;
        }
        if self.position < seen.position {
            return true;
        }
        let same_load = self
            .load_state
            .as_ref()
            .is_none_or(|l| *l == seen.load_state);
        self.state_change.is_some_and(|t| t <= seen.state_change) && same_load
    }
}

/// How many held signals are kept one by one; past that, the end of the check_apply is
/// reported as an event whatever it read.
const HELD_MAX: usize = 64;

#[derive(Debug)]
struct State<P> {
    acting: bool,
    seen: Option<Seen<P>>,
    held: Vec<Heard<P>>,
    overflowed: bool,
}

/// Shared by a svc resource's check_apply and its watch.
#[derive(Debug)]
pub struct Echo<P> {
    state: Mutex<State<P>>,
    /// A check_apply ended: the watch looks at what it held.
    ended: Notify,
}

impl<P> Default for Echo<P> {
    fn default() -> Self {
        Echo {
            state: Mutex::new(State {
                acting: false,
                seen: None,
                held: Vec::new(),
                overflowed: false,
            }),
            ended: Notify::new(),
        }
    }
}

impl<P: Ord + Clone> Echo<P> {
    fn lock(&self) -> MutexGuard<'_, State<P>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A check_apply starts: signals are held until its guard is finished or dropped.
    pub fn begin(&self) -> Acting<'_, P> {
        self.lock().acting = true;
        Acting {
            echo: self,
            done: false,
        }
    }

    /// Whether the watch reports `heard` now (it is news). While a check_apply runs it is
    /// held instead, and judged when that ends (see [`Echo::after_apply`]).
    pub fn heard(&self, heard: Heard<P>) -> bool {
        let mut st = self.lock();
        if st.acting {
            if st.held.len() < HELD_MAX {
                st.held.push(heard);
            } else {
                st.overflowed = true;
            }
            return false;
        }
        !st.seen.as_ref().is_some_and(|seen| heard.covered_by(seen))
    }

    /// Resolves when a check_apply has ended (cancel-safe: a permit is kept).
    pub async fn ended(&self) {
        self.ended.notified().await
    }

    /// After a check_apply ended: whether anything held meanwhile is news.
    pub fn after_apply(&self) -> bool {
        let mut st = self.lock();
        if st.acting {
            return false;
        }
        let held = std::mem::take(&mut st.held);
        let overflowed = std::mem::take(&mut st.overflowed);
        overflowed
            || held
                .iter()
                .any(|h| !st.seen.as_ref().is_some_and(|seen| h.covered_by(seen)))
    }

    fn end(&self, seen: Option<Seen<P>>) {
        let mut st = self.lock();
        st.acting = false;
        // Without a read of its own, what was seen before is no longer what the unit is.
        st.seen = seen;
        drop(st);
        self.ended.notify_one();
    }
}

/// A check_apply under way; [`Acting::finish`] with what it read last, or drop it (cancelled,
/// or it failed before reading) to report whatever was held.
#[must_use]
pub struct Acting<'a, P: Ord + Clone> {
    echo: &'a Echo<P>,
    done: bool,
}

impl<P: Ord + Clone> Acting<'_, P> {
    pub fn finish(mut self, seen: Option<Seen<P>>) {
        self.done = true;
        self.echo.end(seen);
    }
}

impl<P: Ord + Clone> Drop for Acting<'_, P> {
    fn drop(&mut self) {
        if !self.done {
            self.echo.end(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(position: u64, state_change: u64) -> Seen<u64> {
        Seen {
            conn: ":1.6".into(),
            position,
            state_change,
            load_state: "loaded".into(),
        }
    }

    fn manager_signal(position: u64) -> Heard<u64> {
        Heard {
            conn: ":1.6".into(),
            position,
            state_change: None,
            load_state: None,
        }
    }

    fn props(position: u64, state_change: u64) -> Heard<u64> {
        Heard {
            state_change: Some(state_change),
            ..manager_signal(position)
        }
    }

    #[test]
    fn without_a_read_everything_is_news() {
        let echo = Echo::default();
        assert!(echo.heard(manager_signal(1)));
        assert!(echo.heard(props(2, 5)));
    }

    #[test]
    fn a_failed_start_does_not_report_its_own_signals() {
        let echo = Echo::default();
        let acting = echo.begin();
        // activating, then failed, then the job's end: all held.
        assert!(!echo.heard(props(10, 100)));
        assert!(!echo.heard(props(11, 101)));
        assert!(!echo.heard(manager_signal(12)));
        // The failure's read came after them.
        acting.finish(Some(seen(13, 101)));
        assert!(!echo.after_apply());
        // systemd queued the last PropertiesChanged: it arrives after the read, same state.
        assert!(!echo.heard(props(14, 101)));
        // A later change (someone started it by hand) is news.
        assert!(echo.heard(props(15, 102)));
        assert!(echo.heard(manager_signal(16)));
    }

    #[test]
    fn what_changed_after_the_last_read_is_reported_when_the_apply_ends() {
        let echo = Echo::default();
        let acting = echo.begin();
        assert!(!echo.heard(props(10, 100)));
        // Reached us after the read, and newer: the service died right after starting.
        assert!(!echo.heard(props(21, 102)));
        acting.finish(Some(seen(20, 101)));
        assert!(echo.after_apply());
        // Taken once.
        assert!(!echo.after_apply());
    }

    #[test]
    fn a_changed_load_state_is_news_even_with_the_same_timestamp() {
        let echo = Echo::default();
        echo.begin().finish(Some(seen(20, 101)));
        let mut h = props(30, 101);
        h.load_state = Some("not-found".into());
        assert!(echo.heard(h));
        let mut h = props(31, 101);
        h.load_state = Some("loaded".into());
        assert!(!echo.heard(h));
    }

    #[test]
    fn another_connection_or_an_unfinished_apply_is_news() {
        let echo = Echo::default();
        echo.begin().finish(Some(seen(20, 101)));
        let mut other = props(5, 50);
        other.conn = ":1.9".into();
        assert!(echo.heard(other));
        {
            let _acting = echo.begin();
            assert!(!echo.heard(props(25, 101)));
            // Dropped: cancelled, or failed before it could read.
        }
        assert!(echo.after_apply());
        // And what it saw before is forgotten.
        assert!(echo.heard(props(26, 100)));
    }

    #[test]
    fn too_many_held_signals_are_news() {
        let echo = Echo::default();
        let acting = echo.begin();
        for i in 0..(HELD_MAX as u64 + 1) {
            assert!(!echo.heard(props(i, 1)));
        }
        acting.finish(Some(seen(1000, 1000)));
        assert!(echo.after_apply());
    }

    #[tokio::test]
    async fn the_watch_hears_that_an_apply_ended() {
        let echo = Echo::<u64>::default();
        echo.begin().finish(None);
        // The permit is kept for a watch that was busy when it ended.
        tokio::time::timeout(std::time::Duration::from_secs(5), echo.ended())
            .await
            .expect("notified");
    }
}
