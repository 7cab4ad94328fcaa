//! A pool of endpoints of one service, each watched over `grpc.health.v1`.
//! Static endpoints stay for the pool's life; `dns:///` endpoints are
//! re-resolved on an interval and their addresses join and leave the pool.

use std::{
    collections::BTreeSet,
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use reporunner_server::metrics::{CLIENT_DISCOVERY_CHANGES_TOTAL, CLIENT_ENDPOINTS};
use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    ClientConfig, ClientError,
    discovery::{DnsTarget, MAX_ADDRESSES, Resolver, parse_dns},
};

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
    /// The endpoint as configured (or found), before any TLS rewrite, and
    /// the name its certificate is checked against: what a rebuild needs.
    endpoint: String,
    domain: Option<String>,
    /// The `dns:///` target (its index) and address that produced this
    /// member; `None` for a static endpoint.
    origin: Option<(usize, SocketAddr)>,
    /// Ends the health watch when the member leaves the pool.
    cancel: CancellationToken,
}

impl Member {
    pub(crate) fn state(&self) -> EndpointState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(EndpointState::Unknown)
    }
}

/// What discovery knows of one `dns:///` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Resolution {
    Pending,
    Resolved(usize),
    Failed(String),
}

#[derive(Debug)]
struct Target {
    endpoint: String,
    dns: DnsTarget,
    resolution: Mutex<Resolution>,
}

#[derive(Debug)]
struct Inner {
    service: String,
    members: RwLock<Vec<Arc<Member>>>,
    targets: Vec<Target>,
    resolver: Arc<dyn Resolver>,
    /// TLS towards every endpoint, when `client.tls` is configured, and the
    /// digest of the files it was read from; replaced when they change.
    tls: RwLock<Option<ClientTlsConfig>>,
    tls_digest: Mutex<u64>,
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
        resolver: Arc<dyn Resolver>,
    ) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints {
                service: service.to_owned(),
            });
        }
        let mut statics = Vec::new();
        let mut targets = Vec::new();
        for endpoint in endpoints {
            match parse_dns(endpoint) {
                None => statics.push(endpoint),
                Some(Ok(dns)) => targets.push(Target {
                    endpoint: endpoint.clone(),
                    dns,
                    resolution: Mutex::new(Resolution::Pending),
                }),
                Some(Err(reason)) => {
                    return Err(ClientError::InvalidEndpoint {
                        service: service.to_owned(),
                        endpoint: endpoint.clone(),
                        reason,
                    });
                }
            }
        }
        let (tls, tls_digest) = match load_tls(service, &config)? {
            Some((tls, digest)) => (Some(tls), digest),
            None => (None, 0),
        };
        let cancel = CancellationToken::new();
        let (changed, _) = watch::channel(0);
        let pool = Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                members: RwLock::new(Vec::new()),
                targets,
                resolver,
                tls: RwLock::new(tls),
                tls_digest: Mutex::new(tls_digest),
                next: AtomicUsize::new(0),
                changed,
                config,
                _guard: cancel.clone().drop_guard(),
                cancel,
            }),
        };
        let mut members = Vec::with_capacity(statics.len());
        for endpoint in statics {
            members.push(pool.member(endpoint, None, None)?);
        }
        for member in &members {
            pool.spawn_watch(member.clone());
        }
        if let Ok(mut slot) = pool.inner.members.write() {
            *slot = members;
        }
        for index in 0..pool.inner.targets.len() {
            pool.spawn_resolve(index);
        }
        pool.spawn_tls_reload();
        pool.publish();
        Ok(pool)
    }

    pub(crate) fn service(&self) -> &str {
        &self.inner.service
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A member dialling `endpoint`; `origin` and `domain` for one found by
    /// discovery (its certificate is checked against the DNS name, not the
    /// address).
    fn member(
        &self,
        endpoint: &str,
        origin: Option<(usize, SocketAddr)>,
        domain: Option<&str>,
    ) -> Result<Arc<Member>, ClientError> {
        let invalid = |reason: String| ClientError::InvalidEndpoint {
            service: self.inner.service.clone(),
            endpoint: endpoint.to_owned(),
            reason,
        };
        let mut uri: Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        let Some(authority) = uri.authority().cloned() else {
            return Err(invalid(
                "expected scheme://host:port, e.g. http://127.0.0.1:50051".to_owned(),
            ));
        };
        let current_tls = self.inner.tls.read().map(|t| t.clone()).unwrap_or_default();
        let tls = match (uri.scheme_str(), current_tls) {
            (Some("http"), None) => None,
            // A public endpoint (the CLI to an orchestrator behind a public
            // certificate): the web PKI roots.
            (Some("https"), None) => Some(ClientTlsConfig::new().with_webpki_roots()),
            (Some("http" | "https"), Some(tls)) => {
                uri = Uri::builder()
                    .scheme("https")
                    .authority(authority)
                    .path_and_query("/")
                    .build()
                    .map_err(|e| invalid(e.to_string()))?;
                let mut tls = tls;
                if let Some(domain) = self.inner.config.tls.domain.as_deref().or(domain) {
                    tls = tls.domain_name(domain);
                }
                Some(tls)
            }
            _ => {
                return Err(invalid(
                    "expected http://host:port, https://host:port or dns:///host:port".to_owned(),
                ));
            }
        };
        let config = &self.inner.config;
        let mut endpoint_builder = Endpoint::from(uri.clone())
            .connect_timeout(config.connect_timeout())
            .http2_keep_alive_interval(config.keepalive_interval.max(Duration::from_millis(1)))
            .keep_alive_timeout(config.keepalive_timeout.max(Duration::from_millis(1)))
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            endpoint_builder = endpoint_builder.tls_config(tls).map_err(|e| ClientError::Tls {
                service: self.inner.service.clone(),
                reason: reporunner_error::error_chain(&e),
            })?;
        }
        Ok(Arc::new(Member {
            uri,
            channel: endpoint_builder.connect_lazy(),
            state: Mutex::new(EndpointState::Unknown),
            recheck: Notify::new(),
            endpoint: endpoint.to_owned(),
            domain: domain.map(str::to_owned),
            origin,
            cancel: self.inner.cancel.child_token(),
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

    /// Makes the members of target `index` the addresses of its latest
    /// resolution: new ones join (health unknown until their watch answers),
    /// vanished ones leave and their watches stop.
    fn update_target(&self, index: usize, addrs: Vec<SocketAddr>) {
        let Some(target) = self.inner.targets.get(index) else {
            return;
        };
        let wanted: BTreeSet<SocketAddr> = addrs.into_iter().take(MAX_ADDRESSES).collect();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        if let Ok(mut members) = self.inner.members.write() {
            let present: BTreeSet<SocketAddr> = members
                .iter()
                .filter_map(|m| m.origin.filter(|(i, _)| *i == index).map(|(_, addr)| addr))
                .collect();
            for addr in wanted.difference(&present) {
                let endpoint = format!("http://{addr}");
                match self.member(&endpoint, Some((index, *addr)), Some(&target.dns.host)) {
                    Ok(member) => {
                        members.push(member.clone());
                        added.push(member);
                    }
                    Err(err) => {
                        tracing::warn!(service = %self.inner.service, %err, "discovered endpoint refused")
                    }
                }
            }
            members.retain(|m| match m.origin {
                Some((i, addr)) if i == index && !wanted.contains(&addr) => {
                    m.cancel.cancel();
                    removed.push(m.uri.to_string());
                    false
                }
                _ => true,
            });
        }
        if let Ok(mut resolution) = target.resolution.lock() {
            *resolution = Resolution::Resolved(wanted.len());
        }
        if !added.is_empty() || !removed.is_empty() {
            let joined: Vec<String> = added.iter().map(|m| m.uri.to_string()).collect();
            tracing::info!(service = %self.inner.service, target = %target.endpoint, ?joined, left = ?removed, "discovered endpoints changed");
            metrics::counter!(CLIENT_DISCOVERY_CHANGES_TOTAL, "service" => self.inner.service.clone())
                .increment(1);
        }
        for member in added {
            self.spawn_watch(member);
        }
        self.publish();
    }

    /// A resolution failed: the members found before stay (their health
    /// watches judge them); the reason shows in UNAVAILABLE messages.
    fn target_failed(&self, index: usize, reason: String) {
        let Some(target) = self.inner.targets.get(index) else {
            return;
        };
        tracing::warn!(service = %self.inner.service, target = %target.endpoint, %reason, "cannot resolve endpoint");
        if let Ok(mut resolution) = target.resolution.lock() {
            *resolution = Resolution::Failed(reason);
        }
        self.publish();
    }

    fn spawn_resolve(&self, index: usize) {
        let pool = self.clone_weak();
        let cancel = self.inner.cancel.clone();
        let resolver = self.inner.resolver.clone();
        let Some(dns) = self.inner.targets.get(index).map(|t| t.dns.clone()) else {
            return;
        };
        let interval = self.inner.config.resolve_interval.max(Duration::from_millis(10));
        let timeout = self.inner.config.connect_timeout();
        tokio::spawn(async move {
            loop {
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    outcome = tokio::time::timeout(timeout, resolver.resolve(&dns.host, dns.port)) => outcome,
                };
                let Some(pool) = pool.upgrade() else { return };
                match outcome {
                    Ok(Ok(addrs)) => pool.update_target(index, addrs),
                    Ok(Err(err)) => pool.target_failed(index, err.to_string()),
                    Err(_) => pool.target_failed(index, format!("no answer within {timeout:?}")),
                }
                drop(pool);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
    }

    /// Re-reads the client's TLS files on an interval; when they changed and
    /// load, every member is rebuilt with them (keeping its health), so new
    /// connections present the new certificate. Calls in flight finish on
    /// the old connections.
    fn spawn_tls_reload(&self) {
        let settings = self.inner.config.tls.clone();
        if !settings.is_enabled() || settings.reload_interval.is_zero() {
            return;
        }
        let pool = self.clone_weak();
        let cancel = self.inner.cancel.clone();
        let service = self.inner.service.clone();
        let config = self.inner.config.clone();
        let interval = settings.reload_interval;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let job = {
                    let (service, config) = (service.clone(), config.clone());
                    tokio::task::spawn_blocking(move || load_tls(&service, &config))
                };
                let Some(pool) = pool.upgrade() else { return };
                match job.await {
                    Ok(Ok(Some((tls, digest)))) => pool.replace_tls(tls, digest),
                    Ok(Ok(None)) => {}
                    Ok(Err(err)) => {
                        tracing::warn!(%err, "client tls files do not load; keeping the current ones");
                    }
                    Err(err) => tracing::warn!(%err, "client tls reload task failed"),
                }
            }
        });
    }

    fn replace_tls(&self, tls: ClientTlsConfig, digest: u64) {
        match self.inner.tls_digest.lock() {
            Ok(mut current) if *current != digest => *current = digest,
            _ => return,
        }
        // A config tonic refuses (a key that does not parse) is not taken.
        if let Err(err) = Endpoint::from_static("https://localhost").tls_config(tls.clone()) {
            tracing::warn!(service = %self.inner.service, err = %reporunner_error::error_chain(&err), "client tls files do not load; keeping the current ones");
            return;
        }
        if let Ok(mut slot) = self.inner.tls.write() {
            *slot = Some(tls);
        }
        let mut fresh = Vec::new();
        if let Ok(mut members) = self.inner.members.write() {
            for slot in members.iter_mut() {
                let old = slot.clone();
                match self.member(&old.endpoint, old.origin, old.domain.as_deref()) {
                    Ok(member) => {
                        if let Ok(mut state) = member.state.lock() {
                            *state = old.state();
                        }
                        old.cancel.cancel();
                        *slot = member.clone();
                        fresh.push(member);
                    }
                    Err(err) => {
                        tracing::warn!(service = %self.inner.service, %err, "endpoint keeps its old tls settings");
                    }
                }
            }
        }
        tracing::info!(service = %self.inner.service, endpoints = fresh.len(), "client tls certificates reloaded");
        for member in fresh {
            self.spawn_watch(member);
        }
        self.publish();
    }

    fn resolutions(&self) -> Vec<(String, Resolution)> {
        self.inner
            .targets
            .iter()
            .map(|t| {
                let resolution = t
                    .resolution
                    .lock()
                    .map(|r| r.clone())
                    .unwrap_or(Resolution::Pending);
                (t.endpoint.clone(), resolution)
            })
            .collect()
    }

    /// The endpoint `uri` when it is a serving member (endpoint-affine
    /// calls: the replica that holds the call's target); else, as
    /// [`pick`](Self::pick), any serving endpoint, which answers for what it
    /// can (a pod another replica started) or NOT_FOUND.
    pub(crate) async fn pick_preferring(
        &self,
        uri: Option<&str>,
        wait: Duration,
    ) -> Result<Arc<Member>, tonic::Status> {
        if let Some(uri) = uri
            && let Some(member) = self
                .members()
                .into_iter()
                .find(|m| m.uri == *uri && m.state() == EndpointState::Serving)
        {
            return Ok(member);
        }
        self.pick(wait).await
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
            let any_unknown = members.iter().any(|m| m.state() == EndpointState::Unknown)
                || self.resolutions().iter().any(|(_, r)| *r == Resolution::Pending);
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
        let mut states: Vec<String> = self
            .states()
            .into_iter()
            .map(|(uri, state)| match state {
                EndpointState::Down(reason) => format!("{uri} down ({reason})"),
                other => format!("{uri} {}", other.label().replace('_', " ")),
            })
            .collect();
        for (endpoint, resolution) in self.resolutions() {
            states.push(match resolution {
                Resolution::Pending => format!("{endpoint} not resolved yet"),
                Resolution::Resolved(0) => format!("{endpoint} resolved to no address"),
                Resolution::Resolved(n) => format!("{endpoint} resolved to {n} addresses"),
                Resolution::Failed(reason) => format!("{endpoint} does not resolve ({reason})"),
            });
        }
        tonic::Status::unavailable(format!(
            "no healthy endpoint of {}: {}",
            self.inner.service,
            states.join(", ")
        ))
    }

    fn spawn_watch(&self, member: Arc<Member>) {
        let pool = self.clone_weak();
        let cancel = member.cancel.clone();
        let service = self.inner.service.clone();
        let config = self.inner.config.clone();
        tokio::spawn(async move {
            let max = config.health_retry_max.max(Duration::from_millis(10));
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

/// The TLS settings members are built with, and a digest of the files they
/// came from.
fn load_tls(service: &str, config: &ClientConfig) -> Result<Option<(ClientTlsConfig, u64)>, ClientError> {
    let settings = &config.tls;
    if !settings.is_enabled() {
        return Ok(None);
    }
    let error = |reason: String| ClientError::Tls {
        service: service.to_owned(),
        reason,
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| error(format!("cannot read {}: {e}", path.display())))
    };
    let Some(ca) = &settings.ca else {
        return Err(error(
            "client.tls.ca is required once any client.tls setting is given".to_owned(),
        ));
    };
    let ca = read(ca)?;
    let mut hasher = DefaultHasher::new();
    ca.hash(&mut hasher);
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (read(cert)?, read(key)?);
            (&cert, &key).hash(&mut hasher);
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(error(
                "client.tls.cert and client.tls.key must be given together".to_owned(),
            ));
        }
    }
    Ok(Some((tls, hasher.finish())))
}
