//! The runner agent: starts the components of a run as supervised process
//! groups with an allocated port, captures their output, restarts them by
//! policy, enforces resource limits and stops them without leaving orphans.
//!
//! The domain lives behind [`Runner`] (implemented by [`LocalRunner`]);
//! [`grpc`] is a thin adapter. How a process comes to exist is a
//! [`backend::ProcessBackend`] ([`backend::LocalBackend`] for host
//! processes, `backend::KubernetesBackend` for pods, chosen by
//! `RunnerConfig::backend`); supervision, logs and restarts do not depend on it.
#![forbid(unsafe_code)]

pub mod backend;
pub mod command;
pub mod config;
pub mod error;
pub mod grpc;
pub mod logs;
pub mod metrics;
pub mod names;
pub mod port;
mod runner;
mod supervisor;

use std::{collections::BTreeMap, path::PathBuf, pin::Pin};

pub use backend::{ConfiguredBackend, LocalBackend, ProcessBackend};
pub use config::{BackendKind, DefaultLimits, KubernetesConfig, RunnerConfig, SandboxMode};
pub use error::{Result, RunnerError};
use futures::Stream;
pub use grpc::RunnerGrpc;
use reporunner_proto::{
    agents::runner::v1::{ProcessStatus, ResourceLimits, RestartPolicy},
    common::v1::{Component, LogLine},
};
pub use runner::LocalRunner;

/// One start.
#[derive(Clone, Debug, PartialEq)]
pub struct StartSpec {
    pub run_id: String,
    /// Absolute; must exist.
    pub workspace_path: PathBuf,
    pub component: Component,
    /// Extra env (install results, provisioned services, user overrides);
    /// wins over the plan's defaults.
    pub env: BTreeMap<String, String>,
    /// Zero fields take the configured defaults.
    pub limits: Option<ResourceLimits>,
    /// `Unspecified` means never.
    pub restart_policy: RestartPolicy,
    /// 0 takes the configured default.
    pub max_restarts: u32,
    /// Empty means 127.0.0.1.
    pub bind_host: String,
    /// Whose sandbox uid the process runs as; empty: the server's own
    /// (only the embedded single user).
    pub owner_id: String,
}

/// One logs request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsSpec {
    pub process_id: String,
    /// Keep going with new lines until the process ends.
    pub follow: bool,
    /// Only lines with a higher sequence.
    pub after_sequence: u64,
}

/// Log lines, oldest first.
pub type LogLines = Pin<Box<dyn Stream<Item = LogLine> + Send>>;

/// The runner's domain.
pub trait Runner: Send + Sync + 'static {
    /// Starts a component; returns once its first process is running.
    fn start(&self, spec: StartSpec) -> impl Future<Output = Result<ProcessStatus>> + Send;

    /// Stops a process and its whole group (SIGTERM, `grace_seconds`, then
    /// SIGKILL; 0 takes the configured grace). Idempotent.
    fn stop(
        &self,
        process_id: String,
        grace_seconds: u32,
    ) -> impl Future<Output = Result<ProcessStatus>> + Send;

    /// Where a process stands.
    fn status(&self, process_id: String) -> impl Future<Output = Result<ProcessStatus>> + Send;

    /// Captured output from `after_sequence`, then new lines when following.
    fn logs(&self, spec: LogsSpec) -> impl Future<Output = Result<LogLines>> + Send;
}
