//! A small directed graph keyed by ordered values: vertices, edges, topological order, cycle
//! reports and set differences between two versions of a graph.
//!
//! Pure: no IO, no async, no knowledge of resources. Everything is deterministic: vertices,
//! edges, parents and children iterate in the order they were added, a topological order
//! breaks ties by vertex order, and a cycle report does not depend on insertion order, so
//! error messages and orders are stable across runs. Vertices are stored once and referred to
//! by index (a graph of 10,000 files built with ordered maps of keys spent most of its time
//! comparing and cloning keys).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

/// A directed graph with vertices of type `K`. Parallel edges collapse into one.
#[derive(Clone, Debug)]
pub struct Dag<K: Ord + Clone + Hash> {
    keys: Vec<K>,
    index: HashMap<K, usize>,
    children: Vec<Vec<usize>>,
    parents: Vec<Vec<usize>>,
    edges: HashSet<(usize, usize)>,
}

impl<K: Ord + Clone + Hash> Default for Dag<K> {
    fn default() -> Self {
        Dag {
            keys: Vec::new(),
            index: HashMap::new(),
            children: Vec::new(),
            parents: Vec::new(),
            edges: HashSet::new(),
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

impl<K: Ord + Clone + Hash> Dag<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vertex; returns false when it was already there.
    pub fn add_vertex(&mut self, k: K) -> bool {
        match self.index.entry(k) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                self.keys.push(slot.key().clone());
                slot.insert(self.keys.len() - 1);
                self.children.push(Vec::new());
                self.parents.push(Vec::new());
                true
            }
        }
    }

    pub fn contains(&self, k: &K) -> bool {
        self.index.contains_key(k)
    }

    /// Adds `from -> to`; both vertices must exist. Self-loops are accepted here and reported
    /// as a cycle by `topo_order`.
    pub fn add_edge(&mut self, from: &K, to: &K) -> Result<(), MissingVertex<K>>
    where
        K: fmt::Display + fmt::Debug,
    {
        let mut ends = [0; 2];
        for (end, v) in ends.iter_mut().zip([from, to]) {
            *end = *self
                .index
                .get(v)
                .ok_or_else(|| MissingVertex { vertex: v.clone() })?;
        }
        let [f, t] = ends;
        if self.edges.insert((f, t)) {
            self.children[f].push(t);
            self.parents[t].push(f);
        }
        Ok(())
    }

    pub fn vertices(&self) -> impl Iterator<Item = &K> {
        self.keys.iter()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn edges(&self) -> impl Iterator<Item = (&K, &K)> {
        self.children
            .iter()
            .enumerate()
            .flat_map(move |(f, tos)| tos.iter().map(move |t| (&self.keys[f], &self.keys[*t])))
    }

    /// Direct parents (vertices with an edge into `k`); empty for an unknown vertex.
    pub fn parents(&self, k: &K) -> impl Iterator<Item = &K> {
        self.neighbours(&self.parents, k)
    }

    /// Direct children (vertices `k` has an edge to); empty for an unknown vertex.
    pub fn children(&self, k: &K) -> impl Iterator<Item = &K> {
        self.neighbours(&self.children, k)
    }

    fn neighbours<'a>(&'a self, of: &'a [Vec<usize>], k: &K) -> impl Iterator<Item = &'a K> {
        self.index
            .get(k)
            .into_iter()
            .flat_map(move |i| of[*i].iter().map(|n| &self.keys[*n]))
    }

    /// A topological order (parents before children; ties broken by vertex order), or the
    /// first cycle found.
    pub fn topo_order(&self) -> Result<Vec<K>, Cycle<K>> {
        // Rank of each vertex in key order, so the ready set is a heap of integers.
        let mut by_key: Vec<usize> = (0..self.len()).collect();
        by_key.sort_unstable_by(|a, b| self.keys[*a].cmp(&self.keys[*b]));
        let mut rank = vec![0; self.len()];
        for (r, i) in by_key.iter().enumerate() {
            rank[*i] = r;
        }
        let mut indegree: Vec<usize> = self.parents.iter().map(Vec::len).collect();
        let mut ready: BinaryHeap<Reverse<usize>> = (0..self.len())
            .filter(|i| indegree[*i] == 0)
            .map(|i| Reverse(rank[i]))
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(Reverse(r)) = ready.pop() {
            let k = by_key[r];
            order.push(self.keys[k].clone());
            for c in &self.children[k] {
                indegree[*c] -= 1;
                if indegree[*c] == 0 {
                    ready.push(Reverse(rank[*c]));
                }
            }
        }
        if order.len() == self.len() {
            return Ok(order);
        }
        Err(self.find_cycle_within(&indegree))
    }

    /// Whether the graph has no cycle: what `topo_order` checks, without ordering anything.
    pub fn acyclic(&self) -> Result<(), Cycle<K>> {
        let mut indegree: Vec<usize> = self.parents.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..self.len()).filter(|i| indegree[*i] == 0).collect();
        let mut done = 0;
        while let Some(k) = ready.pop() {
            done += 1;
            for c in &self.children[k] {
                indegree[*c] -= 1;
                if indegree[*c] == 0 {
                    ready.push(*c);
                }
            }
        }
        if done == self.len() {
            return Ok(());
        }
        Err(self.find_cycle_within(&indegree))
    }

    /// The vertices Kahn's algorithm leaves behind (indegree still > 0; the same set whatever
    /// order it ran in) each have a parent among them, so walking parents backwards from the
    /// smallest, always to the smallest such parent, must revisit a vertex: that loop is a
    /// cycle.
    fn find_cycle_within(&self, indegree: &[usize]) -> Cycle<K> {
        let left = |i: &usize| indegree[*i] > 0;
        let smallest = |it: &mut dyn Iterator<Item = usize>| {
            it.min_by(|a, b| self.keys[*a].cmp(&self.keys[*b]))
        };
        let start =
            smallest(&mut (0..self.len()).filter(left)).expect("a cycle leaves vertices behind");
        let mut path: Vec<usize> = vec![start];
        let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
        loop {
            let cur = *path.last().expect("non-empty");
            let parent = smallest(&mut self.parents[cur].iter().copied().filter(left))
                .expect("leftover vertex has a leftover parent");
            if let Some(&i) = seen.get(&parent) {
                // path[i..] followed backwards through parents: reverse to get edge order.
                let mut cyc: Vec<K> = path[i..]
                    .iter()
                    .rev()
                    .map(|k| self.keys[*k].clone())
                    .collect();
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
    fn acyclic_reports_the_cycle_topo_order_reports_whatever_the_insertion_order() {
        let edges = [
            ("x", "a"),
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
            ("c", "z"),
            ("b", "a"),
        ];
        let mut reversed = edges;
        reversed.reverse();
        for edges in [edges, reversed] {
            let g = dag(&edges);
            let cyc = g.topo_order().unwrap_err();
            assert_eq!(cyc.vertices, vec!["a", "b"]);
            assert_eq!(g.acyclic().unwrap_err(), cyc);
        }
        assert_eq!(dag(&[("a", "b"), ("b", "c"), ("a", "c")]).acyclic(), Ok(()));
    }

    #[test]
    fn parallel_edges_collapse() {
        let g = dag(&[("a", "b"), ("a", "b")]);
        assert_eq!(g.edges().count(), 1);
        assert_eq!(g.parents(&"b").collect::<Vec<_>>(), vec![&"a"]);
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
