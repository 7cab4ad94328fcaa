//! Rust builds: the plan's build command (else `cargo build`) with the
//! host's cargo, into a per-run target dir (`<env_dir>/<run_id>/<component>/
//! target`). `CARGO_HOME` stays the user's, so crates downloaded once are
//! reused. A `rust-toolchain.toml` naming a toolchain this host lacks is not
//! downloaded: rustup's auto-install is off and the default toolchain is
//! used instead, with a log line saying so.

use std::{path::Path, time::Duration};

use crate::{
    Failure, Job, Report, Step,
    exec::{self, LogSink},
};

const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds the component.
pub(crate) async fn install(job: &Job, sink: &mut LogSink, report: &mut Report) -> Step {
    let cargo = exec::which("cargo", &job.base_path)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".cargo/bin/cargo"))
                .filter(|p| p.is_file())
        })
        .ok_or_else(|| Failure::new("cargo is not installed on this host"))?;
    let target = job.env_root.join("target");
    report.environment_path.clone_from(&target);
    report.disk_paths = vec![target.clone()];
    let cargo_bin = cargo.parent().map(Path::to_path_buf).unwrap_or_default();
    report
        .env
        .insert("CARGO_TARGET_DIR".into(), target.display().to_string());
    report.env.insert("RUSTUP_AUTO_INSTALL".into(), "0".into());
    if job.owner.is_some() {
        // The owner's own cargo home (registry and downloaded crates), kept
        // between runs and writable for this owner's steps only; the runner
        // binds it for `cargo run` at start.
        let home = job.cache("cargo");
        tokio::fs::create_dir_all(&home)
            .await
            .map_err(|e| Failure::new(format!("cannot create {}: {e}", home.display())))?;
        report.env.insert("CARGO_HOME".into(), home.display().to_string());
    }
    report.env.insert(
        "PATH".into(),
        format!("{}:{}", cargo_bin.display(), job.base_path),
    );

    let version_here = probe(&cargo, &job.dir, &report.env).await;
    let version = match version_here {
        Some(v) => v,
        None => {
            let default = probe(&cargo, Path::new("/"), &report.env)
                .await
                .ok_or_else(|| Failure::new("`cargo --version` fails on this host"))?;
            let toolchain = rustup_default(&cargo_bin, &report.env).await;
            if let Some(toolchain) = toolchain {
                sink.system(
                    "build",
                    format!("the repository's rust-toolchain is not installed here; using the default toolchain {toolchain} (toolchains are never downloaded)"),
                )
                .await;
                report.env.insert("RUSTUP_TOOLCHAIN".into(), toolchain);
            }
            default
        }
    };
    report.tool = version.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    job.custom_install(sink, report).await?;
    job.build(sink, report, Some("cargo build")).await
}

async fn probe(cargo: &Path, dir: &Path, env: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let mut command = tokio::process::Command::new(cargo);
    command
        .arg("--version")
        .current_dir(dir)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let output = tokio::time::timeout(PROBE_TIMEOUT, command.output())
        .await
        .ok()?
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The name of rustup's default toolchain, e.g. "stable-x86_64-unknown-linux-gnu".
async fn rustup_default(
    cargo_bin: &Path,
    env: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let mut command = tokio::process::Command::new(cargo_bin.join("rustup"));
    command
        .arg("default")
        .current_dir("/")
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(PROBE_TIMEOUT, command.output())
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().next().map(str::to_owned)
}
