//! The command line itself: exit codes, errors (printed once, as they are), colour (NO_COLOR,
//! terminals; a real pty from util-linux `script`), signals, `--version`, completions and the
//! manual page. The real binary; no test bed (a host that refuses connections is a loopback
//! port nobody listens on). Synchronisation by the binary's events and exit, never by sleeping.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::{Running, mgmt, run_to_end, write};

/// A graph that converges at once: one file in `dir`.
fn good_graph(dir: &Path) -> std::path::PathBuf {
    let g = dir.join("good.yaml");
    write(
        &g,
        &format!(
            "graph: good\nresources:\n  file:\n  - name: f\n    path: {}/f\n    content: \"f\\n\"\n",
            dir.display()
        ),
    );
    g
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `mgmt ARGS` to its end with stdin closed; stdout and stderr are pipes.
fn output(args: &[&str]) -> Output {
    mgmt()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mgmt")
}

/// stderr is one line starting with `error: `.
fn assert_one_line_error(err: &str) {
    assert!(err.starts_with("error: "), "{err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
}

// ---- exit codes (README "Exit codes") ----

#[test]
fn exit_0_when_the_graph_converges() {
    let t = tempfile::tempdir().unwrap();
    let g = good_graph(t.path());
    let (st, _out, err) = run_to_end(&[
        "--no-server",
        "--converged-timeout",
        "0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert_eq!(st.code(), Some(0), "{err}");
}

#[test]
fn exit_1_when_a_resource_fails_and_its_error_is_printed_once_as_it_is() {
    let t = tempfile::tempdir().unwrap();
    let g = t.path().join("g.yaml");
    write(
        &g,
        "graph: g\nresources:\n  exec:\n  - name: bad\n    cmd: echo Disk FULL on /Srv >&2; exit 3\n    shell: /bin/sh\n",
    );
    let (st, out, err) = run_to_end(&[
        "--no-server",
        "--converged-timeout",
        "0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(out.contains("\"event\":\"failed\""), "{out}");
    // Once (not by the engine and again by the binary), in its own case.
    assert_eq!(err.matches("exited with code 3").count(), 1, "{err}");
    assert_eq!(err.matches("Disk FULL on /Srv").count(), 1, "{err}");
    assert!(!err.to_lowercase().contains("check_apply failed"), "{err}");
}

#[test]
fn exit_2_without_a_graph_in_one_line() {
    let o = output(&["run", "--no-server", "--converged-timeout", "0"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert_one_line_error(&err);
    assert!(err.contains("--yaml") && err.contains("--remote"), "{err}");
}

#[test]
fn exit_2_when_the_graph_file_does_not_exist_in_one_line() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("Missing.yaml");
    for flag in ["--yaml", "--remote"] {
        let o = output(&[
            "run",
            "--client-urls",
            "http://127.0.0.1:0",
            flag,
            missing.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert_one_line_error(&err);
        assert!(err.contains(missing.to_str().unwrap()), "{flag}: {err}");
        assert!(err.contains("No such file or directory"), "{flag}: {err}");
    }
    // A directory is no graph file either.
    let o = output(&["run", "--no-server", "--yaml", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_one_line_error(&text(&o.stderr));
}

#[test]
fn exit_2_when_the_graph_does_not_parse() {
    let t = tempfile::tempdir().unwrap();
    let g = t.path().join("bad.yaml");
    write(
        &g,
        "graph: g\nresources:\n  file:\n  - name: f\n    bogus: 1\n",
    );
    let (st, out, err) = run_to_end(&[
        "--no-server",
        "--converged-timeout",
        "0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("bad.yaml:5:5"), "{err}");
    // People get the caret art on stderr; programs get the position as fields.
    assert!(err.contains("5 |     bogus: 1\n  |     ^^^^^\n"), "{err}");
    let invalid: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "graph_invalid")
        .unwrap_or_else(|| panic!("no graph_invalid event: {out}"));
    assert_eq!(
        invalid["errors"],
        serde_json::json!([{
            "file": g.to_str().unwrap(),
            "line": 5,
            "column": 5,
            "message": "unknown field `bogus` for resource kind `file`",
            "help": "valid fields: `path`, `dirname`, `basename`, `content`, `source`, `fragments`, `state`, `mode`, `owner`, `group`, `recurse`, `force`, `name`, `meta`",
        }]),
        "{invalid}"
    );
    // An unreadable file is one such object too, without a position.
    let missing = t.path().join("missing.yaml");
    let (st, out, _) = run_to_end(&["--no-server", "--yaml", missing.to_str().unwrap()]);
    assert_eq!(st.code(), Some(2));
    let invalid: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "graph_invalid")
        .unwrap_or_else(|| panic!("no graph_invalid event: {out}"));
    let errors = invalid["errors"].as_array().expect("a list");
    assert_eq!(errors.len(), 1, "{invalid}");
    assert_eq!(errors[0]["file"], missing.to_str().unwrap());
    assert_eq!(
        (&errors[0]["line"], &errors[0]["column"]),
        (&0.into(), &0.into())
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("No such file or directory")),
        "{invalid}"
    );
}

#[test]
fn exit_2_for_bad_flags_and_0_for_help() {
    for args in [
        &["run", "--bogus"][..],
        &["run", "--converged-timeout", "soon"],
        &["frobnicate"],
        &["completions", "tcsh"],
    ] {
        let o = output(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).starts_with("error: "), "{args:?}");
    }
    // No subcommand at all: the help, on stderr, and 2.
    let o = output(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("Usage:"));
    for args in [&["--help"][..], &["run", "--help"], &["--version"]] {
        let o = output(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(!o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_host_error_keeps_its_case_and_is_printed_once() {
    // A port nobody listens on: the connection is refused, and the OS's message says so with a
    // capital C.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("home")).unwrap();
    let g = t.path().join("g.yaml");
    write(
        &g,
        &format!("graph: g\nremote: ssh://root@127.0.0.1:{port}\nresources: {{}}\n"),
    );
    let mut cmd = mgmt();
    cmd.env("HOME", t.path().join("home"))
        .env_remove("SSH_AUTH_SOCK");
    let mut r = Running::start_cmd(
        cmd,
        &[
            "--client-urls",
            "http://127.0.0.1:0",
            "--converged-timeout",
            "0",
            "--remote",
            g.to_str().unwrap(),
        ],
    );
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(1), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "failed: connect: cannot connect to 127.0.0.1 (127.0.0.1:{port}): Connection refused"
        )),
        "{err}"
    );
}

// ---- colour ----

/// `sh_cmd` run under a pseudo-terminal (util-linux `script`); what the terminal showed.
fn on_a_terminal(sh_cmd: &str, no_color: Option<&str>) -> String {
    let mut c = Command::new("script");
    c.args(["-qec", sh_cmd, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("RUST_LOG", "info")
        .env("TERM", "xterm-256color")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR")
        .stdin(Stdio::null());
    match no_color {
        Some(v) => c.env("NO_COLOR", v),
        None => c.env_remove("NO_COLOR"),
    };
    let o = c.output().expect("run script (util-linux)");
    text(&o.stdout)
}

#[test]
fn no_color_turns_every_colour_off_on_a_terminal() {
    let t = tempfile::tempdir().unwrap();
    let g = good_graph(t.path());
    let bin = env!("CARGO_BIN_EXE_mgmt");
    let cmds = [
        // tracing's log lines
        format!(
            "{bin} run --no-server --converged-timeout 0 --yaml {}",
            g.display()
        ),
        // clap's help and its errors
        format!("{bin} run --help"),
        format!("{bin} run --bogus"),
    ];
    for cmd in &cmds {
        let coloured = on_a_terminal(cmd, None);
        assert!(
            coloured.contains("\x1b["),
            "a terminal gets colour without NO_COLOR ({cmd}):\n{coloured}"
        );
        // Set but empty is not NO_COLOR (no-color.org).
        let empty = on_a_terminal(cmd, Some(""));
        assert!(empty.contains("\x1b["), "NO_COLOR= ({cmd}):\n{empty}");
        let plain = on_a_terminal(cmd, Some("1"));
        assert!(
            !plain.contains("\x1b["),
            "escapes with NO_COLOR=1 ({cmd}):\n{plain:?}"
        );
        assert!(plain.len() > 20, "{cmd}: {plain:?}");
    }
}

#[test]
fn a_stderr_that_is_not_a_terminal_gets_no_escapes() {
    let t = tempfile::tempdir().unwrap();
    let g = good_graph(t.path());
    let (st, _out, err) = run_to_end(&[
        "--no-server",
        "--converged-timeout",
        "0",
        "--yaml",
        g.to_str().unwrap(),
    ]);
    assert!(st.success(), "{err}");
    assert!(err.contains("INFO"), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
    for args in [&["run", "--bogus"][..], &["run", "--help"]] {
        let o = output(args);
        assert!(
            !o.stdout.contains(&0x1b) && !o.stderr.contains(&0x1b),
            "{args:?}"
        );
    }
}

// ---- signals ----

#[test]
fn sighup_stops_a_local_run_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let g = d.join("g.yaml");
    write(
        &g,
        &format!(
            "graph: g\nresources:\n  file:\n  - name: f\n    path: {}/f\n    content: x\n  timer:\n  - name: t\n    interval: 1\n",
            d.display()
        ),
    );
    let mut r = Running::start(&["--no-server", "--yaml", g.to_str().unwrap()]);
    r.wait_applied("file[f]", "changed");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(r.pid, libc::SIGHUP) }, 0);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    let exit: Vec<_> = r.seen.iter().filter(|v| v["event"] == "exit").collect();
    assert_eq!(exit.len(), 1, "{:#?}", r.seen);
    assert_eq!(exit[0]["reason"], "interrupted");
    assert_eq!(exit[0]["signal"], "SIGHUP");
    assert!(err.contains("interrupted by SIGHUP"), "{err}");
}

// ---- --version, completions, man ----

#[test]
fn version_names_the_commit_it_was_built_from() {
    let o = output(&["--version"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    let prefix = format!("mgmt {} (", env!("CARGO_PKG_VERSION"));
    let inner = out
        .strip_prefix(&prefix)
        .and_then(|s| s.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{out:?}"));
    if inner == "unknown" {
        return;
    }
    // `<12 hex>[-dirty] <commit date>`
    let (commit, date) = inner.split_once(' ').unwrap_or((inner, ""));
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert_eq!(hash.len(), 12, "{out:?}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{out:?}");
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
        "{out:?}"
    );
    // It is a commit of this repository (HEAD may have moved since the build).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Ok(g) = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["cat-file", "-t", hash])
        .output()
        && g.status.success()
    {
        assert_eq!(text(&g.stdout).trim(), "commit", "{out:?}");
    }
    assert_eq!(text(&output(&["-V"]).stdout), out);
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let bash = output(&["completions", "bash"]);
    assert!(bash.status.success(), "{}", text(&bash.stderr));
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("mgmt.bash");
    std::fs::write(&f, &bash.stdout).unwrap();
    let n = Command::new("bash").arg("-n").arg(&f).output().unwrap();
    assert!(n.status.success(), "bash -n: {}", text(&n.stderr));
    let script = text(&bash.stdout);
    assert!(script.contains("--converged-timeout"), "{script}");

    for shell in ["zsh", "fish"] {
        let o = output(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", text(&o.stderr));
        let s = text(&o.stdout);
        assert!(!s.trim().is_empty(), "{shell}");
        assert!(s.contains("run"), "{shell}: {s}");
        assert!(s.contains("converged-timeout"), "{shell}: {s}");
    }
}

#[test]
fn man_prints_a_roff_page_with_the_run_flags() {
    let o = output(&["man"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let page = text(&o.stdout);
    assert!(page.starts_with(".TH") || page.starts_with(".ie"), "{page}");
    // roff spells `-` as `\-`.
    assert!(page.contains(r"\-\-converged\-timeout"), "{page}");
    assert!(page.contains(r#".SH "MGMT RUN""#), "{page}");
    // Becoming root on the hosts: both flags, with what they do.
    assert!(page.contains(r"\-\-sudo"), "{page}");
    assert!(page.contains(r"\-\-ask\-sudo\-pass"), "{page}");
    // The page renders (scripts/deps installs groff) and says so in words.
    let r = Command::new("groff")
        // Plain text (no overstrike), wide lines, no hyphenation.
        .args(["-man", "-Tutf8", "-P", "-cbou", "-rLL=200n", "-rHY=0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&o.stdout)?;
            c.wait_with_output()
        })
        .expect("groff runs (scripts/deps installs groff-base)");
    let shown = text(&r.stdout).replace('\u{2212}', "-");
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(shown.contains("--converged-timeout"), "{shown}");
}

/// A 20 KB file of 10,000 nested sequences is bad input in every path that parses graphs
/// (run, check, remote): exit 2 with file, line and column, never a stack overflow.
#[test]
fn deep_nesting_is_bad_input_everywhere_not_a_crash() {
    let t = tempfile::tempdir().unwrap();
    let g = t.path().join("deep.yaml");
    std::fs::write(
        &g,
        "graph: g\nresources:\n".to_string() + &"- ".repeat(10_000) + "x\n",
    )
    .unwrap();
    let g = g.to_str().unwrap();
    for args in [
        vec!["run", "--no-server", "--yaml", g],
        vec!["check", g],
        vec!["run", "--client-urls", "http://127.0.0.1:0", "--remote", g],
    ] {
        let o = output(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("deep.yaml:3:"), "{args:?}: {err}");
        assert!(err.contains("deeper than"), "{args:?}: {err}");
    }
}

/// Graph files whose bytes are no graph text, with where and what the error says: one not
/// UTF-8 (at its first invalid byte) and one over the size limit (where it is crossed; only
/// the limit and one byte more are ever read).
fn bad_bytes(dir: &Path, remote: &str) -> Vec<(std::path::PathBuf, (usize, usize), &'static str)> {
    let head = format!("graph: g\nremote: {remote}\nresources: {{}}\n");
    let latin1 = dir.join("latin1.yaml");
    let mut bytes = head.clone().into_bytes();
    bytes.extend(b"comment: caf\xe9\n");
    std::fs::write(&latin1, &bytes).unwrap();
    let huge = dir.join("huge.yaml");
    let limit = yamlgraph::MAX_FILE_BYTES;
    let pad = "# padding\n";
    let mut text = head.clone();
    text.push_str(&pad.repeat((limit - head.len()) / pad.len() + 1));
    std::fs::write(&huge, &text).unwrap();
    // The limit's byte: on the line after the head's and every padding line before it.
    let (lines, col) = (
        (limit - head.len()) / pad.len(),
        (limit - head.len()) % pad.len(),
    );
    vec![
        (latin1, (4, 13), "not valid UTF-8"),
        (
            huge,
            (4 + lines, col + 1),
            "larger than the limit of 16 MiB",
        ),
    ]
}

/// Bytes that are no graph text (not UTF-8, over the size limit) are bad input in every path
/// that reads graphs (run, check, remote): exit 2 with file, line and column.
#[test]
fn bad_bytes_are_bad_input_everywhere_at_their_position() {
    let t = tempfile::tempdir().unwrap();
    for (g, (line, col), what) in bad_bytes(t.path(), "ssh://root@127.0.0.1:1") {
        let at = format!("{}:{line}:{col}", g.display());
        let g = g.to_str().unwrap();
        for args in [
            vec!["run", "--no-server", "--yaml", g],
            vec!["check", g],
            vec!["run", "--client-urls", "http://127.0.0.1:0", "--remote", g],
        ] {
            let o = output(&args);
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(&at), "{args:?}: {at}: {err}");
            assert!(err.contains(what), "{args:?}: {err}");
        }
    }
}

/// The same for a live edit, of `--yaml` and of a `--remote` file: reported at its position
/// (`graph_invalid`), and the running graph stays (a remote host is not sent it). The remote
/// host is a port that accepts and never speaks SSH, so the host stays `connecting` while its
/// file is edited.
#[test]
fn a_live_edit_with_bad_bytes_is_reported_at_its_position_and_not_taken() {
    let t = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = format!("ssh://root@{}", silent.local_addr().unwrap());
    let bad = bad_bytes(t.path(), &remote);
    let local = good_graph(t.path());
    let g = t.path().join("remote.yaml");
    write(
        &g,
        &format!("graph: g\nremote: {remote}\nresources: {{}}\n"),
    );
    let home = t.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let mut cmd = mgmt();
    cmd.env("HOME", &home).env_remove("SSH_AUTH_SOCK");
    for (mut r, file) in [
        (
            Running::start(&["--no-server", "--yaml", local.to_str().unwrap()]),
            &local,
        ),
        (
            Running::start_cmd(
                cmd,
                &[
                    "--client-urls",
                    "http://127.0.0.1:0",
                    "--remote",
                    g.to_str().unwrap(),
                ],
            ),
            &g,
        ),
    ] {
        if file == &local {
            r.wait_applied("file[f]", "changed");
        } else {
            r.wait_event("connecting", |v| {
                v["event"] == "host_state" && v["state"] == "connecting"
            });
        }
        for (bytes, at, what) in &bad {
            r.mark();
            let tmp = file.with_extension("tmp~");
            std::fs::copy(bytes, &tmp).unwrap();
            std::fs::rename(&tmp, file).unwrap();
            let invalid = r.wait_event("graph_invalid", |v| v["event"] == "graph_invalid");
            let e = &invalid["errors"][0];
            assert_eq!(e["file"], file.to_str().unwrap(), "{invalid}");
            assert_eq!(
                (&e["line"], &e["column"]),
                (&at.0.into(), &at.1.into()),
                "{invalid}"
            );
            assert!(e["message"].as_str().unwrap().contains(what), "{invalid}");
        }
        let (st, err) = r.interrupt();
        assert_eq!(st.code(), Some(0), "{err}");
        let count = |kind: &str| r.seen.iter().filter(|v| v["event"] == kind).count();
        assert!(count("swapped") <= 1, "only the first graph: {:#?}", r.seen);
        assert_eq!(count("graph_copied"), 0, "nothing copied: {:#?}", r.seen);
        support::assert_schema(&r.seen);
    }
    drop(silent);
}

/// mgmt loads an absent file with `content` and ignores the content: so do we, with a warning
/// at the field in `check` and in `run`, and the file is removed.
#[test]
fn an_absent_file_with_content_is_a_warning_not_an_error() {
    let t = tempfile::tempdir().unwrap();
    let gone = t.path().join("gone");
    std::fs::write(&gone, "here").unwrap();
    let g = t.path().join("g.yaml");
    std::fs::write(
        &g,
        format!(
            "graph: g\nresources:\n  file:\n  - name: gone\n    path: {}\n    content: x\n    state: absent\n",
            gone.display()
        ),
    )
    .unwrap();
    let g = g.to_str().unwrap();
    let at = format!("{g}:6:5");
    let o = output(&["check", g]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.starts_with("warning: `file[gone]`: `content` of an absent file is ignored"),
        "{err}"
    );
    assert!(err.contains(&at), "{err}");
    let o = output(&[
        "run",
        "--no-server",
        "--converged-timeout",
        "0",
        "--yaml",
        g,
    ]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&at) && err.contains("is ignored"), "{err}");
    assert!(!gone.exists());
}
