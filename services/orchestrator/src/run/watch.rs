//! The started components of a run under watch: their health watches at the
//! health agent and their processes at the runner. Used by the probe step
//! (until every component is healthy), the monitor step (until the run is
//! stopped or a component fails for good), and a run resumed after a
//! restart.

use std::time::{Duration, Instant};

use reporunner_proto::{
    agents::{
        health::v1::{
            HealthState, HttpProbe, ProbeRequest, ProbeResult, ProbeSpec, ProcessProbe, TcpProbe,
            WatchRequest, WatchResponse, probe_spec,
        },
        resolver::v1::Phase,
        runner::v1::{ProcessState, ProcessStatus},
    },
    common::v1::ComponentKind,
    orchestrator::v1::{ComponentHealth, HealthEvent, run_event},
};
use tokio_stream::{StreamExt as _, StreamMap};
use tokio_util::sync::CancellationToken;

use crate::{
    OrchestratorError, Result,
    heal::{Failure, TAIL_LINES},
    run::{Engine, Flow, Halt, RunContext, Step, failure_message, quote_tail},
    store::{RunChange, RunComponent},
};

/// The longest a health watch is asked to run before it is re-opened.
const WATCH_SECONDS: u64 = 24 * 3_600;

/// A run's started components and their open health watches.
#[derive(Debug)]
pub struct Monitor {
    pub run_id: String,
    pub components: Vec<RunComponent>,
    /// False when the health agent was skipped.
    pub probed: bool,
    watches: StreamMap<String, tonic::Streaming<WatchResponse>>,
}

impl Monitor {
    pub fn new(run_id: String, components: Vec<RunComponent>, probed: bool) -> Self {
        Self {
            run_id,
            components,
            probed,
            watches: StreamMap::new(),
        }
    }
}

/// The probe that tells whether `component` is up.
pub(crate) fn probe_for(component: &RunComponent) -> ProbeSpec {
    let probe = if component.url.is_empty() || component.kind == ComponentKind::Worker as i32 {
        probe_spec::Probe::Process(ProcessProbe { pid: component.pid })
    } else if component.kind == ComponentKind::Service as i32 {
        // Up when its port accepts connections: it speaks no HTTP.
        let host = component
            .url
            .split_once("://")
            .map_or(component.url.as_str(), |(_, rest)| rest)
            .rsplit_once(':')
            .map_or("127.0.0.1", |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        probe_spec::Probe::Tcp(TcpProbe {
            host,
            port: component.port,
        })
    } else {
        probe_spec::Probe::Http(HttpProbe {
            base_url: component.url.clone(),
            paths: component.health_paths.clone(),
        })
    };
    ProbeSpec {
        probe: Some(probe),
        timeout_ms: 0,
    }
}

/// A probe's verdict as the run's component health.
pub(crate) fn component_health(state: HealthState) -> ComponentHealth {
    match state {
        HealthState::Healthy => ComponentHealth::Healthy,
        HealthState::Unhealthy => ComponentHealth::Unhealthy,
        HealthState::Starting | HealthState::Unspecified => ComponentHealth::Starting,
    }
}

/// Whether a process ended for good.
pub(crate) fn is_over(state: ProcessState) -> bool {
    matches!(
        state,
        ProcessState::Exited | ProcessState::Failed | ProcessState::Stopped
    )
}

impl Engine {
    /// The last `log_tail_lines` lines of a process's output.
    pub(crate) async fn process_tail(&self, process_id: &str) -> Vec<String> {
        self.clients
            .runner
            .tail(process_id, self.config.log_tail_lines)
            .await
    }

    /// Keeps what a failed component left for the resolver: its last lines.
    pub(crate) async fn component_failed(
        &self,
        ctx: &RunContext,
        phase: Phase,
        component: &RunComponent,
        exit_code: i32,
    ) {
        let log_tail = self.clients.runner.tail(&component.process_id, TAIL_LINES).await;
        if let Some(hit) = reporunner_sandbox::limit_hit(exit_code, &log_tail, &ctx.sandbox_limits()) {
            let _ = self
                .notice(&ctx.run_id, format!("{}: {hit}", component.name))
                .await;
        }
        ctx.failed(Failure {
            phase: phase as i32,
            component: component.name.clone(),
            exit_code,
            log_tail,
        });
    }

    /// Keeps what a failed probe left for the resolver: the first component
    /// that is not healthy, its exit code and last lines.
    pub(crate) async fn probe_failed(&self, ctx: &RunContext, monitor: &Monitor) {
        let Some(component) = monitor
            .components
            .iter()
            .find(|c| !matches!(c.health(), ComponentHealth::Healthy | ComponentHealth::Unprobed))
            .or_else(|| monitor.components.first())
        else {
            return;
        };
        let (phase, exit_code) = match self.clients.runner.status(&component.process_id).await {
            Ok(status) if is_over(status.state()) => (Phase::Start, status.exit_code),
            _ => (Phase::Probe, 0),
        };
        self.component_failed(ctx, phase, component, exit_code).await;
    }

    async fn open_watch(&self, component: &RunComponent) -> Result<tonic::Streaming<WatchResponse>> {
        let request = WatchRequest {
            component: component.name.clone(),
            probes: vec![probe_for(component)],
            startup_grace_seconds: self.config.startup_grace_seconds,
            interval_ms: self.config.probe_interval_ms,
            failure_threshold: self.config.failure_threshold,
        };
        self.clients
            .health
            .watch(request, Duration::from_secs(WATCH_SECONDS))
            .await
    }

    /// Records a probe result that changes a component's health.
    async fn health_changed(&self, monitor: &mut Monitor, name: &str, result: Option<ProbeResult>) -> Flow {
        let Some(result) = result else {
            return Ok(());
        };
        let health = component_health(result.state());
        let Some(component) = monitor.components.iter_mut().find(|c| c.name == name) else {
            return Ok(());
        };
        // A re-opened watch starts over in STARTING: not a change.
        let was = component.health();
        if was == health || (health == ComponentHealth::Starting && was != ComponentHealth::Starting) {
            return Ok(());
        }
        component.set_health(health);
        let event = run_event::Event::Health(HealthEvent {
            component: name.to_owned(),
            health: health.into(),
            detail: result.detail,
        });
        let change = RunChange {
            components: Some(monitor.components.clone()),
            ..RunChange::default()
        };
        self.emit(&monitor.run_id, change, event).await
    }

    /// Fails when a component's process ended for good.
    async fn check_processes(&self, monitor: &Monitor) -> Flow {
        for component in &monitor.components {
            let status = match self.clients.runner.status(&component.process_id).await {
                Ok(status) => status,
                Err(OrchestratorError::AgentFailed { status, .. })
                    if status.code() == tonic::Code::NotFound =>
                {
                    return Err(Halt::Failed(format!(
                        "{}: the runner no longer knows its process {}",
                        component.name, component.process_id
                    )));
                }
                Err(err) => {
                    tracing::warn!(component = %component.name, error = %err, "cannot read a process status");
                    continue;
                }
            };
            if is_over(status.state()) {
                let tail = self.process_tail(&component.process_id).await;
                let how = match status.state() {
                    ProcessState::Stopped => "was stopped outside this run".to_owned(),
                    ProcessState::Exited => format!("exited with code {}", status.exit_code),
                    _ => format!(
                        "failed with exit code {} after {} restart(s)",
                        status.exit_code, status.restarts
                    ),
                };
                return Err(Halt::Failed(format!(
                    "{} {how}{}",
                    component.name,
                    quote_tail(&tail)
                )));
            }
        }
        Ok(())
    }

    /// Opens the watches of the components that have none.
    async fn reopen_watches(&self, monitor: &mut Monitor) {
        if !monitor.probed {
            return;
        }
        for component in &monitor.components {
            if monitor.watches.contains_key(&component.name) {
                continue;
            }
            match self.open_watch(component).await {
                Ok(stream) => {
                    monitor.watches.insert(component.name.clone(), stream);
                }
                Err(err) => {
                    tracing::warn!(component = %component.name, error = %err, "cannot open a health watch");
                }
            }
        }
    }

    /// Waits until every component is healthy; fails when one is unhealthy
    /// after its grace, or its process ends for good.
    pub(crate) async fn until_healthy(&self, monitor: &mut Monitor, cancel: &CancellationToken) -> Flow {
        for component in &monitor.components {
            let stream = self
                .open_watch(component)
                .await
                .map_err(|err| Halt::Failed(failure_message(Step::Probe, &err)))?;
            monitor.watches.insert(component.name.clone(), stream);
        }
        let mut poll = tokio::time::interval(self.config.status_poll());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = tokio::time::sleep(self.config.probe_deadline());
        tokio::pin!(deadline);
        let mut agent_error: Option<String> = None;
        // When the logs were last looked at for an error report.
        let started = std::time::Instant::now();
        let mut looked = started;
        loop {
            if monitor
                .components
                .iter()
                .all(|c| c.health() == ComponentHealth::Healthy)
            {
                return Ok(());
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(Halt::Taken),
                () = &mut deadline => return Err(self.not_healthy_in_time(monitor, agent_error.as_deref()).await),
                next = monitor.watches.next(), if !monitor.watches.is_empty() => match next {
                    Some((name, Ok(response))) => {
                        let unhealthy = response
                            .result
                            .as_ref()
                            .is_some_and(|r| r.state() == HealthState::Unhealthy);
                        let detail = response.result.as_ref().map(|r| r.detail.clone()).unwrap_or_default();
                        self.health_changed(monitor, &name, response.result).await?;
                        if unhealthy {
                            return Err(self.unhealthy_after_grace(monitor, &name, &detail).await);
                        }
                    }
                    // The watch ends; the next tick re-opens it. A health
                    // agent that stays away shows in the deadline's message.
                    Some((name, Err(status))) => {
                        let err = self.clients.health.failed(status);
                        tracing::warn!(component = %name, error = %err, "a health watch failed");
                        agent_error = Some(err.to_string());
                    }
                    None => {}
                },
                _ = poll.tick() => {
                    self.check_processes(monitor).await?;
                    self.reopen_watches(monitor).await;
                    if looked.elapsed() >= ERRORING_FOR {
                        looked = std::time::Instant::now();
                        if let Some(halt) = self.erroring_for_good(monitor).await {
                            return Err(halt);
                        }
                    }
                }
            }
        }
    }

    /// A component not healthy yet whose log shows an error report (a
    /// traceback, a stack, a panic) and that answers a probe with 5xx
    /// fails the probe now: the error will not go away by waiting out the
    /// grace. Looked at every [`ERRORING_FOR`].
    async fn erroring_for_good(&self, monitor: &Monitor) -> Option<Halt> {
        for component in monitor
            .components
            .iter()
            .filter(|c| c.health() != ComponentHealth::Healthy && c.port != 0)
        {
            let tail = self.process_tail(&component.process_id).await;
            if !tail.iter().any(|line| shows_an_error(line)) {
                continue;
            }
            let request = ProbeRequest {
                probes: vec![probe_for(component)],
            };
            let Ok(answer) = self.clients.health.probe(request).await else {
                continue;
            };
            let detail = answer.result.map(|r| r.detail).unwrap_or_default();
            if answered_5xx(&detail) {
                return Some(Halt::Failed(format!(
                    "probe failed: {} answers with a server error ({detail}) and its log shows why{}",
                    component.name,
                    quote_tail(&tail)
                )));
            }
        }
        None
    }

    async fn not_healthy_in_time(&self, monitor: &Monitor, agent_error: Option<&str>) -> Halt {
        let late: Vec<&RunComponent> = monitor
            .components
            .iter()
            .filter(|c| c.health() != ComponentHealth::Healthy)
            .collect();
        let names: Vec<&str> = late.iter().map(|c| c.name.as_str()).collect();
        let tail = match late.first() {
            Some(c) => self.process_tail(&c.process_id).await,
            None => Vec::new(),
        };
        Halt::Failed(format!(
            "probe failed: {} did not become healthy within {} s{}{}",
            names.join(", "),
            self.config.probe_deadline().as_secs(),
            agent_error.map(|e| format!(" ({e})")).unwrap_or_default(),
            quote_tail(&tail)
        ))
    }

    async fn unhealthy_after_grace(&self, monitor: &Monitor, name: &str, detail: &str) -> Halt {
        let process = monitor
            .components
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.process_id.clone())
            .unwrap_or_default();
        let tail = self.process_tail(&process).await;
        Halt::Failed(format!(
            "probe failed: {name} did not become healthy within the start-up grace of {} s ({detail}){}",
            self.config.startup_grace_seconds,
            quote_tail(&tail)
        ))
    }

    /// Without the health agent: waits until every process runs.
    pub(crate) async fn until_processes_run(
        &self,
        monitor: &mut Monitor,
        cancel: &CancellationToken,
    ) -> Flow {
        let until = Instant::now() + self.config.probe_deadline();
        for component in &mut monitor.components {
            loop {
                let status = crate::run::until_cancel(cancel, async {
                    self.clients
                        .runner
                        .status(&component.process_id)
                        .await
                        .map_err(|err| Halt::Failed(failure_message(Step::Probe, &err)))
                })
                .await?;
                match status.state() {
                    ProcessState::Running => break,
                    state if is_over(state) || Instant::now() > until => {
                        let tail = self.process_tail(&component.process_id).await;
                        return Err(Halt::Failed(format!(
                            "start failed: {} is not running (exit code {}){}",
                            component.name,
                            status.exit_code,
                            quote_tail(&tail)
                        )));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            component.set_health(ComponentHealth::Unprobed);
        }
        Ok(())
    }

    /// Keeps a RUNNING run under watch until it is stopped or a component
    /// fails for good.
    pub(crate) async fn watch_running(&self, monitor: &mut Monitor, cancel: &CancellationToken) -> Flow {
        let mut poll = tokio::time::interval(self.config.status_poll());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Err(Halt::Taken),
                next = monitor.watches.next(), if !monitor.watches.is_empty() => {
                    if let Some((name, Ok(response))) = next {
                        self.health_changed(monitor, &name, response.result).await?;
                    }
                }
                _ = poll.tick() => {
                    self.check_processes(monitor).await?;
                    self.reopen_watches(monitor).await;
                }
            }
        }
    }

    /// A process's status, retried while the runner is unreachable (it may
    /// start beside this orchestrator).
    pub(crate) async fn status_after_restart(&self, process_id: &str) -> Result<ProcessStatus> {
        let until = Instant::now() + self.config.runner_deadline();
        loop {
            match self.clients.runner.status(process_id).await {
                Err(OrchestratorError::AgentUnavailable { .. } | OrchestratorError::AgentDeadline { .. })
                    if Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }
}

/// How long a component answers 5xx, with an error in its log, before the
/// probe fails without waiting out the grace.
const ERRORING_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a probe's detail (`GET / -> 500 in 12 ms`) is a server error.
fn answered_5xx(detail: &str) -> bool {
    detail
        .split("-> ")
        .nth(1)
        .is_some_and(|rest| rest.starts_with('5') && rest.chars().take(3).all(|c| c.is_ascii_digit()))
}

/// Whether a log line is part of an error report: a Python traceback, a
/// JavaScript stack frame, a Rust panic, a Java exception.
fn shows_an_error(line: &str) -> bool {
    let trimmed = line.trim_start();
    // `RuntimeError: ...`, `sqlalchemy.exc.OperationalError: ...`, `TypeError: ...`.
    let first = trimmed.split_whitespace().next().unwrap_or_default();
    let exception = (first.ends_with("Error:") || first.ends_with("Exception:"))
        && first.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    exception
        || line.contains("Traceback (most recent call last)")
        || (trimmed.starts_with("at ") && line.starts_with("    ") && trimmed.contains('('))
        || line.contains("panicked at")
        || line.contains("Exception in thread")
        || line.contains("Internal Server Error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_components_get_http_probes_and_workers_process_probes() {
        let web = RunComponent {
            name: "web".into(),
            url: "http://127.0.0.1:5000".into(),
            pid: 42,
            kind: ComponentKind::Web.into(),
            health_paths: vec!["/health".into()],
            ..RunComponent::default()
        };
        match probe_for(&web).probe {
            Some(probe_spec::Probe::Http(http)) => {
                assert_eq!(http.base_url, "http://127.0.0.1:5000");
                assert_eq!(http.paths, vec!["/health".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        // A server of another protocol (a RESP or SMTP server) is up when
        // its port accepts connections; an HTTP probe would never pass.
        let service = RunComponent {
            url: "tcp://127.0.0.1:6380".into(),
            port: 6380,
            kind: ComponentKind::Service.into(),
            ..web.clone()
        };
        assert_eq!(
            probe_for(&service).probe,
            Some(probe_spec::Probe::Tcp(TcpProbe {
                host: "127.0.0.1".into(),
                port: 6380
            }))
        );
        let worker = RunComponent {
            kind: ComponentKind::Worker.into(),
            ..web
        };
        assert_eq!(
            probe_for(&worker).probe,
            Some(probe_spec::Probe::Process(ProcessProbe { pid: 42 }))
        );
    }

    #[test]
    fn processes_end_for_good_and_health_reads_as_words() {
        assert!(is_over(ProcessState::Failed) && !is_over(ProcessState::Starting));
        assert_eq!(
            component_health(HealthState::Unspecified),
            ComponentHealth::Starting
        );
    }
}
