//! The remote tree above the `remote` crate's SSH mechanics: what a process reports (the one
//! event type of the `--json` stream, of a child's reports to its initiator and of an
//! intermediate's reports about its subtree), and the rules initiator and hosts follow.
//!
//! Sans-IO: nothing here opens a socket, spawns a process, reads a clock or a file.

pub mod converge;
pub mod event;

pub use event::{Diagnostic, Event, ExitReason, Outcome, SCHEMA_VERSION};
