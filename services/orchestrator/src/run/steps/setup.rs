//! Setup: each started component's setup commands (the plan's, or one the
//! resolver added, e.g. a database migration), once, through the runner, in
//! the sandbox, with the component's env, after install and before start.

use reporunner_proto::orchestrator::v1::StepStatus;
use std::time::{Duration, Instant};

use reporunner_proto::{
    agents::{
        resolver::v1::Phase,
        runner::v1::{ProcessState, RestartPolicy, StartRequest},
    },
    common::v1::{Command, Component, ComponentKind},
};

use crate::{
    heal::{Failure, TAIL_LINES},
    run::{Engine, Flow, Halt, RunContext, Step, failure_message, quote_tail, watch::is_over},
};

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    if !ctx.starts {
        return Ok(());
    }
    for component in ctx.components().to_vec() {
        for (index, command) in component.setup.iter().enumerate() {
            crate::run::until_cancel(
                &ctx.cancel.clone(),
                setup_command(engine, ctx, &component, index, command),
            )
            .await?;
        }
    }
    Ok(())
}

/// Runs one setup command to its end; a non-zero exit fails the step.
async fn setup_command(
    engine: &Engine,
    ctx: &mut RunContext,
    component: &Component,
    index: usize,
    command: &Command,
) -> Flow {
    let run_id = ctx.run_id.clone();
    let name = format!("{}-setup-{}", component.name, index + 1);
    let started = Instant::now();
    engine
        .step(
            &run_id,
            Step::Setup,
            StepStatus::Started,
            format!("{name}: {}", command.run),
            Duration::ZERO,
        )
        .await?;
    let one_shot = Component {
        name: name.clone(),
        kind: ComponentKind::Cli.into(),
        start: Some(command.clone()),
        port: 0,
        port_binding: String::new(),
        health_paths: Vec::new(),
        ..component.clone()
    };
    let request = StartRequest {
        run_id: run_id.clone(),
        workspace_path: ctx.workspace_path()?,
        component: Some(one_shot),
        env: ctx.run_env(component).into_iter().collect(),
        limits: Some(ctx.resource_limits()),
        restart_policy: RestartPolicy::Never.into(),
        max_restarts: 0,
        bind_host: String::new(),
        owner_id: ctx.owner_id.clone(),
    };
    let status = match engine.clients.runner.start(request).await {
        Ok(status) => status,
        Err(err) => {
            ctx.note(&err);
            let message = failure_message(Step::Setup, &err);
            return Err(engine
                .step_failed(&run_id, Step::Setup, message, started.elapsed())
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
    let until = Instant::now() + engine.config.install_deadline();
    let status = loop {
        let status = engine
            .clients
            .runner
            .status(&status.process_id)
            .await
            .map_err(|err| Halt::Failed(failure_message(Step::Setup, &err)))?;
        if is_over(status.state()) || Instant::now() > until {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    if status.state() != ProcessState::Exited || status.exit_code != 0 {
        let tail = engine.clients.runner.tail(&status.process_id, TAIL_LINES).await;
        let keep = tail.len().saturating_sub(engine.config.log_tail_lines);
        let short = tail[keep..].to_vec();
        ctx.failed(Failure {
            phase: Phase::Setup as i32,
            component: component.name.clone(),
            exit_code: status.exit_code,
            log_tail: tail,
        });
        let message = format!(
            "setup failed: the setup command `{}` of {} exited with code {}{}",
            command.run,
            component.name,
            status.exit_code,
            quote_tail(&short)
        );
        return Err(engine
            .step_failed(&run_id, Step::Setup, message, started.elapsed())
            .await);
    }
    engine
        .step(
            &run_id,
            Step::Setup,
            StepStatus::Finished,
            format!("{name}: exit code 0"),
            started.elapsed(),
        )
        .await
}
