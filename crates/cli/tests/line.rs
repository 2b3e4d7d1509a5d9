//! `line` and `authorized_key` on a booted Debian host, applied by the real `mgmt run
//! --remote` as the test bed's sudo user: create, change, a second run that changes nothing,
//! drift by hand undone by a live run, `--noop`, `state: absent`, and a key that really logs
//! in over ssh.
//!
//! What is measured is printed as `MEASURED` lines (run with `--no-capture`); the assertions
//! are about what happened, never about how fast.

mod support;

use std::process::Command;
use std::time::Instant;

use support::bed::{Bed, exit_reason, summary};
use testbed::{EXTRA_USER, Host, TestbedConfig};

const CONF: &str = "/etc/mgmt-line/sshd_config";
/// A CRLF line and no final newline: both must survive every edit.
const ORIGINAL: &str = "# test\r\nPort 22\n#PermitRootLogin yes\nUsePAM yes";

fn graph(
    remote: &str,
    root_login: &str,
    block: &str,
    options: &str,
    pubkey: &str,
    state: &str,
) -> String {
    format!(
        r#"graph: line
remote: {remote}
sudo: true
resources:
  line:
  - name: root-login
    path: {CONF}
    line: PermitRootLogin {root_login}
    regexp: "^#?PermitRootLogin"
    state: {state}
  - name: match
    path: {CONF}
    block: |
      Match User backup
        {block}
    state: {state}
  authorized_key:
  - name: extra
    user: {EXTRA_USER}
    key: {pubkey}
    options: '{options}'
    state: {state}
"#
    )
}

fn inode(bed: &Bed, h: &Host, path: &str) -> String {
    bed.sh(h, &format!("stat -c '%i %Y %a %U:%G' {path}"))
}

/// `ssh` with only `key`, as EXTRA_USER; whether `true` ran.
fn logs_in(bed: &Bed, h: &Host, key: &std::path::Path) -> bool {
    Command::new("ssh")
        .args(["-i", key.to_str().unwrap(), "-F", "/dev/null"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            bed.tb.known_hosts().display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-p", &h.port.to_string()])
        .arg(format!("{EXTRA_USER}@{}", h.addr))
        .arg("true")
        .env_remove("SSH_AUTH_SOCK")
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until `path` on `h` holds `content`, looking again each time the host's child reports
/// applying any resource (several resources edit one file, in any order).
fn wait_content(
    bed: &Bed,
    r: &mut support::Running,
    h: &Host,
    host: &str,
    path: &str,
    content: &str,
) {
    loop {
        if bed.tb.read_file(h, path).ok().as_deref() == Some(content.as_bytes()) {
            return;
        }
        r.mark();
        r.wait_event(&format!("{host} applies something to {path}"), |v| {
            v["event"] == "host_output"
                && v["host"] == host
                && v["line"].as_str().is_some_and(|l| l.ends_with(": applied"))
        });
    }
}

fn run_once(bed: &Bed, g: &std::path::Path, extra: &[&str]) -> (Vec<serde_json::Value>, String) {
    let mut args = vec!["--converged-timeout", "1"];
    args.extend_from_slice(extra);
    let mut r = bed.start(&[g], &args);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "converged");
    (r.seen.clone(), err)
}

#[test]
fn lines_blocks_and_a_key_are_kept_in_place_and_the_key_logs_in() {
    let bed = Bed::up(TestbedConfig {
        booted: true,
        ..TestbedConfig::hosts(1)
    });
    let h = bed.h(1);
    let host = bed.name(h);
    let remote = format!("ssh://{EXTRA_USER}@{}:{}", h.addr, h.port);
    bed.sh(
        h,
        &format!(
            "mkdir -p /etc/mgmt-line && printf '{}' > {CONF} && chmod 640 {CONF}",
            ORIGINAL.replace('\r', "\\r").replace('\n', "\\n")
        ),
    );
    assert_eq!(bed.read(h, CONF), ORIGINAL);
    let home = bed
        .sh(h, &format!("getent passwd {EXTRA_USER} | cut -d: -f6"))
        .trim()
        .to_string();
    let keys = format!("{home}/.ssh/authorized_keys");
    // The test bed's own key is there: it must stay.
    let before_keys = bed
        .tb
        .read_file(h, &keys)
        .map(|b| String::from_utf8(b).unwrap())
        .unwrap_or_default();

    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "line-test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let pubkey = std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        !logs_in(&bed, h, &key),
        "the new key logs in before it is authorized"
    );

    let v1 = bed.graph(
        "v1.yaml",
        &graph(
            &remote,
            "no",
            "X11Forwarding no",
            "no-X11-forwarding",
            &pubkey,
            "exists",
        ),
    );

    // --noop: nothing changes.
    let (_, err) = run_once(&bed, &v1, &["--noop"]);
    assert!(err.contains("would"), "{err}");
    assert_eq!(bed.read(h, CONF), ORIGINAL);
    assert_eq!(
        bed.tb
            .read_file(h, &keys)
            .map(|b| String::from_utf8(b).unwrap())
            .unwrap_or_default(),
        before_keys
    );

    // Create.
    let t = Instant::now();
    let (seen, err) = run_once(&bed, &v1, &[]);
    println!(
        "MEASURED first run (2 lines, 1 key): {:.2?} (incl. 1 s converged timeout)",
        t.elapsed()
    );
    assert!(
        summary(&seen, &host)["changed"].as_u64().unwrap_or(0) >= 3,
        "{err}"
    );
    let block1 = "# BEGIN MANAGED BY MGMT match\nMatch User backup\n  X11Forwarding no\n# END MANAGED BY MGMT match\n";
    let want1 = format!("# test\r\nPort 22\nPermitRootLogin no\nUsePAM yes\n{block1}");
    assert_eq!(bed.read(h, CONF), want1);
    assert!(
        inode(&bed, h, CONF).ends_with(" 640 root:root\n"),
        "mode and owner kept"
    );
    let keyline1 = format!("no-X11-forwarding {pubkey}");
    let k = bed.read(h, &keys);
    assert!(
        k.starts_with(&before_keys) && k.ends_with(&format!("{keyline1}\n")),
        "{k}"
    );
    assert_eq!(
        bed.sh(h, &format!("stat -c '%a %U' {keys}")).trim(),
        format!("600 {EXTRA_USER}")
    );
    assert_eq!(bed.sh(h, &format!("stat -c %a {home}/.ssh")).trim(), "700");
    assert!(logs_in(&bed, h, &key), "the authorized key does not log in");

    // A second run changes nothing: same inodes and mtimes.
    let (conf_stat, keys_stat) = (inode(&bed, h, CONF), inode(&bed, h, &keys));
    let (seen, err) = run_once(&bed, &v1, &[]);
    assert_eq!(
        summary(&seen, &host)["changed"].as_u64().unwrap_or(0),
        0,
        "{err}"
    );
    assert_eq!(
        (inode(&bed, h, CONF), inode(&bed, h, &keys)),
        (conf_stat, keys_stat)
    );

    // Change, live: the changed values replace their lines.
    let v2 = bed.graph(
        "v2.yaml",
        &graph(
            &remote,
            "prohibit-password",
            "X11Forwarding yes",
            "no-X11-forwarding,no-agent-forwarding",
            &pubkey,
            "exists",
        ),
    );
    let mut r = bed.start(&[&v2], &[]);
    let block2 = block1.replace("X11Forwarding no", "X11Forwarding yes");
    let want2 =
        format!("# test\r\nPort 22\nPermitRootLogin prohibit-password\nUsePAM yes\n{block2}");
    wait_content(&bed, &mut r, h, &host, CONF, &want2);
    let keys2 = format!("{before_keys}no-X11-forwarding,no-agent-forwarding {pubkey}\n");
    wait_content(&bed, &mut r, h, &host, &keys, &keys2);

    // Drift by hand, undone by the live run.
    let t = Instant::now();
    bed.sh(
        h,
        &format!("sed -i 's/^PermitRootLogin .*/PermitRootLogin yes/' {CONF}"),
    );
    wait_content(&bed, &mut r, h, &host, CONF, &want2);
    println!(
        "MEASURED `sed -i` of the managed line undone {:.2?} after the edit",
        t.elapsed()
    );
    let t = Instant::now();
    bed.sh(h, &format!("sed -i /line-test/d {keys}; chmod 666 {keys}"));
    wait_content(&bed, &mut r, h, &host, &keys, &keys2);
    println!(
        "MEASURED the key removed by hand put back {:.2?} after the edit",
        t.elapsed()
    );
    support::bed::wait_until(support::DEADLINE, || {
        bed.sh(h, &format!("stat -c %a {keys}")).trim() == "600"
    });
    assert_eq!(
        bed.sh(h, &format!("stat -c %a {keys}")).trim(),
        "600",
        "mode fixed"
    );
    let (st, err) = r.interrupt();
    assert!(st.code().is_some(), "{err}");

    // Absent: just those lines and that block go.
    let v3 = bed.graph(
        "v3.yaml",
        &graph(
            &remote,
            "no",
            "X11Forwarding yes",
            "no-pty",
            &pubkey,
            "absent",
        ),
    );
    run_once(&bed, &v3, &[]);
    assert_eq!(bed.read(h, CONF), "# test\r\nPort 22\nUsePAM yes\n");
    assert_eq!(bed.read(h, &keys), before_keys);
    assert!(!logs_in(&bed, h, &key), "a removed key still logs in");
    bed.assert_clean(h);
}

/// A fresh ed25519 key pair in `dir`: (private key path, public key line).
fn keypair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

/// Each host exports its own key and collects every host's (mgmt's exported resources, through
/// the initiator's store): afterwards each key logs in to every host. An export that names the
/// file its key goes to (`path`) is refused by the collectors (the rule does not allow it) and
/// writes nothing.
#[test]
fn exported_keys_are_collected_by_every_host_and_log_in_and_a_chosen_path_is_refused() {
    let bed = Bed::up(TestbedConfig {
        booted: true,
        ..TestbedConfig::hosts(2)
    });
    let (h1, h2) = (bed.h(1), bed.h(2));
    let tmp = tempfile::tempdir().unwrap();
    let (k1, p1) = keypair(tmp.path(), "fleet-h1");
    let (k2, p2) = keypair(tmp.path(), "fleet-h2");
    for (h, k) in [(h1, &k1), (h1, &k2), (h2, &k1), (h2, &k2)] {
        assert!(!logs_in(&bed, h, k), "a key logs in before it is collected");
    }
    let graph = |h: &Host, n: u32, public: &str, extra: &str| {
        format!(
            "graph: keys{n}\nremote: ssh://{EXTRA_USER}@{}:{}\nsudo: true\nresources:\n  authorized_key:\n  - name: \"@@fleet-h{n}\"\n    user: {EXTRA_USER}\n    key: \"{public}\"\n{extra}collect:\n- kind: authorized_key\n  pattern: fleet-\n",
            h.addr, h.port
        )
    };
    let g1 = bed.graph("h1.yaml", &graph(h1, 1, &p1, ""));
    let hostile = format!(
        "  - name: \"@@fleet-h2-elsewhere\"\n    user: {EXTRA_USER}\n    key: \"{p2}\"\n    path: /etc/mgmt-key-target\n"
    );
    let g2 = bed.graph("h2.yaml", &graph(h2, 2, &p2, &hostile));
    let mut r = bed.start(&[&g1, &g2], &["--converged-timeout", "2"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "converged", "{err}");
    for h in [h1, h2] {
        assert!(
            logs_in(&bed, h, &k1),
            "h1's key does not log in to {}",
            h.name
        );
        assert!(
            logs_in(&bed, h, &k2),
            "h2's key does not log in to {}",
            h.name
        );
        assert!(
            !bed.tb.exists(h, "/etc/mgmt-key-target"),
            "an export chose a file on {}",
            h.name
        );
    }
    assert!(
        err.contains("not collecting authorized_key[fleet-h2-elsewhere]")
            && err.contains("allow: [path]"),
        "the refusal was not reported:\n{err}"
    );
    for h in [h1, h2] {
        bed.assert_clean(h);
    }
}
