//! The live view for people: on a terminal a remote run keeps one status line per host,
//! redrawn in place; elsewhere it prints plain prefixed lines. The terminal is a real pty
//! (util-linux `script`), the hosts real sshd.

mod support;

use std::process::Command;

use support::bed::{Bed, seed_graph};
use testbed::TestbedConfig;

fn run(bed: &Bed, tty: bool) -> String {
    let (h1, h2) = (bed.h(1), bed.h(2));
    let a = bed.graph("a.yaml", &seed_graph("a", &bed.url(h1)));
    let b = bed.graph("b.yaml", &seed_graph("b", &bed.url(h2)));
    let cmd = format!(
        "{} run --client-urls http://127.0.0.1:0 --remote {} --remote {} --known-hosts {} --ssh-identity {} --converged-timeout 1",
        env!("CARGO_BIN_EXE_mgmt"),
        a.display(),
        b.display(),
        bed.tb.known_hosts().display(),
        bed.tb.client_key().display()
    );
    let out = if tty {
        // `script` gives the command a pty; everything it printed comes back on our stdout.
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &format!("{cmd} 2>&1")]);
        c
    }
    .env("HOME", bed.dir.path().join("home"))
    .env_remove("SSH_AUTH_SOCK")
    .env("RUST_LOG", "info")
    .output()
    .expect("run mgmt");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "exit {:?}\n{text}", out.status);
    text
}

#[test]
fn a_terminal_gets_a_status_line_per_host_and_a_pipe_gets_plain_lines() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let names = [bed.name(bed.h(1)), bed.name(bed.h(2))];

    let tty = run(&bed, true);
    // Lines redrawn in place: cursor movement and line erasing, and each host's status.
    assert!(
        tty.contains("\x1b[2K"),
        "no in-place redraw on a terminal:\n{tty}"
    );
    for n in &names {
        assert!(
            tty.contains(&format!("{n} running")) || tty.contains(&format!("{n} done")),
            "{n}:\n{tty}"
        );
        assert!(
            !tty.contains(&format!("{n} : connecting")),
            "plain lines on a terminal:\n{tty}"
        );
    }

    let plain = run(&bed, false);
    assert!(
        !plain.contains('\x1b'),
        "escape sequences on a pipe:\n{plain}"
    );
    for n in &names {
        assert!(
            plain.contains(&format!("{n} : connecting")),
            "{n}:\n{plain}"
        );
        assert!(plain.contains(&format!("{n} : done")), "{n}:\n{plain}");
        assert!(
            plain.contains(&format!("{n} | ")),
            "no output lines for {n}:\n{plain}"
        );
    }
}
