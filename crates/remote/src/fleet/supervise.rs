//! The running child: its output relayed line by line, live updates copied into its run dir,
//! and its stop (stdin closed, `grace`, then killed by its recorded pid) on cancellation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::host::{Progress, Running};
use super::schedule::{Shared, warn};
use super::scripts::{self, Pid, WRAPPER_PREFIX};
use super::types::{HostOutcome, RemoteEvent, Target, TargetExtras};
use crate::error::{ChildExit, Error, Step};
use crate::session::Session;
use crate::sudo::{self, Sudo};
use crate::upload::{self, sh};

/// The longest line taken from a host; the rest of a longer one is dropped (a host that never
/// sends a newline must not grow the initiator's memory).
const MAX_LINE: usize = 64 * 1024;

/// Splits channel bytes into lines; keeps the unfinished tail, at most [`MAX_LINE`] of it.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// Dropping the rest of a line that was too long, up to its newline.
    skipping: bool,
}

impl Lines {
    fn push(&mut self, mut data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        if self.skipping {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.skipping = false;
                    data = &data[i + 1..];
                }
                None => return lines,
            }
        }
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..i]);
            lines.push(line.trim_end_matches('\r').to_string());
        }
        if self.buf.len() > MAX_LINE {
            let mut line = String::from_utf8_lossy(&self.buf[..MAX_LINE]).into_owned();
            line.push_str(&format!(" [line cut at {MAX_LINE} bytes]"));
            lines.push(line);
            self.buf.clear();
            self.skipping = true;
        }
        lines
    }

    fn rest(&mut self) -> Option<String> {
        (!self.buf.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned())
    }
}

fn parse_pid(line: &str) -> Option<Pid> {
    let rest = line.strip_prefix("mgmt-pid: ")?;
    let mut it = rest.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?;
    start
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| (pid, start.to_string()))
}

/// The child's two streams, split into lines: the wrapper's pid line taken from the first
/// line of stdout, what the wrapper said when it refused the binary noted from stderr.
#[derive(Default)]
struct Streams {
    out: Lines,
    err: Lines,
    pid: Option<Pid>,
    first_line: bool,
    wrapper_refusal: Option<String>,
}

impl Streams {
    /// Lines of stdout to show.
    fn stdout(&mut self, data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for line in self.out.push(data) {
            if self.first_line {
                self.first_line = false;
                if let Some(found) = parse_pid(&line) {
                    self.pid = Some(found);
                    continue;
                }
            }
            lines.push(line);
        }
        lines
    }

    /// Lines of stderr to show.
    fn stderr(&mut self, data: &[u8]) -> Vec<String> {
        let lines = self.err.push(data);
        for line in &lines {
            if self.pid.is_some()
                && self.wrapper_refusal.is_none()
                && let Some(said) = line.strip_prefix(WRAPPER_PREFIX)
            {
                self.wrapper_refusal = Some(said.to_string());
            }
        }
        lines
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn supervise(
    shared: &Shared,
    s: &Session,
    t: &mut Target,
    extras: &mut TargetExtras,
    cancel: &CancellationToken,
    p: &mut Progress,
    mut r: Running,
    sudo: Option<&Sudo>,
) -> (HostOutcome, Option<ChildExit>, Option<Pid>) {
    let host = t.hostname.clone();
    let force = shared.cfg.force.clone();
    let mut st = Streams {
        first_line: true,
        ..Streams::default()
    };
    // What came while sudo started the child: its pid line and first output, and what sudo
    // said on the way (a warning of its own is the host's to show, as it would be in a shell).
    let early = std::mem::take(&mut r.early);
    let mut first: Vec<String> = st.stdout(&early.stdout);
    first.extend(early.said);
    first.extend(st.stderr(&early.stderr));
    for line in first {
        shared
            .emit(RemoteEvent::Output {
                host: host.clone(),
                line,
            })
            .await;
    }
    let root = sudo.filter(|_| p.as_root);
    let mut exit: Option<ChildExit> = None;
    let mut stopping = false;
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut deadline = far;
    let mut updates = t.updates.take();
    let mut extra_updates = extras.updates.take();
    let mut exec_refused = false;
    loop {
        tokio::select! {
            msg = r.channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    for line in st.stdout(&data) {
                        shared.emit(RemoteEvent::Output { host: host.clone(), line }).await;
                    }
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    for line in st.stderr(&data) {
                        shared.emit(RemoteEvent::Output { host: host.clone(), line }).await;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(ChildExit::Code(exit_status)),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit = Some(ChildExit::Signal(format!("{signal_name:?}")))
                }
                Some(ChannelMsg::Failure) => { exec_refused = true; break; }
                Some(_) => {}
                None => break,
            },
            _ = cancel.cancelled(), if !stopping => {
                stopping = true;
                // The child watches its stdin: EOF is its cue to shut down cleanly.
                let _ = r.channel.eof().await;
                let grace = if force.is_cancelled() { Duration::ZERO } else { shared.cfg.grace };
                deadline = tokio::time::Instant::now() + grace;
            }
            _ = force.cancelled(), if stopping && deadline > tokio::time::Instant::now() => {
                deadline = tokio::time::Instant::now();
            }
            _ = tokio::time::sleep_until(deadline), if stopping => {
                if let Err(e) = kill(s, st.pid.as_ref(), &r.run_dir, force.is_cancelled(), root).await {
                    warn(shared, &host, format!("cannot stop the child on {host}: {e}")).await;
                }
                // If the channel still does not close (lost connection), give up on it.
                tokio::select! {
                    _ = drain(&mut r.channel, &mut exit) => {}
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                break;
            }
            u = recv_update(&mut updates) => match u {
                Some(bytes) => {
                    match upload::write_file(s, &r.run_dir, &r.name, &bytes, 0o600, Step::Update).await {
                        Ok(()) => {
                            p.bytes_sent += bytes.len() as u64;
                            tracing::debug!("copied new graph definition: {}", t.file.display());
                            shared.emit(RemoteEvent::GraphCopied { host: host.clone(), file: t.file.clone() }).await;
                        }
                        Err(e) => warn(shared, &host, format!("cannot copy new graph definition {}: {e}", t.file.display())).await,
                    }
                }
                None => updates = None,
            },
            u = recv_update(&mut extra_updates) => match u {
                Some(f) => {
                    match upload::write_file(s, &r.run_dir, &f.name, &f.bytes, f.mode, Step::Update).await {
                        Ok(()) => {
                            p.bytes_sent += f.bytes.len() as u64;
                            tracing::debug!("copied new version of {}", f.name);
                            shared.emit(RemoteEvent::GraphCopied { host: host.clone(), file: PathBuf::from(&f.name) }).await;
                        }
                        Err(e) => warn(shared, &host, format!("cannot copy new version of {}: {e}", f.name)).await,
                    }
                }
                None => extra_updates = None,
            },
        }
    }
    for line in [st.out.rest(), st.err.rest()].into_iter().flatten() {
        shared
            .emit(RemoteEvent::Output {
                host: host.clone(),
                line,
            })
            .await;
    }
    let outcome = if exec_refused {
        HostOutcome::Failed {
            step: Step::Exec,
            error: Arc::new(Error::Protocol {
                host: host.clone(),
                step: Step::Exec,
                message: "the server refused to run the child".to_string(),
            }),
        }
    } else if stopping || exit == Some(ChildExit::Code(0)) {
        HostOutcome::Done
    } else if let (Some(ChildExit::Code(126)), Some(said)) = (&exit, st.wrapper_refusal) {
        HostOutcome::Failed {
            step: Step::Exec,
            error: Arc::new(Error::Protocol {
                host: host.clone(),
                step: Step::Exec,
                message: format!("refused to start: {said}; it was not run"),
            }),
        }
    } else {
        HostOutcome::Failed {
            step: Step::Run,
            error: Arc::new(Error::ChildFailed {
                host: host.clone(),
                exit: exit.clone().unwrap_or(ChildExit::Unknown),
            }),
        }
    };
    (outcome, exit, st.pid)
}

async fn recv_update<T>(updates: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match updates {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn drain(ch: &mut russh::Channel<russh::client::Msg>, exit: &mut Option<ChildExit>) {
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::ExitStatus { exit_status } => *exit = Some(ChildExit::Code(exit_status)),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                *exit = Some(ChildExit::Signal(format!("{signal_name:?}")))
            }
            _ => {}
        }
    }
}

/// Kills the child by its recorded pid; as root when it runs as root (sudo relays TERM to
/// it, but not KILL, and the login user can signal neither it nor what it started).
async fn kill(
    s: &Session,
    pid: Option<&Pid>,
    run_dir: &str,
    force: bool,
    root: Option<&Sudo>,
) -> Result<(), Error> {
    let script = scripts::kill_script(pid, run_dir, force);
    let what = "stopping the child";
    match root {
        Some(sudo) => sudo::run_ok_as_root(s, sudo, what, &script, Step::Cleanup).await?,
        None => s.run_ok(what, &sh(&script), None, Step::Cleanup).await?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_keep_tail() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"a\r\nb"), vec!["a".to_string()]);
        assert_eq!(l.push(b"c\n\n"), vec!["bc".to_string(), String::new()]);
        assert_eq!(l.push(b"tail"), Vec::<String>::new());
        assert_eq!(l.rest().as_deref(), Some("tail"));
        assert_eq!(l.rest(), None);
    }

    #[test]
    fn an_endless_line_is_cut_and_memory_stays_bounded() {
        let mut l = Lines::default();
        let chunk = vec![b'x'; 40 * 1024];
        assert!(l.push(&chunk).is_empty());
        let cut = l.push(&chunk);
        assert_eq!(cut.len(), 1);
        assert!(
            cut[0].ends_with(" [line cut at 65536 bytes]"),
            "{}",
            &cut[0][65530..]
        );
        for _ in 0..100 {
            assert!(l.push(&chunk).is_empty());
            assert!(l.buf.len() <= MAX_LINE);
        }
        assert_eq!(l.push(b"rest\nnext\n"), vec!["next".to_string()]);
    }

    #[test]
    fn pid_line() {
        assert_eq!(
            parse_pid("mgmt-pid: 42 1234"),
            Some((42, "1234".to_string()))
        );
        assert_eq!(parse_pid("mgmt-pid: 42"), None);
        assert_eq!(parse_pid("mgmt-pid: x 1"), None);
        assert_eq!(parse_pid("hello"), None);
    }
}
