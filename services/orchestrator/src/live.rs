//! Runs driven by this process: their cancellation tokens and live event
//! feeds, and the one path by which run events are written and published.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use reporunner_proto::orchestrator::v1::{Run, RunEvent, RunState, run_event};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    Result,
    store::{RunChange, RunStore, is_terminal},
};

/// A run whose pipeline runs in this process.
#[derive(Debug)]
pub(crate) struct LiveRun {
    /// Every event of the run, in sequence order, as it is stored.
    pub events: broadcast::Sender<RunEvent>,
    /// Cancelled by StopRun.
    pub cancel: CancellationToken,
    /// Cancelled once the run's task ended here (its processes stopped).
    pub ended: CancellationToken,
    /// Held across "store, then publish", so that live events go out in
    /// sequence order even with two writers (the pipeline and StopRun).
    writer: tokio::sync::Mutex<()>,
}

/// The live runs of this process.
#[derive(Debug)]
pub(crate) struct LiveRuns {
    runs: Mutex<HashMap<String, Arc<LiveRun>>>,
    buffer: usize,
}

impl LiveRuns {
    pub fn new(buffer: usize) -> Self {
        Self {
            runs: Mutex::default(),
            buffer: buffer.max(1),
        }
    }

    /// Registers a run about to be driven here.
    pub fn start(&self, run_id: &str) -> Arc<LiveRun> {
        let (events, _) = broadcast::channel(self.buffer);
        let live = Arc::new(LiveRun {
            events,
            cancel: CancellationToken::new(),
            ended: CancellationToken::new(),
            writer: tokio::sync::Mutex::new(()),
        });
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(run_id.to_owned(), live.clone());
        }
        live
    }

    pub fn get(&self, run_id: &str) -> Option<Arc<LiveRun>> {
        self.runs.lock().ok()?.get(run_id).cloned()
    }

    /// The runs driven here.
    pub fn ids(&self) -> Vec<String> {
        self.runs
            .lock()
            .map(|runs| runs.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a run whose pipeline ended; its watchers see the feed close
    /// and read the rest from the store.
    pub fn finish(&self, run_id: &str) {
        if let Ok(mut runs) = self.runs.lock()
            && let Some(live) = runs.remove(run_id)
        {
            live.ended.cancel();
        }
    }

    /// Cancels every live run (shutdown).
    pub fn cancel_all(&self) {
        if let Ok(runs) = self.runs.lock() {
            for live in runs.values() {
                live.cancel.cancel();
            }
        }
    }
}

/// Writes run events to the store and publishes them to live watchers.
#[derive(Clone, Debug)]
pub(crate) struct Recorder {
    pub store: RunStore,
    pub live: Arc<LiveRuns>,
}

impl Recorder {
    /// Stores `change` and `event` (see [`RunStore::append`]) and publishes
    /// the event. `None` when the run is over already.
    pub async fn record(
        &self,
        run_id: &str,
        change: RunChange,
        event: run_event::Event,
    ) -> Result<Option<(Run, RunEvent)>> {
        let live = self.live.get(run_id);
        let _order = match &live {
            Some(live) => Some(live.writer.lock().await),
            None => None,
        };
        let written = self.store.append(run_id, change, event).await?;
        if let Some((run, event)) = &written {
            if is_terminal(run.state()) {
                crate::metrics::run_ended(run.state());
            }
            if let Some(live) = &live {
                // No receiver is fine: nobody watches.
                let _ = live.events.send(event.clone());
            }
        }
        Ok(written)
    }

    pub async fn transition(
        &self,
        run_id: &str,
        state: RunState,
        mut change: RunChange,
    ) -> Result<Option<(Run, RunEvent)>> {
        change.state = Some(state);
        self.record(run_id, change, run_event::Event::State(state.into()))
            .await
    }
}
