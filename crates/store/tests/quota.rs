//! The embedded server's limits, through a real gRPC client: etcd's request size limit, the
//! total quota, each host user's own quota, and the history budget, with etcd's error codes
//! and messages; and the attack they are for (one host writing 240 values of 1 MB under its
//! own prefix) leaving the server's memory bounded.

mod common;

use std::time::Duration;

use common::raw::{Raw, delete, op_delete, op_put, put, range, range_prefix, watch_prefix};
use store::pb::etcdserverpb::{LeaseGrantRequest, PutRequest, TxnRequest, WatchCreateRequest};
use store::{Quota, ServerConfig};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

const TIMEOUT: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
const TOO_LARGE: &str = "etcdserver: request is too large";

async fn start(cfg: ServerConfig) -> store::ServerHandle {
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cfg
    };
    store::serve(cfg, CancellationToken::new()).await.unwrap()
}

/// A server with hosts `h1` and `h2` (each with `quota`), auth on; their clients and root's.
async fn fleet(cfg: ServerConfig) -> (store::ServerHandle, Raw, Raw, Raw) {
    let server = start(cfg).await;
    server.add_host_user("h1", "pw1").unwrap();
    server.add_host_user("h2", "pw2").unwrap();
    server.enable_auth("rootpw").unwrap();
    let url = server.client_url();
    let h1 = Raw::login(&url, "h1", "pw1").await.unwrap();
    let h2 = Raw::login(&url, "h2", "pw2").await.unwrap();
    let root = Raw::login(&url, "root", "rootpw").await.unwrap();
    (server, h1, h2, root)
}

fn own(host: &str, name: &str) -> String {
    format!("{}file/{name}", store::keys::exported_host(host))
}

fn assert_status(r: Result<impl std::fmt::Debug, Status>, code: Code, message: &str) {
    let e = r.expect_err("the request is refused");
    assert_eq!((e.code(), e.message()), (code, message), "{e:?}");
}

fn no_space(r: Result<impl std::fmt::Debug, Status>) {
    assert_status(r, Code::ResourceExhausted, NO_SPACE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_past_its_key_or_byte_quota_is_refused_and_nothing_changes() {
    let (server, mut h1, mut h2, mut root) = fleet(ServerConfig {
        host_quota: Quota {
            max_keys: 3,
            max_bytes: 4096,
        },
        ..ServerConfig::default()
    })
    .await;
    for i in 0..3 {
        h1.put(put(own("h1", &i.to_string()), "x")).await.unwrap();
    }
    let rev = root.revision().await.unwrap();
    // A fourth key, anywhere h1 may write (its converged flag counts too).
    no_space(h1.put(put(own("h1", "3"), "x")).await);
    no_space(h1.put(put("/_mgmt/converged/h1", "true")).await);
    // Past the bytes: one value of 4 KiB.
    no_space(h1.put(put(own("h1", "0"), vec![b'x'; 4096])).await);
    // Lease-attached puts are puts like any other.
    let lease = h1
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner();
    no_space(
        h1.put(PutRequest {
            lease: lease.id,
            ..put("/_mgmt/hosts/h1", "alive")
        })
        .await,
    );
    assert_eq!(
        root.revision().await.unwrap(),
        rev,
        "refused writes change nothing"
    );
    let values = root.range(range(own("h1", "0"))).await.unwrap().kvs;
    assert_eq!(values[0].value, b"x");
    assert!(
        root.range(range(own("h1", "3")))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );

    // Overwrites within the bytes pass; so does a delete, which makes room for a new key.
    h1.put(put(own("h1", "0"), vec![b'y'; 1000])).await.unwrap();
    h1.delete(delete(own("h1", "2"))).await.unwrap();
    h1.put(PutRequest {
        lease: lease.id,
        ..put("/_mgmt/hosts/h1", "alive")
    })
    .await
    .unwrap();

    // The other hosts, and root, are not held back by h1's quota.
    for i in 0..3 {
        h2.put(put(own("h2", &i.to_string()), "x")).await.unwrap();
    }
    root.put(put("/elsewhere", vec![b'r'; 100_000]))
        .await
        .unwrap();
    // Raising h1's quota takes effect at the next write.
    server
        .set_quota(
            "h1",
            Quota {
                max_keys: 10,
                max_bytes: 4096,
            },
        )
        .unwrap();
    h1.put(put(own("h1", "3"), "x")).await.unwrap();
    assert!(server.set_quota("nobody", Quota::HOST).is_err());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_past_the_quota_fails_whole() {
    let (server, mut h1, _h2, mut root) = fleet(ServerConfig {
        host_quota: Quota {
            max_keys: 4,
            max_bytes: MIB,
        },
        ..ServerConfig::default()
    })
    .await;
    h1.put(put(own("h1", "a"), "1")).await.unwrap();
    h1.put(put(own("h1", "b"), "1")).await.unwrap();
    let rev = root.revision().await.unwrap();
    // Three new keys where two fit: none is written.
    let grow = TxnRequest {
        success: ["c", "d", "e"]
            .map(|k| op_put(put(own("h1", k), "1")))
            .to_vec(),
        ..Default::default()
    };
    no_space(h1.txn(grow).await);
    assert_eq!(root.revision().await.unwrap(), rev);
    let all = root
        .range(range_prefix(store::keys::exported_host("h1")))
        .await
        .unwrap();
    assert_eq!(all.count, 2);
    // What publish_exports sends: deletes and puts together, counted together.
    let swap = TxnRequest {
        success: vec![
            op_delete(delete(own("h1", "a"))),
            op_delete(delete(own("h1", "b"))),
            op_put(put(own("h1", "c"), "1")),
            op_put(put(own("h1", "d"), "1")),
            op_put(put(own("h1", "e"), "1")),
            op_put(put(own("h1", "f"), "1")),
        ],
        ..Default::default()
    };
    assert!(h1.txn(swap).await.unwrap().succeeded);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_max_request_bytes_are_refused_for_everyone() {
    let (server, mut h1, mut h2, mut root) = fleet(ServerConfig::default()).await;
    let rev = root.revision().await.unwrap();
    // 2 MB: past etcd's 1.5 MiB, within the transport's 2 MiB.
    let two_mb = vec![b'x'; 2_000_000];
    for client in [&mut h1, &mut root] {
        assert_status(
            client.put(put(own("h1", "big"), two_mb.clone())).await,
            Code::InvalidArgument,
            TOO_LARGE,
        );
    }
    let txn = TxnRequest {
        success: vec![
            op_put(put(own("h1", "a"), vec![b'x'; 1_000_000])),
            op_put(put(own("h1", "b"), vec![b'x'; 1_000_000])),
        ],
        ..Default::default()
    };
    assert_status(h1.txn(txn).await, Code::InvalidArgument, TOO_LARGE);
    // 100 MB: refused by the transport from the message's length prefix, without reading it.
    let err = root
        .put(put("/huge", vec![b'x'; 100_000_000]))
        .await
        .expect_err("a 100 MB request is refused");
    eprintln!("a 100 MB request: {:?} {}", err.code(), err.message());
    assert_ne!(err.code(), Code::Ok);
    assert!(
        server.memory().total() < MIB,
        "nothing was kept: {:?}",
        server.memory()
    );
    assert_eq!(root.revision().await.unwrap(), rev);
    // Just under the limit passes, and other hosts are unaffected.
    h1.put(put(own("h1", "ok"), vec![b'x'; 1_500_000]))
        .await
        .unwrap();
    h2.put(put(own("h2", "ok"), "fine")).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_quota_refuses_puts_and_leases_until_room_is_made() {
    let server = start(ServerConfig {
        quota_backend_bytes: Some(8 * MIB),
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(&server.client_url()).await.unwrap();
    let value = vec![b'v'; 1_000_000];
    let mut stored = 0;
    let err = loop {
        match c.put(put(format!("/k/{stored}"), value.clone())).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 20, "the quota refuses at some point");
    };
    assert_eq!(
        (err.code(), err.message()),
        (Code::ResourceExhausted, NO_SPACE)
    );
    assert!(stored >= 3, "{stored} stored");
    assert!(server.memory().total() <= 8 * MIB, "{:?}", server.memory());
    // Deletes are never refused; they make room (their history is compacted as needed).
    c.delete(store::pb::etcdserverpb::DeleteRangeRequest {
        key: b"/k/".to_vec(),
        range_end: b"/k0".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.put(put("/k/again", value.clone())).await.unwrap();
    server.shutdown().await;
}

/// The fault this is all for: a host writing 240 values of 1 MB under its own prefix, with
/// its own credentials, while the other hosts watch the exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_of_240_puts_of_one_mb_leaves_memory_bounded() {
    let cfg = ServerConfig::default();
    // What may be kept: one host's quota of live bytes, the history budget, and the commit
    // that went past the budget (1 MB, twice: its version and its copy in the log), with
    // each entry's overhead.
    let bound = cfg.host_quota.max_bytes + cfg.history_bytes.unwrap() + 4 * MIB;
    let (server, mut h1, mut h2, _root) = fleet(cfg).await;
    // A collector that watches the exports and never reads: it must not pin the history.
    let mut idle = h2.watch(watch_prefix("/_mgmt/exported/")).await.unwrap();
    assert!(idle.message().await.unwrap().unwrap().created);

    let value = vec![b'a'; 1_000_000];
    let mut refused = 0;
    for i in 0..240 {
        match h1.put(put(own("h1", &i.to_string()), value.clone())).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!((e.code(), e.message()), (Code::ResourceExhausted, NO_SPACE));
                refused += 1;
            }
        }
        let mem = server.memory();
        assert!(
            mem.total() < bound,
            "after put {i}: {mem:?} (bound {bound})"
        );
    }
    assert_eq!(refused, 240 - 16, "16 values of 1 MB fit a 16 MiB quota");
    // The same host overwriting one key 240 times: live data stays at 1 MB, history at its
    // budget.
    for i in 0..240 {
        h1.put(put(own("h1", "0"), vec![b'b' + (i % 20) as u8; 1_000_000]))
            .await
            .unwrap();
        let mem = server.memory();
        assert!(
            mem.total() < bound,
            "after overwrite {i}: {mem:?} (bound {bound})"
        );
    }
    let mem = server.memory();
    assert!(mem.history_bytes <= store::DEFAULT_HISTORY_BYTES, "{mem:?}");
    eprintln!("after the attack: {mem:?}, bound {bound}");

    // Everyone else still writes.
    h2.put(put(own("h2", "fine"), "ok")).await.unwrap();
    // The idle collector fell behind the compactions: once it reads, it is told so (after
    // what was in flight), as etcd tells a watcher from a compacted revision.
    let compacted = tokio::time::timeout(TIMEOUT, async {
        loop {
            let resp = idle
                .message()
                .await
                .unwrap()
                .expect("the stream stays open");
            if resp.canceled {
                return resp.compact_revision;
            }
        }
    })
    .await
    .expect("the watcher is cancelled");
    assert!(compacted > 2, "compact revision {compacted}");
    // A new watcher from revision 2 too, at once.
    let mut late = h2
        .watch(WatchCreateRequest {
            start_revision: 2,
            ..watch_prefix("/_mgmt/exported/")
        })
        .await
        .unwrap();
    assert!(late.message().await.unwrap().unwrap().created);
    let resp = tokio::time::timeout(TIMEOUT, late.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(resp.canceled && resp.compact_revision > 2, "{resp:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_within_the_history_budget_gets_every_event() {
    let server = start(ServerConfig {
        history_bytes: Some(8 * MIB),
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(&server.client_url()).await.unwrap();
    let mut w = c.watch(watch_prefix("/w/")).await.unwrap();
    assert!(w.message().await.unwrap().unwrap().created);
    // 1 MiB of history, unread: well within the budget.
    for i in 0..100 {
        c.put(put(format!("/w/{}", i % 5), vec![b'x'; 5000]))
            .await
            .unwrap();
    }
    let mut next_rev = 2;
    tokio::time::timeout(TIMEOUT, async {
        while next_rev < 102 {
            let resp = w.message().await.unwrap().unwrap();
            assert!(!resp.canceled);
            for ev in resp.events {
                assert_eq!(ev.kv.unwrap().mod_revision, next_rev);
                next_rev += 1;
            }
        }
    })
    .await
    .expect("every event arrives");
    server.shutdown().await;
}
