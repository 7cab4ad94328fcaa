//! Index: when the run asked for it (`CreateRunRequest.index`), the indexer
//! indexes the workspace for search in the mode decided at creation. Never
//! fails a run: a failure is a failed step event and a notice.

use reporunner_proto::orchestrator::v1::StepStatus;
use std::time::{Duration, Instant};

use reporunner_proto::common::v1::IndexMode;
use tokio_stream::StreamExt as _;

use crate::{
    OrchestratorError,
    index::{IndexJob, progress_detail},
    run::{Engine, Flow, Halt, RunContext, Step, steps::skip},
};

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    let (Some(job), Some(workspace)) = (ctx.index.as_ref(), ctx.workspace.as_ref()) else {
        return Ok(());
    };
    let job = IndexJob {
        workspace: workspace.clone(),
        ..job.clone()
    };
    let Ok(indexer) = engine.clients.indexer.transport() else {
        let detail = "this orchestrator has no endpoint for the indexer (endpoints.indexer); the workspace was not indexed";
        return skip(engine, ctx, Step::Index, detail.into()).await;
    };
    engine
        .step(
            &ctx.run_id,
            Step::Index,
            StepStatus::Started,
            String::new(),
            Duration::ZERO,
        )
        .await?;
    let started = Instant::now();
    let work = async {
        let mut stream = job.clone().stream(indexer, &engine.config).await?;
        while let Some(message) = stream.next().await {
            let message = message?;
            if message.done {
                return Ok(message);
            }
        }
        Err(engine.clients.indexer.incomplete("the final progress message"))
    };
    let result: Result<_, OrchestratorError> = tokio::select! {
        () = ctx.cancel.cancelled() => return Err(Halt::Taken),
        result = work => result,
    };
    let elapsed = started.elapsed();
    match result {
        Ok(done) => {
            let mode = IndexMode::try_from(done.mode).unwrap_or(IndexMode::Text);
            if !done.fallback_reason.is_empty() {
                engine
                    .notice(&ctx.run_id, format!("indexing: {}", done.fallback_reason))
                    .await?;
            }
            let detail = progress_detail(&done.progress.unwrap_or_default(), mode, &done.model);
            engine
                .step(&ctx.run_id, Step::Index, StepStatus::Finished, detail, elapsed)
                .await
        }
        Err(err) => {
            let message = format!("indexing failed (the run goes on): {err}");
            tracing::info!(error = %message, "index step failed");
            engine
                .step(
                    &ctx.run_id,
                    Step::Index,
                    StepStatus::Failed,
                    message.clone(),
                    elapsed,
                )
                .await?;
            engine.notice(&ctx.run_id, message).await
        }
    }
}
