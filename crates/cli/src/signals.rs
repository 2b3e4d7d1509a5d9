//! The signals that stop a run cleanly: SIGINT (^C), SIGTERM (a service manager, or a remote
//! initiator stopping its child by pid) and SIGHUP (the terminal went away). All three mean the
//! same; during the shutdown only a second SIGINT forces the exit, the others are absorbed
//! (a closing terminal sends SIGHUP to the whole group, and must not cut the cleanup short).
//!
//! The listeners are made once per run, before the run loop: a signal that arrives while the
//! loop is busy is kept, not lost between two iterations.

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub fn new() -> Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
        })
    }

    /// The next stopping signal; its name.
    pub async fn stop(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.int.recv() => "SIGINT",
            Some(()) = self.term.recv() => "SIGTERM",
            Some(()) = self.hup.recv() => "SIGHUP",
            else => std::future::pending().await,
        }
    }

    /// The next SIGINT (a second ^C, which forces); SIGTERM and SIGHUP are absorbed meanwhile.
    pub async fn interrupt(&mut self) {
        loop {
            tokio::select! {
                Some(()) = self.int.recv() => return,
                Some(()) = self.term.recv() => {}
                Some(()) = self.hup.recv() => {}
                else => return std::future::pending().await,
            }
        }
    }
}
