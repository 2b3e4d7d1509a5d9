use serde_json::json;

use super::super::db::{parse_group, parse_passwd, parse_shadow};
use super::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
alice:x:1000:1000:Alice:/home/alice:/bin/bash\n\
bob:x:1001:1001::/home/bob:/bin/sh\n";
const GROUP: &str = "root:x:0:\nalice:x:1000:\nbob:x:1001:\n\
staff:x:50:alice\naudio:x:29:bob\nweb:x:1500:\n";
const HASH: &str = "$y$j9T$abcdefghijklmnop$0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg";

fn db() -> Db {
    Db {
        passwd: parse_passwd("passwd".as_ref(), PASSWD).unwrap(),
        group: parse_group("group".as_ref(), GROUP).unwrap(),
        shadow: Some(
            parse_shadow(
                "shadow".as_ref(),
                &format!("alice:{HASH}:19000:0:99999:7:::\n"),
            )
            .unwrap(),
        ),
    }
}

fn spec(name: &str, params: Value) -> UserSpec {
    UserSpec::from_params(name, params).unwrap()
}

fn argv(name: &str, params: Value) -> (String, bool) {
    let p = plan(&spec(name, params), &db()).unwrap();
    (p.argv.map(|a| a.join(" ")).unwrap_or_default(), p.password)
}

#[test]
fn params_round_trip_through_build() {
    for p in [
        json!({"state": "exists", "uid": 1200, "gid": 1500, "groups": ["b", "a"],
               "homedir": "/home/x/", "shell": "/bin/bash", "comment": "X Y,,,",
               "password": HASH, "system": true, "allowduplicateuid": true}),
        json!({"group": "web", "groups": ["staff"], "append": true}),
        json!({"groups": []}),
        json!({"state": "absent", "remove": true}),
        json!({"home": "/srv/x", "group": "1500"}),
        json!(null),
    ] {
        let built = spec("x", p.clone());
        let again = spec("x", Value::Object(built.to_params()));
        assert_eq!(built, again, "{p}");
    }
    assert_eq!(
        Value::Object(spec("x", json!({"home": "/srv//x/", "group": "1500"})).to_params()),
        json!({"state": "exists", "gid": 1500, "homedir": "/srv/x"})
    );
}

#[test]
fn the_hash_is_never_in_debug_output() {
    let s = spec("x", json!({"password": HASH}));
    assert!(!format!("{s:?}").contains(HASH));
    assert!(format!("{s:?}").contains("<hash>"));
}

#[test]
fn bad_values_name_their_field() {
    for (params, field, why) in [
        (
            json!({"state": "present"}),
            "state",
            "expected `exists` or `absent`",
        ),
        (
            json!({"gid": 1, "group": "x"}),
            "group",
            "either `gid` or `group`",
        ),
        (json!({"group": "-x"}), "group", "must not start with `-`"),
        (
            json!({"groups": ["ok", "Bad"]}),
            "groups",
            "not a valid group name",
        ),
        (
            json!({"groups": "a,b"}),
            "groups",
            "expected a list of names",
        ),
        (json!({"append": true}), "append", "`append` needs `groups`"),
        (
            json!({"homedir": "home/x"}),
            "homedir",
            "not an absolute path",
        ),
        (json!({"home": "/a:b"}), "home", "`:` is not allowed"),
        (json!({"home": "/a", "homedir": "/a"}), "home", "give one"),
        (
            json!({"shell": "/bin/sh\n-x"}),
            "shell",
            "`\\n` is not allowed",
        ),
        (json!({"comment": "a:b"}), "comment", "`:` is not allowed"),
        (json!({"uid": 4294967296u64}), "uid", "is not a valid id"),
        (
            json!({"group": "web", "groups": ["web"]}),
            "groups",
            "must not be listed",
        ),
        (
            json!({"password": "hunter2"}),
            "password",
            "already-crypted hash",
        ),
        (
            json!({"password": "$6$a:b"}),
            "password",
            "already-crypted hash",
        ),
        (json!({"bogus": 1}), "bogus", "unknown field"),
    ] {
        let e = UserSpec::from_params("x", params.clone()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(field), "{params}");
        assert!(e.message.contains(why), "{params}: {}", e.message);
        assert!(
            !e.message.contains("hunter2"),
            "the value is shown: {}",
            e.message
        );
    }
    for name in ["-oroot", "Root", "a:b", "x\n"] {
        let e = UserSpec::from_params(name, Value::Null).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"), "{name:?}");
    }
    for ok in ["!", "*", "!$6$salt$hash", "abcdefghijklm", HASH] {
        Hash::parse(ok).unwrap();
    }
}

#[test]
fn a_new_user_is_one_useradd_with_home_from_skel_and_the_hash_apart() {
    let (cmd, password) = argv(
        "carol",
        json!({"uid": 1200, "group": "web", "groups": ["staff", "audio"],
               "homedir": "/home/carol/", "shell": "/bin/bash", "comment": "Carol",
               "password": HASH}),
    );
    assert_eq!(
        cmd,
        "useradd --uid 1200 --gid web --groups audio,staff --home-dir /home/carol \
         --shell /bin/bash --comment Carol --create-home -- carol"
    );
    assert!(password);
    assert!(!cmd.contains(HASH));
    assert_eq!(argv("carol", json!({})).0, "useradd --create-home -- carol");
    assert_eq!(
        argv("svc", json!({"system": true})).0,
        "useradd --system -- svc"
    );
}

#[test]
fn an_existing_user_gets_one_usermod_with_only_what_differs() {
    // In sync: nothing.
    let p = plan(
        &spec(
            "alice",
            json!({"uid": 1000, "gid": 1000, "groups": ["staff"],
                "homedir": "/home/alice/", "shell": "/bin/bash", "comment": "Alice",
                "password": HASH}),
        ),
        &db(),
    )
    .unwrap();
    assert!(p.is_empty(), "{p:?}");
    // Shell and groups: one usermod.
    assert_eq!(
        argv(
            "alice",
            json!({"shell": "/bin/zsh", "groups": ["audio", "staff"], "uid": 1000})
        ),
        (
            "usermod --groups audio,staff --shell /bin/zsh -- alice".into(),
            false
        )
    );
    // Append only adds what is missing.
    assert_eq!(
        argv("alice", json!({"groups": ["staff"], "append": true})).0,
        ""
    );
    assert_eq!(
        argv(
            "alice",
            json!({"groups": ["audio", "staff"], "append": true})
        )
        .0,
        "usermod --append --groups audio -- alice"
    );
    assert_eq!(
        argv("alice", json!({"groups": []})).0,
        "usermod --groups  -- alice"
    );
    // Primary group by name and by number.
    assert_eq!(
        argv("alice", json!({"group": "web"})).0,
        "usermod --gid web -- alice"
    );
    assert_eq!(argv("alice", json!({"gid": 1000})).0, "");
    // A new hash alone: no usermod, chpasswd.
    assert_eq!(
        argv("alice", json!({"password": "$6$other$hash"})),
        (String::new(), true)
    );
    assert_eq!(
        argv("bob", json!({"password": HASH})),
        (String::new(), true)
    );
    // A uid taken by someone else.
    assert_eq!(
        plan(&spec("alice", json!({"uid": 1001})), &db()).unwrap_err(),
        "uid 1001 belongs to `bob` (set `allowduplicateuid: true` to share it)"
    );
    assert_eq!(
        argv("alice", json!({"uid": 1001, "allowduplicateuid": true})).0,
        "usermod --non-unique --uid 1001 -- alice"
    );
}

#[test]
fn missing_groups_are_known_before_anything_runs() {
    let p = plan(&spec("carol", json!({"groups": ["nope", "staff"]})), &db()).unwrap();
    assert_eq!(p.missing_groups, ["nope"]);
}

#[test]
fn absent_users_are_removed_keeping_their_home_unless_remove() {
    assert_eq!(
        argv("alice", json!({"state": "absent"})).0,
        "userdel -- alice"
    );
    assert_eq!(
        argv("alice", json!({"state": "absent", "remove": true})).0,
        "userdel --remove -- alice"
    );
    assert!(
        plan(&spec("nobody", json!({"state": "absent"})), &db())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_user_depends_on_its_groups_and_a_removed_one_goes_before_them() {
    let user = |params| User {
        meta: Meta::default(),
        spec: spec("carol", params),
    };
    let keys = |uids: Vec<Uid>| -> Vec<String> {
        uids.into_iter()
            .map(|u| format!("{}:{}", u.kind, u.key))
            .collect()
    };
    let u = user(json!({"gid": 7, "groups": ["b", "a"], "uid": 3}));
    assert_eq!(keys(u.uids()), ["user:carol", "user:uid:3"]);
    assert_eq!(keys(u.auto_edges()), ["group:gid:7", "group:a", "group:b"]);
    let u = user(json!({"state": "absent", "group": "g", "groups": ["a"]}));
    assert!(u.auto_edges().is_empty());
    assert_eq!(
        keys(u.uids()),
        ["user:carol", "user:member:a", "user:member:g"]
    );
}
