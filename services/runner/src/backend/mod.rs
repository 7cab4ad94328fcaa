//! How a process is brought into existence, kept apart from how it is
//! supervised. [`LocalBackend`] runs host processes; [`KubernetesBackend`]
//! (feature `kubernetes`) runs each process as a pod; [`ConfiguredBackend`]
//! is whichever of them `RunnerConfig::backend` names.

#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod local;

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, sync::Arc};

#[cfg(feature = "kubernetes")]
pub use kubernetes::{KubernetesBackend, KubernetesProcess};
pub use local::{LocalBackend, LocalProcess, group_members};
use tokio::io::AsyncRead;

use crate::{config::RunnerConfig, error::Result};

/// The limits in force for one process (the sandbox's). Zero means no limit.
pub use reporunner_sandbox::Limits;

/// Everything a backend needs to start one process.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    pub process_id: String,
    pub run_id: String,
    pub component: String,
    /// The final shell command line, run with `sh -c`.
    pub command: String,
    /// The workspace root (the only writable tree besides `tmp_dir`).
    pub workspace: PathBuf,
    /// Where the command runs, inside `workspace`.
    pub working_dir: PathBuf,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    /// Per-run scratch space, writable.
    pub tmp_dir: PathBuf,
    /// Whose sandbox uid the process runs as.
    pub owner: Option<String>,
}

/// How a process is isolated, for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    pub sandboxed: bool,
    /// What is missing (sandbox, cgroup limits), in words; empty when nothing is.
    pub note: String,
}

/// A byte stream of the process's output.
pub type Output = Box<dyn AsyncRead + Send + Unpin>;

/// A started process with its output streams.
#[derive(Debug)]
pub struct Spawned<P> {
    pub process: P,
    /// The host process id; 0 where there is none (a pod).
    pub pid: u32,
    /// Where the process is reached when not on this host (a pod's IP).
    pub address: Option<IpAddr>,
    pub stdout: Option<OutputStream>,
    pub stderr: Option<OutputStream>,
    pub isolation: Isolation,
}

/// An output stream (a newtype so that [`Spawned`] can be `Debug`).
pub struct OutputStream(pub Output);

impl std::fmt::Debug for OutputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputStream")
    }
}

/// How to ask a process group to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// Please end (SIGTERM).
    Terminate,
    /// End now (SIGKILL).
    Kill,
}

/// Starts processes.
pub trait ProcessBackend: Send + Sync + 'static {
    type Process: BackendProcess;

    /// Starts one process. Fails with `SandboxUnavailable` when the sandbox
    /// is required and cannot be used.
    fn spawn(&self, spec: &LaunchSpec) -> impl Future<Output = Result<Spawned<Self::Process>>> + Send;

    /// The address processes must listen on instead of the requested bind
    /// host: a pod listens on all its interfaces so that the health agent
    /// reaches it at its IP. `None` keeps the request's.
    fn listen_host(&self) -> Option<IpAddr> {
        None
    }
}

/// A started process and everything it started.
///
/// Dropping it must kill whatever is left of it.
pub trait BackendProcess: Send + 'static {
    /// Waits for the main process to end: its exit code, or 128 + the
    /// signal that ended it.
    fn wait(&mut self) -> impl Future<Output = Result<i32>> + Send;

    /// Signals every process it started. Not an error when they are gone.
    fn signal(&self, signal: StopSignal);

    /// Whether anything it started is still running.
    fn group_alive(&self) -> bool;

    /// After the main process ended: ends what is left of the group and
    /// releases resources (cgroups).
    fn cleanup(&mut self) -> impl Future<Output = ()> + Send;
}

/// The backend `RunnerConfig::backend` names.
#[derive(Debug)]
pub enum ConfiguredBackend {
    Local(LocalBackend),
    #[cfg(feature = "kubernetes")]
    Kubernetes(KubernetesBackend),
}

impl ConfiguredBackend {
    /// The backend of `config` (validated by the caller).
    pub fn new(config: Arc<RunnerConfig>) -> Self {
        #[cfg(feature = "kubernetes")]
        if config.backend == crate::config::BackendKind::Kubernetes {
            return Self::Kubernetes(KubernetesBackend::new(config));
        }
        // Without the feature, `RunnerConfig::validate` refuses `kubernetes`.
        Self::Local(LocalBackend::new(config))
    }

    /// Whether processes will be sandboxed, and why not when they will not.
    pub async fn sandbox_available(&self) -> std::result::Result<PathBuf, String> {
        match self {
            Self::Local(local) => local.sandbox_available().await,
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes(_) => Err("processes run as Kubernetes pods, not in bubblewrap".into()),
        }
    }
}

/// A process of a [`ConfiguredBackend`]. One lives per supervised process,
/// held by its supervisor task, so the variants' sizes do not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ConfiguredProcess {
    Local(LocalProcess),
    #[cfg(feature = "kubernetes")]
    Kubernetes(KubernetesProcess),
}

fn map_spawned<P>(
    spawned: Spawned<P>,
    wrap: impl FnOnce(P) -> ConfiguredProcess,
) -> Spawned<ConfiguredProcess> {
    Spawned {
        process: wrap(spawned.process),
        pid: spawned.pid,
        address: spawned.address,
        stdout: spawned.stdout,
        stderr: spawned.stderr,
        isolation: spawned.isolation,
    }
}

impl ProcessBackend for ConfiguredBackend {
    type Process = ConfiguredProcess;

    async fn spawn(&self, spec: &LaunchSpec) -> Result<Spawned<ConfiguredProcess>> {
        match self {
            Self::Local(local) => Ok(map_spawned(local.spawn(spec).await?, ConfiguredProcess::Local)),
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes(kube) => Ok(map_spawned(
                kube.spawn(spec).await?,
                ConfiguredProcess::Kubernetes,
            )),
        }
    }

    fn listen_host(&self) -> Option<IpAddr> {
        match self {
            Self::Local(local) => local.listen_host(),
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes(kube) => kube.listen_host(),
        }
    }
}

impl BackendProcess for ConfiguredProcess {
    async fn wait(&mut self) -> Result<i32> {
        match self {
            Self::Local(p) => p.wait().await,
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes(p) => p.wait().await,
        }
    }

    fn signal(&self, signal: StopSignal) {
        match self {
            Self::Local(p) => p.signal(signal),
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes(p) => p.signal(signal),
        }
    }

    fn group_alive(&self) -> bool {
        match self {
            Self::Local(p) => p.group_alive(),
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes(p) => p.group_alive(),
        }
    }

    async fn cleanup(&mut self) {
        match self {
            Self::Local(p) => p.cleanup().await,
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes(p) => p.cleanup().await,
        }
    }
}

/// Whether `name` is an RFC 1123 DNS label (namespaces, claim names).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `text` is an IPv4 or IPv6 CIDR (`10.0.0.0/8`, `::/0`).
pub fn is_cidr(text: &str) -> bool {
    let Some((addr, bits)) = text.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_cidrs_are_checked() {
        assert!(is_dns_label("reporunner-runs"));
        assert!(!is_dns_label("Runs"));
        assert!(!is_dns_label("-runs"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("::/0"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(!is_cidr("example/8"));
    }
}
