//! [`DecodeErrorLayer`]: a request that cannot be decoded is the client's
//! mistake, so it is answered INVALID_ARGUMENT, not INTERNAL.
//!
//! tonic answers a request message prost cannot decode (garbage bytes, a
//! wrong wire type, invalid UTF-8 in a `string` field) with INTERNAL and
//! prost's words, `failed to decode Protobuf message: ...`
//! (`tonic_prost::codec::from_decode_error`). Clients, dashboards and alerts
//! read INTERNAL as a server fault, and retrying clients retry it. The layer
//! rewrites such a response, whose status travels in its headers because the
//! handler never ran, into INVALID_ARGUMENT with
//! `the request could not be decoded: <prost's reason>`.
//!
//! Protocol errors tonic must answer INTERNAL (a compressed flag without a
//! `grpc-encoding`) are left alone, as are statuses a handler returns in
//! trailers.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{Code, Status};
use tower::{Layer, Service};

/// What prost's `DecodeError` says first (prost 0.14, through tonic-prost's
/// `Status::internal(error.to_string())`).
pub(crate) const PROST_DECODE_PREFIX: &str = "failed to decode Protobuf message: ";

/// What the rewritten status says first.
pub const UNDECODABLE_PREFIX: &str = "the request could not be decoded: ";

/// Rewrites INTERNAL "failed to decode Protobuf message" responses into
/// INVALID_ARGUMENT. See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeErrorLayer;

impl<S> Layer<S> for DecodeErrorLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors { inner }
    }
}

/// See [`DecodeErrorLayer`].
#[derive(Clone, Debug)]
pub struct DecodeErrors<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DecodeErrors<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            rewrite(response.headers_mut());
            Ok(response)
        })
    }
}

/// Turns an undecodable-request status in `headers` into INVALID_ARGUMENT;
/// anything else is left as it is.
fn rewrite(headers: &mut http::HeaderMap) {
    let is_internal = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"13");
    if !is_internal {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(reason) = undecodable_reason(&status) else {
        return;
    };
    let replaced = Status::invalid_argument(format!("{UNDECODABLE_PREFIX}{reason}"));
    // Writes grpc-status and grpc-message over the old ones; the message is
    // percent-encoded, so it always fits in a header.
    if replaced.add_header(headers).is_err() {
        tracing::warn!("cannot rewrite an undecodable request's status");
        return;
    }
    // Details of the INTERNAL status would contradict the new one.
    headers.remove("grpc-status-details-bin");
}

/// Prost's reason when `status` is tonic's answer to a request it could not
/// decode.
fn undecodable_reason(status: &Status) -> Option<&str> {
    if status.code() != Code::Internal {
        return None;
    }
    status.message().strip_prefix(PROST_DECODE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of(status: Status) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
    }

    #[test]
    fn prost_decode_errors_become_invalid_argument() {
        let mut headers = headers_of(Status::internal(
            "failed to decode Protobuf message: HealthCheckRequest.service: invalid string value: data is not UTF-8 encoded",
        ));
        rewrite(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the request could not be decoded: HealthCheckRequest.service: invalid string value: data is not UTF-8 encoded"
        );
    }

    #[test]
    fn other_statuses_are_left_alone() {
        for status in [
            Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ),
            Status::internal("a blocking task did not finish"),
            Status::invalid_argument("failed to decode Protobuf message: made up by a handler"),
            Status::unavailable("failed to decode Protobuf message: from an upstream agent"),
        ] {
            let mut headers = headers_of(status.clone());
            rewrite(&mut headers);
            let after = Status::from_header_map(&headers).unwrap();
            assert_eq!(after.code(), status.code());
            assert_eq!(after.message(), status.message());
        }
        let mut empty = http::HeaderMap::new();
        rewrite(&mut empty);
        assert!(empty.is_empty());
    }
}
