//! The real `etcdctl` (v3 API, Debian's etcd-client package) against our embedded server:
//! the commands an operator would use to look at or fix mgmt's store.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

struct Ctl {
    url: String,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ctl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url))
            .arg("--dial-timeout=5s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl is installed");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(out.ok, "etcdctl {args:?} failed: {}", out.stderr);
        out.stdout
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            !out.ok,
            "etcdctl {args:?} should fail but printed {}",
            out.stdout
        );
        out.stderr
    }

    fn revision(&self) -> i64 {
        let json: serde_json::Value =
            serde_json::from_str(&self.ok(&["get", "x", "-w", "json"])).unwrap();
        json["header"]["revision"].as_i64().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_our_server() {
    let server = common::start_ours().await;
    let ctl = Ctl {
        url: server.client_url(),
    };

    // put, get --prefix, get --rev, del.
    assert_eq!(ctl.ok(&["put", "foo", "bar"]), "OK\n");
    let first = ctl.revision();
    ctl.ok(&["put", "foo", "baz"]);
    ctl.ok(&["put", "foo/1", "a"]);
    ctl.ok(&["put", "foo/2", "b"]);
    assert_eq!(
        ctl.ok(&["get", "foo", "--prefix"]),
        "foo\nbaz\nfoo/1\na\nfoo/2\nb\n"
    );
    assert_eq!(
        ctl.ok(&["get", "foo", &format!("--rev={first}")]),
        "foo\nbar\n"
    );
    assert_eq!(
        ctl.ok(&["get", "foo/", "--prefix", "--keys-only"]),
        "foo/1\n\nfoo/2\n\n"
    );
    assert_eq!(ctl.ok(&["del", "foo/1"]), "1\n");
    assert_eq!(ctl.ok(&["del", "foo/", "--prefix"]), "1\n");

    // watch, spawned; it starts at the next revision so no event can slip by before it is set up.
    let next = ctl.revision() + 1;
    let mut watch = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", ctl.url))
        .args(["watch", "w/", "--prefix", &format!("--rev={next}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    ctl.ok(&["put", "w/1", "v1"]);
    ctl.ok(&["del", "w/1"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while seen.len() < 5 {
            seen.push(
                lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("etcdctl watch output"),
            );
        }
    })
    .await
    .expect("etcdctl watch prints the events");
    assert_eq!(seen, ["PUT", "w/1", "v1", "DELETE", "w/1"]);
    watch.kill().await.unwrap();

    // Leases: grant, put --lease, keep-alive --once, timetolive, revoke.
    let granted = ctl.ok(&["lease", "grant", "60"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease <id> granted")
        .to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    ctl.ok(&["put", "--lease", &id, "leased", "v"]);
    let kept = ctl.ok(&["lease", "keep-alive", "--once", &id]);
    assert!(
        kept.contains(&format!("lease {id} keepalived with TTL(60)")),
        "{kept}"
    );
    let ttl = ctl.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([leased])"),
        "{ttl}"
    );
    assert!(ctl.ok(&["lease", "list"]).contains(&id));
    assert!(ctl.ok(&["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(ctl.ok(&["get", "leased"]), "");

    // txn, interactive form on stdin.
    ctl.ok(&["put", "guard", "yes"]);
    let txn = "value(\"guard\") = \"yes\"\n\nput txn-ok 1\n\nput txn-fail 1\n\n";
    let out = ctl.run(&["txn", "-i"], Some(txn));
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.ends_with("SUCCESS\n\nOK\n"), "{}", out.stdout);
    assert_eq!(ctl.ok(&["get", "txn-ok", "--print-value-only"]), "1\n");
    assert_eq!(ctl.ok(&["get", "txn-fail"]), "");

    // Auth: etcdctl adds the root role itself when `auth enable` reports it missing.
    assert!(
        ctl.ok(&["user", "add", "root", "--new-user-password=rootpw"])
            .contains("User root created")
    );
    ctl.ok(&["user", "add", "alice", "--new-user-password=alicepw"]);
    ctl.ok(&["role", "add", "alice-role"]);
    ctl.ok(&[
        "role",
        "grant-permission",
        "alice-role",
        "--prefix=true",
        "readwrite",
        "/alice/",
    ]);
    ctl.ok(&["user", "grant-role", "alice", "alice-role"]);
    assert!(
        ctl.ok(&["role", "get", "alice-role"])
            .contains("[/alice/, /alice0) (prefix /alice/)")
    );
    assert_eq!(ctl.ok(&["auth", "enable"]), "Authentication Enabled\n");
    ctl.ok(&["--user", "root:rootpw", "put", "/alice/seed", "s"]);
    assert_eq!(
        ctl.ok(&["--user", "alice:alicepw", "get", "/alice/", "--prefix"]),
        "/alice/seed\ns\n"
    );
    assert_eq!(
        ctl.ok(&["--user", "alice:alicepw", "put", "/alice/x", "1"]),
        "OK\n"
    );
    assert!(
        ctl.fails(&["--user", "alice:alicepw", "put", "/bob/x", "1"])
            .contains("etcdserver: permission denied")
    );
    assert!(
        ctl.fails(&["--user", "alice:alicepw", "get", "/", "--prefix"])
            .contains("etcdserver: permission denied")
    );
    assert!(
        ctl.fails(&["--user", "alice:wrong", "get", "/alice/x"])
            .contains("etcdserver: authentication failed, invalid user ID or password")
    );
    assert!(
        ctl.fails(&["--user", "mallory:x", "get", "/alice/x"])
            .contains("etcdserver: authentication failed, invalid user ID or password")
    );
    assert!(
        ctl.fails(&["get", "/alice/x"])
            .contains("etcdserver: user name is empty")
    );
    assert!(
        ctl.fails(&["--user", "alice:alicepw", "user", "list"])
            .contains("etcdserver: permission denied")
    );
    assert!(
        ctl.ok(&["--user", "root:rootpw", "user", "list"])
            .contains("alice")
    );

    // endpoint status and member list. `endpoint status` dials the endpoint string itself and
    // etcdctl 3.4 then sends it as the HTTP/2 `:authority`; the Rust h2 server rejects
    // `http://...` there as malformed, so it is given as `host:port` (known gap, see README).
    let bare = Ctl {
        url: ctl.url.trim_start_matches("http://").to_string(),
    };
    let status: serde_json::Value =
        serde_json::from_str(&bare.ok(&["endpoint", "status", "-w", "json"])).unwrap();
    let s = &status[0]["Status"];
    assert_eq!(status[0]["Endpoint"], bare.url.as_str());
    assert_eq!(s["version"], store::API_VERSION);
    assert_eq!(s["leader"], s["header"]["member_id"]);
    assert!(
        s["raftIndex"].as_u64().unwrap_or(0) > 10 && s["dbSize"].as_i64().unwrap_or(0) > 0,
        "{s}"
    );
    let table = bare.ok(&["endpoint", "status"]);
    assert!(
        table.contains(&bare.url) && table.contains(store::API_VERSION),
        "{table}"
    );
    let members = ctl.ok(&["member", "list"]);
    assert!(
        members.contains(", started, mgmt, , ") && members.contains(&ctl.url),
        "{members}"
    );

    assert_eq!(
        ctl.ok(&["--user", "root:rootpw", "auth", "disable"]),
        "Authentication Disabled\n"
    );
    assert_eq!(ctl.ok(&["get", "/alice/x", "--print-value-only"]), "1\n");

    // etcd's request size limit, with etcd's message (the value read from stdin).
    let big = "x".repeat(2_000_000);
    let out = ctl.run(&["put", "/big"], Some(&big));
    assert!(
        !out.ok && out.stderr.contains("etcdserver: request is too large"),
        "{}",
        out.stderr
    );
    assert_eq!(ctl.ok(&["put", "/big", "small"]), "OK\n");
    server.shutdown().await;
}
