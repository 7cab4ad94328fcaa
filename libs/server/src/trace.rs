//! W3C trace context (`traceparent`) across service calls.
//!
//! The server span of every call ([`server_span`]) continues the caller's
//! trace when the request carries a valid `traceparent`, or starts one, and
//! records `trace_id`, `span_id` and `parent_span_id` as span fields, so every
//! log line inside the call names its trace. [`TraceContextLayer`] (installed
//! by [`telemetry::init`](crate::telemetry::init)) keeps the parsed context in
//! the span's extensions; the client stack asks [`current`] for it and sends
//! it on as `traceparent` ([`inject`]). One run's calls thus share one trace
//! id across services.
//!
//! This is the propagation half of OpenTelemetry only, on purpose: the ids
//! are what connects logs across services, and they cost a header parse and
//! two random numbers per call. The full SDK (exporters, batching, an OTLP
//! collector to run) can be added behind the same header later, since
//! `traceparent` is its wire format.

use std::fmt;

use tracing::{
    Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{Layer, Registry, layer::Context, registry::LookupSpan};

/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The trace a span belongs to and the span's own id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// A parsed `traceparent` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceContext {
    /// A new trace (random ids, sampled).
    pub fn root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            sampled: true,
        }
    }

    /// A new span in the caller's trace.
    pub fn child_of(parent: &TraceParent) -> Self {
        Self {
            trace_id: parent.trace_id,
            span_id: nonzero_u64(),
            sampled: parent.flags & 1 == 1,
        }
    }

    /// The `traceparent` value naming this span as the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

fn nonzero_u128() -> u128 {
    rand::random::<u128>().max(1)
}

fn nonzero_u64() -> u64 {
    rand::random::<u64>().max(1)
}

/// Parses a `traceparent` value as the W3C spec says: lowercase hex, version
/// `ff` and all-zero ids invalid, later versions may append fields.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let value = value.trim();
    if value.len() < 55 || !value.is_ascii() {
        return None;
    }
    let (head, rest) = value.split_at(55);
    let mut parts = head.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2)
        || version == "ff"
        || !lower_hex(trace_id, 32)
        || !lower_hex(parent_id, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    // Version 00 is exactly 55 characters; later ones continue after a dash.
    if (version == "00" && !rest.is_empty()) || (!rest.is_empty() && !rest.starts_with('-')) {
        return None;
    }
    let parsed = TraceParent {
        trace_id: u128::from_str_radix(trace_id, 16).ok()?,
        parent_id: u64::from_str_radix(parent_id, 16).ok()?,
        flags: u8::from_str_radix(flags, 16).ok()?,
    };
    (parsed.trace_id != 0 && parsed.parent_id != 0).then_some(parsed)
}

/// The span of one incoming call: the caller's trace continued, or a new one.
/// `GrpcServer` uses it as tonic's `trace_fn`.
pub fn server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let parent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let context = parent
        .as_ref()
        .map_or_else(TraceContext::root, TraceContext::child_of);
    let span = tracing::info_span!(
        "grpc",
        rpc = %request.uri().path(),
        trace_id = %format!("{:032x}", context.trace_id),
        span_id = %format!("{:016x}", context.span_id),
        parent_span_id = tracing::field::Empty,
    );
    if let Some(parent) = parent {
        span.record(
            "parent_span_id",
            tracing::field::display(format!("{:016x}", parent.parent_id)),
        );
    }
    span
}

/// The trace context of the current span or its nearest ancestor that has
/// one; `None` outside any traced span or without [`TraceContextLayer`].
pub fn current() -> Option<TraceContext> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            span.scope()
                .find_map(|s| s.extensions().get::<TraceContext>().copied())
        })
        .flatten()
}

/// Adds `traceparent` for the current span to outgoing metadata, unless the
/// caller set one.
pub fn inject(headers: &mut http::HeaderMap) {
    if headers.contains_key(TRACEPARENT) {
        return;
    }
    if let Some(context) = current()
        && let Ok(value) = http::HeaderValue::from_str(&context.traceparent())
    {
        headers.insert(TRACEPARENT, value);
    }
}

/// Keeps the trace context of spans that record `trace_id` and `span_id` (as
/// [`server_span`] does) in their extensions, for [`current`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer;

impl<S> Layer<S> for TraceContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut ids = Ids::default();
        attrs.record(&mut ids);
        if let (Some(trace_id), Some(span_id)) = (ids.trace_id, ids.span_id)
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(TraceContext {
                trace_id,
                span_id,
                sampled: true,
            });
        }
    }
}

#[derive(Default)]
struct Ids {
    trace_id: Option<u128>,
    span_id: Option<u64>,
}

impl Ids {
    fn take(&mut self, field: &Field, text: &str) {
        match field.name() {
            "trace_id" if text.len() == 32 => {
                self.trace_id = u128::from_str_radix(text, 16).ok().filter(|v| *v != 0);
            }
            "span_id" if text.len() == 16 => {
                self.span_id = u64::from_str_radix(text, 16).ok().filter(|v| *v != 0);
            }
            _ => {}
        }
    }
}

impl Visit for Ids {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.take(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), "trace_id" | "span_id") {
            self.take(field, &format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let context = TraceContext::root();
        let parsed = parse_traceparent(&context.traceparent()).expect("own output parses");
        assert_eq!(parsed.trace_id, context.trace_id);
        assert_eq!(parsed.parent_id, context.span_id);
        assert_eq!(parsed.flags, 1);
        let child = TraceContext::child_of(&parsed);
        assert_eq!(child.trace_id, context.trace_id);
        assert_ne!(child.span_id, context.span_id);
    }

    #[test]
    fn the_spec_examples_parse_and_malformed_values_do_not() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = parse_traceparent(good).expect("spec example");
        assert_eq!(parsed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parsed.parent_id, 0x00f067aa0ba902b7);
        assert!(
            parse_traceparent(&format!("01{}-later", &good[2..])).is_some(),
            "future versions extend"
        );
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // v00 is exact
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", // misplaced dash
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }
}
