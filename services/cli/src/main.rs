//! `reporunner`: run every Repo Runner service in one process, or one of them,
//! and talk to them from the command line.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use reporunner::{
    ServiceName, Settings,
    account::{self, ClientArgs, PasswordArgs, UsersCommand},
    output, start_node,
};
use reporunner_env_detector::{DetectOptions, Detector, EnvDetector as _, platform::parse_platform_name};
use reporunner_proto::{
    agents::env_detector::v1::DetectResponse,
    common::v1::Platform,
    orchestrator::v1::{
        GetEnvironmentRequest, GetRecommendationsRequest,
        orchestrator_service_client::OrchestratorServiceClient,
    },
};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "reporunner",
    version,
    about = "Take any repository and get it running, with no human in the loop."
)]
struct Cli {
    /// A TOML settings file (lowest precedence after defaults; then REPORUNNER_* env, then flags).
    #[arg(long, global = true, env = "REPORUNNER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Host services: all of them (embedded, the default) or the ones named with --service.
    Serve(ServeArgs),
    /// Detect this host's platform, hardware, toolchains and registries.
    Env(EnvArgs),
    /// Take a repository to a running, health-checked app (embedded unless --server).
    Run(reporunner::run::RunArgs),
    /// List, inspect, follow and stop runs (embedded unless --server).
    Runs {
        #[command(subcommand)]
        command: reporunner::run::RunsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Index a run's workspace (or one of yours by id) for search (embedded unless --server).
    Index(reporunner::search::IndexArgs),
    /// Search an indexed workspace: `path:line` hits with snippets (embedded unless --server).
    Search(reporunner::search::SearchArgs),
    /// Embedding models of this host (`<data>/models`): list, or fetch one from the hub.
    Models {
        #[command(subcommand)]
        command: Option<reporunner::search::ModelsCommand>,
        /// `table` for people, `json` for a list of objects.
        #[arg(long, short, value_enum, default_value = "table")]
        output: reporunner::account::Output,
    },
    /// Decide how to run a repository (offline, in this process): a directory,
    /// an archive (.tar, .tar.gz, .zip) or a git URL.
    Analyze(AnalyzeArgs),
    /// Create an account on a server and log in.
    Register {
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Log in and store the tokens (mode 0600) in your config directory.
    Login {
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke the stored login and forget it.
    Logout {
        /// Revoke every login of this account, on every machine.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Who the stored login is.
    Whoami {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Metered requests, runs, agent calls and searches: yours, or (admin) anyone's.
    Usage {
        /// A username or id (admin only).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What your tier allows; with --all, what every tier allows.
    Limits {
        /// Every tier's limits (needs no login).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Administration: the single admin, users and the audit log.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(clap::Args, Debug)]
struct AnalyzeArgs {
    /// A directory, an archive file or a git URL.
    repo: String,
    /// For a git URL: a branch, tag or commit.
    #[arg(long = "ref")]
    reference: Option<String>,
    /// `table` shows components, commands and evidence; `json` prints the RunPlan (proto3 JSON).
    #[arg(long, short, value_enum, default_value = "table")]
    output: OutputFormat,
    /// Print the plan as a dockerfile, devcontainer (devcontainer.json), procfile or json instead.
    #[arg(long, value_name = "FORMAT")]
    export: Option<String>,
    /// Do not look at this host's toolchains (versions then come from the repository alone).
    #[arg(long)]
    no_host: bool,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create the single admin in this host's data directory (no server needed).
    /// The password is prompted for (or read with --password-stdin) and never printed.
    Init {
        #[arg(long, default_value = "admin")]
        username: String,
        /// Where all state lives [env: REPORUNNER_DATA_DIR]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Manage users (admin only).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Admin actions and security events, newest first (admin only).
    Audit {
        /// Only events about this username or id.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(clap::Args, Debug, Serialize)]
struct ServeArgs {
    /// gRPC address [env: REPORUNNER_LISTEN] [default: 127.0.0.1:50051]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Prometheus /metrics address [env: REPORUNNER_METRICS_LISTEN] [default: 127.0.0.1:9464]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<SocketAddr>,
    /// Where all state lives [env: REPORUNNER_DATA_DIR]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// Host only this service (repeatable); the others are reached at `endpoints.*`.
    #[arg(long = "service", value_name = "NAME")]
    #[serde(skip)]
    services: Vec<ServiceName>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(clap::Args, Debug)]
struct EnvArgs {
    /// `table` for people, `json` for the proto3 JSON mapping of DetectResponse.
    #[arg(long, short, value_enum, default_value = "table")]
    output: OutputFormat,
    /// Report this platform instead of the detected one: local, container, kubernetes, colab, aws, gcp, azure.
    #[arg(long)]
    platform: Option<String>,
    /// Do not probe package registries.
    #[arg(long)]
    skip_registries: bool,
    /// Ask a running server's orchestrator (e.g. http://127.0.0.1:50051) instead of detecting in-process.
    #[arg(long, env = "REPORUNNER_SERVER")]
    server: Option<String>,
    /// The access token for --server (from AuthService/Login).
    #[arg(long, env = "REPORUNNER_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `message` with `authorization: Bearer <token>` when a token is given.
fn with_token<T>(message: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("the token is not valid metadata"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<Degraded>().is_some() => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(reporunner::run::DEGRADED_EXIT)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(cli.config, args).await,
        Command::Env(args) => env(cli.config, args).await,
        Command::Analyze(args) => analyze(cli.config, args).await,
        Command::Run(args) => run_command(cli.config, args).await,
        Command::Index(args) => {
            let settings = quiet_settings(cli.config.as_deref(), args.client.server.is_none())?;
            reporunner::search::index(&settings, args).await
        }
        Command::Search(args) => {
            let settings = quiet_settings(cli.config.as_deref(), args.client.server.is_none())?;
            reporunner::search::search(&settings, args).await
        }
        Command::Models { command, output } => {
            let settings = quiet_settings(cli.config.as_deref(), true)?;
            let command = command.unwrap_or(reporunner::search::ModelsCommand::List);
            reporunner::search::models(&settings, command, output).await
        }
        Command::Runs { command, client } => {
            #[derive(Serialize)]
            struct NoFlags {}
            let settings: Settings = reporunner_server::config::load(cli.config.as_deref(), &NoFlags {})?;
            if client.server.is_none() {
                reporunner_server::telemetry::init(&reporunner_server::telemetry::LogConfig {
                    level: "error".into(),
                    ..settings.log.clone()
                });
            }
            reporunner::run::runs(&settings, client.server, client.output, command).await
        }
        Command::Register {
            username,
            password,
            client,
        } => account::register(&client, &username, &password).await,
        Command::Login {
            username,
            password,
            client,
        } => account::login(&client, &username, &password).await,
        Command::Logout { all, client } => account::logout(&client, all).await,
        Command::Whoami { client } => account::whoami(&client).await,
        Command::Usage { user, client } => account::usage(&client, user.as_deref()).await,
        Command::Limits { all, client } => account::limits(&client, all).await,
        Command::Admin { command } => match command {
            AdminCommand::Init {
                username,
                data_dir,
                password,
            } => admin_init(cli.config, username, data_dir, password).await,
            AdminCommand::Users { command, client } => account::admin_users(&client, command).await,
            AdminCommand::Audit { user, limit, client } => {
                account::admin_audit(&client, user.as_deref(), limit).await
            }
        },
    }
}

/// The settings, with the embedded services logging errors only (unless
/// RUST_LOG) when `embedded`.
fn quiet_settings(config: Option<&std::path::Path>, embedded: bool) -> anyhow::Result<Settings> {
    #[derive(Serialize)]
    struct NoFlags {}
    let settings: Settings = reporunner_server::config::load(config, &NoFlags {})?;
    if embedded {
        reporunner_server::telemetry::init(&reporunner_server::telemetry::LogConfig {
            level: "error".into(),
            ..settings.log.clone()
        });
    }
    Ok(settings)
}

/// A run that ended DEGRADED: exit code 3.
#[derive(Debug)]
struct Degraded;

impl std::fmt::Display for Degraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run is degraded: some components are down (see above)")
    }
}

impl std::error::Error for Degraded {}

/// `reporunner run`: exit code 0 when the run reached its goal, 3 when it
/// ended DEGRADED (some components up, others down), else 1.
async fn run_command(config: Option<PathBuf>, args: reporunner::run::RunArgs) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct NoFlags {}
    let settings: Settings = reporunner_server::config::load(config.as_deref(), &NoFlags {})?;
    if args.server.is_none() {
        // Embedded: the services log to stderr only when asked (RUST_LOG).
        reporunner_server::telemetry::init(&reporunner_server::telemetry::LogConfig {
            level: "error".into(),
            ..settings.log.clone()
        });
    }
    match reporunner::run::run(&settings, args).await? {
        reporunner::run::Outcome::Reached => Ok(()),
        reporunner::run::Outcome::Degraded => Err(Degraded.into()),
        reporunner::run::Outcome::Missed => anyhow::bail!("the run did not reach its goal"),
    }
}

/// `reporunner analyze`.
async fn analyze(config: Option<PathBuf>, args: AnalyzeArgs) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct NoFlags {}
    let settings: Settings = reporunner_server::config::load(config.as_deref(), &NoFlags {})?;
    let export = args
        .export
        .as_deref()
        .map(reporunner::analyze::export_format)
        .transpose()?;
    let target = reporunner::analyze::parse_target(&args.repo, args.reference.as_deref())?;
    let plan = reporunner::analyze::analyze(&settings, target, !args.no_host).await?;
    if let Some(format) = export {
        let file = reporunner_analyzer::export_plan(&plan, format).map_err(|e| anyhow::anyhow!("{e}"))?;
        print!("{}", file.content);
        if !file.content.ends_with('\n') {
            println!();
        }
        return Ok(());
    }
    match args.output {
        OutputFormat::Json => println!("{}", reporunner_proto::json::to_string_pretty(&plan)?),
        OutputFormat::Table => print!("{}", output::plan(&plan)),
    }
    Ok(())
}

/// `reporunner admin init`: creates the admin in the configured auth store.
async fn admin_init(
    config: Option<PathBuf>,
    username: String,
    data_dir: Option<PathBuf>,
    password: PasswordArgs,
) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        data_dir: Option<PathBuf>,
    }
    let settings: Settings = reporunner_server::config::load(config.as_deref(), &Flags { data_dir })?;
    let auth = reporunner_node::open_auth(&settings).await?;
    if let Some(admin) = auth
        .store()
        .find_admin()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the auth database: {e}"))?
    {
        anyhow::bail!(
            "the admin already exists (`{}`); there is exactly one admin",
            admin.username
        );
    }
    let password = account::read_password(&password, "Admin password: ", true)?;
    let admin = auth
        .ensure_admin(&username, &password)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the admin `{username}`: {e}"))?;
    println!(
        "created the admin `{}` in {}",
        admin.username,
        settings.data_dir.display()
    );
    Ok(())
}

async fn serve(config: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<()> {
    let settings: Settings = reporunner_server::config::load(config.as_deref(), &args)?;
    reporunner_server::telemetry::init(&settings.log);
    reporunner_auth::files::create_private_dir(&settings.data_dir)
        .with_context(|| format!("cannot create the data directory {}", settings.data_dir.display()))?;
    let services = if args.services.is_empty() {
        ServiceName::ALL.to_vec()
    } else {
        args.services.clone()
    };
    let shutdown = reporunner_server::shutdown::on_signal();

    let metrics = match settings.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            reporunner_server::metrics::recorder();
            Some(tokio::spawn(reporunner_server::metrics::serve_metrics(
                listener,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let node = start_node(&settings, &services, listener, shutdown).await?;
    let names: Vec<&str> = node.services.iter().map(|s| s.as_str()).collect();
    tracing::info!(
        addr = %node.addr,
        internal_addr = %node.internal_addr,
        data_dir = %settings.data_dir.display(),
        services = ?names,
        "reporunner serving"
    );
    node.wait().await?;
    if let Some(metrics) = metrics {
        metrics
            .await
            .context("metrics task panicked")?
            .context("metrics endpoint failed")?;
    }
    Ok(())
}

async fn env(config: Option<PathBuf>, args: EnvArgs) -> anyhow::Result<()> {
    let platform = match &args.platform {
        Some(name) => parse_platform_name(name).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Platform::Unspecified,
    };
    let response = match &args.server {
        Some(server) => {
            let mut session = reporunner::session::Session::open(Some(server.clone()))?;
            let token = match &args.token {
                Some(token) => token.clone(),
                None => session.access_token().await?,
            };
            let channel = session
                .channel(reporunner_proto::orchestrator::v1::orchestrator_service_server::SERVICE_NAME)
                .await?;
            let mut client = OrchestratorServiceClient::new(channel);
            let token = Some(token);
            let environment = client
                .get_environment(with_token(
                    GetEnvironmentRequest {
                        platform_override: platform as i32,
                        skip_registries: args.skip_registries,
                        refresh: false,
                    },
                    token.as_deref(),
                )?)
                .await
                .map_err(|s| anyhow::anyhow!("GetEnvironment: {}", s.message()))?
                .into_inner()
                .environment;
            let recommendations = client
                .get_recommendations(with_token(
                    GetRecommendationsRequest {
                        platform_override: platform as i32,
                    },
                    token.as_deref(),
                )?)
                .await
                .map_err(|s| anyhow::anyhow!("GetRecommendations: {}", s.message()))?
                .into_inner()
                .recommendations;
            DetectResponse {
                environment,
                recommendations,
            }
        }
        None => {
            #[derive(Serialize)]
            struct NoFlags {}
            let settings: Settings = reporunner_server::config::load(config.as_deref(), &NoFlags {})?;
            let detector = Arc::new(Detector::new(settings.env_detector));
            let options = DetectOptions {
                platform_override: (platform != Platform::Unspecified).then_some(platform),
                skip_registries: args.skip_registries,
                refresh: false,
            };
            let (environment, recommendations) = detector
                .detect(options)
                .await
                .map_err(|e| anyhow::anyhow!("detection failed: {e}"))?;
            DetectResponse {
                environment: Some(environment),
                recommendations: Some(recommendations),
            }
        }
    };
    match args.output {
        OutputFormat::Json => println!("{}", reporunner_proto::json::to_string_pretty(&response)?),
        OutputFormat::Table => print!(
            "{}",
            output::environment(
                &response.environment.unwrap_or_default(),
                response.recommendations.as_ref()
            )
        ),
    }
    Ok(())
}
