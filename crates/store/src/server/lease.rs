//! The Lease service: grant, revoke, keepalive stream, time-to-live, list. Expiry itself is the
//! server's expiry task. The keepalive stream is a plain stream over the request stream (no
//! task of its own): it ends when the client goes or the server stops.
//!
//! With auth on, a non-root user is limited to the leases it granted (the core enforces it,
//! under its lock): any other lease gets etcd's answers for a lease that does not exist (revoke:
//! `etcdserver: requested lease not found`; keepalive: TTL 0; time-to-live: TTL -1; not
//! listed), so neither can a host keep another's liveness key alive nor learn which ids exist.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::error::EtcdError;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, lease_server::Lease,
};

pub(crate) struct LeaseService(pub(crate) Arc<Shared>);

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let s = &self.0;
        let user = s.limited_user(&s.caller(&req)?);
        let r = req.into_inner();
        let mut core = s.core();
        let (id, ttl) = core.lease_grant(r.id, r.ttl, user.as_deref(), Instant::now())?;
        s.publish(None);
        s.lease_changed.notify_one();
        Ok(Response::new(LeaseGrantResponse {
            header: s.header(core.rev()),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let s = &self.0;
        let caller = s.caller(&req)?;
        let user = s.limited_user(&caller);
        let id = req.into_inner().id;
        let mut core = s.core();
        // Revoking deletes the lease's keys: the caller must be allowed to delete each (keys
        // are attached only by users that own the lease and may write them, but root may attach
        // anyone's key to anyone's lease).
        let keys = core
            .lease_keys(id, user.as_deref())
            .ok_or(EtcdError::LeaseNotFound)?;
        {
            let auth = s.auth();
            for key in &keys {
                auth.check(&caller, key, &[], true)?;
            }
        }
        let commit = core.lease_revoke(id, user.as_deref())?;
        s.publish(commit);
        Ok(Response::new(LeaseRevokeResponse {
            header: s.header(core.rev()),
        }))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let s = self.0.clone();
        let user = s.limited_user(&s.caller(&req)?);
        let requests = req.into_inner();
        let cancel = s.cancel.clone();
        let stream = requests.take_until(cancel.cancelled_owned()).map(move |r| {
            let r = r?;
            let mut core = s.core();
            // Unknown (another user's too) or expired: TTL 0, as etcd answers.
            let ttl = core
                .lease_renew(r.id, user.as_deref(), Instant::now())
                .unwrap_or(0);
            s.lease_changed.notify_one();
            Ok(LeaseKeepAliveResponse {
                header: s.header(core.rev()),
                id: r.id,
                ttl,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let s = &self.0;
        let user = s.limited_user(&s.caller(&req)?);
        let r = req.into_inner();
        let core = s.core();
        // Unknown (another user's too): TTL -1, as etcd answers.
        let resp = match core.lease_info(r.id, user.as_deref(), Instant::now()) {
            Some(info) => LeaseTimeToLiveResponse {
                header: s.header(core.rev()),
                id: r.id,
                ttl: info.remaining,
                granted_ttl: info.granted,
                keys: if r.keys { info.keys } else { Vec::new() },
            },
            None => LeaseTimeToLiveResponse {
                header: s.header(core.rev()),
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let s = &self.0;
        let user = s.limited_user(&s.caller(&req)?);
        let core = s.core();
        Ok(Response::new(LeaseLeasesResponse {
            header: s.header(core.rev()),
            leases: core
                .lease_ids(user.as_deref())
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }))
    }
}
