//! Monitor: a RUNNING run stays under watch, without a pipeline slot, until
//! it is stopped or a component fails for good: the health watches stay
//! open (changes become `HealthEvent`s and update `Run.components`) and the
//! runner is asked for the processes' status every `status_poll_ms`; a
//! process that ended for good (restarts spent) fails the run with its last
//! lines. Also resumes the monitoring of a RUNNING run after a restart.

use std::{sync::Arc, time::Instant};

use reporunner_proto::orchestrator::v1::{ComponentHealth, RunState, run_event};

use crate::{
    live::LiveRun,
    run::{
        Engine, Flow, Halt, RunContext,
        steps::provision::release_backing,
        watch::{Monitor, is_over},
    },
    store::{RunChange, RunComponent},
};

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    let Some(mut monitor) = ctx.monitor.take() else {
        return Ok(());
    };
    let outcome = engine.watch_running(&mut monitor, &ctx.cancel).await;
    ctx.monitor = Some(monitor);
    match outcome {
        // Stopped by the user (or this orchestrator shutting down): the
        // run's state was written by whoever stopped it.
        Ok(()) | Err(Halt::Taken) => Err(Halt::Taken),
        Err(other) => Err(other),
    }
}

/// Takes over a RUNNING run a previous orchestrator left: monitoring
/// resumes when every process still runs at the runner; otherwise the run
/// becomes INTERRUPTED (events and logs kept) and what is left of it is
/// stopped. Spawn it.
pub(crate) async fn resume(
    engine: Engine,
    run_id: String,
    components: Vec<RunComponent>,
    live: Arc<LiveRun>,
) {
    let processes: Vec<String> = components.iter().map(|c| c.process_id.clone()).collect();
    let started = Instant::now();
    let outcome = match gone(&engine, &components).await {
        Some(why) => {
            let change = RunChange {
                error: Some(format!(
                    "the orchestrator restarted while this run was running and {why}; create a new run"
                )),
                components: Some(stopped(components)),
                ..RunChange::default()
            };
            engine.enter(&run_id, RunState::Interrupted, change).await
        }
        None => {
            tracing::info!("monitoring of a running run resumed after a restart");
            let probed = components.iter().all(|c| c.health() != ComponentHealth::Unprobed);
            let notice = "the orchestrator restarted; the run's processes still run and are monitored again";
            match engine
                .emit(
                    &run_id,
                    RunChange::default(),
                    run_event::Event::Notice(notice.into()),
                )
                .await
            {
                Ok(()) => {
                    let mut ctx = RunContext {
                        run_id: run_id.clone(),
                        cancel: live.cancel.clone(),
                        monitor: Some(Monitor::new(run_id.clone(), components, probed)),
                        ..RunContext::default()
                    };
                    run(&engine, &mut ctx).await
                }
                Err(halt) => Err(halt),
            }
        }
    };
    engine.end(&run_id, outcome, started).await;
    engine.release(&run_id, &processes).await;
    if engine.is_over(&run_id).await {
        release_backing(&engine, &run_id).await;
    }
    engine.recorder.live.finish(&run_id);
}

/// `components` as an interrupted run shows them: stopped, whatever their
/// last probe said (nothing watches them any more).
pub(crate) fn stopped(mut components: Vec<RunComponent>) -> Vec<RunComponent> {
    for component in &mut components {
        component.set_health(ComponentHealth::Stopped);
    }
    components
}

/// Why the run cannot be resumed: a process that ended or is gone.
async fn gone(engine: &Engine, components: &[RunComponent]) -> Option<String> {
    for component in components {
        match engine.status_after_restart(&component.process_id).await {
            Ok(status) if !is_over(status.state()) => {}
            Ok(status) => {
                return Some(format!(
                    "{}'s process ended ({})",
                    component.name,
                    status.state().as_str_name()
                ));
            }
            Err(err) => return Some(format!("{}'s process cannot be found: {err}", component.name)),
        }
    }
    None
}
