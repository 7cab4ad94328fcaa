//! The control socket of a data directory: the public services of the
//! process that owns the directory, on a Unix socket inside it, for the
//! other `reporunner` commands of the same machine user.
//!
//! Who may call: only a peer with the socket's owner's uid (checked on every
//! connection with `SO_PEERCRED`) or root; the socket file is 0600 in a 0700
//! directory as well. Such a caller owns the data directory anyway (it can
//! read every database in it), so a call that carries no bearer token of its
//! own is made as the directory's local owner ([`LocalCaller`]); a call
//! that carries one is checked as on the public port.

use std::{
    future::Future,
    os::unix::fs::MetadataExt as _,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::{body::Body, service::Routes, transport::Server};
use tower::{Layer, Service};

use crate::{decode::DecodeErrorLayer, metrics::GrpcMetricsLayer};

/// The bearer token a call over the control socket gets when it brings none.
pub trait LocalCaller: Send + Sync + std::fmt::Debug + 'static {
    /// An access token of the local owner (cached by the implementation).
    fn bearer(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

/// Binds the control socket at `path` (a stale one, left by an owner that
/// died, is replaced: the caller holds the directory's lock) with mode 0600.
pub fn bind_control_socket(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves `routes` on `listener` until `stop` is cancelled, to peers of the
/// socket file's uid (or root) only, with calls that carry no token made as
/// `caller`.
pub(crate) async fn serve_control_socket(
    listener: UnixListener,
    routes: Routes,
    caller: Arc<dyn LocalCaller>,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let owner_uid = listener
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_pathname().and_then(|p| std::fs::metadata(p).ok()))
        .map(|meta| meta.uid());
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).filter(move |conn| {
        conn.as_ref()
            .map_or(true, |stream| peer_allowed(stream, owner_uid))
    });
    Server::builder()
        .layer(GrpcMetricsLayer)
        .layer(LocalCallerLayer { caller })
        .layer(DecodeErrorLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
}

/// Whether the peer of `stream` is the socket's owner or root.
fn peer_allowed(stream: &UnixStream, owner_uid: Option<u32>) -> bool {
    match (stream.peer_cred(), owner_uid) {
        (Ok(cred), Some(owner)) if cred.uid() == owner || cred.uid() == 0 => true,
        (cred, _) => {
            tracing::warn!(peer = ?cred.map(|c| c.uid()), "control socket: a peer of another user was refused");
            false
        }
    }
}

/// Adds the local owner's bearer token to calls that carry none.
#[derive(Clone)]
struct LocalCallerLayer {
    caller: Arc<dyn LocalCaller>,
}

impl<S> Layer<S> for LocalCallerLayer {
    type Service = LocalCallerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LocalCallerService {
            inner,
            caller: Arc::clone(&self.caller),
        }
    }
}

#[derive(Clone)]
pub(crate) struct LocalCallerService<S> {
    inner: S,
    caller: Arc<dyn LocalCaller>,
}

impl<S> Service<http::Request<Body>> for LocalCallerService<S>
where
    S: Service<http::Request<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The service that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let caller = Arc::clone(&self.caller);
        Box::pin(async move {
            if !request.headers().contains_key(http::header::AUTHORIZATION) {
                match caller.bearer().await {
                    Ok(token) => match format!("Bearer {token}").parse() {
                        Ok(value) => {
                            request.headers_mut().insert(http::header::AUTHORIZATION, value);
                        }
                        Err(_) => {
                            tracing::warn!("control socket: the local owner's token is not a header value")
                        }
                    },
                    // The call goes on without a token and is refused as
                    // unauthenticated, naming why below.
                    Err(err) => tracing::warn!(%err, "control socket: no token for the local owner"),
                }
            }
            inner.call(request).await
        })
    }
}
