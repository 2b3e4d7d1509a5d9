//! Fuzzing the YAML front end, property-based (proptest: stable Rust has no coverage-guided
//! fuzzer). Whatever the input, `parse` and `parse_file` return a graph or diagnostics, never
//! panic and never overflow the stack, and every diagnostic points inside the input. Inputs:
//! arbitrary bytes, strings built from YAML's own tokens, generated graph documents (valid
//! ones, which must parse to exactly what was generated, and valid-ish ones full of anchors,
//! tags, duplicate keys, weird scalars and deep nesting), and mutations of `examples/`.
//!
//! Bounded: each property runs a fixed number of cases (a few seconds for the whole file in a
//! debug build); `MGMT_FUZZ_CASES=N` runs N cases of every property, `PROPTEST_RNG_SEED=S`
//! replays one run. A failure is saved under `tests/fuzz-regressions/` and replayed first by
//! later runs; each crash found is kept below as a plain test with its minimized input.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use resource::{Registry, ResId};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------ harness

/// `default` cases, or `MGMT_FUZZ_CASES`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("MGMT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz-regressions/fuzz.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// The test kinds (typed fields, predictable builders) and the real ones (whose builders
/// parse modes, paths, owners...).
fn registries() -> [Registry; 2] {
    [common::registry(), resources::registry()]
}

/// Parses `text` with both registries, checking what comes back.
fn check_text(text: &str) {
    for registry in registries() {
        check_parse(text, &registry);
    }
}

fn check_parse(text: &str, registry: &Registry) -> Option<yamlgraph::GraphSpec> {
    match yamlgraph::parse("fuzz.yaml", text, registry) {
        Ok(spec) => {
            // What callers do next with a graph.
            let graph = spec.local_graph();
            assert!(graph.vertices.len() <= spec.resources.len());
            let _ = spec.exported().count();
            Some(spec)
        }
        Err(d) => {
            check_diagnostics(text, &d);
            None
        }
    }
}

/// Every diagnostic is at a line of `text` (or the one after it, for an empty file) and a
/// column within that line (or just past its end), and shows that line; rendering works.
fn check_diagnostics(text: &str, d: &yamlgraph::Diagnostics) {
    assert!(
        !d.0.is_empty(),
        "an error without a diagnostic for {text:?}"
    );
    let lines = yaml_lines(text);
    for diag in &d.0 {
        let at = format!("{}:{} ({}) in {text:?}", diag.line, diag.col, diag.message);
        assert_eq!(diag.file, "fuzz.yaml");
        assert!(!diag.message.is_empty(), "empty message at {at}");
        assert!(diag.line >= 1, "no line: {at}");
        assert!(diag.line <= lines.len() + 1, "past the last line: {at}");
        assert!(diag.col >= 1, "no column: {at}");
        assert!(diag.width >= 1, "no width: {at}");
        let line = lines.get(diag.line - 1).copied().unwrap_or("");
        assert!(
            diag.col <= line.chars().count() + 1,
            "past the end of its line {line:?}: {at}"
        );
        assert_eq!(diag.source_line, line, "the wrong source line: {at}");
    }
    let _ = d.to_string();
    serde_json::to_string(d).expect("diagnostics serialise");
}

/// The lines of `text` as YAML counts them: `\n`, `\r\n` and a lone `\r` each end one.
fn yaml_lines(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut lines = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        let brk = match (bytes[i], bytes.get(i + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r' | b'\n', _) => 1,
            _ => 0,
        };
        if brk == 0 {
            i += 1;
        } else {
            lines.push(&text[start..i]);
            i += brk;
            start = i;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Runs `f` on a thread with a stack of `bytes`, so that recursion the depth limit misses
/// shows up as a crash here rather than on a bigger stack elsewhere.
fn on_small_stack(bytes: usize, f: impl FnOnce() + Send + 'static) {
    let handle = std::thread::Builder::new()
        .stack_size(bytes)
        .spawn(f)
        .expect("thread starts");
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

fn examples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("example reads");
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "examples found: {out:?}");
    out
}

/// A fresh path for `parse_file`, this process's own.
fn temp_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("yamlgraph-fuzz-{}-{n}.yaml", std::process::id()))
}

// ------------------------------------------------------------------------------ YAML trees

/// How a scalar is written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Style {
    Plain,
    Single,
    Double,
    /// `|` in block context (double-quoted in flow context).
    Literal,
}

/// A YAML node to render; what [`render`] writes may or may not be valid YAML, depending on
/// what the generator put in.
#[derive(Clone, Debug)]
enum Y {
    S(String, Style),
    /// A tag written before the node, as given (`!!str`, `!foo`).
    Tag(String, Box<Y>),
    Seq(Vec<Y>),
    Map(Vec<(Y, Y)>),
    Anchor(String, Box<Y>),
    Alias(String),
}

fn s(text: impl Into<String>) -> Y {
    Y::S(text.into(), Style::Plain)
}

fn dq(text: impl Into<String>) -> Y {
    Y::S(text.into(), Style::Double)
}

fn map(entries: Vec<(&str, Y)>) -> Y {
    Y::Map(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
}

/// How a whole document is laid out.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Everything in flow style (`{...}`, `[...]`), else block style with flow for empties.
    flow: bool,
    /// Block sequences of a mapping's value at the key's own indentation (`key:\n- x`).
    compact_seqs: bool,
    /// Indentation step of block collections.
    indent: usize,
}

/// `text` double-quoted, every character YAML could read otherwise escaped.
fn double_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20
                || (0x7f..0xa0).contains(&(c as u32))
                || c == '\u{feff}'
                || c == '\u{fffe}'
                || c == '\u{ffff}' =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn scalar_token(text: &str, style: Style, flow: bool) -> String {
    match style {
        Style::Plain => text.to_string(),
        Style::Single => single_quoted(text),
        Style::Double => double_quoted(text),
        Style::Literal if flow => double_quoted(text),
        // Rendered by the block writer, which knows the indentation.
        Style::Literal => String::new(),
    }
}

fn render(doc: &Y, layout: Layout) -> String {
    let mut out = String::new();
    if layout.flow {
        flow(&mut out, doc);
        out.push('\n');
    } else {
        block_value(&mut out, doc, 0, layout, true);
    }
    out
}

fn flow(out: &mut String, y: &Y) {
    match y {
        Y::S(text, style) => out.push_str(&scalar_token(text, *style, true)),
        Y::Tag(tag, inner) => {
            out.push_str(tag);
            out.push(' ');
            flow(out, inner);
        }
        Y::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(out, item);
            }
            out.push(']');
        }
        Y::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(out, k);
                // After an alias a colon needs a space before it, or it is part of the name.
                out.push_str(if matches!(k, Y::Alias(_)) {
                    " : "
                } else {
                    ": "
                });
                flow(out, v);
            }
            out.push('}');
        }
        Y::Anchor(name, inner) => {
            let _ = write!(out, "&{name} ");
            flow(out, inner);
        }
        Y::Alias(name) => {
            let _ = write!(out, "*{name}");
        }
    }
}

fn is_block_collection(y: &Y) -> bool {
    match y {
        Y::Seq(items) => !items.is_empty(),
        Y::Map(entries) => !entries.is_empty(),
        Y::Anchor(_, inner) | Y::Tag(_, inner) => is_block_collection(inner),
        _ => false,
    }
}

/// Writes `y` as the value after `key:` or `- ` (or as the document when `top`): what goes on
/// the current line, then the lines below it at `indent`.
fn block_value(out: &mut String, y: &Y, indent: usize, layout: Layout, top: bool) {
    match y {
        Y::S(text, Style::Literal) => {
            out.push_str(if top { "|\n" } else { " |\n" });
            let pad = " ".repeat(indent.max(1));
            for line in text.lines() {
                out.push_str(&pad);
                out.push_str(line);
                out.push('\n');
            }
        }
        Y::Anchor(..) | Y::Tag(..) => {
            // Every property on this line, then the node.
            let mut node = y;
            let mut marks = Vec::new();
            while let Y::Anchor(mark, inner) | Y::Tag(mark, inner) = node {
                marks.push(if matches!(node, Y::Anchor(..)) {
                    format!("&{mark}")
                } else {
                    mark.clone()
                });
                node = inner;
            }
            out.push_str(if top { "" } else { " " });
            out.push_str(&marks.join(" "));
            if is_block_collection(node) {
                out.push('\n');
                block_collection(out, node, indent, layout);
            } else {
                block_value(out, node, indent, layout, false);
            }
        }
        _ if is_block_collection(y) => {
            if !top {
                out.push('\n');
            }
            block_collection(out, y, indent, layout);
        }
        _ => {
            if !top {
                out.push(' ');
            }
            flow(out, y);
            out.push('\n');
        }
    }
}

/// A non-empty block sequence or mapping, every line at `indent`.
fn block_collection(out: &mut String, y: &Y, indent: usize, layout: Layout) {
    let pad = " ".repeat(indent);
    match y {
        Y::Seq(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                block_value(out, item, indent + layout.indent, layout, false);
            }
        }
        Y::Map(entries) => {
            for (k, v) in entries {
                out.push_str(&pad);
                match k {
                    // A collection as a key: YAML's explicit `? key` form, in flow style.
                    Y::Seq(_) | Y::Map(_) => {
                        out.push_str("? ");
                        flow(out, k);
                        out.push('\n');
                        out.push_str(&pad);
                        out.push(':');
                    }
                    Y::Alias(_) => {
                        flow(out, k);
                        out.push_str(" :");
                    }
                    _ => {
                        flow(out, k);
                        out.push(':');
                    }
                }
                let inner = match v {
                    Y::Seq(_) if layout.compact_seqs => indent,
                    _ => indent + layout.indent,
                };
                block_value(out, v, inner, layout, false);
            }
        }
        _ => unreachable!("a block collection"),
    }
}

// ------------------------------------------------------------------------------ valid graphs

/// A field value of the test registry's kinds, with the JSON the builder must receive.
#[derive(Clone, Debug)]
struct Field {
    key: &'static str,
    yaml: Y,
    json: Value,
}

#[derive(Clone, Debug)]
struct Res {
    kind: &'static str,
    name: String,
    exported: bool,
    /// How the name (with its `@@`) is written.
    name_style: Style,
    fields: Vec<Field>,
    meta: Option<Y>,
}

#[derive(Clone, Debug)]
struct Graph {
    name: String,
    comment: Option<String>,
    resources: Vec<Res>,
    /// By index into `resources`, `from < to` (so never a cycle), both local.
    edges: Vec<(usize, usize, Option<String>, bool)>,
    collect: Vec<Rule>,
    /// Keys: `types` for `resources`, `res`/`type` for an edge end's `kind`...
    old_names: bool,
    /// Give the first resource with a `meta` an anchor, and the others an alias to it.
    share_meta: bool,
    layout: Layout,
    /// `---` before the document, `...` after it.
    markers: (bool, bool),
}

#[derive(Clone, Debug)]
struct Rule {
    kind: &'static str,
    pattern: String,
    allow: Vec<&'static str>,
    notify: Vec<usize>,
}

const KINDS: [&str; 5] = ["file", "exec", "msg", "timer", "noop"];

/// Text that is any string, but with YAML's troublemakers over-represented.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_./-]{0,12}",
        ".{0,16}",
        prop::collection::vec(
            prop::sample::select(vec![
                "a",
                " ",
                ":",
                ": ",
                "#",
                " #",
                "-",
                "- ",
                "'",
                "\"",
                "\\",
                "\n",
                "\r\n",
                "\t",
                "{",
                "}",
                "[",
                "]",
                ",",
                "&",
                "*",
                "!",
                "|",
                ">",
                "%",
                "@",
                "`",
                "?",
                "~",
                "é",
                "\u{feff}",
                "\u{85}",
                "\u{2028}",
                "\u{0}",
                "\u{7f}",
                "\u{1f600}",
                "0",
                "1.5",
                "true",
                "null",
                ".inf",
                "0x1F",
                "---",
                "...",
            ]),
            0..10
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// A scalar that is a string (and the string): quoted any way that holds it, or plain when
/// plain text reads back as that same string.
fn string_scalar(text: String) -> impl Strategy<Value = (Y, String)> {
    let plain_ok = regex_like_plain(&text);
    let single_ok = text
        .chars()
        .all(|c| !c.is_control() && !matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}'));
    let mut styles = vec![Style::Double];
    if plain_ok {
        styles.push(Style::Plain);
    }
    if single_ok {
        styles.push(Style::Single);
    }
    prop::sample::select(styles).prop_map(move |style| (Y::S(text.clone(), style), text.clone()))
}

/// Whether `text` written plain is read back as the string `text` (conservatively).
fn regex_like_plain(text: &str) -> bool {
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !matches!(
            text,
            "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
        )
}

/// A value for a string field: a string, or a plain number or boolean, which a string field
/// takes as its text (as mgmt's YAML library did).
fn str_field() -> impl Strategy<Value = (Y, Value)> {
    prop_oneof![
        4 => any_text()
            .prop_flat_map(string_scalar)
            .prop_map(|(y, text)| (y, Value::String(text))),
        1 => prop::sample::select(vec![
            "12", "-3", "0x1F", "0o17", "1.5", "-.5", "1e3", "true", "False", "0644", "-07", ".inf",
            "-.Inf", ".nan",
        ])
        .prop_map(|t| (s(t), json!(t))),
        1 => "[a-z]{1,6}( [a-z]{1,6}){0,3}\n([a-z]{1,6}( [a-z]{1,6}){0,3}\n){0,3}"
            .prop_map(|t| (Y::S(t.clone(), Style::Literal), Value::String(t))),
    ]
}

fn uint_field() -> impl Strategy<Value = (Y, Value)> {
    prop_oneof![
        (0..=i64::MAX as u64).prop_map(|n| (s(n.to_string()), json!(n))),
        (0u64..4096).prop_map(|n| (s(format!("0x{n:X}")), json!(n))),
        (0u64..4096).prop_map(|n| (s(format!("0o{n:o}")), json!(n))),
        // saphyr reads a quoted scalar as a string whatever its tag (`!!int "5"` is "5").
        (0u64..100).prop_map(|n| (Y::Tag("!!int".into(), Box::new(s(n.to_string()))), json!(n))),
    ]
}

fn bool_field() -> impl Strategy<Value = (Y, Value)> {
    prop::sample::select(vec![
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ])
    .prop_map(|(t, b)| (s(t), json!(b)))
}

fn map_field() -> impl Strategy<Value = (Y, Value)> {
    prop::collection::btree_map("[a-z]{1,6}", any_text(), 0..4).prop_flat_map(|m| {
        let entries: Vec<_> = m
            .into_iter()
            .map(|(k, v)| string_scalar(v).prop_map(move |(y, t)| (k.clone(), y, t)))
            .collect();
        entries.prop_map(|entries| {
            let json: serde_json::Map<String, Value> = entries
                .iter()
                .map(|(k, _, t)| (k.clone(), Value::String(t.clone())))
                .collect();
            let key = |k: String| if regex_like_plain(&k) { s(k) } else { dq(k) };
            let yaml = Y::Map(entries.into_iter().map(|(k, y, _)| (key(k), y)).collect());
            (yaml, Value::Object(json))
        })
    })
}

fn fields_of(kind: &'static str) -> BoxedStrategy<Vec<Field>> {
    type Gen = fn() -> BoxedStrategy<(Y, Value)>;
    let str_: Gen = || str_field().boxed();
    let uint: Gen = || uint_field().boxed();
    let bool_: Gen = || bool_field().boxed();
    let map_: Gen = || map_field().boxed();
    let spec: Vec<(&'static str, Gen)> = match kind {
        "file" => vec![
            ("path", str_),
            ("content", str_),
            ("state", str_),
            ("mode", str_),
            ("owner", str_),
            ("recurse", bool_),
            ("force", bool_),
        ],
        "exec" => vec![
            ("shell", str_),
            ("timeout", uint),
            ("watchcmd", str_),
            ("pollint", uint),
            ("state", str_),
        ],
        "msg" => vec![
            ("body", str_),
            ("priority", str_),
            ("fields", map_),
            ("journal", bool_),
        ],
        "timer" => vec![("interval", uint)],
        _ => vec![],
    };
    let optional: Vec<_> = spec
        .into_iter()
        .map(|(key, gen_)| {
            prop::option::weighted(0.4, gen_())
                .prop_map(move |v| v.map(|(yaml, json)| Field { key, yaml, json }))
        })
        .collect();
    let cmd = if kind == "exec" {
        // `cmd` is required.
        str_field()
            .prop_map(|(yaml, json)| {
                Some(Field {
                    key: "cmd",
                    yaml,
                    json,
                })
            })
            .boxed()
    } else {
        Just(None).boxed()
    };
    (optional, cmd)
        .prop_map(|(fields, cmd)| {
            cmd.into_iter()
                .chain(fields.into_iter().flatten())
                .collect()
        })
        .prop_shuffle()
        .boxed()
}

fn meta_value() -> impl Strategy<Value = Y> {
    let field = prop_oneof![
        (-1i64..100).prop_map(|n| ("retry", s(n.to_string()))),
        (0u64..10_000).prop_map(|n| ("delay", s(n.to_string()))),
        (0u64..100).prop_map(|n| ("poll", s(n.to_string()))),
        prop::sample::select(vec![".inf", "0", "1.5", "10", "+.inf"]).prop_map(|t| ("limit", s(t))),
        (0u64..10).prop_map(|n| ("burst", s(n.to_string()))),
        bool_field().prop_map(|(y, _)| ("noop", y)),
        bool_field().prop_map(|(y, _)| ("autoedge", y)),
        bool_field().prop_map(|(y, _)| ("autogroup", y)),
        prop::collection::btree_set("[a-z]{1,4}(:[1-9])?", 0..3)
            .prop_map(|set| ("sema", Y::Seq(set.into_iter().map(dq).collect()))),
    ];
    prop::collection::vec(field, 0..5).prop_map(|fields| {
        // One of each key: YAML refuses duplicate keys.
        let mut seen = Vec::new();
        Y::Map(
            fields
                .into_iter()
                .filter(|(k, _)| {
                    let new = !seen.contains(k);
                    seen.push(*k);
                    new
                })
                .map(|(k, v)| (s(k), v))
                .collect(),
        )
    })
}

fn resource(kind: &'static str) -> impl Strategy<Value = Res> {
    (
        any_text().prop_filter("a name", |n| !n.is_empty() && !n.starts_with("@@")),
        prop::bool::weighted(0.2),
        prop::sample::select(vec![Style::Plain, Style::Single, Style::Double]),
        fields_of(kind),
        prop::option::weighted(0.3, meta_value()),
    )
        .prop_map(move |(name, exported, name_style, fields, meta)| Res {
            kind,
            name,
            exported,
            name_style,
            fields,
            meta,
        })
}

fn graph() -> impl Strategy<Value = Graph> {
    let resources = prop::collection::vec(
        prop::sample::select(KINDS.to_vec()).prop_flat_map(resource),
        0..8,
    )
    .prop_map(|mut rs| {
        // Names are unique per kind.
        let mut seen = std::collections::BTreeSet::new();
        rs.retain(|r| seen.insert((r.kind, r.name.clone())));
        // Resources are grouped by kind in the file: keep the generated order within a kind.
        rs.sort_by_key(|r| KINDS.iter().position(|k| *k == r.kind));
        rs
    });
    (
        resources,
        any_text().prop_filter("a graph name", |n| !n.is_empty()),
        prop::option::of(any_text()),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>(),
                prop::option::of("[a-z0-9]{1,6}"),
                any::<bool>(),
            ),
            0..6,
        ),
        prop::collection::vec(
            (
                prop::sample::select(KINDS.to_vec()),
                "(/[a-z]{1,6}){0,3}/",
                prop::sample::subsequence(
                    vec![
                        "mode",
                        "owner",
                        "group",
                        "source",
                        "fragments",
                        "force",
                        "meta",
                    ],
                    0..3,
                ),
                prop::collection::vec(any::<prop::sample::Index>(), 0..3),
            ),
            0..3,
        ),
        any::<bool>(),
        any::<bool>(),
        (any::<bool>(), any::<bool>(), 1usize..4),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(resources, name, comment, edges, rules, old_names, share_meta, layout, markers)| {
                let local: Vec<usize> = (0..resources.len())
                    .filter(|&i| !resources[i].exported)
                    .collect();
                let edges = if local.len() < 2 {
                    Vec::new()
                } else {
                    edges
                        .into_iter()
                        .filter_map(|(a, b, name, notify)| {
                            let (a, b) = (a.index(local.len()), b.index(local.len()));
                            (a != b).then(|| (local[a.min(b)], local[a.max(b)], name, notify))
                        })
                        .collect()
                };
                let collect = rules
                    .into_iter()
                    .map(|(kind, pattern, allow, notify)| Rule {
                        kind,
                        pattern,
                        allow: if kind == "file" {
                            allow
                        } else {
                            allow.into_iter().filter(|a| *a == "meta").collect()
                        },
                        notify: if local.is_empty() {
                            Vec::new()
                        } else {
                            notify.iter().map(|i| local[i.index(local.len())]).collect()
                        },
                    })
                    .collect();
                Graph {
                    name,
                    comment,
                    resources,
                    edges,
                    collect,
                    old_names,
                    share_meta,
                    layout: Layout {
                        flow: layout.0,
                        compact_seqs: layout.1,
                        indent: layout.2 + 1,
                    },
                    markers,
                }
            },
        )
}

fn name_scalar(r: &Res) -> Y {
    let name = if r.exported {
        format!("@@{}", r.name)
    } else {
        r.name.clone()
    };
    let style = match r.name_style {
        Style::Plain if !regex_like_plain(&name) => Style::Double,
        Style::Single if name.chars().any(|c| c.is_control() || c as u32 >= 0x80) => Style::Double,
        style => style,
    };
    Y::S(name, style)
}

fn vertex(r: &Res, old_names: bool) -> Y {
    let kind_key = if old_names { "res" } else { "kind" };
    let kind = if old_names {
        r.kind.to_uppercase()
    } else {
        r.kind.to_string()
    };
    map(vec![
        (kind_key, s(kind)),
        ("name", Y::S(r.name.clone(), Style::Double)),
    ])
}

fn graph_doc(g: &Graph) -> Y {
    let mut top = vec![("graph", dq(g.name.clone()))];
    if let Some(c) = &g.comment {
        top.push(("comment", dq(c.clone())));
    }
    let mut by_kind: Vec<(Y, Y)> = Vec::new();
    let mut meta_anchor = false;
    for kind in KINDS {
        let items: Vec<Y> = g
            .resources
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| {
                let mut entries = vec![(s("name"), name_scalar(r))];
                for f in &r.fields {
                    entries.push((s(f.key), f.yaml.clone()));
                }
                if let Some(meta) = &r.meta {
                    let meta = if !g.share_meta {
                        meta.clone()
                    } else if meta_anchor {
                        Y::Alias("meta".into())
                    } else {
                        meta_anchor = true;
                        Y::Anchor("meta".into(), Box::new(meta.clone()))
                    };
                    entries.push((s("meta"), meta));
                }
                Y::Map(entries)
            })
            .collect();
        if !items.is_empty() {
            by_kind.push((s(kind), Y::Seq(items)));
        }
    }
    top.push((
        if g.old_names { "types" } else { "resources" },
        Y::Map(by_kind),
    ));
    let edges = g
        .edges
        .iter()
        .map(|(from, to, name, notify)| {
            let mut e = Vec::new();
            if let Some(n) = name {
                e.push(("name", dq(n.clone())));
            }
            e.push(("from", vertex(&g.resources[*from], g.old_names)));
            e.push(("to", vertex(&g.resources[*to], false)));
            e.push(("notify", s(notify.to_string())));
            map(e)
        })
        .collect();
    top.push(("edges", Y::Seq(edges)));
    let rules = g
        .collect
        .iter()
        .map(|r| {
            map(vec![
                ("kind", s(r.kind)),
                ("pattern", dq(r.pattern.clone())),
                ("allow", Y::Seq(r.allow.iter().map(|a| s(*a)).collect())),
                (
                    "notify",
                    Y::Seq(
                        r.notify
                            .iter()
                            .map(|i| vertex(&g.resources[*i], false))
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    top.push(("collect", Y::Seq(rules)));
    map(top)
}

fn graph_text(g: &Graph) -> String {
    let mut text = String::new();
    if g.markers.0 {
        text.push_str("---\n");
    }
    text.push_str(&render(&graph_doc(g), g.layout));
    if g.markers.1 {
        text.push_str("...\n");
    }
    text
}

/// What parsing the text of `g` must give, with the test registry.
fn assert_parses_to(g: &Graph, text: &str, spec: &yamlgraph::GraphSpec) {
    assert_eq!(spec.graph, g.name, "in {text}");
    assert_eq!(spec.comment, g.comment, "in {text}");
    let got: Vec<(String, String, bool, Value)> = spec
        .resources
        .iter()
        .map(|r| {
            (
                r.resource.kind().to_string(),
                r.resource.name().to_string(),
                r.exported,
                r.resource.params(),
            )
        })
        .collect();
    let want: Vec<(String, String, bool, Value)> = g
        .resources
        .iter()
        .map(|r| {
            let params: serde_json::Map<String, Value> = r
                .fields
                .iter()
                .map(|f| (f.key.to_string(), f.json.clone()))
                .collect();
            (
                r.kind.to_string(),
                r.name.clone(),
                r.exported,
                Value::Object(params),
            )
        })
        .collect();
    assert_eq!(got, want, "in {text}");
    let id = |i: usize| ResId::new(g.resources[i].kind, &g.resources[i].name);
    let edges: Vec<_> = spec
        .edges
        .iter()
        .map(|e| (e.from.clone(), e.to.clone(), e.name.clone(), e.notify))
        .collect();
    let want: Vec<_> = g
        .edges
        .iter()
        .map(|(f, t, name, notify)| (id(*f), id(*t), name.clone().unwrap_or_default(), *notify))
        .collect();
    assert_eq!(edges, want, "in {text}");
    let rules: Vec<_> = spec
        .collect
        .iter()
        .map(|c| {
            let allow: Vec<String> = c.allow.iter().map(|a| a.to_string()).collect();
            (c.kind.clone(), c.pattern.clone(), allow, c.notify.clone())
        })
        .collect();
    let want: Vec<_> = g
        .collect
        .iter()
        .map(|r| {
            let mut allow: Vec<yamlgraph::Allow> = r
                .allow
                .iter()
                .map(|a| yamlgraph::Allow::from_name(a).unwrap())
                .collect();
            allow.sort();
            allow.dedup();
            let mut notify: Vec<ResId> = Vec::new();
            for i in &r.notify {
                if !notify.contains(&id(*i)) {
                    notify.push(id(*i));
                }
            }
            let allow = allow.iter().map(|a| a.to_string()).collect();
            (r.kind.to_string(), r.pattern.clone(), allow, notify)
        })
        .collect();
    assert_eq!(rules, want, "in {text}");
}

// ------------------------------------------------------------------------------ valid-ish

/// Scalars YAML and the front end find hard to read.
fn weird_scalar() -> impl Strategy<Value = Y> {
    let text = prop_oneof![
        prop::sample::select(vec![
            "",
            "~",
            "null",
            "NULL",
            "true",
            "yes",
            "0644",
            "-07",
            "0x",
            "0xFFFFFFFFFFFFFFFFFF",
            "9223372036854775808",
            "-9223372036854775809",
            "1e999",
            "-1e999",
            ".inf",
            "-.inf",
            ".nan",
            "1_000",
            "0o8",
            "+",
            "-",
            ".",
            "@@",
            "@@x",
            "/",
            "a: b",
            "a #b",
            "- x",
            "? x",
            "'",
            "\"",
            "\\",
            "&a",
            "*a",
            "!x",
            "%YAML",
            "---",
            "...",
            "\t",
            " x ",
            "é",
            "\u{feff}",
            "\u{0}",
            "\u{85}",
            "\u{2028}",
        ])
        .prop_map(str::to_string),
        any_text(),
        "[0-9+.eE_-]{1,10}",
    ];
    let style = prop::sample::select(vec![
        Style::Plain,
        Style::Single,
        Style::Double,
        Style::Literal,
    ]);
    (text, style).prop_map(|(t, st)| Y::S(t, st))
}

fn anchor_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "meta", "x1"]).prop_map(str::to_string)
}

fn tag() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "!!str",
        "!!int",
        "!!float",
        "!!bool",
        "!!null",
        "!!map",
        "!!seq",
        "!!binary",
        "!foo",
        "!",
        "!<tag:yaml.org,2002:str>",
        "!e!x",
    ])
    .prop_map(str::to_string)
}

/// Any YAML tree: what goes where a graph expects something in particular.
fn any_y() -> impl Strategy<Value = Y> {
    let leaf = prop_oneof![
        6 => weird_scalar(),
        2 => prop::sample::select(vec![
            "graph", "resources", "file", "exec", "msg", "noop", "timer", "pkg", "name", "path",
            "content", "mode", "cmd", "meta", "limit", "retry", "sema", "edges", "from", "to",
            "kind", "notify", "collect", "pattern", "allow", "fields",
        ])
        .prop_map(s),
        1 => anchor_name().prop_map(Y::Alias),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 0..6).prop_map(Y::Seq),
            3 => prop::collection::vec((inner.clone(), inner.clone()), 0..6).prop_map(Y::Map),
            1 => (anchor_name(), inner.clone()).prop_map(|(a, y)| Y::Anchor(a, Box::new(y))),
            1 => (tag(), inner).prop_map(|(t, y)| Y::Tag(t, Box::new(y))),
        ]
    })
}

/// A document shaped like a graph, with any tree in any place.
fn graphish() -> impl Strategy<Value = Y> {
    let name = prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "@@a", "f1", "/tmp/x"]).prop_map(dq),
        1 => any_y(),
    ];
    let kind = prop_oneof![
        4 => prop::sample::select(vec!["file", "exec", "msg", "timer", "noop", "pkg", "File", "fiel"])
            .prop_map(s),
        1 => any_y(),
    ];
    let field = prop_oneof![
        4 => (
            prop::sample::select(vec![
                "path", "content", "state", "mode", "owner", "group", "recurse", "force", "source",
                "fragments", "cmd", "shell", "timeout", "pollint", "body", "fields", "interval",
                "meta", "contnet",
            ]),
            any_y()
        )
            .prop_map(|(k, v)| (s(k), v)),
        1 => (any_y(), any_y()),
    ];
    let res =
        (name.clone(), prop::collection::vec(field, 0..5), dups()).prop_map(|(n, fields, dups)| {
            let mut entries = vec![(s("name"), n)];
            entries.extend(fields);
            Y::Map(dedup(entries, dups))
        });
    let resources = prop::collection::vec((kind.clone(), prop::collection::vec(res, 0..4)), 0..4)
        .prop_map(|kinds| Y::Map(kinds.into_iter().map(|(k, rs)| (k, Y::Seq(rs))).collect()));
    let vertex =
        (kind.clone(), name.clone()).prop_map(|(k, n)| map(vec![("kind", k), ("name", n)]));
    let edge = (vertex.clone(), vertex.clone(), any_y(), any::<bool>()).prop_map(
        |(from, to, extra, notify)| {
            let mut e = vec![
                ("from", from),
                ("to", to),
                ("notify", s(notify.to_string())),
            ];
            if notify {
                e.push(("name", extra));
            }
            map(e)
        },
    );
    let rule = (
        kind,
        prop_oneof![Just(dq("")), Just(dq("/tmp/")), any_y()],
        prop::collection::vec(vertex, 0..3),
        any_y(),
    )
        .prop_map(|(k, pattern, notify, allow)| {
            map(vec![
                ("kind", k),
                ("pattern", pattern),
                ("notify", Y::Seq(notify)),
                ("allow", allow),
            ])
        });
    let top = prop_oneof![
        (Just("graph"), name),
        (Just("resources"), resources),
        (
            Just("edges"),
            prop::collection::vec(edge, 0..4).prop_map(Y::Seq)
        ),
        (
            Just("collect"),
            prop::collection::vec(rule, 0..3).prop_map(Y::Seq)
        ),
        (
            prop::sample::select(vec!["comment", "remote", "remotes", "types", "junk"]),
            any_y()
        ),
    ];
    (prop::collection::vec(top, 0..7), dups()).prop_map(|(entries, dups)| {
        Y::Map(dedup(
            entries.into_iter().map(|(k, v)| (s(k), v)).collect(),
            dups,
        ))
    })
}

/// Mostly false: a duplicate key stops the load before any check sees the document.
fn dups() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.1)
}

/// `entries` without the later of two plain keys written the same, unless `keep`.
fn dedup(entries: Vec<(Y, Y)>, keep: bool) -> Vec<(Y, Y)> {
    if keep {
        return entries;
    }
    let mut seen = Vec::new();
    entries
        .into_iter()
        .filter(|(k, _)| match k {
            Y::S(text, _) if seen.contains(text) => false,
            Y::S(text, _) => {
                seen.push(text.clone());
                true
            }
            _ => true,
        })
        .collect()
}

/// Changes to a whole text that YAML may or may not take: a BOM, CRLF line ends, tabs...
fn noise(text: String, what: u8, at: prop::sample::Index) -> String {
    match what % 10 {
        0 => format!("\u{feff}{text}"),
        1 => text.replace('\n', "\r\n"),
        2 => text.replace("  ", "\t"),
        3 => text.replace(": ", ":\t"),
        4 => text.replace('\n', "\r"),
        5 => format!("%YAML 1.2\n---\n{text}"),
        6 => format!("{text}---\n{text}"),
        7 => {
            let cut = (0..=text.len())
                .filter(|i| text.is_char_boundary(*i))
                .nth(at.index(text.chars().count() + 1))
                .unwrap_or(text.len());
            text[..cut].to_string()
        }
        _ => text,
    }
}

// ------------------------------------------------------------------------------ mutations

#[derive(Clone, Debug)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    /// Copies a range of the text to another place.
    Duplicate(
        prop::sample::Index,
        prop::sample::Index,
        prop::sample::Index,
    ),
    Delete(prop::sample::Index, prop::sample::Index),
    Insert(prop::sample::Index, Vec<u8>),
    SwapLines(prop::sample::Index, prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ix = any::<prop::sample::Index>;
    prop_oneof![
        (ix(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        ix().prop_map(Mutation::Truncate),
        (ix(), ix(), ix()).prop_map(|(a, b, c)| Mutation::Duplicate(a, b, c)),
        (ix(), ix()).prop_map(|(a, b)| Mutation::Delete(a, b)),
        (
            ix(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(vec![
                    "\n", " ", "\t", ": ", "- ", "[", "{", "&a ", "*a", "!!str ", "'", "\"", "#",
                    "|", "---\n", "\u{feff}", "@@", "\r",
                ])
                .prop_map(|t| t.as_bytes().to_vec()),
            ]
        )
            .prop_map(|(i, bytes)| Mutation::Insert(i, bytes)),
        (ix(), ix()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    let range = |a: &prop::sample::Index, b: &prop::sample::Index| {
        let (a, b) = (a.index(len + 1), b.index(len + 1));
        (a.min(b), a.max(b))
    };
    match m {
        Mutation::Flip(i, b) if len > 0 => bytes[i.index(len)] ^= (*b).max(1),
        Mutation::Flip(..) => {}
        Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
        Mutation::Duplicate(a, b, to) => {
            let (a, b) = range(a, b);
            let copy = bytes[a..b].to_vec();
            let to = to.index(len + 1);
            bytes.splice(to..to, copy);
        }
        Mutation::Delete(a, b) => {
            let (a, b) = range(a, b);
            bytes.drain(a..b);
        }
        Mutation::Insert(i, new) => {
            let i = i.index(len + 1);
            bytes.splice(i..i, new.iter().copied());
        }
        Mutation::SwapLines(a, b) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let mut lines: Vec<&str> = text.split('\n').collect();
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
            *bytes = lines.join("\n").into_bytes();
        }
    }
}

// ------------------------------------------------------------------------------ properties

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_text(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_strings_never_panic(text in ".{0,256}") {
        check_text(&text);
    }

    /// Strings of YAML's own tokens and the graph's words: far more of them reach deep into
    /// the parser and the checks than random bytes do.
    #[test]
    fn token_soup_never_panics(parts in prop::collection::vec(prop_oneof![
        8 => prop::sample::select(vec![
            "- ", "-", ": ", ":", "\n", "\n  ", "\n    ", "  ", "\t", " ", "{", "}", "[", "]",
            ", ", "?", "? ", "&a ", "&b ", "*a", "*b", "*a ", "!", "!!str ", "!!int ", "!!map ",
            "!foo ", "|", "|-", "|+", ">", ">-", "|2", "'", "''", "\"", "\\", "\\x", "\\u", "#",
            " # c", "%YAML 1.2\n", "%TAG ! tag:x,2000:\n", "---", "---\n", "...\n", "\u{feff}",
            "\r", "\r\n", "@@", "~", "null", "true", "0644", ".inf", "-1", "1e9", "0x", "é",
            "\u{0}", "\u{85}", "\u{2028}", "\u{1f600}", "graph", "graph: g\n", "resources",
            "resources:\n", "types", "file", "exec", "msg", "noop", "timer", "pkg", "name",
            "name: ", "path", "/tmp/", "content", "mode", "cmd", "meta", "limit", "sema", "edges",
            "edges:\n", "from", "to", "kind", "notify", "collect", "collect:\n", "pattern",
            "allow", "fields", "- name: a\n", "from: {kind: file, name: a}",
        ]).prop_map(str::to_string),
        1 => "[a-z0-9]{1,5}",
        1 => ".{1,3}",
    ], 0..64)) {
        check_text(&parts.concat());
    }

    /// Generated valid graphs parse to exactly what was generated (names, exports, field
    /// values, edges, collect rules), in block and flow style alike.
    #[test]
    fn generated_graphs_parse_to_what_was_generated(g in graph()) {
        let text = graph_text(&g);
        match yamlgraph::parse("fuzz.yaml", &text, &common::registry()) {
            Ok(spec) => assert_parses_to(&g, &text, &spec),
            Err(d) => panic!("a valid graph fails:\n{d}\n{text}"),
        }
        // The real kinds may refuse the values; they must say so properly.
        check_parse(&text, &resources::registry());
    }

    /// A valid graph stays the same graph through changes that mean nothing to YAML.
    #[test]
    fn no_op_changes_keep_generated_graphs(g in graph(), what in 0u8..5) {
        let text = graph_text(&g);
        let changed = no_op(&text, what);
        match yamlgraph::parse("fuzz.yaml", &changed, &common::registry()) {
            Ok(spec) => assert_parses_to(&g, &changed, &spec),
            Err(d) => panic!("a no-op change ({what}) breaks a valid graph:\n{d}\n{changed:?}"),
        }
    }

    /// Graph-shaped documents with anything anywhere, and noise on the whole text.
    #[test]
    fn graphish_documents_never_panic(
        doc in graphish(),
        layout in (any::<bool>(), any::<bool>(), 1usize..4),
        what in any::<u8>(),
        at in any::<prop::sample::Index>(),
    ) {
        let layout = Layout { flow: layout.0, compact_seqs: layout.1, indent: layout.2 };
        check_text(&noise(render(&doc, layout), what, at));
    }

    #[test]
    fn any_yaml_tree_never_panics(doc in any_y(), flow in any::<bool>()) {
        let layout = Layout { flow, compact_seqs: false, indent: 2 };
        check_text(&render(&doc, layout));
    }

    /// The examples, mutated: bytes flipped, cut, copied, deleted, inserted, lines swapped.
    #[test]
    fn mutated_examples_never_panic(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let examples = examples();
        let mut bytes = examples[which.index(examples.len())].1.clone().into_bytes();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        check_text(&String::from_utf8_lossy(&bytes));
    }

    /// `parse_file` on any bytes: not UTF-8, a BOM, NULs... a diagnostic where the bytes go
    /// wrong, or the same answer as `parse` on the text.
    #[test]
    fn parse_file_on_arbitrary_bytes(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            (any::<prop::sample::Index>(), prop::collection::vec(mutation(), 1..3)).prop_map(
                |(which, ms)| {
                    let examples = examples();
                    let mut bytes = examples[which.index(examples.len())].1.clone().into_bytes();
                    for m in &ms {
                        mutate(&mut bytes, m);
                    }
                    bytes
                }
            ),
        ]
    ) {
        let path = temp_path();
        std::fs::write(&path, &bytes).expect("writes");
        let registry = common::registry();
        let from_file = yamlgraph::parse_file(&path, &registry);
        std::fs::remove_file(&path).expect("removes");
        let name = path.display().to_string();
        match (std::str::from_utf8(&bytes), from_file) {
            (Ok(text), Ok(spec)) => {
                let direct = yamlgraph::parse(&name, text, &registry).expect("parses as text too");
                assert_eq!(spec.resources.len(), direct.resources.len());
            }
            (Ok(text), Err(d)) => {
                let direct = yamlgraph::parse(&name, text, &registry).expect_err("fails as text too");
                assert_eq!(d, direct);
            }
            (Err(e), Ok(_)) => panic!("not UTF-8 ({e}) but parsed"),
            (Err(e), Err(d)) => {
                assert_eq!(d.0.len(), 1, "{d}");
                let diag = &d.0[0];
                let before = &bytes[..e.valid_up_to()];
                let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                assert_eq!(diag.line, line, "{d}");
                let start = before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let col = std::str::from_utf8(&before[start..]).unwrap().chars().count() + 1;
                assert_eq!(diag.col, col, "{d}");
                assert!(diag.message.contains("UTF-8"), "{d}");
                let _ = d.to_string();
            }
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Deep nesting in every form, with anchors and aliases at any level, on a small stack:
    /// the depth limit must stop it before anything recurses too deep.
    #[test]
    fn deep_nesting_never_overflows_the_stack(
        levels in prop::collection::vec(0u8..6, 1..400),
        alias_every in 1usize..50,
        tail in prop::sample::select(vec!["x", "", "*a0", "]", "}", "[", "{"]),
    ) {
        let mut text = String::from("graph: g\nresources:\n  file:\n  - name: a\n    content: ");
        let mut close = Vec::new();
        for (depth, level) in levels.iter().enumerate() {
            if depth % alias_every == 0 {
                let _ = write!(text, "&a{depth} ");
            }
            match level {
                0 => { text.push('['); close.push("]"); }
                1 => { text.push_str("{k: "); close.push("}"); }
                2 => { text.push_str("[*a0, "); close.push("]"); }
                3 => { text.push_str("{? "); close.push(": v}"); }
                4 => { text.push_str("!!seq ["); close.push("]"); }
                _ => { text.push_str("[[], {}, "); close.push("]"); }
            }
        }
        text.push_str(tail);
        for c in close.iter().rev() {
            text.push_str(c);
        }
        text.push('\n');
        let block = {
            let mut t = String::from("graph: g\nresources:\n");
            for (depth, level) in levels.iter().enumerate() {
                let pad = " ".repeat(depth + 2);
                match level % 3 {
                    0 => { let _ = writeln!(t, "{pad}k{depth}:"); }
                    1 => { let _ = writeln!(t, "{pad}- &b{depth}"); }
                    _ => { let _ = writeln!(t, "{pad}- k:"); }
                }
            }
            t
        };
        on_small_stack(512 << 10, move || {
            check_text(&text);
            check_text(&block);
        });
    }
}

/// Changes that leave what a YAML text means alone.
fn no_op(text: &str, what: u8) -> String {
    match what {
        0 => format!("# a comment first\n{text}"),
        1 => format!("{text}\n# a comment last\n\n"),
        2 => text.replace('\n', "\r\n"),
        3 => format!("\u{feff}{text}"),
        _ => text.to_string(),
    }
}

// ------------------------------------------------------------------------------ plain tests

/// Every example cut short at every character: a graph or diagnostics, never a panic.
#[test]
fn every_truncation_of_every_example() {
    // The real kinds: examples use every kind the binary has (pkg, svc...).
    let registry = resources::registry();
    for (name, text) in examples() {
        for (cut, _) in text.char_indices() {
            let part = &text[..cut];
            if let Err(d) = yamlgraph::parse("fuzz.yaml", part, &registry) {
                check_diagnostics(part, &d);
            }
        }
        yamlgraph::parse("fuzz.yaml", &text, &registry)
            .unwrap_or_else(|d| panic!("{name} does not parse:\n{d}"));
    }
}

/// Every example through each no-op change: still a graph, and the same one.
#[test]
fn examples_survive_no_op_changes() {
    let registry = resources::registry();
    for (name, text) in examples() {
        let original = yamlgraph::parse("fuzz.yaml", &text, &registry)
            .unwrap_or_else(|d| panic!("{name} does not parse:\n{d}"));
        for what in 0..4 {
            let changed = no_op(&text, what);
            let spec = yamlgraph::parse("fuzz.yaml", &changed, &registry).unwrap_or_else(|d| {
                panic!("{name} after no-op change {what} does not parse:\n{d}")
            });
            let summary = |s: &yamlgraph::GraphSpec| {
                let res: Vec<_> = s
                    .resources
                    .iter()
                    .map(|r| (r.resource.id(), r.exported, r.resource.params()))
                    .collect();
                (s.graph.clone(), res, s.edges.len(), s.collect.clone())
            };
            let (mut a, mut b) = (summary(&original), summary(&spec));
            // Spans move with the text; what they point at is checked elsewhere.
            for c in a.3.iter_mut().chain(b.3.iter_mut()) {
                c.span = yamlgraph::Span { line: 0, col: 0 };
            }
            assert_eq!(a, b, "{name} after no-op change {what}");
        }
    }
}

// ------------------------------------------------------------------------------ regressions
// Each input the properties above found, minimized, with what it must give now.

fn diagnostics_of(text: &str) -> yamlgraph::Diagnostics {
    let d = yamlgraph::parse("fuzz.yaml", text, &common::registry()).expect_err("invalid");
    check_diagnostics(text, &d);
    d
}

/// `token_soup_never_panics`, `arbitrary_bytes_never_panic`: a lone `\r` ends a line for YAML
/// (the parser counts it), not for `str::lines`, so the diagnostic named one line and showed
/// another, its column past that line's end.
#[test]
fn regression_a_lone_carriage_return_ends_a_line() {
    let d = diagnostics_of("\u{1}\rgraph: g\n- ");
    assert_eq!((d.0[0].line, d.0[0].col), (2, 6), "{d}");
    assert_eq!(d.0[0].source_line, "graph: g");
    let d = diagnostics_of("graph: g\rresources:\r  file: [\r");
    assert_eq!(d.0[0].source_line, "  file: [", "{d}");
    let d = diagnostics_of(" \r");
    assert_eq!((d.0[0].line, d.0[0].source_line.as_str()), (1, " "), "{d}");
}

/// `arbitrary_strings_never_panic`: saphyr-parser 0.3.4 moves the column by the bytes of a
/// directive's name (`%¡¡¡` is 7 bytes, 4 characters), so an error later on that line was
/// placed past its end.
#[test]
fn regression_a_directive_with_non_ascii_keeps_the_column_on_its_line() {
    let d = diagnostics_of("%¡¡¡\0");
    assert_eq!((d.0[0].line, d.0[0].col), (1, 6), "{d}");
}
