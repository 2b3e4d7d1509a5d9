use serde_json::json;

use super::*;

fn spec(name: &str, params: Value) -> PkgSpec {
    PkgSpec::from_params(name, params).unwrap()
}

fn pkg(name: &str, params: Value) -> Arc<dyn Resource> {
    build(name, params, Meta::default()).unwrap()
}

fn build_err(name: &str, params: Value) -> String {
    build(name, params, Meta::default()).unwrap_err().message
}

#[test]
fn states_and_their_words() {
    for (written, state) in [
        (json!({}), State::Installed),
        (json!({"state": ""}), State::Installed),
        (json!({"state": "installed"}), State::Installed),
        (json!({"state": "uninstalled"}), State::Uninstalled),
        (json!({"state": "removed"}), State::Uninstalled),
        (json!({"state": "purged"}), State::Purged),
        (json!({"state": "newest"}), State::Newest),
        (
            json!({"state": "1:2.0-1"}),
            State::Version("1:2.0-1".into()),
        ),
        // A number in YAML is a version too.
        (json!({"state": 2}), State::Version("2".into())),
    ] {
        assert_eq!(spec("cowsay", written.clone()).state, state, "{written}");
    }
}

#[test]
fn bad_parameters_are_clear_errors() {
    for (name, params, why) in [
        (
            "cowsay",
            json!({"state": "latest"}),
            "`state`: `latest` is not a state: did you mean `newest`?",
        ),
        (
            "cowsay",
            json!({"state": "instaled"}),
            "`state`: `instaled` is not a state (installed, uninstalled, removed, purged, newest) \
             nor a version: version `instaled` does not start with a digit",
        ),
        (
            "cowsay",
            json!({"state": "1.0_1"}),
            "`state`: `1.0_1` is not a state (installed, uninstalled, removed, purged, newest) \
             nor a version: version `1.0_1`: `_` is not allowed in a version",
        ),
        (
            "Cowsay",
            json!({}),
            "`name`: `Cowsay` is not a Debian package name (at least two of a-z, 0-9, `+`, `-`, \
             `.`, starting with a letter or digit)",
        ),
        (
            "x",
            json!({}),
            "`name`: `x` is not a Debian package name (at least two of a-z, 0-9, `+`, `-`, `.`, \
             starting with a letter or digit)",
        ),
        (
            "libc6:I386",
            json!({}),
            "`name`: `I386` in `libc6:I386` is not an architecture (a-z, 0-9 and `-`)",
        ),
        (
            "cowsay",
            json!({"allowuntrusted": "maybe"}),
            "`allowuntrusted`: expected true or false, found `maybe`",
        ),
        (
            "cowsay",
            json!({"version": "1"}),
            "`version`: unknown field for kind `pkg`",
        ),
    ] {
        assert_eq!(build_err(name, params), why, "{name}");
    }
    for good in [
        "cowsay",
        "g++",
        "libstdc++6",
        "0ad",
        "python3.11",
        "libc6:i386",
        "linux-image-6.1.0-18-amd64",
    ] {
        assert_eq!(check_name(good), Ok(()), "{good}");
    }
}

#[test]
fn params_are_canonical_and_rebuild_an_equal_resource() {
    for (written, canonical) in [
        (json!({}), json!({"state": "installed"})),
        (json!({"state": "removed"}), json!({"state": "uninstalled"})),
        (
            json!({"state": "newest", "allowuntrusted": true, "allownonfree": "false", "allowunsupported": true, "allowdowngrade": true}),
            json!({"state": "newest", "allowuntrusted": true, "allowunsupported": true, "allowdowngrade": true}),
        ),
    ] {
        let r = pkg("cowsay", written);
        assert_eq!(r.params(), canonical);
        let again = pkg("cowsay", r.params());
        assert!(resource::same_resource(&*r, &*again));
    }
}

#[test]
fn pkgs_group_by_trust_into_one_listing_its_members() {
    let a = pkg("aa", json!({"state": "installed"}));
    let b = pkg("bb", json!({"state": "purged"}));
    let u = pkg("uu", json!({"allowuntrusted": true}));
    assert_eq!(a.group_key().as_deref(), Some("pkg"));
    assert_eq!(b.group_key().as_deref(), Some("pkg"));
    assert_eq!(u.group_key().as_deref(), Some("pkg allowuntrusted"));

    let g = a.group(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(g.id().to_string(), "pkg[aa,bb]");
    assert_eq!(
        g.params(),
        json!({"members": [
            {"name": "aa", "state": "installed"},
            {"name": "bb", "state": "purged"},
        ]})
    );
    assert_eq!(g.group_key(), None, "a group does not group again");
    assert_eq!(g.validate(), Ok(()));
    // A member that is not a pkg: no group.
    let other = crate::registry()
        .build("noop", "n", json!({}), Meta::default())
        .unwrap();
    assert!(a.group(&[a.clone(), other]).is_none());
}

const STATUS: &str = "\
Package: inst
Status: install ok installed
Architecture: all
Version: 1.0

Package: conf
Status: deinstall ok config-files
Architecture: all
Version: 1.0

Package: half
Status: install reinstreq half-installed
Architecture: all
Version: 1.0

Package: old
Status: install ok installed
Architecture: all
Version: 1.0-1
";

fn db() -> dpkg::Db {
    let mut db = dpkg::Db::default();
    db.add(STATUS);
    db
}

fn planned(members: &[PkgSpec], policy: &HashMap<String, Policy>) -> Vec<(String, Op)> {
    plan(members, &db(), policy)
        .into_iter()
        .map(|t| (t.spec.package.clone(), t.op))
        .collect()
}

fn specs(list: &[(&str, &str)]) -> Vec<PkgSpec> {
    list.iter()
        .map(|(name, state)| spec(name, json!({"state": state})))
        .collect()
}

#[test]
fn each_state_against_each_presence() {
    let none = HashMap::new();
    let ops = |list: &[(&str, &str)]| planned(&specs(list), &none);
    let op = |name: &str, op: Op| (name.to_string(), op);
    // installed
    assert_eq!(
        ops(&[
            ("inst", "installed"),
            ("conf", "installed"),
            ("half", "installed"),
            ("gone", "installed")
        ]),
        [
            op("conf", Op::Install),
            op("half", Op::Install),
            op("gone", Op::Install)
        ]
    );
    // removed: config files left count as removed
    assert_eq!(
        ops(&[
            ("inst", "removed"),
            ("conf", "removed"),
            ("half", "removed"),
            ("gone", "removed")
        ]),
        [op("inst", Op::Remove), op("half", Op::Remove)]
    );
    // purged: config files left do not
    assert_eq!(
        ops(&[
            ("inst", "purged"),
            ("conf", "purged"),
            ("half", "purged"),
            ("gone", "purged")
        ]),
        [
            op("inst", Op::Purge),
            op("conf", Op::Purge),
            op("half", Op::Purge)
        ]
    );
    // a version: equal as dpkg compares
    assert_eq!(
        ops(&[
            ("inst", "1.0-0"),
            ("old", "1.0-2"),
            ("conf", "1.0"),
            ("gone", "2")
        ]),
        [
            op("old", Op::Version("1.0-2".into())),
            op("conf", Op::Version("1.0".into())),
            op("gone", Op::Version("2".into())),
        ]
    );
}

#[test]
fn newest_compares_with_apts_candidate() {
    let policy = apt::parse_policy(
        "inst:\n  Installed: 1.0\n  Candidate: 1.1\n  Version table:\n     1.1 500\n        500 file:/srv/repo ./ Packages\n \
         *** 1.0 100\n        100 /var/lib/dpkg/status\n\
         old:\n  Installed: 1.0-1\n  Candidate: 1.0-1\n",
    );
    let members = specs(&[("inst", "newest"), ("old", "newest"), ("gone", "newest")]);
    assert_eq!(
        planned(&members, &policy),
        [
            ("inst".to_string(), Op::Install),
            ("gone".to_string(), Op::Install)
        ]
    );
    // Installed and unknown to apt (a local build): nothing newer to get.
    assert_eq!(planned(&specs(&[("inst", "newest")]), &HashMap::new()), []);
    let todo = plan(&members, &db(), &policy);
    assert_eq!(
        describe(&todo),
        "install inst (1.0 installed, 1.1 available), install gone (not installed)"
    );
}

#[test]
fn unknown_means_no_candidate_or_no_such_version() {
    let policy = apt::parse_policy(
        "aa:\n  Installed: (none)\n  Candidate: 1.0\n  Version table:\n     1.0 500\n        500 x\n\
         vv:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n",
    );
    let members = specs(&[
        ("aa", "installed"),
        ("aa", "0:1.0"),
        ("aa", "2.0"),
        ("vv", "installed"),
        ("zz", "installed"),
    ]);
    let todo = plan(&members, &dpkg::Db::default(), &policy);
    let unknown: Vec<bool> = todo.iter().map(|t| unknown_to_apt(t, &policy)).collect();
    assert_eq!(unknown, [false, false, true, true, true]);
}

#[test]
fn lists_state_sees_contents_not_symlinks_made_anew() {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    std::fs::create_dir_all(lists.join("partial")).unwrap();
    let target = dir.path().join("Packages");
    std::fs::write(&target, "Package: a\n").unwrap();
    let link = lists.join("_srv_repo_._Packages");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::write(lists.join("lock"), "").unwrap();
    let before = lists_state(&lists);
    assert_eq!(before.len(), 1, "{before:?}");
    // apt makes a `file:` source's symlink anew at every update: the same lists.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::write(lists.join("lock"), "").unwrap();
    assert_eq!(lists_state(&lists), before);
    // New contents are new lists.
    std::fs::write(&target, "Package: a\n\nPackage: b\n").unwrap();
    assert_ne!(lists_state(&lists), before);
    assert_eq!(lists_state(&dir.path().join("none")), ListsState::new());
}
