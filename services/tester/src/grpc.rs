//! The gRPC adapter: conversion only.

use std::sync::Arc;

use reporunner_error::ServiceError as _;
use reporunner_proto::agents::tester::v1::{
    RunTestsRequest, RunTestsResponse,
    tester_service_server::{TesterService, TesterServiceServer},
};
use tonic::{Request, Response, Status};

use crate::{TestSpec, Tester};

/// Serves `reporunner.agents.tester.v1.TesterService` over any [`Tester`].
#[derive(Debug)]
pub struct TesterGrpc<T> {
    tester: Arc<T>,
}

impl<T: Tester> TesterGrpc<T> {
    pub fn new(tester: Arc<T>) -> Self {
        Self { tester }
    }

    pub fn into_server(self) -> TesterServiceServer<Self> {
        TesterServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl<T: Tester> TesterService for TesterGrpc<T> {
    async fn run_tests(
        &self,
        request: Request<RunTestsRequest>,
    ) -> Result<Response<RunTestsResponse>, Status> {
        let request = request.into_inner();
        let component = request
            .component
            .ok_or_else(|| Status::invalid_argument("component is required"))?;
        let spec = TestSpec {
            run_id: request.run_id,
            workspace_path: request.workspace_path.into(),
            component,
            env: request.env.into_iter().collect(),
            timeout_seconds: request.timeout_seconds,
            owner_id: request.owner_id,
            limits: request.limits.unwrap_or_default(),
        };
        let span = tracing::info_span!("run_tests", run_id = %spec.run_id, component = %spec.component.name);
        let response = tracing::Instrument::instrument(self.tester.run_tests(spec), span)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(response))
    }
}
