//! The gRPC adapter: conversion only.

use std::sync::Arc;

use reporunner_error::ServiceError as _;
use reporunner_proto::agents::provisioner::v1::{
    ProvisionRequest, ProvisionResponse, ReleaseRequest, ReleaseResponse,
    provisioner_service_server::{ProvisionerService, ProvisionerServiceServer},
};
use tonic::{Request, Response, Status};

use crate::Provisioner;

/// Serves `reporunner.agents.provisioner.v1.ProvisionerService` over any
/// [`Provisioner`].
#[derive(Debug)]
pub struct ProvisionerGrpc<P> {
    provisioner: Arc<P>,
}

impl<P: Provisioner> ProvisionerGrpc<P> {
    pub fn new(provisioner: Arc<P>) -> Self {
        Self { provisioner }
    }

    pub fn into_server(self) -> ProvisionerServiceServer<Self> {
        ProvisionerServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl<P: Provisioner> ProvisionerService for ProvisionerGrpc<P> {
    async fn provision(
        &self,
        request: Request<ProvisionRequest>,
    ) -> Result<Response<ProvisionResponse>, Status> {
        self.provisioner
            .provision(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<ReleaseResponse>, Status> {
        let request = request.into_inner();
        let released = self
            .provisioner
            .release(&request.run_id, &request.resource_ids)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(ReleaseResponse { released }))
    }
}
