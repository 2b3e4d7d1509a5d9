//! Automatic grouping as the engine applies it at every swap: a group is one vertex (one
//! watch, one check_apply, one converger participant), edges to members lead to it, members
//! reachable from each other stay apart, and an equal graph keeps an unchanged group running.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine::{EngineEvent, SwapReport};
use resource::{
    ApplyCtx, Edge, Meta, Mode, Outcome, ResGraph, ResId, Resource, ResourceError, WatchCtx,
    group_name,
};

use crate::common::*;

/// What the grouped resources saw: `watch NAME` and `apply NAME refresh=..` lines.
#[derive(Default, Debug)]
struct Seen(Mutex<Vec<String>>);

impl Seen {
    fn count(&self, line: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| *l == line).count()
    }
}

/// A groupable kind (`grp`); a group lists its members in `params`.
#[derive(Debug)]
struct Grp {
    name: String,
    members: Vec<String>,
    meta: Meta,
    seen: Arc<Seen>,
}

fn grp(seen: &Arc<Seen>, name: &str) -> Arc<dyn Resource> {
    Arc::new(Grp {
        name: name.to_string(),
        members: vec![name.to_string()],
        meta: Meta::default(),
        seen: seen.clone(),
    })
}

fn gid(name: &str) -> ResId {
    ResId::new("grp", name)
}

#[async_trait]
impl Resource for Grp {
    fn kind(&self) -> &'static str {
        "grp"
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
        serde_json::json!({ "members": self.members })
    }
    fn group_key(&self) -> Option<String> {
        (self.members.len() == 1).then(|| "grp".to_string())
    }
    fn group(&self, members: &[Arc<dyn Resource>]) -> Option<Arc<dyn Resource>> {
        Some(Arc::new(Grp {
            name: group_name(members.iter().map(|m| m.name())),
            members: members.iter().map(|m| m.name().to_string()).collect(),
            meta: self.meta.clone(),
            seen: self.seen.clone(),
        }))
    }
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        self.seen
            .0
            .lock()
            .unwrap()
            .push(format!("watch {}", self.name));
        ctx.running();
        ctx.cancel.cancelled().await;
        Ok(())
    }
    async fn check_apply(&self, ctx: &ApplyCtx, _: Mode) -> Result<Outcome, ResourceError> {
        self.seen
            .0
            .lock()
            .unwrap()
            .push(format!("apply {} refresh={}", self.name, ctx.refresh));
        Ok(Outcome::InSync)
    }
}

/// Where `id`'s first `Applied` is among the events seen so far.
fn applied_at(rig: &Rig, id: &ResId) -> usize {
    rig.events
        .seen
        .iter()
        .position(|e| matches!(e, EngineEvent::Applied { id: i, .. } if i == id))
        .unwrap_or_else(|| panic!("{id} never applied"))
}

fn edge(from: ResId, to: ResId, notify: bool) -> Edge {
    Edge { from, to, notify }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_one_vertex_kept_by_an_equal_swap_and_replaced_when_it_grows() {
    let seen = Arc::new(Seen::default());
    let lab = Lab::new();
    let mut rig = rig(false);
    let g = |names: &[&str]| ResGraph {
        vertices: names
            .iter()
            .map(|n| grp(&seen, n))
            .chain([Probe::new(&lab, "after").arc()])
            .collect(),
        // Edges naming members lead from the group.
        edges: vec![
            edge(gid("a"), pid("after"), false),
            edge(gid("c"), pid("after"), false),
        ],
    };
    let report = rig.engine.swap(g(&["c", "a", "b"])).await.unwrap();
    assert_eq!(report.added, [gid("a,b,c"), pid("after")]);
    rig.events.applied(&pid("after")).await;
    rig.converged().await;
    assert_eq!(seen.count("watch a,b,c"), 1);
    assert_eq!(seen.count("apply a,b,c refresh=false"), 1);
    // The probe ran after the group (its only parent).
    assert!(applied_at(&rig, &gid("a,b,c")) < applied_at(&rig, &pid("after")));

    // New instances of the same graph: the group is kept, its watch untouched.
    let report = rig.engine.swap(g(&["a", "b", "c"])).await.unwrap();
    assert_eq!(
        report,
        SwapReport {
            added: vec![],
            removed: vec![],
            kept: vec![gid("a,b,c"), pid("after")],
        }
    );
    rig.converged().await;
    assert_eq!(seen.count("watch a,b,c"), 1);

    // One more member: another group, replacing the old one.
    let report = rig.engine.swap(g(&["a", "b", "c", "d"])).await.unwrap();
    assert_eq!(report.added, [gid("a,b,c,d")]);
    assert_eq!(report.removed, [gid("a,b,c")]);
    rig.events.applied(&gid("a,b,c,d")).await;
    rig.converged().await;
    assert_eq!(seen.count("watch a,b,c,d"), 1);
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_depend_on_each_other_stay_apart_and_notify_reaches_the_group() {
    let seen = Arc::new(Seen::default());
    let lab = Lab::new();
    let mut rig = rig(false);
    let changed = Script::default();
    changed.push(Ok(Outcome::Changed));
    // a -> mid -> b: apart. src ~> c (notify): c groups with a, and the group is refreshed.
    let graph = ResGraph {
        vertices: vec![
            grp(&seen, "a"),
            grp(&seen, "b"),
            grp(&seen, "c"),
            Probe::new(&lab, "mid").arc(),
            Probe::new(&lab, "src").script(changed).arc(),
        ],
        edges: vec![
            edge(gid("a"), pid("mid"), false),
            edge(pid("mid"), gid("b"), false),
            edge(pid("src"), gid("c"), true),
        ],
    };
    let report = rig.engine.swap(graph).await.unwrap();
    assert_eq!(report.added, [gid("a,c"), gid("b"), pid("mid"), pid("src")]);
    rig.events.applied(&gid("b")).await;
    rig.converged().await;
    assert_eq!(seen.count("apply a,c refresh=true"), 1);
    assert_eq!(seen.count("apply b refresh=false"), 1);
    let at = |id: &ResId| applied_at(&rig, id);
    assert!(at(&pid("src")) < at(&gid("a,c")));
    assert!(at(&gid("a,c")) < at(&pid("mid")));
    assert!(at(&pid("mid")) < at(&gid("b")));
    rig.engine.shutdown().await;
}
