//! [`Transport`]: what a generated client wraps, either a [`ServiceChannel`]
//! to the service's endpoints or the service's own server in this process.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use reporunner_identity::ServiceTokenSource;

use tonic::body::Body;
use tower::{Service, util::BoxCloneSyncService};

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
    pub fn in_process<S: reporunner_server::GrpcRoute>(server: S) -> Self {
        Self {
            inner: BoxCloneSyncService::new(Deadlined(server)),
            label: "in-process",
        }
    }

    /// Calls the server listening on the Unix socket at `path` (the data
    /// directory's control socket: `reporunner` commands talking to the
    /// process that owns the directory). One HTTP/2 connection, opened on
    /// the first call and again after it breaks; a call that sets no
    /// deadline gets [`IN_PROCESS_DEFAULT_DEADLINE`].
    pub fn unix_socket(path: impl Into<std::path::PathBuf>) -> Self {
        let path: Arc<std::path::Path> = Arc::from(path.into());
        let connector = tower::service_fn(move |_: http::Uri| {
            let path = Arc::clone(&path);
            async move {
                let stream = tokio::net::UnixStream::connect(&*path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        // The URI only names the :authority; the connector ignores it.
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector_lazy(connector);
        Self {
            inner: BoxCloneSyncService::new(Deadlined(channel)),
            label: "unix-socket",
        }
    }

    /// Whether calls stay in this process.
    pub fn is_in_process(&self) -> bool {
        self.label == "in-process"
    }

    /// Every call carries `identity`'s service token, as a
    /// [`ServiceChannel::with_identity`] channel's do: an agent served in
    /// this process behind its mesh check then answers exactly the callers
    /// it would answer over the network.
    pub fn with_identity(self, identity: Arc<ServiceTokenSource>) -> Self {
        Self {
            inner: BoxCloneSyncService::new(Identified {
                inner: self.inner,
                identity,
            }),
            label: self.label,
        }
    }
}

/// A transport whose calls carry a service token.
#[derive(Clone)]
struct Identified {
    inner: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>,
    identity: Arc<ServiceTokenSource>,
}

impl Service<http::Request<Body>> for Identified {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Err(status) = crate::channel::stamp_identity(&self.identity, request.headers_mut()) {
            return Box::pin(std::future::ready(Err(Box::new(status) as BoxError)));
        }
        Box::pin(self.inner.call(request))
    }
}

/// The deadline of an in-process call that sets none: the client stack's
/// default (`client.default_deadline`), so that no call waits forever.
pub const IN_PROCESS_DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A call under its `grpc-timeout` (else [`IN_PROCESS_DEFAULT_DEADLINE`],
/// which is then told to the server too, as the network stack does): past
/// it the call ends with DEADLINE_EXCEEDED. Wraps a server called in this
/// process, and the control socket's channel.
#[derive(Clone)]
struct Deadlined<S>(S);

impl<S> Service<http::Request<Body>> for Deadlined<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let given = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::channel::parse_grpc_timeout);
        if given.is_none()
            && let Ok(value) = format!("{}m", IN_PROCESS_DEFAULT_DEADLINE.as_millis()).parse()
        {
            request.headers_mut().insert("grpc-timeout", value);
        }
        let deadline = given.unwrap_or(IN_PROCESS_DEFAULT_DEADLINE);
        let call = self.0.call(request);
        Box::pin(async move {
            match tokio::time::timeout(deadline, call).await {
                Ok(response) => response.map_err(Into::into),
                Err(_) => Err(Box::new(tonic::Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    deadline.as_millis()
                ))) as BoxError),
            }
        })
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A server that never answers.
    #[derive(Clone)]
    struct Silent;

    impl Service<http::Request<Body>> for Silent {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Pending<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
            std::future::pending()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_in_process_call_without_a_deadline_gets_the_default_one() {
        let mut transport = Transport::in_process(Silent);
        let started = tokio::time::Instant::now();
        let error = transport
            .call(http::Request::new(Body::empty()))
            .await
            .expect_err("a silent server is given up on");
        assert_eq!(started.elapsed(), IN_PROCESS_DEFAULT_DEADLINE);
        let status = error.downcast::<tonic::Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }
}
