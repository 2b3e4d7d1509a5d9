//! One gRPC connection to an etcd v3 endpoint set, on the generated clients: endpoints parsed and
//! balanced, the auth token fetched, attached to every request and fetched again once when the
//! server says it is no longer valid (etcd's simple tokens expire after five idle minutes, and a
//! restarted server forgets them all). The password lives only in memory, never in a log line.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{RwLock, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

use crate::pb::etcdserverpb::{
    AuthenticateRequest, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, PutResponse, RangeRequest, RangeResponse, StatusRequest, TxnRequest, TxnResponse,
    WatchRequest, WatchResponse, auth_client::AuthClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use crate::url::StoreUrl;

/// How long connecting to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the first answer (authentication or status) may take.
const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued on a stream (watch or keepalive) before the sender waits.
const STREAM_QUEUE: usize = 16;
/// The largest response we read, as etcd's own client (`MaxCallRecvMsgSize`: 2 GiB - 1): a
/// listing of every export is as large as the store has it (the server's quotas bound that),
/// far past tonic's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

fn kv(ch: Channel) -> KvClient<Channel> {
    KvClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Credentials, kept out of `Debug` output.
struct Credentials {
    user: String,
    password: String,
    token: RwLock<Option<AsciiMetadataValue>>,
}

/// A cheaply cloned connection (all clones share the channel and the token).
#[derive(Clone)]
pub(crate) struct Conn {
    channel: Channel,
    creds: Option<Arc<Credentials>>,
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    BadEndpoint(String),
    #[error("{0}")]
    Status(#[from] Status),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

fn endpoint(url: &StoreUrl) -> Result<Endpoint, ConnectError> {
    let full = url.to_string();
    let ep = Endpoint::from_shared(full)
        .map_err(|e| ConnectError::BadEndpoint(format!("{url}: {e}")))?;
    Ok(ep
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

impl Conn {
    /// Connects to `endpoints` (requests are balanced across them and skip ones that are down),
    /// authenticates with `creds` when given, and checks that the store answers.
    pub(crate) async fn connect(
        endpoints: &[StoreUrl],
        creds: Option<(String, String)>,
    ) -> Result<Conn, ConnectError> {
        if endpoints.is_empty() {
            return Err(ConnectError::BadEndpoint("no endpoint given".to_string()));
        }
        let eps = endpoints
            .iter()
            .map(endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        let channel = if eps.len() == 1 {
            eps[0].connect_lazy()
        } else {
            Channel::balance_list(eps.into_iter())
        };
        let conn = Conn {
            channel,
            creds: creds.map(|(user, password)| {
                Arc::new(Credentials {
                    user,
                    password,
                    token: RwLock::new(None),
                })
            }),
        };
        let check = async {
            if conn.creds.is_some() {
                // A wrong password is an error here, not at the first request.
                conn.authenticate().await
            } else {
                // Any answer will do (some etcd versions want more rights for Status).
                match MaintenanceClient::new(conn.channel.clone())
                    .status(StatusRequest {})
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(s) if s.code() != Code::Unavailable => Ok(()),
                    Err(s) => Err(s),
                }
            }
        };
        match tokio::time::timeout(FIRST_ANSWER_TIMEOUT, check).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(s)) => Err(ConnectError::Status(s)),
            Err(_) => Err(ConnectError::Timeout(FIRST_ANSWER_TIMEOUT)),
        }
    }

    async fn authenticate(&self) -> Result<(), Status> {
        let Some(creds) = &self.creds else {
            return Ok(());
        };
        let resp = AuthClient::new(self.channel.clone())
            .authenticate(AuthenticateRequest {
                name: creds.user.clone(),
                password: creds.password.clone(),
            })
            .await?
            .into_inner();
        let token = AsciiMetadataValue::try_from(resp.token.as_str())
            .map_err(|_| Status::internal("the store sent an auth token that is not ASCII"))?;
        *creds.token.write().await = Some(token);
        Ok(())
    }

    async fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(creds) = &self.creds
            && let Some(token) = creds.token.read().await.clone()
        {
            req.metadata_mut().insert("token", token);
        }
        req
    }

    /// Runs `call` with the token attached; when the server rejects the token, authenticates
    /// again and retries once.
    async fn call<T, R, F, Fut>(&self, msg: T, call: F) -> Result<R, Status>
    where
        T: Clone,
        F: Fn(Channel, Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let first = call(self.channel.clone(), self.request(msg.clone()).await).await;
        match first {
            Err(s) if s.code() == Code::Unauthenticated && self.creds.is_some() => {
                self.authenticate().await?;
                let again = call(self.channel.clone(), self.request(msg).await).await;
                again.map(tonic::Response::into_inner)
            }
            other => other.map(tonic::Response::into_inner),
        }
    }

    pub(crate) async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Status> {
        self.call(req, |ch, r| async move { kv(ch).range(r).await })
            .await
    }

    pub(crate) async fn put(&self, req: PutRequest) -> Result<PutResponse, Status> {
        self.call(req, |ch, r| async move { kv(ch).put(r).await })
            .await
    }

    pub(crate) async fn delete(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Status> {
        self.call(req, |ch, r| async move { kv(ch).delete_range(r).await })
            .await
    }

    pub(crate) async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, Status> {
        self.call(req, |ch, r| async move { kv(ch).txn(r).await })
            .await
    }

    pub(crate) async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrantResponse, Status> {
        let req = LeaseGrantRequest { ttl, id: 0 };
        self.call(req, |ch, r| async move {
            LeaseClient::new(ch).lease_grant(r).await
        })
        .await
    }

    pub(crate) async fn lease_revoke(&self, id: i64) -> Result<(), Status> {
        let req = LeaseRevokeRequest { id };
        self.call(req, |ch, r| async move {
            LeaseClient::new(ch).lease_revoke(r).await
        })
        .await
        .map(drop)
    }

    /// Opens a bidirectional stream: requests go through the returned sender, which must be
    /// kept for as long as the stream is wanted.
    async fn open_stream<Q, R, F, Fut>(
        &self,
        first: Q,
        open: F,
    ) -> Result<(mpsc::Sender<Q>, Streaming<R>), Status>
    where
        Q: Clone + Send + 'static,
        F: Fn(Channel, Request<ReceiverStream<Q>>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Streaming<R>>, Status>>,
    {
        for attempt in 0..2 {
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            tx.send(first.clone())
                .await
                .map_err(|_| Status::internal("stream request queue closed"))?;
            let req = self.request(ReceiverStream::new(rx)).await;
            match open(self.channel.clone(), req).await {
                Ok(resp) => return Ok((tx, resp.into_inner())),
                Err(s)
                    if attempt == 0
                        && s.code() == Code::Unauthenticated
                        && self.creds.is_some() =>
                {
                    self.authenticate().await?;
                }
                Err(s) => return Err(s),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    pub(crate) async fn watch(
        &self,
        create: WatchRequest,
    ) -> Result<(mpsc::Sender<WatchRequest>, Streaming<WatchResponse>), Status> {
        self.open_stream(create, |ch, r| async move {
            WatchClient::new(ch)
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .watch(r)
                .await
        })
        .await
    }

    pub(crate) async fn keep_alive(
        &self,
        id: i64,
    ) -> Result<
        (
            mpsc::Sender<LeaseKeepAliveRequest>,
            Streaming<LeaseKeepAliveResponse>,
        ),
        Status,
    > {
        self.open_stream(LeaseKeepAliveRequest { id }, |ch, r| async move {
            LeaseClient::new(ch).lease_keep_alive(r).await
        })
        .await
    }
}

/// The range end that makes `[prefix, end)` mean "every key starting with `prefix`" (etcd's
/// `GetPrefixRangeEnd`); for tools and tests speaking the raw API ([`crate::pb`]) too.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/_mgmt/"), b"/_mgmt0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"a\xfe\xff\xff"), b"a\xff");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
