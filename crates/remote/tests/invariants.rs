//! Invariants of the crate that are an absence of something: no engine, YAML or store
//! dependency (upstream mgmt lost its remote mode to that coupling) and no shelling out to the
//! `ssh` client.

use std::path::Path;

#[test]
fn remote_depends_on_no_engine_yaml_or_store_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for name in [
        "engine",
        "yamlgraph",
        "store",
        "resource",
        "resources",
        "graph",
        "cli",
        "etcd",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(name)),
            "remote must not depend on {name}"
        );
    }
}

#[test]
fn no_ssh_client_process_is_spawned() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for banned in ["Command::new", "std::process::Command"] {
            assert!(!text.contains(banned), "{} uses {banned}", path.display());
        }
    }
}
