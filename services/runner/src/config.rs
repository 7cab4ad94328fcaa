//! The runner agent's settings.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RunnerError};

pub use reporunner_sandbox::SandboxMode;
use reporunner_sandbox::{Limits, SandboxConfig, process::ProcessSettings};

/// Where the processes of a run execute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Process groups on this host (bubblewrap, prlimit, cgroups).
    #[default]
    Local,
    /// One pod per process in a Kubernetes cluster (needs the `kubernetes`
    /// cargo feature, on by default).
    Kubernetes,
}

/// Settings of the Kubernetes backend (`[runner.kubernetes]`).
///
/// The runner must see the shared workspace volume (a ReadWriteMany
/// PersistentVolumeClaim) mounted at `volume_root`: a workspace, a run's
/// install environments and the package-manager tools under that path are
/// mounted into the run's pod at the same absolute paths, as `subPath`s of
/// the claim, so the plan's paths and `VIRTUAL_ENV` stay valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Namespace of the run pods; empty: the namespace of the runner's own
    /// service account (or `default` outside a cluster).
    pub namespace: String,
    /// The image of the run pods: it needs `sh` and the runtimes the
    /// repositories use (the project's image has git, Python, Node and uv).
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// The ReadWriteMany claim holding workspaces and install environments.
    pub volume_claim: String,
    /// Where the runner itself mounts `volume_claim` (its data directory).
    pub volume_root: PathBuf,
    /// The user and group the run pods run as (never root).
    pub run_as_user: i64,
    pub run_as_group: i64,
    /// A RuntimeClass for run pods (e.g. gVisor or Kata), when set.
    pub runtime_class: Option<String>,
    /// Node labels run pods must match.
    pub node_selector: BTreeMap<String, String>,
    /// Values of the `app.kubernetes.io/component` label of the mesh pods
    /// that may connect to a run pod (the health agent probes it; the
    /// orchestrator shows its URL).
    pub ingress_from_components: Vec<String>,
    /// Mesh pods a run pod may connect to (the provisioner's databases).
    pub egress_to_components: Vec<String>,
    /// CIDRs a run pod may connect to besides DNS, its own run and
    /// `egress_to_components` (e.g. `0.0.0.0/0` to let apps reach the
    /// internet). Empty: nothing else.
    pub egress_cidrs: Vec<String>,
    /// How long a pod may take to be scheduled, pull its image and start.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// The deadline of each call to the Kubernetes API.
    #[serde(with = "humantime_serde")]
    pub api_timeout: Duration,
    /// How often a running pod's status is read.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Size limit of the pod's scratch space (`TMPDIR`, `HOME`), in MiB.
    pub scratch_size_mib: u32,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            image: "reporunner:latest".into(),
            image_pull_policy: "IfNotPresent".into(),
            volume_claim: "reporunner-workspaces".into(),
            volume_root: PathBuf::from("/var/lib/reporunner"),
            run_as_user: 10001,
            run_as_group: 10001,
            runtime_class: None,
            node_selector: BTreeMap::new(),
            ingress_from_components: vec!["health".into(), "orchestrator".into()],
            egress_to_components: vec!["provisioner".into()],
            egress_cidrs: Vec::new(),
            start_timeout: Duration::from_secs(300),
            api_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            scratch_size_mib: 1024,
        }
    }
}

impl KubernetesConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(RunnerError::InvalidConfig(msg));
        if self.image.trim().is_empty() {
            return invalid("kubernetes.image must name an image".into());
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.image_pull_policy.as_str()) {
            return invalid(format!(
                "kubernetes.image_pull_policy {:?} is not Always, IfNotPresent or Never",
                self.image_pull_policy
            ));
        }
        if !self.namespace.is_empty() && !crate::names::is_dns_label(&self.namespace) {
            return invalid(format!(
                "kubernetes.namespace {:?} is not a DNS label",
                self.namespace
            ));
        }
        if !crate::names::is_dns_label(&self.volume_claim) {
            return invalid(format!(
                "kubernetes.volume_claim {:?} is not a valid claim name",
                self.volume_claim
            ));
        }
        if !self.volume_root.is_absolute() || self.volume_root.parent().is_none() {
            return invalid("kubernetes.volume_root must be an absolute path other than /".into());
        }
        if self.run_as_user <= 0 || self.run_as_group <= 0 {
            return invalid("kubernetes.run_as_user and run_as_group must be above 0 (never root)".into());
        }
        if let Some(bad) = self.egress_cidrs.iter().find(|c| !crate::names::is_cidr(c)) {
            return invalid(format!("kubernetes.egress_cidrs entry {bad:?} is not a CIDR"));
        }
        if self.start_timeout.is_zero() || self.api_timeout.is_zero() || self.poll_interval.is_zero() {
            return invalid(
                "kubernetes.start_timeout, api_timeout and poll_interval must be above zero".into(),
            );
        }
        Ok(())
    }
}

/// Resource limits used where a request leaves a field at zero. Zero here
/// means "no limit".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefaultLimits {
    pub memory_bytes: u64,
    pub cpu_millis: u32,
    pub max_processes: u32,
    pub max_open_files: u32,
    pub max_file_bytes: u64,
    pub max_runtime_seconds: u32,
}

impl From<DefaultLimits> for Limits {
    fn from(d: DefaultLimits) -> Self {
        Self {
            memory_bytes: d.memory_bytes,
            cpu_millis: d.cpu_millis,
            max_processes: d.max_processes,
            max_open_files: d.max_open_files,
            max_file_bytes: d.max_file_bytes,
            max_runtime_seconds: d.max_runtime_seconds,
        }
    }
}

impl From<Limits> for DefaultLimits {
    fn from(l: Limits) -> Self {
        Self {
            memory_bytes: l.memory_bytes,
            cpu_millis: l.cpu_millis,
            max_processes: l.max_processes,
            max_open_files: l.max_open_files,
            max_file_bytes: l.max_file_bytes,
            max_runtime_seconds: l.max_runtime_seconds,
        }
    }
}

/// Settings of the runner agent. Unknown keys are refused (a typo in
/// `[runner]` would otherwise be ignored silently).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerConfig {
    /// Where log files go: `<log_dir>/<run_id>/<component>.log`. A relative
    /// path is relative to the service's data directory: the integrator
    /// resolves it with [`RunnerConfig::resolve`] before [`validate`](Self::validate).
    pub log_dir: PathBuf,
    /// Per-run scratch space (`TMPDIR`, writable in the sandbox):
    /// `<tmp_dir>/<run_id>`. Relative paths resolve like `log_dir`.
    pub tmp_dir: PathBuf,
    /// Paths hidden from sandboxed processes (an empty tmpfs over each), e.g.
    /// the workspace root and the service's data directory. The parent of the
    /// process's own workspace, `log_dir` and `tmp_dir` are always hidden.
    pub hidden_paths: Vec<PathBuf>,
    /// Extra paths bound writable into the sandbox when they exist, e.g.
    /// package-manager caches under `$HOME` (`~/.npm`, `~/.gradle`,
    /// `~/.cache`); everything else outside the workspace is read-only.
    pub writable_paths: Vec<PathBuf>,
    /// Where the dependency agent makes per-run environments
    /// (`<dir>/<run_id>/<component>/...`, e.g. `.venv`, `target`). A
    /// sandboxed process gets its own run's `VIRTUAL_ENV` and
    /// `CARGO_TARGET_DIR` from here bound back writable. Relative paths
    /// resolve like `log_dir`; keep it equal to the dependency agent's `env_dir`.
    pub install_env_dir: PathBuf,
    /// Package managers the dependency agent installed (its `tools_dir`):
    /// `PATH` entries here are bound back read-only.
    pub install_tools_dir: PathBuf,
    /// Lines kept in memory per process (the `Logs` backlog).
    pub log_buffer_lines: usize,
    /// Longer lines are cut there (bytes), with a marker.
    pub max_line_bytes: usize,
    /// A log file that reaches this size is rotated to `<component>.log.1`
    /// (one old file is kept).
    pub max_log_file_bytes: u64,
    /// First port of the range ports are allocated from; 0 (with
    /// `port_range_end` 0) lets the OS choose any free port.
    pub port_range_start: u16,
    /// Last port of the range, inclusive.
    pub port_range_end: u16,
    /// Rewrite `--host 0.0.0.0` (and `--hostname`) in start commands to the
    /// bind host.
    pub force_bind_host: bool,
    /// bubblewrap use.
    pub sandbox: SandboxMode,
    /// The bubblewrap executable.
    pub bwrap_binary: PathBuf,
    /// The util-linux `prlimit` executable, used to apply rlimits.
    pub prlimit_binary: PathBuf,
    /// The util-linux `setpriv` executable, used to drop to the owner's uid.
    pub setpriv_binary: PathBuf,
    /// Run every process under its owner's own host uid (when the server is
    /// root), never as root.
    pub unprivileged: bool,
    /// Where workspaces may lie (the source agent's root); a workspace
    /// elsewhere is refused. Empty: anywhere (library use; the node sets it).
    pub workspace_roots: Vec<PathBuf>,
    /// The dependency agent's per-owner caches (`<cache_dir>/owners`): an
    /// install env var (CARGO_HOME) inside the process owner's is bound
    /// writable.
    pub owner_caches: Option<PathBuf>,
    /// The cgroup v2 directory under which each process gets its own cgroup
    /// (`memory.max`, `cpu.max`, `pids.max`). Used when it exists (or can be
    /// created) and has those controllers; otherwise only rlimits apply.
    pub cgroup_parent: Option<PathBuf>,
    /// Environment variables of the service passed on to processes (only
    /// those that are set). Everything else comes from the plan and request.
    pub pass_env: Vec<String>,
    /// Processes not yet in a terminal state, at most.
    pub max_live_processes: usize,
    /// Processes remembered after they ended (for Status and Logs); the
    /// oldest ended ones are forgotten first.
    pub max_retained_processes: usize,
    /// Restarts allowed when a request gives 0.
    pub default_max_restarts: u32,
    /// Restarts no request can raise.
    pub max_restarts_cap: u32,
    /// First delay before a restart; it doubles with every restart.
    #[serde(with = "humantime_serde")]
    pub restart_backoff_initial: Duration,
    /// The longest delay before a restart.
    #[serde(with = "humantime_serde")]
    pub restart_backoff_max: Duration,
    /// Time between SIGTERM and SIGKILL when a request gives 0.
    #[serde(with = "humantime_serde")]
    pub default_grace: Duration,
    /// The longest grace a request may ask for.
    #[serde(with = "humantime_serde")]
    pub max_grace: Duration,
    /// Limits where the request leaves a field at 0.
    pub default_limits: DefaultLimits,
    /// Where processes run: `local` (default) or `kubernetes`.
    pub backend: BackendKind,
    /// The Kubernetes backend's settings.
    pub kubernetes: KubernetesConfig,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        // The sandbox's defaults are the shared process settings' (the
        // tester starts its test runs with the same ones).
        let process = ProcessSettings::default();
        Self {
            log_dir: process.log_dir,
            tmp_dir: process.tmp_dir,
            hidden_paths: process.hidden_paths,
            writable_paths: process.writable_paths,
            install_env_dir: process.install_env_dir,
            install_tools_dir: process.install_tools_dir,
            log_buffer_lines: 10_000,
            max_line_bytes: 16 * 1024,
            max_log_file_bytes: 64 * 1024 * 1024,
            port_range_start: 0,
            port_range_end: 0,
            force_bind_host: true,
            // `serve` refuses to run repositories unsandboxed unless the
            // operator says so (`auto` or `off`); the embedded single-user
            // CLI runs with `auto` and warns.
            sandbox: process.sandbox,
            bwrap_binary: process.bwrap_binary,
            prlimit_binary: process.prlimit_binary,
            setpriv_binary: process.setpriv_binary,
            unprivileged: process.unprivileged,
            workspace_roots: process.workspace_roots,
            owner_caches: process.owner_caches,
            cgroup_parent: process.cgroup_parent,
            pass_env: process.pass_env,
            max_live_processes: 256,
            max_retained_processes: 1024,
            default_max_restarts: 3,
            max_restarts_cap: 100,
            restart_backoff_initial: Duration::from_millis(500),
            restart_backoff_max: Duration::from_secs(30),
            default_grace: Duration::from_secs(10),
            max_grace: Duration::from_secs(120),
            default_limits: process.default_limits.into(),
            backend: BackendKind::Local,
            kubernetes: KubernetesConfig::default(),
        }
    }
}

impl RunnerConfig {
    /// The sandbox settings of this runner's processes (and of the tester's,
    /// which share them).
    pub fn process_settings(&self) -> ProcessSettings {
        ProcessSettings {
            log_dir: self.log_dir.clone(),
            tmp_dir: self.tmp_dir.clone(),
            hidden_paths: self.hidden_paths.clone(),
            writable_paths: self.writable_paths.clone(),
            install_env_dir: self.install_env_dir.clone(),
            install_tools_dir: self.install_tools_dir.clone(),
            workspace_roots: self.workspace_roots.clone(),
            owner_caches: self.owner_caches.clone(),
            pass_env: self.pass_env.clone(),
            default_limits: self.default_limits.into(),
            sandbox: self.sandbox,
            bwrap_binary: self.bwrap_binary.clone(),
            prlimit_binary: self.prlimit_binary.clone(),
            setpriv_binary: self.setpriv_binary.clone(),
            unprivileged: self.unprivileged,
            cgroup_parent: self.cgroup_parent.clone(),
        }
    }

    /// The shared sandbox's settings for this runner's processes.
    pub fn sandbox_config(&self) -> SandboxConfig {
        self.process_settings().sandbox_config()
    }

    /// Refuses a (canonical) workspace outside `workspace_roots`.
    pub fn check_workspace(&self, workspace: &std::path::Path) -> Result<()> {
        self.process_settings()
            .check_workspace(workspace)
            .map_err(RunnerError::invalid)
    }

    /// Resolves relative `log_dir`, `tmp_dir` and `hidden_paths` against the
    /// service's data directory (and hides the data directory itself), as
    /// [`ProcessSettings::resolve`] does.
    pub fn resolve(mut self, data_dir: &std::path::Path) -> Self {
        let resolved = self.process_settings().resolve(data_dir);
        self.log_dir = resolved.log_dir;
        self.tmp_dir = resolved.tmp_dir;
        self.install_env_dir = resolved.install_env_dir;
        self.install_tools_dir = resolved.install_tools_dir;
        self.hidden_paths = resolved.hidden_paths;
        self
    }

    /// The delay before restart number `restart` (1-based).
    pub fn backoff(&self, restart: u32) -> Duration {
        let factor = 1u64
            .checked_shl(restart.saturating_sub(1).min(32))
            .unwrap_or(u64::MAX);
        let initial = u64::try_from(self.restart_backoff_initial.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(initial.saturating_mul(factor)).min(self.restart_backoff_max)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(RunnerError::InvalidConfig(msg));
        // Paths, hidden and writable paths, the cgroup parent.
        self.process_settings()
            .validate()
            .map_err(RunnerError::InvalidConfig)?;
        if self.log_buffer_lines == 0 || self.log_buffer_lines > 10_000_000 {
            return invalid("log_buffer_lines must be between 1 and 10000000".into());
        }
        if self.max_line_bytes < 80 || self.max_line_bytes > 1024 * 1024 {
            return invalid("max_line_bytes must be between 80 and 1048576".into());
        }
        if self.max_log_file_bytes < 4096 {
            return invalid("max_log_file_bytes must be at least 4096".into());
        }
        if self.port_range_start > self.port_range_end
            || (self.port_range_start == 0) != (self.port_range_end == 0)
        {
            return invalid("port_range_start..=port_range_end must be a non-empty range, or both 0".into());
        }
        if self.max_live_processes == 0 || self.max_retained_processes == 0 {
            return invalid("max_live_processes and max_retained_processes must be at least 1".into());
        }
        if self.default_max_restarts > self.max_restarts_cap {
            return invalid("default_max_restarts must not exceed max_restarts_cap".into());
        }
        if self.restart_backoff_initial.is_zero() || self.restart_backoff_initial > self.restart_backoff_max {
            return invalid(
                "restart_backoff_initial must be above zero and at most restart_backoff_max".into(),
            );
        }
        if self.default_grace.is_zero() || self.default_grace > self.max_grace {
            return invalid("default_grace must be above zero and at most max_grace".into());
        }
        if self.backend == BackendKind::Kubernetes {
            if !cfg!(feature = "kubernetes") {
                return invalid(
                    "backend = \"kubernetes\" needs the runner built with the `kubernetes` feature".into(),
                );
            }
            self.kubernetes.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolved_against_a_data_dir_are_valid() {
        let config = RunnerConfig::default().resolve(std::path::Path::new("/srv/data"));
        config.validate().unwrap();
        assert_eq!(config.log_dir, PathBuf::from("/srv/data/runner/logs"));
        assert!(config.hidden_paths.contains(&PathBuf::from("/srv/data")));
        assert!(config.force_bind_host);
    }

    #[test]
    fn unresolved_relative_log_dirs_are_refused() {
        let err = RunnerConfig::default().validate().unwrap_err();
        assert!(err.to_string().contains("log_dir"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = RunnerConfig::default();
        assert_eq!(config.backoff(1), Duration::from_millis(500));
        assert_eq!(config.backoff(2), Duration::from_secs(1));
        assert_eq!(config.backoff(3), Duration::from_secs(2));
        assert_eq!(config.backoff(60), Duration::from_secs(30));
    }

    #[test]
    fn half_open_port_ranges_are_refused() {
        let config = RunnerConfig {
            port_range_start: 4000,
            ..RunnerConfig::default().resolve(std::path::Path::new("/d"))
        };
        assert!(config.validate().unwrap_err().to_string().contains("port_range"));
    }

    #[test]
    fn the_kubernetes_backend_is_chosen_by_name_and_checked() {
        let config: RunnerConfig = serde_json::from_str(
            r#"{"backend": "kubernetes", "kubernetes": {"namespace": "runs", "egress_cidrs": ["10.0.0.0/8"]}}"#,
        )
        .unwrap();
        assert_eq!(config.backend, BackendKind::Kubernetes);
        assert_eq!(config.kubernetes.namespace, "runs");
        assert_eq!(config.kubernetes.volume_claim, "reporunner-workspaces");
        let resolved = config.resolve(std::path::Path::new("/var/lib/reporunner"));
        resolved.validate().unwrap();

        for (field, bad) in [
            ("image_pull_policy", r#"{"image_pull_policy": "Sometimes"}"#),
            ("namespace", r#"{"namespace": "Not_A_Label"}"#),
            ("egress_cidrs", r#"{"egress_cidrs": ["10.0.0.0/33"]}"#),
            ("run_as_user", r#"{"run_as_user": 0}"#),
            ("volume_root", r#"{"volume_root": "relative"}"#),
        ] {
            let kubernetes: KubernetesConfig = serde_json::from_str(bad).unwrap();
            let config = RunnerConfig {
                backend: BackendKind::Kubernetes,
                kubernetes,
                ..RunnerConfig::default().resolve(std::path::Path::new("/d"))
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let typo = serde_json::from_str::<KubernetesConfig>(r#"{"imagee": "x"}"#).unwrap_err();
        assert!(typo.to_string().contains("imagee"), "{typo}");
        let typo = serde_json::from_str::<RunnerConfig>(r#"{"backnd": "kubernetes"}"#).unwrap_err();
        assert!(typo.to_string().contains("backnd"), "{typo}");
    }

    #[test]
    fn sandbox_modes_read_lowercase() {
        let config: RunnerConfig = serde_json::from_str(r#"{"sandbox": "required"}"#).unwrap();
        assert_eq!(config.sandbox, SandboxMode::Required);
        assert_eq!(config.log_buffer_lines, 10_000);
    }
}
