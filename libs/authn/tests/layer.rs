//! The layer against the real auth service (SQLite) over loopback gRPC.

use std::{sync::Arc, time::Duration};

use reporunner_auth::{Auth, AuthConfig, AuthStore, grpc::AuthGrpc};
use reporunner_authn::{AuthLayer, Authorizer, authorized};
use reporunner_proto::{
    agents::env_detector::v1::{
        DetectRequest, DetectResponse,
        env_detector_service_client::EnvDetectorServiceClient,
        env_detector_service_server::{EnvDetectorService, EnvDetectorServiceServer},
    },
    auth::v1::{UsageKind, auth_service_server},
    common::v1::{Environment, HostInfo, IndexMode, Principal, Tier},
};
use reporunner_server::{CancellationToken, GrpcServer};
use tonic::{Code, Request, Response, Status, transport::Channel};
use tonic_health_probe::check;
use tower::Layer;

const DETECT: &str = "/reporunner.agents.env_detector.v1.EnvDetectorService/Detect";
const ADMIN: &str = "rootadmin";
const ADMIN_PASSWORD: &str = "granite-falcon-harbor-88";

/// Answers with the caller's username as the hostname, so the test sees what
/// the handler saw.
struct WhoCalls;

#[tonic::async_trait]
impl EnvDetectorService for WhoCalls {
    async fn detect(&self, request: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
        let caller = authorized(&request)?;
        Ok(Response::new(DetectResponse {
            environment: Some(Environment {
                host: Some(HostInfo {
                    hostname: caller.principal.username.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            recommendations: None,
        }))
    }
}

mod tonic_health_probe {
    use tonic::transport::Channel;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    pub async fn check(channel: Channel) -> Result<(), tonic::Status> {
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
    }
}

struct Harness {
    auth: Arc<Auth>,
    authorizer: Authorizer,
    channel: Channel,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
    let config = AuthConfig {
        jwt_secret: Some("a-test-signing-key-of-enough-length-000".into()),
        ..AuthConfig::default()
    };
    let key = config.jwt_secret.clone().expect("set above");
    let store = AuthStore::connect(&url).await.expect("store");
    let auth = Arc::new(Auth::new(store, config, key.as_bytes()).await.expect("auth"));
    auth.ensure_admin(ADMIN, ADMIN_PASSWORD).await.expect("admin");
    let shutdown = CancellationToken::new();

    // The auth service on one listener…
    let auth_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let auth_uri = format!("http://{}", auth_listener.local_addr().expect("addr"));
    tokio::spawn(
        GrpcServer::new()
            .add_service(AuthGrpc::new(auth.clone()).into_server())
            .serve(auth_listener, shutdown.clone()),
    );

    // …and a protected service on another, reaching auth through the client stack.
    let channel = reporunner_client::connect(
        auth_service_server::SERVICE_NAME,
        &[auth_uri],
        &Default::default(),
    )
    .expect("connect");
    let authorizer = Authorizer::new(channel);
    let layer = AuthLayer::new(authorizer.clone()).metered(DETECT, UsageKind::MeteredRequest);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        GrpcServer::new()
            .add_service(layer.layer(EnvDetectorServiceServer::new(WhoCalls)))
            .serve(listener, shutdown.clone()),
    );
    let channel = Channel::from_shared(uri)
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    Harness {
        auth,
        authorizer,
        channel,
        shutdown,
        _dir: dir,
    }
}

fn with_token(token: &str) -> Request<DetectRequest> {
    let mut request = Request::new(DetectRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

async fn user_token(harness: &Harness, name: &str) -> (String, String) {
    let user = harness
        .auth
        .register(name, "saffron-kettle-mosaic-51", None)
        .await
        .expect("register");
    let (_, tokens) = harness
        .auth
        .login(name, "saffron-kettle-mosaic-51", None)
        .await
        .expect("login");
    (user.id, tokens.access.token)
}

#[tokio::test]
async fn the_handler_sees_the_caller_and_free_users_get_ten_metered_calls() {
    let harness = start().await;
    let mut client = EnvDetectorServiceClient::new(harness.channel.clone());
    let (_, token) = user_token(&harness, "alice").await;
    for _ in 0..10 {
        let reply = client
            .detect(with_token(&token))
            .await
            .expect("within the free limit")
            .into_inner();
        assert_eq!(reply.environment.unwrap().host.unwrap().hostname, "alice");
    }
    let status = client.detect(with_token(&token)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.metadata().get("retry-after").is_some(),
        "retry-after travels through the layer"
    );
    harness.shutdown.cancel();
}

#[tokio::test]
async fn missing_bad_and_blocked_tokens_are_refused_but_health_is_exempt() {
    let harness = start().await;
    let mut client = EnvDetectorServiceClient::new(harness.channel.clone());

    let status = client.detect(DetectRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("authorization"), "{}", status.message());
    let status = client.detect(with_token("not-a-jwt")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    check(harness.channel.clone())
        .await
        .expect("health needs no token");

    let (user_id, token) = user_token(&harness, "bob").await;
    client.detect(with_token(&token)).await.expect("bob may call");
    let (_, admin_tokens) = harness
        .auth
        .login(ADMIN, ADMIN_PASSWORD, None)
        .await
        .expect("admin login");
    let admin = harness
        .auth
        .authorize(&admin_tokens.access.token)
        .await
        .expect("admin principal")
        .0;
    let admin: Principal = admin;
    harness
        .auth
        .block_user(&admin, &user_id, "test")
        .await
        .expect("block");
    let status = client.detect(with_token(&token)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "a blocked user's live token stops working at once: {status:?}"
    );
    harness.shutdown.cancel();
}

#[tokio::test]
async fn a_feature_beyond_the_callers_tier_is_refused_naming_the_tier_it_needs() {
    let harness = start().await;
    let (user_id, token) = user_token(&harness, "carol").await;
    let vector =
        |p: &reporunner_proto::auth::v1::TierPolicy| p.index_modes.contains(&(IndexMode::Vector as i32));

    let carol = harness.authorizer.authorize(&token).await.expect("carol");
    let status = harness
        .authorizer
        .require(&carol, "vector search", vector)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "vector search needs the Advanced tier or higher; you are on the Free tier"
    );
    let status = harness
        .authorizer
        .require(&carol, "teleportation", |_| false)
        .await
        .unwrap_err();
    assert!(
        status.message().contains("not available on any tier"),
        "{status:?}"
    );

    let (_, admin_tokens) = harness
        .auth
        .login(ADMIN, ADMIN_PASSWORD, None)
        .await
        .expect("admin");
    let (admin, _) = harness
        .auth
        .authorize(&admin_tokens.access.token)
        .await
        .expect("admin principal");
    harness
        .auth
        .set_tier(&admin, &user_id, Tier::Advanced)
        .await
        .expect("upgrade");
    let carol = harness.authorizer.authorize(&token).await.expect("carol again");
    harness
        .authorizer
        .require(&carol, "vector search", vector)
        .await
        .expect("an Advanced user may search by vector");
    harness.shutdown.cancel();
}
