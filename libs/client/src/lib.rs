//! The client stack every Repo Runner caller shares.
//!
//! A [`ServiceChannel`] is a `tower::Service` that generated tonic clients
//! wrap (`EnvDetectorServiceClient::new(channel)`). Around each call it gives:
//!
//! - a connect timeout and HTTP/2 keep-alive per endpoint, so an endpoint that
//!   stops answering is noticed;
//! - a per-call deadline (the caller's `grpc-timeout`, else the default),
//!   enforced locally and sent to the server, so no call hangs;
//! - retries with exponential backoff (tower's backoff) only for methods the
//!   contract marks `NO_SIDE_EFFECTS` or `IDEMPOTENT`, and only on
//!   UNAVAILABLE or a transport failure;
//! - round-robin balancing over the endpoints whose `grpc.health.v1` Watch
//!   says SERVING. An endpoint that reports NOT_SERVING, whose watch breaks,
//!   or whose call fails at the transport level leaves the pool until its
//!   watch says SERVING again. With no healthy endpoint a call fails at once
//!   with UNAVAILABLE naming each endpoint's state;
//! - DNS discovery: an endpoint `dns:///host:port` stands for every address
//!   the name resolves to, re-resolved every `resolve_interval`, so the
//!   pool follows scale-up and scale-down ([`Resolver`], [`SystemResolver`]);
//! - endpoint affinity: each response names the endpoint that answered
//!   ([`ENDPOINT_HEADER`]), and a request that names one goes there while
//!   it serves (calls about a process go to the runner that started it);
//! - TLS and mutual TLS when `client.tls` is configured ([`ClientTlsConfig`]);
//! - W3C trace context: the current span's trace goes out as `traceparent`;
//! - the caller's service identity, when set with
//!   [`ServiceChannel::with_identity`]: a short-lived service token in
//!   `x-reporunner-service` on every call (agents accept nothing else).
#![forbid(unsafe_code)]

mod channel;
mod config;
mod discovery;
mod pool;
mod transport;

pub use channel::{ENDPOINT_HEADER, ServiceChannel, connect, connect_with_resolver};
pub use config::{ClientConfig, ClientTlsConfig};
pub use discovery::{Resolver, Resolving, SystemResolver};
pub use pool::EndpointState;
pub use transport::{IN_PROCESS_DEFAULT_DEADLINE, Transport};

/// Why a channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("service {service} has no endpoints configured")]
    NoEndpoints { service: String },
    #[error("endpoint `{endpoint}` of service {service} is not a valid URI: {reason}")]
    InvalidEndpoint {
        service: String,
        endpoint: String,
        reason: String,
    },
    #[error("client TLS for service {service}: {reason}")]
    Tls { service: String, reason: String },
}
