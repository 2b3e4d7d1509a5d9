//! The raw etcd v3 API over one gRPC channel, with the generated `store::pb` clients: what the
//! tests use to speak to our server and to a real etcd alike, without `Store` in between.

use store::pb::etcdserverpb::auth_client::AuthClient;
use store::pb::etcdserverpb::kv_client::KvClient;
use store::pb::etcdserverpb::lease_client::LeaseClient;
use store::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use store::pb::etcdserverpb::request_op::Request;
use store::pb::etcdserverpb::watch_client::WatchClient;
use store::pb::etcdserverpb::watch_request::RequestUnion;
use store::pb::etcdserverpb::{
    AuthenticateRequest, DeleteRangeRequest, DeleteRangeResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Puts the auth token (if logged in) on every request, as etcd's `token` metadata header.
#[derive(Clone, Default)]
pub struct Token(Option<AsciiMetadataValue>);

impl Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("token", token.clone());
        }
        Ok(req)
    }
}

pub type Chan = InterceptedService<Channel, Token>;

/// The five clients of the etcd v3 API mgmt speaks, over one connection.
#[derive(Clone)]
pub struct Raw {
    channel: Channel,
    pub kv: KvClient<Chan>,
    pub watch: WatchClient<Chan>,
    pub lease: LeaseClient<Chan>,
    pub auth: AuthClient<Chan>,
    pub maintenance: MaintenanceClient<Chan>,
}

impl Raw {
    /// Connects to `url` (`http://host:port`), without credentials.
    pub async fn connect(url: &str) -> Result<Raw, tonic::transport::Error> {
        let channel = Channel::from_shared(url.to_string())
            .expect("a valid URL")
            .connect()
            .await?;
        Ok(Self::over(channel, Token::default()))
    }

    fn over(channel: Channel, token: Token) -> Raw {
        Raw {
            kv: KvClient::with_interceptor(channel.clone(), token.clone()),
            watch: WatchClient::with_interceptor(channel.clone(), token.clone()),
            lease: LeaseClient::with_interceptor(channel.clone(), token.clone()),
            auth: AuthClient::with_interceptor(channel.clone(), token.clone()),
            maintenance: MaintenanceClient::with_interceptor(channel.clone(), token),
            channel,
        }
    }

    /// Connects to `url` as `user`: Auth.Authenticate, then the same connection with the token
    /// on every request. The error is Authenticate's status, as a client's connect would return.
    pub async fn login(url: &str, user: &str, password: &str) -> Result<Raw, Status> {
        let mut raw = Raw::connect(url).await.expect("connects");
        let token = raw
            .auth
            .authenticate(AuthenticateRequest {
                name: user.to_string(),
                password: password.to_string(),
            })
            .await?
            .into_inner()
            .token;
        let token = token
            .parse::<AsciiMetadataValue>()
            .map_err(|e| Status::internal(format!("token is not ASCII: {e}")))?;
        Ok(Self::over(raw.channel.clone(), Token(Some(token))))
    }

    pub async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, Status> {
        Ok(self.kv.range(req).await?.into_inner())
    }

    pub async fn put(&mut self, req: PutRequest) -> Result<PutResponse, Status> {
        Ok(self.kv.put(req).await?.into_inner())
    }

    pub async fn delete(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, Status> {
        Ok(self.kv.delete_range(req).await?.into_inner())
    }

    pub async fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, Status> {
        Ok(self.kv.txn(req).await?.into_inner())
    }

    /// The store's current revision (a range's header).
    pub async fn revision(&mut self) -> Result<i64, Status> {
        let resp = self.range(range("x")).await?;
        Ok(resp.header.expect("a response header").revision)
    }

    /// Opens a watch stream whose first request creates `create`; the stream stays open for
    /// more create, cancel and progress requests.
    pub async fn watch(&mut self, create: WatchCreateRequest) -> Result<Watch, Status> {
        let (tx, rx) = mpsc::channel(100);
        let mut watch = Watch { tx, rx: None };
        watch.create(create).await;
        let stream = self
            .watch
            .watch(ReceiverStream::new(rx))
            .await?
            .into_inner();
        watch.rx = Some(stream);
        Ok(watch)
    }

    /// Opens a keepalive stream for lease `id` (its first request sent and answered) and
    /// returns it, as a client's keep-alive would: further requests renew it again.
    pub async fn keep_alive(&mut self, id: i64) -> Result<KeepAlive, Status> {
        let (tx, rx) = mpsc::channel(100);
        tx.send(LeaseKeepAliveRequest { id })
            .await
            .expect("the request stream is open");
        let mut acks = self
            .lease
            .lease_keep_alive(ReceiverStream::new(rx))
            .await?
            .into_inner();
        match acks.message().await? {
            Some(first) if first.ttl > 0 => {}
            Some(_) => return Err(Status::not_found("lease not found")),
            None => return Err(Status::unavailable("keepalive stream closed")),
        }
        Ok(KeepAlive { id, tx, acks })
    }
}

/// One open Watch stream: send requests on it, read its responses.
pub struct Watch {
    tx: mpsc::Sender<WatchRequest>,
    rx: Option<tonic::Streaming<WatchResponse>>,
}

impl Watch {
    async fn send(&mut self, req: RequestUnion) {
        self.tx
            .send(WatchRequest {
                request_union: Some(req),
            })
            .await
            .expect("the request stream is open");
    }

    /// Adds a watcher on the same stream.
    pub async fn create(&mut self, create: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(create)).await;
    }

    pub async fn cancel(&mut self, watch_id: i64) {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }))
            .await;
    }

    pub async fn request_progress(&mut self) {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
            .await;
    }

    /// The next response; `None` when the server ended the stream.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>, Status> {
        self.rx
            .as_mut()
            .expect("the stream is open")
            .message()
            .await
    }
}

/// One open LeaseKeepAlive stream for one lease.
pub struct KeepAlive {
    id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    acks: tonic::Streaming<LeaseKeepAliveResponse>,
}

impl KeepAlive {
    /// Asks for one more renewal.
    pub async fn keep_alive(&mut self) {
        self.tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .expect("the request stream is open");
    }

    /// The next renewal's answer.
    pub async fn message(&mut self) -> Result<Option<LeaseKeepAliveResponse>, Status> {
        self.acks.message().await
    }
}

pub use store::prefix_end;

/// A range over one key.
pub fn range(key: impl Into<Vec<u8>>) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

/// A range over every key starting with `prefix` (all keys when it is empty).
pub fn range_prefix(prefix: impl Into<Vec<u8>>) -> RangeRequest {
    let (key, range_end) = prefix_range(prefix.into());
    RangeRequest {
        key,
        range_end,
        ..Default::default()
    }
}

/// `(key, range_end)` for a prefix, as etcd clients send it: the empty prefix is every key.
pub fn prefix_range(prefix: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        let end = prefix_end(&prefix);
        (prefix, end)
    }
}

/// A put of `value` at `key`.
pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

/// A delete of one key.
pub fn delete(key: impl Into<Vec<u8>>) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

/// A watch of one key.
pub fn watch_key(key: impl Into<Vec<u8>>) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        ..Default::default()
    }
}

/// A watch of every key starting with `prefix`.
pub fn watch_prefix(prefix: impl Into<Vec<u8>>) -> WatchCreateRequest {
    let (key, range_end) = prefix_range(prefix.into());
    WatchCreateRequest {
        key,
        range_end,
        ..Default::default()
    }
}

/// Txn operations.
pub fn op_get(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(r)),
    }
}

pub fn op_put(p: PutRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(p)),
    }
}

pub fn op_delete(d: DeleteRangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(d)),
    }
}

pub fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(t)),
    }
}
