//! The bootstrap every Repo Runner service shares.
//!
//! - [`GrpcServer`]: a tonic server hosting one or more services on one
//!   listener, with `grpc.health.v1`, server reflection (v1 and v1alpha),
//!   per-RPC metrics and tracing spans, and graceful shutdown that first
//!   reports NOT_SERVING so that balancers drain.
//! - [`decode`]: requests that cannot be decoded are answered
//!   INVALID_ARGUMENT on every route, not INTERNAL.
//! - [`metrics`]: the Prometheus recorder, every metric name, and the
//!   `/metrics` HTTP endpoint.
//! - [`local`]: the data directory's control socket (the owner process's
//!   public services, for the machine user's other commands).
//! - [`config`]: layered configuration, defaults < file < `REPORUNNER_*` env <
//!   flags.
//! - [`telemetry`]: tracing subscriber setup.
//! - [`shutdown`]: SIGINT/SIGTERM as a cancellation token.
//! - [`tls`]: TLS and mutual TLS for [`GrpcServer`], reloaded from disk.
//! - [`trace`]: W3C `traceparent` propagation; every call's span records
//!   its `trace_id`.
#![forbid(unsafe_code)]

pub mod config;
mod cut;
pub mod decode;
mod grpc;
pub mod local;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use grpc::{GrpcRoute, GrpcServer, Health, ServeError, served_in_process};
pub use tokio_util::sync::CancellationToken;
