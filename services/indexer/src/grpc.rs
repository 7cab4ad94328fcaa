//! The gRPC adapter: conversion only.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt as _};
use reporunner_error::ServiceError as _;
use reporunner_proto::index::v1::{
    DeleteIndexRequest, DeleteIndexResponse, IndexRepoRequest, IndexRepoResponse, IndexStatusRequest,
    IndexStatusResponse, SearchRequest, SearchResponse,
    index_service_server::{IndexService, IndexServiceServer},
};
use tonic::{Request, Response, Status};

use crate::Indexer;

/// Serves `reporunner.index.v1.IndexService` over any [`Indexer`].
#[derive(Debug)]
pub struct IndexerGrpc<I> {
    indexer: Arc<I>,
}

impl<I: Indexer> IndexerGrpc<I> {
    pub fn new(indexer: Arc<I>) -> Self {
        Self { indexer }
    }

    pub fn into_server(self) -> IndexServiceServer<Self> {
        IndexServiceServer::new(self)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<IndexRepoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<I: Indexer> IndexService for IndexerGrpc<I> {
    type IndexRepoStream = ResponseStream;

    async fn index_repo(
        &self,
        request: Request<IndexRepoRequest>,
    ) -> Result<Response<Self::IndexRepoStream>, Status> {
        let stream = self
            .indexer
            .index_repo(request.into_inner())
            .await
            .map_err(|e| e.to_status())?;
        let stream: ResponseStream = Box::pin(stream.map(|item| item.map_err(|e| e.to_status())));
        Ok(Response::new(stream))
    }

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        self.indexer
            .search(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn index_status(
        &self,
        request: Request<IndexStatusRequest>,
    ) -> Result<Response<IndexStatusResponse>, Status> {
        self.indexer
            .index_status(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn delete_index(
        &self,
        request: Request<DeleteIndexRequest>,
    ) -> Result<Response<DeleteIndexResponse>, Status> {
        self.indexer
            .delete_index(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }
}
