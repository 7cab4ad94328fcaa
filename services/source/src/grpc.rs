//! The gRPC adapter: request validation and conversion only.

use std::sync::Arc;

use futures::StreamExt;
use reporunner_error::ServiceError;
use reporunner_proto::agents::source::v1::{
    ArchiveFormat, FetchRequest, FetchResponse, UploadArchiveRequest, UploadArchiveResponse, fetch_request,
    source_service_server::{SourceService, SourceServiceServer},
    upload_archive_request::Part,
};
use tonic::{Request, Response, Status, Streaming};

use crate::{FetchSpec, SourceAgent, SourceError, SourceSpec, UploadSpec};

/// Serves `reporunner.agents.source.v1.SourceService` over any [`SourceAgent`].
#[derive(Debug)]
pub struct SourceGrpc<S> {
    agent: Arc<S>,
}

impl<S: SourceAgent> SourceGrpc<S> {
    pub fn new(agent: Arc<S>) -> Self {
        Self { agent }
    }

    /// The tonic service, ready for a server.
    pub fn into_server(self) -> SourceServiceServer<Self> {
        SourceServiceServer::new(self)
    }
}

fn invalid(message: &str) -> Status {
    SourceError::invalid(message).to_status()
}

#[tonic::async_trait]
impl<S: SourceAgent> SourceService for SourceGrpc<S> {
    #[tracing::instrument(skip_all, fields(agent = "source", rpc = "fetch", user_id = %request.get_ref().owner_id))]
    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let request = request.into_inner();
        let source = match request.source {
            Some(fetch_request::Source::Git(git)) => SourceSpec::Git {
                url: git.url,
                reference: git.r#ref,
            },
            Some(fetch_request::Source::Local(local)) => SourceSpec::Local {
                path: local.path.into(),
            },
            None => return Err(invalid("a fetch needs a source: git or local")),
        };
        let spec = FetchSpec {
            owner_id: request.owner_id,
            source,
            limits: request.limits,
        };
        let fetched = self.agent.fetch(spec).await.map_err(|e| e.to_status())?;
        Ok(Response::new(FetchResponse {
            workspace: Some(fetched.workspace),
            reused: fetched.reused,
        }))
    }

    #[tracing::instrument(skip_all, fields(agent = "source", rpc = "upload_archive", user_id = tracing::field::Empty))]
    async fn upload_archive(
        &self,
        request: Request<Streaming<UploadArchiveRequest>>,
    ) -> Result<Response<UploadArchiveResponse>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(UploadArchiveRequest {
                part: Some(Part::Header(header)),
            }) => header,
            Some(_) => return Err(invalid("the first message of an upload must be the header")),
            None => {
                return Err(invalid(
                    "the upload is empty; the first message must be the header",
                ));
            }
        };
        tracing::Span::current().record("user_id", header.owner_id.as_str());
        let format = ArchiveFormat::try_from(header.format)
            .map_err(|_| invalid("the archive format is not one of tar, tar.gz, zip"))?;
        let spec = UploadSpec {
            owner_id: header.owner_id,
            format,
            file_name: header.file_name,
            limits: header.limits,
        };
        let chunks = stream.map(|message| match message {
            Ok(UploadArchiveRequest {
                part: Some(Part::Chunk(chunk)),
            }) => Ok(chunk),
            Ok(UploadArchiveRequest {
                part: Some(Part::Header(_)),
            }) => Err(SourceError::invalid(
                "an upload carries exactly one header, in its first message",
            )),
            Ok(UploadArchiveRequest { part: None }) => {
                Err(SourceError::invalid("an upload message is empty"))
            }
            Err(status) => Err(SourceError::UploadAborted(status.message().to_owned())),
        });
        let fetched = self.agent.upload(spec, chunks).await.map_err(|e| e.to_status())?;
        Ok(Response::new(UploadArchiveResponse {
            workspace: Some(fetched.workspace),
            reused: fetched.reused,
        }))
    }
}
