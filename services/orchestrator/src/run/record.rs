//! How a step writes what it does: events and state changes through the
//! run's [`Recorder`](crate::live::Recorder), each returning
//! `Err(Halt::Taken)` when the run was stopped or ended by someone else.

use std::time::Duration;

use reporunner_proto::orchestrator::v1::{RunState, StepEvent, StepStatus, run_event};

use crate::{
    run::{Engine, Flow, Halt, Step},
    store::RunChange,
};

pub(crate) fn millis(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX)
}

/// A step's event.
pub(crate) fn step_event(
    step: Step,
    status: StepStatus,
    detail: String,
    duration: Duration,
) -> run_event::Event {
    run_event::Event::Step(StepEvent {
        step: step.to_proto().into(),
        status: status.into(),
        detail,
        duration_ms: millis(duration),
    })
}

impl Engine {
    /// Stores `change` and `event` for the run.
    pub(crate) async fn emit(&self, run_id: &str, change: RunChange, event: run_event::Event) -> Flow {
        match self.recorder.record(run_id, change, event).await? {
            Some(_) => Ok(()),
            None => Err(Halt::Taken),
        }
    }

    /// Moves the run to `state`.
    pub(crate) async fn enter(&self, run_id: &str, state: RunState, change: RunChange) -> Flow {
        match self.recorder.transition(run_id, state, change).await? {
            Some(_) => Ok(()),
            None => Err(Halt::Taken),
        }
    }

    /// A step event: `started`, `finished`, `failed` or `skipped`.
    pub(crate) async fn step(
        &self,
        run_id: &str,
        step: Step,
        status: StepStatus,
        detail: String,
        elapsed: Duration,
    ) -> Flow {
        if status != StepStatus::Started {
            crate::metrics::step(step.name(), status, elapsed);
        }
        self.emit(
            run_id,
            RunChange::default(),
            step_event(step, status, detail, elapsed),
        )
        .await
    }

    pub(crate) async fn notice(&self, run_id: &str, text: String) -> Flow {
        self.emit(run_id, RunChange::default(), run_event::Event::Notice(text))
            .await
    }

    /// Records a failed step and returns the halt that fails the run.
    pub(crate) async fn step_failed(
        &self,
        run_id: &str,
        step: Step,
        message: String,
        elapsed: Duration,
    ) -> Halt {
        tracing::info!(step = step.name(), error = %message, "run step failed");
        match self
            .step(run_id, step, StepStatus::Failed, message.clone(), elapsed)
            .await
        {
            Ok(()) => Halt::Failed(message),
            Err(halt) => halt,
        }
    }

    /// Fails the run with `message`.
    pub(crate) async fn fail(&self, run_id: &str, message: String) -> crate::Result<()> {
        let change = RunChange {
            error: Some(message),
            ..RunChange::default()
        };
        self.recorder.transition(run_id, RunState::Failed, change).await?;
        Ok(())
    }
}
