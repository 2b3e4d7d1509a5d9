//! Fuzzing the embedded server's request decoding and handling, property-based (proptest:
//! stable Rust has no coverage-guided fuzzer).
//!
//! - Any bytes decode as any request type, or fail to, without a panic, and what decodes
//!   encodes back to itself; so do mutations of valid requests and txns nested past prost's
//!   recursion limit.
//! - Any bytes sent as any unary or streaming request to a real server over gRPC get an answer
//!   or a status, and the server serves on.
//! - Well-typed requests of every kind (empty and `\0` keys, `\0` range ends, huge limits,
//!   negative revisions, nested txns, sort options, leases, watches, users and roles) get an
//!   answer or a status; the server never panics, revisions never go back, and what it holds
//!   afterwards is what its watch history says. Half the cases run under tight limits (a few
//!   revisions kept, a history and a total quota of a few KiB), where no put or lease grant
//!   may take the store past its quota.
//! - Puts, deletes, ranges and compactions agree, response by response, with a model of etcd's
//!   semantics (values, versions, revisions, history, errors).
//!
//! Bounded: each property runs a fixed number of cases (a few seconds for the whole file in a
//! debug build); `MGMT_FUZZ_CASES=N` runs N cases of every property, `PROPTEST_RNG_SEED=S`
//! replays one run. A failure is saved under `tests/fuzz-regressions/` and replayed first by
//! later runs; each crash found is kept below as a plain test with its minimized input.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::raw::Raw;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use store::ServerConfig;
use store::pb::authpb::{Permission, UserAddOptions};
use store::pb::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, AuthenticateRequest,
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    RequestOp, ResponseHeader, StatusRequest, TxnRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, compare, request_op, watch_request,
};
use store::pb::mvccpb::{KeyValue, event::EventType};
use tokio::runtime::Runtime;
use tokio_stream::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

// ------------------------------------------------------------------------------ harness

/// `default` cases, or `MGMT_FUZZ_CASES`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("MGMT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz-regressions/fuzz.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// How long one request may take before the server counts as hung (a debug build on a busy
/// 2-core machine answers in milliseconds).
const ANSWER: Duration = Duration::from_secs(20);

/// The name of the runtime's threads, where the server's tasks run: a panic on one is the
/// server's.
const SERVER_THREADS: &str = "store-fuzz";
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(SERVER_THREADS) {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            prev(info)
        }));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(SERVER_THREADS)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Runs `case` against a fresh server (its URL given), then checks that nothing panicked in
/// the server and that it still answers.
fn with_server<F, Fut>(case: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    with_server_limits(None, case)
}

/// Tight limits for a server: (retention, history bytes, total quota), to make it compact
/// and refuse writes within a few requests.
type Limits = Option<(u64, u64, u64)>;

fn limits() -> impl Strategy<Value = Limits> {
    prop::option::of((1u64..6, 128u64..4096, 256u64..8192))
}

/// [`with_server`] on a server with `limits`.
fn with_server_limits<F, Fut>(limits: Limits, case: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut cfg = test_config();
    if let Some((retention, history, quota)) = limits {
        cfg.retention = Some(retention);
        cfg.history_bytes = Some(history);
        cfg.quota_backend_bytes = Some(quota);
    }
    with_server_config(cfg, case)
}

/// The default configuration, on a free port.
fn test_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }
}

/// [`with_server`] on a server configured as `cfg`.
fn with_server_config<F, Fut>(cfg: ServerConfig, case: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let panics = SERVER_PANICS.load(Ordering::SeqCst);
    runtime().block_on(async {
        let server = store::serve(cfg, tokio_util::sync::CancellationToken::new())
            .await
            .expect("the server starts");
        let url = server.client_url();
        case(url.clone()).await;
        let mut raw = Raw::connect(&url).await.expect("connects after the case");
        answer(raw.maintenance.status(StatusRequest {}))
            .await
            .expect("Status answers after the case");
        tokio::time::timeout(ANSWER, server.shutdown())
            .await
            .expect("the server shuts down");
    });
    assert_eq!(
        SERVER_PANICS.load(Ordering::SeqCst),
        panics,
        "a server task panicked (see the output above)"
    );
}

/// A request's outcome, which must come within [`ANSWER`].
async fn answer<T>(
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(ANSWER, call).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => panic!("no answer within {ANSWER:?}"),
    }
}

/// A status a well-typed request may get: one of etcd's errors, never a sign of a crash.
fn expected_status(s: &Status) {
    assert!(
        !matches!(
            s.code(),
            Code::Unknown | Code::Internal | Code::Unavailable | Code::DataLoss | Code::Cancelled
        ),
        "a status that looks like a crash: {s:?}"
    );
    assert!(!s.message().is_empty(), "a status without a message: {s:?}");
}

// ------------------------------------------------------------------------------ raw gRPC

/// A codec that sends and receives the bytes as they are: any bytes as any request.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

const UNARY: &[&str] = &[
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.KV/DeleteRange",
    "/etcdserverpb.KV/Txn",
    "/etcdserverpb.KV/Compact",
    "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Lease/LeaseTimeToLive",
    "/etcdserverpb.Lease/LeaseLeases",
    "/etcdserverpb.Auth/AuthStatus",
    "/etcdserverpb.Auth/Authenticate",
    "/etcdserverpb.Auth/UserAdd",
    "/etcdserverpb.Auth/UserGet",
    "/etcdserverpb.Auth/UserList",
    "/etcdserverpb.Auth/UserDelete",
    "/etcdserverpb.Auth/UserChangePassword",
    "/etcdserverpb.Auth/UserGrantRole",
    "/etcdserverpb.Auth/UserRevokeRole",
    "/etcdserverpb.Auth/RoleAdd",
    "/etcdserverpb.Auth/RoleGet",
    "/etcdserverpb.Auth/RoleList",
    "/etcdserverpb.Auth/RoleDelete",
    "/etcdserverpb.Auth/RoleGrantPermission",
    "/etcdserverpb.Auth/RoleRevokePermission",
    "/etcdserverpb.Auth/AuthDisable",
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/Alarm",
    "/etcdserverpb.Cluster/MemberList",
    "/etcdserverpb.Cluster/MemberAdd",
    "/etcdserverpb.KV/NoSuchMethod",
];

const STREAMING: &[&str] = &[
    "/etcdserverpb.Watch/Watch",
    "/etcdserverpb.Lease/LeaseKeepAlive",
];

/// Sends `frames` to `path` as they are; a unary call takes the first frame. The answer (or
/// status) must come, and for a stream, its end once the requests end.
async fn send_raw(channel: &Channel, path: &'static str, frames: Vec<Vec<u8>>) {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    tokio::time::timeout(ANSWER, grpc.ready())
        .await
        .expect("the channel gets ready in time")
        .expect("the channel is ready");
    let name = path;
    let path = PathAndQuery::from_static(path);
    if !STREAMING.contains(&name) {
        let frame = frames.into_iter().next().unwrap_or_default();
        let call = grpc.unary::<_, Vec<u8>, _>(tonic::Request::new(frame), path, RawCodec);
        let _ = answer(call).await;
        return;
    }
    let requests = tokio_stream::iter(frames);
    let call = grpc.streaming::<_, _, Vec<u8>, _>(tonic::Request::new(requests), path, RawCodec);
    let Ok(mut responses) = answer(call).await else {
        return;
    };
    let drained = tokio::time::timeout(ANSWER, async {
        while let Some(Ok(_)) = responses.next().await {}
    })
    .await;
    assert!(drained.is_ok(), "the stream on {name} does not end");
}

// ------------------------------------------------------------------------------ decoding

/// Decodes `bytes` as `M`: an error or a message that encodes back to itself.
fn decodes<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(m) = M::decode(bytes) {
        let again = M::decode(m.encode_to_vec().as_slice()).expect("an encoded message decodes");
        assert_eq!(m, again, "a message changes through encoding");
    }
    let _ = M::decode_length_delimited(bytes);
}

/// `bytes` as every request the server takes.
fn decode_as_every_request(bytes: &[u8]) {
    decodes::<RangeRequest>(bytes);
    decodes::<PutRequest>(bytes);
    decodes::<DeleteRangeRequest>(bytes);
    decodes::<TxnRequest>(bytes);
    decodes::<CompactionRequest>(bytes);
    decodes::<LeaseGrantRequest>(bytes);
    decodes::<LeaseRevokeRequest>(bytes);
    decodes::<LeaseKeepAliveRequest>(bytes);
    decodes::<LeaseTimeToLiveRequest>(bytes);
    decodes::<WatchRequest>(bytes);
    decodes::<AuthenticateRequest>(bytes);
    decodes::<AuthUserAddRequest>(bytes);
    decodes::<AuthUserGetRequest>(bytes);
    decodes::<AuthUserDeleteRequest>(bytes);
    decodes::<AuthUserChangePasswordRequest>(bytes);
    decodes::<AuthUserGrantRoleRequest>(bytes);
    decodes::<AuthUserRevokeRoleRequest>(bytes);
    decodes::<AuthRoleAddRequest>(bytes);
    decodes::<AuthRoleGetRequest>(bytes);
    decodes::<AuthRoleDeleteRequest>(bytes);
    decodes::<AuthRoleGrantPermissionRequest>(bytes);
    decodes::<AuthRoleRevokePermissionRequest>(bytes);
}

/// A txn nested `depth` levels deep in its success branch.
fn nested_txn(depth: usize) -> TxnRequest {
    let mut txn = TxnRequest::default();
    for _ in 0..depth {
        txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(txn)),
            }],
            ..Default::default()
        };
    }
    txn
}

// ------------------------------------------------------------------------------ requests

/// Keys that meet at edges: empty, `\0`, `\xff`, prefixes of each other.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        20 => prop::sample::select(vec![
            &b"\0"[..], b"\0\0", b"a", b"a\0", b"ab", b"b", b"\xff", b"\xff\xff", b"/k/", b"/k/x",
            b"/k0",
        ])
        .prop_map(<[u8]>::to_vec),
        2 => prop::collection::vec(any::<u8>(), 1..4),
    ]
}

/// A range end for `key`: one key, every key from it, its prefix, another key...
fn range_end(start: Vec<u8>) -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let prefix = if start.is_empty() {
        vec![0]
    } else {
        store::prefix_end(&start)
    };
    prop_oneof![
        Just(Vec::new()),
        Just(vec![0]),
        Just(prefix),
        Just(start.clone()),
        key(),
    ]
    .prop_map(move |end| (start.clone(), end))
}

fn keys() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    key().prop_flat_map(range_end)
}

/// Revisions around the few a case makes, and the extremes.
fn revision() -> BoxedStrategy<i64> {
    prop_oneof![
        4 => -2i64..12,
        1 => prop::sample::select(vec![i64::MIN, i64::MIN + 1, -1, i64::MAX, i64::MAX - 1]),
    ]
    .boxed()
}

fn limit() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -2i64..6,
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, i64::MAX - 1, i64::from(u32::MAX)]),
    ]
}

/// Sort orders and targets, unknown values included.
fn enum_value(known: i32) -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0..known, 1 => any::<i32>()]
}

fn range_request() -> impl Strategy<Value = RangeRequest> {
    (
        keys(),
        limit(),
        revision(),
        (enum_value(3), enum_value(5)),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        prop::array::uniform4(prop_oneof![3 => Just(0i64), 1 => revision()]),
    )
        .prop_map(
            |((key, range_end), limit, revision, (order, target), flags, filters)| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order: order,
                sort_target: target,
                serializable: flags.0,
                keys_only: flags.1,
                count_only: flags.2,
                min_mod_revision: filters[0],
                max_mod_revision: filters[1],
                min_create_revision: filters[2],
                max_create_revision: filters[3],
            },
        )
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..8),
        2 => prop::collection::vec(any::<u8>(), 0..600),
        1 => prop::collection::vec(any::<u8>(), 500..4000),
    ]
}

fn put_request(lease: BoxedStrategy<i64>) -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        lease,
        prop::array::uniform3(prop::bool::weighted(0.2)),
    )
        .prop_map(
            |(key, value, lease, [prev_kv, ignore_value, ignore_lease])| PutRequest {
                key,
                value: if ignore_value && value.len() % 2 == 0 {
                    Vec::new()
                } else {
                    value
                },
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete_request() -> impl Strategy<Value = DeleteRangeRequest> {
    (keys(), any::<bool>()).prop_map(|((key, range_end), prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn lease_id() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => Just(0i64),
        2 => 1i64..4,
        1 => prop::sample::select(vec![-1, i64::MIN, i64::MAX]),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    use compare::TargetUnion as T;
    let union = prop_oneof![
        Just(None),
        revision().prop_map(|v| Some(T::Version(v))),
        revision().prop_map(|v| Some(T::CreateRevision(v))),
        revision().prop_map(|v| Some(T::ModRevision(v))),
        value().prop_map(|v| Some(T::Value(v))),
        lease_id().prop_map(|v| Some(T::Lease(v))),
    ];
    (keys(), enum_value(4), enum_value(5), union).prop_map(
        |((key, range_end), result, target, target_union)| Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        },
    )
}

fn txn_request() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        range_request().prop_map(request_op::Request::RequestRange),
        put_request(lease_id().boxed()).prop_map(request_op::Request::RequestPut),
        delete_request().prop_map(request_op::Request::RequestDeleteRange),
    ]
    .prop_map(|r| RequestOp { request: Some(r) });
    let op = leaf.prop_recursive(3, 24, 4, |inner| {
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(inner.clone(), 0..4),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(compare, success, failure)| RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest {
                    compare,
                    success,
                    failure,
                })),
            })
    });
    let ops = prop_oneof![
        10 => prop::collection::vec(op.clone(), 0..5),
        1 => prop::collection::vec(op, 120..140),
    ];
    (prop::collection::vec(compare(), 0..3), ops.clone(), ops).prop_map(
        |(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        },
    )
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["root", "u1", "r1", "", "r00t", "\u{0}", "é"]).prop_map(String::from)
}

/// Passwords from a known set: the case's end can always log in as root.
const PASSWORDS: [&str; 2] = ["pw", ""];

fn password() -> impl Strategy<Value = String> {
    prop::sample::select(PASSWORDS.to_vec()).prop_map(String::from)
}

fn watch_request() -> impl Strategy<Value = WatchRequest> {
    use watch_request::RequestUnion as U;
    let create = (
        keys(),
        revision(),
        prop::collection::vec(prop_oneof![0i32..2, any::<i32>()], 0..3),
        prop::array::uniform3(any::<bool>()),
        prop_oneof![3 => Just(0i64), 1 => revision()],
    )
        .prop_map(
            |((key, range_end), start_revision, filters, [progress, prev_kv, fragment], id)| {
                U::CreateRequest(WatchCreateRequest {
                    key,
                    range_end,
                    start_revision,
                    progress_notify: progress,
                    filters,
                    prev_kv,
                    watch_id: id,
                    fragment,
                })
            },
        );
    prop_oneof![
        4 => create,
        1 => revision().prop_map(|watch_id| U::CancelRequest(WatchCancelRequest { watch_id })),
        1 => Just(U::ProgressRequest(WatchProgressRequest {})),
    ]
    .prop_map(|u| WatchRequest {
        request_union: Some(u),
    })
}

/// One request of any kind the server serves.
#[derive(Clone, Debug)]
enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseTtl(LeaseTimeToLiveRequest),
    LeaseLeases,
    KeepAlive(Vec<LeaseKeepAliveRequest>),
    Watch(Vec<WatchRequest>),
    UserAdd(AuthUserAddRequest),
    UserDelete(AuthUserDeleteRequest),
    UserGet(AuthUserGetRequest),
    UserPassword(AuthUserChangePasswordRequest),
    UserGrant(AuthUserGrantRoleRequest),
    UserRevoke(AuthUserRevokeRoleRequest),
    RoleAdd(AuthRoleAddRequest),
    RoleDelete(AuthRoleDeleteRequest),
    RoleGet(AuthRoleGetRequest),
    RoleGrant(AuthRoleGrantPermissionRequest),
    RoleRevoke(AuthRoleRevokePermissionRequest),
    Lists,
    Authenticate(AuthenticateRequest),
    AuthEnable,
    AuthDisable,
    /// Root with a known password and the root role, then auth on: what makes the other
    /// requests go through the permission checks.
    AuthSetup,
    /// Goes on as this user (when the login works).
    Login(String, String),
}

fn op() -> impl Strategy<Value = Op> {
    let kv = prop_oneof![
        4 => range_request().prop_map(Op::Range),
        4 => put_request(lease_id().boxed()).prop_map(Op::Put),
        2 => delete_request().prop_map(Op::Delete),
        3 => txn_request().prop_map(Op::Txn),
        1 => (revision(), any::<bool>())
            .prop_map(|(revision, physical)| Op::Compact(CompactionRequest { revision, physical })),
    ];
    let ttl = prop_oneof![
        3 => -5i64..100,
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, 9_000_000_000, 9_000_000_001]),
    ];
    let lease = prop_oneof![
        (ttl, lease_id()).prop_map(|(ttl, id)| Op::LeaseGrant(LeaseGrantRequest { ttl, id })),
        lease_id().prop_map(|id| Op::LeaseRevoke(LeaseRevokeRequest { id })),
        (lease_id(), any::<bool>())
            .prop_map(|(id, keys)| Op::LeaseTtl(LeaseTimeToLiveRequest { id, keys })),
        Just(Op::LeaseLeases),
        prop::collection::vec(lease_id().prop_map(|id| LeaseKeepAliveRequest { id }), 0..4)
            .prop_map(Op::KeepAlive),
    ];
    let perm = (enum_value(3), keys()).prop_map(|(perm_type, (key, range_end))| Permission {
        perm_type,
        key,
        range_end,
    });
    let auth = prop_oneof![
        (name(), password(), any::<bool>()).prop_map(|(name, password, no_password)| {
            Op::UserAdd(AuthUserAddRequest {
                name,
                password,
                options: Some(UserAddOptions { no_password }),
                hashed_password: String::new(),
            })
        }),
        name().prop_map(|name| Op::UserDelete(AuthUserDeleteRequest { name })),
        name().prop_map(|name| Op::UserGet(AuthUserGetRequest { name })),
        (name(), password()).prop_map(|(name, password)| {
            Op::UserPassword(AuthUserChangePasswordRequest {
                name,
                password,
                hashed_password: String::new(),
            })
        }),
        (name(), name())
            .prop_map(|(user, role)| Op::UserGrant(AuthUserGrantRoleRequest { user, role })),
        (name(), name())
            .prop_map(|(name, role)| Op::UserRevoke(AuthUserRevokeRoleRequest { name, role })),
        name().prop_map(|name| Op::RoleAdd(AuthRoleAddRequest { name })),
        name().prop_map(|role| Op::RoleDelete(AuthRoleDeleteRequest { role })),
        name().prop_map(|role| Op::RoleGet(AuthRoleGetRequest { role })),
        (name(), prop::option::weighted(0.9, perm))
            .prop_map(|(name, perm)| Op::RoleGrant(AuthRoleGrantPermissionRequest { name, perm })),
        (name(), keys()).prop_map(|(role, (key, range_end))| {
            Op::RoleRevoke(AuthRoleRevokePermissionRequest {
                role,
                key,
                range_end,
            })
        }),
        Just(Op::Lists),
        (name(), password())
            .prop_map(|(name, password)| Op::Authenticate(AuthenticateRequest { name, password })),
        Just(Op::AuthEnable),
        Just(Op::AuthDisable),
        Just(Op::AuthSetup),
        (name(), password()).prop_map(|(name, password)| Op::Login(name, password)),
    ];
    prop_oneof![
        8 => kv,
        3 => lease,
        2 => prop::collection::vec(watch_request(), 0..5).prop_map(Op::Watch),
        3 => auth,
    ]
}

/// [`op`], and now and then a put past etcd's request limit (1.5 MiB), or past it by more
/// than gRPC's allowance (512 KiB): for the server, not the decoder (too slow there).
fn server_op() -> impl Strategy<Value = Op> {
    let big = prop::sample::select(vec![1_600_000usize, 2_200_000]).prop_map(|len| {
        Op::Put(PutRequest {
            key: b"big".to_vec(),
            value: vec![b'x'; len],
            ..Default::default()
        })
    });
    prop_oneof![40 => op(), 1 => big]
}

/// The encoding of a request of `op`, for the byte-level properties.
fn encoded(op: &Op) -> Vec<u8> {
    match op {
        Op::Range(r) => r.encode_to_vec(),
        Op::Put(r) => r.encode_to_vec(),
        Op::Delete(r) => r.encode_to_vec(),
        Op::Txn(r) => r.encode_to_vec(),
        Op::Compact(r) => r.encode_to_vec(),
        Op::LeaseGrant(r) => r.encode_to_vec(),
        Op::LeaseRevoke(r) => r.encode_to_vec(),
        Op::LeaseTtl(r) => r.encode_to_vec(),
        Op::KeepAlive(rs) => rs.first().map(Message::encode_to_vec).unwrap_or_default(),
        Op::Watch(rs) => rs.first().map(Message::encode_to_vec).unwrap_or_default(),
        Op::UserAdd(r) => r.encode_to_vec(),
        Op::UserDelete(r) => r.encode_to_vec(),
        Op::UserGet(r) => r.encode_to_vec(),
        Op::UserPassword(r) => r.encode_to_vec(),
        Op::UserGrant(r) => r.encode_to_vec(),
        Op::UserRevoke(r) => r.encode_to_vec(),
        Op::RoleAdd(r) => r.encode_to_vec(),
        Op::RoleDelete(r) => r.encode_to_vec(),
        Op::RoleGet(r) => r.encode_to_vec(),
        Op::RoleGrant(r) => r.encode_to_vec(),
        Op::RoleRevoke(r) => r.encode_to_vec(),
        Op::Authenticate(r) => r.encode_to_vec(),
        Op::Login(name, password) => AuthenticateRequest {
            name: name.clone(),
            password: password.clone(),
        }
        .encode_to_vec(),
        Op::LeaseLeases | Op::Lists | Op::AuthEnable | Op::AuthDisable | Op::AuthSetup => {
            Vec::new()
        }
    }
}

/// Bytes flipped, cut, inserted: encodings that are nearly valid.
fn mutated(mut bytes: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    for (at, what, byte) in edits {
        let i = at.index(bytes.len() + 1);
        match what % 4 {
            0 if i < bytes.len() => bytes[i] ^= (*byte).max(1),
            1 => bytes.truncate(i),
            2 => bytes.insert(i, *byte),
            _ => {
                bytes.splice(
                    i..i,
                    [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
                );
            }
        }
    }
    bytes
}

// ------------------------------------------------------------------------------ running ops

/// Runs one request of any kind; what matters is that it is answered, with what a
/// well-typed request may get. Returns the response header's revision, if it had one.
async fn run(url: &str, raw: &mut Raw, op: Op) -> Option<i64> {
    fn rev(h: &Option<ResponseHeader>) -> Option<i64> {
        h.as_ref().map(|h| h.revision)
    }
    let result: Result<Option<i64>, Status> = match op {
        Op::Range(r) => answer(raw.kv.range(r)).await.map(|r| {
            assert!(
                r.count >= r.kvs.len() as i64,
                "a count below the keys returned"
            );
            rev(&r.header)
        }),
        Op::Put(r) => answer(raw.kv.put(r)).await.map(|r| rev(&r.header)),
        Op::Delete(r) => answer(raw.kv.delete_range(r)).await.map(|r| {
            assert!(
                r.deleted >= 0 && (r.prev_kvs.is_empty() || r.prev_kvs.len() as i64 == r.deleted)
            );
            rev(&r.header)
        }),
        Op::Txn(r) => answer(raw.kv.txn(r)).await.map(|r| rev(&r.header)),
        Op::Compact(r) => answer(raw.kv.compact(r)).await.map(|r| rev(&r.header)),
        Op::LeaseGrant(r) => answer(raw.lease.lease_grant(r)).await.map(|r| {
            assert!(r.ttl > 0, "a lease granted without a TTL: {r:?}");
            rev(&r.header)
        }),
        Op::LeaseRevoke(r) => answer(raw.lease.lease_revoke(r))
            .await
            .map(|r| rev(&r.header)),
        Op::LeaseTtl(r) => answer(raw.lease.lease_time_to_live(r))
            .await
            .map(|r| rev(&r.header)),
        Op::LeaseLeases => answer(raw.lease.lease_leases(LeaseLeasesRequest {}))
            .await
            .map(|r| rev(&r.header)),
        Op::KeepAlive(reqs) => {
            let n = reqs.len();
            match answer(raw.lease.lease_keep_alive(tokio_stream::iter(reqs))).await {
                Ok(mut acks) => {
                    let mut got = 0;
                    let mut last = None;
                    let drained = tokio::time::timeout(ANSWER, async {
                        while let Some(ack) = acks.next().await {
                            match ack {
                                Ok(ack) => {
                                    got += 1;
                                    last = rev(&ack.header).or(last);
                                }
                                Err(s) => {
                                    expected_status(&s);
                                    break;
                                }
                            }
                        }
                    })
                    .await;
                    assert!(drained.is_ok(), "the keepalive stream does not end");
                    assert!(got <= n, "more keepalive answers than requests");
                    Ok(last)
                }
                Err(s) => Err(s),
            }
        }
        Op::Watch(reqs) => {
            match answer(raw.watch.watch(tokio_stream::iter(reqs))).await {
                Ok(mut stream) => {
                    // The stream ends once the requests do; what it sent before is whatever
                    // it had time for.
                    let drained = tokio::time::timeout(ANSWER, async {
                        while let Some(resp) = stream.next().await {
                            match resp {
                                Ok(resp) => {
                                    for ev in &resp.events {
                                        assert!(ev.kv.is_some(), "an event without its key");
                                    }
                                }
                                Err(s) => {
                                    expected_status(&s);
                                    break;
                                }
                            }
                        }
                    })
                    .await;
                    assert!(drained.is_ok(), "the watch stream does not end");
                    Ok(None)
                }
                Err(s) => Err(s),
            }
        }
        Op::UserAdd(r) => answer(raw.auth.user_add(r)).await.map(|r| rev(&r.header)),
        Op::UserDelete(r) => answer(raw.auth.user_delete(r))
            .await
            .map(|r| rev(&r.header)),
        Op::UserGet(r) => answer(raw.auth.user_get(r)).await.map(|r| rev(&r.header)),
        Op::UserPassword(r) => answer(raw.auth.user_change_password(r))
            .await
            .map(|r| rev(&r.header)),
        Op::UserGrant(r) => answer(raw.auth.user_grant_role(r))
            .await
            .map(|r| rev(&r.header)),
        Op::UserRevoke(r) => answer(raw.auth.user_revoke_role(r))
            .await
            .map(|r| rev(&r.header)),
        Op::RoleAdd(r) => answer(raw.auth.role_add(r)).await.map(|r| rev(&r.header)),
        Op::RoleDelete(r) => answer(raw.auth.role_delete(r))
            .await
            .map(|r| rev(&r.header)),
        Op::RoleGet(r) => answer(raw.auth.role_get(r)).await.map(|r| rev(&r.header)),
        Op::RoleGrant(r) => answer(raw.auth.role_grant_permission(r))
            .await
            .map(|r| rev(&r.header)),
        Op::RoleRevoke(r) => answer(raw.auth.role_revoke_permission(r))
            .await
            .map(|r| rev(&r.header)),
        Op::Lists => {
            let users = answer(raw.auth.user_list(AuthUserListRequest {})).await;
            let roles = answer(raw.auth.role_list(AuthRoleListRequest {})).await;
            let status = answer(raw.auth.auth_status(AuthStatusRequest {})).await;
            for s in [users.err(), roles.err(), status.err()]
                .into_iter()
                .flatten()
            {
                expected_status(&s);
            }
            Ok(None)
        }
        Op::Authenticate(r) => answer(raw.auth.authenticate(r))
            .await
            .map(|r| rev(&r.header)),
        Op::AuthEnable => answer(raw.auth.auth_enable(AuthEnableRequest {}))
            .await
            .map(|r| rev(&r.header)),
        Op::AuthDisable => answer(raw.auth.auth_disable(AuthDisableRequest {}))
            .await
            .map(|r| rev(&r.header)),
        Op::AuthSetup => {
            let add = answer(raw.auth.user_add(AuthUserAddRequest {
                name: "root".into(),
                password: PASSWORDS[0].into(),
                ..Default::default()
            }))
            .await
            .err();
            let grant = answer(raw.auth.user_grant_role(AuthUserGrantRoleRequest {
                user: "root".into(),
                role: "root".into(),
            }))
            .await
            .err();
            let enable = answer(raw.auth.auth_enable(AuthEnableRequest {}))
                .await
                .err();
            for s in [add, grant, enable].into_iter().flatten() {
                expected_status(&s);
            }
            Ok(None)
        }
        Op::Login(name, password) => {
            match tokio::time::timeout(ANSWER, Raw::login(url, &name, &password)).await {
                Ok(Ok(user)) => *raw = user,
                Ok(Err(s)) => expected_status(&s),
                Err(_) => panic!("no answer to a login within {ANSWER:?}"),
            }
            Ok(None)
        }
    };
    match result {
        Ok(rev) => rev,
        Err(s) => {
            expected_status(&s);
            None
        }
    }
}

/// The whole keyspace now, and what replaying the watch history from revision 1 makes of it:
/// the same, unless history was compacted.
async fn check_history_matches_state(raw: &mut Raw) {
    let all = answer(raw.kv.range(RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    }))
    .await
    .expect("a range over every key");
    let rev = all.header.expect("a header").revision;
    assert_eq!(all.count, all.kvs.len() as i64);
    let state: BTreeMap<Vec<u8>, KeyValue> =
        all.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    if rev == 1 {
        assert!(state.is_empty(), "keys at revision 1: {state:?}");
        return;
    }
    let mut watch = raw
        .watch(WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: 1,
            ..Default::default()
        })
        .await
        .expect("a watch from revision 1");
    let mut replayed: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    let mut seen = 0;
    while seen < rev {
        let resp = tokio::time::timeout(ANSWER, watch.message())
            .await
            .expect("the watch replays history in time")
            .expect("the watch stream is fine")
            .expect("the watch stream stays open");
        if resp.canceled {
            assert!(resp.compact_revision > 0, "a watch canceled: {resp:?}");
            return; // compacted: history is not all there
        }
        // Every commit since revision 1 changed a key the watch covers (all of them), so each
        // revision comes, in order.
        for ev in resp.events {
            let kv = ev.kv.expect("an event's key");
            assert!(
                kv.mod_revision >= seen && kv.mod_revision <= rev,
                "{kv:?} after {seen}"
            );
            seen = kv.mod_revision;
            if ev.r#type == EventType::Delete as i32 {
                replayed.remove(&kv.key);
            } else {
                replayed.insert(kv.key.clone(), kv);
            }
        }
    }
    assert_eq!(replayed, state, "the watch history and the state disagree");
}

// ------------------------------------------------------------------------------ the model

/// A model of etcd's keyspace for puts, deletes, ranges and compactions: the state at every
/// revision (`history[r]`, from 1), and the compaction revision.
struct Model {
    history: Vec<BTreeMap<Vec<u8>, KeyValue>>,
    compacted: i64,
}

/// A request of the modelled kinds; revisions relative to the model's (`Rel`), or as given.
#[derive(Clone, Debug)]
enum MOp {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest, Rev),
    Compact(Rev),
}

#[derive(Clone, Copy, Debug)]
enum Rev {
    /// The model's current revision plus this.
    Rel(i64),
    Abs(i64),
}

fn rev_choice() -> impl Strategy<Value = Rev> {
    prop_oneof![
        4 => (-6i64..=2).prop_map(Rev::Rel),
        1 => revision().prop_map(Rev::Abs),
    ]
}

fn model_op() -> impl Strategy<Value = MOp> {
    prop_oneof![
        6 => put_request(prop_oneof![9 => Just(0i64), 1 => lease_id()].boxed()).prop_map(MOp::Put),
        3 => delete_request().prop_map(MOp::Delete),
        5 => (range_request(), rev_choice()).prop_map(|(r, rev)| MOp::Range(r, rev)),
        1 => rev_choice().prop_map(MOp::Compact),
    ]
}

/// etcd's key ranges: no end is the key alone, `\0` every key from it, else `[key, end)`.
fn in_range(key: &[u8], end: &[u8], k: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

impl Model {
    fn new() -> Model {
        Model {
            // Revision 0 does not exist; revision 1 is the empty store.
            history: vec![BTreeMap::new(), BTreeMap::new()],
            compacted: 0,
        }
    }

    fn rev(&self) -> i64 {
        self.history.len() as i64 - 1
    }

    fn now(&self) -> &BTreeMap<Vec<u8>, KeyValue> {
        self.history.last().expect("a state")
    }

    fn resolve(&self, r: Rev) -> i64 {
        match r {
            Rev::Rel(d) => self.rev() + d,
            Rev::Abs(a) => a,
        }
    }

    fn put(&mut self, r: &PutRequest) -> Result<Option<KeyValue>, Code> {
        if r.key.is_empty()
            || r.ignore_value && !r.value.is_empty()
            || r.ignore_lease && r.lease != 0
        {
            return Err(Code::InvalidArgument);
        }
        let prev = self.now().get(&r.key).cloned();
        if (r.ignore_value || r.ignore_lease) && prev.is_none() {
            return Err(Code::InvalidArgument);
        }
        if r.lease != 0 {
            return Err(Code::NotFound); // no lease exists here
        }
        let rev = self.rev() + 1;
        let kv = KeyValue {
            key: r.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: match (&prev, r.ignore_value) {
                (Some(p), true) => p.value.clone(),
                _ => r.value.clone(),
            },
            lease: 0,
        };
        let mut next = self.now().clone();
        next.insert(r.key.clone(), kv);
        self.history.push(next);
        Ok(prev)
    }

    fn delete(&mut self, r: &DeleteRangeRequest) -> Result<Vec<KeyValue>, Code> {
        if r.key.is_empty() {
            return Err(Code::InvalidArgument);
        }
        let doomed: Vec<KeyValue> = self
            .now()
            .values()
            .filter(|kv| in_range(&r.key, &r.range_end, &kv.key))
            .cloned()
            .collect();
        if !doomed.is_empty() {
            let mut next = self.now().clone();
            for kv in &doomed {
                next.remove(&kv.key);
            }
            self.history.push(next);
        }
        Ok(doomed)
    }

    /// What a range answers: its keys, `count` and `more`.
    fn range(&self, r: &RangeRequest) -> Result<(Vec<KeyValue>, i64, bool), Code> {
        if r.key.is_empty() {
            return Err(Code::InvalidArgument);
        }
        if r.revision > self.rev() || r.revision > 0 && r.revision < self.compacted {
            return Err(Code::OutOfRange);
        }
        let at = if r.revision > 0 {
            r.revision
        } else {
            self.rev()
        };
        let live: Vec<&KeyValue> = self.history[at as usize]
            .values()
            .filter(|kv| in_range(&r.key, &r.range_end, &kv.key))
            .collect();
        let count = live.len() as i64;
        if r.count_only {
            return Ok((Vec::new(), count, false));
        }
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        // As etcd does: without a sort order or a filter, only `limit + 1` keys (by key) are
        // fetched, and a sort target alone sorts just those.
        let fetch = if r.sort_order != 0 || filtered || r.limit <= 0 {
            usize::MAX
        } else {
            usize::try_from(r.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        };
        let mut kvs: Vec<&KeyValue> = live
            .into_iter()
            .take(fetch)
            .filter(|kv| {
                (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                    && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                    && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                    && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            })
            .collect();
        // Unknown sort values are the defaults; a target without an order sorts ascending.
        let target = if (0..5).contains(&r.sort_target) {
            r.sort_target
        } else {
            0
        };
        let mut order = if (0..3).contains(&r.sort_order) {
            r.sort_order
        } else {
            0
        };
        if order == 0 && target != 0 {
            order = 1;
        }
        if order != 0 {
            kvs.sort_by(|a, b| {
                let o = match target {
                    1 => a.version.cmp(&b.version),
                    2 => a.create_revision.cmp(&b.create_revision),
                    3 => a.mod_revision.cmp(&b.mod_revision),
                    4 => a.value.cmp(&b.value),
                    _ => a.key.cmp(&b.key),
                };
                if order == 2 { o.reverse() } else { o }
            });
        }
        let more = r.limit > 0 && kvs.len() as u64 > r.limit as u64;
        if r.limit > 0 {
            kvs.truncate(usize::try_from(r.limit).unwrap_or(usize::MAX));
        }
        let kvs = kvs
            .into_iter()
            .map(|kv| KeyValue {
                value: if r.keys_only {
                    Vec::new()
                } else {
                    kv.value.clone()
                },
                ..kv.clone()
            })
            .collect();
        Ok((kvs, count, more))
    }

    fn compact(&mut self, rev: i64) -> Result<(), Code> {
        if rev <= self.compacted || rev > self.rev() {
            return Err(Code::OutOfRange);
        }
        self.compacted = rev;
        Ok(())
    }
}

/// Runs `op` on the server and the model; they must agree on the outcome and every field of
/// the answer.
async fn run_modelled(raw: &mut Raw, model: &mut Model, op: MOp) {
    fn code<T>(r: &Result<T, Status>) -> Option<Code> {
        r.as_ref().err().map(Status::code)
    }
    match op {
        MOp::Put(r) => {
            let got = answer(raw.kv.put(r.clone())).await;
            let want = model.put(&r);
            assert_eq!(code(&got), want.as_ref().err().copied(), "{r:?}: {got:?}");
            if let (Ok(got), Ok(prev)) = (got, want) {
                assert_eq!(got.header.unwrap().revision, model.rev(), "{r:?}");
                assert_eq!(got.prev_kv, if r.prev_kv { prev } else { None }, "{r:?}");
            }
        }
        MOp::Delete(r) => {
            let got = answer(raw.kv.delete_range(r.clone())).await;
            let want = model.delete(&r);
            assert_eq!(code(&got), want.as_ref().err().copied(), "{r:?}: {got:?}");
            if let (Ok(got), Ok(doomed)) = (got, want) {
                assert_eq!(got.header.unwrap().revision, model.rev(), "{r:?}");
                assert_eq!(got.deleted, doomed.len() as i64, "{r:?}");
                let prev = if r.prev_kv { doomed } else { Vec::new() };
                assert_eq!(got.prev_kvs, prev, "{r:?}");
            }
        }
        MOp::Range(mut r, rev) => {
            r.revision = model.resolve(rev);
            let got = answer(raw.kv.range(r.clone())).await;
            let want = model.range(&r);
            assert_eq!(code(&got), want.as_ref().err().copied(), "{r:?}: {got:?}");
            if let (Ok(got), Ok((kvs, count, more))) = (got, want) {
                assert_eq!(got.header.unwrap().revision, model.rev(), "{r:?}");
                assert_eq!((got.kvs, got.count, got.more), (kvs, count, more), "{r:?}");
            }
        }
        MOp::Compact(rev) => {
            let revision = model.resolve(rev);
            let r = CompactionRequest {
                revision,
                physical: false,
            };
            let got = answer(raw.kv.compact(r)).await;
            let want = model.compact(revision);
            assert_eq!(code(&got), want.err(), "compact {revision}: {got:?}");
        }
    }
}

// ------------------------------------------------------------------------------ properties

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn arbitrary_bytes_decode_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_as_every_request(&bytes);
    }

    /// Valid encodings of every request, bytes flipped, cut, inserted, or given overlong
    /// varints: deeper into the decoder than random bytes go.
    #[test]
    fn mutated_requests_decode_or_fail(
        op in op(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..4),
    ) {
        decode_as_every_request(&mutated(encoded(&op), &edits));
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Any bytes as any request, unary or streaming, over gRPC to a real server: each gets an
    /// answer or a status in time, and the server serves on.
    #[test]
    fn arbitrary_bytes_over_grpc_get_an_answer(
        calls in prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(
                    prop_oneof![
                        prop::collection::vec(any::<u8>(), 0..64),
                        (op(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..3))
                            .prop_map(|(op, edits)| mutated(encoded(&op), &edits)),
                    ],
                    0..4,
                ),
            ),
            1..8,
        ),
    ) {
        with_server(|url| async move {
            let channel = Channel::from_shared(url.clone()).unwrap().connect().await.expect("connects");
            let paths: Vec<&'static str> = UNARY.iter().chain(STREAMING).copied().collect();
            for (which, frames) in calls {
                send_raw(&channel, paths[which.index(paths.len())], frames).await;
            }
            let mut raw = Raw::connect(&url).await.expect("connects");
            // Raw bytes cannot turn auth on (that takes a root user with the root role and an
            // AuthEnable, which is not among the paths): the store reads as usual.
            check_history_matches_state(&mut raw).await;
        });
    }

    /// Well-typed requests of every kind in any order: each gets an answer or one of etcd's
    /// errors in time, revisions never go back, and afterwards the state is what the watch
    /// history says.
    #[test]
    fn any_requests_get_answers_and_keep_the_store_consistent(
        ops in prop::collection::vec(server_op(), 1..16),
        limits in limits(),
    ) {
        with_server_limits(limits, |url| async move {
            let mut raw = Raw::connect(&url).await.expect("connects");
            let mut admin = Raw::connect(&url).await.expect("connects");
            let mut last = 0;
            for op in ops {
                // Only puts and lease grants are held to the total quota: deletes always go
                // through (in etcd too, to make room).
                let quota_bound = matches!(op, Op::Put(_) | Op::LeaseGrant(_));
                let done = run(&url, &mut raw, op).await;
                if let Some(rev) = done {
                    assert!(rev >= last, "the revision went back from {last} to {rev}");
                    last = rev;
                }
                // What the store accounts for stays sane, and within the quota.
                let size = answer(admin.maintenance.status(StatusRequest {}))
                    .await
                    .expect("Status answers")
                    .db_size;
                assert!((0..1 << 40).contains(&size), "the store's size is {size}");
                if let (Some((_, _, quota)), Some(_), true) = (limits, done, quota_bound) {
                    assert!(size as u64 <= quota, "{size} bytes held, past the quota of {quota}");
                }
            }
            let enabled = answer(raw.auth.auth_status(AuthStatusRequest {}))
                .await
                .expect("AuthStatus answers")
                .enabled;
            if enabled {
                // Turned on along the way (root was added, given the root role, and auth
                // enabled): read as root, whose password is one of the few the case uses.
                let mut root = None;
                for pw in PASSWORDS {
                    if let Ok(r) = Raw::login(&url, "root", pw).await {
                        root = Some(r);
                    }
                }
                // Root may have been given a password nobody knows (`no_password`).
                let Some(mut root) = root else { return };
                check_history_matches_state(&mut root).await;
            } else {
                check_history_matches_state(&mut raw).await;
            }
        });
    }

    /// Puts, deletes, ranges and compactions agree with the model, answer by answer, and at
    /// the end every past revision still readable reads as the model says.
    #[test]
    fn kv_requests_agree_with_a_model(ops in prop::collection::vec(model_op(), 1..40)) {
        with_server(|url| async move {
            let mut raw = Raw::connect(&url).await.expect("connects");
            let mut model = Model::new();
            for op in ops {
                run_modelled(&mut raw, &mut model, op).await;
            }
            for rev in model.compacted.max(1)..=model.rev() {
                let all = RangeRequest { key: vec![0], range_end: vec![0], revision: rev, ..Default::default() };
                run_modelled(&mut raw, &mut model, MOp::Range(all, Rev::Abs(rev))).await;
            }
        });
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// Txns nested around prost's recursion limit (100): refused when decoding, or run,
    /// never a stack overflow, in the decoder or the server.
    #[test]
    fn deeply_nested_txns_are_refused_or_run(depth in 30usize..260) {
        let txn = nested_txn(depth);
        let bytes = txn.encode_to_vec();
        decode_as_every_request(&bytes);
        with_server(|url| async move {
            let mut raw = Raw::connect(&url).await.expect("connects");
            match answer(raw.kv.txn(txn)).await {
                Ok(resp) => assert!(resp.succeeded),
                // What tonic says of a message prost cannot decode.
                Err(s) => assert!(s.message().contains("recursion limit"), "{s:?}"),
            }
        });
    }
}

// ------------------------------------------------------------------------------ plain tests

/// The decoder's own limit, as the server meets it: a txn just inside decodes, one past it
/// does not.
#[test]
fn prost_refuses_txns_nested_past_its_limit() {
    let deep = nested_txn(200).encode_to_vec();
    let err = TxnRequest::decode(deep.as_slice()).expect_err("too deep");
    assert!(err.to_string().contains("recursion limit"), "{err}");
    let shallow = nested_txn(40).encode_to_vec();
    assert_eq!(
        TxnRequest::decode(shallow.as_slice()).unwrap(),
        nested_txn(40)
    );
}

// ------------------------------------------------------------------------------ regressions
// Each input the properties above found, minimized, with what it must give now.

/// `any_requests_get_answers_and_keep_the_store_consistent`: a put was admitted on an estimate
/// of its bytes that left out its event's own overhead and the value it replaces (which the
/// event log keeps as `prev_kv`), so the store could hold more than `quota_backend_bytes`
/// (2950 bytes under a quota of 2949, after two puts).
#[test]
fn regression_a_put_never_takes_the_store_past_the_total_quota() {
    let put = |value: usize| PutRequest {
        key: b"a".to_vec(),
        value: vec![b'x'; value],
        ..Default::default()
    };
    // A first put of 100 bytes at a 1-byte key holds 347 bytes: the version (1 + 1 + 100 + 48)
    // and its event (48, and the value's 1 + 100 + 48). Overwriting it costs 496 more, as its
    // event keeps the value replaced too: 843 in all, or 646 once history (the first event)
    // is dropped to make room.
    for quota in [300, 346, 347, 645, 646, 842, 843] {
        let cfg = ServerConfig {
            retention: None,
            history_bytes: None,
            quota_backend_bytes: Some(quota),
            ..test_config()
        };
        with_server_config(cfg, |url| async move {
            let mut raw = Raw::connect(&url).await.expect("connects");
            let first = (quota >= 347).then_some(347);
            let second = match quota {
                843.. => Some(843),
                646.. => Some(646),
                _ => None,
            };
            for held in [first, second] {
                let got = answer(raw.kv.put(put(100))).await;
                let Some(held) = held else {
                    let err = got.expect_err(&format!("refused under a quota of {quota}"));
                    assert_eq!(err.code(), Code::ResourceExhausted);
                    break;
                };
                got.unwrap_or_else(|e| panic!("refused under a quota of {quota}: {e:?}"));
                let size = answer(raw.maintenance.status(StatusRequest {}))
                    .await
                    .expect("Status answers")
                    .db_size;
                assert_eq!(size, held, "quota {quota}");
            }
        });
    }
}
