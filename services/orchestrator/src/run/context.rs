//! What a run carries from step to step.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use reporunner_proto::{
    agents::source::v1::FetchLimits,
    common::v1::{
        BackingServiceKind, Component, Environment, PlanPatch, Platform, RunPlan, StepLimits, Workspace,
    },
    orchestrator::v1::{RepoSource, RunGoal, TestResult},
};
use tokio_util::sync::CancellationToken;

use crate::{heal::Failure, index::IndexJob, run::watch::Monitor};

/// One run's state as the engine walks its steps.
#[derive(Debug, Default)]
pub struct RunContext {
    pub run_id: String,
    pub owner_id: String,
    pub goal: RunGoal,
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
    pub env: BTreeMap<String, String>,
    /// The caller's tier limit in seconds (0: none), for the runner.
    pub max_run_seconds: u32,
    /// The caller's tier's sandbox limits for every step that runs the
    /// repository's code (zero fields: the agents' defaults).
    pub step_limits: StepLimits,
    /// The caller's tier's `max_heal_attempts` (0: no healing).
    pub max_heal_attempts: u32,
    /// Whether the caller's tier may have plugins called on its runs.
    pub plugins_allowed: bool,
    /// The optional index step after analysis (`CreateRunRequest.index`),
    /// its mode decided at creation.
    pub index: Option<IndexJob>,
    /// The run's cancellation: StopRun, or the orchestrator shutting down.
    pub cancel: CancellationToken,

    // What the steps found out, in the order they run.
    /// The components the set-up steps work on, chosen once after analysis
    /// (see [`crate::run::steps::provision::select`]).
    pub components: Option<Vec<Component>>,
    /// Whether the run starts components (START, START_AND_TEST with
    /// something startable).
    pub starts: bool,
    /// The env of each provisioned backing service, by kind.
    pub provisioned: BTreeMap<i32, BTreeMap<String, String>>,
    /// The env each installed component got from its install, by name.
    pub installed: BTreeMap<String, BTreeMap<String, String>>,
    /// What each installed component's environment provides, by name
    /// (`InstallResult.packages`), for the resolver.
    pub packages: BTreeMap<String, BTreeMap<String, String>>,
    /// Runner process ids this run started, in order, so that none is left
    /// behind when the run ends.
    pub started: Vec<String>,
    /// The started components and their health watches (start, probe,
    /// monitor).
    pub monitor: Option<Monitor>,
    /// The test results recorded so far, in plan order.
    pub test_results: Vec<TestResult>,
    /// The patches tried in this run, in order.
    pub tried: Vec<PlanPatch>,
    /// Heal attempts made so far.
    pub heals: u32,
    /// Whether the run's first attempt was counted (`Run.attempts`).
    pub counted: bool,
    /// The hooks each plugin serves, in plugin order, asked once per run.
    pub plugin_hooks: Option<Vec<Vec<reporunner_proto::agents::plugin::v1::Hook>>>,
    /// What the last failed set-up step left for the resolver.
    pub failure: Arc<Mutex<Option<Failure>>>,
    /// Components given up on (name, why) while others came up: the run
    /// ends DEGRADED instead of RUNNING.
    pub down: Vec<(String, String)>,
    /// The agent whose replica went away during the last failed step (see
    /// [`RunContext::note`]): the step is taken again, not healed.
    pub lost: Arc<Mutex<Option<&'static str>>>,
}

impl RunContext {
    /// Keeps in mind that a step failed because the agent's replica could
    /// not be reached or went away mid-call, so that the engine takes the
    /// step again (on another replica) instead of healing it.
    pub(crate) fn note(&self, err: &crate::OrchestratorError) {
        if let crate::OrchestratorError::AgentUnavailable { agent, .. } = err
            && let Ok(mut lost) = self.lost.lock()
        {
            *lost = Some(agent);
        }
    }

    /// The agent [`RunContext::note`] kept, forgotten once read.
    pub(crate) fn take_lost(&self) -> Option<&'static str> {
        self.lost.lock().ok().and_then(|mut lost| lost.take())
    }

    /// Whether the user asked to skip `agent`.
    pub(crate) fn skips(&self, agent: &str) -> bool {
        self.skip_agents.iter().any(|a| a == agent)
    }

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

    /// The workspace's path; the run fails without one.
    pub(crate) fn workspace_path(&self) -> crate::run::Flow<String> {
        self.workspace
            .as_ref()
            .map(|w| w.path.clone())
            .ok_or_else(|| crate::run::Halt::Failed("the run has no workspace".into()))
    }

    /// The components the set-up steps work on.
    pub(crate) fn components(&self) -> &[Component] {
        self.components.as_deref().unwrap_or_default()
    }

    /// The env of `component`'s backing services, as provisioned.
    /// A URL of a scheme the code names instead (`postgres://` for
    /// Heroku-style code) is given in that scheme.
    pub(crate) fn backing_env(&self, component: &Component) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for service in &component.backing_services {
            if let Some(provisioned) = self.provisioned.get(&service.kind) {
                let rescheme = |value: &String| match (service.url_scheme.as_str(), service.kind()) {
                    ("postgres", BackingServiceKind::Postgresql) => value
                        .strip_prefix("postgresql://")
                        .map_or_else(|| value.clone(), |rest| format!("postgres://{rest}")),
                    _ => value.clone(),
                };
                env.extend(provisioned.iter().map(|(k, v)| (k.clone(), rescheme(v))));
            }
        }
        env
    }

    /// The env `component` runs with: its install's, its backing services',
    /// then the user's.
    pub(crate) fn run_env(&self, component: &Component) -> BTreeMap<String, String> {
        let mut env = self.installed.get(&component.name).cloned().unwrap_or_default();
        env.extend(self.backing_env(component));
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// Keeps what a failed step left for the resolver.
    pub(crate) fn failed(&self, failure: Failure) {
        if let Ok(mut slot) = self.failure.lock() {
            *slot = Some(failure);
        }
    }

    /// The component the step that just failed names, if any.
    pub(crate) fn failing_component(&self) -> Option<String> {
        self.failure
            .lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(|f| f.component.clone()))
            .filter(|c| !c.is_empty())
    }

    /// Whether the step that just failed left something for the resolver.
    pub(crate) fn has_failure(&self) -> bool {
        self.failure.lock().is_ok_and(|slot| slot.is_some())
    }

    pub(crate) fn take_failure(&self) -> Option<Failure> {
        self.failure.lock().ok().and_then(|mut slot| slot.take())
    }
}
