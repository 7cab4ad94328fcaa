//! The resolver over real gRPC on loopback.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use reporunner_proto::{
    agents::resolver::v1::{DiagnoseRequest, Phase, resolver_service_client::ResolverServiceClient},
    common::v1::{AddPackage, plan_patch::Change},
};
use reporunner_resolver::{ResolverConfig, RuleResolver, grpc::ResolverGrpc};
use reporunner_server::GrpcServer;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

async fn client() -> (ResolverServiceClient<Channel>, CancellationToken) {
    let resolver = RuleResolver::new(ResolverConfig::default()).unwrap();
    let (addr, shutdown) = GrpcServer::new()
        .add_service(ResolverGrpc::new(Arc::new(resolver)).into_server())
        .spawn_on_loopback()
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    (ResolverServiceClient::new(channel), shutdown)
}

#[tokio::test]
async fn diagnose_over_grpc_and_refuse_an_empty_request() {
    let (mut client, shutdown) = client().await;
    let response = client
        .diagnose(DiagnoseRequest {
            phase: Phase::Start as i32,
            component: "web".into(),
            exit_code: 1,
            log_tail: vec![
                "Traceback (most recent call last):".into(),
                "  File \"/work/ws/app.py\", line 1, in <module>".into(),
                "    import cv2".into(),
                "ModuleNotFoundError: No module named 'cv2'".into(),
            ],
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let d = &response.diagnoses[0];
    assert_eq!(d.cause, "python.missing_module");
    assert_eq!(d.matched_line, "ModuleNotFoundError: No module named 'cv2'");
    assert_eq!(d.patches[0].component, "web");
    assert_eq!(
        d.patches[0].change,
        Some(Change::AddPackage(AddPackage {
            name: "opencv-python-headless".into(),
            version_spec: String::new(),
        }))
    );

    let status = client.diagnose(DiagnoseRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("no log tail"));
    shutdown.cancel();
}
