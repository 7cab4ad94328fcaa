//! [`Transport`]: what a generated client wraps, either a [`ServiceChannel`]
//! to the service's endpoints or the service's own server in this process.

use std::{
    convert::Infallible,
    fmt,
    task::{Context, Poll},
};

use tonic::body::Body;
use tower::{Service, ServiceExt as _, util::BoxCloneSyncService};

use crate::ServiceChannel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A gRPC transport: over the network ([`ServiceChannel`], with its
/// balancing, deadlines, retries and service identity) or in-process
/// ([`Transport::in_process`]: the generated server called directly, no
/// socket, no encoding on the wire beyond the gRPC framing). Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>,
    label: &'static str,
}

impl Transport {
    /// Calls `server` (a generated `XServiceServer`, or a router of them)
    /// in this process. What the network stack adds is not added: no
    /// service token, no balancing; use it where caller and agent share a
    /// process and a trust boundary (embedded mode, tests with fakes).
    pub fn in_process<S>(server: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: BoxCloneSyncService::new(server.map_err(|never| match never {})),
            label: "in-process",
        }
    }

    /// Whether calls stay in this process.
    pub fn is_in_process(&self) -> bool {
        self.label == "in-process"
    }
}

impl From<ServiceChannel> for Transport {
    fn from(channel: ServiceChannel) -> Self {
        Self {
            inner: BoxCloneSyncService::new(channel),
            label: "network",
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport").field("kind", &self.label).finish()
    }
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = <BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError> as Service<
        http::Request<Body>,
    >>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.inner.call(request)
    }
}
