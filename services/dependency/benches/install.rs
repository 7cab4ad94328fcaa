//! Python install times against the real PyPI: a cold install (empty
//! download cache) against a warm one (same requirements, fresh venv, cache
//! filled by the first), and uv against pip on the same requirements.
//!
//! `cargo bench -p reporunner-dependency --bench install`. Prints:
//! `python cold install X s vs warm Y s = Rx` and
//! `uv vs pip on the same requirements: ...`.
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use reporunner_dependency::{DependencyConfig, Installer as _, LocalInstaller};
use reporunner_proto::{
    agents::dependency::v1::{InstallRequest, InstallResult, install_response},
    common::v1::{Component, Runtime},
};

const REQUIREMENTS: &str = "flask\nrequests\n";

async fn install(installer: &LocalInstaller, workspace: &Path, run_id: &str) -> (Duration, InstallResult) {
    let request = InstallRequest {
        run_id: run_id.into(),
        workspace_path: workspace.display().to_string(),
        component: Some(Component {
            name: "app".into(),
            path: ".".into(),
            language: "python".into(),
            runtime: Some(Runtime {
                name: "python".into(),
                version_constraint: ">=3.9".into(),
                preferred_version: String::new(),
            }),
            package_manager: "pip".into(),
            ..Component::default()
        }),
        environment: None,
        limits: None,
        ..InstallRequest::default()
    };
    let started = Instant::now();
    let mut stream = installer.install(request).unwrap();
    let mut result = None;
    while let Some(message) = stream.next().await {
        match message.event {
            Some(install_response::Event::Result(r)) => result = Some(r),
            Some(install_response::Event::Log(line)) if std::env::var_os("BENCH_VERBOSE").is_some() => {
                eprintln!("{run_id} {:>6} ms {}", started.elapsed().as_millis(), line.text);
            }
            _ => {}
        }
    }
    let result = result.unwrap();
    assert!(result.success, "install failed:\n{}", result.log_tail.join("\n"));
    (started.elapsed(), result)
}

fn agent(root: &Path, cache: &str, use_uv: bool) -> LocalInstaller {
    LocalInstaller::new(DependencyConfig {
        cache_dir: root.join(cache),
        // uv itself is installed once, outside the measurement.
        tools_dir: Path::new(env!("CARGO_TARGET_TMPDIR")).join("dependency-bench-tools"),
        env_dir: root.join("envs"),
        use_uv,
        ..DependencyConfig::default()
    })
    .unwrap()
}

#[tokio::main]
async fn main() {
    let root = tempfile::tempdir().unwrap();
    let workspace = root.path().join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::write(workspace.join("requirements.txt"), REQUIREMENTS).unwrap();

    // Install uv into the tools dir first (not measured).
    let _ = install(&agent(root.path(), "cache-warmup", true), &workspace, "warmup").await;

    let uv = agent(root.path(), "cache-uv", true);
    let (uv_cold, result) = install(&uv, &workspace, "uv-cold").await;
    let (uv_warm, _) = install(&uv, &workspace, "uv-warm").await;
    let uv_tool = result.tool;

    let pip = agent(root.path(), "cache-pip", false);
    let (pip_cold, result) = install(&pip, &workspace, "pip-cold").await;
    let (pip_warm, _) = install(&pip, &workspace, "pip-warm").await;
    let pip_tool = result.tool;

    let s = |d: Duration| d.as_secs_f64();
    println!("requirements: {}", REQUIREMENTS.trim().replace('\n', ", "));
    println!(
        "python cold install {:.2} s vs warm {:.2} s = {:.1}x ({uv_tool})",
        s(uv_cold),
        s(uv_warm),
        s(uv_cold) / s(uv_warm)
    );
    println!(
        "uv vs pip on the same requirements: cold {:.2} s vs {:.2} s = {:.1}x; warm {:.2} s vs {:.2} s = {:.1}x ({uv_tool} vs {pip_tool})",
        s(uv_cold),
        s(pip_cold),
        s(pip_cold) / s(uv_cold),
        s(uv_warm),
        s(pip_warm),
        s(pip_warm) / s(uv_warm)
    );
    println!(
        "pip cold install {:.2} s vs warm {:.2} s = {:.1}x",
        s(pip_cold),
        s(pip_warm),
        s(pip_cold) / s(pip_warm)
    );
}
