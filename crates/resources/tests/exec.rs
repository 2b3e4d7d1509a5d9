//! `exec` with real processes: run-once semantics, refresh, guards (ifcmd, creates), errors,
//! timeout and cancel killing the process group, watchcmd events, env/cwd, shell vs argv.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use common::{Watching, apply, build, check, ctx, refresh_ctx, wait_until};
use resource::Mode;
use resource::Outcome::{Changed, InSync, WouldChange};
use serde_json::json;

fn lines(path: &Path) -> usize {
    fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// An exec that appends a line to `out` each time it runs.
fn appender(out: &Path, extra: serde_json::Value) -> std::sync::Arc<dyn resource::Resource> {
    let mut params =
        json!({"cmd": "echo ran >> \"$OUT\"", "shell": "/bin/sh", "env": {"OUT": out}});
    params
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    build("exec", "e", params)
}

#[tokio::test]
async fn runs_once_then_only_on_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let res = appender(&out, json!({}));
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(lines(&out), 1);
    assert_eq!(apply(&res).await.unwrap(), InSync);
    assert_eq!(
        lines(&out),
        1,
        "an exec that ran OK is in sync until refreshed"
    );
    assert_eq!(
        res.check_apply(&refresh_ctx(), Mode::Check).await.unwrap(),
        WouldChange
    );
    assert_eq!(lines(&out), 1);
    assert_eq!(
        res.check_apply(&refresh_ctx(), Mode::Apply).await.unwrap(),
        Changed
    );
    assert_eq!(lines(&out), 2);
    assert_eq!(apply(&res).await.unwrap(), InSync);
}

#[tokio::test]
async fn check_mode_runs_only_the_guard() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let guard = dir.path().join("guard-ran");
    let res = appender(&out, json!({"ifcmd": format!("touch {}", guard.display())}));
    assert_eq!(check(&res).await.unwrap(), WouldChange);
    assert!(!out.exists(), "check mode does not run cmd");
    assert!(
        guard.exists(),
        "ifcmd is a read-only guard and runs in check mode"
    );
    // Check mode does not count as having run.
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(lines(&out), 1);
}

#[tokio::test]
async fn ifcmd_guards_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let flag = dir.path().join("flag");
    let res = appender(
        &out,
        json!({"ifcmd": format!("test -e {}", flag.display())}),
    );
    assert_eq!(apply(&res).await.unwrap(), InSync);
    assert!(!out.exists(), "ifcmd failed: cmd did not run");
    // A failed guard is not "ran OK": it is asked again next time.
    fs::write(&flag, "").unwrap();
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(lines(&out), 1);

    let shelled = appender(
        &dir.path().join("out2"),
        json!({"ifcmd": "[ \"$OUT\" = nowhere ]", "ifshell": "/bin/sh", "ifcwd": dir.path()}),
    );
    assert_eq!(apply(&shelled).await.unwrap(), InSync);
}

#[tokio::test]
async fn creates_skips_when_the_path_exists() {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("made");
    let res = build(
        "exec",
        "e",
        json!({"cmd": format!("touch {}", made.display()), "creates": made}),
    );
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert!(made.exists());
    assert_eq!(
        res.check_apply(&refresh_ctx(), Mode::Apply).await.unwrap(),
        InSync,
        "creates wins over refresh"
    );
}

#[tokio::test]
async fn non_zero_exit_is_an_error_with_code_and_stderr() {
    let res = build(
        "exec",
        "e",
        json!({"cmd": "echo first >&2; echo boom >&2; exit 3", "shell": "/bin/sh"}),
    );
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(e.contains("code 3") && e.contains("boom"), "{e}");
    // A failed run did not count: the next check_apply tries again.
    assert!(apply(&res).await.is_err());

    let missing = build("exec", "e", json!({"cmd": "/no/such/program"}));
    let e = apply(&missing).await.unwrap_err().to_string();
    assert!(e.contains("/no/such/program"), "{e}");
}

/// An appender (to `out`) whose watchcmd is `cat FIFO` (a fifo beside `out`), its watch
/// running and its first run done, and the fifo's writing end.
async fn fifo_watched(out: &Path) -> (std::sync::Arc<dyn resource::Resource>, Watching, fs::File) {
    let fifo = out.with_file_name("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let res = appender(out, json!({"watchcmd": format!("cat {}", fifo.display())}));
    let w = Watching::start(&res).await;
    assert_eq!(apply(&res).await.unwrap(), Changed);
    // Opening a fifo for writing blocks until cat has it open for reading.
    let writer =
        tokio::task::spawn_blocking(move || fs::OpenOptions::new().write(true).open(fifo).unwrap())
            .await
            .unwrap();
    (res, w, writer)
}

#[tokio::test]
async fn a_huge_line_is_cut_not_kept_whole() {
    // 4 MiB without a newline on stderr, then a last line: the error carries the tail, with the
    // long line cut to a bounded size and marked.
    let res = build(
        "exec",
        "e",
        json!({
            "cmd": "head -c 4194304 /dev/zero | tr '\\0' x >&2; echo >&2; echo last >&2; exit 1",
            "shell": "/bin/sh"
        }),
    );
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(
        e.contains("[line cut]") && e.ends_with("last"),
        "{}",
        &e[e.len() - 200..]
    );
    assert!(e.len() < 64 * 1024, "the error holds {} bytes", e.len());
}

#[tokio::test]
async fn a_huge_watchcmd_line_is_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (res, mut w, mut writer) = fifo_watched(&out).await;
    let long = vec![b'x'; 1 << 20];
    // Blocking writes (a 1 MiB line fills the pipe until cat reads it): off the runtime.
    writer = tokio::task::spawn_blocking(move || {
        writer.write_all(&long).unwrap();
        writer.write_all(b"\n").unwrap();
        writer
    })
    .await
    .unwrap();
    w.next_event().await;
    assert_eq!(apply(&res).await.unwrap(), Changed);
    // The rest of the long line was consumed with it: the next line is the next event.
    writer.write_all(b"again\n").unwrap();
    w.next_event().await;
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(lines(&out), 3);
    drop(writer);
}

/// The pid's process is gone (or a zombie waiting for a reaper).
fn gone(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let res = build(
        "exec",
        "e",
        json!({"cmd": format!("sleep 300 & echo $! > {}; wait", pidfile.display()), "shell": "/bin/sh", "timeout": "1"}),
    );
    let e = apply(&res).await.unwrap_err().to_string();
    assert!(e.contains("timed out after 1s"), "{e}");
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    wait_until("the background sleep to be killed", || gone(&pid)).await;
}

#[tokio::test]
async fn cancel_kills_the_running_command() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let res = build(
        "exec",
        "e",
        json!({"cmd": format!("echo $$ > {}; exec sleep 300", pidfile.display()), "shell": "/bin/sh"}),
    );
    let ctx = ctx();
    let cancel = ctx.cancel.clone();
    let run = tokio::spawn(async move { res.check_apply(&ctx, Mode::Apply).await });
    wait_until("the command to start", || {
        fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    cancel.cancel();
    let e = run.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("cancelled"), "{e}");
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    wait_until("the command to be killed", || gone(&pid)).await;
}

#[tokio::test]
async fn env_and_cwd_are_honoured_with_argv_splitting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // No shell: cmd is split into words, quotes kept together.
    let res = build(
        "exec",
        "e",
        json!({
            "cmd": "sh -c 'pwd > \"$OUT\"; echo \"$GREETING\" >> \"$OUT\"'",
            "cwd": dir.path(),
            "env": {"OUT": out, "GREETING": "hello there"},
            "shell": "",
            "timeout": 0,
        }),
    );
    assert_eq!(apply(&res).await.unwrap(), Changed);
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        format!("{}\nhello there\n", cwd.display())
    );
}

#[tokio::test]
async fn shell_expands_while_argv_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let env = json!({"NAME": "expanded"});
    let argv = build(
        "exec",
        "a",
        json!({"cmd": "touch '$NAME' 'two words'", "cwd": dir.path(), "env": env}),
    );
    assert_eq!(apply(&argv).await.unwrap(), Changed);
    assert!(dir.path().join("$NAME").exists());
    assert!(dir.path().join("two words").exists());

    let shell = build(
        "exec",
        "s",
        json!({"cmd": "touch $NAME two words", "shell": "/bin/sh", "cwd": dir.path(), "env": env}),
    );
    assert_eq!(apply(&shell).await.unwrap(), Changed);
    for name in ["expanded", "two", "words"] {
        assert!(dir.path().join(name).exists(), "{name}");
    }

    let args = build(
        "exec",
        "x",
        json!({"cmd": "touch", "args": ["with space", "$NAME"], "cwd": dir.path()}),
    );
    assert_eq!(apply(&args).await.unwrap(), Changed);
    assert!(dir.path().join("with space").exists());
}

#[tokio::test]
async fn runs_as_another_user() {
    let res = build(
        "exec",
        "e",
        json!({"cmd": "test \"$(id -u):$(id -g):$(id -G)\" = 65534:65534:65534", "shell": "/bin/sh", "user": "nobody", "cwd": "/"}),
    );
    assert_eq!(
        apply(&res).await.unwrap(),
        Changed,
        "ran as nobody, without root's groups"
    );
}

#[tokio::test]
async fn watchcmd_lines_are_events_that_rerun_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (res, mut w, mut writer) = fifo_watched(&out).await;
    assert_eq!(apply(&res).await.unwrap(), InSync);
    writer.write_all(b"something happened\n").unwrap();
    w.next_event().await;
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(lines(&out), 2);
    assert_eq!(apply(&res).await.unwrap(), InSync);

    // The watch command ending is an error of the watch.
    drop(writer);
    let e = tokio::time::timeout(common::DEADLINE, w.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains("watchcmd exited with code 0"), "{e}");
}

#[tokio::test]
async fn watchcmd_is_killed_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let res = build(
        "exec",
        "e",
        json!({"cmd": "true", "watchcmd": format!("echo $$ > {}; exec sleep 300", pidfile.display()), "watchshell": "/bin/sh"}),
    );
    let w = Watching::start(&res).await;
    wait_until("the watch command to start", || {
        fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    w.stop().await.unwrap();
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    wait_until("the watch command to be killed", || gone(&pid)).await;
}
