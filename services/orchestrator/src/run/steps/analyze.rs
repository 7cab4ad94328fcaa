//! Analyze: the analyzer decides the run's plan: the components and how to
//! install, build, set up, start and test each.

use reporunner_proto::agents::analyzer::v1::AnalyzeRequest;
use reporunner_proto::orchestrator::v1::StepStatus;

use crate::{
    run::{Engine, Flow, RunContext, Step},
    store::RunChange,
};

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    let started = engine.begin(ctx, Step::Analyze, String::new()).await?;
    let Some(workspace) = ctx.workspace.clone() else {
        let message = "analyze failed: the source agent returned an incomplete answer: workspace missing";
        return Err(engine
            .step_failed(&ctx.run_id, Step::Analyze, message.into(), started.elapsed())
            .await);
    };
    let request = AnalyzeRequest {
        workspace_id: workspace.id.clone(),
        workspace_path: workspace.path.clone(),
        environment: ctx.environment.clone(),
    };
    let plan = engine
        .call(
            ctx,
            Step::Analyze,
            started,
            engine.clients.analyzer.analyze(request),
        )
        .await?;
    let names: Vec<&str> = plan.components.iter().map(|c| c.name.as_str()).collect();
    let detail = match names.len() {
        0 => "no runnable component found".to_owned(),
        n => format!("{n} component(s): {}", names.join(", ")),
    };
    ctx.plan = Some(plan.clone());
    let change = RunChange {
        plan: Some(plan),
        ..RunChange::default()
    };
    let event =
        crate::run::record::step_event(Step::Analyze, StepStatus::Finished, detail, started.elapsed());
    crate::metrics::step(Step::Analyze.name(), StepStatus::Finished, started.elapsed());
    engine.emit(&ctx.run_id, change, event).await
}
