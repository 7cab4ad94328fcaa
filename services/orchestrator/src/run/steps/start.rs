//! Start: the runner starts each startable component in the sandbox, with
//! restart ON_FAILURE (`max_restarts`), the tier's limits and its env (the
//! install's, its backing services', the user's; the runner adds the plan's
//! defaults under them).

use reporunner_proto::orchestrator::v1::StepStatus;
use std::time::{Duration, Instant};

use reporunner_proto::{
    agents::{
        resolver::v1::Phase,
        runner::v1::{RestartPolicy, StartRequest},
    },
    orchestrator::v1::{ComponentHealth, RunState},
};

use crate::{
    heal::Failure,
    run::{
        Engine, Flow, RunContext, Step, failure_message, record::step_event, steps::skipped_on_request,
        watch::Monitor,
    },
    store::{RunChange, RunComponent},
};

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    if !ctx.starts {
        return Ok(());
    }
    let run_id = ctx.run_id.clone();
    engine
        .enter(&run_id, RunState::Starting, RunChange::default())
        .await?;
    let workspace_path = ctx.workspace_path()?;
    let mut components = Vec::with_capacity(ctx.components().len());
    for component in ctx.components().to_vec() {
        let name = component.name.clone();
        let started = Instant::now();
        engine
            .step(
                &run_id,
                Step::Start,
                StepStatus::Started,
                name.clone(),
                Duration::ZERO,
            )
            .await?;
        let request = StartRequest {
            run_id: run_id.clone(),
            workspace_path: workspace_path.clone(),
            component: Some(component.clone()),
            env: ctx.run_env(&component).into_iter().collect(),
            limits: Some(ctx.resource_limits()),
            restart_policy: RestartPolicy::OnFailure.into(),
            max_restarts: engine.config.max_restarts,
            bind_host: String::new(),
            owner_id: ctx.owner_id.clone(),
        };
        // Not raced against cancellation: a process the runner started
        // must be known here, or it would be left behind.
        let status = match engine.clients.runner.start(request).await {
            Ok(status) => status,
            Err(err) => {
                ctx.note(&err);
                let message = failure_message(Step::Start, &err);
                ctx.failed(Failure {
                    phase: Phase::Start as i32,
                    component: name.clone(),
                    exit_code: 0,
                    log_tail: vec![message.clone()],
                });
                return Err(engine
                    .step_failed(&run_id, Step::Start, message, started.elapsed())
                    .await);
            }
        };
        ctx.started.push(status.process_id.clone());
        crate::run::output::record_output(
            &engine.clients.runner,
            &engine.recorder,
            &run_id,
            &name,
            &status.process_id,
        );
        components.push(RunComponent {
            name: name.clone(),
            url: status.url.clone(),
            health: ComponentHealth::Starting.into(),
            port: status.port,
            process_id: status.process_id.clone(),
            pid: status.pid,
            kind: component.kind,
            health_paths: component.health_paths.clone(),
        });
        let detail = format!(
            "{name}: pid {}{}{}",
            status.pid,
            if status.url.is_empty() {
                String::new()
            } else {
                format!(" on {}", status.url)
            },
            if status.sandboxed { ", sandboxed" } else { "" }
        );
        let change = RunChange {
            components: Some(components.clone()),
            ..RunChange::default()
        };
        engine
            .emit(
                &run_id,
                change,
                step_event(Step::Start, StepStatus::Finished, detail, started.elapsed()),
            )
            .await?;
        crate::metrics::step(Step::Start.name(), StepStatus::Finished, started.elapsed());
        if !status.sandboxed && !status.sandbox_note.is_empty() {
            engine
                .notice(&run_id, format!("{name}: {}", status.sandbox_note))
                .await?;
        }
    }
    let probed = !skipped_on_request(ctx, Step::Probe);
    ctx.monitor = Some(Monitor::new(run_id, components, probed));
    Ok(())
}
