//! The dependency agent: installs a component's dependencies so that the
//! runner can start it.
//!
//! - Python: a fresh venv per run and component
//!   (`<env_dir>/<run_id>/<component>/.venv`) made with the newest installed
//!   interpreter that satisfies the plan's constraint (never a download),
//!   filled by uv (installed from PyPI into the tools dir when missing) or
//!   pip, from requirements files, PEP 621 projects, Poetry (lock translated
//!   to constraints, no `poetry install`), Pipenv (Pipfile.lock translated to
//!   pinned requirements) or setup.py. See [`python`].
//! - Node: npm, pnpm, yarn or bun as the lockfile or `packageManager` says,
//!   the manager itself installed from the npm registry when missing, with
//!   frozen installs only when the lock is current. See [`node`].
//! - Rust: `cargo build` (or the plan's build command) with the host cargo
//!   into a per-run target dir. See [`rust`].
//!
//! Downloads are cached per host under the cache dir, so a second install of
//! the same dependencies is fast. Every command runs in its own process group
//! under the request's time and disk limits, its output streamed line by
//! line ([`exec`]). The plan's build command, when it has one, runs after the
//! install (log source "build").
//!
//! The domain lives behind [`Installer`] ([`LocalInstaller`] implements it);
//! [`grpc`] is a thin adapter.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod exec;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod metrics;
pub mod native;
pub mod node;
pub mod python;
pub mod python_manifest;
pub mod python_packages;
pub mod python_test_deps;
pub mod rust;

use std::{
    collections::BTreeMap,
    path::{Component as PathPart, Path, PathBuf},
    sync::Arc,
    time::Instant,
};

pub use config::DependencyConfig;
use config::Limits;
pub use error::{DependencyError, Result};
use exec::{Cmd, Guard, LogSink, Outcome};
use reporunner_proto::{
    agents::dependency::v1::{InstallRequest, InstallResponse, InstallResult, install_response},
    common::v1::{Component, Environment},
};
use reporunner_sandbox::{Sandbox, SandboxConfig};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument as _;

/// The dependency agent's domain.
pub trait Installer: Send + Sync + 'static {
    /// Validates the request and starts the install. The stream carries the
    /// install's log lines and, last, one `InstallResult`. An install that
    /// fails is a result with `success: false`, not an error.
    fn install(&self, request: InstallRequest) -> Result<ReceiverStream<InstallResponse>>;
}

/// Installs on this host, with the host's interpreters and tools.
#[derive(Clone, Debug)]
pub struct LocalInstaller {
    config: Arc<DependencyConfig>,
    slots: Arc<Semaphore>,
    tool_lock: Arc<Mutex<()>>,
    probes: Arc<python::ProbeCache>,
    /// Every command that runs the repository's code (package managers with
    /// their lifecycle scripts, builds, custom installs) goes through it;
    /// `None` runs them as the agent (a library user's choice; the node
    /// always sets one).
    sandbox: Option<Arc<Sandbox>>,
    /// Where workspaces may lie; empty: anywhere (a library user's choice;
    /// the node sets the source agent's root).
    workspace_roots: Arc<Vec<PathBuf>>,
}

impl LocalInstaller {
    /// Checks the configuration and creates the agent's directories.
    pub fn new(config: DependencyConfig) -> Result<Self> {
        config.validate()?;
        for dir in [&config.cache_dir, &config.tools_dir, &config.env_dir] {
            std::fs::create_dir_all(dir).map_err(|e| DependencyError::io(dir, e))?;
        }
        metrics::describe();
        Ok(Self {
            slots: Arc::new(Semaphore::new(config.max_concurrent_installs)),
            config: Arc::new(config),
            tool_lock: Arc::new(Mutex::new(())),
            probes: Arc::new(python::ProbeCache::new(std::time::Duration::from_secs(300))),
            sandbox: None,
            workspace_roots: Arc::new(Vec::new()),
        })
    }

    /// Runs every repository command in `sandbox`, as the request's owner.
    #[must_use]
    pub fn with_sandbox(mut self, sandbox: SandboxConfig) -> Self {
        self.sandbox = Some(Arc::new(Sandbox::new(sandbox)));
        self
    }

    /// Refuses workspaces outside `roots` (canonical paths compared).
    #[must_use]
    pub fn with_workspace_roots(mut self, roots: Vec<PathBuf>) -> Self {
        let roots = roots.into_iter().map(|r| r.canonicalize().unwrap_or(r)).collect();
        self.workspace_roots = Arc::new(roots);
        self
    }

    pub fn config(&self) -> &DependencyConfig {
        &self.config
    }

    /// Turns a request into a job, refusing what cannot be attempted.
    fn prepare(&self, request: InstallRequest) -> Result<Job> {
        let invalid = |m: String| DependencyError::InvalidRequest(m);
        let run_id = request.run_id.trim().to_owned();
        if !safe_name(&run_id) {
            return Err(invalid(
                "run_id is required: 1 to 128 characters of letters, digits, '.', '_' or '-'".into(),
            ));
        }
        let component = request
            .component
            .ok_or_else(|| invalid("component is required".into()))?;
        let language = Language::of(&component)?;
        let workspace = PathBuf::from(&request.workspace_path);
        if request.workspace_path.is_empty() || !workspace.is_absolute() {
            return Err(invalid(format!(
                "workspace_path must be an absolute path, got {:?}",
                request.workspace_path
            )));
        }
        let workspace = workspace
            .canonicalize()
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| {
                invalid(format!(
                    "workspace_path {} is not a directory",
                    request.workspace_path
                ))
            })?;
        if !self.workspace_roots.is_empty()
            && !self
                .workspace_roots
                .iter()
                .any(|r| workspace.starts_with(r) && workspace != *r)
        {
            return Err(invalid(format!(
                "workspace_path {} is not a workspace of this host",
                request.workspace_path
            )));
        }
        let dir = inside(&workspace, &component.path).ok_or_else(|| {
            invalid(format!(
                "component path {:?} is not a directory inside the workspace",
                component.path
            ))
        })?;
        let component_name = env_name(&component.name);
        let env_root = self.config.env_dir.join(&run_id).join(component_name);
        let limits = self.config.limits(request.limits.as_ref());
        let owner = Some(request.owner_id.trim().to_owned()).filter(|o| !o.is_empty());
        if let Some(owner) = &owner
            && !safe_name(owner)
        {
            return Err(invalid(
                "owner_id must be 1 to 128 letters, digits, '.', '_' or '-'".into(),
            ));
        }
        // Each owner writes caches of their own, so no install can poison
        // another owner's (see SECURITY.md).
        let cache_root = match &owner {
            Some(owner) => self.config.cache_dir.join("owners").join(owner),
            None => self.config.cache_dir.clone(),
        };
        let step_limits = request.step_limits.unwrap_or_default();
        if request.backing_env.len() > MAX_BACKING_ENV {
            return Err(invalid(format!(
                "backing_env has {} variables; at most {MAX_BACKING_ENV}",
                request.backing_env.len()
            )));
        }
        for (name, value) in &request.backing_env {
            reporunner_sandbox::process::check_env_name(name).map_err(invalid)?;
            if value.contains('\0') {
                return Err(invalid(format!("backing_env {name} contains a NUL byte")));
            }
        }
        Ok(Job {
            backing_env: request.backing_env.into_iter().collect(),
            with_tests: request.with_tests,
            resolve_before: request
                .resolve_before
                .and_then(|t| std::time::SystemTime::try_from(t).ok())
                .filter(|t| *t < std::time::SystemTime::now()),
            cache_root,
            owner,
            sandbox: self.sandbox.clone(),
            step_limits: reporunner_sandbox::Limits {
                memory_bytes: step_limits.memory_bytes,
                cpu_millis: step_limits.cpu_millis,
                max_processes: step_limits.max_processes,
                max_open_files: step_limits.max_open_files,
                max_file_bytes: step_limits.max_file_bytes,
                max_runtime_seconds: limits.timeout.as_secs().try_into().unwrap_or(u32::MAX),
            },
            run_id,
            language,
            deadline: Instant::now() + limits.timeout,
            limits,
            component,
            workspace,
            dir,
            env_root,
            environment: request.environment,
            config: self.config.clone(),
            tool_lock: self.tool_lock.clone(),
            probes: self.probes.clone(),
            base_path: std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        })
    }
}

impl Installer for LocalInstaller {
    fn install(&self, request: InstallRequest) -> Result<ReceiverStream<InstallResponse>> {
        let job = self.prepare(request)?;
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| DependencyError::Busy(self.config.max_concurrent_installs))?;
        let (tx, rx) = mpsc::channel(256);
        let span = tracing::info_span!(
            "install",
            run_id = %job.run_id,
            component = %job.component.name,
            agent = "dependency"
        );
        tokio::spawn(
            async move {
                let _permit = permit;
                run_job(job, tx).await;
            }
            .instrument(span),
        );
        Ok(ReceiverStream::new(rx))
    }
}

/// The kinds of component this agent installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Python,
    Node,
    Rust,
    /// C and C++, built with their own tool (CMake, autotools, make).
    Native,
    /// Static files: nothing to install.
    Nothing,
}

impl Language {
    /// Decides from the runtime, then the language, then the package manager.
    pub fn of(component: &Component) -> Result<Self> {
        let runtime = component.runtime.as_ref().map(|r| r.name.to_ascii_lowercase());
        let names = [
            runtime.unwrap_or_default(),
            component.language.to_ascii_lowercase(),
            component.package_manager.to_ascii_lowercase(),
        ];
        for name in &names {
            match name.as_str() {
                "python" | "pip" | "uv" | "poetry" | "pipenv" => return Ok(Self::Python),
                "node" | "bun" | "javascript" | "typescript" | "npm" | "pnpm" | "yarn" => {
                    return Ok(Self::Node);
                }
                "rust" | "cargo" => return Ok(Self::Rust),
                "c" | "cpp" | "c++" | "make" | "cmake" | "autotools" => return Ok(Self::Native),
                "static" | "html" => return Ok(Self::Nothing),
                _ => {}
            }
        }
        let what = names
            .into_iter()
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Err(DependencyError::Unsupported(what))
    }
}

/// One install, validated.
#[derive(Debug)]
pub(crate) struct Job {
    pub run_id: String,
    pub language: Language,
    pub component: Component,
    pub workspace: PathBuf,
    /// The component's directory.
    pub dir: PathBuf,
    /// `<env_dir>/<run_id>/<component>`.
    pub env_root: PathBuf,
    pub environment: Option<Environment>,
    pub limits: Limits,
    pub deadline: Instant,
    pub config: Arc<DependencyConfig>,
    /// Held while a package manager is installed into the tools dir.
    pub tool_lock: Arc<Mutex<()>>,
    /// Interpreter probes, kept for a few minutes.
    pub probes: Arc<python::ProbeCache>,
    /// The agent's PATH.
    pub base_path: String,
    /// The owner's own caches (`<cache_dir>/owners/<owner>`), or the shared
    /// ones when the request names no owner.
    pub cache_root: PathBuf,
    pub owner: Option<String>,
    pub sandbox: Option<Arc<Sandbox>>,
    pub step_limits: reporunner_sandbox::Limits,
    /// Install what the tests need too.
    pub with_tests: bool,
    /// The repository's own date: unlocked dependencies are first resolved
    /// as of it.
    pub resolve_before: Option<std::time::SystemTime>,
    /// The connection variables of the component's backing services, for
    /// its build.
    pub backing_env: BTreeMap<String, String>,
}

/// At most this many backing-service variables are taken.
const MAX_BACKING_ENV: usize = 256;

/// What an install made, filled in as it goes.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub tool: String,
    pub environment_path: PathBuf,
    pub env: BTreeMap<String, String>,
    /// What counts against the disk limit.
    pub disk_paths: Vec<PathBuf>,
}

/// Why an install failed.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The failing command's exit status; 124 on timeout, -1 when no command
    /// decided it.
    pub exit_code: i32,
    pub message: String,
    /// A timeout, the disk limit or a cancel: nothing may be tried after it.
    pub fatal: bool,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            exit_code: -1,
            message: message.into(),
            fatal: false,
        }
    }
}

pub(crate) type Step<T = ()> = std::result::Result<T, Failure>;

impl Job {
    fn guard(&self, report: &Report) -> Guard {
        Guard {
            deadline: self.deadline,
            max_disk_bytes: self.limits.max_disk_bytes,
            disk_paths: report.disk_paths.clone(),
            disk_interval: self.config.disk_check_interval,
        }
    }

    /// The command line of `cmd`: in the sandbox, as the owner, with only
    /// the allowed part of the agent's environment, unless it is a tool
    /// install of the agent's own.
    pub async fn command(&self, cmd: &Cmd) -> Step<exec::Spawnable> {
        let Some(sandbox) = self.sandbox.as_ref().filter(|_| !cmd.tool) else {
            return Ok(exec::Spawnable::plain(cmd));
        };
        let mut env = reporunner_sandbox::base_env(reporunner_sandbox::BASE_ENV.iter().copied());
        env.extend(cmd.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let home = self.cache_root.join("home");
        let step = reporunner_sandbox::Step {
            name: format!("install-{}-{}", self.run_id, uuid_like()),
            program: cmd.program.display().to_string(),
            args: cmd
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            cwd: cmd.cwd.clone(),
            env,
            writable: vec![
                self.workspace.clone(),
                self.env_root.clone(),
                self.cache_root.clone(),
            ],
            readable: vec![self.config.tools_dir.clone()],
            hidden: vec![
                self.config.env_dir.clone(),
                self.config.cache_dir.clone(),
                self.config.tools_dir.clone(),
            ],
            home: Some(home),
            owner: self.owner.clone(),
            limits: self.step_limits,
        };
        tokio::fs::create_dir_all(&self.cache_root)
            .await
            .map_err(|e| Failure::new(format!("cannot create {}: {e}", self.cache_root.display())))?;
        match sandbox.prepare(&step).await {
            Ok(prepared) => Ok(exec::Spawnable::sandboxed(prepared)),
            Err(e) => Err(Failure {
                exit_code: -1,
                message: e.to_string(),
                fatal: true,
            }),
        }
    }

    /// Runs one command; anything but exit 0 is a failure.
    pub async fn step(&self, sink: &mut LogSink, report: &Report, cmd: &Cmd) -> Step {
        let spawnable = self.command(cmd).await?;
        let outcome = exec::run(cmd, spawnable, sink, &self.guard(report)).await;
        let program = cmd.program.file_name().map_or_else(
            || cmd.program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        match outcome {
            Outcome::Exited(0) => Ok(()),
            Outcome::Exited(code) => {
                let limit = reporunner_sandbox::limit_hit(code, &sink.tail(), &self.step_limits);
                Err(Failure {
                    exit_code: code,
                    message: match limit {
                        Some(hit) => format!("`{}` was {hit}", short(&cmd.display(), 200)),
                        None => format!("`{}` exited with status {code}", short(&cmd.display(), 200)),
                    },
                    fatal: false,
                })
            }
            Outcome::TimedOut => Err(Failure {
                exit_code: 124,
                message: format!(
                    "install timed out after {} s (timeout_seconds) in `{program}`; its process group was killed",
                    self.limits.timeout.as_secs()
                ),
                fatal: true,
            }),
            Outcome::DiskExceeded { used } => Err(self.disk_failure(used, report)),
            Outcome::Cancelled => Err(Failure {
                exit_code: -1,
                message: "the install was cancelled by its caller".into(),
                fatal: true,
            }),
            Outcome::SpawnFailed(e) => Err(Failure {
                exit_code: 127,
                message: format!("cannot start {}: {e}", cmd.program.display()),
                fatal: false,
            }),
        }
    }

    fn disk_failure(&self, used: u64, report: &Report) -> Failure {
        let paths = report
            .disk_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Failure {
            exit_code: -1,
            message: format!(
                "disk limit exceeded: {used} bytes in {paths}, over the limit of {} bytes (max_disk_bytes); the install was stopped",
                self.limits.max_disk_bytes
            ),
            fatal: true,
        }
    }

    /// The directory a command runs in: its working_dir, else the component's.
    pub fn command_dir(&self, command: Option<&reporunner_proto::common::v1::Command>) -> PathBuf {
        command
            .map(|c| c.working_dir.as_str())
            .filter(|w| !w.is_empty())
            .and_then(|w| inside(&self.workspace, w))
            .unwrap_or_else(|| self.dir.clone())
    }

    /// Runs the plan's install command when it is not a package manager's
    /// (`make deps`, `./scripts/bootstrap.sh`): the agent does the managers'
    /// work itself, from the manifests, and then runs such a script in the
    /// prepared environment.
    pub async fn custom_install(&self, sink: &mut LogSink, report: &Report) -> Step {
        let install = self.component.install.as_ref();
        let Some(line) = install.and_then(|c| custom_command(&c.run)) else {
            return Ok(());
        };
        let cmd = Cmd::new("sh", &self.command_dir(install), "install")
            .args(["-c", line])
            .envs(&report.env);
        self.step(sink, report, &cmd).await
    }

    /// Runs the plan's build command, if it has one, with the install's env
    /// and the backing services'.
    pub async fn build(&self, sink: &mut LogSink, report: &Report, default: Option<&str>) -> Step {
        let build = self.component.build.as_ref();
        let line = build.map(|b| b.run.trim()).filter(|r| !r.is_empty()).or(default);
        let Some(line) = line else {
            return Ok(());
        };
        let cmd = Cmd::new("sh", &self.command_dir(build), "build")
            .args(["-c", line])
            .envs(&self.build_env(report));
        self.step(sink, report, &cmd).await
    }

    /// A build step's environment: the backing services' variables, the
    /// install's over them.
    pub fn build_env(&self, report: &Report) -> BTreeMap<String, String> {
        let mut env = self.backing_env.clone();
        env.extend(report.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    pub fn cache(&self, name: &str) -> PathBuf {
        self.cache_root.join(name)
    }

    /// The repository's date as RFC 3339 (`2021-03-04T05:06:07Z`), when
    /// unlocked dependencies are to be resolved as of it.
    pub fn resolve_date(&self) -> Option<String> {
        self.resolve_before
            .map(|t| humantime_serde::re::humantime::format_rfc3339_seconds(t).to_string())
    }

    /// Runs `dated` (the install resolved as of the repository's date);
    /// when it fails, says so and runs `today` (resolved as of now). A
    /// dated install that failed once in this run (a heal's install again)
    /// is not tried again: a marker in the run's environment dir says so.
    pub async fn dated_or_today(
        &self,
        sink: &mut LogSink,
        report: &Report,
        date: &str,
        dated: &Cmd,
        today: &Cmd,
    ) -> Step {
        self.dated_or_today_unless(sink, report, date, (dated, today), |_| false)
            .await
    }

    /// [`Job::dated_or_today`], except that a dated failure whose output
    /// `not_the_date` recognises (the project's own build failed: resolving
    /// as of today would fail the same way) is returned as it is, with no
    /// attempt as of today and no marker.
    pub async fn dated_or_today_unless(
        &self,
        sink: &mut LogSink,
        report: &Report,
        date: &str,
        (dated, today): (&Cmd, &Cmd),
        not_the_date: impl Fn(&[String]) -> bool,
    ) -> Step {
        use std::hash::{Hash as _, Hasher as _};
        // The same install, whatever the time: the per-package cut-offs
        // (`--exclude-newer-package NAME=<now>`) are left out of the key.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        dated.program.hash(&mut hasher);
        let mut args = dated.args.iter();
        while let Some(arg) = args.next() {
            if arg == "--exclude-newer-package" {
                args.next();
                continue;
            }
            arg.hash(&mut hasher);
        }
        let marker = self
            .env_root
            .join(format!(".dated-failed-{:016x}", hasher.finish()));
        if tokio::fs::try_exists(&marker).await.unwrap_or(false) {
            sink.system(
                "install",
                format!(
                    "resolving as of the repository's date ({date}) failed on an earlier attempt of this run; \
                     resolving as of today"
                ),
            )
            .await;
            return self.step(sink, report, today).await;
        }
        match self.step(sink, report, dated).await {
            Err(failure) if !failure.fatal && not_the_date(&sink.tail()) => Err(failure),
            Err(failure) if !failure.fatal => {
                let _ = tokio::fs::write(&marker, &failure.message).await;
                sink.system(
                    "install",
                    format!(
                        "resolving as of the repository's date ({date}) failed ({}); resolving as of today",
                        failure.message
                    ),
                )
                .await;
                self.step(sink, report, today).await
            }
            other => other,
        }
    }
}

/// Commands of package managers, whose work the agent does itself.
const MANAGER_COMMANDS: &[&str] = &[
    "pip", "pip3", "uv", "poetry", "pipenv", "conda", "mamba", "npm", "pnpm", "yarn", "bun", "npx",
    "corepack", "cargo",
];

/// `run` when it is a command of its own rather than a package manager's.
fn custom_command(run: &str) -> Option<&str> {
    let run = run.trim();
    let first = run.split_whitespace().next()?;
    let program = first.rsplit('/').next().unwrap_or(first);
    let manager = MANAGER_COMMANDS.contains(&program) || program.starts_with("python");
    (!manager).then_some(run)
}

fn short(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Runs a job to its result.
async fn run_job(job: Job, tx: mpsc::Sender<InstallResponse>) {
    let started = Instant::now();
    let mut sink = LogSink::new(tx.clone(), job.config.log_tail_lines, job.config.max_line_bytes);
    let mut report = Report::default();
    let mut result = if let Err(e) = tokio::fs::create_dir_all(&job.env_root).await {
        Err(Failure::new(format!(
            "cannot create the environment directory: {e}"
        )))
    } else {
        match job.language {
            Language::Python => python::install(&job, &mut sink, &mut report).await,
            Language::Node => node::install(&job, &mut sink, &mut report).await,
            Language::Rust => rust::install(&job, &mut sink, &mut report).await,
            Language::Native => native::install(&job, &mut sink, &mut report).await,
            Language::Nothing => {
                sink.system("install", "nothing to install for a static component")
                    .await;
                report.tool = "none".into();
                report.environment_path.clone_from(&job.dir);
                Ok(())
            }
        }
    };
    if result.is_ok() && job.limits.max_disk_bytes > 0 && !report.disk_paths.is_empty() {
        let used = exec::dir_size(report.disk_paths.clone()).await;
        if used > job.limits.max_disk_bytes {
            result = Err(job.disk_failure(used, &report));
        }
    }
    let (success, exit_code) = match &result {
        Ok(()) => {
            sink.system(
                "install",
                format!(
                    "installed with {} in {:.1} s",
                    report.tool,
                    started.elapsed().as_secs_f64()
                ),
            )
            .await;
            (true, 0)
        }
        Err(failure) => {
            sink.system("install", format!("install failed: {}", failure.message))
                .await;
            (false, failure.exit_code)
        }
    };
    let language = match job.language {
        Language::Python => "python",
        Language::Node => "node",
        Language::Rust => "rust",
        Language::Native => "native",
        Language::Nothing => "none",
    };
    ::metrics::counter!(metrics::INSTALLS_TOTAL, "kind" => language, "status" => if success { "ok" } else { "failed" })
        .increment(1);
    ::metrics::histogram!(metrics::INSTALL_SECONDS, "kind" => language)
        .record(started.elapsed().as_secs_f64());
    tracing::info!(success, exit_code, tool = %report.tool, "install finished");
    let packages = if success && job.language == Language::Python {
        let venv = report.environment_path.clone();
        tokio::task::spawn_blocking(move || python_packages::packages(&venv))
            .await
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let result = InstallResult {
        success,
        exit_code,
        tool: report.tool,
        environment_path: report.environment_path.display().to_string(),
        env: report.env.into_iter().collect(),
        duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
        log_tail: sink.tail(),
        packages: packages.into_iter().collect(),
    };
    let _ = tx
        .send(InstallResponse {
            event: Some(install_response::Event::Result(result)),
        })
        .await;
}

/// `relative` under `root`, when it is a directory that stays inside.
fn inside(root: &Path, relative: &str) -> Option<PathBuf> {
    let relative = if relative.is_empty() { "." } else { relative };
    let path = Path::new(relative);
    if path
        .components()
        .any(|c| !matches!(c, PathPart::Normal(_) | PathPart::CurDir))
    {
        return None;
    }
    let joined = root.join(path).canonicalize().ok()?;
    (joined.starts_with(root) && joined.is_dir()).then_some(joined)
}

/// Whether `name` is safe as one path segment.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A component name as one path segment.
fn env_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "default".into()
    } else {
        cleaned
    }
}

/// A short unique suffix for step names (cgroups).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use reporunner_proto::common::v1::Runtime;

    use super::*;

    #[test]
    fn component_paths_stay_inside_the_workspace() {
        let root = std::env::temp_dir().canonicalize().unwrap();
        assert_eq!(inside(&root, "."), Some(root.clone()));
        assert_eq!(inside(&root, ""), Some(root.clone()));
        assert_eq!(inside(&root, ".."), None);
        assert_eq!(inside(&root, "/etc"), None);
        assert_eq!(inside(&root, "no/such/dir"), None);
    }

    #[test]
    fn only_commands_of_their_own_run_besides_the_managers_work() {
        assert_eq!(custom_command("pip install -e ."), None);
        assert_eq!(
            custom_command("python3.11 -m pip install -r requirements.txt"),
            None
        );
        assert_eq!(custom_command("/usr/bin/npm ci"), None);
        assert_eq!(custom_command("  "), None);
        assert_eq!(custom_command(" make deps "), Some("make deps"));
        assert_eq!(
            custom_command("./scripts/bootstrap.sh"),
            Some("./scripts/bootstrap.sh")
        );
    }

    #[test]
    fn run_ids_and_names_are_single_segments() {
        assert!(safe_name("run-1.a_b"));
        assert!(!safe_name(".."));
        assert!(!safe_name("a/b"));
        assert!(!safe_name(""));
        assert_eq!(env_name("web/api"), "web_api");
        assert_eq!(env_name(""), "default");
    }

    #[test]
    fn language_comes_from_runtime_language_or_manager() {
        let mut c = Component {
            runtime: Some(Runtime {
                name: "bun".into(),
                version_constraint: String::new(),
                preferred_version: String::new(),
            }),
            ..Component::default()
        };
        assert_eq!(Language::of(&c).unwrap(), Language::Node);
        c.runtime = None;
        c.package_manager = "poetry".into();
        assert_eq!(Language::of(&c).unwrap(), Language::Python);
        c.package_manager = "maven".into();
        c.language = "java".into();
        assert!(matches!(Language::of(&c), Err(DependencyError::Unsupported(l)) if l == "java"));
    }
}
