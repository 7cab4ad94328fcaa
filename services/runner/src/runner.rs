//! [`LocalRunner`]: request checks, the process table, and the start of
//! supervision.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr},
    path::{Component as PathPart, Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use reporunner_error::ServiceError;
use reporunner_proto::{
    agents::runner::v1::{ProcessState, ProcessStatus},
    common::v1::{ComponentKind, LogLine},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    LogLines, LogsSpec, Runner, StartSpec,
    backend::{ConfiguredBackend, LaunchSpec, Limits, ProcessBackend},
    command::{self, PortBinding},
    config::RunnerConfig,
    error::{Result, RunnerError},
    logs::{LogBuffer, write_file},
    metrics,
    port::PortAllocator,
    supervisor::{Policy, Process, is_terminal, supervise},
};

/// Runs components as supervised processes through a [`ProcessBackend`].
#[derive(Debug)]
pub struct LocalRunner<B: ProcessBackend = ConfiguredBackend> {
    config: Arc<RunnerConfig>,
    backend: Arc<B>,
    ports: PortAllocator,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    processes: HashMap<String, Arc<Process>>,
    /// Ids in start order, for forgetting the oldest ended ones.
    order: VecDeque<String>,
}

impl LocalRunner<ConfiguredBackend> {
    /// A runner over the backend `config.backend` names (host processes by
    /// default, or Kubernetes pods). `config` must be resolved (absolute
    /// directories); they are created here.
    pub fn new(config: RunnerConfig) -> Result<Self> {
        config.validate()?;
        let config = Arc::new(config);
        Self::with_backend(Arc::clone(&config), ConfiguredBackend::new(config))
    }

    /// Whether processes will be sandboxed, and why not when they will not.
    pub async fn sandbox_available(&self) -> std::result::Result<PathBuf, String> {
        self.backend.sandbox_available().await
    }
}

impl<B: ProcessBackend> LocalRunner<B> {
    /// A runner over any backend.
    pub fn with_backend(config: Arc<RunnerConfig>, backend: B) -> Result<Self> {
        config.validate()?;
        for dir in [&config.log_dir, &config.tmp_dir] {
            std::fs::create_dir_all(dir).map_err(|e| RunnerError::io("create", dir, e))?;
        }
        Ok(Self {
            ports: PortAllocator::new(config.port_range_start, config.port_range_end),
            config,
            backend: Arc::new(backend),
            table: Mutex::new(Table::default()),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, process_id: &str) -> Result<Arc<Process>> {
        self.table()
            .processes
            .get(process_id)
            .cloned()
            .ok_or_else(|| RunnerError::ProcessNotFound(process_id.to_owned()))
    }

    /// Refuses a second live process for the same component of a run, and
    /// more than `max_live_processes`.
    fn check_capacity(&self, run_id: &str, component: &str) -> Result<()> {
        let table = self.table();
        let mut live = 0;
        for process in table.processes.values() {
            if is_terminal(process.state()) {
                continue;
            }
            live += 1;
            if process.run_id == run_id && process.component == component {
                return Err(RunnerError::AlreadyRunning {
                    run_id: run_id.to_owned(),
                    component: component.to_owned(),
                    process_id: process.id.clone(),
                });
            }
        }
        if live >= self.config.max_live_processes {
            return Err(RunnerError::Exhausted(format!(
                "the runner supervises {live} processes, its limit; stop some first"
            )));
        }
        Ok(())
    }

    fn insert(&self, process: Arc<Process>) {
        let mut table = self.table();
        table.order.push_back(process.id.clone());
        table.processes.insert(process.id.clone(), process);
        // Forget the oldest ended processes beyond the retention bound.
        let mut excess = table
            .processes
            .len()
            .saturating_sub(self.config.max_retained_processes);
        let mut kept = VecDeque::with_capacity(table.order.len());
        while let Some(id) = table.order.pop_front() {
            let ended = table.processes.get(&id).is_none_or(|p| is_terminal(p.state()));
            if excess > 0 && ended {
                table.processes.remove(&id);
                excess -= 1;
            } else {
                kept.push_back(id);
            }
        }
        table.order = kept;
    }

    fn limits(&self, spec: &StartSpec) -> Limits {
        let asked = spec.limits.unwrap_or_default();
        let d = &self.config.default_limits;
        let pick32 = |asked: u32, default: u32| if asked == 0 { default } else { asked };
        Limits {
            memory_bytes: if asked.memory_bytes == 0 {
                d.memory_bytes
            } else {
                asked.memory_bytes
            },
            cpu_millis: pick32(asked.cpu_millis, d.cpu_millis),
            max_processes: pick32(asked.max_processes, d.max_processes),
            max_open_files: pick32(asked.max_open_files, d.max_open_files),
            max_file_bytes: if asked.max_file_bytes == 0 {
                d.max_file_bytes
            } else {
                asked.max_file_bytes
            },
            max_runtime_seconds: pick32(asked.max_runtime_seconds, d.max_runtime_seconds),
        }
    }

    async fn start_inner(&self, spec: StartSpec) -> Result<ProcessStatus> {
        let component = &spec.component;
        command::check_segment("run_id", &spec.run_id)?;
        command::check_segment("component name", &component.name)?;
        let run = component
            .start
            .as_ref()
            .map(|start| start.run.trim())
            .filter(|run| !run.is_empty())
            .ok_or_else(|| RunnerError::NotStartable {
                component: component.name.clone(),
                reason: "the plan gives none, so there is nothing to run".into(),
            })?;
        if run.contains('\0') {
            return Err(RunnerError::invalid("the start command contains a NUL byte"));
        }
        let workspace = workspace_dir(&spec.workspace_path).await?;
        self.config.check_workspace(&workspace)?;
        let relative = component
            .start
            .as_ref()
            .map(|s| s.working_dir.as_str())
            .filter(|d| !d.is_empty())
            .unwrap_or(component.path.as_str());
        let working_dir = working_dir(&workspace, relative).await?;
        let requested: IpAddr = if spec.bind_host.trim().is_empty() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            spec.bind_host.trim().parse().map_err(|_| {
                RunnerError::invalid(format!("bind_host {:?} is not an IP address", spec.bind_host))
            })?
        };
        let host = self.backend.listen_host().unwrap_or(requested);
        let binding = PortBinding::parse(&component.port_binding)?;
        self.check_capacity(&spec.run_id, &component.name)?;

        let port = match (&binding, u16::try_from(component.port)) {
            // No binding, a fixed port: the program listens there.
            (PortBinding::None, Ok(fixed)) if fixed != 0 => Some(fixed),
            (PortBinding::None, _) if !listens(component.kind()) => None,
            _ => Some(self.ports.allocate(host)?),
        };
        let host_text = host.to_string();
        let command_line =
            command::start_command(run, &binding, port, &host_text, self.config.force_bind_host);

        let tmp_dir = self.config.tmp_dir.join(&spec.run_id);
        let log_dir = self.config.log_dir.join(&spec.run_id);
        // `home` is the sandboxed process's HOME (see backend::local::sandbox_home).
        let home_dir = tmp_dir.join("home");
        for dir in [&tmp_dir, &log_dir, &home_dir] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| RunnerError::io("create", dir.as_path(), e))?;
        }
        let mut own: BTreeMap<String, String> = BTreeMap::from([
            ("HOST".into(), host_text.clone()),
            ("TMPDIR".into(), tmp_dir.display().to_string()),
        ]);
        if let Some(port) = port {
            own.insert("PORT".into(), port.to_string());
            if let PortBinding::Env(name) = &binding {
                command::check_env_name(name)?;
                own.insert(name.clone(), port.to_string());
            }
        }
        let passed = self
            .config
            .pass_env
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)));
        let defaults = component
            .env
            .iter()
            .filter(|var| !var.default_value.is_empty())
            .map(|var| (var.name.clone(), var.default_value.clone()));
        let env = command::environment(passed, defaults, &spec.env, own)?;

        let limits = self.limits(&spec);
        let process_id = format!("proc-{}", uuid::Uuid::new_v4().simple());
        let launch = LaunchSpec {
            process_id: process_id.clone(),
            run_id: spec.run_id.clone(),
            component: component.name.clone(),
            command: command_line.clone(),
            workspace,
            working_dir,
            env,
            limits,
            tmp_dir,
            owner: (!spec.owner_id.is_empty()).then(|| spec.owner_id.clone()),
        };
        let policy = Policy {
            restart: spec.restart_policy,
            max_restarts: if spec.max_restarts == 0 {
                self.config.default_max_restarts
            } else {
                spec.max_restarts.min(self.config.max_restarts_cap)
            },
            deadline: (limits.max_runtime_seconds > 0).then(|| {
                tokio::time::Instant::now() + Duration::from_secs(limits.max_runtime_seconds.into())
            }),
        };

        let (file_tx, file_rx) = mpsc::channel(4096);
        let log_path = log_dir.join(format!("{}.log", component.name));
        let logs = LogBuffer::new(
            component.name.clone(),
            self.config.log_buffer_lines,
            Some(file_tx),
        );
        logs.push(
            reporunner_proto::common::v1::LogStream::System,
            format!(
                "starting {} in {}: {command_line}",
                component.name,
                relative_display(relative)
            ),
        );
        let spawned = self.backend.spawn(&launch).await?;
        tokio::spawn(write_file(log_path, self.config.max_log_file_bytes, file_rx));

        let url = match port {
            Some(port) if listens(component.kind()) || !component.port_binding.is_empty() => {
                let shown = match spawned.address {
                    Some(address) => command::url_host(&address.to_string()),
                    None if host.is_unspecified() => "127.0.0.1".to_owned(),
                    None => command::url_host(&host_text),
                };
                // A service that speaks something else is reached at its
                // address, not at an HTTP URL.
                let scheme = if component.kind() == ComponentKind::Service {
                    "tcp"
                } else {
                    "http"
                };
                format!("{scheme}://{shown}:{port}")
            }
            _ => String::new(),
        };
        let status = ProcessStatus {
            process_id: process_id.clone(),
            component: component.name.clone(),
            state: ProcessState::Running.into(),
            pid: spawned.pid,
            port: port.map_or(0, u32::from),
            url,
            exit_code: 0,
            restarts: 0,
            started_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            sandboxed: spawned.isolation.sandboxed,
            sandbox_note: spawned.isolation.note.clone(),
        };
        if !spawned.isolation.note.is_empty() {
            logs.push(
                reporunner_proto::common::v1::LogStream::System,
                spawned.isolation.note.clone(),
            );
        }
        let process = Arc::new(Process::new(
            process_id.clone(),
            spec.run_id.clone(),
            component.name.clone(),
            logs,
            status.clone(),
        ));
        // A concurrent start of the same component may have won meanwhile;
        // dropping `spawned` then kills ours.
        self.check_capacity(&spec.run_id, &component.name)?;
        self.insert(Arc::clone(&process));
        metrics::started("started".into(), status.sandboxed);
        metrics::live(1.0);
        tracing::info!(process_id = %process_id, pid = status.pid, port = status.port, sandboxed = status.sandboxed, "process started");
        let task = tokio::spawn(supervise(
            Arc::clone(&self.backend),
            Arc::clone(&self.config),
            Arc::clone(&process),
            launch,
            spawned,
            policy,
        ));
        process.set_task(task);
        Ok(status)
    }
}

/// Whether a component of this kind listens on a port.
fn serves_http(kind: ComponentKind) -> bool {
    match kind {
        ComponentKind::Web | ComponentKind::Static | ComponentKind::Unspecified => true,
        ComponentKind::Worker | ComponentKind::Library | ComponentKind::Cli | ComponentKind::Service => false,
    }
}

/// Whether a component of `kind` listens on a port (HTTP or not).
fn listens(kind: ComponentKind) -> bool {
    serves_http(kind) || kind == ComponentKind::Service
}

fn relative_display(relative: &str) -> &str {
    if relative.is_empty() { "." } else { relative }
}

/// The workspace, absolute, existing, with symlinks resolved.
async fn workspace_dir(path: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(RunnerError::invalid("workspace_path is required"));
    }
    if !path.is_absolute() {
        return Err(RunnerError::invalid(format!(
            "workspace_path {} must be absolute",
            path.display()
        )));
    }
    match tokio::fs::canonicalize(path).await {
        Ok(real) if real.is_dir() => Ok(real),
        _ => Err(RunnerError::PathNotFound {
            what: "workspace",
            path: path.to_path_buf(),
        }),
    }
}

/// `relative` inside `workspace`: no absolute paths, no `..`, existing.
async fn working_dir(workspace: &Path, relative: &str) -> Result<PathBuf> {
    let relative = Path::new(relative);
    if relative
        .components()
        .any(|part| !matches!(part, PathPart::Normal(_) | PathPart::CurDir))
    {
        return Err(RunnerError::invalid(format!(
            "the working directory {} must be relative to the workspace, without ..",
            relative.display()
        )));
    }
    let dir = workspace.join(relative);
    match tokio::fs::canonicalize(&dir).await {
        Ok(real) if real.is_dir() && real.starts_with(workspace) => Ok(real),
        Ok(_) => Err(RunnerError::invalid(format!(
            "the working directory {} leaves the workspace or is not a directory",
            relative.display()
        ))),
        Err(_) => Err(RunnerError::PathNotFound {
            what: "working directory",
            path: relative.to_path_buf(),
        }),
    }
}

impl<B: ProcessBackend> Runner for LocalRunner<B> {
    #[tracing::instrument(skip_all, fields(agent = "runner", run_id = %spec.run_id, component = %spec.component.name))]
    async fn start(&self, spec: StartSpec) -> Result<ProcessStatus> {
        let result = self.start_inner(spec).await;
        if let Err(err) = &result {
            metrics::started(format!("{:?}", err.kind().code()), false);
        }
        result
    }

    async fn stop(&self, process_id: String, grace_seconds: u32) -> Result<ProcessStatus> {
        let process = self.get(&process_id)?;
        let grace = if grace_seconds == 0 {
            self.config.default_grace
        } else {
            Duration::from_secs(grace_seconds.into()).min(self.config.max_grace)
        };
        process.stop(grace).await;
        Ok(process.status())
    }

    async fn status(&self, process_id: String) -> Result<ProcessStatus> {
        Ok(self.get(&process_id)?.status())
    }

    async fn logs(&self, spec: LogsSpec) -> Result<LogLines> {
        let process = self.get(&spec.process_id)?;
        let (tx, rx) = mpsc::channel::<LogLine>(256);
        tokio::spawn(async move {
            let mut lines = process.logs.subscribe();
            let mut state = process.subscribe_state();
            let mut after = spec.after_sequence;
            loop {
                lines.borrow_and_update();
                // Read before the lines: a terminal state means every line is in.
                let ended = is_terminal(*state.borrow_and_update());
                loop {
                    let batch = process.logs.after(after, 256);
                    if batch.is_empty() {
                        break;
                    }
                    for line in batch {
                        after = line.sequence;
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
                if !spec.follow || ended {
                    return;
                }
                tokio::select! {
                    _ = lines.changed() => {}
                    _ = state.changed() => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

impl<B: ProcessBackend> Drop for LocalRunner<B> {
    /// Ends supervision of every process; their groups are killed.
    fn drop(&mut self) {
        for process in self.table().processes.values() {
            process.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn working_dirs_stay_inside_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let ws = tokio::fs::canonicalize(dir.path()).await.unwrap();
        std::fs::create_dir(ws.join("api")).unwrap();
        assert_eq!(working_dir(&ws, "api").await.unwrap(), ws.join("api"));
        assert_eq!(working_dir(&ws, ".").await.unwrap(), ws);
        assert_eq!(working_dir(&ws, "").await.unwrap(), ws);
        assert!(matches!(
            working_dir(&ws, "../x").await,
            Err(RunnerError::InvalidRequest(_))
        ));
        assert!(matches!(
            working_dir(&ws, "/etc").await,
            Err(RunnerError::InvalidRequest(_))
        ));
        assert!(matches!(
            working_dir(&ws, "nope").await,
            Err(RunnerError::PathNotFound { .. })
        ));
        std::os::unix::fs::symlink("/etc", ws.join("out")).unwrap();
        assert!(matches!(
            working_dir(&ws, "out").await,
            Err(RunnerError::InvalidRequest(_))
        ));
    }

    #[tokio::test]
    async fn workspaces_must_be_absolute_and_exist() {
        assert!(matches!(
            workspace_dir(Path::new("rel")).await,
            Err(RunnerError::InvalidRequest(_))
        ));
        assert!(matches!(
            workspace_dir(Path::new("/no/such/ws")).await,
            Err(RunnerError::PathNotFound { .. })
        ));
    }
}
