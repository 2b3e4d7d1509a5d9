//! `noop`: a resource that manages nothing. Useful as a join point in a graph and for tests of
//! the engine. It must never touch the machine.

use std::sync::Arc;

use async_trait::async_trait;
use resource::{ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError};
use serde_json::{Map, Value};

use crate::params::{Params, put_opt};

pub const FIELDS: &[&str] = &["comment"];

pub const KIND: KindInfo = KindInfo {
    kind: "noop",
    fields: FIELDS,
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Noop {
    name: String,
    meta: Meta,
    /// Free text, kept so exports carry it.
    comment: Option<String>,
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    let mut p = Params::new("noop", params, FIELDS)?;
    let comment = p.string("comment")?;
    Ok(Arc::new(Noop {
        name: name.to_string(),
        meta,
        comment,
    }))
}

#[async_trait]
impl Resource for Noop {
    fn kind(&self) -> &'static str {
        "noop"
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
        let mut map = Map::new();
        put_opt(&mut map, "comment", &self.comment);
        Value::Object(map)
    }
    async fn check_apply(&self, ctx: &ApplyCtx, _mode: Mode) -> Result<Outcome, ResourceError> {
        if ctx.refresh {
            tracing::debug!(resource = %self.id(), "noop received a refresh");
        }
        Ok(Outcome::InSync)
    }
}
