//! The two convergence rules of a remote run, as state machines: no clock, no store, no task.
//! The caller feeds them what it saw and when (`now`), and does what they say; tests drive
//! them with made-up instants.
//!
//! - [`Publisher`]: what one host writes to `/_mgmt/converged/<host>`.
//! - [`Cluster`]: when the initiator considers the whole cluster converged.
//!
//! Both are generic over the instant type (`std::time::Instant`, `tokio::time::Instant`, or a
//! plain number in tests).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Add;
use std::time::Duration;

/// What a [`Publisher`] wants done next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish<T> {
    /// Write this value as the host's flag, then report with [`Publisher::published`].
    Write(bool),
    /// Nothing to write until the engine's state changes or `until` (if any) passes.
    Wait { until: Option<T> },
}

/// Mirrors a host's convergence into its store flag: `false` as soon as anything is busy,
/// `true` once everything has been idle for `hold` without a break.
///
/// A busy moment can be over before the publisher looks (a timer tick is applied in
/// microseconds), so the flag would never leave `true`; and a `false` followed at once by a
/// `true` can reach a watcher as one unchanged snapshot. So a new idle period (a new `since`)
/// counts as a break even when the busy state was never seen, and `true` is only written after
/// `hold` of quiet: a remote child passes the run's converged timeout, so its initiator never
/// sees a host that keeps waking up as converged.
#[derive(Debug, Clone)]
pub struct Publisher<T> {
    hold: Duration,
    published: Option<bool>,
    /// The idle period the written `true` belongs to.
    published_since: Option<T>,
    /// A write that failed is tried again after this.
    retry_after: Option<T>,
}

/// How long a failed write waits before it is tried again.
pub const PUBLISH_RETRY: Duration = Duration::from_secs(1);

impl<T: Copy + Ord + Add<Duration, Output = T>> Publisher<T> {
    pub fn new(hold: Duration) -> Self {
        Publisher {
            hold,
            published: None,
            published_since: None,
            retry_after: None,
        }
    }

    /// What to do, given the engine's state: `idle_since` is when everything last turned idle
    /// (`None`: something is busy).
    pub fn next(&self, idle_since: Option<T>, now: T) -> Publish<T> {
        let quiet = idle_since.is_some_and(|s| s + self.hold <= now);
        let same_period = self.published != Some(true) || self.published_since == idle_since;
        let want = quiet && same_period;
        if self.published != Some(want) {
            return match self.retry_after {
                Some(t) if t > now => Publish::Wait { until: Some(t) },
                _ => Publish::Write(want),
            };
        }
        Publish::Wait {
            until: idle_since.map(|s| s + self.hold).filter(|d| *d > now),
        }
    }

    /// The outcome of the write [`next`](Self::next) asked for: on success it is the flag now;
    /// on failure the same write is asked for again after [`PUBLISH_RETRY`].
    pub fn published(&mut self, value: bool, idle_since: Option<T>, ok: bool, now: T) {
        if ok {
            self.published = Some(value);
            self.published_since = if value { idle_since } else { None };
            self.retry_after = None;
        } else {
            self.retry_after = Some(now + PUBLISH_RETRY);
        }
    }
}

/// Cluster-wide convergence as the initiator sees it: every host still alive (not failed, not
/// finished) has had its flag `true` continuously for `timeout`. While no host is alive the
/// cluster has not converged (it ends with its hosts instead).
#[derive(Debug, Clone)]
pub struct Cluster<T> {
    timeout: Duration,
    alive: BTreeSet<String>,
    /// The flags as last seen.
    flags: BTreeMap<String, bool>,
    /// When each host's flag last turned true (absent: not converged).
    since: BTreeMap<String, T>,
}

impl<T: Copy + Ord + Add<Duration, Output = T>> Cluster<T> {
    pub fn new(timeout: Duration) -> Self {
        Cluster {
            timeout,
            alive: BTreeSet::new(),
            flags: BTreeMap::new(),
            since: BTreeMap::new(),
        }
    }

    /// The hosts that count from now on.
    pub fn set_alive(&mut self, hosts: BTreeSet<String>) {
        self.alive = hosts;
    }

    /// A new snapshot of every host's flag, seen at `now`.
    pub fn flags(&mut self, flags: BTreeMap<String, bool>, now: T) {
        for (host, &conv) in &flags {
            let was = self.flags.get(host).copied().unwrap_or(false);
            if conv && !was {
                self.since.insert(host.clone(), now);
            } else if !conv {
                self.since.remove(host);
            }
        }
        for host in self.flags.keys() {
            if !flags.contains_key(host) {
                self.since.remove(host);
            }
        }
        self.flags = flags;
    }

    /// When the cluster will have converged if nothing changes (possibly in the past: it has);
    /// `None` while a live host is not converged or no host is alive.
    pub fn deadline(&self) -> Option<T> {
        if self.alive.is_empty() {
            return None;
        }
        self.alive
            .iter()
            .map(|h| self.since.get(h).copied())
            .collect::<Option<Vec<T>>>()
            .and_then(|v| v.into_iter().max())
            .map(|last| last + self.timeout)
    }

    /// How many live hosts are converged right now (for logs).
    pub fn converged_count(&self) -> usize {
        self.alive
            .iter()
            .filter(|h| self.since.contains_key(*h))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds as an instant.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Ms(u64);

    impl Add<Duration> for Ms {
        type Output = Ms;
        fn add(self, d: Duration) -> Ms {
            Ms(self.0 + d.as_millis() as u64)
        }
    }

    const HOLD: Duration = Duration::from_millis(100);

    /// Runs the publisher's wishes against a store that accepts or refuses writes.
    fn settle(p: &mut Publisher<Ms>, idle: Option<Ms>, now: Ms, store_ok: bool) -> Vec<bool> {
        let mut writes = Vec::new();
        while let Publish::Write(v) = p.next(idle, now) {
            writes.push(v);
            p.published(v, idle, store_ok, now);
            if !store_ok {
                break;
            }
        }
        writes
    }

    #[test]
    fn publisher_writes_false_at_once_and_true_only_after_the_hold() {
        let mut p = Publisher::new(HOLD);
        // Busy at start: false is written once, then nothing until the state changes.
        assert_eq!(settle(&mut p, None, Ms(0), true), [false]);
        assert_eq!(p.next(None, Ms(0)), Publish::Wait { until: None });
        // Idle since 10: wait for 10 + hold.
        assert_eq!(
            settle(&mut p, Some(Ms(10)), Ms(20), true),
            Vec::<bool>::new()
        );
        assert_eq!(
            p.next(Some(Ms(10)), Ms(20)),
            Publish::Wait {
                until: Some(Ms(110))
            }
        );
        assert_eq!(settle(&mut p, Some(Ms(10)), Ms(110), true), [true]);
        assert_eq!(p.next(Some(Ms(10)), Ms(500)), Publish::Wait { until: None });
    }

    #[test]
    fn a_busy_moment_never_seen_still_breaks_the_flag() {
        let mut p = Publisher::new(HOLD);
        settle(&mut p, Some(Ms(0)), Ms(100), true);
        // The engine was busy and idle again between two looks: a new idle period. The flag
        // goes false at once, and true again only after a full hold of the new period.
        assert_eq!(settle(&mut p, Some(Ms(150)), Ms(160), true), [false]);
        assert_eq!(
            settle(&mut p, Some(Ms(150)), Ms(249), true),
            Vec::<bool>::new()
        );
        assert_eq!(settle(&mut p, Some(Ms(150)), Ms(250), true), [true]);
    }

    #[test]
    fn a_failed_write_is_tried_again_later_not_forgotten() {
        let mut p = Publisher::new(HOLD);
        assert_eq!(settle(&mut p, None, Ms(0), false), [false]);
        assert_eq!(
            p.next(None, Ms(10)),
            Publish::Wait {
                until: Some(Ms(1000))
            }
        );
        assert_eq!(settle(&mut p, None, Ms(1000), true), [false]);
        assert_eq!(p.next(None, Ms(1000)), Publish::Wait { until: None });
    }

    fn flags(v: &[(&str, bool)]) -> BTreeMap<String, bool> {
        v.iter().map(|(h, c)| (h.to_string(), *c)).collect()
    }

    fn hosts(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn the_cluster_converges_when_every_live_host_has_been_converged_for_the_timeout() {
        let mut c = Cluster::new(Duration::from_millis(50));
        assert_eq!(c.deadline(), None, "no host alive: not converged");
        c.set_alive(hosts(&["a", "b"]));
        c.flags(flags(&[("a", true)]), Ms(10));
        assert_eq!(c.deadline(), None, "b has no flag yet");
        c.flags(flags(&[("a", true), ("b", true)]), Ms(30));
        assert_eq!(c.deadline(), Some(Ms(80)), "the last to converge + timeout");
        // a wakes up: its clock starts again when it is converged again.
        c.flags(flags(&[("a", false), ("b", true)]), Ms(40));
        assert_eq!(c.deadline(), None);
        c.flags(flags(&[("a", true), ("b", true)]), Ms(60));
        assert_eq!(c.deadline(), Some(Ms(110)));
        assert_eq!(c.converged_count(), 2);
    }

    #[test]
    fn a_host_that_leaves_stops_counting_and_its_flag_vanishing_resets_it() {
        let mut c = Cluster::new(Duration::from_millis(50));
        c.set_alive(hosts(&["a", "b"]));
        c.flags(flags(&[("a", true), ("b", false)]), Ms(0));
        assert_eq!(c.deadline(), None);
        // b failed: only a counts.
        c.set_alive(hosts(&["a"]));
        assert_eq!(c.deadline(), Some(Ms(50)));
        // a's flag disappears (its key deleted) and comes back: converged from then on.
        c.flags(flags(&[("b", false)]), Ms(20));
        assert_eq!(c.deadline(), None);
        c.flags(flags(&[("a", true), ("b", false)]), Ms(30));
        assert_eq!(c.deadline(), Some(Ms(80)));
        // Every host gone: no convergence, whatever the flags say.
        c.set_alive(hosts(&[]));
        assert_eq!(c.deadline(), None);
    }
}
