//! Stopping a server: calls still in flight when the stop timeout passes are
//! cut (their connection ends), as when the process exits; they do not go on
//! being served by connection tasks that outlive `serve`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reporunner_server::{CancellationToken, GrpcServer};
use tonic::transport::Endpoint;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test]
async fn a_call_in_flight_past_the_stop_timeout_is_cut() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(
        GrpcServer::new()
            .stop_timeout(Duration::from_millis(200))
            .serve(listener, shutdown.clone()),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // A health watch never ends by itself: a call in flight for as long as
    // the connection lives.
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some(), "the first status");

    shutdown.cancel();
    let stopped = Instant::now();
    server.await.unwrap().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        // NOT_SERVING comes as the server stops; then the stream must end.
        while let Ok(Some(_)) = watch.message().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the watch was still served {:?} after the stop",
        stopped.elapsed()
    );
}
