//! The whole mesh in-process, driven through generated clients.

use std::time::{Duration, Instant};

use reporunner_node::ServiceName;
use reporunner_proto::orchestrator::v1::{GetEnvironmentRequest, GetRecommendationsRequest};
use reporunner_tests::{FRONT_DOOR, Sandbox};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn env_request() -> GetEnvironmentRequest {
    GetEnvironmentRequest {
        skip_registries: true,
        ..Default::default()
    }
}

/// Calls until `check` holds for the outcome or `within` passes.
async fn eventually<F>(mesh: &Sandbox, within: Duration, mut check: F) -> Result<(), tonic::Status>
where
    F: FnMut(&Result<(), tonic::Status>) -> bool,
{
    let started = Instant::now();
    loop {
        let outcome = mesh
            .orchestrator()
            .get_environment(mesh.request(env_request()))
            .await
            .map(|_| ());
        if check(&outcome) || started.elapsed() > within {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_fails_over_between_env_detector_replicas() {
    let mut mesh = Sandbox::builder()
        .with(ServiceName::Auth)
        .replicas(ServiceName::EnvDetector, 2)
        .with(ServiceName::Source)
        .with(ServiceName::Analyzer)
        .with(ServiceName::Orchestrator)
        .start()
        .await
        .unwrap();

    // Both healthy: calls succeed.
    for _ in 0..4 {
        let env = mesh
            .orchestrator()
            .get_environment(mesh.request(env_request()))
            .await
            .unwrap()
            .into_inner();
        assert!(env.environment.unwrap().host.unwrap().cpus > 0);
    }

    // Replica 0 reports NOT_SERVING: it still answers Detect, but must leave
    // the pool. Calls keep succeeding through replica 1.
    mesh.nodes(ServiceName::EnvDetector)[0].set_serving(false).await;
    for _ in 0..6 {
        mesh.orchestrator()
            .get_environment(mesh.request(env_request()))
            .await
            .expect("replica 1 still serves");
    }

    // Replica 1 stops. None is healthy now (replica 0 still answers but says
    // NOT_SERVING), so a call fails fast and clearly: UNAVAILABLE, no hang.
    mesh.nodes(ServiceName::EnvDetector)[1].stop().await.unwrap();
    let outcome = eventually(&mesh, Duration::from_secs(10), |r| r.is_err()).await;
    let started = Instant::now();
    let status = mesh
        .orchestrator()
        .get_environment(mesh.request(env_request()))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(outcome.is_err());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("env-detector"),
        "names the agent: {}",
        status.message()
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "UNAVAILABLE must come fast, took {elapsed:?}"
    );

    // Replica 0 recovers: it rejoins the pool and calls succeed again.
    mesh.nodes(ServiceName::EnvDetector)[0].set_serving(true).await;
    eventually(&mesh, Duration::from_secs(10), |r| r.is_ok())
        .await
        .expect("replica 0 rejoined");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hosted_service_reports_serving_and_recommendations_come_through() {
    let mesh = Sandbox::builder().with_all(FRONT_DOOR).start().await.unwrap();
    for (service, name) in [
        (ServiceName::Auth, "reporunner.auth.v1.AuthService"),
        (ServiceName::Auth, "reporunner.auth.v1.AdminService"),
        (
            ServiceName::EnvDetector,
            "reporunner.agents.env_detector.v1.EnvDetectorService",
        ),
        (
            ServiceName::Orchestrator,
            "reporunner.orchestrator.v1.OrchestratorService",
        ),
    ] {
        let mut health = HealthClient::new(mesh.channel(service));
        let status = health
            .check(HealthCheckRequest { service: name.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status(), ServingStatus::Serving, "{name}");
    }
    let response = mesh
        .orchestrator()
        .get_recommendations(mesh.request(GetRecommendationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let recommendations = response.recommendations.unwrap();
    assert!(recommendations.parallelism >= 1);
    assert!(
        !response.allowed_index_modes.is_empty(),
        "text search is always allowed"
    );
    assert!(!recommendations.vector_index_reason.is_empty());

    // Bad input is named, with the right code.
    let status = mesh
        .orchestrator()
        .get_environment(mesh.request(GetEnvironmentRequest {
            platform_override: 99,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("99"), "{}", status.message());
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_without_any_live_env_detector_says_unavailable() {
    // Nothing listens on the configured endpoint.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mesh = Sandbox::builder()
        .settings(|s| s.endpoints.env_detector = vec![dead.clone()])
        .with(ServiceName::Auth)
        .with(ServiceName::Source)
        .with(ServiceName::Analyzer)
        .with(ServiceName::Orchestrator)
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let status = mesh
        .orchestrator()
        .get_environment(mesh.request(env_request()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_accepts_but_never_answers_leaves_the_pool() {
    // A listener that accepts connections and then says nothing: the health
    // watch cannot complete, so the endpoint must be taken out, and calls
    // must go to the live replica instead of hanging.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_uri = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut detector = Sandbox::builder()
        .with(ServiceName::EnvDetector)
        .start()
        .await
        .unwrap();
    let live_uri = format!("http://{}", detector.addr(ServiceName::EnvDetector).unwrap());
    let mesh = Sandbox::builder()
        .settings(|s| {
            s.endpoints.env_detector = vec![silent_uri.clone(), live_uri.clone()];
            // Another data directory: the detector's mesh key, as a mounted secret would give it.
            s.mesh.service_key_file = Some(detector.mesh_key_file());
        })
        .with(ServiceName::Auth)
        .with(ServiceName::Source)
        .with(ServiceName::Analyzer)
        .with(ServiceName::Orchestrator)
        .start()
        .await
        .unwrap();
    for _ in 0..6 {
        let started = Instant::now();
        mesh.orchestrator()
            .get_environment(mesh.request(env_request()))
            .await
            .expect("the live replica answers");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }

    // With the live replica gone, only the silent one is left: UNAVAILABLE,
    // within the connect timeout, not a hang.
    detector.nodes(ServiceName::EnvDetector)[0].stop().await.unwrap();
    let outcome = eventually(&mesh, Duration::from_secs(10), |r| r.is_err()).await;
    let status = outcome.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    mesh.stop().await.unwrap();
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_refuses_calls_without_a_valid_token_and_narrows_modes_by_tier() {
    let mesh = Sandbox::builder().with_all(FRONT_DOOR).start().await.unwrap();
    let status = mesh
        .orchestrator()
        .get_environment(env_request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut forged = tonic::Request::new(env_request());
    forged.metadata_mut().insert(
        "authorization",
        "Bearer eyJhbGciOiJub25lIn0.e30.".parse().unwrap(),
    );
    assert_eq!(
        mesh.orchestrator()
            .get_environment(forged)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // The sandbox user is Free: text search only, whatever the host affords.
    let response = mesh
        .orchestrator()
        .get_recommendations(mesh.request(GetRecommendationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.allowed_index_modes,
        vec![reporunner_proto::common::v1::IndexMode::Text as i32]
    );
    mesh.stop().await.unwrap();
}
