//! Watching the account database through the process-wide inotify hub, settled on the shadow
//! suite's lock files.
//!
//! The tools replace `passwd`, `shadow`, `group` and `gshadow` by a rename, so `/etc` is
//! watched, for those names and their `.lock` files only. A tool holds `NAME.lock` (a file
//! holding its pid, made with `link`) from before its first write until after its last: a
//! change seen while a lock is held by a live process is not reported yet, and the lock's
//! removal (an event of its own) reports it, once. A lock whose process is gone is stale (the
//! tools think so too) and is ignored. No timer: every wake is an inotify event. This never
//! changes the filesystem.

use std::collections::BTreeSet;
use std::path::Path;

use resource::{ResourceError, WatchCtx};

use crate::inotify::{self, Interest};

/// The files of the database that the tools write.
const FILES: &[&str] = &["passwd", "shadow", "group", "gshadow"];

/// What a wake-up led to (for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A tool holds a lock: the change is reported once it lets go.
    Deferred,
    Reported,
}

pub(crate) async fn watch(
    dir: &Path,
    ctx: WatchCtx,
    observe: impl Fn(Seen),
) -> Result<(), ResourceError> {
    let sub = inotify::subscribe().map_err(ResourceError::failed)?;
    let wanted = interests(dir);
    sub.set(&wanted).map_err(ResourceError::failed)?;
    ctx.running();
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            changed = sub.changed() => changed.map_err(ResourceError::failed)?,
        }
        // A watch lost (to a queue overflow) is set up again before anything is reported.
        sub.set(&wanted).map_err(ResourceError::failed)?;
        if locked(dir) {
            observe(Seen::Deferred);
            continue;
        }
        observe(Seen::Reported);
        ctx.event();
    }
}

fn interests(dir: &Path) -> BTreeSet<Interest> {
    FILES
        .iter()
        .flat_map(|f| [f.to_string(), format!("{f}.lock")])
        .map(|name| Interest {
            dir: dir.to_path_buf(),
            name: Some(name.into()),
        })
        .collect()
}

/// Whether a live process holds one of the database's locks.
pub(crate) fn locked(dir: &Path) -> bool {
    FILES.iter().any(|f| held(&dir.join(format!("{f}.lock"))))
}

/// A lock file names its holder's pid; it is held while that process lives. One that cannot
/// be read (appearing, or not ours to read) counts as held: its removal wakes us again.
fn held(lock: &Path) -> bool {
    match std::fs::read_to_string(lock) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => true,
        },
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use resource::{CancellationToken, EventSink};
    use tokio::sync::Notify;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    /// A tool's update: lock, write the new file, rename it over, unlock.
    fn lock(dir: &Path, file: &str, pid: u32) {
        std::fs::write(dir.join(format!("{file}.lock")), format!("{pid}")).unwrap();
    }
    fn replace(dir: &Path, file: &str, text: &str) {
        std::fs::write(dir.join(format!("{file}+")), text).unwrap();
        std::fs::rename(dir.join(format!("{file}+")), dir.join(file)).unwrap();
    }

    #[tokio::test]
    async fn a_change_under_a_live_lock_is_reported_when_the_lock_goes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        std::fs::write(d.join("passwd"), "").unwrap();
        std::fs::write(d.join("unrelated"), "").unwrap();
        let (sink, mut events) = EventSink::channel();
        let cancel = CancellationToken::new();
        let ctx = WatchCtx {
            events: sink,
            cancel: cancel.clone(),
            hostname: "h".into(),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let (s, c, wd) = (seen.clone(), changed.clone(), d.clone());
        let task = tokio::spawn(async move {
            watch(&wd, ctx, move |what| {
                s.lock().unwrap().push(what);
                c.notify_one();
            })
            .await
        });
        let event = async |events: &mut resource::EventReceiver| {
            tokio::time::timeout(LIMIT, events.recv())
                .await
                .expect("an event")
                .unwrap();
        };
        let until = async |what: Seen| {
            tokio::time::timeout(LIMIT, async {
                loop {
                    let notified = changed.notified();
                    if seen.lock().unwrap().contains(&what) {
                        return;
                    }
                    notified.await;
                }
            })
            .await
            .expect("seen")
        };
        event(&mut events).await; // running

        // Unlocked: reported.
        replace(&d, "group", "g:x:1:\n");
        event(&mut events).await;
        until(Seen::Reported).await;

        // Held by a live process (this one): deferred until the lock is removed.
        seen.lock().unwrap().clear();
        lock(&d, "passwd", std::process::id());
        until(Seen::Deferred).await;
        replace(&d, "passwd", "a:x:1:1::/:/bin/sh\n");
        assert!(events.try_recv().is_err(), "reported under the lock");
        assert!(!seen.lock().unwrap().contains(&Seen::Reported));
        std::fs::remove_file(d.join("passwd.lock")).unwrap();
        event(&mut events).await;
        until(Seen::Reported).await;

        // A stale lock (no such process) does not hold anything back.
        seen.lock().unwrap().clear();
        lock(&d, "shadow", u32::MAX - 1);
        assert!(!locked(&d));
        replace(&d, "shadow", "a:*:1::::::\n");
        event(&mut events).await;
        until(Seen::Reported).await;
        assert!(!seen.lock().unwrap().contains(&Seen::Deferred));
        std::fs::remove_file(d.join("shadow.lock")).unwrap();
        event(&mut events).await;
        cancel.cancel();
        task.await.unwrap().unwrap();
    }
}
