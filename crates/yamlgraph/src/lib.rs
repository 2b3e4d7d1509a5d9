//! The YAML front end: text of an mgmt yamlgraph file in, a [`GraphSpec`] (resources built
//! through a [`resource::Registry`], edges, collect rules) or every problem found out, each
//! with file, line and column.
//!
//! Pure: it never reads files, talks to a store or runs anything, except [`read_file`], the
//! one way every caller reads a graph file (size limit, UTF-8 and a version that did not
//! change while it was read, with positions), and [`parse_file`], which reads with it first.
//! Exported (`@@`) resources are built and marked
//! but never placed in the local graph: publishing them is the caller's business.

mod check;
mod diag;
mod read;
mod yaml;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

pub use diag::{Diagnostic, Diagnostics};
pub use read::{MAX_FILE_BYTES, read_file};
use resource::{Edge, ResGraph, ResId, Resource};

/// A 1-based position in the graph file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

/// Everything one graph file says.
#[derive(Clone, Debug)]
pub struct GraphSpec {
    pub graph: String,
    pub comment: Option<String>,
    /// `remote: ssh://user@host:port`, read only by remote runs.
    pub remote: Option<String>,
    /// Further graph files this host runs as remotes of its own (hierarchical remote runs),
    /// as written (paths relative to the graph file are the caller's to resolve).
    pub remotes: Vec<String>,
    /// `sudo: true|false`: whether a remote run starts this graph's child as root through sudo
    /// on its host (unset: as `mgmt run --sudo` says). Read only by remote runs.
    pub sudo: Option<bool>,
    /// In file order. Exported resources are here too, with `exported` set.
    pub resources: Vec<ResourceSpec>,
    pub edges: Vec<EdgeSpec>,
    pub collect: Vec<CollectSpec>,
    /// What loads but is ignored, with its position (rendered with `Diagnostic::warning`).
    pub warnings: Vec<Diagnostic>,
}

#[derive(Clone, Debug)]
pub struct ResourceSpec {
    pub resource: Arc<dyn Resource>,
    /// The name was written with `@@`: publish it, do not apply it here. The built resource's
    /// name has no `@@`.
    pub exported: bool,
    /// Where the resource's name is written.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeSpec {
    /// Empty when the edge has no `name`.
    pub name: String,
    pub from: ResId,
    pub to: ResId,
    pub notify: bool,
    pub span: Span,
}

/// `collect: [{kind: file, pattern: /tmp/}]`: which exported resources this host takes in.
/// The pattern's meaning belongs to the kind (for files: the directory collected files land in).
///
/// A collected resource is untrusted input: any host with store credentials can export one.
/// The default policy that limits what an export may carry is the cli's (its collect module);
/// `allow` widens it for this rule only. Naming a kind is itself a grant: a rule for `exec`
/// lets every exporting host run commands here, as this process's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectSpec {
    pub kind: String,
    pub pattern: String,
    /// `notify: [{kind, name}]`: local (non-exported) resources that every resource collected
    /// by this rule gets a notify edge to, so they refresh whenever one of them changes.
    /// Checked to exist in the graph; adding the edges is the caller's business.
    pub notify: Vec<ResId>,
    /// `allow: [mode, owner]`: what exports collected by this rule may carry beyond the default
    /// policy. Checked: every value is known and applies to the rule's kind.
    pub allow: BTreeSet<Allow>,
    pub span: Span,
}

/// One value of a collect rule's `allow:`. Each names what it lets through; all but `meta`
/// apply to `file` rules only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Allow {
    /// With an empty `pattern`: a collected file keeps the path its exporter gave it, anywhere
    /// on this host. (With a pattern, files always land in its directory.)
    Path,
    /// Any `mode`, setuid, setgid, sticky and world-writable bits included.
    Mode,
    /// An `owner` other than this host's default (the user mgmt runs as).
    Owner,
    /// A `group` other than this host's default.
    Group,
    /// `source`: a copy of a file (or with `recurse`, a tree) of this host, chosen by the exporter.
    Source,
    /// `fragments`: content built from files of this host, chosen by the exporter.
    Fragments,
    /// `force`: replacing whatever is at the path (a directory tree included), removing a tree.
    Force,
    /// Any `meta`: named semaphores shared with this graph's resources, fast endless retries,
    /// any `poll` and `delay`.
    Meta,
}

impl Allow {
    pub const ALL: [Allow; 8] = [
        Allow::Path,
        Allow::Mode,
        Allow::Owner,
        Allow::Group,
        Allow::Source,
        Allow::Fragments,
        Allow::Force,
        Allow::Meta,
    ];

    /// As written in `allow:`.
    pub fn name(self) -> &'static str {
        match self {
            Allow::Path => "path",
            Allow::Mode => "mode",
            Allow::Owner => "owner",
            Allow::Group => "group",
            Allow::Source => "source",
            Allow::Fragments => "fragments",
            Allow::Force => "force",
            Allow::Meta => "meta",
        }
    }

    /// The value written `name` (exactly, as every other field name), if there is one.
    pub fn from_name(name: &str) -> Option<Allow> {
        Allow::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether only a `file` rule can name it.
    pub fn file_only(self) -> bool {
        self != Allow::Meta
    }

    /// Whether a collect rule of `kind` can name it: `meta` any kind; `path` also
    /// `authorized_key` (the export then chooses the file its key is written to); the rest
    /// `file` only.
    pub fn fits(self, kind: &str) -> bool {
        kind == "file" || !self.file_only() || (kind == "authorized_key" && self == Allow::Path)
    }
}

impl std::fmt::Display for Allow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl GraphSpec {
    /// The graph this host applies: the non-exported resources and the edges between them
    /// (edges can only join non-exported resources; `parse` rejects any other).
    pub fn local_graph(&self) -> ResGraph {
        ResGraph {
            vertices: self
                .resources
                .iter()
                .filter(|r| !r.exported)
                .map(|r| Arc::clone(&r.resource))
                .collect(),
            edges: self
                .edges
                .iter()
                .map(|e| Edge {
                    from: e.from.clone(),
                    to: e.to.clone(),
                    notify: e.notify,
                })
                .collect(),
        }
    }

    /// The resources to publish to the store (names without `@@`).
    pub fn exported(&self) -> impl Iterator<Item = &Arc<dyn Resource>> {
        self.resources
            .iter()
            .filter(|r| r.exported)
            .map(|r| &r.resource)
    }
}

/// Parses one graph file. `file` is the name used in diagnostics. Every problem found is
/// reported at once; a YAML syntax error stops at the first one, since nothing after it can
/// be trusted.
pub fn parse(
    file: &str,
    text: &str,
    registry: &resource::Registry,
) -> Result<GraphSpec, Diagnostics> {
    check::parse(file, text, registry)
}

/// Reads `path` with [`read_file`] and parses it, naming the file as given in diagnostics.
pub fn parse_file(
    path: impl AsRef<Path>,
    registry: &resource::Registry,
) -> Result<GraphSpec, Diagnostics> {
    let path = path.as_ref();
    let text = read_file(path)?;
    parse(&path.display().to_string(), &text, registry)
}
