//! Interactive prompts (passwords, key passphrases, keyboard-interactive) on the controlling
//! terminal. Only used when the caller allows it and stdin is a terminal.
//!
//! Must never echo or log what is typed, and never prompt for two hosts at once.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;

use nix::sys::termios::{self, LocalFlags, SetArg};

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
}

fn ask_blocking(prompt: &str, echo: bool) -> Option<String> {
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
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if !echo {
        let _ = termios::tcsetattr(&tty, SetArg::TCSANOW, &saved);
        let _ = out.write_all(b"\n");
    }
    read.ok()?;
    Some(line.trim_end_matches(['\n', '\r']).to_string())
}
