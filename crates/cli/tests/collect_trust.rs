//! Collection is a trust boundary: a compromised host, writing with nothing but its own store
//! credentials into its own prefix (as any host may), publishes file exports meant to make a
//! collecting host copy its root-only secret into the collected directory, create a setuid
//! file there, write outside it, and hand files to root. The collecting `mgmt run` (a host
//! user of an auth-on store, as a remote child is) refuses each of them, naming host and field
//! once however often its graph is swapped, and writes nothing of them; the same host's benign
//! export is collected. Synchronisation is by the run's JSON events; what the run logged is
//! read once it has exited.

mod support;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use store::ExportedResource;
use support::{Running, write};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "the root password is hunter2\n";

fn export(name: &str, params: serde_json::Value) -> ExportedResource {
    ExportedResource {
        host: "evil".into(),
        kind: "file".into(),
        name: name.into(),
        meta: json!({}),
        params,
    }
}

/// The hostile exports (each refused for the field named) and the benign one, `version` in
/// its content.
fn exports(secret: &Path, version: &str) -> Vec<ExportedResource> {
    vec![
        export(
            "stolen",
            json!({"path": "/nowhere/stolen", "source": secret, "mode": "0644"}),
        ),
        export(
            "gathered",
            json!({"path": "/nowhere/gathered", "fragments": [secret]}),
        ),
        export(
            "rootshell",
            json!({"path": "/nowhere/rootshell", "content": "#!/bin/sh\nexec sh\n", "mode": "4755"}),
        ),
        export(
            "up",
            json!({"path": "/nowhere/x", "basename": "..", "content": "climbed\n"}),
        ),
        export(
            "owned",
            json!({"path": "/nowhere/owned", "content": "x\n", "owner": "root"}),
        ),
        export(
            "benign",
            json!({"path": "/nowhere/benign", "content": format!("hello from evil, {version}\n")}),
        ),
    ]
}

/// Keys under each host's own prefix that do not decode as exports.
const EVIL_JUNK: &str = "/_mgmt/exported/evil/resources/file/junk";
const C_JUNK: &str = "/_mgmt/exported/c/resources/file/junk";

/// The refusal lines the collecting run must log, each exactly once.
const REFUSED: [&str; 5] = [
    "not collecting file[stolen] from host evil: `source`",
    "not collecting file[gathered] from host evil: `fragments`",
    "not collecting file[rootshell] from host evil: `mode`: 4755 sets setuid",
    "not collecting file[up] from host evil: `basename`",
    "not collecting file[owned] from host evil: `owner`",
];

/// Every regular file under `dir` with its content and mode, but the secret's own.
fn files_under(dir: &Path, secret: &Path) -> Vec<(PathBuf, String, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if path != secret {
                let content = fs::read_to_string(&path).unwrap_or_default();
                out.push((path, content, meta.permissions().mode()));
            }
        }
    }
    out
}

/// `mgmt run` as host `name` of the store at `url` (its password `<name>-secret`), collecting
/// files into `collected`, with `extra` arguments.
fn collector(dir: &Path, name: &str, url: &str, collected: &Path, extra: &[&str]) -> Running {
    let creds = dir.join(format!("{name}.credentials"));
    let secret = format!("{name}-secret");
    let encoded = remote::Credentials::new(name, &secret).unwrap().encode();
    write(&creds, &String::from_utf8(encoded).unwrap());
    let c = collected.display();
    let graph = dir.join(format!("{name}.yaml"));
    write(
        &graph,
        &format!(
            "graph: {name}
resources:
  file:
  - name: collected-dir
    path: {c}/
collect:
- kind: file
  pattern: {c}/
"
        ),
    );
    let mut args = vec![
        "--hostname",
        name,
        "--no-server",
        "--seeds",
        url,
        "--store-credentials",
        creds.to_str().unwrap(),
        "--yaml",
        graph.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Running::start(&args)
}

#[test]
fn a_hostile_hosts_exports_are_refused_and_write_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let secret = dir.join("root").join("secret.txt");
    write(&secret, SECRET);
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let collected = dir.join("collected");

    // The store, auth on, with one user per host as the remote mode makes them.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cancel = CancellationToken::new();
    let server = rt
        .block_on(store::serve(
            store::ServerConfig {
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                ..Default::default()
            },
            cancel.clone(),
        ))
        .unwrap();
    server.enable_auth("root-secret").unwrap();
    server.add_host_user("b", "b-secret").unwrap();
    server.add_host_user("evil", "evil-secret").unwrap();
    server.add_host_user("c", "c-secret").unwrap();
    let url = server.url();

    let url_arg = url.to_string();
    let connect_as = |user: &str| {
        rt.block_on(store::Store::connect(
            std::slice::from_ref(&url),
            Some((user.into(), format!("{user}-secret"))),
        ))
        .unwrap()
    };

    // The collecting host, b.
    let mut b = collector(dir, "b", &url_arg, &collected, &[]);
    b.wait_applied("file[collected-dir]", "changed");

    // A second collecting host, c, run as a remote child is (`--depth 1`): under an
    // initiator, a child warns only about its own invalid exports, the initiator (here b,
    // depth 0, as an initiator's watch is) about everyone's.
    let c_collected = dir.join("c-collected");
    let mut c = collector(dir, "c", &url_arg, &c_collected, &["--depth", "1"]);
    c.wait_applied("file[collected-dir]", "changed");
    let c_store = connect_as("c");
    rt.block_on(c_store.put(C_JUNK, "not json")).unwrap();

    // The compromised host, with its own credentials only: it cannot write as another host,
    // but its own prefix holds whatever it likes.
    let evil = connect_as("evil");
    assert!(
        rt.block_on(evil.publish_exports("b", exports(&secret, "forged")))
            .is_err(),
        "a host writes only its own exports"
    );
    rt.block_on(evil.publish_exports("evil", exports(&secret, "v1")))
        .unwrap();
    rt.block_on(evil.put(EVIL_JUNK, "not json")).unwrap();
    b.wait_event("the benign export collected", |v| {
        v["event"] == "applied"
            && v["id"] == "file[benign]"
            && v["outcome"] == "changed"
            && fs::read_to_string(collected.join("benign")).ok().as_deref()
                == Some("hello from evil, v1\n")
    });

    // Another swap with the hostile records unchanged: refused again, not logged again.
    b.mark();
    rt.block_on(evil.publish_exports("evil", exports(&secret, "v2")))
        .unwrap();
    b.wait_event("the benign export updated", |v| {
        v["event"] == "applied"
            && v["id"] == "file[benign]"
            && v["outcome"] == "changed"
            && fs::read_to_string(collected.join("benign")).ok().as_deref()
                == Some("hello from evil, v2\n")
    });
    // c saw every snapshot b saw once it has v2 (one watch stream, in revision order).
    c.wait_event("c collected the benign export v2", |v| {
        v["event"] == "applied"
            && v["id"] == "file[benign]"
            && fs::read_to_string(c_collected.join("benign"))
                .ok()
                .as_deref()
                == Some("hello from evil, v2\n")
    });
    let (st, err) = b.interrupt();
    assert!(st.success(), "{err}");
    let (st, c_err) = c.interrupt();
    assert!(st.success(), "{c_err}");
    // Invalid exports: warned once per change through every swap, by b about both hosts',
    // by c (a child) about its own only.
    let skipping = |key: &str| format!("skipping the export {key} (revision");
    assert_eq!(err.matches(&skipping(EVIL_JUNK)).count(), 1, "{err}");
    assert_eq!(err.matches(&skipping(C_JUNK)).count(), 1, "{err}");
    assert_eq!(c_err.matches(&skipping(C_JUNK)).count(), 1, "{c_err}");
    assert_eq!(c_err.matches(&skipping(EVIL_JUNK)).count(), 0, "{c_err}");

    // Nothing of the hostile exports was written: only the benign file is in the collected
    // directory, the secret is nowhere else, and no file is setuid, setgid or world-writable.
    let files = files_under(dir, &secret);
    let names: Vec<String> = files
        .iter()
        .filter(|(p, ..)| p.parent() == Some(collected.as_path()))
        .map(|(p, ..)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["benign"], "{files:?}");
    for (path, content, mode) in &files {
        assert!(
            !content.contains("hunter2"),
            "{} holds the secret",
            path.display()
        );
        assert_eq!(mode & 0o7002, 0, "{} has mode {mode:o}", path.display());
        assert_ne!(content, "climbed\n", "{} was written", path.display());
    }
    assert!(!dir.join("x").exists() && !dir.join("up").exists());

    // Each refusal was logged once, naming host and field, through both swaps.
    for line in REFUSED {
        assert_eq!(err.matches(line).count(), 1, "{line}\nstderr:\n{err}");
    }
    let events: Vec<String> = b.seen.iter().map(|v| v.to_string()).collect();
    assert!(
        !events.iter().any(|e| e.contains("file[stolen]")
            || e.contains("file[gathered]")
            || e.contains("file[rootshell]")
            || e.contains("file[up]")
            || e.contains("file[owned]")),
        "a refused export never reached the engine: {events:#?}"
    );

    drop(evil);
    drop(c_store);
    rt.block_on(server.shutdown());
}
