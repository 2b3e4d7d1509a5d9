//! `line` and `authorized_key` graphs load with the real kinds, bad values are reported at
//! their place (file:line:col), and a `file` resource of the edited file or its directory, or
//! the `user` of a key, comes first.

mod real;

use real::{edges, errors, ok, params};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEduq7xSTlLHoKBUptdFFe0tqfCd/zkag1H3cMuSd4Js alice@laptop";

#[test]
fn lines_blocks_and_keys_load() {
    let spec = ok(&format!(
        r#"
graph: g
resources:
  line:
  - name: no-root
    path: /etc/ssh/sshd_config
    line: PermitRootLogin no
    regexp: "^#?PermitRootLogin"
  - name: match-block
    path: /etc/ssh/sshd_config
    block: |
      Match User backup
        ForceCommand internal-sftp
    insertafter: "^# Match"
  - name: old
    path: /etc/motd
    line: welcome
    state: absent
  authorized_key:
  - name: alice
    user: alice
    key: {KEY}
    options: from="10.0.0.0/8",no-pty
"#
    ));
    assert_eq!(
        params(&spec),
        [
            r#"line[no-root] {"create":false,"line":"PermitRootLogin no","path":"/etc/ssh/sshd_config","regexp":"^#?PermitRootLogin","state":"exists"}"#,
            r##"line[match-block] {"block":"Match User backup\n  ForceCommand internal-sftp\n","create":false,"insertafter":"^# Match","marker":"# {mark} MANAGED BY MGMT match-block","path":"/etc/ssh/sshd_config","state":"exists"}"##,
            r#"line[old] {"create":false,"line":"welcome","path":"/etc/motd","state":"absent"}"#,
            &format!(
                r#"authorized_key[alice] {{"key":"{KEY}","options":"from=\"10.0.0.0/8\",no-pty","state":"exists","user":"alice"}}"#
            ),
        ]
    );
}

#[test]
fn bad_values_are_reported_where_they_are() {
    let text = "graph: g\nresources:\n  line:\n  - name: x\n    path: /f\n    line: a\n    regexp: \"(\"\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:7:13"), "{e}");
    assert!(
        e.contains("`regexp`: not a valid regular expression"),
        "{e}"
    );
    let text = "graph: g\nresources:\n  line:\n  - name: x\n    path: /f\n    line: a\n    state: present\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:7:12"), "{e}");
    assert!(
        e.contains("unknown state `present` (exists or absent)"),
        "{e}"
    );
    let text = "graph: g\nresources:\n  line:\n  - name: x\n    path: etc/f\n    line: a\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:5:11"), "{e}");
    assert!(e.contains("`etc/f` is not an absolute path"), "{e}");
    // A key whose data is of another type than it says.
    let bad = KEY.replace("ssh-ed25519 ", "ssh-rsa ");
    let text = format!(
        "graph: g\nresources:\n  authorized_key:\n  - name: k\n    user: alice\n    key: {bad}\n"
    );
    let e = errors(&text);
    assert!(e.contains("graph.yaml:6:10"), "{e}");
    assert!(
        e.contains("the key data is not a `ssh-rsa` key (its embedded type is `ssh-ed25519`)"),
        "{e}"
    );
    let text = format!(
        "graph: g\nresources:\n  authorized_key:\n  - name: k\n    user: alice\n    key: {KEY}\n    options: from=\"x\n"
    );
    let e = errors(&text);
    assert!(e.contains("graph.yaml:7:14"), "{e}");
    assert!(e.contains("balanced quotes"), "{e}");
}

#[test]
fn the_file_and_the_user_come_first() {
    let spec = ok(&format!(
        r#"
graph: g
resources:
  file:
  - name: ssh-dir
    path: /etc/ssh/
  - name: keysdir
    path: /etc/ssh/keys/
  line:
  - name: no-root
    path: /etc/ssh/sshd_config
    line: PermitRootLogin no
  user:
  - name: alice
  authorized_key:
  - name: alice
    user: alice
    key: {KEY}
  - name: alice-etc
    user: alice
    key: {KEY}
    path: /etc/ssh/keys/alice
"#
    ));
    assert_eq!(
        edges(&spec),
        [
            "file[ssh-dir] -> file[keysdir]",
            "file[ssh-dir] -> line[no-root]",
            "user[alice] -> authorized_key[alice]",
            "user[alice] -> authorized_key[alice-etc]",
            "file[keysdir] -> authorized_key[alice-etc]",
            "file[ssh-dir] -> authorized_key[alice-etc]",
        ]
    );
}
