//! This process's link to the store: the embedded server (unless `--no-server`), the client
//! (to it or to `--seeds`), this host's liveness lease and its converged flag.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use engine::Converger;
use store::ExportedResource;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::args::RunArgs;
use crate::output::Events;

pub struct StoreLink {
    pub store: store::Store,
    server: Option<store::ServerHandle>,
    lease: Option<store::HostLease>,
    host: Arc<str>,
    tasks: Vec<JoinHandle<()>>,
}

impl StoreLink {
    /// Cancelled when this host's lease has not been renewed for `--store-lost-timeout`
    /// (never without one, or without a lease).
    pub fn lost(&self) -> CancellationToken {
        match &self.lease {
            Some(l) => l.lost(),
            None => CancellationToken::new(),
        }
    }
}

/// Parse `http://host:port` (the only scheme we serve) into a socket address.
/// The address of a store URL that must be an IP address and a port (a listen address, a
/// tunnel's end).
pub fn socket_addr(url: &store::StoreUrl) -> Result<SocketAddr> {
    url.socket_addr()
        .with_context(|| format!("store url {url} needs an IP address and a port"))
}

/// Start the embedded server (unless `--no-server`) and connect the client. Returns `None`
/// when there is no store at all (`--no-server` without `--seeds`).
pub async fn connect(
    args: &RunArgs,
    host: &Arc<str>,
    events: &Events,
    cancel: CancellationToken,
) -> Result<Option<StoreLink>> {
    let mut server = None;
    let mut endpoints = args.seeds.clone();
    if !args.no_server {
        let handle = start_server(args, cancel).await?;
        let url = handle.url();
        info!("embedded store listening on {url}");
        events.emit(&fleet::Event::StoreListening {
            url: url.to_string(),
        });
        if endpoints.is_empty() {
            endpoints.push(url);
        }
        server = Some(handle);
    }
    if endpoints.is_empty() {
        return Ok(None);
    }
    let creds = match &args.store_credentials {
        Some(path) => Some(read_credentials(path)?),
        None => None,
    };
    let store = store::Store::connect(&endpoints, creds)
        .await
        .with_context(|| {
            let all: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
            format!("cannot connect to the store at {}", all.join(","))
        })?;
    let lease = match store
        .register_host_watched(host, Duration::from_secs(10), args.store_lost_timeout.0)
        .await
    {
        Ok(l) => Some(l),
        Err(e) => {
            warn!("cannot register host liveness: {e}");
            None
        }
    };
    Ok(Some(StoreLink {
        store,
        server,
        lease,
        host: host.clone(),
        tasks: Vec::new(),
    }))
}

/// The embedded server on the first `--client-urls` address (loopback unless asked otherwise).
async fn start_server(args: &RunArgs, cancel: CancellationToken) -> Result<store::ServerHandle> {
    let url = args.client_urls.first().context("--client-urls is empty")?;
    let listen = socket_addr(url)?;
    if !listen.ip().is_loopback() {
        warn!("the embedded store listens on {listen}, beyond loopback, as asked by --client-urls");
    }
    // etcd's spelling of the total quota: 0 is the default, negative is none.
    let quota_backend_bytes = match args.quota_backend_bytes {
        0 => Some(store::DEFAULT_QUOTA_BACKEND_BYTES),
        n if n < 0 => None,
        n => Some(n as u64),
    };
    let cfg = store::ServerConfig {
        listen,
        max_request_bytes: args.max_request_bytes,
        quota_backend_bytes,
        host_quota: store::Quota {
            max_keys: args.store_host_max_keys,
            max_bytes: args.store_host_max_bytes,
        },
        ..Default::default()
    };
    store::serve(cfg, cancel)
        .await
        .with_context(|| format!("cannot start the embedded store on {listen}"))
}

/// The initiator of a remote run: the embedded server with auth on (the initiator is `root`
/// with a fresh secret; each host gets its own user), and a client to it. Hosts reach it
/// through their reverse tunnels.
pub async fn connect_initiator(
    args: &RunArgs,
    events: &Events,
    cancel: CancellationToken,
) -> Result<StoreLink> {
    if args.no_server {
        bail!(
            "--remote tunnels every host to the embedded store: --no-server cannot be used with --remote"
        );
    }
    let handle = start_server(args, cancel).await?;
    let url = handle.url();
    let root_secret = crate::secret()?;
    handle
        .enable_auth(&root_secret)
        .context("cannot enable store auth")?;
    info!("embedded store listening on {url} (auth on)");
    events.emit(&fleet::Event::StoreListening {
        url: url.to_string(),
    });
    let store = store::Store::connect(
        std::slice::from_ref(&url),
        Some(("root".to_string(), root_secret)),
    )
    .await
    .with_context(|| format!("cannot connect to the embedded store at {url}"))?;
    Ok(StoreLink {
        store,
        server: Some(handle),
        lease: None,
        host: Arc::from("initiator"),
        tasks: Vec::new(),
    })
}

/// The store credentials the remote mode leaves in the child's run dir (mode 0600), read from
/// a file so the secret is never in argv (the format: `remote::Credentials`).
fn read_credentials(path: &std::path::Path) -> Result<(String, String)> {
    let cred = remote::Credentials::read(path)
        .with_context(|| format!("store credentials {}", path.display()))?;
    Ok(cred.into_parts())
}

impl StoreLink {
    /// Where a host's reverse tunnel delivers its connections: our embedded server.
    pub fn tunnel_target(&self) -> Result<SocketAddr> {
        self.server
            .as_ref()
            .map(|s| s.local_addr())
            .context("no embedded store to tunnel to")
    }

    /// The store user of one remote host (named after it): it reads `/_mgmt/` and writes only
    /// its own keys, so one host cannot forge another's exports or convergence.
    pub fn add_host_user(&self, host: &str, secret: &str) -> Result<()> {
        let server = self.server.as_ref().context("no embedded store")?;
        server
            .add_host_user(host, secret)
            .with_context(|| format!("cannot create the store user of host {host}"))
    }

    pub async fn publish(&self, recs: &[ExportedResource]) -> Result<()> {
        self.store
            .publish_exports(&self.host, recs.to_vec())
            .await
            .context("cannot publish exports")
    }

    /// Every host's exports, as a live snapshot, warning about the invalid ones `warn` names.
    /// The forwarding task is owned by this link and ends when the link closes or the
    /// receiver is dropped.
    pub async fn watch_exports(
        &mut self,
        cancel: CancellationToken,
        warn: store::WarnInvalid,
    ) -> Result<watch::Receiver<Vec<ExportedResource>>> {
        let mut w = self
            .store
            .watch_exports_warning(warn)
            .await
            .context("cannot watch exports")?;
        let first = w.next().await.context("cannot read exports")?;
        let (tx, rx) = watch::channel(first);
        self.tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tx.closed() => break,
                    snapshot = w.follow() => { let _ = tx.send(snapshot); }
                }
            }
        }));
        Ok(rx)
    }

    /// Mirror this process's convergence into `/_mgmt/converged/<host>`: `false` as soon as
    /// anything is busy, `true` once everything has been idle for `hold` without a break.
    ///
    /// A busy moment can be over before this task looks (a timer tick is applied in
    /// microseconds), so the flag would never leave `true`; and a `false` followed at once by
    /// a `true` can reach a watcher as one unchanged snapshot. So a new idle period (a new
    /// `since`) counts as a break even when the busy state was never seen, and `true` is only
    /// published after `hold` of quiet: a remote child passes the run's converged timeout, so
    /// its initiator never sees a host that keeps waking up as converged.
    pub fn spawn_converged_publisher(
        &self,
        converger: &Converger,
        hold: Duration,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let store = self.store.clone();
        let host = self.host.clone();
        let mut rx = converger.subscribe();
        tokio::spawn(async move {
            // The rule is fleet's state machine (tested there); this loop writes and sleeps
            // as it says.
            let mut publisher = fleet::converge::Publisher::new(hold);
            loop {
                let state = *rx.borrow_and_update();
                let idle_since = state.since.filter(|_| state.converged);
                let now = tokio::time::Instant::now();
                let wake = match publisher.next(idle_since, now) {
                    fleet::converge::Publish::Write(want) => {
                        let ok = match store.set_converged(&host, want).await {
                            Ok(()) => true,
                            Err(e) => {
                                warn!("cannot publish converged state: {e}; trying again");
                                false
                            }
                        };
                        publisher.published(want, idle_since, ok, tokio::time::Instant::now());
                        // Look again at once: after a break the hold may already be over.
                        continue;
                    }
                    fleet::converge::Publish::Wait { until } => until,
                };
                tokio::select! {
                    r = rx.changed() => if r.is_err() { break },
                    _ = async { match wake {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    } } => {}
                    _ = cancel.cancelled() => break,
                }
            }
        })
    }

    pub async fn close(self) {
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        if let Some(lease) = self.lease {
            lease.close().await;
        }
        if let Some(server) = self.server {
            server.shutdown().await;
        }
    }
}
