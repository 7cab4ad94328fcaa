//! `ServiceChannel::with_identity` against an agent behind `MeshLayer`, over
//! loopback gRPC: the identity goes with every call of the channel (and its
//! clones), in its own header, and nothing else about the call changes.

use std::{sync::Arc, time::Duration};

use reporunner_client::{ClientConfig, connect};
use reporunner_identity::{MeshKey, MeshLayer, ServiceTokenSource, mesh_caller};
use reporunner_proto::{
    agents::env_detector::v1::{
        DetectRequest, DetectResponse,
        env_detector_service_client::EnvDetectorServiceClient,
        env_detector_service_server::{self, EnvDetectorService, EnvDetectorServiceServer},
    },
    common::v1::{Environment, HostInfo},
};
use reporunner_server::GrpcServer;
use tonic::{Code, Request, Response, Status};
use tower::Layer as _;

/// Answers with who called (hostname) and the `authorization` it saw (os).
struct WhoCalls;

#[tonic::async_trait]
impl EnvDetectorService for WhoCalls {
    async fn detect(&self, request: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
        let caller = mesh_caller(&request).unwrap_or("nobody").to_owned();
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Response::new(DetectResponse {
            environment: Some(Environment {
                host: Some(HostInfo {
                    hostname: caller,
                    os: authorization,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            recommendations: None,
        }))
    }
}

fn host(response: Response<DetectResponse>) -> HostInfo {
    response
        .into_inner()
        .environment
        .unwrap_or_default()
        .host
        .unwrap_or_default()
}

#[tokio::test]
async fn a_channel_with_an_identity_is_let_in_as_that_service_and_one_without_is_not() {
    let key = MeshKey::generate();
    let server =
        GrpcServer::new().add_service(MeshLayer::new(&key).layer(EnvDetectorServiceServer::new(WhoCalls)));
    let (addr, shutdown) = server.spawn_on_loopback().await.unwrap();
    let endpoints = [format!("http://{addr}")];
    let config = ClientConfig::default();
    let service = env_detector_service_server::SERVICE_NAME;

    // Without an identity: the health watch still brings the endpoint in
    // (health is exempt), but calls are refused.
    let anonymous = connect(service, &endpoints, &config).unwrap();
    anonymous.ready_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(anonymous.identity(), None);
    let status = EnvDetectorServiceClient::new(anonymous.clone())
        .detect(DetectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("agents accept only mesh services"),
        "{status:?}"
    );

    // The orchestrator's identity, on a clone of the channel too; a user's
    // bearer token on the same request reaches the handler untouched.
    let orchestrator = connect(service, &endpoints, &config)
        .unwrap()
        .with_identity(Arc::new(ServiceTokenSource::new(&key, "orchestrator")));
    assert_eq!(orchestrator.identity(), Some("orchestrator"));
    let mut client = EnvDetectorServiceClient::new(orchestrator.clone());
    let mut request = Request::new(DetectRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Bearer user-token".parse().unwrap());
    let seen = host(client.detect(request).await.unwrap());
    assert_eq!(seen.hostname, "orchestrator");
    assert_eq!(seen.os, "Bearer user-token");
    let seen = host(
        EnvDetectorServiceClient::new(orchestrator.clone())
            .detect(DetectRequest::default())
            .await
            .unwrap(),
    );
    assert_eq!((seen.hostname.as_str(), seen.os.as_str()), ("orchestrator", ""));

    // A service that is not the env-detector's caller, and a key of another mesh.
    let tester = connect(service, &endpoints, &config)
        .unwrap()
        .with_identity(Arc::new(ServiceTokenSource::new(&key, "tester")));
    let status = EnvDetectorServiceClient::new(tester)
        .detect(DetectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("tester"), "{status:?}");
    let stranger = connect(service, &endpoints, &config)
        .unwrap()
        .with_identity(Arc::new(ServiceTokenSource::new(
            &MeshKey::generate(),
            "orchestrator",
        )));
    let status = EnvDetectorServiceClient::new(stranger)
        .detect(DetectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    shutdown.cancel();
}

/// A plugin that answers with who called it.
struct WhoAsks;

#[tonic::async_trait]
impl reporunner_proto::agents::plugin::v1::plugin_service_server::PluginService for WhoAsks {
    async fn describe(
        &self,
        request: Request<reporunner_proto::agents::plugin::v1::DescribeRequest>,
    ) -> Result<Response<reporunner_proto::agents::plugin::v1::DescribeResponse>, Status> {
        Ok(Response::new(
            reporunner_proto::agents::plugin::v1::DescribeResponse {
                name: mesh_caller(&request).unwrap_or("nobody").to_owned(),
                ..Default::default()
            },
        ))
    }

    async fn execute(
        &self,
        request: Request<reporunner_proto::agents::plugin::v1::ExecuteRequest>,
    ) -> Result<Response<reporunner_proto::agents::plugin::v1::ExecuteResponse>, Status> {
        Ok(Response::new(
            reporunner_proto::agents::plugin::v1::ExecuteResponse {
                notices: vec![format!("called by {}", mesh_caller(&request).unwrap_or("nobody"))],
                ..Default::default()
            },
        ))
    }
}

/// The plugin contract (Describe, Execute) has one caller: a plugin built on
/// `MeshLayer` lets the orchestrator in and refuses anyone without a mesh
/// identity, every other mesh service, and another mesh's orchestrator.
#[tokio::test]
async fn a_plugin_behind_the_mesh_layer_answers_the_orchestrator_only() {
    use reporunner_proto::agents::plugin::v1::{
        DescribeRequest, ExecuteRequest,
        plugin_service_client::PluginServiceClient,
        plugin_service_server::{self, PluginServiceServer},
    };
    let key = MeshKey::generate();
    let server = GrpcServer::new().add_service(MeshLayer::new(&key).layer(PluginServiceServer::new(WhoAsks)));
    let (addr, shutdown) = server.spawn_on_loopback().await.unwrap();
    let endpoints = [format!("http://{addr}")];
    let config = ClientConfig::default();
    let service = plugin_service_server::SERVICE_NAME;
    let as_service = |name: &str, key: &MeshKey| {
        connect(service, &endpoints, &config)
            .unwrap()
            .with_identity(Arc::new(ServiceTokenSource::new(key, name)))
    };

    let orchestrator = as_service("orchestrator", &key);
    orchestrator.ready_within(Duration::from_secs(5)).await.unwrap();
    let mut client = PluginServiceClient::new(orchestrator);
    let described = client
        .describe(DescribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.name, "orchestrator");
    let executed = client
        .execute(ExecuteRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(executed.notices, ["called by orchestrator"]);

    let anonymous = connect(service, &endpoints, &config).unwrap();
    let status = PluginServiceClient::new(anonymous)
        .execute(ExecuteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    for other in ["source", "runner", "tester", "resolver", "health", "dependency"] {
        let status = PluginServiceClient::new(as_service(other, &key))
            .describe(DescribeRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{other}: {status:?}");
    }
    let stranger = as_service("orchestrator", &MeshKey::generate());
    let status = PluginServiceClient::new(stranger)
        .execute(ExecuteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    shutdown.cancel();
}

/// Embedded mode calls its agents in this process: the agent's mesh check
/// still decides who gets in, exactly as over the network.
#[tokio::test]
async fn an_in_process_agent_keeps_its_mesh_check() {
    use reporunner_client::Transport;
    let key = MeshKey::generate();
    let agent = Transport::in_process(MeshLayer::new(&key).layer(EnvDetectorServiceServer::new(WhoCalls)));
    let detect = |transport: Transport| async move {
        let mut request = Request::new(DetectRequest::default());
        request.set_timeout(Duration::from_secs(5));
        request
            .metadata_mut()
            .insert("authorization", "Bearer user-token".parse().unwrap());
        EnvDetectorServiceClient::new(transport).detect(request).await
    };

    let orchestrator = agent.clone().with_identity(Arc::new(ServiceTokenSource::new(
        &key,
        reporunner_identity::ORCHESTRATOR,
    )));
    assert!(orchestrator.is_in_process());
    let seen = host(detect(orchestrator).await.expect("the orchestrator is let in"));
    assert_eq!(seen.hostname, "orchestrator", "the agent sees the orchestrator");
    assert_eq!(seen.os, "Bearer user-token", "the user's token is left as it was");

    let anonymous = detect(agent.clone()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");

    // The health agent may not call the env-detector, in process or not.
    let health = agent.clone().with_identity(Arc::new(ServiceTokenSource::new(
        &key,
        reporunner_identity::HEALTH,
    )));
    let refused = detect(health).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Another mesh's orchestrator is nobody here.
    let stranger = agent.with_identity(Arc::new(ServiceTokenSource::new(
        &MeshKey::generate(),
        reporunner_identity::ORCHESTRATOR,
    )));
    let refused = detect(stranger).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}
