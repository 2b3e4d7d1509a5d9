//! Automatic grouping (mgmt's `autogroup`): vertices a kind says can work together (a `pkg`
//! group is one apt transaction) are merged into one vertex before the engine runs them.
//!
//! The rule, as in mgmt: two vertices may be merged when both have `meta.autogroup`, their
//! kind offers the same [`Resource::group_key`], their `meta` is equal, and neither can reach
//! the other through the graph *as grouped so far* (a merge of mutually unreachable vertices of
//! a DAG cannot close a cycle: a cycle through the merged vertex would be a path between the
//! two). Edges follow their ends to the group: duplicates become one edge (a notify edge if any
//! of them was), and an edge inside a group is dropped (the reachability rule means there never
//! is one). Everything is in a stable order, so equal graphs give equal groups and a graph swap
//! keeps an unchanged group running.
//!
//! Pure: no IO, no async. It never changes the resources themselves: a group is a new vertex
//! built by the kind ([`Resource::group`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::{Edge, Meta, ResGraph, ResId, Resource};

/// The name of a group vertex: its members' names in order, joined by `,` (`pkg[a,b,c]`), so
/// that every report about the group says what it covers; beyond [`GROUP_NAMES_SHOWN`]
/// members, the first of them and how many more (`pkg[a,b,c,d,+16]`), so that a group of two
/// hundred packages does not make every log line two kilobytes long. Members are disjoint, so
/// two groups never share a name; a group whose id would be another vertex's is not formed
/// (see [`autogroup`]).
pub fn group_name<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.len() <= GROUP_NAMES_SHOWN + 1 {
        return names.join(",");
    }
    let shown = names[..GROUP_NAMES_SHOWN].join(",");
    format!("{shown},+{}", names.len() - GROUP_NAMES_SHOWN)
}

/// How many members a group's name lists when it does not list them all.
pub const GROUP_NAMES_SHOWN: usize = 4;

/// Whether any two vertices could be grouped at all: a cheap test before [`autogroup`].
pub fn may_group<'a>(vertices: impl IntoIterator<Item = &'a Arc<dyn Resource>>) -> bool {
    vertices
        .into_iter()
        .filter(|r| r.meta().autogroup && r.group_key().is_some())
        .nth(1)
        .is_some()
}

/// The grouped graph (see the module docs). Members are taken in the order of their ids, so
/// the result depends on the graph's content only, not on the order of `g.vertices`. A group
/// vertex takes the place of its first member in `vertices`; vertices outside groups and their
/// order are untouched.
///
/// Expects what the engine has checked first: unique ids and an acyclic graph. Edges naming no
/// vertex are kept as they are.
pub fn autogroup(g: ResGraph) -> ResGraph {
    if !may_group(&g.vertices) {
        return g;
    }
    let n = g.vertices.len();
    let ids: Vec<ResId> = g.vertices.iter().map(|r| r.id()).collect();
    let index: HashMap<&ResId, usize> = ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let mut out = vec![Vec::new(); n];
    let mut inn = vec![Vec::new(); n];
    for e in &g.edges {
        if let (Some(&f), Some(&t)) = (index.get(&e.from), index.get(&e.to)) {
            out[f].push(t);
            inn[t].push(f);
        }
    }

    let buckets = buckets(&g.vertices, &ids);
    let mut quotient = Quotient {
        node_of: (0..n).collect(),
        members: (0..n).map(|i| vec![i]).collect(),
        out: &out,
        inn: &inn,
    };
    for bucket in &buckets {
        // The groups of this bucket so far, by their node.
        let mut groups: Vec<usize> = Vec::new();
        for &v in bucket {
            let blocked = quotient.related(v);
            match groups.iter().find(|&&gr| !blocked.contains(&gr)) {
                Some(&gr) => quotient.merge(v, gr),
                None => groups.push(v),
            }
        }
    }

    // Build each group the kind's way; a refused or colliding group stays apart.
    let mut group_of: HashMap<usize, Arc<dyn Resource>> = HashMap::new();
    let mut taken: HashSet<ResId> = ids.iter().cloned().collect();
    for (node, members) in quotient.members.iter().enumerate() {
        if members.len() < 2 {
            continue;
        }
        let rs: Vec<Arc<dyn Resource>> = members.iter().map(|&m| g.vertices[m].clone()).collect();
        let Some(group) = rs[0].group(&rs) else {
            continue;
        };
        let gid = group.id();
        for &m in members {
            taken.remove(&ids[m]);
        }
        if group.kind() != rs[0].kind() || !taken.insert(gid.clone()) {
            for &m in members {
                taken.insert(ids[m].clone());
            }
            continue;
        }
        group_of.insert(node, group);
    }
    if group_of.is_empty() {
        return g;
    }

    // The id each vertex now answers to.
    let new_id = |i: usize| -> ResId {
        match group_of.get(&quotient.node_of[i]) {
            Some(group) => group.id(),
            None => ids[i].clone(),
        }
    };
    let mut vertices = Vec::with_capacity(n);
    for (i, r) in g.vertices.iter().enumerate() {
        let node = quotient.node_of[i];
        match group_of.get(&node) {
            // The first member (in graph order) stands for the group.
            Some(group) => {
                if quotient.members[node].iter().min() == Some(&i) {
                    vertices.push(group.clone());
                }
            }
            None => vertices.push(r.clone()),
        }
    }
    let mut edges: Vec<Edge> = Vec::with_capacity(g.edges.len());
    let mut seen: HashMap<(ResId, ResId), usize> = HashMap::new();
    for e in g.edges {
        let (from, to) = match (index.get(&e.from), index.get(&e.to)) {
            (Some(&f), Some(&t)) => (new_id(f), new_id(t)),
            _ => (e.from, e.to),
        };
        if from == to {
            continue;
        }
        match seen.get(&(from.clone(), to.clone())) {
            Some(&at) => edges[at].notify |= e.notify,
            None => {
                seen.insert((from.clone(), to.clone()), edges.len());
                edges.push(Edge {
                    from,
                    to,
                    notify: e.notify,
                });
            }
        }
    }
    ResGraph { vertices, edges }
}

/// The candidates, in sets that may be merged among themselves (same kind, key and meta), each
/// in id order; the sets in the order of their first member's id.
fn buckets(vertices: &[Arc<dyn Resource>], ids: &[ResId]) -> Vec<Vec<usize>> {
    let mut candidates: Vec<(usize, String)> = vertices
        .iter()
        .enumerate()
        .filter(|(_, r)| r.meta().autogroup)
        .filter_map(|(i, r)| r.group_key().map(|key| (i, key)))
        .collect();
    candidates.sort_by(|a, b| ids[a.0].cmp(&ids[b.0]));
    // Meta has floats (no Hash): equal metas are found by comparison within a kind and key.
    let mut by_key: HashMap<(&str, String), Vec<usize>> = HashMap::new();
    let mut buckets: Vec<(&Meta, Vec<usize>)> = Vec::new();
    for (i, key) in candidates {
        let r = &vertices[i];
        let same = by_key.entry((r.kind(), key)).or_default();
        match same.iter().find(|&&b| buckets[b].0 == r.meta()) {
            Some(&b) => buckets[b].1.push(i),
            None => {
                same.push(buckets.len());
                buckets.push((r.meta(), vec![i]));
            }
        }
    }
    buckets
        .into_iter()
        .map(|(_, members)| members)
        .filter(|members| members.len() > 1)
        .collect()
}

/// The graph with each group contracted to one node (a node is named by its first vertex).
struct Quotient<'a> {
    node_of: Vec<usize>,
    /// Each node's vertices (empty for a vertex merged into another node).
    members: Vec<Vec<usize>>,
    out: &'a [Vec<usize>],
    inn: &'a [Vec<usize>],
}

impl Quotient<'_> {
    /// The nodes reachable from `v`'s node, or from which it is reachable, itself included.
    fn related(&self, v: usize) -> HashSet<usize> {
        let start = self.node_of[v];
        let mut related = HashSet::from([start]);
        for adjacency in [self.out, self.inn] {
            let mut seen = HashSet::from([start]);
            let mut stack = vec![start];
            while let Some(node) = stack.pop() {
                for &m in &self.members[node] {
                    for &w in &adjacency[m] {
                        let next = self.node_of[w];
                        if seen.insert(next) {
                            related.insert(next);
                            stack.push(next);
                        }
                    }
                }
            }
        }
        related
    }

    /// Moves vertex `v` (still a node of its own) into `node`.
    fn merge(&mut self, v: usize, node: usize) {
        debug_assert_eq!(self.members[v], [v]);
        self.members[v].clear();
        self.members[node].push(v);
        self.node_of[v] = node;
    }
}

#[cfg(test)]
mod tests;
