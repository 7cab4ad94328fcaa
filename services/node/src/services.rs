//! The services a node can host, as one table: each row names a service, the
//! gRPC name and `endpoints.*` key it is reached by, and how it is built from
//! the settings. [`start_node`](crate::start_node) walks the table; nothing
//! else knows the list.

use std::{
    fmt,
    str::FromStr,
    sync::{Arc, Mutex, OnceLock},
};

use anyhow::Context as _;
use futures::future::BoxFuture;
use reporunner_analyzer::{RepoAnalyzer, grpc::AnalyzerGrpc};
use reporunner_auth::{
    Auth, AuthStore,
    grpc::{AdminGrpc, AuthGrpc},
};
use reporunner_authn::{AuthLayer, Authorizer};
use reporunner_client::{ServiceChannel, Transport};
use reporunner_dependency::{LocalInstaller, grpc::DependencyGrpc};
use reporunner_env_detector::{Detector, grpc::EnvDetectorGrpc};
use reporunner_health::{HealthAgent, grpc::HealthGrpc};
use reporunner_identity::{MeshKey, MeshLayer, ServiceTokenSource};
use reporunner_indexer::{LocalIndexer, grpc::IndexerGrpc};
use reporunner_orchestrator::{Agents, OrchestratorImpl, grpc::OrchestratorGrpc};
use reporunner_proto::{
    agents::{
        analyzer::v1::analyzer_service_server, dependency::v1::dependency_service_server,
        env_detector::v1::env_detector_service_server, health::v1::health_service_server,
        provisioner::v1::provisioner_service_server, resolver::v1::resolver_service_server,
        runner::v1::runner_service_server, source::v1::source_service_server,
        tester::v1::tester_service_server,
    },
    auth::v1::{UsageKind, auth_service_server},
    index::v1::index_service_server,
    orchestrator::v1::orchestrator_service_server,
};
use reporunner_provisioner::{LocalProvisioner, grpc::ProvisionerGrpc};
use reporunner_resolver::{RuleResolver, grpc::ResolverGrpc};
use reporunner_runner::{LocalRunner, RunnerGrpc};
use reporunner_server::{CancellationToken, GrpcServer};
use reporunner_source::{Source, SourceGrpc};
use reporunner_tester::{LocalTester, grpc::TesterGrpc};
use tonic::server::NamedService;
use tower::Layer as _;

use crate::{Settings, settings::Endpoints};

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

    /// The service's row of [`SERVICES`].
    pub(crate) fn spec(self) -> &'static ServiceSpec {
        &SERVICES[self as usize]
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

/// Builds a service from the settings and adds it to the server it is hosted on.
type Build = for<'a> fn(&'a Wiring<'a>, GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>>;

/// One row of the node's table.
pub(crate) struct ServiceSpec {
    pub(crate) name: ServiceName,
    /// The gRPC service other services dial it by.
    pub(crate) grpc_name: &'static str,
    /// Its key under `[endpoints]` (`REPORUNNER_ENDPOINTS__<KEY>`).
    pub(crate) endpoint_key: &'static str,
    /// Where it is reached when this node does not host it.
    pub(crate) endpoints: fn(&Endpoints) -> &Vec<String>,
    pub(crate) build: Build,
}

impl fmt::Debug for ServiceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceSpec")
            .field("name", &self.name)
            .field("grpc_name", &self.grpc_name)
            .field("endpoint_key", &self.endpoint_key)
            .finish_non_exhaustive()
    }
}

/// Every service a node can host, in [`ServiceName::ALL`] order (start order).
pub(crate) const SERVICES: [ServiceSpec; 12] = [
    ServiceSpec {
        name: ServiceName::Auth,
        grpc_name: auth_service_server::SERVICE_NAME,
        endpoint_key: "auth",
        endpoints: |e| &e.auth,
        build: build_auth,
    },
    ServiceSpec {
        name: ServiceName::EnvDetector,
        grpc_name: env_detector_service_server::SERVICE_NAME,
        endpoint_key: "env_detector",
        endpoints: |e| &e.env_detector,
        build: build_env_detector,
    },
    ServiceSpec {
        name: ServiceName::Source,
        grpc_name: source_service_server::SERVICE_NAME,
        endpoint_key: "source",
        endpoints: |e| &e.source,
        build: build_source,
    },
    ServiceSpec {
        name: ServiceName::Analyzer,
        grpc_name: analyzer_service_server::SERVICE_NAME,
        endpoint_key: "analyzer",
        endpoints: |e| &e.analyzer,
        build: build_analyzer,
    },
    ServiceSpec {
        name: ServiceName::Dependency,
        grpc_name: dependency_service_server::SERVICE_NAME,
        endpoint_key: "dependency",
        endpoints: |e| &e.dependency,
        build: build_dependency,
    },
    ServiceSpec {
        name: ServiceName::Runner,
        grpc_name: runner_service_server::SERVICE_NAME,
        endpoint_key: "runner",
        endpoints: |e| &e.runner,
        build: build_runner,
    },
    ServiceSpec {
        name: ServiceName::Health,
        grpc_name: health_service_server::SERVICE_NAME,
        endpoint_key: "health",
        endpoints: |e| &e.health,
        build: build_health,
    },
    ServiceSpec {
        name: ServiceName::Provisioner,
        grpc_name: provisioner_service_server::SERVICE_NAME,
        endpoint_key: "provisioner",
        endpoints: |e| &e.provisioner,
        build: build_provisioner,
    },
    ServiceSpec {
        name: ServiceName::Resolver,
        grpc_name: resolver_service_server::SERVICE_NAME,
        endpoint_key: "resolver",
        endpoints: |e| &e.resolver,
        build: build_resolver,
    },
    ServiceSpec {
        name: ServiceName::Tester,
        grpc_name: tester_service_server::SERVICE_NAME,
        endpoint_key: "tester",
        endpoints: |e| &e.tester,
        build: build_tester,
    },
    ServiceSpec {
        name: ServiceName::Indexer,
        grpc_name: index_service_server::SERVICE_NAME,
        endpoint_key: "indexer",
        endpoints: |e| &e.indexer,
        build: build_indexer,
    },
    ServiceSpec {
        name: ServiceName::Orchestrator,
        grpc_name: orchestrator_service_server::SERVICE_NAME,
        endpoint_key: "orchestrator",
        endpoints: |e| &e.orchestrator,
        build: build_orchestrator,
    },
];

/// Orchestrator RPCs that start work, and so spend the caller's hourly quota.
const METERED: [&str; 3] = [
    "/reporunner.orchestrator.v1.OrchestratorService/CreateRun",
    "/reporunner.orchestrator.v1.OrchestratorService/IndexWorkspace",
    "/reporunner.orchestrator.v1.OrchestratorService/Search",
];

/// What a builder gets: the settings and how this node is wired.
pub(crate) struct Wiring<'a> {
    pub(crate) settings: &'a Settings,
    /// The services this node hosts.
    pub(crate) hosted: &'a [ServiceName],
    /// This node's public and internal addresses, as URIs it can dial.
    pub(crate) own_public: String,
    pub(crate) own_internal: String,
    pub(crate) mesh_key: &'a MeshKey,
    pub(crate) mesh: MeshLayer,
    pub(crate) shutdown: CancellationToken,
    /// The auth service, once built (the embedded principal needs it).
    pub(crate) auth: OnceLock<Arc<Auth>>,
    /// The directory of private backing servers this node made, removed
    /// when the node stops (when empty).
    pub(crate) provision_dir: OnceLock<std::path::PathBuf>,
    /// The agents built so far, behind their mesh check, for this node's own
    /// callers to call in process.
    pub(crate) local: Mutex<Vec<(ServiceName, Transport)>>,
    /// The auth server built in this node, for its orchestrator to call in
    /// process (the same trust boundary: one process).
    pub(crate) local_auth: OnceLock<Transport>,
}

impl Wiring<'_> {
    pub(crate) fn hosts(&self, service: ServiceName) -> bool {
        self.hosted.contains(&service)
    }

    /// Hosts the agent `service` behind the mesh check, and keeps it for this
    /// node's own callers: they call it in process, no socket, with their
    /// service identity checked as over the network.
    fn agent<S>(&self, name: ServiceName, server: GrpcServer, service: S) -> GrpcServer
    where
        S: reporunner_server::GrpcRoute + NamedService,
    {
        let guarded = self.mesh.layer(service);
        if let Ok(mut local) = self.local.lock() {
            // The server's own layers too: in-process calls are counted in
            // the request metrics like the network's.
            let served = reporunner_server::served_in_process(guarded.clone());
            local.push((name, Transport::in_process(served)));
        }
        server.add_service(guarded)
    }

    /// The agent `service` as built in this node, when it is.
    fn local(&self, service: ServiceName) -> Option<Transport> {
        let local = self.local.lock().ok()?;
        local
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, transport)| transport.clone())
    }

    /// How `caller` reaches `service`: in process when this node built it,
    /// else over the client stack to its endpoints.
    fn transport(&self, service: ServiceName, caller: &Arc<ServiceTokenSource>) -> anyhow::Result<Transport> {
        match self.local(service) {
            Some(local) => Ok(local.with_identity(caller.clone())),
            None => Ok(self.channel(service, Some(caller))?.into()),
        }
    }

    /// Like [`transport`](Self::transport), but `None` when the service has no endpoint.
    fn optional_transport(
        &self,
        service: ServiceName,
        caller: &Arc<ServiceTokenSource>,
    ) -> anyhow::Result<Option<Transport>> {
        match self.local(service) {
            Some(local) => Ok(Some(local.with_identity(caller.clone()))),
            None => Ok(self.optional_channel(service, Some(caller))?.map(Transport::from)),
        }
    }

    /// Service tokens saying the calls come from `service`.
    fn identity(&self, service: &str) -> Arc<ServiceTokenSource> {
        Arc::new(ServiceTokenSource::new(self.mesh_key, service))
    }

    /// Where `service` is reached from here: this node's own address when it
    /// hosts it, else its configured endpoints.
    fn endpoints(&self, service: ServiceName) -> anyhow::Result<Vec<String>> {
        let spec = service.spec();
        let configured = (spec.endpoints)(&self.settings.endpoints);
        if self.hosts(service) {
            Ok(vec![if service.is_public() {
                self.own_public.clone()
            } else {
                self.own_internal.clone()
            }])
        } else if configured.is_empty() {
            let key = spec.endpoint_key;
            anyhow::bail!(
                "this node needs the {service} service but does not host it: set endpoints.{key} \
                 (REPORUNNER_ENDPOINTS__{}) or host it with --service {service}",
                key.to_uppercase(),
            )
        } else {
            Ok(configured.clone())
        }
    }

    /// A channel to `service`, its calls carrying `caller`'s identity when given.
    fn channel(
        &self,
        service: ServiceName,
        caller: Option<&Arc<ServiceTokenSource>>,
    ) -> anyhow::Result<ServiceChannel> {
        let endpoints = self.endpoints(service)?;
        self.connect(service, &endpoints, caller)
    }

    /// Like [`channel`](Self::channel), but `None` when the service has no endpoint.
    fn optional_channel(
        &self,
        service: ServiceName,
        caller: Option<&Arc<ServiceTokenSource>>,
    ) -> anyhow::Result<Option<ServiceChannel>> {
        self.endpoints(service)
            .ok()
            .map(|endpoints| self.connect(service, &endpoints, caller))
            .transpose()
    }

    fn connect(
        &self,
        service: ServiceName,
        endpoints: &[String],
        caller: Option<&Arc<ServiceTokenSource>>,
    ) -> anyhow::Result<ServiceChannel> {
        let channel = reporunner_client::connect(service.spec().grpc_name, endpoints, &self.settings.client)?;
        Ok(match caller {
            Some(identity) => channel.with_identity(identity.clone()),
            None => channel,
        })
    }
}

fn build_auth<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let auth = start_auth(w.settings).await?;
        // Built once per node: the table holds each service once.
        let _ = w.auth.set(auth.clone());
        let served = AuthGrpc::new(auth.clone()).into_server();
        let _ = w
            .local_auth
            .set(Transport::in_process(reporunner_server::served_in_process(
                served.clone(),
            )));
        Ok(server
            .add_service(served)
            .add_service(AdminGrpc::new(auth).into_server()))
    })
}

fn build_env_detector<'a>(
    w: &'a Wiring<'a>,
    server: GrpcServer,
) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let settings = w.settings;
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
        Ok(w.agent(
            ServiceName::EnvDetector,
            server,
            EnvDetectorGrpc::new(detector).into_server(),
        ))
    })
}

fn build_source<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let source = Source::new(w.settings.source_config())
            .map_err(|e| anyhow::anyhow!("invalid source settings: {e}"))?;
        Ok(w.agent(
            ServiceName::Source,
            server,
            SourceGrpc::new(Arc::new(source)).into_server(),
        ))
    })
}

fn build_analyzer<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let analyzer = RepoAnalyzer::new(w.settings.analyzer.clone())
            .map_err(|e| anyhow::anyhow!("invalid analyzer settings: {e}"))?;
        Ok(w.agent(
            ServiceName::Analyzer,
            server,
            AnalyzerGrpc::new(Arc::new(analyzer)).into_server(),
        ))
    })
}

fn build_dependency<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let settings = w.settings;
        // Installs run the repository's code (lifecycle scripts, builds):
        // in the runner's sandbox, as the owner.
        let sandbox = step_sandbox(settings).sandbox_config();
        let installer = LocalInstaller::new(settings.dependency.clone().resolve(&settings.data_dir))
            .map_err(|e| anyhow::anyhow!("invalid dependency settings: {e}"))?
            .with_sandbox(sandbox)
            .with_workspace_roots(vec![settings.source_config().root]);
        Ok(w.agent(
            ServiceName::Dependency,
            server,
            DependencyGrpc::new(Arc::new(installer)).into_server(),
        ))
    })
}

fn build_runner<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let runner = LocalRunner::new(step_sandbox(w.settings))
            .map_err(|e| anyhow::anyhow!("invalid runner settings: {e}"))?;
        Ok(w.agent(
            ServiceName::Runner,
            server,
            RunnerGrpc::new(Arc::new(runner)).into_server(),
        ))
    })
}

fn build_health<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        // Log probes read the runner's output; without a runner endpoint they are refused.
        let runner = w.optional_transport(ServiceName::Runner, &w.identity(reporunner_identity::HEALTH))?;
        let agent = HealthAgent::new(w.settings.health.clone(), runner)
            .map_err(|e| anyhow::anyhow!("invalid health settings: {e}"))?;
        Ok(w.agent(
            ServiceName::Health,
            server,
            HealthGrpc::new(Arc::new(agent)).into_server(),
        ))
    })
}

fn build_provisioner<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let settings = w.settings;
        let provisioner = LocalProvisioner::new(settings.provisioner.clone().resolve(&settings.data_dir))
            .map_err(|e| anyhow::anyhow!("invalid provisioner settings: {e}"))?;
        Ok(w.agent(
            ServiceName::Provisioner,
            server,
            ProvisionerGrpc::new(Arc::new(provisioner)).into_server(),
        ))
    })
}

fn build_resolver<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let resolver = RuleResolver::new(w.settings.resolver.clone())
            .map_err(|e| anyhow::anyhow!("invalid resolver settings: {e}"))?;
        Ok(w.agent(
            ServiceName::Resolver,
            server,
            ResolverGrpc::new(Arc::new(resolver)).into_server(),
        ))
    })
}

fn build_tester<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        // Tests run in the runner's sandbox, with its settings.
        let tester = LocalTester::new(
            w.settings.tester.clone(),
            step_sandbox(w.settings).process_settings(),
        )
        .map_err(|e| anyhow::anyhow!("invalid tester settings: {e}"))?;
        Ok(w.agent(
            ServiceName::Tester,
            server,
            TesterGrpc::new(Arc::new(tester)).into_server(),
        ))
    })
}

fn build_indexer<'a>(w: &'a Wiring<'a>, server: GrpcServer) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let indexer = LocalIndexer::new(w.settings.indexer_config())
            .map_err(|e| anyhow::anyhow!("invalid indexer settings: {e}"))?;
        Ok(w.agent(
            ServiceName::Indexer,
            server,
            IndexerGrpc::new(Arc::new(indexer)).into_server(),
        ))
    })
}

fn build_orchestrator<'a>(
    w: &'a Wiring<'a>,
    server: GrpcServer,
) -> BoxFuture<'a, anyhow::Result<GrpcServer>> {
    Box::pin(async move {
        let settings = w.settings;
        // Its calls to agents say they come from the orchestrator; its calls
        // to auth carry the user's token instead.
        let me = w.identity(reporunner_identity::ORCHESTRATOR);
        let required = |service| w.transport(service, &me);
        // Without an optional agent the orchestrator serves goal ANALYZE and
        // refuses START and TEST naming the missing endpoint.
        let optional = |service| w.optional_transport(service, &me);
        let env_detector = required(ServiceName::EnvDetector)?;
        // In process when this node hosts auth: no socket per authorization.
        let auth: Transport = match w.local_auth.get() {
            Some(local) => local.clone(),
            None => w.channel(ServiceName::Auth, None)?.into(),
        };
        let layer = METERED
            .iter()
            .fold(AuthLayer::new(Authorizer::new(auth.clone())), |layer, path| {
                layer.metered(path, UsageKind::MeteredRequest)
            });
        let agents = Agents {
            env_detector,
            source: required(ServiceName::Source)?,
            analyzer: required(ServiceName::Analyzer)?,
            dependency: optional(ServiceName::Dependency)?,
            runner: optional(ServiceName::Runner)?,
            health: optional(ServiceName::Health)?,
            provisioner: optional(ServiceName::Provisioner)?,
            resolver: optional(ServiceName::Resolver)?,
            tester: optional(ServiceName::Tester)?,
            indexer: optional(ServiceName::Indexer)?,
            // Plugins are external agents: called with this node's identity,
            // like the agents, through the same client stack.
            plugins: settings
                .orchestrator
                .plugins
                .iter()
                .map(|plugin| {
                    let service = reporunner_proto::agents::plugin::v1::plugin_service_server::SERVICE_NAME;
                    let channel = reporunner_client::connect(service, &plugin.endpoints, &settings.client)?;
                    Ok((plugin.name.clone(), channel.with_identity(me.clone()).into()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        let mut orchestrator_settings = settings.orchestrator.clone();
        if orchestrator_settings.provision_dir.is_empty() {
            let dir = provision_dir(settings)?;
            orchestrator_settings.provision_dir = dir.display().to_string();
            let _ = w.provision_dir.set(dir);
        }
        let store = OrchestratorImpl::open_store(&settings.orchestrator, &settings.data_dir)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the run store: {e}"))?;
        let orchestrator = OrchestratorImpl::new(orchestrator_settings, agents, store, Authorizer::new(auth))
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the orchestrator: {e}"))?;
        let orchestrator = Arc::new(orchestrator);
        // On shutdown the runs' tasks end here; RUNNING runs keep their
        // processes for the next orchestrator to resume.
        let stopping = orchestrator.clone();
        let token = w.shutdown.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            stopping.shutdown();
        });
        Ok(server.add_service(layer.layer(OrchestratorGrpc::new(orchestrator).into_server())))
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
    fn the_table_has_one_row_per_service_in_start_order() {
        let names: Vec<ServiceName> = SERVICES.iter().map(|spec| spec.name).collect();
        assert_eq!(names, ServiceName::ALL);
        for service in ServiceName::ALL {
            assert_eq!(service.spec().name, service);
            // The endpoint key is the service's name as a settings key.
            assert_eq!(service.spec().endpoint_key, service.as_str().replace('-', "_"));
        }
        let endpoints = Endpoints {
            tester: vec!["http://tester:1".into()],
            env_detector: vec!["http://env:1".into()],
            ..Endpoints::default()
        };
        assert_eq!(
            (ServiceName::Tester.spec().endpoints)(&endpoints),
            &vec!["http://tester:1".to_owned()]
        );
        assert_eq!(
            (ServiceName::EnvDetector.spec().endpoints)(&endpoints),
            &vec!["http://env:1".to_owned()]
        );
        assert!((ServiceName::Indexer.spec().endpoints)(&endpoints).is_empty());
    }

    #[test]
    fn only_the_orchestrator_and_auth_are_public() {
        let public: Vec<ServiceName> = ServiceName::ALL.into_iter().filter(|s| s.is_public()).collect();
        assert_eq!(public, [ServiceName::Auth, ServiceName::Orchestrator]);
    }
}
