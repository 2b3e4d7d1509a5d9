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
    /// A document with no node at all (a file of comments).
    Empty,
}

/// How much aliases may expand, over a whole load: each alias copies its anchor's nodes, so a
/// few nested anchors could otherwise make billions of them (a "billion laughs" attack). The
/// node count is the one saphyr's loader allowed; text is counted too, so that one long
/// anchored scalar cannot be copied a hundred thousand times either.
const ALIAS_NODE_BUDGET: usize = 100_000;
const ALIAS_TEXT_BUDGET: usize = 16 << 20;

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
            (Data::Empty, Data::Empty) => true,
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
            Data::Empty => {}
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
    let result = Parser::new_from_str(text).load(&mut loader, true);
    // The parser reads on after the loader gave up, and an error of the text itself wins.
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

/// True for a document with nothing in it (a file of comments only).
pub(crate) fn is_empty_document(node: &Node) -> bool {
    matches!(node.data, Data::Empty)
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
            Data::Empty => {}
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
        // The parser rejects an alias to an unknown anchor before it gets here.
        let node = self.anchors.get(&id).ok_or("unknown anchor")?;
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
                let doc = self.root.take().unwrap_or(Node {
                    span,
                    data: Data::Empty,
                });
                self.docs.push(doc);
                // Anchors do not reach across documents (the parser forgets their names).
                self.anchors.clear();
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
        Data::Empty => return Err("invalid value".to_string()),
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
        match text.as_bytes().first() {
            None => return Ok(Some(Scalar::Null)),
            // Nothing but a string starts otherwise (null, booleans and numbers start with one
            // of these), so most names and paths need no trial parses.
            Some(b) if !b"+-.0123456789~nNtTfF".contains(b) => return Ok(Some(Scalar::Str(text))),
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
}
