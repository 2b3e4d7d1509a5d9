//! Where events go: one JSON object per line on stdout with `--json`, human logs on stderr
//! through `tracing` (filtered by RUST_LOG) always. Nothing here ever prints a secret: callers
//! pass only names, ids and messages.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing_subscriber::EnvFilter;

/// Initialise the human log on stderr. `RUST_LOG` wins; the default is `info`.
pub fn init_tracing(prefix: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour only on a terminal, and never with NO_COLOR (an explicit `with_ansi` would
        // override tracing-subscriber's own NO_COLOR check).
        .with_ansi(std::io::stderr().is_terminal() && !crate::no_color());

    // A remote child's lines are prefixed by the initiator with the host name, and timestamps
    // there would be the child's clock: keep them short.
    let _ = match prefix {
        Some(_) => builder.without_time().try_init(),
        None => builder.try_init(),
    };
}

/// The JSON event stream on stdout (a no-op when `--json` is off).
#[derive(Clone)]
pub struct Events {
    json: bool,
    out: Arc<Mutex<std::io::Stdout>>,
}

impl Events {
    pub fn new(json: bool) -> Self {
        Events {
            json,
            out: Arc::new(Mutex::new(std::io::stdout())),
        }
    }

    /// Emit one event: `value` must serialise to a JSON object; `event` names it.
    pub fn emit<T: Serialize>(&self, event: &str, value: &T) {
        if !self.json {
            return;
        }
        let mut v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        let obj = match v.as_object_mut() {
            Some(obj) => obj,
            None => return,
        };
        if !obj.contains_key("event") {
            obj.insert("event".into(), serde_json::Value::String(event.into()));
        }
        let mut line = serde_json::to_string(&v).unwrap_or_default();
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}
