//! Indexing and search through the indexer service
//! (`reporunner.index.v1.IndexService`), under the caller's tier policy.
//!
//! The mode that serves is decided here, before the indexer is asked, by
//! [`reporunner_tier::policy::choose_mode`] from the caller's tier policy,
//! the tier table, the env-detector's recommendation and whether it sees an
//! embedding model installed. When the indexer still lacks the model asked
//! for (another name, or a model directory the env-detector does not see),
//! indexing falls back to text with the indexer's own words as the reason.
//!
//! Indexes belong to the caller: `owner_id` is the caller's user id, and the
//! workspace id becomes the indexer's plain-name form (`sha256-<hex>`).

use std::time::Duration;

use reporunner_client::Transport;
use reporunner_proto::{
    auth::v1::TierPolicy,
    common::v1::{IndexMode, Workspace},
    index::v1::{
        IndexProgress, IndexRepoRequest, IndexRepoResponse, IndexStatusRequest, IndexStatusResponse,
        SearchRequest as IndexSearchRequest, SearchResponse as IndexSearchResponse,
        index_service_client::IndexServiceClient,
    },
    orchestrator::v1::IndexWorkspaceResponse,
};
use reporunner_tier::{
    TierError,
    policy::{ModeChoice, ModeInputs, choose_mode},
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};

use crate::{OrchestratorConfig, OrchestratorError, Result};

pub(crate) use crate::run::step::INDEXER;

/// A stream of IndexWorkspace messages.
pub type IndexStream = ReceiverStream<Result<IndexWorkspaceResponse>>;

/// The indexer's name for a workspace: `sha256:<hex>` → `sha256-<hex>`.
pub(crate) fn index_id(workspace_id: &str) -> String {
    workspace_id.replace(':', "-")
}

/// `value` as an [`IndexMode`], INVALID_ARGUMENT naming `field` otherwise.
pub(crate) fn parse_mode(value: i32, field: &str) -> Result<IndexMode> {
    IndexMode::try_from(value)
        .map_err(|_| OrchestratorError::InvalidArgument(format!("{field} {value} is not a known IndexMode")))
}

/// The indexes IndexRepo builds to serve `mode`.
pub(crate) fn modes_for(mode: IndexMode) -> Vec<i32> {
    match mode {
        IndexMode::Unspecified | IndexMode::Text => vec![IndexMode::Text as i32],
        IndexMode::Vector | IndexMode::Hybrid => vec![
            IndexMode::Text as i32,
            IndexMode::Vector as i32,
            IndexMode::Hybrid as i32,
        ],
    }
}

/// What decides the mode, gathered by the orchestrator.
pub(crate) struct Decision<'a> {
    pub requested: IndexMode,
    pub policy: &'a TierPolicy,
    pub tiers: &'a [TierPolicy],
    pub recommended: bool,
    pub model_present: bool,
    pub strict: bool,
}

/// The served mode and why it differs; PERMISSION_DENIED when `strict` and
/// the tier lacks the mode.
pub(crate) fn decide(decision: &Decision<'_>) -> Result<ModeChoice> {
    choose_mode(ModeInputs {
        requested: decision.requested,
        policy: decision.policy,
        tiers: decision.tiers,
        env_recommends_vector: decision.recommended,
        model_present: decision.model_present,
        strict: decision.strict,
    })
    .map_err(policy_error)
}

/// What the tier policy refuses, as the orchestrator's error: every variant
/// named, so a new refusal cannot pass for the caller's mistake unnoticed.
fn policy_error(error: TierError) -> OrchestratorError {
    match error {
        TierError::PermissionDenied(message) => OrchestratorError::PermissionDenied(message),
    }
}

/// A failed indexer call: transport trouble is the agent's (UNAVAILABLE,
/// DEADLINE_EXCEEDED); anything else keeps the indexer's code, so its
/// internal failures stay INTERNAL and its refusals stay the caller's.
fn indexer_error(status: tonic::Status) -> OrchestratorError {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            OrchestratorError::from_agent(INDEXER, status)
        }
        Code::Ok
        | Code::Unknown
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss
        | Code::Unauthenticated => OrchestratorError::Indexer(Box::new(status)),
    }
}

/// Whether a refusal of IndexRepo means the embedding model is missing.
fn model_missing(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound && status.message().contains("model")
}

/// One IndexRepo job: where, which mode, which model.
#[derive(Clone, Debug, Default)]
pub struct IndexJob {
    pub owner_id: String,
    pub workspace: Workspace,
    /// What the tier policy decided.
    pub mode: IndexMode,
    pub fallback_reason: String,
    pub model: String,
}

impl IndexJob {
    fn request(&self, mode: IndexMode) -> IndexRepoRequest {
        IndexRepoRequest {
            owner_id: self.owner_id.clone(),
            workspace_id: index_id(&self.workspace.id),
            workspace_path: self.workspace.path.clone(),
            modes: modes_for(mode),
            model: if mode == IndexMode::Text {
                String::new()
            } else {
                self.model.clone()
            },
        }
    }

    /// Starts IndexRepo; when the model is missing at the indexer, starts a
    /// text-only pass instead and says why. Returns the stream and the mode
    /// it builds.
    async fn start(
        &self,
        indexer: &Transport,
        deadline: Duration,
    ) -> Result<(tonic::Streaming<IndexRepoResponse>, ModeChoice)> {
        let call = |mode: IndexMode| {
            let mut request = tonic::Request::new(self.request(mode));
            request.set_timeout(deadline);
            let mut client = IndexServiceClient::new(indexer.clone());
            async move { client.index_repo(request).await }
        };
        match call(self.mode).await {
            Ok(response) => Ok((
                response.into_inner(),
                ModeChoice {
                    mode: self.mode,
                    fallback_reason: self.fallback_reason.clone(),
                },
            )),
            Err(status) if self.mode != IndexMode::Text && model_missing(&status) => {
                let reason = format!("{}; indexed for text search only", status.message());
                let response = call(IndexMode::Text).await.map_err(indexer_error)?;
                Ok((
                    response.into_inner(),
                    ModeChoice {
                        mode: IndexMode::Text,
                        fallback_reason: reason,
                    },
                ))
            }
            Err(status) => Err(indexer_error(status)),
        }
    }

    /// Indexes, relaying at most `max_messages` progress messages into a
    /// stream; the whole call is bounded by `deadline`.
    pub async fn stream(self, indexer: Transport, config: &OrchestratorConfig) -> Result<IndexStream> {
        let deadline = config.index_deadline();
        let max_messages = config.max_index_messages.max(1);
        let (mut upstream, choice) = self.start(&indexer, deadline).await?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + deadline;
            let mut relayed = 0usize;
            loop {
                let item = tokio::select! {
                    () = tx.closed() => return,
                    item = tokio::time::timeout_at(until, upstream.next()) => item,
                };
                let message = match item {
                    Err(_) => Err(OrchestratorError::AgentDeadline {
                        agent: INDEXER,
                        detail: format!("indexing did not finish within {} ms", deadline.as_millis()),
                    }),
                    Ok(None) => Err(OrchestratorError::AgentIncomplete {
                        agent: INDEXER,
                        what: "the final progress message",
                    }),
                    Ok(Some(Err(status))) => Err(indexer_error(status)),
                    Ok(Some(Ok(response))) => Ok(IndexWorkspaceResponse {
                        progress: response.progress,
                        done: response.done,
                        mode: choice.mode as i32,
                        fallback_reason: choice.fallback_reason.clone(),
                        modes: response.modes,
                        model: response.model,
                    }),
                };
                let end = !matches!(&message, Ok(m) if !m.done);
                relayed += 1;
                // Past the bound only the last message is relayed.
                let relay = end || relayed <= max_messages;
                if relay && tx.send(message).await.is_err() {
                    return;
                }
                if end {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// Asks the indexer whether the workspace has an index, and of which kinds.
pub(crate) async fn status(
    indexer: &Transport,
    deadline: Duration,
    owner_id: &str,
    workspace_id: &str,
) -> Result<IndexStatusResponse> {
    let mut request = tonic::Request::new(IndexStatusRequest {
        owner_id: owner_id.to_owned(),
        workspace_id: index_id(workspace_id),
    });
    request.set_timeout(deadline);
    IndexServiceClient::new(indexer.clone())
        .index_status(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(indexer_error)
}

/// Searches with the decided mode; the indexer may narrow it further (an
/// index built for text only) and says why.
pub(crate) async fn search(
    indexer: &Transport,
    deadline: Duration,
    request: IndexSearchRequest,
    choice: ModeChoice,
) -> Result<(IndexSearchResponse, ModeChoice)> {
    let mut call = tonic::Request::new(IndexSearchRequest {
        workspace_id: index_id(&request.workspace_id),
        mode: choice.mode as i32,
        ..request
    });
    call.set_timeout(deadline);
    let response = IndexServiceClient::new(indexer.clone())
        .search(call)
        .await
        .map_err(indexer_error)?
        .into_inner();
    let served = IndexMode::try_from(response.mode).unwrap_or(IndexMode::Text);
    let reason = match (
        choice.fallback_reason.is_empty(),
        response.fallback_reason.is_empty(),
    ) {
        (_, true) => choice.fallback_reason,
        (true, false) => response.fallback_reason.clone(),
        (false, false) => format!("{}; {}", choice.fallback_reason, response.fallback_reason),
    };
    Ok((
        response,
        ModeChoice {
            mode: served,
            fallback_reason: reason,
        },
    ))
}

/// The progress in words, for the index step's detail.
pub(crate) fn progress_detail(progress: &IndexProgress, mode: IndexMode, model: &str) -> String {
    let mut detail = format!(
        "{} file(s) indexed, {} unchanged, {} removed, {} chunk(s)",
        progress.files_indexed, progress.files_unchanged, progress.files_removed, progress.chunks
    );
    if mode != IndexMode::Text {
        detail.push_str(&format!(", {} embedded with {model}", progress.chunks_embedded));
    }
    detail.push_str(&format!(
        " ({})",
        match mode {
            IndexMode::Unspecified | IndexMode::Text => "text",
            IndexMode::Vector => "text and vectors",
            IndexMode::Hybrid => "text and vectors, hybrid",
        }
    ));
    detail
}

#[cfg(test)]
mod tests {
    use reporunner_error::ServiceError as _;
    use reporunner_proto::common::v1::Tier;

    use super::*;

    #[test]
    fn policy_refusals_and_indexer_failures_keep_their_class() {
        let free = TierPolicy {
            tier: Tier::Free as i32,
            index_modes: vec![IndexMode::Text as i32],
            ..TierPolicy::default()
        };
        let advanced = TierPolicy {
            tier: Tier::Advanced as i32,
            index_modes: vec![IndexMode::Text as i32, IndexMode::Vector as i32],
            ..TierPolicy::default()
        };
        let tiers = [free.clone(), advanced];
        let denied = decide(&Decision {
            requested: IndexMode::Vector,
            policy: &free,
            tiers: &tiers,
            recommended: true,
            model_present: true,
            strict: true,
        })
        .unwrap_err()
        .to_status();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("Advanced tier"), "{}", denied.message());
        assert_eq!(
            policy_error(TierError::PermissionDenied("no".into()))
                .to_status()
                .code(),
            tonic::Code::PermissionDenied
        );

        let internal = indexer_error(tonic::Status::internal("lmdb: MDB_CORRUPTED at /data/x"));
        let status = internal.to_status();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("/data/x"), "{}", status.message());
        assert_eq!(
            indexer_error(tonic::Status::unavailable("connection refused"))
                .to_status()
                .code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            indexer_error(tonic::Status::not_found("workspace has no index"))
                .to_status()
                .code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            indexer_error(tonic::Status::invalid_argument("bad glob"))
                .to_status()
                .code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn workspace_ids_become_plain_names_and_modes_their_indexes() {
        assert_eq!(index_id("sha256:ab12"), "sha256-ab12");
        assert_eq!(modes_for(IndexMode::Text), vec![IndexMode::Text as i32]);
        assert!(modes_for(IndexMode::Hybrid).contains(&(IndexMode::Vector as i32)));
        assert!(parse_mode(99, "mode").is_err());
        assert!(model_missing(&tonic::Status::not_found(
            "embedding model `x` is not installed"
        )));
        assert!(!model_missing(&tonic::Status::not_found(
            "workspace has no index"
        )));
    }

    #[test]
    fn progress_reads_as_words() {
        let progress = IndexProgress {
            files_indexed: 3,
            chunks: 7,
            chunks_embedded: 7,
            ..IndexProgress::default()
        };
        let text = progress_detail(&progress, IndexMode::Vector, "all-MiniLM-L6-v2");
        assert!(text.contains("3 file(s) indexed") && text.contains("7 embedded with all-MiniLM-L6-v2"));
        assert!(progress_detail(&progress, IndexMode::Text, "").ends_with("(text)"));
    }
}
