//! Host processes: one process group each, in the shared sandbox
//! (`reporunner-sandbox`: bubblewrap, a per-owner uid, rlimits or a cgroup
//! v2). What a process may see and write, and the group's signals and
//! cleanup, are `reporunner_sandbox::process`'s (the tester starts its test
//! runs there too); this file adapts them to [`ProcessBackend`].

use std::{path::PathBuf, sync::Arc};

pub use reporunner_sandbox::process::{LocalProcess, group_members};
use reporunner_sandbox::{
    Sandbox, SandboxError,
    process::{ProcessSettings, spawn},
};

use super::{BackendProcess, Isolation, LaunchSpec, OutputStream, ProcessBackend, Spawned, StopSignal};
use crate::{
    config::RunnerConfig,
    error::{Result, RunnerError},
};

/// Runs processes on this host.
#[derive(Debug)]
pub struct LocalBackend {
    settings: Arc<ProcessSettings>,
    sandbox: Sandbox,
}

impl LocalBackend {
    pub fn new(config: Arc<RunnerConfig>) -> Self {
        let settings = config.process_settings();
        let sandbox = Sandbox::new(settings.sandbox_config());
        Self {
            settings: Arc::new(settings),
            sandbox,
        }
    }

    /// Whether bubblewrap can be used (checked once, with a self-test), and
    /// why not when it cannot.
    pub async fn sandbox_available(&self) -> Result<PathBuf, String> {
        self.sandbox.available().await
    }
}

impl ProcessBackend for LocalBackend {
    type Process = LocalProcess;

    async fn spawn(&self, spec: &LaunchSpec) -> Result<Spawned<LocalProcess>> {
        let spawned = spawn(&self.sandbox, &self.settings, spec)
            .await
            .map_err(|e| match e {
                SandboxError::Unavailable(why) => RunnerError::SandboxUnavailable(why),
                SandboxError::Prepare { path, source } => {
                    RunnerError::io("prepare", std::path::Path::new(&path), source)
                }
                SandboxError::Spawn { program, source } => RunnerError::Spawn { program, source },
            })?;
        Ok(Spawned {
            process: spawned.process,
            pid: spawned.pid,
            address: None,
            stdout: spawned.stdout.map(|s| OutputStream(Box::new(s))),
            stderr: spawned.stderr.map(|s| OutputStream(Box::new(s))),
            isolation: Isolation {
                sandboxed: spawned.sandboxed,
                note: spawned.note,
            },
        })
    }
}

impl BackendProcess for LocalProcess {
    async fn wait(&mut self) -> Result<i32> {
        self.wait_exit()
            .await
            .map_err(|source| RunnerError::io("wait for", "a child process", source))
    }

    fn signal(&self, signal: StopSignal) {
        LocalProcess::signal(self, signal);
    }

    fn group_alive(&self) -> bool {
        LocalProcess::group_alive(self)
    }

    async fn cleanup(&mut self) {
        LocalProcess::cleanup(self).await;
    }
}
