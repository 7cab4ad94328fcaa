//! The run pipeline: an ordered list of [`Step`]s, each calling one agent
//! under its own deadline, raced against the run's cancellation.
//!
//! Every step leaves a trail of events: the run's state as the step starts
//! (when the step has one), then a [`StepEvent`] `started`, and `finished`,
//! `failed` or `skipped` with its duration and a detail. A failed step fails
//! the run with the agent's message in `Run.error`. Fetch, detect and analyze
//! are one agent call each ([`Step::execute`]); install, build, start, probe
//! and test work per component and live in [`crate::setup`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use reporunner_proto::{
    agents::{
        analyzer::v1::{AnalyzeRequest, analyzer_service_client::AnalyzerServiceClient},
        env_detector::v1::{DetectRequest, env_detector_service_client::EnvDetectorServiceClient},
        source::v1::{
            FetchLimits, FetchRequest, GitSource, LocalSource, fetch_request,
            source_service_client::SourceServiceClient,
        },
    },
    common::v1::{Environment, Platform, RunPlan, Workspace},
    orchestrator::v1::{RepoSource, RunGoal, RunState, StepEvent, repo_source, run_event},
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    Agents, OrchestratorConfig, OrchestratorError, Result,
    live::{LiveRun, Recorder},
    store::{RunChange, is_terminal},
};

pub(crate) const ENV_DETECTOR: &str = "env-detector";
pub(crate) const SOURCE: &str = "source";
pub(crate) const ANALYZER: &str = "analyzer";
pub(crate) const DEPENDENCY: &str = "dependency";
pub(crate) const RUNNER: &str = "runner";
pub(crate) const HEALTH: &str = "health";
pub(crate) const PROVISIONER: &str = "provisioner";
pub(crate) const RESOLVER: &str = "resolver";
pub(crate) const TESTER: &str = "tester";

/// One step of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Clone or copy the repository into a workspace (source agent).
    Fetch,
    /// Detect the host (env-detector).
    Detect,
    /// Decide how to run the workspace (analyzer).
    Analyze,
    /// Supply the backing services the components need (provisioner).
    Provision,
    /// Install each component's dependencies (dependency agent).
    Install,
    /// Run each component's build command (the dependency agent runs it
    /// after the install; its lines have the source "build").
    Build,
    /// Start each startable component (runner agent).
    Start,
    /// Wait until each started component is healthy (health agent).
    Probe,
    /// Run each component's test command once and read the counts (tester
    /// agent).
    Test,
}

impl Step {
    /// The name in [`StepEvent::step`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Detect => "detect",
            Self::Analyze => "analyze",
            Self::Provision => "provision",
            Self::Install => "install",
            Self::Build => "build",
            Self::Start => "start",
            Self::Probe => "probe",
            Self::Test => "test",
        }
    }

    /// The run's state while this step runs.
    pub fn state(self) -> RunState {
        match self {
            Self::Fetch => RunState::Fetching,
            Self::Detect => RunState::Detecting,
            Self::Analyze => RunState::Analyzing,
            Self::Provision => RunState::Provisioning,
            Self::Install => RunState::Installing,
            Self::Build => RunState::Building,
            Self::Start => RunState::Starting,
            Self::Probe => RunState::Probing,
            Self::Test => RunState::Testing,
        }
    }

    /// The agent it calls, as named in `CreateRunRequest.skip_agents`.
    pub fn agent(self) -> &'static str {
        match self {
            Self::Fetch => SOURCE,
            Self::Detect => ENV_DETECTOR,
            Self::Analyze => ANALYZER,
            Self::Provision => PROVISIONER,
            Self::Install | Self::Build => DEPENDENCY,
            Self::Start => RUNNER,
            Self::Test => TESTER,
            Self::Probe => HEALTH,
        }
    }

    /// Whether the user may skip it: the others produce what later steps
    /// need. Skipping "dependency" skips install and build (the component
    /// runs with what the host has); skipping "health" counts a component
    /// as running once its process runs.
    pub(crate) fn skippable(self) -> bool {
        match self {
            Self::Detect | Self::Provision | Self::Install | Self::Build | Self::Probe => true,
            Self::Fetch | Self::Analyze | Self::Start | Self::Test => false,
        }
    }

    /// Whether the user asked to skip it.
    pub(crate) fn skipped_in(self, ctx: &RunContext) -> bool {
        self.skippable() && ctx.skip_agents.iter().any(|a| a == self.agent())
    }

    /// Whether it works per component (see [`crate::setup`]) rather than as
    /// one agent call.
    fn per_component(self) -> bool {
        match self {
            Self::Provision | Self::Install | Self::Build | Self::Start | Self::Probe | Self::Test => true,
            Self::Fetch | Self::Detect | Self::Analyze => false,
        }
    }

    pub fn deadline(self, config: &OrchestratorConfig) -> Duration {
        match self {
            Self::Fetch => config.fetch_deadline(),
            Self::Detect => config.detect_deadline(),
            Self::Analyze => config.analyze_deadline(),
            Self::Provision => config.provision_deadline(),
            Self::Install | Self::Build => config.install_deadline(),
            Self::Start => config.runner_deadline(),
            Self::Probe => config.probe_deadline(),
            Self::Test => config.test_deadline(),
        }
    }
}

/// The steps of one run, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    goal: RunGoal,
    steps: Vec<Step>,
}

impl Pipeline {
    /// The steps that achieve `goal`: ANALYZE stops after the plan, START
    /// installs, builds, starts and probes every startable component, TEST
    /// installs, builds and runs the test commands, START_AND_TEST does what
    /// START does, then runs the tests against the running components.
    pub fn for_goal(goal: RunGoal) -> Result<Self> {
        let analyze = [Step::Fetch, Step::Detect, Step::Analyze];
        let steps = match goal {
            RunGoal::Unspecified | RunGoal::Analyze => analyze.to_vec(),
            RunGoal::Start => [
                &analyze[..],
                &[Step::Install, Step::Build, Step::Start, Step::Probe],
            ]
            .concat(),
            RunGoal::Test => [&analyze[..], &[Step::Install, Step::Build, Step::Test]].concat(),
            RunGoal::StartAndTest => [
                &analyze[..],
                &[Step::Install, Step::Build, Step::Start, Step::Probe, Step::Test],
            ]
            .concat(),
        };
        let goal = if goal == RunGoal::Unspecified {
            RunGoal::Analyze
        } else {
            goal
        };
        Ok(Self { goal, steps })
    }

    pub fn goal(&self) -> RunGoal {
        self.goal
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// What a run carries from step to step.
#[derive(Clone, Debug, Default)]
pub struct RunContext {
    pub run_id: String,
    pub owner_id: String,
    pub source: RepoSource,
    pub limits: FetchLimits,
    pub platform_override: Platform,
    pub skip_agents: Vec<String>,
    /// Set by fetch, or up front when the run re-analyzes a workspace.
    pub workspace: Option<Workspace>,
    pub environment: Option<Environment>,
    pub plan: Option<RunPlan>,
    /// The whole run's limit, from the caller's tier; `None` for none.
    pub run_deadline: Option<Duration>,
    /// `CreateRunRequest.env`: applied over the plan's and the install's env.
    pub env: std::collections::BTreeMap<String, String>,
    /// The caller's tier limit in seconds (0: none), for the runner.
    pub max_run_seconds: u32,
    /// The caller's tier's sandbox limits for every step that runs the
    /// repository's code (zero fields: the agents' defaults).
    pub step_limits: reporunner_proto::common::v1::StepLimits,
    /// Runner process ids this run started, in order, so that none is left
    /// behind when the run ends.
    pub started: Vec<String>,
    /// The caller's tier's `max_heal_attempts` (0: no healing).
    pub max_heal_attempts: u32,
    /// The env of each provisioned backing service, by kind.
    pub provisioned: std::collections::BTreeMap<i32, std::collections::BTreeMap<String, String>>,
    /// The patches tried in this run, in order.
    pub tried: Vec<reporunner_proto::common::v1::PlanPatch>,
    /// What the last failed setup step left for the resolver.
    pub failure: Arc<std::sync::Mutex<Option<crate::heal::Failure>>>,
    /// The env each installed component got from its install, by name.
    pub installed: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// The test results recorded so far, in plan order.
    pub test_results: Vec<reporunner_proto::orchestrator::v1::TestResult>,
    /// The optional index step after analysis (`CreateRunRequest.index`),
    /// its mode decided at creation.
    pub index: Option<crate::index::IndexJob>,
}

impl RunContext {
    /// The sandbox limits this run's steps run under, to name the one a
    /// failed step ran into.
    pub fn sandbox_limits(&self) -> reporunner_sandbox::Limits {
        reporunner_sandbox::Limits {
            memory_bytes: self.step_limits.memory_bytes,
            cpu_millis: self.step_limits.cpu_millis,
            max_processes: self.step_limits.max_processes,
            max_open_files: self.step_limits.max_open_files,
            max_file_bytes: self.step_limits.max_file_bytes,
            max_runtime_seconds: self.max_run_seconds,
        }
    }

    /// The runner's limits of a process of this run: the tier's step limits
    /// and run time.
    pub fn resource_limits(&self) -> reporunner_proto::agents::runner::v1::ResourceLimits {
        reporunner_proto::agents::runner::v1::ResourceLimits {
            memory_bytes: self.step_limits.memory_bytes,
            cpu_millis: self.step_limits.cpu_millis,
            max_processes: self.step_limits.max_processes,
            max_open_files: self.step_limits.max_open_files,
            max_file_bytes: self.step_limits.max_file_bytes,
            max_runtime_seconds: self.max_run_seconds,
        }
    }

    /// Keeps what a failed step left for the resolver.
    pub(crate) fn failed(&self, failure: crate::heal::Failure) {
        if let Ok(mut slot) = self.failure.lock() {
            *slot = Some(failure);
        }
    }

    pub(crate) fn take_failure(&self) -> Option<crate::heal::Failure> {
        self.failure.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// What a finished step produced.
#[derive(Debug)]
struct Outcome {
    detail: String,
    change: Box<RunChange>,
}

impl Step {
    /// Why the step does not run in this run, when it does not.
    fn skip_reason(self, ctx: &RunContext) -> Option<String> {
        if self.skipped_in(ctx) {
            return Some(format!("the {} agent was skipped on request", self.agent()));
        }
        match (self, &ctx.workspace) {
            (Self::Fetch, Some(ws)) => Some(format!("reusing workspace {} fetched earlier", ws.id)),
            _ => None,
        }
    }

    async fn execute(
        self,
        agents: &Agents,
        config: &OrchestratorConfig,
        ctx: &mut RunContext,
    ) -> Result<Outcome> {
        match self {
            Self::Fetch => fetch(agents, config, ctx).await,
            Self::Detect => detect(agents, config, ctx).await,
            Self::Analyze => analyze(agents, config, ctx).await,
            Self::Provision | Self::Install | Self::Build | Self::Start | Self::Probe | Self::Test => {
                Err(OrchestratorError::InvalidArgument(format!(
                    "the {} step works per component, not as one call",
                    self.name()
                )))
            }
        }
    }
}

async fn fetch(agents: &Agents, config: &OrchestratorConfig, ctx: &mut RunContext) -> Result<Outcome> {
    let source = match ctx.source.source.clone() {
        Some(repo_source::Source::GitUrl(url)) => fetch_request::Source::Git(GitSource {
            url,
            r#ref: ctx.source.r#ref.clone(),
        }),
        Some(repo_source::Source::LocalPath(path)) => fetch_request::Source::Local(LocalSource { path }),
        Some(repo_source::Source::WorkspaceId(id)) => return Err(OrchestratorError::WorkspaceNotFound(id)),
        None => return Err(OrchestratorError::InvalidArgument("the run has no source".into())),
    };
    let mut request = tonic::Request::new(FetchRequest {
        owner_id: ctx.owner_id.clone(),
        source: Some(source),
        limits: Some(ctx.limits),
    });
    request.set_timeout(Step::Fetch.deadline(config));
    let response = SourceServiceClient::new(agents.source.clone())
        .fetch(request)
        .await
        .map_err(|status| OrchestratorError::from_agent(SOURCE, status))?
        .into_inner();
    let workspace = response.workspace.ok_or(OrchestratorError::AgentIncomplete {
        agent: SOURCE,
        what: "workspace",
    })?;
    let detail = format!(
        "{} workspace {} ({} files, {} bytes){}",
        if response.reused { "reused" } else { "fetched" },
        workspace.id,
        workspace.file_count,
        workspace.size_bytes,
        if workspace.commit.is_empty() {
            String::new()
        } else {
            format!(" at commit {}", workspace.commit)
        }
    );
    ctx.workspace = Some(workspace.clone());
    Ok(Outcome {
        detail,
        change: Box::new(RunChange {
            workspace: Some(workspace),
            ..RunChange::default()
        }),
    })
}

async fn detect(agents: &Agents, config: &OrchestratorConfig, ctx: &mut RunContext) -> Result<Outcome> {
    let mut request = tonic::Request::new(DetectRequest {
        platform_override: ctx.platform_override.into(),
        skip_registries: config.detect_skip_registries,
        refresh: false,
    });
    request.set_timeout(Step::Detect.deadline(config));
    let response = EnvDetectorServiceClient::new(agents.env_detector.clone())
        .detect(request)
        .await
        .map_err(|status| OrchestratorError::from_agent(ENV_DETECTOR, status))?
        .into_inner();
    let environment = response.environment.ok_or(OrchestratorError::AgentIncomplete {
        agent: ENV_DETECTOR,
        what: "environment",
    })?;
    let detail = format!("{} toolchain(s) found", environment.toolchains.len());
    ctx.environment = Some(environment);
    Ok(Outcome {
        detail,
        change: Box::default(),
    })
}

async fn analyze(agents: &Agents, config: &OrchestratorConfig, ctx: &mut RunContext) -> Result<Outcome> {
    let workspace = ctx.workspace.clone().ok_or(OrchestratorError::AgentIncomplete {
        agent: SOURCE,
        what: "workspace",
    })?;
    let mut request = tonic::Request::new(AnalyzeRequest {
        workspace_id: workspace.id.clone(),
        workspace_path: workspace.path.clone(),
        environment: ctx.environment.clone(),
    });
    request.set_timeout(Step::Analyze.deadline(config));
    let response = AnalyzerServiceClient::new(agents.analyzer.clone())
        .analyze(request)
        .await
        .map_err(|status| OrchestratorError::from_agent(ANALYZER, status))?
        .into_inner();
    let plan = response.plan.ok_or(OrchestratorError::AgentIncomplete {
        agent: ANALYZER,
        what: "plan",
    })?;
    let names: Vec<&str> = plan.components.iter().map(|c| c.name.as_str()).collect();
    let detail = match names.len() {
        0 => "no runnable component found".to_owned(),
        n => format!("{n} component(s): {}", names.join(", ")),
    };
    ctx.plan = Some(plan.clone());
    Ok(Outcome {
        detail,
        change: Box::new(RunChange {
            plan: Some(plan),
            ..RunChange::default()
        }),
    })
}

/// The message a failed step leaves in `Run.error`: the agent's own words
/// where it gave some.
pub(crate) fn failure_message(step: Step, err: &OrchestratorError) -> String {
    let what = match err {
        OrchestratorError::AgentFailed { agent, status } => {
            format!("the {agent} agent failed: {}", status.message())
        }
        other => other.to_string(),
    };
    format!("{} failed: {what}", step.name())
}

fn millis(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX)
}

pub(crate) fn step_event(step: Step, status: &str, detail: String, duration: Duration) -> run_event::Event {
    run_event::Event::Step(StepEvent {
        step: step.name().to_owned(),
        status: status.to_owned(),
        detail,
        duration_ms: millis(duration),
    })
}

/// Drives runs: one task per run, bounded by a semaphore.
#[derive(Clone, Debug)]
pub(crate) struct Runner {
    pub config: Arc<OrchestratorConfig>,
    pub agents: Agents,
    pub recorder: Recorder,
    pub permits: Arc<Semaphore>,
}

/// Why a pipeline stopped writing.
pub(crate) enum Ended {
    /// It wrote a terminal state.
    Done,
    /// The run was stopped (or ended) by someone else.
    Taken,
    /// Its components are up: the run is RUNNING and is monitored.
    Running(Box<crate::setup::Monitor>),
}

impl Runner {
    /// Runs `pipeline` for the run in `ctx` to its end: through its steps
    /// under a pipeline permit, then, for a run that reached RUNNING, its
    /// monitoring without the permit. A run that ends stops every process
    /// it started; one left as it was (orchestrator shutdown) keeps them
    /// for the next orchestrator to resume. Spawn it.
    pub async fn drive(self, pipeline: Pipeline, mut ctx: RunContext, live: Arc<LiveRun>) {
        let run_id = ctx.run_id.clone();
        let permit = tokio::select! {
            () = live.cancel.cancelled() => None,
            permit = self.permits.clone().acquire_owned() => permit.ok(),
        };
        if let Some(permit) = permit {
            let gauge = crate::metrics::PipelineGauge::start();
            let started = Instant::now();
            let deadline = ctx.run_deadline.map(|limit| (started + limit, limit));
            let steps = self.run_steps(&pipeline, &mut ctx, &live.cancel);
            let outcome = self.within(&run_id, deadline, steps).await;
            drop(gauge);
            drop(permit);
            let outcome = match outcome {
                Ok(Ended::Running(monitor)) => {
                    let monitoring = self.monitor(*monitor, &live.cancel);
                    self.within(&run_id, deadline, monitoring).await
                }
                other => other,
            };
            self.log_end(&run_id, outcome, started).await;
            self.release(&run_id, &ctx.started).await;
            if !ctx.provisioned.is_empty() && self.is_over(&run_id).await {
                self.release_backing(&run_id).await;
            }
        }
        self.recorder.live.finish(&run_id);
    }

    /// Whether the run is over (unknown counts as over).
    pub(crate) async fn is_over(&self, run_id: &str) -> bool {
        match self.recorder.store.get_run(run_id).await {
            Ok(run) => run.is_none_or(|r| is_terminal(r.state())),
            Err(_) => true,
        }
    }

    /// Runs `work` under the run's tier deadline; past it the run fails
    /// with a message naming the limit.
    pub(crate) async fn within(
        &self,
        run_id: &str,
        deadline: Option<(Instant, Duration)>,
        work: impl Future<Output = Result<Ended>>,
    ) -> Result<Ended> {
        match deadline {
            Some((at, limit)) => match tokio::time::timeout_at(at.into(), work).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    let message = format!(
                        "the run exceeded your tier's limit of {} s per run",
                        limit.as_secs()
                    );
                    self.fail(run_id, message).await
                }
            },
            None => work.await,
        }
    }

    pub(crate) async fn log_end(&self, run_id: &str, outcome: Result<Ended>, started: Instant) {
        match outcome {
            Ok(Ended::Done | Ended::Taken | Ended::Running(_)) => {
                tracing::info!(elapsed_ms = millis(started.elapsed()), "run pipeline ended");
            }
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

    /// Stops `processes` when the run is over; leaves them to the next
    /// orchestrator when it is not (this one is shutting down).
    pub(crate) async fn release(&self, run_id: &str, processes: &[String]) {
        if processes.is_empty() {
            return;
        }
        let over = match self.recorder.store.get_run(run_id).await {
            Ok(run) => run.is_none_or(|r| is_terminal(r.state())),
            // Unknown: stopping leaves no orphan behind.
            Err(_) => true,
        };
        if over {
            self.stop_processes(processes).await;
        }
    }

    pub(crate) async fn fail(&self, run_id: &str, message: String) -> Result<Ended> {
        let change = RunChange {
            error: Some(message),
            ..RunChange::default()
        };
        self.recorder.transition(run_id, RunState::Failed, change).await?;
        Ok(Ended::Done)
    }

    async fn run_steps(
        &self,
        pipeline: &Pipeline,
        ctx: &mut RunContext,
        cancel: &CancellationToken,
    ) -> Result<Ended> {
        let run_id = ctx.run_id.clone();
        let mut first = true;
        for &step in pipeline.steps() {
            if cancel.is_cancelled() {
                return Ok(Ended::Taken);
            }
            if step.per_component() {
                return Box::pin(self.setup(pipeline.goal(), ctx, cancel)).await;
            }
            if let Some(reason) = step.skip_reason(ctx) {
                crate::metrics::step(step.name(), "skipped", Duration::ZERO);
                let event = step_event(step, "skipped", reason, Duration::ZERO);
                if self
                    .recorder
                    .record(&run_id, RunChange::default(), event)
                    .await?
                    .is_none()
                {
                    return Ok(Ended::Taken);
                }
                continue;
            }
            let change = RunChange {
                attempts: first.then_some(1),
                ..RunChange::default()
            };
            first = false;
            if self
                .recorder
                .transition(&run_id, step.state(), change)
                .await?
                .is_none()
            {
                return Ok(Ended::Taken);
            }
            let started = Instant::now();
            let began = step_event(step, "started", String::new(), Duration::ZERO);
            if self
                .recorder
                .record(&run_id, RunChange::default(), began)
                .await?
                .is_none()
            {
                return Ok(Ended::Taken);
            }
            let deadline = step.deadline(&self.config);
            let result = tokio::select! {
                () = cancel.cancelled() => return Ok(Ended::Taken),
                result = tokio::time::timeout(deadline, step.execute(&self.agents, &self.config, ctx)) => result,
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
            let elapsed = started.elapsed();
            let status = if result.is_ok() { "finished" } else { "failed" };
            crate::metrics::step(step.name(), status, elapsed);
            let (change, event) = match result {
                Ok(Outcome { detail, change }) => (*change, step_event(step, "finished", detail, elapsed)),
                Err(err) => {
                    let message = failure_message(step, &err);
                    tracing::info!(step = step.name(), error = %message, "run step failed");
                    let event = step_event(step, "failed", message.clone(), elapsed);
                    if self
                        .recorder
                        .record(&run_id, RunChange::default(), event)
                        .await?
                        .is_none()
                    {
                        return Ok(Ended::Taken);
                    }
                    return self.fail(&run_id, message).await;
                }
            };
            if self.recorder.record(&run_id, change, event).await?.is_none() {
                return Ok(Ended::Taken);
            }
            if step == Step::Analyze
                && let Some(ended) = self
                    .index_step(&run_id, ctx.index.as_ref(), ctx.workspace.as_ref(), cancel)
                    .await?
            {
                return Ok(ended);
            }
        }
        self.recorder
            .transition(&run_id, RunState::Succeeded, RunChange::default())
            .await?;
        Ok(Ended::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_goal_has_its_steps() {
        let pipeline = Pipeline::for_goal(RunGoal::Analyze).expect("served");
        assert_eq!(pipeline.steps(), &[Step::Fetch, Step::Detect, Step::Analyze]);
        assert_eq!(
            Pipeline::for_goal(RunGoal::Unspecified).expect("served"),
            pipeline
        );
        let start = Pipeline::for_goal(RunGoal::Start).expect("served");
        assert_eq!(
            start.steps(),
            &[
                Step::Fetch,
                Step::Detect,
                Step::Analyze,
                Step::Install,
                Step::Build,
                Step::Start,
                Step::Probe
            ]
        );
        assert_eq!(start.goal(), RunGoal::Start);
        let test = Pipeline::for_goal(RunGoal::Test).expect("served");
        assert_eq!(test.steps().last(), Some(&Step::Test));
        assert!(!test.steps().contains(&Step::Start));
        let both = Pipeline::for_goal(RunGoal::StartAndTest).expect("served");
        assert_eq!(&both.steps()[..7], start.steps());
        assert_eq!(both.steps().last(), Some(&Step::Test));
    }

    #[test]
    fn setup_steps_name_their_agents_and_only_some_are_skippable() {
        assert_eq!(Step::Install.agent(), "dependency");
        assert_eq!(Step::Build.state(), RunState::Building);
        assert_eq!(Step::Start.agent(), "runner");
        assert_eq!(Step::Probe.agent(), "health");
        assert_eq!(Step::Test.state(), RunState::Testing);
        assert_eq!(Step::Test.agent(), "tester");
        assert!(Step::Probe.skippable() && Step::Install.skippable());
        assert!(!Step::Start.skippable() && !Step::Test.skippable());
        assert!(Step::Install.per_component() && !Step::Analyze.per_component());
        let config = OrchestratorConfig {
            startup_grace_seconds: 100,
            ..OrchestratorConfig::default()
        };
        assert_eq!(Step::Probe.deadline(&config), Duration::from_secs(130));
    }

    #[test]
    fn steps_run_in_their_states_under_their_deadlines() {
        let config = OrchestratorConfig {
            analyze_deadline_ms: 1_234,
            ..OrchestratorConfig::default()
        };
        assert_eq!(Step::Analyze.deadline(&config), Duration::from_millis(1_234));
        assert_eq!(Step::Fetch.state(), RunState::Fetching);
        assert_eq!(Step::Detect.state(), RunState::Detecting);
        assert!(Step::Detect.skippable() && !Step::Fetch.skippable());
    }

    #[test]
    fn a_failed_step_names_the_step_and_keeps_the_agents_words() {
        let err = OrchestratorError::from_agent(
            SOURCE,
            tonic::Status::invalid_argument("cannot clone https://example.invalid/x.git: not found"),
        );
        let message = failure_message(Step::Fetch, &err);
        assert!(message.starts_with("fetch failed:"), "{message}");
        assert!(message.contains("https://example.invalid/x.git"), "{message}");
        let err = OrchestratorError::from_agent(ANALYZER, tonic::Status::internal("boom"));
        assert_eq!(
            failure_message(Step::Analyze, &err),
            "analyze failed: the analyzer agent failed: boom"
        );
    }
}
