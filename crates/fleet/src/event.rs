//! The one event type for everything a process reports: `mgmt run --json` prints one per line
//! on stdout, a remote child's `--json` stream is how it reports to its initiator (parsed, never
//! scraped from log lines), and an intermediate relays its subtree's events the same way.
//!
//! The wire form is a JSON object per line, tagged by `event`; `schema/events.json` at the
//! repository root is its JSON Schema, versioned by [`SCHEMA_VERSION`] (the first event of every
//! stream, [`Event::Start`], carries it). Adding an event or an optional field is compatible;
//! removing or renaming one bumps the version. Fields that do not apply are left out, never
//! `null`.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version of the event stream's schema.
pub const SCHEMA_VERSION: u32 = 1;

/// The longest line [`Event::parse`] accepts: a child or an intermediate is a peer, and its
/// output is untrusted input.
pub const MAX_LINE: usize = 64 * 1024;

/// What a check_apply found and did (the engine's own type: one spelling).
pub use resource::Outcome;

impl From<&yamlgraph::Diagnostic> for Diagnostic {
    fn from(d: &yamlgraph::Diagnostic) -> Diagnostic {
        let num = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Diagnostic {
            file: d.file.clone(),
            line: num(d.line),
            column: num(d.col),
            message: d.message.clone(),
            help: d.help.clone(),
        }
    }
}

impl Diagnostic {
    /// A problem with a whole file (it cannot be read, say): no position.
    pub fn whole_file(file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            line: 0,
            column: 0,
            message: message.into(),
            help: None,
        }
    }
}

/// Why a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// Everything (with `--remote`: every live host) was converged for the timeout.
    Converged,
    /// SIGINT, SIGTERM or SIGHUP (named in `signal`).
    Interrupted,
    /// `--max-runtime` passed.
    #[serde(rename = "maxruntime")]
    MaxRuntime,
    /// A remote child's initiator went away (its stdin closed).
    Lifeline,
    /// A remote child's store (its initiator, through the tunnel) did not answer for its
    /// `--store-lost-timeout`.
    StoreLost,
    /// With `--remote`: every host has ended or failed.
    HostsDone,
}

/// One problem of a graph file, where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem is the whole file (it cannot be read, say).
    pub line: u32,
    /// 1-based, in characters; 0 with `line` 0.
    pub column: u32,
    pub message: String,
    /// A suggestion ("did you mean `content`?"), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first event of a stream.
    Start {
        /// [`SCHEMA_VERSION`] of the writer.
        schema: u32,
        /// `mgmt --version`'s text.
        version: String,
        /// The name this process publishes under.
        hostname: String,
    },

    // --- one machine's engine ---
    /// A check_apply finished. `refresh`: a notify parent had asked for it.
    Applied {
        id: String,
        outcome: Outcome,
        refresh: bool,
        ms: u64,
    },
    /// A check_apply failed. `attempt` counts from 1; `will_retry` is false once it gives up.
    Failed {
        id: String,
        error: String,
        attempt: u32,
        will_retry: bool,
    },
    /// A resource's watch failed; it is restarted after a pause.
    WatchFailed { id: String, error: String },
    /// A graph swap finished.
    Swapped {
        added: Vec<String>,
        removed: Vec<String>,
        kept: Vec<String>,
    },
    /// This process turned converged (everything idle) or busy again.
    Converged { converged: bool },
    /// A graph file (a new version of it, or one of a host) does not parse; nothing changed.
    GraphInvalid {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        errors: Vec<Diagnostic>,
    },
    /// A graph file is being written (written, not closed yet): it is read once its writer
    /// closes it or renames it into place, never half-written. Once per burst of writes.
    GraphWriting { file: PathBuf },
    /// The embedded store is listening.
    StoreListening { url: String },
    /// The run ends.
    Exit {
        reason: ExitReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },

    // --- a remote run: one event per host step; `via` names the intermediate that runs it ---
    HostState {
        host: String,
        #[serde(with = "as_str")]
        state: remote::HostState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// A human log line of the host's child.
    HostOutput {
        host: String,
        line: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// A live edit of a graph file was copied to the host.
    GraphCopied {
        host: String,
        file: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// A live edit changed a graph's `remote:`: it is started on `to` and stopped on `from`.
    GraphMoved {
        file: PathBuf,
        from: String,
        to: String,
    },
    HostWarning {
        host: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// A host's child turned converged (or busy again): its own `converged` event, relayed.
    HostConverged {
        host: String,
        converged: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    HostFailed {
        host: String,
        #[serde(with = "as_str")]
        step: remote::Step,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// One row of the summary table, once the run has ended.
    HostSummary {
        host: String,
        /// `ok`, `cancelled`, `exit N`, `signal S`, `failed:<step>`, `unreported`.
        status: String,
        changed: u64,
        bytes_sent: u64,
        #[serde(with = "as_str")]
        cache: remote::CacheUse,
        seconds: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
}

/// Why a line is not an event.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON with an `event` tag: a plain log line.
    NotAnEvent,
    /// Longer than [`MAX_LINE`].
    TooLong(usize),
    /// Tagged as an event, but not one this version knows, or with bad fields.
    Invalid(String),
}

impl Event {
    /// One line of JSON, without the line break.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("events serialise")
    }

    /// Reads one line of a peer's `--json` stream.
    pub fn parse(line: &str) -> Result<Event, ParseError> {
        if line.len() > MAX_LINE {
            return Err(ParseError::TooLong(line.len()));
        }
        if !line.starts_with("{\"event\":") {
            return Err(ParseError::NotAnEvent);
        }
        serde_json::from_str(line).map_err(|e| ParseError::Invalid(e.to_string()))
    }

    /// The host a host event is about.
    pub fn host(&self) -> Option<&str> {
        match self {
            Event::HostState { host, .. }
            | Event::HostOutput { host, .. }
            | Event::GraphCopied { host, .. }
            | Event::HostWarning { host, .. }
            | Event::HostConverged { host, .. }
            | Event::HostFailed { host, .. }
            | Event::HostSummary { host, .. } => Some(host),
            _ => None,
        }
    }

    /// Sets `via` of a host event that has none (an intermediate relaying its subtree).
    pub fn set_via(&mut self, by: &str) {
        match self {
            Event::HostState { via, .. }
            | Event::HostOutput { via, .. }
            | Event::GraphCopied { via, .. }
            | Event::HostWarning { via, .. }
            | Event::HostConverged { via, .. }
            | Event::HostFailed { via, .. }
            | Event::HostSummary { via, .. } => {
                via.get_or_insert_with(|| by.to_string());
            }
            _ => {}
        }
    }
}

/// Serde through a type's own words (`as_str` and `FromStr`), so the wire and the code share
/// one spelling and an unknown word is an error, never a default.
mod as_str {
    use super::*;

    pub trait Word: FromStr {
        fn word(&self) -> &'static str;
    }

    impl Word for remote::HostState {
        fn word(&self) -> &'static str {
            self.as_str()
        }
    }

    impl Word for remote::Step {
        fn word(&self) -> &'static str {
            self.as_str()
        }
    }

    impl Word for remote::CacheUse {
        fn word(&self) -> &'static str {
            self.as_str()
        }
    }

    pub fn serialize<T: Word, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.word())
    }

    pub fn deserialize<'de, T: Word, D: Deserializer<'de>>(d: D) -> Result<T, D::Error>
    where
        T::Err: std::fmt::Display,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Event> {
        vec![
            Event::Start {
                schema: SCHEMA_VERSION,
                version: "0.1.0 (abc)".into(),
                hostname: "h1".into(),
            },
            Event::Applied {
                id: "file[/tmp/f]".into(),
                outcome: Outcome::Changed,
                refresh: false,
                ms: 3,
            },
            Event::Failed {
                id: "exec[x]".into(),
                error: "exit code 1".into(),
                attempt: 1,
                will_retry: true,
            },
            Event::WatchFailed {
                id: "exec[x]".into(),
                error: "gone".into(),
            },
            Event::Swapped {
                added: vec!["noop[a]".into()],
                removed: vec![],
                kept: vec![],
            },
            Event::Converged { converged: true },
            Event::GraphInvalid {
                file: Some("g.yaml".into()),
                host: None,
                errors: vec![Diagnostic {
                    file: "g.yaml".into(),
                    line: 3,
                    column: 5,
                    message: "unknown field `contnt`".into(),
                    help: Some("did you mean `content`?".into()),
                }],
            },
            Event::StoreListening {
                url: "http://127.0.0.1:2379".into(),
            },
            Event::Exit {
                reason: ExitReason::Interrupted,
                signal: Some("SIGHUP".into()),
            },
            Event::HostState {
                host: "h1".into(),
                state: remote::HostState::Running,
                via: None,
            },
            Event::HostOutput {
                host: "h2".into(),
                line: "file[f]: applied".into(),
                via: Some("h1".into()),
            },
            Event::GraphCopied {
                host: "h1".into(),
                file: "/tmp/a.yaml".into(),
                via: None,
            },
            Event::HostWarning {
                host: "h1".into(),
                message: "careful".into(),
                via: None,
            },
            Event::HostConverged {
                host: "h1".into(),
                converged: true,
                via: None,
            },
            Event::GraphMoved {
                file: "/tmp/a.yaml".into(),
                from: "h1".into(),
                to: "h2".into(),
            },
            Event::GraphWriting {
                file: "/tmp/a.yaml".into(),
            },
            Event::HostFailed {
                host: "h1".into(),
                step: remote::Step::Connect,
                error: "Connection refused".into(),
                via: None,
            },
            Event::HostSummary {
                host: "h1".into(),
                status: "ok".into(),
                changed: 2,
                bytes_sent: 1234,
                cache: remote::CacheUse::Hit,
                seconds: 1.5,
                via: None,
            },
        ]
    }

    #[test]
    fn every_event_round_trips_through_its_line() {
        for ev in samples() {
            let line = ev.to_line();
            assert!(line.starts_with("{\"event\":"), "{line}");
            assert!(!line.contains("null"), "absent fields are left out: {line}");
            assert_eq!(Event::parse(&line), Ok(ev), "{line}");
        }
    }

    #[test]
    fn log_lines_unknown_words_and_huge_lines_are_not_events() {
        assert_eq!(
            Event::parse("file[f]: applied"),
            Err(ParseError::NotAnEvent)
        );
        let unknown_state = r#"{"event":"host_state","host":"h1","state":"dancing"}"#;
        assert!(matches!(
            Event::parse(unknown_state),
            Err(ParseError::Invalid(_))
        ));
        let unknown_event = r#"{"event":"teleported","host":"h1"}"#;
        assert!(matches!(
            Event::parse(unknown_event),
            Err(ParseError::Invalid(_))
        ));
        let huge = format!(
            r#"{{"event":"host_output","host":"h","line":"{}"}}"#,
            "x".repeat(MAX_LINE)
        );
        assert!(matches!(Event::parse(&huge), Err(ParseError::TooLong(_))));
    }

    #[test]
    fn via_is_set_once_on_host_events_only() {
        let mut ev = Event::HostState {
            host: "h3".into(),
            state: remote::HostState::Done,
            via: Some("h2".into()),
        };
        ev.set_via("h1");
        assert_eq!(
            ev.to_line(),
            r#"{"event":"host_state","host":"h3","state":"done","via":"h2"}"#
        );
        let mut ev = Event::Converged { converged: false };
        ev.set_via("h1");
        assert_eq!(ev.to_line(), r#"{"event":"converged","converged":false}"#);
    }

    /// The schema in the repository describes every event this version writes.
    #[test]
    fn the_schema_accepts_every_event_and_rejects_bad_ones() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../schema/events.json"))
                .expect("schema/events.json is JSON");
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        for ev in samples() {
            let v = serde_json::to_value(&ev).unwrap();
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{v}: {errors:?}");
        }
        for bad in [
            serde_json::json!({"event": "applied", "id": "x"}),
            serde_json::json!({"event": "host_state", "host": "h", "state": "dancing"}),
            serde_json::json!({"event": "nope"}),
        ] {
            assert!(!validator.is_valid(&bad), "{bad} passed");
        }
    }
}
