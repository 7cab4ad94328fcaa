//! Metrics: every name in one place, the Prometheus recorder, the per-RPC
//! server layer, and the `/metrics` endpoint.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use reporunner_proto::descriptor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tower::{Layer, Service};

/// Requests served, by `rpc`, `kind` and `status`.
pub const GRPC_REQUESTS_TOTAL: &str = "reporunner_grpc_requests_total";
/// Seconds from request to the end of the response, by `rpc`, `kind`, `status`.
pub const GRPC_REQUEST_DURATION_SECONDS: &str = "reporunner_grpc_request_duration_seconds";
/// Requests in flight, by `rpc`.
pub const GRPC_REQUESTS_IN_FLIGHT: &str = "reporunner_grpc_requests_in_flight";
/// Client endpoints by `service` and `state` (serving, not_serving, down, unknown).
pub const CLIENT_ENDPOINTS: &str = "reporunner_client_endpoints";
/// Client call attempts retried, by `rpc`.
pub const CLIENT_RETRIES_TOTAL: &str = "reporunner_client_retries_total";
/// TLS handshakes the server refused or that timed out (bad or missing
/// client certificate, wrong CA, plain-text client).
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "reporunner_tls_handshake_failures_total";
/// Times the server's TLS certificates were reloaded from disk.
pub const TLS_RELOADS_TOTAL: &str = "reporunner_tls_reloads_total";
/// Times a client's DNS discovery changed the endpoints of a service, by `service`.
pub const CLIENT_DISCOVERY_CHANGES_TOTAL: &str = "reporunner_client_discovery_changes_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the process-wide Prometheus recorder (once) and returns its
/// handle. Every server in the process reports into it.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(GRPC_REQUEST_DURATION_SECONDS.to_owned()),
                LATENCY_BUCKETS,
            )
            .map(PrometheusBuilder::build_recorder)
            // The bucket list is a non-empty constant; this cannot fail.
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        GRPC_REQUESTS_TOTAL,
        "gRPC requests served, by rpc, kind and status."
    );
    metrics::describe_histogram!(
        GRPC_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "gRPC request latency until the end of the response."
    );
    metrics::describe_gauge!(GRPC_REQUESTS_IN_FLIGHT, "gRPC requests in flight, by rpc.");
    metrics::describe_gauge!(CLIENT_ENDPOINTS, "Client endpoints per service and health state.");
    metrics::describe_counter!(CLIENT_RETRIES_TOTAL, "Client call attempts that were retried.");
    metrics::describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "TLS handshakes refused or timed out by the server."
    );
    metrics::describe_counter!(TLS_RELOADS_TOTAL, "TLS certificate reloads from disk.");
    metrics::describe_counter!(
        CLIENT_DISCOVERY_CHANGES_TOTAL,
        "DNS discovery changes to a client's endpoints, by service."
    );
}

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled.
pub async fn serve_metrics(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let handle = recorder();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { handle.render() }),
    );
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "metrics endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// The canonical upper-case name of a gRPC code, as used in the `status` label.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `rpc` and `kind` labels of a request path. Paths that are not one of
/// the served methods share one label value, so that clients cannot blow up
/// the label cardinality.
fn labels(path: &str) -> (&'static str, &'static str) {
    if let Some(method) = descriptor::method(path) {
        return (method.path.trim_start_matches('/'), method.kind.as_str());
    }
    match path {
        "/grpc.health.v1.Health/Check" => ("grpc.health.v1.Health/Check", "unary"),
        "/grpc.health.v1.Health/Watch" => ("grpc.health.v1.Health/Watch", "server_stream"),
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" => (
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "bidi_stream",
        ),
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => (
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            "bidi_stream",
        ),
        _ => ("unknown", "unknown"),
    }
}

/// Records `reporunner_grpc_requests_total`, the latency histogram and the
/// in-flight gauge for every request of the server it wraps. The status comes
/// from a trailers-only response's headers or from the trailers at the end of
/// the body; a response dropped before its end counts as CANCELLED.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body + Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (rpc, kind) = labels(request.uri().path());
        let recorder = Recorder::start(rpc, kind);
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    let mut recorder = recorder;
                    if let Some(code) = grpc_status(response.headers()) {
                        recorder.finish(code);
                    }
                    Ok(response.map(|body| MeteredBody {
                        inner: Box::pin(body),
                        recorder,
                    }))
                }
                Err(err) => {
                    let mut recorder = recorder;
                    recorder.finish(Code::Internal);
                    Err(err)
                }
            }
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(value))
}

#[derive(Debug)]
struct Recorder {
    rpc: &'static str,
    kind: &'static str,
    started: Instant,
    done: bool,
}

impl Recorder {
    fn start(rpc: &'static str, kind: &'static str) -> Self {
        metrics::gauge!(GRPC_REQUESTS_IN_FLIGHT, "rpc" => rpc).increment(1.0);
        Self {
            rpc,
            kind,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        let status = code_name(code);
        let labels = [("rpc", self.rpc), ("kind", self.kind), ("status", status)];
        metrics::counter!(GRPC_REQUESTS_TOTAL, &labels).increment(1);
        metrics::histogram!(GRPC_REQUEST_DURATION_SECONDS, &labels)
            .record(self.started.elapsed().as_secs_f64());
        metrics::gauge!(GRPC_REQUESTS_IN_FLIGHT, "rpc" => self.rpc).decrement(1.0);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// A response body that reports the call's status when its trailers arrive.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: Pin<Box<B>>,
    recorder: Recorder,
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.recorder.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.recorder.finish(Code::Internal),
            // A body that ends without trailers carried its status in headers,
            // or is broken: OK only if already recorded, else UNKNOWN.
            Poll::Ready(None) => this.recorder.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
