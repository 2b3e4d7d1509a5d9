//! The YAML front end: text of an mgmt yamlgraph file in, a [`GraphSpec`] (resources built
//! through a [`resource::Registry`], edges, collect rules) or every problem found out, each
//! with file, line and column.
//!
//! Pure: it never reads files, talks to a store or runs anything; [`parse_file`] is the one
//! thin convenience that reads the text first. Exported (`@@`) resources are built and marked
//! but never placed in the local graph: publishing them is the caller's business.

mod check;
mod diag;
mod yaml;

use std::path::Path;
use std::sync::Arc;

pub use diag::{Diagnostic, Diagnostics};
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
    /// In file order. Exported resources are here too, with `exported` set.
    pub resources: Vec<ResourceSpec>,
    pub edges: Vec<EdgeSpec>,
    pub collect: Vec<CollectSpec>,
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectSpec {
    pub kind: String,
    pub pattern: String,
    /// `notify: [{kind, name}]`: local (non-exported) resources that every resource collected
    /// by this rule gets a notify edge to, so they refresh whenever one of them changes.
    /// Checked to exist in the graph; adding the edges is the caller's business.
    pub notify: Vec<ResId>,
    pub span: Span,
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

/// Reads `path` and parses it, naming the file as given in diagnostics.
pub fn parse_file(
    path: impl AsRef<Path>,
    registry: &resource::Registry,
) -> Result<GraphSpec, Diagnostics> {
    let path = path.as_ref();
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text, registry),
        Err(e) => {
            let message = format!("cannot read `{file}`: {e}");
            Err(Diagnostics(vec![Diagnostic::whole_file(file, message)]))
        }
    }
}
