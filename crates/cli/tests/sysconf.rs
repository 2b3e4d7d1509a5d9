//! `sysctl`, `hostname` and `cron` on booted Debian hosts, applied by `mgmt run --remote` as a
//! sudo user: `--noop` that changes nothing, create, a second run that changes nothing, a
//! change of the value, a drift by hand undone by a live run (MEASURED), `state: absent`, and a
//! bad value refused at its place (file:line:col) before anything reaches the host.
//!
//! Everything is asserted on the host's real state, read inside the host (`bed.sh`): its own
//! network namespace's `/proc/sys/net`, its own UTS namespace's host name. The machine's own
//! sysctls and host name are checked untouched.
//!
//! What is measured is printed as `MEASURED` lines (run with `--no-capture`); the assertions
//! are about what happened, never about how fast.

mod support;

use std::path::Path;
use std::time::Instant;

use support::bed::{Bed, applied_line, summary, wait_until};
use support::{DEADLINE, Running};
use testbed::{EXTRA_USER, Host, TestbedConfig};

fn booted() -> Bed {
    Bed::up(TestbedConfig {
        booted: true,
        ..TestbedConfig::hosts(1)
    })
}

fn header(h: &Host) -> String {
    format!(
        "graph: sysconf\nremote: ssh://{EXTRA_USER}@{}:{}\nsudo: true\nresources:\n",
        h.addr, h.port
    )
}

/// One run to convergence; returns (changed count, stderr).
fn run_once(bed: &Bed, h: &Host, g: &Path, extra: &[&str]) -> (u64, String) {
    let mut args = vec!["--converged-timeout", "1"];
    args.extend_from_slice(extra);
    let mut r = bed.start(&[g], &args);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    let changed = summary(&r.seen, &bed.name(h))["changed"]
        .as_u64()
        .unwrap_or(0);
    (changed, err)
}

/// A run of a graph that must be refused: its exit code and stderr.
fn run_bad(bed: &Bed, g: &Path) -> (Option<i32>, String) {
    let mut r = bed.start(&[g], &["--converged-timeout", "1"]);
    let (st, err) = r.wait();
    (st.code(), err)
}

/// Asserts that the run of `text` (written to `file`) fails with `why`, naming the place in it
/// (`<graph file>:<line>:<col>`, 1-based) that `needle` marks with a `|`: `"minute: |61"` is
/// the `6` of the first `minute: 61`.
fn assert_refused_at(bed: &Bed, file: &str, text: &str, needle: &str, why: &str) {
    let g = bed.graph(file, text);
    let (before, after) = needle.split_once('|').expect("a | in the needle");
    let at = text
        .find(&format!("{before}{after}"))
        .expect("the needle is in the graph")
        + before.len();
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    let place = format!("{}:{line}:{col}", g.display());
    let (code, err) = run_bad(bed, &g);
    assert!(
        code.is_some_and(|c| c != 0),
        "a bad graph ran ({code:?}):\n{err}"
    );
    assert!(err.contains(&place), "no {place} in:\n{err}");
    assert!(err.contains(why), "no `{why}` in:\n{err}");
}

/// Waits for the host's child to report applying `id` since the last `mark` (the undo of a
/// drift came from the run).
fn wait_applied(bed: &Bed, h: &Host, r: &mut Running, id: &str) {
    let host = bed.name(h);
    r.wait_event(&format!("{host} applies {id}"), |v| {
        applied_line(v, &host, id)
    });
}

fn wait_converged(r: &mut Running) {
    r.wait_event("the child converged", |v| {
        v["event"] == "host_converged" && v["converged"] == true
    });
}

/// Blanks folded, as the kernel's answers are compared.
fn fold(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `mode owner group` of a file of the host.
fn stat(bed: &Bed, h: &Host, path: &str) -> String {
    bed.sh(h, &format!("stat -c '%a %U %G' {path}"))
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// sysctl

/// The keys (all per network namespace) and their files below /proc/sys.
const RP: &str = "net.ipv4.conf.all.rp_filter";
const SOMAXCONN: &str = "net.core.somaxconn";
const PORTS: &str = "net.ipv4.ip_local_port_range";
const FORWARD: &str = "net.ipv4.ip_forward";
const KEYS: [&str; 4] = [RP, SOMAXCONN, PORTS, FORWARD];

fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// The running value of a key inside the host (its own network namespace), blanks folded.
fn running(bed: &Bed, h: &Host, key: &str) -> String {
    fold(&bed.sh(h, &format!("cat {}", proc_path(key))))
}

/// The same key in the test machine's own network namespace (which must never change).
fn ours(key: &str) -> String {
    fold(&std::fs::read_to_string(proc_path(key)).unwrap())
}

fn conf(key: &str) -> String {
    format!("/etc/sysctl.d/99-mgmt-{key}.conf")
}

fn conf_text(key: &str, value: &str) -> String {
    format!("# Managed by mgmt: sysctl[{key}]\n{key} = {value}\n")
}

fn sysctl_graph(h: &Host, values: &[(&str, &str)], state: &str) -> String {
    let mut y = format!("{}  sysctl:\n", header(h));
    for (key, value) in values {
        y.push_str(&format!(
            "  - name: {key}\n    value: \"{value}\"\n    state: {state}\n"
        ));
    }
    y
}

fn wanted(somaxconn: &'static str) -> [(&'static str, &'static str); 4] {
    [
        (RP, "1"),
        (SOMAXCONN, somaxconn),
        // A space here, a tab in the kernel's answer: the same value.
        (PORTS, "1024 65000"),
        (FORWARD, "1"),
    ]
}

/// Changes `key` by hand inside the host while a live run watches, and waits for the run to
/// put `want` back.
fn drift_sysctl(bed: &Bed, h: &Host, r: &mut Running, key: &str, to: &str, want: &str, how: &str) {
    r.mark();
    bed.sh(h, &format!("echo '{to}' > {}", proc_path(key)));
    let t = Instant::now();
    assert!(
        wait_until(DEADLINE, || running(bed, h, key) == want),
        "{key} was not put back to {want} (reads {})",
        running(bed, h, key)
    );
    println!(
        "MEASURED `echo {to} > {}` by hand ({how}) undone {:.2?} after it returned",
        proc_path(key),
        t.elapsed()
    );
    wait_applied(bed, h, r, &format!("sysctl[{key}]"));
}

#[test]
fn sysctls_are_set_at_run_time_and_persistently_kept_and_removed_in_the_hosts_own_netns() {
    let bed = booted();
    let h = bed.h(1);
    let machine: Vec<String> = KEYS.iter().map(|k| ours(k)).collect();
    // The host's root can write its own network namespace's settings, as a real server's can.
    let before: Vec<String> = KEYS.iter().map(|k| running(&bed, h, k)).collect();
    println!("host's values before: {before:?}; machine's: {machine:?}");
    for (key, value) in wanted("1024") {
        assert_ne!(
            running(&bed, h, key),
            fold(value),
            "{key} already has the wanted value: the test would prove nothing"
        );
    }
    let g = bed.graph("sysctl.yaml", &sysctl_graph(h, &wanted("1024"), "exists"));

    // --noop: says what it would do, changes nothing.
    let (_, err) = run_once(&bed, h, &g, &["--noop"]);
    assert!(err.contains("would"), "--noop said nothing:\n{err}");
    let now: Vec<String> = KEYS.iter().map(|k| running(&bed, h, k)).collect();
    assert_eq!(now, before, "--noop changed a running value");
    for key in KEYS {
        assert!(!bed.tb.exists(h, conf(key)), "--noop wrote {}", conf(key));
    }

    // Create: the running value and the persistent file of each.
    let t = Instant::now();
    let (changed, err) = run_once(&bed, h, &g, &[]);
    println!(
        "MEASURED 4 sysctls set by a cold run: {:.2?} (incl. 1 s converged timeout)",
        t.elapsed()
    );
    assert_eq!(changed, 4, "{err}");
    for (key, value) in wanted("1024") {
        assert_eq!(running(&bed, h, key), value, "{key}");
        assert_eq!(bed.read(h, &conf(key)), conf_text(key, value), "{key}");
        assert_eq!(stat(&bed, h, &conf(key)), "644 root root", "{key}");
    }
    // The kernel answers with a tab; the file has the value as written.
    assert_eq!(
        bed.sh(h, &format!("cat {}", proc_path(PORTS))),
        "1024\t65000\n"
    );

    // A second run changes nothing (the tab is the same value as the space).
    let (changed, err) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 0, "a second run changed something:\n{err}");

    // A changed value: one resource, both the running value and the file.
    support::write(&g, &sysctl_graph(h, &wanted("2048"), "exists"));
    let (changed, err) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert_eq!(running(&bed, h, SOMAXCONN), "2048");
    assert_eq!(bed.read(h, &conf(SOMAXCONN)), conf_text(SOMAXCONN, "2048"));

    // A live run puts back what is changed by hand: heard through rtnetlink netconf
    // (rp_filter, ip_forward), by the 250 ms re-read (somaxconn, the port range), by inotify
    // (the persistent file).
    let mut r = bed.start(&[&g], &[]);
    wait_converged(&mut r);
    drift_sysctl(&bed, h, &mut r, RP, "2", "1", "rtnetlink RTM_NEWNETCONF");
    drift_sysctl(
        &bed,
        h,
        &mut r,
        FORWARD,
        "0",
        "1",
        "rtnetlink RTM_NEWNETCONF",
    );
    drift_sysctl(
        &bed,
        h,
        &mut r,
        SOMAXCONN,
        "100",
        "2048",
        "no signal: 250 ms re-read",
    );
    drift_sysctl(
        &bed,
        h,
        &mut r,
        PORTS,
        "32768 60999",
        "1024 65000",
        "no signal: 250 ms re-read",
    );
    r.mark();
    let file = conf(SOMAXCONN);
    bed.sh(h, &format!("echo '{SOMAXCONN} = 5' > {file}"));
    let t = Instant::now();
    assert!(
        wait_until(DEADLINE, || bed.read(h, &file)
            == conf_text(SOMAXCONN, "2048")),
        "the persistent file was not put back"
    );
    println!(
        "MEASURED an edit of {file} by hand (inotify) undone {:.2?} after it returned",
        t.elapsed()
    );
    wait_applied(&bed, h, &mut r, &format!("sysctl[{SOMAXCONN}]"));
    let (st, err) = r.interrupt();
    assert!(st.code().is_some(), "{err}");

    // A bad value is refused where it is written, before anything reaches the host: the good
    // resource beside it is not applied either.
    let bad = format!(
        "{}  sysctl:\n  - name: {SOMAXCONN}\n    value: 999\n  - name: {FORWARD}\n    value: \"0\\n1\"\n",
        header(h)
    );
    assert_refused_at(
        &bed,
        "bad.yaml",
        &bad,
        "value: |\"0\\n1\"",
        "must be one line",
    );
    let bad_key = format!(
        "{}  sysctl:\n  - name: net/../../etc/passwd\n    value: 1\n",
        header(h)
    );
    assert_refused_at(
        &bed,
        "badkey.yaml",
        &bad_key,
        "name: |net/../",
        "is not a sysctl key",
    );
    assert_eq!(
        running(&bed, h, SOMAXCONN),
        "2048",
        "a bad graph changed the host"
    );
    assert_eq!(
        running(&bed, h, FORWARD),
        "1",
        "a bad graph changed the host"
    );
    assert_eq!(bed.read(h, &conf(SOMAXCONN)), conf_text(SOMAXCONN, "2048"));

    // Absent: the files go, the running values stay (there is no default to go back to).
    let gone = bed.graph("gone.yaml", &sysctl_graph(h, &wanted("2048"), "absent"));
    run_once(&bed, h, &gone, &["--noop"]);
    assert!(bed.tb.exists(h, conf(RP)), "--noop removed a file");
    let (changed, err) = run_once(&bed, h, &gone, &[]);
    assert_eq!(changed, 4, "{err}");
    for (key, value) in wanted("2048") {
        assert!(!bed.tb.exists(h, conf(key)), "{} left", conf(key));
        assert_eq!(running(&bed, h, key), value, "{key}");
    }
    let (changed, err) = run_once(&bed, h, &gone, &[]);
    assert_eq!(changed, 0, "{err}");

    let after: Vec<String> = KEYS.iter().map(|k| ours(k)).collect();
    assert_eq!(after, machine, "the machine's own sysctls changed");
    bed.assert_clean(h);
}

// ---------------------------------------------------------------------------------------------
// hostname

/// The host's /etc/hosts before: a `127.0.1.1` line to rewrite among lines that must stay byte
/// for byte (a comment, extra blanks, a CRLF line, a last line without a newline).
const HOSTS: &str = "127.0.0.1\tlocalhost\n# kept as it is\n127.0.1.1\told-name\n10.0.0.5   db.internal  db   # the database\r\n::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes";

fn hosts_with(line: &str) -> String {
    HOSTS.replace("127.0.1.1\told-name", line)
}

fn hostname_graph(h: &Host, name: &str) -> String {
    format!(
        "{}  hostname:\n  - name: {name}\n    pretty_hostname: Web One\n",
        header(h)
    )
}

/// The machine's own (the test process's UTS namespace) host name.
fn our_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap()
}

fn host_hostname(bed: &Bed, h: &Host) -> String {
    bed.sh(h, "hostname").trim().to_string()
}

#[test]
fn the_hostname_is_set_in_the_hosts_own_uts_namespace_files_kept_and_drift_undone() {
    let ours = our_hostname();
    let bed = booted();
    let h = bed.h(1);
    bed.tb
        .write_file(h, "/etc/hosts", HOSTS.as_bytes(), 0o644)
        .unwrap();
    let name_before = host_hostname(&bed, h);
    let etc_before = bed.read(h, "/etc/hostname");
    println!("host's name before: {name_before:?}, /etc/hostname {etc_before:?}");
    assert_ne!(name_before, "web1.example.com");
    let g = bed.graph("hostname.yaml", &hostname_graph(h, "web1.example.com"));

    // --noop: says what it would do, changes nothing.
    let (_, err) = run_once(&bed, h, &g, &["--noop"]);
    assert!(err.contains("would"), "--noop said nothing:\n{err}");
    assert_eq!(host_hostname(&bed, h), name_before, "--noop set the name");
    assert_eq!(bed.read(h, "/etc/hostname"), etc_before);
    assert_eq!(bed.read(h, "/etc/hosts"), HOSTS);

    // Create: the kernel's name (in the host's UTS namespace), /etc/hostname, the 127.0.1.1
    // line of /etc/hosts (every other byte kept), PRETTY_HOSTNAME.
    let (changed, err) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert_eq!(host_hostname(&bed, h), "web1.example.com");
    assert_eq!(bed.read(h, "/etc/hostname"), "web1.example.com\n");
    assert_eq!(
        bed.read(h, "/etc/hosts"),
        hosts_with("127.0.1.1\tweb1.example.com\tweb1")
    );
    assert!(
        bed.read(h, "/etc/machine-info")
            .lines()
            .any(|l| l == "PRETTY_HOSTNAME=\"Web One\""),
        "{}",
        bed.read(h, "/etc/machine-info")
    );
    assert_eq!(our_hostname(), ours, "the machine's own name changed");

    // A second run changes nothing.
    let (changed, err) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 0, "a second run changed something:\n{err}");

    // A new name.
    support::write(&g, &hostname_graph(h, "db1"));
    let (changed, err) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert_eq!(host_hostname(&bed, h), "db1");
    assert_eq!(bed.read(h, "/etc/hostname"), "db1\n");
    assert_eq!(bed.read(h, "/etc/hosts"), hosts_with("127.0.1.1\tdb1"));

    // A live run puts back a name changed by hand (heard by POLLPRI of
    // /proc/sys/kernel/hostname) and an edit of /etc/hostname (inotify).
    let mut r = bed.start(&[&g], &[]);
    wait_converged(&mut r);
    r.mark();
    bed.sh(h, "hostname other");
    let t = Instant::now();
    assert!(
        wait_until(DEADLINE, || host_hostname(&bed, h) == "db1"),
        "the kernel's name was not put back"
    );
    println!(
        "MEASURED `hostname other` by hand (POLLPRI) undone {:.2?} after it returned",
        t.elapsed()
    );
    wait_applied(&bed, h, &mut r, "hostname[db1]");
    r.mark();
    bed.sh(h, "echo other > /etc/hostname");
    let t = Instant::now();
    assert!(
        wait_until(DEADLINE, || bed.read(h, "/etc/hostname") == "db1\n"),
        "/etc/hostname was not put back"
    );
    println!(
        "MEASURED `echo other > /etc/hostname` by hand (inotify) undone {:.2?} after it returned",
        t.elapsed()
    );
    wait_applied(&bed, h, &mut r, "hostname[db1]");
    let (st, err) = r.interrupt();
    assert!(st.code().is_some(), "{err}");
    assert_eq!(host_hostname(&bed, h), "db1");

    // Bad names are refused where they are written; a host name has no `state: absent` (a host
    // always has one), and saying so is refused the same way. The host is unchanged.
    let bad = format!(
        "{}  hostname:\n  - name: h\n    hostname: web_1\n",
        header(h)
    );
    assert_refused_at(
        &bed,
        "bad.yaml",
        &bad,
        "hostname: |web_1",
        "is not a valid host name",
    );
    let absent = format!(
        "{}  hostname:\n  - name: db1\n    state: absent\n",
        header(h)
    );
    assert_refused_at(
        &bed,
        "absent.yaml",
        &absent,
        "    |state: absent",
        "unknown field",
    );
    assert_eq!(
        host_hostname(&bed, h),
        "db1",
        "a bad graph changed the host"
    );
    assert_eq!(bed.read(h, "/etc/hostname"), "db1\n");
    assert_eq!(bed.read(h, "/etc/hosts"), hosts_with("127.0.1.1\tdb1"));

    assert_eq!(our_hostname(), ours, "the machine's own name changed");
    bed.assert_clean(h);
}

// ---------------------------------------------------------------------------------------------
// cron

const JOB: &str = "/etc/cron.d/backup";

fn cron_graph(h: &Host, minute: &str, state: &str) -> String {
    format!(
        "{}  cron:
  - name: backup
    state: {state}
    minute: {minute}
    hour: 2
    weekday: 1-5
    command: /usr/local/bin/backup --quiet
    env:
      MAILTO: ops@example.com
",
        header(h)
    )
}

fn job_text(minute: &str) -> String {
    format!(
        "# Managed by mgmt: cron[backup]\nMAILTO=ops@example.com\n{minute} 2 * * 1-5 root /usr/local/bin/backup --quiet\n"
    )
}

#[test]
fn a_cron_job_is_written_to_cron_d_rescheduled_kept_and_removed() {
    let bed = booted();
    let h = bed.h(1);
    // The booted image has no cron: without /etc/cron.d the job is a clear error and nothing
    // is written; then the directory is made by hand, as the cron package would.
    assert!(!bed.tb.exists(h, "/etc/cron.d"), "cron is in the image now");
    let g = bed.graph("cron.yaml", &cron_graph(h, "30", "exists"));
    let (code, err) = run_bad(&bed, &g);
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("/etc/cron.d does not exist: is cron installed?"),
        "{err}"
    );
    assert!(!bed.tb.exists(h, "/etc/cron.d"));
    bed.sh(h, "mkdir -m 0755 /etc/cron.d");

    // --noop: says what it would do, changes nothing.
    let (_, err) = run_once(&bed, h, &g, &["--noop"]);
    assert!(err.contains("would"), "--noop said nothing:\n{err}");
    assert!(!bed.tb.exists(h, JOB), "--noop wrote the job");

    // Create: the whole file, 0644 root (cron ignores files others can write).
    let (changed, err) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert_eq!(bed.read(h, JOB), job_text("30"));
    assert_eq!(stat(&bed, h, JOB), "644 root root");

    // A second run changes nothing.
    let (changed, err) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 0, "a second run changed something:\n{err}");

    // A new schedule.
    support::write(&g, &cron_graph(h, "45", "exists"));
    let (changed, err) = run_once(&bed, h, &g, &[]);
    assert_eq!(changed, 1, "{err}");
    assert_eq!(bed.read(h, JOB), job_text("45"));

    // A live run puts back an edit and a chmod by hand (inotify).
    let mut r = bed.start(&[&g], &[]);
    wait_converged(&mut r);
    r.mark();
    bed.sh(h, &format!("sed -i 's/^45 2/* */' {JOB}"));
    let t = Instant::now();
    assert!(
        wait_until(DEADLINE, || bed.read(h, JOB) == job_text("45")),
        "the job was not put back"
    );
    println!(
        "MEASURED `sed -i` of {JOB} by hand undone {:.2?} after it returned",
        t.elapsed()
    );
    wait_applied(&bed, h, &mut r, "cron[backup]");
    // A busy spell of a few ms is still reported: busy, then converged again.
    wait_converged(&mut r);
    r.mark();
    bed.sh(h, &format!("chmod 666 {JOB}"));
    let t = Instant::now();
    assert!(
        wait_until(DEADLINE, || stat(&bed, h, JOB) == "644 root root"),
        "the mode was not put back"
    );
    println!(
        "MEASURED `chmod 666 {JOB}` by hand undone {:.2?} after it returned",
        t.elapsed()
    );
    wait_applied(&bed, h, &mut r, "cron[backup]");
    wait_converged(&mut r);
    let (st, err) = r.interrupt();
    assert!(st.code().is_some(), "{err}");
    assert_eq!(bed.read(h, JOB), job_text("45"));

    // A bad minute is refused where it is written; the job on the host is unchanged.
    let bad = cron_graph(h, "61", "exists");
    assert_refused_at(
        &bed,
        "bad.yaml",
        &bad,
        "minute: |61",
        "61 is out of range for minute (0-59)",
    );
    assert_eq!(
        bed.read(h, JOB),
        job_text("45"),
        "a bad graph changed the job"
    );

    // Absent removes it.
    let gone = bed.graph("gone.yaml", &cron_graph(h, "45", "absent"));
    run_once(&bed, h, &gone, &["--noop"]);
    assert!(bed.tb.exists(h, JOB), "--noop removed the job");
    let (changed, err) = run_once(&bed, h, &gone, &[]);
    assert_eq!(changed, 1, "{err}");
    assert!(!bed.tb.exists(h, JOB), "the job is still there");
    let (changed, err) = run_once(&bed, h, &gone, &[]);
    assert_eq!(changed, 0, "{err}");
    bed.assert_clean(h);
}
