//! `msg`: log a message once (mgmt's msg resource). Logging goes through `tracing` at info
//! level; whether it reaches the journal or syslog is the subscriber's business (the cli's), so
//! `journal` and `syslog` are accepted and kept but do not open any connection here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use resource::{ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError};
use serde_json::{Map, Value};

use crate::params::{Params, bad, put_opt};

pub const FIELDS: &[&str] = &["body", "priority", "fields", "journal", "syslog"];

pub const KIND: KindInfo = KindInfo {
    kind: "msg",
    fields: FIELDS,
    build,
};

/// mgmt's (syslog's) priority names, in their canonical spelling.
const PRIORITIES: &[&str] = &[
    "Emerg", "Alert", "Crit", "Err", "Warning", "Notice", "Info", "Debug",
];

#[derive(Debug)]
pub struct Msg {
    name: String,
    meta: Meta,
    body: Option<String>,
    priority: Option<&'static str>,
    fields: BTreeMap<String, String>,
    journal: bool,
    syslog: bool,
    /// Logged since the last refresh: the only state a message has.
    logged: AtomicBool,
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    let mut p = Params::new("msg", params, FIELDS)?;
    let body = p.string("body")?;
    let priority = match p.string("priority")? {
        None => None,
        Some(given) => Some(
            PRIORITIES
                .iter()
                .copied()
                .find(|known| known.eq_ignore_ascii_case(&given))
                .ok_or_else(|| {
                    bad(
                        "priority",
                        format!(
                            "unknown priority `{given}` (one of {})",
                            PRIORITIES.join(", ")
                        ),
                    )
                })?,
        ),
    };
    let fields = p.map("fields")?;
    let journal = p.boolean("journal")?;
    let syslog = p.boolean("syslog")?;
    Ok(Arc::new(Msg {
        name: name.to_string(),
        meta,
        body,
        priority,
        fields,
        journal,
        syslog,
        logged: AtomicBool::new(false),
    }))
}

#[async_trait]
impl Resource for Msg {
    fn kind(&self) -> &'static str {
        "msg"
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
        put_opt(&mut map, "body", &self.body);
        put_opt(&mut map, "priority", &self.priority);
        if !self.fields.is_empty() {
            map.insert(
                "fields".into(),
                serde_json::to_value(&self.fields).unwrap_or_default(),
            );
        }
        map.insert("journal".into(), self.journal.into());
        map.insert("syslog".into(), self.syslog.into());
        Value::Object(map)
    }
    async fn check_apply(&self, ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        if ctx.refresh && mode == Mode::Apply {
            self.logged.store(false, Ordering::SeqCst);
        }
        if self.logged.load(Ordering::SeqCst) && !ctx.refresh {
            return Ok(Outcome::InSync);
        }
        if mode == Mode::Check {
            return Ok(Outcome::WouldChange);
        }
        tracing::info!(
            resource = %self.id(),
            priority = self.priority.unwrap_or("Info"),
            fields = ?self.fields,
            "{}",
            self.body.as_deref().unwrap_or("")
        );
        self.logged.store(true, Ordering::SeqCst);
        Ok(Outcome::Changed)
    }
}
