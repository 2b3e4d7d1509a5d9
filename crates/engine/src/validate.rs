//! Turns a `ResGraph` into a checked plan (dependency DAG with automatic edges, notify edges,
//! vertices by id, groupable vertices merged by `resource::autogroup`) or says precisely what
//! is wrong with it. Every graph the engine runs, local or collected, passes through here.
//!
//! Pure: no IO, no async, and it never touches the running engine, so a rejected graph cannot
//! have changed anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use graph::{Cycle, Dag};
use resource::{Edge, ResGraph, ResId, Resource, ResourceError};

/// Why a graph was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("resource {id} is defined more than once")]
    Duplicate { id: ResId },
    #[error("edge {from} -> {to} names {missing}, which is not in the graph")]
    UnknownVertex {
        from: ResId,
        to: ResId,
        missing: ResId,
    },
    #[error("invalid resource {id}: {source}")]
    Invalid {
        id: ResId,
        #[source]
        source: ResourceError,
    },
    #[error("the graph has a {0}")]
    Cycle(Cycle<ResId>),
    #[error("the engine is shut down")]
    Shutdown,
}

/// A graph that passed every check.
pub(crate) struct Plan {
    pub dag: Dag<ResId>,
    pub notify: BTreeSet<(ResId, ResId)>,
    pub vertices: BTreeMap<ResId, Arc<dyn Resource>>,
}

#[expect(
    clippy::result_large_err,
    reason = "called once per swap; the ids are the useful context"
)]
pub(crate) fn plan(g: ResGraph) -> Result<Plan, EngineError> {
    let mut dag = Dag::new();
    let mut vertices = BTreeMap::new();
    for r in g.vertices {
        let id = r.id();
        r.validate().map_err(|source| EngineError::Invalid {
            id: id.clone(),
            source,
        })?;
        if vertices.insert(id.clone(), r).is_some() {
            return Err(EngineError::Duplicate { id });
        }
        dag.add_vertex(id);
    }

    let mut notify = BTreeSet::new();
    for e in g.edges {
        dag.add_edge(&e.from, &e.to)
            .map_err(|m| EngineError::UnknownVertex {
                from: e.from.clone(),
                to: e.to.clone(),
                missing: m.vertex,
            })?;
        if e.notify {
            notify.insert((e.from, e.to));
        }
    }

    // Automatic edges (the rule is `resource::auto_edges`, shared with yamlgraph's checks).
    let refs: Vec<(&ResId, &dyn Resource)> = vertices.iter().map(|(id, r)| (id, &**r)).collect();
    for (parent, child) in resource::auto_edges(&refs) {
        dag.add_edge(parent, child).expect("both ends are vertices");
    }

    dag.acyclic().map_err(EngineError::Cycle)?;
    if !resource::may_group(vertices.values()) {
        return Ok(Plan {
            dag,
            notify,
            vertices,
        });
    }
    group(dag, notify, vertices)
}

/// Automatic grouping (`resource::autogroup`), on the checked graph with its automatic edges,
/// so that reachability through them counts and errors above name the graph's own resources.
#[expect(
    clippy::result_large_err,
    reason = "called once per swap; the ids are the useful context"
)]
fn group(
    dag: Dag<ResId>,
    notify: BTreeSet<(ResId, ResId)>,
    vertices: BTreeMap<ResId, Arc<dyn Resource>>,
) -> Result<Plan, EngineError> {
    let edges = dag
        .edges()
        .map(|(from, to)| Edge {
            notify: notify.contains(&(from.clone(), to.clone())),
            from: from.clone(),
            to: to.clone(),
        })
        .collect();
    let before = vertices.len();
    let grouped = resource::autogroup(ResGraph {
        vertices: vertices.into_values().collect(),
        edges,
    });
    tracing::debug!(before, after = grouped.vertices.len(), "grouped");
    let mut dag = Dag::new();
    let mut vertices = BTreeMap::new();
    for r in grouped.vertices {
        let id = r.id();
        r.validate().map_err(|source| EngineError::Invalid {
            id: id.clone(),
            source,
        })?;
        dag.add_vertex(id.clone());
        if vertices.insert(id.clone(), r).is_some() {
            return Err(EngineError::Duplicate { id });
        }
    }
    let mut notify = BTreeSet::new();
    for e in grouped.edges {
        dag.add_edge(&e.from, &e.to)
            .map_err(|m| EngineError::UnknownVertex {
                from: e.from.clone(),
                to: e.to.clone(),
                missing: m.vertex,
            })?;
        if e.notify {
            notify.insert((e.from, e.to));
        }
    }
    // Cannot fail (grouping only merges mutually unreachable vertices); checked all the same.
    dag.acyclic().map_err(EngineError::Cycle)?;
    Ok(Plan {
        dag,
        notify,
        vertices,
    })
}
