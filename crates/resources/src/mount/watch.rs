//! Watching a mount: the kernel's mount-table signal and the fstab file.
//!
//! `/proc/self/mountinfo`, kept open, polls as `POLLPRI | POLLERR` after any mount, unmount or
//! remount in this mount namespace (the kernel's own signal: no timer); it is registered with
//! tokio's reactor (`AsyncFd`, priority interest). The fstab is watched through the
//! process-wide inotify hub, by its name in its directory (it is replaced by a rename). Every
//! wake is reported; check_apply compares. This never changes anything.

use std::fs::File;
use std::path::Path;

use resource::{ResourceError, WatchCtx};
use tokio::io::Interest as Ready;
use tokio::io::unix::AsyncFd;

use super::Env;
use crate::inotify::{self, Interest};

pub(crate) async fn watch(env: &Env, ctx: WatchCtx) -> Result<(), ResourceError> {
    let table = File::open(&env.mountinfo)
        .map_err(|e| ResourceError::failed(format!("opening {}: {e}", env.mountinfo.display())))?;
    // SAFETY: `table` is an open `File` owned by the `AsyncFd` from here on; its fd stays
    // open and the same until the `AsyncFd` is dropped.
    let table = unsafe { AsyncFd::register_with_interest(table, Ready::PRIORITY) }
        .map_err(|e| ResourceError::failed(format!("watching {}: {e}", env.mountinfo.display())))?;
    let sub = inotify::subscribe().map_err(ResourceError::failed)?;
    let fstab = Path::new(&env.fstab);
    let wanted = [Interest {
        dir: fstab.parent().unwrap_or(Path::new("/")).to_path_buf(),
        name: fstab.file_name().map(|n| n.to_os_string()),
    }]
    .into_iter()
    .collect();
    sub.set(&wanted).map_err(ResourceError::failed)?;
    ctx.running();
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            ready = table.ready(Ready::PRIORITY) => {
                let mut guard = ready.map_err(|e| {
                    ResourceError::failed(format!("watching {}: {e}", env.mountinfo.display()))
                })?;
                guard.clear_ready();
            }
            changed = sub.changed() => {
                changed.map_err(ResourceError::failed)?;
                // A watch lost (to a queue overflow) is set up again before reporting.
                sub.set(&wanted).map_err(ResourceError::failed)?;
            }
        }
        ctx.event();
    }
}
