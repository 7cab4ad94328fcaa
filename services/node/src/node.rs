//! A node: any set of services, wired to the services it does not host
//! through the shared client stack.
//!
//! Agents always sit behind the mesh identity check ([`MeshLayer`]): they
//! answer only services holding the mesh key and listed as their callers.
//! A node that hosts a public service (orchestrator, auth) and agents serves
//! the agents on a second, internal listener (`internal_listen`, loopback by
//! default), never on the public one.
//!
//! Its own services call the agents it hosts in process
//! ([`Transport::in_process`](reporunner_client::Transport::in_process)): no
//! socket and no encoding round trip, and still through each agent's mesh
//! check with the caller's service identity. The agents it does not host are
//! called over the shared client stack.

use std::{net::SocketAddr, sync::Arc, sync::OnceLock, time::Duration};

use anyhow::Context as _;
use reporunner_auth::Auth;
use reporunner_identity::{MeshKey, MeshLayer};
use reporunner_server::{CancellationToken, GrpcServer, Health, ServeError};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    Settings,
    services::{SERVICES, ServiceName, Wiring},
};

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// The listener the node was given: the public services when it hosts
    /// any, else its agents (mesh mode).
    pub addr: SocketAddr,
    /// Where the node's agents are served: its internal listener when it also
    /// hosts a public service, else `addr`.
    pub internal_addr: SocketAddr,
    pub services: Vec<ServiceName>,
    /// The agents this node's own services call in process (every agent it
    /// hosts).
    pub in_process_agents: Vec<ServiceName>,
    /// The health of the services on `addr`.
    pub health: Health,
    /// The health of the agents on the internal listener, when there is one.
    pub internal_health: Option<Health>,
    /// The key this node's service tokens are signed and checked with.
    pub mesh_key: MeshKey,
    /// The auth service, when this node hosts it (for the embedded
    /// single-user principal).
    pub auth: Option<Arc<Auth>>,
    /// The directory this node made for runs' private backing servers
    /// (`orchestrator.provision_dir` unset); removed when the node stops and
    /// it is empty.
    pub provision_dir: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Node {
    /// Reports every service of the node, on every listener, as serving or not.
    pub async fn set_serving(&self, serving: bool) {
        self.health.set_all(serving).await;
        if let Some(internal) = &self.internal_health {
            internal.set_all(serving).await;
        }
    }

    /// Stops the node and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the node stops (its shutdown token was cancelled), then
    /// removes its private backing servers' directory if nothing is left in
    /// it (a RUNNING run's server outlives the node and keeps it).
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self
            .task
            .await
            .context("server task panicked")?
            .context("server failed");
        if let Some(dir) = &self.provision_dir {
            // Only an empty directory goes; anything else is an error to ignore.
            let _ = std::fs::remove_dir(dir);
        }
        result
    }
}

fn loopback_uri(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    if host.contains(':') {
        format!("http://[{host}]:{}", addr.port())
    } else {
        format!("http://{host}:{}", addr.port())
    }
}

/// What a node may get beside its settings.
#[derive(Debug, Default)]
pub struct NodeOptions {
    /// The data directory's control socket
    /// ([`reporunner_server::local::bind_control_socket`]): the public
    /// services are served on it too, calls without a token as the local
    /// owner ([`reporunner_auth::LOCAL_OWNER`]). Needs auth in the node.
    pub control_socket: Option<tokio::net::UnixListener>,
    /// The dashboard's files, served on the public listener with
    /// `http.dashboard` (the `reporunner` binary embeds them).
    pub dashboard: Option<reporunner_gateway::Assets>,
}

/// Public methods only services call (the orchestrator's authentication
/// layer): not exposed over HTTP/JSON.
pub const NOT_OVER_HTTP: [&str; 2] = [
    "/reporunner.auth.v1.AuthService/Authorize",
    "/reporunner.auth.v1.AuthService/ConsumeQuota",
];

/// [`start_node_with`] without options.
pub async fn start_node(
    settings: &Settings,
    services: &[ServiceName],
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<Node> {
    start_node_with(settings, services, listener, shutdown, NodeOptions::default()).await
}

/// Starts `services`: the public ones (orchestrator, auth) on `listener`, the
/// agents on `listener` too when the node hosts no public service, else on a
/// second listener at `settings.internal_listen`. Services hosted here call
/// each other over this node's own addresses (through the same client stack
/// as remote ones); the others are reached at `settings.endpoints`. Calls to
/// agents carry the caller's service identity. Each service is built by its
/// row of the service table, in start order.
pub async fn start_node_with(
    settings: &Settings,
    services: &[ServiceName],
    listener: TcpListener,
    shutdown: CancellationToken,
    options: NodeOptions,
) -> anyhow::Result<Node> {
    let addr = listener.local_addr().context("listener has no local address")?;
    let mut services: Vec<ServiceName> = services.to_vec();
    services.sort();
    services.dedup();
    anyhow::ensure!(!services.is_empty(), "a node must host at least one service");
    // A node hosting everything is the only holder of its key: a fresh one per start.
    let self_contained = ServiceName::ALL.iter().all(|s| services.contains(s));
    let mesh_key = settings
        .mesh
        .key(&settings.data_dir, self_contained)
        .map_err(|e| anyhow::anyhow!("cannot load the mesh key: {e}"))?;
    let hosts_agents = services.iter().any(|s| !s.is_public());
    let hosts_public = services.iter().any(|s| s.is_public());
    let internal_listener = if hosts_agents && hosts_public {
        Some(
            TcpListener::bind(settings.internal_listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the internal listener on {}",
                        settings.internal_listen
                    )
                })?,
        )
    } else {
        None
    };
    let internal_addr = match &internal_listener {
        Some(internal) => internal
            .local_addr()
            .context("internal listener has no local address")?,
        None => addr,
    };
    let wiring = Wiring {
        settings,
        hosted: &services,
        own_public: loopback_uri(addr),
        own_internal: loopback_uri(internal_addr),
        mesh_key: &mesh_key,
        mesh: MeshLayer::new(&mesh_key),
        shutdown: shutdown.clone(),
        auth: OnceLock::new(),
        provision_dir: OnceLock::new(),
        local: Default::default(),
        local_auth: OnceLock::new(),
    };

    let stop_timeout = settings.stop_timeout;
    let mut public = GrpcServer::new()
        .drain_grace(Duration::from_millis(0))
        .stop_timeout(stop_timeout);
    // Agents list nothing through reflection: only the mesh calls them.
    let mut agents = GrpcServer::new()
        .drain_grace(Duration::from_millis(0))
        .stop_timeout(stop_timeout)
        .without_reflection();
    for spec in SERVICES.iter().filter(|spec| wiring.hosts(spec.name)) {
        let slot = if spec.name.is_public() {
            &mut public
        } else {
            &mut agents
        };
        let server = std::mem::take(slot);
        *slot = (spec.build)(&wiring, server).await?;
    }
    let auth: Option<Arc<Auth>> = wiring.auth.into_inner();
    let provision_dir = wiring.provision_dir.into_inner();
    let in_process_agents = wiring
        .local
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    // The given listener serves the public services, or the agents when there
    // are none; TLS and the plain health port go with it.
    let (front, back) = match internal_listener {
        // Same TLS as the front: with `client.tls` set, the node's own calls
        // dial every endpoint over TLS, the internal one included.
        Some(internal) => (public, Some((agents.tls(settings.tls.clone()), internal))),
        None if hosts_public => (public, None),
        None => (agents, None),
    };
    let mut front = front.tls(settings.tls.clone());
    if hosts_public && settings.http.enabled {
        let dashboard = options.dashboard.filter(|_| settings.http.dashboard);
        let gateway = reporunner_gateway::Gateway::new(
            front.health().services().iter().copied(),
            &NOT_OVER_HTTP,
            dashboard,
        );
        front = front.gateway(Arc::new(gateway));
    }
    if let Some(socket) = options.control_socket {
        let auth = auth
            .clone()
            .context("a control socket needs the auth service in the same node")?;
        front = front.local_socket(socket, Arc::new(LocalOwner::new(auth)));
    }
    if let Some(health_addr) = settings.health_listen {
        let health_listener = TcpListener::bind(health_addr)
            .await
            .with_context(|| format!("cannot listen for health probes on {health_addr}"))?;
        front = front.health_listener(health_listener);
    }
    let health = front.health();
    let internal_health = back.as_ref().map(|(server, _)| server.health());
    let token = shutdown.clone();
    let task = match back {
        None => tokio::spawn(front.serve(listener, token)),
        Some((back, internal)) => tokio::spawn(async move {
            // Either listener failing stops the other: the node is one unit.
            let serve = |server: GrpcServer, listener: TcpListener| {
                let token = token.clone();
                async move {
                    let result = server.serve(listener, token.clone()).await;
                    if result.is_err() {
                        token.cancel();
                    }
                    result
                }
            };
            let (front, back) = tokio::join!(serve(front, listener), serve(back, internal));
            front.and(back)
        }),
    };
    Ok(Node {
        addr,
        internal_addr,
        services,
        in_process_agents,
        health,
        internal_health,
        mesh_key,
        auth,
        provision_dir,
        shutdown,
        task,
    })
}

/// The local owner's access token for calls over the control socket,
/// issued once and again a minute before it expires.
#[derive(Debug)]
struct LocalOwner {
    auth: Arc<Auth>,
    cached: tokio::sync::Mutex<Option<(String, u64)>>,
}

impl LocalOwner {
    fn new(auth: Arc<Auth>) -> Self {
        Self {
            auth,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

impl reporunner_server::local::LocalCaller for LocalOwner {
    fn bearer(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut cached = self.cached.lock().await;
            if let Some((token, expires_at)) = cached.as_ref()
                && *expires_at > now + 60
            {
                return Ok(token.clone());
            }
            let (_, tokens) = self
                .auth
                .local_session(reporunner_auth::LOCAL_OWNER)
                .await
                .map_err(|e| format!("cannot open the local owner's session: {e}"))?;
            let token = tokens.access.token;
            *cached = Some((token.clone(), tokens.access.expires_at));
            Ok(token)
        })
    }
}
