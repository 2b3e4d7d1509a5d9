//! Interactive prompts (passwords, key passphrases, keyboard-interactive) on the controlling
//! terminal. Only used when the caller allows it (SSH logins: `allow_interactive` and stdin a
//! terminal; the sudo password: asked for by the caller, once).
//!
//! Must never echo or log what is typed, and never prompt for two hosts at once.

use std::io::{IsTerminal, Read, Write};
use std::sync::Mutex;

use nix::sys::termios::{self, LocalFlags, SetArg};
use zeroize::{Zeroize, Zeroizing};

/// Prompts of parallel host connections would interleave on one terminal.
static TTY: Mutex<()> = Mutex::new(());

pub(crate) fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// Asks on /dev/tty; `None` when there is no terminal or reading fails.
pub(crate) async fn ask(prompt: String, echo: bool) -> Option<String> {
    tokio::task::spawn_blocking(move || ask_blocking(&prompt, echo))
        .await
        .ok()
        .flatten()
        .map(|answer| answer.to_string())
}

/// Asks on /dev/tty without echo; the answer lives in memory that is zeroed when dropped.
/// `None` when there is no terminal, or input ended before a line.
pub(crate) async fn ask_secret(prompt: String) -> Option<Zeroizing<String>> {
    tokio::task::spawn_blocking(move || ask_blocking(&prompt, false))
        .await
        .ok()
        .flatten()
}

fn ask_blocking(prompt: &str, echo: bool) -> Option<Zeroizing<String>> {
    let _guard = TTY.lock().unwrap_or_else(|e| e.into_inner());
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let saved = termios::tcgetattr(&tty).ok()?;
    if !echo {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        termios::tcsetattr(&tty, SetArg::TCSANOW, &quiet).ok()?;
    }
    let mut out = &tty;
    let _ = out.write_all(prompt.as_bytes());
    let _ = out.flush();
    let line = read_line(&tty);
    if !echo {
        let _ = termios::tcsetattr(&tty, SetArg::TCSANOW, &saved);
        let _ = out.write_all(b"\n");
    }
    let mut line = line?;
    while line.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        line.pop();
    }
    let text = std::str::from_utf8(&line).ok()?;
    Some(Zeroizing::new(text.to_string()))
}

/// One line from the terminal, newline included; `None` at end of input before any newline
/// or on a read error. No buffered reader: every copy of the bytes is one we zero.
fn read_line(mut tty: &std::fs::File) -> Option<Zeroizing<Vec<u8>>> {
    let mut line = Zeroizing::new(Vec::new());
    let mut chunk = [0u8; 256];
    let found = loop {
        match tty.read(&mut chunk) {
            Ok(0) => break false,
            Ok(n) => {
                line.extend_from_slice(&chunk[..n]);
                if chunk[..n].contains(&b'\n') {
                    break true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    chunk.zeroize();
    if !found && line.is_empty() {
        return None;
    }
    // Bytes past the newline (typed ahead) are not ours to keep.
    if let Some(i) = line.iter().position(|b| *b == b'\n') {
        line.truncate(i + 1);
    }
    Some(line)
}
