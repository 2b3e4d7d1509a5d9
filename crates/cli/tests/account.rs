//! `user` and `group` on booted Debian hosts, applied by `mgmt run --remote` as a sudo user:
//! create (home from /etc/skel, shell, groups, password hash), change (one usermod), a second
//! run that changes nothing, a drift by hand undone by a live run (MEASURED), `--noop` that
//! changes nothing, and `state: absent`.
//!
//! What is measured is printed as `MEASURED` lines (run with `--no-capture`); the assertions
//! are about what happened, never about how fast.

mod support;

use std::time::Instant;

use support::bed::{Bed, summary, wait_until};
use support::{DEADLINE, Running};
use testbed::{EXTRA_USER, Host, TestbedConfig};

/// An already-crypted hash (`openssl passwd -6`); what the graph hands to `chpasswd -e`.
const HASH: &str = "$6$mgmtsalt0123$1MzWXif09HbRp8I.0oGlElmyvrB0vMGGuQaPhljhMHY5e2qjGuWfDKgCrFMoeBMw7mNdnO6HeDfL27o2dt97//";

fn booted() -> Bed {
    Bed::up(TestbedConfig {
        booted: true,
        ..TestbedConfig::hosts(1)
    })
}

fn header(h: &Host) -> String {
    format!(
        "graph: accounts\nremote: ssh://{EXTRA_USER}@{}:{}\nsudo: true\nresources:\n",
        h.addr, h.port
    )
}

/// The line of `name` in a database file of the host (`/etc/passwd`, `/etc/group`...).
fn entry(bed: &Bed, h: &Host, file: &str, name: &str) -> Option<String> {
    bed.read(h, file)
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}

fn field(bed: &Bed, h: &Host, file: &str, name: &str, n: usize) -> Option<String> {
    entry(bed, h, file, name).map(|l| l.split(':').nth(n).unwrap_or_default().to_string())
}

/// One run to convergence; returns (changed count, stderr, every event as text).
fn run_once(bed: &Bed, h: &Host, g: &std::path::Path, extra: &[&str]) -> (u64, String, String) {
    let mut args = vec!["--converged-timeout", "1"];
    args.extend_from_slice(extra);
    let mut r = bed.start(&[g], &args);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    let events: String = r.seen.iter().map(|v| format!("{v}\n")).collect();
    let changed = summary(&r.seen, &bed.name(h))["changed"]
        .as_u64()
        .unwrap_or(0);
    (changed, err, events)
}

fn wait_converged(r: &mut Running) {
    r.wait_event("the child converged", |v| {
        v["event"] == "host_converged" && v["converged"] == true
    });
}

fn user_graph(h: &Host, shell: &str, groups: &str, state: &str) -> String {
    format!(
        "{}  group:
  - name: web
    gid: 1500
    state: {state}
  - name: ops
    state: {state}
  user:
  - name: alice
    state: {state}
    homedir: /home/alice/
    shell: {shell}
    groups: [{groups}]
    comment: Alice A
    password: \"{HASH}\"
",
        header(h)
    )
}

#[test]
fn a_user_is_created_with_home_shell_groups_and_hash_changed_with_one_usermod_kept_and_removed() {
    let bed = booted();
    let h = bed.h(1);
    bed.sh(h, "echo skel > /etc/skel/.mgmt-skel");
    let g = bed.graph("user.yaml", &user_graph(h, "/bin/bash", "web", "exists"));

    // --noop: says what it would do, changes nothing.
    let (_, err, _) = run_once(&bed, h, &g, &["--noop"]);
    assert!(
        entry(&bed, h, "/etc/passwd", "alice").is_none(),
        "--noop made alice"
    );
    assert!(
        entry(&bed, h, "/etc/group", "web").is_none(),
        "--noop made web"
    );
    assert!(err.contains("would"), "--noop said nothing:\n{err}");

    // Create.
    let t = Instant::now();
    let (changed, err, events) = run_once(&bed, h, &g, &[]);
    println!(
        "MEASURED user and 2 groups created by a cold run: {:.2?} (incl. 1 s converged timeout)",
        t.elapsed()
    );
    assert_eq!(changed, 3, "{err}");
    let alice = entry(&bed, h, "/etc/passwd", "alice").expect("alice made");
    let f: Vec<&str> = alice.split(':').collect();
    assert_eq!(
        (f[4], f[5], f[6]),
        ("Alice A", "/home/alice", "/bin/bash"),
        "{alice}"
    );
    assert_eq!(
        field(&bed, h, "/etc/group", "web", 2).as_deref(),
        Some("1500")
    );
    assert_eq!(
        field(&bed, h, "/etc/group", "web", 3).as_deref(),
        Some("alice")
    );
    assert_eq!(
        field(&bed, h, "/etc/shadow", "alice", 1).as_deref(),
        Some(HASH)
    );
    assert_eq!(
        bed.read(h, "/home/alice/.mgmt-skel"),
        "skel\n",
        "home not made from skel"
    );
    assert_eq!(
        bed.sh(h, "stat -c %U /home/alice/.mgmt-skel").trim(),
        "alice"
    );
    // The hash reached the host through chpasswd's stdin: no output of the run shows it (it
    // would, were it on a logged command line).
    assert!(
        !err.contains(HASH) && !events.contains(HASH),
        "the hash was shown:\n{err}"
    );
    assert!(err.contains("chpasswd --encrypted"), "{err}");

    // A second run changes nothing.
    let (changed, err, _) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 0, "a second run changed something:\n{err}");

    // Shell and groups change with one usermod.
    support::write(&g, &user_graph(h, "/bin/dash", "web, ops", "exists"));
    let (changed, err, _) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert_eq!(err.matches("running usermod").count(), 1, "{err}");
    assert!(
        err.contains("running usermod --groups ops,web --shell /bin/dash -- alice"),
        "{err}"
    );
    assert_eq!(
        field(&bed, h, "/etc/passwd", "alice", 6).as_deref(),
        Some("/bin/dash")
    );
    assert_eq!(
        field(&bed, h, "/etc/group", "ops", 3).as_deref(),
        Some("alice")
    );

    // A live run puts back what is changed by hand.
    let mut r = bed.start(&[&g], &[]);
    wait_converged(&mut r);
    r.mark();
    bed.sh(h, "usermod -s /bin/sh alice");
    let t = Instant::now();
    assert!(
        wait_until(DEADLINE, || field(&bed, h, "/etc/passwd", "alice", 6)
            .as_deref()
            == Some("/bin/dash")),
        "the shell was not put back"
    );
    println!(
        "MEASURED `usermod -s /bin/sh` by hand undone {:.2?} after it returned",
        t.elapsed()
    );
    wait_converged(&mut r);
    r.mark();
    bed.sh(h, "gpasswd -d alice ops >/dev/null");
    let t = Instant::now();
    assert!(
        wait_until(DEADLINE, || field(&bed, h, "/etc/group", "ops", 3)
            .as_deref()
            == Some("alice")),
        "the membership was not put back"
    );
    println!(
        "MEASURED `gpasswd -d alice ops` by hand undone {:.2?} after it returned",
        t.elapsed()
    );
    wait_converged(&mut r);
    let (st, err) = r.interrupt();
    assert!(st.code().is_some(), "{err}");

    // Absent: --noop first (nothing removed), then userdel (the home stays) and groupdel.
    let g = bed.graph(
        "gone.yaml",
        &user_graph(h, "/bin/dash", "web, ops", "absent"),
    );
    run_once(&bed, h, &g, &["--noop"]);
    assert!(
        entry(&bed, h, "/etc/passwd", "alice").is_some(),
        "--noop removed alice"
    );
    let (changed, err, _) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 3, "{err}");
    assert!(entry(&bed, h, "/etc/passwd", "alice").is_none());
    assert!(entry(&bed, h, "/etc/shadow", "alice").is_none());
    assert!(entry(&bed, h, "/etc/group", "web").is_none());
    assert!(entry(&bed, h, "/etc/group", "ops").is_none());
    assert_eq!(
        bed.read(h, "/home/alice/.mgmt-skel"),
        "skel\n",
        "the home was removed"
    );
    bed.assert_clean(h);
}

fn group_graph(h: &Host, gid: u32, members: &str, state: &str) -> String {
    format!(
        "{}  group:\n  - name: team\n    state: {state}\n    gid: {gid}\n    members: [{members}]\n",
        header(h)
    )
}

#[test]
fn a_group_is_created_with_members_changed_kept_and_removed() {
    let bed = booted();
    let h = bed.h(1);
    let g = bed.graph("group.yaml", &group_graph(h, 1600, "root", "exists"));
    run_once(&bed, h, &g, &["--noop"]);
    assert!(
        entry(&bed, h, "/etc/group", "team").is_none(),
        "--noop made team"
    );

    let (changed, err, _) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert_eq!(
        entry(&bed, h, "/etc/group", "team").as_deref(),
        Some("team:x:1600:root")
    );
    let (changed, err, _) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 0, "a second run changed something:\n{err}");

    // gid and members change with one groupmod.
    let members = format!("root, {EXTRA_USER}");
    support::write(&g, &group_graph(h, 1601, &members, "exists"));
    let (changed, err, _) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert_eq!(err.matches("running groupmod").count(), 1, "{err}");
    assert_eq!(
        entry(&bed, h, "/etc/group", "team"),
        Some(format!("team:x:1601:{EXTRA_USER},root"))
    );

    // Drift by hand, undone live.
    let mut r = bed.start(&[&g], &[]);
    wait_converged(&mut r);
    r.mark();
    bed.sh(h, "gpasswd -d root team >/dev/null");
    let t = Instant::now();
    assert!(
        wait_until(DEADLINE, || entry(&bed, h, "/etc/group", "team")
            == Some(format!("team:x:1601:{EXTRA_USER},root"))),
        "the member was not put back"
    );
    println!(
        "MEASURED `gpasswd -d root team` by hand undone {:.2?} after it returned",
        t.elapsed()
    );
    wait_converged(&mut r);
    let (st, err) = r.interrupt();
    assert!(st.code().is_some(), "{err}");

    // An empty list empties it.
    support::write(&g, &group_graph(h, 1601, "", "exists"));
    let (changed, err, _) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert_eq!(
        entry(&bed, h, "/etc/group", "team").as_deref(),
        Some("team:x:1601:")
    );

    support::write(&g, &group_graph(h, 1601, "", "absent"));
    let (changed, err, _) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert!(entry(&bed, h, "/etc/group", "team").is_none());
    assert!(entry(&bed, h, "/etc/gshadow", "team").is_none());
    bed.assert_clean(h);
}

/// Where `needle` starts in `text`, as `line:col` (1-based, as the diagnostics count).
fn position(text: &str, needle: &str) -> String {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in the graph"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    format!("{line}:{col}")
}

/// A bad value of each kind of this issue (user, group, line, authorized_key, mount) is named
/// at its file:line:col, all in one report, and nothing reaches the host: not the graph's good
/// resource, not the binary, not a run directory.
#[test]
fn bad_values_of_every_kind_are_named_at_their_place_and_nothing_reaches_the_host() {
    let bed = booted();
    let h = bed.h(1);
    let text = format!(
        "{}  file:
  - name: /etc/mgmt-should-not-exist
    content: never written
  user:
  - name: bob
    uid: -5
  group:
  - name: crew
    gid: lots
  line:
  - name: sshd
    path: /etc/ssh/sshd_config
    line: PermitRootLogin no
    regexp: \"(unclosed\"
  authorized_key:
  - name: k
    user: root
    key: not-a-key
  mount:
  - name: /mnt/data
    device: sdb1/x
    type: ext4
",
        header(h)
    );
    let g = bed.graph("bad.yaml", &text);
    let passwd = bed.read(h, "/etc/passwd");
    let mut r = bed.start(&[&g], &["--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_ne!(st.code(), Some(0), "a bad graph was run:\n{err}");
    let file = g.display().to_string();
    for value in ["-5", "lots", "\"(unclosed\"", "not-a-key", "sdb1/x"] {
        let at = format!("{file}:{}", position(&text, value));
        assert!(err.contains(&at), "`{value}` not named at {at}:\n{err}");
    }
    assert!(
        bed.sh(
            h,
            "test -e /etc/mgmt-should-not-exist && echo yes || echo no"
        )
        .trim()
            == "no",
        "the good resource was applied"
    );
    assert_eq!(bed.read(h, "/etc/passwd"), passwd);
    assert!(
        bed.mgmt_processes(h).is_empty() && bed.run_dirs(h).is_empty(),
        "something reached the host"
    );
    assert!(
        bed.sh(
            h,
            &format!("test -e ~{EXTRA_USER}/.cache/mgmt && echo yes || echo no")
        )
        .trim()
            == "no",
        "the binary was copied for a graph that does not load"
    );
    bed.assert_clean(h);
}
