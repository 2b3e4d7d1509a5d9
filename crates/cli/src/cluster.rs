//! Cluster-wide convergence, as the initiator of a remote run sees it: every host still alive
//! (not failed, not finished) has had `/_mgmt/converged/<host>` = true continuously for the
//! timeout. Each host only knows itself; only the store sees them all.

use std::collections::{BTreeMap, BTreeSet};
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
    // When each host's flag last turned true (absent: not converged).
    let mut since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut current: BTreeMap<String, bool> = BTreeMap::new();
    loop {
        let hosts = alive.borrow_and_update().clone();
        if hosts.is_empty() {
            // Nobody is left to converge (every host failed or ended): that is no convergence,
            // and the run ends with its hosts instead.
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = alive.changed() => if r.is_err() {
                    cancel.cancelled().await;
                    return;
                },
            }
            continue;
        }
        let deadline = hosts
            .iter()
            .map(|h| since.get(h).copied())
            .collect::<Option<Vec<Instant>>>()
            .and_then(|v| v.into_iter().max())
            .map(|last| last + timeout);
        debug!(
            ?deadline,
            converged = since.len(),
            hosts = hosts.len(),
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
            r = alive.changed() => if r.is_err() { return },
            map = flags.follow() => {
                let now = Instant::now();
                for (host, conv) in &map {
                    let was = current.get(host).copied().unwrap_or(false);
                    if *conv && !was {
                        since.insert(host.clone(), now);
                    } else if !*conv {
                        since.remove(host);
                    }
                }
                for host in current.keys() {
                    if !map.contains_key(host) {
                        since.remove(host);
                    }
                }
                current = map;
            },
        }
    }
}
