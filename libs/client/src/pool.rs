//! A pool of endpoints of one service, each watched over `grpc.health.v1`.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use reporunner_server::metrics::CLIENT_ENDPOINTS;
use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{ClientConfig, ClientError};

/// What the pool knows of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointState {
    /// No health answer yet.
    Unknown,
    Serving,
    /// The endpoint answers, and says it is not serving.
    NotServing,
    /// The endpoint does not answer, or its health stream broke.
    Down(String),
}

impl EndpointState {
    fn label(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Serving => "serving",
            Self::NotServing => "not_serving",
            Self::Down(_) => "down",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) uri: Uri,
    pub(crate) channel: Channel,
    state: Mutex<EndpointState>,
    /// Restarts the health watch (after a failed call).
    recheck: Notify,
}

impl Member {
    pub(crate) fn state(&self) -> EndpointState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(EndpointState::Unknown)
    }
}

#[derive(Debug)]
struct Inner {
    service: String,
    members: RwLock<Vec<Arc<Member>>>,
    next: AtomicUsize,
    changed: watch::Sender<u64>,
    config: ClientConfig,
    cancel: CancellationToken,
    _guard: DropGuard,
}

/// Endpoints of one service and their health. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// Builds the pool and starts one health watch per endpoint. Must be
    /// called inside a tokio runtime.
    pub(crate) fn new(
        service: &str,
        endpoints: &[String],
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints {
                service: service.to_owned(),
            });
        }
        let cancel = CancellationToken::new();
        let (changed, _) = watch::channel(0);
        let pool = Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                members: RwLock::new(Vec::new()),
                next: AtomicUsize::new(0),
                changed,
                config,
                _guard: cancel.clone().drop_guard(),
                cancel,
            }),
        };
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            members.push(pool.member(endpoint)?);
        }
        for member in &members {
            pool.spawn_watch(member.clone());
        }
        if let Ok(mut slot) = pool.inner.members.write() {
            *slot = members;
        }
        pool.publish();
        Ok(pool)
    }

    pub(crate) fn service(&self) -> &str {
        &self.inner.service
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn member(&self, endpoint: &str) -> Result<Arc<Member>, ClientError> {
        let invalid = |reason: String| ClientError::InvalidEndpoint {
            service: self.inner.service.clone(),
            endpoint: endpoint.to_owned(),
            reason,
        };
        let uri: Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(invalid(
                "expected scheme://host:port, e.g. http://127.0.0.1:50051".to_owned(),
            ));
        }
        let config = &self.inner.config;
        let channel = Endpoint::from(uri.clone())
            .connect_timeout(config.connect_timeout())
            .http2_keep_alive_interval(Duration::from_millis(config.keepalive_interval_ms.max(1)))
            .keep_alive_timeout(Duration::from_millis(config.keepalive_timeout_ms.max(1)))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Arc::new(Member {
            uri,
            channel,
            state: Mutex::new(EndpointState::Unknown),
            recheck: Notify::new(),
        }))
    }

    fn set_state(&self, member: &Member, state: EndpointState) {
        let changed = match member.state.lock() {
            Ok(mut current) if *current != state => {
                tracing::info!(service = %self.inner.service, endpoint = %member.uri, from = ?*current, to = ?state, "endpoint health changed");
                *current = state;
                true
            }
            _ => false,
        };
        if changed {
            self.publish();
        }
    }

    /// Wakes waiters and refreshes the endpoint gauges.
    fn publish(&self) {
        let states: Vec<EndpointState> = self.members().iter().map(|m| m.state()).collect();
        for label in ["unknown", "serving", "not_serving", "down"] {
            let count = states.iter().filter(|s| s.label() == label).count();
            metrics::gauge!(CLIENT_ENDPOINTS, "service" => self.inner.service.clone(), "state" => label)
                .set(count as f64);
        }
        self.inner.changed.send_modify(|generation| *generation += 1);
    }

    pub(crate) fn members(&self) -> Vec<Arc<Member>> {
        self.inner.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// The state of every endpoint, in configuration order.
    pub(crate) fn states(&self) -> Vec<(Uri, EndpointState)> {
        self.members()
            .iter()
            .map(|m| (m.uri.clone(), m.state()))
            .collect()
    }

    /// A failed call: take the endpoint out until its watch says SERVING again.
    pub(crate) fn report_failure(&self, member: &Member, error: String) {
        self.set_state(member, EndpointState::Down(error));
        member.recheck.notify_one();
    }

    /// The next serving endpoint, round robin. When none serves but some have
    /// not answered yet, waits for news until `wait` runs out.
    pub(crate) async fn pick(&self, wait: Duration) -> Result<Arc<Member>, tonic::Status> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.inner.changed.subscribe();
        loop {
            changes.borrow_and_update();
            let members = self.members();
            let serving: Vec<&Arc<Member>> = members
                .iter()
                .filter(|m| m.state() == EndpointState::Serving)
                .collect();
            if !serving.is_empty() {
                let index = self.inner.next.fetch_add(1, Ordering::Relaxed) % serving.len();
                return Ok(serving[index].clone());
            }
            let any_unknown = members.iter().any(|m| m.state() == EndpointState::Unknown);
            if !any_unknown || tokio::time::Instant::now() >= deadline {
                return Err(self.unavailable());
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(self.unavailable());
            }
        }
    }

    fn unavailable(&self) -> tonic::Status {
        let states: Vec<String> = self
            .states()
            .into_iter()
            .map(|(uri, state)| match state {
                EndpointState::Down(reason) => format!("{uri} down ({reason})"),
                other => format!("{uri} {}", other.label().replace('_', " ")),
            })
            .collect();
        tonic::Status::unavailable(format!(
            "no healthy endpoint of {}: {}",
            self.inner.service,
            states.join(", ")
        ))
    }

    fn spawn_watch(&self, member: Arc<Member>) {
        let pool = self.clone_weak();
        let cancel = self.inner.cancel.clone();
        let service = self.inner.service.clone();
        let config = self.inner.config.clone();
        tokio::spawn(async move {
            let max = Duration::from_millis(config.health_retry_max_ms.max(10));
            let mut pause = Duration::from_millis(50);
            loop {
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    outcome = watch_once(&member, &service, &config, &pool) => outcome,
                };
                let Some(pool) = pool.upgrade() else { return };
                match outcome {
                    WatchEnd::Healthy => pause = Duration::from_millis(50),
                    WatchEnd::Failed(reason) => pool.set_state(&member, EndpointState::Down(reason)),
                }
                drop(pool);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(max);
            }
        });
    }

    fn clone_weak(&self) -> WeakPool {
        WeakPool {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

#[derive(Clone, Debug)]
struct WeakPool {
    inner: std::sync::Weak<Inner>,
}

impl WeakPool {
    fn upgrade(&self) -> Option<Pool> {
        self.inner.upgrade().map(|inner| Pool { inner })
    }
}

enum WatchEnd {
    /// The watch ran and was restarted on purpose (a recheck).
    Healthy,
    Failed(String),
}

/// Watches one endpoint until the stream breaks or a recheck is asked for.
async fn watch_once(member: &Member, service: &str, config: &ClientConfig, pool: &WeakPool) -> WatchEnd {
    let mut client = HealthClient::new(member.channel.clone());
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let response = match tokio::time::timeout(config.connect_timeout(), client.watch(request)).await {
        Err(_) => return WatchEnd::Failed(format!("no health answer within {:?}", config.connect_timeout())),
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            // A server without grpc.health.v1: only failed calls can take it out.
            if let Some(pool) = pool.upgrade() {
                pool.set_state(member, EndpointState::Serving);
            }
            member.recheck.notified().await;
            return WatchEnd::Healthy;
        }
        Ok(Err(status)) => return WatchEnd::Failed(short_status(&status)),
        Ok(Ok(response)) => response,
    };
    let mut stream = response.into_inner();
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(message)) => {
                    let state = if message.status() == ServingStatus::Serving {
                        EndpointState::Serving
                    } else {
                        EndpointState::NotServing
                    };
                    let Some(pool) = pool.upgrade() else { return WatchEnd::Healthy };
                    pool.set_state(member, state);
                }
                Ok(None) => return WatchEnd::Failed("health stream ended".to_owned()),
                Err(status) => return WatchEnd::Failed(short_status(&status)),
            },
            _ = member.recheck.notified() => return WatchEnd::Healthy,
        }
    }
}

fn short_status(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    if text.is_empty() {
        text = format!("{:?}", status.code());
    }
    text.truncate(200);
    text
}
