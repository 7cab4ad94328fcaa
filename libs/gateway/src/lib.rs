//! HTTP/JSON on the public port, derived from the contracts.
//!
//! The scheme is the [Connect protocol]'s JSON mapping: every exposed method
//! is `POST /<package.Service>/<Method>` with the request message as proto3
//! JSON, answered with the response message as proto3 JSON, or with a
//! Connect error object (`{"code": "not_found", "message": "..."}`) and the
//! HTTP status of its gRPC code. Chosen over `google.api.http` annotations
//! because it needs nothing per method (no annotation, no handler, no path
//! template to keep in step with the contracts), it is the same path as the
//! gRPC method, and Connect clients exist for browsers and most languages,
//! while curl needs nothing but `-H 'content-type: application/json'`.
//!
//! Server streams (WatchRun, GetRunLogs, IndexWorkspace) answer a JSON
//! request as server-sent events (`data: <message>`, then `event: end` or
//! `event: error`), and a `application/connect+json` request as Connect
//! envelopes.
//!
//! Nothing is handled here per method: a call is decoded with the method's
//! descriptor, made as a gRPC call to the same server in process (through
//! its whole stack: metrics, bearer-token authentication, quotas), and its
//! answer encoded back. So tokens, quotas, error codes and messages are the
//! gRPC ones; `retry-after` metadata becomes the `Retry-After` header.
//!
//! Who may call: anyone who can reach the public port, exactly as for gRPC;
//! each method's own service checks the caller. Only the methods the node
//! lists are exposed (its public services, less the ones only services
//! call); the rest answer 404.
//!
//! `GET /openapi.json` serves the OpenAPI 3.1 document of the exposed
//! methods ([`openapi`]), and other `GET`s the dashboard's files when the
//! node has them ([`Assets`]).
//!
//! [Connect protocol]: https://connectrpc.com/docs/protocol
#![forbid(unsafe_code)]

mod assets;
pub mod codec;
pub mod openapi;
pub mod protocol;

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

pub use assets::{Asset, Assets};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited, StreamBody};
use prost_reflect::{
    DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions,
};
use tonic::{Status, body::Body, codegen::StdError};
use tower::{Layer, Service};

use crate::{codec::DynamicCodec, protocol::*};

/// The largest request body the gateway reads (the gRPC default too).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// The largest body of a method whose request can carry bytes (an uploaded
/// archive: 32 MiB as base64, with room for the rest of the message).
pub const MAX_UPLOAD_REQUEST_BYTES: usize = 48 << 20;
/// The deadline of a unary call that names none (`connect-timeout-ms`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest deadline a caller may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// How often an idle event stream gets a comment line.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);

/// The request headers a call carries on as gRPC metadata; no other
/// header reaches the services.
const FORWARDED: [header::HeaderName; 2] = [header::AUTHORIZATION, header::USER_AGENT];
/// Trace context, and the client address a reverse proxy adds (auth believes
/// it only from `auth.trusted_proxies`; the TCP peer goes with the call's
/// extensions).
const FORWARDED_TRACE: [&str; 3] = ["traceparent", "tracestate", "x-forwarded-for"];

/// Headers on every answer of the gateway. The policy allows the dashboard's
/// own files only: no inline script or style, no other origin, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the gateway exposes: built once per server.
#[derive(Debug)]
pub struct Gateway {
    /// Each exposed method and the largest request body it reads.
    methods: HashMap<String, (MethodDescriptor, usize)>,
    openapi: Bytes,
    assets: Option<Assets>,
}

impl Gateway {
    /// Every method of `services` (full names, such as
    /// `reporunner.auth.v1.AuthService`) but the paths in `hidden`.
    pub fn new<'a>(
        services: impl IntoIterator<Item = &'a str>,
        hidden: &[&str],
        assets: Option<Assets>,
    ) -> Self {
        let pool = reporunner_proto::descriptor::pool();
        let mut methods = BTreeMap::new();
        for name in services {
            let Some(service) = pool.get_service_by_name(name) else {
                continue;
            };
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                // Client streams have no JSON form here; no public method is one.
                if hidden.contains(&path.as_str()) || method.is_client_streaming() {
                    continue;
                }
                methods.insert(path, method);
            }
        }
        let listed: Vec<MethodDescriptor> = methods.values().cloned().collect();
        let openapi = Bytes::from(openapi::document(&listed).to_string());
        Self {
            methods: methods
                .into_iter()
                .map(|(path, method)| {
                    let limit = if carries_bytes(&method.input(), &mut Vec::new()) {
                        MAX_UPLOAD_REQUEST_BYTES
                    } else {
                        MAX_REQUEST_BYTES
                    };
                    (path, (method, limit))
                })
                .collect(),
            openapi,
            assets,
        }
    }

    /// The largest request body `path` reads, when it is exposed.
    pub fn max_body(&self, path: &str) -> Option<usize> {
        self.methods.get(path).map(|(_, limit)| *limit)
    }

    /// The OpenAPI document, as served at `/openapi.json`.
    pub fn openapi_json(&self) -> &Bytes {
        &self.openapi
    }
}

/// Whether `message` or any message in it has a `bytes` field.
fn carries_bytes(message: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
    if seen.iter().any(|name| name == message.full_name()) {
        return false;
    }
    seen.push(message.full_name().to_owned());
    message.fields().any(|field| match field.kind() {
        prost_reflect::Kind::Bytes => true,
        prost_reflect::Kind::Message(inner) => carries_bytes(&inner, seen),
        _ => false,
    })
}

/// Puts the gateway in front of a server's services; with `None`, requests
/// pass through untouched (an agents-only server).
#[derive(Clone, Debug, Default)]
pub struct GatewayLayer {
    gateway: Option<Arc<Gateway>>,
}

impl GatewayLayer {
    pub fn new(gateway: Option<Arc<Gateway>>) -> Self {
        Self { gateway }
    }
}

impl<S> Layer<S> for GatewayLayer {
    type Service = GatewayService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GatewayService {
            inner,
            gateway: self.gateway.clone(),
        }
    }
}

/// See [`GatewayLayer`]: gRPC requests go to the inner service, the rest are
/// the gateway's.
#[derive(Clone, Debug)]
pub struct GatewayService<S> {
    inner: S,
    gateway: Option<Arc<Gateway>>,
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl<S, B> Service<Request<Body>> for GatewayService<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match &self.gateway {
            Some(gateway) if !is_grpc(&request) => {
                let gateway = gateway.clone();
                // The ready service answers this call; a clone waits for the next.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move {
                    let mut response = gateway.handle(request, inner).await;
                    secure(response.headers_mut());
                    Ok(response)
                })
            }
            _ => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    let response = call.await?;
                    Ok(response.map(Body::new))
                })
            }
        }
    }
}

fn secure(headers: &mut HeaderMap) {
    let set = [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

fn full(status: StatusCode, headers: Vec<(header::HeaderName, HeaderValue)>, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(body)));
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().insert(name, value);
    }
    response
}

/// A failed call as its HTTP answer.
fn failure(status: &Status) -> Response<Body> {
    let (code, headers, body) = error_parts(status);
    full(code, headers, body)
}

/// A failure with an HTTP status of its own (405, 413, 415) and a Connect
/// error body.
fn refusal(http: StatusCode, status: &Status) -> Response<Body> {
    let (_, headers, body) = error_parts(status);
    full(http, headers, body)
}

/// The media type of a request, without parameters, lowercase.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The deadline the caller asked for (`connect-timeout-ms`), bounded.
fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let ms: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            Status::invalid_argument("connect-timeout-ms must be a positive number of milliseconds")
        })?;
    Ok(Some(Duration::from_millis(ms).min(MAX_TIMEOUT)))
}

/// Parses a request message; an empty body is the empty message.
fn parse(payload: &[u8], input: &MessageDescriptor) -> Result<DynamicMessage, Status> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(input.clone()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let message = DynamicMessage::deserialize_with_options(
        input.clone(),
        &mut deserializer,
        &DeserializeOptions::new(),
    )
    .and_then(|message| deserializer.end().map(|()| message))
    .map_err(|err| {
        Status::invalid_argument(format!(
            "the request body is not a valid {} in proto3 JSON: {err}",
            input.full_name()
        ))
    })?;
    Ok(message)
}

fn render(message: &DynamicMessage) -> Result<String, Status> {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|err| Status::internal(format!("cannot render the response as JSON: {err}")))?;
    String::from_utf8(out).map_err(|err| Status::internal(format!("response JSON is not UTF-8: {err}")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Unary,
    Events,
    Envelopes,
}

impl Gateway {
    async fn handle<S, B>(&self, request: Request<Body>, inner: S) -> Response<Body>
    where
        S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send,
    {
        let path = request.uri().path().to_owned();
        if let Some((method, limit)) = self.methods.get(&path) {
            return self.rpc(method.clone(), *limit, request, inner).await;
        }
        let read = request.method() == Method::GET || request.method() == Method::HEAD;
        if path == "/openapi.json" {
            if !read {
                return refusal(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &Status::unimplemented("/openapi.json is read with GET"),
                );
            }
            let mut response = full(
                StatusCode::OK,
                vec![(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
                self.openapi.clone(),
            );
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return response;
        }
        if read
            && !path.starts_with("/reporunner.")
            && let Some(assets) = &self.assets
            && let Some(response) = assets.answer(&path, request.headers())
        {
            return response;
        }
        failure(&Status::not_found(format!(
            "no HTTP route {path}: the API's methods are listed at /openapi.json"
        )))
    }

    async fn rpc<S, B>(
        &self,
        method: MethodDescriptor,
        max_body: usize,
        request: Request<Body>,
        inner: S,
    ) -> Response<Body>
    where
        S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send,
    {
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        if request.method() != Method::POST {
            let mut response = refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                &Status::unimplemented(format!("{path} is called with POST")),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let streaming = method.is_server_streaming();
        let mode = match (media_type(request.headers()).as_str(), streaming) {
            (JSON, false) => Mode::Unary,
            (JSON, true) => Mode::Events,
            (CONNECT_JSON, true) => Mode::Envelopes,
            (CONNECT_JSON, false) => {
                return refusal(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &Status::invalid_argument(format!("{path} is unary: send its request as {JSON}")),
                );
            }
            (other, _) => {
                let shown = if other.is_empty() { "none" } else { other };
                return refusal(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &Status::invalid_argument(format!(
                        "content-type {shown} is not supported: send the request message as {JSON}"
                    )),
                );
            }
        };
        let deadline = match timeout(request.headers()) {
            Ok(deadline) => deadline,
            Err(status) => return failure(&status),
        };
        let (parts, body) = request.into_parts();
        let bytes = match Limited::new(body, max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.is::<LengthLimitError>() => {
                return refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &Status::resource_exhausted(format!(
                        "the request body is larger than the {max_body} bytes {path} takes"
                    )),
                );
            }
            Err(err) => {
                return failure(&Status::invalid_argument(format!(
                    "cannot read the request body: {err}"
                )));
            }
        };
        let payload = if mode == Mode::Envelopes {
            match unwrap_request_envelope(&bytes) {
                Ok(payload) => payload,
                Err(status) => return failure(&status),
            }
        } else {
            &bytes[..]
        };
        let message = match parse(payload, &method.input()) {
            Ok(message) => message,
            Err(status) => return failure(&status),
        };

        // The gRPC request: only the forwarded headers become metadata; the
        // connection's extensions (peer address) go with it.
        let mut headers = HeaderMap::new();
        for name in FORWARDED {
            if let Some(value) = parts.headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        for name in FORWARDED_TRACE {
            if let Some(value) = parts.headers.get(name) {
                headers.insert(name, value.clone());
            }
        }
        let mut outgoing = http::Request::new(message);
        *outgoing.headers_mut() = headers;
        *outgoing.extensions_mut() = parts.extensions;
        let mut call = tonic::Request::from_http(outgoing);
        let unary_deadline = deadline.unwrap_or(DEFAULT_TIMEOUT);
        if mode == Mode::Unary || deadline.is_some() {
            call.set_timeout(unary_deadline);
        }
        let grpc_path = match http::uri::PathAndQuery::from_maybe_shared(path.clone()) {
            Ok(path) => path,
            Err(err) => return failure(&Status::internal(format!("bad method path {path}: {err}"))),
        };
        let mut grpc = tonic::client::Grpc::new(inner);
        if let Err(err) = grpc.ready().await {
            return failure(&Status::unavailable(format!("the service is not ready: {err}")));
        }
        let codec = DynamicCodec::new(method.output());

        if mode == Mode::Unary {
            let answer = match tokio::time::timeout(unary_deadline, grpc.unary(call, grpc_path, codec)).await
            {
                Ok(answer) => answer,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "{path} did not answer within {} ms",
                    unary_deadline.as_millis()
                ))),
            };
            return match answer.and_then(|response| render(response.get_ref())) {
                Ok(json) => full(
                    StatusCode::OK,
                    vec![(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
                    Bytes::from(json),
                ),
                Err(status) => failure(&status),
            };
        }

        let started = grpc.server_streaming(call, grpc_path, codec);
        let started = match deadline {
            Some(deadline) => tokio::time::timeout(deadline, started)
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("{path} did not start in time")))),
            None => started.await,
        };
        let stream = match started {
            Ok(response) => response.into_inner(),
            Err(status) if mode == Mode::Events => return failure(&status),
            Err(status) => {
                return envelopes_response(futures::stream::iter([Ok(Frame::data(end_stream(Some(
                    &status,
                ))))]));
            }
        };
        match mode {
            Mode::Events => events_response(events(stream, deadline)),
            _ => envelopes_response(envelopes(stream, deadline)),
        }
    }
}

type Frames = dyn futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send;

fn stream_response(
    content_type: &'static str,
    frames: impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
) -> Response<Body> {
    let frames: std::pin::Pin<Box<Frames>> = Box::pin(frames);
    let mut response = Response::new(Body::new(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies (nginx) must pass events on as they come.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn events_response(
    frames: impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
) -> Response<Body> {
    stream_response(EVENT_STREAM, frames)
}

fn envelopes_response(
    frames: impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
) -> Response<Body> {
    stream_response(CONNECT_JSON, frames)
}

/// What comes next out of a gRPC response stream, with a keep-alive tick
/// when `tick` is set, and the whole stream bounded by `deadline`.
enum Next {
    Message(DynamicMessage),
    End(Option<Status>),
    Tick,
}

struct Source {
    stream: tonic::Streaming<DynamicMessage>,
    tick: Option<tokio::time::Interval>,
    deadline: Option<tokio::time::Instant>,
}

impl Source {
    fn new(stream: tonic::Streaming<DynamicMessage>, keepalive: bool, deadline: Option<Duration>) -> Self {
        let tick = keepalive.then(|| {
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE_EVERY, KEEPALIVE_EVERY)
        });
        Self {
            stream,
            tick,
            deadline: deadline.map(|d| tokio::time::Instant::now() + d),
        }
    }

    async fn next(&mut self) -> Next {
        let tick = async {
            match &mut self.tick {
                Some(tick) => {
                    tick.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let expiry = async {
            match self.deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // `Streaming::message` keeps its state in the stream: safe to drop.
            item = self.stream.message() => match item {
                Ok(Some(message)) => Next::Message(message),
                Ok(None) => Next::End(None),
                Err(status) => Next::End(Some(status)),
            },
            () = tick => Next::Tick,
            () = expiry => Next::End(Some(Status::deadline_exceeded("the stream passed its connect-timeout-ms"))),
        }
    }
}

fn events(
    stream: tonic::Streaming<DynamicMessage>,
    deadline: Option<Duration>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    futures::stream::unfold(Some(Source::new(stream, true, deadline)), |source| async move {
        let mut source = source?;
        let (bytes, more) = match source.next().await {
            Next::Message(message) => match render(&message) {
                Ok(json) => (event(None, &json), true),
                Err(status) => (event(Some("error"), &error_json(&status).to_string()), false),
            },
            Next::Tick => (Bytes::from_static(KEEPALIVE), true),
            Next::End(None) => (event(Some("end"), "{}"), false),
            Next::End(Some(status)) => (event(Some("error"), &error_json(&status).to_string()), false),
        };
        Some((Ok(Frame::data(bytes)), more.then_some(source)))
    })
}

fn envelopes(
    stream: tonic::Streaming<DynamicMessage>,
    deadline: Option<Duration>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    futures::stream::unfold(Some(Source::new(stream, false, deadline)), |source| async move {
        let mut source = source?;
        let (bytes, more) = match source.next().await {
            Next::Message(message) => match render(&message) {
                Ok(json) => (envelope(0, json.as_bytes()), true),
                Err(status) => (end_stream(Some(&status)), false),
            },
            Next::Tick => (Bytes::new(), true),
            Next::End(status) => (end_stream(status.as_ref()), false),
        };
        Some((Ok(Frame::data(bytes)), more.then_some(source)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_methods_whose_request_can_carry_bytes_read_large_bodies() {
        let gateway = Gateway::new(
            [
                "reporunner.orchestrator.v1.OrchestratorService",
                "reporunner.auth.v1.AuthService",
            ],
            &[],
            None,
        );
        assert_eq!(
            gateway.max_body("/reporunner.orchestrator.v1.OrchestratorService/CreateRun"),
            Some(MAX_UPLOAD_REQUEST_BYTES)
        );
        assert_eq!(
            gateway.max_body("/reporunner.orchestrator.v1.OrchestratorService/GetRun"),
            Some(MAX_REQUEST_BYTES)
        );
        assert_eq!(
            gateway.max_body("/reporunner.auth.v1.AuthService/Login"),
            Some(MAX_REQUEST_BYTES)
        );
        assert_eq!(
            gateway.max_body("/reporunner.agents.source.v1.SourceService/Fetch"),
            None
        );
    }
}
