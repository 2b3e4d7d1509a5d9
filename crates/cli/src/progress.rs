//! The live view of a remote run for people: one line per host (connecting, copying, running,
//! converged, failed) redrawn in place when stderr is a terminal, plain prefixed lines
//! otherwise. The child's output is always shown line by line, prefixed with its host.
//!
//! No colour anywhere: the template has no styles (so NO_COLOR has nothing to turn off here;
//! indicatif's `console` would honour it too).

use std::collections::BTreeMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use remote::HostState;

/// Writes to stderr, ignoring errors: `eprint!` panics when stderr is gone (the terminal hung
/// up, which stops the run cleanly, and the clean-up must not die on its way out).
pub fn print_stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

pub struct Progress {
    tty: Option<(MultiProgress, BTreeMap<String, ProgressBar>)>,
    width: usize,
}

impl Progress {
    pub fn new(hosts: &[String], tty: bool) -> Progress {
        let width = hosts.iter().map(String::len).max().unwrap_or(4).max(4);
        if !tty {
            return Progress { tty: None, width };
        }
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = hosts
            .iter()
            .map(|h| {
                let pb = mp.add(ProgressBar::new_spinner());
                pb.set_style(style.clone());
                pb.set_prefix(format!("{h:<width$}"));
                pb.set_message("waiting");
                pb.enable_steady_tick(std::time::Duration::from_millis(120));
                (h.clone(), pb)
            })
            .collect();
        Progress {
            tty: Some((mp, bars)),
            width,
        }
    }

    /// A host that joined the run (a graph moved to it).
    pub fn add(&mut self, host: &str) {
        let width = self.width;
        if let Some((mp, bars)) = &mut self.tty
            && !bars.contains_key(host)
        {
            let pb = mp.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(format!("{host:<width$}"));
            pb.set_message("waiting");
            pb.enable_steady_tick(std::time::Duration::from_millis(120));
            bars.insert(host.to_string(), pb);
        }
    }

    pub fn state(&mut self, host: &str, state: HostState) {
        let word = state.as_str();
        match &self.tty {
            Some((_, bars)) => {
                if let Some(pb) = bars.get(host) {
                    pb.set_message(word.to_string());
                    if matches!(state, HostState::Done | HostState::Failed) {
                        pb.finish();
                    }
                }
            }
            None => print_stderr(&format!("{host:<w$} : {word}\n", w = self.width)),
        }
    }

    /// The host's child reported itself busy (applying) or converged: its status line says so
    /// (the child's own `applied` and `converged` events, not its log lines).
    pub fn busy(&mut self, host: &str, busy: bool) {
        if let Some((_, bars)) = &self.tty
            && let Some(pb) = bars.get(host)
        {
            pb.set_message(if busy {
                "running, applying"
            } else {
                "running, converged"
            });
        }
    }

    /// One line of the child's output.
    pub fn line(&mut self, host: &str, line: &str) {
        let text = format!("{host:<w$} | {line}", w = self.width);
        match &self.tty {
            Some((mp, _)) => {
                let _ = mp.println(text);
            }
            None => print_stderr(&format!("{text}\n")),
        }
    }

    pub fn message(&mut self, host: &str, msg: &str) {
        self.line(host, msg);
    }

    pub fn failed(&mut self, host: &str, msg: &str) {
        match &self.tty {
            Some((_, bars)) => {
                if let Some(pb) = bars.get(host) {
                    pb.finish_with_message(format!("failed: {msg}"));
                }
            }
            None => print_stderr(&format!("{host:<w$} : failed: {msg}\n", w = self.width)),
        }
    }

    pub fn finish(&mut self) {
        if let Some((mp, bars)) = &self.tty {
            for pb in bars.values() {
                if !pb.is_finished() {
                    pb.finish();
                }
            }
            let _ = mp.clear();
        }
    }
}
