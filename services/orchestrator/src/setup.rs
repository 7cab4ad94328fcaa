//! The setup-and-run steps, per component: install (the dependency agent,
//! which also runs the build command), start (the runner agent), probe and
//! monitor (the health agent), and the tests (the tester agent).
//!
//! - START starts WEB, WORKER, STATIC and unspecified components that have a
//!   start command; LIBRARY and CLI components are skipped with a notice.
//!   Without a startable component the run fails naming them.
//! - A component's environment is the install's env (`PATH`,
//!   `VIRTUAL_ENV`, ...) with `CreateRunRequest.env` over it; the runner adds
//!   the plan's defaults under both.
//! - Components run with restart ON_FAILURE (`max_restarts`) and the tier's
//!   `max_run_seconds` as `max_runtime_seconds`.
//! - Probing: an HTTP probe of the runner's URL with the plan's health paths
//!   for components with a URL, a process probe (pid) for the others, under
//!   `startup_grace_seconds`. (No log probe: the health agent requires every
//!   probe of a watch to pass, and many apps print no ready line.) With
//!   `skip_agents: ["health"]` a component counts as up once its process
//!   runs (health "unprobed").
//! - Once every component is healthy the run is RUNNING; the health watches
//!   stay open (changes become `HealthEvent`s and update `Run.components`)
//!   and the runner is asked for the processes' status every
//!   `status_poll_ms`: a process that ended for good (restarts spent) fails
//!   the run with its last lines.
//! - Tests (goals TEST and START_AND_TEST) run through the tester agent,
//!   one component at a time, each with its install's env, its backing
//!   services' and the user's (START_AND_TEST adds `APP_URL` and `APP_PORT`
//!   of the running app). Each result is a `TestResult` event and part of
//!   `Run.test_results`. TEST succeeds only when every component's tests
//!   PASSED; START_AND_TEST stays RUNNING and says in a notice which did
//!   not (with nothing to start, a library, it runs the tests as TEST
//!   does). Test failures are never sent to the resolver.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reporunner_proto::{
    agents::{
        dependency::v1::{
            InstallLimits, InstallRequest, InstallResponse,
            dependency_service_client::DependencyServiceClient, install_response,
        },
        health::v1::{
            HealthState, HttpProbe, ProbeResult, ProbeSpec, ProcessProbe, WatchRequest, WatchResponse,
            health_service_client::HealthServiceClient, probe_spec,
        },
        runner::v1::{
            LogsRequest, ProcessState, ProcessStatus, RestartPolicy, StartRequest, StatusRequest,
            StopRequest, runner_service_client::RunnerServiceClient,
        },
        tester::v1::{RunTestsRequest, TestOutcome, tester_service_client::TesterServiceClient},
    },
    agents::{
        provisioner::v1::{
            ProvisionMode, ProvisionRequest, ReleaseRequest,
            provisioner_service_client::ProvisionerServiceClient,
        },
        resolver::v1::{DiagnoseRequest, Phase, resolver_service_client::ResolverServiceClient},
    },
    common::v1::{
        BackingService, BackingServiceKind, Component, ComponentKind, LogLine, PlanPatch, plan_patch::Change,
    },
    orchestrator::v1::{HealEvent, HealthEvent, RunGoal, RunState, TestResult, run_event},
};
use tokio_stream::{StreamExt as _, StreamMap};
use tokio_util::sync::CancellationToken;

use crate::{
    OrchestratorError, Result,
    heal::{RetryFrom, apply_patch, create_file, describe, redact, retry_from, same_patch},
    pipeline::{
        DEPENDENCY, Ended, HEALTH, PROVISIONER, RESOLVER, RUNNER, RunContext, Runner, Step, TESTER,
        failure_message, step_event,
    },
    store::{RunChange, RunComponent},
};

/// Why the setup stopped before its end.
pub(crate) enum Halt {
    /// The run was stopped (or ended) by someone else.
    Taken,
    /// The run fails with this message.
    Failed(String),
    /// The store failed.
    Store(OrchestratorError),
}

impl From<OrchestratorError> for Halt {
    fn from(err: OrchestratorError) -> Self {
        Self::Store(err)
    }
}

type Flow<T = ()> = std::result::Result<T, Halt>;

/// The health of a component that runs without probes.
pub const UNPROBED: &str = "unprobed";
/// The longest a health watch is asked to run before it is re-opened.
const WATCH_SECONDS: u64 = 24 * 3_600;

/// Why a component is not started for goal START, when it is not.
pub(crate) fn not_startable(component: &Component) -> Option<String> {
    let kind = ComponentKind::try_from(component.kind).unwrap_or(ComponentKind::Unspecified);
    match kind {
        ComponentKind::Library => return Some("it is a library (try goal TEST)".into()),
        ComponentKind::Cli => return Some("it is a command-line program, not a service".into()),
        ComponentKind::Web | ComponentKind::Worker | ComponentKind::Static | ComponentKind::Unspecified => {}
    }
    let start = component.start.as_ref().map_or("", |c| c.run.trim());
    start
        .is_empty()
        .then(|| "the plan has no start command for it".into())
}

/// The probe that tells whether `component` is up.
pub(crate) fn probe_for(component: &RunComponent) -> ProbeSpec {
    let probe = if component.url.is_empty() || component.kind == ComponentKind::Worker as i32 {
        probe_spec::Probe::Process(ProcessProbe { pid: component.pid })
    } else {
        probe_spec::Probe::Http(HttpProbe {
            base_url: component.url.clone(),
            paths: component.health_paths.clone(),
        })
    };
    ProbeSpec {
        probe: Some(probe),
        timeout_ms: 0,
    }
}

fn health_name(state: HealthState) -> &'static str {
    match state {
        HealthState::Healthy => "healthy",
        HealthState::Unhealthy => "unhealthy",
        HealthState::Starting | HealthState::Unspecified => "starting",
    }
}

/// The environment of a component: the install's, with the user's over it.
pub(crate) fn component_env(
    install: impl IntoIterator<Item = (String, String)>,
    user: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = install.into_iter().collect();
    env.extend(user.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

fn quote_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last lines:\n{}", lines.join("\n"))
    }
}

fn is_over(state: ProcessState) -> bool {
    matches!(
        state,
        ProcessState::Exited | ProcessState::Failed | ProcessState::Stopped
    )
}

async fn until_cancel<T>(cancel: &CancellationToken, work: impl Future<Output = Flow<T>>) -> Flow<T> {
    tokio::select! {
        () = cancel.cancelled() => Err(Halt::Taken),
        outcome = work => outcome,
    }
}

/// A run's started components and their open health watches.
#[derive(Debug)]
pub(crate) struct Monitor {
    pub run_id: String,
    pub components: Vec<RunComponent>,
    /// False when the health agent was skipped.
    pub probed: bool,
    watches: StreamMap<String, tonic::Streaming<WatchResponse>>,
}

impl Monitor {
    pub fn new(run_id: String, components: Vec<RunComponent>, probed: bool) -> Self {
        Self {
            run_id,
            components,
            probed,
            watches: StreamMap::new(),
        }
    }
}

impl Runner {
    async fn emit(&self, run_id: &str, change: RunChange, event: run_event::Event) -> Flow {
        match self.recorder.record(run_id, change, event).await? {
            Some(_) => Ok(()),
            None => Err(Halt::Taken),
        }
    }

    async fn enter(&self, run_id: &str, state: RunState, change: RunChange) -> Flow {
        match self.recorder.transition(run_id, state, change).await? {
            Some(_) => Ok(()),
            None => Err(Halt::Taken),
        }
    }

    async fn step(
        &self,
        run_id: &str,
        step: Step,
        status: &'static str,
        detail: String,
        elapsed: Duration,
    ) -> Flow {
        if status != "started" {
            crate::metrics::step(step.name(), status, elapsed);
        }
        self.emit(
            run_id,
            RunChange::default(),
            step_event(step, status, detail, elapsed),
        )
        .await
    }

    async fn notice(&self, run_id: &str, text: String) -> Flow {
        self.emit(run_id, RunChange::default(), run_event::Event::Notice(text))
            .await
    }

    /// Records a failed step and returns the failure that fails the run.
    async fn step_failed(&self, run_id: &str, step: Step, message: String, elapsed: Duration) -> Halt {
        tracing::info!(step = step.name(), error = %message, "run step failed");
        match self.step(run_id, step, "failed", message.clone(), elapsed).await {
            Ok(()) => Halt::Failed(message),
            Err(halt) => halt,
        }
    }

    /// The setup-and-run part of the pipeline, after analyze.
    pub(crate) async fn setup(
        &self,
        goal: RunGoal,
        ctx: &mut RunContext,
        cancel: &CancellationToken,
    ) -> Result<Ended> {
        let run_id = ctx.run_id.clone();
        // START_AND_TEST of a repository with nothing to start (a library):
        // its tests alone, as for TEST.
        let nothing_to_start = ctx
            .plan
            .as_ref()
            .is_some_and(|p| p.components.iter().all(|c| not_startable(c).is_some()));
        let outcome = match goal {
            RunGoal::Test => Box::pin(self.test_components(ctx, cancel)).await.map(|()| None),
            RunGoal::StartAndTest if nothing_to_start => {
                let notice = self
                    .notice(
                        &run_id,
                        "no component of the plan can be started; running the tests only".into(),
                    )
                    .await;
                match notice {
                    Ok(()) => Box::pin(self.test_components(ctx, cancel)).await.map(|()| None),
                    Err(halt) => Err(halt),
                }
            }
            RunGoal::StartAndTest => match Box::pin(self.start_components(ctx, cancel)).await {
                Ok(monitor) => Box::pin(self.test_running(ctx, &monitor, cancel))
                    .await
                    .map(|()| Some(monitor)),
                Err(halt) => Err(halt),
            },
            _ => Box::pin(self.start_components(ctx, cancel)).await.map(Some),
        };
        match outcome {
            Ok(Some(monitor)) => Ok(Ended::Running(Box::new(monitor))),
            Ok(None) => {
                self.recorder
                    .transition(&run_id, RunState::Succeeded, RunChange::default())
                    .await?;
                Ok(Ended::Done)
            }
            Err(Halt::Taken) => Ok(Ended::Taken),
            Err(Halt::Failed(message)) => self.fail(&run_id, message).await,
            Err(Halt::Store(err)) => Err(err),
        }
    }

    fn workspace_path(ctx: &RunContext) -> Flow<String> {
        ctx.workspace
            .as_ref()
            .map(|w| w.path.clone())
            .ok_or_else(|| Halt::Failed("the run has no workspace".into()))
    }

    /// Installs (and builds) one component; its environment for the runner.
    async fn install(
        &self,
        ctx: &RunContext,
        component: &Component,
        cancel: &CancellationToken,
    ) -> Flow<BTreeMap<String, String>> {
        let run_id = ctx.run_id.as_str();
        let name = component.name.as_str();
        if Step::Install.skipped_in(ctx) {
            let why = format!("{name}: the dependency agent was skipped on request");
            self.step(run_id, Step::Install, "skipped", why.clone(), Duration::ZERO)
                .await?;
            self.step(run_id, Step::Build, "skipped", why, Duration::ZERO)
                .await?;
            return Ok(component_env([], &ctx.env));
        }
        self.enter(run_id, RunState::Installing, RunChange::default())
            .await?;
        let started = Instant::now();
        self.step(run_id, Step::Install, "started", name.to_owned(), Duration::ZERO)
            .await?;
        let mut request = tonic::Request::new(InstallRequest {
            run_id: run_id.to_owned(),
            workspace_path: Self::workspace_path(ctx)?,
            component: Some(component.clone()),
            environment: ctx.environment.clone(),
            limits: Some(InstallLimits {
                timeout_seconds: self.config.install_timeout_seconds,
                // The tier's: an install is stopped past it, with the limit named.
                max_disk_bytes: ctx.step_limits.max_disk_bytes,
            }),
            owner_id: ctx.owner_id.clone(),
            step_limits: Some(ctx.step_limits),
        });
        request.set_timeout(self.config.install_deadline());
        let call = async {
            DependencyServiceClient::new(self.agents.dependency()?)
                .install(request)
                .await
                .map_err(|status| OrchestratorError::from_agent(DEPENDENCY, status))
        };
        let mut stream = match call.await {
            Ok(response) => response.into_inner(),
            Err(err) => {
                let message = failure_message(Step::Install, &err);
                return Err(self
                    .step_failed(run_id, Step::Install, message, started.elapsed())
                    .await);
            }
        };
        let mut build_started: Option<Instant> = None;
        let mut result = None;
        let mut lines = std::collections::VecDeque::with_capacity(crate::heal::TAIL_LINES);
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => return Err(Halt::Taken),
                message = stream.message() => message,
            };
            match message {
                Ok(Some(InstallResponse {
                    event: Some(install_response::Event::Log(line)),
                })) => {
                    if line.source == "build" && build_started.is_none() {
                        self.step(
                            run_id,
                            Step::Install,
                            "finished",
                            format!("{name}: dependencies installed"),
                            started.elapsed(),
                        )
                        .await?;
                        self.enter(run_id, RunState::Building, RunChange::default())
                            .await?;
                        let command = component.build.as_ref().map_or("", |b| b.run.as_str());
                        self.step(
                            run_id,
                            Step::Build,
                            "started",
                            format!("{name}: {command}"),
                            Duration::ZERO,
                        )
                        .await?;
                        build_started = Some(Instant::now());
                    }
                    if lines.len() == crate::heal::TAIL_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(line.text.clone());
                    self.emit(run_id, RunChange::default(), run_event::Event::Log(line))
                        .await?;
                }
                Ok(Some(InstallResponse {
                    event: Some(install_response::Event::Result(done)),
                })) => {
                    result = Some(done);
                    break;
                }
                Ok(Some(InstallResponse { event: None })) => {}
                Ok(None) => break,
                Err(status) => {
                    let step = if build_started.is_some() {
                        Step::Build
                    } else {
                        Step::Install
                    };
                    let since = build_started.unwrap_or(started);
                    let err = OrchestratorError::from_agent(DEPENDENCY, status);
                    let message = failure_message(step, &err);
                    return Err(self.step_failed(run_id, step, message, since.elapsed()).await);
                }
            }
        }
        let (step, since) = match build_started {
            Some(at) => (Step::Build, at),
            None => (Step::Install, started),
        };
        let Some(result) = result else {
            let message = format!(
                "{} failed: the dependency agent ended {name}'s install without a result",
                step.name()
            );
            return Err(self.step_failed(run_id, step, message, since.elapsed()).await);
        };
        if !result.success {
            ctx.failed(crate::heal::Failure {
                phase: if step == Step::Build {
                    Phase::Build
                } else {
                    Phase::Install
                } as i32,
                component: name.to_owned(),
                exit_code: result.exit_code,
                log_tail: if lines.len() > result.log_tail.len() {
                    lines.into()
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
            return Err(self.step_failed(run_id, step, message, since.elapsed()).await);
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
        self.step(run_id, step, "finished", detail, since.elapsed())
            .await?;
        if build_started.is_none() {
            self.step(
                run_id,
                Step::Build,
                "skipped",
                format!("{name}: no build command"),
                Duration::ZERO,
            )
            .await?;
        }
        Ok(component_env(result.env, &ctx.env))
    }

    async fn start_process(&self, request: StartRequest) -> Result<ProcessStatus> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.config.runner_deadline());
        RunnerServiceClient::new(self.agents.runner()?)
            .start(request)
            .await
            .map_err(|status| OrchestratorError::from_agent(RUNNER, status))?
            .into_inner()
            .status
            .ok_or(OrchestratorError::AgentIncomplete {
                agent: RUNNER,
                what: "status",
            })
    }

    pub(crate) async fn process_status(&self, process_id: &str) -> Result<ProcessStatus> {
        let mut request = tonic::Request::new(StatusRequest {
            process_id: process_id.to_owned(),
        });
        request.set_timeout(self.config.runner_deadline());
        RunnerServiceClient::new(self.agents.runner()?)
            .status(request)
            .await
            .map_err(|status| OrchestratorError::from_agent(RUNNER, status))?
            .into_inner()
            .status
            .ok_or(OrchestratorError::AgentIncomplete {
                agent: RUNNER,
                what: "status",
            })
    }

    /// The last `log_tail_lines` lines of a process's output.
    pub(crate) async fn process_tail(&self, process_id: &str) -> Vec<String> {
        self.process_tail_n(process_id, self.config.log_tail_lines).await
    }

    /// Keeps what a failed component left for the resolver: its last lines.
    async fn component_failed(
        &self,
        ctx: &RunContext,
        phase: Phase,
        component: &RunComponent,
        exit_code: i32,
    ) {
        let log_tail = self
            .process_tail_n(&component.process_id, crate::heal::TAIL_LINES)
            .await;
        if let Some(hit) = reporunner_sandbox::limit_hit(exit_code, &log_tail, &ctx.sandbox_limits()) {
            let _ = self
                .notice(&ctx.run_id, format!("{}: {hit}", component.name))
                .await;
        }
        ctx.failed(crate::heal::Failure {
            phase: phase as i32,
            component: component.name.clone(),
            exit_code,
            log_tail,
        });
    }

    /// The last `keep` lines of a process's output.
    pub(crate) async fn process_tail_n(&self, process_id: &str, keep: usize) -> Vec<String> {
        let mut request = tonic::Request::new(LogsRequest {
            process_id: process_id.to_owned(),
            follow: false,
            after_sequence: 0,
        });
        request.set_timeout(self.config.runner_deadline());
        let keep = keep.max(1);
        let mut tail = std::collections::VecDeque::with_capacity(keep);
        if let Ok(runner) = self.agents.runner()
            && let Ok(response) = RunnerServiceClient::new(runner).logs(request).await
        {
            let mut stream = response.into_inner();
            while let Ok(Some(message)) = stream.message().await {
                if let Some(line) = message.line {
                    if tail.len() == keep {
                        tail.pop_front();
                    }
                    tail.push_back(line.text);
                }
            }
        }
        tail.into()
    }

    /// Stops each process (idempotent at the runner); failures are logged.
    pub(crate) async fn stop_processes(&self, processes: &[String]) {
        if processes.is_empty() {
            return;
        }
        let runner = match self.agents.runner() {
            Ok(runner) => runner,
            Err(err) => {
                tracing::warn!(error = %err, "cannot stop the run's processes");
                return;
            }
        };
        for process_id in processes {
            let mut request = tonic::Request::new(StopRequest {
                process_id: process_id.clone(),
                grace_seconds: self.config.stop_grace_seconds,
            });
            request.set_timeout(
                self.config.runner_deadline()
                    + Duration::from_secs(u64::from(self.config.stop_grace_seconds)),
            );
            match RunnerServiceClient::new(runner.clone()).stop(request).await {
                Ok(_) => tracing::info!(process_id, "run process stopped"),
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => {
                    tracing::warn!(process_id, error = %status.message(), "cannot stop a run process");
                }
            }
        }
    }

    /// Install, build, start and probe every startable component; the run
    /// is RUNNING when this returns.
    ///
    /// A failed install, build, start or probe is healed when the resolver
    /// has a patch not tried yet (see [`crate::heal`]), at most the tier's
    /// `max_heal_attempts` times.
    async fn start_components(&self, ctx: &mut RunContext, cancel: &CancellationToken) -> Flow<Monitor> {
        let mut from = RetryFrom::Provision;
        let mut installed: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut heals = 0_u32;
        loop {
            ctx.take_failure();
            match self.start_attempt(ctx, cancel, from, &mut installed).await {
                Err(Halt::Failed(message)) => match self.heal(ctx, &mut heals).await? {
                    Healed::Retry(step) => {
                        let started = ctx.started.clone();
                        self.stop_processes(&started).await;
                        if step <= RetryFrom::Install {
                            installed.clear();
                        }
                        from = step;
                    }
                    Healed::No(summary) => {
                        return Err(Halt::Failed(match summary {
                            Some(summary) => format!("{message}\nresolver: {summary}"),
                            None => message,
                        }));
                    }
                },
                Ok(monitor) => {
                    ctx.installed = installed;
                    return Ok(monitor);
                }
                other => return other,
            }
        }
    }

    /// One go at provision, install, start and probe, from `from`.
    async fn start_attempt(
        &self,
        ctx: &mut RunContext,
        cancel: &CancellationToken,
        from: RetryFrom,
        installed: &mut BTreeMap<String, BTreeMap<String, String>>,
    ) -> Flow<Monitor> {
        let run_id = ctx.run_id.clone();
        let plan = ctx
            .plan
            .clone()
            .ok_or_else(|| Halt::Failed("the analyzer returned no plan".into()))?;
        let mut startable = Vec::new();
        let mut skipped = Vec::new();
        let first = from == RetryFrom::Provision && ctx.tried.is_empty();
        for component in &plan.components {
            match not_startable(component) {
                None => startable.push(component.clone()),
                Some(why) => {
                    if first {
                        self.notice(&run_id, format!("{} is not started: {why}", component.name))
                            .await?;
                    }
                    skipped.push(format!("{} ({why})", component.name));
                }
            }
        }
        if startable.is_empty() {
            return Err(Halt::Failed(if skipped.is_empty() {
                "start failed: the analyzer found no component to start in this repository".into()
            } else {
                format!(
                    "start failed: no component of the plan can be started: {}",
                    skipped.join("; ")
                )
            }));
        }
        until_cancel(cancel, Box::pin(self.provision(ctx, &startable))).await?;
        let mut envs = Vec::with_capacity(startable.len());
        for component in &startable {
            let env = match installed.get(&component.name) {
                Some(env) => env.clone(),
                None => {
                    let env = until_cancel(cancel, Box::pin(self.install(ctx, component, cancel))).await?;
                    installed.insert(component.name.clone(), env.clone());
                    env
                }
            };
            let mut env: BTreeMap<String, String> = env;
            for service in &component.backing_services {
                if let Some(provisioned) = ctx.provisioned.get(&service.kind) {
                    env.extend(provisioned.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            env.extend(ctx.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            envs.push(env);
        }
        for (component, env) in startable.iter().zip(&envs) {
            until_cancel(cancel, Box::pin(self.run_setup(ctx, component, env))).await?;
        }

        self.enter(&run_id, RunState::Starting, RunChange::default())
            .await?;
        let workspace_path = Self::workspace_path(ctx)?;
        let mut components = Vec::with_capacity(startable.len());
        for (component, env) in startable.iter().zip(envs) {
            let name = component.name.clone();
            let started = Instant::now();
            self.step(&run_id, Step::Start, "started", name.clone(), Duration::ZERO)
                .await?;
            // Not raced against cancellation: a process the runner started
            // must be known here, or it would be left behind.
            let status = self
                .start_process(StartRequest {
                    run_id: run_id.clone(),
                    workspace_path: workspace_path.clone(),
                    component: Some(component.clone()),
                    env: env.into_iter().collect(),
                    limits: Some(ctx.resource_limits()),
                    restart_policy: RestartPolicy::OnFailure.into(),
                    max_restarts: self.config.max_restarts,
                    bind_host: String::new(),
                    owner_id: ctx.owner_id.clone(),
                })
                .await;
            let status = match status {
                Ok(status) => status,
                Err(err) => {
                    let message = failure_message(Step::Start, &err);
                    ctx.failed(crate::heal::Failure {
                        phase: Phase::Start as i32,
                        component: name.clone(),
                        exit_code: 0,
                        log_tail: vec![message.clone()],
                    });
                    return Err(self
                        .step_failed(&run_id, Step::Start, message, started.elapsed())
                        .await);
                }
            };
            ctx.started.push(status.process_id.clone());
            components.push(RunComponent {
                name: name.clone(),
                url: status.url.clone(),
                health: "starting".into(),
                port: status.port,
                process_id: status.process_id.clone(),
                pid: status.pid,
                kind: component.kind,
                health_paths: component.health_paths.clone(),
            });
            self.emit(
                &run_id,
                RunChange {
                    components: Some(components.clone()),
                    ..RunChange::default()
                },
                step_event(
                    Step::Start,
                    "finished",
                    format!(
                        "{name}: pid {}{}{}",
                        status.pid,
                        if status.url.is_empty() {
                            String::new()
                        } else {
                            format!(" on {}", status.url)
                        },
                        if status.sandboxed { ", sandboxed" } else { "" }
                    ),
                    started.elapsed(),
                ),
            )
            .await?;
            crate::metrics::step(Step::Start.name(), "finished", started.elapsed());
            if !status.sandboxed && !status.sandbox_note.is_empty() {
                self.notice(&run_id, format!("{name}: {}", status.sandbox_note))
                    .await?;
            }
        }

        let probed = !Step::Probe.skipped_in(ctx);
        let mut monitor = Monitor::new(run_id.clone(), components, probed);
        self.enter(&run_id, RunState::Probing, RunChange::default())
            .await?;
        let started = Instant::now();
        let names: Vec<String> = monitor.components.iter().map(|c| c.name.clone()).collect();
        if probed {
            self.step(&run_id, Step::Probe, "started", names.join(", "), Duration::ZERO)
                .await?;
            if let Err(halt) = self.until_healthy(&mut monitor, cancel).await {
                if matches!(halt, Halt::Failed(_)) {
                    self.probe_failed(ctx, &monitor).await;
                }
                return Err(match halt {
                    Halt::Failed(message) => {
                        self.step_failed(&run_id, Step::Probe, message, started.elapsed())
                            .await
                    }
                    other => other,
                });
            }
            self.step(
                &run_id,
                Step::Probe,
                "finished",
                format!("healthy: {}", names.join(", ")),
                started.elapsed(),
            )
            .await?;
        } else {
            if let Err(halt) = self.until_processes_run(&mut monitor, cancel).await {
                if matches!(halt, Halt::Failed(_)) {
                    self.probe_failed(ctx, &monitor).await;
                }
                return Err(halt);
            }
            self.step(
                &run_id,
                Step::Probe,
                "skipped",
                "the health agent was skipped on request; components count as up once their processes run"
                    .into(),
                Duration::ZERO,
            )
            .await?;
        }
        for component in &monitor.components {
            if !component.url.is_empty() {
                self.emit(
                    &run_id,
                    RunChange::default(),
                    run_event::Event::Url(component.url.clone()),
                )
                .await?;
            }
        }
        self.enter(
            &run_id,
            RunState::Running,
            RunChange {
                components: Some(monitor.components.clone()),
                ..RunChange::default()
            },
        )
        .await?;
        Ok(monitor)
    }

    async fn open_watch(&self, component: &RunComponent) -> Result<tonic::Streaming<WatchResponse>> {
        let mut request = tonic::Request::new(WatchRequest {
            component: component.name.clone(),
            probes: vec![probe_for(component)],
            startup_grace_seconds: self.config.startup_grace_seconds,
            interval_ms: self.config.probe_interval_ms,
            failure_threshold: self.config.failure_threshold,
        });
        request.set_timeout(Duration::from_secs(WATCH_SECONDS));
        Ok(HealthServiceClient::new(self.agents.health()?)
            .watch(request)
            .await
            .map_err(|status| OrchestratorError::from_agent(HEALTH, status))?
            .into_inner())
    }

    /// Records a probe result that changes a component's health.
    async fn health_changed(&self, monitor: &mut Monitor, name: &str, result: Option<ProbeResult>) -> Flow {
        let Some(result) = result else {
            return Ok(());
        };
        let health = health_name(result.state());
        let Some(component) = monitor.components.iter_mut().find(|c| c.name == name) else {
            return Ok(());
        };
        // A re-opened watch starts over in STARTING: not a change.
        if component.health == health || (health == "starting" && component.health != "starting") {
            return Ok(());
        }
        component.health = health.to_owned();
        let event = run_event::Event::Health(HealthEvent {
            component: name.to_owned(),
            health: health.to_owned(),
            detail: result.detail,
        });
        let change = RunChange {
            components: Some(monitor.components.clone()),
            ..RunChange::default()
        };
        self.emit(&monitor.run_id, change, event).await
    }

    /// Fails when a component's process ended for good.
    async fn check_processes(&self, monitor: &Monitor) -> Flow {
        for component in &monitor.components {
            let status = match self.process_status(&component.process_id).await {
                Ok(status) => status,
                Err(OrchestratorError::AgentFailed { status, .. })
                    if status.code() == tonic::Code::NotFound =>
                {
                    return Err(Halt::Failed(format!(
                        "{}: the runner no longer knows its process {}",
                        component.name, component.process_id
                    )));
                }
                Err(err) => {
                    tracing::warn!(component = %component.name, error = %err, "cannot read a process status");
                    continue;
                }
            };
            if is_over(status.state()) {
                let tail = self.process_tail(&component.process_id).await;
                let how = match status.state() {
                    ProcessState::Stopped => "was stopped outside this run".to_owned(),
                    ProcessState::Exited => format!("exited with code {}", status.exit_code),
                    _ => format!(
                        "failed with exit code {} after {} restart(s)",
                        status.exit_code, status.restarts
                    ),
                };
                return Err(Halt::Failed(format!(
                    "{} {how}{}",
                    component.name,
                    quote_tail(&tail)
                )));
            }
        }
        Ok(())
    }

    /// Opens the watches of the components that have none.
    async fn reopen_watches(&self, monitor: &mut Monitor) {
        if !monitor.probed {
            return;
        }
        for component in &monitor.components {
            if monitor.watches.contains_key(&component.name) {
                continue;
            }
            match self.open_watch(component).await {
                Ok(stream) => {
                    monitor.watches.insert(component.name.clone(), stream);
                }
                Err(err) => {
                    tracing::warn!(component = %component.name, error = %err, "cannot open a health watch");
                }
            }
        }
    }

    /// Waits until every component is healthy; fails when one is unhealthy
    /// after its grace, or its process ends for good.
    async fn until_healthy(&self, monitor: &mut Monitor, cancel: &CancellationToken) -> Flow {
        for component in &monitor.components {
            let stream = self
                .open_watch(component)
                .await
                .map_err(|err| Halt::Failed(failure_message(Step::Probe, &err)))?;
            monitor.watches.insert(component.name.clone(), stream);
        }
        let mut poll = tokio::time::interval(self.config.status_poll());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = tokio::time::sleep(self.config.probe_deadline());
        tokio::pin!(deadline);
        let mut agent_error: Option<String> = None;
        loop {
            if monitor.components.iter().all(|c| c.health == "healthy") {
                return Ok(());
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(Halt::Taken),
                () = &mut deadline => {
                    let late: Vec<&RunComponent> =
                        monitor.components.iter().filter(|c| c.health != "healthy").collect();
                    let names: Vec<&str> = late.iter().map(|c| c.name.as_str()).collect();
                    let tail = match late.first() {
                        Some(c) => self.process_tail(&c.process_id).await,
                        None => Vec::new(),
                    };
                    return Err(Halt::Failed(format!(
                        "probe failed: {} did not become healthy within {} s{}{}",
                        names.join(", "),
                        self.config.probe_deadline().as_secs(),
                        agent_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(),
                        quote_tail(&tail)
                    )));
                }
                next = monitor.watches.next(), if !monitor.watches.is_empty() => match next {
                    Some((name, Ok(response))) => {
                        let unhealthy = response
                            .result
                            .as_ref()
                            .is_some_and(|r| r.state() == HealthState::Unhealthy);
                        let detail = response.result.as_ref().map(|r| r.detail.clone()).unwrap_or_default();
                        self.health_changed(monitor, &name, response.result).await?;
                        if unhealthy {
                            let process = monitor
                                .components
                                .iter()
                                .find(|c| c.name == name)
                                .map(|c| c.process_id.clone())
                                .unwrap_or_default();
                            let tail = self.process_tail(&process).await;
                            return Err(Halt::Failed(format!(
                                "probe failed: {name} did not become healthy within the start-up grace of {} s ({detail}){}",
                                self.config.startup_grace_seconds,
                                quote_tail(&tail)
                            )));
                        }
                    }
                    // The watch ends; the next tick re-opens it. A health
                    // agent that stays away shows in the deadline's message.
                    Some((name, Err(status))) => {
                        let err = OrchestratorError::from_agent(HEALTH, status);
                        tracing::warn!(component = %name, error = %err, "a health watch failed");
                        agent_error = Some(err.to_string());
                    }
                    None => {}
                },
                _ = poll.tick() => {
                    self.check_processes(monitor).await?;
                    self.reopen_watches(monitor).await;
                }
            }
        }
    }

    /// Without the health agent: waits until every process runs.
    async fn until_processes_run(&self, monitor: &mut Monitor, cancel: &CancellationToken) -> Flow {
        let until = Instant::now() + self.config.probe_deadline();
        for component in &mut monitor.components {
            loop {
                let status = until_cancel(cancel, async {
                    self.process_status(&component.process_id)
                        .await
                        .map_err(|err| Halt::Failed(failure_message(Step::Probe, &err)))
                })
                .await?;
                match status.state() {
                    ProcessState::Running => break,
                    state if is_over(state) || Instant::now() > until => {
                        let tail = self.process_tail(&component.process_id).await;
                        return Err(Halt::Failed(format!(
                            "start failed: {} is not running (exit code {}){}",
                            component.name,
                            status.exit_code,
                            quote_tail(&tail)
                        )));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            component.health = UNPROBED.into();
        }
        Ok(())
    }

    /// Keeps a RUNNING run under watch until it is stopped or a component
    /// fails for good.
    pub(crate) async fn monitor(&self, mut monitor: Monitor, cancel: &CancellationToken) -> Result<Ended> {
        let run_id = monitor.run_id.clone();
        match self.watch_running(&mut monitor, cancel).await {
            Ok(()) | Err(Halt::Taken) => Ok(Ended::Taken),
            Err(Halt::Failed(message)) => self.fail(&run_id, message).await,
            Err(Halt::Store(err)) => Err(err),
        }
    }

    async fn watch_running(&self, monitor: &mut Monitor, cancel: &CancellationToken) -> Flow {
        let mut poll = tokio::time::interval(self.config.status_poll());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Err(Halt::Taken),
                next = monitor.watches.next(), if !monitor.watches.is_empty() => {
                    if let Some((name, Ok(response))) = next {
                        self.health_changed(monitor, &name, response.result).await?;
                    }
                }
                _ = poll.tick() => {
                    self.check_processes(monitor).await?;
                    self.reopen_watches(monitor).await;
                }
            }
        }
    }

    /// Takes over a RUNNING run a previous orchestrator left: monitoring
    /// resumes when every process still runs at the runner; otherwise the
    /// run becomes INTERRUPTED (events and logs kept) and what is left of
    /// it is stopped. Spawn it.
    pub(crate) async fn resume(
        self,
        run_id: String,
        components: Vec<RunComponent>,
        live: std::sync::Arc<crate::live::LiveRun>,
    ) {
        let processes: Vec<String> = components.iter().map(|c| c.process_id.clone()).collect();
        let mut gone = None;
        for component in &components {
            match self.status_after_restart(&component.process_id).await {
                Ok(status) if !is_over(status.state()) => {}
                Ok(status) => {
                    gone = Some(format!(
                        "{}'s process ended ({})",
                        component.name,
                        status.state().as_str_name()
                    ));
                    break;
                }
                Err(err) => {
                    gone = Some(format!("{}'s process cannot be found: {err}", component.name));
                    break;
                }
            }
        }
        let started = Instant::now();
        let outcome = match gone {
            Some(why) => {
                let change = RunChange {
                    error: Some(format!(
                        "the orchestrator restarted while this run was running and {why}; create a new run"
                    )),
                    ..RunChange::default()
                };
                self.recorder
                    .transition(&run_id, RunState::Interrupted, change)
                    .await
                    .map(|_| Ended::Done)
            }
            None => {
                tracing::info!("monitoring of a running run resumed after a restart");
                let probed = components.iter().all(|c| c.health != UNPROBED);
                let notice = run_event::Event::Notice(
                    "the orchestrator restarted; the run's processes still run and are monitored again"
                        .into(),
                );
                match self.recorder.record(&run_id, RunChange::default(), notice).await {
                    Ok(Some(_)) => {
                        let monitor = Monitor::new(run_id.clone(), components, probed);
                        self.monitor(monitor, &live.cancel).await
                    }
                    Ok(None) => Ok(Ended::Taken),
                    Err(err) => Err(err),
                }
            }
        };
        self.log_end(&run_id, outcome, started).await;
        self.release(&run_id, &processes).await;
        if self.is_over(&run_id).await {
            self.release_backing(&run_id).await;
        }
        self.recorder.live.finish(&run_id);
    }

    /// A process's status, retried while the runner is unreachable (it may
    /// start beside this orchestrator).
    async fn status_after_restart(&self, process_id: &str) -> Result<ProcessStatus> {
        let until = Instant::now() + self.config.runner_deadline();
        loop {
            match self.process_status(process_id).await {
                Err(OrchestratorError::AgentUnavailable { .. } | OrchestratorError::AgentDeadline { .. })
                    if Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    /// Provision, install and build each component with a test command,
    /// then run its tests once through the tester. The run succeeds only
    /// when every component's tests PASSED; NO_TESTS, FAILED, TIMED_OUT and
    /// UNPARSED fail it, naming each. Test failures are not healed.
    async fn test_components(&self, ctx: &mut RunContext, cancel: &CancellationToken) -> Flow {
        let testable = Self::testable(ctx)?;
        if testable.is_empty() {
            return Err(Halt::Failed(
                "test failed: no component of the plan has a test command".into(),
            ));
        }
        until_cancel(cancel, Box::pin(self.provision(ctx, &testable))).await?;
        let mut envs = Vec::with_capacity(testable.len());
        for component in &testable {
            let env = until_cancel(cancel, Box::pin(self.install(ctx, component, cancel))).await?;
            envs.push(self.test_env(ctx, component, env, &[]));
        }
        let mut results = Vec::with_capacity(testable.len());
        for (component, env) in testable.iter().zip(envs) {
            results.push(self.run_test(ctx, component, env, cancel).await?);
        }
        match tests_verdict(&results) {
            None => Ok(()),
            Some(message) => {
                // The first component that did not pass, in its own words.
                let tail = results
                    .iter()
                    .find(|(r, _)| r.outcome() != TestOutcome::Passed)
                    .map(|(_, tail)| {
                        let keep = tail.len().saturating_sub(self.config.log_tail_lines);
                        tail[keep..].to_vec()
                    })
                    .unwrap_or_default();
                Err(Halt::Failed(format!("{message}{}", quote_tail(&tail))))
            }
        }
    }

    /// The plan's components with a test command, in plan order.
    fn testable(ctx: &RunContext) -> Flow<Vec<Component>> {
        let plan = ctx
            .plan
            .as_ref()
            .ok_or_else(|| Halt::Failed("the analyzer returned no plan".into()))?;
        Ok(plan
            .components
            .iter()
            .filter(|c| c.test.as_ref().is_some_and(|t| !t.run.trim().is_empty()))
            .cloned()
            .collect())
    }

    /// A component's test env: its install's, its backing services', the
    /// running components' URLs (`APP_URL` and `APP_PORT`: its own when it
    /// runs, else the first one with a URL), then the user's.
    fn test_env(
        &self,
        ctx: &RunContext,
        component: &Component,
        installed: BTreeMap<String, String>,
        running: &[RunComponent],
    ) -> BTreeMap<String, String> {
        let mut env = installed;
        for service in &component.backing_services {
            if let Some(provisioned) = ctx.provisioned.get(&service.kind) {
                env.extend(provisioned.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let app = running
            .iter()
            .find(|c| c.name == component.name && !c.url.is_empty())
            .or_else(|| running.iter().find(|c| !c.url.is_empty()));
        if let Some(app) = app {
            env.insert("APP_URL".into(), app.url.clone());
            env.insert("APP_PORT".into(), app.port.to_string());
        }
        env.extend(ctx.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// START_AND_TEST, once every component is up: each component's tests
    /// against the running app. The run stays RUNNING whatever they say;
    /// failures are recorded and told in a notice.
    async fn test_running(
        &self,
        ctx: &mut RunContext,
        monitor: &Monitor,
        cancel: &CancellationToken,
    ) -> Flow {
        let run_id = ctx.run_id.clone();
        let testable = Self::testable(ctx)?;
        if testable.is_empty() {
            return self
                .step(
                    &run_id,
                    Step::Test,
                    "skipped",
                    "no component of the plan has a test command".into(),
                    Duration::ZERO,
                )
                .await;
        }
        let mut results = Vec::with_capacity(testable.len());
        for component in &testable {
            let installed = match ctx.installed.get(&component.name) {
                Some(env) => env.clone(),
                None => {
                    // A library beside the app: installed only for its tests.
                    until_cancel(
                        cancel,
                        Box::pin(self.provision(ctx, std::slice::from_ref(component))),
                    )
                    .await?;
                    until_cancel(cancel, Box::pin(self.install(ctx, component, cancel))).await?
                }
            };
            let env = self.test_env(ctx, component, installed, &monitor.components);
            results.push(self.run_test(ctx, component, env, cancel).await?);
        }
        let verdict = tests_verdict(&results);
        self.enter(
            &run_id,
            RunState::Running,
            RunChange {
                components: Some(monitor.components.clone()),
                ..RunChange::default()
            },
        )
        .await?;
        if let Some(message) = verdict {
            self.notice(&run_id, format!("{message}; the components keep running"))
                .await?;
        }
        Ok(())
    }

    /// Runs one component's tests through the tester and records the result
    /// (a `TestResult` event, `Run.test_results`, the output's last lines as
    /// "test" log lines). A failing test is a result, not a halt; a tester
    /// that cannot run them halts the run.
    async fn run_test(
        &self,
        ctx: &mut RunContext,
        component: &Component,
        env: BTreeMap<String, String>,
        cancel: &CancellationToken,
    ) -> Flow<(TestResult, Vec<String>)> {
        let run_id = ctx.run_id.clone();
        let name = component.name.clone();
        self.enter(&run_id, RunState::Testing, RunChange::default())
            .await?;
        let started = Instant::now();
        let command = component.test.as_ref().map_or("", |t| t.run.as_str());
        self.step(
            &run_id,
            Step::Test,
            "started",
            format!("{name}: {command}"),
            Duration::ZERO,
        )
        .await?;
        let mut request = tonic::Request::new(RunTestsRequest {
            run_id: run_id.clone(),
            workspace_path: Self::workspace_path(ctx)?,
            component: Some(component.clone()),
            env: env.into_iter().collect(),
            timeout_seconds: self.config.test_timeout_seconds,
            owner_id: ctx.owner_id.clone(),
            limits: Some(ctx.step_limits),
        });
        request.set_timeout(self.config.test_deadline());
        // Dropping the call (cancellation) ends the tests at the tester.
        let call = async {
            let tester = self
                .agents
                .tester()
                .map_err(|err| Halt::Failed(failure_message(Step::Test, &err)))?;
            TesterServiceClient::new(tester)
                .run_tests(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| {
                    Halt::Failed(failure_message(
                        Step::Test,
                        &OrchestratorError::from_agent(TESTER, status),
                    ))
                })
        };
        let response = match until_cancel(cancel, call).await {
            Ok(response) => response,
            Err(Halt::Failed(message)) => {
                return Err(self
                    .step_failed(&run_id, Step::Test, message, started.elapsed())
                    .await);
            }
            Err(other) => return Err(other),
        };
        for (index, text) in response.log_tail.iter().enumerate() {
            // Numbered from 1: GetRunLogs returns lines after a sequence.
            let line = LogLine {
                source: "test".into(),
                text: text.clone(),
                sequence: index as u64 + 1,
                ..LogLine::default()
            };
            self.emit(&run_id, RunChange::default(), run_event::Event::Log(line))
                .await?;
        }
        let result = TestResult {
            component: name.clone(),
            framework: response.framework.clone(),
            outcome: response.outcome,
            counts: response.counts,
            duration_ms: response.duration_ms,
            exit_code: response.exit_code,
            command: response.command.clone(),
            summary: response.summary.clone(),
        };
        ctx.test_results.push(result.clone());
        self.emit(
            &run_id,
            RunChange {
                test_results: Some(ctx.test_results.clone()),
                ..RunChange::default()
            },
            run_event::Event::Test(result.clone()),
        )
        .await?;
        let passed = result.outcome() == TestOutcome::Passed;
        if !passed
            && let Some(hit) =
                reporunner_sandbox::limit_hit(response.exit_code, &response.log_tail, &ctx.sandbox_limits())
        {
            self.notice(&run_id, format!("{name}: tests {hit}")).await?;
        }
        let detail = format!("{name}: {}: {}", outcome_name(result.outcome()), result.summary);
        let status = if passed { "finished" } else { "failed" };
        self.step(&run_id, Step::Test, status, detail, started.elapsed())
            .await?;
        Ok((result, response.log_tail))
    }
}

/// The outcome as the user reads it.
pub fn outcome_name(outcome: TestOutcome) -> &'static str {
    match outcome {
        TestOutcome::Passed => "passed",
        TestOutcome::Failed => "failed",
        TestOutcome::NoTests => "no tests",
        TestOutcome::TimedOut => "timed out",
        TestOutcome::Unparsed => "unparsed",
        TestOutcome::Unspecified => "unknown",
    }
}

/// Why the tests of a run did not all pass, naming each component that did
/// not; `None` when every one PASSED.
pub(crate) fn tests_verdict(results: &[(TestResult, Vec<String>)]) -> Option<String> {
    let bad: Vec<String> = results
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.outcome() != TestOutcome::Passed)
        .map(|r| {
            let framework = if r.framework.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.framework)
            };
            format!(
                "{}{framework}: {}: {}",
                r.component,
                outcome_name(r.outcome()),
                r.summary
            )
        })
        .collect();
    (!bad.is_empty()).then(|| format!("test failed: {}", bad.join("; ")))
}

/// What the resolver made of a failure.
pub(crate) enum Healed {
    /// The plan was patched: go back to this step.
    Retry(RetryFrom),
    /// Nothing new to try; the diagnosis's summary when there was one.
    No(Option<String>),
}

impl Runner {
    /// Provisions the backing services of `components` not provisioned yet
    /// in this run, one per kind.
    async fn provision(&self, ctx: &mut RunContext, components: &[Component]) -> Flow {
        let run_id = ctx.run_id.clone();
        let mut wanted: BTreeMap<i32, BackingService> = BTreeMap::new();
        for service in components.iter().flat_map(|c| &c.backing_services) {
            if ctx.provisioned.contains_key(&service.kind) {
                continue;
            }
            let entry = wanted.entry(service.kind).or_insert_with(|| BackingService {
                kind: service.kind,
                version: service.version.clone(),
                ..BackingService::default()
            });
            for name in &service.env_vars {
                if !entry.env_vars.contains(name) {
                    entry.env_vars.push(name.clone());
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let kinds: Vec<&str> = wanted.values().map(|s| kind_name(s.kind)).collect();
        if Step::Provision.skipped_in(ctx) {
            let why = format!(
                "{}: the provisioner was skipped on request; the components get no backing service",
                kinds.join(", ")
            );
            // Not again on a retry.
            for kind in wanted.keys() {
                ctx.provisioned.insert(*kind, BTreeMap::new());
            }
            return self
                .step(&run_id, Step::Provision, "skipped", why, Duration::ZERO)
                .await;
        }
        let provisioner = match self.agents.provisioner() {
            Ok(channel) => channel,
            Err(_) => {
                for kind in wanted.keys() {
                    ctx.provisioned.insert(*kind, BTreeMap::new());
                }
                return self
                    .notice(
                        &run_id,
                        format!(
                            "the components need {} but this orchestrator has no provisioner (endpoints.provisioner); they get none",
                            kinds.join(", ")
                        ),
                    )
                    .await;
            }
        };
        self.enter(&run_id, RunState::Provisioning, RunChange::default())
            .await?;
        let run_dir = self.config.provision_run_dir(&run_id);
        for (kind, service) in wanted {
            let what = kind_name(kind);
            let started = Instant::now();
            self.step(
                &run_id,
                Step::Provision,
                "started",
                what.to_owned(),
                Duration::ZERO,
            )
            .await?;
            let mut request = tonic::Request::new(ProvisionRequest {
                run_id: run_id.clone(),
                service: Some(service),
                run_dir: run_dir.display().to_string(),
            });
            request.set_timeout(self.config.provision_deadline());
            let response = ProvisionerServiceClient::new(provisioner.clone())
                .provision(request)
                .await
                .map_err(|status| OrchestratorError::from_agent(PROVISIONER, status));
            let response = match response {
                Ok(response) => response.into_inner(),
                Err(err) => {
                    let message = redact(&failure_message(Step::Provision, &err));
                    return Err(self
                        .step_failed(&run_id, Step::Provision, message, started.elapsed())
                        .await);
                }
            };
            let how = match response.mode() {
                ProvisionMode::Reused => "reused the shared server",
                ProvisionMode::Started => "started a private server",
                ProvisionMode::Unspecified => "provisioned",
            };
            let url = response
                .env
                .iter()
                .find(|(k, _)| k.as_str() == "DATABASE_URL" || k.as_str() == "REDIS_URL")
                .map(|(k, v)| format!(", {k}={}", redact(v)))
                .unwrap_or_default();
            let names: Vec<&str> = response.env.keys().map(String::as_str).collect();
            let detail = format!(
                "{what}: {how} (resource {}){url}; env {}",
                response.resource_id,
                names.join(", ")
            );
            ctx.provisioned.insert(kind, response.env.into_iter().collect());
            self.step(&run_id, Step::Provision, "finished", detail, started.elapsed())
                .await?;
        }
        Ok(())
    }

    /// Releases every backing service of the run; a failure is a notice.
    pub(crate) async fn release_backing(&self, run_id: &str) {
        let Ok(provisioner) = self.agents.provisioner() else {
            return;
        };
        let mut request = tonic::Request::new(ReleaseRequest {
            run_id: run_id.to_owned(),
            resource_ids: Vec::new(),
        });
        request.set_timeout(self.config.provision_deadline());
        match ProvisionerServiceClient::new(provisioner).release(request).await {
            Ok(response) => {
                let released = response.into_inner().released;
                if !released.is_empty() {
                    tracing::info!(run_id, released = released.len(), "backing services released");
                }
            }
            Err(status) => {
                let text = format!(
                    "the run's backing services could not be released: {}",
                    redact(status.message())
                );
                tracing::warn!(run_id, error = %text, "release failed");
                let _ = self
                    .recorder
                    .record(run_id, RunChange::default(), run_event::Event::Notice(text))
                    .await;
            }
        }
    }

    /// Runs each of the component's setup commands once through the runner,
    /// after install and before start, with the component's env.
    async fn run_setup(
        &self,
        ctx: &mut RunContext,
        component: &Component,
        env: &BTreeMap<String, String>,
    ) -> Flow {
        let run_id = ctx.run_id.clone();
        for (index, command) in component.setup.iter().enumerate() {
            let name = format!("{}-setup-{}", component.name, index + 1);
            let started = Instant::now();
            self.step(
                &run_id,
                Step::Start,
                "started",
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
            let status = self
                .start_process(StartRequest {
                    run_id: run_id.clone(),
                    workspace_path: Self::workspace_path(ctx)?,
                    component: Some(one_shot),
                    env: env.clone().into_iter().collect(),
                    limits: Some(ctx.resource_limits()),
                    restart_policy: RestartPolicy::Never.into(),
                    max_restarts: 0,
                    bind_host: String::new(),
                    owner_id: ctx.owner_id.clone(),
                })
                .await;
            let status = match status {
                Ok(status) => status,
                Err(err) => {
                    let message = failure_message(Step::Start, &err);
                    return Err(self
                        .step_failed(&run_id, Step::Start, message, started.elapsed())
                        .await);
                }
            };
            ctx.started.push(status.process_id.clone());
            let until = Instant::now() + self.config.install_deadline();
            let status = loop {
                let status = self
                    .process_status(&status.process_id)
                    .await
                    .map_err(|err| Halt::Failed(failure_message(Step::Start, &err)))?;
                if is_over(status.state()) || Instant::now() > until {
                    break status;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            };
            if status.state() != ProcessState::Exited || status.exit_code != 0 {
                let tail = self
                    .process_tail_n(&status.process_id, crate::heal::TAIL_LINES)
                    .await;
                let short: Vec<String> = tail
                    .iter()
                    .rev()
                    .take(self.config.log_tail_lines)
                    .rev()
                    .cloned()
                    .collect();
                ctx.failed(crate::heal::Failure {
                    phase: Phase::Setup as i32,
                    component: component.name.clone(),
                    exit_code: status.exit_code,
                    log_tail: tail,
                });
                let message = format!(
                    "start failed: the setup command `{}` of {} exited with code {}{}",
                    command.run,
                    component.name,
                    status.exit_code,
                    quote_tail(&short)
                );
                return Err(self
                    .step_failed(&run_id, Step::Start, message, started.elapsed())
                    .await);
            }
            self.step(
                &run_id,
                Step::Start,
                "finished",
                format!("{name}: exit code 0"),
                started.elapsed(),
            )
            .await?;
        }
        Ok(())
    }

    /// Keeps what a failed probe left for the resolver: the first component
    /// that is not healthy, its exit code and last lines.
    async fn probe_failed(&self, ctx: &RunContext, monitor: &Monitor) {
        let Some(component) = monitor
            .components
            .iter()
            .find(|c| c.health != "healthy" && c.health != UNPROBED)
            .or_else(|| monitor.components.first())
        else {
            return;
        };
        let (phase, exit_code) = match self.process_status(&component.process_id).await {
            Ok(status) if is_over(status.state()) => (Phase::Start, status.exit_code),
            _ => (Phase::Probe, 0),
        };
        self.component_failed(ctx, phase, component, exit_code).await;
    }

    /// Asks the resolver about the last failure and applies the first
    /// diagnosis with patches not tried yet in this run.
    async fn heal(&self, ctx: &mut RunContext, heals: &mut u32) -> Flow<Healed> {
        let run_id = ctx.run_id.clone();
        let Some(failure) = ctx.take_failure() else {
            return Ok(Healed::No(None));
        };
        if ctx.skip_agents.iter().any(|a| a == RESOLVER) {
            return Ok(Healed::No(None));
        }
        let Ok(resolver) = self.agents.resolver() else {
            return Ok(Healed::No(None));
        };
        let Some(mut plan) = ctx.plan.clone() else {
            return Ok(Healed::No(None));
        };
        let mut request = tonic::Request::new(DiagnoseRequest {
            phase: failure.phase,
            component: failure.component.clone(),
            exit_code: failure.exit_code,
            log_tail: failure.log_tail.clone(),
            plan: Some(plan.clone()),
            environment: ctx.environment.clone(),
            tried: ctx.tried.clone(),
        });
        request.set_timeout(self.config.diagnose_deadline());
        let diagnoses = match ResolverServiceClient::new(resolver).diagnose(request).await {
            Ok(response) => response.into_inner().diagnoses,
            Err(status) => {
                tracing::warn!(error = %status.message(), "the resolver failed");
                return Ok(Healed::No(None));
            }
        };
        let summary = diagnoses.first().map(|d| format!("{} ({})", d.summary, d.cause));
        if *heals >= ctx.max_heal_attempts {
            let summary = summary.map(|s| {
                format!(
                    "{s}; not healed: your tier allows {} heal attempt(s) per run",
                    ctx.max_heal_attempts
                )
            });
            return Ok(Healed::No(summary));
        }
        let workspace = Self::workspace_path(ctx)?;
        for diagnosis in diagnoses {
            let new: Vec<PlanPatch> = diagnosis
                .patches
                .iter()
                .filter(|p| !ctx.tried.iter().any(|t| same_patch(t, p)))
                .cloned()
                .collect();
            if new.is_empty() {
                continue;
            }
            let mut applied = Vec::new();
            for patch in new {
                ctx.tried.push(patch.clone());
                let mut outcome = apply_patch(&mut plan, &patch);
                if outcome.is_ok()
                    && let Some(Change::CreateFile(file)) = &patch.change
                {
                    outcome =
                        create_file(std::path::Path::new(&workspace), &file.path, &file.content).map(drop);
                }
                match outcome {
                    Ok(()) => applied.push(patch),
                    Err(why) => {
                        self.notice(
                            &run_id,
                            format!("patch not applied ({}): {why}", describe(&patch)),
                        )
                        .await?;
                    }
                }
            }
            let Some(from) = applied.iter().map(retry_from).min() else {
                continue;
            };
            *heals += 1;
            ctx.plan = Some(plan.clone());
            let event = run_event::Event::Heal(HealEvent {
                attempt: *heals,
                cause: diagnosis.cause.clone(),
                summary: diagnosis.summary.clone(),
                patches: applied.clone(),
                retry_from: from.name().to_owned(),
            });
            let change = RunChange {
                plan: Some(plan),
                attempts: Some(*heals + 1),
                ..RunChange::default()
            };
            self.emit(&run_id, change, event).await?;
            tracing::info!(
                cause = %diagnosis.cause,
                patches = %applied.iter().map(describe).collect::<Vec<_>>().join("; "),
                retry_from = from.name(),
                "run healed"
            );
            return Ok(Healed::Retry(from));
        }
        Ok(Healed::No(summary))
    }
}

fn kind_name(kind: i32) -> &'static str {
    match BackingServiceKind::try_from(kind).unwrap_or(BackingServiceKind::Unspecified) {
        BackingServiceKind::Postgresql => "postgresql",
        BackingServiceKind::Mysql => "mysql",
        BackingServiceKind::Redis => "redis",
        BackingServiceKind::Mongodb => "mongodb",
        BackingServiceKind::Rabbitmq => "rabbitmq",
        BackingServiceKind::Unspecified => "unknown backing service",
    }
}

#[cfg(test)]
mod tests {
    use reporunner_proto::common::v1::Command;

    use super::*;

    fn component(kind: ComponentKind, start: &str) -> Component {
        Component {
            name: "c".into(),
            kind: kind.into(),
            start: Some(Command {
                run: start.into(),
                ..Command::default()
            }),
            ..Component::default()
        }
    }

    #[test]
    fn services_start_and_libraries_and_clis_do_not() {
        for kind in [
            ComponentKind::Web,
            ComponentKind::Worker,
            ComponentKind::Static,
            ComponentKind::Unspecified,
        ] {
            assert_eq!(not_startable(&component(kind, "python app.py")), None, "{kind:?}");
        }
        let library = not_startable(&component(ComponentKind::Library, "")).unwrap();
        assert!(
            library.contains("library") && library.contains("TEST"),
            "{library}"
        );
        assert!(not_startable(&component(ComponentKind::Cli, "tool")).is_some());
        let missing = not_startable(&component(ComponentKind::Web, "  ")).unwrap();
        assert!(missing.contains("no start command"), "{missing}");
    }

    #[test]
    fn web_components_get_http_probes_and_workers_process_probes() {
        let web = RunComponent {
            name: "web".into(),
            url: "http://127.0.0.1:5000".into(),
            pid: 42,
            kind: ComponentKind::Web.into(),
            health_paths: vec!["/health".into()],
            ..RunComponent::default()
        };
        match probe_for(&web).probe {
            Some(probe_spec::Probe::Http(http)) => {
                assert_eq!(http.base_url, "http://127.0.0.1:5000");
                assert_eq!(http.paths, vec!["/health".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        let worker = RunComponent {
            kind: ComponentKind::Worker.into(),
            ..web
        };
        assert_eq!(
            probe_for(&worker).probe,
            Some(probe_spec::Probe::Process(ProcessProbe { pid: 42 }))
        );
    }

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

    #[test]
    fn only_passed_tests_pass_and_each_other_is_named() {
        let result = |component: &str, outcome: TestOutcome, summary: &str| {
            (
                TestResult {
                    component: component.into(),
                    framework: "pytest".into(),
                    outcome: outcome.into(),
                    summary: summary.into(),
                    ..TestResult::default()
                },
                Vec::new(),
            )
        };
        assert_eq!(
            tests_verdict(&[result("api", TestOutcome::Passed, "3 passed")]),
            None
        );
        let verdict = tests_verdict(&[
            result("api", TestOutcome::Passed, "3 passed"),
            result("lib", TestOutcome::NoTests, "no tests ran"),
            result("web", TestOutcome::Unparsed, "no summary"),
        ])
        .unwrap();
        assert!(verdict.starts_with("test failed: "), "{verdict}");
        assert!(!verdict.contains("api"), "{verdict}");
        assert!(
            verdict.contains("lib (pytest): no tests: no tests ran"),
            "{verdict}"
        );
        assert!(verdict.contains("web (pytest): unparsed"), "{verdict}");
    }

    #[test]
    fn failures_quote_the_last_lines() {
        assert_eq!(quote_tail(&[]), "");
        assert_eq!(quote_tail(&["a".into(), "b".into()]), "; last lines:\na\nb");
        assert!(is_over(ProcessState::Failed) && !is_over(ProcessState::Starting));
        assert_eq!(health_name(HealthState::Unspecified), "starting");
    }
}
