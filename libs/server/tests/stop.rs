//! Stopping a server: calls still in flight when the stop timeout passes are
//! cut (their connection ends), as when the process exits; they do not go on
//! being served by connection tasks that outlive `serve`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

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

/// The local owner of the control socket, slow to hand out its token: a
/// call without one stays in flight for as long.
#[derive(Debug, Default)]
struct SlowOwner {
    answered: AtomicBool,
}

impl reporunner_server::local::LocalCaller for SlowOwner {
    fn bearer(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            self.answered.store(true, Ordering::SeqCst);
            Ok("owner-token".to_owned())
        })
    }
}

#[tokio::test]
async fn a_control_socket_call_in_flight_is_answered_before_serve_returns() {
    // `reporunner run` exits once `serve` returns: a `runs stop` from another
    // shell, in flight over the control socket when the run it stopped ends
    // the process, must get its answer first, not a broken connection.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let socket = reporunner_server::local::bind_control_socket(&path).unwrap();
    let owner = Arc::new(SlowOwner::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(
        GrpcServer::new()
            .stop_timeout(Duration::from_secs(5))
            .local_socket(socket, owner.clone())
            .serve(listener, shutdown.clone()),
    );
    let connector = tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .unwrap();
    let call = tokio::spawn(async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!owner.answered.load(Ordering::SeqCst), "the call is in flight");

    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert!(
        owner.answered.load(Ordering::SeqCst),
        "serve returned while a control socket call was in flight"
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ends")
        .unwrap();
    assert!(answer.is_ok(), "{answer:?}");
}
