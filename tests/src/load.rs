//! The load tool (`make load`, and a short run in `make bench`): N
//! concurrent users for T seconds through the orchestrator, with the mix a
//! team's users make, against a bare tonic echo server measured the same
//! way in the same run.
//!
//! The mesh is this process's own (a [`Sandbox`] of auth, env-detector,
//! source, analyzer, indexer and orchestrator on loopback), so that the
//! figures need no deployment; the load and the mesh share the machine's
//! cores, and so do the load and the echo server, which is what makes the
//! ratio fair.
//!
//! Each user is a premium account the admin creates, whose first run (in
//! the set-up, not timed) analyzes and indexes a small fixture. Its loop
//! then picks one call at a time by weight: GetRun, ListRuns, Search (text, on the index
//! its first run made), WatchRun (the replay of a finished run), CreateRun
//! (goal ANALYZE of the fixture), Refresh and Login. Metered calls (CreateRun, Search) stay within the
//! tier's hourly quota, and a user keeps at most two runs unfinished: a
//! call the user may not make now becomes a GetRun of its newest run, the
//! poll a real client would make instead. Every error counts, by code.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use reporunner_node::ServiceName;
use reporunner_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, RefreshRequest, admin_service_client::AdminServiceClient,
        auth_service_client::AuthServiceClient,
    },
    common::v1::{IndexMode, Tier},
    orchestrator::v1::{
        CreateRunRequest, GetRunRequest, ListRunsRequest, RepoSource, RunGoal, RunState, SearchRequest,
        WatchRunRequest, orchestrator_service_client::OrchestratorServiceClient, repo_source,
    },
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{Sandbox, fixtures_dir};

const ADMIN: &str = "load-admin";
const ADMIN_PASSWORD: &str = "quartz-harbor-lantern-41";
const PASSWORD: &str = "meadow-copper-signal-58";
/// The fixture every run analyzes (and the first one indexes).
const FIXTURE: &str = "run-flask";
/// A word the fixture's code holds.
const QUERY: &str = "hello";
/// Connections the users share, for the mesh and for the echo alike.
const CONNECTIONS: usize = 8;
/// Metered calls a user leaves unspent of its hourly quota.
const QUOTA_MARGIN: u32 = 5;
/// Users created and logged in at once during the set-up.
const SETUP_AT_ONCE: usize = 32;
/// How long a user's first run (analyze and index) may take in the set-up.
const SETUP_RUN_WITHIN: Duration = Duration::from_secs(600);
/// Runs a user keeps unfinished at most.
const MAX_UNFINISHED: usize = 2;
/// One call's deadline: a call past it counts as DEADLINE_EXCEEDED.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub users: usize,
    pub duration: Duration,
    /// How long the echo reference runs (the same users).
    pub echo_duration: Duration,
    /// How often the process's RSS and open files are sampled.
    pub sample_every: Duration,
}

/// The calls of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    GetRun,
    ListRuns,
    Search,
    WatchRun,
    CreateRun,
    Refresh,
    Login,
}

impl Call {
    /// The mix, in thousandths.
    const MIX: [(Call, u32); 7] = [
        (Call::GetRun, 380),
        (Call::ListRuns, 250),
        (Call::Search, 120),
        (Call::WatchRun, 150),
        (Call::CreateRun, 30),
        (Call::Refresh, 60),
        (Call::Login, 10),
    ];

    fn pick(roll: u32) -> Call {
        let mut left = roll % 1_000;
        for (call, weight) in Self::MIX {
            if left < weight {
                return call;
            }
            left -= weight;
        }
        Call::GetRun
    }

    pub fn name(self) -> &'static str {
        match self {
            Call::GetRun => "GetRun",
            Call::ListRuns => "ListRuns",
            Call::Search => "Search",
            Call::WatchRun => "WatchRun",
            Call::CreateRun => "CreateRun",
            Call::Refresh => "Refresh",
            Call::Login => "Login",
        }
    }
}

/// Latencies and errors of one side (the mesh or the echo).
#[derive(Clone, Debug)]
pub struct Figures {
    pub calls: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Figures {
    fn new() -> Self {
        Self {
            calls: 0,
            elapsed: Duration::ZERO,
            // Microseconds, up to a minute, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds"),
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, took: Duration, outcome: Result<(), tonic::Code>) {
        self.calls += 1;
        let micros = u64::try_from(took.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 60_000_000);
        let _ = self.latency.record(micros);
        if let Err(code) = outcome {
            *self.errors.entry(format!("{code:?}")).or_default() += 1;
        }
    }

    fn merge(&mut self, other: &Figures) {
        self.calls += other.calls;
        let _ = self.latency.add(&other.latency);
        for (code, count) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += count;
        }
    }

    pub fn rps(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(q))
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "none".into();
        }
        self.errors
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The process's resident memory and open files at one time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Resources {
    pub rss_kib: u64,
    pub open_files: u64,
}

impl Resources {
    /// This process now (Linux `/proc/self`); zeros elsewhere.
    pub fn now() -> Self {
        let rss_kib = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0);
        let open_files = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        Self { rss_kib, open_files }
    }
}

/// What a load run measured.
#[derive(Debug)]
pub struct Report {
    pub config: LoadConfig,
    pub mesh: Figures,
    pub by_call: BTreeMap<Call, Figures>,
    pub echo: Figures,
    /// Metered or run-creating calls turned into GetRun polls (quota or
    /// unfinished runs).
    pub substituted: u64,
    pub setup: Duration,
    /// Sampled during the mesh load: (seconds since its start, resources).
    pub samples: Vec<(f64, Resources)>,
}

impl Report {
    /// The report as Markdown tables.
    pub fn markdown(&self) -> String {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1_000.0);
        let users = self.config.users;
        let mut out = String::new();
        out.push_str(&format!(
            "Load: {users} concurrent users for {:?} through the orchestrator (set-up {:.1} s), \
             the echo reference for {:?}; {} calls turned into GetRun polls by quota or unfinished runs.\n\n",
            self.config.duration,
            self.setup.as_secs_f64(),
            self.config.echo_duration,
            self.substituted
        ));
        out.push_str(
            "| side | calls | rps | p50 | p99 | p99.9 | errors |\n|---|---:|---:|---:|---:|---:|---|\n",
        );
        for (name, figures) in [("orchestrator mix", &self.mesh), ("bare tonic echo", &self.echo)] {
            out.push_str(&format!(
                "| {name} | {} | {:.0} | {} | {} | {} | {} |\n",
                figures.calls,
                figures.rps(),
                ms(figures.quantile(0.5)),
                ms(figures.quantile(0.99)),
                ms(figures.quantile(0.999)),
                figures.errors_text()
            ));
        }
        out.push_str(&format!(
            "| **ratio** | | **{:.2}x** | {:.2}x | {:.2}x | {:.2}x | |\n\n",
            self.mesh.rps() / self.echo.rps().max(1e-9),
            self.mesh.quantile(0.5).as_secs_f64() / self.echo.quantile(0.5).as_secs_f64().max(1e-9),
            self.mesh.quantile(0.99).as_secs_f64() / self.echo.quantile(0.99).as_secs_f64().max(1e-9),
            self.mesh.quantile(0.999).as_secs_f64() / self.echo.quantile(0.999).as_secs_f64().max(1e-9),
        ));
        out.push_str(
            "| call | calls | share | p50 | p99 | p99.9 | errors |\n|---|---:|---:|---:|---:|---:|---|\n",
        );
        for (call, figures) in &self.by_call {
            out.push_str(&format!(
                "| {} | {} | {:.1} % | {} | {} | {} | {} |\n",
                call.name(),
                figures.calls,
                100.0 * figures.calls as f64 / self.mesh.calls.max(1) as f64,
                ms(figures.quantile(0.5)),
                ms(figures.quantile(0.99)),
                ms(figures.quantile(0.999)),
                figures.errors_text()
            ));
        }
        if let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) {
            let peak_rss = self.samples.iter().map(|(_, r)| r.rss_kib).max().unwrap_or(0);
            let peak_fds = self.samples.iter().map(|(_, r)| r.open_files).max().unwrap_or(0);
            out.push_str(&format!(
                "\n| process (mesh and load) | start | peak | end |\n|---|---:|---:|---:|\n\
                 | RSS | {:.1} MiB | {:.1} MiB | {:.1} MiB |\n| open files | {} | {} | {} |\n",
                first.1.rss_kib as f64 / 1024.0,
                peak_rss as f64 / 1024.0,
                last.1.rss_kib as f64 / 1024.0,
                first.1.open_files,
                peak_fds,
                last.1.open_files,
            ));
            // The curve, at most 13 points: flat or growing?
            let step = (self.samples.len() / 12).max(1);
            let curve: Vec<String> = self
                .samples
                .iter()
                .enumerate()
                .filter(|(i, _)| i.is_multiple_of(step) || *i == self.samples.len() - 1)
                .map(|(_, (at, r))| format!("{:.0} s: {:.0} MiB", at, r.rss_kib as f64 / 1024.0))
                .collect();
            out.push_str(&format!("\nRSS over the run: {}.\n", curve.join(", ")));
        }
        out
    }
}

/// One user: its tokens, runs and metered budget.
struct User {
    name: String,
    access: String,
    refresh: String,
    /// Runs it created, newest last.
    runs: Vec<String>,
    /// Its first run, once it SUCCEEDED: its workspace is indexed.
    indexed: Option<String>,
    /// Runs it knows are over.
    finished: Vec<String>,
    metered_left: u32,
}

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn channels(addr: std::net::SocketAddr) -> anyhow::Result<Vec<Channel>> {
    (0..CONNECTIONS)
        .map(|_| {
            Ok(Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy())
        })
        .collect()
}

/// A cheap, seedable roll for the mix (xorshift).
struct Dice(u64);

impl Dice {
    fn roll(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}

/// Runs the load and its echo reference.
pub async fn run(config: LoadConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(config.users > 0, "the load needs at least one user");
    let started = Instant::now();
    let mesh = Sandbox::builder()
        .with_all([
            ServiceName::Auth,
            ServiceName::EnvDetector,
            ServiceName::Source,
            ServiceName::Analyzer,
            ServiceName::Indexer,
            ServiceName::Orchestrator,
        ])
        .settings(|s| {
            s.admin.username = Some(ADMIN.into());
            s.admin.password = Some(ADMIN_PASSWORD.into());
        })
        .start()
        .await?;
    let auth_channels = channels(mesh.addr(ServiceName::Auth).expect("hosted"))?;
    let orchestrator_channels = channels(mesh.addr(ServiceName::Orchestrator).expect("hosted"))?;
    let premium = reporunner_auth::config::default_tiers()
        .into_iter()
        .find(|t| t.tier == Tier::Premium)
        .map_or(200, |t| t.metered_requests_per_hour);
    let budget = premium.saturating_sub(QUOTA_MARGIN);

    // The users: created by the admin as premium accounts, then logged in.
    let mut auth = AuthServiceClient::new(auth_channels[0].clone());
    let admin = auth
        .login(LoginRequest {
            username: ADMIN.into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await?
        .into_inner()
        .tokens
        .ok_or_else(|| anyhow::anyhow!("the admin's login returned no tokens"))?;
    // At most SETUP_AT_ONCE at a time: every login in flight counts as a
    // failure of this one address until it succeeds (the brute-force guard).
    let created: Vec<anyhow::Result<User>> = futures::stream::iter((0..config.users).map(|i| {
        let mut auth = AuthServiceClient::new(auth_channels[i % CONNECTIONS].clone());
        let mut users = AdminServiceClient::new(auth_channels[i % CONNECTIONS].clone());
        let admin = admin.access_token.clone();
        async move {
            let name = format!("load-user-{i}");
            users
                .create_user(bearer(
                    &admin,
                    CreateUserRequest {
                        username: name.clone(),
                        password: PASSWORD.into(),
                        tier: Tier::Premium.into(),
                    },
                ))
                .await?;
            let tokens = auth
                .login(LoginRequest {
                    username: name.clone(),
                    password: PASSWORD.into(),
                })
                .await?
                .into_inner()
                .tokens
                .ok_or_else(|| anyhow::anyhow!("{name}'s login returned no tokens"))?;
            anyhow::Ok(User {
                name,
                access: tokens.access_token,
                refresh: tokens.refresh_token,
                runs: Vec::new(),
                indexed: None,
                finished: Vec::new(),
                metered_left: budget,
            })
        }
    }))
    .buffer_unordered(SETUP_AT_ONCE)
    .collect()
    .await;
    let users: Vec<User> = created.into_iter().collect::<anyhow::Result<_>>()?;
    // Each user's first run analyzes and indexes the fixture (what Search
    // needs); the timed load starts once every one has succeeded.
    let indexed: Vec<anyhow::Result<User>> =
        futures::stream::iter(users.into_iter().enumerate().map(|(i, mut user)| {
            let mut orchestrator =
                OrchestratorServiceClient::new(orchestrator_channels[i % CONNECTIONS].clone());
            let mut auth = AuthServiceClient::new(auth_channels[i % CONNECTIONS].clone());
            async move {
                one_call(Call::CreateRun, &mut user, &mut orchestrator, &mut auth, 0).await?;
                let until = Instant::now() + SETUP_RUN_WITHIN;
                while user.finished.is_empty() {
                    anyhow::ensure!(
                        Instant::now() < until,
                        "{}'s first run did not end within {SETUP_RUN_WITHIN:?}",
                        user.name
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    one_call(Call::GetRun, &mut user, &mut orchestrator, &mut auth, 0).await?;
                }
                anyhow::ensure!(
                    user.indexed.is_some(),
                    "{}'s first run did not succeed",
                    user.name
                );
                anyhow::Ok(user)
            }
        }))
        .buffer_unordered(SETUP_AT_ONCE)
        .collect()
        .await;
    let users: Vec<User> = indexed.into_iter().collect::<anyhow::Result<_>>()?;
    let setup = started.elapsed();

    // The mesh load, with the process sampled beside it.
    let samples = Arc::new(Mutex::new(Vec::new()));
    let load_started = Instant::now();
    let sampler = {
        let samples = samples.clone();
        let every = config.sample_every;
        tokio::spawn(async move {
            loop {
                let sample = (load_started.elapsed().as_secs_f64(), Resources::now());
                if let Ok(mut samples) = samples.lock() {
                    samples.push(sample);
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    let until = load_started + config.duration;
    let tasks: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(i, user)| {
            let orchestrator = OrchestratorServiceClient::new(orchestrator_channels[i % CONNECTIONS].clone());
            let auth = AuthServiceClient::new(auth_channels[i % CONNECTIONS].clone());
            tokio::spawn(user_loop(user, orchestrator, auth, until, i as u64))
        })
        .collect();
    let mut by_call: BTreeMap<Call, Figures> = BTreeMap::new();
    let mut substituted = 0;
    for task in tasks {
        let (figures, swaps) = task.await?;
        substituted += swaps;
        for (call, f) in figures {
            by_call.entry(call).or_insert_with(Figures::new).merge(&f);
        }
    }
    let elapsed = load_started.elapsed();
    sampler.abort();
    if let Ok(mut samples) = samples.lock() {
        samples.push((elapsed.as_secs_f64(), Resources::now()));
    }
    let mut total = Figures::new();
    for figures in by_call.values_mut() {
        figures.elapsed = elapsed;
        total.merge(figures);
    }
    total.elapsed = elapsed;

    let echo = echo(config.users, config.echo_duration).await?;
    mesh.stop().await?;
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(Report {
        config,
        mesh: total,
        by_call,
        echo,
        substituted,
        setup,
        samples,
    })
}

/// One user's calls until `until`: its figures by call, and how many calls
/// it turned into GetRun polls.
async fn user_loop(
    mut user: User,
    mut orchestrator: OrchestratorServiceClient<Channel>,
    mut auth: AuthServiceClient<Channel>,
    until: Instant,
    seed: u64,
) -> (BTreeMap<Call, Figures>, u64) {
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (seed.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9)));
    let mut figures: BTreeMap<Call, Figures> = BTreeMap::new();
    let mut substituted = 0;
    while Instant::now() < until {
        let mut call = Call::pick(dice.roll());
        let unfinished = user.runs.len() - user.finished.len();
        let allowed = match call {
            Call::CreateRun => user.metered_left > 0 && unfinished < MAX_UNFINISHED,
            Call::Search => user.metered_left > 0 && user.indexed.is_some(),
            Call::WatchRun => !user.finished.is_empty(),
            Call::GetRun => !user.runs.is_empty(),
            _ => true,
        };
        if !allowed {
            substituted += 1;
            call = if user.runs.is_empty() {
                Call::ListRuns
            } else {
                Call::GetRun
            };
        }
        let started = Instant::now();
        let outcome = one_call(call, &mut user, &mut orchestrator, &mut auth, dice.roll()).await;
        figures
            .entry(call)
            .or_insert_with(Figures::new)
            .record(started.elapsed(), outcome.map_err(|s| s.code()));
    }
    (figures, substituted)
}

async fn one_call(
    call: Call,
    user: &mut User,
    orchestrator: &mut OrchestratorServiceClient<Channel>,
    auth: &mut AuthServiceClient<Channel>,
    roll: u32,
) -> Result<(), tonic::Status> {
    match call {
        Call::GetRun => {
            // Mostly the newest run (a client polling it), else any.
            let id = if roll.is_multiple_of(2) {
                user.runs.last()
            } else {
                user.runs.get(roll as usize % user.runs.len().max(1))
            }
            .cloned()
            .unwrap_or_default();
            let run = orchestrator
                .get_run(bearer(&user.access, GetRunRequest { run_id: id.clone() }))
                .await?
                .into_inner()
                .run
                .unwrap_or_default();
            let over = matches!(
                run.state(),
                RunState::Succeeded | RunState::Failed | RunState::Stopped | RunState::Interrupted
            );
            if over && !user.finished.contains(&id) {
                user.finished.push(id.clone());
                if user.indexed.is_none()
                    && run.state() == RunState::Succeeded
                    && user.runs.first() == Some(&id)
                {
                    user.indexed = Some(id);
                }
            }
            Ok(())
        }
        Call::ListRuns => orchestrator
            .list_runs(bearer(
                &user.access,
                ListRunsRequest {
                    page_size: 20,
                    ..ListRunsRequest::default()
                },
            ))
            .await
            .map(drop),
        Call::Search => {
            user.metered_left = user.metered_left.saturating_sub(1);
            orchestrator
                .search(bearer(
                    &user.access,
                    SearchRequest {
                        run_id: user.indexed.clone().unwrap_or_default(),
                        query: QUERY.into(),
                        mode: IndexMode::Text.into(),
                        limit: 10,
                        ..SearchRequest::default()
                    },
                ))
                .await
                .map(drop)
        }
        Call::WatchRun => {
            let id = user.finished[roll as usize % user.finished.len().max(1)].clone();
            let mut stream = orchestrator
                .watch_run(bearer(
                    &user.access,
                    WatchRunRequest {
                        run_id: id,
                        after_sequence: 0,
                        without_logs: false,
                    },
                ))
                .await?
                .into_inner();
            // A finished run's replay ends by itself; bounded anyway.
            for _ in 0..10_000 {
                if stream.message().await?.is_none() {
                    break;
                }
            }
            Ok(())
        }
        Call::CreateRun => {
            user.metered_left = user.metered_left.saturating_sub(1);
            let first = user.runs.is_empty();
            let run = orchestrator
                .create_run(bearer(
                    &user.access,
                    CreateRunRequest {
                        source: Some(RepoSource {
                            source: Some(repo_source::Source::LocalPath(
                                fixtures_dir().join(FIXTURE).display().to_string(),
                            )),
                            r#ref: String::new(),
                        }),
                        goal: RunGoal::Analyze.into(),
                        index: first,
                        ..CreateRunRequest::default()
                    },
                ))
                .await?
                .into_inner()
                .run
                .unwrap_or_default();
            user.runs.push(run.id);
            Ok(())
        }
        Call::Refresh => {
            let tokens = auth
                .refresh(RefreshRequest {
                    refresh_token: user.refresh.clone(),
                })
                .await?
                .into_inner()
                .tokens
                .unwrap_or_default();
            user.access = tokens.access_token;
            user.refresh = tokens.refresh_token;
            Ok(())
        }
        Call::Login => {
            let tokens = auth
                .login(LoginRequest {
                    username: user.name.clone(),
                    password: PASSWORD.into(),
                })
                .await?
                .into_inner()
                .tokens
                .unwrap_or_default();
            user.access = tokens.access_token;
            user.refresh = tokens.refresh_token;
            Ok(())
        }
    }
}

/// A bare tonic server with the gRPC health service alone (no auth, no
/// store): the reference every figure is a ratio to.
#[derive(Debug)]
pub struct EchoServer {
    pub addr: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl EchoServer {
    pub async fn start() -> anyhow::Result<Self> {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        Ok(Self {
            addr,
            shutdown: Some(shutdown),
            server: tokio::spawn(server),
        })
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.server).await;
    }
}

/// `users` users calling the echo in a closed loop for `duration`.
async fn echo(users: usize, duration: Duration) -> anyhow::Result<Figures> {
    let server = EchoServer::start().await?;
    let channels = channels(server.addr)?;
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..users)
        .map(|i| {
            let mut client = HealthClient::new(channels[i % CONNECTIONS].clone());
            tokio::spawn(async move {
                let mut figures = Figures::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let mut request = tonic::Request::new(HealthCheckRequest::default());
                    request.set_timeout(CALL_DEADLINE);
                    let outcome = client.check(request).await.map(drop).map_err(|s| s.code());
                    figures.record(t.elapsed(), outcome);
                }
                figures
            })
        })
        .collect();
    let mut total = Figures::new();
    for task in tasks {
        total.merge(&task.await?);
    }
    total.elapsed = started.elapsed();
    server.stop().await;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_and_every_roll_picks_by_weight() {
        assert_eq!(Call::MIX.iter().map(|(_, w)| w).sum::<u32>(), 1_000);
        let mut counts: BTreeMap<Call, u32> = BTreeMap::new();
        for roll in 0..1_000 {
            *counts.entry(Call::pick(roll)).or_default() += 1;
        }
        for (call, weight) in Call::MIX {
            assert_eq!(counts[&call], weight, "{call:?}");
        }
    }

    #[test]
    fn figures_count_calls_errors_and_quantiles() {
        let mut figures = Figures::new();
        for ms in 1..=100 {
            figures.record(Duration::from_millis(ms), Ok(()));
        }
        figures.record(Duration::from_millis(5), Err(tonic::Code::Unavailable));
        figures.elapsed = Duration::from_secs(1);
        assert_eq!(figures.calls, 101);
        assert_eq!(figures.error_count(), 1);
        assert_eq!(figures.errors_text(), "Unavailable 1");
        let p99 = figures.quantile(0.99);
        assert!(
            p99 >= Duration::from_millis(98) && p99 <= Duration::from_millis(101),
            "{p99:?}"
        );
        assert!((figures.rps() - 101.0).abs() < 1e-6);
    }
}
