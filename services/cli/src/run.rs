//! `reporunner run` and `reporunner runs ...`: the run pipeline from the
//! command line.
//!
//! Without `--server` (or `REPORUNNER_SERVER`) everything is embedded: this
//! process starts every service on a loopback port, over the data directory,
//! and acts as the machine's owner (the local single-user principal), so a new
//! user needs nothing else. The data directory is locked while it is in use,
//! so two embedded processes never share it. With `--server` the commands talk
//! to that server with the stored login.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use futures::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reporunner_client::ServiceChannel;
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
    session::{Session, bearer, describe},
    start_node,
};

/// The principal `reporunner run` acts as in embedded mode.
pub const LOCAL_USER: &str = "local";

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
    /// A directory or a git URL.
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
    /// Agents to skip, comma-separated (e.g. provisioner,tester).
    #[arg(long, value_delimiter = ',')]
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

/// Where the orchestrator is: in this process, or on a server.
pub struct Connection {
    pub client: OrchestratorServiceClient<ServiceChannel>,
    token: String,
    session: Option<Session>,
    node: Option<Node>,
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("embedded", &self.node.is_some())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The server's orchestrator with the stored login, or an embedded node
    /// over `settings.data_dir` with the local principal.
    pub async fn open(settings: &Settings, server: Option<String>) -> anyhow::Result<Self> {
        if let Some(server) = server {
            let mut session = Session::open(Some(server))?;
            let token = session.access_token().await?;
            let channel = session
                .channel(reporunner_proto::orchestrator::v1::orchestrator_service_server::SERVICE_NAME)
                .await?;
            return Ok(Self {
                client: OrchestratorServiceClient::new(channel),
                token,
                session: Some(session),
                node: None,
                _lock: None,
            });
        }
        let lock = lock_data_dir(&settings.data_dir)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a loopback port for the embedded services")?;
        let settings = &embedded_settings(settings);
        // Boxed: every service's set-up makes a large future.
        let node = Box::pin(start_node(
            settings,
            &ServiceName::ALL,
            listener,
            CancellationToken::new(),
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
        let channel = reporunner_client::connect(
            reporunner_proto::orchestrator::v1::orchestrator_service_server::SERVICE_NAME,
            &[format!("http://{}", node.addr)],
            &settings.client,
        )?;
        channel
            .ready_within(Duration::from_secs(10))
            .await
            .map_err(|s| anyhow::anyhow!("the embedded orchestrator did not start: {}", s.message()))?;
        Ok(Self {
            client: OrchestratorServiceClient::new(channel),
            token: tokens.access.token,
            session: None,
            node: Some(node),
            _lock: Some(lock),
        })
    }

    pub fn embedded(&self) -> bool {
        self.node.is_some()
    }

    /// A request carrying this connection's token (refreshed when a server
    /// session needs it).
    pub async fn request<T>(&mut self, message: T) -> anyhow::Result<tonic::Request<T>> {
        if let Some(session) = &mut self.session {
            self.token = session.access_token().await?;
        }
        bearer(message, &self.token).map_err(describe)
    }

    /// Stops the embedded node, if any.
    pub async fn close(self) -> anyhow::Result<()> {
        drop(self.client);
        match self.node {
            Some(node) => node.stop().await,
            None => Ok(()),
        }
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

/// Takes `<data_dir>/reporunner.lock`, so that two embedded processes never
/// share one data directory.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    reporunner_auth::files::create_private_dir(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let path = data_dir.join("reporunner.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another reporunner process is using {}; talk to it with --server, or use another --data-dir",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(anyhow::anyhow!("cannot lock {}: {err}", path.display()))
        }
    }
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
        anyhow::bail!(
            "{repo} is a file; `reporunner run` takes a directory or a git URL (try `reporunner analyze` for archives)"
        )
    } else {
        anyhow::bail!("{repo} is neither a directory nor a git URL")
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

/// Renders run events as progress: a spinner per step on a terminal, plain
/// lines otherwise.
struct Progress {
    multi: MultiProgress,
    terminal: bool,
    steps: HashMap<ProtoStep, (ProgressBar, Instant)>,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        Self {
            multi: MultiProgress::new(),
            terminal: std::io::stderr().is_terminal(),
            steps: HashMap::new(),
        }
    }

    fn println(&self, line: String) {
        if self.terminal {
            let _ = self.multi.println(line);
        } else {
            println!("{line}");
        }
    }

    fn event(&mut self, event: &RunEvent) {
        match &event.event {
            Some(run_event::Event::Step(step)) => match step.status() {
                StepStatus::Started if !self.terminal => {
                    self.println(format!("… {:<10} {}", step.step().label(), step.detail));
                }
                StepStatus::Started => {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:<10} {elapsed:>4} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(step.step().label());
                    bar.set_message(step.detail.clone());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    self.steps.insert(step.step(), (bar, Instant::now()));
                }
                status => {
                    let mark = match status {
                        StepStatus::Finished => "✓",
                        StepStatus::Skipped => "-",
                        _ => "✗",
                    };
                    let line = format!(
                        "{mark} {:<10} {:>5.1}s {}",
                        step.step().label(),
                        f64::from(step.duration_ms) / 1000.0,
                        step.detail
                    );
                    match self.steps.remove(&step.step()) {
                        Some((bar, _)) => {
                            bar.set_style(
                                ProgressStyle::with_template("{msg}")
                                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                            );
                            bar.finish_with_message(line);
                        }
                        None => self.println(line),
                    }
                }
            },
            Some(run_event::Event::Log(line)) => self.println(format!("  {} | {}", line.source, line.text)),
            Some(run_event::Event::Health(health)) => self.println(format!(
                "  {} is {}{}",
                health.component,
                health.health().label(),
                if health.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", health.detail)
                }
            )),
            Some(run_event::Event::Heal(heal)) => self.println(format!(
                "  healing attempt {}: {} — {} (retrying from {})",
                heal.attempt,
                heal.cause,
                heal.summary,
                heal.retry_from().label()
            )),
            Some(run_event::Event::Test(result)) => self.println(format!("  tests {}", test_line(result))),
            Some(run_event::Event::Url(url)) => self.println(format!("→ {url}")),
            Some(run_event::Event::Notice(notice)) => self.println(format!("note: {notice}")),
            Some(run_event::Event::State(_)) | None => {}
        }
    }

    fn finish(&mut self) {
        for (_, (bar, _)) in self.steps.drain() {
            bar.abandon();
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
        out.push_str(&format!("error: {}\n", run.error));
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
    let source = repo_source(&args.repo, args.reference.as_deref())?;
    let goal = if args.tests {
        RunGoal::StartAndTest
    } else {
        RunGoal::from(args.goal)
    };
    if args.explain {
        print!("{}", reporunner_orchestrator::explain(goal));
        return Ok(Outcome::Reached);
    }
    let mut connection = Connection::open(settings, args.server.clone()).await?;
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
    let mut progress = (!json).then(Progress::new);
    if let Some(progress) = &progress {
        progress.println(format!("run {run_id}: {}", args.repo));
    }

    let watch = connection
        .request(WatchRunRequest {
            run_id: run_id.clone(),
            after_sequence: 0,
            without_logs: !args.logs,
        })
        .await?;
    let mut events = connection
        .client
        .watch_run(watch)
        .await
        .map_err(describe)?
        .into_inner();
    let interrupt = reporunner_server::shutdown::on_signal();
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
            println!("{}", reporunner_proto::json::to_string(&event)?);
        } else if let Some(progress) = &mut progress {
            progress.event(&event);
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
                        println!("{}", reporunner_proto::json::to_string(&run)?);
                    } else {
                        println!("{}", summary_with(&run, &heals));
                        println!("press Ctrl-C to stop");
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
            println!("{}", reporunner_proto::json::to_string(&run)?);
        } else {
            if goal == RunGoal::Analyze
                && let Some(plan) = &run.plan
            {
                print!("{}", crate::output::plan(plan));
            }
            print!("{}", summary_with(&run, &heals));
        }
    }
    connection.close().await?;
    Ok(if degraded && ok {
        Outcome::Degraded
    } else if ok {
        Outcome::Reached
    } else {
        Outcome::Missed
    })
}

/// How `reporunner run` ended, for its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The goal was reached: exit code 0.
    Reached,
    /// Partial success: some components ran and others were left down
    /// (the run was DEGRADED): exit code [`DEGRADED_EXIT`].
    Degraded,
    /// Exit code 1.
    Missed,
}

/// The exit code of a run that ended DEGRADED.
pub const DEGRADED_EXIT: u8 = 3;

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
    fn a_data_dir_is_used_by_one_embedded_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another reporunner process"), "{err}");
        drop(held);
        lock_data_dir(dir.path()).unwrap();
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
    Show { run_id: String },
    /// A run's captured output.
    Logs {
        run_id: String,
        /// Only this component or step.
        #[arg(long)]
        source: Option<String>,
        /// Keep following new lines.
        #[arg(long, short)]
        follow: bool,
    },
    /// Stop every component of a run.
    Stop { run_id: String },
}

/// Runs a `reporunner runs` command.
pub async fn runs(
    settings: &Settings,
    server: Option<String>,
    output: Output,
    command: RunsCommand,
) -> anyhow::Result<()> {
    use reporunner_proto::orchestrator::v1::{GetRunLogsRequest, ListRunsRequest};

    let mut connection = Connection::open(settings, server).await?;
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
                println!("{}", reporunner_proto::json::to_string_pretty(&response)?);
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
                print!(
                    "{}",
                    crate::output::table(&["ID", "STATE", "GOAL", "SOURCE", "CREATED"], &rows)
                );
            }
        }
        RunsCommand::Show { run_id } => {
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
                println!("{}", reporunner_proto::json::to_string_pretty(&run)?);
                for event in &events {
                    println!("{}", reporunner_proto::json::to_string(event)?);
                }
            } else {
                print!("{}", summary(&run));
                println!("source   {}", source_label(run.source.as_ref()));
                if let Some(workspace) = &run.workspace {
                    println!("workspace {} ({} files)", workspace.id, workspace.file_count);
                }
                if let Some(plan) = &run.plan {
                    println!();
                    print!("{}", crate::output::plan(plan));
                }
                println!("\nevents");
                let mut progress = Progress::new();
                progress.terminal = false;
                for event in &events {
                    if let Some(run_event::Event::State(state)) = event.event {
                        println!("  state {}", state_name(state));
                    } else {
                        progress.event(event);
                    }
                }
            }
        }
        RunsCommand::Logs {
            run_id,
            source,
            follow,
        } => {
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
            while let Some(message) = stream.next().await {
                let Some(line) = message.map_err(describe)?.line else {
                    continue;
                };
                if json {
                    println!("{}", reporunner_proto::json::to_string(&line)?);
                } else {
                    println!("{} | {}", line.source, line.text);
                }
            }
        }
        RunsCommand::Stop { run_id } => {
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
                println!("{}", reporunner_proto::json::to_string_pretty(&run)?);
            } else {
                print!("{}", summary(&run));
            }
        }
    }
    connection.close().await
}

fn source_label(source: Option<&RepoSource>) -> String {
    let Some(source) = source else {
        return String::new();
    };
    let base = match &source.source {
        Some(repo_source::Source::GitUrl(url)) => url.clone(),
        Some(repo_source::Source::LocalPath(path)) => path.clone(),
        Some(repo_source::Source::WorkspaceId(id)) => id.clone(),
        None => String::new(),
    };
    if source.r#ref.is_empty() {
        base
    } else {
        format!("{base}#{}", source.r#ref)
    }
}
