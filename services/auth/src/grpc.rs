//! The gRPC adapters of `AuthService` and `AdminService`: identity from
//! metadata, request validation and conversion only.

use std::{net::IpAddr, sync::Arc};

use reporunner_authn::bearer_token;
use reporunner_error::ServiceError;
use reporunner_proto::{
    auth::v1::{
        AuditEvent, AuthorizeRequest, AuthorizeResponse, BlockUserRequest, BlockUserResponse,
        ConsumeQuotaRequest, ConsumeQuotaResponse, CreateUserRequest, CreateUserResponse, DeleteUserRequest,
        DeleteUserResponse, GetUsageRequest, GetUsageResponse, ListAuditEventsRequest,
        ListAuditEventsResponse, ListTierPoliciesRequest, ListTierPoliciesResponse, ListUsersRequest,
        ListUsersResponse, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, RefreshRequest,
        RefreshResponse, RegisterRequest, RegisterResponse, SetTierRequest, SetTierResponse, TokenPair,
        UnblockUserRequest, UnblockUserResponse, UsageCounter, User, WhoAmIRequest, WhoAmIResponse,
        admin_service_server::{AdminService, AdminServiceServer},
        auth_service_server::{AuthService, AuthServiceServer},
    },
    common::v1::{Principal, Tier},
};
use tonic::{Request, Response, Status};

use crate::{
    AuthError, TierPolicyConfig, UserRecord,
    service::{Auth, IssuedTokens},
    store::AuditRecord,
};

/// A timestamp from Unix milliseconds.
pub fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The contract's view of a user (never the password hash).
pub fn user_to_proto(user: &UserRecord) -> User {
    User {
        id: user.id.clone(),
        username: user.username.clone(),
        tier: user.tier.into(),
        blocked: user.blocked,
        created_at: Some(timestamp_ms(user.created_at_ms)),
    }
}

fn tokens_to_proto(tokens: IssuedTokens) -> TokenPair {
    let access_ms = i64::try_from(tokens.access.expires_at)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    TokenPair {
        access_token: tokens.access.token,
        access_expires_at: Some(timestamp_ms(access_ms)),
        refresh_token: tokens.refresh_token,
        refresh_expires_at: Some(timestamp_ms(tokens.refresh_expires_at_ms)),
    }
}

fn audit_to_proto(record: AuditRecord) -> AuditEvent {
    AuditEvent {
        id: record.id,
        time: Some(timestamp_ms(record.at_ms)),
        actor_id: record.actor_id.unwrap_or_default(),
        target_id: record.target_id.unwrap_or_default(),
        action: record.action,
        detail: record.detail,
    }
}

fn status(err: AuthError) -> Status {
    err.to_status()
}

async fn caller<T>(auth: &Auth, request: &Request<T>) -> Result<(Principal, TierPolicyConfig), Status> {
    let token = bearer_token(request)?;
    auth.authorize(token).await.map_err(status)
}

/// The metadata key a reverse proxy names the client in.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client of `request`: the TCP peer, or, when the peer is one of
/// `trusted_proxies`, the last untrusted hop of its `x-forwarded-for`.
/// `None` when the transport knows no peer (an in-memory channel).
pub fn client_address<T>(request: &Request<T>, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = request.remote_addr().map(|addr| addr.ip());
    let forwarded = request
        .metadata()
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok());
    crate::throttle::client_address(peer, forwarded, trusted_proxies)
}

fn tier_arg(value: i32) -> Result<Tier, Status> {
    Tier::try_from(value).map_err(|_| Status::invalid_argument(format!("unknown tier {value}")))
}

/// Serves `reporunner.auth.v1.AuthService`.
#[derive(Clone, Debug)]
pub struct AuthGrpc {
    auth: Arc<Auth>,
}

impl AuthGrpc {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }

    /// The tonic service, ready for a server.
    pub fn into_server(self) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let address = client_address(&request, &self.auth.config().trusted_proxies);
        let request = request.into_inner();
        let user = self
            .auth
            .register(&request.username, &request.password, address)
            .await
            .map_err(status)?;
        Ok(Response::new(RegisterResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let address = client_address(&request, &self.auth.config().trusted_proxies);
        let request = request.into_inner();
        let (user, tokens) = self
            .auth
            .login(&request.username, &request.password, address)
            .await
            .map_err(status)?;
        Ok(Response::new(LoginResponse {
            user: Some(user_to_proto(&user)),
            tokens: Some(tokens_to_proto(tokens)),
        }))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        let tokens = self
            .auth
            .refresh(&request.into_inner().refresh_token)
            .await
            .map_err(status)?;
        Ok(Response::new(RefreshResponse {
            tokens: Some(tokens_to_proto(tokens)),
        }))
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        let request = request.into_inner();
        self.auth
            .logout(&principal, &request.refresh_token, request.all)
            .await
            .map_err(status)?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let (principal, policy) = caller(&self.auth, &request).await?;
        let user = self.auth.whoami(&principal).await.map_err(status)?;
        Ok(Response::new(WhoAmIResponse {
            user: Some(user_to_proto(&user)),
            policy: Some(policy.to_proto()),
        }))
    }

    async fn list_tier_policies(
        &self,
        _request: Request<ListTierPoliciesRequest>,
    ) -> Result<Response<ListTierPoliciesResponse>, Status> {
        let policies = crate::tier::ALL_TIERS
            .into_iter()
            .map(|tier| self.auth.policy(tier).map(TierPolicyConfig::to_proto))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        Ok(Response::new(ListTierPoliciesResponse { policies }))
    }

    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let (principal, policy) = self
            .auth
            .authorize(&request.into_inner().access_token)
            .await
            .map_err(status)?;
        Ok(Response::new(AuthorizeResponse {
            principal: Some(principal),
            policy: Some(policy.to_proto()),
        }))
    }

    async fn consume_quota(
        &self,
        request: Request<ConsumeQuotaRequest>,
    ) -> Result<Response<ConsumeQuotaResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        let request = request.into_inner();
        let kind = request.kind();
        let user_id = if request.user_id.is_empty() {
            principal.user_id.as_str()
        } else {
            request.user_id.as_str()
        };
        if user_id != principal.user_id && principal.tier() != Tier::Admin {
            return Err(status(AuthError::PermissionDenied(
                "only the admin may spend another user's quota".into(),
            )));
        }
        let outcome = self
            .auth
            .consume_quota(user_id, kind, &request.rpc)
            .await
            .map_err(status)?;
        Ok(Response::new(ConsumeQuotaResponse {
            limit: outcome.limit,
            remaining: outcome.remaining,
            resets_at: Some(timestamp_ms(outcome.resets_at_ms)),
        }))
    }

    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        let report = self
            .auth
            .get_usage(&principal, &request.into_inner().user_id)
            .await
            .map_err(status)?;
        Ok(Response::new(GetUsageResponse {
            user_id: report.user_id,
            counters: report
                .counters
                .into_iter()
                .map(|c| UsageCounter {
                    kind: c.kind.into(),
                    last_hour: c.last_window,
                    total: c.total,
                })
                .collect(),
            metered_limit_per_hour: report.metered_limit_per_hour,
            metered_remaining: report.metered_remaining,
        }))
    }
}

/// Serves `reporunner.auth.v1.AdminService`; every call needs the admin's token.
#[derive(Clone, Debug)]
pub struct AdminGrpc {
    auth: Arc<Auth>,
}

impl AdminGrpc {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }

    /// The tonic service, ready for a server.
    pub fn into_server(self) -> AdminServiceServer<Self> {
        AdminServiceServer::new(self)
    }
}

fn one_user(user: UserRecord) -> Option<User> {
    Some(user_to_proto(&user))
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        let request = request.into_inner();
        let tier = tier_arg(request.tier)?;
        let user = self
            .auth
            .create_user(&principal, &request.username, &request.password, tier)
            .await
            .map_err(status)?;
        Ok(Response::new(CreateUserResponse { user: one_user(user) }))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        let request = request.into_inner();
        let (users, next_page_token) = self
            .auth
            .list_users(&principal, request.page_size, &request.page_token)
            .await
            .map_err(status)?;
        Ok(Response::new(ListUsersResponse {
            users: users.iter().map(user_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn block_user(
        &self,
        request: Request<BlockUserRequest>,
    ) -> Result<Response<BlockUserResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        let request = request.into_inner();
        let user = self
            .auth
            .block_user(&principal, &request.user_id, &request.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(BlockUserResponse { user: one_user(user) }))
    }

    async fn unblock_user(
        &self,
        request: Request<UnblockUserRequest>,
    ) -> Result<Response<UnblockUserResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        let user = self
            .auth
            .unblock_user(&principal, &request.into_inner().user_id)
            .await
            .map_err(status)?;
        Ok(Response::new(UnblockUserResponse { user: one_user(user) }))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        self.auth
            .delete_user(&principal, &request.into_inner().user_id)
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn set_tier(&self, request: Request<SetTierRequest>) -> Result<Response<SetTierResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        let request = request.into_inner();
        let tier = tier_arg(request.tier)?;
        let user = self
            .auth
            .set_tier(&principal, &request.user_id, tier)
            .await
            .map_err(status)?;
        Ok(Response::new(SetTierResponse { user: one_user(user) }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let (principal, _) = caller(&self.auth, &request).await?;
        let request = request.into_inner();
        let target = Some(request.target_id.as_str()).filter(|t| !t.is_empty());
        let (events, next_page_token) = self
            .auth
            .list_audit_events(&principal, target, request.page_size, &request.page_token)
            .await
            .map_err(status)?;
        Ok(Response::new(ListAuditEventsResponse {
            events: events.into_iter().map(audit_to_proto).collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_from_millis() {
        let ts = timestamp_ms(1_700_000_000_123);
        assert_eq!(ts.seconds, 1_700_000_000);
        assert_eq!(ts.nanos, 123_000_000);
        let ts = timestamp_ms(-1);
        assert_eq!(ts.seconds, -1);
        assert_eq!(ts.nanos, 999_000_000);
    }

    #[test]
    fn bearer_tokens() {
        let mut request = Request::new(());
        assert_eq!(
            bearer_token(&request).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        request
            .metadata_mut()
            .insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&request).unwrap(), "abc");
        request
            .metadata_mut()
            .insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer_token(&request).is_err());
    }
}
