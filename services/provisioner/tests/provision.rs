//! The provisioner agent over real gRPC on loopback, against the real
//! PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379, and private
//! servers started from the installed binaries.
//!
//! `REPORUNNER_SKIP_PG=1` skips the tests that reuse the shared PostgreSQL
//! server; private-server tests skip (with a message) when the binary is
//! not installed.
#![allow(clippy::unwrap_used)]

use std::{os::unix::fs::PermissionsExt as _, path::Path, sync::Arc, time::Duration};

use reporunner_proto::{
    agents::provisioner::v1::{
        ProvisionMode, ProvisionRequest, ProvisionResponse, ReleaseRequest,
        provisioner_service_client::ProvisionerServiceClient,
    },
    common::v1::{BackingService, BackingServiceKind},
};
use reporunner_provisioner::{
    LocalProvisioner, Mode, ProvisionerConfig, grpc::ProvisionerGrpc, postgres, redis::RespClient,
};
use reporunner_server::GrpcServer;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

type Client = ProvisionerServiceClient<Channel>;

struct Agent {
    client: Client,
    shutdown: CancellationToken,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn config(state_dir: &Path) -> ProvisionerConfig {
    ProvisionerConfig {
        state_dir: state_dir.to_path_buf(),
        ..ProvisionerConfig::default()
    }
}

async fn agent(config: ProvisionerConfig) -> Agent {
    let provisioner = LocalProvisioner::new(config).unwrap();
    let (addr, shutdown) = GrpcServer::new()
        .add_service(ProvisionerGrpc::new(Arc::new(provisioner)).into_server())
        .spawn_on_loopback()
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    Agent {
        client: ProvisionerServiceClient::new(channel),
        shutdown,
    }
}

/// A temporary directory the private servers' accounts can enter.
fn run_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A server binary this test needs is missing on this host: it is skipped
/// with `why` printed, except in CI (`CI=true`), where it fails, so that
/// what its name promises is never passed over silently.
fn missing(why: &str) {
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{why}; CI must run this test (tests/tools.sh installs what it needs)"
    );
    eprintln!("skipped: {why}");
}

fn skip_pg() -> bool {
    let skip = std::env::var("REPORUNNER_SKIP_PG").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("REPORUNNER_SKIP_PG=1: skipping a test that needs PostgreSQL on 127.0.0.1:5432");
    }
    skip
}

fn request(run_id: &str, kind: BackingServiceKind, env_vars: &[&str], run_dir: &str) -> ProvisionRequest {
    ProvisionRequest {
        run_id: run_id.into(),
        service: Some(BackingService {
            kind: kind as i32,
            version: String::new(),
            env_vars: env_vars.iter().map(|s| (*s).to_owned()).collect(),
            evidence: vec![],
            url_scheme: String::new(),
        }),
        run_dir: run_dir.into(),
    }
}

async fn provision(client: &mut Client, request: ProvisionRequest) -> ProvisionResponse {
    client.provision(request).await.unwrap().into_inner()
}

async fn release(client: &mut Client, run_id: &str, ids: &[&str]) -> Vec<String> {
    client
        .release(ReleaseRequest {
            run_id: run_id.into(),
            resource_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .released
}

async fn pg(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Whether the shared server still has database and role `name`.
async fn pg_has(name: &str) -> (bool, bool) {
    let admin = pg(ADMIN_URL).await.unwrap();
    let db = admin
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap();
    let role = admin
        .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .unwrap();
    (!db.is_empty(), !role.is_empty())
}

#[tokio::test]
async fn postgres_reuse_gives_each_run_its_own_database_and_role() {
    if skip_pg() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let mut agent = agent(config(state.path())).await;
    let a = provision(
        &mut agent.client,
        request(
            "run-a",
            BackingServiceKind::Postgresql,
            &["SQLALCHEMY_DATABASE_URI", "DB_HOST", "DB_NAME"],
            "",
        ),
    )
    .await;
    assert_eq!(a.mode(), ProvisionMode::Reused);
    let name_a = a.env["POSTGRES_DB"].clone();
    assert!(name_a.starts_with("rr_run_a_"), "{name_a}");
    assert_eq!(a.env["POSTGRES_USER"], name_a);
    assert_eq!(a.env["PGPORT"], "5432");
    assert_eq!(a.env["SQLALCHEMY_DATABASE_URI"], a.env["DATABASE_URL"]);
    assert_eq!(a.env["DB_HOST"], "127.0.0.1");
    assert_eq!(a.env["DB_NAME"], name_a);

    // The app connects as the run's role and owns its database.
    let app_a = pg(&a.env["DATABASE_URL"]).await.unwrap();
    app_a
        .batch_execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1)")
        .await
        .unwrap();
    let who = app_a.query_one("SELECT current_user::text", &[]).await.unwrap();
    assert_eq!(who.get::<_, String>(0), name_a);

    // Another run gets another database, and cannot open the first one's.
    let b = provision(
        &mut agent.client,
        request("run-b", BackingServiceKind::Postgresql, &[], ""),
    )
    .await;
    let name_b = b.env["POSTGRES_DB"].clone();
    assert_ne!(name_a, name_b);
    pg(&b.env["DATABASE_URL"]).await.unwrap();
    let (base, _) = b.env["DATABASE_URL"].rsplit_once('/').unwrap();
    let intruder = format!("{base}/{name_a}");
    assert!(intruder.contains(&format!("//{name_b}:")), "{intruder}");
    let refused = pg(&intruder).await.err().unwrap();
    assert!(
        refused.to_string().contains("permission denied") || refused.as_db_error().is_some(),
        "{refused}"
    );

    // Release drops database and role, even with the app still connected.
    assert_eq!(
        release(&mut agent.client, "run-a", &[&a.resource_id]).await,
        vec![a.resource_id.clone()]
    );
    assert_eq!(pg_has(&name_a).await, (false, false));
    assert!(
        release(&mut agent.client, "run-a", &[&a.resource_id])
            .await
            .is_empty()
    );
    assert!(release(&mut agent.client, "run-a", &[]).await.is_empty());
    assert_eq!(pg_has(&name_b).await, (true, true), "the other run is untouched");

    // An empty list releases everything of the run.
    assert_eq!(
        release(&mut agent.client, "run-b", &[]).await,
        vec![b.resource_id]
    );
    assert_eq!(pg_has(&name_b).await, (false, false));
    assert!(!state.path().join("run-b.json").exists());
}

#[tokio::test]
async fn a_private_postgres_is_started_when_reuse_is_off_and_removed_on_release() {
    if postgres::find_bin_dir(None).is_none() {
        missing("initdb/pg_ctl are not installed: the private PostgreSQL test cannot run");
        return;
    }
    if let Err(e) = reporunner_provisioner::host::account_for("postgres", "PostgreSQL") {
        missing(&format!("the private PostgreSQL test cannot run: {e}"));
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let dir = run_dir();
    let mut config = config(state.path());
    config.postgres.mode = Mode::Private;
    let mut agent = agent(config).await;
    let mut req = request(
        "run-private-pg",
        BackingServiceKind::Postgresql,
        &["ASYNCPG_URL"],
        dir.path().to_str().unwrap(),
    );
    req.service.as_mut().unwrap().version = "15-alpine".into();
    let response = provision(&mut agent.client, req).await;
    assert_eq!(response.mode(), ProvisionMode::Started);
    let port = response.env["PGPORT"].clone();
    assert_ne!(port, "5432");
    assert!(response.env["ASYNCPG_URL"].starts_with("postgresql+asyncpg://"));
    let app = pg(&response.env["DATABASE_URL"]).await.unwrap();
    app.batch_execute("CREATE TABLE t (x int)").await.unwrap();
    let server_dir = dir.path().join("provisioner").join(&response.resource_id);
    assert!(server_dir.join("data").join("PG_VERSION").exists());
    drop(app);

    assert_eq!(
        release(&mut agent.client, "run-private-pg", &[]).await,
        vec![response.resource_id]
    );
    assert!(!server_dir.exists(), "the cluster's directory is removed");
    let gone = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await;
    assert!(gone.is_err(), "the private server is stopped");
}

async fn redis_db(db: &str) -> RespClient {
    let mut client = RespClient::connect("127.0.0.1", 6379, Duration::from_secs(2))
        .await
        .unwrap();
    client.command(&["SELECT", db]).await.unwrap();
    client
}

#[tokio::test]
async fn redis_reuse_gives_each_run_its_own_database_and_release_flushes_it() {
    let state = tempfile::tempdir().unwrap();
    let mut agent = agent(config(state.path())).await;
    let a = provision(
        &mut agent.client,
        request("run-ra", BackingServiceKind::Redis, &["CELERY_BROKER_URL"], ""),
    )
    .await;
    let b = provision(
        &mut agent.client,
        request("run-rb", BackingServiceKind::Redis, &[], ""),
    )
    .await;
    assert_eq!(a.mode(), ProvisionMode::Reused);
    let (db_a, db_b) = (a.env["REDIS_DB"].clone(), b.env["REDIS_DB"].clone());
    assert_ne!(db_a, db_b);
    assert_ne!(db_a, "0");
    assert_eq!(a.env["REDIS_URL"], format!("redis://127.0.0.1:6379/{db_a}"));
    assert_eq!(a.env["CELERY_BROKER_URL"], a.env["REDIS_URL"]);

    let mut in_a = redis_db(&db_a).await;
    in_a.command(&["SET", "greeting", "hello"]).await.unwrap();
    let mut in_b = redis_db(&db_b).await;
    assert_eq!(
        in_b.command(&["GET", "greeting"]).await.unwrap().text(),
        None,
        "run b does not see run a's keys"
    );
    in_b.command(&["SET", "other", "x"]).await.unwrap();

    assert_eq!(
        release(&mut agent.client, "run-ra", &[]).await,
        vec![a.resource_id.clone()]
    );
    let mut in_a = redis_db(&db_a).await;
    assert_eq!(
        in_a.command(&["DBSIZE"]).await.unwrap(),
        reporunner_provisioner::redis::Reply::Integer(0)
    );
    assert!(release(&mut agent.client, "run-ra", &[]).await.is_empty());
    assert_eq!(
        in_b.command(&["GET", "other"]).await.unwrap().text().as_deref(),
        Some("x")
    );
    release(&mut agent.client, "run-rb", &[]).await;
    let mut in_b = redis_db(&db_b).await;
    assert_eq!(
        in_b.command(&["DBSIZE"]).await.unwrap(),
        reporunner_provisioner::redis::Reply::Integer(0)
    );
}

#[tokio::test]
async fn a_private_redis_server_is_started_when_configured() {
    if reporunner_provisioner::redis::find_server().is_none() {
        missing("redis-server is not installed: the private Redis test cannot run");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let dir = run_dir();
    let mut config = config(state.path());
    config.redis.mode = Mode::Private;
    let mut agent = agent(config).await;
    let response = provision(
        &mut agent.client,
        request(
            "run-private-redis",
            BackingServiceKind::Redis,
            &["CACHE_HOST", "CACHE_PORT"],
            dir.path().to_str().unwrap(),
        ),
    )
    .await;
    assert_eq!(response.mode(), ProvisionMode::Started);
    let port: u16 = response.env["REDIS_PORT"].parse().unwrap();
    assert_ne!(port, 6379);
    assert_eq!(response.env["CACHE_PORT"], port.to_string());
    assert_eq!(response.env["CACHE_HOST"], "127.0.0.1");
    let mut client = RespClient::connect("127.0.0.1", port, Duration::from_secs(2))
        .await
        .unwrap();
    client.command(&["SET", "k", "v"]).await.unwrap();
    let server_dir = dir.path().join("provisioner").join(&response.resource_id);
    assert!(server_dir.join("redis.pid").exists());

    assert_eq!(
        release(&mut agent.client, "run-private-redis", &[]).await,
        vec![response.resource_id]
    );
    assert!(!server_dir.exists());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "the private server is stopped"
    );
}

#[tokio::test]
async fn release_after_an_agent_restart_still_cleans_up() {
    if skip_pg() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let first = agent(config(state.path())).await;
    let mut client = first.client.clone();
    let pg_resource = provision(
        &mut client,
        request("run-restart", BackingServiceKind::Postgresql, &[], ""),
    )
    .await;
    let redis_resource = provision(
        &mut client,
        request("run-restart", BackingServiceKind::Redis, &[], ""),
    )
    .await;
    let name = pg_resource.env["POSTGRES_DB"].clone();
    let db = redis_resource.env["REDIS_DB"].clone();
    redis_db(&db)
        .await
        .command(&["SET", "left", "behind"])
        .await
        .unwrap();
    drop(client);
    drop(first);
    assert!(state.path().join("run-restart.json").exists());

    let mut second = agent(config(state.path())).await;
    let mut released = release(&mut second.client, "run-restart", &[]).await;
    released.sort();
    let mut expected = vec![pg_resource.resource_id, redis_resource.resource_id];
    expected.sort();
    assert_eq!(released, expected);
    assert_eq!(pg_has(&name).await, (false, false));
    assert_eq!(
        redis_db(&db).await.command(&["DBSIZE"]).await.unwrap(),
        reporunner_provisioner::redis::Reply::Integer(0)
    );
    assert!(!state.path().join("run-restart.json").exists());
}

#[tokio::test]
async fn a_private_mysql_server_is_started_when_installed() {
    if reporunner_provisioner::mysql::find_binaries().is_err() {
        missing("mariadbd/mysqld is not installed: the private MySQL test cannot run");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let dir = run_dir();
    let mut agent = agent(config(state.path())).await;
    let response = provision(
        &mut agent.client,
        request(
            "run-mysql",
            BackingServiceKind::Mysql,
            &["DB_USERNAME"],
            dir.path().to_str().unwrap(),
        ),
    )
    .await;
    assert_eq!(response.mode(), ProvisionMode::Started);
    assert!(response.env["DATABASE_URL"].starts_with("mysql://rr_run_mysql_"));
    let binaries = reporunner_provisioner::mysql::find_binaries().unwrap();
    let output = tokio::process::Command::new(&binaries.client)
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &response.env["MYSQL_PORT"]])
        .arg(format!("-u{}", response.env["DB_USERNAME"]))
        .arg(format!("-p{}", response.env["MYSQL_PASSWORD"]))
        .arg(&response.env["MYSQL_DATABASE"])
        .args(["-e", "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let server_dir = dir.path().join("provisioner").join(&response.resource_id);
    assert!(server_dir.exists());

    assert_eq!(
        release(&mut agent.client, "run-mysql", &[]).await,
        vec![response.resource_id]
    );
    assert!(!server_dir.exists());
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments() {
    let state = tempfile::tempdir().unwrap();
    let mut agent = agent(config(state.path())).await;
    let code = |r: Result<tonic::Response<ProvisionResponse>, tonic::Status>| r.unwrap_err().code();
    let pg = BackingServiceKind::Postgresql;
    for bad in [
        request("../x", pg, &[], ""),
        request("", pg, &[], ""),
        request(&"x".repeat(65), pg, &[], ""),
        request("ok", BackingServiceKind::Unspecified, &[], ""),
        request("ok", pg, &["A=B"], ""),
        request("ok", pg, &[], "relative/dir"),
        request("ok", pg, &[], "/tmp/../etc"),
        ProvisionRequest {
            run_id: "ok".into(),
            service: None,
            run_dir: String::new(),
        },
    ] {
        let shown = format!("{bad:?}");
        assert_eq!(
            code(agent.client.provision(bad).await),
            Code::InvalidArgument,
            "{shown}"
        );
    }
    let status = agent
        .client
        .release(ReleaseRequest {
            run_id: "a/b".into(),
            resource_ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = agent
        .client
        .provision(request("ok", BackingServiceKind::Mongodb, &[], ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("MongoDB"), "{}", status.message());
    assert!(!state.path().join("ok.json").exists(), "nothing was recorded");
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn auto_mode_starts_a_private_server_when_the_shared_one_is_unreachable_and_reuse_mode_refuses() {
    let state = tempfile::tempdir().unwrap();
    let dir = run_dir();
    let mut config = config(state.path());
    config.redis.url = format!("redis://127.0.0.1:{}", closed_port());
    config.postgres.admin_url = format!("postgres://postgres@127.0.0.1:{}/postgres", closed_port());
    config.postgres.mode = Mode::Reuse;
    let mut agent = agent(config).await;

    let status = agent
        .client
        .provision(request("run-auto", BackingServiceKind::Postgresql, &[], ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());

    if reporunner_provisioner::redis::find_server().is_none() {
        missing("redis-server is not installed: the auto-mode fallback to a private Redis cannot run");
        return;
    }
    let response = provision(
        &mut agent.client,
        request(
            "run-auto",
            BackingServiceKind::Redis,
            &[],
            dir.path().to_str().unwrap(),
        ),
    )
    .await;
    assert_eq!(response.mode(), ProvisionMode::Started);
    assert_eq!(
        release(&mut agent.client, "run-auto", &[]).await,
        vec![response.resource_id]
    );
    assert!(!dir.path().join("provisioner").read_dir().unwrap().any(|_| true));
}

#[tokio::test]
async fn private_servers_past_the_limit_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let dir = run_dir();
    let mut config = config(state.path());
    config.redis.mode = Mode::Private;
    config.max_private_servers = 0;
    let mut agent = agent(config).await;
    let status = agent
        .client
        .provision(request(
            "run-limit",
            BackingServiceKind::Redis,
            &[],
            dir.path().to_str().unwrap(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.metadata().get("retry-after").is_some());
}
