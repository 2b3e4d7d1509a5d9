//! Becoming root on a host through sudo, after logging in as an ordinary user: the words that
//! run a command as root, the markers that tell sudo's own prompt and messages apart from what
//! the command prints, and the state machine ([`Gate`]) that reads sudo's stderr and says when
//! to write the password (once), when the command has started, and when sudo refused.
//!
//! The protocol on one exec channel: `sudo -S -p PROMPT -- /bin/sh -c 'printf OK >&2; exec
//! "$0" "$@"' CMD...` (or `sudo -n` without a password, which never prompts). sudo writes
//! PROMPT (no newline) on stderr when it wants the password; the password line is written on
//! stdin then, once. sudo reads it one byte at a time and hands the rest of stdin to the
//! command, so nothing else is written until OK has come back: from there on the channel is
//! the command's, and its stdin closing is the command's cue to stop, as without sudo. A
//! second PROMPT, or "Sorry, try again.", is a refused password: the channel is closed and
//! the password is never sent twice. sudo ending before OK says why on its last line ("USER
//! is not in the sudoers file.", "a password is required").
//!
//! Both markers carry a random part chosen per host; OK is written by `printf` from pieces so
//! it is never in the command's argv (sudo quotes the command in some of its messages). Only
//! bytes before OK are scanned: nothing the command prints can be taken for a marker.
//!
//! The password is kept in memory only (zeroized on drop), and travels only on the channel's
//! stdin after sudo's prompt: never in argv, the environment, a file, a log line, an event or
//! an error.

use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use zeroize::Zeroizing;

use crate::error::{ChildExit, Error, Step};
use crate::session::Session;
use crate::upload::{quote, sh};

/// How long sudo may take to start a command (PAM's delay after a wrong password is about
/// 2 s; a PAM module asking something other than the password would wait forever).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The most sudo may print before the command starts that is kept for the error message.
const MAX_SAID: usize = 64 * 1024;

/// The sudo password of the hosts' login users, in memory only, zeroized when the last copy
/// goes. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SudoPassword(Arc<Zeroizing<String>>);

impl SudoPassword {
    pub fn new(password: Zeroizing<String>) -> SudoPassword {
        SudoPassword(Arc::new(password))
    }

    /// The line sudo reads: the password and a newline.
    pub(crate) fn line(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(self.0.len() + 1));
        v.extend_from_slice(self.0.as_bytes());
        v.push(b'\n');
        v
    }
}

impl std::fmt::Debug for SudoPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SudoPassword(..)")
    }
}

/// Asks once on the terminal (no echo) for the sudo password; `None` when there is no
/// terminal or nothing was typed before end of input.
pub async fn ask_sudo_password(prompt: String) -> Option<SudoPassword> {
    crate::prompt::ask_secret(prompt)
        .await
        .map(SudoPassword::new)
}

/// The prompt sudo is told to print, and the line printed once the command runs as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Markers {
    prompt: String,
    ok: String,
}

impl Markers {
    pub fn new(random: &str) -> Markers {
        Markers {
            prompt: format!("[mgmt-sudo-{random}] password: "),
            ok: format!("mgmt-sudo-ok-{random}"),
        }
    }

    pub fn random() -> Markers {
        Markers::new(&crate::upload::random_suffix())
    }
}

/// How one host uses sudo: its markers, and the password if there is one.
#[derive(Debug, Clone)]
pub(crate) struct Sudo {
    pub markers: Markers,
    pub password: Option<SudoPassword>,
}

impl Sudo {
    pub fn new(password: Option<SudoPassword>) -> Sudo {
        Sudo {
            markers: Markers::random(),
            password,
        }
    }

    /// Shell words that run the words following them as root (`exec` them, the pid stays):
    /// `sudo -n` without a password, `sudo -S -p PROMPT` with one, and the `sh` that prints
    /// the OK marker first.
    pub fn words(&self) -> String {
        let m = &self.markers;
        let (head, _) = m.ok.split_at("mgmt-sudo-".len());
        let tail = &m.ok[head.len() + "ok".len()..];
        // `printf 'mgmt-sudo-%s-R\n' ok`: the marker is not in argv as one piece.
        let script = format!("printf '{head}%s{tail}\\n' ok >&2; exec \"$0\" \"$@\"");
        let auth = match self.password {
            Some(_) => format!("-S -p {}", quote(&m.prompt)),
            None => "-n".to_string(),
        };
        format!("sudo {auth} -- /bin/sh -c {}", quote(&script))
    }

    /// The gate reading this sudo's stderr.
    pub fn gate(&self) -> Gate {
        Gate::new(&self.markers, self.password.is_some())
    }
}

/// What [`Gate::push`] found in sudo's stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GateEvent {
    /// A line sudo (or the wrapper before it) printed before the command started.
    Said(String),
    /// sudo asks for the password: write it, now and never again.
    SendPassword,
    /// sudo asks for a password, and there is none.
    PasswordRequired,
    /// sudo asked again (or said "Sorry, try again."): the password was refused.
    Refused,
    /// The command runs as root; these bytes followed the marker (the command's stderr).
    Started(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    Waiting,
    PasswordSent,
    Done,
}

/// Reads sudo's stderr up to the OK marker. Pure: bytes in, events out.
#[derive(Debug)]
pub(crate) struct Gate {
    prompt: Vec<u8>,
    /// The OK marker and its newline.
    ok: Vec<u8>,
    has_password: bool,
    buf: Vec<u8>,
    state: GateState,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Gate {
    pub fn new(m: &Markers, has_password: bool) -> Gate {
        let mut ok = m.ok.clone().into_bytes();
        ok.push(b'\n');
        Gate {
            prompt: m.prompt.clone().into_bytes(),
            ok,
            has_password,
            buf: Vec::new(),
            state: GateState::Waiting,
        }
    }

    /// Whether the gate is through (started, refused): it takes nothing more.
    pub fn done(&self) -> bool {
        self.state == GateState::Done
    }

    /// What sudo printed after its last complete line (a prompt of its own, say).
    pub fn pending(&self) -> String {
        String::from_utf8_lossy(&self.buf).trim().to_string()
    }

    fn said(&self, bytes: &[u8]) -> Option<GateEvent> {
        let line = String::from_utf8_lossy(bytes);
        let line = line.trim_end_matches('\r');
        (!line.trim().is_empty()).then(|| GateEvent::Said(line.to_string()))
    }

    pub fn push(&mut self, data: &[u8]) -> Vec<GateEvent> {
        let mut events = Vec::new();
        if self.done() {
            return events;
        }
        self.buf.extend_from_slice(data);
        loop {
            let ok = find(&self.buf, &self.ok);
            let prompt = find(&self.buf, &self.prompt);
            let nl = self.buf.iter().position(|b| *b == b'\n');
            // The first of the three in the buffer comes first.
            let first = [ok, prompt, nl].into_iter().flatten().min();
            let Some(at) = first else { break };
            if ok == Some(at) {
                events.extend(self.said(&self.buf[..at]));
                let rest = self.buf.split_off(at + self.ok.len());
                self.buf.clear();
                self.state = GateState::Done;
                events.push(GateEvent::Started(rest));
                return events;
            }
            if prompt == Some(at) {
                events.extend(self.said(&self.buf[..at]));
                self.buf.drain(..at + self.prompt.len());
                let ev = match (self.state, self.has_password) {
                    (GateState::Waiting, true) => {
                        self.state = GateState::PasswordSent;
                        GateEvent::SendPassword
                    }
                    (_, false) => {
                        self.state = GateState::Done;
                        GateEvent::PasswordRequired
                    }
                    _ => {
                        self.state = GateState::Done;
                        GateEvent::Refused
                    }
                };
                let stop = self.done();
                events.push(ev);
                if stop {
                    return events;
                }
                continue;
            }
            let line: Vec<u8> = self.buf.drain(..=at).collect();
            let line = &line[..line.len() - 1];
            if self.state == GateState::PasswordSent
                && String::from_utf8_lossy(line).trim() == "Sorry, try again."
            {
                self.state = GateState::Done;
                events.push(GateEvent::Refused);
                return events;
            }
            events.extend(self.said(line));
        }
        // A line without end is cut, keeping what could be the start of a marker.
        let keep = self.ok.len().max(self.prompt.len());
        if self.buf.len() > MAX_SAID {
            let cut = self.buf.len() - keep;
            let head: Vec<u8> = self.buf.drain(..cut).collect();
            events.extend(self.said(&head));
        }
        events
    }
}

/// The error for a sudo that ended (or gave up) before the command started, from what it
/// said: its last line, which is its reason.
pub(crate) fn failure(
    s: &Session,
    said: &[String],
    pending: &str,
    status: Option<&ChildExit>,
) -> Error {
    Error::Sudo {
        host: s.label.clone(),
        user: s.user.clone(),
        message: reason(&s.user, said, pending, status),
    }
}

/// sudo's reason in words for the error: its last line without `sudo: ` and the full stop,
/// with a hint for the password it could not ask for.
fn reason(user: &str, said: &[String], pending: &str, status: Option<&ChildExit>) -> String {
    let last = said
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .or((!pending.is_empty()).then_some(pending));
    match last {
        Some(l) => {
            let l = l.strip_prefix("sudo: ").unwrap_or(l);
            let l = l.trim_end_matches('.').to_string();
            if l == "a password is required" {
                format!("{l} (give it with --ask-sudo-pass, or allow {user} NOPASSWD in sudoers)")
            } else {
                l
            }
        }
        None => match status {
            Some(st) => format!("sudo ended ({st}) before the command started"),
            None => "the channel closed before the command started".to_string(),
        },
    }
}

pub(crate) fn refused(s: &Session) -> Error {
    Error::SudoRefused {
        host: s.label.clone(),
        user: s.user.clone(),
    }
}

pub(crate) fn timed_out(s: &Session, said: &[String], pending: &str) -> Error {
    let mut message = format!(
        "sudo did not start the command within {} s",
        START_TIMEOUT.as_secs()
    );
    if let Some(last) = said
        .last()
        .map(String::as_str)
        .or(Some(pending))
        .filter(|l| !l.is_empty())
    {
        message.push_str(&format!("; it last said {last:?}"));
    }
    Error::Sudo {
        host: s.label.clone(),
        user: s.user.clone(),
        message,
    }
}

type Channel = russh::Channel<russh::client::Msg>;

/// What came on a channel while sudo was starting its command: stdout (the child's wrapper
/// prints its pid line there first), the lines sudo said, the command's first stderr.
#[derive(Debug, Default)]
pub(crate) struct Early {
    pub stdout: Vec<u8>,
    pub said: Vec<String>,
    pub stderr: Vec<u8>,
}

/// Why a command under sudo did not start.
#[derive(Debug)]
pub(crate) enum NotStarted {
    /// Refused, timed out, or the connection failed: the error to report.
    Failed(Error),
    /// The channel ended before the command started: what was said, and how it ended (sudo's
    /// reason is its last line, see [`failure`]; the caller may know better).
    Ended {
        early: Early,
        pending: String,
        status: Option<ChildExit>,
    },
}

/// Sees the command on `ch` (exec'd through [`Sudo::words`]) started by sudo: the password
/// written once after sudo's prompt, nothing else written until the command runs. Its stdin
/// is left open: it is the command's now.
pub(crate) async fn start(s: &Session, ch: &mut Channel, sudo: &Sudo) -> Result<Early, NotStarted> {
    let failed = NotStarted::Failed;
    let mut gate = sudo.gate();
    let mut early = Early::default();
    let mut status = None;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let msg = tokio::select! {
            m = ch.wait() => m,
            _ = tokio::time::sleep_until(deadline) => {
                let _ = ch.close().await;
                return Err(failed(timed_out(s, &early.said, &gate.pending())));
            }
        };
        match msg {
            Some(ChannelMsg::Data { data }) => {
                // The pid line, then nothing until the command runs: bounded all the same.
                if early.stdout.len() < MAX_SAID {
                    early.stdout.extend_from_slice(&data);
                }
            }
            Some(ChannelMsg::ExtendedData { data, .. }) => {
                for ev in gate.push(&data) {
                    match ev {
                        GateEvent::Said(line) => early.said.push(line),
                        GateEvent::SendPassword => {
                            if let Some(pw) = &sudo.password {
                                ch.data(&pw.line()[..])
                                    .await
                                    .map_err(|e| failed(Error::ssh(&s.label, Step::Sudo)(e)))?;
                            }
                        }
                        GateEvent::Refused => {
                            let _ = ch.eof().await;
                            let _ = ch.close().await;
                            return Err(failed(refused(s)));
                        }
                        GateEvent::PasswordRequired => {
                            let _ = ch.close().await;
                            let said = ["a password is required".to_string()];
                            return Err(failed(failure(s, &said, "", None)));
                        }
                        GateEvent::Started(rest) => {
                            early.stderr = rest;
                            return Ok(early);
                        }
                    }
                }
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                status = Some(ChildExit::Code(exit_status))
            }
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                status = Some(ChildExit::Signal(format!("{signal_name:?}")))
            }
            Some(ChannelMsg::Failure) => {
                return Err(failed(Error::Protocol {
                    host: s.label.clone(),
                    step: Step::Exec,
                    message: "the server refused to run a command".to_string(),
                }));
            }
            Some(_) => {}
            None => break,
        }
    }
    Err(NotStarted::Ended {
        early,
        pending: gate.pending(),
        status,
    })
}

/// Runs `script` under /bin/sh as root through sudo, like `Session::run_ok`: the password
/// (if any) after the prompt, stdin closed once the script runs, its stdout returned; a
/// non-zero exit is an error with its stderr. sudo's own failure is an `Error::Sudo*`.
pub(crate) async fn run_ok_as_root(
    s: &Session,
    sudo: &Sudo,
    what: &'static str,
    script: &str,
    step: Step,
) -> Result<Vec<u8>, Error> {
    let cmd = sh(&format!(
        "exec {} /bin/sh -c {}",
        sudo.words(),
        quote(script)
    ));
    let ssh = |step| Error::ssh(&s.label, step);
    let mut ch = s.handle.channel_open_session().await.map_err(ssh(step))?;
    ch.exec(true, cmd).await.map_err(ssh(step))?;
    let early = match start(s, &mut ch, sudo).await {
        Ok(early) => early,
        Err(NotStarted::Failed(e)) => return Err(e),
        Err(NotStarted::Ended {
            early,
            pending,
            status,
        }) => return Err(failure(s, &early.said, &pending, status.as_ref())),
    };
    ch.eof().await.map_err(ssh(step))?;
    let (mut stdout, mut stderr) = (early.stdout, early.stderr);
    let mut status = ChildExit::Unknown;
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = ChildExit::Code(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                status = ChildExit::Signal(format!("{signal_name:?}"))
            }
            _ => {}
        }
    }
    if status != ChildExit::Code(0) {
        return Err(Error::Remote {
            host: s.label.clone(),
            what,
            status,
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        });
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers() -> Markers {
        Markers::new("r4nd")
    }

    fn said(s: &str) -> GateEvent {
        GateEvent::Said(s.to_string())
    }

    #[test]
    fn the_command_words() {
        let m = markers();
        let n = Sudo {
            markers: m.clone(),
            password: None,
        };
        assert_eq!(
            n.words(),
            r#"sudo -n -- /bin/sh -c 'printf '\''mgmt-sudo-%s-r4nd\n'\'' ok >&2; exec "$0" "$@"'"#
        );
        let p = Sudo {
            markers: m.clone(),
            password: Some(SudoPassword::new(Zeroizing::new("hunter2".into()))),
        };
        let w = p.words();
        assert!(
            w.starts_with("sudo -S -p '[mgmt-sudo-r4nd] password: ' -- /bin/sh -c "),
            "{w}"
        );
        // The marker is never in argv in one piece, and the password never at all.
        for w in [n.words(), w] {
            assert!(!w.contains(&m.ok), "{w}");
            assert!(!w.contains("hunter2"), "{w}");
        }
        assert_eq!(format!("{:?}", p.password), "Some(SudoPassword(..))");
    }

    /// The words, run by /bin/sh with a stand-in `sudo` that runs its command: the marker
    /// comes out whole on stderr, then the command with its arguments intact.
    #[test]
    fn the_ok_marker_comes_out_whole_before_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("sudo");
        // Drops sudo's options up to `--`, then runs the rest.
        std::fs::write(
            &fake,
            "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done; shift; exec \"$@\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let sudo = Sudo {
            markers: markers(),
            password: None,
        };
        let script = format!("exec {} printf '%s|' a 'b c' \"it's\"", sudo.words());
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "mgmt-sudo-ok-r4nd\n");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a|b c|it's|");
        let mut g = sudo.gate();
        assert_eq!(g.push(&out.stderr), vec![GateEvent::Started(Vec::new())]);
    }

    #[test]
    fn nopasswd_starts_without_a_prompt() {
        let mut g = Gate::new(&markers(), false);
        let ev = g.push(b"sudo: unable to resolve host vm: Name or service not known\nmgmt-sudo-ok-r4nd\nchild says hi\n");
        assert_eq!(
            ev,
            vec![
                said("sudo: unable to resolve host vm: Name or service not known"),
                GateEvent::Started(b"child says hi\n".to_vec()),
            ]
        );
        assert!(g.done());
        // Nothing after the marker is scanned: a child printing markers is only output.
        assert!(g.push(b"[mgmt-sudo-r4nd] password: \n").is_empty());
    }

    #[test]
    fn the_password_goes_once_after_the_prompt_even_in_pieces() {
        let mut g = Gate::new(&markers(), true);
        assert_eq!(g.push(b"[mgmt-sudo-r4"), vec![]);
        assert_eq!(g.state, GateState::Waiting);
        assert_eq!(g.push(b"nd] password: "), vec![GateEvent::SendPassword]);
        assert_eq!(g.state, GateState::PasswordSent);
        assert_eq!(g.push(b"mgmt-sudo-ok"), vec![]);
        assert_eq!(
            g.push(b"-r4nd\nout"),
            vec![GateEvent::Started(b"out".to_vec())]
        );
    }

    #[test]
    fn a_second_prompt_or_sorry_is_a_refusal_and_nothing_more() {
        // sudo as it really answers a wrong password (sudo 1.9.13).
        let mut g = Gate::new(&markers(), true);
        assert_eq!(
            g.push(b"[mgmt-sudo-r4nd] password: "),
            vec![GateEvent::SendPassword]
        );
        assert_eq!(
            g.push(b"Sorry, try again.\n[mgmt-sudo-r4nd] password: "),
            vec![GateEvent::Refused]
        );
        assert!(g.done());
        assert!(g.push(b"[mgmt-sudo-r4nd] password: ").is_empty());
        // An insult instead of "Sorry": the second prompt says it.
        let mut g = Gate::new(&markers(), true);
        let ev = g.push(b"[mgmt-sudo-r4nd] password: Have you considered trying to match wits with a rutabaga?\n[mgmt-sudo-r4nd] password: ");
        assert_eq!(
            ev,
            vec![
                GateEvent::SendPassword,
                said("Have you considered trying to match wits with a rutabaga?"),
                GateEvent::Refused
            ]
        );
    }

    #[test]
    fn a_prompt_without_a_password_is_reported() {
        let mut g = Gate::new(&markers(), false);
        assert_eq!(
            g.push(b"[mgmt-sudo-r4nd] password: "),
            vec![GateEvent::PasswordRequired]
        );
    }

    #[test]
    fn what_sudo_says_before_it_ends_is_kept() {
        let mut g = Gate::new(&markers(), true);
        let ev = g.push(b"[mgmt-sudo-r4nd] password: carol is not in the sudoers file.\n");
        assert_eq!(
            ev,
            vec![
                GateEvent::SendPassword,
                said("carol is not in the sudoers file.")
            ]
        );
        let mut g = Gate::new(&markers(), false);
        assert_eq!(
            g.push(b"sudo: a password is required\r\n\n"),
            vec![said("sudo: a password is required")]
        );
        // A prompt of some other PAM module: no line, kept as pending.
        assert!(g.push(b"Verification code: ").is_empty());
        assert_eq!(g.pending(), "Verification code:");
    }

    #[test]
    fn the_reason_is_sudos_last_line() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let resolve = "sudo: unable to resolve host vm: Name or service not known";
        assert_eq!(
            reason(
                "bob",
                &lines(&[resolve, "sudo: a password is required"]),
                "",
                None
            ),
            "a password is required (give it with --ask-sudo-pass, or allow bob NOPASSWD in sudoers)"
        );
        assert_eq!(
            reason(
                "carol",
                &lines(&["carol is not in the sudoers file.", ""]),
                "",
                None
            ),
            "carol is not in the sudoers file"
        );
        assert_eq!(
            reason("u", &[], "", Some(&ChildExit::Code(1))),
            "sudo ended (exit code 1) before the command started"
        );
        assert_eq!(
            reason("u", &[], "Verification code:", None),
            "Verification code:"
        );
    }

    #[test]
    fn an_endless_line_is_cut_without_losing_a_marker() {
        let mut g = Gate::new(&markers(), false);
        let junk = vec![b'x'; MAX_SAID + 10];
        let ev = g.push(&junk);
        assert_eq!(ev.len(), 1);
        assert!(g.buf.len() < 100);
        let ev = g.push(b"mgmt-sudo-ok-r4nd\n");
        assert!(matches!(ev.last(), Some(GateEvent::Started(_))), "{ev:?}");
    }
}
