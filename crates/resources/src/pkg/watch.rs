//! Watching what dpkg has installed (and, for `newest`, what apt offers) through the
//! process-wide inotify hub, settled on dpkg's locks.
//!
//! dpkg replaces `/var/lib/dpkg/status` by a rename at each checkpoint, several times during a
//! transaction, and apt holds `lock-frontend` from its first step to its last. A change seen
//! while `lock-frontend` or `lock` is held is therefore not reported yet: the holder closing the
//! lock file (which it opened for writing: inotify reports the close) is the next event, and
//! once no lock is held the change is reported, once. The same holds for apt's lists and their
//! lock (`apt-get update`). Locks are tested with `F_OFD_GETLK` on a read-only descriptor: it
//! sees dpkg's and apt's `fcntl` locks, takes none, and a read-only open and close is no
//! inotify event of ours. No timer: every wake is an inotify event. This must never change the
//! filesystem.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use resource::{ResourceError, WatchCtx};

use crate::inotify::{self, Interest};

/// What to watch: dpkg's database, and apt's lists when a candidate version matters.
#[derive(Clone, Debug)]
pub(crate) struct Dirs {
    pub dpkg: PathBuf,
    pub lists: Option<PathBuf>,
}

/// What a wake-up led to (for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A lock is held: the change is reported once it is released.
    Deferred,
    Reported,
}

pub(crate) async fn watch(
    dirs: &Dirs,
    ctx: WatchCtx,
    observe: impl Fn(Seen),
) -> Result<(), ResourceError> {
    let sub = inotify::subscribe().map_err(ResourceError::failed)?;
    let wanted = interests(dirs);
    sub.set(&wanted).map_err(ResourceError::failed)?;
    ctx.running();
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            changed = sub.changed() => changed.map_err(ResourceError::failed)?,
        }
        // A watch lost with its directory (or to a queue overflow) is set up again before
        // anything is reported, so the check this leads to cannot miss what follows.
        sub.set(&wanted).map_err(ResourceError::failed)?;
        if busy(dirs) {
            observe(Seen::Deferred);
            continue;
        }
        observe(Seen::Reported);
        ctx.event();
    }
}

fn interests(dirs: &Dirs) -> BTreeSet<Interest> {
    let mut wanted: BTreeSet<Interest> = ["status", "lock", "lock-frontend"]
        .into_iter()
        .map(|name| Interest {
            dir: dirs.dpkg.clone(),
            name: Some(name.into()),
        })
        .collect();
    if let Some(lists) = &dirs.lists {
        // Every list file (their names depend on the sources), and `lock`.
        wanted.insert(Interest {
            dir: lists.clone(),
            name: None,
        });
    }
    wanted
}

/// Whether dpkg, apt or apt's list update is in the middle of something.
fn busy(dirs: &Dirs) -> bool {
    locked(&dirs.dpkg.join("lock-frontend"))
        || locked(&dirs.dpkg.join("lock"))
        || dirs.lists.as_ref().is_some_and(|l| locked(&l.join("lock")))
}

/// Whether another process (or open file description) holds an `fcntl` lock on `path`. A lock
/// file that does not exist or cannot be opened is not held, as far as we can tell.
pub(crate) fn locked(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match fcntl(&file, FcntlArg::F_OFD_GETLK(&mut lock)) {
        Ok(_) => lock.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use resource::{CancellationToken, EventReceiver, EventSink};
    use tokio::sync::Notify;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    /// Takes a write lock on `path` as dpkg does (on its own open file description, which a
    /// test in this process can see with `F_OFD_GETLK`); released when the file is closed.
    fn hold(path: &Path) -> File {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&lock)).unwrap();
        file
    }

    /// dpkg's checkpoint: write `status-new`, rename it over `status`.
    fn checkpoint(dir: &Path, text: &str) {
        std::fs::write(dir.join("status-new"), text).unwrap();
        std::fs::rename(dir.join("status-new"), dir.join("status")).unwrap();
    }

    struct Rig {
        seen: Arc<Mutex<Vec<Seen>>>,
        changed: Arc<Notify>,
        events: EventReceiver,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), ResourceError>>,
    }

    impl Rig {
        fn start(dirs: Dirs) -> Rig {
            let (sink, events) = EventSink::channel();
            let cancel = CancellationToken::new();
            let ctx = WatchCtx {
                events: sink,
                cancel: cancel.clone(),
                hostname: "h".into(),
            };
            let seen = Arc::new(Mutex::new(Vec::new()));
            let changed = Arc::new(Notify::new());
            let (s, c) = (seen.clone(), changed.clone());
            let task = tokio::spawn(async move {
                watch(&dirs, ctx, move |what| {
                    s.lock().unwrap().push(what);
                    c.notify_one();
                })
                .await
            });
            Rig {
                seen,
                changed,
                events,
                cancel,
                task,
            }
        }

        async fn event(&mut self) {
            tokio::time::timeout(LIMIT, self.events.recv())
                .await
                .expect("no event before the deadline")
                .unwrap();
        }

        /// Waits until the watch has handled a wake-up that ended as `what`.
        async fn until(&self, what: Seen) {
            tokio::time::timeout(LIMIT, async {
                loop {
                    let notified = self.changed.notified();
                    if self.seen.lock().unwrap().contains(&what) {
                        return;
                    }
                    notified.await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("never {what:?}: {:?}", self.seen.lock().unwrap()));
        }

        async fn stop(self) {
            self.cancel.cancel();
            self.task.await.unwrap().unwrap();
        }
    }

    #[test]
    fn a_lock_is_seen_only_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        assert!(!locked(&path), "no lock file");
        std::fs::write(&path, "").unwrap();
        assert!(!locked(&path));
        let held = hold(&path);
        assert!(locked(&path));
        drop(held);
        assert!(!locked(&path));
    }

    #[tokio::test]
    async fn changes_under_dpkgs_lock_are_reported_once_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let dpkg = dir.path().to_path_buf();
        checkpoint(&dpkg, "");
        std::fs::write(dpkg.join("lock"), "").unwrap();
        std::fs::write(dpkg.join("lock-frontend"), "").unwrap();
        let mut rig = Rig::start(Dirs {
            dpkg: dpkg.clone(),
            lists: None,
        });
        rig.event().await; // running

        // Unlocked: a checkpoint is reported.
        checkpoint(&dpkg, "Package: a\n");
        rig.event().await;
        rig.until(Seen::Reported).await;

        // A transaction: apt holds lock-frontend throughout, dpkg takes lock and checkpoints.
        rig.seen.lock().unwrap().clear();
        let frontend = hold(&dpkg.join("lock-frontend"));
        let lock = hold(&dpkg.join("lock"));
        checkpoint(&dpkg, "Package: b\n");
        rig.until(Seen::Deferred).await;
        rig.seen.lock().unwrap().clear();
        drop(lock); // dpkg is done, apt is not
        checkpoint(&dpkg, "Package: c\n");
        rig.until(Seen::Deferred).await;
        assert!(rig.events.try_recv().is_err(), "reported mid-transaction");
        assert!(!rig.seen.lock().unwrap().contains(&Seen::Reported));
        drop(frontend); // apt is done: its close is the event
        rig.event().await;
        rig.until(Seen::Reported).await;
        rig.stop().await;
    }

    #[tokio::test]
    async fn list_updates_count_for_newest_once_apt_is_done_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let dpkg = dir.path().join("dpkg");
        let lists = dir.path().join("lists");
        std::fs::create_dir_all(&dpkg).unwrap();
        std::fs::create_dir_all(lists.join("partial")).unwrap();
        checkpoint(&dpkg, "");
        let mut rig = Rig::start(Dirs {
            dpkg,
            lists: Some(lists.clone()),
        });
        rig.event().await; // running
        let lock = hold(&lists.join("lock"));
        rig.until(Seen::Deferred).await; // creating the lock file was a change
        std::fs::write(lists.join("partial/x_Packages"), "Package: a\n").unwrap();
        std::fs::rename(lists.join("partial/x_Packages"), lists.join("x_Packages")).unwrap();
        assert!(rig.events.try_recv().is_err(), "reported mid-update");
        drop(lock);
        rig.event().await;
        rig.stop().await;
    }
}
