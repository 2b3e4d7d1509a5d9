//! The remote tree: a remote graph's `remotes:` names further graph files (relative to it)
//! that the host it runs on runs as remotes of its own. What the initiator and the
//! intermediates share:
//!
//! - [`Tree`]: every graph file of the run, read and checked up front (a bad file anywhere, a
//!   cycle of files or a host named twice stops the run before any host is touched);
//! - [`pack`]: one direct host's target, its whole subtree packed into its run dir as extra
//!   files (graphs, per-host store credentials, the [`Manifest`]), and the [`Router`] that
//!   copies live edits of any file of the tree down the right branch (or says a graph moved);
//! - [`report_line`]/[`parse_report`]: the lines (`mgmt-tree: {event}`) by which an
//!   intermediate reports its subtree up, accepted only for hosts of the reporting host's own
//!   subtree.
//!
//! It reads graph files (the tree, and the router on a change) and nothing else: no socket,
//! no process, no clock. It never puts a secret in a log, and never trusts a report about a
//! host outside the reporter's subtree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use remote::{
    ChildExit, Credentials, ExtraFile, HostOutcome, HostReport, RemoteEvent, RemoteUrl, Target,
    TargetExtras,
};
use resource::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

use crate::Event;

/// The name of a child's store credentials file in its run dir (named on its command line).
pub const CRED_FILE: &str = "store.cred";

/// Reads a graph file (`yamlgraph::read_file`: the size limit, UTF-8 and a complete version,
/// as every path reads one). A file that cannot be read at all is one diagnostic without a
/// position (`Diagnostics::unreadable`).
fn read_graph(path: &Path) -> Result<String, yamlgraph::Diagnostics> {
    yamlgraph::read_file(path)
}

/// Parses a graph file's text; every diagnostic at once on failure.
fn parse_graph(
    path: &Path,
    text: &str,
    registry: &Registry,
) -> Result<yamlgraph::GraphSpec, yamlgraph::Diagnostics> {
    yamlgraph::parse(&path.display().to_string(), text, registry)
}

/// Diagnostics as the event stream carries them.
pub fn diagnostics(d: &yamlgraph::Diagnostics) -> Vec<crate::Diagnostic> {
    d.0.iter().map(crate::Diagnostic::from).collect()
}

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

/// A problem found while reading the tree: the file, a rendered message for people, and the
/// same as diagnostics (file, line, column) for the event stream.
#[derive(Debug)]
pub struct Problem {
    pub file: PathBuf,
    pub message: String,
    pub diagnostics: Vec<crate::Diagnostic>,
}

impl Problem {
    /// A problem with no position in the file.
    fn whole(file: &Path, message: String) -> Problem {
        Problem {
            file: file.to_path_buf(),
            diagnostics: vec![crate::Diagnostic::whole_file(
                file.display().to_string(),
                message.clone(),
            )],
            message,
        }
    }
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
                problems.push(Problem::whole(
                    &n.file,
                    format!(
                        "host {} is already the target of {}: a host runs one graph per run",
                        n.hostname,
                        first.display()
                    ),
                ));
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
            problems.push(Problem::whole(
                &file,
                format!("cycle of `remotes:` files: {}", names.join(" -> ")),
            ));
            return None;
        }
        let mut problem = |message: String| problems.push(Problem::whole(&file, message));
        let text = match read_graph(&file) {
            Ok(t) => t,
            Err(diags) => {
                match diags.unreadable() {
                    Some(message) => problem(message.to_string()),
                    None => problems.push(Problem {
                        file: file.clone(),
                        message: diags.to_string(),
                        diagnostics: diagnostics(&diags),
                    }),
                }
                return None;
            }
        };
        let spec = match parse_graph(&file, &text, registry) {
            Ok(spec) => spec,
            Err(diags) => {
                problems.push(Problem {
                    file: file.clone(),
                    message: diags.to_string(),
                    diagnostics: diagnostics(&diags),
                });
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
                Err(message) => problems.push(Problem::whole(
                    &file,
                    format!("{}: `remotes:` entry {e:?}: {message}", file.display()),
                )),
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

/// The last part of a path, as text (a graph's name in a run dir).
pub fn file_name(p: &Path) -> String {
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
        /// Rendered, for people.
        diags: String,
        /// The same, for the event stream.
        errors: Vec<crate::Diagnostic>,
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
            let text = match read_graph(&w.file) {
                Ok(text) => text,
                // Gone or unreadable for now: its next version is seen when it comes.
                Err(d) if d.unreadable().is_some() => continue,
                // Bytes that are no graph text (not UTF-8, too large): reported like a version
                // that does not parse; the host keeps the last one.
                Err(diags) => {
                    notices.push(Notice::Invalid {
                        host: w.host.clone(),
                        file: w.file.clone(),
                        diags: diags.to_string(),
                        errors: diagnostics(&diags),
                    });
                    continue;
                }
            };
            if text == w.last {
                continue;
            }
            let spec = match parse_graph(&w.file, &text, registry) {
                Ok(spec) => spec,
                Err(diags) => {
                    w.last = text;
                    notices.push(Notice::Invalid {
                        host: w.host.clone(),
                        file: w.file.clone(),
                        diags: diags.to_string(),
                        errors: diagnostics(&diags),
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
) -> Result<(Vec<(Target, TargetExtras)>, Router), String> {
    let mut targets = Vec::new();
    let mut router = Router::default();
    let remotes_of = |text: &str, file: &Path| {
        parse_graph(file, text, registry)
            .map(|s| s.remotes)
            .unwrap_or_default()
    };
    for &c in direct {
        let node = &tree.nodes[c];
        let cred = creds
            .get(&node.hostname)
            .ok_or_else(|| format!("no store credentials for host {}", node.hostname))?;
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
                    .ok_or_else(|| format!("no store credentials for host {}", dn.hostname))?;
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
                bytes: serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?,
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

/// A line by which an intermediate reports on a host of its subtree: the host's event itself
/// (`crate::Event`, the `--json` stream's type), behind [`REPORT_PREFIX`].
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph file `name` in `dir` for `host`, with `remotes:` when given.
    fn graph(dir: &Path, name: &str, host: &str, remotes: &[&str]) -> PathBuf {
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

    /// Bytes that are no graph text stop the run at their position, in a file of the tree and
    /// in a live edit alike (which is then not copied).
    #[tokio::test]
    async fn non_utf8_and_oversize_files_are_named_at_their_position() {
        let d = tempfile::tempdir().unwrap();
        let a = graph(d.path(), "a.yaml", "a", &["l.yaml"]);
        let l = graph(d.path(), "l.yaml", "l", &[]);
        let good = std::fs::read(&l).unwrap();
        let mut bad = good.clone();
        bad.extend(b"comment: caf\xe9\n");
        std::fs::write(&l, &bad).unwrap();
        let registry = resources::registry();
        let problems =
            Tree::load(std::slice::from_ref(&a), &resolve_local, &registry).expect_err("not UTF-8");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let at = (
            problems[0].diagnostics[0].line,
            problems[0].diagnostics[0].column,
        );
        assert_eq!(at, (4, 13), "{problems:?}");
        assert!(
            problems[0].message.contains("l.yaml:4:13"),
            "{}",
            problems[0].message
        );

        std::fs::write(&l, &good).unwrap();
        let t = Tree::load(&[a], &resolve_local, &registry).unwrap();
        let creds: Creds = t
            .hosts()
            .into_iter()
            .map(|h| (h.clone(), Credentials::new(h, "s").unwrap()))
            .collect();
        let settings = Settings {
            cconns: 1,
            caching: true,
            tmp_prefix: "/tmp".into(),
            accept_new_host_keys: false,
            grace_secs: 5,
        };
        let (_targets, mut router) = pack(&t, &t.top, &creds, &settings, &registry).unwrap();
        let mut huge = good.clone();
        huge.resize(yamlgraph::MAX_FILE_BYTES + 1, b'\n');
        // The limit's byte is on the line after the graph's three and every newline before it.
        let limit_line = 4 + (yamlgraph::MAX_FILE_BYTES - good.len()) as u32;
        for (bytes, at) in [(bad, (4, 13)), (huge, (limit_line, 1))] {
            std::fs::write(&l, &bytes).unwrap();
            let notices = router.changed(&registry).await;
            let [Notice::Invalid { host, errors, .. }] = notices.as_slice() else {
                panic!("one invalid version");
            };
            assert_eq!(host, "l");
            assert_eq!((errors[0].line, errors[0].column), at, "{errors:?}");
        }
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
