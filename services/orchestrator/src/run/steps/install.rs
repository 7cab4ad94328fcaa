//! Install: the dependency agent installs each component's dependencies in
//! the sandbox. The same call goes on with the component's build command,
//! so install and build are taken together, component by component
//! ([`super::dependency`]): this file follows the call until its build
//! begins, [`super::build`] follows the rest.

use reporunner_proto::orchestrator::v1::StepStatus;
use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use reporunner_proto::{
    agents::{
        dependency::v1::{InstallLimits, InstallRequest, InstallResponse, InstallResult, install_response},
        resolver::v1::Phase,
    },
    common::v1::{Component, LogLine},
    orchestrator::v1::{RunState, run_event},
};

use crate::{
    heal::{Failure, TAIL_LINES},
    run::{Engine, Flow, Halt, RunContext, Step, failure_message, quote_tail, steps_for},
    store::RunChange,
};

/// The environment of a component: the install's, with the user's over it.
pub(crate) fn component_env(
    install: impl IntoIterator<Item = (String, String)>,
    user: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = install.into_iter().collect();
    env.extend(user.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The dependency agent's call for one component, followed line by line:
/// every line becomes a log event, the last [`TAIL_LINES`] are kept for the
/// resolver.
pub(crate) struct Call {
    stream: tonic::Streaming<InstallResponse>,
    pub lines: VecDeque<String>,
}

/// What the call says next.
pub(crate) enum Said {
    Line(LogLine),
    Result(InstallResult),
    /// The stream ended without a result.
    Ended,
}

impl Call {
    /// The next line or the result; a failed stream fails `step`.
    pub async fn next(
        &mut self,
        engine: &Engine,
        ctx: &RunContext,
        step: Step,
        since: Instant,
    ) -> Flow<Said> {
        loop {
            let message = tokio::select! {
                () = ctx.cancel.cancelled() => return Err(Halt::Taken),
                message = self.stream.message() => message,
            };
            match message {
                Ok(Some(InstallResponse {
                    event: Some(install_response::Event::Log(line)),
                })) => {
                    if self.lines.len() == TAIL_LINES {
                        self.lines.pop_front();
                    }
                    self.lines.push_back(line.text.clone());
                    return Ok(Said::Line(line));
                }
                Ok(Some(InstallResponse {
                    event: Some(install_response::Event::Result(done)),
                })) => return Ok(Said::Result(done)),
                Ok(Some(InstallResponse { event: None })) => {}
                Ok(None) => return Ok(Said::Ended),
                Err(status) => {
                    let err = engine.clients.dependency.failed(status);
                    ctx.note(&err);
                    let message = failure_message(step, &err);
                    return Err(engine
                        .step_failed(&ctx.run_id, step, message, since.elapsed())
                        .await);
                }
            }
        }
    }

    /// Records `line` as a log event of the run.
    pub async fn log(engine: &Engine, ctx: &RunContext, line: LogLine) -> Flow {
        engine
            .emit(&ctx.run_id, RunChange::default(), run_event::Event::Log(line))
            .await
    }
}

/// Where the call stands once the install part is over.
pub(crate) enum AfterInstall {
    /// The build began with this line.
    Building { call: Call, first: LogLine },
    /// The call ended with this result, without a build.
    Done {
        call: Call,
        result: Option<InstallResult>,
        started: Instant,
    },
}

pub(crate) async fn install(engine: &Engine, ctx: &RunContext, component: &Component) -> Flow<AfterInstall> {
    let run_id = ctx.run_id.as_str();
    let name = component.name.as_str();
    engine
        .enter(run_id, RunState::Installing, RunChange::default())
        .await?;
    let started = Instant::now();
    engine
        .step(
            run_id,
            Step::Install,
            StepStatus::Started,
            name.to_owned(),
            Duration::ZERO,
        )
        .await?;
    let request = InstallRequest {
        run_id: run_id.to_owned(),
        workspace_path: ctx.workspace_path()?,
        component: Some(component.clone()),
        environment: ctx.environment.clone(),
        limits: Some(InstallLimits {
            timeout_seconds: engine.config.install_timeout_seconds,
            // The tier's: an install is stopped past it, with the limit named.
            max_disk_bytes: ctx.step_limits.max_disk_bytes,
        }),
        owner_id: ctx.owner_id.clone(),
        step_limits: Some(ctx.step_limits),
        // What the tests need is installed when the goal runs them.
        with_tests: steps_for(ctx.goal).contains(&Step::Test),
        // Unlocked dependencies are resolved as of the repository's date.
        resolve_before: ctx.workspace.as_ref().and_then(|w| w.content_time),
        backing_env: ctx.backing_env(component).into_iter().collect(),
    };
    let stream = match engine.clients.dependency.install(request).await {
        Ok(stream) => stream,
        Err(err) => {
            ctx.note(&err);
            let message = failure_message(Step::Install, &err);
            // The agent refused this component (a toolchain it does not
            // install): the failure is the component's, so that the others
            // can still come up.
            ctx.failed(Failure {
                phase: Phase::Install as i32,
                component: name.to_owned(),
                exit_code: 0,
                log_tail: vec![message.clone()],
            });
            return Err(engine
                .step_failed(run_id, Step::Install, message, started.elapsed())
                .await);
        }
    };
    let mut call = Call {
        stream,
        lines: VecDeque::with_capacity(TAIL_LINES),
    };
    loop {
        match call.next(engine, ctx, Step::Install, started).await? {
            Said::Line(line) if line.source == "build" => {
                engine
                    .step(
                        run_id,
                        Step::Install,
                        StepStatus::Finished,
                        format!("{name}: dependencies installed"),
                        started.elapsed(),
                    )
                    .await?;
                return Ok(AfterInstall::Building { call, first: line });
            }
            Said::Line(line) => Call::log(engine, ctx, line).await?,
            Said::Result(result) => {
                return Ok(AfterInstall::Done {
                    call,
                    result: Some(result),
                    started,
                });
            }
            Said::Ended => {
                return Ok(AfterInstall::Done {
                    call,
                    result: None,
                    started,
                });
            }
        }
    }
}

/// Ends `step` with the call's result: finished with what was installed,
/// or failed with the exit code and last lines (kept for the resolver).
pub(crate) async fn conclude(
    engine: &Engine,
    ctx: &RunContext,
    component: &Component,
    step: Step,
    since: Instant,
    call: Call,
    result: Option<InstallResult>,
) -> Flow<InstallResult> {
    let name = component.name.as_str();
    let Some(result) = result else {
        let message = format!(
            "{} failed: the dependency agent ended {name}'s install without a result",
            step.name()
        );
        return Err(engine
            .step_failed(&ctx.run_id, step, message, since.elapsed())
            .await);
    };
    if !result.success {
        ctx.failed(Failure {
            phase: if step == Step::Build {
                Phase::Build
            } else {
                Phase::Install
            } as i32,
            component: name.to_owned(),
            exit_code: result.exit_code,
            log_tail: if call.lines.len() > result.log_tail.len() {
                call.lines.into()
            } else {
                result.log_tail.clone()
            },
        });
        let message = format!(
            "{} failed for {name}: exit code {}{}{}",
            step.name(),
            result.exit_code,
            if result.tool.is_empty() {
                String::new()
            } else {
                format!(" ({})", result.tool)
            },
            quote_tail(&result.log_tail)
        );
        return Err(engine
            .step_failed(&ctx.run_id, step, message, since.elapsed())
            .await);
    }
    let detail = format!(
        "{name}: {} in {} ms{}",
        result.tool,
        result.duration_ms,
        if result.environment_path.is_empty() {
            String::new()
        } else {
            format!(", environment {}", result.environment_path)
        }
    );
    engine
        .step(&ctx.run_id, step, StepStatus::Finished, detail, since.elapsed())
        .await?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_env_wins_over_the_installs() {
        let install = [
            ("PATH".to_owned(), "/venv/bin:/usr/bin".to_owned()),
            ("VIRTUAL_ENV".to_owned(), "/venv".to_owned()),
        ];
        let user = BTreeMap::from([
            ("VIRTUAL_ENV".to_owned(), "/mine".to_owned()),
            ("DEBUG".to_owned(), "1".to_owned()),
        ]);
        let env = component_env(install, &user);
        assert_eq!(env["PATH"], "/venv/bin:/usr/bin");
        assert_eq!(env["VIRTUAL_ENV"], "/mine");
        assert_eq!(env["DEBUG"], "1");
    }
}
