//! The KV, Maintenance and Cluster services: the request size, permission checks, then one
//! synchronous call into the MVCC core under its lock (which checks the quotas: the caller's,
//! from auth, and the total). Must never hold a lock across an `.await`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tonic::{Request, Response, Status};

use super::{API_VERSION, Shared};
use crate::auth::Caller;
use crate::error::EtcdError;
use crate::mvcc::{UserQuota, Writer};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, Member,
    MemberListRequest, MemberListResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, StatusRequest, StatusResponse, TxnRequest, TxnResponse, cluster_server::Cluster,
    kv_server::Kv, maintenance_server::Maintenance, request_op,
};

pub(crate) struct KvService(pub(crate) Arc<Shared>);

/// Checks every compare and op of a txn, both branches, as etcd does.
fn check_txn(shared: &Shared, caller: &Caller, r: &TxnRequest) -> Result<(), EtcdError> {
    let auth = shared.auth();
    for c in &r.compare {
        auth.check(caller, &c.key, &c.range_end, false)?;
    }
    drop(auth);
    check_ops(shared, caller, r.success.iter().chain(&r.failure))
}

fn check_ops<'a>(
    shared: &Shared,
    caller: &Caller,
    ops: impl Iterator<Item = &'a RequestOp>,
) -> Result<(), EtcdError> {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestRange(q)) => {
                shared.auth().check(caller, &q.key, &q.range_end, false)?
            }
            Some(request_op::Request::RequestPut(p)) => check_put(shared, caller, p)?,
            Some(request_op::Request::RequestDeleteRange(d)) => check_delete(shared, caller, d)?,
            Some(request_op::Request::RequestTxn(t)) => check_txn(shared, caller, t)?,
            None => {}
        }
    }
    Ok(())
}

fn check_put(shared: &Shared, caller: &Caller, p: &PutRequest) -> Result<(), EtcdError> {
    let auth = shared.auth();
    auth.check(caller, &p.key, &[], true)?;
    if p.prev_kv {
        auth.check(caller, &p.key, &[], false)?;
    }
    Ok(())
}

fn check_delete(shared: &Shared, caller: &Caller, d: &DeleteRangeRequest) -> Result<(), EtcdError> {
    let auth = shared.auth();
    auth.check(caller, &d.key, &d.range_end, true)?;
    if d.prev_kv {
        auth.check(caller, &d.key, &d.range_end, false)?;
    }
    Ok(())
}

/// What the core needs to know of a writer: its quota, and whether it is limited to its own
/// leases (read from auth before the core is locked).
fn writer_of(shared: &Shared, caller: &Caller) -> (Option<UserQuota>, Option<String>) {
    let auth = shared.auth();
    (auth.quota_of(caller), auth.limited_user(caller))
}

fn writer<'a>(quota: &'a Option<UserQuota>, user: &'a Option<String>) -> Writer<'a> {
    Writer {
        quota: quota.as_ref(),
        user: user.as_deref(),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let s = &self.0;
        let caller = s.caller(&req)?;
        let r = req.into_inner();
        s.auth().check(&caller, &r.key, &r.range_end, false)?;
        let core = s.core();
        let mut resp = core.range(&r)?;
        resp.header = s.header(core.rev());
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let s = &self.0;
        let caller = s.caller(&req)?;
        let r = req.into_inner();
        s.check_size(&r)?;
        check_put(s, &caller, &r)?;
        let (quota, user) = writer_of(s, &caller);
        let mut core = s.core();
        let (mut resp, commit) = core.put(&r, writer(&quota, &user))?;
        s.publish(commit);
        resp.header = s.header(core.rev());
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let s = &self.0;
        let caller = s.caller(&req)?;
        let r = req.into_inner();
        s.check_size(&r)?;
        check_delete(s, &caller, &r)?;
        let mut core = s.core();
        let (mut resp, commit) = core.delete_range(&r)?;
        s.publish(commit);
        resp.header = s.header(core.rev());
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let s = &self.0;
        let caller = s.caller(&req)?;
        let r = req.into_inner();
        s.check_size(&r)?;
        check_txn(s, &caller, &r)?;
        let (quota, user) = writer_of(s, &caller);
        let mut core = s.core();
        let (mut resp, commit) = core.txn(&r, writer(&quota, &user))?;
        s.publish(commit);
        let rev = core.rev();
        set_txn_headers(s, &mut resp, rev);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let s = &self.0;
        s.caller(&req)?;
        let r = req.into_inner();
        let mut core = s.core();
        core.compact(r.revision)?;
        s.publish(None);
        Ok(Response::new(CompactionResponse {
            header: s.header(core.rev()),
        }))
    }
}

/// etcd fills the header of every nested response too.
fn set_txn_headers(s: &Shared, resp: &mut TxnResponse, rev: i64) {
    use crate::pb::etcdserverpb::response_op::Response as R;
    resp.header = s.header(rev);
    for op in &mut resp.responses {
        match &mut op.response {
            Some(R::ResponseRange(r)) => r.header = s.header(rev),
            Some(R::ResponsePut(r)) => r.header = s.header(rev),
            Some(R::ResponseDeleteRange(r)) => r.header = s.header(rev),
            Some(R::ResponseTxn(t)) => set_txn_headers(s, t, rev),
            None => {}
        }
    }
}

pub(crate) struct MaintenanceService(pub(crate) Arc<Shared>);

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let s = &self.0;
        let core = s.core();
        let applied = s.applied.load(Ordering::Relaxed);
        Ok(Response::new(StatusResponse {
            header: s.header(core.rev()),
            version: API_VERSION.to_string(),
            db_size: core.db_size(),
            leader: s.member_id,
            raft_index: applied,
            raft_term: 2,
            raft_applied_index: applied,
            errors: Vec::new(),
            db_size_in_use: core.db_size(),
            is_learner: false,
            ..Default::default()
        }))
    }
}

pub(crate) struct ClusterService(pub(crate) Arc<Shared>);

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let s = &self.0;
        let rev = s.core().rev();
        Ok(Response::new(MemberListResponse {
            header: s.header(rev),
            members: vec![Member {
                id: s.member_id,
                name: s.name.clone(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: vec![s.client_url.clone()],
                is_learner: false,
            }],
        }))
    }
}
