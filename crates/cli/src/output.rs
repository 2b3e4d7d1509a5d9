//! Where events go: one JSON object per line on stdout with `--json`, human logs on stderr
//! through `tracing` (filtered by RUST_LOG) always. Nothing here ever prints a secret: callers
//! pass only names, ids and messages.

use std::io::Write;
use std::sync::{Arc, Mutex};

use fleet::Event;
use tracing_subscriber::EnvFilter;

/// Initialise the human log on stderr. `RUST_LOG` wins; the default is `info`.
pub fn init_tracing(prefix: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // A log that cannot be written (a remote child whose connection dropped: EPIPE) is
        // dropped; tracing-subscriber would otherwise report it with `eprintln!`, which panics
        // on the same closed pipe and kills the process before it can clean up.
        .log_internal_errors(false)
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

    /// Emit one event (its schema: `schema/events.json`).
    pub fn emit(&self, ev: &Event) {
        if !self.json {
            return;
        }
        let mut line = ev.to_line();
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }

    /// The first event of the stream: the schema version, who writes it.
    pub fn start(&self, hostname: &str) {
        self.emit(&Event::Start {
            schema: fleet::SCHEMA_VERSION,
            version: crate::VERSION.to_string(),
            hostname: hostname.to_string(),
        });
    }
}

/// The engine's events in the stream's terms (ids as `kind[name]`).
pub fn of_engine(ev: &engine::EngineEvent) -> Event {
    use engine::EngineEvent as E;
    let ids = |v: &[resource::ResId]| v.iter().map(ToString::to_string).collect();
    match ev {
        E::Applied {
            id,
            outcome,
            refresh,
            ms,
        } => Event::Applied {
            id: id.to_string(),
            outcome: *outcome,
            refresh: *refresh,
            ms: *ms,
        },
        E::Failed {
            id,
            error,
            attempt,
            will_retry,
        } => Event::Failed {
            id: id.to_string(),
            error: error.clone(),
            attempt: *attempt,
            will_retry: *will_retry,
        },
        E::WatchFailed { id, error } => Event::WatchFailed {
            id: id.to_string(),
            error: error.clone(),
        },
        E::Swapped {
            added,
            removed,
            kept,
        } => Event::Swapped {
            added: ids(added),
            removed: ids(removed),
            kept: ids(kept),
        },
    }
}
