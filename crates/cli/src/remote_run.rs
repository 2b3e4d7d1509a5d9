//! `mgmt run --remote FILE...`: run graphs on hosts that have nothing but sshd.
//!
//! The initiator parses every file first (a bad graph stops the run before any host is
//! touched), starts the embedded store with auth on (one user per host, its secret handed over
//! in a 0600 file, never in argv), hands the hosts to `remote::run_fleet`, relays their output,
//! copies edited graph files over, and ends the run when every host that is still alive has
//! been converged for `--converged-timeout` seconds (children do not end on their own local
//! convergence: only the initiator sees the whole cluster), or on ^C (a second ^C forces).
//!
//! Hierarchical runs (see hier.rs): every graph file of the tree is read first, every host of
//! the tree gets its store user, the hosts run by intermediates report through them, and the
//! cluster-wide convergence waits for every host of the tree.
//!
//! Shutdown order: stop watching files -> cancel the fleet (children stop, run dirs removed;
//! an intermediate stops its own children first) -> await the fleet -> summary -> store link
//! closed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use fleet::event::ParseError;
use fleet::{Event, ExitReason};
use remote::{HostState, RemoteEvent};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::Exit;
use crate::args::RunArgs;
use crate::graphfile::FileEvent;
use crate::hier::{self, Creds, Notice, Tree};
use crate::output::Events;
use crate::progress::Progress;
use crate::signals::Signals;
use crate::storelink;

pub async fn run_remote(args: RunArgs, events: Events) -> Result<Exit> {
    let registry = resources::registry();
    let tree = match Tree::load(&args.remote, &hier::resolve_local, &registry) {
        Ok(tree) => tree,
        Err(problems) => {
            for p in &problems {
                if p.message.starts_with("error") {
                    eprintln!("{}", p.message);
                } else {
                    eprintln!("error: {}", p.message);
                }
                events.emit(&Event::GraphInvalid {
                    file: Some(p.file.display().to_string()),
                    host: None,
                    errors: p.diagnostics.clone(),
                });
            }
            return Ok(Exit::BadInput);
        }
    };
    // Asked before anything else is printed or connected: one prompt for every host.
    let sudo_password = match ask_sudo_password(&args, &tree, &registry).await {
        Ok(p) => p,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(Exit::BadInput);
        }
    };

    let cancel = CancellationToken::new();
    let me: String = crate::hostname(&args).unwrap_or_else(|_| "initiator".into());
    events.start(&me);
    let mut link = storelink::connect_initiator(&args, &events, cancel.child_token()).await?;
    let store_addr = link.tunnel_target()?;
    // The initiator is the one that warns about invalid exports, every host's, once per
    // change of each; the children warn only about their own. Held for the run: the watch
    // ends when it is dropped.
    let _invalid_exports = link
        .watch_exports(cancel.child_token(), store::WarnInvalid::All)
        .await?;

    let settings = hier::settings_from_args(&args);
    let mut cfg = hier::fleet_config(&args, store_addr, &settings, tree.height())?;
    cfg.known_hosts = args.known_hosts.clone();
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
    cfg.sudo_password = sudo_password;
    let force = cfg.force.clone();

    // One store user per host of the whole tree, named after it: the hosts run by
    // intermediates reach our store through their intermediate's tunnel.
    let hosts = tree.hosts();
    let mut creds = Creds::new();
    for host in &hosts {
        let secret = crate::secret()?;
        link.add_host_user(host, &secret)?;
        // A flag left by an earlier run (a real etcd outlives us) must not count as converged.
        link.store.delete(&store::keys::converged(host)).await.ok();
        let cred = remote::Credentials::new(host.clone(), secret)
            .with_context(|| format!("store credentials for {host}"))?;
        creds.insert(host.clone(), cred);
    }
    let (mut targets, mut router) =
        hier::pack(&tree, &tree.top, &creds, &settings, &registry).map_err(anyhow::Error::msg)?;
    hier::apply_sudo(&mut targets, args.sudo, &registry);
    info!(
        initiator = %me,
        hosts = hosts.len(),
        direct = tree.top.len(),
        cconns = cfg.cconns,
        "starting remote run"
    );

    // Every graph file of the tree is watched for live edits (unless --no-watch).
    let (file_tx, mut file_rx) = mpsc::channel::<FileEvent>(1);
    let watch = if args.no_watch {
        None
    } else {
        Some(hier::watch_files(&router.files(), file_tx)?)
    };

    // Each host this process runs can be stopped alone (a graph moved elsewhere), and hosts
    // can join while the fleet runs (where a moved graph goes).
    let mut stops: BTreeMap<String, CancellationToken> = BTreeMap::new();
    let targets: Vec<_> = targets
        .into_iter()
        .map(|(t, mut extras)| {
            let stop = CancellationToken::new();
            stops.insert(t.hostname.clone(), stop.clone());
            extras.stop = Some(stop);
            (t, extras)
        })
        .collect();
    let (late_tx, late_rx) = mpsc::channel(4);
    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
    let fleet_cancel = cancel.child_token();
    let fleet = tokio::spawn(remote::run_fleet_dynamic(
        cfg,
        targets,
        late_rx,
        fleet_cancel.clone(),
        ev_tx,
    ));

    let (alive_tx, alive_rx) = watch::channel(hosts.iter().cloned().collect::<BTreeSet<String>>());
    // Each child publishes `true` only after the converged timeout of quiet on its own (it
    // gets `--converged-timeout=T`), so every alive host's flag being true at once already
    // means the whole cluster has been converged for T: no second wait here.
    let converged = args.converged_timeout.0.is_some().then(|| {
        tokio::spawn(crate::cluster::converged_for(
            link.store.clone(),
            alive_rx,
            Duration::ZERO,
            cancel.child_token(),
        ))
    });
    let converged_done = async {
        match converged {
            Some(task) => {
                let _ = task.await;
            }
            None => std::future::pending().await,
        }
    };
    let mut converged_done = std::pin::pin!(converged_done);

    let mut relay = Relay {
        progress: Progress::new(&hosts, std::io::stderr().is_terminal()),
        events: events.clone(),
        tree: &tree,
        changes: BTreeMap::new(),
        failed: BTreeSet::new(),
        alive: alive_tx,
        sub_summaries: BTreeMap::new(),
    };
    // SIGINT, SIGTERM and SIGHUP all end the run cleanly (see signals.rs).
    let mut signals = Signals::new()?;
    let mut signalled = None;
    let max_runtime = async {
        match args.max_runtime.0 {
            None => std::future::pending().await,
            Some(d) => tokio::time::sleep(d).await,
        }
    };
    tokio::pin!(max_runtime);
    let mut fleet_over = false;

    let reason = loop {
        tokio::select! {
            _ = &mut converged_done => break ExitReason::Converged,
            _ = &mut max_runtime => break ExitReason::MaxRuntime,
            sig = signals.stop() => {
                signalled = Some(sig);
                break ExitReason::Interrupted;
            }
            ev = ev_rx.recv() => match ev {
                Some(ev) => relay.on_event(ev),
                None => { fleet_over = true; break ExitReason::HostsDone }
            },
            Some(ev) = file_rx.recv() => if let FileEvent::Writing(file) = ev {
                // Read once closed or renamed into place: never copied half-written.
                info!("{} is being written; it is read once closed", file.display());
                events.emit(&Event::GraphWriting { file });
            } else {
                for n in router.changed(&registry).await {
                    match n {
                        Notice::Invalid { host, file, diags, errors } => {
                            error!("{host}: new version of {} is invalid, not copied:\n{diags}", file.display());
                            events.emit(&Event::GraphInvalid {
                                file: Some(file.display().to_string()),
                                host: Some(host.clone()),
                                errors,
                            });
                        }
                        Notice::Moved { host, file, text, to } => {
                            let new = to.host().to_string();
                            if relay.alive.borrow().contains(&new) || tree.index_of(&new).is_some() || stops.contains_key(&new) {
                                error!("{host}: {} now names {new}, which runs a graph of this run already; not moved", file.display());
                                continue;
                            }
                            let started = async {
                                let secret = crate::secret()?;
                                link.add_host_user(&new, &secret)?;
                                link.store.delete(&store::keys::converged(&new)).await.ok();
                                let cred = remote::Credentials::new(new.clone(), secret)
                                    .with_context(|| format!("store credentials for {new}"))?;
                                let (graph_tx, graph_rx) = mpsc::channel(4);
                                let stop = CancellationToken::new();
                                let sudo = hier::graph_sudo(&file, &text, args.sudo, &registry);
                                let target = remote::Target {
                                    file: file.clone(),
                                    graph: text.into_bytes(),
                                    url: to,
                                    hostname: new.clone(),
                                    updates: Some(graph_rx),
                                };
                                let extras = remote::TargetExtras {
                                    files: vec![cred.file(crate::child::CRED_FILE)],
                                    updates: None,
                                    stop: Some(stop.clone()),
                                    sudo,
                                };
                                late_tx.send((target, extras)).await.context("the fleet has ended")?;
                                anyhow::Ok((graph_tx, stop))
                            };
                            match started.await {
                                Ok((graph_tx, stop)) => {
                                    info!("{host}: {} now names {new}: starting it there, stopping it here", file.display());
                                    stops.insert(new.clone(), stop);
                                    router.moved(&file, &new, graph_tx);
                                    relay.alive.send_modify(|a| { a.insert(new.clone()); });
                                    relay.progress.add(&new);
                                    if let Some(old) = stops.get(&host) {
                                        old.cancel();
                                    }
                                    events.emit(&Event::GraphMoved { file, from: host, to: new });
                                }
                                Err(e) => error!("{host}: cannot move {} to {new}: {e:#}", file.display()),
                            }
                        }
                        Notice::Unmovable { host, file, why } => warn!(
                            "{host}: the `remote:` of {} changed, but {why}: not copied; the next run moves it",
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
    };
    match reason {
        ExitReason::Converged => info!(
            "the cluster has converged for {}s, ending the run",
            args.converged_timeout.secs().unwrap_or_default()
        ),
        ExitReason::Interrupted => info!(
            "interrupted by {}: stopping every host (^C again to force)",
            signalled.unwrap_or("a signal")
        ),
        ExitReason::MaxRuntime => info!(
            "max runtime of {}s reached, stopping every host",
            args.max_runtime.secs().unwrap_or_default()
        ),
        _ => {}
    }
    events.emit(&Event::Exit {
        reason,
        signal: signalled.map(str::to_string),
    });
    drop(watch);
    fleet_cancel.cancel();

    // Wait for the fleet to finish cleaning up, relaying its last events; a second ^C forces.
    let mut fleet = fleet;
    // After a second ^C the hosts get FORCE_BUDGET to confirm, whatever the network does;
    // then we leave (their children end by themselves once our store is gone).
    let mut forced_by: Option<tokio::time::Instant> = None;
    let report = loop {
        let forced_wait = async {
            match forced_by {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut fleet => break r.context("the remote fleet task failed")?,
            ev = ev_rx.recv(), if !fleet_over => match ev {
                Some(ev) => relay.on_event(ev),
                None => fleet_over = true,
            },
            _ = signals.interrupt(), if forced_by.is_none() => {
                warn!("second interrupt: forcing every host down now");
                force.cancel();
                forced_by = Some(tokio::time::Instant::now() + FORCE_BUDGET);
            }
            _ = forced_wait => {
                while let Ok(ev) = ev_rx.try_recv() {
                    relay.on_event(ev);
                }
                relay.progress.finish();
                let pending: Vec<String> = relay.unconfirmed();
                error!(
                    "forced exit: no confirmation within {:.1}s from {}; a child left running ends by itself within {}s of losing our store",
                    FORCE_BUDGET.as_secs_f64(),
                    if pending.is_empty() { "some hosts".to_string() } else { pending.join(", ") },
                    crate::child::STORE_LOST_TIMEOUT.as_secs()
                );
                return Ok(Exit::Failed);
            }
        }
    };
    // The fleet is done: whatever it sent is in the channel already.
    while let Ok(ev) = ev_rx.try_recv() {
        relay.on_event(ev);
    }
    relay.progress.finish();
    cancel.cancel();
    link.close().await;

    let sub_ok = relay.summary(&report);
    if report.all_ok() && relay.failed.is_empty() && sub_ok {
        Ok(Exit::Ok)
    } else {
        Ok(Exit::Failed)
    }
}

/// `--ask-sudo-pass`: the password, asked once on the terminal, when a host this process
/// connects to runs its child through sudo. Hosts run by intermediates never get it.
async fn ask_sudo_password(
    args: &RunArgs,
    tree: &Tree,
    registry: &resource::Registry,
) -> Result<Option<remote::SudoPassword>, String> {
    if !args.ask_sudo_pass {
        return Ok(None);
    }
    let uses_sudo = |i: &usize| {
        let n = &tree.nodes[*i];
        hier::graph_sudo(&n.file, &n.text, args.sudo, registry)
    };
    let direct: Vec<usize> = tree.top.iter().copied().filter(uses_sudo).collect();
    let below: Vec<String> = (0..tree.nodes.len())
        .filter(|i| !tree.top.contains(i) && uses_sudo(i))
        .map(|i| tree.nodes[i].hostname.clone())
        .collect();
    if !below.is_empty() {
        warn!(
            "--ask-sudo-pass: the password goes only to the hosts this run connects to; {} (run by intermediates) use `sudo -n`",
            below.join(", ")
        );
    }
    if direct.is_empty() {
        warn!(
            "--ask-sudo-pass: no host this run connects to runs with sudo (--sudo, or `sudo: true` in its graph); not asking"
        );
        return Ok(None);
    }
    let mut names: Vec<String> = direct
        .iter()
        .map(|&i| {
            let n = &tree.nodes[i];
            match n.url.user() {
                Some(u) => format!("{u}@{}", n.hostname),
                None => n.hostname.clone(),
            }
        })
        .collect();
    if names.len() > 3 {
        let more = names.len() - 3;
        names.truncate(3);
        names.push(format!("{more} more"));
    }
    let prompt = format!("sudo password for {}: ", names.join(", "));
    remote::ask_sudo_password(prompt)
        .await
        .map(Some)
        .ok_or_else(|| {
            "--ask-sudo-pass: no password was read (it is asked on the terminal, /dev/tty)"
                .to_string()
        })
}

/// What the initiator makes of its fleet's events: JSON events, the live view, the counts for
/// the summary, and the set of hosts the cluster-wide convergence still waits for.
struct Relay<'t> {
    progress: Progress,
    events: Events,
    tree: &'t Tree,
    changes: BTreeMap<String, u64>,
    failed: BTreeSet<String>,
    alive: watch::Sender<BTreeSet<String>>,
    /// Summaries of the hosts run by intermediates, as they reported them.
    sub_summaries: BTreeMap<String, Event>,
}

/// How long a second ^C waits for the hosts before the initiator leaves anyway.
const FORCE_BUDGET: Duration = Duration::from_millis(1500);

impl Relay<'_> {
    /// The hosts that have not reported their end yet.
    fn unconfirmed(&self) -> Vec<String> {
        self.alive.borrow().iter().cloned().collect()
    }

    /// A host that is gone takes the hosts it runs with it.
    fn gone(&self, host: &str) {
        let below = self.tree.subtree_hosts(host);
        self.alive.send_modify(|a| {
            for h in &below {
                a.remove(h);
            }
        });
    }

    /// One event of our own fleet.
    fn on_event(&mut self, ev: RemoteEvent) {
        if let RemoteEvent::Output { host, line } = &ev
            && let Some(report) = hier::parse_report(self.tree, host, line)
        {
            // An intermediate's report about a host it runs.
            let via = self.tree.parent_host(report.host().unwrap_or_default());
            return self.on_host_event(report, via);
        }
        self.on_host_event(hier::event_of(ev), None);
    }

    /// A host's event, of our own fleet (`via` None) or reported by the intermediate `via`:
    /// JSON events, the live view, the counts for the summary, who is still alive.
    fn on_host_event(&mut self, mut ev: Event, via: Option<String>) {
        if let Some(v) = &via {
            ev.set_via(v);
        }
        match &ev {
            Event::HostState { host, state, .. } => {
                self.progress.state(host, *state);
                if matches!(state, HostState::Done | HostState::Failed) {
                    self.gone(host);
                }
            }
            Event::HostOutput { host, line, .. } => {
                // The child speaks `--json` on stdout: its events are read, not shown; its
                // human log (stderr) is shown.
                match Event::parse(line) {
                    Ok(child) => {
                        let host = host.clone();
                        self.on_child_event(&host, &child);
                        if let Event::Converged { converged } = child {
                            let mut ev = Event::HostConverged {
                                host,
                                converged,
                                via: None,
                            };
                            if let Some(v) = &via {
                                ev.set_via(v);
                            }
                            self.events.emit(&ev);
                        }
                        return;
                    }
                    Err(ParseError::TooLong(n)) => {
                        warn!(host, "dropping a {n}-byte line of the child's output");
                        return;
                    }
                    Err(ParseError::Invalid(e)) => {
                        warn!(
                            host,
                            "the child sent an event this version does not know: {e}"
                        );
                        return;
                    }
                    Err(ParseError::NotAnEvent) => self.progress.line(host, line),
                }
            }
            Event::GraphCopied { host, file, .. } => {
                self.progress.message(
                    host,
                    &format!("copied new graph definition: {}", file.display()),
                );
            }
            Event::HostWarning { host, message, .. } => {
                self.progress.message(host, &format!("warning: {message}"));
            }
            Event::HostFailed {
                host, step, error, ..
            } => {
                self.progress
                    .failed(host, &format!("{}: {error}", step.as_str()));
                self.failed.insert(host.clone());
                self.gone(host);
            }
            Event::HostSummary { host, .. } => {
                // Shown in our own summary, with our own count of its changes.
                self.sub_summaries.insert(host.clone(), ev);
                return;
            }
            _ => return,
        }
        self.events.emit(&ev);
    }

    /// What a host's child reported about itself.
    fn on_child_event(&mut self, host: &str, ev: &Event) {
        match ev {
            Event::Applied {
                outcome: fleet::Outcome::Changed,
                ..
            } => {
                *self.changes.entry(host.to_string()).or_default() += 1;
                self.progress.busy(host, true);
            }
            Event::Converged { converged } => self.progress.busy(host, !converged),
            _ => {}
        }
    }

    /// Prints the table and emits `host_summary` per host (hosts run by intermediates carry
    /// `via`). Returns false when a host run by an intermediate did not end well or never
    /// reported.
    fn summary(&self, report: &remote::FleetReport) -> bool {
        let mut out = String::from(
            "\nhost                 status      changed  bytes sent  binary  time    via\n",
        );
        let mut row = |host: &str,
                       status: &str,
                       bytes: u64,
                       cache: remote::CacheUse,
                       secs: f64,
                       via: Option<&str>| {
            let changed = self.changes.get(host).copied().unwrap_or(0);
            out.push_str(&format!(
                "{:<20} {:<11} {:>7}  {:>10}  {:<6}  {:<6.1}  {}\n",
                host,
                status,
                changed,
                bytes,
                cache.as_str(),
                secs,
                via.unwrap_or("-"),
            ));
            self.events.emit(&Event::HostSummary {
                host: host.to_string(),
                status: status.to_string(),
                changed,
                bytes_sent: bytes,
                cache,
                seconds: secs,
                via: via.map(str::to_string),
            });
        };
        // A child that exited non-zero (a resource failed on it) fails the run like a host
        // that could not be reached: the exit code must say so.
        let mut ok = true;
        for h in &report.hosts {
            let status = hier::host_status(h);
            ok &= status == "ok" || status == "cancelled";
            row(
                &h.host,
                &status,
                h.bytes_sent,
                h.cache,
                h.duration.as_secs_f64(),
                None,
            );
        }
        for n in &self.tree.nodes {
            let Some(via) = self.tree.parent_host(&n.hostname) else {
                continue;
            };
            match self.sub_summaries.get(&n.hostname) {
                Some(Event::HostSummary {
                    host,
                    status,
                    bytes_sent,
                    cache,
                    seconds,
                    ..
                }) => {
                    ok &= status == "ok" || status == "cancelled";
                    row(host, status, *bytes_sent, *cache, *seconds, Some(&via));
                }
                _ => {
                    ok = false;
                    row(
                        &n.hostname,
                        "unreported",
                        0,
                        remote::CacheUse::Unknown,
                        0.0,
                        Some(&via),
                    );
                }
            }
        }
        crate::progress::print_stderr(&out);
        ok
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn graph(dir: &Path, name: &str, host: &str, remotes: &[&str]) -> PathBuf {
        let mut y = format!("graph: {name}\nremote: ssh://root@{host}:22\nresources: {{}}\n");
        if !remotes.is_empty() {
            y.push_str("remotes:\n");
            for r in remotes {
                y.push_str(&format!("- {r}\n"));
            }
        }
        let p = dir.join(name);
        std::fs::write(&p, y).unwrap();
        p
    }

    #[test]
    fn a_report_with_an_unknown_state_fails_no_host() {
        let d = tempfile::tempdir().unwrap();
        let a = graph(d.path(), "a.yaml", "a", &["l.yaml"]);
        graph(d.path(), "l.yaml", "l", &["m.yaml"]);
        graph(d.path(), "m.yaml", "m", &[]);
        let tree = Tree::load(&[a], &hier::resolve_local, &resources::registry()).unwrap();
        let hosts = tree.hosts();
        let (alive, alive_rx) = watch::channel(hosts.iter().cloned().collect::<BTreeSet<_>>());
        let mut relay = Relay {
            progress: Progress::new(&hosts, false),
            events: Events::new(false),
            tree: &tree,
            changes: BTreeMap::new(),
            failed: BTreeSet::new(),
            alive,
            sub_summaries: BTreeMap::new(),
        };
        // What intermediate `a` prints about `l`, as its fleet relays it to us.
        let report = |state: &str| RemoteEvent::Output {
            host: "a".into(),
            line: format!(
                r#"{}{{"event":"host_state","host":"l","state":"{state}"}}"#,
                fleet::tree::REPORT_PREFIX
            ),
        };
        relay.on_event(report("converged"));
        relay.on_event(report("Failed"));
        assert!(relay.failed.is_empty());
        assert_eq!(alive_rx.borrow().len(), 3, "{:?}", alive_rx.borrow());
        // The words the intermediate writes are the ones read here.
        relay.on_event(report(remote::HostState::Running.as_str()));
        assert_eq!(alive_rx.borrow().len(), 3);
        relay.on_event(report(remote::HostState::Failed.as_str()));
        assert_eq!(*alive_rx.borrow(), BTreeSet::from(["a".to_string()]));
    }
}
