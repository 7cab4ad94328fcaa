use std::{path::Path, sync::Arc, time::Duration};

use reporunner_authn::{Authorized, Authorizer};
use reporunner_client::Transport;
use reporunner_proto::{
    agents::{
        env_detector::v1::{DetectRequest, env_detector_service_client::EnvDetectorServiceClient},
        source::v1::{ArchiveFormat, FetchLimits},
    },
    auth::v1::UsageKind,
    common::v1::{Environment, IndexMode, LogLine, Platform, Principal, Recommendations, Tier, Workspace},
    orchestrator::v1::{
        CreateRunRequest, GetRunLogsRequest, IndexWorkspaceRequest, ListRunsRequest, Run, RunEvent, RunGoal,
        RunState, SearchRequest, SearchResponse, UploadedArchive, repo_source, run_event,
    },
};
use reporunner_tier::{policy::ModeChoice, tier_label};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    OrchestratorConfig, OrchestratorError, Result,
    index::{Decision, IndexJob, IndexStream, parse_mode},
    live::{LiveRuns, Recorder},
    plugins::Plugins,
    run::{
        Engine, RunContext,
        step::{DEPENDENCY, ENV_DETECTOR, HEALTH, RUNNER, TESTER},
    },
    store::{Created, Lease, NewRun, RunChange, RunStore, is_terminal},
};

/// Transports to the agents the orchestrator calls: health-checked
/// channels to their endpoints, or, for agents hosted in the same process
/// (embedded mode), the agents' own servers called without a network hop.
///
/// The runner's processes live in one runner replica: with several replicas
/// serving, Status, Stop and Logs must reach the one that started them, so
/// run one serving runner per orchestrator until calls carry affinity.
///
/// The dependency, runner and health agents are optional: an orchestrator
/// without them serves goal ANALYZE and refuses START and TEST up front.
#[derive(Clone, Debug)]
pub struct Agents {
    pub env_detector: Transport,
    pub source: Transport,
    pub analyzer: Transport,
    pub dependency: Option<Transport>,
    pub runner: Option<Transport>,
    pub health: Option<Transport>,
    /// Optional: without it, backing services are not provisioned (a
    /// notice says so).
    pub provisioner: Option<Transport>,
    /// Optional: without it, failed runs are not healed.
    pub resolver: Option<Transport>,
    /// Runs the tests (goals TEST and START_AND_TEST); without it those
    /// goals are refused.
    pub tester: Option<Transport>,
    /// Indexes workspaces and searches them; without it IndexWorkspace and
    /// Search are refused and a run's index step is skipped with a notice.
    pub indexer: Option<Transport>,
    /// One channel per plugin of `orchestrator.plugins`, by name.
    pub plugins: Vec<(String, Transport)>,
}

impl Agents {
    fn required(channel: Option<&Transport>, agent: &'static str) -> Result<Transport> {
        channel.cloned().ok_or_else(|| OrchestratorError::AgentUnavailable {
            agent,
            detail: format!(
                "this orchestrator has no endpoint for it (endpoints.{agent}); it serves goal ANALYZE only"
            ),
        })
    }

    pub(crate) fn dependency(&self) -> Result<Transport> {
        Self::required(self.dependency.as_ref(), DEPENDENCY)
    }

    pub(crate) fn runner(&self) -> Result<Transport> {
        Self::required(self.runner.as_ref(), RUNNER)
    }

    pub(crate) fn health(&self) -> Result<Transport> {
        Self::required(self.health.as_ref(), HEALTH)
    }

    pub(crate) fn tester(&self) -> Result<Transport> {
        Self::required(self.tester.as_ref(), TESTER)
    }

    pub(crate) fn indexer(&self) -> Result<Transport> {
        self.indexer
            .clone()
            .ok_or_else(|| OrchestratorError::AgentUnavailable {
                agent: crate::index::INDEXER,
                detail: "this orchestrator has no endpoint for it (endpoints.indexer); indexing and search are not served".into(),
            })
    }

    /// Refuses a goal this orchestrator lacks the agents for.
    fn serve(&self, goal: RunGoal) -> Result<()> {
        match goal {
            RunGoal::Start => {
                self.dependency()?;
                self.runner()?;
                self.health().map(drop)
            }
            RunGoal::StartAndTest => {
                self.dependency()?;
                self.runner()?;
                self.health()?;
                self.tester().map(drop)
            }
            // The tester runs the tests in its own sandbox; no runner needed.
            RunGoal::Test => {
                self.dependency()?;
                self.tester().map(drop)
            }
            RunGoal::Unspecified | RunGoal::Analyze => Ok(()),
        }
    }
}

/// A run's events, replayed then followed; ends after the terminal state.
pub type RunEvents = ReceiverStream<Result<RunEvent>>;

/// A run's log lines: install, build and test lines from the store, then
/// the components' output from the runner.
pub type RunLogs = ReceiverStream<Result<LogLine>>;

/// The orchestrator's domain.
pub trait Orchestrator: Send + Sync + 'static {
    /// The host as the env-detector sees it.
    fn environment(
        &self,
        platform_override: Platform,
        skip_registries: bool,
        refresh: bool,
    ) -> impl Future<Output = Result<Environment>> + Send;

    /// What the host can afford, and the index modes it allows.
    fn recommendations(
        &self,
        platform_override: Platform,
    ) -> impl Future<Output = Result<(Recommendations, Vec<IndexMode>)>> + Send;

    /// Validates and stores a PENDING run for the caller and starts its
    /// pipeline in the background.
    fn create_run(
        &self,
        caller: &Authorized,
        request: CreateRunRequest,
    ) -> impl Future<Output = Result<Run>> + Send;

    /// The run, if the caller may see it (theirs, or any for the admin).
    fn get_run(&self, caller: &Principal, run_id: &str) -> impl Future<Output = Result<Run>> + Send;

    /// One page of runs, newest first, and the next page's token.
    fn list_runs(
        &self,
        caller: &Principal,
        request: ListRunsRequest,
    ) -> impl Future<Output = Result<(Vec<Run>, String)>> + Send;

    /// The run's events after `after_sequence`, then new ones until it ends.
    fn watch_run(
        &self,
        caller: &Principal,
        run_id: &str,
        after_sequence: u64,
        without_logs: bool,
    ) -> impl Future<Output = Result<RunEvents>> + Send;

    /// Stops the run and every process it started; a run that is over
    /// already is returned unchanged.
    fn stop_run(&self, caller: &Principal, run_id: &str) -> impl Future<Output = Result<Run>> + Send;

    /// The run's log lines (see [`RunLogs`]).
    fn run_logs(
        &self,
        caller: &Principal,
        request: GetRunLogsRequest,
    ) -> impl Future<Output = Result<RunLogs>> + Send;

    /// Indexes a run's workspace (or one of the caller's workspaces) for the
    /// caller, in the mode their tier, the host and the installed models
    /// allow; streams the indexer's progress. Metered as one index.
    fn index_workspace(
        &self,
        caller: &Authorized,
        request: IndexWorkspaceRequest,
    ) -> impl Future<Output = Result<IndexStream>> + Send;

    /// Searches the caller's index of a workspace in the best mode allowed;
    /// the response says which mode served and why it differs. Metered as
    /// one search.
    fn search(
        &self,
        caller: &Authorized,
        request: SearchRequest,
    ) -> impl Future<Output = Result<SearchResponse>> + Send;
}

/// The orchestrator over real agent channels and a run store.
#[derive(Clone, Debug)]
pub struct OrchestratorImpl {
    config: Arc<OrchestratorConfig>,
    agents: Agents,
    store: RunStore,
    authorizer: Authorizer,
    recorder: Recorder,
    engine: Engine,
    /// Stops this replica's lease keeper (shutdown).
    keeper: CancellationToken,
}

/// How many stored events one read of a watcher's replay takes.
const REPLAY_BATCH: u64 = 256;
/// The longest accepted git URL or local path, in bytes.
const MAX_SOURCE_LEN: usize = 4096;

/// The largest archive a CreateRun may carry (`source.archive`).
pub const MAX_UPLOAD_BYTES: usize = 32 << 20;

impl OrchestratorImpl {
    /// Validates `config` and takes over the runs no live replica holds
    /// (see [`crate::lease`]): those a previous life of this replica left,
    /// those whose replica died, and those older than leases. RUNNING runs
    /// whose processes still live at the runner are monitored again; the
    /// others become INTERRUPTED with their events and logs kept, and their
    /// processes are stopped. Then keeps this replica's leases until
    /// [`shutdown`](Self::shutdown). Runs leased to another live replica are
    /// never touched.
    pub async fn new(
        config: OrchestratorConfig,
        agents: Agents,
        store: RunStore,
        authorizer: Authorizer,
    ) -> Result<Self> {
        config.validate()?;
        crate::metrics::describe();
        let store = store.leased_by(Lease {
            replica: config.replica(),
            ttl: config.run_lease(),
        });
        let config = Arc::new(config);
        let recorder = Recorder {
            store: store.clone(),
            live: Arc::new(LiveRuns::new(config.watch_buffer)),
        };
        let plugins = Plugins::new(&config, &agents.plugins);
        let engine = Engine::new(config.clone(), agents.clone(), plugins, recorder.clone());
        let claimed = store.claim_unheld(true).await?;
        crate::lease::take_over(&engine, claimed).await?;
        let keeper = CancellationToken::new();
        tokio::spawn(crate::lease::keep(engine.clone(), keeper.clone()));
        tracing::info!(replica = %store.lease().replica, lease = ?config.run_lease(), "orchestrator holds its runs by lease");
        Ok(Self {
            config,
            agents,
            store,
            authorizer,
            recorder,
            engine,
            keeper,
        })
    }

    /// Opens the run store `config` names (SQLite under `data_dir` unless
    /// `database_url` is set), creating the directory (mode 0700) when needed.
    pub async fn open_store(config: &OrchestratorConfig, data_dir: &Path) -> Result<RunStore> {
        if config.database_url.as_deref().is_none_or(|u| u.trim().is_empty()) {
            let mut dir = std::fs::DirBuilder::new();
            dir.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
            dir.create(data_dir).map_err(|e| {
                OrchestratorError::InvalidConfig(format!(
                    "cannot create the data directory {}: {e}",
                    data_dir.display()
                ))
            })?;
        }
        RunStore::connect(&config.database_url(data_dir)).await
    }

    /// The run store.
    pub fn store(&self) -> &RunStore {
        &self.store
    }

    /// Stops renewing leases and cancels every pipeline running here: their
    /// runs and processes stay as they are, for this replica's next start or
    /// another replica once the leases expire.
    pub fn shutdown(&self) {
        self.keeper.cancel();
        self.recorder.live.cancel_all();
    }

    async fn detect(&self, request: DetectRequest) -> Result<(Environment, Recommendations)> {
        let mut client = EnvDetectorServiceClient::new(self.agents.env_detector.clone());
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.config.detect_deadline());
        let response = client
            .detect(request)
            .await
            .map_err(|status| OrchestratorError::from_agent(ENV_DETECTOR, status))?;
        let response = response.into_inner();
        let environment = response.environment.ok_or(OrchestratorError::AgentIncomplete {
            agent: ENV_DETECTOR,
            what: "environment",
        })?;
        let recommendations = response
            .recommendations
            .ok_or(OrchestratorError::AgentIncomplete {
                agent: ENV_DETECTOR,
                what: "recommendations",
            })?;
        Ok((environment, recommendations))
    }

    /// The served index mode for `caller` asking `requested`: their tier,
    /// the env-detector's recommendation and whether it sees an embedding
    /// model decide (see [`crate::index`]).
    async fn choose(&self, caller: &Authorized, requested: IndexMode, strict: bool) -> Result<ModeChoice> {
        let tiers = self
            .authorizer
            .tier_policies()
            .await
            .map_err(|s| OrchestratorError::Auth(Box::new(s)))?;
        // Text needs no recommendation; skip the detect call.
        let (recommended, model_present) = if requested == IndexMode::Text {
            (false, false)
        } else {
            let (recommendations, _) = self.recommendations(Platform::Unspecified).await?;
            (
                recommendations.vector_index,
                recommendations.embedding_model_present,
            )
        };
        crate::index::decide(&Decision {
            requested,
            policy: &caller.policy,
            tiers: &tiers,
            recommended,
            model_present,
            strict,
        })
    }

    /// The workspace a request names: the run's (which the caller must
    /// see), or one the caller fetched.
    async fn target_workspace(
        &self,
        caller: &Principal,
        run_id: &str,
        workspace_id: &str,
    ) -> Result<Workspace> {
        match (run_id.is_empty(), workspace_id.is_empty()) {
            (false, true) => {
                let run = self.visible_run(caller, run_id).await?;
                let state = run.state().as_str_name();
                run.workspace.filter(|w| !w.path.is_empty()).ok_or_else(|| {
                    OrchestratorError::NotReady(format!(
                        "run {run_id} has no workspace yet (it is {}); index it once its fetch step has finished",
                        state
                    ))
                })
            }
            (true, false) => {
                validate_workspace_id(workspace_id)?;
                self.store
                    .find_workspace(&caller.user_id, workspace_id)
                    .await?
                    .ok_or_else(|| OrchestratorError::WorkspaceNotFound(workspace_id.to_owned()))
            }
            (true, true) => Err(OrchestratorError::InvalidArgument(
                "give a run_id or a workspace_id".into(),
            )),
            (false, false) => Err(OrchestratorError::InvalidArgument(
                "give a run_id or a workspace_id, not both".into(),
            )),
        }
    }

    /// The run, or NOT_FOUND when it does not exist or is not the caller's.
    async fn visible_run(&self, caller: &Principal, run_id: &str) -> Result<Run> {
        let not_found = || OrchestratorError::RunNotFound(run_id.to_owned());
        if run_id.is_empty() {
            return Err(OrchestratorError::InvalidArgument("run_id is required".into()));
        }
        if run_id.len() > 64 {
            return Err(not_found());
        }
        let run = self.store.get_run(run_id).await?.ok_or_else(not_found)?;
        if is_admin(caller) || run.owner_id == caller.user_id {
            Ok(run)
        } else {
            Err(not_found())
        }
    }
}

fn is_admin(caller: &Principal) -> bool {
    caller.tier == i32::from(Tier::Admin)
}

/// The index modes this host supports. The caller's tier narrows this further
/// once the auth service is in the mesh.
pub(crate) fn host_index_modes(recommendations: &Recommendations) -> Vec<IndexMode> {
    if recommendations.vector_index {
        vec![IndexMode::Text, IndexMode::Vector, IndexMode::Hybrid]
    } else {
        vec![IndexMode::Text]
    }
}

/// A URL without its user information, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split('/').next().and_then(|host| host.rsplit_once('@')) {
            Some((_, host_after)) => {
                let path = &rest[rest.find('/').unwrap_or(rest.len())..];
                format!("{scheme}://{host_after}{path}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Checks a git URL's shape; the source agent checks the rest.
fn validate_git_url(url: &str) -> Result<()> {
    let invalid = |why: &str| Err(OrchestratorError::InvalidArgument(why.to_owned()));
    if url.is_empty() {
        return invalid("source.git_url is empty; give a URL such as https://github.com/owner/repo.git");
    }
    if url.len() > MAX_SOURCE_LEN {
        return invalid("source.git_url is too long");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.starts_with('-') {
        return invalid("source.git_url must not contain spaces or control characters, nor start with '-'");
    }
    let with_scheme = ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme));
    let plausible = match with_scheme {
        Some(rest) => (!rest.is_empty() && !rest.starts_with('/')) || url.starts_with("file:///"),
        // scp-like: user@host:path
        None => url
            .split_once(':')
            .is_some_and(|(host, path)| host.contains('@') && !host.contains('/') && !path.is_empty()),
    };
    if plausible {
        Ok(())
    } else {
        Err(OrchestratorError::InvalidArgument(format!(
            "source.git_url `{}` is not a git URL; use https://host/owner/repo.git, ssh://host/repo or git@host:owner/repo",
            redact(url)
        )))
    }
}

/// An uploaded archive: not empty, within [`MAX_UPLOAD_BYTES`] and the
/// caller's workspace size, and of a known format.
fn validate_archive(archive: &UploadedArchive, max_workspace_bytes: u64) -> Result<()> {
    let size = archive.content.len();
    if size == 0 {
        return Err(OrchestratorError::InvalidArgument(
            "source.archive.content is empty: send the archive's bytes".into(),
        ));
    }
    let limit = (MAX_UPLOAD_BYTES as u64).min(if max_workspace_bytes == 0 {
        u64::MAX
    } else {
        max_workspace_bytes
    });
    if size as u64 > limit {
        return Err(OrchestratorError::InvalidArgument(format!(
            "source.archive is {size} bytes, more than the {limit} an upload may have; \
             push the repository somewhere git can reach and give its git_url"
        )));
    }
    match ArchiveFormat::try_from(archive.format) {
        Ok(ArchiveFormat::Tar | ArchiveFormat::TarGz | ArchiveFormat::Zip) => {}
        _ => {
            return Err(OrchestratorError::InvalidArgument(format!(
                "source.archive.format {} is not tar, tar.gz or zip",
                archive.format
            )));
        }
    }
    if archive.file_name.len() > MAX_SOURCE_LEN || archive.file_name.contains('\0') {
        return Err(OrchestratorError::InvalidArgument(
            "source.archive.file_name is too long or holds a NUL byte".into(),
        ));
    }
    Ok(())
}

fn validate_local_path(path: &str) -> Result<()> {
    if path.is_empty() || path.len() > MAX_SOURCE_LEN || path.contains('\0') {
        return Err(OrchestratorError::InvalidArgument(
            "source.local_path must be an absolute path on the orchestrator's host".into(),
        ));
    }
    if !Path::new(path).is_absolute() {
        return Err(OrchestratorError::InvalidArgument(format!(
            "source.local_path `{path}` is relative; give an absolute path on the orchestrator's host"
        )));
    }
    Ok(())
}

fn validate_workspace_id(id: &str) -> Result<()> {
    let ok = id.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(OrchestratorError::InvalidArgument(
            "source.workspace_id must be `sha256:` followed by 64 lowercase hex digits, as a run's workspace.id shows"
                .into(),
        ))
    }
}

fn parse_goal(goal: i32) -> Result<RunGoal> {
    match RunGoal::try_from(goal) {
        Ok(RunGoal::Unspecified) => Ok(RunGoal::Analyze),
        Ok(goal) => Ok(goal),
        Err(_) => Err(OrchestratorError::InvalidArgument(format!(
            "goal {goal} is not a known RunGoal"
        ))),
    }
}

fn parse_states(states: &[i32]) -> Result<Vec<RunState>> {
    states
        .iter()
        .map(|&s| match RunState::try_from(s) {
            Ok(RunState::Unspecified) | Err(_) => Err(OrchestratorError::InvalidArgument(format!(
                "states: {s} is not a known RunState"
            ))),
            Ok(state) => Ok(state),
        })
        .collect()
}

impl Orchestrator for OrchestratorImpl {
    async fn environment(
        &self,
        platform_override: Platform,
        skip_registries: bool,
        refresh: bool,
    ) -> Result<Environment> {
        let request = DetectRequest {
            platform_override: platform_override as i32,
            skip_registries,
            refresh,
        };
        Ok(self.detect(request).await?.0)
    }

    async fn recommendations(
        &self,
        platform_override: Platform,
    ) -> Result<(Recommendations, Vec<IndexMode>)> {
        let request = DetectRequest {
            platform_override: platform_override as i32,
            ..Default::default()
        };
        let (_, recommendations) = self.detect(request).await?;
        let modes = host_index_modes(&recommendations);
        Ok((recommendations, modes))
    }

    async fn create_run(&self, caller: &Authorized, request: CreateRunRequest) -> Result<Run> {
        let owner_id = caller.principal.user_id.clone();
        let goal = parse_goal(request.goal)?;
        self.agents.serve(goal)?;
        let platform_override = Platform::try_from(request.platform_override).map_err(|_| {
            OrchestratorError::InvalidArgument(format!(
                "platform_override {} is not a known Platform",
                request.platform_override
            ))
        })?;
        let skippable = crate::run::Step::skippable_agents();
        if let Some(unknown) = request
            .skip_agents
            .iter()
            .find(|agent| !skippable.contains(&agent.as_str()))
        {
            return Err(OrchestratorError::InvalidArgument(format!(
                "skip_agents: `{unknown}` is not an agent a run can skip; those are {}",
                skippable.join(", ")
            )));
        }
        let source = request.source.clone().ok_or_else(|| {
            OrchestratorError::InvalidArgument(
                "a run needs a source: git_url, local_path, workspace_id or archive".into(),
            )
        })?;
        let workspace = match &source.source {
            Some(repo_source::Source::GitUrl(url)) => {
                validate_git_url(url)?;
                None
            }
            Some(repo_source::Source::LocalPath(path)) => {
                validate_local_path(path)?;
                None
            }
            Some(repo_source::Source::Archive(archive)) => {
                validate_archive(archive, caller.policy.max_workspace_bytes)?;
                None
            }
            Some(repo_source::Source::WorkspaceId(id)) => {
                validate_workspace_id(id)?;
                // Only a workspace the caller fetched: another user's is
                // NOT_FOUND, like a missing one.
                Some(
                    self.store
                        .find_workspace(&owner_id, id)
                        .await?
                        .ok_or_else(|| OrchestratorError::WorkspaceNotFound(id.clone()))?,
                )
            }
            None => {
                return Err(OrchestratorError::InvalidArgument(
                    "a run needs a source: git_url, local_path, workspace_id or archive".into(),
                ));
            }
        };
        // The index step's mode is decided now, with the caller's tier; an
        // explicit embedding model asks for vectors.
        let index = if request.index {
            if !request.embedding_model.is_empty() {
                self.authorizer
                    .require(caller, "indexing with embeddings", |p| {
                        p.index_modes.contains(&(IndexMode::Vector as i32))
                    })
                    .await
                    .map_err(|s| OrchestratorError::Auth(Box::new(s)))?;
            }
            self.agents.indexer()?;
            let requested = if request.embedding_model.is_empty() {
                IndexMode::Unspecified
            } else {
                IndexMode::Vector
            };
            let choice = self.choose(caller, requested, false).await?;
            Some(IndexJob {
                owner_id: owner_id.clone(),
                workspace: Workspace::default(),
                mode: choice.mode,
                fallback_reason: choice.fallback_reason,
                model: request.embedding_model.clone(),
            })
        } else {
            None
        };
        let limit = caller.policy.concurrent_runs;
        let at_limit = |active| OrchestratorError::ConcurrentRuns {
            active,
            limit,
            tier: tier_label(caller.policy.tier),
        };
        // A cheap early refusal; the store checks again atomically.
        let active = self.store.count_active(&owner_id).await?;
        if active >= u64::from(limit) {
            return Err(at_limit(active));
        }
        self.authorizer
            .consume(caller, UsageKind::RunCreated, "CreateRun")
            .await
            .map_err(|s| OrchestratorError::Auth(Box::new(s)))?;
        // An uploaded archive stays in memory for the fetch step only; the
        // run keeps its name and format.
        let mut kept = source.clone();
        if let Some(repo_source::Source::Archive(archive)) = &mut kept.source {
            archive.content = Default::default();
        }
        let new = NewRun {
            owner_id: owner_id.clone(),
            goal,
            source: kept,
            workspace: workspace.clone(),
        };
        let run = match self.store.create_run(new, limit).await? {
            Created::Run(run, _) => *run,
            Created::AtLimit { active } => return Err(at_limit(active)),
        };
        let live = self.recorder.live.start(&run.id);
        let ctx = RunContext {
            run_id: run.id.clone(),
            owner_id: owner_id.clone(),
            goal: crate::run::effective_goal(goal),
            plugins_allowed: caller.policy.plugins,
            source,
            limits: FetchLimits {
                max_total_bytes: caller.policy.max_workspace_bytes,
                timeout_seconds: self.config.fetch_timeout_seconds,
                ..FetchLimits::default()
            },
            platform_override,
            skip_agents: request.skip_agents,
            workspace,
            environment: None,
            plan: None,
            run_deadline: (caller.policy.max_run_seconds > 0)
                .then(|| Duration::from_secs(u64::from(caller.policy.max_run_seconds))),
            env: request.env.into_iter().collect(),
            max_run_seconds: caller.policy.max_run_seconds,
            step_limits: caller.policy.step_limits.unwrap_or_default(),
            max_heal_attempts: caller.policy.max_heal_attempts,
            index,
            ..RunContext::default()
        };
        let span = tracing::info_span!("run", run_id = %run.id, user_id = %owner_id);
        tracing::info!(parent: &span, goal = goal.as_str_name(), "run created");
        crate::metrics::run_created(goal);
        tokio::spawn(self.engine.clone().drive(ctx, live).instrument(span));
        Ok(run)
    }

    async fn get_run(&self, caller: &Principal, run_id: &str) -> Result<Run> {
        self.visible_run(caller, run_id).await
    }

    async fn list_runs(&self, caller: &Principal, request: ListRunsRequest) -> Result<(Vec<Run>, String)> {
        let states = parse_states(&request.states)?;
        let owner = (!is_admin(caller)).then_some(caller.user_id.as_str());
        self.store
            .list_runs(owner, &states, request.page_size, &request.page_token)
            .await
    }

    async fn watch_run(
        &self,
        caller: &Principal,
        run_id: &str,
        after_sequence: u64,
        without_logs: bool,
    ) -> Result<RunEvents> {
        // Subscribe before the replay is read: an event stored in between is
        // then both replayed and received, and the receiver drops the copy.
        let live = self.recorder.live.get(run_id).map(|l| l.events.subscribe());
        self.visible_run(caller, run_id).await?;
        let (tx, rx) = mpsc::channel(64);
        let watcher = Watcher {
            store: self.store.clone(),
            run_id: run_id.to_owned(),
            last: after_sequence,
            without_logs,
            follow: true,
            poll: self.config.watch_poll(),
            tx,
        };
        tokio::spawn(watcher.run(live));
        Ok(ReceiverStream::new(rx))
    }

    async fn stop_run(&self, caller: &Principal, run_id: &str) -> Result<Run> {
        let run = self.visible_run(caller, run_id).await?;
        if is_terminal(run.state()) {
            return Ok(run);
        }
        // STOPPED first, then the cancel: a pipeline that sees the cancel
        // finds its run over and stops what it started.
        let mut components = self.store.components(run_id).await?;
        for component in &mut components {
            component.set_health(reporunner_proto::orchestrator::v1::ComponentHealth::Stopped);
        }
        let change = RunChange {
            error: Some(format!("stopped by {}", caller.username)),
            components: (!components.is_empty()).then(|| components.clone()),
            ..RunChange::default()
        };
        let stopped = self
            .recorder
            .transition(run_id, RunState::Stopped, change)
            .await?;
        if let Some(live) = self.recorder.live.get(run_id) {
            live.cancel.cancel();
            let wait = self.config.runner_deadline() * 2
                + Duration::from_secs(u64::from(self.config.stop_grace_seconds));
            if tokio::time::timeout(wait, live.ended.cancelled()).await.is_err() {
                tracing::warn!(run_id, "the run's task did not end in time after StopRun");
            }
        }
        // Also what the store knows (a run monitored by another process).
        let processes: Vec<String> = components.into_iter().map(|c| c.process_id).collect();
        self.engine.stop_processes(&processes).await;
        crate::run::steps::provision::release_backing(&self.engine, run_id).await;
        match stopped {
            Some((run, _)) => {
                tracing::info!(run_id, user_id = %caller.user_id, "run stopped");
                Ok(run)
            }
            // It ended on its own meanwhile.
            None => self.visible_run(caller, run_id).await,
        }
    }

    async fn index_workspace(
        &self,
        caller: &Authorized,
        request: IndexWorkspaceRequest,
    ) -> Result<IndexStream> {
        let indexer = self.agents.indexer()?;
        let requested = parse_mode(request.mode, "mode")?;
        if request.embedding_model.len() > 128 {
            return Err(OrchestratorError::InvalidArgument(
                "embedding_model is too long".into(),
            ));
        }
        let workspace = self
            .target_workspace(&caller.principal, &request.run_id, &request.workspace_id)
            .await?;
        let choice = self.choose(caller, requested, false).await?;
        self.authorizer
            .consume(caller, UsageKind::Index, "IndexWorkspace")
            .await
            .map_err(|s| OrchestratorError::Auth(Box::new(s)))?;
        let job = IndexJob {
            owner_id: caller.principal.user_id.clone(),
            workspace,
            mode: choice.mode,
            fallback_reason: choice.fallback_reason,
            model: request.embedding_model,
        };
        tracing::info!(
            user_id = %caller.principal.user_id,
            workspace_id = %job.workspace.id,
            mode = job.mode.as_str_name(),
            "indexing a workspace"
        );
        job.stream(indexer, &self.config).await
    }

    async fn search(&self, caller: &Authorized, request: SearchRequest) -> Result<SearchResponse> {
        let indexer = self.agents.indexer()?;
        let requested = parse_mode(request.mode, "mode")?;
        if request.query.trim().is_empty() {
            return Err(OrchestratorError::InvalidArgument("query is empty".into()));
        }
        let workspace = self
            .target_workspace(&caller.principal, &request.run_id, &request.workspace_id)
            .await?;
        let deadline = self.config.search_deadline();
        let owner_id = caller.principal.user_id.clone();
        let status = crate::index::status(&indexer, deadline, &owner_id, &workspace.id).await?;
        if !status.exists {
            return Err(OrchestratorError::Indexer(Box::new(tonic::Status::not_found(
                format!(
                    "workspace {} has no index of yours; index it first (IndexWorkspace, `reporunner index`)",
                    workspace.id
                ),
            ))));
        }
        let choice = self.choose(caller, requested, request.strict).await?;
        self.authorizer
            .consume(caller, UsageKind::Search, "Search")
            .await
            .map_err(|s| OrchestratorError::Auth(Box::new(s)))?;
        let (response, served) = crate::index::search(
            &indexer,
            deadline,
            reporunner_proto::index::v1::SearchRequest {
                owner_id,
                workspace_id: workspace.id,
                query: request.query,
                mode: choice.mode as i32,
                path_glob: request.path_glob,
                language: request.language,
                limit: request.limit,
            },
            choice,
        )
        .await?;
        Ok(SearchResponse {
            hits: response.hits,
            mode: served.mode as i32,
            fallback_reason: served.fallback_reason,
        })
    }

    async fn run_logs(&self, caller: &Principal, request: GetRunLogsRequest) -> Result<RunLogs> {
        let GetRunLogsRequest {
            run_id,
            source,
            follow,
            after_sequence,
        } = request;
        // Every line (install, build, setup, the components', the tests') is
        // in the run's history: the processes' output is recorded as it is
        // written (`run::output`), so it outlives the runner that ran them.
        let live = if follow {
            self.recorder.live.get(&run_id).map(|l| l.events.subscribe())
        } else {
            None
        };
        self.visible_run(caller, &run_id).await?;
        let (events_tx, mut events) = mpsc::channel(256);
        let watcher = Watcher {
            store: self.store.clone(),
            run_id,
            last: after_sequence,
            without_logs: false,
            follow,
            poll: self.config.watch_poll(),
            tx: events_tx,
        };
        tokio::spawn(watcher.run(live));
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(item) = events.recv().await {
                let sent = match item {
                    Ok(RunEvent {
                        sequence,
                        event: Some(run_event::Event::Log(line)),
                        ..
                    }) if source.is_empty() || line.source == source => {
                        // The event's sequence: what `after_sequence` resumes from.
                        tx.send(Ok(LogLine { sequence, ..line })).await
                    }
                    Ok(_) => Ok(()),
                    Err(err) => tx.send(Err(err)).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// Feeds one WatchRun stream.
struct Watcher {
    store: RunStore,
    run_id: String,
    /// The sequence of the last event sent (or skipped).
    last: u64,
    without_logs: bool,
    /// False: the history so far, then the stream ends.
    follow: bool,
    poll: Duration,
    tx: mpsc::Sender<Result<RunEvent>>,
}

/// Whether this event ends a run's history.
fn ends_run(event: &RunEvent) -> bool {
    matches!(
        event.event,
        Some(run_event::Event::State(s)) if RunState::try_from(s).is_ok_and(is_terminal)
    )
}

/// Whether a watcher goes on (`Continue`) or is done (`Break`).
type Watching = std::ops::ControlFlow<()>;

impl Watcher {
    async fn run(mut self, mut live: Option<tokio::sync::broadcast::Receiver<RunEvent>>) {
        use tokio::sync::broadcast::error::RecvError;
        // The replay, read after subscribing: live events it already covers
        // are dropped below by their sequence.
        if let Watching::Break(()) = self.catch_up().await {
            return;
        }
        if !self.follow {
            return;
        }
        loop {
            let flow = match live.as_mut() {
                // Driven elsewhere (or over): poll the store.
                None => {
                    tokio::select! {
                        () = self.tx.closed() => return,
                        () = tokio::time::sleep(self.poll) => {}
                    }
                    self.catch_up().await
                }
                Some(rx) => {
                    let received = tokio::select! {
                        () = self.tx.closed() => return,
                        received = tokio::time::timeout(self.poll, rx.recv()) => received,
                    };
                    match received {
                        Ok(Ok(event)) if event.sequence <= self.last => Watching::Continue(()),
                        Ok(Ok(event)) if event.sequence == self.last + 1 => self.send(event).await,
                        // A gap (the replay is still behind) or a lag: the
                        // store has everything, in order.
                        Ok(Ok(_) | Err(RecvError::Lagged(_))) | Err(_) => self.catch_up().await,
                        Ok(Err(RecvError::Closed)) => {
                            live = None;
                            self.catch_up().await
                        }
                    }
                }
            };
            if matches!(flow, Watching::Break(())) {
                return;
            }
        }
    }

    /// Sends what the store has after `last`; `Done` once the run's terminal
    /// state was sent (or the run was over before and nothing is left).
    async fn catch_up(&mut self) -> Watching {
        // Read the state first: when it is terminal, every event up to the
        // terminal one is stored by now and the read below sees them.
        let over = match self.store.get_run(&self.run_id).await {
            Ok(run) => run.is_none_or(|r| is_terminal(r.state())),
            Err(err) => return self.fail(err).await,
        };
        loop {
            let events = match self
                .store
                .events_after(&self.run_id, self.last, REPLAY_BATCH)
                .await
            {
                Ok(events) => events,
                Err(err) => return self.fail(err).await,
            };
            let full = events.len() as u64 == REPLAY_BATCH;
            for event in events {
                if let Watching::Break(()) = self.send(event).await {
                    return Watching::Break(());
                }
            }
            if !full {
                break;
            }
        }
        if over {
            Watching::Break(())
        } else {
            Watching::Continue(())
        }
    }

    async fn send(&mut self, event: RunEvent) -> Watching {
        self.last = event.sequence;
        let end = ends_run(&event);
        let is_log = matches!(event.event, Some(run_event::Event::Log(_)));
        if !(self.without_logs && is_log) && self.tx.send(Ok(event)).await.is_err() {
            return Watching::Break(());
        }
        if end {
            Watching::Break(())
        } else {
            Watching::Continue(())
        }
    }

    async fn fail(&mut self, err: OrchestratorError) -> Watching {
        let _ = self.tx.send(Err(err)).await;
        Watching::Break(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uploaded_archive_is_bounded_by_the_upload_limit_and_the_tier() {
        let archive = |size: usize, format: ArchiveFormat| UploadedArchive {
            content: vec![0; size],
            format: format as i32,
            file_name: "app.zip".into(),
        };
        assert!(validate_archive(&archive(10, ArchiveFormat::Zip), 1 << 30).is_ok());
        let err = validate_archive(&archive(0, ArchiveFormat::Zip), 1 << 30).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = validate_archive(&archive(10, ArchiveFormat::Unspecified), 1 << 30).unwrap_err();
        assert!(err.to_string().contains("not tar, tar.gz or zip"), "{err}");
        // The tier's workspace size, when it is smaller than the upload limit.
        let err = validate_archive(&archive(2048, ArchiveFormat::TarGz), 1024).unwrap_err();
        assert!(err.to_string().contains("more than the 1024"), "{err}");
        let err = validate_archive(&archive(MAX_UPLOAD_BYTES + 1, ArchiveFormat::Tar), u64::MAX).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("more than the {MAX_UPLOAD_BYTES}")),
            "{err}"
        );
    }

    #[test]
    fn vector_modes_only_when_recommended() {
        let mut rec = Recommendations::default();
        assert_eq!(host_index_modes(&rec), vec![IndexMode::Text]);
        rec.vector_index = true;
        assert_eq!(
            host_index_modes(&rec),
            vec![IndexMode::Text, IndexMode::Vector, IndexMode::Hybrid]
        );
    }

    #[test]
    fn git_urls_of_every_usual_shape_pass_and_nonsense_is_refused() {
        for good in [
            "https://github.com/pallets/flask.git",
            "http://git.internal/x",
            "ssh://git@github.com/o/r.git",
            "git@github.com:o/r.git",
            "git://host/r",
            "file:///srv/repos/app",
        ] {
            validate_git_url(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            "not a url",
            "github.com/o/r",
            "-uhttps://x",
            "https://",
            "ftp://host/r",
        ] {
            assert!(validate_git_url(bad).is_err(), "{bad}");
        }
        let message = validate_git_url("ftp://user:secret@host/x")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn credentials_are_redacted_from_urls() {
        assert_eq!(redact("https://u:p@host/r.git"), "https://host/r.git");
        assert_eq!(redact("https://host/r.git"), "https://host/r.git");
    }

    #[test]
    fn local_paths_must_be_absolute_and_workspace_ids_digests() {
        validate_local_path("/srv/app").expect("absolute");
        assert!(
            validate_local_path("app")
                .unwrap_err()
                .to_string()
                .contains("relative")
        );
        validate_workspace_id(&format!("sha256:{}", "ab".repeat(32))).expect("digest");
        for bad in ["sha256:xyz", "abc", &format!("sha256:{}", "AB".repeat(32))] {
            assert!(validate_workspace_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unspecified_goal_means_analyze_and_unknown_values_are_refused() {
        assert_eq!(parse_goal(0).expect("default"), RunGoal::Analyze);
        assert!(parse_goal(99).is_err());
        assert!(parse_states(&[0]).is_err());
        assert_eq!(parse_states(&[12]).expect("known"), vec![RunState::Succeeded]);
    }
}
