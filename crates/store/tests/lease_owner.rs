//! Leases belong to the user that granted them, and each non-root user may hold only so many
//! leases, watch streams and watchers: through real gRPC clients logged in as two mgmt hosts
//! (`a`, `b`) and root. A host that is compromised can do no more than its own credentials
//! allow: it cannot keep another host's liveness key alive, revoke or read its lease, attach
//! keys to it, or list it; another host's lease is to it as one that does not exist.

mod common;

use std::time::Duration;

use common::raw::{Raw, op_put, put, range, watch_key, watch_prefix};
use store::ServerConfig;
use store::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse,
    watch_request::RequestUnion,
};
use store::pb::mvccpb::event::EventType;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

const TIMEOUT: Duration = Duration::from_secs(30);
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const TOO_MANY: &str = "etcdserver: too many requests";
/// How a refused watcher's `cancel_reason` spells that error (etcd's gRPC error rendering).
const TOO_MANY_WATCHERS: &str =
    "rpc error: code = ResourceExhausted desc = etcdserver: too many requests";

/// A server with hosts `a` and `b`, auth on; their clients and root's.
async fn fleet(cfg: ServerConfig) -> (store::ServerHandle, Raw, Raw, Raw) {
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cfg
    };
    let server = store::serve(cfg, CancellationToken::new()).await.unwrap();
    server.add_host_user("a", "pw-a").unwrap();
    server.add_host_user("b", "pw-b").unwrap();
    server.enable_auth("rootpw").unwrap();
    let url = server.client_url();
    let a = Raw::login(&url, "a", "pw-a").await.unwrap();
    let b = Raw::login(&url, "b", "pw-b").await.unwrap();
    let root = Raw::login(&url, "root", "rootpw").await.unwrap();
    (server, a, b, root)
}

fn host_key(host: &str) -> String {
    format!("/_mgmt/hosts/{host}")
}

fn leased(key: &str, lease: i64) -> PutRequest {
    PutRequest {
        lease,
        ..put(key, "alive")
    }
}

fn assert_status(r: Result<impl std::fmt::Debug, Status>, code: Code, message: &str) {
    let e = r.expect_err("the request is refused");
    assert_eq!((e.code(), e.message()), (code, message), "{e:?}");
}

async fn grant(c: &mut Raw, ttl: i64) -> Result<LeaseGrantResponse, Status> {
    Ok(c.lease
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await?
        .into_inner())
}

async fn revoke(c: &mut Raw, id: i64) -> Result<(), Status> {
    c.lease.lease_revoke(LeaseRevokeRequest { id }).await?;
    Ok(())
}

async fn ttl(c: &mut Raw, id: i64) -> LeaseTimeToLiveResponse {
    c.lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await
        .unwrap()
        .into_inner()
}

async fn leases(c: &mut Raw) -> Vec<i64> {
    let mut ids: Vec<i64> = c
        .lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// An open keepalive stream, answered request by request.
struct Renewer {
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    acks: tonic::Streaming<LeaseKeepAliveResponse>,
}

impl Renewer {
    async fn open(c: &mut Raw) -> Renewer {
        let (tx, rx) = mpsc::channel(4);
        let acks = c
            .lease
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Renewer { tx, acks }
    }

    async fn renew(&mut self, id: i64) -> LeaseKeepAliveResponse {
        self.tx.send(LeaseKeepAliveRequest { id }).await.unwrap();
        self.acks.message().await.unwrap().expect("an answer")
    }
}

/// A watch stream opened by hand, so that its request side can be closed.
struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
}

impl Stream {
    async fn open(c: &mut Raw) -> Result<Stream, Status> {
        let (tx, rx) = mpsc::channel(16);
        let rx = c.watch.watch(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Stream { tx, rx })
    }

    async fn send(&self, req: RequestUnion) {
        let req = WatchRequest {
            request_union: Some(req),
        };
        self.tx.send(req).await.unwrap();
    }

    /// Creates a watcher on `key`; the server's answer (created, or created and cancelled).
    async fn create(&mut self, key: &str) -> WatchResponse {
        self.send(RequestUnion::CreateRequest(watch_key(key))).await;
        let resp = self.next().await.expect("an answer");
        assert!(resp.created, "{resp:?}");
        resp
    }

    async fn cancel(&mut self, watch_id: i64) {
        let req = store::pb::etcdserverpb::WatchCancelRequest { watch_id };
        self.send(RequestUnion::CancelRequest(req)).await;
        let resp = self.next().await.expect("an answer");
        assert!(resp.canceled && resp.watch_id == watch_id, "{resp:?}");
    }

    async fn next(&mut self) -> Option<WatchResponse> {
        tokio::time::timeout(TIMEOUT, self.rx.message())
            .await
            .expect("the server answers in time")
            .unwrap()
    }

    /// Closes the request side and waits for the server to end the stream: by then the session
    /// has given its places back.
    async fn close(self) {
        let Stream { tx, mut rx } = self;
        drop(tx);
        let end = tokio::time::timeout(TIMEOUT, async {
            while rx.message().await.unwrap().is_some() {}
        });
        end.await.expect("the server ends the stream");
    }
}

fn refused_watcher(resp: &WatchResponse) {
    assert!(resp.created && resp.canceled, "{resp:?}");
    assert_eq!(resp.watch_id, -1);
    assert_eq!(resp.cancel_reason, TOO_MANY_WATCHERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_hosts_lease_is_as_one_that_does_not_exist_and_still_expires() {
    let (server, mut a, mut b, mut root) = fleet(ServerConfig::default()).await;
    // a registers: its liveness key under the shortest lease there is (etcd's minimum, 2 s).
    let la = grant(&mut a, 1).await.unwrap();
    assert_eq!(la.ttl, 2);
    let registered = a.put(leased(&host_key("a"), la.id)).await.unwrap();
    let registered = registered.header.unwrap().revision;
    let lb = grant(&mut b, 60).await.unwrap();
    b.put(leased(&host_key("b"), lb.id)).await.unwrap();
    // b can read a's key (hosts read all of /_mgmt/), lease id included: knowing it is no use.
    let kv = &b.range(range(host_key("a"))).await.unwrap().kvs[0];
    assert_eq!(kv.lease, la.id);

    // Its owner renews it; b gets etcd's answers for a lease that does not exist.
    let mut a_renewer = Renewer::open(&mut a).await;
    assert_eq!(a_renewer.renew(la.id).await.ttl, 2);
    let mut b_renewer = Renewer::open(&mut b).await;
    let ack = b_renewer.renew(la.id).await;
    assert_eq!((ack.id, ack.ttl), (la.id, 0), "keepalive: TTL 0");
    let unknown = ttl(&mut b, la.id).await;
    assert_eq!(
        (
            unknown.id,
            unknown.ttl,
            unknown.granted_ttl,
            unknown.keys.len()
        ),
        (la.id, -1, 0, 0),
        "time-to-live: TTL -1"
    );
    assert_status(revoke(&mut b, la.id).await, Code::NotFound, LEASE_NOT_FOUND);
    // Nor can b attach its own key to a's lease (to have it kept alive or deleted by a's),
    // in a put or a txn.
    assert_status(
        b.put(leased(&host_key("b"), la.id)).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    let txn = TxnRequest {
        success: vec![op_put(leased(&host_key("b"), la.id))],
        ..Default::default()
    };
    assert_status(b.txn(txn).await, Code::NotFound, LEASE_NOT_FOUND);
    // Nor pick an id, which would tell it whether the id is taken.
    assert_status(
        b.lease
            .lease_grant(LeaseGrantRequest { ttl: 60, id: la.id })
            .await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    // Listing: each host its own; root all (a renews first, the checks below need its lease).
    assert_eq!(a_renewer.renew(la.id).await.ttl, 2);
    assert_eq!(leases(&mut a).await, vec![la.id]);
    assert_eq!(leases(&mut b).await, vec![lb.id]);
    let mut both = vec![la.id, lb.id];
    both.sort_unstable();
    assert_eq!(leases(&mut root).await, both);
    // Root still sees and may renew anyone's.
    let seen = ttl(&mut root, la.id).await;
    assert_eq!(seen.granted_ttl, 2);
    assert_eq!(seen.keys, vec![host_key("a").into_bytes()]);
    let mut root_renewer = Renewer::open(&mut root).await;
    assert_eq!(root_renewer.renew(lb.id).await.ttl, 60);

    // a stops renewing (it died); b keeps renewing a's lease as fast as the server answers,
    // and a's key expires anyway: b's watch (from a's registration on, so that it cannot miss
    // the deletion however slow this test runs) sees it deleted.
    let mut watch = b
        .watch(WatchCreateRequest {
            start_revision: registered + 1,
            ..watch_key(host_key("a"))
        })
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created);
    drop(a_renewer);
    let stop = CancellationToken::new();
    let attack = tokio::spawn({
        let stop = stop.clone();
        let id = la.id;
        async move {
            let mut answers = 0u64;
            while !stop.is_cancelled() {
                let ack = b_renewer.renew(id).await;
                assert_eq!(ack.ttl, 0, "never renewed for b");
                answers += 1;
            }
            answers
        }
    });
    let deleted = tokio::time::timeout(TIMEOUT, async {
        loop {
            let resp = watch.message().await.unwrap().expect("the watch goes on");
            if let Some(ev) = resp.events.first() {
                break ev.clone();
            }
        }
    })
    .await
    .expect("a's key expires although b renews a's lease");
    stop.cancel();
    let answers = attack.await.unwrap();
    assert!(answers > 0);
    assert_eq!(deleted.r#type, EventType::Delete as i32);
    assert_eq!(deleted.kv.unwrap().key, host_key("a").into_bytes());
    assert!(
        root.range(range(host_key("a")))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    assert_eq!(ttl(&mut root, la.id).await.ttl, -1, "the lease is gone");
    assert_eq!(leases(&mut root).await, vec![lb.id]);
    // b's own lease and key are untouched.
    assert_eq!(b.range(range(host_key("b"))).await.unwrap().kvs.len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_ones_own_lease_never_deletes_another_hosts_keys() {
    let (server, mut a, mut b, mut root) = fleet(ServerConfig::default()).await;
    let la = grant(&mut a, 60).await.unwrap();
    a.put(leased(&host_key("a"), la.id)).await.unwrap();
    b.put(put(host_key("b"), "alive")).await.unwrap();
    // A host's lease can carry only its own keys: attaching needs both the lease (b does not
    // own a's) and write permission on the key (a may not write b's).
    assert_status(
        b.put(leased(&host_key("b"), la.id)).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    assert_status(
        a.put(leased(&host_key("b"), la.id)).await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    assert_eq!(ttl(&mut root, la.id).await.keys.len(), 1);
    // Only root can attach b's key to a's lease; then a cannot revoke its own lease, since
    // that would delete a key it may not delete.
    root.put(leased(&host_key("b"), la.id)).await.unwrap();
    assert_status(
        revoke(&mut a, la.id).await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    assert_eq!(b.range(range(host_key("b"))).await.unwrap().kvs.len(), 1);
    assert_eq!(ttl(&mut a, la.id).await.keys.len(), 2, "a's lease lives on");
    // Back to a's keys only: a revokes, and only its key goes.
    b.put(put(host_key("b"), "alive")).await.unwrap();
    revoke(&mut a, la.id).await.unwrap();
    assert!(a.range(range(host_key("a"))).await.unwrap().kvs.is_empty());
    assert_eq!(b.range(range(host_key("b"))).await.unwrap().kvs.len(), 1);
    assert_status(revoke(&mut a, la.id).await, Code::NotFound, LEASE_NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_past_its_lease_cap_is_refused_until_one_goes() {
    let (server, mut a, mut b, mut root) = fleet(ServerConfig {
        max_user_leases: 3,
        ..ServerConfig::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(grant(&mut a, 60).await.unwrap().id);
    }
    assert_status(grant(&mut a, 60).await, Code::ResourceExhausted, TOO_MANY);
    assert_eq!(leases(&mut a).await.len(), 3, "the refusal granted nothing");
    // The cap is a's own: b, and root, are not held back by it.
    for _ in 0..3 {
        grant(&mut b, 60).await.unwrap();
    }
    for _ in 0..5 {
        grant(&mut root, 60).await.unwrap();
    }
    // A revoked lease frees its place (an expired one too: the core's unit test).
    revoke(&mut a, held[0]).await.unwrap();
    grant(&mut a, 60).await.unwrap();
    assert_status(grant(&mut a, 60).await, Code::ResourceExhausted, TOO_MANY);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_past_its_watch_caps_is_refused_until_one_goes() {
    let (server, mut a, mut b, mut root) = fleet(ServerConfig {
        max_user_watch_streams: 2,
        max_user_watchers: 3,
        ..ServerConfig::default()
    })
    .await;
    // Three watchers on a's first stream: its whole watcher cap.
    let mut first = Stream::open(&mut a).await.unwrap();
    let mut ids = Vec::new();
    for host in ["a", "b", "c"] {
        let created = first.create(&host_key(host)).await;
        assert!(!created.canceled, "{created:?}");
        ids.push(created.watch_id);
    }
    // A second stream is within the stream cap, but its watcher is one too many, across streams.
    let mut second = Stream::open(&mut a).await.unwrap();
    refused_watcher(&second.create("/_mgmt/exported/").await);
    // A third stream is one too many.
    assert_status(
        Stream::open(&mut a).await.map(|_| ()),
        Code::ResourceExhausted,
        TOO_MANY,
    );
    // Other users are not held back by a's caps: b has caps of its own, root none.
    let mut others = Vec::new();
    for _ in 0..2 {
        let mut s = Stream::open(&mut b).await.unwrap();
        assert!(!s.create(&host_key("b")).await.canceled);
        others.push(s);
    }
    assert_status(
        Stream::open(&mut b).await.map(|_| ()),
        Code::ResourceExhausted,
        TOO_MANY,
    );
    for _ in 0..5 {
        let mut w = root.watch(watch_prefix("/")).await.unwrap();
        assert!(!w.message().await.unwrap().unwrap().canceled);
        others.push(Stream::open(&mut root).await.unwrap());
    }

    // A cancelled watcher frees its place; the refused one had taken none.
    first.cancel(ids[0]).await;
    let created = second.create(&host_key("a")).await;
    assert!(!created.canceled, "{created:?}");
    refused_watcher(&second.create(&host_key("b")).await);
    // The watchers still work: a put on a watched key is seen.
    a.put(put(host_key("a"), "alive")).await.unwrap();
    let ev = second.next().await.unwrap();
    assert_eq!(ev.watch_id, created.watch_id);
    assert_eq!(
        ev.events[0].kv.as_ref().unwrap().key,
        host_key("a").into_bytes()
    );
    // A closed stream frees its place and its watchers' (two on `first`).
    first.close().await;
    let mut third = Stream::open(&mut a).await.unwrap();
    for host in ["b", "c"] {
        assert!(!third.create(&host_key(host)).await.canceled);
    }
    refused_watcher(&third.create("/_mgmt/converged/").await);
    assert_status(
        Stream::open(&mut a).await.map(|_| ()),
        Code::ResourceExhausted,
        TOO_MANY,
    );
    server.shutdown().await;
}
