//! The provisioner agent: the backing services a component needs for one
//! run, and their removal.
//!
//! - PostgreSQL: a private database and role on a reachable server
//!   ([`config::PostgresConfig::admin_url`]), or a private cluster started with
//!   `initdb`/`pg_ctl` in the run's directory ([`postgres`]).
//! - Redis: a claimed logical database of a reachable server, or a private
//!   `redis-server` ([`redis`]).
//! - MySQL/MariaDB: a private server when installed ([`mysql`]).
//! - MongoDB, RabbitMQ: FAILED_PRECONDITION.
//!
//! What was created is recorded per run before it is created ([`state`]), so
//! Release removes it, after an agent restart too. The domain lives behind
//! [`Provisioner`] ([`LocalProvisioner`] implements it); [`grpc`] is a thin
//! adapter.
#![forbid(unsafe_code)]

pub mod config;
pub mod env;
pub mod error;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod host;
pub mod metrics;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod state;

use std::{
    collections::HashMap,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

pub use config::{Mode, ProvisionerConfig};
pub use error::{ProvisionError, Result};
use reporunner_proto::{
    agents::provisioner::v1::{ProvisionMode, ProvisionRequest, ProvisionResponse},
    common::v1::{BackingService, BackingServiceKind},
};
use state::{Detail, Resource, RunState, StateStore};
use tracing::Instrument as _;

/// Resource ids named in one Release, and the length of each.
const MAX_RELEASE_IDS: usize = 64;
const MAX_RESOURCE_ID: usize = 64;

/// The provisioner agent's domain.
pub trait Provisioner: Send + Sync + 'static {
    /// Supplies one backing service for a run.
    fn provision(&self, request: ProvisionRequest) -> impl Future<Output = Result<ProvisionResponse>> + Send;

    /// Removes the named resources of a run (all of them when `resource_ids`
    /// is empty) and returns those removed by this call. Unknown ids are
    /// ignored, so a repeated Release succeeds with nothing released.
    fn release(
        &self,
        run_id: &str,
        resource_ids: &[String],
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// Provisions on this host and the servers it reaches.
#[derive(Debug)]
pub struct LocalProvisioner {
    config: Arc<ProvisionerConfig>,
    state: StateStore,
    pg_admin: tokio_postgres::Config,
    redis_host: String,
    redis_port: u16,
    /// Provision and Release run one at a time: state files are read,
    /// changed and written under it, and the private server count holds.
    lock: tokio::sync::Mutex<()>,
}

/// What a provision made: how, and the env vars to hand to the app.
struct Created {
    mode: ProvisionMode,
    env: HashMap<String, String>,
}

impl LocalProvisioner {
    /// `config` must be resolved ([`ProvisionerConfig::resolve`]).
    pub fn new(config: ProvisionerConfig) -> Result<Self> {
        config.validate()?;
        metrics::describe();
        let pg_admin = postgres::parse_admin_url(&config.postgres.admin_url)
            .ok_or_else(|| ProvisionError::InvalidConfig("postgres.admin_url".into()))?;
        let (redis_host, redis_port) = redis::parse_url(&config.redis.url)
            .ok_or_else(|| ProvisionError::InvalidConfig("redis.url".into()))?;
        Ok(Self {
            state: StateStore::new(config.state_dir.clone()),
            config: Arc::new(config),
            pg_admin,
            redis_host,
            redis_port,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &ProvisionerConfig {
        &self.config
    }

    async fn reserve_private(&self) -> Result<()> {
        let running = self.state.count_private_servers().await?;
        if running >= self.config.max_private_servers {
            return Err(ProvisionError::TooMany(format!(
                "{running} private servers are running, the most this agent allows"
            )));
        }
        Ok(())
    }

    /// Records `resource` in the run's state before it is created.
    async fn record(&self, state: &mut RunState, resource: Resource) -> Result<()> {
        state.resources.push(resource);
        self.state.save(state).await
    }

    /// Forgets `id` after its creation failed and was undone.
    async fn forget(&self, state: &mut RunState, id: &str) -> Result<()> {
        state.resources.retain(|r| r.id != id);
        self.state.save(state).await
    }

    async fn provision_postgres(
        &self,
        state: &mut RunState,
        service: &BackingService,
        run_dir: Option<&Path>,
    ) -> Result<(String, Created)> {
        let timeout = self.config.query_timeout();
        let wanted = host::major_version(&service.version);
        let admin = match self.config.postgres.mode {
            Mode::Private => None,
            Mode::Reuse => Some(postgres::connect(&self.pg_admin, self.config.connect_timeout()).await?),
            Mode::Auto => match postgres::connect(&self.pg_admin, self.config.connect_timeout()).await {
                Ok(client) => Some(client),
                Err(e) => {
                    tracing::warn!(error = %e, "shared postgresql not usable; starting a private one");
                    None
                }
            },
        };
        let name = env::object_name(&state.run_id, &env::random_hex(3));
        let password = env::random_hex(16);
        let id = format!("pg-{}", env::random_hex(4));

        if let Some(admin) = admin {
            let version = postgres::major_of(postgres::server_version(&admin, timeout).await?);
            if let Some(wanted) = wanted
                && wanted != version
            {
                tracing::warn!(
                    wanted,
                    server = version,
                    "reusing a postgresql server of another major version"
                );
            }
            let detail = Detail::PostgresReused {
                database: name.clone(),
                role: name.clone(),
            };
            self.record(
                state,
                Resource {
                    id: id.clone(),
                    detail,
                },
            )
            .await?;
            if let Err(e) = postgres::create_database(&admin, &name, &password, timeout).await {
                // Forgotten only once undone; otherwise Release retries it.
                if postgres::drop_database(&admin, &name, &name, timeout)
                    .await
                    .is_ok()
                {
                    self.forget(state, &id).await?;
                }
                return Err(e);
            }
            let (host, port) = postgres::host_port(&self.pg_admin);
            let env = postgres::connection(host, port, &name, &password).env(&service.env_vars);
            return Ok((
                id,
                Created {
                    mode: ProvisionMode::Reused,
                    env: env.into_iter().collect(),
                },
            ));
        }

        let run_dir = require_run_dir(
            run_dir,
            "the shared PostgreSQL server is not used (unreachable or mode = private), and a private one",
        )?;
        self.reserve_private().await?;
        let (bin_dir, found) = host::blocking(move || postgres::find_bin_dir(wanted))
            .await?
            .ok_or_else(|| {
                ProvisionError::NotAvailable(
                    "no PostgreSQL server is reachable and initdb/pg_ctl are not installed on this host"
                        .into(),
                )
            })?;
        if let (Some(wanted), Some(found)) = (wanted, found)
            && wanted != found
        {
            tracing::warn!(
                wanted,
                installed = found,
                "no installed postgresql of the wanted major version"
            );
        }
        let user = self.config.postgres.private_user.clone();
        let account = host::blocking(move || host::account_for(&user, "PostgreSQL")).await??;
        let port = host::free_port()?;
        let dir = resource_dir(run_dir, &id);
        let detail = Detail::PostgresPrivate {
            dir: dir.clone(),
            bin_dir: bin_dir.clone(),
            port,
            user: account.as_ref().map(|a| a.name.clone()),
        };
        self.record(
            state,
            Resource {
                id: id.clone(),
                detail,
            },
        )
        .await?;
        let start = async {
            postgres::start_private(
                &dir,
                &bin_dir,
                account.as_ref(),
                port,
                self.config.start_timeout(),
            )
            .await?;
            let mut admin = tokio_postgres::Config::new();
            admin
                .host("127.0.0.1")
                .port(port)
                .user("postgres")
                .dbname("postgres");
            let client = postgres::connect(&admin, self.config.connect_timeout()).await?;
            postgres::create_database(&client, &name, &password, timeout).await
        };
        if let Err(e) = start.await {
            if let Err(undo) =
                postgres::stop_private(&dir, &bin_dir, account.as_ref(), self.config.start_timeout()).await
            {
                tracing::warn!(error = %undo, "stopping a half-started postgresql failed");
            } else {
                self.forget(state, &id).await?;
            }
            return Err(e);
        }
        let env = postgres::connection("127.0.0.1".into(), port, &name, &password).env(&service.env_vars);
        Ok((
            id,
            Created {
                mode: ProvisionMode::Started,
                env: env.into_iter().collect(),
            },
        ))
    }

    async fn provision_redis(
        &self,
        state: &mut RunState,
        service: &BackingService,
        run_dir: Option<&Path>,
    ) -> Result<(String, Created)> {
        let (host, port) = (self.redis_host.as_str(), self.redis_port);
        let connect = || redis::RespClient::connect(host, port, self.config.connect_timeout());
        let client = match self.config.redis.mode {
            Mode::Private => None,
            Mode::Reuse => Some(connect().await?),
            Mode::Auto => match connect().await {
                Ok(client) => Some(client),
                Err(e) => {
                    tracing::warn!(error = %e, "shared redis not reachable; starting a private one");
                    None
                }
            },
        };
        let id = format!("redis-{}", env::random_hex(4));
        if let Some(mut client) = client {
            let version = redis::server_version(&mut client).await?;
            if let Some(wanted) = host::major_version(&service.version)
                && host::major_version(&version) != Some(wanted)
            {
                tracing::warn!(
                    wanted,
                    server = version,
                    "reusing a redis server of another major version"
                );
            }
            let owner = format!("{}/{id}", state.run_id);
            let db = redis::claim_db(
                &mut client,
                &owner,
                self.config.redis.first_db,
                self.config.redis.last_db,
            )
            .await?;
            let detail = Detail::RedisReused {
                host: host.to_owned(),
                port,
                db,
            };
            if let Err(e) = self
                .record(
                    state,
                    Resource {
                        id: id.clone(),
                        detail,
                    },
                )
                .await
            {
                let _ = redis::release_db(&mut client, db, &owner).await;
                return Err(e);
            }
            let env = redis::connection(host.to_owned(), port, db).env(&service.env_vars);
            return Ok((
                id,
                Created {
                    mode: ProvisionMode::Reused,
                    env: env.into_iter().collect(),
                },
            ));
        }

        let run_dir = require_run_dir(
            run_dir,
            "the shared Redis server is not used (unreachable or mode = private), and a private one",
        )?;
        self.reserve_private().await?;
        let binary = host::blocking(redis::find_server).await?.ok_or_else(|| {
            ProvisionError::NotAvailable(
                "no Redis server is reachable and redis-server is not installed on this host".into(),
            )
        })?;
        let port = host::free_port()?;
        let dir = resource_dir(run_dir, &id);
        self.record(
            state,
            Resource {
                id: id.clone(),
                detail: Detail::RedisPrivate {
                    dir: dir.clone(),
                    port,
                },
            },
        )
        .await?;
        if let Err(e) = redis::start_private(&binary, &dir, port, self.config.start_timeout()).await {
            if redis::stop_private(&dir, port, self.config.start_timeout())
                .await
                .is_ok()
            {
                self.forget(state, &id).await?;
            }
            return Err(e);
        }
        let env = redis::connection("127.0.0.1".into(), port, 0).env(&service.env_vars);
        Ok((
            id,
            Created {
                mode: ProvisionMode::Started,
                env: env.into_iter().collect(),
            },
        ))
    }

    async fn provision_mysql(
        &self,
        state: &mut RunState,
        service: &BackingService,
        run_dir: Option<&Path>,
    ) -> Result<(String, Created)> {
        let binaries = host::blocking(mysql::find_binaries).await??;
        let run_dir = require_run_dir(run_dir, "a private MySQL server")?;
        self.reserve_private().await?;
        let user = self.config.mysql.private_user.clone();
        let account = host::blocking(move || host::account_for(&user, "MySQL")).await??;
        let name = env::object_name(&state.run_id, &env::random_hex(3));
        let password = env::random_hex(16);
        let id = format!("mysql-{}", env::random_hex(4));
        let port = host::free_port()?;
        let dir = resource_dir(run_dir, &id);
        let detail = Detail::MysqlPrivate {
            dir: dir.clone(),
            port,
            user: account.as_ref().map(|a| a.name.clone()),
        };
        self.record(
            state,
            Resource {
                id: id.clone(),
                detail,
            },
        )
        .await?;
        let timeout = self.config.start_timeout();
        if let Err(e) =
            mysql::start_private(&binaries, &dir, account.as_ref(), port, &name, &password, timeout).await
        {
            if mysql::stop_private(&dir, timeout).await.is_ok() {
                self.forget(state, &id).await?;
            }
            return Err(e);
        }
        let env = mysql::connection(port, &name, &password).env(&service.env_vars);
        Ok((
            id,
            Created {
                mode: ProvisionMode::Started,
                env: env.into_iter().collect(),
            },
        ))
    }

    /// Removes one resource; removing what is gone already succeeds.
    async fn remove(&self, run_id: &str, resource: &Resource) -> Result<()> {
        let timeout = self.config.start_timeout();
        match &resource.detail {
            Detail::PostgresReused { database, role } => {
                let admin = postgres::connect(&self.pg_admin, self.config.connect_timeout()).await?;
                postgres::drop_database(&admin, database, role, self.config.query_timeout()).await
            }
            Detail::PostgresPrivate {
                dir, bin_dir, user, ..
            } => {
                let account = match user {
                    Some(name) => {
                        let name = name.clone();
                        host::blocking(move || host::account_for(&name, "PostgreSQL")).await??
                    }
                    None => None,
                };
                postgres::stop_private(dir, bin_dir, account.as_ref(), timeout).await
            }
            Detail::RedisReused { host, port, db } => {
                let mut client =
                    redis::RespClient::connect(host, *port, self.config.connect_timeout()).await?;
                let owner = format!("{run_id}/{}", resource.id);
                if !redis::release_db(&mut client, *db, &owner).await? {
                    tracing::warn!(db, "redis database claim is gone or not ours; left alone");
                }
                Ok(())
            }
            Detail::RedisPrivate { dir, port } => redis::stop_private(dir, *port, timeout).await,
            Detail::MysqlPrivate { dir, .. } => mysql::stop_private(dir, timeout).await,
        }
    }
}

/// `<run_dir>/provisioner/<resource id>`.
fn resource_dir(run_dir: &Path, id: &str) -> PathBuf {
    run_dir.join("provisioner").join(id)
}

fn require_run_dir<'a>(run_dir: Option<&'a Path>, what: &str) -> Result<&'a Path> {
    run_dir.ok_or_else(|| {
        ProvisionError::InvalidRequest(format!("{what} needs run_dir (the run's private directory)"))
    })
}

/// `run_dir` is empty or an absolute path without `..`.
fn validate_run_dir(run_dir: &str) -> Result<Option<&Path>> {
    if run_dir.is_empty() {
        return Ok(None);
    }
    let path = Path::new(run_dir);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) || run_dir.len() > 4096 {
        return Err(ProvisionError::InvalidRequest(
            "run_dir must be an absolute path without `..`".into(),
        ));
    }
    Ok(Some(path))
}

/// The checks of a Provision request made before any state is read: the
/// run id, its directory and the service's variable names.
fn check_provision(request: &ProvisionRequest) -> Result<(Option<&Path>, &BackingService)> {
    env::validate_run_id(&request.run_id)?;
    let run_dir = validate_run_dir(&request.run_dir)?;
    let service = request
        .service
        .as_ref()
        .ok_or_else(|| ProvisionError::InvalidRequest("service is missing".into()))?;
    env::validate_env_names(&service.env_vars)?;
    Ok((run_dir, service))
}

/// The checks of a Release request.
fn check_release(run_id: &str, resource_ids: &[String]) -> Result<()> {
    env::validate_run_id(run_id)?;
    if resource_ids.len() > MAX_RELEASE_IDS {
        return Err(ProvisionError::InvalidRequest(format!(
            "at most {MAX_RELEASE_IDS} resource_ids"
        )));
    }
    if let Some(bad) = resource_ids
        .iter()
        .find(|id| id.is_empty() || id.len() > MAX_RESOURCE_ID)
    {
        return Err(ProvisionError::InvalidRequest(format!(
            "resource id `{}` must be 1 to {MAX_RESOURCE_ID} characters",
            bad.chars().take(MAX_RESOURCE_ID).collect::<String>()
        )));
    }
    Ok(())
}

fn mode_label(mode: ProvisionMode) -> &'static str {
    match mode {
        ProvisionMode::Unspecified => "none",
        ProvisionMode::Reused => "reused",
        ProvisionMode::Started => "started",
    }
}

fn kind_name(kind: BackingServiceKind) -> &'static str {
    match kind {
        BackingServiceKind::Unspecified => "unspecified",
        BackingServiceKind::Postgresql => "postgresql",
        BackingServiceKind::Mysql => "mysql",
        BackingServiceKind::Redis => "redis",
        BackingServiceKind::Mongodb => "mongodb",
        BackingServiceKind::Rabbitmq => "rabbitmq",
    }
}

/// MongoDB and RabbitMQ are not supplied: say whether the server is even there.
fn not_supplied(what: &str, binary: &str) -> ProvisionError {
    if host::find_binary(&[binary], &[]).is_some() {
        ProvisionError::NotAvailable(format!(
            "{what} is installed ({binary}) but this provisioner does not start it; supply it yourself"
        ))
    } else {
        ProvisionError::NotAvailable(format!(
            "{what} is not available on this host ({binary} is not installed)"
        ))
    }
}

impl Provisioner for LocalProvisioner {
    async fn provision(&self, request: ProvisionRequest) -> Result<ProvisionResponse> {
        let (run_dir, service) = check_provision(&request)?;
        let kind = BackingServiceKind::try_from(service.kind).unwrap_or(BackingServiceKind::Unspecified);
        let span = tracing::info_span!("provision", run_id = %request.run_id, kind = kind_name(kind));
        async {
            let result = async {
                if service.version.len() > 128 {
                    return Err(ProvisionError::InvalidRequest("version is longer than 128 characters".into()));
                }
                match kind {
                    BackingServiceKind::Unspecified => {
                        return Err(ProvisionError::InvalidRequest("service.kind is unspecified".into()));
                    }
                    BackingServiceKind::Mongodb => return Err(not_supplied("MongoDB", "mongod")),
                    BackingServiceKind::Rabbitmq => return Err(not_supplied("RabbitMQ", "rabbitmq-server")),
                    BackingServiceKind::Postgresql | BackingServiceKind::Mysql | BackingServiceKind::Redis => {}
                }
                let _guard = self.lock.lock().await;
                let mut state = self.state.load(&request.run_id).await?;
                if state.resources.len() >= self.config.max_resources_per_run {
                    return Err(ProvisionError::TooMany(format!(
                        "run `{}` holds {} resources, the most this agent allows",
                        request.run_id,
                        state.resources.len()
                    )));
                }
                match kind {
                    BackingServiceKind::Postgresql => self.provision_postgres(&mut state, service, run_dir).await,
                    BackingServiceKind::Redis => self.provision_redis(&mut state, service, run_dir).await,
                    BackingServiceKind::Mysql => self.provision_mysql(&mut state, service, run_dir).await,
                    BackingServiceKind::Unspecified | BackingServiceKind::Mongodb | BackingServiceKind::Rabbitmq => {
                        Err(ProvisionError::InvalidRequest("unsupported kind".into()))
                    }
                }
            }
            .await;
            let (status, mode) = match &result {
                Ok((_, created)) => ("ok", mode_label(created.mode)),
                Err(_) => ("error", "none"),
            };
            ::metrics::counter!(metrics::PROVISIONS_TOTAL, "kind" => kind_name(kind), "mode" => mode, "status" => status)
                .increment(1);
            let (resource_id, created) = result?;
            tracing::info!(resource_id, mode = mode_label(created.mode), "provisioned");
            Ok(ProvisionResponse {
                resource_id,
                mode: created.mode as i32,
                env: created.env,
            })
        }
        .instrument(span)
        .await
    }

    async fn release(&self, run_id: &str, resource_ids: &[String]) -> Result<Vec<String>> {
        check_release(run_id, resource_ids)?;
        let span = tracing::info_span!("release", run_id = %run_id);
        async {
            let _guard = self.lock.lock().await;
            let mut state = self.state.load(run_id).await?;
            let targets: Vec<Resource> = state
                .resources
                .iter()
                .filter(|r| resource_ids.is_empty() || resource_ids.contains(&r.id))
                .cloned()
                .collect();
            let mut released = Vec::new();
            let mut first_error = None;
            for resource in targets {
                let outcome = self.remove(run_id, &resource).await;
                let status = if outcome.is_ok() { "ok" } else { "error" };
                ::metrics::counter!(metrics::RELEASES_TOTAL, "kind" => resource.detail.kind(), "status" => status)
                    .increment(1);
                match outcome {
                    Ok(()) => {
                        tracing::info!(resource_id = resource.id, kind = resource.detail.kind(), "released");
                        state.resources.retain(|r| r.id != resource.id);
                        self.state.save(&state).await?;
                        released.push(resource.id);
                    }
                    Err(e) => {
                        tracing::warn!(resource_id = resource.id, error = %e, "release failed; kept for a retry");
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(released),
            }
        }
        .instrument(span)
        .await
    }
}
