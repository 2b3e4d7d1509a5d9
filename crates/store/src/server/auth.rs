//! The Auth service: authenticate, and user/role administration (root only once auth is on).
//! Must never log a password or a token.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::Shared;
use crate::auth::Auth;
use crate::error::EtcdError;
use crate::pb::etcdserverpb::*;

pub(crate) struct AuthService(pub(crate) Arc<Shared>);

impl AuthService {
    /// Runs an admin operation as etcd does: the caller must be root once auth is enabled.
    fn admin<T, R>(
        &self,
        req: &Request<T>,
        op: impl FnOnce(&mut Auth) -> Result<R, EtcdError>,
    ) -> Result<(R, Option<ResponseHeader>), Status> {
        let s = &self.0;
        let caller = s.caller(req)?;
        let out = {
            let mut auth = s.auth_mut();
            auth.check_admin(&caller)?;
            op(&mut auth)?
        };
        s.publish(None);
        let rev = s.core().rev();
        Ok((out, s.header(rev)))
    }
}

#[tonic::async_trait]
impl auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let ((), header) = self.admin(&req, |a| a.enable())?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let ((), header) = self.admin(&req, |a| {
            a.disable();
            Ok(())
        })?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        _req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let s = &self.0;
        let (enabled, auth_revision) = {
            let auth = s.auth();
            (auth.enabled(), auth.revision())
        };
        let rev = s.core().rev();
        Ok(Response::new(AuthStatusResponse {
            header: s.header(rev),
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let s = &self.0;
        let r = req.into_inner();
        let token = s.auth_mut().authenticate(&r.name, &r.password);
        if token.is_err() {
            tracing::info!(user = %r.name, "store authentication failed");
        }
        let token = token?;
        let rev = s.core().rev();
        Ok(Response::new(AuthenticateResponse {
            header: s.header(rev),
            token,
        }))
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let r = req.get_ref();
        let password = if r.options.as_ref().is_some_and(|o| o.no_password) {
            // A user without a password cannot authenticate: give it one nobody knows.
            hex::encode(rand::random::<[u8; 32]>())
        } else {
            r.password.clone()
        };
        let name = r.name.clone();
        let ((), header) = self.admin(&req, |a| a.user_add(&name, &password))?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let name = req.get_ref().name.clone();
        let (roles, header) = self.admin(&req, |a| a.user_roles(&name))?;
        Ok(Response::new(AuthUserGetResponse { header, roles }))
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let (users, header) = self.admin(&req, |a| Ok(a.user_list()))?;
        Ok(Response::new(AuthUserListResponse { header, users }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let name = req.get_ref().name.clone();
        let ((), header) = self.admin(&req, |a| a.user_delete(&name))?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let r = req.get_ref();
        let (name, password) = (r.name.clone(), r.password.clone());
        let ((), header) = self.admin(&req, |a| a.user_change_password(&name, &password))?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let r = req.get_ref();
        let (user, role) = (r.user.clone(), r.role.clone());
        let ((), header) = self.admin(&req, |a| a.user_grant_role(&user, &role))?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let r = req.get_ref();
        let (name, role) = (r.name.clone(), r.role.clone());
        let ((), header) = self.admin(&req, |a| a.user_revoke_role(&name, &role))?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let name = req.get_ref().name.clone();
        let ((), header) = self.admin(&req, |a| a.role_add(&name))?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let role = req.get_ref().role.clone();
        let (perm, header) = self.admin(&req, |a| a.role_get(&role))?;
        Ok(Response::new(AuthRoleGetResponse { header, perm }))
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let (roles, header) = self.admin(&req, |a| Ok(a.role_list()))?;
        Ok(Response::new(AuthRoleListResponse { header, roles }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let role = req.get_ref().role.clone();
        let ((), header) = self.admin(&req, |a| a.role_delete(&role))?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let r = req.get_ref();
        let name = r.name.clone();
        let perm = r
            .perm
            .clone()
            .ok_or_else(|| Status::invalid_argument("etcdserver: permission is not provided"))?;
        let ((), header) = self.admin(&req, |a| a.role_grant(&name, perm))?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let r = req.get_ref();
        let (role, key, end) = (r.role.clone(), r.key.clone(), r.range_end.clone());
        let ((), header) = self.admin(&req, |a| a.role_revoke(&role, &key, &end))?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
