//! Fetch: the source agent clones or copies the repository into a
//! workspace. Skipped when the run re-uses a workspace fetched earlier.

use reporunner_proto::orchestrator::v1::StepStatus;
use reporunner_proto::{
    agents::source::v1::{FetchRequest, GitSource, LocalSource, UploadArchiveHeader, fetch_request},
    orchestrator::v1::{UploadedArchive, repo_source},
};

use crate::{
    OrchestratorError,
    run::{Engine, Flow, RunContext, Step, steps::skip},
    store::RunChange,
};

/// How the workspace comes: fetched by the agent, or uploaded to it.
enum Fetch {
    Request(fetch_request::Source),
    Upload(UploadedArchive),
}

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    if let Some(workspace) = &ctx.workspace {
        let reason = format!("reusing workspace {} fetched earlier", workspace.id);
        return skip(engine, ctx, Step::Fetch, reason).await;
    }
    let started = engine.begin(ctx, Step::Fetch, String::new()).await?;
    let source = match ctx.source.source.clone() {
        Some(repo_source::Source::GitUrl(url)) => Ok(Fetch::Request(fetch_request::Source::Git(GitSource {
            url,
            r#ref: ctx.source.r#ref.clone(),
        }))),
        Some(repo_source::Source::LocalPath(path)) => {
            Ok(Fetch::Request(fetch_request::Source::Local(LocalSource { path })))
        }
        Some(repo_source::Source::Archive(archive)) => Ok(Fetch::Upload(archive)),
        Some(repo_source::Source::WorkspaceId(id)) => Err(OrchestratorError::WorkspaceNotFound(id)),
        None => Err(OrchestratorError::InvalidArgument("the run has no source".into())),
    };
    let work = async {
        let source = source?;
        let source_client = &engine.clients.source;
        let response = match source {
            Fetch::Request(source) => {
                source_client
                    .fetch(FetchRequest {
                        owner_id: ctx.owner_id.clone(),
                        source: Some(source),
                        limits: Some(ctx.limits),
                    })
                    .await?
            }
            Fetch::Upload(archive) => {
                let header = UploadArchiveHeader {
                    owner_id: ctx.owner_id.clone(),
                    format: archive.format,
                    file_name: archive.file_name.clone(),
                    limits: Some(ctx.limits),
                };
                source_client.upload(header, archive.content).await?
            }
        };
        let workspace = response
            .workspace
            .ok_or_else(|| source_client.incomplete("workspace"))?;
        Ok((workspace, response.reused))
    };
    let (workspace, reused) = engine.call(ctx, Step::Fetch, started, work).await?;
    let detail = format!(
        "{} workspace {} ({} files, {} bytes){}",
        if reused { "reused" } else { "fetched" },
        workspace.id,
        workspace.file_count,
        workspace.size_bytes,
        if workspace.commit.is_empty() {
            String::new()
        } else {
            format!(" at commit {}", workspace.commit)
        }
    );
    ctx.workspace = Some(workspace.clone());
    // An uploaded archive's bytes are not needed again.
    if let Some(repo_source::Source::Archive(archive)) = &mut ctx.source.source {
        archive.content = Default::default();
    }
    let change = RunChange {
        workspace: Some(workspace),
        ..RunChange::default()
    };
    let event = crate::run::record::step_event(Step::Fetch, StepStatus::Finished, detail, started.elapsed());
    crate::metrics::step(Step::Fetch.name(), StepStatus::Finished, started.elapsed());
    engine.emit(&ctx.run_id, change, event).await
}
