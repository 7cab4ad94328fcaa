//! How a process is brought into existence, kept apart from how it is
//! supervised. [`LocalBackend`] runs host processes; [`KubernetesBackend`]
//! (feature `kubernetes`) runs each process as a pod; [`ConfiguredBackend`]
//! is whichever of them `RunnerConfig::backend` names.

#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod local;

use std::{net::IpAddr, path::PathBuf, sync::Arc};

#[cfg(feature = "kubernetes")]
pub use kubernetes::{KubernetesBackend, KubernetesProcess};
pub use local::{LocalBackend, LocalProcess, group_members};
use tokio::io::AsyncRead;

pub use crate::names::{is_cidr, is_dns_label};
use crate::{config::RunnerConfig, error::Result};

/// The limits in force for one process (the sandbox's). Zero means no limit.
pub use reporunner_sandbox::Limits;

/// Everything a backend needs to start one process (the sandbox's, which
/// the tester shares).
pub use reporunner_sandbox::process::LaunchSpec;

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
pub use reporunner_sandbox::process::StopSignal;

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
