//! A small registry of test kinds with typed fields, independent of the real kinds so the
//! diagnostic snapshots only change when the front end does. Builders check types the way the
//! real ones do and name the offending field.

use std::sync::Arc;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Registry, Resource, ResourceError,
};
use serde_json::Value;

#[derive(Clone, Copy)]
enum Ty {
    Str,
    UInt,
    Bool,
    Map,
}

#[derive(Debug)]
pub struct TestRes {
    kind: &'static str,
    name: String,
    meta: Meta,
    params: Value,
}

#[async_trait]
impl Resource for TestRes {
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
    fn params(&self) -> Value {
        self.params.clone()
    }
    async fn check_apply(&self, _ctx: &ApplyCtx, _mode: Mode) -> Result<Outcome, ResourceError> {
        Ok(Outcome::InSync)
    }
}

fn build_with(
    kind: &'static str,
    spec: &[(&'static str, Ty)],
    name: &str,
    params: Value,
    meta: Meta,
) -> Result<Arc<dyn Resource>, BuildError> {
    let obj = params.as_object().cloned().unwrap_or_default();
    for (k, v) in &obj {
        let Some((_, ty)) = spec.iter().find(|(f, _)| f == k) else {
            return Err(BuildError {
                field: Some(k.clone()),
                message: format!("`{k}`: unknown field"),
            });
        };
        let ok = match ty {
            Ty::Str => v.is_string(),
            Ty::UInt => v.is_u64(),
            Ty::Bool => v.is_boolean(),
            Ty::Map => v.is_object(),
        };
        if !ok {
            let want = match ty {
                Ty::Str => "a string",
                Ty::UInt => "a non-negative integer",
                Ty::Bool => "a boolean",
                Ty::Map => "a map",
            };
            return Err(BuildError {
                field: Some(k.clone()),
                message: format!("`{k}`: expected {want}, found `{v}`"),
            });
        }
    }
    if kind == "exec" && !obj.contains_key("cmd") {
        return Err(BuildError {
            field: Some("cmd".into()),
            message: "`cmd`: missing".into(),
        });
    }
    Ok(Arc::new(TestRes {
        kind,
        name: name.to_string(),
        meta,
        params: Value::Object(obj),
    }))
}

const FILE: &[(&str, Ty)] = &[
    ("path", Ty::Str),
    ("dirname", Ty::Str),
    ("basename", Ty::Str),
    ("content", Ty::Str),
    ("source", Ty::Str),
    ("state", Ty::Str),
    ("mode", Ty::Str),
    ("owner", Ty::Str),
    ("group", Ty::Str),
    ("recurse", Ty::Bool),
    ("force", Ty::Bool),
];
const EXEC: &[(&str, Ty)] = &[
    ("cmd", Ty::Str),
    ("shell", Ty::Str),
    ("timeout", Ty::UInt),
    ("watchcmd", Ty::Str),
    ("watchshell", Ty::Str),
    ("ifcmd", Ty::Str),
    ("ifshell", Ty::Str),
    ("pollint", Ty::UInt),
    ("state", Ty::Str),
];
const MSG: &[(&str, Ty)] = &[
    ("body", Ty::Str),
    ("priority", Ty::Str),
    ("fields", Ty::Map),
    ("journal", Ty::Bool),
    ("syslog", Ty::Bool),
];
const TIMER: &[(&str, Ty)] = &[("interval", Ty::UInt)];

fn names(spec: &'static [(&'static str, Ty)]) -> &'static [&'static str] {
    Box::leak(
        spec.iter()
            .map(|(f, _)| *f)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

fn file(n: &str, p: Value, m: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    build_with("file", FILE, n, p, m)
}
fn exec(n: &str, p: Value, m: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    build_with("exec", EXEC, n, p, m)
}
fn msg(n: &str, p: Value, m: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    build_with("msg", MSG, n, p, m)
}
fn timer(n: &str, p: Value, m: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    build_with("timer", TIMER, n, p, m)
}
fn noop(n: &str, p: Value, m: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    build_with("noop", &[], n, p, m)
}

pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(KindInfo {
        kind: "file",
        fields: names(FILE),
        build: file,
    });
    r.register(KindInfo {
        kind: "exec",
        fields: names(EXEC),
        build: exec,
    });
    r.register(KindInfo {
        kind: "msg",
        fields: names(MSG),
        build: msg,
    });
    r.register(KindInfo {
        kind: "timer",
        fields: names(TIMER),
        build: timer,
    });
    r.register(KindInfo {
        kind: "noop",
        fields: &[],
        build: noop,
    });
    for k in ["pkg", "svc", "virt"] {
        r.register_unimplemented(k);
    }
    r
}
