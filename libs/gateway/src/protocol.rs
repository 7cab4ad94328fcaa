//! The wire pieces of the HTTP mapping: gRPC codes as HTTP statuses and
//! Connect error bodies, Connect envelopes, server-sent events.

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use tonic::{Code, Status};

/// `application/json`: unary calls, and server streams answered as events.
pub const JSON: &str = "application/json";
/// `application/connect+json`: server streams as Connect envelopes.
pub const CONNECT_JSON: &str = "application/connect+json";
/// `text/event-stream`: server streams as server-sent events.
pub const EVENT_STREAM: &str = "text/event-stream";

/// The Connect protocol's name of a code (`not_found`), also used in event
/// streams and in the OpenAPI error schema.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Every code an error body may carry (not `ok`).
pub const ERROR_CODES: [Code; 16] = [
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// The HTTP status of a gRPC code, as the Connect protocol maps them (the
/// same as Google's HTTP mapping but for `canceled`, 499).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The Connect error object: `{"code": "not_found", "message": "..."}`.
pub fn error_json(status: &Status) -> serde_json::Value {
    let mut error = serde_json::Map::new();
    error.insert("code".into(), code_name(status.code()).into());
    if !status.message().is_empty() {
        error.insert("message".into(), status.message().into());
    }
    serde_json::Value::Object(error)
}

/// The `retry-after` seconds a status carries, for the HTTP header.
pub fn retry_after(status: &Status) -> Option<HeaderValue> {
    let value = status.metadata().get(reporunner_error::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    HeaderValue::from_str(&seconds.to_string()).ok()
}

/// An error as a whole HTTP response's parts: status, headers, JSON body.
pub fn error_parts(status: &Status) -> (StatusCode, Vec<(header::HeaderName, HeaderValue)>, Bytes) {
    let mut headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static(JSON))];
    if let Some(wait) = retry_after(status) {
        headers.push((header::RETRY_AFTER, wait));
    }
    (
        http_status(status.code()),
        headers,
        Bytes::from(error_json(status).to_string()),
    )
}

/// Connect envelope flags.
pub const FLAG_END_STREAM: u8 = 0b10;
const FLAG_COMPRESSED: u8 = 0b01;

/// One Connect envelope: flags, a big-endian u32 length, the payload.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
    out.freeze()
}

/// The Connect end-of-stream message: `{}` or `{"error": {...}}`.
pub fn end_stream(status: Option<&Status>) -> Bytes {
    let body = match status {
        None => serde_json::json!({}),
        Some(status) => serde_json::json!({ "error": error_json(status) }),
    };
    envelope(FLAG_END_STREAM, body.to_string().as_bytes())
}

/// The single message of a streaming request body: one uncompressed
/// envelope holding the whole body.
pub fn unwrap_request_envelope(body: &[u8]) -> Result<&[u8], Status> {
    let Some((head, payload)) = body.split_at_checked(5) else {
        return Err(Status::invalid_argument(
            "a Connect streaming request body must be one envelope (5-byte header, then the message)",
        ));
    };
    if head[0] & FLAG_COMPRESSED != 0 {
        return Err(Status::unimplemented(
            "compressed Connect envelopes are not supported; send the message uncompressed",
        ));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len != payload.len() {
        return Err(Status::invalid_argument(format!(
            "the request envelope says {len} bytes but {} follow it; send exactly one message",
            payload.len()
        )));
    }
    Ok(payload)
}

/// One server-sent event. `data` is one line of JSON (serde_json never
/// writes a raw newline), so one `data:` field carries it.
pub fn event(name: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(data);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// A comment line: keeps an idle event stream's connection open through
/// proxies.
pub const KEEPALIVE: &[u8] = b": keep-alive\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_usual_http_statuses() {
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
        for code in ERROR_CODES {
            assert!(http_status(code).as_u16() >= 400, "{code:?}");
        }
    }

    #[test]
    fn an_error_keeps_its_message_and_its_retry_after() {
        let mut status = Status::resource_exhausted("hourly quota of runs spent");
        status
            .metadata_mut()
            .insert("retry-after", tonic::metadata::MetadataValue::from_static("42"));
        let (code, headers, body) = error_parts(&status);
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        assert!(headers.contains(&(header::RETRY_AFTER, HeaderValue::from_static("42"))));
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "resource_exhausted");
        assert_eq!(body["message"], "hourly quota of runs spent");
    }

    #[test]
    fn envelopes_round_trip_and_bad_ones_are_named() {
        let framed = envelope(0, br#"{"runId":"r"}"#);
        assert_eq!(unwrap_request_envelope(&framed).unwrap(), br#"{"runId":"r"}"#);
        assert_eq!(
            unwrap_request_envelope(b"{}").unwrap_err().code(),
            Code::InvalidArgument
        );
        let mut short = framed.to_vec();
        short.pop();
        let err = unwrap_request_envelope(&short).unwrap_err();
        assert!(err.message().contains("says 13 bytes but 12"), "{err}");
        let end = end_stream(Some(&Status::not_found("no run r")));
        assert_eq!(end[0], FLAG_END_STREAM);
        let body: serde_json::Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }

    #[test]
    fn events_are_one_data_line() {
        assert_eq!(&event(None, "{}")[..], b"data: {}\n\n");
        assert_eq!(&event(Some("end"), "{}")[..], b"event: end\ndata: {}\n\n");
    }
}
