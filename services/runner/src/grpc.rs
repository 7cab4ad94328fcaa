//! The gRPC adapter: request validation and conversion only.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use reporunner_error::ServiceError;
use reporunner_proto::agents::runner::v1::{
    LogsRequest, LogsResponse, RestartPolicy, StartRequest, StartResponse, StatusRequest, StatusResponse,
    StopRequest, StopResponse,
    runner_service_server::{RunnerService, RunnerServiceServer},
};
use tonic::{Request, Response, Status};

use crate::{LogsSpec, Runner, RunnerError, StartSpec};

/// Serves `reporunner.agents.runner.v1.RunnerService` over any [`Runner`].
#[derive(Debug)]
pub struct RunnerGrpc<R> {
    runner: Arc<R>,
}

impl<R: Runner> RunnerGrpc<R> {
    pub fn new(runner: Arc<R>) -> Self {
        Self { runner }
    }

    /// The tonic service, ready for a server.
    pub fn into_server(self) -> RunnerServiceServer<Self> {
        RunnerServiceServer::new(self)
    }
}

fn invalid(message: &str) -> Status {
    RunnerError::invalid(message).to_status()
}

fn process_id(id: String) -> Result<String, Status> {
    if id.is_empty() {
        Err(invalid("process_id is required"))
    } else {
        Ok(id)
    }
}

#[tonic::async_trait]
impl<R: Runner> RunnerService for RunnerGrpc<R> {
    #[tracing::instrument(skip_all, fields(agent = "runner", rpc = "start", run_id = %request.get_ref().run_id))]
    async fn start(&self, request: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let request = request.into_inner();
        let Some(component) = request.component else {
            return Err(invalid("a start needs the component to run"));
        };
        let restart_policy = RestartPolicy::try_from(request.restart_policy)
            .map_err(|_| invalid("restart_policy is not one of NEVER, ON_FAILURE, ALWAYS"))?;
        let spec = StartSpec {
            run_id: request.run_id,
            workspace_path: request.workspace_path.into(),
            component,
            env: request.env.into_iter().collect(),
            limits: request.limits,
            restart_policy,
            max_restarts: request.max_restarts,
            bind_host: request.bind_host,
            owner_id: request.owner_id,
        };
        let status = self.runner.start(spec).await.map_err(|e| e.to_status())?;
        Ok(Response::new(StartResponse { status: Some(status) }))
    }

    #[tracing::instrument(skip_all, fields(agent = "runner", rpc = "stop", process_id = %request.get_ref().process_id))]
    async fn stop(&self, request: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        let request = request.into_inner();
        let id = process_id(request.process_id)?;
        let status = self
            .runner
            .stop(id, request.grace_seconds)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(StopResponse { status: Some(status) }))
    }

    #[tracing::instrument(skip_all, fields(agent = "runner", rpc = "status", process_id = %request.get_ref().process_id))]
    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let id = process_id(request.into_inner().process_id)?;
        let status = self.runner.status(id).await.map_err(|e| e.to_status())?;
        Ok(Response::new(StatusResponse { status: Some(status) }))
    }

    type LogsStream = Pin<Box<dyn Stream<Item = Result<LogsResponse, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(agent = "runner", rpc = "logs", process_id = %request.get_ref().process_id))]
    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let request = request.into_inner();
        let spec = LogsSpec {
            process_id: process_id(request.process_id)?,
            follow: request.follow,
            after_sequence: request.after_sequence,
        };
        let lines = self.runner.logs(spec).await.map_err(|e| e.to_status())?;
        Ok(Response::new(Box::pin(
            lines.map(|line| Ok(LogsResponse { line: Some(line) })),
        )))
    }
}
