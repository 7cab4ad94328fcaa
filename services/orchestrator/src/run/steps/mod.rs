//! One file per step of a run; each has `run(engine, ctx)`.

pub mod analyze;
pub mod build;
pub mod dependency;
pub mod detect;
pub mod fetch;
pub mod index;
pub mod install;
pub mod monitor;
pub mod probe;
pub mod provision;
pub mod setup;
pub mod start;
pub mod test;

use reporunner_proto::orchestrator::v1::StepStatus;
use std::time::Duration;

use crate::run::{Engine, Flow, RunContext, Step};

/// Records `step` as skipped for `reason`.
pub(crate) async fn skip(engine: &Engine, ctx: &RunContext, step: Step, reason: String) -> Flow {
    engine
        .step(&ctx.run_id, step, StepStatus::Skipped, reason, Duration::ZERO)
        .await
}

/// Whether the user asked to skip `step`'s agent (for the steps that may be
/// skipped).
pub(crate) fn skipped_on_request(ctx: &RunContext, step: Step) -> bool {
    step.skippable() && ctx.skips(step.agent())
}

/// The reason given for a step skipped on request.
pub(crate) fn on_request(step: Step) -> String {
    format!("the {} agent was skipped on request", step.agent())
}
