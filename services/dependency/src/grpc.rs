//! The gRPC adapter: conversion only.

use std::sync::Arc;

use reporunner_error::ServiceError as _;
use reporunner_proto::agents::dependency::v1::{
    InstallRequest, InstallResponse,
    dependency_service_server::{DependencyService, DependencyServiceServer},
};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};

use crate::Installer;

/// Serves `reporunner.agents.dependency.v1.DependencyService` over any
/// [`Installer`].
#[derive(Debug)]
pub struct DependencyGrpc<I> {
    installer: Arc<I>,
}

impl<I: Installer> DependencyGrpc<I> {
    pub fn new(installer: Arc<I>) -> Self {
        Self { installer }
    }

    pub fn into_server(self) -> DependencyServiceServer<Self> {
        DependencyServiceServer::new(self)
    }
}

type InstallStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<InstallResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<I: Installer> DependencyService for DependencyGrpc<I> {
    type InstallStream = InstallStream;

    async fn install(
        &self,
        request: Request<InstallRequest>,
    ) -> Result<Response<Self::InstallStream>, Status> {
        let stream = self
            .installer
            .install(request.into_inner())
            .map_err(|e| e.to_status())?;
        Ok(Response::new(Box::pin(stream.map(Ok))))
    }
}
