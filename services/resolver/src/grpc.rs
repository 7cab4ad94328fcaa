//! The gRPC adapter: conversion only.

use std::sync::Arc;

use reporunner_error::ServiceError as _;
use reporunner_proto::agents::resolver::v1::{
    DiagnoseRequest, DiagnoseResponse,
    resolver_service_server::{ResolverService, ResolverServiceServer},
};
use tonic::{Request, Response, Status};

use crate::Resolver;

/// Serves `reporunner.agents.resolver.v1.ResolverService` over any [`Resolver`].
#[derive(Debug)]
pub struct ResolverGrpc<R> {
    resolver: Arc<R>,
}

impl<R: Resolver> ResolverGrpc<R> {
    pub fn new(resolver: Arc<R>) -> Self {
        Self { resolver }
    }

    pub fn into_server(self) -> ResolverServiceServer<Self> {
        ResolverServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl<R: Resolver> ResolverService for ResolverGrpc<R> {
    async fn diagnose(
        &self,
        request: Request<DiagnoseRequest>,
    ) -> Result<Response<DiagnoseResponse>, Status> {
        let response = self
            .resolver
            .diagnose(request.into_inner())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(response))
    }
}
