//! The gRPC adapter of the orchestrator: conversion only.

use std::{pin::Pin, sync::Arc};

use reporunner_error::ServiceError;
use reporunner_proto::orchestrator::v1::{
    self as pb,
    orchestrator_service_server::{OrchestratorService, OrchestratorServiceServer},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{Orchestrator, OrchestratorError};

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

    pub fn into_server(self) -> OrchestratorServiceServer<Self> {
        OrchestratorServiceServer::new(self)
    }
}

fn not_served(rpc: &'static str, feature: &'static str) -> Status {
    OrchestratorError::NotServed { rpc, feature }.to_status()
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
        _request: Request<pb::CreateRunRequest>,
    ) -> Result<Response<pb::CreateRunResponse>, Status> {
        Err(not_served("CreateRun", "run pipeline"))
    }

    async fn get_run(
        &self,
        _request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        Err(not_served("GetRun", "run pipeline"))
    }

    async fn list_runs(
        &self,
        _request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        Err(not_served("ListRuns", "run pipeline"))
    }

    async fn watch_run(
        &self,
        _request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        Err(not_served("WatchRun", "run pipeline"))
    }

    async fn stop_run(
        &self,
        _request: Request<pb::StopRunRequest>,
    ) -> Result<Response<pb::StopRunResponse>, Status> {
        Err(not_served("StopRun", "run pipeline"))
    }

    async fn get_run_logs(
        &self,
        _request: Request<pb::GetRunLogsRequest>,
    ) -> Result<Response<Self::GetRunLogsStream>, Status> {
        Err(not_served("GetRunLogs", "run pipeline"))
    }

    async fn index_workspace(
        &self,
        _request: Request<pb::IndexWorkspaceRequest>,
    ) -> Result<Response<Self::IndexWorkspaceStream>, Status> {
        Err(not_served("IndexWorkspace", "indexing service"))
    }

    async fn search(
        &self,
        _request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        Err(not_served("Search", "indexing service"))
    }
}
