//! The engine: walks a run's list of steps (see [`steps_for`]).
//!
//! One run is one task. It waits for a pipeline slot, then takes the steps
//! in order under the tier's run deadline. Every step either goes on
//! (`Ok`) or halts the run (`Err(Halt)`: taken by someone else, failed with
//! a message, or the store failed). A failed set-up step (provision to
//! probe) goes to [`healing`](crate::run::healing): when the resolver has a
//! patch not tried yet, the plan is patched and the list is resumed at the
//! step the patch needs (`Healed::Retry`). A run that reached RUNNING gives
//! its slot back and keeps being monitored (the `monitor` step); the others
//! end SUCCEEDED or FAILED. Plugins are called at their hooks between steps
//! (see [`crate::plugins`]).

use reporunner_proto::orchestrator::v1::StepStatus;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use reporunner_proto::orchestrator::v1::RunState;
use tokio::sync::Semaphore;

use crate::run::with_cause_line;
use crate::{
    Agents, OrchestratorConfig, OrchestratorError, Result,
    clients::Clients,
    live::{LiveRun, Recorder},
    plugins::Plugins,
    run::{
        Flow, Halt, RunContext, Step, failure_message,
        healing::{self, Healed},
        record::millis,
        steps, steps_for,
    },
    store::{RunChange, is_terminal},
};

/// How many times one run takes a step again because its agent's replica
/// went away (see [`RunContext::note`]).
const MAX_RETAKES: u32 = 3;

/// Drives runs: one task per run, bounded by a semaphore.
#[derive(Clone, Debug)]
pub struct Engine {
    pub config: Arc<OrchestratorConfig>,
    pub(crate) clients: Clients,
    pub(crate) plugins: Plugins,
    pub(crate) recorder: Recorder,
    pub(crate) permits: Arc<Semaphore>,
}

impl Engine {
    pub(crate) fn new(
        config: Arc<OrchestratorConfig>,
        agents: Agents,
        plugins: Plugins,
        recorder: Recorder,
    ) -> Self {
        Self {
            clients: Clients::new(&agents, &config),
            permits: Arc::new(Semaphore::new(config.max_concurrent_pipelines)),
            config,
            plugins,
            recorder,
        }
    }

    /// Runs `ctx`'s goal to its end: its steps under a pipeline slot, then,
    /// for a run that reached RUNNING, its monitoring without the slot. A
    /// run that ends stops every process it started; one left as it was
    /// (orchestrator shutdown) keeps them for the next orchestrator to
    /// resume. Spawn it.
    pub(crate) async fn drive(self, mut ctx: RunContext, live: Arc<LiveRun>) {
        let run_id = ctx.run_id.clone();
        ctx.cancel = live.cancel.clone();
        let permit = tokio::select! {
            () = live.cancel.cancelled() => None,
            permit = self.permits.clone().acquire_owned() => permit.ok(),
        };
        if let Some(permit) = permit {
            let gauge = crate::metrics::PipelineGauge::start();
            let started = Instant::now();
            let deadline = ctx.run_deadline.map(|limit| (started + limit, limit));
            let all = steps_for(ctx.goal);
            let (under_slot, monitoring) = match all.iter().position(|s| *s == Step::Monitor) {
                Some(at) => all.split_at(at),
                None => (&all[..], &[][..]),
            };
            let mut outcome = Box::pin(self.within(deadline, self.walk(&mut ctx, under_slot))).await;
            drop(gauge);
            drop(permit);
            if outcome.is_ok() && ctx.monitor.is_some() {
                outcome = Box::pin(self.within(deadline, self.walk(&mut ctx, monitoring))).await;
            } else if outcome.is_ok() {
                outcome = self
                    .enter(&run_id, RunState::Succeeded, RunChange::default())
                    .await;
            }
            self.end(&run_id, outcome, started).await;
            self.release(&run_id, &ctx.started).await;
            if !ctx.provisioned.is_empty() && self.is_over(&run_id).await {
                steps::provision::release_backing(&self, &run_id).await;
            }
        }
        self.recorder.live.finish(&run_id);
    }

    /// Takes `steps` in order; a failed set-up step is healed by resuming
    /// the list at the step its patch needs.
    async fn walk(&self, ctx: &mut RunContext, steps: &[Step]) -> Flow {
        let mut at = 0;
        let mut retaken = 0;
        while let Some(&step) = steps.get(at) {
            if ctx.cancel.is_cancelled() {
                return Err(Halt::Taken);
            }
            self.plugins.before(self, ctx, step).await?;
            match self.take(step, ctx).await {
                Ok(()) => {
                    self.plugins.after(self, ctx, step).await?;
                    // Install and build are one agent call per component,
                    // taken together (see `take`).
                    at += if step == Step::Install && steps.get(at + 1) == Some(&Step::Build) {
                        2
                    } else {
                        1
                    };
                }
                // The agent's replica went away mid-step (or none could
                // be reached): the step again, on whichever replica serves.
                Err(Halt::Failed(message)) if retaken < MAX_RETAKES && ctx.take_lost().is_some() => {
                    retaken += 1;
                    let reason = message.lines().next().unwrap_or(&message).to_owned();
                    self.notice(
                        &ctx.run_id,
                        format!(
                            "{} failed because its {} agent could not be reached ({reason}); taking it again ({retaken} of {MAX_RETAKES})",
                            step.name(),
                            step.agent()
                        ),
                    )
                    .await?;
                    at = self.resume_at(ctx, steps, step).await?;
                }
                Err(Halt::Failed(message)) if step.healable() || ctx.has_failure() => {
                    let component = ctx.failing_component();
                    match healing::heal(self, ctx).await? {
                        Healed::Retry(from) => {
                            at = self.resume_at(ctx, steps, from).await?;
                        }
                        Healed::No(summary) => {
                            let message = match summary {
                                Some((summary, matched)) => {
                                    format!("{}\nresolver: {summary}", with_cause_line(&message, &matched))
                                }
                                None => message,
                            };
                            match self.give_up_on(ctx, steps, step, component, &message).await? {
                                Some(resume) => at = resume,
                                None => return Err(Halt::Failed(message)),
                            }
                        }
                    }
                }
                Err(halt) => return Err(halt),
            }
        }
        Ok(())
    }

    /// One step.
    async fn take(&self, step: Step, ctx: &mut RunContext) -> Flow {
        match step {
            Step::Fetch => steps::fetch::run(self, ctx).await,
            Step::Detect => steps::detect::run(self, ctx).await,
            Step::Analyze => steps::analyze::run(self, ctx).await,
            Step::Index => steps::index::run(self, ctx).await,
            Step::Provision => Box::pin(steps::provision::run(self, ctx)).await,
            Step::Install => Box::pin(steps::dependency::run(self, ctx)).await,
            // Taken with install, above; alone only when a list resumes here.
            Step::Build => Ok(()),
            Step::Setup => Box::pin(steps::setup::run(self, ctx)).await,
            Step::Start => Box::pin(steps::start::run(self, ctx)).await,
            Step::Probe => Box::pin(steps::probe::run(self, ctx)).await,
            Step::Test => Box::pin(steps::test::run(self, ctx)).await,
            Step::Monitor => Box::pin(steps::monitor::run(self, ctx)).await,
        }
    }

    /// Where the list resumes after a heal that needs `from`: what the
    /// failed attempt started is stopped, and the components are chosen
    /// again from the patched plan.
    async fn resume_at(&self, ctx: &mut RunContext, steps: &[Step], from: Step) -> Flow<usize> {
        let started = ctx.started.clone();
        self.stop_processes(&started).await;
        ctx.monitor = None;
        ctx.take_failure();
        if from <= Step::Install {
            ctx.installed.clear();
            ctx.packages.clear();
        }
        steps::provision::select(self, ctx, false).await?;
        Ok(steps.iter().position(|s| *s >= from).unwrap_or(steps.len()))
    }

    /// Partial success: when a set-up step failed for good for one of
    /// several components that are to run, that one is left down (the run
    /// will end DEGRADED, naming it) and the list resumes for the others
    /// at the step that failed (at start, when processes had started: they
    /// are started again without it). `None` when the run fails instead.
    async fn give_up_on(
        &self,
        ctx: &mut RunContext,
        steps: &[Step],
        step: Step,
        component: Option<String>,
        message: &str,
    ) -> Flow<Option<usize>> {
        let Some(name) = component else { return Ok(None) };
        let set_up = matches!(
            step,
            Step::Install | Step::Build | Step::Setup | Step::Start | Step::Probe
        );
        let remaining: Vec<_> = ctx
            .components()
            .iter()
            .filter(|c| c.name != name)
            .cloned()
            .collect();
        if !ctx.starts || !set_up || remaining.is_empty() || remaining.len() == ctx.components().len() {
            return Ok(None);
        }
        let reason = message.lines().next().unwrap_or(message).to_owned();
        let others: Vec<&str> = remaining.iter().map(|c| c.name.as_str()).collect();
        self.notice(
            &ctx.run_id,
            format!(
                "{name} is left down: {reason}; the run goes on with {}",
                others.join(", ")
            ),
        )
        .await?;
        ctx.down.push((name, reason));
        ctx.components = Some(remaining);
        ctx.take_failure();
        let from = if step >= Step::Start {
            let started = std::mem::take(&mut ctx.started);
            self.stop_processes(&started).await;
            ctx.monitor = None;
            Step::Start
        } else {
            step
        };
        Ok(Some(steps.iter().position(|s| *s >= from).unwrap_or(steps.len())))
    }

    /// Runs `work` under the run's tier deadline; past it the run fails
    /// with a message naming the limit.
    async fn within(&self, deadline: Option<(Instant, Duration)>, work: impl Future<Output = Flow>) -> Flow {
        match deadline {
            Some((at, limit)) => tokio::time::timeout_at(at.into(), work)
                .await
                .unwrap_or_else(|_| {
                    Err(Halt::Failed(format!(
                        "the run exceeded your tier's limit of {} s per run",
                        limit.as_secs()
                    )))
                }),
            None => work.await,
        }
    }

    /// Records how the run ended.
    pub(crate) async fn end(&self, run_id: &str, outcome: Flow, started: Instant) {
        let outcome = match outcome {
            Err(Halt::Failed(message)) => self.fail(run_id, message).await,
            Err(Halt::Store(err)) => Err(err),
            Ok(()) | Err(Halt::Taken) => Ok(()),
        };
        match outcome {
            Ok(()) => tracing::info!(elapsed_ms = millis(started.elapsed()), "run pipeline ended"),
            Err(err) => {
                tracing::error!(error = %reporunner_error::error_chain(&err), "run pipeline could not record its progress");
                // Best effort: the store may be back for this one.
                let _ = self
                    .fail(
                        run_id,
                        "the orchestrator could not record the run's progress".into(),
                    )
                    .await;
            }
        }
    }

    /// Whether the run is over (unknown counts as over).
    pub(crate) async fn is_over(&self, run_id: &str) -> bool {
        match self.recorder.store.get_run(run_id).await {
            Ok(run) => run.is_none_or(|r| is_terminal(r.state())),
            Err(_) => true,
        }
    }

    /// Stops `processes` when the run is over; leaves them to the next
    /// orchestrator when it is not (this one is shutting down).
    pub(crate) async fn release(&self, run_id: &str, processes: &[String]) {
        if !processes.is_empty() && self.is_over(run_id).await {
            self.stop_processes(processes).await;
        }
    }

    /// Stops each process (idempotent at the runner); failures are logged.
    pub(crate) async fn stop_processes(&self, processes: &[String]) {
        if processes.is_empty() {
            return;
        }
        if !self.clients.runner.is_configured() {
            tracing::warn!("cannot stop the run's processes: no runner endpoint");
            return;
        }
        for process_id in processes {
            match self
                .clients
                .runner
                .stop(process_id, self.config.stop_grace_seconds)
                .await
            {
                Ok(()) => tracing::info!(process_id, "run process stopped"),
                Err(OrchestratorError::AgentFailed { status, .. })
                    if status.code() == tonic::Code::NotFound => {}
                Err(err) => tracing::warn!(process_id, error = %err, "cannot stop a run process"),
            }
        }
    }

    /// One agent call of `step` under its deadline, raced against the run's
    /// cancellation; a failure is recorded as the step's and halts the run.
    pub(crate) async fn call<T>(
        &self,
        ctx: &RunContext,
        step: Step,
        started: Instant,
        work: impl Future<Output = Result<T>>,
    ) -> Flow<T> {
        let deadline = step.deadline(&self.config);
        let result = tokio::select! {
            () = ctx.cancel.cancelled() => return Err(Halt::Taken),
            result = tokio::time::timeout(deadline, work) => result,
        };
        let result = result.unwrap_or_else(|_| {
            Err(OrchestratorError::AgentDeadline {
                agent: step.agent(),
                detail: format!(
                    "{} did not finish within {} ms",
                    step.name(),
                    deadline.as_millis()
                ),
            })
        });
        match result {
            Ok(value) => Ok(value),
            Err(err) => {
                ctx.note(&err);
                let message = failure_message(step, &err);
                Err(self
                    .step_failed(&ctx.run_id, step, message, started.elapsed())
                    .await)
            }
        }
    }

    /// Enters `step`'s state and records it `started`; the first step of a
    /// run also counts its first attempt.
    pub(crate) async fn begin(&self, ctx: &mut RunContext, step: Step, detail: String) -> Flow<Instant> {
        if let Some(state) = step.state() {
            let change = RunChange {
                attempts: (!ctx.counted).then_some(1),
                ..RunChange::default()
            };
            ctx.counted = true;
            self.enter(&ctx.run_id, state, change).await?;
        }
        self.step(&ctx.run_id, step, StepStatus::Started, detail, Duration::ZERO)
            .await?;
        Ok(Instant::now())
    }
}
