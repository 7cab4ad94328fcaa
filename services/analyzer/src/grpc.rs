//! The gRPC adapter: request validation and conversion only.

use std::{path::PathBuf, sync::Arc};

use reporunner_error::ServiceError;
use reporunner_proto::agents::analyzer::v1::{
    AnalyzeRequest, AnalyzeResponse, ExportPlanRequest, ExportPlanResponse,
    analyzer_service_server::{AnalyzerService, AnalyzerServiceServer},
};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{Analyzer, AnalyzerError, ExportFormat};

/// Serves `reporunner.agents.analyzer.v1.AnalyzerService` over any [`Analyzer`].
#[derive(Debug)]
pub struct AnalyzerGrpc<A> {
    analyzer: Arc<A>,
}

impl<A: Analyzer> AnalyzerGrpc<A> {
    pub fn new(analyzer: Arc<A>) -> Self {
        Self { analyzer }
    }

    /// The tonic service, ready for a server.
    pub fn into_server(self) -> AnalyzerServiceServer<Self> {
        AnalyzerServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl<A: Analyzer> AnalyzerService for AnalyzerGrpc<A> {
    async fn analyze(&self, request: Request<AnalyzeRequest>) -> Result<Response<AnalyzeResponse>, Status> {
        let request = request.into_inner();
        if request.workspace_path.trim().is_empty() {
            return Err(AnalyzerError::InvalidPath(String::new(), "workspace_path is required").to_status());
        }
        let span = tracing::info_span!("analyze", workspace_id = %request.workspace_id);
        let mut plan = self
            .analyzer
            .analyze(PathBuf::from(&request.workspace_path), request.environment)
            .instrument(span)
            .await
            .map_err(|e| e.to_status())?;
        plan.workspace_id = request.workspace_id;
        Ok(Response::new(AnalyzeResponse { plan: Some(plan) }))
    }

    async fn export_plan(
        &self,
        request: Request<ExportPlanRequest>,
    ) -> Result<Response<ExportPlanResponse>, Status> {
        let request = request.into_inner();
        let format = ExportFormat::try_from(request.format).map_err(|e| e.to_status())?;
        let plan = request
            .plan
            .ok_or_else(|| AnalyzerError::MissingPlan.to_status())?;
        let file = self.analyzer.export(&plan, format).map_err(|e| e.to_status())?;
        Ok(Response::new(ExportPlanResponse {
            file_name: file.file_name,
            content: file.content,
        }))
    }
}
