//! The process-wide inotify hub: one inotify instance and one reader thread for every watch
//! of this process, however many resources watch.
//!
//! A watch per resource would cost an inotify instance and a thread each (the kernel allows
//! 128 instances per user by default), and every resource watching a shared directory would
//! wake on every sibling's change. Here a subscriber states its interests as `(directory,
//! entry name)` pairs, or `(directory, None)` for every entry; the kernel watch on a directory
//! is shared (inotify hands out one watch descriptor per inode and instance) and reference
//! counted, and each event wakes only the subscribers interested in the entry it names.
//!
//! Ambiguity always wakes: a queue overflow wakes everyone and forgets every watch, and a
//! watched directory that is deleted, moved or unmounted wakes its subscribers and forgets its
//! watch, so that their next `set` watches whatever is at the path now. Waking is a coalescing
//! `Notify` permit: the reader never blocks on a subscriber. What woke it is kept as event
//! masks ([`Seen`]: their union and the last one) for a subscriber that must tell a file still
//! being written from one closed after writing (`resources::watch`). The reader is a thread
//! rather than a task because the hub outlives any one tokio runtime. This must never change
//! the filesystem, and never reports reads (opening, reading and closing without writing).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use tokio::sync::Notify;

/// Changes of entries (created, deleted, renamed in or out, written, closed after writing,
/// attributes) and of the directory itself (deleted, moved). Every watch has this mask, so a
/// shared watch always carries the union of what its subscribers need. Reads are left out.
const MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MODIFY)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

/// The watch descriptor no longer refers to the directory at its path (or to anything).
const GONE: AddWatchFlags = AddWatchFlags::IN_DELETE_SELF
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_UNMOUNT)
    .union(AddWatchFlags::IN_IGNORED);

#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error("starting inotify: {0}")]
    Init(Errno),
    #[error("starting the inotify reader thread: {0}")]
    Thread(std::io::Error),
    #[error("watching {}: {source}", path.display())]
    Watch { path: PathBuf, source: Errno },
    #[error("the inotify reader stopped: {0}")]
    Stopped(Errno),
}

/// Changes of the entry `name` of `dir`, or of every entry of `dir` (and of `dir` itself)
/// with `None`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Interest {
    pub dir: PathBuf,
    pub name: Option<OsString>,
}

type SubId = u64;

struct Hub {
    fd: Inotify,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    watches: HashMap<WatchDescriptor, Watch>,
    subs: HashMap<SubId, Sub>,
    next_id: SubId,
    /// Set once the reader has stopped; the hub is then replaced for new subscribers.
    stopped: Option<Errno>,
}

/// One kernel watch and who listens to it.
struct Watch {
    /// The path it was added as, for logs.
    dir: PathBuf,
    /// Subscribers by entry name (`None`: every entry), each with how many of its interests
    /// lead here (two of its paths may lead to one directory). A map, not a list: thousands of
    /// files of one directory register and leave under the same name while it is created.
    listeners: HashMap<Option<OsString>, HashMap<SubId, usize>>,
}

struct Sub {
    wake: Arc<Notify>,
    /// Each interest with the watch serving it.
    interests: HashMap<Interest, WatchDescriptor>,
    /// What woke it since it last looked ([`Subscription::take_seen`]).
    seen: Seen,
}

/// The events that woke a subscriber since it last looked: the union of their masks, and the
/// mask of the last one (which tells a file still being written, `IN_MODIFY` last, from one
/// written and then closed). A lost watch or a queue overflow shows as `IN_IGNORED` or
/// `IN_Q_OVERFLOW`: anything may have happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub all: AddWatchFlags,
    pub last: AddWatchFlags,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            all: AddWatchFlags::empty(),
            last: AddWatchFlags::empty(),
        }
    }
}

impl Seen {
    fn add(&mut self, mask: AddWatchFlags) {
        self.all |= mask;
        self.last = mask;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// A subscriber's handle: interests are set with `set`, changes awaited with `changed`.
/// Dropping it releases its watches.
pub(crate) struct Subscription {
    hub: &'static Hub,
    id: SubId,
    wake: Arc<Notify>,
}

static HUB: Mutex<Option<&'static Hub>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic in a subscriber's thread: every update is
    // completed before anything that could panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Join the hub, creating it (and its reader thread) on first use.
pub(crate) fn subscribe() -> Result<Subscription, WatchError> {
    let mut current = lock(&HUB);
    let hub = match *current {
        Some(hub) if lock(&hub.state).stopped.is_none() => hub,
        _ => {
            let hub = Hub::start()?;
            *current = Some(hub);
            hub
        }
    };
    drop(current);
    Ok(hub.subscribe())
}

impl Hub {
    /// A new hub, leaked: it lives as long as the process, like its reader thread.
    fn start() -> Result<&'static Hub, WatchError> {
        let fd = Inotify::init(InitFlags::IN_CLOEXEC).map_err(WatchError::Init)?;
        let hub: &'static Hub = Box::leak(Box::new(Hub {
            fd,
            state: Mutex::new(State::default()),
        }));
        std::thread::Builder::new()
            .name("inotify-hub".into())
            .spawn(move || hub.read())
            .map_err(WatchError::Thread)?;
        Ok(hub)
    }

    fn subscribe(&'static self) -> Subscription {
        self.subscribe_waking(Arc::new(Notify::new()))
    }

    fn subscribe_waking(&'static self, wake: Arc<Notify>) -> Subscription {
        let mut state = lock(&self.state);
        let id = state.next_id;
        state.next_id += 1;
        state.subs.insert(
            id,
            Sub {
                wake: wake.clone(),
                interests: HashMap::new(),
                seen: Seen::default(),
            },
        );
        Subscription {
            hub: self,
            id,
            wake,
        }
    }

    fn read(&self) {
        loop {
            match self.fd.read_events() {
                Ok(events) => {
                    let mut state = lock(&self.state);
                    for event in events {
                        state.dispatch(&self.fd, event);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("inotify reader stopped: {e}");
                    let mut state = lock(&self.state);
                    state.stopped = Some(e);
                    state.forget_all(&self.fd);
                    return;
                }
            }
        }
    }
}

impl State {
    fn dispatch(&mut self, fd: &Inotify, event: InotifyEvent) {
        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            tracing::warn!("inotify queue overflowed; rewatching everything");
            self.forget_all(fd);
        } else if event.mask.intersects(GONE) {
            self.forget(fd, event.wd);
        } else if let Some(watch) = self.watches.get(&event.wd) {
            let subs = &mut self.subs;
            let mut wake = |ids: Option<&HashMap<SubId, usize>>| {
                for id in ids.into_iter().flat_map(HashMap::keys) {
                    if let Some(sub) = subs.get_mut(id) {
                        sub.seen.add(event.mask);
                        sub.wake.notify_one();
                    }
                }
            };
            match event.name {
                Some(name) => {
                    wake(watch.listeners.get(&Some(name)));
                    wake(watch.listeners.get(&None));
                }
                // About the directory itself (its attributes): everyone below may care.
                None => watch.listeners.values().for_each(|ids| wake(Some(ids))),
            }
        }
    }

    /// The watch `wd` no longer serves its path: drop it and wake its subscribers, whose next
    /// `set` watches the path afresh.
    fn forget(&mut self, fd: &Inotify, wd: WatchDescriptor) {
        let Some(watch) = self.watches.remove(&wd) else {
            return;
        };
        tracing::debug!(dir = %watch.dir.display(), "watched directory gone");
        // Already gone when the kernel says so (IN_IGNORED); harmless then.
        let _ = fd.rm_watch(wd);
        for id in watch.listeners.values().flat_map(HashMap::keys) {
            if let Some(sub) = self.subs.get_mut(id) {
                sub.interests.retain(|_, w| *w != wd);
                sub.seen.add(AddWatchFlags::IN_IGNORED);
                sub.wake.notify_one();
            }
        }
    }

    fn forget_all(&mut self, fd: &Inotify) {
        for wd in self.watches.keys() {
            let _ = fd.rm_watch(*wd);
        }
        self.watches.clear();
        for sub in self.subs.values_mut() {
            sub.interests.clear();
            sub.seen.add(AddWatchFlags::IN_Q_OVERFLOW);
            sub.wake.notify_one();
        }
    }
}

/// Take one registration of `id` for `name` off the watch `wd`; the kernel watch goes with
/// the last one.
fn release(
    fd: &Inotify,
    watches: &mut HashMap<WatchDescriptor, Watch>,
    wd: WatchDescriptor,
    name: &Option<OsString>,
    id: SubId,
) {
    let Some(watch) = watches.get_mut(&wd) else {
        return;
    };
    if let Some(ids) = watch.listeners.get_mut(name) {
        if let Some(count) = ids.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                ids.remove(&id);
            }
        }
        if ids.is_empty() {
            watch.listeners.remove(name);
        }
    }
    if watch.listeners.is_empty() {
        watches.remove(&wd);
        // The directory may already be gone, taking its watch along.
        let _ = fd.rm_watch(wd);
    }
}

impl Subscription {
    /// Make the interests exactly `wanted`. Interests already held keep their watch; new ones
    /// are watched before old ones are released, so a shared directory is never unwatched in
    /// between. On error the interests before the failing one are held: call again (the
    /// directory may have vanished since the caller looked).
    pub(crate) fn set(&self, wanted: &BTreeSet<Interest>) -> Result<(), WatchError> {
        let hub = self.hub;
        let mut state = lock(&hub.state);
        if let Some(e) = state.stopped {
            return Err(WatchError::Stopped(e));
        }
        let State { watches, subs, .. } = &mut *state;
        let Some(sub) = subs.get_mut(&self.id) else {
            return Ok(());
        };
        for interest in wanted {
            if sub.interests.contains_key(interest) {
                continue;
            }
            let wd = hub
                .fd
                .add_watch(&interest.dir, MASK)
                .map_err(|source| WatchError::Watch {
                    path: interest.dir.clone(),
                    source,
                })?;
            *watches
                .entry(wd)
                .or_insert_with(|| Watch {
                    dir: interest.dir.clone(),
                    listeners: HashMap::new(),
                })
                .listeners
                .entry(interest.name.clone())
                .or_default()
                .entry(self.id)
                .or_default() += 1;
            sub.interests.insert(interest.clone(), wd);
        }
        let stale: Vec<Interest> = sub
            .interests
            .keys()
            .filter(|i| !wanted.contains(*i))
            .cloned()
            .collect();
        for interest in stale {
            if let Some(wd) = sub.interests.remove(&interest) {
                release(&hub.fd, watches, wd, &interest.name, self.id);
            }
        }
        Ok(())
    }

    /// A new subscriber on the same hub that shares this one's wake-ups: `changed` on either
    /// returns after an event for any of them, and each tells its own with `take_seen`.
    pub(crate) fn sibling(&self) -> Subscription {
        self.hub.subscribe_waking(self.wake.clone())
    }

    /// What woke this subscriber since the last call (empty: nothing, or a wake-up meant for a
    /// sibling).
    pub(crate) fn take_seen(&self) -> Seen {
        let mut state = lock(&self.hub.state);
        state
            .subs
            .get_mut(&self.id)
            .map(|sub| std::mem::take(&mut sub.seen))
            .unwrap_or_default()
    }

    /// Wait for a change of interest (or for a watch of ours to be lost, which `set` repairs).
    pub(crate) async fn changed(&self) -> Result<(), WatchError> {
        self.wake.notified().await;
        match lock(&self.hub.state).stopped {
            Some(e) => Err(WatchError::Stopped(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = lock(&self.hub.state);
        let State { watches, subs, .. } = &mut *state;
        if let Some(sub) = subs.remove(&self.id) {
            for (interest, wd) in sub.interests {
                release(&self.hub.fd, watches, wd, &interest.name, self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    /// Generous: only a broken hub waits this long.
    const DEADLINE: Duration = Duration::from_secs(20);

    fn interests(dir: &Path, names: &[&str]) -> BTreeSet<Interest> {
        names
            .iter()
            .map(|n| Interest {
                dir: dir.to_path_buf(),
                name: Some((*n).into()),
            })
            .collect()
    }

    /// How many kernel watches the hub holds on `dir`'s inode, as the kernel lists them in
    /// the fdinfo of the inotify descriptor (`inotify wd:1 ino:1a2b sdev:...`).
    fn kernel_watches(sub: &Subscription, dir: &Path) -> usize {
        let fd = sub.hub.fd.as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let ino = format!("ino:{:x} ", std::fs::metadata(dir).unwrap().ino());
        info.lines()
            .filter(|l| l.starts_with("inotify ") && l.contains(&ino))
            .count()
    }

    async fn changed(sub: &Subscription) {
        tokio::time::timeout(DEADLINE, sub.changed())
            .await
            .expect("no change before the deadline")
            .unwrap();
    }

    /// True when a wake is pending for `sub` (consuming it).
    async fn pending(sub: &Subscription) -> bool {
        tokio::select! {
            biased;
            _ = sub.changed() => true,
            _ = std::future::ready(()) => false,
        }
    }

    /// Write `other/s`, watched by `sentinel`, and wait for it: the hub dispatches in order,
    /// so every wake caused by earlier changes has been delivered by then.
    async fn round_trip(sentinel: &Subscription, other: &Path) {
        std::fs::write(other.join("s"), "1").unwrap();
        changed(sentinel).await;
    }

    #[tokio::test]
    async fn subscribers_share_one_kernel_watch_released_with_the_last() {
        let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sentinel = subscribe().unwrap();
        sentinel.set(&interests(other.path(), &["s"])).unwrap();
        let (a, b) = (subscribe().unwrap(), subscribe().unwrap());
        a.set(&interests(dir.path(), &["x"])).unwrap();
        b.set(&interests(dir.path(), &["y", "z"])).unwrap();
        assert_eq!(kernel_watches(&a, dir.path()), 1);

        // Each hears only its own names.
        std::fs::write(dir.path().join("y"), "1").unwrap();
        changed(&b).await;
        round_trip(&sentinel, other.path()).await;
        assert!(!pending(&a).await, "woken by a name it did not ask for");
        pending(&b).await;

        // Dropping one interest or one subscriber keeps the shared watch for the others.
        b.set(&interests(dir.path(), &["y"])).unwrap();
        drop(a);
        assert_eq!(kernel_watches(&b, dir.path()), 1);
        std::fs::write(dir.path().join("y"), "2").unwrap();
        changed(&b).await;

        b.set(&BTreeSet::new()).unwrap();
        assert_eq!(kernel_watches(&b, dir.path()), 0);
    }

    #[tokio::test]
    async fn an_overflow_wakes_everyone_and_watches_are_set_up_again() {
        let dir = tempfile::tempdir().unwrap();
        // A hub of its own: the overflow forgets every watch of its hub.
        let sub = Hub::start().unwrap().subscribe();
        let wanted = interests(dir.path(), &["x"]);
        sub.set(&wanted).unwrap();
        // The kernel's overflow event carries wd -1 and no name; its wd is never looked at.
        let wd = *lock(&sub.hub.state).subs[&sub.id]
            .interests
            .values()
            .next()
            .unwrap();
        lock(&sub.hub.state).dispatch(
            &sub.hub.fd,
            InotifyEvent {
                wd,
                mask: AddWatchFlags::IN_Q_OVERFLOW,
                cookie: 0,
                name: None,
            },
        );
        changed(&sub).await;
        assert_eq!(kernel_watches(&sub, dir.path()), 0, "every watch forgotten");

        sub.set(&wanted).unwrap();
        assert_eq!(kernel_watches(&sub, dir.path()), 1);
        std::fs::write(dir.path().join("x"), "1").unwrap();
        changed(&sub).await;
    }
}
