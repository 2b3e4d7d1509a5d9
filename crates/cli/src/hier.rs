//! Hierarchical remote runs, the process side: the fleet an intermediate runs for its own
//! `remotes:` ([`Intermediate`]), the fleet settings from our flags, and the graph-file watch.
//! The tree itself (loading, packing, routing live edits, the report lines) is `fleet::tree`,
//! re-exported here.
//!
//! It must never put a secret in argv or in a log, and never leave a child running: an
//! intermediate's fleet is cancelled (children stopped, run dirs removed) before the
//! intermediate exits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use remote::{Credentials, FleetConfig, RemoteEvent, Target, TargetExtras};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use fleet::tree::{
    Creds, MANIFEST, Manifest, Notice, Router, Settings, Tree, event_of, file_name, host_status,
    pack, parse_report, report_line, resolve_local, summary_event,
};

use crate::args::RunArgs;
use crate::child;
use crate::graphfile::FileEvent;
use fleet::Event;

/// The fleet settings an intermediate takes from us, from our own flags.
pub fn settings_from_args(args: &RunArgs) -> Settings {
    Settings {
        cconns: args.cconns.max(1),
        caching: !args.no_caching,
        tmp_prefix: args.tmp_prefix.clone(),
        accept_new_host_keys: args.accept_new_host_keys,
        grace_secs: 5,
    }
}

/// Whether the host of the graph `file` (its `text`) runs its child as root through sudo: the
/// graph's own `sudo:` when it has one, else `default` (`--sudo`). A graph that does not parse
/// has been reported already; it gets the default.
pub fn graph_sudo(file: &Path, text: &str, default: bool, registry: &resource::Registry) -> bool {
    crate::graphfile::parse(file, text, registry)
        .ok()
        .and_then(|spec| spec.sudo)
        .unwrap_or(default)
}

/// Sets each target's `sudo` from its graph (see [`graph_sudo`]).
pub fn apply_sudo(
    targets: &mut [(Target, TargetExtras)],
    default: bool,
    registry: &resource::Registry,
) {
    for (t, extras) in targets {
        let text = String::from_utf8_lossy(&t.graph);
        extras.sudo = graph_sudo(&t.file, &text, default, registry);
    }
}

fn read_cred(path: &Path) -> Result<Credentials> {
    Credentials::read(path).with_context(|| format!("store credentials {}", path.display()))
}

/// One watch for every file of `files`, on the process's inotify hub (a kernel watch per
/// directory, shared). Sends what it sees: complete versions, and files being written.
pub fn watch_files(
    files: &[PathBuf],
    tx: mpsc::Sender<FileEvent>,
) -> Result<crate::graphfile::FileWatch> {
    crate::graphfile::FileWatch::new(files, tx)
}

/// The fleet settings both ends share: this program as the binary, the child's command line
/// (child.rs), what SSH takes from the environment, the settings. Credentials and host keys are
/// the caller's.
pub fn fleet_config(
    args: &RunArgs,
    store_addr: SocketAddr,
    settings: &Settings,
    height: u32,
) -> Result<FleetConfig> {
    let binary = std::env::current_exe().context("cannot find this program's own executable")?;
    let binary_hash = remote::sha256_file(&binary)
        .with_context(|| format!("cannot hash {}", binary.display()))?;
    let mut cfg = FleetConfig::new(binary, binary_hash, store_addr, child::local_env());
    cfg.child_args = child::child_args(args)?;
    cfg.cconns = settings.cconns.max(1);
    cfg.caching = settings.caching;
    cfg.tmp_prefix = settings.tmp_prefix.clone();
    cfg.accept_new_host_keys = settings.accept_new_host_keys;
    // An intermediate stops its own children before it exits: give it their grace too.
    cfg.grace = std::time::Duration::from_secs(settings.grace_secs * (1 + u64::from(height)));
    Ok(cfg)
}

/// The fleet a remote child runs for its own `remotes:`, reporting its subtree on stdout.
pub struct Intermediate {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// Owned here, not by the relay task: it must live until the fleet is stopped.
    _watch: Option<crate::graphfile::FileWatch>,
}

impl Intermediate {
    /// Starts the fleet when this is a remote child whose graph has `remotes:`. A graph with
    /// `remotes:` run by `--yaml` directly only gets a warning: the tree needs an initiator.
    pub fn start_if_needed(
        args: &RunArgs,
        graph: &Path,
        spec: &yamlgraph::GraphSpec,
    ) -> Result<Option<Intermediate>> {
        if spec.remotes.is_empty() {
            return Ok(None);
        }
        if args.depth == 0 {
            warn!(
                "{}: `remotes:` is followed only when the graph runs as a remote (mgmt run --remote)",
                graph.display()
            );
            return Ok(None);
        }
        Intermediate::start(args, graph).map(Some)
    }

    fn start(args: &RunArgs, graph: &Path) -> Result<Intermediate> {
        let dir = graph
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .to_path_buf();
        let mpath = dir.join(MANIFEST);
        let text = std::fs::read(&mpath).with_context(|| {
            format!(
                "{} names `remotes:` but its initiator sent no {}",
                graph.display(),
                mpath.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .with_context(|| format!("cannot read {}", mpath.display()))?;
        let registry = resources::registry();
        let m = manifest.clone();
        let resolve = |parent: &Path, entry: &str| -> Result<PathBuf, String> {
            let parent = file_name(parent);
            m.files
                .iter()
                .find(|f| f.parent == parent && f.entry == entry)
                .map(|f| dir.join(&f.file))
                .ok_or_else(|| format!("not in {MANIFEST}"))
        };
        let tree = match Tree::load(&[graph.to_path_buf()], &resolve, &registry) {
            Ok(t) => t,
            Err(problems) => {
                let all: Vec<String> = problems.into_iter().map(|p| p.message).collect();
                bail!("the subtree of this host is invalid:\n{}", all.join("\n"));
            }
        };
        let mut creds = Creds::new();
        for n in tree.nodes.iter().skip(1) {
            let name = file_name(&n.file);
            let f = manifest
                .files
                .iter()
                .find(|f| f.file == name)
                .with_context(|| format!("{name} is not in {MANIFEST}"))?;
            creds.insert(n.hostname.clone(), read_cred(&dir.join(&f.cred))?);
        }
        let seeds = args
            .seeds
            .first()
            .context("a remote child with `remotes:` needs --seeds (its tunnel to the store)")?;
        let store_addr = crate::storelink::socket_addr(seeds)?;
        // The second hop authenticates with this host's own ~/.ssh (default identities,
        // ssh_config, known_hosts) and its ssh-agent if one is set: the initiator's keys never
        // leave the initiator.
        let cfg = fleet_config(
            args,
            store_addr,
            &manifest.settings,
            tree.height().saturating_sub(1),
        )?;
        let direct = tree.nodes[0].children.clone();
        let (mut targets, router) = pack(&tree, &direct, &creds, &manifest.settings, &registry)
            .map_err(anyhow::Error::msg)?;
        // Our own `--sudo` is the initiator's; no password ever comes this far (`sudo -n`).
        apply_sudo(&mut targets, args.sudo, &registry);
        info!(hosts = tree.nodes.len() - 1, "running this host's remotes");
        let (file_tx, file_rx) = mpsc::channel(1);
        let watch = if args.no_watch {
            None
        } else {
            match watch_files(&router.files(), file_tx) {
                Ok(w) => Some(w),
                Err(e) => {
                    warn!("{e:#}; live edits will not reach this host's remotes");
                    None
                }
            }
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(relay(tree, cfg, targets, router, file_rx, cancel.clone()));
        Ok(Intermediate {
            cancel,
            task,
            _watch: watch,
        })
    }

    /// Stops every child (their run dirs removed) and waits for it.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

fn print_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the fleet, turning its events into report lines (a child's own reports about its
/// subtree pass through unchanged), and copies live edits down.
async fn relay(
    tree: Tree,
    cfg: FleetConfig,
    targets: Vec<(Target, TargetExtras)>,
    mut router: Router,
    mut file_rx: mpsc::Receiver<FileEvent>,
    cancel: CancellationToken,
) {
    let registry = resources::registry();
    let mut changes: BTreeMap<String, u64> = BTreeMap::new();
    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
    let fleet = tokio::spawn(remote::run_fleet_with(cfg, targets, cancel, ev_tx));
    loop {
        tokio::select! {
            ev = ev_rx.recv() => match ev {
                Some(RemoteEvent::Output { host, line }) if parse_report(&tree, &host, &line).is_some() => {
                    print_line(&line);
                }
                Some(RemoteEvent::Output { host, line }) => {
                    // The child's own events count for its summary row here.
                    if let Ok(Event::Applied { outcome: fleet::Outcome::Changed, .. }) = Event::parse(&line) {
                        *changes.entry(host.clone()).or_default() += 1;
                    }
                    print_line(&report_line(&event_of(RemoteEvent::Output { host, line })));
                }
                Some(ev) => print_line(&report_line(&event_of(ev))),
                None => break,
            },
            Some(ev) = file_rx.recv() => if let FileEvent::Writing(file) = ev {
                tracing::debug!("{} is being written; it is read once closed", file.display());
            } else {
                for n in router.changed(&registry).await {
                    match n {
                        Notice::Invalid { host, file, diags, .. } => {
                            error!("{host}: new version of {} is invalid, not copied:\n{diags}", file.display());
                        }
                        Notice::Moved { host, file, .. } | Notice::Unmovable { host, file, .. } => warn!(
                            "{host}: the `remote:` of {} changed; an intermediate moves its hosts on the next run only",
                            file.display()
                        ),
                        Notice::Shape { host, file } => warn!(
                            "{host}: the `remotes:` list of {} changed; the new tree takes effect on the next run",
                            file.display()
                        ),
                    }
                }
            },
        }
    }
    match fleet.await {
        Ok(report) => {
            for h in &report.hosts {
                let changed = changes.get(&h.host).copied().unwrap_or(0);
                print_line(&report_line(&summary_event(h, changed)));
            }
        }
        Err(e) => error!("the remote fleet task failed: {e}"),
    }
}
