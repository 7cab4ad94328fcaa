//! The orchestrator's integration harness: real services over loopback gRPC.
//!
//! - the auth service (SQLite in a temporary directory) with an admin;
//! - the agents on one listener: env-detector, source (workspaces in a
//!   temporary directory, `file://` git URLs allowed) and analyzer;
//! - the orchestrator behind the auth layer on another listener, over a run
//!   store that is SQLite or a fresh PostgreSQL database ([`TestDb`]).
//!
//! PostgreSQL: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`),
//! one database `orchestrator_test_<uuid>` per test, dropped WITH (FORCE)
//! when the handle goes away. `REPORUNNER_SKIP_PG=1` skips those tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, sync::Arc, time::Duration};

use reporunner_analyzer::{AnalyzerConfig, RepoAnalyzer, grpc::AnalyzerGrpc};
use reporunner_auth::{Auth, AuthConfig, AuthStore, grpc::AuthGrpc};
use reporunner_authn::{AuthLayer, Authorizer};
use reporunner_env_detector::{Detector, EnvDetectorConfig, grpc::EnvDetectorGrpc};
use reporunner_orchestrator::{
    Agents, OrchestratorConfig, OrchestratorImpl, RunStore, grpc::OrchestratorGrpc,
};
use reporunner_proto::{
    agents::{
        analyzer::v1::analyzer_service_server, env_detector::v1::env_detector_service_server,
        source::v1::source_service_server,
    },
    auth::v1::{UsageKind, auth_service_server},
    common::v1::{Principal, Tier},
    orchestrator::v1::{
        CreateRunRequest, GetRunRequest, RepoSource, Run, RunEvent, RunGoal, RunState, WatchRunRequest,
        orchestrator_service_client::OrchestratorServiceClient, repo_source,
    },
};
use reporunner_server::{CancellationToken, GrpcServer};
use reporunner_source::{Source, SourceConfig, SourceGrpc};
use tokio_stream::StreamExt as _;
use tonic::{Request, transport::Channel};
use tower::Layer as _;

pub const ADMIN: &str = "rootadmin";
pub const ADMIN_PASSWORD: &str = "granite-falcon-harbor-88";
const PASSWORD: &str = "saffron-kettle-mosaic-51";
pub const CREATE_RUN: &str = "/reporunner.orchestrator.v1.OrchestratorService/CreateRun";

// ---- test databases ----

/// A run store database for one test (`reporunner-testdb`); `url` is what
/// `RunStore::connect` takes.
pub use reporunner_testdb::TestDb;

/// A SQLite database in a temporary directory.
pub fn sqlite() -> TestDb {
    reporunner_testdb::sqlite("orchestrator.db")
}

/// A fresh PostgreSQL database `orchestrator_test_<uuid>`, or `None` when
/// `REPORUNNER_SKIP_PG=1`.
pub async fn postgres() -> Option<TestDb> {
    reporunner_testdb::postgres("orchestrator_test").await
}

// ---- fixtures ----

/// A small Flask app: `app.py` and `requirements.txt`.
pub fn flask_app(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("app.py"),
        "from flask import Flask\n\napp = Flask(__name__)\n\n\n@app.route(\"/\")\ndef index():\n    return \"hello\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("requirements.txt"), "flask==3.0.3\n").unwrap();
}

// ---- the mesh ----

/// A user and their access token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub name: String,
    pub token: String,
}

pub struct Mesh {
    pub auth: Arc<Auth>,
    pub orchestrator: Arc<OrchestratorImpl>,
    pub client: OrchestratorServiceClient<Channel>,
    pub store: RunStore,
    /// Where fixtures and the source agent's workspaces live.
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    agents_uri: String,
    auth_uri: String,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.orchestrator.shutdown();
        self.shutdown.cancel();
    }
}

async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    (listener, uri)
}

fn channel(service: &str, uri: &str) -> reporunner_client::ServiceChannel {
    reporunner_client::connect(service, &[uri.to_owned()], &Default::default()).unwrap()
}

/// Settings the tests use: short deadlines, so that a hang fails fast.
pub fn test_config() -> OrchestratorConfig {
    OrchestratorConfig {
        fetch_deadline_ms: 40_000,
        fetch_timeout_seconds: 30,
        analyze_deadline_ms: 30_000,
        watch_poll_ms: 200,
        ..OrchestratorConfig::default()
    }
}

impl Mesh {
    /// Starts auth (default tiers), the agents and an orchestrator over `db`.
    pub async fn start(db: &TestDb, config: OrchestratorConfig) -> Mesh {
        Self::start_with_tiers(db, config, reporunner_auth::config::default_tiers()).await
    }

    /// Starts the mesh with the auth service's tier table replaced.
    pub async fn start_with_tiers(
        db: &TestDb,
        config: OrchestratorConfig,
        tiers: Vec<reporunner_auth::TierPolicyConfig>,
    ) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();

        // Auth on SQLite, with an admin.
        let auth_config = AuthConfig {
            jwt_secret: Some("a-test-signing-key-of-enough-length-000".into()),
            tiers,
            // The fixtures register many users in-process (one unknown address).
            registrations_per_address_per_hour: 1_000,
            ..AuthConfig::default()
        };
        let key = auth_config.jwt_secret.clone().unwrap();
        let auth_url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
        let auth_store = AuthStore::connect(&auth_url).await.unwrap();
        let auth = Arc::new(Auth::new(auth_store, auth_config, key.as_bytes()).await.unwrap());
        auth.ensure_admin(ADMIN, ADMIN_PASSWORD).await.unwrap();
        let (listener, auth_uri) = listen().await;
        tokio::spawn(
            GrpcServer::new()
                .add_service(AuthGrpc::new(auth.clone()).into_server())
                .serve(listener, shutdown.clone()),
        );

        // The agents on one listener, like a node hosting them.
        let source = Source::new(SourceConfig {
            root: dir.path().join("workspaces"),
            // The fixtures are made under the same temporary directory.
            allowed_local_roots: vec![dir.path().to_path_buf()],
            allow_file_urls: true,
            ..SourceConfig::default()
        })
        .unwrap();
        let analyzer = RepoAnalyzer::new(AnalyzerConfig::default()).unwrap();
        let detector = Detector::new(EnvDetectorConfig::default());
        let (listener, agents_uri) = listen().await;
        tokio::spawn(
            GrpcServer::new()
                .add_service(SourceGrpc::new(Arc::new(source)).into_server())
                .add_service(AnalyzerGrpc::new(Arc::new(analyzer)).into_server())
                .add_service(EnvDetectorGrpc::new(Arc::new(detector)).into_server())
                .serve(listener, shutdown.clone()),
        );

        let mut mesh = Mesh {
            auth,
            orchestrator: Arc::new(Self::orchestrator_over(db, config.clone(), &agents_uri, &auth_uri).await),
            client: OrchestratorServiceClient::new(Channel::from_static("http://127.0.0.1:1").connect_lazy()),
            store: RunStore::connect(&db.url).await.unwrap(),
            dir,
            shutdown,
            agents_uri,
            auth_uri,
        };
        mesh.serve_orchestrator().await;
        mesh
    }

    async fn orchestrator_over(
        db: &TestDb,
        config: OrchestratorConfig,
        agents_uri: &str,
        auth_uri: &str,
    ) -> OrchestratorImpl {
        let agents = Agents {
            env_detector: channel(env_detector_service_server::SERVICE_NAME, agents_uri).into(),
            source: channel(source_service_server::SERVICE_NAME, agents_uri).into(),
            analyzer: channel(analyzer_service_server::SERVICE_NAME, agents_uri).into(),
            // None here: this orchestrator serves ANALYZE; START and TEST
            // are tested through the whole mesh (tests/tests/run.rs).
            dependency: None,
            runner: None,
            health: None,
            provisioner: None,
            resolver: None,
            tester: None,
            indexer: None,
            plugins: Vec::new(),
        };
        let authorizer = Authorizer::new(channel(auth_service_server::SERVICE_NAME, auth_uri));
        let store = RunStore::connect(&db.url).await.unwrap();
        OrchestratorImpl::new(config, agents, store, authorizer)
            .await
            .unwrap()
    }

    async fn serve_orchestrator(&mut self) {
        let authorizer = Authorizer::new(channel(auth_service_server::SERVICE_NAME, &self.auth_uri));
        let layer = AuthLayer::new(authorizer).metered(CREATE_RUN, UsageKind::MeteredRequest);
        let (listener, uri) = listen().await;
        tokio::spawn(
            GrpcServer::new()
                .add_service(layer.layer(OrchestratorGrpc::new(self.orchestrator.clone()).into_server()))
                .serve(listener, self.shutdown.clone()),
        );
        self.client = OrchestratorServiceClient::new(
            Channel::from_shared(uri)
                .unwrap()
                .connect_timeout(Duration::from_secs(2))
                .connect_lazy(),
        );
    }

    /// A second orchestrator process over the same store and agents, as
    /// after a restart: the old one is shut down first.
    pub async fn restart_orchestrator(&mut self, db: &TestDb, config: OrchestratorConfig) {
        self.orchestrator.shutdown();
        self.orchestrator =
            Arc::new(Self::orchestrator_over(db, config, &self.agents_uri, &self.auth_uri).await);
        self.serve_orchestrator().await;
    }

    /// Another orchestrator replica over the same store and agents, beside
    /// the served one (not served itself).
    pub async fn replica(&self, db: &TestDb, config: OrchestratorConfig) -> OrchestratorImpl {
        Self::orchestrator_over(db, config, &self.agents_uri, &self.auth_uri).await
    }

    pub async fn user(&self, name: &str) -> User {
        let user = self.auth.register(name, PASSWORD, None).await.unwrap();
        let (_, tokens) = self.auth.login(name, PASSWORD, None).await.unwrap();
        User {
            id: user.id,
            name: name.to_owned(),
            token: tokens.access.token,
        }
    }

    pub async fn admin(&self) -> User {
        let (user, tokens) = self.auth.login(ADMIN, ADMIN_PASSWORD, None).await.unwrap();
        User {
            id: user.id,
            name: ADMIN.to_owned(),
            token: tokens.access.token,
        }
    }

    /// How many units of `kind` the user has spent.
    pub async fn spent(&self, user: &User, kind: UsageKind) -> u64 {
        let principal = Principal {
            user_id: user.id.clone(),
            username: user.name.clone(),
            tier: Tier::Free.into(),
        };
        let report = self.auth.get_usage(&principal, "").await.unwrap();
        report
            .counters
            .iter()
            .find(|c| c.kind == kind)
            .map_or(0, |c| c.total)
    }

    /// Moves `user` to `tier`, as the admin.
    pub async fn set_tier(&self, user: &User, tier: Tier) {
        let (admin, tokens) = self.auth.login(ADMIN, ADMIN_PASSWORD, None).await.unwrap();
        let _ = tokens;
        let admin: Principal = admin.principal();
        self.auth.set_tier(&admin, &user.id, tier).await.unwrap();
    }

    /// A fixture Flask app under the mesh's directory.
    pub fn flask_fixture(&self, name: &str) -> String {
        let path = self.dir.path().join("fixtures").join(name);
        flask_app(&path);
        path.display().to_string()
    }

    pub async fn create(&self, user: &User, source: repo_source::Source) -> Result<Run, tonic::Status> {
        self.create_with(
            user,
            CreateRunRequest {
                source: Some(RepoSource {
                    source: Some(source),
                    r#ref: String::new(),
                }),
                goal: RunGoal::Analyze.into(),
                ..CreateRunRequest::default()
            },
        )
        .await
    }

    pub async fn create_with(&self, user: &User, request: CreateRunRequest) -> Result<Run, tonic::Status> {
        self.client
            .clone()
            .create_run(as_user(user, request))
            .await
            .map(|r| r.into_inner().run.unwrap())
    }

    pub async fn get(&self, user: &User, run_id: &str) -> Result<Run, tonic::Status> {
        self.client
            .clone()
            .get_run(as_user(
                user,
                GetRunRequest {
                    run_id: run_id.to_owned(),
                },
            ))
            .await
            .map(|r| r.into_inner().run.unwrap())
    }

    /// Every event of the run from `after`, until it ends (bounded in time).
    pub async fn watch(&self, user: &User, run_id: &str, after: u64) -> Result<Vec<RunEvent>, tonic::Status> {
        let mut stream = self
            .client
            .clone()
            .watch_run(as_user(
                user,
                WatchRunRequest {
                    run_id: run_id.to_owned(),
                    after_sequence: after,
                    without_logs: false,
                },
            ))
            .await?
            .into_inner();
        let mut events = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(item) = stream.next().await {
                events.push(item?.event.unwrap());
            }
            Ok::<_, tonic::Status>(())
        })
        .await
        .expect("the watch ends when the run ends")?;
        Ok(events)
    }

    /// Waits until the run is over and returns it.
    pub async fn finished(&self, user: &User, run_id: &str) -> Run {
        for _ in 0..600 {
            let run = self.get(user, run_id).await.unwrap();
            if is_over(run.state()) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {run_id} did not finish within a minute");
    }
}

pub fn is_over(state: RunState) -> bool {
    matches!(
        state,
        RunState::Succeeded | RunState::Failed | RunState::Stopped | RunState::Interrupted
    )
}

pub fn as_user<T>(user: &User, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", user.token).parse().unwrap());
    request
}
