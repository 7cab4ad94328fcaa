//! [`MeshLayer`]: an agent's edge. Only allowed services get through.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{Status, server::NamedService};
use tower::{Layer, Service};

use crate::{MeshKey, SERVICE_HEADER, allowed_callers, may_call, token::Verifier};

/// The service that made a call, put into the request extensions by
/// [`MeshLayer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshCaller(pub String);

/// The calling service of `request`, when it came through [`MeshLayer`].
pub fn mesh_caller<T>(request: &tonic::Request<T>) -> Option<&str> {
    request.extensions().get::<MeshCaller>().map(|c| c.0.as_str())
}

/// See the crate docs. Cheap to clone.
#[derive(Clone)]
pub struct MeshLayer {
    verifier: Arc<Verifier>,
}

impl std::fmt::Debug for MeshLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshLayer").finish_non_exhaustive()
    }
}

impl MeshLayer {
    /// Accepts service tokens signed with `key`.
    pub fn new(key: &MeshKey) -> Self {
        Self {
            verifier: Arc::new(Verifier::new(key)),
        }
    }

    /// Who called `path` (`/package.Service/Method`) with `headers`, if the
    /// caller may: `None` for exempt paths (health checks).
    fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<MeshCaller>, Status> {
        if path.starts_with("/grpc.health.v1.") {
            return Ok(None);
        }
        let token = headers
            .get(SERVICE_HEADER)
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "agents accept only mesh services: the call carries no `{SERVICE_HEADER}` service token"
                ))
            })?
            .to_str()
            .map_err(|_| {
                Status::unauthenticated("agents accept only mesh services: the service token is not text")
            })?;
        let caller = self.verifier.verify(token).ok_or_else(|| {
            Status::unauthenticated(
                "agents accept only mesh services: the service token is invalid or expired",
            )
        })?;
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let service = parts.next().unwrap_or_default();
        let method = parts.next().unwrap_or_default();
        if !allowed_callers(service).contains(&caller.as_str()) {
            tracing::warn!(caller = %caller, service, "service call refused");
            return Err(Status::permission_denied(format!(
                "service `{caller}` may not call {service}"
            )));
        }
        if !may_call(&caller, service, method) {
            tracing::warn!(caller = %caller, service, method, "service call refused");
            return Err(Status::permission_denied(format!(
                "service `{caller}` may not call {service}/{method}"
            )));
        }
        Ok(Some(MeshCaller(caller)))
    }
}

impl<S> Layer<S> for MeshLayer {
    type Service = MeshGuarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MeshGuarded {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service behind [`MeshLayer`].
#[derive(Clone, Debug)]
pub struct MeshGuarded<S> {
    inner: S,
    layer: MeshLayer,
}

impl<S: NamedService> NamedService for MeshGuarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for MeshGuarded<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.layer.check(request.uri().path(), request.headers()) {
            Ok(caller) => {
                // The clone is not ready; swap so the ready one serves this call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Box::pin(inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}
