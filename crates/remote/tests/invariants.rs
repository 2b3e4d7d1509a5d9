//! Invariants of the crate that are an absence of something: no engine, YAML or store
//! dependency (upstream mgmt lost its remote mode to that coupling), no shelling out to the
//! `ssh` client, and no reading of the environment (the caller hands in what it needs).

use std::path::{Path, PathBuf};

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

/// Every source file of the crate, with its text up to its unit tests (`#[cfg(test)]`, last in
/// each file: they may run the scripts the crate sends to hosts through a local /bin/sh).
fn sources() -> Vec<(PathBuf, String)> {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                files.push((path, code.to_string()));
            }
        }
    }
    assert!(files.len() > 10, "only {} sources found", files.len());
    files
}

#[test]
fn no_ssh_client_process_is_spawned() {
    for (path, text) in sources() {
        for banned in ["Command::new", "std::process::Command"] {
            assert!(!text.contains(banned), "{} uses {banned}", path.display());
        }
    }
}

#[test]
fn the_environment_is_never_read() {
    for (path, text) in sources() {
        for banned in ["std::env", "env::var", "getuid", "User::from"] {
            assert!(!text.contains(banned), "{} uses {banned}", path.display());
        }
    }
}
