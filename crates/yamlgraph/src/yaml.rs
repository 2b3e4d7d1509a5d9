//! Loading YAML text into position-annotated nodes, and reading values out of them.
//!
//! Scalars are loaded unresolved (their text, quoting style and tag) and resolved here by the
//! YAML 1.2 core schema, so the original text stays available: mgmt's graphs were read by a
//! YAML 1.1 parser that hands a string field the scalar's text (`mode: 0644` is "0644", not
//! the number 644). Never does IO.

use std::borrow::Cow;

use saphyr::{MarkedYamlOwned, ScalarOwned, ScalarStyle, YamlDataOwned, YamlLoader};
use saphyr_parser::Parser;

pub(crate) type Node = MarkedYamlOwned;

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
}

fn is_collection(node: &Node) -> bool {
    matches!(
        node.data,
        YamlDataOwned::Mapping(_) | YamlDataOwned::Sequence(_)
    )
}

/// A YAML syntax error (including duplicate keys): where and what.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Loads every document of `text`. Aliases are expanded (with saphyr's expansion budget);
/// duplicate keys are a syntax error, as YAML requires.
pub(crate) fn load(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut loader: YamlLoader<'_, Node> = YamlLoader::default();
    loader.early_parse(false);
    let mut parser = Parser::new_from_str(text);
    let result = parser.load(&mut loader, true);
    let err = result.err().or_else(|| loader.error().cloned());
    match err {
        Some(e) => {
            let m = e.marker();
            Err(SyntaxError {
                pos: Pos {
                    line: m.line().max(1),
                    col: m.col() + 1,
                    width: 1,
                },
                message: e.info().to_string(),
            })
        }
        None => Ok(loader.into_documents()),
    }
}

/// A scalar resolved by the core schema.
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// Resolves a scalar node by the core schema. `Err` is a message for a value that cannot be
/// read (an unknown tag, `!!int x`); `Ok(None)` means the node is not a scalar.
pub(crate) fn scalar(node: &Node) -> Result<Option<Scalar>, String> {
    let YamlDataOwned::Representation(text, style, tag) = &node.data else {
        return match &node.data {
            YamlDataOwned::Tagged(tag, _) => Err(format!(
                "YAML tag `{}{}` is not supported here",
                tag.handle, tag.suffix
            )),
            YamlDataOwned::BadValue => Err("invalid value".to_string()),
            _ => Ok(None),
        };
    };
    if let Some(tag) = tag
        && !tag.is_yaml_core_schema()
    {
        return Err(format!(
            "YAML tag `{}{}` is not supported here",
            tag.handle, tag.suffix
        ));
    }
    if *style == ScalarStyle::Plain && tag.is_none() && is_leading_zero_int(text) {
        // YAML 1.1 (mgmt) reads this as octal, YAML 1.2 as decimal: keep the text and let the
        // field decide (file modes are the common case).
        return Ok(Some(Scalar::Str(text.clone())));
    }
    let tag = tag.as_ref().map(Cow::Borrowed);
    match ScalarOwned::parse_from_cow_and_metadata(
        Cow::Borrowed(text.as_str()),
        *style,
        tag.as_ref(),
    ) {
        Some(ScalarOwned::Null) => Ok(Some(Scalar::Null)),
        Some(ScalarOwned::Boolean(b)) => Ok(Some(Scalar::Bool(b))),
        Some(ScalarOwned::Integer(i)) => Ok(Some(Scalar::Int(i))),
        Some(ScalarOwned::FloatingPoint(f)) => Ok(Some(Scalar::Float(f.into_inner()))),
        Some(ScalarOwned::String(s)) => Ok(Some(Scalar::Str(s))),
        None => {
            let t = tag.map(|t| t.suffix.clone()).unwrap_or_default();
            Err(format!("`{text}` is not a valid !!{t}"))
        }
    }
}

fn is_leading_zero_int(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The text of a plain scalar that did not resolve to a string (`12`, `true`, `1.5`), which a
/// string field takes verbatim, as mgmt's YAML library did.
pub(crate) fn plain_text_of_non_string(node: &Node) -> Option<String> {
    match (&node.data, scalar(node)) {
        (
            YamlDataOwned::Representation(text, ScalarStyle::Plain, None),
            Ok(Some(Scalar::Bool(_) | Scalar::Int(_) | Scalar::Float(_))),
        ) => Some(text.clone()),
        _ => None,
    }
}

/// Text of a scalar for string-valued keys (names, kinds, patterns): any non-null scalar is
/// taken as written. `Ok(None)` for null (unset); `Err` for a collection or unreadable value.
pub(crate) fn text(node: &Node) -> Result<Option<String>, String> {
    match scalar(node)? {
        Some(Scalar::Null) => Ok(None),
        Some(Scalar::Str(s)) => Ok(Some(s)),
        Some(_) => match &node.data {
            YamlDataOwned::Representation(t, _, _) => Ok(Some(t.clone())),
            _ => unreachable!("scalars are representations"),
        },
        None => Err(format!("expected a string, found {}", describe(node))),
    }
}

/// "a mapping", "a list", "a string"... for type errors.
pub(crate) fn describe(node: &Node) -> &'static str {
    match &node.data {
        YamlDataOwned::Mapping(_) => "a mapping",
        YamlDataOwned::Sequence(_) => "a list",
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
        YamlDataOwned::Mapping(m) => Some(m.iter()),
        _ => None,
    }
}

pub(crate) fn sequence(node: &Node) -> Option<&[Node]> {
    match &node.data {
        YamlDataOwned::Sequence(s) => Some(s.as_slice()),
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
                Ok(Some(key)) => key,
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
                YamlDataOwned::Representation(text, _, _) => Value::String(text.clone()),
                _ => Value::String(f.to_string()),
            })),
        Some(Scalar::Str(s)) => Ok(Value::String(s)),
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
