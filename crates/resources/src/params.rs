//! Reading a kind's parameters from the JSON object the YAML front end (or an export) hands us.
//!
//! Every reader implements mgmt 0.0.x's conventions once, so all kinds agree: an empty string
//! or `null` means "unset", integers may arrive as numbers or as strings, booleans may arrive as
//! strings. Errors always name the offending field. This module must never do IO.

use std::collections::BTreeMap;

use resource::{BuildError, ResourceError};
use serde_json::{Map, Value};

/// A build error pointing at `field`.
pub(crate) fn bad(field: &str, message: impl Into<String>) -> BuildError {
    BuildError {
        field: Some(field.to_string()),
        message: format!("`{field}`: {}", message.into()),
    }
}

/// Turn a validation failure into a build failure, keeping the field.
pub(crate) fn invalid_to_build(err: ResourceError) -> BuildError {
    match err {
        ResourceError::Invalid { field, message } => bad(&field, message),
        ResourceError::Failed(message) => BuildError {
            field: None,
            message,
        },
    }
}

/// The parameters of one resource, consumed field by field.
pub(crate) struct Params {
    map: Map<String, Value>,
}

impl Params {
    /// Accepts an object (or `null`, meaning "no parameters") whose keys are all in `allowed`.
    pub(crate) fn new(kind: &str, params: Value, allowed: &[&str]) -> Result<Self, BuildError> {
        let map = match params {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(BuildError {
                    field: None,
                    message: format!(
                        "parameters of a `{kind}` resource must be a map, not {}",
                        type_name(&other)
                    ),
                });
            }
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(unknown, format!("unknown field for kind `{kind}`")));
        }
        Ok(Params { map })
    }

    /// The raw value of a field for kind-specific parsing; `null` is unset.
    pub(crate) fn take(&mut self, field: &str) -> Option<Value> {
        self.map.remove(field).filter(|v| !v.is_null())
    }

    /// A string; `""` and `null` are unset.
    pub(crate) fn string(&mut self, field: &str) -> Result<Option<String>, BuildError> {
        Ok(self.text(field)?.filter(|s| !s.is_empty()))
    }

    /// A string where `""` is a value. Numbers and booleans are taken as their text, as mgmt's
    /// YAML decoder does for string fields (`content: 42`).
    pub(crate) fn text(&mut self, field: &str) -> Result<Option<String>, BuildError> {
        match self.take(field) {
            None => Ok(None),
            Some(v @ (Value::Array(_) | Value::Object(_))) => Err(bad(
                field,
                format!("expected a string, found {}", type_name(&v)),
            )),
            Some(other) => Ok(scalar_string(other)),
        }
    }

    /// A user or group: a name, or a numeric id given as a number or a string.
    pub(crate) fn ident(&mut self, field: &str) -> Result<Option<String>, BuildError> {
        match self.take(field) {
            Some(Value::Number(n)) => match n.as_u64() {
                Some(id) if id <= u32::MAX as u64 => Ok(Some(id.to_string())),
                _ => Err(bad(field, format!("`{n}` is not a valid numeric id"))),
            },
            Some(v) => {
                self.map.insert(field.to_string(), v);
                self.string(field)
            }
            None => Ok(None),
        }
    }

    /// A non-negative integer, as a number or a numeric string; `""` and `null` are unset.
    pub(crate) fn uint(&mut self, field: &str) -> Result<Option<u64>, BuildError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                bad(
                    field,
                    format!("expected a non-negative integer, found `{n}`"),
                )
            }),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| {
                bad(
                    field,
                    format!("expected a non-negative integer, found `{s}`"),
                )
            }),
            Some(other) => Err(bad(
                field,
                format!("expected an integer, found {}", type_name(&other)),
            )),
        }
    }

    /// A boolean (or `"true"`/`"false"`); unset is `false`.
    pub(crate) fn boolean(&mut self, field: &str) -> Result<bool, BuildError> {
        match self.take(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::String(s)) => match s.trim() {
                "" | "false" => Ok(false),
                "true" => Ok(true),
                _ => Err(bad(field, format!("expected true or false, found `{s}`"))),
            },
            Some(other) => Err(bad(
                field,
                format!("expected a boolean, found {}", type_name(&other)),
            )),
        }
    }

    /// A list of strings; an empty list is unset.
    pub(crate) fn list(&mut self, field: &str) -> Result<Option<Vec<String>>, BuildError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Array(items)) => {
                let items = items
                    .into_iter()
                    .map(|v| {
                        scalar_string(v).ok_or_else(|| bad(field, "expected a list of strings"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if items.is_empty() { None } else { Some(items) })
            }
            Some(other) => Err(bad(
                field,
                format!("expected a list, found {}", type_name(&other)),
            )),
        }
    }

    /// A map of string to string (scalar values are turned into their text).
    pub(crate) fn map(&mut self, field: &str) -> Result<BTreeMap<String, String>, BuildError> {
        match self.take(field) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match scalar_string(v) {
                    Some(v) => Ok((k, v)),
                    None => Err(bad(field, format!("value of `{k}` must be a string"))),
                })
                .collect(),
            Some(other) => Err(bad(
                field,
                format!("expected a map, found {}", type_name(&other)),
            )),
        }
    }

    /// Accept a field without using it (deprecated fields kept for compatibility).
    pub(crate) fn ignore(&mut self, field: &str) {
        self.map.remove(field);
    }
}

fn scalar_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Insert `value` into a canonical parameter object when it is set.
pub(crate) fn put_opt(
    map: &mut Map<String, Value>,
    field: &str,
    value: &Option<impl Into<Value> + Clone>,
) {
    if let Some(v) = value {
        map.insert(field.to_string(), v.clone().into());
    }
}
