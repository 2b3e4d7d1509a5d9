//! The remote tree above the `remote` crate's SSH mechanics: what a process reports (the one
//! event type of the `--json` stream, of a child's reports to its initiator and of an
//! intermediate's reports about its subtree), and the rules initiator and hosts follow.
//!
//! - [`tree`]: the tree of graph files, packing a subtree into a run dir, live-edit routing,
//!   the intermediate's reports;
//! - [`converge`]: the convergence rules, as state machines;
//! - [`event`]: the one event type.
//!
//! Nothing here opens a socket, spawns a process or reads a clock; only [`tree`] reads files
//! (the graph files, when the tree is loaded and when one changes).

pub mod converge;
pub mod event;
pub mod tree;

pub use event::{Diagnostic, Event, ExitReason, Outcome, SCHEMA_VERSION};
