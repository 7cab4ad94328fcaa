use reporunner_client::ServiceChannel;
use reporunner_proto::{
    agents::env_detector::v1::{DetectRequest, env_detector_service_client::EnvDetectorServiceClient},
    common::v1::{Environment, IndexMode, Platform, Recommendations},
};

use crate::{OrchestratorConfig, OrchestratorError, Result};

/// Channels to the agents the orchestrator calls.
#[derive(Clone, Debug)]
pub struct Agents {
    pub env_detector: ServiceChannel,
}

/// The orchestrator's domain.
pub trait Orchestrator: Send + Sync + 'static {
    /// The host as the env-detector sees it.
    fn environment(
        &self,
        platform_override: Platform,
        skip_registries: bool,
        refresh: bool,
    ) -> impl Future<Output = Result<Environment>> + Send;

    /// What the host can afford, and the index modes it allows.
    fn recommendations(
        &self,
        platform_override: Platform,
    ) -> impl Future<Output = Result<(Recommendations, Vec<IndexMode>)>> + Send;
}

/// The orchestrator over real agent channels.
#[derive(Clone, Debug)]
pub struct OrchestratorImpl {
    config: OrchestratorConfig,
    agents: Agents,
}

const ENV_DETECTOR: &str = "env-detector";

impl OrchestratorImpl {
    pub fn new(config: OrchestratorConfig, agents: Agents) -> Self {
        Self { config, agents }
    }

    async fn detect(&self, request: DetectRequest) -> Result<(Environment, Recommendations)> {
        let mut client = EnvDetectorServiceClient::new(self.agents.env_detector.clone());
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.config.detect_deadline());
        let response = client
            .detect(request)
            .await
            .map_err(|status| OrchestratorError::from_agent(ENV_DETECTOR, status))?;
        let response = response.into_inner();
        let environment = response.environment.ok_or(OrchestratorError::AgentIncomplete {
            agent: ENV_DETECTOR,
            what: "environment",
        })?;
        let recommendations = response
            .recommendations
            .ok_or(OrchestratorError::AgentIncomplete {
                agent: ENV_DETECTOR,
                what: "recommendations",
            })?;
        Ok((environment, recommendations))
    }
}

/// The index modes this host supports. The caller's tier narrows this further
/// once the auth service is in the mesh.
pub(crate) fn host_index_modes(recommendations: &Recommendations) -> Vec<IndexMode> {
    if recommendations.vector_index {
        vec![IndexMode::Text, IndexMode::Vector, IndexMode::Hybrid]
    } else {
        vec![IndexMode::Text]
    }
}

impl Orchestrator for OrchestratorImpl {
    async fn environment(
        &self,
        platform_override: Platform,
        skip_registries: bool,
        refresh: bool,
    ) -> Result<Environment> {
        let request = DetectRequest {
            platform_override: platform_override as i32,
            skip_registries,
            refresh,
        };
        Ok(self.detect(request).await?.0)
    }

    async fn recommendations(
        &self,
        platform_override: Platform,
    ) -> Result<(Recommendations, Vec<IndexMode>)> {
        let request = DetectRequest {
            platform_override: platform_override as i32,
            ..Default::default()
        };
        let (_, recommendations) = self.detect(request).await?;
        let modes = host_index_modes(&recommendations);
        Ok((recommendations, modes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_modes_only_when_recommended() {
        let mut rec = Recommendations::default();
        assert_eq!(host_index_modes(&rec), vec![IndexMode::Text]);
        rec.vector_index = true;
        assert_eq!(
            host_index_modes(&rec),
            vec![IndexMode::Text, IndexMode::Vector, IndexMode::Hybrid]
        );
    }
}
