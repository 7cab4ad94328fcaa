//! One trace id across services: server A's handler calls server B through
//! the client stack, and B's call span (and its JSON log lines) carry A's
//! trace id, with A's span as parent. The subscriber is the production stack
//! (trace context layer, JSON lines) writing into memory.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use reporunner_client::{ClientConfig, ServiceChannel, connect};
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
use reporunner_server::{
    CancellationToken, GrpcServer,
    trace::{TRACEPARENT, TraceContextLayer, parse_traceparent},
};
use serde_json::Value;
use tonic::{Request, Response, Status, Streaming};
use tracing_subscriber::{fmt::MakeWriter, prelude::*};

/// JSON log lines, shared by every test in this binary.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Lines {
    fn json(&self) -> Vec<Value> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

fn lines() -> &'static Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Lines::default();
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(TraceContextLayer)
            .with(tracing_subscriber::fmt::layer().json().with_writer(lines.clone()))
            .init();
        lines
    })
}

/// Service B: logs a line naming the marker it was sent.
#[derive(Clone)]
struct Detector;

#[tonic::async_trait]
impl EnvDetectorService for Detector {
    async fn detect(&self, request: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
        let marker = request
            .metadata()
            .get("x-marker")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info!(marker, "detect called");
        Ok(Response::new(DetectResponse::default()))
    }
}

/// Service A: every Fetch calls B once, as the orchestrator calls an agent.
#[derive(Clone)]
struct Fetcher {
    detector: ServiceChannel,
}

#[tonic::async_trait]
impl SourceService for Fetcher {
    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let marker = request
            .metadata()
            .get("x-marker")
            .cloned()
            .ok_or_else(|| Status::invalid_argument("x-marker is required"))?;
        tracing::info!("fetch calling the detector");
        let mut call = Request::new(DetectRequest::default());
        call.metadata_mut().insert("x-marker", marker);
        EnvDetectorServiceClient::new(self.detector.clone())
            .detect(call)
            .await?;
        Ok(Response::new(FetchResponse::default()))
    }
    async fn upload_archive(
        &self,
        _: Request<Streaming<UploadArchiveRequest>>,
    ) -> Result<Response<UploadArchiveResponse>, Status> {
        Err(Status::invalid_argument("this test uploads nothing"))
    }
}

async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    (listener, format!("http://{addr}"))
}

/// A → B over the client stack; returns a client of A.
async fn mesh(shutdown: &CancellationToken) -> SourceServiceClient<ServiceChannel> {
    let (b_listener, b) = listen().await;
    tokio::spawn(
        GrpcServer::new()
            .add_service(EnvDetectorServiceServer::new(Detector))
            .serve(b_listener, shutdown.clone()),
    );
    let detector = connect(
        env_detector_service_server::SERVICE_NAME,
        &[b],
        &ClientConfig::default(),
    )
    .expect("B's endpoint is valid");
    let (a_listener, a) = listen().await;
    tokio::spawn(
        GrpcServer::new()
            .add_service(SourceServiceServer::new(Fetcher { detector }))
            .serve(a_listener, shutdown.clone()),
    );
    let channel = connect(
        source_service_server::SERVICE_NAME,
        &[a],
        &ClientConfig::default(),
    )
    .expect("A's endpoint is valid");
    channel
        .ready_within(Duration::from_secs(5))
        .await
        .expect("A serves");
    SourceServiceClient::new(channel)
}

/// The span fields of B's "detect called" line for `marker`.
fn span_of(lines: &[Value], marker: &str) -> Value {
    lines
        .iter()
        .find(|l| l["fields"]["message"] == "detect called" && l["fields"]["marker"] == marker)
        .map(|l| l["span"].clone())
        .unwrap_or_else(|| panic!("no `detect called` line for {marker}"))
}

async fn fetch(client: &mut SourceServiceClient<ServiceChannel>, marker: &str, traceparent: Option<&str>) {
    let mut request = Request::new(FetchRequest::default());
    request
        .metadata_mut()
        .insert("x-marker", marker.parse().expect("ascii"));
    if let Some(value) = traceparent {
        request
            .metadata_mut()
            .insert(TRACEPARENT, value.parse().expect("ascii"));
    }
    client.fetch(request).await.expect("A calls B");
}

#[tokio::test]
async fn one_trace_id_runs_from_a_through_b() {
    let lines = lines();
    let shutdown = CancellationToken::new();
    let mut client = mesh(&shutdown).await;

    fetch(&mut client, "first", None).await;
    let logged = lines.json();
    let b = span_of(&logged, "first");
    let b_trace = b["trace_id"].as_str().expect("B's span names a trace").to_owned();
    let b_parent = b["parent_span_id"]
        .as_str()
        .expect("B's span has a parent")
        .to_owned();
    // A's span is the one whose span_id B names as parent, in the same trace.
    let a = logged
        .iter()
        .map(|l| &l["span"])
        .find(|s| s["name"] == "grpc" && s["span_id"] == b_parent.as_str())
        .expect("A's call span logged");
    assert_eq!(a["trace_id"], b_trace.as_str(), "one trace id across A and B");
    assert_eq!(a["rpc"], "/reporunner.agents.source.v1.SourceService/Fetch");
    assert_eq!(
        b["rpc"],
        "/reporunner.agents.env_detector.v1.EnvDetectorService/Detect"
    );
    assert_eq!(b_trace.len(), 32);

    // A second call is a second trace.
    fetch(&mut client, "second", None).await;
    let second = span_of(&lines.json(), "second");
    assert_ne!(second["trace_id"], b_trace.as_str());
    shutdown.cancel();
}

#[tokio::test]
async fn an_incoming_traceparent_is_continued_and_a_malformed_one_replaced() {
    let lines = lines();
    let shutdown = CancellationToken::new();
    let mut client = mesh(&shutdown).await;

    let upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    fetch(&mut client, "continued", Some(upstream)).await;
    let b = span_of(&lines.json(), "continued");
    assert_eq!(b["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    fetch(&mut client, "malformed", Some("00-not-a-trace")).await;
    let b = span_of(&lines.json(), "malformed");
    let trace_id = b["trace_id"].as_str().expect("a fresh trace");
    let rebuilt = format!("00-{trace_id}-00f067aa0ba902b7-01");
    assert!(
        parse_traceparent(&rebuilt).is_some(),
        "{trace_id} is a valid trace id"
    );
    shutdown.cancel();
}
