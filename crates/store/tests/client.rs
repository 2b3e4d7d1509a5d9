//! The `Store` client API (exports, convergence flags, host liveness), run against our embedded
//! server and against a real etcd: the same client path serves both.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::raw::{Raw, watch_prefix};
use common::{real_etcd, start_ours};
use serde_json::json;
use store::{ExportedResource, SnapshotWatch, Store, StoreError, keys};

const TIMEOUT: Duration = Duration::from_secs(15);

async fn next<T: PartialEq + Clone>(w: &mut SnapshotWatch<T>) -> T {
    tokio::time::timeout(TIMEOUT, w.next())
        .await
        .expect("a snapshot arrives in time")
        .expect("the watch stays open")
}

fn export(kind: &str, name: &str, content: &str) -> ExportedResource {
    ExportedResource {
        host: String::new(),
        kind: kind.into(),
        name: name.into(),
        meta: json!({"retry": 0}),
        params: json!({"path": name, "content": content}),
    }
}

async fn exports_flow(url: &str) {
    let a = Store::connect(&common::urls(url), None).await.unwrap();
    let b = Store::connect(&common::urls(url), None).await.unwrap();
    let mut watch = b.watch_exports().await.unwrap();
    assert_eq!(next(&mut watch).await, vec![]);

    let first = vec![
        export("file", "/tmp/f1", "one\n"),
        export("file", "/tmp/f2", "two\n"),
    ];
    a.publish_exports("h1", first.clone()).await.unwrap();
    let got = next(&mut watch).await;
    let expected: Vec<ExportedResource> = first
        .iter()
        .map(|e| ExportedResource {
            host: "h1".into(),
            ..e.clone()
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(b.exports_snapshot().await.unwrap(), expected);

    // The stored value is plain JSON, as etcdctl shows it.
    let raw = a
        .get(&keys::exported("h1", "file", "/tmp/f1"))
        .await
        .unwrap()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        value,
        json!({"kind": "file", "name": "/tmp/f1", "meta": {"retry": 0}, "params": {"path": "/tmp/f1", "content": "one\n"}})
    );

    // Replacing the set is one revision: a raw watcher sees all its events in one response.
    let mut raw_client = Raw::connect(url).await.unwrap();
    let mut raw_watch = raw_client
        .watch(watch_prefix(keys::EXPORTED))
        .await
        .unwrap();
    let created = raw_watch.message().await.unwrap().unwrap();
    assert!(created.created);
    a.publish_exports(
        "h1",
        vec![
            export("file", "/tmp/f2", "changed\n"),
            export("exec", "e1", ""),
        ],
    )
    .await
    .unwrap();
    let resp = tokio::time::timeout(TIMEOUT, raw_watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let revs: BTreeSet<i64> = resp
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(
        (resp.events.len(), revs.len()),
        (3, 1),
        "delete f1, put f2, put e1 in one revision"
    );
    let got = next(&mut watch).await;
    let names: Vec<(&str, &str)> = got
        .iter()
        .map(|e| (e.kind.as_str(), e.name.as_str()))
        .collect();
    assert_eq!(names, [("exec", "e1"), ("file", "/tmp/f2")]);

    // Publishing the same set again changes nothing at all.
    let before = raw_client.revision().await.unwrap();
    a.publish_exports(
        "h1",
        vec![
            export("file", "/tmp/f2", "changed\n"),
            export("exec", "e1", ""),
        ],
    )
    .await
    .unwrap();
    let after = raw_client.revision().await.unwrap();
    assert_eq!(before, after);

    // A second host's exports arrive beside the first's; emptying them removes them.
    b.publish_exports("h2", vec![export("file", "/tmp/from-h2", "x")])
        .await
        .unwrap();
    let hosts: BTreeSet<String> = next(&mut watch).await.into_iter().map(|e| e.host).collect();
    assert_eq!(hosts, BTreeSet::from(["h1".to_string(), "h2".to_string()]));
    b.publish_exports("h2", vec![]).await.unwrap();
    assert!(next(&mut watch).await.iter().all(|e| e.host == "h1"));

    // Bad names are refused before anything is written.
    let err = a.publish_exports("bad/host", vec![]).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidName {
                what: "host name",
                ..
            }
        ),
        "{err}"
    );
    let err = a
        .publish_exports("h1", vec![export("fi/le", "x", "")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidName {
                what: "resource kind",
                ..
            }
        ),
        "{err}"
    );
}

async fn converged_flow(url: &str) {
    let a = Store::connect(&common::urls(url), None).await.unwrap();
    let b = Store::connect(&common::urls(url), None).await.unwrap();
    let mut watch = b.watch_converged().await.unwrap();
    assert_eq!(next(&mut watch).await, BTreeMap::new());
    a.set_converged("h1", false).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        BTreeMap::from([("h1".to_string(), false)])
    );
    b.set_converged("h2", true).await.unwrap();
    a.set_converged("h1", true).await.unwrap();
    let mut got = next(&mut watch).await;
    if got.len() == 2 && !got["h1"] {
        got = next(&mut watch).await;
    }
    assert_eq!(
        got,
        BTreeMap::from([("h1".to_string(), true), ("h2".to_string(), true)])
    );
    assert_eq!(a.converged().await.unwrap(), got);
}

async fn liveness_flow(url: &str) {
    let observer = Store::connect(&common::urls(url), None).await.unwrap();
    let mut watch = observer.watch_live_hosts().await.unwrap();
    assert_eq!(next(&mut watch).await, BTreeSet::new());

    // A host that goes away cleanly disappears at once.
    let lease = observer
        .register_host("tidy", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(next(&mut watch).await, BTreeSet::from(["tidy".to_string()]));
    lease.close().await;
    assert_eq!(next(&mut watch).await, BTreeSet::new());

    // A kept-alive host and a host whose process dies (its runtime vanishes, nothing revokes),
    // both with a 2 s TTL, the steady one registered first.
    let steady = observer
        .register_host("steady", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        next(&mut watch).await,
        BTreeSet::from(["steady".to_string()])
    );
    let url2 = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = Store::connect(&common::urls(&url2), None).await.unwrap();
            let lease = s
                .register_host("crashy", Duration::from_secs(2))
                .await
                .unwrap();
            std::mem::forget(lease);
        });
        // Dropping the runtime kills the keepalive task mid-flight, like a crash.
    })
    .join()
    .unwrap();
    let both = BTreeSet::from(["crashy".to_string(), "steady".to_string()]);
    assert_eq!(next(&mut watch).await, both);
    assert_eq!(observer.live_hosts().await.unwrap(), both);
    // Only expiry can remove the crashed host. The steady one was granted earlier with the same
    // TTL, so it is still there afterwards only because its keepalive renewed it.
    assert_eq!(
        next(&mut watch).await,
        BTreeSet::from(["steady".to_string()])
    );
    steady.close().await;
    assert_eq!(next(&mut watch).await, BTreeSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_api_against_our_server() {
    let server = start_ours().await;
    let url = server.client_url();
    exports_flow(&url).await;
    converged_flow(&url).await;
    liveness_flow(&url).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_api_against_real_etcd() {
    let etcd = real_etcd().await;
    exports_flow(&etcd.client_url()).await;
    converged_flow(&etcd.client_url()).await;
    liveness_flow(&etcd.client_url()).await;
}

/// `follow` outlives the server: when ours is stopped and a new one starts on the same address
/// (a restarted initiator: an empty store), the watch subscribes again by itself and reports the
/// new server's state, which it could only have read after resubscribing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_subscribes_again_after_the_server_restarts() {
    let first = start_ours().await;
    let addr = first.local_addr();
    let url = first.client_url();
    let store = Store::connect(&common::urls(&url), None).await.unwrap();
    store.set_converged("h1", true).await.unwrap();
    let mut w = store.watch_converged().await.unwrap();
    assert_eq!(
        next(&mut w).await,
        BTreeMap::from([("h1".to_string(), true)])
    );
    first.shutdown().await;

    let cfg = store::ServerConfig {
        listen: addr,
        ..store::ServerConfig::default()
    };
    let second = store::serve(cfg, tokio_util::sync::CancellationToken::new())
        .await
        .expect("a new server on the same address");
    let writer = Store::connect(&common::urls(&url), None).await.unwrap();
    writer.set_converged("h2", false).await.unwrap();
    // The watch may come back before or after that write: an empty snapshot first is fine.
    let want = BTreeMap::from([("h2".to_string(), false)]);
    let seen = tokio::time::timeout(TIMEOUT, async {
        loop {
            let got = w.follow().await;
            if got == want {
                return;
            }
            assert!(got.is_empty(), "only the new server's states: {got:?}");
        }
    });
    seen.await.expect("the watch comes back in time");
    second.shutdown().await;
}
