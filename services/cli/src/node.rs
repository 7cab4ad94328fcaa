//! A node: any set of services, wired to the services it does not host
//! through the shared client stack.
//!
//! Agents always sit behind the mesh identity check ([`MeshLayer`]): they
//! answer only services holding the mesh key and listed as their callers.
//! A node that hosts a public service (orchestrator, auth) and agents serves
//! the agents on a second, internal listener (`internal_listen`, loopback by
//! default), never on the public one.

use std::{fmt, net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use anyhow::Context as _;
use reporunner_analyzer::{RepoAnalyzer, grpc::AnalyzerGrpc};
use reporunner_auth::{
    Auth, AuthStore,
    grpc::{AdminGrpc, AuthGrpc},
};
use reporunner_authn::{AuthLayer, Authorizer};
use reporunner_dependency::{LocalInstaller, grpc::DependencyGrpc};
use reporunner_env_detector::{Detector, grpc::EnvDetectorGrpc};
use reporunner_health::{HealthAgent, grpc::HealthGrpc};
use reporunner_identity::{MeshKey, MeshLayer, ServiceTokenSource};
use reporunner_indexer::{LocalIndexer, grpc::IndexerGrpc};
use reporunner_orchestrator::{Agents, OrchestratorImpl, grpc::OrchestratorGrpc};
use reporunner_proto::{
    agents::env_detector::v1::env_detector_service_server,
    auth::v1::{UsageKind, auth_service_server},
};
use reporunner_provisioner::{LocalProvisioner, grpc::ProvisionerGrpc};
use reporunner_resolver::{RuleResolver, grpc::ResolverGrpc};
use reporunner_runner::{LocalRunner, RunnerGrpc};
use reporunner_server::{CancellationToken, GrpcServer, Health, ServeError};
use reporunner_source::{Source, SourceGrpc};
use reporunner_tester::{LocalTester, grpc::TesterGrpc};
use tokio::{net::TcpListener, task::JoinHandle};
use tower::Layer as _;

use crate::Settings;

/// The services a node can host, in start order (agents before callers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Auth,
    EnvDetector,
    Source,
    Analyzer,
    Dependency,
    Runner,
    Health,
    Provisioner,
    Resolver,
    Tester,
    Indexer,
    Orchestrator,
}

impl ServiceName {
    pub const ALL: [ServiceName; 12] = [
        ServiceName::Auth,
        ServiceName::EnvDetector,
        ServiceName::Source,
        ServiceName::Analyzer,
        ServiceName::Dependency,
        ServiceName::Runner,
        ServiceName::Health,
        ServiceName::Provisioner,
        ServiceName::Resolver,
        ServiceName::Tester,
        ServiceName::Indexer,
        ServiceName::Orchestrator,
    ];

    /// Whether callers outside the mesh may reach the service: the
    /// orchestrator and auth. Every other service is an agent.
    pub fn is_public(self) -> bool {
        matches!(self, Self::Auth | Self::Orchestrator)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::EnvDetector => "env-detector",
            Self::Source => "source",
            Self::Analyzer => "analyzer",
            Self::Dependency => "dependency",
            Self::Runner => "runner",
            Self::Health => "health",
            Self::Provisioner => "provisioner",
            Self::Resolver => "resolver",
            Self::Tester => "tester",
            Self::Indexer => "indexer",
            Self::Orchestrator => "orchestrator",
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown service `{name}`; known services: {}", known.join(", "))
        })
    }
}

/// Orchestrator RPCs that start work, and so spend the caller's hourly quota.
const METERED: [&str; 3] = [
    "/reporunner.orchestrator.v1.OrchestratorService/CreateRun",
    "/reporunner.orchestrator.v1.OrchestratorService/IndexWorkspace",
    "/reporunner.orchestrator.v1.OrchestratorService/Search",
];

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
    /// The health of the services on `addr`.
    pub health: Health,
    /// The health of the agents on the internal listener, when there is one.
    pub internal_health: Option<Health>,
    /// The key this node's service tokens are signed and checked with.
    pub mesh_key: MeshKey,
    /// The auth service, when this node hosts it (for the embedded
    /// single-user principal).
    pub auth: Option<Arc<Auth>>,
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

    /// Waits until the node stops (its shutdown token was cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task
            .await
            .context("server task panicked")?
            .context("server failed")
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

/// Starts `services`: the public ones (orchestrator, auth) on `listener`, the
/// agents on `listener` too when the node hosts no public service, else on a
/// second listener at `settings.internal_listen`. Services hosted here call
/// each other over this node's own addresses (through the same client stack
/// as remote ones); the others are reached at `settings.endpoints`. Calls to
/// agents carry the caller's service identity.
pub async fn start_node(
    settings: &Settings,
    services: &[ServiceName],
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<Node> {
    let addr = listener.local_addr().context("listener has no local address")?;
    let mut services: Vec<ServiceName> = services.to_vec();
    services.sort();
    services.dedup();
    anyhow::ensure!(!services.is_empty(), "a node must host at least one service");
    let hosts = |s: ServiceName| services.contains(&s);
    // A node hosting everything is the only holder of its key: a fresh one per start.
    let self_contained = ServiceName::ALL.iter().all(|s| hosts(*s));
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
    let own_public = loopback_uri(addr);
    let own_internal = loopback_uri(internal_addr);
    let endpoints_of = |s: ServiceName, configured: &Vec<String>, key: &str| -> anyhow::Result<Vec<String>> {
        if hosts(s) {
            Ok(vec![if s.is_public() {
                own_public.clone()
            } else {
                own_internal.clone()
            }])
        } else if configured.is_empty() {
            anyhow::bail!(
                "this node needs the {s} service but does not host it: set endpoints.{key} \
                 (REPORUNNER_ENDPOINTS__{}) or host it with --service {s}",
                key.to_uppercase()
            )
        } else {
            Ok(configured.clone())
        }
    };

    let stop_timeout = Duration::from_millis(settings.stop_timeout_ms);
    let mut public = GrpcServer::new()
        .drain_grace(Duration::from_millis(0))
        .stop_timeout(stop_timeout);
    // Agents list nothing through reflection: only the mesh calls them.
    let mut agents = GrpcServer::new()
        .drain_grace(Duration::from_millis(0))
        .stop_timeout(stop_timeout)
        .without_reflection();
    let mesh = MeshLayer::new(&mesh_key);
    let identity = |service: &str| Arc::new(ServiceTokenSource::new(&mesh_key, service));
    let mut auth_handle = None;
    for service in &services {
        let slot = if service.is_public() {
            &mut public
        } else {
            &mut agents
        };
        let server = std::mem::take(slot);
        let server = match service {
            ServiceName::Auth => {
                let auth = start_auth(settings).await?;
                auth_handle = Some(auth.clone());
                server
                    .add_service(AuthGrpc::new(auth.clone()).into_server())
                    .add_service(AdminGrpc::new(auth).into_server())
            }
            ServiceName::EnvDetector => {
                settings
                    .env_detector
                    .validate()
                    .map_err(|e| anyhow::anyhow!("invalid env_detector settings: {e}"))?;
                let mut config = settings.env_detector.clone();
                // It looks for embedding models where this host's indexer keeps them.
                if config.model_dir.is_none() {
                    config.model_dir = Some(settings.indexer_config().models_dir);
                }
                let detector = Arc::new(Detector::new(config));
                server.add_service(mesh.layer(EnvDetectorGrpc::new(detector).into_server()))
            }
            ServiceName::Source => {
                let source = Source::new(settings.source_config())
                    .map_err(|e| anyhow::anyhow!("invalid source settings: {e}"))?;
                server.add_service(mesh.layer(SourceGrpc::new(Arc::new(source)).into_server()))
            }
            ServiceName::Analyzer => {
                let analyzer = RepoAnalyzer::new(settings.analyzer.clone())
                    .map_err(|e| anyhow::anyhow!("invalid analyzer settings: {e}"))?;
                server.add_service(mesh.layer(AnalyzerGrpc::new(Arc::new(analyzer)).into_server()))
            }
            ServiceName::Dependency => {
                // Installs run the repository's code (lifecycle scripts, builds):
                // in the runner's sandbox, as the owner.
                let sandbox = step_sandbox(settings).sandbox_config();
                let installer = LocalInstaller::new(settings.dependency.clone().resolve(&settings.data_dir))
                    .map_err(|e| anyhow::anyhow!("invalid dependency settings: {e}"))?
                    .with_sandbox(sandbox)
                    .with_workspace_roots(vec![settings.source_config().root]);
                server.add_service(mesh.layer(DependencyGrpc::new(Arc::new(installer)).into_server()))
            }
            ServiceName::Runner => {
                let config = step_sandbox(settings);
                let runner =
                    LocalRunner::new(config).map_err(|e| anyhow::anyhow!("invalid runner settings: {e}"))?;
                server.add_service(mesh.layer(RunnerGrpc::new(Arc::new(runner)).into_server()))
            }
            ServiceName::Provisioner => {
                let provisioner =
                    LocalProvisioner::new(settings.provisioner.clone().resolve(&settings.data_dir))
                        .map_err(|e| anyhow::anyhow!("invalid provisioner settings: {e}"))?;
                server.add_service(mesh.layer(ProvisionerGrpc::new(Arc::new(provisioner)).into_server()))
            }
            ServiceName::Resolver => {
                let resolver = RuleResolver::new(settings.resolver.clone())
                    .map_err(|e| anyhow::anyhow!("invalid resolver settings: {e}"))?;
                server.add_service(mesh.layer(ResolverGrpc::new(Arc::new(resolver)).into_server()))
            }
            ServiceName::Tester => {
                // Tests run in the runner's sandbox, with its settings.
                let sandbox = step_sandbox(settings).process_settings();
                let tester = LocalTester::new(settings.tester.clone(), sandbox)
                    .map_err(|e| anyhow::anyhow!("invalid tester settings: {e}"))?;
                server.add_service(mesh.layer(TesterGrpc::new(Arc::new(tester)).into_server()))
            }
            ServiceName::Indexer => {
                let indexer = LocalIndexer::new(settings.indexer_config())
                    .map_err(|e| anyhow::anyhow!("invalid indexer settings: {e}"))?;
                server.add_service(mesh.layer(IndexerGrpc::new(Arc::new(indexer)).into_server()))
            }
            ServiceName::Health => {
                // Log probes read the runner's output; without a runner endpoint they are refused.
                let runner = match endpoints_of(ServiceName::Runner, &settings.endpoints.runner, "runner") {
                    Ok(endpoints) => Some(
                        reporunner_client::connect(
                            reporunner_proto::agents::runner::v1::runner_service_server::SERVICE_NAME,
                            &endpoints,
                            &settings.client,
                        )?
                        .with_identity(identity(reporunner_identity::HEALTH)),
                    ),
                    Err(_) => None,
                };
                let agent = HealthAgent::new(settings.health.clone(), runner)
                    .map_err(|e| anyhow::anyhow!("invalid health settings: {e}"))?;
                server.add_service(mesh.layer(HealthGrpc::new(Arc::new(agent)).into_server()))
            }
            ServiceName::Orchestrator => {
                // Its calls to agents say they come from the orchestrator;
                // its calls to auth carry the user's token instead.
                let orchestrator = identity(reporunner_identity::ORCHESTRATOR);
                let agent = |name: &str, endpoints: &[String]| {
                    reporunner_client::connect(name, endpoints, &settings.client)
                        .map(|channel| channel.with_identity(orchestrator.clone()))
                };
                let env_detector = agent(
                    env_detector_service_server::SERVICE_NAME,
                    &endpoints_of(
                        ServiceName::EnvDetector,
                        &settings.endpoints.env_detector,
                        "env_detector",
                    )?,
                )?;
                let auth = reporunner_client::connect(
                    auth_service_server::SERVICE_NAME,
                    &endpoints_of(ServiceName::Auth, &settings.endpoints.auth, "auth")?,
                    &settings.client,
                )?;
                let layer = METERED
                    .iter()
                    .fold(AuthLayer::new(Authorizer::new(auth.clone())), |layer, path| {
                        layer.metered(path, UsageKind::MeteredRequest)
                    });
                let source = agent(
                    reporunner_proto::agents::source::v1::source_service_server::SERVICE_NAME,
                    &endpoints_of(ServiceName::Source, &settings.endpoints.source, "source")?,
                )?;
                let analyzer = agent(
                    reporunner_proto::agents::analyzer::v1::analyzer_service_server::SERVICE_NAME,
                    &endpoints_of(ServiceName::Analyzer, &settings.endpoints.analyzer, "analyzer")?,
                )?;
                // Optional: without them the orchestrator serves goal ANALYZE
                // and refuses START and TEST naming the missing endpoint.
                let optional = |service: ServiceName, configured: &Vec<String>, key: &str, name: &str| {
                    endpoints_of(service, configured, key)
                        .ok()
                        .map(|endpoints| agent(name, &endpoints))
                        .transpose()
                };
                let dependency = optional(
                    ServiceName::Dependency,
                    &settings.endpoints.dependency,
                    "dependency",
                    reporunner_proto::agents::dependency::v1::dependency_service_server::SERVICE_NAME,
                )?;
                let runner = optional(
                    ServiceName::Runner,
                    &settings.endpoints.runner,
                    "runner",
                    reporunner_proto::agents::runner::v1::runner_service_server::SERVICE_NAME,
                )?;
                let health = optional(
                    ServiceName::Health,
                    &settings.endpoints.health,
                    "health",
                    reporunner_proto::agents::health::v1::health_service_server::SERVICE_NAME,
                )?;
                let provisioner = optional(
                    ServiceName::Provisioner,
                    &settings.endpoints.provisioner,
                    "provisioner",
                    reporunner_proto::agents::provisioner::v1::provisioner_service_server::SERVICE_NAME,
                )?;
                let resolver = optional(
                    ServiceName::Resolver,
                    &settings.endpoints.resolver,
                    "resolver",
                    reporunner_proto::agents::resolver::v1::resolver_service_server::SERVICE_NAME,
                )?;
                let tester = optional(
                    ServiceName::Tester,
                    &settings.endpoints.tester,
                    "tester",
                    reporunner_proto::agents::tester::v1::tester_service_server::SERVICE_NAME,
                )?;
                let indexer = optional(
                    ServiceName::Indexer,
                    &settings.endpoints.indexer,
                    "indexer",
                    reporunner_proto::index::v1::index_service_server::SERVICE_NAME,
                )?;
                // Plugins are external agents: called with this node's
                // identity, like the agents, through the same client stack.
                let plugins = settings
                    .orchestrator
                    .plugins
                    .iter()
                    .map(|plugin| {
                        let service =
                            reporunner_proto::agents::plugin::v1::plugin_service_server::SERVICE_NAME;
                        Ok((plugin.name.clone(), agent(service, &plugin.endpoints)?))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut orchestrator_settings = settings.orchestrator.clone();
                if orchestrator_settings.provision_dir.is_empty() {
                    orchestrator_settings.provision_dir = provision_dir(settings)?.display().to_string();
                }
                let store = OrchestratorImpl::open_store(&settings.orchestrator, &settings.data_dir)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot open the run store: {e}"))?;
                let orchestrator = OrchestratorImpl::new(
                    orchestrator_settings,
                    Agents {
                        env_detector,
                        source,
                        analyzer,
                        dependency,
                        runner,
                        health,
                        provisioner,
                        resolver,
                        tester,
                        indexer,
                        plugins,
                    },
                    store,
                    Authorizer::new(auth.clone()),
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot start the orchestrator: {e}"))?;
                let orchestrator = Arc::new(orchestrator);
                // On shutdown the runs' tasks end here; RUNNING runs keep their
                // processes for the next orchestrator to resume.
                let stopping = orchestrator.clone();
                let token = shutdown.clone();
                tokio::spawn(async move {
                    token.cancelled().await;
                    stopping.shutdown();
                });
                server.add_service(layer.layer(OrchestratorGrpc::new(orchestrator).into_server()))
            }
        };
        *slot = server;
    }
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
        health,
        internal_health,
        mesh_key,
        auth: auth_handle,
        shutdown,
        task,
    })
}

/// Where private backing servers of runs live when `orchestrator.provision_dir`
/// is unset. Not under the data dir: that is 0700, and a private PostgreSQL or
/// MariaDB runs as its own account (`postgres`, `mysql`), which must enter its
/// directory. So a directory of this data dir's own under the system's
/// temporary directory, 0711 (entered, never listed, by those accounts), made
/// here or refused when someone else made it first.
fn provision_dir(settings: &Settings) -> anyhow::Result<std::path::PathBuf> {
    use std::{
        hash::{Hash as _, Hasher as _},
        os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    };
    let data_dir = std::path::absolute(&settings.data_dir).unwrap_or_else(|_| settings.data_dir.clone());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    let dir = std::env::temp_dir().join(format!("reporunner-provision-{:016x}", hasher.finish()));
    match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    anyhow::ensure!(
        meta.is_dir() && meta.uid() == nix_uid(),
        "{} is not a directory of this process's user (set orchestrator.provision_dir)",
        dir.display()
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    Ok(dir)
}

/// This process's effective uid, from `/proc` (no `unsafe` geteuid here).
fn nix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// The runner's settings as every step that runs repository code uses them
/// (the runner's processes, installs, tests): the service's state and every
/// workspace hidden, workspaces only from the source agent's root.
fn step_sandbox(settings: &Settings) -> reporunner_runner::RunnerConfig {
    let mut config = settings.runner.clone().resolve(&settings.data_dir);
    let workspaces = settings.source_config().root;
    config.hidden_paths.push(settings.data_dir.clone());
    config.hidden_paths.push(workspaces.clone());
    // Sandboxed apps share the host's network: the mesh key stays hidden.
    config.hidden_paths.extend(mesh_key_dir(settings));
    config.workspace_roots.push(workspaces);
    config.owner_caches = Some(
        settings
            .dependency
            .clone()
            .resolve(&settings.data_dir)
            .cache_dir
            .join("owners"),
    );
    config
}

/// The directory of `mesh.service_key_file`, for the sandbox to hide: sandboxed
/// apps share the host's network, so a key they could read would let them
/// call the agents. A key directly under `/` or a top-level directory (such
/// as `/etc`) cannot be hidden without breaking apps: it is left, with a
/// warning, and the README says to give the key a directory of its own.
fn mesh_key_dir(settings: &Settings) -> Option<std::path::PathBuf> {
    let file = settings.mesh.service_key_file.as_ref()?;
    let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
    let dir = file.parent()?;
    if dir.components().count() < 3 {
        tracing::warn!(
            path = %file.display(),
            "mesh.service_key_file is not in a directory of its own; sandboxed apps are not kept from it"
        );
        return None;
    }
    Some(dir.to_path_buf())
}

/// Opens the auth store (SQLite under the data directory unless
/// `auth.database_url` names PostgreSQL), loads the signing key, and creates
/// the configured admin on first start.
async fn start_auth(settings: &Settings) -> anyhow::Result<Arc<Auth>> {
    let auth = open_auth(settings).await?;
    if let Some((username, password)) = settings.admin.credentials()? {
        let admin = auth
            .ensure_admin(&username, &password)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the admin `{username}`: {e}"))?;
        tracing::info!(admin = %admin.username, "admin account ready");
    }
    Ok(auth)
}

/// Opens the auth service over the configured store, running migrations;
/// `reporunner admin init` uses it without serving.
pub async fn open_auth(settings: &Settings) -> anyhow::Result<Arc<Auth>> {
    settings
        .auth
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid auth settings: {e}"))?;
    reporunner_auth::files::create_private_dir(&settings.data_dir)
        .with_context(|| format!("cannot create the data directory {}", settings.data_dir.display()))?;
    let url = settings.auth.database_url(&settings.data_dir);
    let store = AuthStore::connect(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the auth database: {e}"))?;
    let key = settings
        .auth
        .signing_key(&settings.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot load the token signing key: {e}"))?;
    let auth = Arc::new(
        Auth::new(store, settings.auth.clone(), &key)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the auth service: {e}"))?,
    );
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mesh_key_directory_is_hidden_from_sandboxes_unless_it_is_a_system_one() {
        let mut settings = Settings::default();
        assert_eq!(
            mesh_key_dir(&settings),
            None,
            "no file: nothing outside the data dir"
        );
        settings.mesh.service_key_file = Some("/etc/reporunner/mesh/service.key".into());
        assert_eq!(
            mesh_key_dir(&settings),
            Some(std::path::PathBuf::from("/etc/reporunner/mesh"))
        );
        settings.mesh.service_key_file = Some("/etc/mesh.key".into());
        assert_eq!(mesh_key_dir(&settings), None, "hiding /etc would break every app");
    }

    #[test]
    fn only_the_orchestrator_and_auth_are_public() {
        let public: Vec<ServiceName> = ServiceName::ALL.into_iter().filter(|s| s.is_public()).collect();
        assert_eq!(public, [ServiceName::Auth, ServiceName::Orchestrator]);
    }
}
