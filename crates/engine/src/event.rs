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
