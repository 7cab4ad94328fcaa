//! The steps a run can take, and the ordered list of them for each goal.
//!
//! The list is data: [`steps_for`] is what the engine walks, and what
//! `reporunner run --explain` prints.

use std::time::Duration;

use reporunner_proto::orchestrator::v1::{RunGoal, RunState};

use crate::OrchestratorConfig;

pub(crate) const ENV_DETECTOR: &str = "env-detector";
pub(crate) const SOURCE: &str = "source";
pub(crate) const ANALYZER: &str = "analyzer";
pub(crate) const DEPENDENCY: &str = "dependency";
pub(crate) const RUNNER: &str = "runner";
pub(crate) const HEALTH: &str = "health";
pub(crate) const PROVISIONER: &str = "provisioner";
pub(crate) const RESOLVER: &str = "resolver";
pub(crate) const TESTER: &str = "tester";
pub(crate) const INDEXER: &str = "indexer";

/// One step of a run. Each has one file under `run/steps/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Clone or copy the repository into a workspace (source agent).
    Fetch,
    /// Detect the host (env-detector).
    Detect,
    /// Decide how to run the workspace (analyzer).
    Analyze,
    /// Index the workspace for search when the run asked for it (indexer);
    /// never fails a run.
    Index,
    /// Supply the backing services the components need (provisioner).
    Provision,
    /// Install each component's dependencies (dependency agent).
    Install,
    /// Run each component's build command (the dependency agent runs it
    /// right after the component's install, on the same call).
    Build,
    /// Run each component's setup commands once (runner agent).
    Setup,
    /// Start each startable component (runner agent).
    Start,
    /// Wait until each started component is healthy (health agent).
    Probe,
    /// Run each component's test command once and read the counts (tester
    /// agent).
    Test,
    /// Keep a RUNNING run under watch until it is stopped or a component
    /// fails for good (health and runner agents), without a pipeline slot.
    Monitor,
}

impl Step {
    /// Every step, in the order a run takes them.
    pub const ALL: [Self; 12] = [
        Self::Fetch,
        Self::Detect,
        Self::Analyze,
        Self::Index,
        Self::Provision,
        Self::Install,
        Self::Build,
        Self::Setup,
        Self::Start,
        Self::Probe,
        Self::Test,
        Self::Monitor,
    ];

    /// The step's word (`fetch`): the contract's label, one list for both.
    pub fn name(self) -> &'static str {
        self.to_proto().label()
    }

    /// The step as the contract names it.
    pub fn to_proto(self) -> reporunner_proto::orchestrator::v1::Step {
        use reporunner_proto::orchestrator::v1::Step as Proto;
        match self {
            Self::Fetch => Proto::Fetch,
            Self::Detect => Proto::Detect,
            Self::Analyze => Proto::Analyze,
            Self::Index => Proto::Index,
            Self::Provision => Proto::Provision,
            Self::Install => Proto::Install,
            Self::Build => Proto::Build,
            Self::Setup => Proto::Setup,
            Self::Start => Proto::Start,
            Self::Probe => Proto::Probe,
            Self::Test => Proto::Test,
            Self::Monitor => Proto::Monitor,
        }
    }

    /// One line on what the step does, for `--explain`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Fetch => "clone or copy the repository into a workspace",
            Self::Detect => "detect the host: OS, toolchains, package managers",
            Self::Analyze => "decide the components and how to install, build, start and test each",
            Self::Index => "index the workspace for search, when the run asks for it (never fails the run)",
            Self::Provision => "supply the backing services the components need (PostgreSQL, Redis, ...)",
            Self::Install => "install each component's dependencies, sandboxed",
            Self::Build => "run each component's build command, right after its install",
            Self::Setup => "run each component's setup commands once (migrations, ...)",
            Self::Start => "start each startable component, sandboxed",
            Self::Probe => "wait until every started component is healthy",
            Self::Test => "run each component's tests once and read the counts",
            Self::Monitor => "keep the running components under watch until the run is stopped",
        }
    }

    /// The run's state while this step runs; `None` for a step that has no
    /// state of its own.
    pub fn state(self) -> Option<RunState> {
        Some(match self {
            Self::Fetch => RunState::Fetching,
            Self::Detect => RunState::Detecting,
            Self::Analyze => RunState::Analyzing,
            Self::Provision => RunState::Provisioning,
            Self::Install => RunState::Installing,
            Self::Build => RunState::Building,
            Self::Setup | Self::Start => RunState::Starting,
            Self::Probe => RunState::Probing,
            Self::Test => RunState::Testing,
            Self::Monitor => RunState::Running,
            Self::Index => return None,
        })
    }

    /// The agent it calls, as named in `CreateRunRequest.skip_agents`.
    pub fn agent(self) -> &'static str {
        match self {
            Self::Fetch => SOURCE,
            Self::Detect => ENV_DETECTOR,
            Self::Analyze => ANALYZER,
            Self::Index => INDEXER,
            Self::Provision => PROVISIONER,
            Self::Install | Self::Build => DEPENDENCY,
            Self::Setup | Self::Start => RUNNER,
            Self::Test => TESTER,
            Self::Probe | Self::Monitor => HEALTH,
        }
    }

    /// The agents a run may be asked to skip (`CreateRunRequest.skip_agents`),
    /// each once: those of the skippable steps, in step order, and the
    /// resolver (a failed step then fails the run without healing).
    pub fn skippable_agents() -> Vec<&'static str> {
        let mut agents: Vec<&'static str> = Self::ALL
            .iter()
            .filter(|step| step.skippable())
            .map(|step| step.agent())
            .collect();
        agents.dedup();
        agents.push(RESOLVER);
        agents
    }

    /// Whether the user may skip it: the others produce what later steps
    /// need. Skipping "dependency" skips install and build (the component
    /// runs with what the host has); skipping "health" counts a component
    /// as running once its process runs.
    pub(crate) fn skippable(self) -> bool {
        match self {
            Self::Detect | Self::Provision | Self::Install | Self::Build | Self::Probe => true,
            Self::Fetch
            | Self::Analyze
            | Self::Index
            | Self::Setup
            | Self::Start
            | Self::Test
            | Self::Monitor => false,
        }
    }

    /// Whether a failure of this step goes to the resolver: the steps that
    /// set the repository up. Test failures are results, never healed (tests
    /// that could not run for want of a module are: see `steps/test.rs`).
    pub(crate) fn healable(self) -> bool {
        matches!(
            self,
            Self::Provision | Self::Install | Self::Build | Self::Setup | Self::Start | Self::Probe
        )
    }

    /// The deadline of one call of this step.
    pub fn deadline(self, config: &OrchestratorConfig) -> Duration {
        match self {
            Self::Fetch => config.fetch_deadline(),
            Self::Detect => config.detect_deadline(),
            Self::Analyze => config.analyze_deadline(),
            Self::Index => config.index_deadline(),
            Self::Provision => config.provision_deadline(),
            Self::Install | Self::Build => config.install_deadline(),
            Self::Setup | Self::Start | Self::Monitor => config.runner_deadline(),
            Self::Probe => config.probe_deadline(),
            Self::Test => config.test_deadline(),
        }
    }
}

/// The steps that achieve `goal`, in order: ANALYZE stops after the plan
/// (and the index, when asked); START sets up, starts and probes every
/// startable component and monitors them; TEST sets up and runs the test
/// commands; START_AND_TEST does what START does and runs the tests against
/// the running components before monitoring them.
pub fn steps_for(goal: RunGoal) -> Vec<Step> {
    use Step::{
        Analyze, Build, Detect, Fetch, Index, Install, Monitor, Probe, Provision, Setup, Start, Test,
    };
    let analyze = [Fetch, Detect, Analyze, Index];
    let tail: &[Step] = match goal {
        RunGoal::Unspecified | RunGoal::Analyze => &[],
        RunGoal::Start => &[Provision, Install, Build, Setup, Start, Probe, Monitor],
        RunGoal::Test => &[Provision, Install, Build, Test],
        RunGoal::StartAndTest => &[Provision, Install, Build, Setup, Start, Probe, Test, Monitor],
    };
    [&analyze[..], tail].concat()
}

/// `goal` as the run records it: UNSPECIFIED is ANALYZE.
pub fn effective_goal(goal: RunGoal) -> RunGoal {
    if goal == RunGoal::Unspecified {
        RunGoal::Analyze
    } else {
        goal
    }
}

/// The step list of `goal` as text, one numbered line per step with its
/// agent and what it does: `reporunner run --explain`.
pub fn explain(goal: RunGoal) -> String {
    let goal = effective_goal(goal);
    let mut text = format!("goal {}:\n", goal.as_str_name().trim_start_matches("RUN_GOAL_"));
    for (index, step) in steps_for(goal).into_iter().enumerate() {
        text.push_str(&format!(
            "{:>2}. {:<9} ({}) {}\n",
            index + 1,
            step.name(),
            step.agent(),
            step.describe()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_goal_has_its_steps_in_order() {
        let names = |goal| steps_for(goal).into_iter().map(Step::name).collect::<Vec<_>>();
        assert_eq!(names(RunGoal::Analyze), ["fetch", "detect", "analyze", "index"]);
        assert_eq!(names(RunGoal::Unspecified), names(RunGoal::Analyze));
        assert_eq!(
            names(RunGoal::Start),
            [
                "fetch",
                "detect",
                "analyze",
                "index",
                "provision",
                "install",
                "build",
                "setup",
                "start",
                "probe",
                "monitor"
            ]
        );
        assert_eq!(
            names(RunGoal::Test),
            [
                "fetch",
                "detect",
                "analyze",
                "index",
                "provision",
                "install",
                "build",
                "test"
            ]
        );
        assert_eq!(
            names(RunGoal::StartAndTest),
            [
                "fetch",
                "detect",
                "analyze",
                "index",
                "provision",
                "install",
                "build",
                "setup",
                "start",
                "probe",
                "test",
                "monitor"
            ]
        );
        for goal in [
            RunGoal::Analyze,
            RunGoal::Start,
            RunGoal::Test,
            RunGoal::StartAndTest,
        ] {
            let steps = steps_for(goal);
            assert!(steps.windows(2).all(|w| w[0] < w[1]), "{goal:?} is in run order");
        }
    }

    #[test]
    fn steps_name_their_agents_and_only_some_are_skippable_or_healed() {
        assert_eq!(Step::Install.agent(), "dependency");
        assert_eq!(Step::Build.agent(), "dependency");
        assert_eq!(Step::Probe.agent(), "health");
        assert_eq!(Step::Test.agent(), "tester");
        let skippable: Vec<&str> = Step::ALL
            .iter()
            .filter(|s| s.skippable())
            .map(|s| s.name())
            .collect();
        assert_eq!(skippable, ["detect", "provision", "install", "build", "probe"]);
        let healed: Vec<&str> = Step::ALL
            .iter()
            .filter(|s| s.healable())
            .map(|s| s.name())
            .collect();
        assert_eq!(
            healed,
            ["provision", "install", "build", "setup", "start", "probe"]
        );
    }

    #[test]
    fn steps_run_in_their_states_under_their_deadlines() {
        let config = OrchestratorConfig::default();
        assert_eq!(Step::Fetch.state(), Some(RunState::Fetching));
        assert_eq!(Step::Test.state(), Some(RunState::Testing));
        assert_eq!(Step::Index.state(), None);
        assert_eq!(Step::Fetch.deadline(&config), config.fetch_deadline());
        assert_eq!(Step::Build.deadline(&config), config.install_deadline());
    }

    #[test]
    fn the_contract_names_every_step_alike() {
        for step in Step::ALL {
            assert_eq!(step.to_proto().label(), step.name());
        }
    }

    #[test]
    fn the_explanation_lists_every_step_with_its_agent() {
        let text = explain(RunGoal::Test);
        assert!(text.starts_with("goal TEST:\n"), "{text}");
        assert!(text.contains(" 1. fetch     (source)"), "{text}");
        assert!(text.contains(" 8. test      (tester)"), "{text}");
        assert_eq!(text.lines().count(), 9);
    }
}
