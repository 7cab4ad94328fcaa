//! [`ServiceChannel`]: deadline, retry and pool, as one `tower::Service`.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use reporunner_identity::{SERVICE_HEADER, ServiceTokenSource};
use reporunner_proto::descriptor::{self, MethodKind};
use reporunner_server::metrics::CLIENT_RETRIES_TOTAL;
use tonic::{Status, body::Body};
use tower::{
    Service, ServiceExt,
    retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff},
    util::rng::HasherRng,
};

use crate::{
    ClientConfig, ClientError, EndpointState, Resolver, SystemResolver,
    pool::{Member, Pool},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A balanced, health-checked channel to one service. Wrap it in a generated
/// client: `EnvDetectorServiceClient::new(channel)`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceChannel {
    pool: Pool,
    /// The calling service's identity, sent with every call when set.
    identity: Option<Arc<ServiceTokenSource>>,
}

/// Builds a channel to `service` (its full gRPC name, which is also the name
/// its health is watched under) over `endpoints`: `http://host:port`,
/// `https://host:port`, or `dns:///host:port` for every address the name
/// resolves to (system resolver). Must be called inside a tokio runtime.
pub fn connect(
    service: &str,
    endpoints: &[String],
    config: &ClientConfig,
) -> Result<ServiceChannel, ClientError> {
    connect_with_resolver(service, endpoints, config, Arc::new(SystemResolver))
}

/// [`connect`] with `resolver` answering for the `dns:///` endpoints.
pub fn connect_with_resolver(
    service: &str,
    endpoints: &[String],
    config: &ClientConfig,
    resolver: Arc<dyn Resolver>,
) -> Result<ServiceChannel, ClientError> {
    Ok(ServiceChannel {
        pool: Pool::new(service, endpoints, config.clone(), resolver)?,
        identity: None,
    })
}

impl ServiceChannel {
    /// Every call on this channel (and its clones) says it comes from the
    /// service behind `identity`: a service token in `x-reporunner-service`,
    /// minted and renewed by `identity`. Agents accept only such calls.
    pub fn with_identity(mut self, identity: Arc<ServiceTokenSource>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The calling service this channel speaks for, when it has an identity.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref().map(ServiceTokenSource::service)
    }

    /// Each endpoint and what the pool knows of it.
    pub fn endpoint_states(&self) -> Vec<(String, EndpointState)> {
        self.pool
            .states()
            .into_iter()
            .map(|(uri, state)| (uri.to_string(), state))
            .collect()
    }

    /// Waits until at least one endpoint serves, or `timeout` passes.
    pub async fn ready_within(&self, timeout: Duration) -> Result<(), Status> {
        self.pool.pick(timeout).await.map(|_| ())
    }
}

impl Service<http::Request<Body>> for ServiceChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is decided per call, when an endpoint is picked.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // Here, not in the future: this runs inside the caller's span.
        reporunner_server::trace::inject(request.headers_mut());
        let pool = self.pool.clone();
        if let Some(identity) = &self.identity
            && let Err(status) = stamp_identity(identity, request.headers_mut())
        {
            return Box::pin(std::future::ready(Err(Box::new(status) as BoxError)));
        }
        Box::pin(async move {
            call(pool, request)
                .await
                .map_err(|status| Box::new(status) as BoxError)
        })
    }
}

/// Puts `identity`'s service token on a call: a header of its own, never
/// `authorization`, so that a user's bearer token on the same request stays
/// what it is.
pub(crate) fn stamp_identity(
    identity: &ServiceTokenSource,
    headers: &mut http::HeaderMap,
) -> Result<(), Status> {
    match identity.token().map(http::HeaderValue::try_from) {
        Ok(Ok(value)) => {
            headers.insert(SERVICE_HEADER, value);
            Ok(())
        }
        Ok(Err(_)) | Err(_) => Err(Status::internal(format!(
            "cannot mint the {} service token",
            identity.service()
        ))),
    }
}

/// Endpoint affinity, both ways. On a response: the endpoint that answered
/// (set by the channel, whatever the server sent). On a request: the
/// endpoint to call when it still serves (the one that answered an earlier
/// call about the same target, such as the runner that started a process);
/// taken off before the call leaves.
pub const ENDPOINT_HEADER: &str = "x-reporunner-endpoint";

async fn call(pool: Pool, mut request: http::Request<Body>) -> Result<http::Response<Body>, Status> {
    let path = request.uri().path().to_owned();
    let preferred: Option<String> = request
        .headers_mut()
        .remove(ENDPOINT_HEADER)
        .and_then(|v| v.to_str().ok().map(str::to_owned));
    let preferred = preferred.as_deref();
    let deadline = match request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
    {
        Some(value) => parse_grpc_timeout(value).unwrap_or_else(|| pool.config().default_deadline()),
        None => {
            let deadline = pool.config().default_deadline();
            if let Ok(value) = encode_grpc_timeout(deadline).parse() {
                request.headers_mut().insert("grpc-timeout", value);
            }
            deadline
        }
    };
    let retryable = descriptor::method(&path)
        .is_some_and(|m| m.idempotent && matches!(m.kind, MethodKind::Unary | MethodKind::ServerStreaming));
    let attempts = async {
        if retryable && pool.config().max_attempts > 1 {
            call_with_retries(&pool, &path, request, preferred).await
        } else {
            let member = pool
                .pick_preferring(preferred, pool.config().connect_timeout())
                .await?;
            send(&pool, &member, request).await
        }
    };
    match tokio::time::timeout(deadline, attempts).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{} on {} did not finish within {:?}",
            path,
            pool.service(),
            deadline
        ))),
    }
}

async fn call_with_retries(
    pool: &Pool,
    path: &str,
    request: http::Request<Body>,
    preferred: Option<&str>,
) -> Result<http::Response<Body>, Status> {
    let config = pool.config();
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, config.max_retry_buffer_bytes)
        .collect()
        .await
        .map_err(|err| {
            Status::invalid_argument(format!(
                "request to {path} could not be buffered for retry (limit {} bytes): {err}",
                config.max_retry_buffer_bytes
            ))
        })?;
    let bytes = body.to_bytes();
    let mut backoff = ExponentialBackoffMaker::new(
        config.initial_backoff.max(Duration::from_millis(1)),
        config
            .max_backoff
            .max(config.initial_backoff)
            .max(Duration::from_millis(1)),
        0.5,
        HasherRng::default(),
    )
    .map_err(|err| Status::internal(format!("invalid retry backoff: {err}")))?
    .make_backoff();
    let max_attempts = config.max_attempts;
    let mut attempt = 1;
    loop {
        let request = rebuild(&parts, bytes.clone());
        let outcome = match pool.pick_preferring(preferred, config.connect_timeout()).await {
            Ok(member) => send(pool, &member, request).await,
            Err(status) => Err(status),
        };
        // The server's pushback (gRFC A6): negative, do not retry; else
        // wait that long instead of the backoff.
        let pushback = outcome
            .as_ref()
            .ok()
            .and_then(|response| pushback(response.headers()));
        let retry = match &outcome {
            Ok(response) => {
                trailers_only_code(response) == Some(tonic::Code::Unavailable)
                    && pushback.is_none_or(|ms| ms >= 0)
            }
            Err(status) => status.code() == tonic::Code::Unavailable,
        };
        if !retry || attempt >= max_attempts {
            return outcome;
        }
        // Nothing healthy and nothing pending: another attempt cannot help.
        if pool
            .states()
            .iter()
            .all(|(_, s)| matches!(s, EndpointState::Down(_) | EndpointState::NotServing))
        {
            return outcome;
        }
        attempt += 1;
        metrics::counter!(CLIENT_RETRIES_TOTAL, "rpc" => path.trim_start_matches('/').to_owned())
            .increment(1);
        tracing::debug!(rpc = path, attempt, "retrying idempotent call");
        match pushback {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await,
            None => backoff.next_backoff().await,
        }
    }
}

fn rebuild(parts: &http::request::Parts, bytes: Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(Full::new(bytes)));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// The `grpc-retry-pushback-ms` of a trailers-only response.
fn pushback(headers: &http::HeaderMap) -> Option<i64> {
    headers
        .get(reporunner_error::RETRY_PUSHBACK)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn trailers_only_code(response: &http::Response<Body>) -> Option<tonic::Code> {
    let value = response
        .headers()
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(tonic::Code::from_i32(value))
}

async fn send(
    pool: &Pool,
    member: &Arc<Member>,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let mut channel = member.channel.clone();
    let result = match channel.ready().await {
        Ok(ready) => ready.call(request).await,
        Err(err) => Err(err),
    };
    result
        .map(|mut response| {
            if let Ok(value) = http::HeaderValue::try_from(member.uri.to_string()) {
                response.headers_mut().insert(ENDPOINT_HEADER, value);
            }
            response
        })
        .map_err(|err| {
            // The transport's own `grpc-timeout` fired: the caller's deadline
            // passed while the endpoint worked. Not the endpoint's failure.
            if timed_out(&err) {
                return Status::deadline_exceeded(format!(
                    "{} at {} did not answer within the call's deadline",
                    pool.service(),
                    member.uri
                ));
            }
            let reason = reporunner_error::error_chain(&err);
            pool.report_failure(member, reason.clone());
            Status::unavailable(format!("{} at {}: {reason}", pool.service(), member.uri))
        })
}

/// Whether `err` (or what caused it) is tonic's expired `grpc-timeout`.
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        next = err.source();
    }
    false
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit.
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn encode_grpc_timeout(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 100_000_000 {
        format!("{}m", millis.max(1))
    } else {
        format!("{}S", duration.as_secs().min(99_999_999))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_round_trips_and_rejects_garbage() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("123456789m"), None, "more than 8 digits");
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        let encoded = encode_grpc_timeout(Duration::from_millis(1500));
        assert_eq!(parse_grpc_timeout(&encoded), Some(Duration::from_millis(1500)));
    }

    #[tokio::test]
    async fn an_invalid_endpoint_is_refused_with_its_name() {
        let err = connect("svc", &["not a uri".to_owned()], &ClientConfig::default()).unwrap_err();
        assert!(err.to_string().contains("not a uri"), "{err}");
        let err = connect("svc", &[], &ClientConfig::default()).unwrap_err();
        assert!(matches!(err, ClientError::NoEndpoints { .. }));
    }
}
