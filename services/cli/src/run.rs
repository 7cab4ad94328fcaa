//! `reporunner run` and `reporunner runs ...`: the run pipeline from the
//! command line.
//!
//! Without `--server` (or `REPORUNNER_SERVER`) the commands work on the data
//! directory: when no other process owns it, this process starts every
//! service on a loopback port over it, owns it (see [`crate::owner`]) and
//! acts as the machine's owner (the local single-user principal), so a new
//! user needs nothing else; when another process owns it, they talk to that
//! process through its control socket. With `--server` the commands talk to
//! that server with the stored login.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use futures::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reporunner_client::Transport;
use reporunner_proto::{
    agents::tester::v1::TestOutcome,
    orchestrator::v1::{
        CreateRunRequest, GetRunRequest, HealEvent, RepoSource, Run, RunEvent, RunGoal, RunState,
        Step as ProtoStep, StepStatus, StopRunRequest, TestResult, WatchRunRequest,
        orchestrator_service_client::OrchestratorServiceClient, repo_source, run_event,
    },
};
use reporunner_server::CancellationToken;

use crate::{
    Node, ServiceName, Settings,
    account::Output,
    owner::{self, DataDir, OwnedDir, OwnerInfo},
    session::{Session, bearer, describe},
};
use reporunner_node::{NodeOptions, start_node_with};

/// The principal `reporunner run` acts as in embedded mode.
pub const LOCAL_USER: &str = reporunner_auth::LOCAL_OWNER;

/// What a run should achieve, on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GoalArg {
    /// Bring every component up and keep it healthy.
    Start,
    /// Fetch and analyze only.
    Analyze,
    /// Install and run the tests.
    Test,
    /// Start, then run the tests.
    StartAndTest,
}

impl From<GoalArg> for RunGoal {
    fn from(goal: GoalArg) -> Self {
        match goal {
            GoalArg::Start => RunGoal::Start,
            GoalArg::Analyze => RunGoal::Analyze,
            GoalArg::Test => RunGoal::Test,
            GoalArg::StartAndTest => RunGoal::StartAndTest,
        }
    }
}

/// `reporunner run` options.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A directory, an archive (.tar, .tar.gz, .zip) or a git URL.
    pub repo: String,
    /// For a git URL: a branch, tag or commit.
    #[arg(long = "ref")]
    pub reference: Option<String>,
    #[arg(long, value_enum, default_value = "start")]
    pub goal: GoalArg,
    /// Run the repository's own tests too: start, then test (a library with
    /// nothing to start: tests only). Same as `--goal start-and-test`.
    #[arg(long, conflicts_with = "goal")]
    pub tests: bool,
    /// Agents to skip, comma-separated: env-detector, provisioner, dependency, health, resolver.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(reporunner_orchestrator::Step::skippable_agents()))]
    pub skip_agents: Vec<String>,
    /// Extra environment for every component, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Index the workspace for `reporunner search` as a step after analysis
    /// (in the best mode your tier and this host allow; a failure is a notice).
    #[arg(long)]
    pub index: bool,
    /// With --index: the embedding model (asks for a vector index).
    #[arg(long, requires = "index")]
    pub embedding_model: Option<String>,
    /// Stream the components' log lines too.
    #[arg(long)]
    pub logs: bool,
    /// With --server: return once the goal is reached instead of following the run.
    #[arg(long)]
    pub detach: bool,
    /// The server to run on (default: embedded, in this process).
    #[arg(long, env = "REPORUNNER_SERVER")]
    pub server: Option<String>,
    /// `table`: progress per step; `json`: one RunEvent per line, the Run last.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: Output,
    /// Print the steps the run would take for its goal, with the agent each
    /// calls, and exit without running anything.
    #[arg(long)]
    pub explain: bool,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    let valid = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{key:?} is not an environment variable name"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Where the orchestrator is: in this process, behind the data directory's
/// owner (its control socket), or on a server.
pub struct Connection {
    pub client: OrchestratorServiceClient<Transport>,
    /// None: the control socket makes the call as the local owner.
    token: Option<String>,
    session: Option<Session>,
    node: Option<Node>,
    owned: Option<OwnedDir>,
    /// Who owns the data directory, when it is another process.
    pub owner: Option<OwnerInfo>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("embedded", &self.node.is_some())
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The server's orchestrator with the stored login; else the data
    /// directory's: through its owner's control socket when another process
    /// owns it (with the stored login when that login is for the owner's
    /// address, else as the local owner), or an embedded node that owns it
    /// from now on, as the local owner. `command` names this process in the
    /// directory's lock file.
    pub async fn open(settings: &Settings, server: Option<String>, command: &str) -> anyhow::Result<Self> {
        if let Some(server) = server {
            return Self::server(Session::open(Some(server))?).await;
        }
        match owner::claim(&settings.data_dir)? {
            DataDir::Taken(info) => {
                let session = Session::open(None)?;
                if session.credentials().is_some_and(|c| c.server == info.address) {
                    let mut connection = Self::server(session).await?;
                    connection.owner = Some(info);
                    return Ok(connection);
                }
                let transport = Transport::unix_socket(&info.socket);
                Ok(Self {
                    client: OrchestratorServiceClient::new(transport),
                    token: None,
                    session: None,
                    node: None,
                    owned: None,
                    owner: Some(info),
                })
            }
            DataDir::Owned(owned) => Self::start_embedded(settings, owned, command).await,
        }
    }

    async fn server(mut session: Session) -> anyhow::Result<Self> {
        let token = session.access_token().await?;
        let channel = session
            .channel(reporunner_proto::orchestrator::v1::orchestrator_service_server::SERVICE_NAME)
            .await?;
        Ok(Self {
            client: OrchestratorServiceClient::new(Transport::from(channel)),
            token: Some(token),
            session: Some(session),
            node: None,
            owned: None,
            owner: None,
        })
    }

    async fn start_embedded(settings: &Settings, mut owned: OwnedDir, command: &str) -> anyhow::Result<Self> {
        let socket = owned.bind_socket()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a loopback port for the embedded services")?;
        let settings = &embedded_settings(settings);
        // Boxed: every service's set-up makes a large future.
        let node = Box::pin(start_node_with(
            settings,
            &ServiceName::ALL,
            listener,
            CancellationToken::new(),
            NodeOptions {
                control_socket: Some(socket),
                ..NodeOptions::default()
            },
        ))
        .await?;
        let auth = node
            .auth
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the embedded node does not host auth"))?;
        let (_, tokens) = auth
            .local_session(LOCAL_USER)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the local session: {e}"))?;
        let address = format!("http://{}", node.addr);
        let channel = reporunner_client::connect(
            reporunner_proto::orchestrator::v1::orchestrator_service_server::SERVICE_NAME,
            std::slice::from_ref(&address),
            &settings.client,
        )?;
        channel
            .ready_within(Duration::from_secs(10))
            .await
            .map_err(|s| anyhow::anyhow!("the embedded orchestrator did not start: {}", s.message()))?;
        owned.announce(command, &address)?;
        Ok(Self {
            client: OrchestratorServiceClient::new(Transport::from(channel)),
            token: Some(tokens.access.token),
            session: None,
            node: Some(node),
            owned: Some(owned),
            owner: None,
        })
    }

    /// Whether this process hosts the services (its runs end with it).
    pub fn embedded(&self) -> bool {
        self.node.is_some()
    }

    /// A request carrying this connection's token (refreshed when a server
    /// session needs it); none over the control socket.
    pub async fn request<T>(&mut self, message: T) -> anyhow::Result<tonic::Request<T>> {
        if let Some(session) = &mut self.session {
            self.token = Some(session.access_token().await?);
        }
        match &self.token {
            Some(token) => bearer(message, token).map_err(describe),
            None => Ok(tonic::Request::new(message)),
        }
    }

    /// Stops the embedded node, if any, and gives the data directory up.
    pub async fn close(self) -> anyhow::Result<()> {
        drop(self.client);
        let stopped = match self.node {
            Some(node) => node.stop().await,
            None => Ok(()),
        };
        drop(self.owned);
        stopped
    }
}

/// The settings of an embedded node: the machine's owner runs their own
/// directories, so any local path is allowed (unless the configuration names
/// allowed roots); the data directory stays refused (`Settings::source_config`).
fn embedded_settings(settings: &Settings) -> Settings {
    let mut settings = settings.clone();
    if settings.source.allowed_local_roots.is_empty() {
        settings.source.allowed_local_roots = vec![PathBuf::from("/")];
    }
    // Nothing outside this process calls an embedded node: stop it quickly.
    settings.stop_timeout = settings.stop_timeout.min(Duration::from_millis(500));
    // The machine's owner running their own repository: without a sandbox
    // the run goes on, and says so (serve refuses instead).
    if settings.runner.sandbox == reporunner_runner::SandboxMode::Required {
        settings.runner.sandbox = reporunner_runner::SandboxMode::Auto;
    }
    settings
}

/// The RepoSource for a command-line argument.
pub fn repo_source(repo: &str, reference: Option<&str>) -> anyhow::Result<RepoSource> {
    let path = Path::new(repo);
    let source = if path.is_dir() {
        let absolute = path
            .canonicalize()
            .with_context(|| format!("cannot open {repo}"))?;
        repo_source::Source::LocalPath(absolute.to_string_lossy().into_owned())
    } else if repo.starts_with("sha256:") {
        repo_source::Source::WorkspaceId(repo.to_owned())
    } else if ["https://", "http://", "ssh://", "git://", "file://", "git@"]
        .iter()
        .any(|p| repo.starts_with(p))
    {
        repo_source::Source::GitUrl(repo.to_owned())
    } else if path.is_file() {
        anyhow::bail!("{repo} is a file but not an archive (.tar, .tar.gz, .tgz or .zip)")
    } else {
        anyhow::bail!("{repo} is neither a directory, an archive (.tar, .tar.gz, .zip) nor a git URL")
    };
    Ok(RepoSource {
        source: Some(source),
        r#ref: reference.unwrap_or_default().to_owned(),
    })
}

fn terminal(state: RunState) -> bool {
    matches!(
        state,
        RunState::Succeeded | RunState::Failed | RunState::Stopped | RunState::Interrupted
    )
}

/// Whether `run` reached what its goal asked for.
pub fn goal_reached(run: &Run) -> bool {
    let state = RunState::try_from(run.state).unwrap_or(RunState::Unspecified);
    match RunGoal::try_from(run.goal).unwrap_or(RunGoal::Unspecified) {
        RunGoal::Start => state == RunState::Running || state == RunState::Degraded,
        RunGoal::StartAndTest => matches!(
            state,
            RunState::Running | RunState::Degraded | RunState::Succeeded
        ),
        RunGoal::Analyze | RunGoal::Test | RunGoal::Unspecified => state == RunState::Succeeded,
    }
}

/// Lowercase state name, e.g. "running".
pub fn state_name(state: i32) -> String {
    RunState::try_from(state)
        .unwrap_or(RunState::Unspecified)
        .as_str_name()
        .trim_start_matches("RUN_STATE_")
        .to_ascii_lowercase()
}

/// Renders run events as progress, the way cargo and docker build do. On a
/// terminal, finished steps stay on screen with their times (printed above
/// the live area) and the current step has a spinner, its elapsed time, a
/// count of what its tool reported done and the tool's last line; on a pipe,
/// plain lines. `-q` keeps results and failures only.
struct Progress {
    multi: MultiProgress,
    terminal: bool,
    /// Print every log line (`--logs`), not only the last one in the spinner.
    show_logs: bool,
    quiet: bool,
    steps: Vec<(ProtoStep, Active)>,
}

/// A step in progress on a terminal.
struct Active {
    bar: ProgressBar,
    detail: String,
    /// Packages, crates or modules the tool reported done.
    done: u32,
}

/// Lines by which install and build tools report one more thing done.
const DONE_MARKERS: [&str; 6] = [
    "Collecting ",
    "Compiling ",
    "Installing ",
    "Downloaded ",
    "Building wheel for ",
    "Fetched ",
];

impl Progress {
    fn new(show_logs: bool) -> Self {
        use std::io::IsTerminal as _;
        let ui = crate::ui::get();
        Self {
            multi: MultiProgress::new(),
            terminal: std::io::stderr().is_terminal(),
            show_logs,
            quiet: ui.quiet,
            steps: Vec::new(),
        }
    }

    /// Plain lines only, whatever standard error is.
    fn plain(show_logs: bool) -> Self {
        Self {
            terminal: false,
            ..Self::new(show_logs)
        }
    }

    /// Whether log lines are wanted from the run (shown, or in the spinner).
    fn wants_logs(&self) -> bool {
        self.show_logs || (self.terminal && !self.quiet)
    }

    /// A line that stays: above the live area on a terminal, else on
    /// standard output.
    fn println(&self, line: String) -> anyhow::Result<()> {
        if self.terminal {
            let _ = self.multi.println(line);
        } else {
            crate::outln!("{line}")?;
        }
        Ok(())
    }

    fn event(&mut self, event: &RunEvent) -> anyhow::Result<()> {
        match &event.event {
            Some(run_event::Event::Step(step)) => self.step(step)?,
            Some(run_event::Event::Log(line)) => {
                if let Some((_, active)) = self.steps.last_mut() {
                    if DONE_MARKERS.iter().any(|m| line.text.trim_start().starts_with(m)) {
                        active.done += 1;
                    }
                    let counted = if active.done > 0 {
                        format!("[{} done] ", active.done)
                    } else {
                        String::new()
                    };
                    let last: String = line.text.trim().chars().take(80).collect();
                    active
                        .bar
                        .set_message(format!("{} {counted}{}", active.detail, crate::ui::dim(&last)));
                }
                if self.show_logs {
                    self.println(format!("  {} | {}", line.source, line.text))?;
                }
            }
            Some(run_event::Event::Health(health)) if !self.quiet => self.println(format!(
                "  {} is {}{}",
                health.component,
                health.health().label(),
                if health.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", health.detail)
                }
            ))?,
            Some(run_event::Event::Heal(heal)) if !self.quiet => self.println(format!(
                "  healing attempt {}: {} — {} (retrying from {})",
                heal.attempt,
                heal.cause,
                heal.summary,
                heal.retry_from().label()
            ))?,
            Some(run_event::Event::Test(result)) => self.println(format!("  tests {}", test_line(result)))?,
            Some(run_event::Event::Url(url)) => self.println(format!("→ {}", crate::ui::bold(url)))?,
            Some(run_event::Event::Notice(notice)) if !self.quiet => {
                self.println(format!("note: {notice}"))?
            }
            _ => {}
        }
        Ok(())
    }

    fn step(&mut self, step: &reporunner_proto::orchestrator::v1::StepEvent) -> anyhow::Result<()> {
        let label = step.step().label();
        if step.status() == StepStatus::Started {
            if self.quiet {
                return Ok(());
            }
            if !self.terminal {
                return self.println(format!("… {label:<10} {}", step.detail));
            }
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {prefix:<10} {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label);
            bar.set_message(step.detail.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.steps.push((
                step.step(),
                Active {
                    bar,
                    detail: step.detail.clone(),
                    done: 0,
                },
            ));
            return Ok(());
        }
        let failed = !matches!(step.status(), StepStatus::Finished | StepStatus::Skipped);
        let mark = match step.status() {
            StepStatus::Finished => crate::ui::good("✓"),
            StepStatus::Skipped => crate::ui::dim("-"),
            _ => crate::ui::bad("✗"),
        };
        let mut done = 0;
        if let Some(index) = self.steps.iter().rposition(|(s, _)| *s == step.step()) {
            let (_, active) = self.steps.remove(index);
            done = active.done;
            active.bar.finish_and_clear();
            self.multi.remove(&active.bar);
        }
        if self.quiet && !failed {
            return Ok(());
        }
        let counted = if done > 0 {
            format!(" [{done} done]")
        } else {
            String::new()
        };
        self.println(format!(
            "{mark} {label:<10} {:>5.1}s {}{counted}",
            f64::from(step.duration_ms) / 1000.0,
            step.detail
        ))
    }

    /// Clears what is still spinning (the run ended or was stopped).
    fn finish(&mut self) {
        for (_, active) in self.steps.drain(..) {
            active.bar.finish_and_clear();
        }
    }
}

/// The outcome of a component's tests as the user reads it.
pub fn outcome_label(outcome: i32) -> &'static str {
    match TestOutcome::try_from(outcome).unwrap_or(TestOutcome::Unspecified) {
        TestOutcome::Passed => "PASSED",
        TestOutcome::Failed => "FAILED",
        TestOutcome::NoTests => "NO TESTS",
        TestOutcome::TimedOut => "TIMED OUT",
        TestOutcome::Unparsed => "UNPARSED",
        TestOutcome::Unspecified => "UNKNOWN",
    }
}

/// One component's tests on one line: framework, counts, outcome.
pub fn test_line(result: &TestResult) -> String {
    let counts = result.counts.unwrap_or_default();
    format!(
        "{:<16} {:<12} passed {} failed {} skipped {} errors {}  {}{}",
        result.component,
        if result.framework.is_empty() {
            "-"
        } else {
            result.framework.as_str()
        },
        counts.passed,
        counts.failed,
        counts.skipped,
        counts.errors,
        outcome_label(result.outcome),
        if result.summary.is_empty() {
            String::new()
        } else {
            format!(" ({})", result.summary)
        }
    )
}

/// The summary printed at the end of a run: state, error, components, the
/// tests of each component, and what healing diagnosed and patched.
pub fn summary(run: &Run) -> String {
    summary_with(run, &[])
}

/// [`summary`] with the heal events seen while following the run.
pub fn summary_with(run: &Run, heals: &[HealEvent]) -> String {
    let mut out = format!("run {} {}\n", run.id, state_name(run.state));
    if !run.error.is_empty() {
        // A stop is what someone asked for, not an error.
        if run.state == RunState::Stopped as i32 {
            out.push_str(&format!("  ({})\n", run.error));
        } else {
            out.push_str(&format!("error: {}\n", run.error));
        }
    }
    for component in &run.components {
        out.push_str(&format!(
            "  {:<16} {:<10} {}\n",
            component.name,
            component.health().label(),
            component.url
        ));
    }
    if !run.test_results.is_empty() {
        out.push_str("tests\n");
        for result in &run.test_results {
            out.push_str(&format!("  {}\n", test_line(result)));
        }
    }
    if !heals.is_empty() {
        out.push_str("healing\n");
        for heal in heals {
            out.push_str(&format!(
                "  attempt {}: cause {} — {} (retried from {})\n",
                heal.attempt,
                heal.cause,
                heal.summary,
                heal.retry_from().label()
            ));
            for patch in &heal.patches {
                out.push_str(&format!(
                    "    patch: {}\n",
                    reporunner_orchestrator::heal::describe(patch)
                ));
            }
        }
    } else if let Some(plan) = run.plan.as_ref().filter(|p| !p.applied_patches.is_empty()) {
        out.push_str("healing\n");
        for patch in &plan.applied_patches {
            out.push_str(&format!(
                "  patch: {}{}\n",
                reporunner_orchestrator::heal::describe(patch),
                if patch.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", patch.reason)
                }
            ));
        }
    }
    out
}

/// `reporunner run`. Answers whether the goal was reached.
pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<Outcome> {
    // An archive is unpacked (with the source agent's checks) and run as the
    // directory it holds; the directory lives as long as this command.
    let mut _unpacked = None;
    let source = match crate::analyze::parse_target(&args.repo, args.reference.as_deref()) {
        Ok(crate::analyze::Target::Archive(path, format)) => {
            anyhow::ensure!(
                args.server.is_none(),
                "{} is an archive: `reporunner run` unpacks archives on this machine only; \
                 for --server, push the repository to a git host, or unpack it there",
                args.repo
            );
            let (guard, dir) = crate::analyze::unpack_archive(settings, &path, format).await?;
            _unpacked = Some(guard);
            repo_source(&dir.to_string_lossy(), None)?
        }
        _ => repo_source(&args.repo, args.reference.as_deref())?,
    };
    let goal = if args.tests {
        RunGoal::StartAndTest
    } else {
        RunGoal::from(args.goal)
    };
    if args.explain {
        crate::out!("{}", reporunner_orchestrator::explain(goal))?;
        return Ok(Outcome::Reached);
    }
    let mut connection = Connection::open(settings, args.server.clone(), "run").await?;
    let request = connection
        .request(CreateRunRequest {
            source: Some(source),
            goal: goal as i32,
            skip_agents: args.skip_agents.clone(),
            platform_override: 0,
            env: args.env.iter().cloned().collect(),
            index: args.index,
            embedding_model: args.embedding_model.clone().unwrap_or_default(),
        })
        .await?;
    let created = connection
        .client
        .create_run(request)
        .await
        .map_err(describe)?
        .into_inner()
        .run
        .ok_or_else(|| anyhow::anyhow!("the orchestrator answered CreateRun without a run"))?;
    let run_id = created.id.clone();
    let json = matches!(args.output, Output::Json);
    let mut progress = (!json).then(|| Progress::new(args.logs));
    if let Some(progress) = &progress {
        progress.println(format!("run {run_id}: {}", args.repo))?;
    }
    let with_logs = progress.as_ref().map_or(args.logs, Progress::wants_logs);
    let watch = connection
        .request(WatchRunRequest {
            run_id: run_id.clone(),
            after_sequence: 0,
            without_logs: !with_logs,
        })
        .await?;
    let mut events = connection
        .client
        .watch_run(watch)
        .await
        .map_err(describe)?
        .into_inner();
    let interrupt = reporunner_server::shutdown::on_signal();
    // The terminal went away (its window closed): stop the run as Ctrl-C
    // does, rather than leave an app nobody can see or stop.
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if hangup.recv().await.is_some() {
                interrupt.cancel();
            }
        });
    }
    let mut reached = false;
    let mut degraded = false;
    let mut heals: Vec<HealEvent> = Vec::new();
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            () = interrupt.cancelled() => break,
        };
        let Some(message) = next else { break };
        let event = message.map_err(describe)?.event.unwrap_or_default();
        if let Some(run_event::Event::Heal(heal)) = &event.event {
            heals.push(heal.clone());
        }
        if json {
            crate::outln!("{}", reporunner_proto::json::to_string(&event)?)?;
        } else if let Some(progress) = &mut progress {
            progress.event(&event)?;
        }
        if let Some(run_event::Event::State(state)) = event.event {
            let state = RunState::try_from(state).unwrap_or(RunState::Unspecified);
            // START_AND_TEST passes RUNNING before its tests; it is reached
            // when it is RUNNING again with test results.
            let up = state == RunState::Running || state == RunState::Degraded;
            degraded |= state == RunState::Degraded;
            let goal_now = match goal {
                RunGoal::Start => up,
                RunGoal::StartAndTest if up => {
                    let run = get_run(&mut connection, &run_id).await?;
                    !run.test_results.is_empty()
                        || run.plan.as_ref().is_some_and(|p| {
                            p.components
                                .iter()
                                .all(|c| c.test.as_ref().is_none_or(|t| t.run.trim().is_empty()))
                        })
                }
                _ => false,
            };
            if goal_now {
                reached = true;
                if connection.embedded() || !args.detach {
                    // The app lives as long as this process (embedded) or the
                    // user follows it; say where it is and keep going.
                    let run = get_run(&mut connection, &run_id).await?;
                    if json {
                        crate::outln!("{}", reporunner_proto::json::to_string(&run)?)?;
                    } else {
                        crate::outln!("{}", summary_with(&run, &heals))?;
                        crate::outln!("press Ctrl-C to stop")?;
                    }
                } else {
                    break;
                }
            }
            if terminal(state) {
                break;
            }
        }
    }
    if let Some(progress) = &mut progress {
        progress.finish();
    }
    let mut run = get_run(&mut connection, &run_id).await?;
    let still_running = !terminal(RunState::try_from(run.state).unwrap_or(RunState::Unspecified));
    if interrupt.is_cancelled() && still_running && (connection.embedded() || !args.detach) {
        let request = connection
            .request(StopRunRequest {
                run_id: run_id.clone(),
            })
            .await?;
        if let Some(stopped) = connection
            .client
            .stop_run(request)
            .await
            .map_err(describe)?
            .into_inner()
            .run
        {
            run = stopped;
        }
    }
    // Tests that did not pass make the command fail, even where the app
    // keeps running (START_AND_TEST).
    let tests_passed = run
        .test_results
        .iter()
        .all(|r| r.outcome == TestOutcome::Passed as i32);
    let ok = (reached || goal_reached(&run)) && tests_passed;
    degraded |= run.state == RunState::Degraded as i32;
    if !(reached && json) {
        // JSON consumers already have the Run as the last line when the goal was reached.
        if json {
            crate::outln!("{}", reporunner_proto::json::to_string(&run)?)?;
        } else {
            if goal == RunGoal::Analyze
                && let Some(plan) = &run.plan
            {
                crate::out!("{}", crate::output::plan(plan))?;
            }
            crate::out!("{}", summary_with(&run, &heals))?;
        }
    }
    connection.close().await?;
    Ok(if interrupt.is_cancelled() {
        Outcome::Interrupted
    } else if let Some(unreachable) = host_unreachable(&run.error) {
        Outcome::HostUnreachable(unreachable)
    } else if degraded && ok {
        Outcome::Degraded
    } else if ok {
        Outcome::Reached
    } else {
        Outcome::Missed
    })
}

/// How `reporunner run` ended, for its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The goal was reached: exit code 0.
    Reached,
    /// Partial success: some components ran and others were left down
    /// (the run was DEGRADED): exit code [`DEGRADED_EXIT`].
    Degraded,
    /// Exit code 1.
    Missed,
    /// Stopped with Ctrl-C: exit code 130.
    Interrupted,
    /// The git host could not be reached: exit code 6.
    HostUnreachable(crate::errors::Actionable),
}

/// The git host a run's error says could not be reached.
fn host_unreachable(error: &str) -> Option<crate::errors::Actionable> {
    let start = error.find(reporunner_source::HOST_UNREACHABLE)? + reporunner_source::HOST_UNREACHABLE.len();
    let (host, detail) = error[start..].split_once(" cannot be reached: ")?;
    Some(crate::errors::Actionable::HostUnreachable {
        host: host.to_owned(),
        detail: detail.to_owned(),
    })
}

async fn get_run(connection: &mut Connection, run_id: &str) -> anyhow::Result<Run> {
    let request = connection
        .request(GetRunRequest {
            run_id: run_id.to_owned(),
        })
        .await?;
    connection
        .client
        .get_run(request)
        .await
        .map_err(describe)?
        .into_inner()
        .run
        .ok_or_else(|| anyhow::anyhow!("the orchestrator answered GetRun without a run"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_and_sources_are_checked() {
        assert_eq!(parse_env("A_1=x=y").unwrap(), ("A_1".into(), "x=y".into()));
        assert!(parse_env("1A=x").is_err());
        assert!(parse_env("novalue").is_err());
        let dir = tempfile::tempdir().unwrap();
        let local = repo_source(dir.path().to_str().unwrap(), None).unwrap();
        assert!(matches!(local.source, Some(repo_source::Source::LocalPath(_))));
        let git = repo_source("https://example.invalid/r.git", Some("main")).unwrap();
        assert_eq!(git.r#ref, "main");
        assert!(repo_source("nowhere-at-all", None).is_err());
    }

    #[test]
    fn an_embedded_node_copies_any_local_path_but_its_data_dir() {
        let settings = Settings {
            data_dir: "/home/me/.local/share/reporunner".into(),
            ..Settings::default()
        };
        let source = embedded_settings(&settings).source_config();
        assert_eq!(source.allowed_local_roots, [PathBuf::from("/")]);
        assert!(
            source
                .forbidden_local_roots
                .contains(&PathBuf::from("/home/me/.local/share/reporunner"))
        );
        // Roots an operator configured are kept as they are.
        let mut configured = settings.clone();
        configured.source.allowed_local_roots = vec!["/srv/repos".into()];
        assert_eq!(
            embedded_settings(&configured).source.allowed_local_roots,
            [PathBuf::from("/srv/repos")]
        );
    }

    #[test]
    fn an_unreachable_git_host_is_read_from_the_runs_error() {
        let found = host_unreachable("fetch failed: the git host github.com cannot be reached: fatal: x");
        assert!(
            matches!(&found, Some(crate::errors::Actionable::HostUnreachable { host, detail }) if host == "github.com" && detail == "fatal: x"),
            "{found:?}"
        );
        assert!(host_unreachable("fetch failed: the source agent failed: disk full").is_none());
    }

    #[test]
    fn goals_are_reached_by_their_own_states() {
        let run = |goal: RunGoal, state: RunState| Run {
            goal: goal as i32,
            state: state as i32,
            ..Run::default()
        };
        assert!(goal_reached(&run(RunGoal::Analyze, RunState::Succeeded)));
        assert!(!goal_reached(&run(RunGoal::Start, RunState::Succeeded)));
        assert!(goal_reached(&run(RunGoal::Start, RunState::Running)));
        assert!(!goal_reached(&run(RunGoal::Test, RunState::Failed)));
    }

    #[test]
    fn the_summary_shows_each_components_tests_and_the_healing() {
        use reporunner_proto::{
            agents::tester::v1::TestCounts,
            common::v1::{PlanPatch, SetEnvVar, plan_patch::Change},
        };
        let run = Run {
            id: "r1".into(),
            state: RunState::Failed as i32,
            error: "test failed: lib (pytest): failed: 1 failed, 4 passed".into(),
            test_results: vec![TestResult {
                component: "lib".into(),
                framework: "pytest".into(),
                outcome: TestOutcome::Failed as i32,
                counts: Some(TestCounts {
                    passed: 4,
                    failed: 1,
                    skipped: 2,
                    errors: 0,
                }),
                summary: "1 failed, 4 passed, 2 skipped".into(),
                ..TestResult::default()
            }],
            ..Run::default()
        };
        let heal = HealEvent {
            attempt: 1,
            cause: "env.missing_var".into(),
            summary: "SECRET_KEY is not set".into(),
            patches: vec![PlanPatch {
                component: "web".into(),
                reason: "the app reads SECRET_KEY".into(),
                change: Some(Change::SetEnvVar(SetEnvVar {
                    name: "SECRET_KEY".into(),
                    value: "x".into(),
                })),
            }],
            retry_from: ProtoStep::Start.into(),
        };
        let text = summary_with(&run, &[heal]);
        assert!(text.contains("run r1 failed"), "{text}");
        assert!(
            text.contains("lib")
                && text.contains("pytest")
                && text.contains("passed 4 failed 1 skipped 2 errors 0"),
            "{text}"
        );
        assert!(text.contains("FAILED"), "{text}");
        assert!(
            text.contains("cause env.missing_var — SECRET_KEY is not set"),
            "{text}"
        );
        assert!(text.contains("patch: web: set SECRET_KEY"), "{text}");
        assert!(!summary(&run).contains("healing"));
    }
}

/// `reporunner runs ...`.
#[derive(clap::Subcommand, Debug)]
pub enum RunsCommand {
    /// Your runs, newest first (everyone's for the admin).
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One run: state, components, plan, and its events so far.
    Show {
        /// A run id, or any prefix of one that names a single run.
        run_id: String,
    },
    /// A run's output: install, build, setup, the components' own and the tests'.
    Logs {
        /// A run id, or any prefix of one that names a single run.
        run_id: String,
        /// Only this component or step (see --sources).
        #[arg(long, conflicts_with = "sources")]
        source: Option<String>,
        /// Keep following new lines until the run ends.
        #[arg(long, short, conflicts_with = "sources")]
        follow: bool,
        /// List the run's log sources with their line counts instead.
        #[arg(long)]
        sources: bool,
    },
    /// Stop every component of a run.
    Stop {
        /// A run id, or any prefix of one that names a single run.
        run_id: String,
    },
}

/// Runs a `reporunner runs` command.
pub async fn runs(
    settings: &Settings,
    server: Option<String>,
    output: Output,
    command: RunsCommand,
) -> anyhow::Result<()> {
    use reporunner_proto::orchestrator::v1::{GetRunLogsRequest, ListRunsRequest};

    let mut connection = Connection::open(settings, server, "runs").await?;
    let json = matches!(output, Output::Json);
    match command {
        RunsCommand::List { limit } => {
            let request = connection
                .request(ListRunsRequest {
                    page_size: limit.clamp(1, 500),
                    page_token: String::new(),
                    states: Vec::new(),
                })
                .await?;
            let response = connection
                .client
                .list_runs(request)
                .await
                .map_err(describe)?
                .into_inner();
            if json {
                crate::outln!("{}", reporunner_proto::json::to_string_pretty(&response)?)?;
            } else {
                let rows: Vec<Vec<String>> = response
                    .runs
                    .iter()
                    .map(|run| {
                        vec![
                            run.id.clone(),
                            state_name(run.state),
                            RunGoal::try_from(run.goal)
                                .unwrap_or(RunGoal::Unspecified)
                                .as_str_name()
                                .trim_start_matches("RUN_GOAL_")
                                .to_ascii_lowercase(),
                            source_label(run.source.as_ref()),
                            run.created_at.map(|t| t.to_string()).unwrap_or_default(),
                        ]
                    })
                    .collect();
                crate::out!(
                    "{}",
                    crate::output::table(&["ID", "STATE", "GOAL", "SOURCE", "CREATED"], &rows)
                )?;
            }
        }
        RunsCommand::Show { run_id } => {
            let run_id = resolve_run_id(&mut connection, &run_id).await?;
            let run = get_run(&mut connection, &run_id).await?;
            let request = connection
                .request(WatchRunRequest {
                    run_id: run_id.clone(),
                    after_sequence: 0,
                    without_logs: true,
                })
                .await?;
            let mut stream = connection
                .client
                .watch_run(request)
                .await
                .map_err(describe)?
                .into_inner();
            // The replay arrives at once; a live run would follow forever.
            let mut events = Vec::new();
            while let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(500), stream.next()).await
            {
                events.push(message.map_err(describe)?.event.unwrap_or_default());
                if events.len() >= 10_000 {
                    break;
                }
            }
            if json {
                crate::outln!("{}", reporunner_proto::json::to_string_pretty(&run)?)?;
                for event in &events {
                    crate::outln!("{}", reporunner_proto::json::to_string(event)?)?;
                }
            } else {
                crate::out!("{}", summary(&run))?;
                crate::outln!("source   {}", source_label(run.source.as_ref()))?;
                if let Some(workspace) = &run.workspace {
                    crate::outln!("workspace {} ({} files)", workspace.id, workspace.file_count)?;
                }
                if let Some(plan) = &run.plan {
                    crate::outln!()?;
                    crate::out!("{}", crate::output::plan(plan))?;
                }
                crate::outln!("\nevents")?;
                let mut progress = Progress::plain(false);
                for event in &events {
                    if let Some(run_event::Event::State(state)) = event.event {
                        crate::outln!("  state {}", state_name(state))?;
                    } else {
                        progress.event(event)?;
                    }
                }
            }
        }
        RunsCommand::Logs {
            run_id,
            source,
            follow,
            sources,
        } => {
            let run_id = resolve_run_id(&mut connection, &run_id).await?;
            let request = connection
                .request(GetRunLogsRequest {
                    run_id,
                    source: source.unwrap_or_default(),
                    follow,
                    after_sequence: 0,
                })
                .await?;
            let mut stream = connection
                .client
                .get_run_logs(request)
                .await
                .map_err(describe)?
                .into_inner();
            // Sources in the order they first wrote, with their line counts.
            let mut counts: Vec<(String, u64)> = Vec::new();
            while let Some(message) = stream.next().await {
                let Some(line) = message.map_err(describe)?.line else {
                    continue;
                };
                if sources {
                    match counts.iter_mut().find(|(s, _)| *s == line.source) {
                        Some((_, count)) => *count += 1,
                        None => counts.push((line.source, 1)),
                    }
                } else if json {
                    crate::outln!("{}", reporunner_proto::json::to_string(&line)?)?;
                } else {
                    crate::outln!("{} | {}", line.source, line.text)?;
                }
            }
            if sources {
                if json {
                    let list: Vec<serde_json::Value> = counts
                        .iter()
                        .map(|(source, lines)| serde_json::json!({"source": source, "lines": lines}))
                        .collect();
                    crate::outln!("{}", serde_json::to_string_pretty(&list)?)?;
                } else {
                    let rows: Vec<Vec<String>> = counts
                        .into_iter()
                        .map(|(source, lines)| vec![source, lines.to_string()])
                        .collect();
                    crate::out!("{}", crate::output::table(&["SOURCE", "LINES"], &rows))?;
                }
            }
        }
        RunsCommand::Stop { run_id } => {
            let run_id = resolve_run_id(&mut connection, &run_id).await?;
            let before = get_run(&mut connection, &run_id).await?;
            let was_over = terminal(RunState::try_from(before.state).unwrap_or(RunState::Unspecified));
            let request = connection.request(StopRunRequest { run_id }).await?;
            let run = connection
                .client
                .stop_run(request)
                .await
                .map_err(describe)?
                .into_inner()
                .run
                .unwrap_or_default();
            if json {
                crate::outln!("{}", reporunner_proto::json::to_string_pretty(&run)?)?;
            } else if was_over {
                crate::outln!(
                    "run {} is {} already; nothing to stop",
                    run.id,
                    state_name(run.state)
                )?;
            } else {
                crate::out!("{}", summary(&run))?;
            }
        }
    }
    connection.close().await
}

/// The full id of the run `given` names: itself when it is a run id, else
/// the one run of the caller's whose id starts with it.
pub async fn resolve_run_id(connection: &mut Connection, given: &str) -> anyhow::Result<String> {
    use reporunner_proto::orchestrator::v1::ListRunsRequest;
    let given = given.trim();
    anyhow::ensure!(!given.is_empty(), "the run id is empty");
    let request = connection
        .request(GetRunRequest {
            run_id: given.to_owned(),
        })
        .await?;
    match connection.client.get_run(request).await {
        Ok(_) => return Ok(given.to_owned()),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::InvalidArgument
            ) => {}
        Err(status) => return Err(describe(status)),
    }
    let mut matches = Vec::new();
    let mut page_token = String::new();
    // Bounded: 20 pages of 500 runs.
    for _ in 0..20 {
        let request = connection
            .request(ListRunsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                states: Vec::new(),
            })
            .await?;
        let page = connection
            .client
            .list_runs(request)
            .await
            .map_err(describe)?
            .into_inner();
        matches.extend(
            page.runs
                .into_iter()
                .map(|r| r.id)
                .filter(|id| id.starts_with(given)),
        );
        if page.next_page_token.is_empty() || matches.len() > 1 {
            break;
        }
        page_token = page.next_page_token;
    }
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            anyhow::bail!("no run of yours has an id that starts with `{given}` (see `reporunner runs list`)")
        }
        many => anyhow::bail!(
            "`{given}` is the start of several run ids ({}); give more of it",
            many.join(", ")
        ),
    }
}

fn source_label(source: Option<&RepoSource>) -> String {
    let Some(source) = source else {
        return String::new();
    };
    let base = match &source.source {
        Some(repo_source::Source::GitUrl(url)) => url.clone(),
        Some(repo_source::Source::LocalPath(path)) => path.clone(),
        Some(repo_source::Source::WorkspaceId(id)) => id.clone(),
        Some(repo_source::Source::Archive(archive)) => format!("uploaded {}", archive.file_name),
        None => String::new(),
    };
    if source.r#ref.is_empty() {
        base
    } else {
        format!("{base}#{}", source.r#ref)
    }
}
