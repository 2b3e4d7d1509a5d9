//! Hierarchical remote runs: a remote graph's `remotes:` names further graph files (relative to
//! it) that the host it runs on runs as remotes of its own. This module holds what the
//! initiator and the intermediates share:
//!
//! - [`Tree`]: every graph file of the run, read and checked up front (a bad file anywhere, a
//!   cycle of files or a host named twice stops the run before any host is touched);
//! - [`pack`]: one direct host's target, its whole subtree packed into its run dir as extra
//!   files (graphs, per-host store credentials, the [`Manifest`]), and the [`Router`] that
//!   copies live edits of any file of the tree down the right branch;
//! - [`report_line`]/[`parse_report`]: the lines (`mgmt-tree: {event}`, a `fleet::Event`) by
//!   which an intermediate reports its subtree up, accepted only for hosts of the reporting
//!   host's own subtree;
//! - [`Intermediate`]: the fleet a remote child runs for its own `remotes:`.
//!
//! It must never put a secret in argv or in a log, never trust a report about a host outside
//! the reporter's subtree, and never leave a child running: an intermediate's fleet is
//! cancelled (children stopped, run dirs removed) before the intermediate exits.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use remote::{
    ChildExit, Credentials, ExtraFile, FleetConfig, HostOutcome, HostReport, RemoteEvent,
    RemoteUrl, Target, TargetExtras,
};
use resource::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::args::RunArgs;
use crate::child::{self, CRED_FILE};
use crate::graphfile;
use fleet::Event;

/// The prefix of a line by which an intermediate reports on a host of its subtree.
pub const REPORT_PREFIX: &str = "mgmt-tree: ";
/// The manifest an intermediate finds next to its own graph in its run dir.
pub const MANIFEST: &str = "mgmt-tree.json";

/// One graph file of the tree and the host it runs on.
#[derive(Debug)]
pub struct Node {
    /// Where the file is read from (on an intermediate: its copy in the run dir).
    pub file: PathBuf,
    pub text: String,
    pub url: RemoteUrl,
    pub hostname: String,
    pub parent: Option<usize>,
    /// The `remotes:` entry of the parent that names this file, as written.
    pub entry: Option<String>,
    pub children: Vec<usize>,
}

/// Every graph file of a run; `top` are the hosts this process connects to itself.
#[derive(Debug, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
    pub top: Vec<usize>,
}

/// A problem found while reading the tree: the file and a rendered message.
#[derive(Debug)]
pub struct Problem {
    pub file: PathBuf,
    pub message: String,
}

impl Tree {
    /// Reads `top` and, recursively, every file their `remotes:` name; `resolve(parent, entry)`
    /// says where an entry of `parent` is. Collects every problem instead of stopping at the
    /// first.
    pub fn load(
        top: &[PathBuf],
        resolve: &dyn Fn(&Path, &str) -> Result<PathBuf, String>,
        registry: &Registry,
    ) -> Result<Tree, Vec<Problem>> {
        let mut tree = Tree::default();
        let mut problems = Vec::new();
        for file in top {
            let mut chain = Vec::new();
            if let Some(i) = tree.visit(
                file.clone(),
                None,
                None,
                &mut chain,
                resolve,
                registry,
                &mut problems,
            ) {
                tree.top.push(i);
            }
        }
        let mut seen = BTreeMap::new();
        for n in &tree.nodes {
            if let Some(first) = seen.insert(n.hostname.clone(), n.file.clone()) {
                problems.push(Problem {
                    file: n.file.clone(),
                    message: format!(
                        "host {} is already the target of {}: a host runs one graph per run",
                        n.hostname,
                        first.display()
                    ),
                });
            }
        }
        if problems.is_empty() {
            Ok(tree)
        } else {
            Err(problems)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn visit(
        &mut self,
        file: PathBuf,
        parent: Option<usize>,
        entry: Option<String>,
        chain: &mut Vec<PathBuf>,
        resolve: &dyn Fn(&Path, &str) -> Result<PathBuf, String>,
        registry: &Registry,
        problems: &mut Vec<Problem>,
    ) -> Option<usize> {
        let id = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        if let Some(at) = chain.iter().position(|c| *c == id) {
            let mut names: Vec<String> = chain[at..]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            names.push(id.display().to_string());
            problems.push(Problem {
                file: file.clone(),
                message: format!("cycle of `remotes:` files: {}", names.join(" -> ")),
            });
            return None;
        }
        let mut problem = |message: String| {
            problems.push(Problem {
                file: file.clone(),
                message,
            })
        };
        let text = match graphfile::read(&file) {
            Ok(t) => t,
            Err(e) => {
                problem(format!("{e:#}"));
                return None;
            }
        };
        let spec = match graphfile::parse(&file, &text, registry) {
            Ok(spec) => spec,
            Err(diags) => {
                problem(diags);
                return None;
            }
        };
        let Some(remote) = spec.remote.as_deref().filter(|r| !r.is_empty()) else {
            problem(format!(
                "{} has no `remote:` field naming the host to run it on",
                file.display()
            ));
            return None;
        };
        let url = match RemoteUrl::parse(remote) {
            Ok(url) => url,
            Err(e) => {
                problem(format!("{}: bad `remote:` {e}", file.display()));
                return None;
            }
        };
        if url.has_password() {
            warn!(
                "{}: the password in `remote:` is readable by anyone who can read the file; prefer keys",
                file.display()
            );
        }
        let i = self.nodes.len();
        self.nodes.push(Node {
            file: file.clone(),
            text,
            hostname: url.host().to_string(),
            url,
            parent,
            entry,
            children: Vec::new(),
        });
        chain.push(id);
        for e in &spec.remotes {
            match resolve(&file, e) {
                Ok(child) => {
                    if let Some(c) = self.visit(
                        child,
                        Some(i),
                        Some(e.clone()),
                        chain,
                        resolve,
                        registry,
                        problems,
                    ) {
                        self.nodes[i].children.push(c);
                    }
                }
                Err(message) => problems.push(Problem {
                    file: file.clone(),
                    message: format!("{}: `remotes:` entry {e:?}: {message}", file.display()),
                }),
            }
        }
        chain.pop();
        Some(i)
    }

    /// Every host of the tree.
    pub fn hosts(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.hostname.clone()).collect()
    }

    pub fn index_of(&self, host: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.hostname == host)
    }

    /// The nodes below `i` (not `i` itself), parents before their children.
    pub fn descendants(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack: Vec<usize> = self.nodes[i].children.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            out.push(n);
            stack.extend(self.nodes[n].children.iter().rev().copied());
        }
        out
    }

    /// Whether `host` is below the host `of` (a report about it may come from `of`).
    pub fn is_below(&self, host: &str, of: &str) -> bool {
        let (Some(h), Some(o)) = (self.index_of(host), self.index_of(of)) else {
            return false;
        };
        let mut p = self.nodes[h].parent;
        while let Some(x) = p {
            if x == o {
                return true;
            }
            p = self.nodes[x].parent;
        }
        false
    }

    /// `host` and every host below it.
    pub fn subtree_hosts(&self, host: &str) -> Vec<String> {
        let Some(i) = self.index_of(host) else {
            return vec![host.to_string()];
        };
        std::iter::once(i)
            .chain(self.descendants(i))
            .map(|n| self.nodes[n].hostname.clone())
            .collect()
    }

    /// The host that runs `host` (None for the hosts this process runs itself).
    pub fn parent_host(&self, host: &str) -> Option<String> {
        let i = self.index_of(host)?;
        self.nodes[i].parent.map(|p| self.nodes[p].hostname.clone())
    }

    /// Levels below the top hosts (0: no host has `remotes:`).
    pub fn height(&self) -> u32 {
        self.top
            .iter()
            .flat_map(|t| self.descendants(*t))
            .map(|n| {
                let mut d = 0;
                let mut p = self.nodes[n].parent;
                while let Some(x) = p {
                    d += 1;
                    p = self.nodes[x].parent;
                }
                d
            })
            .max()
            .unwrap_or(0)
    }
}

/// Where the initiator finds a `remotes:` entry: relative to the graph file naming it.
pub fn resolve_local(parent: &Path, entry: &str) -> Result<PathBuf, String> {
    let dir = parent.parent().unwrap_or_else(|| Path::new("."));
    Ok(dir.join(entry))
}

/// Fleet settings an intermediate takes from its initiator (argv carries only mgmt's flags).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    pub cconns: usize,
    pub caching: bool,
    pub tmp_prefix: String,
    pub accept_new_host_keys: bool,
    pub grace_secs: u64,
}

impl Settings {
    pub fn from_args(args: &RunArgs) -> Settings {
        Settings {
            cconns: args.cconns.max(1),
            caching: !args.no_caching,
            tmp_prefix: args.tmp_prefix.clone(),
            accept_new_host_keys: args.accept_new_host_keys,
            grace_secs: 5,
        }
    }
}

/// What an intermediate finds next to its graph: the fleet settings, and for every file of its
/// subtree which `remotes:` entry of which file it is, its name in the run dir, and the name of
/// the store credentials of its host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub settings: Settings,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    /// The run dir name of the file whose `remotes:` names this one.
    pub parent: String,
    /// The entry, as written.
    pub entry: String,
    pub file: String,
    pub cred: String,
}

/// Store credentials per host.
pub type Creds = BTreeMap<String, Credentials>;

fn read_cred(path: &Path) -> Result<Credentials> {
    Credentials::read(path).with_context(|| format!("store credentials {}", path.display()))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How a new version of one file of the tree reaches the host that runs it.
enum Route {
    /// The graph of a host this process runs itself.
    Graph(mpsc::Sender<Vec<u8>>),
    /// A file in the run dir of a host this process runs (named so there), which that host
    /// hands on.
    Extra(mpsc::Sender<ExtraFile>, String),
}

struct Watched {
    host: String,
    file: PathBuf,
    last: String,
    remotes: Vec<String>,
    route: Route,
    /// The `remote:` host it runs on (for the files of hosts this process runs itself).
    runs_on: Option<String>,
}

/// Copies live edits of any file of the tree down the branch it belongs to.
#[derive(Default)]
pub struct Router {
    files: Vec<Watched>,
}

/// Something a live edit caused that the user should hear about.
pub enum Notice {
    /// The new version does not parse; it was not copied.
    Invalid {
        host: String,
        file: PathBuf,
        diags: String,
    },
    /// Copied; its `remotes:` list changed, which takes effect on the next run only.
    Shape { host: String, file: PathBuf },
    /// Its `remote:` names another host: not copied to `host`; the caller starts it on `to`
    /// and stops `host`, then tells the router with [`Router::moved`].
    Moved {
        host: String,
        file: PathBuf,
        text: String,
        to: remote::RemoteUrl,
    },
    /// Its `remote:` names another host, which is not supported for this file (a host run by
    /// an intermediate, or one with `remotes:` of its own): not copied; the next run moves it.
    Unmovable {
        host: String,
        file: PathBuf,
        why: &'static str,
    },
}

impl Router {
    /// `file` now runs on `host`; its next versions go to `graph`.
    pub fn moved(&mut self, file: &Path, host: &str, graph: mpsc::Sender<Vec<u8>>) {
        for w in self.files.iter_mut().filter(|w| w.file == file) {
            w.host = host.to_string();
            w.runs_on = Some(host.to_string());
            w.route = Route::Graph(graph.clone());
        }
    }

    pub fn files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|w| w.file.clone()).collect()
    }

    /// Re-reads every file, and sends each changed, valid one on its way.
    pub async fn changed(&mut self, registry: &Registry) -> Vec<Notice> {
        let mut notices = Vec::new();
        for w in &mut self.files {
            let Ok(text) = graphfile::read(&w.file) else {
                continue;
            };
            if text == w.last {
                continue;
            }
            let spec = match graphfile::parse(&w.file, &text, registry) {
                Ok(spec) => spec,
                Err(diags) => {
                    w.last = text;
                    notices.push(Notice::Invalid {
                        host: w.host.clone(),
                        file: w.file.clone(),
                        diags,
                    });
                    continue;
                }
            };
            let new_host = spec
                .remote
                .as_deref()
                .and_then(|r| RemoteUrl::parse(r).ok());
            if let Some(to) = new_host.filter(|u| u.host() != w.host) {
                w.last = text.clone();
                let why = match (&w.runs_on, w.remotes.is_empty() && spec.remotes.is_empty()) {
                    (None, _) => Some("it runs on a host run by an intermediate"),
                    (_, false) => Some("it has `remotes:` of its own"),
                    _ => None,
                };
                notices.push(match why {
                    None => Notice::Moved {
                        host: w.host.clone(),
                        file: w.file.clone(),
                        text,
                        to,
                    },
                    Some(why) => Notice::Unmovable {
                        host: w.host.clone(),
                        file: w.file.clone(),
                        why,
                    },
                });
                continue;
            }
            if spec.remotes != w.remotes {
                notices.push(Notice::Shape {
                    host: w.host.clone(),
                    file: w.file.clone(),
                });
            }
            w.last = text.clone();
            match &w.route {
                Route::Graph(tx) => {
                    let _ = tx.send(text.into_bytes()).await;
                }
                Route::Extra(tx, name) => {
                    let _ = tx
                        .send(ExtraFile {
                            name: name.clone(),
                            bytes: text.into_bytes(),
                            mode: 0o600,
                        })
                        .await;
                }
            }
        }
        notices
    }
}

/// Targets for the hosts `direct` of `tree` (each with its subtree in its run dir), and the
/// router for live edits of every file involved.
pub fn pack(
    tree: &Tree,
    direct: &[usize],
    creds: &Creds,
    settings: &Settings,
    registry: &Registry,
) -> Result<(Vec<(Target, TargetExtras)>, Router)> {
    let mut targets = Vec::new();
    let mut router = Router::default();
    let remotes_of = |text: &str, file: &Path| {
        graphfile::parse(file, text, registry)
            .map(|s| s.remotes)
            .unwrap_or_default()
    };
    for &c in direct {
        let node = &tree.nodes[c];
        let cred = creds
            .get(&node.hostname)
            .with_context(|| format!("no store credentials for host {}", node.hostname))?;
        let (tx, rx) = mpsc::channel(4);
        router.files.push(Watched {
            host: node.hostname.clone(),
            file: node.file.clone(),
            last: node.text.clone(),
            remotes: remotes_of(&node.text, &node.file),
            route: Route::Graph(tx),
            runs_on: Some(node.hostname.clone()),
        });
        let graph_name = file_name(&node.file);
        // The host's own credentials, named on its command line (see child.rs).
        let mut extras = TargetExtras {
            files: vec![cred.file(CRED_FILE)],
            ..TargetExtras::default()
        };
        let below = tree.descendants(c);
        if !below.is_empty() {
            let (etx, erx) = mpsc::channel(4);
            extras.updates = Some(erx);
            let mut used: BTreeSet<String> = [
                graph_name.clone(),
                MANIFEST.to_string(),
                CRED_FILE.to_string(),
            ]
            .into();
            let mut local: BTreeMap<usize, String> = BTreeMap::from([(c, graph_name.clone())]);
            let mut manifest = Manifest {
                settings: settings.clone(),
                files: Vec::new(),
            };
            let mut k = 0;
            for d in below {
                let dn = &tree.nodes[d];
                let (name, cred) = loop {
                    k += 1;
                    let name = format!("sub-{k}-{}", file_name(&dn.file));
                    let cred = format!("sub-{k}.cred");
                    if !used.contains(&name) && !used.contains(&cred) {
                        break (name, cred);
                    }
                };
                used.insert(name.clone());
                used.insert(cred.clone());
                let parent = dn.parent.and_then(|p| local.get(&p)).cloned();
                manifest.files.push(ManifestFile {
                    parent: parent.unwrap_or_default(),
                    entry: dn.entry.clone().unwrap_or_default(),
                    file: name.clone(),
                    cred: cred.clone(),
                });
                let dcred = creds
                    .get(&dn.hostname)
                    .with_context(|| format!("no store credentials for host {}", dn.hostname))?;
                extras.files.push(ExtraFile {
                    name: name.clone(),
                    bytes: dn.text.clone().into_bytes(),
                    mode: 0o600,
                });
                extras.files.push(dcred.file(cred));
                router.files.push(Watched {
                    host: dn.hostname.clone(),
                    file: dn.file.clone(),
                    last: dn.text.clone(),
                    remotes: remotes_of(&dn.text, &dn.file),
                    route: Route::Extra(etx.clone(), name.clone()),
                    runs_on: None,
                });
                local.insert(d, name);
            }
            extras.files.push(ExtraFile {
                name: MANIFEST.to_string(),
                bytes: serde_json::to_vec_pretty(&manifest)?,
                mode: 0o600,
            });
        }
        targets.push((
            Target {
                file: node.file.clone(),
                graph: node.text.clone().into_bytes(),
                url: node.url.clone(),
                hostname: node.hostname.clone(),
                updates: Some(rx),
            },
            extras,
        ));
    }
    Ok((targets, router))
}

/// One watch for every file of `files`, on the process's inotify hub (a kernel watch per
/// directory, shared). Sends a unit on any change.
pub fn watch_files(files: &[PathBuf], tx: mpsc::Sender<()>) -> Result<crate::graphfile::FileWatch> {
    crate::graphfile::FileWatch::new(files, tx)
}

/// A line by which an intermediate reports on a host of its subtree: the host's event itself
/// (`fleet::Event`, the `--json` stream's type), behind [`REPORT_PREFIX`].
pub fn report_line(ev: &Event) -> String {
    format!("{REPORT_PREFIX}{}", ev.to_line())
}

/// A report about a host below `from` (which printed `line`); anything else is `from`'s own
/// output. A report that does not parse (an unknown state word, a line too long) is logged and
/// dropped: it fails no host.
pub fn parse_report(tree: &Tree, from: &str, line: &str) -> Option<Event> {
    let body = line.strip_prefix(REPORT_PREFIX)?;
    match Event::parse(body) {
        Ok(ev) if ev.host().is_some_and(|h| tree.is_below(h, from)) => Some(ev),
        Ok(_) => None,
        Err(e) => {
            warn!(host = from, "ignoring a report that does not parse: {e:?}");
            None
        }
    }
}

/// One event of this process's own fleet, as the stream says it.
pub fn event_of(ev: RemoteEvent) -> Event {
    match ev {
        RemoteEvent::State { host, state } => Event::HostState {
            host,
            state,
            via: None,
        },
        RemoteEvent::Output { host, line } => Event::HostOutput {
            host,
            line,
            via: None,
        },
        RemoteEvent::GraphCopied { host, file } => Event::GraphCopied {
            host,
            file,
            via: None,
        },
        RemoteEvent::Warning { host, message } => Event::HostWarning {
            host,
            message,
            via: None,
        },
        RemoteEvent::Failed { host, step, error } => Event::HostFailed {
            host,
            step,
            error: error.to_string(),
            via: None,
        },
    }
}

/// A host's row of the summary (`changed` is counted by whoever saw its child's events).
pub fn summary_event(h: &HostReport, changed: u64) -> Event {
    Event::HostSummary {
        host: h.host.clone(),
        status: host_status(h),
        changed,
        bytes_sent: h.bytes_sent,
        cache: h.cache,
        seconds: h.duration.as_secs_f64(),
        via: None,
    }
}

/// A host's status word in the run summary.
pub fn host_status(h: &HostReport) -> String {
    match &h.outcome {
        HostOutcome::Done => match &h.exit {
            Some(ChildExit::Code(0)) | None | Some(ChildExit::Unknown) => "ok".to_string(),
            Some(ChildExit::Code(c)) => format!("exit {c}"),
            Some(ChildExit::Signal(s)) => format!("signal {s}"),
        },
        HostOutcome::Cancelled => "cancelled".to_string(),
        HostOutcome::Failed { step, .. } => format!("failed:{}", step.as_str()),
    }
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
        let store_addr = crate::storelink::parse_url(seeds)?;
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
        let (targets, router) = pack(&tree, &direct, &creds, &manifest.settings, &registry)?;
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
    mut file_rx: mpsc::Receiver<()>,
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
            Some(()) = file_rx.recv() => {
                for n in router.changed(&registry).await {
                    match n {
                        Notice::Invalid { host, file, diags } => {
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
            }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A graph file `name` in `dir` for `host`, with `remotes:` when given.
    pub(crate) fn graph(dir: &Path, name: &str, host: &str, remotes: &[&str]) -> PathBuf {
        let mut y = format!("graph: {name}\nremote: ssh://root@{host}:22\nresources: {{}}\n");
        if !remotes.is_empty() {
            y.push_str("remotes:\n");
            for r in remotes {
                y.push_str(&format!("- {r}\n"));
            }
        }
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, y).unwrap();
        p
    }

    #[test]
    fn tree_relative_paths_and_subtrees() {
        let d = tempfile::tempdir().unwrap();
        let a = graph(
            d.path(),
            "a.yaml",
            "a",
            &["leaves/l1.yaml", "leaves/l2.yaml"],
        );
        graph(d.path(), "leaves/l1.yaml", "l1", &["deep.yaml"]);
        graph(d.path(), "leaves/l2.yaml", "l2", &[]);
        graph(d.path(), "leaves/deep.yaml", "l3", &[]);
        let t = Tree::load(&[a], &resolve_local, &resources::registry()).unwrap();
        assert_eq!(t.hosts(), ["a", "l1", "l3", "l2"]);
        assert_eq!(t.height(), 2);
        assert!(t.is_below("l3", "a") && t.is_below("l3", "l1"));
        assert!(!t.is_below("l2", "l1") && !t.is_below("a", "a"));
        assert_eq!(t.subtree_hosts("l1"), ["l1", "l3"]);
        assert_eq!(t.parent_host("l3").as_deref(), Some("l1"));
    }

    #[test]
    fn cycles_duplicates_and_bad_files_are_all_reported() {
        let d = tempfile::tempdir().unwrap();
        let a = graph(d.path(), "a.yaml", "a", &["b.yaml", "missing.yaml"]);
        graph(d.path(), "b.yaml", "b", &["a.yaml", "c.yaml"]);
        graph(d.path(), "c.yaml", "b", &[]);
        let problems = Tree::load(&[a], &resolve_local, &resources::registry()).unwrap_err();
        let text: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            text.iter()
                .any(|m| m.contains("cycle") && m.contains("a.yaml")),
            "{text:?}"
        );
        assert!(text.iter().any(|m| m.contains("missing.yaml")), "{text:?}");
        assert!(
            text.iter().any(|m| m.contains("host b is already")),
            "{text:?}"
        );
    }

    #[test]
    fn pack_puts_the_subtree_in_the_run_dir() {
        let d = tempfile::tempdir().unwrap();
        let a = graph(d.path(), "a.yaml", "a", &["l.yaml"]);
        graph(d.path(), "l.yaml", "l", &["x/l.yaml"]);
        graph(d.path(), "x/l.yaml", "m", &[]);
        let registry = resources::registry();
        let t = Tree::load(&[a], &resolve_local, &registry).unwrap();
        let creds: Creds = t
            .hosts()
            .into_iter()
            .map(|h| (h.clone(), Credentials::new(h, "s").unwrap()))
            .collect();
        let settings = Settings {
            cconns: 2,
            caching: true,
            tmp_prefix: "/tmp".into(),
            accept_new_host_keys: false,
            grace_secs: 5,
        };
        let (targets, router) = pack(&t, &t.top, &creds, &settings, &registry).unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(router.files().len(), 3);
        let names: Vec<&str> = targets[0].1.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                CRED_FILE,
                "sub-1-l.yaml",
                "sub-1.cred",
                "sub-2-l.yaml",
                "sub-2.cred",
                MANIFEST
            ]
        );
        let m: Manifest = serde_json::from_slice(&targets[0].1.files[5].bytes).unwrap();
        assert_eq!(m.files[0].parent, "a.yaml");
        assert_eq!(m.files[1].parent, "sub-1-l.yaml");
        assert_eq!(m.files[1].entry, "x/l.yaml");
        assert_eq!(targets[0].1.files[0].bytes, b"user=a\npassword=s\n");
        assert_eq!(targets[0].1.files[4].bytes, b"user=m\npassword=s\n");
    }

    #[test]
    fn reports_only_about_the_reporters_subtree() {
        let d = tempfile::tempdir().unwrap();
        let a = graph(d.path(), "a.yaml", "a", &["l.yaml"]);
        let b = graph(d.path(), "b.yaml", "b", &[]);
        graph(d.path(), "l.yaml", "l", &[]);
        let t = Tree::load(&[a, b], &resolve_local, &resources::registry()).unwrap();
        let r = Event::HostState {
            host: "l".into(),
            state: remote::HostState::Running,
            via: None,
        };
        assert_eq!(parse_report(&t, "a", &report_line(&r)), Some(r.clone()));
        assert_eq!(parse_report(&t, "b", &report_line(&r)), None);
        assert_eq!(parse_report(&t, "l", &report_line(&r)), None);
        assert_eq!(parse_report(&t, "a", "mgmt-tree: {bad"), None);
        let unknown = r#"mgmt-tree: {"event":"host_state","host":"l","state":"dancing"}"#;
        assert_eq!(parse_report(&t, "a", unknown), None);
    }
}
