//! Requests that cannot be attempted are gRPC errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::{agent, component, request};
use tonic::Code;

#[tokio::test]
async fn bad_requests_are_invalid_arguments() {
    let mut agent = agent().await;
    let python = component("python", "python", "", "pip");
    let relative = request(std::path::Path::new("some/relative/dir"), python.clone(), None);
    let status = agent.client.install(relative).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("absolute"), "{}", status.message());

    let missing = request(std::path::Path::new("/no/such/workspace"), python.clone(), None);
    assert_eq!(
        agent.client.install(missing).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let workspace = tempfile::tempdir().unwrap();
    let mut outside = python.clone();
    outside.path = "../..".into();
    let status = agent
        .client
        .install(request(workspace.path(), outside, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let mut no_run = request(workspace.path(), python, None);
    no_run.run_id = "../x".into();
    assert_eq!(
        agent.client.install(no_run).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let java = component("java", "java", "17", "maven");
    let status = agent
        .client
        .install(request(workspace.path(), java, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}
