//! A run, read top to bottom.
//!
//! - [`step`]: the steps a run can take and the ordered list of them for
//!   each goal ([`steps_for`]); the list is data, printed by
//!   `reporunner run --explain`.
//! - [`engine`]: walks that list for one run under a pipeline slot and the
//!   tier's run deadline, records every step's events, and on a failed
//!   set-up step asks [`healing`] whether to resume the list at an earlier
//!   step with a patched plan.
//! - [`steps`]: one file per step, each `run(engine, ctx)`.
//! - [`context`]: what a run carries from step to step.
//! - [`watch`]: the started components' health watches and process checks
//!   (probe, monitor, and resuming after a restart).
//! - [`output`]: the started processes' output, recorded as the run's log
//!   events.
//! - [`record`]: how a step writes events and state, and the one way a step
//!   stops: `Err(Halt)`.

pub mod context;
pub mod engine;
pub mod healing;
pub mod output;
pub mod record;
pub mod step;
pub mod steps;
pub mod watch;

pub use context::RunContext;
pub use engine::Engine;
pub use step::{Step, effective_goal, explain, steps_for};

use crate::OrchestratorError;

/// Why a run stopped walking its steps before their end: the only way a
/// step stops.
#[derive(Debug)]
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

/// What a step returns.
pub(crate) type Flow<T = ()> = std::result::Result<T, Halt>;

/// `work`, unless the run is cancelled first.
pub(crate) async fn until_cancel<T>(
    cancel: &tokio_util::sync::CancellationToken,
    work: impl Future<Output = Flow<T>>,
) -> Flow<T> {
    tokio::select! {
        () = cancel.cancelled() => Err(Halt::Taken),
        outcome = work => outcome,
    }
}

/// The message a failed step leaves in `Run.error`: the agent's own words
/// where it gave some.
pub(crate) fn failure_message(step: Step, err: &OrchestratorError) -> String {
    let what = match err {
        // A verdict about what the request names (a repository that is not
        // there, a git host that does not answer), not a failure of the
        // agent: its words alone.
        OrchestratorError::AgentFailed { status, .. }
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied
            ) =>
        {
            status.message().to_owned()
        }
        OrchestratorError::AgentFailed { agent, status } => {
            format!("the {agent} agent failed: {}", status.message())
        }
        other => other.to_string(),
    };
    format!("{} failed: {what}", step.name())
}

/// `message` (a failure with its last lines, see [`quote_tail`]) with the
/// line the resolver matched as the cause at the head of its tail when the
/// tail does not hold it already: the line that says what went wrong often
/// comes before a long stack trace.
pub(crate) fn with_cause_line(message: &str, matched: &str) -> String {
    let matched = matched.trim_end();
    if matched.trim().is_empty() || message.contains(matched) {
        return message.to_owned();
    }
    const TAIL: &str = "; last lines:\n";
    match message.find(TAIL) {
        Some(at) => {
            let split = at + TAIL.len();
            format!("{}{matched}\n…\n{}", &message[..split], &message[split..])
        }
        None => format!("{message}; the line that names the cause:\n{matched}"),
    }
}

/// `lines` as the tail of a message.
pub(crate) fn quote_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last lines:\n{}", lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_names_the_step_and_keeps_the_agents_words() {
        let err = OrchestratorError::from_agent("source", tonic::Status::internal("disk full"));
        assert_eq!(
            failure_message(Step::Fetch, &err),
            "fetch failed: the source agent failed: disk full"
        );
        let err = OrchestratorError::from_agent("analyzer", tonic::Status::unavailable("no endpoint serves"));
        assert!(
            failure_message(Step::Analyze, &err)
                .starts_with("analyze failed: the analyzer agent is unavailable")
        );
        // A verdict about the request, not the agent: its words alone.
        let err = OrchestratorError::from_agent(
            "source",
            tonic::Status::failed_precondition("the git host github.com cannot be reached: fatal: x"),
        );
        assert_eq!(
            failure_message(Step::Fetch, &err),
            "fetch failed: the git host github.com cannot be reached: fatal: x"
        );
    }

    #[test]
    fn the_cause_line_heads_a_tail_that_lost_it() {
        let message = format!(
            "start failed: app exited with 1{}",
            quote_tail(&[
                "    at Module._load (node:internal)".into(),
                "Node.js v20.1.0".into()
            ])
        );
        let shown = with_cause_line(&message, "Error: Cannot find module 'express'");
        assert_eq!(
            shown,
            "start failed: app exited with 1; last lines:\nError: Cannot find module 'express'\n…\n    at Module._load (node:internal)\nNode.js v20.1.0"
        );
        // Already there, or nothing matched: unchanged.
        assert_eq!(with_cause_line(&message, "Node.js v20.1.0"), message);
        assert_eq!(with_cause_line(&message, ""), message);
        assert_eq!(
            with_cause_line("start failed", "boom"),
            "start failed; the line that names the cause:\nboom"
        );
    }

    #[test]
    fn failures_quote_the_last_lines() {
        assert_eq!(quote_tail(&[]), "");
        assert_eq!(quote_tail(&["a".into(), "b".into()]), "; last lines:\na\nb");
    }
}
