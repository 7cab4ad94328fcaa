//! The health agent: is a user's component up?
//!
//! Probes are HTTP (candidate paths from the plan, then `/`; any answer below
//! 500 counts as up), TCP (a connection is accepted), process (the pid is alive
//! and not a zombie) and log (a runner log line matches a readiness pattern
//! such as "Uvicorn running on"). A request's probes all have to pass.
//! [`Health::watch`] probes on an interval and reports every change of state,
//! with start-up grace and liveness thresholds (see [`watch::Tracker`]).
//!
//! The domain lives behind [`Health`] ([`HealthAgent`] implements it);
//! [`grpc`] is a thin adapter.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod metrics;
pub mod probe;
pub mod watch;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

pub use config::HealthConfig;
pub use error::{HealthError, Result};
use probe::{Probe, ProbeKind, Prober};
use reporunner_client::Transport;
use reporunner_proto::agents::health::v1::{
    HealthState, ProbeResult, ProbeSpec, WatchRequest, WatchResponse,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// A validated watch.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub component: String,
    pub probes: Vec<Probe>,
    pub startup_grace: Duration,
    pub interval: Duration,
    pub failure_threshold: u32,
}

/// The health agent's domain.
pub trait Health: Send + Sync + 'static {
    /// Runs every probe once, concurrently; healthy when all pass.
    fn probe(&self, specs: &[ProbeSpec]) -> impl Future<Output = Result<ProbeResult>> + Send;

    /// Probes until the receiver goes away, sending the first result and
    /// every change of state.
    fn watch(&self, request: WatchRequest) -> Result<ReceiverStream<WatchResponse>>;
}

/// Probes over real sockets, /proc and the runner's logs.
#[derive(Clone, Debug)]
pub struct HealthAgent {
    config: Arc<HealthConfig>,
    prober: Prober,
    watches: Arc<Semaphore>,
}

impl HealthAgent {
    /// `runner` is the transport to the runner agent, needed by log probes only.
    pub fn new(config: HealthConfig, runner: Option<Transport>) -> Result<Self> {
        config.validate()?;
        metrics::describe();
        Ok(Self {
            prober: Prober::new(&config, runner)?,
            watches: Arc::new(Semaphore::new(config.max_watches)),
            config: Arc::new(config),
        })
    }

    fn validate(&self, specs: &[ProbeSpec]) -> Result<Vec<Probe>> {
        let probes = probe::validate(specs, &self.config)?;
        if !self.prober.has_runner() && probes.iter().any(|p| matches!(p.kind, ProbeKind::Log { .. })) {
            return Err(HealthError::NoRunner);
        }
        Ok(probes)
    }

    /// Checks a watch request against the configured bounds.
    pub fn validate_watch(&self, request: &WatchRequest) -> Result<WatchSpec> {
        let probes = self.validate(&request.probes)?;
        let startup_grace = Duration::from_secs(u64::from(request.startup_grace_seconds));
        if startup_grace > self.config.max_startup_grace {
            return Err(HealthError::InvalidProbe(format!(
                "startup_grace_seconds {} is over the limit of {}",
                request.startup_grace_seconds,
                self.config.max_startup_grace.as_secs()
            )));
        }
        let interval = match request.interval_ms {
            0 => self.config.default_interval,
            ms if Duration::from_millis(u64::from(ms)) < self.config.min_interval => {
                return Err(HealthError::InvalidProbe(format!(
                    "interval_ms {ms} is below the minimum of {}",
                    self.config.min_interval.as_millis()
                )));
            }
            ms => Duration::from_millis(u64::from(ms)),
        };
        Ok(WatchSpec {
            component: request.component.clone(),
            probes,
            startup_grace,
            interval,
            failure_threshold: request.failure_threshold.max(1),
        })
    }
}

/// Runs all probes concurrently and folds them into one result.
async fn run_all(prober: &Prober, probes: &[Probe]) -> (bool, ProbeResult) {
    let started = Instant::now();
    let outcomes = futures::future::join_all(probes.iter().map(|p| prober.run(p))).await;
    let up = outcomes.iter().all(|o| o.up);
    let detail = outcomes
        .iter()
        .map(|o| o.detail.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let result = ProbeResult {
        state: if up {
            HealthState::Healthy
        } else {
            HealthState::Unhealthy
        } as i32,
        detail,
        latency_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
        time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
    };
    (up, result)
}

impl Health for HealthAgent {
    async fn probe(&self, specs: &[ProbeSpec]) -> Result<ProbeResult> {
        let probes = self.validate(specs)?;
        Ok(run_all(&self.prober, &probes).await.1)
    }

    fn watch(&self, request: WatchRequest) -> Result<ReceiverStream<WatchResponse>> {
        let spec = self.validate_watch(&request)?;
        let permit = self
            .watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| HealthError::TooManyWatches(self.config.max_watches))?;
        let (tx, rx) = mpsc::channel(16);
        let prober = self.prober.clone();
        let lifetime = self.config.max_watch;
        ::metrics::gauge!(metrics::WATCHES_OPEN).increment(1.0);
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let mut tracker = watch::Tracker::new(started, spec.startup_grace, spec.failure_threshold);
            let mut first = true;
            let mut ticker = tokio::time::interval(spec.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while started.elapsed() < lifetime {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = ticker.tick() => {}
                }
                let (up, mut result) = run_all(&prober, &spec.probes).await;
                let (state, changed) = tracker.observe(up, Instant::now());
                result.state = state as i32;
                if first || changed {
                    first = false;
                    let message = WatchResponse {
                        component: spec.component.clone(),
                        result: Some(result),
                    };
                    if tx.send(message).await.is_err() {
                        break;
                    }
                }
            }
            ::metrics::gauge!(metrics::WATCHES_OPEN).decrement(1.0);
        });
        Ok(ReceiverStream::new(rx))
    }
}
