//! The acceptance test of the rate limit across replicas: two independent
//! auth services (each with its own connection pool, the same signing key)
//! on one PostgreSQL database (`DATABASE_URL`; a fresh `auth_test_<uuid>`
//! database, dropped afterwards; `REPORUNNER_SKIP_PG=1` skips it). 3x a Free
//! user's limit fired in parallel, alternating between the replicas: exactly
//! the limit succeeds, every refusal is RESOURCE_EXHAUSTED with retry-after.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use reporunner_auth::{
    Auth, AuthConfig, AuthStore,
    grpc::{AdminGrpc, AuthGrpc},
};
use reporunner_error::RETRY_AFTER;
use reporunner_proto::auth::v1::{
    ConsumeQuotaRequest, LoginRequest, RegisterRequest, UsageKind, auth_service_client::AuthServiceClient,
};
use reporunner_server::{CancellationToken, GrpcServer};
use tonic::{Code, Request, transport::Channel};

const KEY: &str = "0123456789abcdef0123456789abcdef-replica-test";
const PASSWORD: &str = "violet-umbrella-orbit-42";
const FREE_LIMIT: usize = 10;

/// One replica: its own pool, its own `Auth`, its own server and client.
struct Replica {
    client: AuthServiceClient<Channel>,
    shutdown: CancellationToken,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Replica {
    async fn start(url: &str) -> Self {
        let store = AuthStore::connect(url).await.unwrap();
        let config = AuthConfig {
            jwt_secret: Some(KEY.into()),
            ..AuthConfig::default()
        };
        let service = Arc::new(Auth::new(store, config, KEY.as_bytes()).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = GrpcServer::new()
            .add_service(AuthGrpc::new(service.clone()).into_server())
            .add_service(AdminGrpc::new(service).into_server());
        tokio::spawn(server.serve(listener, shutdown.clone()));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            client: AuthServiceClient::new(channel),
            shutdown,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_times_the_limit_through_two_replicas_lets_exactly_the_limit_through() {
    let Some(db) = common::postgres().await else {
        return;
    };
    // The first replica migrates the fresh database; the second finds it done.
    let mut a = Replica::start(&db.url).await;
    let b = Replica::start(&db.url).await;

    a.client
        .register(RegisterRequest {
            username: "racer".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    let login = a
        .client
        .login(LoginRequest {
            username: "racer".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let user_id = login.user.unwrap().id;
    let token = login.tokens.unwrap().access_token;

    let calls = (0..3 * FREE_LIMIT).map(|i| {
        let mut client = if i % 2 == 0 {
            a.client.clone()
        } else {
            b.client.clone()
        };
        let mut request = Request::new(ConsumeQuotaRequest {
            user_id: user_id.clone(),
            kind: UsageKind::MeteredRequest.into(),
            rpc: "replica-race".into(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        tokio::spawn(async move { client.consume_quota(request).await })
    });
    let results = futures::future::join_all(calls).await;

    let mut allowed = 0;
    let mut refused = 0;
    for result in results {
        match result.unwrap() {
            Ok(response) => {
                assert_eq!(response.into_inner().limit, 10);
                allowed += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let retry_after: u64 = status
                    .metadata()
                    .get(RETRY_AFTER)
                    .expect("a refusal carries retry-after")
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=3600).contains(&retry_after), "{retry_after}");
                refused += 1;
            }
        }
    }
    assert_eq!(allowed, FREE_LIMIT, "exactly the limit succeeds");
    assert_eq!(refused, 2 * FREE_LIMIT);
    drop((a, b));
    drop(db);
}

/// Authorize keeps what it read of a user for `authorize_cache_ttl`
/// (500 ms), so a change made through one replica reaches another only
/// when that expires: a block, a tier change and a delete each apply on
/// the other replica within 1 s (and on their own replica at once), while
/// the other replica was answering from its cache until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_block_tier_change_and_delete_apply_on_another_replica_within_a_second() {
    use reporunner_auth::AuthError;
    use reporunner_proto::common::v1::Tier;
    use std::time::{Duration, Instant};

    let Some(db) = common::postgres().await else {
        return;
    };
    let replica = |url: String| async move {
        let store = AuthStore::connect(&url).await.unwrap();
        let config = AuthConfig {
            jwt_secret: Some(KEY.into()),
            ..AuthConfig::default()
        };
        Auth::new(store, config, KEY.as_bytes()).await.unwrap()
    };
    let a = replica(db.url.clone()).await;
    let b = replica(db.url.clone()).await;
    let admin = a.ensure_admin("root", PASSWORD).await.unwrap().principal();
    a.register("mallory", PASSWORD, None).await.unwrap();
    let (user, tokens) = a.login("mallory", PASSWORD, None).await.unwrap();
    let token = tokens.access.token;

    // Within 1 s of `change` (made on `a`), `b` says `applied`; `a` at once.
    async fn applies_within_a_second(
        a: &Auth,
        b: &Auth,
        token: &str,
        applied: impl Fn(
            &reporunner_auth::Result<(
                reporunner_proto::common::v1::Principal,
                reporunner_auth::TierPolicyConfig,
            )>,
        ) -> bool,
        change: impl std::future::Future<Output = ()>,
    ) -> Duration {
        // `b` has the user cached from here on.
        assert!(!applied(&b.authorize(token).await));
        change.await;
        let changed = Instant::now();
        assert!(
            applied(&a.authorize(token).await),
            "the replica that made the change applies it at once"
        );
        loop {
            if applied(&b.authorize(token).await) {
                return changed.elapsed();
            }
            assert!(
                changed.elapsed() < Duration::from_secs(1),
                "not applied on the other replica within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let took = applies_within_a_second(
        &a,
        &b,
        &token,
        |r| matches!(r, Ok((_, policy)) if policy.tier == Tier::Premium),
        async {
            a.set_tier(&admin, &user.id, Tier::Premium).await.unwrap();
        },
    )
    .await;
    eprintln!("tier change on the other replica after {took:?}");
    let took = applies_within_a_second(&a, &b, &token, |r| matches!(r, Err(AuthError::Blocked)), async {
        a.block_user(&admin, &user.id, "test").await.unwrap();
    })
    .await;
    eprintln!("block on the other replica after {took:?}");
    a.unblock_user(&admin, &user.id).await.unwrap();
    let took = applies_within_a_second(
        &a,
        &b,
        &token,
        |r| matches!(r, Err(AuthError::InvalidToken)),
        async {
            a.delete_user(&admin, &user.id).await.unwrap();
        },
    )
    .await;
    eprintln!("delete on the other replica after {took:?}");
}
