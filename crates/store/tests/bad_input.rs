//! Bad input against the embedded server: garbage on the socket, unknown users, wrong passwords,
//! keys outside a user's prefix. Each gets a clear error; the server keeps serving and nothing
//! already stored is lost.

mod common;

use std::time::Duration;

use store::{Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_socket_does_not_hurt_other_clients() {
    let server = common::start_ours().await;
    let url = server.client_url();
    let good = Store::connect(&common::urls(&url), None).await.unwrap();
    good.put("/kept", "1").await.unwrap();

    // A client that sends garbage and stays connected, another that speaks HTTP/1 (answered:
    // the port serves /health and /metrics, as etcd's does, and closes as asked), and one that
    // sends a valid HTTP/2 preface followed by nonsense.
    let mut idle = TcpStream::connect(server.local_addr()).await.unwrap();
    idle.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3])
        .await
        .unwrap();
    let mut http1 = TcpStream::connect(server.local_addr()).await.unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut h2 = TcpStream::connect(server.local_addr()).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    h2.write_all(&[0xff; 64]).await.unwrap();

    // The server hangs up on the garbage (EOF or reset), without waiting for more.
    for (what, sock) in [
        ("garbage", &mut idle),
        ("http/1", &mut http1),
        ("bad h2", &mut h2),
    ] {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        let closed = tokio::time::timeout(TIMEOUT, async {
            loop {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server closes a {what} connection");
        if what == "http/1" {
            assert!(
                got.starts_with(b"HTTP/1.1 "),
                "no HTTP/1.1 answer: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }

    // Meanwhile, and afterwards, real clients are served and the data is intact.
    assert_eq!(good.get("/kept").await.unwrap(), Some(b"1".to_vec()));
    let fresh = Store::connect(&common::urls(&url), None).await.unwrap();
    fresh.put("/after", "2").await.unwrap();
    assert_eq!(fresh.get("/kept").await.unwrap(), Some(b"1".to_vec()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_users_are_confined_to_their_prefix() {
    let server = common::start_ours().await;
    let url = server.client_url();
    let open = Store::connect(&common::urls(&url), None).await.unwrap();
    open.put("/_mgmt/exported/h2/resources/file/x", "{}")
        .await
        .unwrap();

    // What the remote mode does: one user per host with a per-run secret, then auth on.
    server
        .add_prefix_user("h1", "s3cret-h1", "/_mgmt/exported/h1/")
        .unwrap();
    server.enable_auth("rootpw").unwrap();
    let err = server.add_prefix_user("h1", "again", "/x/").unwrap_err();
    assert!(
        err.to_string()
            .contains("etcdserver: user name already exists"),
        "{err}"
    );

    // The connection opened before auth now has no token.
    let err = open
        .get("/_mgmt/exported/h2/resources/file/x")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("etcdserver: user name is empty"),
        "{err}"
    );

    let creds = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
    for (user, pw) in [("nobody", "s3cret-h1"), ("h1", "wrong")] {
        let err = Store::connect(&common::urls(&url), creds(user, pw))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Connect { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("etcdserver: authentication failed, invalid user ID or password"),
            "{text}"
        );
        assert!(!text.contains(pw), "no password in errors: {text}");
    }

    let h1 = Store::connect(&common::urls(&url), creds("h1", "s3cret-h1"))
        .await
        .unwrap();
    h1.put("/_mgmt/exported/h1/resources/file/a", "{}")
        .await
        .unwrap();
    let err = h1
        .put("/_mgmt/exported/h2/resources/file/x", "overwrite")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Request { op: "put", key, .. } if key == "/_mgmt/exported/h2/resources/file/x"),
        "{err}"
    );
    assert!(
        err.to_string().contains("etcdserver: permission denied"),
        "{err}"
    );
    let err = h1.get("/_mgmt/converged/h2").await.unwrap_err();
    assert!(
        err.to_string().contains("etcdserver: permission denied"),
        "{err}"
    );

    // Nothing was lost or changed by the refused requests.
    let root = Store::connect(&common::urls(&url), creds("root", "rootpw"))
        .await
        .unwrap();
    assert_eq!(
        root.get("/_mgmt/exported/h2/resources/file/x")
            .await
            .unwrap(),
        Some(b"{}".to_vec())
    );
    assert_eq!(
        root.get("/_mgmt/exported/h1/resources/file/a")
            .await
            .unwrap(),
        Some(b"{}".to_vec())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_users_read_all_of_mgmt_but_write_only_their_own_keys() {
    let server = common::start_ours().await;
    let url = server.client_url();
    server.add_host_user("h1", "pw1").unwrap();
    server.add_host_user("h2", "pw2").unwrap();
    assert!(server.add_host_user("root", "x").is_err());
    assert!(server.add_host_user("a/b", "x").is_err());
    server.enable_auth("rootpw").unwrap();
    let creds = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
    let h1 = Store::connect(&common::urls(&url), creds("h1", "pw1"))
        .await
        .unwrap();
    let h2 = Store::connect(&common::urls(&url), creds("h2", "pw2"))
        .await
        .unwrap();

    let export = |name: &str| store::ExportedResource {
        host: String::new(),
        kind: "file".into(),
        name: name.into(),
        meta: serde_json::json!({}),
        params: serde_json::json!({"content": name}),
    };
    let mut collector = h2.watch_exports().await.unwrap();
    assert!(collector.next().await.unwrap().is_empty());
    h1.publish_exports("h1", vec![export("/tmp/a")])
        .await
        .unwrap();
    let got = tokio::time::timeout(TIMEOUT, collector.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.len(), got[0].host.as_str()), (1, "h1"));
    h1.set_converged("h1", true).await.unwrap();
    let lease = h1
        .register_host("h1", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(h2.live_hosts().await.unwrap().contains("h1"));
    assert_eq!(h2.converged().await.unwrap().get("h1"), Some(&true));

    // h1 cannot speak for h2.
    for err in [
        h1.publish_exports("h2", vec![export("/tmp/evil")])
            .await
            .unwrap_err(),
        h1.set_converged("h2", true).await.unwrap_err(),
        h1.register_host("h2", Duration::from_secs(10))
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(
            err.to_string().contains("etcdserver: permission denied"),
            "{err}"
        );
    }
    assert!(
        h2.exports_snapshot()
            .await
            .unwrap()
            .iter()
            .all(|e| e.host == "h1")
    );
    lease.close().await;
    server.shutdown().await;
}
