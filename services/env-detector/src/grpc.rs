//! The gRPC adapter: request validation and conversion only.

use std::sync::Arc;

use reporunner_error::ServiceError;
use reporunner_proto::agents::env_detector::v1::{
    DetectRequest, DetectResponse,
    env_detector_service_server::{EnvDetectorService, EnvDetectorServiceServer},
};
use tonic::{Request, Response, Status};

use crate::{DetectOptions, EnvDetector, platform::parse_platform_override};

/// Serves `reporunner.agents.env_detector.v1.EnvDetectorService` over any
/// [`EnvDetector`].
#[derive(Debug)]
pub struct EnvDetectorGrpc<D> {
    detector: Arc<D>,
}

impl<D: EnvDetector> EnvDetectorGrpc<D> {
    pub fn new(detector: Arc<D>) -> Self {
        Self { detector }
    }

    /// The tonic service, ready for a server.
    pub fn into_server(self) -> EnvDetectorServiceServer<Self> {
        EnvDetectorServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl<D: EnvDetector> EnvDetectorService for EnvDetectorGrpc<D> {
    async fn detect(&self, request: Request<DetectRequest>) -> Result<Response<DetectResponse>, Status> {
        let request = request.into_inner();
        let options = DetectOptions {
            platform_override: parse_platform_override(request.platform_override)
                .map_err(|e| e.to_status())?,
            skip_registries: request.skip_registries,
            refresh: request.refresh,
        };
        let (environment, recommendations) =
            self.detector.detect(options).await.map_err(|e| e.to_status())?;
        Ok(Response::new(DetectResponse {
            environment: Some(environment),
            recommendations: Some(recommendations),
        }))
    }
}
