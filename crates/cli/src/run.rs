//! `mgmt run --yaml FILE`: apply a graph on this machine and keep it applied.
//!
//! Shutdown order: stop taking new graphs -> engine shutdown (every worker awaited) -> the
//! converged publisher -> host lease revoked -> embedded store server. Every task spawned here
//! is awaited before `run` returns.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use engine::{Converger, Engine, EngineConfig, EngineEvent};
use fleet::{Event, ExitReason};
use resource::{Registry, ResId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::Exit;
use crate::args::RunArgs;
use crate::collect;
use crate::graphfile::{self, FileEvent, FileWatch};
use crate::output::{self, Events};
use crate::signals::Signals;
use crate::storelink;

/// Why the run loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Converged,
    /// By a signal (its name): SIGINT, SIGTERM or SIGHUP.
    Interrupted(&'static str),
    MaxRuntime,
    Lifeline,
    /// `--store-lost-timeout` passed without an answer from the store.
    StoreLost,
}

impl Stop {
    /// The `exit` event's `reason`.
    fn reason(self) -> ExitReason {
        match self {
            Stop::Converged => ExitReason::Converged,
            Stop::Interrupted(_) => ExitReason::Interrupted,
            Stop::MaxRuntime => ExitReason::MaxRuntime,
            Stop::Lifeline => ExitReason::Lifeline,
            Stop::StoreLost => ExitReason::StoreLost,
        }
    }
}

pub async fn run_local(args: RunArgs, events: Events) -> Result<Exit> {
    let path: PathBuf = args
        .yaml
        .clone()
        .context("--yaml FILE is required (or --remote FILE)")?;
    let registry = resources::registry();
    // Watched before the first read, so that a version written in between is not missed (its
    // event rereads the file). Its own failure counts only once the file could be read.
    let (file_tx, mut file_rx) = mpsc::channel(1);
    let file_watch = (!args.no_watch).then(|| FileWatch::new(std::slice::from_ref(&path), file_tx));
    let text = match graphfile::read(&path) {
        Ok(text) => text,
        Err(diags) => {
            // A graph file that is missing or unreadable is bad input, like one that does not
            // parse: one line (bytes that are no graph text: at their position), exit 2.
            eprintln!("{}", graphfile::render(&diags));
            events.emit(&Event::GraphInvalid {
                errors: fleet::tree::diagnostics(&diags),
                file: Some(path.display().to_string()),
                host: None,
            });
            return Ok(Exit::BadInput);
        }
    };
    let spec = match graphfile::parse_diagnostics(&path, &text, &registry) {
        Ok(spec) => {
            graphfile::log_warnings(&spec);
            spec
        }
        Err(diags) => {
            eprintln!("{diags}");
            events.emit(&Event::GraphInvalid {
                file: Some(path.display().to_string()),
                host: None,
                errors: fleet::tree::diagnostics(&diags),
            });
            return Ok(Exit::BadInput);
        }
    };
    let hostname: Arc<str> = crate::hostname(&args)?.into();
    events.start(&hostname);
    info!(host = %hostname, graph = %spec.graph, "this is mgmt-rs {}", crate::VERSION);

    let cancel = CancellationToken::new();
    let store = storelink::connect(&args, &hostname, &events, cancel.child_token()).await?;
    if store.is_none() && (spec.resources.iter().any(|r| r.exported) || !spec.collect.is_empty()) {
        bail!(
            "this graph exports or collects resources, which needs a store: drop --no-server or give --seeds"
        );
    }

    let converger = Converger::new();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let engine = Engine::new(EngineConfig {
        hostname: hostname.clone(),
        noop: args.noop,
        events: ev_tx,
        converger: converger.clone(),
    });
    // Busy until the first graph is swapped in: an empty engine must not count as converged.
    let main_part = converger.register("graph");

    let mut state = State {
        spec,
        text,
        collected: Vec::new(),
        failed: BTreeSet::new(),
        reported: collect::Reported::default(),
    };
    // A remote child's flag is what its initiator decides the cluster's convergence on: it
    // says `true` only after the run's converged timeout of quiet (see the publisher).
    let hold = match (args.depth, args.converged_timeout.0) {
        (1.., Some(d)) => d,
        _ => Duration::ZERO,
    };
    // A remote child whose initiator does not end on convergence (it passed no
    // `--converged-timeout`) has nobody reading its flag, which would cost two writes through
    // the tunnel per change on every host: there is none then.
    let flag_read = args.depth == 0 || args.converged_timeout.0.is_some();
    let publisher = store
        .as_ref()
        .filter(|_| flag_read)
        .map(|s| s.spawn_converged_publisher(&converger, hold, cancel.child_token()));

    let _file_watch = file_watch.transpose()?;
    let mut store = store;
    let mut exports_rx = match store.as_mut() {
        Some(s) => {
            if !args.noop {
                s.publish(&collect::exports_of(&state.spec, &hostname))
                    .await?;
            }
            // Under an initiator, it warns about every host's invalid exports and this host
            // only about its own: one warning per bad key for the fleet.
            let warn = if args.depth > 0 {
                store::WarnInvalid::Host(hostname.to_string())
            } else {
                store::WarnInvalid::All
            };
            Some(s.watch_exports(cancel.child_token(), warn).await?)
        }
        None => None,
    };
    if let Some(rx) = exports_rx.as_mut() {
        state.collected = rx.borrow_and_update().clone();
    }
    swap(&engine, &mut state, &registry, &args, &events).await;
    main_part.set_busy(false);

    // Hierarchical runs: a remote child whose graph has `remotes:` runs them as its own fleet
    // (see hier.rs); it is stopped first on the way out.
    let intermediate = crate::hier::Intermediate::start_if_needed(&args, &path, &state.spec)?;

    // Not joined: the thread blocks on stdin until EOF, and process exit ends it.
    if args.depth > 0 {
        drop(crate::spawn_stdin_lifeline(cancel.clone()));
    }
    // A remote child does not end on its own convergence: only its initiator sees the whole
    // cluster (another host's export may still change this one); it ends us via the lifeline.
    let own_timeout = if args.depth > 0 {
        None
    } else {
        args.converged_timeout.0
    };
    let converged_wait = async {
        match own_timeout {
            Some(d) => converger.converged_for(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(converged_wait);
    let max_runtime = async {
        match args.max_runtime.0 {
            None => std::future::pending().await,
            Some(d) => tokio::time::sleep(d).await,
        }
    };
    tokio::pin!(max_runtime);

    // SIGINT, SIGTERM (how a remote initiator stops us by pid, as a fallback) and SIGHUP all
    // stop the run cleanly (see signals.rs).
    let mut signals = Signals::new()?;
    // `converged` events: this process turning idle or busy (a remote child's initiator shows
    // it; nobody has to scrape log lines for it).
    let mut conv_rx = converger.subscribe();
    let mut converged_now: Option<bool> = None;
    let mut idle_since = None;
    let store_lost = store.as_ref().map(|s| s.lost()).unwrap_or_default();
    let stop = loop {
        tokio::select! {
            _ = store_lost.cancelled() => break Stop::StoreLost,
            Ok(()) = conv_rx.changed() => {
                let state = *conv_rx.borrow_and_update();
                let c = state.converged;
                // A busy spell over before this loop looked (a drift undone in a few ms) is
                // still one: a new idle `since` tells, and it is reported as busy then idle,
                // so the initiator's cluster-wide quiet time starts again.
                let missed = c && converged_now == Some(true) && state.since != idle_since;
                if missed {
                    events.emit(&Event::Converged { converged: false });
                }
                if converged_now != Some(c) || missed {
                    events.emit(&Event::Converged { converged: c });
                }
                converged_now = Some(c);
                idle_since = state.since;
            }
            _ = &mut converged_wait => break Stop::Converged,
            _ = &mut max_runtime => break Stop::MaxRuntime,
            sig = signals.stop() => break Stop::Interrupted(sig),
            _ = cancel.cancelled() => break Stop::Lifeline,
            Some(ev) = ev_rx.recv() => {
                // Take every event already queued in one wake-up (a 10k-vertex graph sends
                // 10k `applied` at start).
                state.on_engine_event(ev, &events);
                while let Ok(ev) = ev_rx.try_recv() {
                    state.on_engine_event(ev, &events);
                }
            }

            Some(ev) = file_rx.recv() => if let FileEvent::Writing(file) = ev {
                // Not read: a version is taken once its writer closes it or renames it into
                // place (a half-written graph that happens to parse must never be applied).
                info!("{} is being written; it is read once closed", file.display());
                events.emit(&Event::GraphWriting { file });
            } else {
                main_part.set_busy(true);
                if reload(&path, &mut state, &registry, &events) {
                    // Our own change first, then tell the others: every collector wakes up at
                    // once and competes for the machine with the host that made the change.
                    swap(&engine, &mut state, &registry, &args, &events).await;
                    if let (Some(s), false) = (store.as_ref(), args.noop)
                        && let Err(e) = s.publish(&collect::exports_of(&state.spec, &hostname)).await
                    {
                        error!("cannot publish exports: {e:#}");
                    }
                }
                main_part.set_busy(false);
            },
            Ok(()) = async { match exports_rx.as_mut() { Some(rx) => rx.changed().await, None => std::future::pending().await } } => {
                main_part.set_busy(true);
                state.collected = exports_rx.as_mut().map(|rx| rx.borrow_and_update().clone()).unwrap_or_default();
                swap(&engine, &mut state, &registry, &args, &events).await;
                main_part.set_busy(false);
            }
        }
    };
    match stop {
        Stop::Converged => info!(
            "converged for {}s, exiting",
            args.converged_timeout.secs().unwrap_or_default()
        ),
        Stop::Interrupted(sig) => info!("interrupted by {sig}, shutting down (^C again to force)"),
        Stop::MaxRuntime => info!(
            "max runtime of {}s reached, exiting",
            args.max_runtime.secs().unwrap_or_default()
        ),
        Stop::Lifeline => info!("lifeline to the initiator closed, exiting"),
        Stop::StoreLost => warn!(
            "the store has not answered for {}s: the initiator or the tunnel to it is gone; exiting",
            args.store_lost_timeout.secs().unwrap_or_default()
        ),
    }
    events.emit(&Event::Exit {
        reason: stop.reason(),
        signal: match stop {
            Stop::Interrupted(sig) => Some(sig.to_string()),
            _ => None,
        },
    });

    // A second ^C while shutting down forces the exit.
    let shutdown = async {
        if let Some(i) = intermediate {
            i.shutdown().await;
        }
        engine.shutdown().await;
        while let Ok(ev) = ev_rx.try_recv() {
            state.on_engine_event(ev, &events);
        }
        cancel.cancel();
        // A store that stopped answering gets a moment to take our last words, not more.
        let store_wait = if stop == Stop::StoreLost {
            Duration::from_secs(1)
        } else {
            Duration::MAX
        };
        let store_done = async {
            if let Some(p) = publisher {
                let _ = p.await;
            }
            if let Some(s) = store {
                s.close().await;
            }
        };
        if tokio::time::timeout(store_wait, store_done).await.is_err() {
            warn!("the store did not answer; leaving without its goodbye");
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = signals.interrupt() => {
            warn!("second interrupt: forcing exit");
            // (sshd's SIGHUP to a child whose connection dropped lands here too.)
            if let Some(dir) = &args.run_dir {
                remove_run_dir(dir);
            }
            return Ok(Exit::Failed);
        }
    }
    if let Some(dir) = &args.run_dir {
        remove_run_dir(dir);
    }
    if stop == Stop::StoreLost {
        return Ok(Exit::Failed);
    }
    if !state.failed.is_empty() {
        let names: Vec<String> = state.failed.iter().map(ToString::to_string).collect();
        error!("failed resources: {}", names.join(", "));
        return Ok(Exit::Failed);
    }
    Ok(Exit::Ok)
}

/// Removes a remote child's run dir as it ends, if it is this process's: its pid file (written
/// by the wrapper that exec'd us) names our pid, or our parent's when we run as root through
/// sudo (the wrapper exec'd sudo, which waits for us). Anything else is left to the initiator.
fn remove_run_dir(dir: &Path) {
    let pid_file = dir.join("mgmt.pid");
    let me = std::process::id().to_string();
    let parent = std::os::unix::process::parent_id().to_string();
    let ours = std::fs::read_to_string(&pid_file).ok().is_some_and(|s| {
        s.split_whitespace()
            .next()
            .is_some_and(|p| p == me || p == parent)
    });
    if !ours {
        warn!(
            "not removing {}: its pid file does not name this process",
            dir.display()
        );
        return;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => tracing::debug!("removed the run dir {}", dir.display()),
        Err(e) => warn!("cannot remove the run dir {}: {e}", dir.display()),
    }
}

struct State {
    spec: yamlgraph::GraphSpec,
    text: String,
    collected: Vec<store::ExportedResource>,
    failed: BTreeSet<ResId>,
    /// Refused exports already logged: each is logged once per change of its record, not on
    /// every swap.
    reported: collect::Reported,
}

impl State {
    fn on_engine_event(&mut self, ev: EngineEvent, events: &Events) {
        events.emit(&output::of_engine(&ev));
        match &ev {
            EngineEvent::Applied { id, outcome, .. } => {
                self.failed.remove(id);
                match outcome {
                    resource::Outcome::Changed => info!("{id}: applied"),
                    resource::Outcome::WouldChange => info!("{id}: would change (noop)"),
                    resource::Outcome::InSync => tracing::debug!("{id}: in sync"),
                }
            }
            EngineEvent::Failed {
                id,
                error,
                will_retry,
                ..
            } => {
                if *will_retry {
                    warn!("{id}: {error} (will retry)");
                } else {
                    error!("{id}: {error}");
                    self.failed.insert(id.clone());
                }
            }
            _ => {}
        }
    }
}

/// Re-read the graph file after a change; true when a new valid version was loaded. A version
/// that does not parse is reported and the running graph stays.
fn reload(path: &Path, state: &mut State, registry: &Registry, events: &Events) -> bool {
    let text = match graphfile::read(path) {
        Ok(t) => t,
        Err(diags) => {
            if let Some(message) = diags.unreadable() {
                // Gone or unreadable for now (mid-rename, say): the next version comes with
                // its own event.
                warn!("{message}; keeping the running graph");
            } else {
                error!(
                    "new version of {} is invalid; keeping the running graph:\n{diags}",
                    path.display()
                );
                events.emit(&Event::GraphInvalid {
                    file: Some(path.display().to_string()),
                    host: None,
                    errors: fleet::tree::diagnostics(&diags),
                });
            }
            return false;
        }
    };
    if text == state.text {
        return false;
    }
    let spec = match graphfile::parse_diagnostics(path, &text, registry) {
        Ok(spec) => spec,
        Err(diags) => {
            error!(
                "new version of {} is invalid; keeping the running graph:\n{diags}",
                path.display()
            );
            events.emit(&Event::GraphInvalid {
                file: Some(path.display().to_string()),
                host: None,
                errors: fleet::tree::diagnostics(&diags),
            });
            return false;
        }
    };
    graphfile::log_warnings(&spec);
    info!("loaded new version of {}", path.display());
    state.spec = spec;
    state.text = text;
    true
}

async fn swap(
    engine: &Engine,
    state: &mut State,
    registry: &Registry,
    args: &RunArgs,
    events: &Events,
) {
    let (graph, refusals) = collect::assemble(&state.spec, &state.collected, registry);
    for line in state.reported.fresh(&refusals) {
        warn!("{line}");
    }
    if let Some(file) = &args.graphviz
        && let Err(e) = crate::graphviz::write(file, &state.spec.graph, &graph)
    {
        warn!("{e:#}");
    }
    match engine.swap(graph).await {
        Ok(report) => {
            if !report.added.is_empty() || !report.removed.is_empty() {
                info!(
                    "graph swapped: {} added, {} removed, {} kept",
                    report.added.len(),
                    report.removed.len(),
                    report.kept.len()
                );
            }
        }

        Err(e) => {
            error!("graph rejected, keeping the running graph: {e}");
            events.emit(&Event::GraphInvalid {
                file: None,
                host: None,
                errors: vec![fleet::Diagnostic::whole_file(
                    &state.spec.graph,
                    e.to_string(),
                )],
            });
        }
    }
}
