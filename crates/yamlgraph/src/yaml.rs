//! Loading YAML text into position-annotated nodes, and reading values out of them.
//!
//! The nodes are built here from the parser's events: mappings are their entries in document
//! order (a graph file's mappings are small, and check.rs only ever walks them), so loading
//! hashes nothing but the keys of a large mapping, when checking them for duplicates.
//! Scalars are loaded unresolved (their text, quoting style and tag) and resolved here by the
//! YAML 1.2 core schema, so the original text stays available: mgmt's graphs were read by a
//! YAML 1.1 parser that hands a string field the scalar's text (`mode: 0644` is "0644", not
//! the number 644). Never does IO, and never lets aliases expand past a fixed budget.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use saphyr::ScalarStyle;
use saphyr_parser::{Event, Marker, Parser, Span, SpannedEventReceiver, Tag};

/// One node of a loaded document, with where it is written.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub span: Span,
    pub data: Data,
}

#[derive(Clone, Debug)]
pub(crate) enum Data {
    /// A scalar as written: its text, quoting style and tag, resolved on demand by [`scalar`].
    Scalar(String, ScalarStyle, Option<Box<Tag>>),
    Sequence(Vec<Node>),
    /// Entries in document order; no two keys are equal (checked while loading).
    Mapping(Vec<(Node, Node)>),
    /// A collection with a tag outside the core schema, which nothing here reads.
    Tagged(Box<Tag>, Box<Node>),
}

/// How much aliases may expand, over a whole load: each alias copies its anchor's nodes, so a
/// few nested anchors could otherwise make billions of them (a "billion laughs" attack). The
/// node count is the one saphyr's loader allowed; text is counted too, so that one long
/// anchored scalar cannot be copied a hundred thousand times either.
const ALIAS_NODE_BUDGET: usize = 100_000;
const ALIAS_TEXT_BUDGET: usize = 16 << 20;

/// How deep collections may nest, aliases included. A graph needs a handful of levels; every
/// pass over the nodes after loading (checking, comparing, dropping) recurses, so an unbounded
/// depth would let a 20 KB file of `- - - ...` overflow the stack of whatever thread reads it.
pub(crate) const MAX_DEPTH: usize = 64;

/// Levels of `node` (a scalar is 1), counted without recursion.
fn depth(node: &Node) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(node, 1usize)];
    while let Some((n, d)) = stack.pop() {
        deepest = deepest.max(d);
        match &n.data {
            Data::Scalar(..) => {}
            Data::Sequence(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Data::Mapping(entries) => {
                for (k, v) in entries {
                    stack.push((k, d + 1));
                    stack.push((v, d + 1));
                }
            }
            Data::Tagged(_, inner) => stack.push((inner, d)),
        }
    }
    deepest
}

/// Mappings with more keys than this get a hash index for the duplicate check; below it a
/// scan of the keys is cheaper than hashing.
const INDEXED_MAPPING: usize = 16;

/// Equal when the data is, wherever each is written: what YAML means by two keys being the same.
impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.data == other.data
    }
}

impl Eq for Node {}

impl Hash for Node {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.data.hash(state);
    }
}

// By hand so that `Node`'s equality (which ignores spans) is the one used inside collections.
impl PartialEq for Data {
    fn eq(&self, other: &Data) -> bool {
        match (self, other) {
            (Data::Scalar(t1, s1, g1), Data::Scalar(t2, s2, g2)) => {
                t1 == t2 && s1 == s2 && g1 == g2
            }
            (Data::Sequence(a), Data::Sequence(b)) => a == b,
            (Data::Mapping(a), Data::Mapping(b)) => a == b,
            (Data::Tagged(t1, a), Data::Tagged(t2, b)) => t1 == t2 && a == b,
            _ => false,
        }
    }
}

impl Eq for Data {}

impl Hash for Data {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Data::Scalar(text, style, tag) => (text, style, tag).hash(state),
            Data::Sequence(items) => items.hash(state),
            Data::Mapping(entries) => entries.hash(state),
            Data::Tagged(tag, node) => (tag, node).hash(state),
        }
    }
}

/// A place in the source: 1-based line and column, and how many characters to underline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub col: usize,
    pub width: usize,
}

impl Pos {
    pub(crate) fn of(node: &Node) -> Pos {
        let (s, e) = (node.span.start, node.span.end);
        // Collections and multi-line scalars underline one character: the start is what matters.
        let width = if e.line() == s.line() && e.index() > s.index() && !is_collection(node) {
            e.index() - s.index()
        } else {
            1
        };
        Pos {
            line: s.line().max(1),
            col: s.col() + 1,
            width,
        }
    }

    pub(crate) fn start() -> Pos {
        Pos {
            line: 1,
            col: 1,
            width: 1,
        }
    }

    fn at(mark: Marker) -> Pos {
        Pos {
            line: mark.line().max(1),
            col: mark.col() + 1,
            width: 1,
        }
    }
}

fn is_collection(node: &Node) -> bool {
    matches!(node.data, Data::Mapping(_) | Data::Sequence(_))
}

/// A YAML syntax error (including duplicate keys): where and what.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Loads every document of `text`. Aliases are expanded (within the alias budget); duplicate
/// keys are a syntax error, as YAML requires.
pub(crate) fn load(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut loader = Loader::new();
    // Events one by one: saphyr's own `Parser::load` recurses once per nesting level, which a
    // deep file turns into a stack overflow before the loader's depth limit can say no.
    let mut result = Ok(());
    for ev in Parser::new_from_str(text) {
        match ev {
            // The parser reads on after the loader gave up (the loader ignores the rest), and
            // an error of the text itself wins.
            Ok((ev, span)) => loader.on_event(ev, span),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let (mark, message) = match (result, loader.error) {
        (Err(e), _) => (*e.marker(), e.info().to_string()),
        (Ok(()), Some((mark, message))) => (mark, message),
        (Ok(()), None) => return Ok(loader.docs),
    };
    Err(SyntaxError {
        pos: Pos::at(mark),
        message,
    })
}

/// Builds nodes from the parser's events.
struct Loader {
    docs: Vec<Node>,
    /// The collections being read, innermost last.
    open: Vec<Open>,
    /// The current document's node, once read.
    root: Option<Node>,
    /// Anchored nodes of the current document, by the parser's anchor id.
    anchors: BTreeMap<usize, Node>,
    /// What aliases may still copy (see `ALIAS_NODE_BUDGET`).
    budget: Budget,
    /// The first error; the events after it are ignored.
    error: Option<(Marker, String)>,
    /// Seeded per load, so that keys cannot be crafted to collide in the duplicate check.
    hasher: RandomState,
}

struct Open {
    start: Marker,
    anchor: usize,
    /// A tag outside the core schema (a core one changes nothing here).
    tag: Option<Box<Tag>>,
    items: Items,
}

enum Items {
    Sequence(Vec<Node>),
    Mapping {
        entries: Vec<(Node, Node)>,
        /// A key read, waiting for its value.
        key: Option<Node>,
        /// Key hash to entry, built once the mapping is large (see `INDEXED_MAPPING`).
        index: Option<HashMap<u64, usize>>,
    },
}

#[derive(Clone, Copy)]
struct Budget {
    nodes: usize,
    text: usize,
}

impl Budget {
    /// Takes `node`'s size out of the budget, or says which part of it ran out. Stops at the
    /// first node over budget, so measuring a huge anchor costs no more than the budget.
    fn charge(&mut self, node: &Node) -> Result<(), &'static str> {
        const NODES: &str =
            "alias expansion exceeded the maximum node budget (possible billion-laughs attack)";
        const TEXT: &str =
            "alias expansion exceeded the maximum text budget (possible billion-laughs attack)";
        self.nodes = self.nodes.checked_sub(1).ok_or(NODES)?;
        let tag_len = |t: &Tag| t.handle.len() + t.suffix.len();
        match &node.data {
            Data::Scalar(text, _, tag) => {
                let len = text.len() + tag.as_deref().map_or(0, tag_len);
                self.text = self.text.checked_sub(len).ok_or(TEXT)?;
            }
            Data::Sequence(items) => {
                for item in items {
                    self.charge(item)?;
                }
            }
            Data::Mapping(entries) => {
                for (k, v) in entries {
                    self.charge(k)?;
                    self.charge(v)?;
                }
            }
            Data::Tagged(tag, inner) => {
                self.text = self.text.checked_sub(tag_len(tag)).ok_or(TEXT)?;
                self.charge(inner)?;
            }
        }
        Ok(())
    }
}

impl Loader {
    fn new() -> Loader {
        Loader {
            docs: Vec::new(),
            open: Vec::new(),
            root: None,
            anchors: BTreeMap::new(),
            budget: Budget {
                nodes: ALIAS_NODE_BUDGET,
                text: ALIAS_TEXT_BUDGET,
            },
            error: None,
            hasher: RandomState::new(),
        }
    }

    fn open(&mut self, start: Marker, anchor: usize, tag: Option<Cow<'_, Tag>>, items: Items) {
        self.open.push(Open {
            start,
            anchor,
            tag: tag
                .filter(|t| !t.is_yaml_core_schema())
                .map(|t| Box::new(t.into_owned())),
            items,
        });
    }

    /// Places a finished node in the collection being read (or as the document's node).
    fn insert(&mut self, node: Node, anchor: usize) {
        // Anchor ids start at 1.
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(open) = self.open.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut open.items {
            Items::Sequence(items) => items.push(node),
            Items::Mapping {
                entries,
                key,
                index,
            } => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    if is_duplicate(entries, index, &k, &self.hasher) {
                        self.error = Some((k.span.start, "duplicated key in mapping".to_string()));
                        return;
                    }
                    entries.push((k, node));
                }
            },
        }
    }

    /// A copy of the anchored node, charged to the alias budget.
    fn alias(&mut self, id: usize) -> Result<Node, &'static str> {
        // The parser rejects an alias to an unknown name; one of an earlier document (anchors do
        // not cross documents) gets here, with the parser's words for it.
        let node = self
            .anchors
            .get(&id)
            .ok_or("while parsing node, found unknown anchor")?;
        if self.open.len() + depth(node) > MAX_DEPTH {
            return Err("an alias makes collections nest deeper than the maximum depth");
        }
        let mut budget = self.budget;
        budget.charge(node)?;
        self.budget = budget;
        Ok(node.clone())
    }
}

/// Whether `key` equals a key of `entries`; indexes `key` when the mapping is large.
fn is_duplicate(
    entries: &[(Node, Node)],
    index: &mut Option<HashMap<u64, usize>>,
    key: &Node,
    hasher: &RandomState,
) -> bool {
    if entries.len() < INDEXED_MAPPING {
        return entries.iter().any(|(k, _)| k == key);
    }
    let index = index.get_or_insert_with(|| {
        let mut index = HashMap::with_capacity(entries.len() * 2);
        for (i, (k, _)) in entries.iter().enumerate() {
            index.entry(hasher.hash_one(k)).or_insert(i);
        }
        index
    });
    match index.entry(hasher.hash_one(key)) {
        std::collections::hash_map::Entry::Vacant(slot) => {
            // The key goes in next, at this position.
            slot.insert(entries.len());
            false
        }
        // Equal hashes: the same key, or (rarely) a collision, which only a full scan settles.
        std::collections::hash_map::Entry::Occupied(slot) => {
            entries[*slot.get()].0 == *key || entries.iter().any(|(k, _)| k == key)
        }
    }
}

impl<'input> SpannedEventReceiver<'input> for Loader {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => {}
            Event::DocumentEnd => {
                // The parser gives every document a node, an empty scalar at least (a file of
                // comments only has no document at all).
                self.docs.extend(self.root.take());
                // Anchors do not reach across documents (the parser forgets their names).
                self.anchors.clear();
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.open.len() >= MAX_DEPTH => {
                self.error = Some((
                    span.start,
                    format!("collections nest deeper than {MAX_DEPTH} levels"),
                ));
            }
            Event::SequenceStart(anchor, tag) => {
                self.open(span.start, anchor, tag, Items::Sequence(Vec::new()));
            }
            Event::MappingStart(anchor, tag) => {
                let items = Items::Mapping {
                    entries: Vec::new(),
                    key: None,
                    index: None,
                };
                self.open(span.start, anchor, tag, items);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                // The parser closes only what it opened.
                let Some(open) = self.open.pop() else { return };
                let span = Span::new(open.start, span.start);
                let data = match open.items {
                    Items::Sequence(items) => Data::Sequence(items),
                    Items::Mapping { entries, .. } => Data::Mapping(entries),
                };
                let mut node = Node { span, data };
                if let Some(tag) = open.tag {
                    node = Node {
                        span,
                        data: Data::Tagged(tag, Box::new(node)),
                    };
                }
                self.insert(node, open.anchor);
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| Box::new(t.into_owned()));
                let node = Node {
                    span,
                    data: Data::Scalar(text.into_owned(), style, tag),
                };
                self.insert(node, anchor);
            }
            Event::Alias(id) => match self.alias(id) {
                Ok(node) => self.insert(Node { span, ..node }, 0),
                Err(message) => self.error = Some((span.start, message.to_string())),
            },
        }
    }
}

/// A scalar resolved by the core schema. A string is the scalar's text as written.
pub(crate) enum Scalar<'n> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'n str),
}

/// Resolves a scalar node by the core schema. `Err` is a message for a value that cannot be
/// read (an unknown tag, `!!int x`); `Ok(None)` means the node is not a scalar.
pub(crate) fn scalar(node: &Node) -> Result<Option<Scalar<'_>>, String> {
    let (text, style, tag) = match &node.data {
        Data::Scalar(text, style, tag) => (text.as_str(), *style, tag.as_deref()),
        Data::Tagged(tag, _) => return Err(unsupported(tag)),
        Data::Mapping(_) | Data::Sequence(_) => return Ok(None),
    };
    let Some(tag) = tag else {
        // The common cases, without going through the general resolver below.
        if style != ScalarStyle::Plain {
            return Ok(Some(Scalar::Str(text)));
        }
        if is_leading_zero_int(text) {
            // YAML 1.1 (mgmt) reads this as octal, YAML 1.2 as decimal: keep the text and let
            // the field decide (file modes are the common case).
            return Ok(Some(Scalar::Str(text)));
        }
        // Only numbers and `~` start with one of these; null and booleans are the words
        // below. Anything else is a string, known without trial parses (most names, keys and
        // paths in a graph).
        match text.as_bytes().first() {
            None => return Ok(Some(Scalar::Null)),
            Some(b) if !b"+-.0123456789~".contains(b) => {
                return Ok(Some(match text {
                    "null" | "Null" | "NULL" => Scalar::Null,
                    "true" | "True" | "TRUE" => Scalar::Bool(true),
                    "false" | "False" | "FALSE" => Scalar::Bool(false),
                    _ => Scalar::Str(text),
                }));
            }
            Some(_) => {}
        }
        return Ok(Some(resolved(
            saphyr::Scalar::parse_from_cow(Cow::Borrowed(text)),
            text,
        )));
    };
    if !tag.is_yaml_core_schema() {
        return Err(unsupported(tag));
    }
    match saphyr::Scalar::parse_from_cow_and_metadata(
        Cow::Borrowed(text),
        style,
        Some(&Cow::Borrowed(tag)),
    ) {
        Some(s) => Ok(Some(resolved(s, text))),
        None => Err(format!("`{text}` is not a valid !!{}", tag.suffix)),
    }
}

fn resolved<'n>(s: saphyr::Scalar<'_>, text: &'n str) -> Scalar<'n> {
    match s {
        saphyr::Scalar::Null => Scalar::Null,
        saphyr::Scalar::Boolean(b) => Scalar::Bool(b),
        saphyr::Scalar::Integer(i) => Scalar::Int(i),
        saphyr::Scalar::FloatingPoint(f) => Scalar::Float(f.into_inner()),
        // The resolver hands strings back as they came in.
        saphyr::Scalar::String(_) => Scalar::Str(text),
    }
}

fn unsupported(tag: &Tag) -> String {
    format!(
        "YAML tag `{}{}` is not supported here",
        tag.handle, tag.suffix
    )
}

fn is_leading_zero_int(text: &str) -> bool {
    let digits = match text.as_bytes().first() {
        Some(b'+' | b'-') => &text[1..],
        _ => text,
    };
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The text of a plain scalar that did not resolve to a string (`12`, `true`, `1.5`), which a
/// string field takes verbatim, as mgmt's YAML library did.
pub(crate) fn plain_text_of_non_string(node: &Node) -> Option<String> {
    match (&node.data, scalar(node)) {
        (
            Data::Scalar(text, ScalarStyle::Plain, None),
            Ok(Some(Scalar::Bool(_) | Scalar::Int(_) | Scalar::Float(_))),
        ) => Some(text.clone()),
        _ => None,
    }
}

/// Text of a scalar for string-valued keys (names, kinds, patterns): any non-null scalar is
/// taken as written. `Ok(None)` for null (unset); `Err` for a collection or unreadable value.
pub(crate) fn text(node: &Node) -> Result<Option<&str>, String> {
    match (scalar(node)?, &node.data) {
        (Some(Scalar::Null), _) => Ok(None),
        (Some(_), Data::Scalar(text, _, _)) => Ok(Some(text)),
        _ => Err(format!("expected a string, found {}", describe(node))),
    }
}

/// "a mapping", "a list", "a string"... for type errors.
pub(crate) fn describe(node: &Node) -> &'static str {
    match &node.data {
        Data::Mapping(_) => "a mapping",
        Data::Sequence(_) => "a list",
        _ => match scalar(node) {
            Ok(Some(Scalar::Null)) => "nothing",
            Ok(Some(Scalar::Bool(_))) => "a boolean",
            Ok(Some(Scalar::Int(_))) => "an integer",
            Ok(Some(Scalar::Float(_))) => "a number",
            Ok(Some(Scalar::Str(_))) => "a string",
            _ => "an unreadable value",
        },
    }
}

pub(crate) fn is_null(node: &Node) -> bool {
    matches!(scalar(node), Ok(Some(Scalar::Null)))
}

pub(crate) fn mapping(node: &Node) -> Option<impl Iterator<Item = (&Node, &Node)>> {
    match &node.data {
        Data::Mapping(m) => Some(m.iter().map(|(k, v)| (k, v))),
        _ => None,
    }
}

pub(crate) fn sequence(node: &Node) -> Option<&[Node]> {
    match &node.data {
        Data::Sequence(s) => Some(s.as_slice()),
        _ => None,
    }
}

/// Converts a value to JSON for a resource builder. Errors carry the position of the inner
/// node at fault.
pub(crate) fn to_json(node: &Node) -> Result<serde_json::Value, (Pos, String)> {
    use serde_json::Value;
    if let Some(items) = sequence(node) {
        return items
            .iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Some(entries) = mapping(node) {
        let mut obj = serde_json::Map::new();
        for (k, v) in entries {
            let key = match text(k) {
                Ok(Some(key)) => key.to_string(),
                Ok(None) => return Err((Pos::of(k), "a mapping key cannot be empty".to_string())),
                Err(e) => return Err((Pos::of(k), e)),
            };
            obj.insert(key, to_json(v)?);
        }
        return Ok(Value::Object(obj));
    }
    match scalar(node).map_err(|e| (Pos::of(node), e))? {
        Some(Scalar::Null) | None => Ok(Value::Null),
        Some(Scalar::Bool(b)) => Ok(Value::Bool(b)),
        Some(Scalar::Int(i)) => Ok(Value::from(i)),
        // JSON has no infinity or NaN: hand such a value over as written, which a string field
        // takes (as mgmt would) and a numeric field rejects with its own message.
        Some(Scalar::Float(f)) => Ok(serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| match &node.data {
                Data::Scalar(text, _, _) => Value::String(text.clone()),
                _ => Value::String(f.to_string()),
            })),
        Some(Scalar::Str(s)) => Ok(Value::String(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        load(text).expect("valid yaml").remove(0)
    }

    #[test]
    fn deep_nesting_is_an_error_at_the_first_level_too_many_not_a_stack_overflow() {
        // 10,000 nested sequences (20 KB), and as many block mappings: rejected where the
        // first level beyond the maximum opens.
        let seqs = "- ".repeat(10_000) + "x\n";
        let e = load(&seqs).unwrap_err();
        assert_eq!(
            (e.pos.line, e.pos.col),
            (1, 2 * MAX_DEPTH + 1),
            "{}",
            e.message
        );
        assert!(e.message.contains("deeper than"), "{}", e.message);
        let maps: String = (0..2_000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        let e = load(&maps).unwrap_err();
        assert_eq!(e.pos.line, MAX_DEPTH + 1, "{}", e.message);
        // The limit itself is fine.
        let ok = "- ".repeat(MAX_DEPTH - 1) + "x\n";
        assert!(load(&ok).is_ok());
        // Aliases cannot build depth the text does not have: each anchor wraps the last.
        let mut chain = String::from("a0: &a0 [x]\n");
        for i in 1..200 {
            chain.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        let e = load(&chain).unwrap_err();
        assert!(e.message.contains("alias"), "{}", e.message);
    }

    #[test]
    fn scalars_resolve_by_core_schema_but_keep_octal_looking_text() {
        let doc = one("a: 0644\nb: 12\nc: '12'\nd: ~\nf: 0o17\ng: !!str 3\nh: -07\n");
        let json = to_json(&doc).expect("convertible");
        assert_eq!(json["a"], "0644");
        assert_eq!(json["b"], 12);
        assert_eq!(json["c"], "12");
        assert!(json["d"].is_null());
        assert_eq!(json["f"], 15);
        assert_eq!(json["g"], "3");
        assert_eq!(json["h"], "-07");
        assert_eq!(
            to_json(&one(".inf")).ok(),
            Some(serde_json::Value::from(".inf"))
        );
    }

    #[test]
    fn positions_are_one_based() {
        let doc = one("---\ngraph: g\nresources:\n  file: []\n");
        let (k, v) = mapping(&doc).expect("mapping").nth(1).expect("two keys");
        assert_eq!(
            Pos::of(k),
            Pos {
                line: 3,
                col: 1,
                width: 9
            }
        );
        let (fk, _) = mapping(v).expect("mapping").next().expect("file");
        assert_eq!(
            Pos::of(fk),
            Pos {
                line: 4,
                col: 3,
                width: 4
            }
        );
    }

    fn error(text: &str) -> SyntaxError {
        load(text).expect_err("invalid yaml")
    }

    fn value<'n>(doc: &'n Node, key: &str) -> &'n Node {
        mapping(doc)
            .expect("mapping")
            .find(|(k, _)| text(k).ok().flatten() == Some(key))
            .map(|(_, v)| v)
            .expect("key present")
    }

    fn at(line: usize, col: usize, width: usize) -> Pos {
        Pos { line, col, width }
    }

    #[test]
    fn strings_that_look_like_nothing_else_resolve_as_strings() {
        let doc = one(
            "a: /tmp/f0\nb: f0\nc: nul\nd: True\ne: -.inf\nf: ~\ng: Null\nh: +1\ni: .5\nj: FALSE\nk: no\nl: inf\nm: nan1\nn: 0x1F\n",
        );
        let json = to_json(&doc).expect("convertible");
        assert_eq!(json["a"], "/tmp/f0");
        assert_eq!(json["b"], "f0");
        assert_eq!(json["c"], "nul");
        assert_eq!(json["d"], true);
        assert_eq!(json["e"], "-.inf");
        assert!(json["f"].is_null());
        assert!(json["g"].is_null());
        assert_eq!(json["h"], 1);
        assert_eq!(json["i"], 0.5);
        assert_eq!(json["j"], false);
        assert_eq!(json["k"], "no");
        assert_eq!(json["l"], "inf");
        assert_eq!(json["m"], "nan1");
        assert_eq!(json["n"], 31);
    }

    #[test]
    fn multi_line_scalars_underline_their_first_character() {
        let doc = one("a: |\n  one\n  two\nb: \"x\n  y\"\nc: plain\n  more\nd: 'one line'\n");
        // A block scalar starts where its text does.
        assert_eq!(Pos::of(value(&doc, "a")), at(2, 3, 1));
        assert_eq!(Pos::of(value(&doc, "b")), at(4, 4, 1));
        assert_eq!(Pos::of(value(&doc, "c")), at(6, 4, 1));
        assert_eq!(Pos::of(value(&doc, "d")), at(8, 4, 10));
        assert_eq!(text(value(&doc, "a")), Ok(Some("one\ntwo\n")));
        assert_eq!(text(value(&doc, "c")), Ok(Some("plain more")));
    }

    #[test]
    fn collections_underline_one_character_at_their_start() {
        let doc = one("a: {k: v}\nb:\n  - x\n");
        assert_eq!(Pos::of(value(&doc, "a")), at(1, 4, 1));
        assert_eq!(Pos::of(value(&doc, "b")), at(3, 3, 1));
    }

    #[test]
    fn aliases_copy_the_anchored_node_and_sit_where_they_are_written() {
        let doc = one("a: &x {k: v, l: [1, 2]}\nb: *x\nc: &s text\nd: *s\n");
        let json = to_json(&doc).expect("convertible");
        assert_eq!(json["b"], serde_json::json!({"k": "v", "l": [1, 2]}));
        assert_eq!(json["d"], "text");
        assert_eq!(Pos::of(value(&doc, "b")), at(2, 4, 1));
        assert_eq!(Pos::of(value(&doc, "d")), at(4, 4, 2));
        // What is inside an alias is where the anchor wrote it.
        let (k, _) = mapping(value(&doc, "b"))
            .expect("mapping")
            .next()
            .expect("k");
        assert_eq!(Pos::of(k), at(1, 8, 1));
    }

    #[test]
    fn aliases_may_not_expand_past_the_node_budget() {
        // Each level holds ten copies of the one before: 10^6 strings at the last level.
        let mut text = String::from("a0: &a0 [lol]\n");
        for i in 1..=6 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{p}"); 10].join(", ")
            ));
        }
        let e = error(&text);
        assert_eq!(
            e.message,
            "alias expansion exceeded the maximum node budget (possible billion-laughs attack)"
        );
        assert_eq!(
            e.pos.line, 6,
            "the first alias over budget is on the 10^5 line"
        );
        // Four levels (11,110 nodes copied) are fine.
        let ok: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        assert!(load(&ok).is_ok());
    }

    #[test]
    fn aliases_may_not_copy_more_text_than_the_budget() {
        let long = "x".repeat(1 << 20);
        let copies = vec!["*t"; 17].join(", ");
        let e = error(&format!("t: &t {long}\nu: [{copies}]\n"));
        assert_eq!(
            e.message,
            "alias expansion exceeded the maximum text budget (possible billion-laughs attack)"
        );
        // `u: [` and sixteen `*t, ` before the alias over budget.
        assert_eq!((e.pos.line, e.pos.col), (2, 5 + 4 * 16));
        let copies = vec!["*t"; 15].join(", ");
        assert!(load(&format!("t: &t {long}\nu: [{copies}]\n")).is_ok());
    }

    #[test]
    fn duplicate_keys_are_an_error_at_the_second_key_at_any_depth() {
        let e = error("a:\n  b: 1\n  c:\n    d: 1\n    d: 2\n");
        assert_eq!(e.message, "duplicated key in mapping");
        assert_eq!(e.pos, at(5, 5, 1));
        let e = error("- {x: 1, y: 2, x: 3}\n");
        assert_eq!(e.pos, at(1, 16, 1));
        // A collection as a key is a duplicate when its contents are equal.
        let e = error("? [a, b]\n: 1\n? [a, b]\n: 2\n");
        assert_eq!(e.pos, at(3, 3, 1));
        assert!(load("? [a, b]\n: 1\n? [b, a]\n: 2\n").is_ok());
        // Aliases copy keys too.
        let e = error("a: &k key\nm:\n  *k : 1\n  key: 2\n");
        assert_eq!(e.pos, at(4, 3, 1));
    }

    #[test]
    fn duplicate_keys_are_found_in_large_mappings() {
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}: {i}\n")).collect();
        let doc = one(&keys.concat());
        assert_eq!(mapping(&doc).expect("mapping").count(), 100);
        for dup in [0, 15, 16, 17, 99] {
            let text = format!("{}k{dup}: again\n", keys.concat());
            let e = error(&text);
            assert_eq!(e.message, "duplicated key in mapping");
            assert_eq!(e.pos, at(101, 1, 1), "duplicate of k{dup}");
        }
    }

    #[test]
    fn an_error_in_the_text_wins_over_a_duplicate_key_before_it() {
        let e = error("a: 1\na: 2\nb: [\n");
        assert_ne!(e.message, "duplicated key in mapping");
    }

    #[test]
    fn every_document_loads_and_an_empty_one_is_empty() {
        let docs = load("a: 1\n---\n# nothing\n---\n- b\n").expect("valid");
        assert_eq!(docs.len(), 3);
        assert!(mapping(&docs[0]).is_some());
        // After `---` a document holds at least an empty scalar.
        assert!(is_null(&docs[1]));
        assert!(sequence(&docs[2]).is_some());
        assert!(load("# only a comment\n").expect("valid").is_empty());
        assert!(load("").expect("valid").is_empty());
        // Anchors belong to their document.
        assert!(load("a: &x 1\n---\nb: *x\n").is_err());
    }

    #[test]
    fn tags_outside_the_core_schema_are_kept_and_refused() {
        let doc = one("a: !foo {k: v}\nb: !bar text\nc: !!map {k: v}\nd: !!int x\n");
        let a = value(&doc, "a");
        assert!(mapping(a).is_none());
        assert_eq!(
            scalar(a).err().as_deref(),
            Some("YAML tag `!foo` is not supported here")
        );
        assert_eq!(describe(a), "an unreadable value");
        assert_eq!(
            scalar(value(&doc, "b")).err().as_deref(),
            Some("YAML tag `!bar` is not supported here")
        );
        assert!(mapping(value(&doc, "c")).is_some());
        assert_eq!(
            scalar(value(&doc, "d")).err().as_deref(),
            Some("`x` is not a valid !!int")
        );
    }

    /// What saphyr's own loader (which these nodes replaced) made of `text`, or its error.
    fn saphyr_load(text: &str) -> Result<Vec<saphyr::MarkedYamlOwned>, (Pos, String)> {
        let mut loader: saphyr::YamlLoader<'_, saphyr::MarkedYamlOwned> =
            saphyr::YamlLoader::default();
        loader.early_parse(false);
        let result = Parser::new_from_str(text).load(&mut loader, true);
        match result.err().or_else(|| loader.error().cloned()) {
            Some(e) => Err((Pos::at(*e.marker()), e.info().to_string())),
            None => Ok(loader.into_documents()),
        }
    }

    fn assert_same_as_saphyr(ours: &Node, theirs: &saphyr::MarkedYamlOwned, text: &str) {
        use saphyr::YamlDataOwned as D;
        assert_eq!(ours.span, theirs.span, "span in {text:?}");
        match (&ours.data, &theirs.data) {
            (Data::Scalar(t, s, g), D::Representation(t2, s2, g2)) => {
                assert_eq!((t, s, g.as_deref()), (t2, s2, g2.as_ref()), "in {text:?}");
            }
            (Data::Sequence(a), D::Sequence(b)) => {
                assert_eq!(a.len(), b.len(), "in {text:?}");
                for (a, b) in a.iter().zip(b) {
                    assert_same_as_saphyr(a, b, text);
                }
            }
            (Data::Mapping(a), D::Mapping(b)) => {
                assert_eq!(a.len(), b.len(), "in {text:?}");
                for ((ka, va), (kb, vb)) in a.iter().zip(b.iter()) {
                    assert_same_as_saphyr(ka, kb, text);
                    assert_same_as_saphyr(va, vb, text);
                }
            }
            (Data::Tagged(t, a), D::Tagged(t2, b)) => {
                assert_eq!(**t, *t2, "in {text:?}");
                assert_same_as_saphyr(a, b, text);
            }
            (a, b) => panic!("{a:?} is not {b:?} in {text:?}"),
        }
    }

    #[test]
    fn nodes_and_errors_are_those_saphyrs_loader_gave() {
        let texts = [
            "---\ngraph: g\nresources:\n  file:\n  - name: f1\n    path: /tmp/f1\n    content: |\n      hello\n      world\n    mode: 0644\n  exec:\n  - name: e\n    cmd: \"echo \\\"hi\\\"\"\n    meta:\n      retry: -1\n      limit: .inf\nedges:\n- name: e1\n  from: {kind: file, name: f1}\n  to:\n    kind: exec\n    name: e\n",
            "a: |-\n  one\n\n  two\n\nb: >+\n  folded\n  text\n\nc: 'it''s'\nd: \"multi\n  line\"\ne: plain\n  continued\n",
            "a: &x {k: v, l: [1, 2]}\nb: *x\nc: &s text\nd: [*s, *x]\ne: &q\n  - 1\n  - &in {z: 2}\nf: *in\n",
            "a: !foo {k: v}\nb: !bar text\nc: !!map {k: v}\nd: !!int x\ne: !foo\n  - x\n",
            "? [a, b]\n: 1\n? {c: d}\n: 2\n[x]: 3\n",
            "a: 1\n---\n# nothing\n---\n- b\n...\n---\nplain top\n",
            "# only a comment\n",
            "",
            "a:\nb: ~\nc: {}\nd: []\ne: ''\n",
            "a: 1\r\nb:\r\n  - x\r\n  - y\r\n",
            "\u{e9}t\u{e9}: caf\u{e9}\nna\u{ef}ve: [\u{fc}ber, \"\u{f1}\"]\nz: 1\n",
            "a:\n\t- x\n",
            "a: 1\na: 2\n",
            "a:\n  b: 1\n  c:\n    d: 1\n    d: 2\n",
            "- {x: 1, y: 2, x: 3}\n",
            "a: &k key\nm:\n  *k : 1\n  key: 2\n",
            "a: 1\na: 2\nb: [\n",
            "a: [unclosed\n",
            "a: *nowhere\n",
            "a: &x 1\n---\nb: *x\n",
        ];
        for text in texts {
            match (load(text), saphyr_load(text)) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(ours.len(), theirs.len(), "documents in {text:?}");
                    for (a, b) in ours.iter().zip(&theirs) {
                        assert_same_as_saphyr(a, b, text);
                    }
                }
                (Err(ours), Err((pos, message))) => {
                    assert_eq!((ours.pos, ours.message), (pos, message), "in {text:?}");
                }
                (ours, theirs) => panic!("{ours:?} but saphyr: {theirs:?}, in {text:?}"),
            }
        }
        // Over the alias budget the two agree too.
        let mut bomb = String::from("a0: &a0 [lol]\n");
        for i in 1..=6 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let ours = load(&bomb).expect_err("over budget");
        let theirs = saphyr_load(&bomb).expect_err("over budget");
        assert_eq!((ours.pos, ours.message), theirs);
    }

    #[test]
    fn plain_scalars_resolve_as_saphyrs_core_schema_does() {
        use saphyr::ScalarOwned as S;
        let texts = [
            "",
            "~",
            "null",
            "Null",
            "NULL",
            "nULL",
            "nul",
            "true",
            "True",
            "TRUE",
            "tRue",
            "false",
            "FALSE",
            "fAlse",
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "0",
            "-0",
            "+0",
            "12",
            "-12",
            "+12",
            "0x",
            "0x1F",
            "0x-1",
            "0o17",
            "0o",
            "+-1",
            "1_000",
            "1e3",
            "1E-3",
            "1.",
            ".5",
            "-.5",
            "+.5",
            "-",
            "+",
            ".",
            "..",
            ".inf",
            "-.Inf",
            "+.INF",
            ".nan",
            ".NaN",
            "inf",
            "-inf",
            "Infinity",
            "nan",
            "NaN",
            "nan1",
            "inf1",
            "e5",
            "f0",
            "t1",
            "n2",
            "/tmp/x/f0",
            "name",
            "@@x",
            "9223372036854775808",
            "-9223372036854775809",
            "\u{e9}t\u{e9}",
            " x",
        ];
        for text in texts {
            let node = Node {
                span: Span::default(),
                data: Data::Scalar(text.to_string(), ScalarStyle::Plain, None),
            };
            let ours = match scalar(&node) {
                Ok(Some(Scalar::Null)) => S::Null,
                Ok(Some(Scalar::Bool(b))) => S::Boolean(b),
                Ok(Some(Scalar::Int(i))) => S::Integer(i),
                Ok(Some(Scalar::Float(f))) => S::FloatingPoint(f.into()),
                Ok(Some(Scalar::Str(s))) => S::String(s.to_string()),
                other => panic!("{text:?} resolved to {:?}", other.is_ok()),
            };
            let theirs =
                S::parse_from_cow_and_metadata(Cow::Borrowed(text), ScalarStyle::Plain, None);
            assert_eq!(Some(ours), theirs, "{text:?}");
        }
    }
}
