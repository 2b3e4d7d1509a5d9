//! Cluster-wide convergence, as the initiator of a remote run sees it: every host still alive
//! (not failed, not finished) has had `/_mgmt/converged/<host>` = true continuously for the
//! timeout. Each host only knows itself; only the store sees them all.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Returns once every host in `alive` has been converged for `timeout`, or when cancelled.
/// While no host is alive it does not return: an empty cluster has not converged.
pub async fn converged_for(
    store: store::Store,
    mut alive: watch::Receiver<BTreeSet<String>>,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let mut flags = loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            w = store.watch_converged() => w,
        };
        match attempt {
            Ok(w) => break w,
            // The run is ending and the store with it: nothing to report.
            Err(_) if cancel.is_cancelled() => return,
            Err(e) => {
                warn!("cannot watch convergence: {e}; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    // The rule itself is fleet's state machine; this loop feeds it and sleeps as it says.
    let mut rule = fleet::converge::Cluster::new(timeout);
    loop {
        let hosts = alive.borrow_and_update().clone();
        let none_alive = hosts.is_empty();
        rule.set_alive(hosts);
        let deadline = rule.deadline();
        debug!(
            ?deadline,
            converged = rule.converged_count(),
            "cluster convergence"
        );
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wait => return,
            r = alive.changed() => if r.is_err() {
                if none_alive {
                    // Nobody is left to converge, and nobody will come: the run ends with its
                    // hosts instead.
                    cancel.cancelled().await;
                }
                return;
            },
            map = flags.follow() => rule.flags(map, Instant::now()),
        }
    }
}
