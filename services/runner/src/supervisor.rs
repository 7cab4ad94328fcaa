//! Supervision of one process: output capture, stop, runtime limit and
//! restarts. Independent of how the process is spawned.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use reporunner_proto::{
    agents::runner::v1::{ProcessState, ProcessStatus, RestartPolicy},
    common::v1::LogStream,
};
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep_until, timeout, timeout_at},
};

use crate::{
    backend::{BackendProcess, LaunchSpec, ProcessBackend, Spawned, StopSignal},
    config::RunnerConfig,
    logs::{LogBuffer, capture},
    metrics,
};

/// What the runner knows about one supervised process.
#[derive(Debug)]
pub(crate) struct Process {
    pub id: String,
    pub run_id: String,
    pub component: String,
    pub logs: LogBuffer,
    status: Mutex<ProcessStatus>,
    /// The state, for waiters (Stop, Logs).
    state: watch::Sender<ProcessState>,
    /// A stop request and its grace.
    stop: watch::Sender<Option<Duration>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) fn is_terminal(state: ProcessState) -> bool {
    matches!(
        state,
        ProcessState::Exited | ProcessState::Failed | ProcessState::Stopped
    )
}

impl Process {
    pub fn new(
        id: String,
        run_id: String,
        component: String,
        logs: LogBuffer,
        status: ProcessStatus,
    ) -> Self {
        let state = status.state();
        Self {
            id,
            run_id,
            component,
            logs,
            status: Mutex::new(status),
            state: watch::channel(state).0,
            stop: watch::channel(None).0,
            task: Mutex::new(None),
        }
    }

    pub fn status(&self) -> ProcessStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn state(&self) -> ProcessState {
        *self.state.borrow()
    }

    pub fn subscribe_state(&self) -> watch::Receiver<ProcessState> {
        self.state.subscribe()
    }

    fn update(&self, change: impl FnOnce(&mut ProcessStatus)) {
        let state = {
            let mut status = self
                .status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            change(&mut status);
            status.state()
        };
        self.state.send_if_modified(|old| {
            let changed = *old != state;
            *old = state;
            changed
        });
    }

    fn system(&self, text: String) {
        self.logs.push(LogStream::System, text);
    }

    pub fn set_task(&self, task: JoinHandle<()>) {
        *self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    /// Cancels supervision; the backend process is dropped and so killed.
    pub fn abort(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            task.abort();
        }
        // Followers of the logs end.
        self.update(|s| {
            if !is_terminal(s.state()) {
                s.state = ProcessState::Stopped.into();
                s.pid = 0;
            }
        });
    }

    /// Asks the supervisor to stop the process and waits until it ended.
    pub async fn stop(&self, grace: Duration) {
        let mut state = self.state.subscribe();
        if is_terminal(*state.borrow_and_update()) {
            return;
        }
        self.stop.send_if_modified(|old| {
            if old.is_none() {
                *old = Some(grace);
                true
            } else {
                false
            }
        });
        // The supervisor ends it within the grace plus the time to kill.
        let _ = state.wait_for(|s| is_terminal(*s)).await;
    }
}

/// How a supervised process restarts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    /// When the whole run must end (max runtime), if ever.
    pub deadline: Option<Instant>,
}

enum Event {
    Exited(crate::Result<i32>),
    Stop(Duration),
    Deadline,
}

async fn stop_requested(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(grace) = *stop.borrow_and_update() {
            return grace;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn deadline(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn spawn_readers<P>(
    process: &Arc<Process>,
    spawned: &mut Spawned<P>,
    max_line_bytes: usize,
) -> Vec<JoinHandle<()>> {
    let mut readers = Vec::new();
    for (stream, kind) in [
        (spawned.stdout.take(), LogStream::Stdout),
        (spawned.stderr.take(), LogStream::Stderr),
    ] {
        if let Some(output) = stream {
            let process = Arc::clone(process);
            readers.push(tokio::spawn(async move {
                capture(output.0, kind, &process.logs, max_line_bytes).await;
            }));
        }
    }
    readers
}

/// Supervises `process` from its first spawn until a terminal state.
pub(crate) async fn supervise<B: ProcessBackend>(
    backend: Arc<B>,
    config: Arc<RunnerConfig>,
    process: Arc<Process>,
    spec: LaunchSpec,
    first: Spawned<B::Process>,
    policy: Policy,
) {
    let mut stop_rx = process.stop.subscribe();
    let mut next = Some(first);
    let mut restarts: u32 = 0;
    while let Some(mut spawned) = next.take() {
        let readers = spawn_readers(&process, &mut spawned, config.max_line_bytes);
        let pid = spawned.pid;
        let isolation = spawned.isolation.clone();
        process.update(|s| {
            s.state = ProcessState::Running.into();
            s.pid = pid;
            s.restarts = restarts;
            s.started_at = Some(prost_types::Timestamp::from(SystemTime::now()));
            s.sandboxed = isolation.sandboxed;
            s.sandbox_note = isolation.note.clone();
        });
        let mut child = spawned.process;
        let event = tokio::select! {
            code = child.wait() => Event::Exited(code),
            grace = stop_requested(&mut stop_rx) => Event::Stop(grace),
            () = deadline(policy.deadline) => Event::Deadline,
        };
        let (code, reason) = match event {
            Event::Exited(code) => (code, None),
            Event::Stop(grace) => {
                child.signal(StopSignal::Terminate);
                let end = Instant::now() + grace;
                let code = match timeout_at(end, child.wait()).await {
                    Ok(code) => code,
                    Err(_) => {
                        child.signal(StopSignal::Kill);
                        child.wait().await
                    }
                };
                // The rest of the group gets the rest of the grace.
                while Instant::now() < end && child.group_alive() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (code, Some(ProcessState::Stopped))
            }
            Event::Deadline => {
                child.signal(StopSignal::Kill);
                let code = child.wait().await;
                process.system(format!(
                    "the run time limit was reached; the process group was killed after {} s",
                    spec.limits.max_runtime_seconds
                ));
                (code, Some(ProcessState::Failed))
            }
        };
        // Whatever the main process left behind in its group ends with it.
        child.cleanup().await;
        drop(child);
        for reader in readers {
            let abort = reader.abort_handle();
            if timeout(Duration::from_secs(2), reader).await.is_err() {
                abort.abort();
            }
        }
        let code = match code {
            Ok(code) => code,
            Err(err) => {
                tracing::warn!(process_id = %process.id, error = %err, "cannot wait for a process");
                -1
            }
        };
        process.update(|s| {
            s.exit_code = code;
            s.pid = 0;
        });
        if let Some(state) = reason {
            let kind = if state == ProcessState::Stopped {
                "stop"
            } else {
                "runtime_limit"
            };
            finish(&process, state, kind, format!("process ended (exit code {code})"));
            return;
        }
        let wants_restart = match policy.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never | RestartPolicy::Unspecified => false,
        };
        if !wants_restart || restarts >= policy.max_restarts {
            let (state, kind) = if code == 0 {
                (ProcessState::Exited, "exit")
            } else {
                (ProcessState::Failed, "exit")
            };
            let note = if wants_restart {
                format!(
                    "process exited with code {code}; no restarts left ({restarts} of {})",
                    policy.max_restarts
                )
            } else {
                format!("process exited with code {code}")
            };
            finish(&process, state, kind, note);
            return;
        }
        restarts += 1;
        let delay = config.backoff(restarts);
        process.system(format!(
            "process exited with code {code}; restart {restarts} of {} in {} ms",
            policy.max_restarts,
            delay.as_millis()
        ));
        process.update(|s| {
            s.state = ProcessState::Starting.into();
            s.restarts = restarts;
        });
        metrics::restarted();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop_requested(&mut stop_rx) => {
                finish(&process, ProcessState::Stopped, "stop", "stopped while waiting to restart".into());
                return;
            }
            () = deadline(policy.deadline) => {
                finish(&process, ProcessState::Failed, "runtime_limit", "the run time limit was reached while waiting to restart".into());
                return;
            }
        }
        match backend.spawn(&spec).await {
            Ok(spawned) => next = Some(spawned),
            Err(err) => {
                tracing::warn!(process_id = %process.id, error = %err, "cannot restart a process");
                finish(
                    &process,
                    ProcessState::Failed,
                    "spawn_error",
                    format!("the restart failed: {err}"),
                );
                return;
            }
        }
    }
}

fn finish(process: &Process, state: ProcessState, kind: &'static str, note: String) {
    process.system(note);
    let name = match state {
        ProcessState::Exited => "exited",
        ProcessState::Stopped => "stopped",
        _ => "failed",
    };
    metrics::ended(name, kind);
    tracing::info!(process_id = %process.id, run_id = %process.run_id, component = %process.component, state = name, "process ended");
    // Last: followers of the logs see the terminal state only after every line.
    process.update(|s| s.state = state.into());
}
