//! `user` and `group`: local accounts (mgmt's user and group resources, whose field names they
//! keep), checked against the account database parsed in-process (`db.rs`) and changed only
//! through the shadow suite's tools (`useradd`, `usermod`, `userdel`, `chpasswd`, `groupadd`,
//! `groupmod`, `groupdel`, `gpasswd`), which take the database's locks and keep `gshadow` in
//! step.
//!
//! What is shared here: the rules for names and paths (both kinds take untrusted input: names
//! as shadow's `NAME_REGEX` has them, every name passed after `--` so none is read as an
//! option), running a tool (one at a time in this process, its stderr as the error), and the
//! watch (`watch.rs`). `build` and `validate` do no IO.

mod db;
pub mod group;
pub mod user;
mod watch;

use std::path::{Component, Path};
use std::process::Stdio;

use resource::{BuildError, ResourceError};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::params::bad;

/// The longest user or group name (shadow's default `LOGIN_NAME_MAX` is larger; 32 is what
/// `utmp` and most tools can show).
pub const MAX_NAME: usize = 32;

/// Our own runs of the shadow tools, one at a time: two at once would only fail on each
/// other's lock ("cannot lock /etc/passwd; try again later").
static TOOLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `state`: `exists` (the default) or `absent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Exists,
    Absent,
}

impl State {
    fn parse(field: &str, text: Option<&str>) -> Result<State, BuildError> {
        match text {
            None | Some("exists") => Ok(State::Exists),
            Some("absent") => Ok(State::Absent),
            Some(other) => Err(bad(
                field,
                format!("unknown value `{other}`, expected `exists` or `absent`"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Exists => "exists",
            State::Absent => "absent",
        }
    }
}

/// A user or group name as shadow's default `NAME_REGEX` accepts it:
/// `[a-z_][a-z0-9_-]*[$]?`, at most [`MAX_NAME`] characters. It can never start with `-`
/// (an option) nor hold `:`, `,` or a newline (the database's separators).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let valid = !body.is_empty()
        && name.len() <= MAX_NAME
        && body.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid {
        return Ok(());
    }
    let shown = name.escape_debug();
    Err(if name.starts_with('-') {
        format!("`{shown}` is not a valid {what} name: it must not start with `-`")
    } else if name.len() > MAX_NAME {
        format!("`{shown}` is not a valid {what} name: longer than {MAX_NAME} characters")
    } else {
        format!(
            "`{shown}` is not a valid {what} name (a-z, 0-9, `_` and `-`, starting with a \
             letter or `_`, optionally ending in `$`, at most {MAX_NAME} characters)"
        )
    })
}

/// An absolute path that the account database can hold (no `:`, no newline or other control
/// character), written without `.`, `..`, repeated or trailing `/`: returned in that form.
pub fn check_path(what: &str, path: &str) -> Result<String, String> {
    let shown = path.escape_debug();
    if !path.starts_with('/') {
        return Err(format!(
            "`{shown}` is not an absolute path: a {what} starts with `/`"
        ));
    }
    if let Some(c) = path.chars().find(|c| *c == ':' || c.is_control()) {
        return Err(format!(
            "`{shown}` cannot be a {what}: `{}` is not allowed in the account database",
            c.escape_debug()
        ));
    }
    if Path::new(path)
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("`{shown}` must not contain `.` or `..` components"));
    }
    let clean: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    Ok(format!("/{}", clean.join("/")))
}

/// A text field of the database (the GECOS comment): no `:`, no newline or control character.
pub fn check_text(what: &str, text: &str) -> Result<(), String> {
    match text.chars().find(|c| *c == ':' || c.is_control()) {
        Some(c) => Err(format!(
            "`{}` cannot be a {what}: `{}` is not allowed in the account database",
            text.escape_debug(),
            c.escape_debug()
        )),
        None => Ok(()),
    }
}

/// A list of names given as a YAML list; `[]` is an empty list (a value, unlike unset).
/// Sorted, each name once.
fn names(field: &str, what: &str, value: Option<Value>) -> Result<Option<Vec<String>>, BuildError> {
    let Some(value) = value else { return Ok(None) };
    let Value::Array(items) = value else {
        return Err(bad(field, "expected a list of names"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(name) = item else {
            return Err(bad(field, "expected a list of names"));
        };
        check_name(what, &name).map_err(|e| bad(field, e))?;
        out.push(name);
    }
    out.sort();
    out.dedup();
    Ok(Some(out))
}

/// Reads the database in a blocking task.
async fn read_db(with_shadow: bool) -> Result<db::Db, ResourceError> {
    tokio::task::spawn_blocking(move || db::Db::read(&db::etc(), with_shadow))
        .await
        .map_err(|e| ResourceError::failed(format!("reading the account database: {e}")))?
        .map_err(ResourceError::failed)
}

/// Runs one shadow tool (`argv` holds no secret: it is logged), feeding `stdin` (where a
/// secret goes), in the C locale. Its failure is its own stderr.
async fn run(argv: &[String], stdin: Option<&str>) -> Result<(), ResourceError> {
    let (program, args) = argv.split_first().expect("a command line has a program");
    tracing::info!("running {}", argv.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Left to finish when we go away: killed halfway, a tool could leave its lock behind.
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| ResourceError::failed(format!("cannot run `{program}`: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let written = pipe.write_all(text.as_bytes()).await;
        drop(pipe);
        if let Err(e) = written {
            let _ = child.wait().await;
            return Err(ResourceError::failed(format!(
                "writing to `{program}`: {e}"
            )));
        }
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| ResourceError::failed(format!("running `{program}`: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr.trim();
    Err(ResourceError::failed(format!(
        "`{program}` failed ({}): {}",
        out.status
            .code()
            .map_or("killed by a signal".into(), |c| format!("exit {c}")),
        if message.is_empty() {
            "no message"
        } else {
            message
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_shadows_rule() {
        for good in ["alice", "_svc", "a-b_c9", "machine$", "a"] {
            check_name("user", good).unwrap();
        }
        let long = "a".repeat(33);
        for (bad, why) in [
            ("-oroot", "must not start with `-`"),
            ("Alice", "is not a valid user name (a-z"),
            ("9lives", "is not a valid user name (a-z"),
            ("a:b", "is not a valid user name (a-z"),
            ("a,b", "is not a valid user name (a-z"),
            ("a\nb", "`a\\nb` is not a valid user name"),
            ("", "is not a valid user name (a-z"),
            ("$", "is not a valid user name (a-z"),
            (long.as_str(), "longer than 32 characters"),
        ] {
            let e = check_name("user", bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn paths_are_absolute_clean_and_fit_the_database() {
        assert_eq!(check_path("home", "/home/alice/").unwrap(), "/home/alice");
        assert_eq!(check_path("home", "//srv//a").unwrap(), "/srv/a");
        assert_eq!(check_path("shell", "/").unwrap(), "/");
        for (bad, why) in [
            ("home/alice", "is not an absolute path"),
            ("/home/a:b", "`:` is not allowed"),
            ("/bin/sh\n", "`\\n` is not allowed"),
            ("/home/../root", "must not contain `.` or `..`"),
        ] {
            let e = check_path("home", bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        check_text("comment", "Alice A,room 1,,").unwrap();
        assert!(check_text("comment", "x:y").is_err());
    }

    #[tokio::test]
    async fn a_failing_tool_is_its_own_stderr_and_stdin_reaches_it() {
        let e = run(
            &["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "`sh` failed (exit 3): oops");
        run(
            &[
                "sh".into(),
                "-c".into(),
                "read l; test \"$l\" = secret".into(),
            ],
            Some("secret\n"),
        )
        .await
        .unwrap();
        let e = run(&["/nonexistent/tool".into()], None).await.unwrap_err();
        assert!(
            e.to_string().starts_with("cannot run `/nonexistent/tool`"),
            "{e}"
        );
    }
}
