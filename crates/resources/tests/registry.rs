//! The registry and parameter handling: kinds, field lists, errors pointing at fields, the
//! forms mgmt 0.0.x graphs use, and the params round trip exports rely on.

mod common;

use resource::{Meta, Uid, same_resource};
use serde_json::{Value, json};

fn build_err(kind: &str, params: Value) -> resource::BuildError {
    resources::registry()
        .build(kind, "x", params, Meta::default())
        .expect_err("build should fail")
}

fn params(kind: &str, name: &str, p: Value) -> Value {
    common::build(kind, name, p).params()
}

#[test]
fn knows_its_kinds_and_names_the_unimplemented_ones() {
    let registry = resources::registry();
    assert_eq!(
        registry.kinds().collect::<Vec<_>>(),
        [
            "authorized_key",
            "cron",
            "exec",
            "file",
            "group",
            "hostname",
            "line",
            "mount",
            "msg",
            "noop",
            "pkg",
            "svc",
            "sysctl",
            "timer",
            "user"
        ]
    );
    for kind in [
        "virt",
        "kv",
        "augeas",
        "nspawn",
        "password",
        "print",
        "aws:ec2",
        "docker:container",
    ] {
        assert!(registry.is_unimplemented(kind), "{kind}");
        assert!(registry.get(kind).is_none(), "{kind}");
    }
    assert!(!registry.is_unimplemented("file"));
    assert!(!registry.is_unimplemented("nosuchkind"));
    let e = registry
        .build("nosuchkind", "x", json!({}), Meta::default())
        .unwrap_err();
    assert!(e.message.contains("nosuchkind"), "{e}");
}

#[test]
fn field_lists() {
    let registry = resources::registry();
    let fields = |kind| registry.get(kind).unwrap().fields.to_vec();
    assert_eq!(
        fields("file"),
        [
            "path",
            "dirname",
            "basename",
            "content",
            "source",
            "fragments",
            "state",
            "mode",
            "owner",
            "group",
            "recurse",
            "force"
        ]
    );
    assert_eq!(
        fields("exec"),
        [
            "cmd",
            "args",
            "shell",
            "cwd",
            "env",
            "timeout",
            "ifcmd",
            "ifshell",
            "ifcwd",
            "watchcmd",
            "watchshell",
            "watchcwd",
            "state",
            "pollint",
            "user",
            "group",
            "creates"
        ]
    );
    assert_eq!(fields("noop"), ["comment"]);
    assert_eq!(
        fields("msg"),
        ["body", "priority", "fields", "journal", "syslog"]
    );
    assert_eq!(fields("timer"), ["interval"]);
    assert_eq!(
        fields("pkg"),
        [
            "state",
            "allowdowngrade",
            "allowuntrusted",
            "allownonfree",
            "allowunsupported"
        ]
    );
    assert_eq!(fields("svc"), ["state", "startup", "session", "refresh"]);
}

#[test]
fn errors_point_at_the_field() {
    let cases = [
        ("file", json!({"path": "/tmp/x", "colour": "red"}), "colour"),
        ("file", json!({"path": "relative/x"}), "path"),
        ("file", json!({"path": "/tmp/x", "mode": "0999"}), "mode"),
        (
            "file",
            json!({"path": "/tmp/x", "mode": "rw-r--r--"}),
            "mode",
        ),
        ("file", json!({"path": "/tmp/x", "mode": 12345}), "mode"),
        (
            "file",
            json!({"path": "/tmp/x", "state": "present"}),
            "state",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "content": "a", "source": "/tmp/y"}),
            "source",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "state": "absent", "source": "/tmp/y"}),
            "state",
        ),
        ("file", json!({"path": "/", "state": "absent"}), "path"),
        (
            "file",
            json!({"path": "/tmp/x", "recurse": "yes"}),
            "recurse",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "content": ["a"]}),
            "content",
        ),
        ("file", json!({"dirname": "/tmp"}), "dirname"),
        (
            "file",
            json!({"path": "/tmp/x", "fragments": ["/a"], "content": "c"}),
            "fragments",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "fragments": ["/a"], "source": "/b"}),
            "fragments",
        ),
        (
            "file",
            json!({"path": "/tmp/x/", "fragments": ["/a"]}),
            "fragments",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "fragments": ["/a"], "state": "absent"}),
            "state",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "fragments": []}),
            "fragments",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "fragments": ["rel/a"]}),
            "fragments",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "fragments": "/a"}),
            "fragments",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "fragments": [7]}),
            "fragments",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "fragments": ["/tmp/"]}),
            "fragments",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "fragments": ["/tmp/y/../x"]}),
            "fragments",
        ),
        (
            "file",
            json!({"path": "/tmp/x", "basename": "a/b"}),
            "basename",
        ),
        ("exec", json!({}), "cmd"),
        ("exec", json!({"cmd": ""}), "cmd"),
        ("exec", json!({"cmd": "echo 'unterminated"}), "cmd"),
        ("exec", json!({"cmd": "x", "timeout": -1}), "timeout"),
        ("exec", json!({"cmd": "x", "timeout": "soon"}), "timeout"),
        ("exec", json!({"cmd": "x", "state": "absent"}), "state"),
        (
            "exec",
            json!({"cmd": "x", "args": ["a"], "shell": "/bin/sh"}),
            "args",
        ),
        (
            "exec",
            json!({"cmd": "x", "creates": "relative"}),
            "creates",
        ),
        ("exec", json!({"cmd": "x", "env": {"A=B": "c"}}), "env"),
        (
            "exec",
            json!({"cmd": "x", "watchcmd": "\"open"}),
            "watchcmd",
        ),
        ("exec", json!({"cmd": "x", "ifcmd": "'open"}), "ifcmd"),
        ("exec", json!({"cmd": "x", "args": "notalist"}), "args"),
        ("timer", json!({}), "interval"),
        ("timer", json!({"interval": 0}), "interval"),
        ("msg", json!({"priority": "Loud"}), "priority"),
        ("msg", json!({"fields": ["a"]}), "fields"),
        ("noop", json!({"comment": ["a"]}), "comment"),
        ("pkg", json!({"state": "latest"}), "state"),
        ("pkg", json!({"allowdowngrade": "often"}), "allowdowngrade"),
        ("svc", json!({"state": "started"}), "state"),
        ("svc", json!({"startup": "on"}), "startup"),
        ("svc", json!({"refresh": "bounce"}), "refresh"),
        ("svc", json!({"session": "perhaps"}), "session"),
    ];
    for (kind, p, field) in cases {
        let e = build_err(kind, p.clone());
        assert_eq!(e.field.as_deref(), Some(field), "{kind} {p}: {e}");
        assert!(
            e.message.contains(field),
            "{kind} {p}: message should name the field: {e}"
        );
    }
    let e = build_err("file", json!(["not", "a", "map"]));
    assert_eq!(e.field, None);
}

#[test]
fn mgmt_compat_forms() {
    // Empty strings are unset; timeout 0 is no timeout; integers may be strings; pollint and
    // state: present are accepted.
    assert_eq!(
        params(
            "exec",
            "e",
            json!({"cmd": "echo hi", "shell": "", "watchcmd": "", "ifcmd": "", "timeout": 0, "state": "present", "pollint": 5})
        ),
        json!({"cmd": "echo hi"})
    );
    assert_eq!(
        params(
            "exec",
            "e",
            json!({"cmd": "x", "timeout": "10", "state": ""})
        )["timeout"],
        json!(10)
    );
    assert_eq!(
        params("timer", "t", json!({"interval": "3"})),
        json!({"interval": 3})
    );
    for mode in [json!("0644"), json!("644"), json!(644), json!("0o644")] {
        assert_eq!(
            params("file", "/tmp/x", json!({"mode": mode}))["mode"],
            json!("0644"),
            "{mode}"
        );
    }
    assert_eq!(
        params("file", "/tmp/x", json!({"mode": "4755"}))["mode"],
        json!("4755")
    );
    assert_eq!(
        params("file", "/tmp/x", json!({"mode": ""})).get("mode"),
        None
    );
    assert_eq!(
        params("file", "/tmp/x", json!({"state": ""}))["state"],
        json!("exists")
    );
    assert_eq!(
        params("file", "/tmp/x", json!({"recurse": "true", "force": ""}))["recurse"],
        json!(true)
    );
    // Owner and group may be numeric.
    let p = params("file", "/tmp/x", json!({"owner": 0, "group": "65534"}));
    assert_eq!((&p["owner"], &p["group"]), (&json!("0"), &json!("65534")));
    // Scalars are text in string fields, as mgmt's YAML decoder has it.
    assert_eq!(
        params("file", "/tmp/x", json!({"content": 42}))["content"],
        json!("42")
    );
    assert_eq!(
        params("exec", "e", json!({"cmd": "x", "cwd": 7}))["cwd"],
        json!("7")
    );
    // content "" is an empty file, not unset.
    assert_eq!(
        params("file", "/tmp/x", json!({"content": ""}))["content"],
        json!("")
    );
    assert_eq!(params("file", "/tmp/x", json!({})).get("content"), None);
}

#[test]
fn file_paths() {
    let path = |name: &str, p: Value| {
        params("file", name, p)["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(path("/tmp/from-name", json!({})), "/tmp/from-name");
    assert_eq!(path("n", json!({"path": "/tmp//a/./b/../c"})), "/tmp/a/c");
    assert_eq!(
        path("n", json!({"path": "/tmp/dir/", "content": "ignored"})),
        "/tmp/dir/"
    );
    assert_eq!(
        path("n", json!({"path": "/tmp/old/f", "dirname": "/srv/"})),
        "/srv/f"
    );
    assert_eq!(
        path("n", json!({"path": "/tmp/old/f", "basename": "g"})),
        "/tmp/old/g"
    );
    assert_eq!(
        path("n", json!({"dirname": "/srv/", "basename": "sub/"})),
        "/srv/sub/"
    );
    assert_eq!(path("/tmp/d/", json!({"dirname": "/srv/"})), "/srv/d/");
}

#[test]
fn file_identity_and_auto_edges() {
    let f = common::build("file", "f", json!({"path": "/etc/app/conf.d/"}));
    assert_eq!(
        f.uids(),
        [Uid {
            kind: "file",
            key: "/etc/app/conf.d".into()
        }]
    );
    let keys: Vec<String> = f.auto_edges().into_iter().map(|u| u.key).collect();
    assert_eq!(keys, ["/etc/app", "/etc", "/"]);
    assert!(
        common::build("exec", "e", json!({"cmd": "true"}))
            .uids()
            .is_empty()
    );
}

#[test]
fn params_round_trip_for_every_kind() {
    let cases = [
        ("file", "/tmp/a", json!({})),
        (
            "file",
            "f",
            json!({"path": "/tmp/a", "content": "hi\n", "state": "exists", "mode": 640, "owner": "root", "group": 0, "recurse": false, "force": true}),
        ),
        (
            "file",
            "d",
            json!({"path": "/tmp/d/", "source": "/srv/tree", "recurse": true, "force": true}),
        ),
        (
            "file",
            "gone",
            json!({"path": "/tmp/gone/", "state": "absent", "recurse": true, "force": true}),
        ),
        ("file", "db", json!({"dirname": "/tmp/", "basename": "b"})),
        (
            "file",
            "frag",
            json!({"path": "/tmp/all", "fragments": ["/etc/b", "/etc/a.d/", "/etc/b"], "mode": "0644"}),
        ),
        ("exec", "e", json!({"cmd": "echo hi"})),
        (
            "exec",
            "everything",
            json!({
                "cmd": "run this", "shell": "/bin/bash", "cwd": "/tmp", "env": {"A": "1", "B": "two"}, "timeout": 30,
                "ifcmd": "test -e /x", "ifshell": "/bin/sh", "ifcwd": "/", "watchcmd": "tail -F /var/log/x",
                "watchshell": "/bin/sh", "watchcwd": "/var", "state": "present", "pollint": 0,
                "user": "nobody", "group": 65534, "creates": "/tmp/done",
            }),
        ),
        (
            "exec",
            "args",
            json!({"cmd": "/bin/echo", "args": ["a b", "c"]}),
        ),
        ("noop", "n", json!({})),
        ("noop", "n", json!({"comment": "hello"})),
        ("msg", "m", json!({})),
        (
            "msg",
            "m",
            json!({"body": "b", "priority": "warning", "fields": {"k": "v"}, "journal": true, "syslog": true}),
        ),
        ("timer", "t", json!({"interval": 7})),
        ("pkg", "cowsay", json!({"state": "installed"})),
        (
            "pkg",
            "libc6:i386",
            json!({"state": "2.36-9+deb12u4", "allowdowngrade": true}),
        ),
        (
            "pkg",
            "sl",
            json!({"state": "newest", "allowuntrusted": true, "allownonfree": true, "allowunsupported": true}),
        ),
        ("svc", "purpleidea", json!({})),
        (
            "svc",
            "sshd.service",
            json!({"state": "running", "startup": "enabled"}),
        ),
        (
            "svc",
            "getty@tty1",
            json!({"state": "stopped", "startup": "disabled", "session": true, "refresh": "reload"}),
        ),
        ("svc", "x", json!({"state": "", "refresh": "none"})),
    ];
    let registry = resources::registry();
    for (kind, name, p) in cases {
        let first = registry
            .build(kind, name, p.clone(), Meta::default())
            .unwrap();
        let canonical = first.params();
        // Exports travel as JSON text.
        let text = serde_json::to_string(&canonical).unwrap();
        let again = registry
            .build(
                kind,
                name,
                serde_json::from_str(&text).unwrap(),
                Meta::default(),
            )
            .unwrap();
        assert!(
            same_resource(first.as_ref(), again.as_ref()),
            "{kind}: {p} -> {canonical}"
        );
        assert_eq!(
            again.params(),
            canonical,
            "{kind}: canonical params are a fixed point"
        );
        again.validate().unwrap();
        // Every canonical field is one the kind accepts.
        let fields = registry.get(kind).unwrap().fields;
        for key in canonical.as_object().unwrap().keys() {
            assert!(fields.contains(&key.as_str()), "{kind}: {key}");
        }
    }
}

#[test]
fn canonical_params_snapshot() {
    let p = params(
        "exec",
        "e",
        json!({"cmd": "echo hi", "shell": "/bin/sh", "timeout": "5", "env": {"Z": 1}, "pollint": 3, "ifcmd": ""}),
    );
    assert_eq!(
        p,
        json!({"cmd": "echo hi", "shell": "/bin/sh", "timeout": 5, "env": {"Z": "1"}})
    );
    let p = params(
        "file",
        "f",
        json!({"path": "/tmp/x/", "content": "c", "mode": "755"}),
    );
    assert_eq!(
        p,
        json!({"path": "/tmp/x/", "content": "c", "state": "exists", "mode": "0755", "recurse": false, "force": false})
    );
    let p = params("msg", "m", json!({"body": "b", "priority": "ERR"}));
    assert_eq!(
        p,
        json!({"body": "b", "priority": "Err", "journal": false, "syslog": false})
    );
}
