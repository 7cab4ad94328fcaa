//! How a process is brought into existence, kept apart from how it is
//! supervised. [`LocalBackend`] runs host processes; a Kubernetes backend
//! (pods) can implement the same trait later.

mod local;

use std::{collections::BTreeMap, path::PathBuf};

pub use local::{LocalBackend, LocalProcess, group_members};
use tokio::io::AsyncRead;

use crate::error::Result;

/// The limits in force for one process. Zero means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_millis: u32,
    pub max_processes: u32,
    pub max_open_files: u32,
    pub max_runtime_seconds: u32,
}

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
    pub pid: u32,
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
