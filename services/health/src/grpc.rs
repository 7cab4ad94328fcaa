//! The gRPC adapter: conversion only.

use std::sync::Arc;

use reporunner_error::ServiceError as _;
use reporunner_proto::agents::health::v1::{
    ProbeRequest, ProbeResponse, WatchRequest, WatchResponse,
    health_service_server::{HealthService, HealthServiceServer},
};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::Health;

/// Serves `reporunner.agents.health.v1.HealthService` over any [`Health`].
#[derive(Debug)]
pub struct HealthGrpc<H> {
    health: Arc<H>,
}

impl<H: Health> HealthGrpc<H> {
    pub fn new(health: Arc<H>) -> Self {
        Self { health }
    }

    pub fn into_server(self) -> HealthServiceServer<Self> {
        HealthServiceServer::new(self)
    }
}

type WatchStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<H: Health> HealthService for HealthGrpc<H> {
    async fn probe(&self, request: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let result = self
            .health
            .probe(&request.into_inner().probes)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(ProbeResponse { result: Some(result) }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let stream: ReceiverStream<WatchResponse> = self
            .health
            .watch(request.into_inner())
            .map_err(|e| e.to_status())?;
        Ok(Response::new(Box::pin(stream.map(Ok))))
    }
}
