//! What the engine reports while it runs: one value per notable step, for the CLI to print
//! (human lines, or one JSON object per line with `--json`).
//!
//! Events are facts about the past; the engine never waits for anyone to read them.

use resource::{Outcome, ResId};
use serde::{Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent {
    /// A check_apply finished. `refresh` says whether a notify parent had asked for it.
    Applied {
        #[serde(serialize_with = "display")]
        id: ResId,
        outcome: Outcome,
        refresh: bool,
        ms: u64,
    },
    /// A check_apply failed. `attempt` counts from 1 since the last success or event;
    /// `will_retry` is false once the vertex gives up (until its next event).
    Failed {
        #[serde(serialize_with = "display")]
        id: ResId,
        error: String,
        attempt: u32,
        will_retry: bool,
    },
    /// A watch returned an error; it is restarted after a delay while the worker keeps running.
    WatchFailed {
        #[serde(serialize_with = "display")]
        id: ResId,
        error: String,
    },
    /// A graph swap finished. A vertex whose parameters changed is in `removed` and `added`.
    Swapped {
        #[serde(serialize_with = "display_all")]
        added: Vec<ResId>,
        #[serde(serialize_with = "display_all")]
        removed: Vec<ResId>,
        #[serde(serialize_with = "display_all")]
        kept: Vec<ResId>,
    },
}

/// Ids travel as `kind[name]`, the form people read and type.
fn display<S: Serializer>(id: &ResId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

fn display_all<S: Serializer>(ids: &[ResId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(ToString::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_as_tagged_json_with_readable_ids() {
        let id = ResId::new("file", "/tmp/f");
        let applied = EngineEvent::Applied {
            id: id.clone(),
            outcome: Outcome::WouldChange,
            refresh: true,
            ms: 3,
        };
        let failed = EngineEvent::Failed {
            id: id.clone(),
            error: "boom".into(),
            attempt: 2,
            will_retry: false,
        };
        let swapped = EngineEvent::Swapped {
            added: vec![id.clone()],
            removed: vec![],
            kept: vec![id],
        };
        let json: Vec<String> = [applied, failed, swapped]
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(
            json,
            [
                r#"{"event":"applied","id":"file[/tmp/f]","outcome":"would_change","refresh":true,"ms":3}"#,
                r#"{"event":"failed","id":"file[/tmp/f]","error":"boom","attempt":2,"will_retry":false}"#,
                r#"{"event":"swapped","added":["file[/tmp/f]"],"removed":[],"kept":["file[/tmp/f]"]}"#,
            ]
        );
    }
}
