//! The mesh sandbox: starts any set of services in-process, each node on its
//! own `127.0.0.1:0` listener, wired together exactly as `reporunner serve`
//! wires them, and hands back generated clients.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use reporunner_node::ServiceName;
//! use reporunner_tests::Sandbox;
//! let mesh = Sandbox::builder()
//!     .replicas(ServiceName::EnvDetector, 2)
//!     .with(ServiceName::Source)
//!     .with(ServiceName::Analyzer)
//!     .with(ServiceName::Orchestrator)
//!     .start()
//!     .await?;
//! let mut orchestrator = mesh.orchestrator();
//! # Ok(()) }
//! ```
//!
//! Nodes share one data directory, and so one mesh key
//! (`<data_dir>/service.key`): agents answer only calls carrying a service
//! token of an allowed caller. A test that stands in for the orchestrator
//! calls an agent through [`Sandbox::agent_channel`].
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use reporunner_client::ServiceChannel;
use reporunner_identity::{MeshKey, ServiceTokenSource};
use reporunner_node::{Node, ServiceName, Settings, start_node};
use reporunner_proto::{
    agents, index, orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient,
};
use reporunner_server::CancellationToken;

pub mod load;
use tonic::transport::{Channel, Endpoint};

/// Builds a [`Sandbox`].
#[derive(Debug)]
pub struct SandboxBuilder {
    replicas: BTreeMap<ServiceName, usize>,
    settings: Settings,
    data_dir: tempfile::TempDir,
}

/// The orchestrator and what it needs to answer without running anything:
/// auth, the env-detector, the source agent and the analyzer.
pub const FRONT_DOOR: [ServiceName; 5] = [
    ServiceName::Auth,
    ServiceName::EnvDetector,
    ServiceName::Source,
    ServiceName::Analyzer,
    ServiceName::Orchestrator,
];

impl SandboxBuilder {
    /// Hosts one replica of each of `services`.
    pub fn with_all(self, services: impl IntoIterator<Item = ServiceName>) -> Self {
        services.into_iter().fold(self, Self::with)
    }

    /// Hosts one replica of `service`.
    pub fn with(self, service: ServiceName) -> Self {
        self.replicas(service, 1)
    }

    /// Hosts `count` replicas of `service`, each its own node.
    pub fn replicas(mut self, service: ServiceName, count: usize) -> Self {
        self.replicas.insert(service, count);
        self
    }

    /// Adjusts the settings every node starts with.
    pub fn settings(mut self, edit: impl FnOnce(&mut Settings)) -> Self {
        edit(&mut self.settings);
        self
    }

    /// Starts agents first, then the services that call them, each pointed at
    /// every replica of what it needs.
    pub async fn start(self) -> anyhow::Result<Sandbox> {
        let mut settings = self.settings;
        let mut nodes: Vec<SandboxNode> = Vec::new();
        for (service, count) in self.replicas {
            for replica in 0..count {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let shutdown = CancellationToken::new();
                // Boxed: a node's start-up future is large (every service's set-up).
                let node = Box::pin(start_node(&settings, &[service], listener, shutdown)).await?;
                let uri = format!("http://{}", node.addr);
                match service {
                    ServiceName::Auth => settings.endpoints.auth.push(uri),
                    ServiceName::EnvDetector => settings.endpoints.env_detector.push(uri),
                    ServiceName::Source => settings.endpoints.source.push(uri),
                    ServiceName::Analyzer => settings.endpoints.analyzer.push(uri),
                    ServiceName::Dependency => settings.endpoints.dependency.push(uri),
                    ServiceName::Runner => settings.endpoints.runner.push(uri),
                    ServiceName::Health => settings.endpoints.health.push(uri),
                    ServiceName::Provisioner => settings.endpoints.provisioner.push(uri),
                    ServiceName::Resolver => settings.endpoints.resolver.push(uri),
                    ServiceName::Tester => settings.endpoints.tester.push(uri),
                    ServiceName::Indexer => settings.endpoints.indexer.push(uri),
                    ServiceName::Orchestrator => settings.endpoints.orchestrator.push(uri),
                }
                nodes.push(SandboxNode {
                    service,
                    replica,
                    node: Some(node),
                });
            }
        }
        let mut sandbox = Sandbox {
            nodes,
            _data_dir: self.data_dir,
            data_path: settings.data_dir.clone(),
            token: None,
        };
        if sandbox.addr(ServiceName::Auth).is_some() {
            sandbox.token = Some(sandbox.register_and_login("sandbox-user").await?);
        }
        Ok(sandbox)
    }
}

/// One node of the sandbox.
#[derive(Debug)]
pub struct SandboxNode {
    pub service: ServiceName,
    pub replica: usize,
    node: Option<Node>,
}

impl SandboxNode {
    fn node(&self) -> &Node {
        // Only `stop` takes the node, and it consumes the sandbox's slot.
        self.node.as_ref().expect("node is running")
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.node().addr
    }

    /// Reports the node's services SERVING or NOT_SERVING over grpc.health.v1.
    pub async fn set_serving(&self, serving: bool) {
        self.node().set_serving(serving).await;
    }

    /// Stops the node and waits for it to finish.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        match self.node.take() {
            Some(node) => node.stop().await,
            None => Ok(()),
        }
    }
}

/// A running in-process mesh.
#[derive(Debug)]
pub struct Sandbox {
    nodes: Vec<SandboxNode>,
    /// Every node's data (auth database, keys) lives here and goes with the sandbox.
    _data_dir: tempfile::TempDir,
    /// The data directory the nodes use: `_data_dir` unless the settings chose another.
    data_path: PathBuf,
    /// The access token of a Free user registered at start, when auth is hosted.
    token: Option<String>,
}

/// `tests/fixtures`, the one local root a sandbox allows by default.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The full gRPC name of an agent service; `None` for public services.
pub fn agent_service(service: ServiceName) -> Option<&'static str> {
    Some(match service {
        ServiceName::Auth | ServiceName::Orchestrator => return None,
        ServiceName::EnvDetector => agents::env_detector::v1::env_detector_service_server::SERVICE_NAME,
        ServiceName::Source => agents::source::v1::source_service_server::SERVICE_NAME,
        ServiceName::Analyzer => agents::analyzer::v1::analyzer_service_server::SERVICE_NAME,
        ServiceName::Dependency => agents::dependency::v1::dependency_service_server::SERVICE_NAME,
        ServiceName::Runner => agents::runner::v1::runner_service_server::SERVICE_NAME,
        ServiceName::Health => agents::health::v1::health_service_server::SERVICE_NAME,
        ServiceName::Provisioner => agents::provisioner::v1::provisioner_service_server::SERVICE_NAME,
        ServiceName::Resolver => agents::resolver::v1::resolver_service_server::SERVICE_NAME,
        ServiceName::Tester => agents::tester::v1::tester_service_server::SERVICE_NAME,
        ServiceName::Indexer => index::v1::index_service_server::SERVICE_NAME,
    })
}

/// The password of users the sandbox registers.
pub const SANDBOX_PASSWORD: &str = "lantern-meadow-copper-72";

impl Sandbox {
    pub fn builder() -> SandboxBuilder {
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        let settings = Settings {
            listen: "127.0.0.1:0".parse().expect("static address"),
            metrics_listen: None,
            data_dir: data_dir.path().to_path_buf(),
            ..Settings::default()
        };
        let mut builder = SandboxBuilder {
            replicas: BTreeMap::new(),
            settings,
            data_dir,
        };
        // Runs copy the fixtures as a deployment copies its allowed roots
        // (`reporunner serve` allows no local path until told where from).
        builder.settings.source.allowed_local_roots = vec![fixtures_dir()];
        // Keep tests hermetic and quick: no registry probes, short timeouts.
        builder.settings.env_detector.registries.clear();
        builder.settings.stop_timeout = Duration::from_millis(200);
        builder.settings.client.connect_timeout = Duration::from_millis(1_000);
        builder.settings.client.default_deadline = Duration::from_millis(10_000);
        builder.settings.client.keepalive_interval = Duration::from_millis(1_000);
        builder.settings.client.keepalive_timeout = Duration::from_millis(1_000);
        builder.settings.client.health_retry_max = Duration::from_millis(200);
        builder
    }

    /// The data directory every node shares (auth database, keys, and the
    /// workspaces under `workspaces/`).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_path
    }

    /// The nodes hosting `service`, by replica.
    pub fn nodes(&mut self, service: ServiceName) -> Vec<&mut SandboxNode> {
        self.nodes.iter_mut().filter(|n| n.service == service).collect()
    }

    /// The address of the first replica of `service`.
    pub fn addr(&self, service: ServiceName) -> Option<std::net::SocketAddr> {
        self.nodes
            .iter()
            .find(|n| n.service == service && n.node.is_some())
            .map(SandboxNode::addr)
    }

    /// The mesh key file the nodes share, for nodes started beside the
    /// sandbox over another data directory (`mesh.service_key_file`).
    pub fn mesh_key_file(&self) -> PathBuf {
        self.data_dir().join(reporunner_identity::SERVICE_KEY_FILE)
    }

    /// The key the nodes sign and check service tokens with.
    pub fn mesh_key(&self) -> MeshKey {
        self.nodes
            .iter()
            .find_map(|n| n.node.as_ref())
            .map(|node| node.mesh_key.clone())
            .expect("a running node")
    }

    /// A service token saying the caller is `caller` (e.g. `orchestrator`).
    pub fn service_token(&self, caller: &str) -> String {
        ServiceTokenSource::new(&self.mesh_key(), caller)
            .token()
            .expect("a service token signs")
    }

    /// A client-stack channel to every replica of the agent `service`, whose
    /// calls say they come from `caller`: for tests that stand in for the
    /// orchestrator (or another service) calling an agent directly.
    pub fn agent_channel(&self, service: ServiceName, caller: &str) -> ServiceChannel {
        let endpoints: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.service == service && n.node.is_some())
            .map(|n| format!("http://{}", n.node().internal_addr))
            .collect();
        let name = agent_service(service).expect("an agent service");
        let config = reporunner_client::ClientConfig {
            connect_timeout: Duration::from_millis(1_000),
            health_retry_max: Duration::from_millis(200),
            ..Default::default()
        };
        reporunner_client::connect(name, &endpoints, &config)
            .expect("valid endpoints")
            .with_identity(Arc::new(ServiceTokenSource::new(&self.mesh_key(), caller)))
    }

    /// A plain channel to the first replica of `service`.
    pub fn channel(&self, service: ServiceName) -> Channel {
        let addr = self.addr(service).expect("service is hosted in this sandbox");
        Endpoint::from_shared(format!("http://{addr}"))
            .expect("valid uri")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    }

    /// A generated client of the first orchestrator.
    pub fn orchestrator(&self) -> OrchestratorServiceClient<Channel> {
        OrchestratorServiceClient::new(self.channel(ServiceName::Orchestrator))
    }

    /// Registers a Free user and returns their access token.
    pub async fn register_and_login(&self, username: &str) -> anyhow::Result<String> {
        use reporunner_proto::auth::v1::{
            LoginRequest, RegisterRequest, auth_service_client::AuthServiceClient,
        };
        let mut auth = AuthServiceClient::new(self.channel(ServiceName::Auth));
        auth.register(RegisterRequest {
            username: username.into(),
            password: SANDBOX_PASSWORD.into(),
        })
        .await?;
        let login = auth
            .login(LoginRequest {
                username: username.into(),
                password: SANDBOX_PASSWORD.into(),
            })
            .await?;
        let tokens = login
            .into_inner()
            .tokens
            .ok_or_else(|| anyhow::anyhow!("login returned no tokens"))?;
        Ok(tokens.access_token)
    }

    /// `message` as a request carrying the sandbox user's bearer token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(Ok(value)) = self.token.as_ref().map(|token| format!("Bearer {token}").parse()) {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Stops every node.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.stop().await?;
        }
        Ok(())
    }
}
