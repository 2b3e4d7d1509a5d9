//! Walks the loaded YAML document and turns it into a `GraphSpec`, collecting a diagnostic for
//! every problem instead of stopping at the first.
//!
//! Never does IO. Resources are built through the registry's pure `build` functions.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use resource::{BuildError, KindInfo, Meta, Rate, Registry, ResId};
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Diagnostics, help_for};
use crate::yaml::{self, Node, Pos, Scalar};
use crate::{Allow, CollectSpec, EdgeSpec, GraphSpec, ResourceSpec, Span};

/// How to write an edge's `from`/`to`.
fn end_help(end: &str) -> String {
    format!("write `{end}: {{kind: KIND, name: NAME}}`")
}

const TOP_KEYS: &[&str] = &[
    "graph",
    "comment",
    "remote",
    "remotes",
    "sudo",
    "resources",
    "edges",
    "collect",
];
const EDGE_KEYS: &[&str] = &["name", "from", "to", "notify"];
const VERTEX_KEYS: &[&str] = &["kind", "name"];
const COLLECT_KEYS: &[&str] = &["kind", "pattern", "notify", "allow"];
const META_KEYS: &[&str] = Meta::FIELDS;

impl From<Pos> for Span {
    fn from(p: Pos) -> Span {
        Span {
            line: p.line,
            col: p.col,
        }
    }
}

/// A resource name seen in the file, whether or not it built: edges to a resource that failed
/// to build must not add a second, misleading "no such resource" error.
struct Declared {
    exported: bool,
    pos: Pos,
}

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    /// The lines of `text`, split on the first diagnostic (a valid graph never needs them).
    lines: Option<Vec<&'a str>>,
    registry: &'a Registry,
    diags: Vec<Diagnostic>,
    /// What loads but is ignored (see `resource::BuildWarning`): reported, never fatal.
    warnings: Vec<Diagnostic>,
    /// By kind and name as written in the loaded document. Hashed: a large graph declares many
    /// resources, and only diagnostics want them in order.
    declared: HashMap<(&'a str, &'a str), Declared>,
}

pub(crate) fn parse(file: &str, text: &str, registry: &Registry) -> Result<GraphSpec, Diagnostics> {
    let docs = yaml::load(text);
    let mut cx = Cx {
        file,
        text,
        lines: None,
        registry,
        diags: Vec::new(),
        warnings: Vec::new(),
        declared: HashMap::new(),
    };
    let spec = match &docs {
        Ok(docs) => cx.document(docs),
        Err(e) => {
            cx.error(e.pos, format!("invalid YAML: {}", e.message), None);
            None
        }
    };
    match spec {
        Some(mut spec) if cx.diags.is_empty() => {
            cx.warnings.sort_by_key(|d| (d.line, d.col));
            spec.warnings = cx.warnings;
            Ok(spec)
        }
        _ => {
            cx.diags.sort_by_key(|d| (d.line, d.col));
            Err(Diagnostics(cx.diags))
        }
    }
}

/// The lines of `text` as YAML counts them: a line ends at `\n`, `\r\n` or a lone `\r`
/// (which `str::lines` does not split on), so that a diagnostic's line, which the parser
/// counted, shows the text it names.
fn yaml_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(end) = rest.find(['\n', '\r']) else {
            lines.push(rest);
            break;
        };
        lines.push(&rest[..end]);
        let next = if rest[end..].starts_with("\r\n") {
            end + 2
        } else {
            end + 1
        };
        rest = &rest[next..];
    }
    lines
}

/// A resource's parameters again, for another build: each field's JSON, but the text as
/// written for the fields in `as_text`. Every value converted once already, so none fails here.
fn retry_params(
    values: &[(&str, &Node)],
    as_text: &BTreeMap<&str, BuildError>,
) -> Map<String, Value> {
    values
        .iter()
        .filter_map(|&(key, v)| {
            let json = if as_text.contains_key(key) {
                Value::String(yaml::plain_text_of_non_string(v)?)
            } else {
                yaml::to_json(v).ok()?
            };
            Some((key.to_string(), json))
        })
        .collect()
}

/// The top-level keys, each kept until the whole mapping has been read.
#[derive(Default)]
struct Top<'n> {
    graph: Option<(&'n Node, &'n Node)>,
    comment: Option<&'n Node>,
    remote: Option<&'n Node>,
    remotes: Option<&'n Node>,
    sudo: Option<&'n Node>,
    resources: Option<&'n Node>,
    edges: Option<&'n Node>,
    collect: Option<&'n Node>,
}

impl<'a> Cx<'a> {
    /// `node`'s entries; when it is not a mapping, an error at it: `what`, then what was found.
    fn entries<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        help: Option<String>,
    ) -> Option<impl Iterator<Item = (&'n Node, &'n Node)> + 'n> {
        let entries = yaml::mapping(node);
        if entries.is_none() {
            self.error(
                Pos::of(node),
                format!("{what}, found {}", yaml::describe(node)),
                help,
            );
        }
        entries
    }

    fn error(&mut self, pos: Pos, message: impl Into<String>, help: Option<String>) {
        let d = self.diagnostic(pos, message.into(), help);
        self.diags.push(d);
    }

    fn warn(&mut self, pos: Pos, message: impl Into<String>) {
        let d = self.diagnostic(pos, message.into(), None);
        self.warnings.push(d);
    }

    fn diagnostic(&mut self, mut pos: Pos, message: String, help: Option<String>) -> Diagnostic {
        let text = self.text;
        let lines = self.lines.get_or_insert_with(|| yaml_lines(text));
        // The parser reports an unexpected end of input on the line after the last one; point
        // at the end of the last line instead, where the missing text belongs.
        if pos.line > lines.len()
            && let Some(last) = lines.last()
        {
            pos = Pos {
                line: lines.len(),
                col: last.chars().count() + 1,
                width: 1,
            };
        }
        // Never past the end of the line: saphyr-parser 0.3.4 counts the bytes of a directive's
        // name and parameters as columns (`%¡¡¡` moves the column by 7), so a position later on
        // such a line can lie beyond it.
        if let Some(line) = lines.get(pos.line - 1) {
            let end = line.chars().count() + 1;
            if pos.col > end {
                pos.col = end;
                pos.width = 1;
            }
        }
        Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            message,
            help,
            source_line: lines.get(pos.line - 1).copied().unwrap_or("").to_string(),
            width: pos.width,
        }
    }

    /// A mapping key as text, or an error at it.
    fn key<'n>(&mut self, k: &'n Node) -> Option<&'n str> {
        match yaml::text(k) {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                self.error(Pos::of(k), "empty mapping key", None);
                None
            }
            Err(e) => {
                self.error(Pos::of(k), format!("invalid mapping key: {e}"), None);
                None
            }
        }
    }

    /// An optional string value (null = unset).
    fn string(&mut self, what: &str, v: &Node) -> Option<String> {
        self.str(what, v).map(str::to_string)
    }

    /// [`Cx::string`], borrowed from the document.
    fn str<'n>(&mut self, what: &str, v: &'n Node) -> Option<&'n str> {
        match yaml::text(v) {
            Ok(s) => s,
            Err(e) => {
                self.error(Pos::of(v), format!("invalid `{what}`: {e}"), None);
                None
            }
        }
    }

    /// The items of a list value; null is an empty list.
    fn list<'n>(&mut self, what: &str, v: &'n Node) -> &'n [Node] {
        if yaml::is_null(v) {
            return &[];
        }
        match yaml::sequence(v) {
            Some(items) => items,
            None => {
                self.error(
                    Pos::of(v),
                    format!("`{what}` must be a list, found {}", yaml::describe(v)),
                    None,
                );
                &[]
            }
        }
    }

    fn document(&mut self, docs: &'a [Node]) -> Option<GraphSpec> {
        if let Some(extra) = docs.get(1) {
            self.error(
                Pos::of(extra),
                format!(
                    "a graph file holds one YAML document, this one has {}",
                    docs.len()
                ),
                Some("split the documents into separate graph files".to_string()),
            );
        }
        let missing_graph = Some("start the file with `graph: NAME`".to_string());
        let Some(root) = docs.first() else {
            self.error(
                Pos::start(),
                "missing `graph`: the file is empty",
                missing_graph,
            );
            return None;
        };
        let entries = self.entries(root, "expected a mapping at the top level", missing_graph)?;

        let mut top = Top::default();
        for (k, v) in entries {
            let Some(key) = self.key(k) else { continue };
            match key {
                "graph" => top.graph = Some((k, v)),
                "comment" => top.comment = Some(v),
                "remote" => top.remote = Some(v),
                "remotes" => top.remotes = Some(v),
                "sudo" => top.sudo = Some(v),
                // `types` is what mgmt's first releases called `resources`.
                "resources" | "types" => {
                    if top.resources.replace(v).is_some() {
                        self.error(
                            Pos::of(k),
                            format!("`{key}` given twice (`types` is the old name of `resources`)"),
                            None,
                        );
                    }
                }
                "edges" => top.edges = Some(v),
                "collect" => top.collect = Some(v),
                other => self.error(
                    Pos::of(k),
                    format!("unknown top-level key `{other}`"),
                    Some(help_for(other, "top-level keys", TOP_KEYS)),
                ),
            }
        }

        let graph = match top.graph {
            None => {
                self.error(
                    Pos::of(root),
                    "missing `graph`",
                    Some("add `graph: NAME` at the top level".to_string()),
                );
                String::new()
            }
            Some((k, v)) => match self.string("graph", v) {
                Some(name) if !name.is_empty() => name,
                _ => {
                    let at = if yaml::is_null(v) {
                        Pos::of(k)
                    } else {
                        Pos::of(v)
                    };
                    self.error(
                        at,
                        "`graph` must not be empty",
                        Some("name the graph: `graph: mygraph`".to_string()),
                    );
                    String::new()
                }
            },
        };
        let comment = top.comment.and_then(|v| self.string("comment", v));
        let remote = top
            .remote
            .and_then(|v| self.string("remote", v))
            .filter(|r| !r.is_empty());
        let mut remotes = Vec::new();
        for item in top
            .remotes
            .map(|v| self.list("remotes", v))
            .unwrap_or_default()
        {
            match self.string("remotes", item) {
                Some(r) if !r.is_empty() => remotes.push(r),
                _ => self.error(
                    Pos::of(item),
                    "a `remotes` entry must name a graph file",
                    None,
                ),
            }
        }
        let sudo = top.sudo.and_then(|v| match yaml::scalar(v) {
            Ok(Some(Scalar::Bool(b))) => Some(b),
            Ok(Some(Scalar::Null)) => None,
            _ => {
                self.error(
                    Pos::of(v),
                    format!("`sudo` must be true or false, found {}", yaml::describe(v)),
                    Some("write `sudo: true` or `sudo: false`".to_string()),
                );
                None
            }
        });
        let resources = top.resources.map(|v| self.resources(v)).unwrap_or_default();
        let edges = top.edges.map(|v| self.edges(v)).unwrap_or_default();
        let acyclic = self.cycles(&edges);
        let collect = top
            .collect
            .map(|v| self.collect(v, &resources, &edges, acyclic))
            .unwrap_or_default();
        Some(GraphSpec {
            graph,
            comment,
            remote,
            remotes,
            sudo,
            resources,
            edges,
            collect,
            warnings: Vec::new(),
        })
    }

    fn resources(&mut self, v: &'a Node) -> Vec<ResourceSpec> {
        let mut out = Vec::new();
        if yaml::is_null(v) {
            return out;
        }
        let Some(entries) = self.entries(
            v,
            "`resources` must map each kind to a list of resources",
            None,
        ) else {
            return out;
        };
        // One entry per resource: made room for at once rather than rehashed as they come.
        let count = yaml::mapping(v)
            .into_iter()
            .flatten()
            .filter_map(|(_, list)| yaml::sequence(list))
            .map(<[Node]>::len)
            .sum();
        self.declared.reserve(count);
        for (k, list) in entries {
            let Some(kind) = self.key(k) else { continue };
            let info = self.kind_info(kind, Pos::of(k));
            for item in self.list(kind, list) {
                if let Some(spec) = self.resource(kind, info, item) {
                    out.push(spec);
                }
            }
        }
        out
    }

    /// The kind's builder; unknown and not-yet-implemented kinds are reported at `pos`.
    fn kind_info(&mut self, kind: &str, pos: Pos) -> Option<KindInfo> {
        if let Some(info) = self.registry.get(kind) {
            return Some(*info);
        }
        let kinds: Vec<&str> = self.registry.kinds().collect();
        if self.registry.is_unimplemented(kind) {
            let list: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
            self.error(
                pos,
                format!("resource kind `{kind}` is not implemented yet"),
                Some(format!("implemented kinds: {}", list.join(", "))),
            );
        } else {
            self.error(
                pos,
                format!("unknown resource kind `{kind}`"),
                Some(help_for(kind, "kinds", &kinds)),
            );
        }
        None
    }

    fn resource(
        &mut self,
        kind: &'a str,
        info: Option<KindInfo>,
        item: &'a Node,
    ) -> Option<ResourceSpec> {
        let entries = self.entries(
            item,
            &format!("expected a `{kind}` resource (a mapping with `name`)"),
            None,
        )?;
        let mut name_node = None;
        let mut meta_node = None;
        let mut fields: Vec<(&str, &Node, &Node)> = Vec::new();
        for (k, v) in entries {
            let Some(key) = self.key(k) else { continue };
            match key {
                "name" => name_node = Some(v),
                "meta" => meta_node = Some(v),
                _ => fields.push((key, k, v)),
            }
        }
        let Some(nv) = name_node else {
            self.error(
                Pos::of(item),
                format!("`{kind}` resource has no `name`"),
                None,
            );
            return None;
        };
        let raw = self.str("name", nv).unwrap_or_default();
        let (exported, name) = match raw.strip_prefix("@@") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let name_pos = Pos::of(nv);
        if name.is_empty() {
            self.error(name_pos, "resource name must not be empty", None);
            return None;
        }
        // Made for messages only: a valid resource needs no `ResId` of its own here.
        let id = || ResId::new(kind, name);
        match self.declared.entry((kind, name)) {
            Entry::Occupied(first) => {
                let line = first.get().pos.line;
                let id = id();
                self.error(
                    name_pos,
                    format!("duplicate resource `{id}`"),
                    Some(format!("`{id}` is first defined on line {line}")),
                );
                return None;
            }
            Entry::Vacant(slot) => {
                slot.insert(Declared {
                    exported,
                    pos: name_pos,
                });
            }
        }
        let info = info?;

        let meta = self.meta(meta_node);
        let mut ok = meta.is_some();
        let mut params = Map::new();
        // The fields given a value, in file order, to rebuild `params` for a retry.
        let mut values: Vec<(&str, &Node)> = Vec::new();
        for &(key, k, v) in &fields {
            if !info.fields.contains(&key) {
                let mut valid: Vec<&str> = info.fields.to_vec();
                valid.extend(["name", "meta"]);
                self.error(
                    Pos::of(k),
                    format!("unknown field `{key}` for resource kind `{kind}`"),
                    Some(help_for(key, "fields", &valid)),
                );
                ok = false;
                continue;
            }
            match yaml::to_json(v) {
                // mgmt's graphs write an empty value to mean "unset": leave the field out.
                Ok(Value::Null) => {}
                Ok(j) => {
                    params.insert(key.to_string(), j);
                    values.push((key, v));
                }
                Err((pos, msg)) => {
                    self.error(
                        pos,
                        format!("invalid value for `{key}` of `{}`: {msg}", id()),
                        None,
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        let meta = meta.unwrap_or_default();
        // Fields retried as their text, each with the error its typed value got.
        let mut first_errors: BTreeMap<&str, BuildError> = BTreeMap::new();
        // Builders take the parameters by value: only a retry (rare) needs them again.
        let mut first_params = Some(params);
        loop {
            let params = first_params
                .take()
                .unwrap_or_else(|| retry_params(&values, &first_errors));
            let err = match (info.build)(name, Value::Object(params), meta.clone()) {
                Ok(resource) => {
                    for w in resource.build_warnings() {
                        // At the field's key: a block scalar's value starts a line later.
                        let at = fields
                            .iter()
                            .rev()
                            .find(|(key, _, _)| *key == w.field)
                            .map(|(_, k, _)| Pos::of(k))
                            .unwrap_or(name_pos);
                        self.warn(at, format!("`{}`: {}", id(), w.message));
                    }
                    return Some(ResourceSpec {
                        resource,
                        exported,
                        span: name_pos.into(),
                    });
                }
                Err(e) => e,
            };
            // The failing top-level field (`fields.x` or `sema[0]` belong to `fields`, `sema`),
            // as given in the file (the last time, should it be given twice).
            let field = err
                .field
                .as_deref()
                .map(|f| f.split(['.', '[']).next().unwrap_or(f));
            let given = field.and_then(|f| values.iter().rev().find(|(k, _)| *k == f).copied());
            if let Some((key, v)) = given
                && !first_errors.contains_key(key)
                && yaml::plain_text_of_non_string(v).is_some()
            {
                // mgmt read `content: 42` or `cmd: true` into string fields as their text:
                // try the text before reporting the typed value as wrong.
                first_errors.insert(key, err);
                continue;
            }
            let err = given
                .and_then(|(key, _)| first_errors.remove(key))
                .unwrap_or(err);
            // Builders name the field in their message; the position says where it is.
            let at = given.map(|(_, v)| Pos::of(v)).unwrap_or(name_pos);
            self.error(at, format!("invalid `{}`: {}", id(), err.message), None);
            return None;
        }
    }

    /// `meta:`: each field checked on its own so errors point at the field.
    fn meta(&mut self, node: Option<&Node>) -> Option<Meta> {
        let Some(node) = node.filter(|n| !yaml::is_null(n)) else {
            return Some(Meta::default());
        };
        let entries = self.entries(node, "`meta` must be a mapping", None)?;
        let mut ok = true;
        let mut meta = Meta::default();
        for (k, v) in entries {
            let Some(key) = self.key(k) else {
                ok = false;
                continue;
            };
            if !META_KEYS.contains(&key) {
                self.error(
                    Pos::of(k),
                    format!("unknown meta field `{key}`"),
                    Some(help_for(key, "meta fields", META_KEYS)),
                );
                ok = false;
                continue;
            }
            if yaml::is_null(v) {
                continue;
            }
            let set = match yaml::scalar(v) {
                // mgmt's default limit is `.inf` ("no limit"), which JSON cannot hold: a
                // floating-point `limit` is read as the number it is, not through JSON.
                Ok(Some(Scalar::Float(f))) if key == "limit" => {
                    Rate::limit(f).map(|limit| meta.limit = limit)
                }
                _ => match yaml::to_json(v) {
                    Ok(j) => meta.set(key, &j),
                    Err((pos, msg)) => {
                        self.error(pos, format!("invalid value for `meta.{key}`: {msg}"), None);
                        ok = false;
                        continue;
                    }
                },
            };
            if let Err(e) = set {
                self.error(
                    Pos::of(v),
                    format!("invalid value for `meta.{key}`: {e}"),
                    None,
                );
                ok = false;
            }
        }
        ok.then_some(meta)
    }

    fn edges(&mut self, v: &Node) -> Vec<EdgeSpec> {
        let mut out = Vec::new();
        for item in self.list("edges", v) {
            if let Some(edge) = self.edge(item) {
                out.push(edge);
            }
        }
        out
    }

    fn edge(&mut self, item: &Node) -> Option<EdgeSpec> {
        let entries = self.entries(
            item,
            "expected an edge (a mapping with `from` and `to`)",
            None,
        )?;
        let mut name = String::new();
        let (mut from, mut to) = (None, None);
        let (mut from_seen, mut to_seen) = (false, false);
        let mut notify = false;
        let mut ok = true;
        for (k, v) in entries {
            let Some(key) = self.key(k) else {
                ok = false;
                continue;
            };
            match key {
                "name" => name = self.string("name", v).unwrap_or_default(),
                "from" => {
                    from_seen = true;
                    from = self.vertex("from", v, &end_help("from"));
                }
                "to" => {
                    to_seen = true;
                    to = self.vertex("to", v, &end_help("to"));
                }
                "notify" => match yaml::scalar(v) {
                    Ok(Some(Scalar::Bool(b))) => notify = b,
                    Ok(Some(Scalar::Null)) => {}
                    _ => {
                        let help = Some("write `notify: true` or `notify: false`".to_string());
                        self.error(
                            Pos::of(v),
                            format!(
                                "`notify` must be true or false, found {}",
                                yaml::describe(v)
                            ),
                            help,
                        );
                        ok = false;
                    }
                },
                other => {
                    self.error(
                        Pos::of(k),
                        format!("unknown edge field `{other}`"),
                        Some(help_for(other, "edge fields", EDGE_KEYS)),
                    );
                    ok = false;
                }
            }
        }
        let label = if name.is_empty() {
            "edge".to_string()
        } else {
            format!("edge `{name}`")
        };
        for (seen, end) in [(from_seen, "from"), (to_seen, "to")] {
            if !seen {
                self.error(
                    Pos::of(item),
                    format!("{label} has no `{end}`"),
                    Some(end_help(end)),
                );
                ok = false;
            }
        }
        let from = from.and_then(|(id, pos)| self.endpoint(&label, id, pos));
        let to = to.and_then(|(id, pos)| self.endpoint(&label, id, pos));
        match (from, to) {
            (Some(from), Some(to)) if ok => Some(EdgeSpec {
                name,
                from,
                to,
                notify,
                span: Pos::of(item).into(),
            }),
            _ => None,
        }
    }

    /// `from:` / `to:` (and the items of a collect rule's `notify:`) written as
    /// `{kind: K, name: N}`. Kinds are matched case-insensitively, as mgmt did. The position
    /// returned is that of the name, for later errors. `help` shows how to write it.
    fn vertex(&mut self, end: &str, v: &Node, help: &str) -> Option<(ResId, Pos)> {
        let entries = self.entries(
            v,
            &format!("`{end}` must be a mapping with `kind` and `name`"),
            Some(help.to_string()),
        )?;
        let (mut kind, mut name) = (None, None);
        let mut ok = true;
        for (k, val) in entries {
            let Some(key) = self.key(k) else {
                ok = false;
                continue;
            };
            match key {
                // `res` and `type` are what mgmt's first releases called `kind`.
                "kind" | "res" | "type" => {
                    kind = self.string("kind", val).map(|s| s.to_lowercase())
                }
                "name" => name = self.string("name", val).map(|s| (s, Pos::of(val))),
                other => {
                    self.error(
                        Pos::of(k),
                        format!("unknown field `{other}` in `{end}`"),
                        Some(help_for(other, "fields", VERTEX_KEYS)),
                    );
                    ok = false;
                }
            }
        }
        match (
            kind.filter(|k| !k.is_empty()),
            name.filter(|(n, _)| !n.is_empty()),
        ) {
            (Some(kind), Some((name, pos))) if ok => Some((ResId::new(kind, name), pos)),
            (Some(_), Some(_)) => None,
            (kind, _) => {
                let missing = if kind.is_none() { "kind" } else { "name" };
                self.error(
                    Pos::of(v),
                    format!("`{end}` has no `{missing}`"),
                    Some(help.to_string()),
                );
                None
            }
        }
    }

    /// Checks that an edge endpoint is a local resource of this graph.
    fn endpoint(&mut self, label: &str, id: ResId, pos: Pos) -> Option<ResId> {
        let exported_help = || {
            Some("exported (`@@`) resources are applied by the hosts that collect them, not in this graph".to_string())
        };
        let plain = ResId::new(&id.kind, id.name.strip_prefix("@@").unwrap_or(&id.name));
        match self
            .declared
            .get(&(plain.kind.as_str(), plain.name.as_str()))
        {
            Some(d) if d.exported => {
                self.error(
                    pos,
                    format!("{label}: exported resource `{plain}` cannot be an edge endpoint"),
                    exported_help(),
                );
                None
            }
            Some(_) if plain == id => Some(id),
            _ => {
                let mut local: Vec<ResId> = self
                    .declared
                    .iter()
                    .filter(|(_, d)| !d.exported)
                    .map(|(&(kind, name), _)| ResId::new(kind, name))
                    .collect();
                // In order, so that a tie between suggestions always goes the same way.
                local.sort();
                let local: Vec<String> = local.iter().map(ResId::to_string).collect();
                let wanted = id.to_string();
                let help = crate::diag::suggest(&wanted, local.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"));
                self.error(
                    pos,
                    format!("{label}: no resource `{wanted}` in this graph"),
                    help,
                );
                None
            }
        }
    }

    /// Reports the first cycle among the edges, naming its vertices in order, at the edge that
    /// leaves the cycle's first vertex. False when there is one.
    fn cycles(&mut self, edges: &[EdgeSpec]) -> bool {
        let mut dag = graph::Dag::new();
        for e in edges {
            dag.add_vertex(e.from.clone());
            dag.add_vertex(e.to.clone());
            if dag.add_edge(&e.from, &e.to).is_err() {
                return true; // unreachable: both vertices were just added
            }
        }
        let Err(cycle) = dag.topo_order() else {
            return true;
        };
        let first = &cycle.vertices[0];
        let second = &cycle.vertices[1 % cycle.vertices.len()];
        let at = edges
            .iter()
            .find(|e| &e.from == first && &e.to == second)
            .map(|e| Pos {
                line: e.span.line,
                col: e.span.col,
                width: 1,
            })
            .unwrap_or_else(Pos::start);
        self.error(
            at,
            format!("the edges form a {cycle}"),
            Some("a graph must be acyclic: remove or reverse one of these edges".to_string()),
        );
        false
    }

    /// Reports a cycle closed by a collect rule's `notify`: a target that leads back, through
    /// the edges and the automatic edges, to something the collected resources depend on (for
    /// files: the directory they land in, or one above it). Collected resources themselves are
    /// not known yet, so a stand-in built from the pattern takes their place (default meta, so
    /// automatic edges on, as exports usually have them); a kind that cannot be built from a
    /// name alone has no automatic edges to check here, and the engine still rejects a cyclic
    /// graph when it is swapped in.
    fn notify_cycle(
        &mut self,
        rule: &CollectSpec,
        targets: &[(ResId, Pos)],
        resources: &[ResourceSpec],
        edges: &[EdgeSpec],
    ) {
        if rule.pattern.is_empty() {
            return; // collected resources keep their exporter's name: nothing to stand in
        }
        let Some(info) = self.registry.get(&rule.kind) else {
            return;
        };
        // For files the pattern is the directory collected files land in (see the cli's
        // collect module); for other kinds a prefix of the name.
        let name = if rule.kind == "file" {
            std::path::Path::new(&rule.pattern)
                .join("collected")
                .to_string_lossy()
                .into_owned()
        } else {
            format!("{}collected", rule.pattern)
        };
        let Ok(stand_in) = (info.build)(&name, Value::Object(Map::new()), Meta::default()) else {
            return;
        };
        let stand_in_id = ResId::new(&rule.kind, "<collected>");
        let mut vertices: Vec<(ResId, &dyn resource::Resource)> = resources
            .iter()
            .filter(|r| !r.exported)
            .map(|r| (r.resource.id(), &*r.resource))
            .collect();
        vertices.push((stand_in_id.clone(), &*stand_in));
        let mut dag = graph::Dag::new();
        for (id, _) in &vertices {
            dag.add_vertex(id.clone());
        }
        let mut all_edges: Vec<(ResId, ResId)> = edges
            .iter()
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect();
        // Automatic edges, as the engine adds them.
        let refs: Vec<(&ResId, &dyn resource::Resource)> =
            vertices.iter().map(|(id, r)| (id, *r)).collect();
        all_edges.extend(
            resource::auto_edges(&refs)
                .into_iter()
                .map(|(parent, child)| (parent.clone(), child.clone())),
        );
        all_edges.extend(
            targets
                .iter()
                .map(|(t, _)| (stand_in_id.clone(), t.clone())),
        );
        for (from, to) in &all_edges {
            if dag.add_edge(from, to).is_err() {
                return; // an edge to a resource that failed to build, already reported
            }
        }
        let Err(cycle) = dag.topo_order() else { return };
        let at = targets
            .iter()
            .find(|(t, _)| cycle.vertices.contains(t))
            .map(|(_, pos)| *pos)
            .unwrap_or(targets[0].1);
        self.error(
            at,
            format!("`notify` of a collect rule closes a {cycle}"),
            Some(
                "collected resources depend on whatever manages where they land (automatic edges): notify a resource that does not lead back to them"
                    .to_string(),
            ),
        );
    }

    /// `collect:`. `check_cycles` is false when the edges alone already form a cycle (reported
    /// once, by `cycles`).
    fn collect(
        &mut self,
        v: &Node,
        resources: &[ResourceSpec],
        edges: &[EdgeSpec],
        check_cycles: bool,
    ) -> Vec<CollectSpec> {
        let mut out = Vec::new();
        for item in self.list("collect", v) {
            let Some(entries) = self.entries(
                item,
                "expected a collect rule (a mapping with `kind` and `pattern`)",
                None,
            ) else {
                continue;
            };
            let (mut kind, mut pattern) = (None, None);
            let mut notify = Vec::new();
            let mut allow: Vec<(Allow, Pos)> = Vec::new();
            let mut pattern_pos = Pos::of(item);
            let mut ok = true;
            for (k, val) in entries {
                let Some(key) = self.key(k) else {
                    ok = false;
                    continue;
                };
                match key {
                    "kind" | "type" => {
                        kind = self
                            .string("kind", val)
                            .map(|s| s.to_lowercase())
                            .filter(|s| !s.is_empty());
                        if let Some(kd) = &kind
                            && self.kind_info(kd, Pos::of(val)).is_none()
                        {
                            ok = false;
                        }
                    }
                    "pattern" => {
                        pattern = Some(self.string("pattern", val).unwrap_or_default());
                        pattern_pos = Pos::of(val);
                    }
                    "notify" => match self.notify_targets(val) {
                        Some(targets) => notify = targets,
                        None => ok = false,
                    },
                    "allow" => match self.allow_values(val) {
                        Some(values) => allow = values,
                        None => ok = false,
                    },
                    other => {
                        self.error(
                            Pos::of(k),
                            format!("unknown collect field `{other}`"),
                            Some(help_for(other, "collect fields", COLLECT_KEYS)),
                        );
                        ok = false;
                    }
                }
            }
            let help = Some("write `- kind: file` and `pattern: /tmp/`".to_string());
            match (kind, pattern) {
                (Some(kind), Some(pattern)) if ok => {
                    if !self.allow_fits(&kind, &pattern, pattern_pos, &allow) {
                        continue;
                    }
                    let rule = CollectSpec {
                        kind,
                        pattern,
                        notify: notify.iter().map(|(id, _)| id.clone()).collect(),
                        allow: allow.iter().map(|(a, _)| *a).collect(),
                        span: Pos::of(item).into(),
                    };
                    if check_cycles && !notify.is_empty() {
                        self.notify_cycle(&rule, &notify, resources, edges);
                    }
                    out.push(rule);
                }
                (None, _) => self.error(Pos::of(item), "collect rule has no `kind`", help),
                (_, None) => self.error(Pos::of(item), "collect rule has no `pattern`", help),
                _ => {}
            }
        }
        out
    }

    /// A collect rule's `allow:`: a list of [`Allow`] names (null: none). `None` when any entry
    /// is wrong (each is reported); duplicates are dropped.
    fn allow_values(&mut self, v: &Node) -> Option<Vec<(Allow, Pos)>> {
        let names: Vec<&str> = Allow::ALL.iter().map(|a| a.name()).collect();
        let help = || {
            Some(format!(
                "write e.g. `allow: [mode, owner]`; valid values: {}",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        if yaml::is_null(v) {
            return Some(Vec::new());
        }
        let Some(items) = yaml::sequence(v) else {
            self.error(
                Pos::of(v),
                format!(
                    "`allow` of a collect rule must be a list, found {}",
                    yaml::describe(v)
                ),
                help(),
            );
            return None;
        };
        let mut out: Vec<(Allow, Pos)> = Vec::new();
        let mut ok = true;
        for item in items {
            let text = match yaml::text(item) {
                Ok(Some(t)) => t,
                _ => {
                    self.error(
                        Pos::of(item),
                        format!(
                            "an `allow` value must be a name, found {}",
                            yaml::describe(item)
                        ),
                        help(),
                    );
                    ok = false;
                    continue;
                }
            };
            match Allow::from_name(text) {
                Some(a) => {
                    if !out.iter().any(|(seen, _)| *seen == a) {
                        out.push((a, Pos::of(item)));
                    }
                }
                None => {
                    self.error(
                        Pos::of(item),
                        format!("unknown `allow` value `{text}`"),
                        Some(help_for(text, "`allow` values", &names)),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Whether a rule's `allow` suits its kind and pattern (each misfit reported):
    ///
    /// - every value but `meta` widens what a *file* may carry, so another kind cannot name it;
    /// - a file rule with an empty pattern would let every exporter choose any path on this
    ///   host: refused here, at load, rather than by refusing each export at run time (a rule
    ///   that can never collect anything is a mistake to point out before it runs), unless
    ///   `allow: [path]` says that is meant;
    /// - `path` only means something with an empty pattern (otherwise collected files always
    ///   land in the pattern's directory), so naming it with a pattern is refused as misleading.
    fn allow_fits(
        &mut self,
        kind: &str,
        pattern: &str,
        pattern_pos: Pos,
        allow: &[(Allow, Pos)],
    ) -> bool {
        let mut ok = true;
        if kind != "file" {
            for (a, pos) in allow.iter().filter(|(a, _)| !a.fits(kind)) {
                self.error(
                    *pos,
                    format!("`allow: {a}` applies only to `file` collect rules, not `{kind}`"),
                    Some(
                        "only `meta` can be allowed for other kinds (and `path` for `authorized_key`)"
                            .to_string(),
                    ),
                );
                ok = false;
            }
            return ok;
        }
        let path = allow.iter().find(|(a, _)| *a == Allow::Path);
        match (pattern.is_empty(), path) {
            (true, None) => {
                self.error(
                    pattern_pos,
                    "a `file` collect rule with an empty `pattern` would let every exporting host choose any path on this host",
                    Some(
                        "give the directory collected files land in (`pattern: /tmp/collected/`), or write `allow: [path]` to accept the exporters' own paths"
                            .to_string(),
                    ),
                );
                ok = false;
            }
            (false, Some((_, pos))) => {
                self.error(
                    *pos,
                    "`allow: path` applies only to a `file` rule with an empty `pattern`",
                    Some(format!(
                        "collected files always land in `{pattern}`: drop `path` from `allow`"
                    )),
                );
                ok = false;
            }
            _ => {}
        }
        ok
    }

    /// A collect rule's `notify:`: a list of local resources, `[{kind: K, name: N}, ...]`, each
    /// of which gets a notify edge from every resource the rule collects. `None` when any entry
    /// is wrong (each is reported); duplicates are dropped.
    fn notify_targets(&mut self, v: &Node) -> Option<Vec<(ResId, Pos)>> {
        let help = "write `notify: [{kind: KIND, name: NAME}]`";
        if yaml::is_null(v) {
            return Some(Vec::new());
        }
        let Some(items) = yaml::sequence(v) else {
            self.error(
                Pos::of(v),
                format!(
                    "`notify` of a collect rule must be a list of resources, found {}",
                    yaml::describe(v)
                ),
                Some(help.to_string()),
            );
            return None;
        };
        let mut out: Vec<(ResId, Pos)> = Vec::new();
        let mut ok = true;
        for item in items {
            let target = self.vertex("notify", item, help).and_then(|(id, pos)| {
                Some((self.endpoint("`notify` of a collect rule", id, pos)?, pos))
            });
            match target {
                Some((id, pos)) => {
                    if !out.iter().any(|(seen, _)| *seen == id) {
                        out.push((id, pos));
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}
