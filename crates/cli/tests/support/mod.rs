//! Test support: run the real `mgmt` binary as a child process and wait for its JSON events
//! (never for time to pass). Every wait has a deadline, so a hang fails the test instead of
//! blocking the suite.
#![allow(dead_code)]

pub mod bed;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn mgmt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mgmt"));
    c.env("RUST_LOG", "info");
    c
}

/// A running `mgmt run --json ...` whose stdout events and stderr lines are collected.
pub struct Running {
    pub pid: i32,
    exit: mpsc::Receiver<ExitStatus>,
    pub stdin: Option<std::process::ChildStdin>,
    events: mpsc::Receiver<serde_json::Value>,
    pub seen: Vec<serde_json::Value>,
    exited: bool,
    mark: usize,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Ends when the child's stderr is closed and every line of it is in `stderr`.
    stderr_done: mpsc::Receiver<()>,
    /// How long `wait_event` and `wait` wait (`DEADLINE` unless set).
    pub deadline: Duration,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        Running::start_cmd(mgmt(), args)
    }

    /// Like `start`, from a prepared `mgmt` command (its environment, say).
    pub fn start_cmd(mut cmd: Command, args: &[&str]) -> Running {
        let mut child = cmd
            .arg("run")
            .arg("--json")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mgmt");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => panic!("stdout line is not JSON ({e}): {line}"),
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        let (done_tx, stderr_done) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[mgmt] {line}");
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
            let _ = done_tx.send(());
        });
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        let (exit_tx, exit) = mpsc::channel();
        // The waiter thread owns the child: its exit arrives as a message, no polling.
        std::thread::spawn(move || {
            if let Ok(st) = child.wait() {
                let _ = exit_tx.send(st);
            }
        });
        Running {
            pid,
            exit,
            stdin,
            events: rx,
            seen: Vec::new(),
            exited: false,
            mark: 0,
            stderr,
            stderr_done,
            deadline: DEADLINE,
        }
    }

    /// From now on, waits only match events that arrive after this point (call it before an
    /// action whose effect you are about to wait for).
    pub fn mark(&mut self) {
        self.mark = self.seen.len();
    }

    /// Wait for an event matching `pred` (since the last `mark`, including events already
    /// received), returning it. Panics with what was seen at the deadline.
    pub fn wait_event(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_event_within(self.deadline, what, pred)
    }

    /// `wait_event` with a deadline other than `DEADLINE` (a fleet of hosts takes longer).
    pub fn wait_event_within(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(v) = self.seen[self.mark..].iter().find(|v| pred(v)) {
            return v.clone();
        }
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no event {what} within {within:?}; saw {:#?}\nstderr:\n{}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// Wait for `{"event":"applied","id":ID,"outcome":OUTCOME}`.
    pub fn wait_applied(&mut self, id: &str, outcome: &str) -> serde_json::Value {
        self.wait_event(&format!("applied {id} {outcome}"), |v| {
            v["event"] == "applied" && v["id"] == id && v["outcome"] == outcome
        })
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Send SIGINT (as ^C does) and wait for the exit status.
    pub fn interrupt(&mut self) -> (ExitStatus, String) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid, libc::SIGINT) };
        self.wait()
    }

    pub fn wait(&mut self) -> (ExitStatus, String) {
        let st = match self.exit.recv_timeout(self.deadline) {
            Ok(st) => st,
            Err(_) => panic!(
                "mgmt did not exit within {:?}\nstderr:\n{}",
                self.deadline,
                self.stderr()
            ),
        };
        self.exited = true;
        // stdout is closed once the process is gone: drain the remaining events.
        while let Ok(v) = self.events.recv_timeout(DEADLINE) {
            self.seen.push(v);
        }
        // Likewise stderr: the process has exited, but its last lines may still be in the pipe
        // (on a busy machine the reader thread runs late). Without this join, a test could see
        // an empty stderr for a run that printed its error.
        let _ = self.stderr_done.recv_timeout(DEADLINE);
        (st, self.stderr())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.exited && self.exit.try_recv().is_err() {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped (no exit message).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// Run `mgmt` to completion with a deadline; returns (status, stdout, stderr).
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    let mut r = Running::start(args);
    let (st, err) = r.wait();
    let out = r
        .seen
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    (st, out, err)
}

pub fn write(path: &Path, text: &str) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    // Atomic, like an editor's save: the watcher must see one new version, never half of one.
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Every event of a `--json` stream is valid under `schema/events.json`, and the first one is
/// `start` with the schema version.
pub fn assert_schema(seen: &[serde_json::Value]) {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/events.json"),
        )
        .expect("schema/events.json");
        let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("a valid JSON Schema")
    });
    assert_eq!(
        seen.first().map(|e| &e["event"]),
        Some(&"start".into()),
        "{seen:#?}"
    );
    assert_eq!(seen[0]["schema"], 1);
    for ev in seen {
        let errors: Vec<String> = v.iter_errors(ev).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{ev} does not fit the schema: {errors:?}"
        );
    }
}
