//! `mgmt run --remote FILE...`: run graphs on hosts that have nothing but sshd.
//!
//! The initiator parses every file first (a bad graph stops the run before any host is
//! touched), starts the embedded store with auth on (one user per host, its secret handed over
//! in a 0600 file, never in argv), hands the hosts to `remote::run_fleet`, relays their output,
//! copies edited graph files over, and ends the run when every host that is still alive has
//! been converged for `--converged-timeout` seconds (children do not end on their own local
//! convergence: only the initiator sees the whole cluster), or on ^C (a second ^C forces).
//!
//! Shutdown order: stop watching files -> cancel the fleet (children stop, run dirs removed)
//! -> await the fleet -> summary -> store link closed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use remote::{
    CacheUse, ChildExit, FleetConfig, HostOutcome, HostState, RemoteEvent, RemoteUrl, Target,
};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::Exit;
use crate::args::RunArgs;
use crate::graphfile::{self, FileWatch};
use crate::output::Events;
use crate::progress::Progress;
use crate::storelink;

/// One `--remote` file, checked.
struct Plan {
    file: PathBuf,
    text: String,
    url: RemoteUrl,
    hostname: String,
}

pub async fn run_remote(args: RunArgs, events: Events) -> Result<Exit> {
    let registry = resources::registry();
    let mut plans = Vec::new();
    let mut bad = false;
    for file in &args.remote {
        let text = graphfile::read(file)?;
        let spec = match graphfile::parse(file, &text, &registry) {
            Ok(spec) => spec,
            Err(diags) => {
                eprintln!("{diags}");
                events.emit("graph_invalid", &json!({"file": file, "errors": diags}));
                bad = true;
                continue;
            }
        };
        let Some(remote) = spec.remote.as_deref().filter(|r| !r.is_empty()) else {
            eprintln!(
                "error: {} has no `remote:` field naming the host to run it on",
                file.display()
            );
            bad = true;
            continue;
        };
        let url = match RemoteUrl::parse(remote) {
            Ok(url) => url,
            Err(e) => {
                eprintln!("error: {}: bad `remote:` {e}", file.display());
                bad = true;
                continue;
            }
        };
        let hostname = url.host().to_string();
        if url.has_password() {
            warn!(
                "{}: the password in `remote:` is readable by anyone who can read the file; prefer keys",
                file.display()
            );
        }
        plans.push(Plan {
            file: file.clone(),
            text,
            url,
            hostname,
        });
    }
    let mut seen = BTreeSet::new();
    for p in &plans {
        if !seen.insert(p.hostname.clone()) {
            eprintln!("error: two --remote files target host {}", p.hostname);
            bad = true;
        }
    }
    if bad {
        return Ok(Exit::BadInput);
    }

    let cancel = CancellationToken::new();
    let me: Arc<str> = crate::hostname(&args)
        .unwrap_or_else(|_| "initiator".into())
        .into();
    let link = storelink::connect_initiator(&args, &events, cancel.child_token()).await?;
    let store_addr = link.tunnel_target()?;

    let binary = std::env::current_exe().context("cannot find this program's own executable")?;
    let binary_hash = remote::sha256_file(&binary)
        .with_context(|| format!("cannot hash {}", binary.display()))?;
    let mut cfg = FleetConfig::new(binary, binary_hash, store_addr);
    cfg.cconns = args.cconns.max(1);
    cfg.caching = !args.no_caching;
    cfg.tmp_prefix = args.tmp_prefix.clone();
    cfg.known_hosts = args.known_hosts.clone();
    cfg.accept_new_host_keys = args.accept_new_host_keys;
    if args.ssh_config.is_some() {
        cfg.ssh_config = args.ssh_config.clone();
    }
    cfg.identities = args
        .ssh_priv_id_rsa
        .iter()
        .chain(args.ssh_identity.iter())
        .cloned()
        .collect();
    cfg.allow_interactive = args.allow_interactive && std::io::stdin().is_terminal();
    cfg.child = remote::ChildArgs {
        noop: args.noop,
        no_watch: args.no_watch,
        converged_timeout: (args.converged_timeout >= 0).then_some(args.converged_timeout),
        depth: args.depth,
    };
    let force = cfg.force.clone();

    let mut targets = Vec::new();
    let mut updaters: BTreeMap<PathBuf, (String, String, mpsc::Sender<Vec<u8>>)> = BTreeMap::new();
    for p in &plans {
        let user = p.hostname.clone();
        let secret = crate::secret()?;
        link.add_host_user(&user, &secret)?;
        // A flag left by an earlier run (a real etcd outlives us) must not count as converged.
        link.store
            .delete(&store::keys::converged(&p.hostname))
            .await
            .ok();
        let (tx, rx) = mpsc::channel(4);
        updaters.insert(p.file.clone(), (p.hostname.clone(), p.text.clone(), tx));
        targets.push(Target {
            file: p.file.clone(),
            graph: p.text.clone().into_bytes(),
            url: p.url.clone(),
            hostname: p.hostname.clone(),
            store_user: user,
            store_secret: secret,
            updates: Some(rx),
        });
    }
    info!(initiator = %me, hosts = plans.len(), cconns = cfg.cconns, "starting remote run");

    // Graph files are watched for live edits (unless --no-watch).
    let (file_tx, mut file_rx) = mpsc::channel::<()>(1);
    let mut watches = Vec::new();
    if !args.no_watch {
        for p in &plans {
            watches.push(FileWatch::new(&p.file, file_tx.clone())?);
        }
    }

    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
    let fleet_cancel = cancel.child_token();
    let fleet = tokio::spawn(remote::run_fleet(cfg, targets, fleet_cancel.clone(), ev_tx));

    let hosts: Vec<String> = plans.iter().map(|p| p.hostname.clone()).collect();
    let (alive_tx, alive_rx) = watch::channel(hosts.iter().cloned().collect::<BTreeSet<String>>());
    let converged = match u64::try_from(args.converged_timeout) {
        Ok(secs) => Some(tokio::spawn(crate::cluster::converged_for(
            link.store.clone(),
            alive_rx,
            Duration::from_secs(secs),
            cancel.child_token(),
        ))),
        Err(_) => None,
    };
    let converged_done = async {
        match converged {
            Some(task) => {
                let _ = task.await;
            }
            None => std::future::pending().await,
        }
    };
    let mut converged_done = std::pin::pin!(converged_done);

    let mut progress = Progress::new(&hosts, std::io::stderr().is_terminal());
    let mut changes: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let max_runtime = async {
        match args.max_runtime {
            0 => std::future::pending().await,
            secs => tokio::time::sleep(Duration::from_secs(secs)).await,
        }
    };
    tokio::pin!(max_runtime);
    let mut fleet_over = false;

    let reason = loop {
        tokio::select! {
            _ = &mut converged_done => break "converged",
            _ = &mut max_runtime => break "max_runtime",
            _ = sigint.recv() => break "interrupted",
            _ = sigterm.recv() => break "interrupted",
            ev = ev_rx.recv() => match ev {
                Some(ev) => on_event(ev, &mut progress, &events, &mut changes, &mut failed, &alive_tx),
                None => { fleet_over = true; break "hosts_done" }
            },
            Some(()) = file_rx.recv() => {
                for (file, (host, last, tx)) in updaters.iter_mut() {
                    let Ok(text) = graphfile::read(file) else { continue };
                    if text == *last {
                        continue;
                    }
                    match graphfile::parse(file, &text, &registry) {
                        Ok(_) => {
                            *last = text.clone();
                            let _ = tx.send(text.into_bytes()).await;
                        }
                        Err(diags) => {
                            *last = text;
                            error!("{host}: new version of {} is invalid, not copied:\n{diags}", file.display());
                            events.emit("graph_invalid", &json!({"file": file, "host": host, "errors": diags}));
                        }
                    }
                }
            }
        }
    };
    match reason {
        "converged" => info!(
            "the cluster has converged for {}s, ending the run",
            args.converged_timeout
        ),
        "interrupted" => info!("interrupted: stopping every host (^C again to force)"),
        "max_runtime" => info!(
            "max runtime of {}s reached, stopping every host",
            args.max_runtime
        ),
        _ => {}
    }
    events.emit("exit", &json!({"reason": reason}));
    drop(watches);
    fleet_cancel.cancel();

    // Wait for the fleet to finish cleaning up, relaying its last events; a second ^C forces.
    let mut fleet = fleet;
    let report = loop {
        tokio::select! {
            r = &mut fleet => break r.context("the remote fleet task failed")?,
            ev = ev_rx.recv(), if !fleet_over => match ev {
                Some(ev) => on_event(ev, &mut progress, &events, &mut changes, &mut failed, &alive_tx),
                None => fleet_over = true,
            },
            _ = sigint.recv() => {
                warn!("second interrupt: forcing every host down now");
                force.cancel();
            }
        }
    };
    progress.finish();
    cancel.cancel();
    link.close().await;

    summary(&report, &changes, &events);
    if report.all_ok() && failed.is_empty() {
        Ok(Exit::Ok)
    } else {
        Ok(Exit::Failed)
    }
}

fn on_event(
    ev: RemoteEvent,
    progress: &mut Progress,
    events: &Events,
    changes: &mut BTreeMap<String, u64>,
    failed: &mut BTreeSet<String>,
    alive: &watch::Sender<BTreeSet<String>>,
) {
    match ev {
        RemoteEvent::State { host, state } => {
            events.emit(
                "host_state",
                &json!({"host": host, "state": format!("{state:?}").to_lowercase()}),
            );
            progress.state(&host, state);
            if matches!(state, HostState::Done | HostState::Failed) {
                alive.send_modify(|a| {
                    a.remove(&host);
                });
            }
        }
        RemoteEvent::Output { host, line } => {
            // The child's human log: count what it changed for the summary.
            if line.ends_with(": applied") {
                *changes.entry(host.clone()).or_default() += 1;
            }
            events.emit("host_output", &json!({"host": host, "line": line}));
            progress.line(&host, &line);
        }
        RemoteEvent::GraphCopied { host, file } => {
            events.emit("graph_copied", &json!({"host": host, "file": file}));
            progress.message(
                &host,
                &format!("copied new graph definition: {}", file.display()),
            );
        }
        RemoteEvent::Warning { host, message } => {
            events.emit("host_warning", &json!({"host": host, "message": message}));
            progress.message(&host, &format!("warning: {message}"));
        }
        RemoteEvent::Failed { host, step, error } => {
            events.emit("host_failed", &json!({"host": host, "step": format!("{step:?}").to_lowercase(), "error": error.to_string()}));
            progress.failed(&host, &format!("{step:?}: {error}").to_lowercase());
            failed.insert(host.clone());
            alive.send_modify(|a| {
                a.remove(&host);
            });
        }
    }
}

fn summary(report: &remote::FleetReport, changes: &BTreeMap<String, u64>, events: &Events) {
    let mut out =
        String::from("\nhost                 status      changed  bytes sent  binary  time\n");
    for h in &report.hosts {
        let status = match &h.outcome {
            HostOutcome::Done => match &h.exit {
                Some(ChildExit::Code(0)) | None => "ok".to_string(),
                Some(ChildExit::Code(c)) => format!("exit {c}"),
                Some(ChildExit::Signal(s)) => format!("signal {s}"),
                Some(ChildExit::Unknown) => "ok".to_string(),
            },
            HostOutcome::Cancelled => "cancelled".to_string(),
            HostOutcome::Failed { step, .. } => format!("failed:{step:?}").to_lowercase(),
        };
        let cache = match h.cache {
            CacheUse::Hit => "cached",
            CacheUse::Miss => "copied",
            CacheUse::Disabled => "no-cache",
            CacheUse::Unknown => "-",
        };
        let changed = changes.get(&h.host).copied().unwrap_or(0);
        out.push_str(&format!(
            "{:<20} {:<11} {:>7}  {:>10}  {:<6}  {:.1}s\n",
            h.host,
            status,
            changed,
            h.bytes_sent,
            cache,
            h.duration.as_secs_f64()
        ));
        events.emit(
            "host_summary",
            &json!({"host": h.host, "status": status, "changed": changed, "bytes_sent": h.bytes_sent, "cache": cache, "seconds": h.duration.as_secs_f64()}),
        );
    }
    eprint!("{out}");
}
