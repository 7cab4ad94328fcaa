//! Detect: the env-detector says what the host has (OS, toolchains,
//! package managers). The user may skip it.

use reporunner_proto::agents::env_detector::v1::DetectRequest;
use reporunner_proto::orchestrator::v1::StepStatus;

use crate::run::{
    Engine, Flow, RunContext, Step,
    steps::{on_request, skip, skipped_on_request},
};

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    if skipped_on_request(ctx, Step::Detect) {
        return skip(engine, ctx, Step::Detect, on_request(Step::Detect)).await;
    }
    let started = engine.begin(ctx, Step::Detect, String::new()).await?;
    let client = &engine.clients.env_detector;
    let work = async {
        let response = client
            .detect(DetectRequest {
                platform_override: ctx.platform_override.into(),
                skip_registries: engine.config.detect_skip_registries,
                refresh: false,
            })
            .await?;
        response
            .environment
            .ok_or_else(|| client.incomplete("environment"))
    };
    let environment = engine.call(ctx, Step::Detect, started, work).await?;
    let detail = format!("{} toolchain(s) found", environment.toolchains.len());
    ctx.environment = Some(environment);
    engine
        .step(
            &ctx.run_id,
            Step::Detect,
            StepStatus::Finished,
            detail,
            started.elapsed(),
        )
        .await
}
