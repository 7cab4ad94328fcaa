//! [`GrpcServer`]: one listener, any number of services, and the standard
//! health, reflection, metrics and shutdown behaviour around them.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::{StreamExt as _, wrappers::TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::Server,
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::Service;

use crate::{
    cut::Cuttable,
    decode::DecodeErrorLayer,
    metrics::GrpcMetricsLayer,
    tls::{Acceptor, TlsConfig, TlsError},
};

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Sets the health of the services of one server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl Health {
    /// Marks one service (by its full name) as serving or not.
    pub async fn set(&self, service: &str, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(service, status).await;
    }

    /// Marks every service of the server, and the server itself (the empty
    /// service name), as serving or not.
    pub async fn set_all(&self, serving: bool) {
        self.set("", serving).await;
        for service in &self.services {
            self.set(service, serving).await;
        }
    }

    /// The full names of the services this server hosts.
    pub fn services(&self) -> &[&'static str] {
        &self.services
    }
}

/// A tonic server for one or more Repo Runner services.
///
/// ```no_run
/// # async fn run(svc: impl tonic::server::NamedService + Clone + Send + Sync + 'static
/// #     + tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>,
/// #       Error = std::convert::Infallible, Future: Send>) {
/// use reporunner_server::{CancellationToken, GrpcServer};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let server = GrpcServer::new().add_service(svc);
/// server.serve(listener, CancellationToken::new()).await.unwrap();
/// # }
/// ```
#[derive(Debug)]
pub struct GrpcServer {
    routes: RoutesBuilder,
    health: Health,
    health_service: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    drain_grace: Duration,
    stop_timeout: Duration,
    tls: Option<TlsConfig>,
    health_listener: Option<TcpListener>,
    local_socket: Option<(
        tokio::net::UnixListener,
        std::sync::Arc<dyn crate::local::LocalCaller>,
    )>,
    reflection: bool,
    gateway: Option<std::sync::Arc<reporunner_gateway::Gateway>>,
}

impl Default for GrpcServer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServer {
    pub fn new() -> Self {
        let reporter = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        Self {
            routes: RoutesBuilder::default(),
            health: Health {
                reporter,
                services: Vec::new(),
            },
            health_service,
            drain_grace: Duration::from_millis(0),
            stop_timeout: Duration::from_secs(10),
            tls: None,
            health_listener: None,
            local_socket: None,
            reflection: true,
            gateway: None,
        }
    }

    /// Hosts `service` on this server; it is reported SERVING once the server
    /// starts.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: GrpcRoute + NamedService,
    {
        self.health.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// How long to keep serving after reporting NOT_SERVING on shutdown, so
    /// that clients watching health move away before connections close.
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = grace;
        self
    }

    /// How long in-flight calls may take to finish once the server stops
    /// accepting; long-lived streams (health watches) are cut after it.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Serves over TLS (mutual TLS when `client_ca` is set), reloading the
    /// certificate files while it runs. A config with nothing set keeps plain
    /// HTTP/2, so `settings.tls` can be passed through unconditionally.
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = config.is_enabled().then_some(config);
        self
    }

    /// Also serves `grpc.health.v1` alone, in plain text, on `listener`: for
    /// probes that cannot speak (m)TLS, such as the kubelet's gRPC probes.
    /// It reports the same states as the main listener and stops with it.
    pub fn health_listener(mut self, listener: TcpListener) -> Self {
        self.health_listener = Some(listener);
        self
    }

    /// Also serves every service of this server on the data directory's
    /// control socket (see [`crate::local`]): calls without a token of their
    /// own are made as `caller`. It stops with the server.
    pub fn local_socket(
        mut self,
        listener: tokio::net::UnixListener,
        caller: std::sync::Arc<dyn crate::local::LocalCaller>,
    ) -> Self {
        self.local_socket = Some((listener, caller));
        self
    }

    /// Serves no reflection: for internal listeners, whose services callers
    /// outside the mesh have no business discovering.
    pub fn without_reflection(mut self) -> Self {
        self.reflection = false;
        self
    }

    /// Also answers HTTP/1.1 and HTTP/2 requests that are not gRPC with
    /// `gateway` (`reporunner_gateway`): HTTP/JSON calls of the services it
    /// exposes, `/openapi.json` and the dashboard's files.
    pub fn gateway(mut self, gateway: std::sync::Arc<reporunner_gateway::Gateway>) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// The health handle of this server, for tests and for services that
    /// report their own readiness.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    fn routes(self) -> Result<(Routes, Health), ServeError> {
        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(reporunner_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        let mut reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(reporunner_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for name in &self.health.services {
            reflection = reflection.with_service_name(*name);
            reflection_alpha = reflection_alpha.with_service_name(*name);
        }
        let mut routes = self.routes;
        routes.add_service(self.health_service);
        if self.reflection {
            routes
                .add_service(reflection.build_v1()?)
                .add_service(reflection_alpha.build_v1alpha()?);
        }
        Ok((routes.routes(), self.health))
    }

    /// Serves on a free port of 127.0.0.1 in a task of its own until the
    /// returned token is cancelled (tests and in-process meshes): the
    /// address to dial, and the token.
    pub async fn spawn_on_loopback(self) -> std::io::Result<(SocketAddr, CancellationToken)> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = self.serve(listener, token).await {
                tracing::warn!(%addr, %err, "loopback grpc server failed");
            }
        });
        Ok((addr, shutdown))
    }

    /// Serves until `shutdown` is cancelled: then reports NOT_SERVING, waits
    /// the drain grace, stops accepting, and finishes in-flight calls.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let addr: Option<SocketAddr> = listener.local_addr().ok();
        let drain_grace = self.drain_grace;
        let stop_timeout = self.stop_timeout;
        let stopping = CancellationToken::new();
        // Ends the certificate watcher and the plain health listener
        // whichever way serve returns.
        let stopped = CancellationToken::new();
        let _stopped_guard = stopped.clone().drop_guard();
        let acceptor = self
            .tls
            .as_ref()
            .map(|config| Acceptor::start(config, stopped.clone()))
            .transpose()?;
        if let Some(listener) = self.health_listener.take() {
            let health_addr = listener.local_addr().ok();
            let server = Server::builder()
                .layer(DecodeErrorLayer)
                .add_service(self.health_service.clone())
                .serve_with_incoming(TcpListenerStream::new(listener));
            let stopped = stopped.clone();
            tracing::info!(addr = ?health_addr, "plain-text health listening");
            tokio::spawn(async move {
                tokio::select! {
                    _ = stopped.cancelled() => {}
                    result = server => if let Err(err) = result {
                        tracing::warn!(addr = ?health_addr, %err, "plain-text health listener failed");
                    },
                }
            });
        }
        let tls = match (&acceptor, self.tls.as_ref().and_then(|c| c.client_ca.as_ref())) {
            (None, _) => "off",
            (Some(_), None) => "tls",
            (Some(_), Some(_)) => "mtls",
        };
        let local_socket = self.local_socket.take();
        let gateway = self.gateway.take();
        let (routes, health) = self.routes()?;
        // The control socket stops accepting when the port does, and `serve`
        // returns only once its calls in flight are answered (or the stop
        // timeout passed): a caller's StopRun must not lose its answer to the
        // process exiting.
        let control_socket = local_socket.map(|(listener, caller)| {
            let socket =
                crate::local::serve_control_socket(listener, routes.clone(), caller, stopping.clone());
            tokio::spawn(async move {
                if let Err(err) = socket.await {
                    tracing::warn!(%err, "the control socket failed");
                }
            })
        });
        health.set_all(true).await;
        tracing::info!(?addr, services = ?health.services(), tls, "grpc server listening");

        let stop = {
            let health = health.clone();
            let stopping = stopping.clone();
            async move {
                shutdown.cancelled().await;
                health.set_all(false).await;
                if !drain_grace.is_zero() {
                    tokio::time::sleep(drain_grace).await;
                }
                tracing::info!(?addr, "grpc server stopping");
                stopping.cancel();
            }
        };
        let router = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            // Browsers and curl speak HTTP/1.1 to the gateway.
            .accept_http1(gateway.is_some())
            .trace_fn(crate::trace::server_span)
            // The gateway first: its calls go through the whole gRPC stack.
            .layer(reporunner_gateway::GatewayLayer::new(gateway))
            // Metrics outermost of the gRPC stack, so they count the rewritten code.
            .layer(GrpcMetricsLayer)
            .layer(DecodeErrorLayer)
            .add_routes(routes);
        // Cancelled once the stop timeout passed: every connection is cut.
        let cut = CancellationToken::new();
        let server = {
            let cut = cut.clone();
            async move {
                match acceptor {
                    Some(acceptor) => {
                        let incoming = acceptor
                            .incoming(listener)
                            .map(move |io| io.map(|io| Cuttable::new(io, &cut)));
                        router.serve_with_incoming_shutdown(incoming, stop).await
                    }
                    None => {
                        let incoming = TcpListenerStream::new(listener)
                            .map(move |io| io.map(|io| Cuttable::new(io, &cut)));
                        router.serve_with_incoming_shutdown(incoming, stop).await
                    }
                }
            }
        };
        let served = tokio::select! {
            result = server => result,
            _ = async { stopping.cancelled().await; tokio::time::sleep(stop_timeout).await } => {
                tracing::warn!(?addr, ?stop_timeout, "in-flight calls did not finish in time; closing");
                cut.cancel();
                Ok(())
            }
        };
        stopping.cancel();
        if let Some(mut socket) = control_socket
            && tokio::time::timeout(stop_timeout, &mut socket).await.is_err()
        {
            tracing::warn!(
                ?stop_timeout,
                "control socket calls did not finish in time; closing"
            );
            socket.abort();
        }
        served?;
        Ok(())
    }
}

/// A gRPC service as a server routes to it and as a caller in the same
/// process calls it: a generated `XServiceServer`, layered or not.
pub trait GrpcRoute:
    Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcRoute for S where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// `service` inside the layers a [`GrpcServer`] puts around what it serves
/// (request metrics outermost, then the decode-error rewrite), for callers
/// in the same process (`reporunner_client::Transport::in_process` in an
/// all-in-one node): such calls are counted and answered as over the
/// network.
pub fn served_in_process<S: GrpcRoute>(service: S) -> impl GrpcRoute {
    tower::ServiceBuilder::new()
        .map_response(|response: http::Response<crate::metrics::MeteredBody<Body>>| response.map(Body::new))
        .layer(GrpcMetricsLayer)
        .layer(DecodeErrorLayer)
        .service(service)
}
