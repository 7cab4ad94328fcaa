//! Probe: the health agent probes each started component (HTTP on the
//! runner's URL with the plan's health paths, or the process for workers
//! and components without a URL) until all are healthy, under
//! `startup_grace_seconds`. With `skip_agents: ["health"]` a component
//! counts as up once its process runs (health "unprobed"). Once every
//! component is up the run is RUNNING.

use reporunner_proto::orchestrator::v1::StepStatus;
use std::time::{Duration, Instant};

use reporunner_proto::orchestrator::v1::{RunState, run_event};

use crate::{
    run::{Engine, Flow, Halt, RunContext, Step},
    store::RunChange,
};

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    let Some(mut monitor) = ctx.monitor.take() else {
        return Ok(());
    };
    let run_id = ctx.run_id.clone();
    engine
        .enter(&run_id, RunState::Probing, RunChange::default())
        .await?;
    let names: Vec<String> = monitor.components.iter().map(|c| c.name.clone()).collect();
    if monitor.probed {
        let started = Instant::now();
        engine
            .step(
                &run_id,
                Step::Probe,
                StepStatus::Started,
                names.join(", "),
                Duration::ZERO,
            )
            .await?;
        if let Err(halt) = engine.until_healthy(&mut monitor, &ctx.cancel).await {
            let halt = match halt {
                Halt::Failed(message) => {
                    engine.probe_failed(ctx, &monitor).await;
                    engine
                        .step_failed(&run_id, Step::Probe, message, started.elapsed())
                        .await
                }
                other => other,
            };
            return Err(halt);
        }
        engine
            .step(
                &run_id,
                Step::Probe,
                StepStatus::Finished,
                format!("healthy: {}", names.join(", ")),
                started.elapsed(),
            )
            .await?;
    } else {
        if let Err(halt) = engine.until_processes_run(&mut monitor, &ctx.cancel).await {
            if matches!(halt, Halt::Failed(_)) {
                engine.probe_failed(ctx, &monitor).await;
            }
            return Err(halt);
        }
        let why = "the health agent was skipped on request; components count as up once their processes run";
        engine
            .step(
                &run_id,
                Step::Probe,
                StepStatus::Skipped,
                why.into(),
                Duration::ZERO,
            )
            .await?;
    }
    for component in &monitor.components {
        if !component.url.is_empty() {
            engine
                .emit(
                    &run_id,
                    RunChange::default(),
                    run_event::Event::Url(component.url.clone()),
                )
                .await?;
        }
    }
    // Components left down make the run DEGRADED, named in its error.
    let degraded = (!ctx.down.is_empty()).then(|| {
        let down: Vec<String> = ctx
            .down
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect();
        format!(
            "degraded: {} of {} components are down; {}",
            ctx.down.len(),
            ctx.down.len() + monitor.components.len(),
            down.join("; ")
        )
    });
    let state = if degraded.is_some() {
        RunState::Degraded
    } else {
        RunState::Running
    };
    let change = RunChange {
        components: Some(monitor.components.clone()),
        error: degraded,
        ..RunChange::default()
    };
    engine.enter(&run_id, state, change).await?;
    ctx.monitor = Some(monitor);
    Ok(())
}
