//! Build: each component's build command, which the dependency agent runs
//! right after the component's install on the same call (see
//! [`super::install`]). A component without one has its build skipped.

use reporunner_proto::orchestrator::v1::StepStatus;
use std::time::{Duration, Instant};

use reporunner_proto::{
    agents::dependency::v1::InstallResult, common::v1::Component, orchestrator::v1::RunState,
};

use crate::{
    run::{
        Engine, Flow, RunContext, Step,
        steps::install::{AfterInstall, Call, Said, conclude},
    },
    store::RunChange,
};

/// Follows the rest of the component's dependency call: its build, or the
/// install's result when it has no build command.
pub(crate) async fn run(
    engine: &Engine,
    ctx: &RunContext,
    component: &Component,
    after_install: AfterInstall,
) -> Flow<InstallResult> {
    let name = component.name.as_str();
    let (mut call, first) = match after_install {
        AfterInstall::Done {
            call,
            result,
            started,
        } => {
            let result = conclude(engine, ctx, component, Step::Install, started, call, result).await?;
            let why = format!("{name}: no build command");
            engine
                .step(&ctx.run_id, Step::Build, StepStatus::Skipped, why, Duration::ZERO)
                .await?;
            return Ok(result);
        }
        AfterInstall::Building { call, first } => (call, first),
    };
    engine
        .enter(&ctx.run_id, RunState::Building, RunChange::default())
        .await?;
    let command = component.build.as_ref().map_or("", |b| b.run.as_str());
    engine
        .step(
            &ctx.run_id,
            Step::Build,
            StepStatus::Started,
            format!("{name}: {command}"),
            Duration::ZERO,
        )
        .await?;
    let started = Instant::now();
    Call::log(engine, ctx, first).await?;
    loop {
        match call.next(engine, ctx, Step::Build, started).await? {
            Said::Line(line) => Call::log(engine, ctx, line).await?,
            Said::Result(result) => {
                return conclude(engine, ctx, component, Step::Build, started, call, Some(result)).await;
            }
            Said::Ended => return conclude(engine, ctx, component, Step::Build, started, call, None).await,
        }
    }
}
