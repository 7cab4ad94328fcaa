//! The retry policy against real servers on loopback: idempotent methods are
//! retried on UNAVAILABLE (landing on another endpoint), others never are.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use reporunner_client::{ClientConfig, connect};
use reporunner_proto::agents::{
    env_detector::v1::{
        DetectRequest, DetectResponse,
        env_detector_service_client::EnvDetectorServiceClient,
        env_detector_service_server::{self, EnvDetectorService, EnvDetectorServiceServer},
    },
    source::v1::{
        FetchRequest, FetchResponse, UploadArchiveRequest, UploadArchiveResponse,
        source_service_client::SourceServiceClient,
        source_service_server::{self, SourceService, SourceServiceServer},
    },
};
use reporunner_server::{CancellationToken, GrpcServer};
use tonic::{Code, Request, Response, Status, Streaming};

/// A server whose every call fails with UNAVAILABLE (or succeeds), counting calls.
#[derive(Clone)]
struct Fake {
    fail: bool,
    calls: Arc<AtomicUsize>,
    /// The failure's `grpc-retry-pushback-ms`, if any.
    pushback: Option<&'static str>,
}

impl Fake {
    fn answer<T: Default>(&self) -> Result<Response<T>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            let mut status = Status::unavailable("overloaded");
            if let Some(ms) = self.pushback {
                status.metadata_mut().insert(
                    reporunner_error::RETRY_PUSHBACK,
                    ms.parse().expect("a pushback in ascii"),
                );
            }
            Err(status)
        } else {
            Ok(Response::new(T::default()))
        }
    }
}

#[tonic::async_trait]
impl EnvDetectorService for Fake {
    async fn detect(&self, _: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
        self.answer()
    }
}

#[tonic::async_trait]
impl SourceService for Fake {
    async fn fetch(&self, _: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        self.answer()
    }
    async fn upload_archive(
        &self,
        _: Request<Streaming<UploadArchiveRequest>>,
    ) -> Result<Response<UploadArchiveResponse>, Status> {
        self.answer()
    }
}

async fn start(fake: Fake, shutdown: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let server = GrpcServer::new()
        .add_service(EnvDetectorServiceServer::new(fake.clone()))
        .add_service(SourceServiceServer::new(fake));
    tokio::spawn(server.serve(listener, shutdown.clone()));
    format!("http://{addr}")
}

fn config() -> ClientConfig {
    ClientConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn idempotent_calls_retry_onto_a_healthy_endpoint() {
    let shutdown = CancellationToken::new();
    let bad = Fake {
        fail: true,
        calls: Arc::default(),
        pushback: None,
    };
    let good = Fake {
        fail: false,
        calls: Arc::default(),
        pushback: None,
    };
    let endpoints = vec![
        start(bad.clone(), &shutdown).await,
        start(good.clone(), &shutdown).await,
    ];
    let channel = connect(env_detector_service_server::SERVICE_NAME, &endpoints, &config()).unwrap();
    channel
        .ready_within(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    // Wait until both endpoints are in the pool, so round robin visits the bad one.
    for _ in 0..100 {
        if channel
            .endpoint_states()
            .iter()
            .all(|(_, s)| *s == reporunner_client::EndpointState::Serving)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut client = EnvDetectorServiceClient::new(channel);
    for _ in 0..10 {
        client
            .detect(DetectRequest::default())
            .await
            .expect("retried onto the good endpoint");
    }
    assert!(
        bad.calls.load(Ordering::SeqCst) >= 1,
        "round robin reached the failing endpoint"
    );
    assert_eq!(
        good.calls.load(Ordering::SeqCst),
        10,
        "every call ended on the good endpoint"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn non_idempotent_calls_are_sent_once() {
    let shutdown = CancellationToken::new();
    let bad = Fake {
        fail: true,
        calls: Arc::default(),
        pushback: None,
    };
    let endpoints = vec![start(bad.clone(), &shutdown).await];
    let channel = connect(source_service_server::SERVICE_NAME, &endpoints, &config()).unwrap();
    let mut client = SourceServiceClient::new(channel);
    let status = client.fetch(FetchRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        bad.calls.load(Ordering::SeqCst),
        1,
        "Fetch is not idempotent: no retry"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn an_idempotent_call_gives_up_after_max_attempts() {
    let shutdown = CancellationToken::new();
    let bad = Fake {
        fail: true,
        calls: Arc::default(),
        pushback: None,
    };
    let endpoints = vec![start(bad.clone(), &shutdown).await];
    let channel = connect(env_detector_service_server::SERVICE_NAME, &endpoints, &config()).unwrap();
    let mut client = EnvDetectorServiceClient::new(channel);
    let status = client.detect(DetectRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(bad.calls.load(Ordering::SeqCst), 3, "max_attempts = 3");
    shutdown.cancel();
}

/// A server that says "do not retry" (a negative pushback: its shared
/// database is down) is tried once; a positive pushback is waited out.
#[tokio::test]
async fn an_idempotent_call_honours_the_servers_pushback() {
    let shutdown = CancellationToken::new();
    let never = Fake {
        fail: true,
        calls: Arc::default(),
        pushback: Some("-1"),
    };
    let endpoints = vec![start(never.clone(), &shutdown).await];
    let channel = connect(env_detector_service_server::SERVICE_NAME, &endpoints, &config()).unwrap();
    let status = EnvDetectorServiceClient::new(channel)
        .detect(DetectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(never.calls.load(Ordering::SeqCst), 1, "pushback -1: no retry");

    let later = Fake {
        fail: true,
        calls: Arc::default(),
        pushback: Some("150"),
    };
    let endpoints = vec![start(later.clone(), &shutdown).await];
    let channel = connect(env_detector_service_server::SERVICE_NAME, &endpoints, &config()).unwrap();
    let started = std::time::Instant::now();
    EnvDetectorServiceClient::new(channel)
        .detect(DetectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(later.calls.load(Ordering::SeqCst), 3, "max_attempts = 3");
    // Two waits of 150 ms, not the 5-20 ms backoff.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_slow_call_hits_its_deadline() {
    #[derive(Clone)]
    struct Slow;
    #[tonic::async_trait]
    impl EnvDetectorService for Slow {
        async fn detect(&self, _: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            Ok(Response::new(DetectResponse::default()))
        }
    }
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        GrpcServer::new()
            .stop_timeout(std::time::Duration::from_millis(10))
            .add_service(EnvDetectorServiceServer::new(Slow))
            .serve(listener, shutdown.clone()),
    );
    let config = ClientConfig {
        default_deadline: Duration::from_millis(300),
        ..config()
    };
    let channel = connect(env_detector_service_server::SERVICE_NAME, &[uri], &config).unwrap();
    let started = std::time::Instant::now();
    let status = EnvDetectorServiceClient::new(channel)
        .detect(DetectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    shutdown.cancel();
}

/// A call's own deadline (`grpc-timeout` from the caller) that passes while
/// the server is still working is DEADLINE_EXCEEDED, not UNAVAILABLE: the
/// endpoint answered nothing wrong and is not marked down for it.
#[tokio::test]
async fn a_callers_deadline_is_deadline_exceeded_and_leaves_the_endpoint_up() {
    #[derive(Clone)]
    struct Slow;
    #[tonic::async_trait]
    impl EnvDetectorService for Slow {
        async fn detect(&self, _: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            Ok(Response::new(DetectResponse::default()))
        }
    }
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        GrpcServer::new()
            .stop_timeout(std::time::Duration::from_millis(10))
            .add_service(EnvDetectorServiceServer::new(Slow))
            .serve(listener, shutdown.clone()),
    );
    let channel = connect(env_detector_service_server::SERVICE_NAME, &[uri], &config()).unwrap();
    channel
        .ready_within(std::time::Duration::from_secs(5))
        .await
        .expect("the endpoint serves");
    for _ in 0..3 {
        let mut request = Request::new(DetectRequest::default());
        request.set_timeout(std::time::Duration::from_millis(300));
        let status = EnvDetectorServiceClient::new(channel.clone())
            .detect(request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    assert!(
        channel
            .endpoint_states()
            .iter()
            .all(|(_, state)| matches!(state, reporunner_client::EndpointState::Serving)),
        "{:?}",
        channel.endpoint_states()
    );
    shutdown.cancel();
}
