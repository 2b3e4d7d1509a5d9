//! `timer`: an event source. Its watch ticks every `interval` seconds; each tick makes the next
//! check_apply report `Changed`, so a `notify` edge from a timer reruns an exec on every tick.
//! It must never touch the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, WatchCtx,
};
use serde_json::{Map, Value};
use tokio::time::MissedTickBehavior;

use crate::params::{Params, bad};

pub const FIELDS: &[&str] = &["interval"];

pub const KIND: KindInfo = KindInfo {
    kind: "timer",
    fields: FIELDS,
    build,
};

#[derive(Debug)]
pub struct Timer {
    name: String,
    meta: Meta,
    /// Seconds between ticks, > 0.
    interval: u64,
    /// A tick happened since the previous check_apply.
    ticked: AtomicBool,
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    let mut p = Params::new("timer", params, FIELDS)?;
    let interval = match p.uint("interval")? {
        Some(0) | None => {
            return Err(bad(
                "interval",
                "a timer needs an interval of at least 1 second",
            ));
        }
        Some(secs) if secs > resource::MAX_WAIT.as_secs() => {
            return Err(bad(
                "interval",
                "a timer's interval is at most a year (31536000 seconds)",
            ));
        }
        Some(secs) => secs,
    };
    Ok(Arc::new(Timer {
        name: name.to_string(),
        meta,
        interval,
        ticked: AtomicBool::new(false),
    }))
}

#[async_trait]
impl Resource for Timer {
    fn kind(&self) -> &'static str {
        "timer"
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn validate(&self) -> Result<(), ResourceError> {
        if self.interval == 0 {
            return Err(ResourceError::invalid(
                "interval",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
    fn params(&self) -> Value {
        let mut map = Map::new();
        map.insert("interval".into(), self.interval.into());
        Value::Object(map)
    }
    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        let mut ticks = tokio::time::interval(Duration::from_secs(self.interval));
        // After a stall (a suspended machine), one tick is enough: ticks are events, not work.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        ctx.running();
        loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(()),
                _ = ticks.tick() => {
                    self.ticked.store(true, Ordering::SeqCst);
                    ctx.event();
                }
            }
        }
    }
    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        // A tick is an event, not machine state: it is consumed in Check mode too, so a
        // `--noop` run reports each tick once.
        if self.ticked.swap(false, Ordering::SeqCst) {
            return Ok(match mode {
                Mode::Check => Outcome::WouldChange,
                Mode::Apply => Outcome::Changed,
            });
        }
        Ok(Outcome::InSync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An interval too long to add to the clock is a build error, not a panic in the watch.
    #[test]
    fn intervals_are_between_a_second_and_a_year() {
        let b = |v: Value| build("t", serde_json::json!({ "interval": v }), Meta::default());
        assert!(b(Value::from(0)).is_err());
        assert!(b(Value::from(31_536_000u64)).is_ok());
        let Err(e) = b(Value::from(u64::MAX)) else {
            panic!("a huge interval was accepted")
        };
        let e = e.to_string();
        assert!(e.contains("at most a year"), "{e}");
    }
}
