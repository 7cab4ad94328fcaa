//! The gRPC adapter of the orchestrator: conversion only.

use std::{pin::Pin, sync::Arc};

use reporunner_authn::authorized;
use reporunner_error::ServiceError;
use reporunner_proto::orchestrator::v1::{
    self as pb,
    orchestrator_service_server::{OrchestratorService, OrchestratorServiceServer},
};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use crate::Orchestrator;

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves `reporunner.orchestrator.v1.OrchestratorService` over any [`Orchestrator`].
#[derive(Debug)]
pub struct OrchestratorGrpc<O> {
    inner: Arc<O>,
}

impl<O: Orchestrator> OrchestratorGrpc<O> {
    pub fn new(inner: Arc<O>) -> Self {
        Self { inner }
    }

    /// The tonic server; a CreateRun may carry an uploaded archive, so its
    /// messages may be that much larger than tonic's 4 MiB default.
    pub fn into_server(self) -> OrchestratorServiceServer<Self> {
        OrchestratorServiceServer::new(self)
            .max_decoding_message_size(crate::service::MAX_UPLOAD_BYTES + (1 << 20))
    }
}

fn platform(value: i32) -> Result<reporunner_proto::common::v1::Platform, Status> {
    reporunner_proto::common::v1::Platform::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("platform_override {value} is not a known Platform")))
}

#[tonic::async_trait]
impl<O: Orchestrator> OrchestratorService for OrchestratorGrpc<O> {
    type WatchRunStream = EventStream<pb::WatchRunResponse>;
    type GetRunLogsStream = EventStream<pb::GetRunLogsResponse>;
    type IndexWorkspaceStream = EventStream<pb::IndexWorkspaceResponse>;

    async fn get_environment(
        &self,
        request: Request<pb::GetEnvironmentRequest>,
    ) -> Result<Response<pb::GetEnvironmentResponse>, Status> {
        let request = request.into_inner();
        let environment = self
            .inner
            .environment(
                platform(request.platform_override)?,
                request.skip_registries,
                request.refresh,
            )
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetEnvironmentResponse {
            environment: Some(environment),
        }))
    }

    async fn get_recommendations(
        &self,
        request: Request<pb::GetRecommendationsRequest>,
    ) -> Result<Response<pb::GetRecommendationsResponse>, Status> {
        let request = request.into_inner();
        let (recommendations, modes) = self
            .inner
            .recommendations(platform(request.platform_override)?)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetRecommendationsResponse {
            recommendations: Some(recommendations),
            allowed_index_modes: modes.into_iter().map(|m| m as i32).collect(),
        }))
    }

    async fn create_run(
        &self,
        request: Request<pb::CreateRunRequest>,
    ) -> Result<Response<pb::CreateRunResponse>, Status> {
        let caller = authorized(&request)?.clone();
        let run = self
            .inner
            .create_run(&caller, request.into_inner())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::CreateRunResponse { run: Some(run) }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        let caller = authorized(&request)?.principal.clone();
        let run = self
            .inner
            .get_run(&caller, &request.get_ref().run_id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetRunResponse { run: Some(run) }))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let caller = authorized(&request)?.principal.clone();
        let (runs, next_page_token) = self
            .inner
            .list_runs(&caller, request.into_inner())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListRunsResponse {
            runs,
            next_page_token,
        }))
    }

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let caller = authorized(&request)?.principal.clone();
        let request = request.into_inner();
        let events = self
            .inner
            .watch_run(
                &caller,
                &request.run_id,
                request.after_sequence,
                request.without_logs,
            )
            .await
            .map_err(|e| e.to_status())?;
        let stream = events.map(|event| {
            event
                .map(|event| pb::WatchRunResponse { event: Some(event) })
                .map_err(|e| e.to_status())
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn stop_run(
        &self,
        request: Request<pb::StopRunRequest>,
    ) -> Result<Response<pb::StopRunResponse>, Status> {
        let caller = authorized(&request)?.principal.clone();
        let run = self
            .inner
            .stop_run(&caller, &request.get_ref().run_id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::StopRunResponse { run: Some(run) }))
    }

    async fn get_run_logs(
        &self,
        request: Request<pb::GetRunLogsRequest>,
    ) -> Result<Response<Self::GetRunLogsStream>, Status> {
        let caller = authorized(&request)?.principal.clone();
        let lines = self
            .inner
            .run_logs(&caller, request.into_inner())
            .await
            .map_err(|e| e.to_status())?;
        let stream = lines.map(|line| {
            line.map(|line| pb::GetRunLogsResponse { line: Some(line) })
                .map_err(|e| e.to_status())
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn index_workspace(
        &self,
        request: Request<pb::IndexWorkspaceRequest>,
    ) -> Result<Response<Self::IndexWorkspaceStream>, Status> {
        let caller = authorized(&request)?.clone();
        let progress = self
            .inner
            .index_workspace(&caller, request.into_inner())
            .await
            .map_err(|e| e.to_status())?;
        let stream = progress.map(|message| message.map_err(|e| e.to_status()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let caller = authorized(&request)?.clone();
        self.inner
            .search(&caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }
}
