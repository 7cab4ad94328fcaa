//! `reporunner`: run every Repo Runner service in one process, or one of them,
//! and talk to them from the command line.
#![forbid(unsafe_code)]

/// See the workspace's `mimalloc` entry for why not the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use reporunner::{
    ServiceName, Settings,
    account::{self, ClientArgs, PasswordArgs, UsersCommand},
    output,
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

/// What each exit code means; shown at the end of `reporunner --help`.
const EXIT_CODES: &str = "\
Exit codes:
  0    done: the goal was reached, the command did what it says
  1    failed: the run did not reach its goal, or another error (the message says which)
  2    the command line is wrong
  3    the run is degraded: some components run, others are down
  4    not logged in, or the login expired: run `reporunner login`
  5    the server cannot be reached (the message names its address)
  6    a git host cannot be reached (the message names the host)
  130  stopped with Ctrl-C

Files:
  settings   $XDG_CONFIG_HOME/reporunner/config.toml (else ~/.config/...), or --config
  data       $XDG_DATA_HOME/reporunner (else ~/.local/share/reporunner), or --data-dir;
             the first process on a data dir owns it, the others talk to it
             through its control socket (reporunner.sock)";

#[derive(Parser, Debug)]
#[command(
    name = "reporunner",
    version,
    about = "Take any repository and get it running, with no human in the loop.",
    after_help = EXIT_CODES,
    after_long_help = EXIT_CODES
)]
struct Cli {
    /// A TOML settings file (default: $XDG_CONFIG_HOME/reporunner/config.toml
    /// when it exists; then REPORUNNER_* env, then flags).
    #[arg(long, global = true, env = "REPORUNNER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where all state lives [env: REPORUNNER_DATA_DIR] [default: ~/.local/share/reporunner]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print results and errors only: no progress, no notes.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print more: -v the embedded services' info logs, -vv debug logs.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Colour: on a terminal unless NO_COLOR is set (auto), always, or never.
    #[arg(long, global = true, value_enum, default_value = "auto", value_name = "WHEN")]
    color: reporunner::ui::ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Host services: all of them (embedded, the default) or the ones named with --service.
    #[command(
        after_help = "Examples:\n  reporunner serve\n  reporunner serve --listen 0.0.0.0:50051 --data-dir /srv/reporunner\n  REPORUNNER_ADMIN__USERNAME=admin REPORUNNER_ADMIN__PASSWORD=... reporunner serve"
    )]
    Serve(ServeArgs),
    /// Detect this host's platform, hardware, toolchains and registries.
    #[command(after_help = "Examples:\n  reporunner env\n  reporunner env --skip-registries -o json")]
    Env(EnvArgs),
    /// Take a repository to a running, health-checked app (on this machine unless --server).
    #[command(
        after_help = "Examples:\n  reporunner run .\n  reporunner run https://github.com/pallets/flask --goal test\n  reporunner run ./app.tar.gz --env SECRET_KEY=dev --logs\n  reporunner run . --tests --skip-agents provisioner\n  reporunner run . --explain"
    )]
    Run(reporunner::run::RunArgs),
    /// List, inspect, follow and stop runs (on this machine unless --server).
    #[command(
        after_help = "Examples:\n  reporunner runs list\n  reporunner runs show 3f2a\n  reporunner runs logs 3f2a --source web -f\n  reporunner runs logs 3f2a --sources\n  reporunner runs stop 3f2a\n\nA run id may be shortened to any prefix that names one run."
    )]
    Runs {
        #[command(subcommand)]
        command: reporunner::run::RunsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Index a run's workspace (or one of yours by id) for search (on this machine unless --server).
    #[command(after_help = "Examples:\n  reporunner index 3f2a\n  reporunner index 3f2a --mode hybrid")]
    Index(reporunner::search::IndexArgs),
    /// Search an indexed workspace: `path:line` hits with snippets (on this machine unless --server).
    #[command(
        after_help = "Examples:\n  reporunner search 'fn main'\n  reporunner search 'database url' --mode hybrid --limit 5"
    )]
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
    #[command(
        after_help = "Examples:\n  reporunner analyze .\n  reporunner analyze https://github.com/pallets/flask -o json\n  reporunner analyze . --export dockerfile > Dockerfile\n  reporunner analyze . --export compose > compose.yaml"
    )]
    Analyze(AnalyzeArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  reporunner completions bash > ~/.local/share/bash-completion/completions/reporunner\n  reporunner completions zsh > \"${fpath[1]}/_reporunner\"\n  reporunner completions fish > ~/.config/fish/completions/reporunner.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// Create an account on a server and log in.
    #[command(after_help = "Examples:\n  reporunner register ada --server https://rr.example")]
    Register {
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Log in and store the tokens (mode 0600) in your config directory.
    #[command(
        after_help = "Examples:\n  reporunner login ada --server https://rr.example\n  echo \"$PASSWORD\" | reporunner login ada --password-stdin"
    )]
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
    #[command(after_help = "Examples:\n  reporunner whoami\n  reporunner whoami -o json")]
    Whoami {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Metered requests, runs, agent calls and searches: yours, or (admin) anyone's.
    #[command(after_help = "Examples:\n  reporunner usage\n  reporunner usage --user ada")]
    Usage {
        /// A username or id (admin only).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What your tier allows; with --all, what every tier allows.
    #[command(after_help = "Examples:\n  reporunner limits\n  reporunner limits --all")]
    Limits {
        /// Every tier's limits (needs no login).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Administration: the single admin, users and the audit log.
    #[command(
        after_help = "Examples:\n  reporunner admin init --username admin\n  reporunner admin users list\n  reporunner admin users block ada --reason spam\n  reporunner admin audit --user ada"
    )]
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
    /// Print the plan as a dockerfile, compose (docker-compose.yml with its backing services),
    /// devcontainer (devcontainer.json), procfile or json instead. A library (nothing to start)
    /// has no dockerfile, compose or procfile: that is an error.
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
    /// On a data directory used with `reporunner run` before, the new admin takes over
    /// from the local owner, who stays as a Premium user.
    Init {
        #[arg(long, default_value = "admin")]
        username: String,
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
    reporunner::ui::Ui::new(cli.quiet, cli.verbose, cli.color).install();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let (code, shown) = reporunner::errors::exit_code(&err);
            if let Some(shown) = shown {
                eprintln!("{shown}");
            }
            std::process::ExitCode::from(code)
        }
    }
}

/// The global flags every command's settings start from.
struct Globals {
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
}

impl Globals {
    /// The settings: defaults < the config file (--config, else
    /// `$XDG_CONFIG_HOME/reporunner/config.toml` when it exists) <
    /// `REPORUNNER_*` < `flags` (with the global --data-dir).
    fn settings_with<F: Serialize>(&self, flags: &F) -> anyhow::Result<Settings> {
        #[derive(Serialize)]
        struct Merged<'a, F> {
            #[serde(flatten)]
            flags: &'a F,
            #[serde(skip_serializing_if = "Option::is_none")]
            data_dir: Option<&'a PathBuf>,
        }
        let file = self.config.clone().or_else(reporunner::ui::discovered_config);
        Ok(reporunner_server::config::load(
            file.as_deref(),
            &Merged {
                flags,
                data_dir: self.data_dir.as_ref(),
            },
        )?)
    }

    fn settings(&self) -> anyhow::Result<Settings> {
        #[derive(Serialize)]
        struct NoFlags {}
        self.settings_with(&NoFlags {})
    }

    /// [`Globals::settings`], with the services this process may host
    /// logging at the level -q/-v ask for (unless RUST_LOG).
    fn quiet_settings(&self) -> anyhow::Result<Settings> {
        let settings = self.settings()?;
        reporunner_server::telemetry::init(&reporunner_server::telemetry::LogConfig {
            level: reporunner::ui::get().log_level().into(),
            ..settings.log.clone()
        });
        Ok(settings)
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let globals = Globals {
        config: cli.config,
        data_dir: cli.data_dir,
    };
    match cli.command {
        Command::Serve(args) => serve(&globals, args).await,
        Command::Env(args) => env(&globals, args).await,
        Command::Analyze(args) => analyze(&globals, args).await,
        Command::Run(args) => run_command(&globals, args).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "reporunner", &mut script);
            reporunner::out!("{}", String::from_utf8_lossy(&script))?;
            Ok(())
        }
        Command::Index(args) => {
            let settings = globals.quiet_settings()?;
            reporunner::search::index(&settings, args).await
        }
        Command::Search(args) => {
            let settings = globals.quiet_settings()?;
            reporunner::search::search(&settings, args).await
        }
        Command::Models { command, output } => {
            let settings = globals.quiet_settings()?;
            let command = command.unwrap_or(reporunner::search::ModelsCommand::List);
            reporunner::search::models(&settings, command, output).await
        }
        Command::Runs { command, client } => {
            let settings = globals.quiet_settings()?;
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
            AdminCommand::Init { username, password } => admin_init(&globals, username, password).await,
            AdminCommand::Users { command, client } => account::admin_users(&client, command).await,
            AdminCommand::Audit { user, limit, client } => {
                account::admin_audit(&client, user.as_deref(), limit).await
            }
        },
    }
}

/// `reporunner run`: exit code 0 when the run reached its goal, 3 when it
/// ended DEGRADED (some components up, others down), 130 when stopped with
/// Ctrl-C, else 1 (see [`reporunner::errors`]).
async fn run_command(globals: &Globals, args: reporunner::run::RunArgs) -> anyhow::Result<()> {
    let settings = globals.quiet_settings()?;
    match reporunner::run::run(&settings, args).await? {
        reporunner::run::Outcome::Reached => Ok(()),
        reporunner::run::Outcome::Degraded => Err(reporunner::errors::Actionable::Degraded.into()),
        reporunner::run::Outcome::Interrupted => Err(reporunner::errors::Actionable::Interrupted.into()),
        reporunner::run::Outcome::HostUnreachable(error) => Err(error.into()),
        reporunner::run::Outcome::Missed => anyhow::bail!("the run did not reach its goal"),
    }
}

/// `reporunner analyze`.
async fn analyze(globals: &Globals, args: AnalyzeArgs) -> anyhow::Result<()> {
    let settings = globals.settings()?;
    let export = args
        .export
        .as_deref()
        .map(reporunner::analyze::export_format)
        .transpose()?;
    let target = reporunner::analyze::parse_target(&args.repo, args.reference.as_deref())?;
    let plan = reporunner::analyze::analyze(&settings, target, !args.no_host).await?;
    if let Some(format) = export {
        let file = reporunner_analyzer::export_plan(&plan, format).map_err(|e| anyhow::anyhow!("{e}"))?;
        reporunner::out!("{}", file.content)?;
        if !file.content.ends_with('\n') {
            reporunner::outln!()?;
        }
        return Ok(());
    }
    match args.output {
        OutputFormat::Json => reporunner::outln!("{}", reporunner_proto::json::to_string_pretty(&plan)?)?,
        OutputFormat::Table => reporunner::out!("{}", output::plan(&plan))?,
    }
    Ok(())
}

/// `reporunner admin init`: creates the admin in the configured auth store.
async fn admin_init(globals: &Globals, username: String, password: PasswordArgs) -> anyhow::Result<()> {
    let settings = globals.settings()?;
    let auth = reporunner_node::open_auth(&settings).await?;
    if let Some(admin) = auth
        .store()
        .find_admin()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the auth database: {e}"))?
    {
        // The local owner of `reporunner run` holds the admin tier until a
        // real admin takes over; another admin is never replaced.
        let local = auth
            .is_local_owner(&admin.id)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the auth database: {e}"))?;
        if !local {
            anyhow::bail!(
                "the admin already exists (`{}`); there is exactly one admin \
                 (it can manage users with `reporunner admin users`)",
                admin.username
            );
        }
    }
    let password = account::read_password(&password, "Admin password: ", true)?;
    let admin = auth
        .ensure_admin(&username, &password)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the admin `{username}`: {e}"))?;
    reporunner::outln!(
        "created the admin `{}` in {}",
        admin.username,
        settings.data_dir.display()
    )?;
    Ok(())
}

async fn serve(globals: &Globals, args: ServeArgs) -> anyhow::Result<()> {
    let settings = globals.settings_with(&args)?;
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
    // A node with the public services owns its data directory: the other
    // commands on it talk to this process through its control socket.
    let hosts_public = [ServiceName::Orchestrator, ServiceName::Auth]
        .iter()
        .all(|s| services.contains(s));
    let mut owned = if hosts_public {
        match reporunner::owner::claim(&settings.data_dir)? {
            reporunner::owner::DataDir::Owned(owned) => Some(owned),
            reporunner::owner::DataDir::Taken(owner) => anyhow::bail!(
                "{} is in use by {owner}; stop it first, or give this server another --data-dir",
                settings.data_dir.display()
            ),
        }
    } else {
        None
    };
    let options = reporunner_node::NodeOptions {
        control_socket: owned.as_ref().map(|o| o.bind_socket()).transpose()?,
        dashboard: reporunner::dashboard::assets(),
    };
    let node = reporunner_node::start_node_with(&settings, &services, listener, shutdown, options).await?;
    if let Some(owned) = &mut owned {
        owned.announce("serve", &format!("http://{}", node.addr))?;
    }
    let names: Vec<&str> = node.services.iter().map(|s| s.as_str()).collect();
    tracing::info!(
        addr = %node.addr,
        internal_addr = %node.internal_addr,
        data_dir = %settings.data_dir.display(),
        services = ?names,
        "reporunner serving"
    );
    node.wait().await?;
    drop(owned);
    if let Some(metrics) = metrics {
        metrics
            .await
            .context("metrics task panicked")?
            .context("metrics endpoint failed")?;
    }
    Ok(())
}

async fn env(globals: &Globals, args: EnvArgs) -> anyhow::Result<()> {
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
            let settings = globals.settings()?;
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
        OutputFormat::Json => reporunner::outln!("{}", reporunner_proto::json::to_string_pretty(&response)?)?,
        OutputFormat::Table => reporunner::out!(
            "{}",
            output::environment(
                &response.environment.unwrap_or_default(),
                response.recommendations.as_ref()
            )
        )?,
    }
    Ok(())
}
