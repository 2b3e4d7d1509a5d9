//! A small directed graph keyed by ordered values: vertices, edges, topological order, cycle
//! reports and set differences between two versions of a graph.
//!
//! Pure: no IO, no async, no knowledge of resources. Everything is deterministic (ordered maps),
//! so error messages and orders are stable across runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A directed graph with vertices of type `K`. Parallel edges collapse into one.
#[derive(Clone, Debug)]
pub struct Dag<K: Ord + Clone> {
    children: BTreeMap<K, BTreeSet<K>>,
    parents: BTreeMap<K, BTreeSet<K>>,
}

impl<K: Ord + Clone> Default for Dag<K> {
    fn default() -> Self {
        Dag {
            children: BTreeMap::new(),
            parents: BTreeMap::new(),
        }
    }
}

/// An edge named a vertex the graph does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("edge refers to a vertex that is not in the graph: {vertex}")]
pub struct MissingVertex<K: fmt::Display + fmt::Debug> {
    pub vertex: K,
}

/// The graph has a cycle; `vertices` walks it in edge order, starting at its smallest vertex,
/// without repeating the first vertex at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle<K> {
    pub vertices: Vec<K>,
}

impl<K: fmt::Display> fmt::Display for Cycle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cycle: ")?;
        for v in &self.vertices {
            write!(f, "{v} -> ")?;
        }
        match self.vertices.first() {
            Some(first) => write!(f, "{first}"),
            None => Ok(()),
        }
    }
}

impl<K: fmt::Display + fmt::Debug> std::error::Error for Cycle<K> {}

impl<K: Ord + Clone> Dag<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vertex; returns false when it was already there.
    pub fn add_vertex(&mut self, k: K) -> bool {
        if self.children.contains_key(&k) {
            return false;
        }
        self.children.insert(k.clone(), BTreeSet::new());
        self.parents.insert(k, BTreeSet::new());
        true
    }

    pub fn contains(&self, k: &K) -> bool {
        self.children.contains_key(k)
    }

    /// Adds `from -> to`; both vertices must exist. Self-loops are accepted here and reported
    /// as a cycle by `topo_order`.
    pub fn add_edge(&mut self, from: &K, to: &K) -> Result<(), MissingVertex<K>>
    where
        K: fmt::Display + fmt::Debug,
    {
        for v in [from, to] {
            if !self.contains(v) {
                return Err(MissingVertex { vertex: v.clone() });
            }
        }
        self.children
            .get_mut(from)
            .expect("checked")
            .insert(to.clone());
        self.parents
            .get_mut(to)
            .expect("checked")
            .insert(from.clone());
        Ok(())
    }

    pub fn vertices(&self) -> impl Iterator<Item = &K> {
        self.children.keys()
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    pub fn edges(&self) -> impl Iterator<Item = (&K, &K)> {
        self.children
            .iter()
            .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
    }

    /// Direct parents (vertices with an edge into `k`); empty for an unknown vertex.
    pub fn parents(&self, k: &K) -> impl Iterator<Item = &K> {
        self.parents.get(k).into_iter().flatten()
    }

    /// Direct children (vertices `k` has an edge to); empty for an unknown vertex.
    pub fn children(&self, k: &K) -> impl Iterator<Item = &K> {
        self.children.get(k).into_iter().flatten()
    }

    /// A topological order (parents before children; ties broken by vertex order), or the
    /// first cycle found.
    pub fn topo_order(&self) -> Result<Vec<K>, Cycle<K>> {
        let mut indegree: BTreeMap<&K, usize> =
            self.parents.iter().map(|(k, ps)| (k, ps.len())).collect();
        let mut ready: BTreeSet<&K> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(k, _)| *k)
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(k) = ready.pop_first() {
            order.push(k.clone());
            for c in self.children(k) {
                let d = indegree.get_mut(c).expect("every child is a vertex");
                *d -= 1;
                if *d == 0 {
                    ready.insert(c);
                }
            }
        }
        if order.len() == self.len() {
            return Ok(order);
        }
        let left: BTreeSet<&K> = indegree
            .into_iter()
            .filter(|(_, d)| *d > 0)
            .map(|(k, _)| k)
            .collect();
        Err(self.find_cycle_within(&left))
    }

    /// Every vertex in `left` has a parent in `left` (Kahn's leftovers), so walking parents
    /// backwards from any of them must revisit a vertex: that loop is a cycle.
    fn find_cycle_within(&self, left: &BTreeSet<&K>) -> Cycle<K> {
        let start = *left.first().expect("a cycle leaves vertices behind");
        let mut path: Vec<&K> = vec![start];
        let mut seen: BTreeMap<&K, usize> = BTreeMap::from([(start, 0)]);
        loop {
            let cur = *path.last().expect("non-empty");
            let parent = self
                .parents(cur)
                .find(|p| left.contains(p))
                .expect("leftover vertex has a leftover parent");
            if let Some(&i) = seen.get(parent) {
                // path[i..] followed backwards through parents: reverse to get edge order.
                let mut cyc: Vec<K> = path[i..].iter().rev().map(|k| (*k).clone()).collect();
                let min = cyc
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.cmp(b.1))
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                cyc.rotate_left(min);
                return Cycle { vertices: cyc };
            }
            seen.insert(parent, path.len());
            path.push(parent);
        }
    }

    /// All ancestors of `k` (not including `k`).
    pub fn ancestors(&self, k: &K) -> BTreeSet<K> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<&K> = self.parents(k).collect();
        while let Some(p) = stack.pop() {
            if out.insert(p.clone()) {
                stack.extend(self.parents(p));
            }
        }
        out
    }
}

/// How two sets of keys differ.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Diff<K> {
    pub added: Vec<K>,
    pub removed: Vec<K>,
    pub common: Vec<K>,
}

/// Compares two key sets (sorted output).
pub fn diff<K: Ord + Clone>(
    old: impl IntoIterator<Item = K>,
    new: impl IntoIterator<Item = K>,
) -> Diff<K> {
    let old: BTreeSet<K> = old.into_iter().collect();
    let new: BTreeSet<K> = new.into_iter().collect();
    Diff {
        added: new.difference(&old).cloned().collect(),
        removed: old.difference(&new).cloned().collect(),
        common: old.intersection(&new).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(edges: &[(&'static str, &'static str)]) -> Dag<&'static str> {
        let mut g = Dag::new();
        for (a, b) in edges {
            g.add_vertex(*a);
            g.add_vertex(*b);
            g.add_edge(a, b).unwrap();
        }
        g
    }

    #[test]
    fn topo_order_puts_parents_first() {
        let g = dag(&[("c", "d"), ("a", "b"), ("b", "d")]);
        assert_eq!(g.topo_order().unwrap(), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn cycle_is_named_in_edge_order() {
        let g = dag(&[("x", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "z")]);
        let cyc = g.topo_order().unwrap_err();
        assert_eq!(cyc.vertices, vec!["a", "b", "c"]);
        assert_eq!(cyc.to_string(), "cycle: a -> b -> c -> a");
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let g = dag(&[("a", "a")]);
        assert_eq!(g.topo_order().unwrap_err().vertices, vec!["a"]);
    }

    #[test]
    fn missing_vertex_is_an_error() {
        let mut g: Dag<&str> = Dag::new();
        g.add_vertex("a");
        assert_eq!(g.add_edge(&"a", &"b").unwrap_err().vertex, "b");
    }

    #[test]
    fn ancestors_are_transitive() {
        let g = dag(&[("a", "b"), ("b", "c"), ("x", "c")]);
        assert_eq!(
            g.ancestors(&"c").into_iter().collect::<Vec<_>>(),
            vec!["a", "b", "x"]
        );
    }

    #[test]
    fn diff_splits_keys() {
        let d = diff([1, 2, 3], [2, 3, 4]);
        assert_eq!(
            d,
            Diff {
                added: vec![4],
                removed: vec![1],
                common: vec![2, 3]
            }
        );
    }
}
