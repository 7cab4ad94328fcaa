//! Node installs from the npm registry, over loopback gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{agent, component, install, request, with_build, write};
use reporunner_proto::agents::dependency::v1::InstallLimits;

/// A private app whose one dependency is `left-pad` 1.3.0, installed with
/// `manager`: its workspace, the install's log lines and its result.
async fn install_left_pad(
    manager: &str,
) -> (
    tempfile::TempDir,
    Vec<reporunner_proto::common::v1::LogLine>,
    reporunner_proto::agents::dependency::v1::InstallResult,
) {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[(
            "package.json",
            r#"{"name": "app", "version": "1.0.0", "private": true, "dependencies": {"left-pad": "1.3.0"}}"#,
        )],
    );
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            component("javascript", "node", "", manager),
            None,
        ),
    )
    .await;
    (workspace, lines, result)
}

#[tokio::test]
async fn a_pnpm_app_gets_pnpm_from_npm_and_its_node_modules() {
    let (workspace, lines, result) = install_left_pad("pnpm").await;
    assert!(result.success, "{result:?}");
    assert!(result.tool.starts_with("pnpm 9."), "{}", result.tool);
    assert!(
        workspace
            .path()
            .join("node_modules/left-pad/package.json")
            .exists()
    );
    assert!(lines.iter().any(|l| l.text.contains("--no-frozen-lockfile")));
    // The runner can call pnpm itself (`pnpm start`) with the returned PATH.
    let path = &result.env["PATH"];
    assert!(
        path.starts_with(&format!("{}/.bin:", result.environment_path)),
        "{path}"
    );
    let pnpm = std::env::split_paths(path)
        .map(|d| d.join("pnpm"))
        .find(|p| p.exists());
    assert!(pnpm.is_some(), "{path}");
    assert_eq!(result.env["npm_config_manage_package_manager_versions"], "false");
}

#[tokio::test]
async fn an_npm_app_with_a_stale_lock_falls_back_to_npm_install() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            (
                "package.json",
                r#"{"name": "np", "version": "1.0.0", "dependencies": {"left-pad": "^1.3.0"}}"#,
            ),
            (
                "package-lock.json",
                r#"{"name": "np", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
  "packages": {"": {"name": "np", "version": "1.0.0", "dependencies": {"left-pad": "~1.1.0"}},
    "node_modules/left-pad": {"version": "1.1.3",
      "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.1.3.tgz"}}}"#,
            ),
        ],
    );
    let (lines, result) = install(
        &mut agent,
        request(workspace.path(), component("javascript", "node", "", "npm"), None),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert!(result.tool.starts_with("npm "), "{}", result.tool);
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains("does not match package.json"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.text.starts_with("$ ") && l.text.ends_with("npm install"))
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.text.starts_with("$ ") && l.text.ends_with("npm ci"))
    );
    let installed =
        std::fs::read_to_string(workspace.path().join("node_modules/left-pad/package.json")).unwrap();
    assert!(installed.contains("\"version\": \"1.3."), "{installed}");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    let pid_file = workspace.path().join("sleeper.pid");
    write(
        workspace.path(),
        &[("package.json", r#"{"name": "slow", "version": "1.0.0"}"#)],
    );
    // The build starts a background sleeper and waits: only killing the
    // group ends both.
    let build = format!("sleep 300 & echo $! > {}; echo started; wait", pid_file.display());
    let started = Instant::now();
    let (lines, result) = install(
        &mut agent,
        request(
            workspace.path(),
            with_build(component("javascript", "node", "", "npm"), &build),
            Some(InstallLimits {
                timeout_seconds: 8,
                max_disk_bytes: 0,
            }),
        ),
    )
    .await;
    assert!(!result.success);
    assert_eq!(result.exit_code, 124);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(lines.iter().any(|l| l.source == "build" && l.text == "started"));
    assert!(
        result
            .log_tail
            .iter()
            .any(|l| l.contains("timed out after 8 s (timeout_seconds)"))
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    let mut alive = true;
    for _ in 0..50 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its new parent to reap it.
        if status.is_empty() || status.split_whitespace().nth(2) == Some("Z") {
            alive = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive, "the background sleeper {pid} survived the timeout");
}

/// Yarn 1 comes from the npm registry into the tools dir when the host has
/// none, and installs the app's dependencies (`yarn install`, scripts off).
#[tokio::test]
async fn a_yarn_app_gets_yarn_1_from_npm_and_its_node_modules() {
    let (workspace, lines, result) = install_left_pad("yarn").await;
    let texts: Vec<&String> = lines.iter().map(|l| &l.text).collect();
    assert!(result.success, "{result:?} {texts:?}");
    assert!(result.tool.starts_with("yarn 1."), "{}", result.tool);
    assert!(
        workspace
            .path()
            .join("node_modules/left-pad/package.json")
            .exists()
    );
    // Yarn 1 writes its own lockfile, in its own format.
    let lock = std::fs::read_to_string(workspace.path().join("yarn.lock")).unwrap();
    assert!(
        lock.contains("# yarn lockfile v1") && lock.contains("left-pad@1.3.0"),
        "{lock}"
    );
    let path = &result.env["PATH"];
    assert!(
        std::env::split_paths(path).any(|d| d.join("yarn").exists()),
        "{path}"
    );
}

/// Bun comes from the npm registry too (its binary is the platform package
/// `@oven/bun-linux-x64`, also on npm), and installs the app's
/// dependencies with its own lockfile.
#[tokio::test]
async fn a_bun_app_gets_bun_from_npm_and_its_node_modules() {
    let (workspace, lines, result) = install_left_pad("bun").await;
    let texts: Vec<&String> = lines.iter().map(|l| &l.text).collect();
    assert!(result.success, "{result:?} {texts:?}");
    assert!(result.tool.starts_with("bun 1."), "{}", result.tool);
    assert!(
        workspace
            .path()
            .join("node_modules/left-pad/package.json")
            .exists()
    );
    assert!(
        ["bun.lock", "bun.lockb"]
            .iter()
            .any(|f| workspace.path().join(f).is_file()),
        "no bun lockfile"
    );
}
