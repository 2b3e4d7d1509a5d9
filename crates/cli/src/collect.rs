//! Exported and collected resources: turning a graph's `@@` resources into store records, and
//! the store's records back into vertices of this host's graph according to its `collect:`.
//!
//! Semantics (mgmt's): every host collects matching exports from all hosts, its own included.
//! For `file`, the pattern is a directory: the collected file lands there under its basename.
//! For other kinds, a non-empty pattern must be a prefix of the resource name. A resource is
//! collected by the first rule that matches it and gets a notify edge to each of that rule's
//! `notify` targets (local resources, checked by yamlgraph), so they refresh whenever a
//! collected resource changes. Automatic edges (a collected file under the directory a local
//! file resource manages) are the engine's, as for any vertex.
//!
//! # Collection is a trust boundary
//!
//! A record in the store is untrusted input: any host with store credentials writes its own
//! exports, and a compromised host writes whatever it likes there. What a collected resource
//! does, it does as this process (usually root) on this host, so [`assemble`] admits an export
//! only within this policy, which a rule widens only by naming values in its `allow:`
//! ([`yamlgraph::Allow`]):
//!
//! - Only kinds a rule names are collected. Naming a kind grants what that kind does: a rule
//!   for `exec` lets every exporting host run commands here; its checks below are meta only.
//! - A file lands in the rule's pattern directory under its exporter's basename, which must be
//!   one plain component (not empty, `.`, `..`, nor containing `/`); a directory export (path
//!   ending `/`) is that one directory, nothing below it. `dirname` is the rule's, so dropped.
//!   The landing path is checked again after the file resource's own parser has normalised it.
//!   An empty pattern would let the exporter choose any path: refused unless `allow: [path]`
//!   (yamlgraph already rejects such a rule at load; the check here is the same rule again for
//!   any spec built otherwise).
//! - Content only: no `source` and no `fragments` (both read files of this host, chosen by the
//!   exporter: the way to copy a root-only file into a readable place), unless allowed.
//! - `mode`, parsed by the file resource's parser: no setuid, setgid, sticky or world-writable
//!   bit unless `allow: [mode]`. No `owner`/`group` unless allowed: a collected file gets this
//!   host's defaults. No `force` (it replaces whatever is at the path, a tree included, and
//!   removes trees) unless allowed. `state`, `recurse` (a no-op without `source` or `force`)
//!   and `content` pass.
//! - Meta, for every kind: no `sema` (semaphore names are shared with this graph's resources,
//!   so an export could hold a permit they wait for); at most [`MAX_FAST_RETRIES`] retries
//!   faster than [`MIN_RETRY_DELAY`] apart (a failing export retrying forever with no delay
//!   spins a core and floods the log); `delay` and `poll` at most [`MAX_PERIOD`]. `allow:
//!   [meta]` lifts these.
//! - What a rule collects never displaces this graph: an export whose id, or whose path (any
//!   [`resource::Resource::uids`]), a local resource already has is refused, and between
//!   exports the first in store order (by host, kind, name) keeps an id or path.
//!
//! A refused export is not built, so nothing of it is written; every refused field is one
//! [`Refusal`] naming host, resource and field, logged once per change of that export (see
//! [`Reported`]).

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use resource::{Edge, Meta, Registry, ResGraph, ResId, Resource, Retry, Uid};
use serde_json::Value;
use store::ExportedResource;
use yamlgraph::{Allow, CollectSpec, GraphSpec};

/// More retries than this need [`MIN_RETRY_DELAY`] between them, unless `allow: [meta]`.
pub const MAX_FAST_RETRIES: u32 = 10;
/// The shortest `delay` of an export that retries more than [`MAX_FAST_RETRIES`] times.
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The longest `delay` or `poll` an export may ask for, unless `allow: [meta]`.
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// Mode bits an export may not set unless `allow: [mode]`: setuid, setgid, sticky and
/// write-by-others.
const UNSAFE_MODE_BITS: u32 = 0o7002;
/// How many refusals [`Reported`] remembers; beyond, one summary line per change of the count.
const MAX_REMEMBERED: usize = 4096;

/// The records this graph publishes under its host.
pub fn exports_of(spec: &GraphSpec, host: &str) -> Vec<ExportedResource> {
    spec.resources
        .iter()
        .filter(|r| r.exported)
        .map(|r| ExportedResource {
            host: host.to_string(),
            kind: r.resource.kind().to_string(),
            name: r.resource.name().to_string(),
            meta: serde_json::to_value(r.resource.meta()).unwrap_or_default(),
            params: r.resource.params(),
        })
        .collect()
}

/// One export not collected, and why: one per refused field (see the module's policy), or
/// one for a record that does not build or clashes with what the graph already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub host: String,
    pub id: ResId,
    /// What is refused: a parameter (`source`, `mode`, `path`...), `meta.FIELD`, or `id`.
    pub field: String,
    pub reason: String,
    /// The record and the reason, hashed: the same refusal of an unchanged record is reported
    /// once ([`Reported`]).
    fingerprint: u64,
}

impl Refusal {
    fn new(rec: &ExportedResource, field: impl Into<String>, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let mut h = DefaultHasher::new();
        serde_json::to_string(rec).unwrap_or_default().hash(&mut h);
        reason.hash(&mut h);
        Refusal {
            host: rec.host.clone(),
            id: ResId::new(&rec.kind, &rec.name),
            field: field.into(),
            reason,
            fingerprint: h.finish(),
        }
    }

    /// Host, resource and field: what "the same refusal" means for [`Reported`].
    fn key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (&self.host, &self.id, &self.field).hash(&mut h);
        h.finish()
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not collecting {} from host {}: `{}`: {}",
            self.id, self.host, self.field, self.reason
        )
    }
}

/// The refusals already logged, so each is logged once per change of its export instead of on
/// every graph swap (any host's exports changing, a reload of this graph). It holds the
/// refusals of the last assembly, by host, resource and field, each with its fingerprint: a
/// refusal is logged when it was not there last time or its record (or reason) has changed
/// since. So an export that is fixed and then broken again is reported again. Bounded: it
/// remembers at most [`MAX_REMEMBERED`] refusals (the first in store order); the rest are
/// counted in one summary line, logged when their number changes.
#[derive(Debug, Default)]
pub struct Reported {
    last: HashMap<u64, u64>,
    unlisted: usize,
}

impl Reported {
    /// The lines to log for one assembly's refusals (none when nothing changed).
    pub fn fresh(&mut self, refusals: &[Refusal]) -> Vec<String> {
        let mut now: HashMap<u64, u64> = HashMap::new();
        let mut lines = Vec::new();
        let mut unlisted = 0;
        for r in refusals {
            let key = r.key();
            if now.len() >= MAX_REMEMBERED && !now.contains_key(&key) {
                unlisted += 1;
                continue;
            }
            if self.last.get(&key) != Some(&r.fingerprint) {
                lines.push(r.to_string());
            }
            now.insert(key, r.fingerprint);
        }
        if unlisted > 0 && unlisted != self.unlisted {
            lines.push(format!(
                "{unlisted} more refusals of exports not listed (only the first {MAX_REMEMBERED} are)"
            ));
        }
        self.last = now;
        self.unlisted = unlisted;
        lines
    }
}

/// This host's graph: its own (non-exported) resources and edges, plus every collected export
/// the policy (see the module) admits, with the notify edges of the rule that collected it.
/// Exports that are refused, do not build or clash are returned as refusals: one bad export
/// from another host must not stop this host.
pub fn assemble(
    spec: &GraphSpec,
    collected: &[ExportedResource],
    registry: &Registry,
) -> (ResGraph, Vec<Refusal>) {
    let mut graph = spec.local_graph();
    let mut refusals = Vec::new();
    let mut ids: BTreeSet<ResId> = graph.vertices.iter().map(|v| v.id()).collect();
    // Who manages what: this graph's resources, then collected ones in store order.
    let mut claimed: HashMap<Uid, String> = HashMap::new();
    for v in &graph.vertices {
        for uid in v.uids() {
            claimed.insert(uid, format!("this graph's {}", v.id()));
        }
    }
    for rec in collected {
        let Some(c) = spec.collect.iter().find(|c| matches(c, rec)) else {
            continue;
        };
        let res = match admit(c, rec, registry) {
            Ok(res) => res,
            Err(mut refused) => {
                refusals.append(&mut refused);
                continue;
            }
        };
        if ids.contains(&res.id()) {
            refusals.push(Refusal::new(
                rec,
                "id",
                "a resource with that id is already in the graph",
            ));
            continue;
        }
        let uids = res.uids();
        if let Some((uid, owner)) = uids
            .iter()
            .find_map(|u| claimed.get(u).map(|owner| (u, owner)))
        {
            refusals.push(Refusal::new(
                rec,
                "path",
                format!("{} is already managed by {owner}", uid.key),
            ));
            continue;
        }
        let by = format!("{} from host {}", res.id(), rec.host);
        claimed.extend(uids.into_iter().map(|u| (u, by.clone())));
        ids.insert(res.id());
        graph.edges.extend(c.notify.iter().map(|to| Edge {
            from: res.id(),
            to: to.clone(),
            notify: true,
        }));
        graph.vertices.push(res);
    }
    (graph, refusals)
}

fn matches(c: &CollectSpec, rec: &ExportedResource) -> bool {
    if c.kind != rec.kind {
        return false;
    }
    rec.kind == "file" || c.pattern.is_empty() || rec.name.starts_with(&c.pattern)
}

/// The collected resource, or every reason the rule's policy refuses it.
fn admit(
    c: &CollectSpec,
    rec: &ExportedResource,
    registry: &Registry,
) -> Result<Arc<dyn Resource>, Vec<Refusal>> {
    let refusal = |(field, reason): (String, String)| Refusal::new(rec, field, reason);
    let meta: Meta = serde_json::from_value(rec.meta.clone())
        .map_err(|e| vec![Refusal::new(rec, "meta", format!("bad meta: {e}"))])?;
    let mut refused: Vec<Refusal> = Vec::new();
    if !c.allow.contains(&Allow::Meta) {
        refused.extend(meta_refusals(&meta).into_iter().map(refusal));
    }
    let params = if rec.kind == "file" {
        match file_params(c, rec) {
            Ok(params) => Some(params),
            Err(why) => {
                refused.extend(why.into_iter().map(refusal));
                None
            }
        }
    } else {
        if rec.kind == "authorized_key" {
            refused.extend(key_refusals(c, rec).into_iter().map(refusal));
        }
        Some(rec.params.clone())
    };
    match params {
        Some(params) if refused.is_empty() => registry
            .build(&rec.kind, &rec.name, params, meta)
            .map_err(|e| {
                let field = e.field.unwrap_or_else(|| "params".to_string());
                vec![Refusal::new(rec, field, e.message)]
            }),
        _ => Err(refused),
    }
}

/// `(field, reason)`; the reason ends with the `allow:` value that lets it through, if any.
type Why = (String, String);

fn why(field: &str, reason: impl std::fmt::Display, allow: Option<Allow>) -> Why {
    let reason = match allow {
        Some(a) => format!("{reason} (a rule accepts it with `allow: [{a}]`)"),
        None => reason.to_string(),
    };
    (field.to_string(), reason)
}

/// A collected `authorized_key` goes to the `user`'s own `~/.ssh/authorized_keys` (found in
/// this host's passwd): an export naming another file (`path`) would add a line to any file of
/// this host, so that needs `allow: [path]`.
fn key_refusals(c: &CollectSpec, rec: &ExportedResource) -> Vec<Why> {
    match rec.params.get("path") {
        Some(p) if !p.is_null() && !c.allow.contains(&Allow::Path) => vec![why(
            "path",
            format!(
                "an export may not choose the file its key is written to (here {p}); it goes to \
                 the user's ~/.ssh/authorized_keys"
            ),
            Some(Allow::Path),
        )],
        _ => Vec::new(),
    }
}

/// The meta fields that could harm this host beyond the resource itself.
fn meta_refusals(meta: &Meta) -> Vec<Why> {
    let allow = Some(Allow::Meta);
    let mut out = Vec::new();
    if !meta.sema.is_empty() {
        let names: Vec<&str> = meta.sema.iter().map(|s| s.name()).collect();
        out.push(why(
            "meta.sema",
            format!(
                "semaphores ({}) are shared with this graph's resources, which an export could keep waiting",
                names.join(", ")
            ),
            allow,
        ));
    }
    let many = match meta.retry {
        Retry::Forever => true,
        Retry::Times(n) => n > MAX_FAST_RETRIES,
    };
    if many && meta.delay < MIN_RETRY_DELAY {
        out.push(why(
            "meta.retry",
            format!(
                "retry {} with a delay of {} ms would spin on this host: more than {MAX_FAST_RETRIES} retries need a delay of at least {} ms",
                meta.retry.to_mgmt(),
                meta.delay.as_millis(),
                MIN_RETRY_DELAY.as_millis()
            ),
            allow,
        ));
    }
    if meta.delay > MAX_PERIOD {
        out.push(why(
            "meta.delay",
            format!(
                "{} ms is longer than the {} s an export may ask for",
                meta.delay.as_millis(),
                MAX_PERIOD.as_secs()
            ),
            allow,
        ));
    }
    if let Some(poll) = meta.poll
        && poll > MAX_PERIOD
    {
        out.push(why(
            "meta.poll",
            format!(
                "{} s is longer than the {} s an export may ask for",
                poll.as_secs(),
                MAX_PERIOD.as_secs()
            ),
            allow,
        ));
    }
    out
}

/// The parameters a collected file is built from: the export's, moved into the rule's
/// directory, when every one of them is within the rule's policy.
fn file_params(c: &CollectSpec, rec: &ExportedResource) -> Result<Value, Vec<Why>> {
    let allowed = |a: Allow| c.allow.contains(&a);
    let mut params = rec.params.clone();
    let Some(obj) = params.as_object_mut() else {
        return Err(vec![why(
            "params",
            "expected a mapping of parameters",
            None,
        )]);
    };
    // The directory the file must land in (normalised by the file resource's own parser).
    let mut landing_dir = None;
    if c.pattern.is_empty() {
        if !allowed(Allow::Path) {
            return Err(vec![why(
                "path",
                "the rule's pattern is empty, so the export would choose any path on this host",
                Some(Allow::Path),
            )]);
        }
    } else {
        let (base, is_dir) = landing_name(obj, &rec.name).map_err(|w| vec![w])?;
        let mut path = Path::new(&c.pattern)
            .join(base)
            .to_string_lossy()
            .into_owned();
        if is_dir {
            path.push('/');
        }
        obj.insert("path".into(), Value::String(path));
        // dirname/basename would override path; the collected location wins.
        obj.remove("dirname");
        obj.remove("basename");
        let dir = resources::file::parse_spec(&rec.name, serde_json::json!({"path": c.pattern}))
            .map_err(|e| {
                vec![why(
                    "path",
                    format!("the rule's pattern `{}`: {}", c.pattern, e.message),
                    None,
                )]
            })?;
        landing_dir = Some(dir.path);
    }
    let spec = resources::file::parse_spec(&rec.name, params.clone()).map_err(|e| {
        let field = e.field.unwrap_or_else(|| "params".to_string());
        vec![(field, e.message)]
    })?;
    let mut out = Vec::new();
    if let Some(dir) = &landing_dir
        && spec.path.parent() != Some(dir.as_path())
    {
        // Cannot happen with a plain basename; checked on what will really be written.
        out.push(why(
            "path",
            format!(
                "{} is not directly in {}",
                spec.display_path(),
                dir.display()
            ),
            None,
        ));
    }
    if let Some(source) = &spec.source
        && !allowed(Allow::Source)
    {
        out.push(why(
            "source",
            format!(
                "an export may not copy this host's files (here {})",
                source.display()
            ),
            Some(Allow::Source),
        ));
    }
    if !spec.fragments.is_empty() && !allowed(Allow::Fragments) {
        out.push(why(
            "fragments",
            "an export may not build content from this host's files",
            Some(Allow::Fragments),
        ));
    }
    if let Some(mode) = spec.mode
        && mode & UNSAFE_MODE_BITS != 0
        && !allowed(Allow::Mode)
    {
        out.push(why(
            "mode",
            format!("{mode:04o} sets {}", unsafe_bits(mode)),
            Some(Allow::Mode),
        ));
    }
    if let Some(owner) = &spec.owner
        && !allowed(Allow::Owner)
    {
        out.push(why(
            "owner",
            format!("owner `{owner}`: a collected file gets this host's default owner"),
            Some(Allow::Owner),
        ));
    }
    if let Some(group) = &spec.group
        && !allowed(Allow::Group)
    {
        out.push(why(
            "group",
            format!("group `{group}`: a collected file gets this host's default group"),
            Some(Allow::Group),
        ));
    }
    if spec.force && !allowed(Allow::Force) {
        out.push(why(
            "force",
            "an export may not replace or remove whatever is at its path",
            Some(Allow::Force),
        ));
    }
    if out.is_empty() { Ok(params) } else { Err(out) }
}

/// The name a collected file lands under in the rule's directory (its exporter's `basename`,
/// else the last component of its `path`, which defaults to its name), and whether it is a
/// directory (written with a trailing `/`). It must be one plain component: an empty name,
/// `.` or `..` would land on the directory itself or climb out of it.
fn landing_name<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &'a str,
) -> Result<(&'a str, bool), Why> {
    let text = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (field, written) = match (text("basename"), text("path")) {
        (Some(b), _) => ("basename", b),
        (None, Some(p)) => ("path", p),
        (None, None) => ("path", name),
    };
    let trimmed = written.trim_end_matches('/');
    let base = if field == "basename" {
        trimmed
    } else {
        trimmed.rsplit('/').next().unwrap_or_default()
    };
    if base.is_empty() || base == "." || base == ".." || base.contains(['/', '\0']) {
        return Err(why(
            field,
            format!("`{written}` has no plain file name to land under in the rule's directory"),
            None,
        ));
    }
    Ok((base, written.ends_with('/')))
}

/// "setuid and write-by-others"...
fn unsafe_bits(mode: u32) -> String {
    let names: Vec<&str> = [
        (0o4000, "setuid"),
        (0o2000, "setgid"),
        (0o1000, "sticky"),
        (0o0002, "write-by-others"),
    ]
    .into_iter()
    .filter(|(bit, _)| mode & bit != 0)
    .map(|(_, name)| name)
    .collect();
    names.join(" and ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use engine::{Converger, Engine, EngineConfig, EngineEvent};
    use resource::Outcome;
    use tokio::sync::mpsc;

    use super::*;

    fn spec(dir: &Path) -> GraphSpec {
        spec_allowing(dir, "")
    }

    /// The fixture graph, its file rule allowing `allow` (`mode, owner`; empty: nothing).
    fn spec_allowing(dir: &Path, allow: &str) -> GraphSpec {
        let d = dir.display();
        let allow = if allow.is_empty() {
            String::new()
        } else {
            format!("  allow: [{allow}]\n")
        };
        let text = format!(
            "graph: g
resources:
  file:
  - name: lines
    path: {d}/lines/
  exec:
  - name: concat
    cmd: cat {d}/lines/* > {d}/all
    shell: /bin/sh
  msg:
  - name: said
edges:
- name: lines-concat
  from: {{kind: file, name: lines}}
  to: {{kind: exec, name: concat}}
collect:
- kind: file
  pattern: {d}/lines/
{allow}  notify:
  - {{kind: exec, name: concat}}
- kind: msg
  pattern: hello-
"
        );
        yamlgraph::parse("g.yaml", &text, &resources::registry()).expect("valid graph")
    }

    fn exported_file(host: &str, content: &str) -> ExportedResource {
        ExportedResource {
            host: host.to_string(),
            kind: "file".into(),
            name: format!("line-{host}"),
            meta: serde_json::to_value(resource::Meta::default()).expect("meta"),
            params: serde_json::json!({"path": format!("/elsewhere/{host}"), "content": content}),
        }
    }

    fn exported_msg(name: &str) -> ExportedResource {
        ExportedResource {
            host: "a".into(),
            kind: "msg".into(),
            name: name.into(),
            meta: serde_json::to_value(resource::Meta::default()).expect("meta"),
            params: serde_json::json!({}),
        }
    }

    #[test]
    fn collected_resources_notify_the_targets_of_their_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let collected = [
            exported_file("a", "line a\n"),
            exported_file("b", "line b\n"),
            exported_msg("hello-there"),
        ];
        let (graph, warnings) = assemble(&spec(dir.path()), &collected, &resources::registry());
        assert!(warnings.is_empty(), "{warnings:?}");
        let edges: Vec<String> = graph
            .edges
            .iter()
            .map(|e| format!("{} -> {} notify={}", e.from, e.to, e.notify))
            .collect();
        assert_eq!(
            edges,
            [
                "file[lines] -> exec[concat] notify=false",
                "file[line-a] -> exec[concat] notify=true",
                "file[line-b] -> exec[concat] notify=true",
            ],
            "the msg rule has no notify: its collected msg gets no edge"
        );
        let ids: Vec<String> = graph.vertices.iter().map(|v| v.id().to_string()).collect();
        assert_eq!(
            ids,
            [
                "file[lines]",
                "exec[concat]",
                "msg[said]",
                "file[line-a]",
                "file[line-b]",
                "msg[hello-there]"
            ]
        );
    }

    #[test]
    fn a_clashing_export_adds_neither_vertex_nor_edges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut clash = exported_file("a", "x\n");
        clash.name = "lines".into();
        let (graph, warnings) = assemble(&spec(dir.path()), &[clash], &resources::registry());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(graph.vertices.len(), 3);
        assert_eq!(graph.edges.len(), 1);
    }

    /// A collected record's meta goes through the same parser as the YAML's: a bad `sema` (or
    /// an out-of-range `retry`) is refused with its reason, never run without it.
    #[test]
    fn an_export_with_a_bad_meta_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bad_sema = exported_file("a", "x\n");
        bad_sema.meta["sema"] = serde_json::json!(["lock:0"]);
        let mut bad_retry = exported_file("b", "x\n");
        bad_retry.meta["retry"] = serde_json::json!(-2);
        let mut good = exported_file("c", "x\n");
        good.meta["sema"] = serde_json::json!(["lock:2"]);
        let (graph, refusals) = assemble(
            &spec_allowing(dir.path(), "meta"),
            &[bad_sema, bad_retry, good],
            &resources::registry(),
        );
        assert_eq!(
            lines(&refusals),
            [
                "not collecting file[line-a] from host a: `meta`: bad meta: `sema`: sema `lock:0`: the count must be at least 1",
                "not collecting file[line-b] from host b: `meta`: bad meta: `retry`: -2 is out of range: write -1 to retry forever or a count from 0 to 4294967295",
            ]
        );
        let collected = graph
            .vertices
            .iter()
            .find(|v| v.name() == "line-c")
            .expect("the good export is collected");
        let sema: Vec<(&str, u32)> = collected
            .meta()
            .sema
            .iter()
            .map(|s| (s.name(), s.count()))
            .collect();
        assert_eq!(sema, [("lock:2", 2)]);
    }

    /// A collected key goes to its user's own authorized_keys: an export that names the file
    /// (`path`) is refused unless the rule allows it, and one without is collected as it is.
    #[test]
    fn a_collected_key_may_not_choose_its_file_unless_allowed() {
        const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2n1dU2l6f0vQeSgkVZvBZq2oQb8m8G4N0zQ2y9F1c deploy@a";
        let rule = |allow: &str| {
            let text = format!(
                "graph: g\nresources: {{}}\ncollect:\n- kind: authorized_key\n  pattern: fleet-\n{allow}"
            );
            yamlgraph::parse("g.yaml", &text, &resources::registry()).expect("valid graph")
        };
        let key = |name: &str, path: Option<&str>| {
            let mut params = serde_json::json!({"user": "deploy", "key": KEY});
            if let Some(p) = path {
                params["path"] = p.into();
            }
            ExportedResource {
                host: "a".into(),
                kind: "authorized_key".into(),
                name: name.into(),
                meta: serde_json::to_value(resource::Meta::default()).expect("meta"),
                params,
            }
        };
        let exports = [
            key("fleet-a", None),
            key("fleet-sudoers", Some("/etc/sudoers")),
            key("other-a", None),
        ];
        let (graph, refusals) = assemble(&rule(""), &exports, &resources::registry());
        assert_eq!(
            lines(&refusals),
            [
                "not collecting authorized_key[fleet-sudoers] from host a: `path`: an export may not \
              choose the file its key is written to (here \"/etc/sudoers\"); it goes to the user's \
              ~/.ssh/authorized_keys (a rule accepts it with `allow: [path]`)"
            ]
        );
        let ids: Vec<String> = graph.vertices.iter().map(|v| v.id().to_string()).collect();
        assert_eq!(
            ids,
            ["authorized_key[fleet-a]"],
            "the pattern is a name prefix"
        );
        let (graph, refusals) =
            assemble(&rule("  allow: [path]\n"), &exports, &resources::registry());
        assert!(refusals.is_empty(), "{refusals:?}");
        assert_eq!(graph.vertices.len(), 2);
        // Other file-only allowances stay refused for this kind.
        let text = "graph: g\nresources: {}\ncollect:\n- kind: authorized_key\n  pattern: fleet-\n  allow: [mode]\n";
        let e = yamlgraph::parse("g.yaml", text, &resources::registry())
            .expect_err("mode is file-only")
            .to_string();
        assert!(
            e.contains("`allow: mode` applies only to `file` collect rules"),
            "{e}"
        );
    }

    fn lines(refusals: &[Refusal]) -> Vec<String> {
        refusals.iter().map(ToString::to_string).collect()
    }

    /// A file export from host `evil` named `name` with these params.
    fn hostile(name: &str, params: serde_json::Value) -> ExportedResource {
        ExportedResource {
            host: "evil".into(),
            kind: "file".into(),
            name: name.into(),
            meta: serde_json::to_value(resource::Meta::default()).expect("meta"),
            params,
        }
    }

    fn collected_names(graph: &ResGraph) -> Vec<String> {
        graph.vertices[3..]
            .iter()
            .map(|v| v.id().to_string())
            .collect()
    }

    /// Assembles `recs` with the fixture's file rule allowing `allow`: the ids collected and
    /// the refusals as logged.
    fn try_collect(
        dir: &Path,
        allow: &str,
        recs: &[ExportedResource],
    ) -> (Vec<String>, Vec<String>) {
        let (graph, refusals) = assemble(&spec_allowing(dir, allow), recs, &resources::registry());
        (collected_names(&graph), lines(&refusals))
    }

    /// The attack found by hand: a file export whose `source` is a root-only file of the
    /// collecting host, which would be copied into the collected directory with mode 0644.
    /// Refused by default, naming host and field; a rule that says `allow: [source]` takes it.
    #[test]
    fn an_export_copying_a_local_file_is_refused_unless_the_rule_allows_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("root").join("secret.txt");
        std::fs::create_dir_all(secret.parent().expect("parent")).expect("mkdir");
        std::fs::write(&secret, "the root password\n").expect("write secret");
        let steal = hostile(
            "stolen",
            serde_json::json!({"path": "/elsewhere/stolen", "source": secret, "mode": "0644"}),
        );
        let (ids, refused) = try_collect(dir.path(), "", std::slice::from_ref(&steal));
        assert!(ids.is_empty(), "{ids:?}");
        assert_eq!(
            refused,
            [format!(
                "not collecting file[stolen] from host evil: `source`: an export may not copy this host's files (here {}) (a rule accepts it with `allow: [source]`)",
                secret.display()
            )]
        );
        let (ids, refused) = try_collect(dir.path(), "source", &[steal]);
        assert_eq!(ids, ["file[stolen]"], "{refused:?}");
    }

    #[test]
    fn an_export_built_from_local_fragments_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = hostile(
            "gathered",
            serde_json::json!({"path": "/x/gathered", "fragments": ["/etc/shadow", "/root/"]}),
        );
        let (ids, refused) = try_collect(dir.path(), "", std::slice::from_ref(&rec));
        assert!(ids.is_empty());
        assert_eq!(
            refused,
            [
                "not collecting file[gathered] from host evil: `fragments`: an export may not build content from this host's files (a rule accepts it with `allow: [fragments]`)"
            ]
        );
        let (ids, _) = try_collect(dir.path(), "fragments", &[rec]);
        assert_eq!(ids, ["file[gathered]"]);
    }

    /// Modes as the file resource reads them (octal text with or without `0`/`0o`, or an
    /// integer of octal digits): setuid, setgid, sticky and write-by-others are refused.
    #[test]
    fn setuid_setgid_sticky_and_world_writable_modes_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            (serde_json::json!("4755"), Some("4755 sets setuid")),
            (serde_json::json!(4755), Some("4755 sets setuid")),
            (
                serde_json::json!("0o6755"),
                Some("6755 sets setuid and setgid"),
            ),
            (serde_json::json!("02755"), Some("2755 sets setgid")),
            (
                serde_json::json!("1777"),
                Some("1777 sets sticky and write-by-others"),
            ),
            (serde_json::json!("0666"), Some("0666 sets write-by-others")),
            (serde_json::json!("0755"), None),
            (serde_json::json!(640), None),
        ];
        for (mode, refused_as) in cases {
            let rec = hostile(
                "m",
                serde_json::json!({"path": "/x/m", "content": "#!/bin/sh\n", "mode": mode}),
            );
            let (ids, refused) = try_collect(dir.path(), "", std::slice::from_ref(&rec));
            match refused_as {
                Some(why) => {
                    assert!(ids.is_empty(), "{mode}");
                    assert_eq!(
                        refused,
                        [format!(
                            "not collecting file[m] from host evil: `mode`: {why} (a rule accepts it with `allow: [mode]`)"
                        )],
                        "{mode}"
                    );
                }
                None => assert_eq!(
                    (ids, refused),
                    (vec!["file[m]".to_string()], vec![]),
                    "{mode}"
                ),
            }
            let (ids, _) = try_collect(dir.path(), "mode", &[rec]);
            assert_eq!(ids, ["file[m]"], "allow: [mode] takes {mode}");
        }
    }

    /// The basename a file lands under must be one plain component, whether it comes from
    /// `path`, from `basename` or from the name: `..`, `.`, empty or with a `/` is refused,
    /// so nothing lands outside the rule's directory or on it.
    #[test]
    fn a_basename_that_climbs_out_of_the_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let cases = [
            (
                serde_json::json!({"path": "/x/..", "content": "x"}),
                "path",
                "/x/..",
            ),
            (
                serde_json::json!({"path": "/x/../", "content": "x"}),
                "path",
                "/x/../",
            ),
            (
                serde_json::json!({"path": "/x/.", "content": "x"}),
                "path",
                "/x/.",
            ),
            (
                serde_json::json!({"path": "/", "content": "x"}),
                "path",
                "/",
            ),
            (
                serde_json::json!({"path": "/x/y", "basename": "..", "content": "x"}),
                "basename",
                "..",
            ),
            (
                serde_json::json!({"path": "/x/y", "basename": "../etc/cron.d/x", "content": "x"}),
                "basename",
                "../etc/cron.d/x",
            ),
        ];
        for (params, field, written) in cases {
            let (ids, refused) = try_collect(dir.path(), "", &[hostile("up", params.clone())]);
            assert!(ids.is_empty(), "{params}");
            assert_eq!(
                refused,
                [format!(
                    "not collecting file[up] from host evil: `{field}`: `{written}` has no plain file name to land under in the rule's directory"
                )],
                "{params}"
            );
        }
        // A plain basename (or a directory, one level) lands directly in the directory.
        let (graph, refusals) = assemble(
            &spec(dir.path()),
            &[
                hostile(
                    "b",
                    serde_json::json!({"path": "/x/y", "basename": "z", "content": "x"}),
                ),
                hostile(
                    "sub",
                    serde_json::json!({"path": "/x/sub/", "mode": "0750"}),
                ),
                hostile("../../etc/passwd", serde_json::json!({"content": "x"})),
            ],
            &resources::registry(),
        );
        assert!(refusals.is_empty(), "{refusals:?}");
        let paths: Vec<String> = graph.vertices[3..]
            .iter()
            .map(|v| v.params()["path"].as_str().expect("path").to_string())
            .collect();
        assert_eq!(
            paths,
            [
                format!("{d}/lines/z"),
                format!("{d}/lines/sub/"),
                format!("{d}/lines/passwd")
            ]
        );
    }

    #[test]
    fn owner_and_group_are_refused_unless_allowed_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = hostile(
            "mine",
            serde_json::json!({"path": "/x/mine", "content": "x", "owner": "root", "group": "0"}),
        );
        let refused_owner = "not collecting file[mine] from host evil: `owner`: owner `root`: a collected file gets this host's default owner (a rule accepts it with `allow: [owner]`)";
        let refused_group = "not collecting file[mine] from host evil: `group`: group `0`: a collected file gets this host's default group (a rule accepts it with `allow: [group]`)";
        let one = std::slice::from_ref(&rec);
        assert_eq!(
            try_collect(dir.path(), "", one).1,
            [refused_owner, refused_group]
        );
        assert_eq!(try_collect(dir.path(), "owner", one).1, [refused_group]);
        assert_eq!(try_collect(dir.path(), "group", one).1, [refused_owner]);
        assert_eq!(
            try_collect(dir.path(), "owner, group", one).0,
            ["file[mine]"]
        );
    }

    #[test]
    fn force_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = hostile(
            "gone",
            serde_json::json!({"path": "/x/lines/", "state": "absent", "recurse": true, "force": true}),
        );
        let one = std::slice::from_ref(&rec);
        assert_eq!(
            try_collect(dir.path(), "", one).1,
            [
                "not collecting file[gone] from host evil: `force`: an export may not replace or remove whatever is at its path (a rule accepts it with `allow: [force]`)"
            ]
        );
        assert_eq!(try_collect(dir.path(), "force", one).0, ["file[gone]"]);
    }

    /// yamlgraph rejects a file rule with an empty pattern unless it allows `path`; a spec made
    /// otherwise is held to the same rule here.
    #[test]
    fn an_empty_file_pattern_takes_exporters_paths_only_with_allow_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = hostile(
            "cron",
            serde_json::json!({"path": "/etc/cron.d/evil", "content": "* * * * * root sh\n"}),
        );
        let mut spec = spec(dir.path());
        spec.collect[0].pattern = String::new();
        let (graph, refusals) = assemble(&spec, std::slice::from_ref(&rec), &resources::registry());
        assert!(collected_names(&graph).is_empty());
        assert_eq!(
            lines(&refusals),
            [
                "not collecting file[cron] from host evil: `path`: the rule's pattern is empty, so the export would choose any path on this host (a rule accepts it with `allow: [path]`)"
            ]
        );
        spec.collect[0].allow.insert(Allow::Path);
        let (graph, refusals) = assemble(&spec, &[rec], &resources::registry());
        assert!(refusals.is_empty(), "{refusals:?}");
        assert_eq!(graph.vertices[3].params()["path"], "/etc/cron.d/evil");
    }

    /// Meta that reaches beyond the resource: semaphores shared with local resources, fast
    /// endless retries, periods too long for the engine's clock; for every kind.
    #[test]
    fn meta_that_reaches_beyond_the_export_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let with_meta = |name: &str, meta: serde_json::Value| {
            let mut rec = hostile(
                name,
                serde_json::json!({"path": format!("/x/{name}"), "content": "x"}),
            );
            for (k, v) in meta.as_object().expect("object") {
                rec.meta[k] = v.clone();
            }
            rec
        };
        let recs = [
            with_meta("sema", serde_json::json!({"sema": ["db:1"]})),
            with_meta("spin", serde_json::json!({"retry": -1, "delay": 0})),
            with_meta("spin11", serde_json::json!({"retry": 11, "delay": 99})),
            with_meta("slow", serde_json::json!({"delay": 86_400_001u64})),
            with_meta("poll", serde_json::json!({"poll": 86401})),
            with_meta("ok10", serde_json::json!({"retry": 10, "delay": 0})),
            with_meta(
                "ok-forever",
                serde_json::json!({"retry": -1, "delay": 100, "poll": 86400}),
            ),
        ];
        let (ids, refused) = try_collect(dir.path(), "", &recs);
        assert_eq!(ids, ["file[ok10]", "file[ok-forever]"]);
        let hint = "(a rule accepts it with `allow: [meta]`)";
        assert_eq!(
            refused,
            [
                format!(
                    "not collecting file[sema] from host evil: `meta.sema`: semaphores (db:1) are shared with this graph's resources, which an export could keep waiting {hint}"
                ),
                format!(
                    "not collecting file[spin] from host evil: `meta.retry`: retry -1 with a delay of 0 ms would spin on this host: more than 10 retries need a delay of at least 100 ms {hint}"
                ),
                format!(
                    "not collecting file[spin11] from host evil: `meta.retry`: retry 11 with a delay of 99 ms would spin on this host: more than 10 retries need a delay of at least 100 ms {hint}"
                ),
                format!(
                    "not collecting file[slow] from host evil: `meta.delay`: 86400001 ms is longer than the 86400 s an export may ask for {hint}"
                ),
                format!(
                    "not collecting file[poll] from host evil: `meta.poll`: 86401 s is longer than the 86400 s an export may ask for {hint}"
                ),
            ]
        );
        assert_eq!(try_collect(dir.path(), "meta", &recs).0.len(), recs.len());
        // Other kinds too: the msg rule of the fixture allows nothing.
        let mut msg = exported_msg("hello-sema");
        msg.meta["sema"] = serde_json::json!(["db:1"]);
        let (graph, refusals) = assemble(&spec(dir.path()), &[msg], &resources::registry());
        assert!(collected_names(&graph).is_empty());
        assert_eq!(refusals[0].field, "meta.sema");
    }

    /// A collected resource never displaces this graph's: its path (any uid) is refused when a
    /// local resource or an earlier export (store order) already manages it, as its id is.
    #[test]
    fn an_export_landing_on_a_managed_path_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let text = format!(
            "graph: g
resources:
  file:
  - name: taken
    path: {d}/lines/taken
    content: mine
collect:
- kind: file
  pattern: {d}/lines/
"
        );
        let spec = yamlgraph::parse("g.yaml", &text, &resources::registry()).expect("valid");
        let mut from_a = exported_file("a", "a\n");
        from_a.params["path"] = "/a/same".into();
        let mut from_b = exported_file("b", "b\n");
        from_b.params["path"] = "/b/same".into();
        let (graph, refusals) = assemble(
            &spec,
            &[
                hostile(
                    "over",
                    serde_json::json!({"path": "/x/taken", "content": "theirs"}),
                ),
                from_a,
                from_b,
            ],
            &resources::registry(),
        );
        let ids: Vec<String> = graph.vertices.iter().map(|v| v.id().to_string()).collect();
        assert_eq!(ids, ["file[taken]", "file[line-a]"]);
        assert_eq!(
            lines(&refusals),
            [
                format!(
                    "not collecting file[over] from host evil: `path`: {d}/lines/taken is already managed by this graph's file[taken]"
                ),
                format!(
                    "not collecting file[line-b] from host b: `path`: {d}/lines/same is already managed by file[line-a] from host a"
                ),
            ]
        );
    }

    /// Each refusal is logged once per change of its export: not again on the next swap with
    /// the same record, again when the record changes or comes back after being gone.
    #[test]
    fn a_refusal_is_reported_once_per_change_of_its_export() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path());
        let registry = resources::registry();
        let bad = |mode: &str| {
            hostile(
                "m",
                serde_json::json!({"path": "/x/m", "mode": mode, "owner": "root"}),
            )
        };
        let mut reported = Reported::default();
        let mut round = |recs: &[ExportedResource]| {
            let (_, refusals) = assemble(&spec, recs, &registry);
            reported.fresh(&refusals)
        };
        let first = round(&[bad("4755")]);
        assert_eq!(first.len(), 2, "mode and owner: {first:?}");
        assert!(
            first[0].contains("`mode`") && first[1].contains("`owner`"),
            "{first:?}"
        );
        assert!(round(&[bad("4755")]).is_empty(), "unchanged: not again");
        assert!(
            round(&[bad("4755"), exported_file("a", "x")]).is_empty(),
            "another export changed"
        );
        let changed = round(&[bad("2755")]);
        assert_eq!(
            changed.len(),
            2,
            "a changed record is reported again: {changed:?}"
        );
        assert!(round(&[]).is_empty());
        assert_eq!(round(&[bad("2755")]).len(), 2, "back after being gone");
    }

    #[test]
    fn the_memory_of_reported_refusals_is_bounded() {
        let refusals: Vec<Refusal> = (0..MAX_REMEMBERED + 5)
            .map(|i| {
                Refusal::new(
                    &hostile(&format!("f{i}"), serde_json::json!({})),
                    "mode",
                    "x",
                )
            })
            .collect();
        let mut reported = Reported::default();
        let first = reported.fresh(&refusals);
        assert_eq!(first.len(), MAX_REMEMBERED + 1);
        assert_eq!(
            first.last().map(String::as_str),
            Some("5 more refusals of exports not listed (only the first 4096 are)")
        );
        assert!(reported.fresh(&refusals).is_empty());
        assert!(reported.last.len() <= MAX_REMEMBERED);
    }

    /// Runs assembled graphs in the real engine: collected files wait for the local resource
    /// that makes their directory (automatic edges), and a change of one refreshes the exec.
    #[tokio::test]
    async fn the_engine_orders_collected_files_after_their_directory_and_refreshes_the_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path());
        let registry = resources::registry();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let converger = Converger::new();
        let engine = Engine::new(EngineConfig {
            hostname: "test".into(),
            noop: false,
            events: tx,
            converger: converger.clone(),
        });
        let all = dir.path().join("all");

        let first = [
            exported_file("a", "line a\n"),
            exported_file("b", "line b\n"),
        ];
        let (graph, _) = assemble(&spec, &first, &registry);
        engine.swap(graph).await.expect("graph accepted");
        let mut order = Vec::new();
        let deadline = Duration::from_secs(30);
        tokio::time::timeout(deadline, async {
            while std::fs::read_to_string(&all).ok().as_deref() != Some("line a\nline b\n") {
                match rx.recv().await.expect("engine events") {
                    EngineEvent::Applied { id, .. } => order.push(id.to_string()),
                    EngineEvent::Failed { id, error, .. } => panic!("{id} failed: {error}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("the exec concatenated both collected files");
        let pos = |id: &str| order.iter().position(|o| o == id).expect(id);
        assert!(pos("file[lines]") < pos("file[line-a]"), "{order:?}");
        assert!(pos("file[lines]") < pos("file[line-b]"), "{order:?}");

        // Host b's export changes: the exec reruns, asked by its notify parent.
        let second = [
            exported_file("a", "line a\n"),
            exported_file("b", "line b2\n"),
        ];
        let (graph, _) = assemble(&spec, &second, &registry);
        engine.swap(graph).await.expect("graph accepted");
        tokio::time::timeout(deadline, async {
            loop {
                match rx.recv().await.expect("engine events") {
                    EngineEvent::Applied {
                        id,
                        outcome: Outcome::Changed,
                        refresh: true,
                        ..
                    } if id.to_string() == "exec[concat]"
                        && std::fs::read_to_string(&all).ok().as_deref()
                            == Some("line a\nline b2\n") =>
                    {
                        break;
                    }
                    EngineEvent::Failed { id, error, .. } => panic!("{id} failed: {error}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("the exec was refreshed with the new line");
        engine.shutdown().await;
    }
}
