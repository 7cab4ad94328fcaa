//! The dependency agent over real gRPC on loopback, installing from the real
//! registries. Caches and tools are shared between tests (under cargo's
//! target tmpdir), so that only the first test pays for downloads.
#![allow(clippy::unwrap_used, dead_code)]

use std::{path::Path, sync::Arc, time::Duration};

use futures::StreamExt as _;
use reporunner_dependency::{DependencyConfig, LocalInstaller, grpc::DependencyGrpc};
use reporunner_proto::{
    agents::dependency::v1::{
        InstallLimits, InstallRequest, InstallResult, dependency_service_client::DependencyServiceClient,
        install_response,
    },
    common::v1::{Command, Component, LogLine, Runtime},
};
use reporunner_server::GrpcServer;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct Agent {
    pub client: DependencyServiceClient<Channel>,
    pub shutdown: CancellationToken,
    /// Holds the per-test env dir.
    pub data: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An agent whose caches and tools are shared by every test.
pub async fn agent() -> Agent {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dependency-agent");
    let data = tempfile::tempdir().unwrap();
    let config = DependencyConfig {
        cache_dir: shared.join("cache"),
        tools_dir: shared.join("tools"),
        env_dir: data.path().join("envs"),
        disk_check_interval: Duration::from_millis(200),
        ..DependencyConfig::default()
    };
    serve(config, data).await
}

/// An agent with a download cache of its own (the tools are shared): a
/// wheel an earlier test built is not served from the cache, so the build
/// happens here.
pub async fn agent_with_own_cache() -> Agent {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dependency-agent");
    let data = tempfile::tempdir().unwrap();
    let config = DependencyConfig {
        cache_dir: data.path().join("cache"),
        tools_dir: shared.join("tools"),
        env_dir: data.path().join("envs"),
        disk_check_interval: Duration::from_millis(200),
        ..DependencyConfig::default()
    };
    serve(config, data).await
}

/// An agent with nothing installed yet: its own tools dir and cache.
pub async fn fresh_agent() -> Agent {
    let data = tempfile::tempdir().unwrap();
    let config = DependencyConfig {
        cache_dir: data.path().join("cache"),
        tools_dir: data.path().join("tools"),
        env_dir: data.path().join("envs"),
        disk_check_interval: Duration::from_millis(200),
        ..DependencyConfig::default()
    };
    serve(config, data).await
}

pub async fn serve(config: DependencyConfig, data: tempfile::TempDir) -> Agent {
    let installer = LocalInstaller::new(config).unwrap();
    let (addr, shutdown) = GrpcServer::new()
        .add_service(DependencyGrpc::new(Arc::new(installer)).into_server())
        .spawn_on_loopback()
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    Agent {
        client: DependencyServiceClient::new(channel),
        shutdown,
        data,
    }
}

/// A component of `language` at the workspace root.
pub fn component(language: &str, runtime: &str, constraint: &str, manager: &str) -> Component {
    Component {
        name: "app".into(),
        path: ".".into(),
        language: language.into(),
        runtime: Some(Runtime {
            name: runtime.into(),
            version_constraint: constraint.into(),
            preferred_version: String::new(),
        }),
        package_manager: manager.into(),
        ..Component::default()
    }
}

pub fn with_build(mut component: Component, run: &str) -> Component {
    component.build = Some(Command {
        run: run.into(),
        ..Command::default()
    });
    component
}

pub fn request(workspace: &Path, component: Component, limits: Option<InstallLimits>) -> InstallRequest {
    InstallRequest {
        run_id: "run-1".into(),
        workspace_path: workspace.display().to_string(),
        component: Some(component),
        environment: None,
        limits,
        ..InstallRequest::default()
    }
}

/// `request` resolved as of `seconds` after the epoch (the repository's
/// date, `resolve_before`).
pub fn as_of(mut request: InstallRequest, seconds: i64) -> InstallRequest {
    request.resolve_before = Some(prost_types::Timestamp { seconds, nanos: 0 });
    request
}

/// Runs an install to its end: the log lines, then the result.
pub async fn install(agent: &mut Agent, request: InstallRequest) -> (Vec<LogLine>, InstallResult) {
    let mut stream = agent.client.install(request).await.unwrap().into_inner();
    let mut lines = Vec::new();
    let mut result = None;
    while let Some(message) = stream.next().await {
        match message.unwrap().event.unwrap() {
            install_response::Event::Log(line) => {
                assert!(result.is_none(), "a log line after the result");
                lines.push(line);
            }
            install_response::Event::Result(r) => result = Some(r),
        }
    }
    let result = result.expect("the stream ends with a result");
    if !result.success {
        eprintln!("install failed; tail:\n{}", result.log_tail.join("\n"));
    }
    (lines, result)
}

/// Runs `python -c code` with the venv of `result`.
pub fn venv_python(result: &InstallResult, code: &str) -> std::process::Output {
    std::process::Command::new(Path::new(&result.environment_path).join("bin/python"))
        .args(["-c", code])
        .env("PATH", &result.env["PATH"])
        .output()
        .unwrap()
}

pub fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// A refusal before the tool ran: the install failed, a line of its stream
/// or of its log tail contains every one of `says`, and no `$ <tool> ...`
/// command line was streamed. Panics naming what was missing.
pub fn assert_refused_before(lines: &[LogLine], result: &InstallResult, tool: &str, says: &[&str]) {
    assert!(!result.success, "{result:?}");
    let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let said = text
        .iter()
        .copied()
        .chain(result.log_tail.iter().map(String::as_str))
        .any(|l| says.iter().all(|s| l.contains(s)));
    assert!(said, "no line says {says:?}: {result:?}\n{text:?}");
    assert!(
        !text.iter().any(|l| l.starts_with("$ ") && l.contains(tool)),
        "{tool} never ran: {text:?}"
    );
}
