//! Both gRPC services hosted on loopback over SQLite (a temporary file) and
//! the real PostgreSQL (`DATABASE_URL`; each test creates and drops its own
//! database; `REPORUNNER_SKIP_PG=1` skips that half), called by real tonic
//! clients.
#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use reporunner_auth::{
    AccessClaims, Auth, AuthConfig, AuthStore, TokenIssuer,
    grpc::{AdminGrpc, AuthGrpc},
};
use reporunner_error::RETRY_AFTER;
use reporunner_proto::{
    auth::v1::{
        BlockUserRequest, ConsumeQuotaRequest, CreateUserRequest, DeleteUserRequest, GetUsageRequest,
        ListAuditEventsRequest, ListTierPoliciesRequest, ListUsersRequest, LoginRequest, LogoutRequest,
        RefreshRequest, RegisterRequest, SetTierRequest, UnblockUserRequest, UsageKind, WhoAmIRequest,
        admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
    },
    common::v1::Tier,
};
use reporunner_server::{CancellationToken, GrpcServer};
use tonic::{Code, Request, transport::Channel};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "correct horse battery staple 93";
const PASSWORD: &str = "violet-umbrella-orbit-42";
const KEY: &str = "0123456789abcdef0123456789abcdef-grpc-test";

use common::{TestDb, postgres, sqlite};

/// Both services on loopback, with the admin created.
struct Harness {
    auth: AuthServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
    service: Arc<Auth>,
    admin_token: String,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    async fn start(db: &TestDb) -> Self {
        let store = AuthStore::connect(&db.url).await.unwrap();
        let config = AuthConfig {
            jwt_secret: Some(KEY.into()),
            ..AuthConfig::default()
        };
        let key = config.jwt_secret.clone().unwrap();
        let service = Arc::new(Auth::new(store, config, key.as_bytes()).await.unwrap());
        service.ensure_admin(ADMIN, ADMIN_PASSWORD).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = GrpcServer::new()
            .add_service(AuthGrpc::new(service.clone()).into_server())
            .add_service(AdminGrpc::new(service.clone()).into_server());
        tokio::spawn(server.serve(listener, shutdown.clone()));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut harness = Self {
            auth: AuthServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel),
            service,
            admin_token: String::new(),
            shutdown,
        };
        harness.admin_token = harness.login(ADMIN, ADMIN_PASSWORD).await.0;
        harness
    }

    /// Logs in; returns (access token, refresh token, user id).
    async fn login(&mut self, username: &str, password: &str) -> (String, String, String) {
        let response = self
            .auth
            .login(LoginRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let tokens = response.tokens.unwrap();
        (
            tokens.access_token,
            tokens.refresh_token,
            response.user.unwrap().id,
        )
    }

    /// Registers and logs in a Free user; returns (access token, refresh token, user id).
    async fn user(&mut self, username: &str) -> (String, String, String) {
        self.auth
            .register(RegisterRequest {
                username: username.into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap();
        self.login(username, PASSWORD).await
    }
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn register_login_whoami(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (token, _, id) = h.user("alice").await;
    let me = h
        .auth
        .who_am_i(authed(WhoAmIRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    let user = me.user.unwrap();
    assert_eq!(user.id, id);
    assert_eq!(user.username, "alice");
    assert_eq!(user.tier(), Tier::Free);
    assert_eq!(me.policy.unwrap().metered_requests_per_hour, 10);

    let missing = h.auth.who_am_i(WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let tampered = h
        .auth
        .who_am_i(authed(WhoAmIRequest {}, &format!("{token}x")))
        .await
        .unwrap_err();
    assert_eq!(tampered.code(), Code::Unauthenticated);
    let taken = h
        .auth
        .register(RegisterRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
}

async fn wrong_password_and_unknown_user_look_the_same(db: &TestDb) {
    let mut h = Harness::start(db).await;
    h.user("bob").await;
    let wrong = h
        .auth
        .login(LoginRequest {
            username: "bob".into(),
            password: "not-the-password-at-all".into(),
        })
        .await
        .unwrap_err();
    let unknown = h
        .auth
        .login(LoginRequest {
            username: "nobody".into(),
            password: "not-the-password-at-all".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message());
}

async fn blocked_users_live_token_is_refused(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (token, _, id) = h.user("carol").await;
    h.auth.who_am_i(authed(WhoAmIRequest {}, &token)).await.unwrap();
    h.admin
        .block_user(authed(
            BlockUserRequest {
                user_id: id.clone(),
                reason: "test".into(),
            },
            &h.admin_token,
        ))
        .await
        .unwrap();
    let refused = h
        .auth
        .who_am_i(authed(WhoAmIRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let login = h
        .auth
        .login(LoginRequest {
            username: "carol".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(login.code(), Code::PermissionDenied);
}

async fn tier_change_applies_to_a_live_token(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (token, _, id) = h.user("dave").await;
    h.admin
        .set_tier(authed(
            SetTierRequest {
                user_id: id,
                tier: Tier::Premium.into(),
            },
            &h.admin_token,
        ))
        .await
        .unwrap();
    let me = h
        .auth
        .who_am_i(authed(WhoAmIRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().tier(), Tier::Premium);
    assert_eq!(me.policy.unwrap().metered_requests_per_hour, 200);
}

async fn second_admin_refused(db: &TestDb) {
    let mut h = Harness::start(db).await;
    // The same admin again is a no-op; another one is refused.
    h.service.ensure_admin(ADMIN, ADMIN_PASSWORD).await.unwrap();
    assert!(h.service.ensure_admin("root", ADMIN_PASSWORD).await.is_err());
    let refused = h
        .admin
        .create_user(authed(
            CreateUserRequest {
                username: "admin2".into(),
                password: PASSWORD.into(),
                tier: Tier::Admin.into(),
            },
            &h.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
}

async fn non_admin_cannot_call_admin_rpcs(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (token, _, id) = h.user("eve").await;
    let list = h
        .admin
        .list_users(authed(ListUsersRequest::default(), &token))
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::PermissionDenied);
    let upgrade = h
        .admin
        .set_tier(authed(
            SetTierRequest {
                user_id: id,
                tier: Tier::Premium.into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(upgrade.code(), Code::PermissionDenied);
    let anonymous = h.admin.list_users(ListUsersRequest::default()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let users = h
        .admin
        .list_users(authed(ListUsersRequest::default(), &h.admin_token))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.len(), 2);
}

async fn eleventh_metered_request_of_a_free_user_is_refused(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (token, _, id) = h.user("frank").await;
    let request = || ConsumeQuotaRequest {
        user_id: id.clone(),
        kind: UsageKind::MeteredRequest.into(),
        rpc: "test".into(),
    };
    for i in 0..10 {
        let ok = h
            .auth
            .consume_quota(authed(request(), &token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ok.limit, 10);
        assert_eq!(ok.remaining, 9 - i);
    }
    let refused = h.auth.consume_quota(authed(request(), &token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let retry_after: u64 = refused
        .metadata()
        .get(RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let usage = h
        .auth
        .get_usage(authed(GetUsageRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.metered_remaining, 0);
}

/// ConsumeQuota spends the caller's own quota: another user's is refused
/// (PERMISSION_DENIED, nothing spent), except to the admin.
async fn only_the_admin_spends_another_users_quota(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (a, _, _) = h.user("spender").await;
    let (b, _, b_id) = h.user("victim").await;
    let spend = |user_id: &str, token: &str| {
        authed(
            ConsumeQuotaRequest {
                user_id: user_id.to_owned(),
                kind: UsageKind::MeteredRequest.into(),
                rpc: "test".into(),
            },
            token,
        )
    };
    let refused = h.auth.consume_quota(spend(&b_id, &a)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("only the admin may spend another user's quota"),
        "{}",
        refused.message()
    );
    let auth = h.auth.clone();
    let remaining = |token: String| {
        let mut auth = auth.clone();
        async move {
            auth.get_usage(authed(GetUsageRequest::default(), &token))
                .await
                .unwrap()
                .into_inner()
                .metered_remaining
        }
    };
    assert_eq!(
        remaining(b.clone()).await,
        10,
        "nothing of the victim's was spent"
    );
    let spent = h
        .auth
        .consume_quota(spend(&b_id, &h.admin_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spent.remaining, 9);
    assert_eq!(remaining(b).await, 9);
}

async fn usage_is_private_but_not_to_the_admin(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (a, _, _) = h.user("usera").await;
    let (_, _, b_id) = h.user("userb").await;
    let refused = h
        .auth
        .get_usage(authed(
            GetUsageRequest {
                user_id: b_id.clone(),
            },
            &a,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let usage = h
        .auth
        .get_usage(authed(
            GetUsageRequest {
                user_id: b_id.clone(),
            },
            &h.admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.user_id, b_id);
    assert_eq!(usage.metered_limit_per_hour, 10);
}

async fn refresh_tokens_rotate(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (_, refresh, _) = h.user("grace").await;
    let pair = h
        .auth
        .refresh(RefreshRequest {
            refresh_token: refresh.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_ne!(pair.refresh_token, refresh);
    h.auth
        .who_am_i(authed(WhoAmIRequest {}, &pair.access_token))
        .await
        .unwrap();
    let reused = h
        .auth
        .refresh(RefreshRequest {
            refresh_token: refresh,
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
    // Reuse of a spent token revoked the whole family.
    let family = h
        .auth
        .refresh(RefreshRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(family.code(), Code::Unauthenticated);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn assert_unauthenticated(h: &mut Harness, token: &str, what: &str) {
    let refused = h
        .auth
        .who_am_i(authed(WhoAmIRequest {}, token))
        .await
        .expect_err(what);
    assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused:?}");
}

async fn bad_access_tokens_are_unauthenticated(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (token, _, id) = h.user("mallory").await;
    h.auth.who_am_i(authed(WhoAmIRequest {}, &token)).await.unwrap();
    let issuer = h.service.config().jwt_issuer.clone();
    let audience = h.service.config().jwt_audience.clone();

    // Expired: the right key, issuer and audience, exp well past the leeway.
    let long_ago = unix_now() - 3600;
    let claims = AccessClaims {
        sub: id.clone(),
        tier: "free".into(),
        iss: issuer.clone(),
        aud: audience.clone(),
        iat: long_ago - 900,
        nbf: long_ago - 900,
        exp: long_ago,
        jti: "expired".into(),
    };
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
    )
    .unwrap();
    assert_unauthenticated(&mut h, &expired, "expired").await;

    // alg: none, unsigned, claiming the admin tier.
    let now = unix_now();
    let payload = serde_json::json!({
        "sub": id, "tier": "admin", "iss": issuer, "aud": audience,
        "iat": now, "nbf": now, "exp": now + 900, "jti": "none",
    });
    for header in [
        serde_json::json!({"alg": "none"}),
        serde_json::json!({"alg": "none", "typ": "JWT"}),
    ] {
        let none = format!("{}.{}.", b64(&header), b64(&payload));
        assert_unauthenticated(&mut h, &none, "alg none").await;
    }

    // Wrong audience: the same key and issuer.
    let other = TokenIssuer::new(KEY.as_bytes(), &issuer, "someone-else", Duration::from_secs(900));
    let wrong_aud = other
        .issue(&id, reporunner_proto::common::v1::Tier::Free)
        .unwrap()
        .token;
    assert_unauthenticated(&mut h, &wrong_aud, "wrong audience").await;

    // Tampered: the payload edited (tier admin), the original signature kept.
    let parts: Vec<&str> = token.split('.').collect();
    let mut edited: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edited["tier"] = "admin".into();
    let tampered = format!("{}.{}.{}", parts[0], b64(&edited), parts[2]);
    assert_unauthenticated(&mut h, &tampered, "tampered payload").await;
    // Tampered signature.
    let mut sig = parts[2].to_owned().into_bytes();
    sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).unwrap());
    assert_unauthenticated(&mut h, &bad_sig, "tampered signature").await;

    // The real token still works.
    h.auth.who_am_i(authed(WhoAmIRequest {}, &token)).await.unwrap();
}

async fn logout_then_refresh_is_unauthenticated(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (token, refresh, _) = h.user("oscar").await;
    h.auth
        .logout(authed(
            LogoutRequest {
                refresh_token: refresh.clone(),
                all: false,
            },
            &token,
        ))
        .await
        .unwrap();
    let refused = h
        .auth
        .refresh(RefreshRequest {
            refresh_token: refresh,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Logout of all tokens revokes a second login's refresh token too.
    let (token2, refresh2, _) = h.login("oscar", PASSWORD).await;
    h.auth
        .logout(authed(
            LogoutRequest {
                refresh_token: String::new(),
                all: true,
            },
            &token2,
        ))
        .await
        .unwrap();
    let refused = h
        .auth
        .refresh(RefreshRequest {
            refresh_token: refresh2,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

async fn deleted_users_live_token_is_unauthenticated(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (token, refresh, id) = h.user("peggy").await;
    h.auth.who_am_i(authed(WhoAmIRequest {}, &token)).await.unwrap();
    h.admin
        .delete_user(authed(DeleteUserRequest { user_id: id }, &h.admin_token))
        .await
        .unwrap();
    assert_unauthenticated(&mut h, &token, "deleted user's token").await;
    let refused = h
        .auth
        .refresh(RefreshRequest {
            refresh_token: refresh,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

async fn unblock_restores_access_and_the_block_is_audited(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (token, _, id) = h.user("trent").await;
    let admin_id = h
        .auth
        .who_am_i(authed(WhoAmIRequest {}, &h.admin_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    h.admin
        .block_user(authed(
            BlockUserRequest {
                user_id: id.clone(),
                reason: "suspicious".into(),
            },
            &h.admin_token,
        ))
        .await
        .unwrap();
    let blocked = h
        .auth
        .who_am_i(authed(WhoAmIRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(blocked.code(), Code::PermissionDenied);

    let user = h
        .admin
        .unblock_user(authed(UnblockUserRequest { user_id: id.clone() }, &h.admin_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!user.blocked);
    // The live access token works again, and so does a login.
    h.auth.who_am_i(authed(WhoAmIRequest {}, &token)).await.unwrap();
    h.login("trent", PASSWORD).await;

    let events = h
        .admin
        .list_audit_events(authed(
            ListAuditEventsRequest {
                page_size: 100,
                page_token: String::new(),
                target_id: id.clone(),
            },
            &h.admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let block = events
        .iter()
        .find(|e| e.action == "user.blocked")
        .unwrap_or_else(|| panic!("no block in {events:?}"));
    assert_eq!(block.actor_id, admin_id);
    assert_eq!(block.target_id, id);
    assert_eq!(block.detail, "suspicious");
    assert!(block.time.is_some());
    assert!(events.iter().any(|e| e.action == "user.unblocked"));
    assert!(events.iter().all(|e| e.target_id == id));

    let refused = h
        .admin
        .list_audit_events(authed(ListAuditEventsRequest::default(), &token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

async fn tier_policies_are_listed_lowest_first_without_a_token(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let policies = h
        .auth
        .list_tier_policies(ListTierPoliciesRequest {})
        .await
        .unwrap()
        .into_inner()
        .policies;
    let tiers: Vec<i32> = policies.iter().map(|p| p.tier).collect();
    assert_eq!(
        tiers,
        [
            Tier::Free,
            Tier::Tester,
            Tier::Advanced,
            Tier::Premium,
            Tier::Admin
        ]
        .map(|t| t as i32)
    );
    let hourly: Vec<u32> = policies.iter().map(|p| p.metered_requests_per_hour).collect();
    assert_eq!(hourly, [10, 100, 50, 200, 1000]);
}

async fn local_session_is_in_process_only_and_premium_beside_an_admin(db: &TestDb) {
    let mut h = Harness::start(db).await;
    let (user, tokens) = h.service.local_session("local").await.unwrap();
    assert_eq!(user.tier, Tier::Premium, "the admin exists already");
    let me = h
        .auth
        .who_am_i(authed(WhoAmIRequest {}, &tokens.access.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().username, "local");
    let (again, _) = h.service.local_session("local").await.unwrap();
    assert_eq!(again.id, user.id, "the same principal every time");
    // Nobody knows its password: Login cannot reach it.
    let refused = h
        .auth
        .login(LoginRequest {
            username: "local".into(),
            password: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    h.admin
        .block_user(authed(
            BlockUserRequest {
                user_id: user.id.clone(),
                reason: "test".into(),
            },
            &h.admin_token,
        ))
        .await
        .unwrap();
    assert!(
        h.service.local_session("local").await.is_err(),
        "a blocked local user stays blocked"
    );
}

async fn local_session_is_the_admin_on_a_fresh_install(db: &TestDb) {
    let store = AuthStore::connect(&db.url).await.unwrap();
    let service = Auth::new(store, AuthConfig::default(), KEY.as_bytes())
        .await
        .unwrap();
    let (user, _) = service.local_session("owner").await.unwrap();
    assert_eq!(user.tier, Tier::Admin);
    // A weak password is refused before anything changes.
    assert!(service.ensure_admin("other", "short").await.is_err());
    assert_eq!(service.store().find_admin().await.unwrap().unwrap().id, user.id);
    // A real admin takes over; the local owner steps down to Premium.
    let admin = service.ensure_admin("other", ADMIN_PASSWORD).await.unwrap();
    assert_eq!(admin.tier, Tier::Admin);
    let local = service.store().find_user(&user.id).await.unwrap().unwrap();
    assert_eq!(local.tier, Tier::Premium);
    let (events, _) = service
        .store()
        .list_audit_events(Some(&user.id), 50, "")
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "admin.takeover" && e.actor_id.as_deref() == Some(admin.id.as_str())),
        "{events:?}"
    );
    // The local owner keeps working, as Premium.
    let (again, _) = service.local_session("owner").await.unwrap();
    assert_eq!((again.id, again.tier), (user.id, Tier::Premium));
    // There is still exactly one admin: nobody else takes over from it.
    assert!(matches!(
        service.ensure_admin("third", ADMIN_PASSWORD).await,
        Err(reporunner_auth::AuthError::AdminExists)
    ));
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::sqlite();
                super::$name(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::postgres().await {
                    super::$name(&db).await;
                }
            }
        }
    )*};
}

on_both!(
    register_login_whoami,
    wrong_password_and_unknown_user_look_the_same,
    blocked_users_live_token_is_refused,
    tier_change_applies_to_a_live_token,
    second_admin_refused,
    non_admin_cannot_call_admin_rpcs,
    eleventh_metered_request_of_a_free_user_is_refused,
    usage_is_private_but_not_to_the_admin,
    only_the_admin_spends_another_users_quota,
    refresh_tokens_rotate,
    bad_access_tokens_are_unauthenticated,
    logout_then_refresh_is_unauthenticated,
    deleted_users_live_token_is_unauthenticated,
    unblock_restores_access_and_the_block_is_audited,
    local_session_is_in_process_only_and_premium_beside_an_admin,
    tier_policies_are_listed_lowest_first_without_a_token,
    local_session_is_the_admin_on_a_fresh_install,
);
