//! Test support for the remote mode: a test bed of real sshd hosts (see the `testbed` crate),
//! graph files for them, the initiator started against it, and checks of what a run leaves on
//! a host (processes, run dirs, the binary cache) made from inside the host's namespaces.
//!
//! It must never reach a host any other way than the test bed gives (its addresses, keys,
//! known_hosts), and never let the machine's own ssh setup (agent, ~/.ssh) leak into a test:
//! the initiator runs with a private HOME and no SSH_AUTH_SOCK.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use testbed::{Host, Testbed, TestbedConfig};

use super::{Running, mgmt, write};

/// Waits on a fleet's events get this long: hosts set up in parallel with other tests.
pub const FLEET_DEADLINE: Duration = Duration::from_secs(90);

pub struct Bed {
    pub tb: Testbed,
    /// Graph files and the initiator's private HOME.
    pub dir: tempfile::TempDir,
}

impl Bed {
    pub fn up(cfg: TestbedConfig) -> Bed {
        let tb = Testbed::up(cfg).expect("test bed up");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Bed { tb, dir }
    }

    /// Host `hN` (1-based, as the test bed names them).
    pub fn h(&self, n: usize) -> &Host {
        &self.tb.hosts()[n - 1]
    }

    /// `ssh://root@ADDR:22` for a host.
    pub fn url(&self, h: &Host) -> String {
        format!("ssh://root@{}:{}", h.addr, h.port)
    }

    /// The name a host goes by in events when its `remote:` is `url(h)`.
    pub fn name(&self, h: &Host) -> String {
        h.addr.to_string()
    }

    /// Writes a graph file (atomically) next to the others; returns its path.
    pub fn graph(&self, file: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(file);
        write(&p, text);
        p
    }

    /// `mgmt` with a private HOME (no ~/.ssh, no ~/.ssh/config) and no ssh-agent.
    pub fn cmd(&self) -> Command {
        let mut c = mgmt();
        c.env("HOME", self.dir.path().join("home"))
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// `mgmt run --json --remote F... <extra>` with the test bed's known_hosts and client key
    /// and a store on a free loopback port.
    pub fn start(&self, files: &[&Path], extra: &[&str]) -> Running {
        let kh = self.tb.known_hosts();
        let key = self.tb.client_key();
        let mut args: Vec<&str> = vec![
            "--known-hosts",
            kh.to_str().unwrap(),
            "--ssh-identity",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.start_bare(files, &args)
    }

    /// Like `start`, without the key flags: `args` say how to reach the hosts.
    pub fn start_bare(&self, files: &[&Path], args: &[&str]) -> Running {
        let mut all: Vec<&str> = vec!["--client-urls", "http://127.0.0.1:0"];
        for f in files {
            all.push("--remote");
            all.push(f.to_str().unwrap());
        }
        all.extend_from_slice(args);
        let mut r = Running::start_cmd(self.cmd(), &all);
        r.deadline = FLEET_DEADLINE;
        r
    }

    /// A file on a host, as text (panics with the path when it cannot be read).
    pub fn read(&self, h: &Host, path: &str) -> String {
        let bytes = self
            .tb
            .read_file(h, path)
            .unwrap_or_else(|e| panic!("{}: {path}: {e}", h.name));
        String::from_utf8(bytes).unwrap()
    }

    /// Runs `sh -c cmd` inside a host; returns stdout, panics on a non-zero exit.
    pub fn sh(&self, h: &Host, cmd: &str) -> String {
        let out = self.tb.exec(h, cmd).expect("exec in host");
        assert!(
            out.status.success(),
            "{}: `{cmd}` failed: {}",
            h.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Processes inside a host running the mgmt binary (or still in the wrapper shell that
    /// execs it).
    pub fn mgmt_processes(&self, h: &Host) -> Vec<Vec<String>> {
        self.tb
            .processes(h)
            .into_iter()
            .map(|p| p.cmdline)
            .filter(|c| {
                c.first()
                    .is_some_and(|a| a.ends_with("/mgmt") || a.contains("/mgmt."))
                    || c.iter().any(|a| a.contains("mgmt-pid"))
            })
            .collect()
    }

    /// Pids of `mgmt_processes`.
    pub fn mgmt_pids(&self, h: &Host) -> Vec<u32> {
        let procs = self.mgmt_processes(h);
        self.tb
            .processes(h)
            .into_iter()
            .filter(|p| procs.contains(&p.cmdline))
            .map(|p| p.pid)
            .collect()
    }

    /// Run dirs (`/tmp/mgmt.*`) left on a host.
    pub fn run_dirs(&self, h: &Host) -> Vec<String> {
        self.sh(
            h,
            "for d in /tmp/mgmt.*; do [ -e \"$d\" ] && echo \"$d\"; done; true",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Nothing of the run is left on the host: no mgmt process, no run dir.
    pub fn assert_clean(&self, h: &Host) {
        let procs = self.mgmt_processes(h);
        assert!(
            procs.is_empty(),
            "{}: mgmt still running: {procs:?}",
            h.name
        );
        let dirs = self.run_dirs(h);
        assert!(dirs.is_empty(), "{}: run dirs left: {dirs:?}", h.name);
    }
}

/// Where a host keeps the cached binary of this build, under the remote user's `home`.
pub fn cached_binary(home: &str) -> String {
    format!("{home}/.cache/mgmt/bin/{}/mgmt", binary_sha())
}

/// sha256 of the binary under test (what the initiator uploads), computed once.
pub fn binary_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| {
        let out = Command::new("sha256sum")
            .arg(env!("CARGO_BIN_EXE_mgmt"))
            .output()
            .expect("sha256sum");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    })
}

/// The seed example of host `ab` ("a" or "b") with its `remote:` set to `remote`.
pub fn seed_graph(ab: &str, remote: &str) -> String {
    let path = super::examples().join(format!("remote2{ab}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with("remote:"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("remote: {remote}\n"));
    out
}

/// A graph writing `files` ((path, content)) with `remote:` set.
pub fn files_graph(remote: &str, files: &[(&str, &str)]) -> String {
    let mut y = String::from("graph: g\nresources:\n  file:\n");
    for (i, (path, content)) in files.iter().enumerate() {
        y.push_str(&format!(
            "  - name: f{i}\n    path: {path}\n    content: {content:?}\n    state: exists\n"
        ));
    }
    y.push_str(&format!("remote: {remote}\n"));
    y
}

/// Events of one kind about one host.
pub fn host_events<'a>(seen: &'a [Value], event: &str, host: &str) -> Vec<&'a Value> {
    seen.iter()
        .filter(|v| v["event"] == event && v["host"] == host)
        .collect()
}

/// The one `host_summary` of a host.
pub fn summary<'a>(seen: &'a [Value], host: &str) -> &'a Value {
    let s = host_events(seen, "host_summary", host);
    assert_eq!(s.len(), 1, "one summary for {host}: {seen:#?}");
    s[0]
}

/// The run's `exit` reason.
pub fn exit_reason(seen: &[Value]) -> String {
    let e: Vec<&Value> = seen.iter().filter(|v| v["event"] == "exit").collect();
    assert_eq!(e.len(), 1, "one exit event: {seen:#?}");
    e[0]["reason"].as_str().unwrap_or_default().to_string()
}

/// Whether a host output line is the child's log of `id` being changed.
pub fn applied_line(v: &Value, host: &str, id: &str) -> bool {
    v["event"] == "host_output"
        && v["host"] == host
        && v["line"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("{id}: applied")))
}

impl Bed {
    /// Waits until `path` on `h` holds `content`, looking again each time the host's child
    /// reports applying `id` (no event comes from a host's filesystem itself). Checking first
    /// and marking before each wait means no apply can slip by unseen.
    pub fn wait_file(
        &self,
        r: &mut Running,
        h: &Host,
        host: &str,
        id: &str,
        path: &str,
        content: &str,
    ) {
        loop {
            if self.tb.read_file(h, path).ok().as_deref() == Some(content.as_bytes()) {
                return;
            }
            r.mark();
            r.wait_event(&format!("{host} applies {id}"), |v| {
                applied_line(v, host, id)
            });
        }
    }
}

/// Polls `cond` until it holds or `within` has passed; for conditions no event announces (a
/// process going away on a host whose initiator is gone).
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
