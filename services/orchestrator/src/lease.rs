//! Run leases across orchestrator replicas on one store.
//!
//! A run belongs to the replica that created it (`store::Lease`). While the
//! replica lives, its keeper renews the lease of every unfinished run it
//! holds, every third of the lease. When a replica dies, its leases expire
//! and the next sweep of any other replica takes the runs over: a RUNNING
//! run whose processes still live (pods) is monitored again, any other
//! becomes INTERRUPTED with its events and logs kept, and what is left of
//! it is stopped. A replica starting under the name of one that died (its
//! own previous life) takes that one's runs at once; it never touches a run
//! leased to a live replica.
//!
//! A replica cut off from the store cannot renew; once another took one of
//! its runs over, the keeper sees it and ends its own pipeline for that run
//! without touching its processes (the new owner holds them now).

use std::time::Duration;

use reporunner_proto::orchestrator::v1::RunState;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    Result,
    run::{
        Engine,
        steps::{monitor::stopped, provision::release_backing},
    },
    store::{RunChange, is_terminal},
};

/// Why a run another replica drove (or this replica's previous life) is
/// INTERRUPTED.
const TAKEN_OVER: &str =
    "the orchestrator driving this run stopped or restarted while it was in progress; create a new run";

/// Takes over the runs `claimed` (see `RunStore::claim_unheld`): RUNNING and
/// DEGRADED runs are monitored again when their processes live (in the
/// background: the runner may be starting beside us); the others become
/// INTERRUPTED and what they started is stopped and released.
pub(crate) async fn take_over(engine: &Engine, claimed: Vec<String>) -> Result<()> {
    let store = &engine.recorder.store;
    let mut interrupted = Vec::new();
    let mut left = Vec::new();
    for id in claimed {
        if engine.recorder.live.get(&id).is_some() {
            // Driven here already (a sweep racing this replica's own run).
            continue;
        }
        let Some(run) = store.get_run(&id).await? else {
            continue;
        };
        if is_terminal(run.state()) {
            continue;
        }
        let components = store.components(&id).await?;
        if matches!(run.state(), RunState::Running | RunState::Degraded) {
            let live = engine.recorder.live.start(&id);
            let span = tracing::info_span!("run", run_id = %id, user_id = %run.owner_id);
            let resumed = crate::run::steps::monitor::resume(engine.clone(), id, components, live);
            tokio::spawn(resumed.instrument(span));
            continue;
        }
        let change = RunChange {
            error: Some(TAKEN_OVER.into()),
            components: (!components.is_empty()).then(|| stopped(components.clone())),
            ..RunChange::default()
        };
        if store
            .transition(&id, RunState::Interrupted, change)
            .await?
            .is_some()
        {
            crate::metrics::run_ended(RunState::Interrupted);
            left.extend(components.into_iter().map(|c| c.process_id));
            interrupted.push(id);
        }
    }
    if !interrupted.is_empty() {
        tracing::warn!(
            runs = interrupted.len(),
            "runs left unfinished by a stopped orchestrator are now interrupted"
        );
        let engine = engine.clone();
        tokio::spawn(async move {
            engine.stop_processes(&left).await;
            // Their backing services too (Release is idempotent).
            for id in &interrupted {
                release_backing(&engine, id).await;
            }
        });
    }
    Ok(())
}

/// Renews this replica's leases, gives up runs another replica took over,
/// and takes over runs whose lease expired, every third of the lease, until
/// `stop` is cancelled. Store failures are logged and retried on the next
/// tick. Spawn it.
pub(crate) async fn keep(engine: Engine, stop: CancellationToken) {
    let every = engine.config.run_lease() / 3;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = sweep(&engine).await {
            tracing::warn!(error = %reporunner_error::error_chain(&err), "cannot renew or sweep run leases");
        }
    }
}

async fn sweep(engine: &Engine) -> Result<()> {
    let store = &engine.recorder.store;
    let here = engine.recorder.live.ids();
    let mut lost = Vec::new();
    // Bounded statements, whatever the number of runs here.
    for some in here.chunks(500) {
        store.renew_leases(some).await?;
        lost.extend(store.leased_elsewhere(some).await?);
    }
    for id in lost {
        if let Some(live) = engine.recorder.live.get(&id) {
            tracing::warn!(run_id = %id, "another orchestrator took this run over; its pipeline here ends");
            // The same as a shutdown: the run and its processes are left as
            // they are, to their new owner.
            live.cancel.cancel();
        }
    }
    let claimed = store.claim_unheld(false).await?;
    if !claimed.is_empty() {
        tracing::info!(
            runs = claimed.len(),
            "taking over runs whose orchestrator stopped"
        );
        take_over(engine, claimed).await?;
    }
    Ok(())
}
