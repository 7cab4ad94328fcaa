//! The orchestrator's metrics, every name in one place. Per-RPC counts and
//! latencies come from the server layer (`reporunner_grpc_*`).

use std::time::Duration;

use reporunner_proto::orchestrator::v1::{RunGoal, RunState};

/// Runs created, by `goal`.
pub const RUNS_CREATED_TOTAL: &str = "reporunner_orchestrator_runs_created_total";
/// Runs that reached a terminal state, by `state`.
pub const RUNS_ENDED_TOTAL: &str = "reporunner_orchestrator_runs_ended_total";
/// Pipelines running now (holding a slot of `max_concurrent_pipelines`).
pub const PIPELINES_RUNNING: &str = "reporunner_orchestrator_pipelines_running";
/// Duration of run steps, by `step` and `status` (finished, failed, skipped).
pub const STEP_SECONDS: &str = "reporunner_orchestrator_step_seconds";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(RUNS_CREATED_TOTAL, "Runs created, by goal.");
    metrics::describe_counter!(RUNS_ENDED_TOTAL, "Runs that reached a terminal state, by state.");
    metrics::describe_gauge!(PIPELINES_RUNNING, "Run pipelines running now.");
    metrics::describe_histogram!(
        STEP_SECONDS,
        metrics::Unit::Seconds,
        "Duration of run steps, by step and status."
    );
}

fn label(name: &'static str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

pub(crate) fn run_created(goal: RunGoal) {
    metrics::counter!(RUNS_CREATED_TOTAL, "goal" => label(goal.as_str_name(), "RUN_GOAL_")).increment(1);
}

pub(crate) fn run_ended(state: RunState) {
    metrics::counter!(RUNS_ENDED_TOTAL, "state" => label(state.as_str_name(), "RUN_STATE_")).increment(1);
}

pub(crate) fn step(
    step: &'static str,
    status: reporunner_proto::orchestrator::v1::StepStatus,
    elapsed: Duration,
) {
    metrics::histogram!(STEP_SECONDS, "step" => step, "status" => status.label())
        .record(elapsed.as_secs_f64());
}

/// Counts a running pipeline until dropped.
#[derive(Debug)]
pub(crate) struct PipelineGauge;

impl PipelineGauge {
    pub fn start() -> Self {
        metrics::gauge!(PIPELINES_RUNNING).increment(1.0);
        Self
    }
}

impl Drop for PipelineGauge {
    fn drop(&mut self) {
        metrics::gauge!(PIPELINES_RUNNING).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_lowercase_names() {
        assert_eq!(
            label(RunState::Succeeded.as_str_name(), "RUN_STATE_"),
            "succeeded"
        );
        assert_eq!(
            label(RunGoal::StartAndTest.as_str_name(), "RUN_GOAL_"),
            "start_and_test"
        );
    }
}
