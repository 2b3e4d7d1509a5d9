//! Behaviour of the embedded server that a comparison with etcd cannot reach: progress
//! notifications on a short interval, a watcher that falls far behind, shutdown with streams open.

mod common;

use std::time::Duration;

use common::raw::{Raw, put, watch_key, watch_prefix};
use store::ServerConfig;
use store::pb::etcdserverpb::{LeaseGrantRequest, WatchCreateRequest};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

async fn start(cfg: ServerConfig) -> store::ServerHandle {
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cfg
    };
    store::serve(cfg, CancellationToken::new()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notify_reports_quiet_watchers() {
    let server = start(ServerConfig {
        progress_notify_interval: Duration::from_millis(50),
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(&server.client_url()).await.unwrap();
    c.put(put("k", "v")).await.unwrap();
    let mut w = c
        .watch(WatchCreateRequest {
            progress_notify: true,
            ..watch_key("k")
        })
        .await
        .unwrap();
    let created = w.message().await.unwrap().unwrap();
    assert!(created.created);
    let notice = tokio::time::timeout(TIMEOUT, w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(notice.watch_id, created.watch_id);
    assert!(notice.events.is_empty() && !notice.canceled);
    assert_eq!(notice.header.unwrap().revision, 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_far_behind_gets_every_event_in_order() {
    // No history budget: the 5000 commits below (60 MB of history) stay in the log; with one,
    // the watcher would be told of the compaction instead (quota.rs tests that).
    let server = start(ServerConfig {
        history_bytes: None,
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(&server.client_url()).await.unwrap();
    let mut w = c.watch(watch_prefix("lag/")).await.unwrap();
    assert!(w.message().await.unwrap().unwrap().created);
    // Many commits with nobody reading: the session must catch up from the event log (4 KiB
    // values overflow the HTTP/2 windows, so the session stalls).
    const N: i64 = 5000;
    let value = vec![b'x'; 4096];
    for i in 0..N {
        c.put(put(format!("lag/{}", i % 7), value.clone()))
            .await
            .unwrap();
    }
    let mut next_rev = 2;
    tokio::time::timeout(TIMEOUT, async {
        while next_rev < 2 + N {
            let resp = w.message().await.unwrap().unwrap();
            assert!(!resp.canceled, "not canceled: {}", resp.cancel_reason);
            for ev in &resp.events {
                assert_eq!(
                    ev.kv.as_ref().unwrap().mod_revision,
                    next_rev,
                    "events in order, none missing"
                );
                next_rev += 1;
            }
        }
    })
    .await
    .expect("all events arrive");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams() {
    let server = start(ServerConfig::default()).await;
    let mut c = Raw::connect(&server.client_url()).await.unwrap();
    let mut w = c.watch(watch_key("x")).await.unwrap();
    assert!(w.message().await.unwrap().unwrap().created);
    let lease = c
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut keeper = c.keep_alive(lease.id).await.unwrap();
    keeper.keep_alive().await;
    assert_eq!(keeper.message().await.unwrap().unwrap().ttl, 60);

    tokio::time::timeout(TIMEOUT, server.shutdown())
        .await
        .expect("shutdown does not wait for clients to hang up");
    let ended = tokio::time::timeout(TIMEOUT, w.message())
        .await
        .expect("the watch ends");
    assert!(matches!(ended, Ok(None) | Err(_)));
}
