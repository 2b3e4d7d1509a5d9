use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::{ApplyCtx, Mode, Outcome, ResourceError, Retry};

/// A resource of kind `kind` that groups (when `key` is set) into one listing its members.
#[derive(Debug)]
struct R {
    kind: &'static str,
    name: String,
    key: Option<&'static str>,
    meta: Meta,
    members: Vec<String>,
}

#[async_trait]
impl Resource for R {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn validate(&self) -> Result<(), ResourceError> {
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        json!({ "members": self.members })
    }
    fn group_key(&self) -> Option<String> {
        // A group never groups again.
        self.key
            .filter(|_| self.members.len() == 1)
            .map(String::from)
    }
    fn group(&self, members: &[Arc<dyn Resource>]) -> Option<Arc<dyn Resource>> {
        if self.key == Some("refuse") {
            return None;
        }
        Some(Arc::new(R {
            kind: self.kind,
            name: group_name(members.iter().map(|m| m.name())),
            key: self.key,
            meta: self.meta.clone(),
            members: members.iter().map(|m| m.name().to_string()).collect(),
        }))
    }
    async fn check_apply(&self, _: &ApplyCtx, _: Mode) -> Result<Outcome, ResourceError> {
        Ok(Outcome::InSync)
    }
}

fn res(kind: &'static str, name: &str, key: Option<&'static str>, meta: Meta) -> Arc<dyn Resource> {
    Arc::new(R {
        kind,
        name: name.to_string(),
        key,
        meta,
        members: vec![name.to_string()],
    })
}

fn pkg(name: &str) -> Arc<dyn Resource> {
    res("pkg", name, Some("pkg"), Meta::default())
}

fn file(name: &str) -> Arc<dyn Resource> {
    res("file", name, None, Meta::default())
}

/// `a -> b` edges by `kind[name]`; a `~>` is a notify edge.
fn graph(vertices: Vec<Arc<dyn Resource>>, edges: &[&str]) -> ResGraph {
    let id = |s: &str| -> ResId {
        let (kind, rest) = s.split_once('[').unwrap();
        ResId::new(kind, rest.trim_end_matches(']'))
    };
    let edges = edges
        .iter()
        .map(|e| {
            let notify = e.contains("~>");
            let (from, to) = e.split_once(if notify { " ~> " } else { " -> " }).unwrap();
            Edge {
                from: id(from),
                to: id(to),
                notify,
            }
        })
        .collect();
    ResGraph { vertices, edges }
}

/// The grouped graph as text: vertices in order, then edges.
fn show(g: &ResGraph) -> String {
    let mut out: Vec<String> = g.vertices.iter().map(|r| r.id().to_string()).collect();
    out.extend(
        g.edges
            .iter()
            .map(|e| format!("{} {} {}", e.from, if e.notify { "~>" } else { "->" }, e.to)),
    );
    out.join("\n")
}

fn grouped(vertices: Vec<Arc<dyn Resource>>, edges: &[&str]) -> String {
    show(&autogroup(graph(vertices, edges)))
}

#[test]
fn independent_vertices_of_a_groupable_kind_become_one_in_place_of_the_first() {
    let g = autogroup(graph(
        vec![file("/f"), pkg("c"), pkg("a"), file("/g"), pkg("b")],
        &[],
    ));
    assert_eq!(show(&g), "file[/f]\npkg[a,b,c]\nfile[/g]");
    // Members in id order, whatever the order of the graph.
    assert_eq!(g.vertices[1].params(), json!({"members": ["a", "b", "c"]}));
}

#[test]
fn nothing_to_group_leaves_the_graph_as_it_is() {
    assert_eq!(
        grouped(vec![pkg("a"), file("/f")], &["pkg[a] -> file[/f]"]),
        "pkg[a]\nfile[/f]\npkg[a] -> file[/f]"
    );
    assert_eq!(
        grouped(vec![file("/f"), file("/g")], &[]),
        "file[/f]\nfile[/g]"
    );
}

#[test]
fn a_chain_stays_apart() {
    assert_eq!(
        grouped(vec![pkg("a"), pkg("b")], &["pkg[a] -> pkg[b]"]),
        "pkg[a]\npkg[b]\npkg[a] -> pkg[b]"
    );
}

#[test]
fn a_pkg_reachable_from_another_through_a_file_stays_apart() {
    // a -> /f -> b: a and b cannot merge; c is free and joins the first group, a's.
    assert_eq!(
        grouped(
            vec![pkg("a"), pkg("b"), pkg("c"), file("/f")],
            &["pkg[a] -> file[/f]", "file[/f] -> pkg[b]"]
        ),
        "pkg[a,c]\npkg[b]\nfile[/f]\npkg[a,c] -> file[/f]\nfile[/f] -> pkg[b]"
    );
}

#[test]
fn a_diamond_merges_its_sides_and_their_edges() {
    assert_eq!(
        grouped(
            vec![file("/top"), pkg("a"), pkg("b"), file("/bottom")],
            &[
                "file[/top] -> pkg[a]",
                "file[/top] -> pkg[b]",
                "pkg[a] -> file[/bottom]",
                "pkg[b] -> file[/bottom]",
            ]
        ),
        "file[/top]\npkg[a,b]\nfile[/bottom]\nfile[/top] -> pkg[a,b]\npkg[a,b] -> file[/bottom]"
    );
}

#[test]
fn merged_edges_keep_notify_when_any_of_them_had_it() {
    assert_eq!(
        grouped(
            vec![file("/x"), pkg("a"), pkg("b"), file("/y")],
            &[
                "file[/x] -> pkg[a]",
                "file[/x] ~> pkg[b]",
                "pkg[a] ~> file[/y]",
                "pkg[b] -> file[/y]",
            ]
        ),
        "file[/x]\npkg[a,b]\nfile[/y]\nfile[/x] ~> pkg[a,b]\npkg[a,b] ~> file[/y]"
    );
}

#[test]
fn reachability_is_judged_on_the_graph_as_grouped_so_far() {
    // p1 -> q1 and q2 -> p2: each pair alone could merge, both together would be a cycle
    // (P -> Q -> P). The p's merge first (ids sort `p` before `q`); the q's then stay apart.
    let g = autogroup(graph(
        vec![
            res("p", "1", Some("k"), Meta::default()),
            res("p", "2", Some("k"), Meta::default()),
            res("q", "1", Some("k"), Meta::default()),
            res("q", "2", Some("k"), Meta::default()),
        ],
        &["p[1] -> q[1]", "q[2] -> p[2]"],
    ));
    assert_eq!(
        show(&g),
        "p[1,2]\nq[1]\nq[2]\np[1,2] -> q[1]\nq[2] -> p[1,2]"
    );
}

#[test]
fn only_equal_meta_and_autogroup_true_merge() {
    let retry = Meta {
        retry: Retry::Times(3),
        ..Meta::default()
    };
    let off = Meta {
        autogroup: false,
        ..Meta::default()
    };
    assert_eq!(
        grouped(
            vec![
                res("pkg", "a", Some("pkg"), retry.clone()),
                pkg("b"),
                res("pkg", "c", Some("pkg"), retry),
                pkg("d"),
                res("pkg", "e", Some("pkg"), off.clone()),
                res("pkg", "f", Some("pkg"), off),
            ],
            &[]
        ),
        "pkg[a,c]\npkg[b,d]\npkg[e]\npkg[f]"
    );
}

#[test]
fn different_keys_and_kinds_stay_apart() {
    assert_eq!(
        grouped(
            vec![
                pkg("a"),
                res("pkg", "b", Some("pkg untrusted"), Meta::default()),
                res("other", "c", Some("pkg"), Meta::default()),
                res("pkg", "d", Some("pkg untrusted"), Meta::default()),
            ],
            &[]
        ),
        "pkg[a]\npkg[b,d]\nother[c]"
    );
}

#[test]
fn a_refused_or_colliding_group_stays_apart() {
    let refuse = |name| res("pkg", name, Some("refuse"), Meta::default());
    assert_eq!(
        grouped(vec![refuse("a"), refuse("b")], &[]),
        "pkg[a]\npkg[b]"
    );
    // `pkg[a,b]` is taken by a vertex that does not group: the group would collide with it.
    assert_eq!(
        grouped(
            vec![pkg("a"), pkg("b"), res("pkg", "a,b", None, Meta::default())],
            &[]
        ),
        "pkg[a]\npkg[b]\npkg[a,b]"
    );
}

#[test]
fn equal_graphs_give_equal_groups_whatever_their_order() {
    let edges = [
        "file[/f] -> pkg[b]",
        "pkg[c] -> file[/g]",
        "pkg[a] -> file[/f]",
    ];
    let one = autogroup(graph(
        vec![
            pkg("a"),
            pkg("b"),
            pkg("c"),
            pkg("d"),
            file("/f"),
            file("/g"),
        ],
        &edges,
    ));
    let two = autogroup(graph(
        vec![
            file("/g"),
            pkg("d"),
            file("/f"),
            pkg("c"),
            pkg("b"),
            pkg("a"),
        ],
        &edges,
    ));
    let ids = |g: &ResGraph| {
        let mut v: Vec<(String, serde_json::Value)> = g
            .vertices
            .iter()
            .map(|r| (r.id().to_string(), r.params()))
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    assert_eq!(ids(&one), ids(&two));
    assert_eq!(
        ids(&one).into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        ["file[/f]", "file[/g]", "pkg[a,c,d]", "pkg[b]"]
    );
}

#[test]
fn group_names_list_the_members() {
    assert_eq!(group_name(["a", "b", "c"]), "a,b,c");
    assert_eq!(group_name(["only"]), "only");
    assert_eq!(group_name(["a", "b", "c", "d", "e"]), "a,b,c,d,e");
    assert_eq!(group_name(["a", "b", "c", "d", "e", "f"]), "a,b,c,d,+2");
    let many: Vec<String> = (1..=20).map(|i| format!("pkgt{i:02}")).collect();
    assert_eq!(
        group_name(many.iter().map(String::as_str)),
        "pkgt01,pkgt02,pkgt03,pkgt04,+16"
    );
}

/// Random DAGs (edges only from a lower to a higher index, in a shuffled vertex order):
/// grouping always leaves a DAG, keeps every vertex in exactly one place, and maps every edge.
#[test]
fn random_graphs_stay_acyclic_and_keep_every_vertex_and_edge() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    for _ in 0..300 {
        let n = 2 + next(12) as usize;
        let vertices: Vec<Arc<dyn Resource>> = (0..n)
            .map(|i| match next(3) {
                0 => file(&format!("/{i}")),
                1 => pkg(&format!("p{i:02}")),
                _ => res("svc", &format!("s{i:02}"), Some("svc"), Meta::default()),
            })
            .collect();
        let mut edges = Vec::new();
        for from in 0..n {
            for to in from + 1..n {
                if next(4) == 0 {
                    edges.push(Edge {
                        from: vertices[from].id(),
                        to: vertices[to].id(),
                        notify: next(2) == 0,
                    });
                }
            }
        }
        let g = ResGraph {
            vertices: vertices.clone(),
            edges: edges.clone(),
        };
        let out = autogroup(g);

        // Every vertex is in exactly one output vertex (a group lists its members).
        let mut holder: HashMap<ResId, ResId> = HashMap::new();
        for r in &out.vertices {
            let members = r.params()["members"].as_array().unwrap().clone();
            for m in members {
                let id = ResId::new(r.kind(), m.as_str().unwrap());
                assert!(holder.insert(id, r.id()).is_none());
            }
        }
        assert_eq!(holder.len(), n);
        // Every edge maps to an output edge (or inside a group, which never happens), with
        // notify kept.
        for e in &edges {
            let (f, t) = (&holder[&e.from], &holder[&e.to]);
            assert_ne!(f, t, "an edge inside a group");
            let mapped = out.edges.iter().find(|o| &o.from == f && &o.to == t);
            assert!(mapped.is_some_and(|o| o.notify || !e.notify), "{e:?}");
        }
        // Acyclic: repeatedly remove vertices without incoming edges.
        let mut left: HashSet<ResId> = out.vertices.iter().map(|r| r.id()).collect();
        while !left.is_empty() {
            let free: Vec<ResId> = left
                .iter()
                .filter(|v| {
                    !out.edges
                        .iter()
                        .any(|e| &e.to == *v && left.contains(&e.from))
                })
                .cloned()
                .collect();
            assert!(!free.is_empty(), "a cycle among {left:?}");
            for v in free {
                left.remove(&v);
            }
        }
    }
}
